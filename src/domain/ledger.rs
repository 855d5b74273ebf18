//! The ledger document: one per (tenant, seller, month). Sales are facts:
//! a recorded sale is never edited; corrections are new records (void,
//! payment, return) that refer to it, each its own key in its own map, keyed
//! by a [`RecordId`] that is unique by construction, so concurrent inserts
//! from several devices never collide.
//!
//! Totals are derived: a sale's line totals and total are computed from
//! quantities and catalog prices when it is recorded, stored for readers that
//! want them (JS), and recomputed and checked on every read.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ReadDoc};

use super::catalog::{read_records_selected, CatalogView, KeySelection, Problems};
use super::device::{
    allocate_record_id, highest_seq_in_ledger, read_device, receipt_number, DeviceInfo,
};
use super::ids::{
    CustomerId, DeviceId, LocationId, Period, ProductId, RecordId, SellerId, TenantId,
};
use super::meta::{check_root, container, create_doc, doc_meta, expect_kind, DocKind, DocMeta};
use super::money::{checked_sum, line_total_cents, AmountOverflow, Currency};
use super::read::{get_int, get_list, get_parsed, get_string, list_map, FieldError};
use super::validate::{Problem, Violation};
use super::DomainError;

/// The ledger maps that hold records keyed by [`RecordId`].
pub(crate) const RECORD_CONTAINERS: [&str; 4] = ["sales", "voids", "payments", "returns"];

/// Most lines one sale may have.
pub const SALE_LINES_MAX: usize = 200;
/// Longest free text (void reason, payment method), in bytes.
pub const NOTE_BYTES_MAX: usize = 500;

/// One line the seller enters: a product and how many units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleLineInput {
    pub product: ProductId,
    pub quantity: i64,
}

/// What the seller enters for a sale; prices come from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleInput {
    pub customer: CustomerId,
    /// Where the goods leave from (usually the seller's vehicle).
    pub location: LocationId,
    pub at_ms: i64,
    pub lines: Vec<SaleLineInput>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleLine {
    pub product: ProductId,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// A recorded sale, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub id: RecordId,
    pub receipt: String,
    pub seller: SellerId,
    pub customer: CustomerId,
    pub location: LocationId,
    pub recorded_at_ms: i64,
    pub currency: Currency,
    pub lines: Vec<SaleLine>,
    pub total_cents: i64,
}

impl Sale {
    pub fn device(&self) -> &DeviceId {
        &self.id.device
    }

    /// Units of `product` sold (over every line holding it).
    pub fn quantity_of(&self, product: &ProductId) -> i64 {
        self.lines
            .iter()
            .filter(|line| &line.product == product)
            .map(|line| line.quantity)
            .sum()
    }
}

/// A sale cancelled as a whole (money not due). It does not move stock: if
/// goods come back, that is a return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Void {
    pub id: RecordId,
    pub sale: RecordId,
    pub reason: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: RecordId,
    pub sale: RecordId,
    pub amount_cents: i64,
    pub currency: Currency,
    pub method: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnLine {
    pub product: ProductId,
    pub quantity: i64,
    /// `quantity` x the sale's unit price for the product.
    pub refund_cents: i64,
}

/// Goods brought back from a sale, into `location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleReturn {
    pub id: RecordId,
    pub sale: RecordId,
    pub receipt: String,
    pub location: LocationId,
    pub at_ms: i64,
    pub lines: Vec<ReturnLine>,
    pub refund_cents: i64,
}

/// A ledger as typed, checked records plus every record that broke a rule.
#[derive(Debug, Clone, Default)]
pub struct LedgerView {
    pub meta: Option<DocMeta>,
    pub sales: BTreeMap<RecordId, Sale>,
    pub voids: BTreeMap<RecordId, Void>,
    pub payments: BTreeMap<RecordId, Payment>,
    pub returns: BTreeMap<RecordId, SaleReturn>,
    pub violations: Vec<Violation>,
}

/// Creates the ledger of `seller` for `period` (the server or office does
/// this, once, before the month starts or on first need).
pub fn create_ledger_doc(
    tenant: &TenantId,
    seller: &SellerId,
    period: Period,
) -> Result<Automerge, DomainError> {
    create_doc(
        DocKind::Ledger,
        tenant,
        seller.as_str(),
        Some(period),
        |_| Ok(()),
    )
}

/// Checks that `device` may write into `ledger` at `at_ms`.
fn check_ledger_for(
    ledger: &Automerge,
    device: &DeviceInfo,
    at_ms: i64,
) -> Result<Period, DomainError> {
    let meta = expect_kind(ledger, DocKind::Ledger)?;
    if meta.tenant != device.tenant {
        return Err(DomainError::OtherTenant {
            expected: device.tenant.clone(),
            found: meta.tenant,
        });
    }
    if meta.owner != device.seller.as_str() {
        return Err(DomainError::NotOwner {
            ledger_owner: meta.owner,
            seller: device.seller.clone(),
        });
    }
    let period = meta.period.ok_or_else(missing_period)?;
    if !period.contains(at_ms) {
        return Err(DomainError::WrongPeriod {
            ledger: period,
            at: Period::of_ms(at_ms),
        });
    }
    Ok(period)
}

fn check_note(note: &str) -> Result<(), DomainError> {
    if note.len() > NOTE_BYTES_MAX {
        return Err(DomainError::NoteTooLong { bytes: note.len() });
    }
    Ok(())
}

/// Refuses line `index` of what the seller entered (sale or return) if its
/// quantity is not positive or an earlier line holds the same product.
fn check_line_input(lines: &[SaleLineInput], index: usize) -> Result<(), DomainError> {
    let line = &lines[index];
    if line.quantity <= 0 {
        return Err(DomainError::NonPositiveQuantity {
            product: line.product.clone(),
            quantity: line.quantity,
        });
    }
    if lines[..index]
        .iter()
        .any(|earlier| earlier.product == line.product)
    {
        return Err(DomainError::DuplicateLine(line.product.clone()));
    }
    Ok(())
}

/// Records a sale on the device: numbers it from the device counter, prices
/// it from the catalog, derives its totals, writes it into the ledger as a
/// new key. Stock is moved separately with
/// [`apply_sale_to_stock`](super::apply_sale_to_stock) (another document).
pub fn record_sale(
    device_doc: &mut Automerge,
    ledger: &mut Automerge,
    catalog: &CatalogView,
    input: &SaleInput,
) -> Result<Sale, DomainError> {
    let device = read_device(device_doc)?;
    check_ledger_for(ledger, &device, input.at_ms)?;
    if input.lines.is_empty() {
        return Err(DomainError::EmptySale);
    }
    if input.lines.len() > SALE_LINES_MAX {
        return Err(DomainError::TooManyLines {
            lines: input.lines.len(),
        });
    }
    if !catalog.customers.contains_key(&input.customer) {
        return Err(DomainError::UnknownCustomer(input.customer.clone()));
    }
    if !catalog.locations.contains_key(&input.location) {
        return Err(DomainError::UnknownLocation(input.location.clone()));
    }
    let mut currency = None;
    let mut lines = Vec::with_capacity(input.lines.len());
    for (index, line) in input.lines.iter().enumerate() {
        check_line_input(&input.lines, index)?;
        let product = catalog
            .products
            .get(&line.product)
            .filter(|product| product.active)
            .ok_or_else(|| DomainError::UnknownProduct(line.product.clone()))?;
        match currency {
            None => currency = Some(product.currency),
            Some(currency) if currency != product.currency => {
                return Err(DomainError::CurrencyMismatch {
                    expected: currency,
                    found: product.currency,
                })
            }
            Some(_) => {}
        }
        lines.push(SaleLine {
            product: line.product.clone(),
            quantity: line.quantity,
            unit_price_cents: product.unit_price_cents,
            line_total_cents: line_total_cents(line.quantity, product.unit_price_cents)?,
        });
    }
    let currency = currency.ok_or(DomainError::EmptySale)?;
    let total_cents = checked_sum(lines.iter().map(|line| line.line_total_cents))?;

    let id = allocate_record_id(device_doc, highest_seq_in_ledger(ledger, &device.device))?;
    let sale = Sale {
        receipt: receipt_number(&device.receipt_prefix, id.seq),
        id,
        seller: device.seller.clone(),
        customer: input.customer.clone(),
        location: input.location.clone(),
        recorded_at_ms: input.at_ms,
        currency,
        lines,
        total_cents,
    };
    write_sale(ledger, &sale)?;
    Ok(sale)
}

/// Writes `sale` as a new key of `sales`. Refuses to overwrite.
pub(crate) fn write_sale(ledger: &mut Automerge, sale: &Sale) -> Result<(), DomainError> {
    let (mut tx, map) = begin_record(ledger, "sales", &sale.id)?;
    tx.put(&map, "receipt", sale.receipt.as_str())?;
    tx.put(&map, "seller", sale.seller.as_str())?;
    tx.put(&map, "customer", sale.customer.as_str())?;
    tx.put(&map, "location", sale.location.as_str())?;
    tx.put(&map, "recorded_at_ms", sale.recorded_at_ms)?;
    tx.put(&map, "currency", sale.currency.as_str())?;
    let list = tx.put_object(&map, "lines", ObjType::List)?;
    for (index, line) in sale.lines.iter().enumerate() {
        let item = tx.insert_object(&list, index, ObjType::Map)?;
        tx.put(&item, "product", line.product.as_str())?;
        tx.put(&item, "quantity", line.quantity)?;
        tx.put(&item, "unit_price_cents", line.unit_price_cents)?;
        tx.put(&item, "line_total_cents", line.line_total_cents)?;
    }
    tx.put(&map, "total_cents", sale.total_cents)?;
    tx.commit();
    Ok(())
}

fn seq_value(seq: u64) -> Result<i64, DomainError> {
    i64::try_from(seq).map_err(|_| DomainError::SequenceExhausted)
}

/// Opens a transaction that writes the record `id` as a new key of the ledger
/// map `collection` (sales and corrections alike): registers this actor as a
/// writer for the device, writes the record's `device` and `seq`, and returns
/// the transaction with the record's map for the caller to fill and commit.
/// Refuses to overwrite.
fn begin_record<'a>(
    ledger: &'a mut Automerge,
    collection: &str,
    id: &RecordId,
) -> Result<(automerge::transaction::Transaction<'a>, ObjId), DomainError> {
    let records = container(ledger, collection)?;
    let writers = container(ledger, "writers")?;
    let actor = ledger.get_actor().to_hex_string();
    let key = id.to_string();
    let mut tx = ledger.transaction();
    if tx.get(&records, key.as_str())?.is_some() {
        return Err(DomainError::RecordExists(key));
    }
    register_writer(&mut tx, &writers, &actor, &id.device)?;
    let map = tx.put_object(&records, key.as_str(), ObjType::Map)?;
    tx.put(&map, "device", id.device.as_str())?;
    tx.put(&map, "seq", seq_value(id.seq)?)?;
    Ok((tx, map))
}

/// The sale `sale` as this replica sees it, with its corrections.
fn sale_for_correction(
    ledger: &Automerge,
    sale: &RecordId,
) -> Result<(LedgerView, Sale), DomainError> {
    let view = read_ledger_focused(ledger, None, Some(sale));
    let found = view
        .sales
        .get(sale)
        .cloned()
        .ok_or_else(|| DomainError::SaleNotFound(sale.clone()))?;
    Ok((view, found))
}

/// Voids a sale. Refused if this replica already sees it voided; a void
/// concurrent with another void or a payment from another device merges and
/// is reported by [`sale_statuses`].
pub fn void_sale(
    device_doc: &mut Automerge,
    ledger: &mut Automerge,
    sale: &RecordId,
    reason: &str,
    at_ms: i64,
) -> Result<Void, DomainError> {
    check_note(reason)?;
    let device = read_device(device_doc)?;
    check_ledger_for(ledger, &device, ledger_period_start(ledger)?)?;
    let (view, _) = sale_for_correction(ledger, sale)?;
    if view.voids.values().any(|void| &void.sale == sale) {
        return Err(DomainError::SaleVoided(sale.clone()));
    }
    let id = allocate_record_id(device_doc, highest_seq_in_ledger(ledger, &device.device))?;
    let (mut tx, map) = begin_record(ledger, "voids", &id)?;
    tx.put(&map, "sale", sale.to_string())?;
    tx.put(&map, "reason", reason)?;
    tx.put(&map, "at_ms", at_ms)?;
    tx.commit();
    Ok(Void {
        id,
        sale: sale.clone(),
        reason: reason.to_owned(),
        at_ms,
    })
}

/// Corrections go into the sale's ledger whatever the date; the ownership
/// check uses the ledger's own period.
fn ledger_period_start(ledger: &Automerge) -> Result<i64, DomainError> {
    let meta = expect_kind(ledger, DocKind::Ledger)?;
    meta.period
        .map(|period| period.start_ms())
        .ok_or_else(missing_period)
}

/// A ledger whose meta has no period.
fn missing_period() -> DomainError {
    DomainError::Malformed {
        path: "meta.period".into(),
        source: FieldError::Missing {
            field: "period".into(),
        },
    }
}

/// Records a payment towards a sale. Refused if this replica sees the sale
/// voided, or if it would pay more than is due.
pub fn record_payment(
    device_doc: &mut Automerge,
    ledger: &mut Automerge,
    sale: &RecordId,
    amount_cents: i64,
    method: &str,
    at_ms: i64,
) -> Result<Payment, DomainError> {
    check_note(method)?;
    let device = read_device(device_doc)?;
    check_ledger_for(ledger, &device, ledger_period_start(ledger)?)?;
    let (view, found) = sale_for_correction(ledger, sale)?;
    if amount_cents <= 0 {
        return Err(DomainError::NonPositiveAmount(amount_cents));
    }
    let statuses = sale_statuses(&view);
    let status = statuses
        .get(sale)
        .ok_or_else(|| DomainError::SaleNotFound(sale.clone()))?;
    if status.state == SaleState::Voided {
        return Err(DomainError::SaleVoided(sale.clone()));
    }
    let due = status
        .due_cents
        .checked_sub(status.paid_cents)
        .ok_or(AmountOverflow)?;
    if amount_cents > due {
        return Err(DomainError::Overpayment {
            due_cents: due,
            amount_cents,
        });
    }
    let id = allocate_record_id(device_doc, highest_seq_in_ledger(ledger, &device.device))?;
    let (mut tx, map) = begin_record(ledger, "payments", &id)?;
    tx.put(&map, "sale", sale.to_string())?;
    tx.put(&map, "amount_cents", amount_cents)?;
    tx.put(&map, "currency", found.currency.as_str())?;
    tx.put(&map, "method", method)?;
    tx.put(&map, "at_ms", at_ms)?;
    tx.commit();
    Ok(Payment {
        id,
        sale: sale.clone(),
        amount_cents,
        currency: found.currency,
        method: method.to_owned(),
        at_ms,
    })
}

/// Records goods coming back from a sale into `location`. Refunds are
/// derived from the sale's prices. Refused if it would return more than was
/// sold (as this replica sees it; concurrent over-returns are reported by
/// validation). Move the stock with
/// [`apply_return_to_stock`](super::apply_return_to_stock).
pub fn record_return(
    device_doc: &mut Automerge,
    ledger: &mut Automerge,
    sale: &RecordId,
    lines: &[SaleLineInput],
    location: &LocationId,
    at_ms: i64,
) -> Result<SaleReturn, DomainError> {
    let device = read_device(device_doc)?;
    check_ledger_for(ledger, &device, ledger_period_start(ledger)?)?;
    let (view, found) = sale_for_correction(ledger, sale)?;
    if lines.is_empty() {
        return Err(DomainError::EmptySale);
    }
    let mut return_lines = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        check_line_input(lines, index)?;
        let sale_line = found
            .lines
            .iter()
            .find(|sale_line| sale_line.product == line.product)
            .ok_or_else(|| DomainError::UnknownProduct(line.product.clone()))?;
        let sold = found.quantity_of(&line.product);
        let returned = checked_sum(
            view.returns
                .values()
                .filter(|r| &r.sale == sale)
                .flat_map(|r| r.lines.iter())
                .filter(|l| l.product == line.product)
                .map(|l| l.quantity),
        )?;
        if returned.checked_add(line.quantity).ok_or(AmountOverflow)? > sold {
            return Err(DomainError::ReturnExceedsSold {
                product: line.product.clone(),
                sold,
                returned,
                requested: line.quantity,
            });
        }
        return_lines.push(ReturnLine {
            product: line.product.clone(),
            quantity: line.quantity,
            refund_cents: line_total_cents(line.quantity, sale_line.unit_price_cents)?,
        });
    }
    let refund_cents = checked_sum(return_lines.iter().map(|l| l.refund_cents))?;
    let id = allocate_record_id(device_doc, highest_seq_in_ledger(ledger, &device.device))?;
    let record = SaleReturn {
        receipt: receipt_number(&device.receipt_prefix, id.seq),
        id,
        sale: sale.clone(),
        location: location.clone(),
        at_ms,
        lines: return_lines,
        refund_cents,
    };
    let (mut tx, map) = begin_record(ledger, "returns", &record.id)?;
    tx.put(&map, "sale", sale.to_string())?;
    tx.put(&map, "receipt", record.receipt.as_str())?;
    tx.put(&map, "location", location.as_str())?;
    tx.put(&map, "at_ms", at_ms)?;
    let list = tx.put_object(&map, "lines", ObjType::List)?;
    for (index, line) in record.lines.iter().enumerate() {
        let item = tx.insert_object(&list, index, ObjType::Map)?;
        tx.put(&item, "product", line.product.as_str())?;
        tx.put(&item, "quantity", line.quantity)?;
        tx.put(&item, "refund_cents", line.refund_cents)?;
    }
    tx.put(&map, "refund_cents", record.refund_cents)?;
    tx.commit();
    Ok(record)
}

/// The record id of a record map: the key, which must equal `device:seq`
/// as stored in the record.
fn record_key<R: ReadDoc>(doc: &R, key: &str, obj: &ObjId, p: &mut Problems) -> Option<RecordId> {
    let from_key = p.take(RecordId::parse(key).map_err(|e| FieldError::invalid("key", e)));
    let device = p.take(get_parsed(doc, obj, "device", DeviceId::new));
    let seq = p.take(get_int(doc, obj, "seq"));
    let (from_key, device, seq) = (from_key?, device?, seq?);
    let stored = u64::try_from(seq)
        .ok()
        .map(|seq| RecordId::new(device, seq));
    if stored.as_ref() != Some(&from_key) {
        p.push(Problem::KeyMismatch {
            expected: stored.map_or_else(|| format!("seq {seq}"), |id| id.to_string()),
        });
        return None;
    }
    Some(from_key)
}

/// Reads and checks a whole ledger. With a catalog it also checks products
/// and device registrations. Never fails: unreadable records are violations.
pub fn read_ledger<R: ReadDoc>(doc: &R, catalog: Option<&CatalogView>) -> LedgerView {
    read_ledger_focused(doc, catalog, None)
}

/// [`read_ledger`], restricted to one sale and its corrections when `focus`
/// is given: what a device needs before it voids, pays or returns, without
/// parsing a month of sales (~0.35 s for 3,000 sales on a laptop).
fn read_ledger_focused<R: ReadDoc>(
    doc: &R,
    catalog: Option<&CatalogView>,
    focus: Option<&RecordId>,
) -> LedgerView {
    match focus {
        None => read_ledger_selected(doc, catalog, None),
        Some(sale) => {
            let selection = LedgerSelection {
                sales: BTreeSet::from([sale.to_string()]),
                find_corrections: true,
                ..LedgerSelection::default()
            };
            read_ledger_selected(doc, catalog, Some(&selection))
        }
    }
}

/// Which records of a ledger [`read_ledger_selected`] reads: the `sales`
/// listed, the corrections listed by key whatever they refer to, and, with
/// `find_corrections`, every correction (void, payment, return) that
/// refers to a listed sale (found by reading each correction's `sale`).
/// Without it the caller lists those corrections itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LedgerSelection {
    pub sales: BTreeSet<String>,
    pub voids: BTreeSet<String>,
    pub payments: BTreeSet<String>,
    pub returns: BTreeSet<String>,
    pub find_corrections: bool,
}

impl LedgerSelection {
    pub fn corrections(&self, collection: &str) -> Option<&BTreeSet<String>> {
        match collection {
            "voids" => Some(&self.voids),
            "payments" => Some(&self.payments),
            "returns" => Some(&self.returns),
            _ => None,
        }
    }
}

/// [`read_ledger`] restricted to a [`LedgerSelection`] (`None`: the whole
/// ledger). A correction's validity depends on its sale and, for returns,
/// on the earlier returns of the same sale; reading a sale with every
/// correction that refers to it gives each selected record exactly the
/// verdict the whole read gives it. Corrections are found by reading the
/// `sale` field of each (one field, not the record).
pub(crate) fn read_ledger_selected<R: ReadDoc>(
    doc: &R,
    catalog: Option<&CatalogView>,
    selection: Option<&LedgerSelection>,
) -> LedgerView {
    let sale_keys = match selection {
        Some(selection) => KeySelection::Only(&selection.sales),
        None => KeySelection::All,
    };
    let everything = |collection: &'static str| match selection {
        Some(selection) if !selection.find_corrections => selection
            .corrections(collection)
            .map_or(KeySelection::All, KeySelection::Only),
        _ => KeySelection::All,
    };
    let refers_to_focus = |collection: &'static str| {
        move |key: &str, obj: &ObjId| match selection {
            None => true,
            Some(selection) => {
                selection
                    .corrections(collection)
                    .is_some_and(|keys| keys.contains(key))
                    || get_string(doc, obj, "sale")
                        .is_ok_and(|sale| selection.sales.contains(&sale))
            }
        }
    };
    let mut violations = check_root(doc, DocKind::Ledger);
    let meta = doc_meta(doc).ok();
    let owner = meta.as_ref().map(|meta| meta.owner.clone());
    let period = meta.as_ref().and_then(|meta| meta.period);

    let sales = read_records_selected(
        doc,
        "sales",
        sale_keys,
        |_, _| true,
        &mut violations,
        |key, obj| {
            let mut p = Problems::default();
            let id = record_key(doc, key, obj, &mut p);
            let receipt = p.take(get_string(doc, obj, "receipt"));
            let seller = p.take(get_parsed(doc, obj, "seller", SellerId::new));
            let customer = p.take(get_parsed(doc, obj, "customer", CustomerId::new));
            let location = p.take(get_parsed(doc, obj, "location", LocationId::new));
            let recorded_at_ms = p.take(get_int(doc, obj, "recorded_at_ms"));
            let currency = p.take(get_parsed(doc, obj, "currency", |s| Currency::new(&s)));
            let stored_total = p.take(get_int(doc, obj, "total_cents"));
            let lines = p
                .take(get_list(doc, obj, "lines"))
                .map(|list| read_sale_lines(doc, &list, catalog, &mut p));
            check_lines(
                lines.as_deref(),
                |l| l.line_total_cents,
                stored_total,
                &mut p,
            );
            if let (Some(owner), Some(seller)) = (&owner, &seller) {
                let device_seller = id
                    .as_ref()
                    .and_then(|id| catalog.and_then(|c| c.devices.get(&id.device)))
                    .map(|record| record.seller.clone());
                let device_elsewhere = device_seller.as_ref().is_some_and(|s| s.as_str() != owner);
                if seller.as_str() != owner || device_elsewhere {
                    p.push(Problem::ForeignSeller {
                        ledger_owner: owner.clone(),
                        seller: seller.clone(),
                        device_seller,
                    });
                }
            }
            if let (Some(catalog), Some(id)) = (catalog, &id) {
                if !catalog.devices.contains_key(&id.device) {
                    p.push(Problem::UnknownDevice {
                        device: id.device.clone(),
                    });
                }
            }
            if let (Some(ledger), Some(at)) = (period, recorded_at_ms) {
                if !ledger.contains(at) {
                    p.push(Problem::WrongPeriod {
                        ledger,
                        recorded: Period::of_ms(at),
                    });
                }
            }
            match (
                id,
                receipt,
                seller,
                customer,
                location,
                recorded_at_ms,
                currency,
                lines,
                stored_total,
            ) {
                (
                    Some(id),
                    Some(receipt),
                    Some(seller),
                    Some(customer),
                    Some(location),
                    Some(recorded_at_ms),
                    Some(currency),
                    Some(lines),
                    Some(total_cents),
                ) if p.0.is_empty() => Ok((
                    id.clone(),
                    Sale {
                        id,
                        receipt,
                        seller,
                        customer,
                        location,
                        recorded_at_ms,
                        currency,
                        lines,
                        total_cents,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );

    let sale_ref = |p: &mut Problems, obj: &ObjId| -> Option<&Sale> {
        let sale = p.take(get_parsed(doc, obj, "sale", |s| RecordId::parse(&s)))?;
        match sales.get(&sale) {
            Some(found) => Some(found),
            None => {
                p.push(Problem::UnknownSale { sale });
                None
            }
        }
    };

    let voids = read_records_selected(
        doc,
        "voids",
        everything("voids"),
        refers_to_focus("voids"),
        &mut violations,
        |key, obj| {
            let mut p = Problems::default();
            let id = record_key(doc, key, obj, &mut p);
            let sale = sale_ref(&mut p, obj).map(|sale| sale.id.clone());
            let reason = p.take(get_string(doc, obj, "reason"));
            let at_ms = p.take(get_int(doc, obj, "at_ms"));
            match (id, sale, reason, at_ms) {
                (Some(id), Some(sale), Some(reason), Some(at_ms)) if p.0.is_empty() => Ok((
                    id.clone(),
                    Void {
                        id,
                        sale,
                        reason,
                        at_ms,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );

    let payments = read_records_selected(
        doc,
        "payments",
        everything("payments"),
        refers_to_focus("payments"),
        &mut violations,
        |key, obj| {
            let mut p = Problems::default();
            let id = record_key(doc, key, obj, &mut p);
            let sale = sale_ref(&mut p, obj).cloned();
            let amount_cents = p.take(get_int(doc, obj, "amount_cents"));
            let currency = p.take(get_parsed(doc, obj, "currency", |s| Currency::new(&s)));
            let method = p.take(get_string(doc, obj, "method"));
            let at_ms = p.take(get_int(doc, obj, "at_ms"));
            if let Some(amount) = amount_cents.filter(|amount| *amount <= 0) {
                p.push(Problem::NonPositiveAmount {
                    amount_cents: amount,
                });
            }
            if let (Some(sale), Some(currency)) = (&sale, currency) {
                if sale.currency != currency {
                    p.push(Problem::CurrencyMismatch {
                        expected: sale.currency.to_string(),
                        found: currency.to_string(),
                    });
                }
            }
            match (id, sale, amount_cents, currency, method, at_ms) {
                (
                    Some(id),
                    Some(sale),
                    Some(amount_cents),
                    Some(currency),
                    Some(method),
                    Some(at_ms),
                ) if p.0.is_empty() => Ok((
                    id.clone(),
                    Payment {
                        id,
                        sale: sale.id,
                        amount_cents,
                        currency,
                        method,
                        at_ms,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );

    // Returns are checked in id order so that, of concurrent returns that
    // together exceed what was sold, the same ones are rejected everywhere.
    let mut returned: BTreeMap<(RecordId, ProductId), i64> = BTreeMap::new();
    let returns = read_records_selected(
        doc,
        "returns",
        everything("returns"),
        refers_to_focus("returns"),
        &mut violations,
        |key, obj| {
            let mut p = Problems::default();
            let id = record_key(doc, key, obj, &mut p);
            let sale = sale_ref(&mut p, obj).cloned();
            let receipt = p.take(get_string(doc, obj, "receipt"));
            let location = p.take(get_parsed(doc, obj, "location", LocationId::new));
            let at_ms = p.take(get_int(doc, obj, "at_ms"));
            let stored_refund = p.take(get_int(doc, obj, "refund_cents"));
            let lines = p
                .take(get_list(doc, obj, "lines"))
                .map(|list| read_return_lines(doc, &list, sale.as_ref(), &mut p));
            check_lines(lines.as_deref(), |l| l.refund_cents, stored_refund, &mut p);
            if let (Some(sale), Some(lines)) = (&sale, &lines) {
                if p.0.is_empty() {
                    let mut over = Vec::new();
                    for line in lines {
                        let sold = sale.quantity_of(&line.product);
                        let before = returned
                            .get(&(sale.id.clone(), line.product.clone()))
                            .copied()
                            .unwrap_or(0);
                        let after = before.saturating_add(line.quantity);
                        if after > sold {
                            over.push(Problem::ReturnExceedsSold {
                                product: line.product.clone(),
                                sold,
                                returned: after,
                            });
                        }
                    }
                    if over.is_empty() {
                        for line in lines {
                            let entry = returned
                                .entry((sale.id.clone(), line.product.clone()))
                                .or_insert(0);
                            *entry = entry.saturating_add(line.quantity);
                        }
                    }
                    p.0.extend(over);
                }
            }
            match (id, sale, receipt, location, at_ms, lines, stored_refund) {
                (
                    Some(id),
                    Some(sale),
                    Some(receipt),
                    Some(location),
                    Some(at_ms),
                    Some(lines),
                    Some(refund_cents),
                ) if p.0.is_empty() => Ok((
                    id.clone(),
                    SaleReturn {
                        id,
                        sale: sale.id,
                        receipt,
                        location,
                        at_ms,
                        lines,
                        refund_cents,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );

    LedgerView {
        meta,
        sales,
        voids,
        payments,
        returns,
        violations,
    }
}

fn read_sale_lines<R: ReadDoc>(
    doc: &R,
    list: &ObjId,
    catalog: Option<&CatalogView>,
    p: &mut Problems,
) -> Vec<SaleLine> {
    let mut lines = Vec::new();
    for (index, item) in line_maps(doc, list, p) {
        let product = p.take(get_parsed(doc, &item, "product", ProductId::new));
        let quantity = p.take(get_int(doc, &item, "quantity"));
        let unit_price_cents = p.take(get_int(doc, &item, "unit_price_cents"));
        let stored = p.take(get_int(doc, &item, "line_total_cents"));
        let (Some(product), Some(quantity), Some(unit_price_cents), Some(stored)) =
            (product, quantity, unit_price_cents, stored)
        else {
            continue;
        };
        check_quantity(index, quantity, p);
        if unit_price_cents < 0 {
            p.push(Problem::NegativePrice {
                line: index,
                unit_price_cents,
            });
        }
        check_line_total(index, quantity, unit_price_cents, stored, p);
        if let Some(catalog) = catalog {
            if !catalog.products.contains_key(&product) {
                p.push(Problem::UnknownProduct {
                    line: index,
                    product: product.clone(),
                });
            }
        }
        lines.push(SaleLine {
            product,
            quantity,
            unit_price_cents,
            line_total_cents: stored,
        });
    }
    lines
}

/// The line maps of a sale's or return's `lines` list with their indexes:
/// at most [`SALE_LINES_MAX`], a longer list being a problem of its own.
fn line_maps<R: ReadDoc>(doc: &R, list: &ObjId, p: &mut Problems) -> Vec<(usize, ObjId)> {
    let length = doc.length(list);
    if length > SALE_LINES_MAX {
        p.push(Problem::Field(FieldError::invalid(
            "lines",
            format!("more than {SALE_LINES_MAX} lines"),
        )));
    }
    (0..length.min(SALE_LINES_MAX))
        .filter_map(|index| {
            let field = format!("lines[{index}]");
            p.take(list_map(doc, list, index, &field))
                .map(|item| (index, item))
        })
        .collect()
}

/// A line's quantity must be positive (sale and return lines).
fn check_quantity(index: usize, quantity: i64, p: &mut Problems) {
    if quantity <= 0 {
        p.push(Problem::NonPositiveQuantity {
            line: index,
            quantity,
        });
    }
}

/// A stored line amount (sale line total, return line refund) must equal
/// `quantity` x `unit_price_cents`.
fn check_line_total(
    index: usize,
    quantity: i64,
    unit_price_cents: i64,
    stored: i64,
    p: &mut Problems,
) {
    match line_total_cents(quantity, unit_price_cents) {
        Err(AmountOverflow) => p.push(Problem::AmountOverflow),
        Ok(derived) if derived != stored => p.push(Problem::LineTotalMismatch {
            line: index,
            stored,
            derived,
        }),
        Ok(_) => {}
    }
}

/// A record's lines (sale, return), once read, must not be empty and must
/// add up to the stored total (sale total, refund).
fn check_lines<T>(
    lines: Option<&[T]>,
    amount: impl Fn(&T) -> i64,
    stored: Option<i64>,
    p: &mut Problems,
) {
    if let Some(lines) = lines {
        if lines.is_empty() {
            p.push(Problem::EmptySale);
        }
        check_total(lines.iter().map(amount), stored, p);
    }
}

/// A stored total must equal the sum of its lines (sale total, refund).
fn check_total(amounts: impl Iterator<Item = i64>, stored: Option<i64>, p: &mut Problems) {
    match (checked_sum(amounts), stored) {
        (Err(AmountOverflow), _) => p.push(Problem::AmountOverflow),
        (Ok(derived), Some(stored)) if derived != stored => {
            p.push(Problem::SaleTotalMismatch { stored, derived })
        }
        _ => {}
    }
}

fn read_return_lines<R: ReadDoc>(
    doc: &R,
    list: &ObjId,
    sale: Option<&Sale>,
    p: &mut Problems,
) -> Vec<ReturnLine> {
    let mut lines = Vec::new();
    for (index, item) in line_maps(doc, list, p) {
        let product = p.take(get_parsed(doc, &item, "product", ProductId::new));
        let quantity = p.take(get_int(doc, &item, "quantity"));
        let stored = p.take(get_int(doc, &item, "refund_cents"));
        let (Some(product), Some(quantity), Some(stored)) = (product, quantity, stored) else {
            continue;
        };
        check_quantity(index, quantity, p);
        if let Some(sale) = sale {
            match sale.lines.iter().find(|line| line.product == product) {
                None => p.push(Problem::ProductNotInSale {
                    product: product.clone(),
                }),
                Some(sale_line) => {
                    check_line_total(index, quantity, sale_line.unit_price_cents, stored, p)
                }
            }
        }
        lines.push(ReturnLine {
            product,
            quantity,
            refund_cents: stored,
        });
    }
    lines
}

/// Valid sales recorded in `[from_ms, to_ms)`, by time then id.
pub fn sales_between(view: &LedgerView, from_ms: i64, to_ms: i64) -> Vec<&Sale> {
    let mut sales: Vec<&Sale> = view
        .sales
        .values()
        .filter(|sale| (from_ms..to_ms).contains(&sale.recorded_at_ms))
        .collect();
    sales.sort_by(|a, b| (a.recorded_at_ms, &a.id).cmp(&(b.recorded_at_ms, &b.id)));
    sales
}

/// Where a sale stands once every correction is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleState {
    /// Money still due.
    Open,
    /// Paid in full.
    Paid,
    /// Voided. A void wins over payments, whatever the merge order: payments
    /// on a voided sale are to be refunded and are reported as a conflict.
    Voided,
}

/// Two facts about one sale that do not fit together; reported, never hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleConflict {
    /// Voided on one device while paid on another.
    VoidedAndPaid {
        voids: Vec<RecordId>,
        payments: Vec<RecordId>,
    },
    /// Voided more than once (concurrently).
    VoidedMoreThanOnce { voids: Vec<RecordId> },
    /// Concurrent payments add up to more than is due.
    Overpaid { due_cents: i64, paid_cents: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleStatus {
    pub sale: RecordId,
    pub state: SaleState,
    pub total_cents: i64,
    pub refunded_cents: i64,
    /// `total - refunded`.
    pub due_cents: i64,
    pub paid_cents: i64,
    pub voids: Vec<RecordId>,
    pub payments: Vec<RecordId>,
    pub conflicts: Vec<SaleConflict>,
}

/// The status of every valid sale: a pure function of the set of facts, so
/// every replica with the same facts derives the same status.
pub fn sale_statuses(view: &LedgerView) -> BTreeMap<RecordId, SaleStatus> {
    let mut out: BTreeMap<RecordId, SaleStatus> = view
        .sales
        .values()
        .map(|sale| {
            (
                sale.id.clone(),
                SaleStatus {
                    sale: sale.id.clone(),
                    state: SaleState::Open,
                    total_cents: sale.total_cents,
                    refunded_cents: 0,
                    due_cents: sale.total_cents,
                    paid_cents: 0,
                    voids: Vec::new(),
                    payments: Vec::new(),
                    conflicts: Vec::new(),
                },
            )
        })
        .collect();
    for void in view.voids.values() {
        if let Some(status) = out.get_mut(&void.sale) {
            status.voids.push(void.id.clone());
        }
    }
    for payment in view.payments.values() {
        if let Some(status) = out.get_mut(&payment.sale) {
            status.payments.push(payment.id.clone());
            status.paid_cents = status.paid_cents.saturating_add(payment.amount_cents);
        }
    }
    for sale_return in view.returns.values() {
        if let Some(status) = out.get_mut(&sale_return.sale) {
            status.refunded_cents = status
                .refunded_cents
                .saturating_add(sale_return.refund_cents);
        }
    }
    for status in out.values_mut() {
        status.due_cents = status.total_cents.saturating_sub(status.refunded_cents);
        status.state = if !status.voids.is_empty() {
            SaleState::Voided
        } else if status.paid_cents >= status.due_cents {
            SaleState::Paid
        } else {
            SaleState::Open
        };
        if !status.voids.is_empty() && !status.payments.is_empty() {
            status.conflicts.push(SaleConflict::VoidedAndPaid {
                voids: status.voids.clone(),
                payments: status.payments.clone(),
            });
        }
        if status.voids.len() > 1 {
            status.conflicts.push(SaleConflict::VoidedMoreThanOnce {
                voids: status.voids.clone(),
            });
        }
        if status.paid_cents > status.due_cents {
            status.conflicts.push(SaleConflict::Overpaid {
                due_cents: status.due_cents,
                paid_cents: status.paid_cents,
            });
        }
    }
    out
}

/// Every conflict in the ledger, by sale.
pub fn sale_conflicts(view: &LedgerView) -> Vec<(RecordId, SaleConflict)> {
    sale_statuses(view)
        .into_values()
        .flat_map(|status| {
            let sale = status.sale;
            status
                .conflicts
                .into_iter()
                .map(move |conflict| (sale.clone(), conflict))
        })
        .collect()
}

/// Checks who wrote each record of a ledger: the Automerge actor whose
/// change created the record must be registered in the ledger's `writers` map
/// for the device the record names. Every writer here registers its actor in
/// the same change as its first record in the ledger, so the registration
/// always travels with the records. Catches a replica writing records in
/// another device's name (a bug, or a client copying records around); it is
/// not authentication, since the registration is the writer's own claim.
pub fn check_record_writers<R: ReadDoc>(ledger: &R) -> Vec<Violation> {
    let mut out = Vec::new();
    let writers: BTreeMap<String, String> =
        super::read::get_map(ledger, &automerge::ROOT, "writers")
            .map(|map| {
                ledger
                    .map_range(&map, ..)
                    .filter_map(|item| {
                        let device = get_string(ledger, &map, &item.key).ok()?;
                        Some((item.key.into_owned(), device))
                    })
                    .collect()
            })
            .unwrap_or_default();
    for collection in RECORD_CONTAINERS {
        let Ok(map) = super::read::get_map(ledger, &automerge::ROOT, collection) else {
            continue;
        };
        for item in ledger.map_range(&map, ..) {
            let Ok(Some((_, id))) = ledger.get(&map, item.key.as_ref()) else {
                continue;
            };
            let Some(actor) = super::catalog::creator(&id) else {
                continue;
            };
            let claimed = RecordId::parse(&item.key).ok().map(|record| record.device);
            let problem = match (writers.get(&actor), claimed) {
                (None, _) => Problem::UnknownWriter,
                (Some(writer), Some(claimed)) if writer.as_str() != claimed.as_str() => {
                    match DeviceId::new(writer.clone()) {
                        Ok(writer) => Problem::WrittenByOtherDevice { writer },
                        Err(error) => Problem::Field(FieldError::invalid("writers", error)),
                    }
                }
                _ => continue,
            };
            out.push(Violation::record(
                collection,
                &item.key,
                Some(actor),
                problem,
            ));
        }
    }
    out
}

/// Registers the writing actor for `device` in `writers`, if not yet there,
/// inside the transaction that writes the record.
fn register_writer(
    tx: &mut automerge::transaction::Transaction<'_>,
    writers: &ObjId,
    actor: &str,
    device: &DeviceId,
) -> Result<(), DomainError> {
    if tx.get(writers, actor)?.is_none() {
        tx.put(writers, actor, device.as_str())?;
    }
    Ok(())
}
