//! A measurement, run by hand (not a timed test): how long `apply_many`
//! takes for a page of documents when PostgreSQL is a round trip away,
//! through [`CuttableProxy::slow_down`] (5 ms each way). Figures in
//! BENCHMARKS.md, "Export to a remote database":
//!
//! `cargo nextest run -p ventas --test it --run-ignored only measure_export_round_trips --no-capture`

use std::time::Instant;

use ventas::export;
use ventas::protocol::ids::DocumentId;

use crate::harness::*;

/// A seller's ledger, as the export benchmarks build it.
#[path = "../../benches/support/export_world.rs"]
mod world;

/// Ledgers in the page.
const LEDGERS: usize = 32;
/// Sales in each ledger before the measured full export.
const SALES_EACH: usize = 20;
/// Delay per chunk each way: a 10 ms round trip.
const DELAY_MS: u64 = 5;

#[tokio::test]
#[ignore = "measurement, run by hand"]
async fn measure_export_round_trips() {
    let db = TestDatabase::create().await;
    let proxy = CuttableProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let mut direct = db.client().await;
    export::migrate(&mut direct).await.expect("migrate");
    let mut sellers: Vec<world::World> = (0..LEDGERS)
        .map(|_| {
            let mut seller = world::World::new();
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

    // Each ledger's export since `since[i]` (empty: full), applied as one
    // page; prints how long the page took.
    async fn apply_page(
        remote: &mut tokio_postgres::Client,
        sellers: &[world::World],
        ids: &[DocumentId],
        since: &[Vec<automerge::ChangeHash>],
        what: &str,
    ) {
        let exports: Vec<_> = sellers
            .iter()
            .zip(ids)
            .zip(since)
            .map(|((seller, id), since)| {
                export::build_rows(id, &seller.ledger, since).expect("rows")
            })
            .collect();
        let page: Vec<_> = exports
            .iter()
            .zip(since)
            .map(|(export, since)| (export, (!since.is_empty()).then_some(since.as_slice())))
            .collect();
        let started = Instant::now();
        export::apply_many(remote, &page).await.expect("apply");
        println!(
            "FIGURE {what} of {LEDGERS} ledgers, {} ms round trip: {:?}",
            2 * DELAY_MS,
            started.elapsed()
        );
    }

    let never = vec![Vec::new(); LEDGERS];
    let what = format!("full exports ({SALES_EACH} sales each)");
    apply_page(&mut remote, &sellers, &ids, &never, &what).await;
    let before: Vec<_> = sellers.iter().map(|s| s.ledger.get_heads()).collect();
    for seller in &mut sellers {
        seller.sell(1);
    }
    apply_page(&mut remote, &sellers, &ids, &before, "one-sale exports").await;
    let sales: i64 = direct
        .query_one("SELECT count(*) FROM sales", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(sales as usize, LEDGERS * (SALES_EACH + 1));
}
