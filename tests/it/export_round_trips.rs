//! A measurement, run by hand (not a timed test): how long `apply_many`
//! takes for a page of documents when PostgreSQL is a round trip away,
//! through [`CuttableProxy::slow_down`] (5 ms each way). Figures in
//! BENCHMARKS.md, "Export to a remote database":
//!
//! `cargo nextest run -p ventas --test it --run-ignored only measure_export_round_trips --no-capture`

use std::time::Instant;

use automerge::Automerge;
use ventas::domain::*;
use ventas::export;
use ventas::protocol::ids::DocumentId;

use crate::harness::*;

/// Ledgers in the page.
const LEDGERS: usize = 32;
/// Sales in each ledger before the measured full export.
const SALES_EACH: usize = 20;
/// Delay per chunk each way: a 10 ms round trip.
const DELAY_MS: u64 = 5;

/// One seller's device and ledger, with a catalog to sell from.
struct Seller {
    catalog: CatalogView,
    device: Automerge,
    ledger: Automerge,
    at_ms: i64,
}

impl Seller {
    fn new() -> Self {
        let tenant = TenantId::new("acme").expect("id");
        let seller = SellerId::new("ana").expect("id");
        let device = DeviceId::new("tab-1").expect("id");
        let catalog = sample_catalog(&SampleCatalog {
            tenant: "acme",
            sellers: &["ana"],
            customer: "shop-9",
            products: &[("soap", 250), ("rice", 1_199)],
            devices: &[("tab-1", "ana", "K1")],
        })
        .expect("catalog");
        let at_ms = Period::parse("2026-11").expect("period").start_ms() + 1_000;
        Self {
            catalog: read_catalog(&catalog),
            device: create_device_doc(&tenant, &device, &seller, "K1").expect("device"),
            ledger: create_ledger_doc(&tenant, &seller, Period::of_ms(at_ms)).expect("ledger"),
            at_ms,
        }
    }

    fn sell(&mut self, count: usize) {
        for _ in 0..count {
            self.at_ms += 60_000;
            let line = |product: &str, quantity| SaleLineInput {
                product: ProductId::new(product).expect("id"),
                quantity,
            };
            let input = SaleInput {
                customer: CustomerId::new("shop-9").expect("id"),
                location: LocationId::new("van-ana").expect("id"),
                at_ms: self.at_ms,
                lines: vec![line("soap", 2), line("rice", 1)],
            };
            record_sale(&mut self.device, &mut self.ledger, &self.catalog, &input).expect("sale");
        }
    }
}

#[tokio::test]
#[ignore = "measurement, run by hand"]
async fn measure_export_round_trips() {
    let db = TestDatabase::create().await;
    let proxy = CuttableProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let mut direct = db.client().await;
    export::migrate(&mut direct).await.expect("migrate");
    let mut sellers: Vec<Seller> = (0..LEDGERS)
        .map(|_| {
            let mut seller = Seller::new();
            seller.sell(SALES_EACH);
            seller
        })
        .collect();
    let ids: Vec<DocumentId> = (0..LEDGERS)
        .map(|i| DocumentId::from_bytes([i as u8 + 1; 16]))
        .collect();
    proxy.slow_down(DELAY_MS);
    let mut remote = export::connect(&db.url_via(proxy.addr))
        .await
        .expect("connect");

    let full: Vec<_> = sellers
        .iter()
        .zip(&ids)
        .map(|(seller, id)| export::build_rows(id, &seller.ledger, &[]).expect("rows"))
        .collect();
    let page: Vec<_> = full.iter().map(|export| (export, None)).collect();
    let started = Instant::now();
    export::apply_many(&mut remote, &page).await.expect("apply");
    println!(
        "FIGURE full exports of {LEDGERS} ledgers of {SALES_EACH} sales, {} ms round trip: {:?}",
        2 * DELAY_MS,
        started.elapsed()
    );

    let before: Vec<_> = sellers.iter().map(|s| s.ledger.get_heads()).collect();
    for seller in &mut sellers {
        seller.sell(1);
    }
    let one_sale: Vec<_> = sellers
        .iter()
        .zip(&ids)
        .zip(&before)
        .map(|((seller, id), heads)| export::build_rows(id, &seller.ledger, heads).expect("rows"))
        .collect();
    let page: Vec<_> = one_sale
        .iter()
        .zip(&before)
        .map(|(export, heads)| (export, Some(heads.as_slice())))
        .collect();
    let started = Instant::now();
    export::apply_many(&mut remote, &page).await.expect("apply");
    println!(
        "FIGURE one-sale exports of {LEDGERS} ledgers, {} ms round trip: {:?}",
        2 * DELAY_MS,
        started.elapsed()
    );
    let sales: i64 = direct
        .query_one("SELECT count(*) FROM sales", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(sales as usize, LEDGERS * (SALES_EACH + 1));
}
