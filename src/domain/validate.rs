//! Validation results: every record that breaks a rule, with the reason.
//!
//! Readers ([`super::read_catalog`], [`super::read_ledger`],
//! [`super::read_stock`]) parse each record into a typed value or into
//! [`Violation`]s; an invalid record is reported and kept aside (it stays in
//! the document untouched and is left out of derived views such as totals and
//! stock), never a panic and never silently dropped.

use super::ids::{DeviceId, Period, ProductId, RecordId, SellerId};
use super::read::FieldError;

/// One broken rule, in one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The top-level container (`sales`, `movements`, ...) or `root`.
    pub collection: String,
    /// The record's key in that container (or the container's name).
    pub key: String,
    /// The actor (hex) whose change created the record, when known: who to
    /// ask about it.
    pub actor: Option<String>,
    pub problem: Problem,
}

impl Violation {
    pub(crate) fn root(container: &str, problem: Problem) -> Self {
        Self {
            collection: "root".into(),
            key: container.into(),
            actor: None,
            problem,
        }
    }

    pub(crate) fn record(
        collection: &str,
        key: &str,
        actor: Option<String>,
        problem: Problem,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            actor,
            problem,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}: {}", self.collection, self.key, self.problem)
    }
}

impl Problem {
    /// A stable name for the rule broken (the variant's name in
    /// snake_case), for reports and the `invalid_records` table.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::Field(_) => "field",
            Problem::ContainerCreatedTwice { .. } => "container_created_twice",
            Problem::KeyWrittenTwice { .. } => "key_written_twice",
            Problem::KeyMismatch { .. } => "key_mismatch",
            Problem::EmptySale => "empty_sale",
            Problem::NonPositiveQuantity { .. } => "non_positive_quantity",
            Problem::NegativePrice { .. } => "negative_price",
            Problem::LineTotalMismatch { .. } => "line_total_mismatch",
            Problem::SaleTotalMismatch { .. } => "sale_total_mismatch",
            Problem::AmountOverflow => "amount_overflow",
            Problem::UnknownProduct { .. } => "unknown_product",
            Problem::UnknownDevice { .. } => "unknown_device",
            Problem::ForeignSeller { .. } => "foreign_seller",
            Problem::WrongPeriod { .. } => "wrong_period",
            Problem::UnknownSale { .. } => "unknown_sale",
            Problem::CurrencyMismatch { .. } => "currency_mismatch",
            Problem::NonPositiveAmount { .. } => "non_positive_amount",
            Problem::ReturnExceedsSold { .. } => "return_exceeds_sold",
            Problem::ProductNotInSale { .. } => "product_not_in_sale",
            Problem::WrongSign { .. } => "wrong_sign",
            Problem::NoCounter { .. } => "no_counter",
            Problem::UnknownWriter => "unknown_writer",
            Problem::WrittenByOtherDevice { .. } => "written_by_other_device",
            Problem::CounterDrift { .. } => "counter_drift",
        }
    }
}

/// Why a record is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("container created {copies} times concurrently; all but one are hidden")]
    ContainerCreatedTwice { copies: usize },
    #[error("{copies} replicas wrote this key concurrently; all but one are hidden")]
    KeyWrittenTwice { copies: usize },
    #[error("key is not the record id {expected}")]
    KeyMismatch { expected: String },
    #[error("sale has no lines")]
    EmptySale,
    #[error("line {line}: quantity {quantity} is not positive")]
    NonPositiveQuantity { line: usize, quantity: i64 },
    #[error("line {line}: unit price {unit_price_cents} is negative")]
    NegativePrice { line: usize, unit_price_cents: i64 },
    #[error("line {line}: stored total {stored} but quantity x price is {derived}")]
    LineTotalMismatch {
        line: usize,
        stored: i64,
        derived: i64,
    },
    #[error("stored sale total {stored} but the lines add up to {derived}")]
    SaleTotalMismatch { stored: i64, derived: i64 },
    #[error("amounts overflow")]
    AmountOverflow,
    #[error("line {line}: product {product} is not in the catalog")]
    UnknownProduct { line: usize, product: ProductId },
    #[error("device {device} is not in the catalog")]
    UnknownDevice { device: DeviceId },
    #[error("written into the ledger of {ledger_owner} but the sale's seller is {seller} (device registered to {device_seller:?})")]
    ForeignSeller {
        ledger_owner: String,
        seller: SellerId,
        device_seller: Option<SellerId>,
    },
    #[error("recorded in {recorded} but the ledger is for {ledger}")]
    WrongPeriod { ledger: Period, recorded: Period },
    #[error("refers to sale {sale}, which is not a valid sale in this ledger")]
    UnknownSale { sale: RecordId },
    #[error("currency {found} differs from the sale's {expected}")]
    CurrencyMismatch { expected: String, found: String },
    #[error("amount {amount_cents} is not positive")]
    NonPositiveAmount { amount_cents: i64 },
    #[error("returns {returned} of product {product} but the sale sold {sold}")]
    ReturnExceedsSold {
        product: ProductId,
        sold: i64,
        returned: i64,
    },
    #[error("product {product} is not in the sale")]
    ProductNotInSale { product: ProductId },
    #[error("movement of kind {kind} has delta {delta} of the wrong sign")]
    WrongSign { kind: &'static str, delta: i64 },
    #[error("movement for product {product} that has no stock counter")]
    NoCounter { product: ProductId },
    #[error("written by an actor that is not in the ledger's `writers`")]
    UnknownWriter,
    #[error("written by an actor registered to device {writer}, not the device the record names")]
    WrittenByOtherDevice { writer: DeviceId },
    #[error("counter reads {counter} but the movements add up to {movements}")]
    CounterDrift { counter: i64, movements: i64 },
}
