//! Tests of the domain layer: one fixture tenant, unit tests of each
//! operation, one test per validation rule, and the multi-device simulation.

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge};

use super::*;

mod operations;
mod simulation;
mod validation;

/// 2026-11-01T01:00:00Z.
pub(crate) fn november_ms() -> i64 {
    Period::parse("2026-11").expect("valid period").start_ms() + 3_600_000
}

pub(crate) fn id<T>(result: Result<T, IdError>) -> T {
    result.expect("valid test id")
}

/// One tenant: sellers `ana` (devices `tab-a1`, `tab-a2`, van `van-ana`) and
/// `bo` (device `tab-b1`, van `van-bo`), three products, two customers, a
/// warehouse. The office (this struct) creates every document.
pub(crate) struct World {
    pub tenant: TenantId,
    pub catalog: Automerge,
    pub catalog_view: CatalogView,
    pub sellers: Vec<SellerId>,
    pub device_sellers: BTreeMap<DeviceId, SellerId>,
    pub vans: BTreeMap<SellerId, LocationId>,
    pub products: Vec<ProductId>,
    pub customer: CustomerId,
    pub period: Period,
    pub ledgers: BTreeMap<SellerId, Automerge>,
    pub stocks: BTreeMap<LocationId, Automerge>,
    pub device_docs: BTreeMap<DeviceId, Automerge>,
}

impl World {
    pub fn new() -> Self {
        let tenant = id(TenantId::new("acme"));
        let mut catalog = create_catalog_doc(&tenant).expect("create catalog");
        let eur = id(Currency::new("EUR"));
        let products: Vec<ProductId> = ["soap", "rice", "oil"]
            .into_iter()
            .map(|p| id(ProductId::new(p)))
            .collect();
        for (index, product) in products.iter().enumerate() {
            let price = [250, 1_199, 705][index];
            put_product(
                &mut catalog,
                &Product {
                    id: product.clone(),
                    name: format!("Product {product}"),
                    unit_price_cents: price,
                    currency: eur,
                    active: true,
                },
            )
            .expect("put product");
        }
        let customer = id(CustomerId::new("shop-9"));
        put_customer(
            &mut catalog,
            &Customer {
                id: customer.clone(),
                name: "Corner shop".into(),
            },
        )
        .expect("put customer");
        let sellers: Vec<SellerId> = ["ana", "bo"]
            .into_iter()
            .map(|s| id(SellerId::new(s)))
            .collect();
        let warehouse = id(LocationId::new("wh-main"));
        put_location(
            &mut catalog,
            &Location {
                id: warehouse.clone(),
                name: "Main warehouse".into(),
                kind: LocationKind::Warehouse,
                seller: None,
            },
        )
        .expect("put warehouse");
        let mut vans = BTreeMap::new();
        for seller in &sellers {
            put_seller(
                &mut catalog,
                &Seller {
                    id: seller.clone(),
                    name: seller.to_string(),
                },
            )
            .expect("put seller");
            let van = id(LocationId::new(format!("van-{seller}")));
            put_location(
                &mut catalog,
                &Location {
                    id: van.clone(),
                    name: format!("Van of {seller}"),
                    kind: LocationKind::Vehicle,
                    seller: Some(seller.clone()),
                },
            )
            .expect("put van");
            vans.insert(seller.clone(), van);
        }
        let mut device_sellers = BTreeMap::new();
        let mut device_docs = BTreeMap::new();
        for (name, seller, prefix) in [
            ("tab-a1", 0, "KA1"),
            ("tab-a2", 0, "KA2"),
            ("tab-b1", 1, "KB1"),
        ] {
            let device = id(DeviceId::new(name));
            let seller = sellers[seller].clone();
            put_device(
                &mut catalog,
                &DeviceRecord {
                    id: device.clone(),
                    seller: seller.clone(),
                    receipt_prefix: prefix.into(),
                },
            )
            .expect("put device");
            device_docs.insert(
                device.clone(),
                create_device_doc(&tenant, &device, &seller, prefix).expect("create device doc"),
            );
            device_sellers.insert(device.clone(), seller);
        }
        let period = Period::of_ms(november_ms());
        let ledgers = sellers
            .iter()
            .map(|seller| {
                (
                    seller.clone(),
                    create_ledger_doc(&tenant, seller, period).expect("create ledger"),
                )
            })
            .collect();
        let stocks = vans
            .values()
            .chain(std::iter::once(&warehouse))
            .map(|location| {
                (
                    location.clone(),
                    create_stock_doc(&tenant, location, period, &products).expect("create stock"),
                )
            })
            .collect();
        let catalog_view = read_catalog(&catalog);
        assert!(
            catalog_view.violations.is_empty(),
            "{:?}",
            catalog_view.violations
        );
        Self {
            tenant,
            catalog,
            catalog_view,
            sellers,
            device_sellers,
            vans,
            products,
            customer,
            period,
            ledgers,
            stocks,
            device_docs,
        }
    }

    pub fn device(&self, name: &str) -> DeviceId {
        id(DeviceId::new(name))
    }

    pub fn seller_of(&self, device: &DeviceId) -> SellerId {
        self.device_sellers[device].clone()
    }

    pub fn van_of(&self, device: &DeviceId) -> LocationId {
        self.vans[&self.seller_of(device)].clone()
    }

    pub fn sale_input(&self, device: &DeviceId, lines: &[(usize, i64)], at_ms: i64) -> SaleInput {
        SaleInput {
            customer: self.customer.clone(),
            location: self.van_of(device),
            at_ms,
            lines: lines
                .iter()
                .map(|(product, quantity)| SaleLineInput {
                    product: self.products[*product].clone(),
                    quantity: *quantity,
                })
                .collect(),
        }
    }

    /// Records a sale from `device` into its seller's ledger (office copies).
    pub fn sell(&mut self, device: &str, lines: &[(usize, i64)]) -> Sale {
        let device = self.device(device);
        let input = self.sale_input(&device, lines, november_ms());
        let seller = self.seller_of(&device);
        self.try_sale(&device, &seller, &input)
            .expect("record sale")
    }

    /// [`record_sale`] of `input` from `device` into the ledger of `seller`
    /// (not necessarily the device's own), as the operation answers.
    pub fn try_sale(
        &mut self,
        device: &DeviceId,
        seller: &SellerId,
        input: &SaleInput,
    ) -> Result<Sale, DomainError> {
        let doc = self.device_docs.get_mut(device).expect("device doc");
        let ledger = self.ledgers.get_mut(seller).expect("ledger");
        record_sale(doc, ledger, &self.catalog_view, input)
    }
}

/// The office's `Load` of `delta` units of `product` into a stock document:
/// movement `id`, from the delivery `record`.
pub(crate) fn office_load(
    id: &str,
    record: &str,
    product: &ProductId,
    delta: i64,
    at_ms: i64,
) -> Movement {
    Movement {
        id: id.into(),
        kind: MovementKind::Load,
        product: product.clone(),
        delta,
        record: record.into(),
        author: "office".into(),
        at_ms,
    }
}

/// A copy of `doc` on another replica, with a fixed actor.
pub(crate) fn replica(doc: &Automerge, actor: u8, generation: u8) -> Automerge {
    let mut copy = doc.fork();
    copy.set_actor(ActorId::from([actor, generation, 0x5a, 0xa5]));
    copy
}

/// Two-way merge.
pub(crate) fn sync_pair(a: &mut Automerge, b: &mut Automerge) {
    a.merge(b).expect("merge into a");
    b.merge(a).expect("merge into b");
}
