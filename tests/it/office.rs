//! The office's set-up shared by tests that need business documents: a
//! tenant's catalog, a device document, its seller's ledger and its van's
//! stock, created through a real client and synced to the server.

use automerge::Automerge;
use ventas::client::{Client, DocHandle};
use ventas::domain::*;

use crate::harness::*;

/// An instant inside the ledger's month.
pub(crate) fn sale_time_ms() -> i64 {
    Period::parse("2026-11").expect("period").start_ms() + 3_600_000
}

pub(crate) fn id<T>(make: impl FnOnce(String) -> Result<T, IdError>, value: &str) -> T {
    make(value.to_owned()).expect("valid id")
}

/// Starts syncing a document made by a `create_*_doc` function:
/// `Client::create_with` keeps its creating change (the office's actor) and
/// writes with the client's own actor from then on.
pub(crate) fn create_in(client: &Client, created: Automerge) -> DocHandle {
    client.create_with(created).expect("create")
}

/// Runs a domain write that needs two documents at once (the device
/// document and a ledger): `DocHandle::change` holds the client's lock, so
/// the write runs on copies (same actors) and each handle merges its copy's
/// new changes.
pub(crate) fn change_both<R>(
    first: &DocHandle,
    second: &DocHandle,
    write: impl FnOnce(&mut Automerge, &mut Automerge) -> R,
) -> R {
    let mut first_copy = first.read(Automerge::clone).expect("read");
    let mut second_copy = second.read(Automerge::clone).expect("read");
    let result = write(&mut first_copy, &mut second_copy);
    for (handle, copy) in [(first, &mut first_copy), (second, &mut second_copy)] {
        handle
            .change(|doc| doc.merge(copy))
            .expect("change applies")
            .expect("merge");
    }
    result
}

/// What the office set up for one device: the tenant's catalog, the
/// device's document, its seller's ledger for the month and its van's stock.
pub(crate) struct Office {
    pub(crate) client: Client,
    pub(crate) catalog: DocHandle,
    pub(crate) device: DocHandle,
    pub(crate) ledger: DocHandle,
    pub(crate) stock: DocHandle,
}

impl Office {
    /// Creates the four documents for `device` (seller `ana`, van `van-ana`,
    /// products `soap` at 2.50 EUR and `brush` at 11.99 EUR) and waits until
    /// the server has them.
    pub(crate) async fn set_up(
        url: &str,
        dir: &std::path::Path,
        device: &str,
        prefix: &str,
    ) -> Self {
        let client = crate::harness::device(url, dir, "office");
        let tenant = id(TenantId::new, "acme");
        let seller = id(SellerId::new, "ana");
        let van = id(LocationId::new, "van-ana");
        let device_id = id(DeviceId::new, device);
        let period = Period::of_ms(sale_time_ms());
        let products = [id(ProductId::new, "soap"), id(ProductId::new, "brush")];

        let device_doc = create_in(
            &client,
            create_device_doc(&tenant, &device_id, &seller, prefix).expect("device doc"),
        );
        let ledger = create_in(
            &client,
            create_ledger_doc(&tenant, &seller, period).expect("ledger doc"),
        );
        let stock = create_in(
            &client,
            create_stock_doc(&tenant, &van, period, &products).expect("stock doc"),
        );

        let mut catalog = sample_catalog(&SampleCatalog {
            tenant: "acme",
            sellers: &["ana"],
            customer: "shop-9",
            products: &[("soap", 250), ("brush", 1_199)],
            devices: &[(device, "ana", prefix)],
        })
        .expect("catalog doc");
        for (key, handle) in [
            (DocKey::device(&device_id), &device_doc),
            (DocKey::ledger(&seller, period), &ledger),
            (DocKey::stock(&van, period), &stock),
        ] {
            put_directory_entry(&mut catalog, &key, &handle.url()).expect("directory");
        }
        let catalog = create_in(&client, catalog);
        let office = Self {
            client,
            catalog,
            device: device_doc,
            ledger,
            stock,
        };
        office.synced().await;
        office
    }

    pub(crate) fn handles(&self) -> [&DocHandle; 4] {
        [&self.catalog, &self.device, &self.ledger, &self.stock]
    }

    pub(crate) async fn synced(&self) {
        for handle in self.handles() {
            within("office documents synced", handle.synced())
                .await
                .expect("synced");
        }
    }

    /// Records a sale to `shop-9` from `van-ana` on the office's device
    /// and moves the van's stock.
    pub(crate) fn sell(&self, at_ms: i64, lines: &[(&str, i64)]) -> Sale {
        let catalog = self.catalog_view();
        let input = SaleInput {
            customer: id(CustomerId::new, "shop-9"),
            location: id(LocationId::new, "van-ana"),
            at_ms,
            lines: lines
                .iter()
                .map(|(product, quantity)| SaleLineInput {
                    product: id(ProductId::new, product),
                    quantity: *quantity,
                })
                .collect(),
        };
        let sale = change_both(&self.device, &self.ledger, |device, ledger| {
            record_sale(device, ledger, &catalog, &input).expect("sale")
        });
        self.stock
            .change(|doc| apply_sale_to_stock(doc, &sale))
            .expect("change applies")
            .expect("stock moved");
        sale
    }

    pub(crate) fn catalog_view(&self) -> CatalogView {
        self.catalog.read(read_catalog).expect("read")
    }

    pub(crate) async fn close(self) {
        self.client.close().await.expect("close");
    }
}
