//! From a document to rows: [`build_rows`], full or incremental.
//!
//! The incremental path reads the operations of the changes made since
//! the exported heads, turns them into the set of (collection, key)
//! records they touched, widens that set to every record
//! whose verdict can depend on them, and reads only those with the domain's
//! selective readers:
//!
//! - ledger: a changed sale, with every void, payment and return that
//!   refers to it (their validity depends on the sale, and a return's on
//!   the earlier returns of the same sale); a changed correction, with its
//!   sale (now and at the exported heads) and that sale's corrections;
//! - stock: every level (one counter per product, cheap), the changed
//!   movements and alerts, and, when a counter appeared or disappeared, the
//!   movements of that product (their `NoCounter` rule); the counter-drift
//!   rule is a view in SQL (`stock_counter_drift`), not an invalid record;
//! - catalog: the changed records.
//!
//! Anything else (a change to `meta` or the root, unknown heads, a
//! document of no known kind) falls back to a full export, which is always
//! correct. Both paths run the same parsing and rules, so the rows of an
//! incremental export equal those of a full one for the same records
//! (`tests/it/export_incremental.rs` checks it on random workloads).

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ChangeHash, Prop, ReadDoc, ROOT};
use ventas_sync_protocol::ids::DocumentId;

use super::cached::CachedDoc;
use super::tables::{Cell, Row, Table};
use super::ExportError;
use crate::domain::{
    doc_meta, read_catalog_selected, read_ledger_selected, read_stock_selected, CatalogView,
    DocKind, DocMeta, KeySelection, LedgerSelection, LedgerView, Problem, RecordId, StockView,
    Violation,
};

/// Which rows of the document an export replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportScope {
    /// Every row of the document: the rows not in the export are deleted.
    Full,
    /// Only these records: `collection -> keys` (their business rows, their
    /// child rows and their invalid-record rows are replaced), and the
    /// collections replaced as a whole (`root`, a stock's `levels`).
    Records {
        keys: BTreeMap<String, BTreeSet<String>>,
        whole: BTreeSet<String>,
    },
}

impl ExportScope {
    fn empty() -> Self {
        ExportScope::Records {
            keys: BTreeMap::new(),
            whole: BTreeSet::new(),
        }
    }
}

/// The rows of one document (all of them or those of changed records) and
/// the heads they were built from.
#[derive(Debug, Clone)]
pub struct DocExport {
    pub document_id: DocumentId,
    pub heads: Vec<ChangeHash>,
    pub kind: Option<DocKind>,
    pub tenant: Option<String>,
    pub owner: Option<String>,
    pub period: Option<String>,
    pub scope: ExportScope,
    pub rows: BTreeMap<Table, Vec<Row>>,
}

impl DocExport {
    /// Rows over every table.
    pub fn row_count(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }

    pub fn is_full(&self) -> bool {
        self.scope == ExportScope::Full
    }
}

/// Builds the rows of `doc`. `since` empty: everything (a full export).
/// Otherwise only the records changed between `since` and the current
/// heads (see the module documentation). Pure; no I/O.
pub fn build_rows(
    document_id: &DocumentId,
    doc: &Automerge,
    since: &[ChangeHash],
) -> Result<DocExport, ExportError> {
    let heads = doc.get_heads();
    let meta = doc_meta(doc).ok();
    let mut export = DocExport {
        document_id: *document_id,
        heads: heads.clone(),
        kind: meta.as_ref().map(|meta| meta.kind),
        tenant: meta.as_ref().map(|meta| meta.tenant.to_string()),
        owner: meta.as_ref().map(|meta| meta.owner.clone()),
        period: meta
            .as_ref()
            .and_then(|meta| meta.period)
            .map(|p| p.to_string()),
        scope: ExportScope::Full,
        rows: BTreeMap::new(),
    };
    let Some(meta) = meta else {
        // Not a ventas document (or its meta is unreadable): only the
        // export_state row.
        return Ok(export);
    };
    let mut since_sorted = since.to_vec();
    since_sorted.sort();
    if !since.is_empty() && since_sorted == heads {
        export.scope = ExportScope::empty();
        return Ok(export);
    }
    let touched = if since.is_empty() {
        None
    } else {
        touched_records(doc, since, meta.kind)
    };
    let context = Context {
        document_id: document_id.to_string(),
        meta: &meta,
    };
    let mut rows = Rows::default();
    match (meta.kind, touched) {
        (DocKind::Ledger, None) => {
            let view = read_ledger_selected(&CachedDoc::whole(doc), None, None);
            ledger_rows(&context, &view, &mut rows)?;
        }
        (DocKind::Ledger, Some(touched)) => {
            let (selection, scope) = ledger_selection(doc, since, &touched);
            let view = read_ledger_selected(doc, None, Some(&selection));
            ledger_rows(&context, &view, &mut rows)?;
            export.scope = scope_of(&view, scope);
        }
        (DocKind::Stock, None) => {
            let view =
                read_stock_selected(&CachedDoc::whole(doc), KeySelection::All, KeySelection::All);
            stock_rows(&context, &view, &mut rows)?;
        }
        (DocKind::Stock, Some(touched)) => {
            let movements = stock_movement_selection(doc, &touched);
            let empty = BTreeSet::new();
            let alerts = touched.keys.get("alerts").unwrap_or(&empty);
            let view = read_stock_selected(
                doc,
                KeySelection::Only(&movements),
                KeySelection::Only(alerts),
            );
            stock_rows(&context, &view, &mut rows)?;
            let mut keys = BTreeMap::new();
            keys.insert("movements".to_owned(), movements);
            keys.insert("alerts".to_owned(), alerts.clone());
            let whole = BTreeSet::from(["root".to_owned(), "levels".to_owned()]);
            export.scope = ExportScope::Records { keys, whole };
        }
        (DocKind::Catalog, None) => {
            let view = read_catalog_selected(&CachedDoc::whole(doc), |_| KeySelection::All);
            catalog_rows(&context, &view, &mut rows)?;
        }
        (DocKind::Catalog, Some(touched)) => {
            let view =
                read_catalog_selected(doc, |collection| match touched.keys.get(collection) {
                    Some(keys) => KeySelection::Only(keys),
                    None => KeySelection::Only(&touched.none),
                });
            catalog_rows(&context, &view, &mut rows)?;
            export.scope = ExportScope::Records {
                keys: touched.keys.clone(),
                whole: BTreeSet::from(["root".to_owned()]),
            };
        }
        // A device document feeds no table: after its first export only
        // its heads move.
        (DocKind::Device, None) => {}
        (DocKind::Device, Some(_)) => export.scope = ExportScope::empty(),
    }
    export.rows = rows.0;
    Ok(export)
}

/// What changed between two heads, by top-level collection.
#[derive(Debug, Default)]
struct Touched {
    keys: BTreeMap<String, BTreeSet<String>>,
    /// Keys of `levels` that were put, deleted or conflicted (not only
    /// incremented): the set of counters may have changed.
    levels_reshaped: BTreeSet<String>,
    none: BTreeSet<String>,
}

/// The records changed between `since` and `heads`, or `None` when only a
/// full export is safe: heads this document does not have, or a change to
/// the root or `meta` (a container replaced, the document's identity).
///
/// Read from the operations of the changes after `since` (each names its
/// object and key; an object's place is found by walking up its parents),
/// so the cost follows the changes, not the document. A record touched by
/// an operation that did not change what it reads in the end is read again
/// for nothing, which is harmless.
fn touched_records(doc: &Automerge, since: &[ChangeHash], kind: DocKind) -> Option<Touched> {
    if since
        .iter()
        .any(|hash| doc.get_change_by_hash(hash).is_none())
    {
        return None;
    }
    let mut touched = Touched::default();
    // Object ("counter@actor") -> where it is.
    let mut places: BTreeMap<String, Place> = BTreeMap::new();
    for change in doc.get_changes(since) {
        let change = change.decode();
        for op in &change.operations {
            let automerge::legacy::ObjectId::Id(obj) = &op.obj else {
                // A root key: a container or `meta` was (re)written.
                return None;
            };
            let obj_text = format!("{}@{}", obj.0, obj.1);
            let place = match places.get(&obj_text) {
                Some(place) => place.clone(),
                None => {
                    let exid = doc.import_obj(&obj_text).ok()?;
                    let path = doc.parents(&exid).ok()?.path();
                    let place = match path.as_slice() {
                        [(_, Prop::Map(collection))] => Place::Container(collection.clone()),
                        [(_, Prop::Map(collection)), (_, Prop::Map(key)), ..] => {
                            Place::Record(collection.clone(), key.clone())
                        }
                        _ => return None,
                    };
                    places.insert(obj_text, place.clone());
                    place
                }
            };
            let (collection, key) = match place {
                Place::Record(collection, key) => (collection, key),
                Place::Container(collection) => {
                    // An op on the container itself: its key is the record.
                    let automerge::legacy::Key::Map(key) = &op.key else {
                        return None;
                    };
                    if collection == "levels"
                        && !matches!(op.action, automerge::legacy::OpType::Increment(_))
                    {
                        touched.levels_reshaped.insert(key.to_string());
                    }
                    (collection, key.to_string())
                }
            };
            if collection == "meta" || !kind.containers().contains(&collection.as_str()) {
                return None;
            }
            touched.keys.entry(collection).or_default().insert(key);
        }
    }
    Some(touched)
}

/// Where an object of the document is.
#[derive(Debug, Clone)]
enum Place {
    /// A top-level container (`sales`, `levels`, ...).
    Container(String),
    /// Inside the record `collection[key]`.
    Record(String, String),
}

const CORRECTIONS: [&str; 3] = ["voids", "payments", "returns"];

/// The ledger records to read again, and the keys whose rows they replace
/// (before the read adds the corrections it found).
fn ledger_selection(
    doc: &Automerge,
    since: &[ChangeHash],
    touched: &Touched,
) -> (LedgerSelection, BTreeMap<String, BTreeSet<String>>) {
    let mut selection = LedgerSelection {
        sales: touched.keys.get("sales").cloned().unwrap_or_default(),
        ..LedgerSelection::default()
    };
    for collection in CORRECTIONS {
        let Some(keys) = touched.keys.get(collection) else {
            continue;
        };
        let Ok(Some((_, map))) = doc.get(ROOT, collection) else {
            continue;
        };
        for key in keys {
            // The sale it refers to now, and the one it referred to at the
            // exported heads (a rewritten reference frees the old sale's
            // returns).
            selection
                .sales
                .extend(correction_sale(doc, &map, key, None));
            selection
                .sales
                .extend(correction_sale(doc, &map, key, Some(since)));
        }
        match collection {
            "voids" => selection.voids = keys.clone(),
            "payments" => selection.payments = keys.clone(),
            _ => selection.returns = keys.clone(),
        }
    }
    // Every correction that refers to a selected sale: one pass over each
    // correction map, reading one field per record.
    if !selection.sales.is_empty() {
        for collection in CORRECTIONS {
            let Ok(Some((_, map))) = doc.get(ROOT, collection) else {
                continue;
            };
            let mut found = Vec::new();
            for item in doc.map_range(&map, ..) {
                let sale = string_field(doc, &item.id(), "sale", None);
                if sale.is_some_and(|sale| selection.sales.contains(&sale)) {
                    found.push(item.key.into_owned());
                }
            }
            match collection {
                "voids" => selection.voids.extend(found),
                "payments" => selection.payments.extend(found),
                _ => selection.returns.extend(found),
            }
        }
    }
    let mut scope = BTreeMap::new();
    scope.insert("sales".to_owned(), selection.sales.clone());
    for collection in CORRECTIONS {
        if let Some(keys) = selection.corrections(collection) {
            scope.insert(collection.to_owned(), keys.clone());
        }
    }
    (selection, scope)
}

/// The `sale` field of `collection[key]`, now or at `at`.
fn correction_sale(
    doc: &Automerge,
    map: &automerge::ObjId,
    key: &str,
    at: Option<&[ChangeHash]>,
) -> Option<String> {
    let (value, obj) = get_now_or_at(doc, map, key, at)?;
    if !matches!(value, automerge::Value::Object(automerge::ObjType::Map)) {
        return None;
    }
    string_field(doc, &obj, "sale", at)
}

/// `obj[key]` now (`at` None) or at the heads `at`; `None` when absent or
/// unreadable.
fn get_now_or_at<'a>(
    doc: &'a Automerge,
    obj: &automerge::ObjId,
    key: &str,
    at: Option<&[ChangeHash]>,
) -> Option<(automerge::Value<'a>, automerge::ObjId)> {
    match at {
        None => doc.get(obj, key),
        Some(heads) => doc.get_at(obj, key, heads),
    }
    .ok()
    .flatten()
}

/// The string (scalar or text object) at `obj[field]`, now or at `at`;
/// `None` when absent, unreadable or of another type.
fn string_field(
    doc: &Automerge,
    obj: &automerge::ObjId,
    field: &str,
    at: Option<&[ChangeHash]>,
) -> Option<String> {
    match get_now_or_at(doc, obj, field, at)? {
        (automerge::Value::Scalar(scalar), _) => match scalar.as_ref() {
            automerge::ScalarValue::Str(text) => Some(text.to_string()),
            _ => None,
        },
        (automerge::Value::Object(automerge::ObjType::Text), text) => match at {
            None => doc.text(&text).ok(),
            Some(heads) => doc.text_at(&text, heads).ok(),
        },
        _ => None,
    }
}

/// The scope of an incremental ledger export: the selected keys plus every
/// correction the read found, valid or not (a correction that turned valid
/// loses its invalid-record rows, and the reverse).
fn scope_of(view: &LedgerView, mut keys: BTreeMap<String, BTreeSet<String>>) -> ExportScope {
    let found = [
        (
            "voids",
            view.voids
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        ),
        (
            "payments",
            view.payments.keys().map(ToString::to_string).collect(),
        ),
        (
            "returns",
            view.returns.keys().map(ToString::to_string).collect(),
        ),
    ];
    for (collection, ids) in found {
        keys.entry(collection.to_owned()).or_default().extend(ids);
    }
    for violation in &view.violations {
        if violation.collection != "root" {
            keys.entry(violation.collection.clone())
                .or_default()
                .insert(violation.key.clone());
        }
    }
    ExportScope::Records {
        keys,
        whole: BTreeSet::from(["root".to_owned()]),
    }
}

/// Movements to read again: the changed ones, and those of products whose
/// counter appeared, vanished or conflicted (found by reading each
/// movement's `product` field, only in that rare case).
fn stock_movement_selection(doc: &Automerge, touched: &Touched) -> BTreeSet<String> {
    let mut keys = touched.keys.get("movements").cloned().unwrap_or_default();
    if touched.levels_reshaped.is_empty() {
        return keys;
    }
    let Ok(Some((_, map))) = doc.get(ROOT, "movements") else {
        return keys;
    };
    for item in doc.map_range(&map, ..) {
        let product = string_field(doc, &item.id(), "product", None);
        if product.is_some_and(|product| touched.levels_reshaped.contains(&product)) {
            keys.insert(item.key.into_owned());
        }
    }
    keys
}

struct Context<'a> {
    document_id: String,
    meta: &'a DocMeta,
}

impl Context<'_> {
    fn head(&self) -> [Cell; 2] {
        [
            Cell::Text(self.document_id.clone()),
            Cell::Text(self.meta.tenant.to_string()),
        ]
    }

    fn period(&self) -> Cell {
        Cell::Text(self.meta.period.map(|p| p.to_string()).unwrap_or_default())
    }

    fn owner(&self) -> Cell {
        Cell::Text(self.meta.owner.clone())
    }
}

#[derive(Default)]
struct Rows(BTreeMap<Table, Vec<Row>>);

impl Rows {
    fn push(&mut self, table: Table, context: &Context<'_>, rest: Vec<Cell>) {
        let mut row = Vec::with_capacity(rest.len() + 2);
        row.extend(context.head());
        row.extend(rest);
        debug_assert_eq!(row.len(), table.columns().len(), "{}", table.name());
        self.0.entry(table).or_default().push(row);
    }
}

fn text(value: impl ToString) -> Cell {
    Cell::Text(value.to_string())
}

fn seq(value: u64) -> Result<Cell, ExportError> {
    i64::try_from(value)
        .map(Cell::Int)
        .map_err(|_| ExportError::OutOfRange {
            field: "seq",
            value,
        })
}

fn index(value: usize) -> Cell {
    Cell::Int4(i32::try_from(value).unwrap_or(i32::MAX))
}

/// A correction's row (void, payment, return): its id, its sale, its device
/// and sequence number, then `rest`.
fn correction_cells<const N: usize>(
    id: &RecordId,
    sale: &RecordId,
    rest: [Cell; N],
) -> Result<Vec<Cell>, ExportError> {
    let mut cells = Vec::with_capacity(4 + N);
    cells.extend([text(id), text(sale), text(id.device.as_str()), seq(id.seq)?]);
    cells.extend(rest);
    Ok(cells)
}

/// Invalid records, one row per problem, numbered per record in the order
/// the reader reported them. The counter-drift rule is left to SQL.
fn invalid_rows(context: &Context<'_>, violations: &[Violation], rows: &mut Rows) {
    let mut numbers: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for violation in violations {
        if matches!(violation.problem, Problem::CounterDrift { .. }) {
            continue;
        }
        let number = numbers
            .entry((violation.collection.as_str(), violation.key.as_str()))
            .or_insert(0);
        rows.push(
            Table::InvalidRecords,
            context,
            vec![
                text(context.meta.kind),
                text(&violation.collection),
                text(&violation.key),
                index(*number),
                Cell::OptText(violation.actor.clone()),
                text(violation.problem.code()),
                text(&violation.problem),
            ],
        );
        *number += 1;
    }
}

fn ledger_rows(
    context: &Context<'_>,
    view: &LedgerView,
    rows: &mut Rows,
) -> Result<(), ExportError> {
    for sale in view.sales.values() {
        rows.push(
            Table::Sales,
            context,
            vec![
                text(&sale.id),
                text(sale.id.device.as_str()),
                seq(sale.id.seq)?,
                text(&sale.receipt),
                text(sale.seller.as_str()),
                text(sale.customer.as_str()),
                text(sale.location.as_str()),
                text(sale.currency.as_str()),
                Cell::Int(sale.total_cents),
                index(sale.lines.len()),
                Cell::Int(sale.recorded_at_ms),
            ],
        );
        for (number, line) in sale.lines.iter().enumerate() {
            rows.push(
                Table::SaleLines,
                context,
                vec![
                    text(&sale.id),
                    index(number),
                    text(line.product.as_str()),
                    Cell::Int(line.quantity),
                    Cell::Int(line.unit_price_cents),
                    Cell::Int(line.line_total_cents),
                ],
            );
        }
    }
    for void in view.voids.values() {
        rows.push(
            Table::Voids,
            context,
            correction_cells(
                &void.id,
                &void.sale,
                [text(&void.reason), Cell::Int(void.at_ms)],
            )?,
        );
    }
    for payment in view.payments.values() {
        rows.push(
            Table::Payments,
            context,
            correction_cells(
                &payment.id,
                &payment.sale,
                [
                    Cell::Int(payment.amount_cents),
                    text(payment.currency.as_str()),
                    text(&payment.method),
                    Cell::Int(payment.at_ms),
                ],
            )?,
        );
    }
    for sale_return in view.returns.values() {
        rows.push(
            Table::Returns,
            context,
            correction_cells(
                &sale_return.id,
                &sale_return.sale,
                [
                    text(&sale_return.receipt),
                    text(sale_return.location.as_str()),
                    Cell::Int(sale_return.refund_cents),
                    Cell::Int(sale_return.at_ms),
                ],
            )?,
        );
        for (number, line) in sale_return.lines.iter().enumerate() {
            rows.push(
                Table::ReturnLines,
                context,
                vec![
                    text(&sale_return.id),
                    index(number),
                    text(line.product.as_str()),
                    Cell::Int(line.quantity),
                    Cell::Int(line.refund_cents),
                ],
            );
        }
    }
    invalid_rows(context, &view.violations, rows);
    Ok(())
}

fn stock_rows(context: &Context<'_>, view: &StockView, rows: &mut Rows) -> Result<(), ExportError> {
    for (product, level) in &view.levels {
        rows.push(
            Table::StockLevels,
            context,
            vec![
                context.owner(),
                context.period(),
                text(product.as_str()),
                Cell::Int(*level),
            ],
        );
    }
    for movement in view.movements.values() {
        rows.push(
            Table::StockMovements,
            context,
            vec![
                context.owner(),
                context.period(),
                text(&movement.id),
                text(movement.kind.as_str()),
                text(movement.product.as_str()),
                Cell::Int(movement.delta),
                text(&movement.record),
                text(&movement.author),
                Cell::Int(movement.at_ms),
            ],
        );
    }
    for (id, stored) in &view.alerts {
        let alert = &stored.alert;
        rows.push(
            Table::OversellAlerts,
            context,
            vec![
                text(id),
                text(alert.location.as_str()),
                context.period(),
                text(alert.product.as_str()),
                Cell::Int(alert.level),
                Cell::TextArray(alert.movements.clone()),
                Cell::TextArray(alert.records.clone()),
                Cell::TextArray(alert.authors.clone()),
                text(stored.status.as_str()),
                Cell::Int(stored.first_detected_at_ms),
                Cell::Int(stored.updated_at_ms),
            ],
        );
    }
    invalid_rows(context, &view.violations, rows);
    Ok(())
}

fn catalog_rows(
    context: &Context<'_>,
    view: &CatalogView,
    rows: &mut Rows,
) -> Result<(), ExportError> {
    for product in view.products.values() {
        rows.push(
            Table::Products,
            context,
            vec![
                text(product.id.as_str()),
                text(&product.name),
                Cell::Int(product.unit_price_cents),
                text(product.currency.as_str()),
                Cell::Bool(product.active),
            ],
        );
    }
    for customer in view.customers.values() {
        rows.push(
            Table::Customers,
            context,
            vec![text(customer.id.as_str()), text(&customer.name)],
        );
    }
    for seller in view.sellers.values() {
        rows.push(
            Table::Sellers,
            context,
            vec![text(seller.id.as_str()), text(&seller.name)],
        );
    }
    for device in view.devices.values() {
        rows.push(
            Table::Devices,
            context,
            vec![
                text(device.id.as_str()),
                text(device.seller.as_str()),
                text(&device.receipt_prefix),
            ],
        );
    }
    for location in view.locations.values() {
        rows.push(
            Table::Locations,
            context,
            vec![
                text(location.id.as_str()),
                text(&location.name),
                text(location.kind.as_str()),
                Cell::OptText(location.seller.as_ref().map(|s| s.to_string())),
            ],
        );
    }
    invalid_rows(context, &view.violations, rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn ledger_with_sales(count: usize) -> (Automerge, Automerge, CatalogView) {
        let tenant = TenantId::new("acme").expect("id");
        let seller = SellerId::new("ana").expect("id");
        let device = DeviceId::new("tab-1").expect("id");
        let mut catalog = create_catalog_doc(&tenant).expect("catalog");
        put_product(
            &mut catalog,
            &Product {
                id: ProductId::new("soap").expect("id"),
                name: "Soap".into(),
                unit_price_cents: 250,
                currency: Currency::new("EUR").expect("currency"),
                active: true,
            },
        )
        .expect("product");
        put_customer(
            &mut catalog,
            &Customer {
                id: CustomerId::new("shop").expect("id"),
                name: "Shop".into(),
            },
        )
        .expect("customer");
        put_location(
            &mut catalog,
            &Location {
                id: LocationId::new("van").expect("id"),
                name: "Van".into(),
                kind: LocationKind::Vehicle,
                seller: Some(seller.clone()),
            },
        )
        .expect("location");
        let catalog = read_catalog(&catalog);
        let at_ms = Period::parse("2026-11").expect("period").start_ms() + 1_000;
        let mut ledger = create_ledger_doc(&tenant, &seller, Period::of_ms(at_ms)).expect("ledger");
        let mut phone = create_device_doc(&tenant, &device, &seller, "K1").expect("device");
        for _ in 0..count {
            sell(&mut phone, &mut ledger, &catalog);
        }
        (ledger, phone, catalog)
    }

    fn sell(phone: &mut Automerge, ledger: &mut Automerge, catalog: &CatalogView) -> Sale {
        let at_ms = Period::parse("2026-11").expect("period").start_ms() + 5_000;
        record_sale(
            phone,
            ledger,
            catalog,
            &SaleInput {
                customer: CustomerId::new("shop").expect("id"),
                location: LocationId::new("van").expect("id"),
                at_ms,
                lines: vec![SaleLineInput {
                    product: ProductId::new("soap").expect("id"),
                    quantity: 2,
                }],
            },
        )
        .expect("sale")
    }

    #[test]
    fn an_incremental_export_covers_only_the_new_sale_and_its_corrections() {
        let (mut ledger, mut phone, catalog) = ledger_with_sales(5);
        let id = DocumentId::from_bytes([1; 16]);
        let full = build_rows(&id, &ledger, &[]).expect("rows");
        assert!(full.is_full());
        assert_eq!(full.rows.get(&Table::Sales).map(Vec::len), Some(5));
        let before = ledger.get_heads();
        let sale = sell(&mut phone, &mut ledger, &catalog);
        let next = build_rows(&id, &ledger, &before).expect("rows");
        assert_eq!(next.rows.get(&Table::Sales).map(Vec::len), Some(1));
        assert_eq!(next.rows.get(&Table::SaleLines).map(Vec::len), Some(1));
        match &next.scope {
            ExportScope::Records { keys, whole } => {
                assert_eq!(
                    keys.get("sales"),
                    Some(&BTreeSet::from([sale.id.to_string()]))
                );
                assert!(whole.contains("root"));
            }
            ExportScope::Full => panic!("expected an incremental export"),
        }
        assert_eq!(next.heads, ledger.get_heads());
    }

    #[test]
    fn unchanged_heads_export_nothing_and_unknown_heads_export_everything() {
        let (ledger, _, _) = ledger_with_sales(2);
        let id = DocumentId::from_bytes([1; 16]);
        let same = build_rows(&id, &ledger, &ledger.get_heads()).expect("rows");
        assert_eq!(same.row_count(), 0);
        assert!(!same.is_full());
        let unknown = [ChangeHash([9; 32])];
        let all = build_rows(&id, &ledger, &unknown).expect("rows");
        assert!(all.is_full());
        assert_eq!(all.rows.get(&Table::Sales).map(Vec::len), Some(2));
    }
}
