//! The business domain: tenants, sellers, devices, customers, products,
//! stock locations, sales and their corrections, stock movements and
//! oversell alerts, as pure functions over `automerge::Automerge` documents.
//! No I/O: the device client and the server call these on the documents they
//! hold, and sync the documents as usual.
//!
//! Four document kinds (see `docs/data-model.md` and `docs/schema.md`):
//! a **catalog** per tenant (office-written), a **device** document per device
//! (its record counter), a **ledger** per (tenant, seller, month) holding
//! sales, voids, payments and returns, and a **stock** document per location
//! holding counters, movements and oversell alerts. Each has a root `meta`
//! map written once by its `create_*_doc` function.
//!
//! Data flows like this on a device:
//!
//! ```
//! use ventas::domain::*;
//! # fn main() -> Result<(), DomainError> {
//! let tenant = TenantId::new("acme")?;
//! let seller = SellerId::new("ana")?;
//! let device = DeviceId::new("tab-1")?;
//! let van = LocationId::new("van-ana")?;
//! let soap = ProductId::new("soap")?;
//! // The office creates every document once.
//! let mut catalog = create_catalog_doc(&tenant)?;
//! put_product(&mut catalog, &Product { id: soap.clone(), name: "Soap".into(),
//!     unit_price_cents: 250, currency: Currency::new("EUR")?, active: true })?;
//! put_customer(&mut catalog, &Customer { id: CustomerId::new("shop-9")?, name: "Shop".into() })?;
//! put_location(&mut catalog, &Location { id: van.clone(), name: "Van".into(),
//!     kind: LocationKind::Vehicle, seller: Some(seller.clone()) })?;
//! let at_ms = Period::parse("2026-11")?.start_ms() + 1_000;
//! let mut ledger = create_ledger_doc(&tenant, &seller, Period::of_ms(at_ms))?;
//! let mut stock = create_stock_doc(&tenant, &van, Period::of_ms(at_ms), &[soap.clone()])?;
//! let mut phone = create_device_doc(&tenant, &device, &seller, "K7Q")?;
//!
//! // The device sells: numbers the sale, writes it, moves the stock.
//! let sale = record_sale(&mut phone, &mut ledger, &read_catalog(&catalog), &SaleInput {
//!     customer: CustomerId::new("shop-9")?, location: van.clone(), at_ms,
//!     lines: vec![SaleLineInput { product: soap.clone(), quantity: 3 }],
//! })?;
//! apply_sale_to_stock(&mut stock, &sale)?;
//! assert_eq!(sale.total_cents, 750);
//! assert_eq!(sale.receipt, "K7Q-1");
//! assert_eq!(stock_level(&stock, &soap)?, -3);
//!
//! // The server finds the oversell and records it once.
//! let view = read_stock(&stock);
//! let alerts = detect_oversells(&view);
//! assert_eq!(alerts.len(), 1);
//! record_oversell_alerts(&mut stock, &view, &alerts, at_ms)?;
//! # Ok(()) }
//! ```

mod catalog;
mod device;
mod ids;
mod ledger;
mod meta;
mod money;
mod oversell;
mod read;
mod sample;
mod stock;
mod validate;

#[cfg(test)]
mod tests;

pub use catalog::{
    create_catalog_doc, put_customer, put_device, put_directory_entry, put_location, put_product,
    put_seller, read_catalog, CatalogView, Customer, DeviceRecord, Location, LocationKind, Product,
    Seller,
};
pub use device::{
    allocate_record_id, create_device_doc, highest_seq_in_ledger, read_device, receipt_number,
    resume_counter, DeviceInfo,
};
pub use ids::{
    CustomerId, DeviceId, IdError, LocationId, Period, ProductId, RecordId, SellerId, TenantId,
    ID_BYTES_MAX, RECORD_SEQ_DIGITS, RECORD_SEQ_MAX,
};
pub use ledger::{
    check_record_writers, create_ledger_doc, read_ledger, record_payment, record_return,
    record_sale, sale_conflicts, sale_statuses, sales_between, void_sale, LedgerView, Payment,
    ReturnLine, Sale, SaleConflict, SaleInput, SaleLine, SaleLineInput, SaleReturn, SaleState,
    SaleStatus, Void, NOTE_BYTES_MAX, SALE_LINES_MAX,
};
pub use meta::{doc_meta, DocKey, DocKind, DocMeta, SCHEMA_VERSION};
pub use money::{AmountOverflow, Currency};
pub use oversell::{
    detect_oversells, record_oversell_alerts, AlertChanges, AlertStatus, OversellAlert, StoredAlert,
};
pub use read::FieldError;
pub use sample::{sample_catalog, SampleCatalog};
pub use stock::{
    add_stock_products, apply_return_to_stock, apply_sale_to_stock, carry_late_movements,
    create_stock_doc, move_stock, open_next_stock_period, read_stock, stock_level, transfer_stock,
    MoveOutcome, Movement, MovementKind, StockView, MOVEMENT_ID_BYTES_MAX,
};
pub use validate::{Problem, Violation};

// Selective readers for the export: the same parsing and rules as the
// public readers, over the records a change touched.
pub(crate) use catalog::{read_catalog_selected, KeySelection};
pub(crate) use ledger::{read_ledger_selected, LedgerSelection};
pub(crate) use stock::read_stock_selected;

/// Why a domain operation was refused. Expected refusals (unknown product,
/// sale already voided, ...) are values here; a document from a peer that
/// cannot be read where we need it is `Malformed`.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Automerge(#[from] automerge::AutomergeError),
    #[error("document field `{path}`: {source}")]
    Malformed { path: String, source: FieldError },
    #[error("expected a {expected} document, found a {found} document")]
    WrongDocument { expected: DocKind, found: DocKind },
    #[error("document schema version {version} is newer than this code understands")]
    NewerSchema { version: i64 },
    #[error("document belongs to tenant {found}, expected {expected}")]
    OtherTenant { expected: TenantId, found: TenantId },
    #[error("ledger belongs to {ledger_owner}; device's seller is {seller}")]
    NotOwner {
        ledger_owner: String,
        seller: SellerId,
    },
    #[error("ledger is for {ledger}; the record is dated {at}")]
    WrongPeriod { ledger: Period, at: Period },
    #[error("stock document is for {found}, expected {expected}")]
    WrongLocation { expected: LocationId, found: String },
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Overflow(#[from] AmountOverflow),
    #[error("a sale needs at least one line")]
    EmptySale,
    #[error("{lines} lines; at most {SALE_LINES_MAX}")]
    TooManyLines { lines: usize },
    #[error("product {0} appears on two lines")]
    DuplicateLine(ProductId),
    #[error("quantity {quantity} of {product} is not positive")]
    NonPositiveQuantity { product: ProductId, quantity: i64 },
    #[error("amount {0} is not positive")]
    NonPositiveAmount(i64),
    #[error("product {0} is not sellable (unknown, inactive, or not in the sale)")]
    UnknownProduct(ProductId),
    #[error("customer {0} is not in the catalog")]
    UnknownCustomer(CustomerId),
    #[error("location {0} is not in the catalog")]
    UnknownLocation(LocationId),
    #[error("one sale cannot mix {expected} and {found}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    #[error("sale {0} is not in this ledger")]
    SaleNotFound(RecordId),
    #[error("sale {0} is voided")]
    SaleVoided(RecordId),
    #[error("payment of {amount_cents} exceeds the {due_cents} due")]
    Overpayment { due_cents: i64, amount_cents: i64 },
    #[error("returning {requested} of {product}: {returned} of {sold} already returned")]
    ReturnExceedsSold {
        product: ProductId,
        sold: i64,
        returned: i64,
        requested: i64,
    },
    #[error("text of {bytes} bytes; at most {NOTE_BYTES_MAX}")]
    NoteTooLong { bytes: usize },
    #[error("record {0} already exists")]
    RecordExists(String),
    #[error("the device has issued its last record number")]
    SequenceExhausted,
    #[error("movement id {0:?} is empty or too long")]
    BadMovementId(String),
    #[error("a {kind} movement cannot have delta {delta}")]
    WrongSign { kind: &'static str, delta: i64 },
    #[error("no stock counter for product {0} at this location (the office adds it)")]
    NoCounter(ProductId),
    #[error("internal invariant broken: {0}")]
    Invariant(&'static str),
}
