//! A seller's ledger of `n` sales (every other one paid) for the export
//! benchmarks.

use automerge::Automerge;
use ventas::domain::{
    create_device_doc, create_ledger_doc, read_catalog, record_payment, record_sale,
    sample_catalog, CatalogView, CustomerId, DeviceId, LocationId, Period, ProductId, SaleInput,
    SaleLineInput, SampleCatalog, SellerId, TenantId,
};

pub struct World {
    pub catalog: CatalogView,
    pub device: Automerge,
    pub ledger: Automerge,
    products: Vec<ProductId>,
    at_ms: i64,
}

impl World {
    pub fn new() -> Self {
        let tenant = TenantId::new("acme").expect("id");
        let seller = SellerId::new("ana").expect("id");
        let device = DeviceId::new("tab-1").expect("id");
        let catalog = sample_catalog(&SampleCatalog {
            tenant: "acme",
            sellers: &["ana"],
            customer: "shop-9",
            products: &[("soap", 250), ("rice", 1_199), ("oil", 705)],
            devices: &[("tab-1", "ana", "K1")],
        })
        .expect("catalog");
        let products: Vec<ProductId> = ["soap", "rice", "oil"]
            .into_iter()
            .map(|p| ProductId::new(p).expect("id"))
            .collect();
        let at_ms = Period::parse("2026-11").expect("period").start_ms() + 1_000;
        Self {
            catalog: read_catalog(&catalog),
            device: create_device_doc(&tenant, &device, &seller, "K1").expect("device doc"),
            ledger: create_ledger_doc(&tenant, &seller, Period::of_ms(at_ms)).expect("ledger"),
            products,
            at_ms,
        }
    }

    /// Records `count` two-line sales; every other one is paid in full.
    pub fn sell(&mut self, count: usize) {
        for index in 0..count {
            self.at_ms += 60_000;
            let input = SaleInput {
                customer: CustomerId::new("shop-9").expect("id"),
                location: LocationId::new("van-ana").expect("id"),
                at_ms: self.at_ms,
                lines: vec![
                    SaleLineInput {
                        product: self.products[index % 3].clone(),
                        quantity: 2,
                    },
                    SaleLineInput {
                        product: self.products[(index + 1) % 3].clone(),
                        quantity: 1,
                    },
                ],
            };
            let sale = record_sale(&mut self.device, &mut self.ledger, &self.catalog, &input)
                .expect("sale");
            if index % 2 == 0 {
                record_payment(
                    &mut self.device,
                    &mut self.ledger,
                    &sale.id,
                    sale.total_cents,
                    "cash",
                    self.at_ms,
                )
                .expect("payment");
            }
        }
    }
}
