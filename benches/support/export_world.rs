//! A seller's ledger of `n` sales (every other one paid) for the export
//! benchmarks.

use automerge::Automerge;
use ventas::domain::{
    create_catalog_doc, create_device_doc, create_ledger_doc, put_customer, put_device,
    put_location, put_product, put_seller, read_catalog, record_payment, record_sale, CatalogView,
    Currency, Customer, CustomerId, DeviceId, DeviceRecord, Location, LocationId, LocationKind,
    Period, Product, ProductId, SaleInput, SaleLineInput, Seller, SellerId, TenantId,
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
        let mut catalog = create_catalog_doc(&tenant).expect("catalog");
        let products: Vec<ProductId> = ["soap", "rice", "oil"]
            .into_iter()
            .map(|p| ProductId::new(p).expect("id"))
            .collect();
        for (index, product) in products.iter().enumerate() {
            put_product(
                &mut catalog,
                &Product {
                    id: product.clone(),
                    name: product.to_string(),
                    unit_price_cents: [250, 1_199, 705][index],
                    currency: Currency::new("EUR").expect("currency"),
                    active: true,
                },
            )
            .expect("product");
        }
        put_customer(
            &mut catalog,
            &Customer {
                id: CustomerId::new("shop-9").expect("id"),
                name: "Shop".into(),
            },
        )
        .expect("customer");
        put_seller(
            &mut catalog,
            &Seller {
                id: seller.clone(),
                name: "Ana".into(),
            },
        )
        .expect("seller");
        put_location(
            &mut catalog,
            &Location {
                id: LocationId::new("van-ana").expect("id"),
                name: "Van".into(),
                kind: LocationKind::Vehicle,
                seller: Some(seller.clone()),
            },
        )
        .expect("location");
        put_device(
            &mut catalog,
            &DeviceRecord {
                id: device.clone(),
                seller: seller.clone(),
                receipt_prefix: "K1".into(),
            },
        )
        .expect("device");
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
