//! The stock document: one per location (a warehouse, each seller's
//! vehicle). Levels are Automerge counters, one per product, so concurrent
//! sales on several devices subtract correctly in any merge order; every
//! change to a counter is also written as a movement record (a fact with its
//! reason), so the level can be explained and checked, and a retried write
//! is recognised by its movement id and not applied twice.
//!
//! Counters are created once, by [`create_stock_doc`] or
//! [`add_stock_products`] (office only): two replicas creating the same
//! counter concurrently would hide one of them with its increments.
//!
//! A stock document covers one month, so none grows without bound: at the
//! start of a month the server opens the next one with
//! [`open_next_stock_period`] (one `opening` movement per product carries the
//! closing level). A device offline across the month boundary keeps writing
//! into the old document; [`carry_late_movements`] (server) brings what
//! arrives late into the new one as `carry_over` movements, idempotently.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};

use super::catalog::{read_records_selected, KeySelection, Problems};
use super::ids::{LocationId, Period, ProductId, TenantId};
use super::ledger::{Sale, SaleReturn};
use super::meta::{
    check_root, container, create_doc, doc_meta, expect_kind, DocKey, DocKind, DocMeta,
};
use super::money::checked_sum;
use super::oversell::{read_alerts, StoredAlert};
use super::read::{
    counter_of, get_int, get_map, get_parsed, get_string, keys_with_conflicts, FieldError,
};
use super::validate::{Problem, Violation};
use super::DomainError;

/// Longest movement id, in bytes.
pub const MOVEMENT_ID_BYTES_MAX: usize = 160;

/// Why stock moved. The sign of the delta follows from the kind, except for
/// adjustments (counts, breakage) which go either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MovementKind {
    /// Goods arriving from outside (supplier, initial count): positive.
    Load,
    /// Goods sold: negative.
    Sale,
    /// Goods returned by a customer: positive.
    Return,
    /// A correction: either sign, never zero.
    Adjustment,
    /// Goods leaving for another location: negative.
    TransferOut,
    /// Goods arriving from another location: positive.
    TransferIn,
    /// The closing level of the previous month's document: either sign.
    Opening,
    /// Movements that reached the previous month's document after this one
    /// was opened: either sign.
    CarryOver,
}

impl MovementKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MovementKind::Load => "load",
            MovementKind::Sale => "sale",
            MovementKind::Return => "return",
            MovementKind::Adjustment => "adjustment",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::Opening => "opening",
            MovementKind::CarryOver => "carry_over",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            MovementKind::Load,
            MovementKind::Sale,
            MovementKind::Return,
            MovementKind::Adjustment,
            MovementKind::TransferOut,
            MovementKind::TransferIn,
            MovementKind::Opening,
            MovementKind::CarryOver,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == value)
    }

    fn sign_ok(&self, delta: i64) -> bool {
        match self {
            MovementKind::Load | MovementKind::Return | MovementKind::TransferIn => delta > 0,
            MovementKind::Sale | MovementKind::TransferOut => delta < 0,
            MovementKind::Adjustment | MovementKind::Opening | MovementKind::CarryOver => {
                delta != 0
            }
        }
    }
}

/// One change of one product's level at one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// Unique per stock document; `{record}/{line}` for sales and returns.
    pub id: String,
    pub kind: MovementKind,
    pub product: ProductId,
    /// Signed change in units.
    pub delta: i64,
    /// The fact this movement comes from (sale id, return id, transfer id,
    /// delivery note).
    pub record: String,
    /// Device id or office user that wrote it.
    pub author: String,
    pub at_ms: i64,
}

/// Applied, or recognised as applied before (by its movement id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    Applied,
    AlreadyApplied,
}

/// A stock document as typed values plus every record that broke a rule.
#[derive(Debug, Clone, Default)]
pub struct StockView {
    pub meta: Option<DocMeta>,
    /// Counter values by product.
    pub levels: BTreeMap<ProductId, i64>,
    pub movements: BTreeMap<String, Movement>,
    pub alerts: BTreeMap<String, StoredAlert>,
    pub violations: Vec<Violation>,
}

impl StockView {
    pub fn location(&self) -> Option<LocationId> {
        self.meta
            .as_ref()
            .and_then(|meta| LocationId::new(meta.owner.clone()).ok())
    }
}

/// Creates a location's stock document for `period` with a zero counter per
/// product.
pub fn create_stock_doc(
    tenant: &TenantId,
    location: &LocationId,
    period: Period,
    products: &[ProductId],
) -> Result<Automerge, DomainError> {
    create_doc(
        DocKind::Stock,
        tenant,
        location.as_str(),
        Some(period),
        |tx| {
            let levels = tx
                .get(ROOT, "levels")?
                .map(|(_, id)| id)
                .ok_or(DomainError::Invariant("levels container just created"))?;
            for product in products {
                tx.put(&levels, product.as_str(), ScalarValue::counter(0))?;
            }
            Ok(())
        },
    )
}

/// Adds a zero counter for each product that has none (office only).
pub fn add_stock_products(
    stock: &mut Automerge,
    products: &[ProductId],
) -> Result<usize, DomainError> {
    expect_kind(stock, DocKind::Stock)?;
    let levels = container(stock, "levels")?;
    let mut tx = stock.transaction();
    let mut added = 0;
    for product in products {
        if tx.get(&levels, product.as_str())?.is_none() {
            tx.put(&levels, product.as_str(), ScalarValue::counter(0))?;
            added += 1;
        }
    }
    tx.commit();
    Ok(added)
}

/// Applies movements in one change: each is recorded and its delta added to
/// the product's counter. Movements whose id is already present are skipped.
pub fn move_stock(
    stock: &mut Automerge,
    movements: &[Movement],
) -> Result<Vec<MoveOutcome>, DomainError> {
    expect_kind(stock, DocKind::Stock)?;
    let levels = container(stock, "levels")?;
    let records = container(stock, "movements")?;
    for movement in movements {
        if movement.id.is_empty() || movement.id.len() > MOVEMENT_ID_BYTES_MAX {
            return Err(DomainError::BadMovementId(movement.id.clone()));
        }
        if !movement.kind.sign_ok(movement.delta) {
            return Err(DomainError::WrongSign {
                kind: movement.kind.as_str(),
                delta: movement.delta,
            });
        }
        match stock.get(&levels, movement.product.as_str())? {
            Some((automerge::Value::Scalar(value), _))
                if matches!(value.as_ref(), ScalarValue::Counter(_)) => {}
            _ => return Err(DomainError::NoCounter(movement.product.clone())),
        }
    }
    let mut outcomes = Vec::with_capacity(movements.len());
    let mut tx = stock.transaction();
    for movement in movements {
        if tx.get(&records, movement.id.as_str())?.is_some() {
            outcomes.push(MoveOutcome::AlreadyApplied);
            continue;
        }
        let map = tx.put_object(&records, movement.id.as_str(), ObjType::Map)?;
        tx.put(&map, "kind", movement.kind.as_str())?;
        tx.put(&map, "product", movement.product.as_str())?;
        tx.put(&map, "delta", movement.delta)?;
        tx.put(&map, "record", movement.record.as_str())?;
        tx.put(&map, "author", movement.author.as_str())?;
        tx.put(&map, "at_ms", movement.at_ms)?;
        tx.increment(&levels, movement.product.as_str(), movement.delta)?;
        outcomes.push(MoveOutcome::Applied);
    }
    tx.commit();
    Ok(outcomes)
}

fn check_location(stock: &Automerge, location: &LocationId) -> Result<(), DomainError> {
    let meta = expect_kind(stock, DocKind::Stock)?;
    if meta.owner != location.as_str() {
        return Err(DomainError::WrongLocation {
            expected: location.clone(),
            found: meta.owner,
        });
    }
    Ok(())
}

/// Takes a sale's goods out of its location: one movement per line, id
/// `{sale}/{line}`, so a retry after a crash does not subtract twice.
pub fn apply_sale_to_stock(
    stock: &mut Automerge,
    sale: &Sale,
) -> Result<Vec<MoveOutcome>, DomainError> {
    check_location(stock, &sale.location)?;
    let movements: Vec<Movement> = sale
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| Movement {
            id: format!("{}/{index}", sale.id),
            kind: MovementKind::Sale,
            product: line.product.clone(),
            delta: -line.quantity,
            record: sale.id.to_string(),
            author: sale.id.device.to_string(),
            at_ms: sale.recorded_at_ms,
        })
        .collect();
    move_stock(stock, &movements)
}

/// Puts returned goods back into the return's location.
pub fn apply_return_to_stock(
    stock: &mut Automerge,
    sale_return: &SaleReturn,
) -> Result<Vec<MoveOutcome>, DomainError> {
    check_location(stock, &sale_return.location)?;
    let movements: Vec<Movement> = sale_return
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| Movement {
            id: format!("{}/{index}", sale_return.id),
            kind: MovementKind::Return,
            product: line.product.clone(),
            delta: line.quantity,
            record: sale_return.id.to_string(),
            author: sale_return.id.device.to_string(),
            at_ms: sale_return.at_ms,
        })
        .collect();
    move_stock(stock, &movements)
}

/// Moves `quantity` of `product` from one location to another: a
/// `transfer_out` in the source and a `transfer_in` in the destination, both
/// with id `transfer_id`. The two documents are written one after the other;
/// a crash between them is repaired by calling again (both are idempotent).
pub fn transfer_stock(
    from: &mut Automerge,
    to: &mut Automerge,
    transfer_id: &str,
    product: &ProductId,
    quantity: i64,
    author: &str,
    at_ms: i64,
) -> Result<(MoveOutcome, MoveOutcome), DomainError> {
    if quantity <= 0 {
        return Err(DomainError::NonPositiveQuantity {
            product: product.clone(),
            quantity,
        });
    }
    let movement = |kind, delta| Movement {
        id: transfer_id.to_owned(),
        kind,
        product: product.clone(),
        delta,
        record: transfer_id.to_owned(),
        author: author.to_owned(),
        at_ms,
    };
    // Check both before writing either: the destination must be a stock
    // document with a counter for the product.
    expect_kind(to, DocKind::Stock)?;
    stock_level(&*to, product)?;
    let out = move_stock(from, &[movement(MovementKind::TransferOut, -quantity)])?;
    let into = move_stock(to, &[movement(MovementKind::TransferIn, quantity)])?;
    match (out.first(), into.first()) {
        (Some(out), Some(into)) => Ok((*out, *into)),
        _ => Err(DomainError::Invariant("one outcome per movement")),
    }
}

/// The counter value for one product.
pub fn stock_level<R: ReadDoc>(stock: &R, product: &ProductId) -> Result<i64, DomainError> {
    let levels = get_map(stock, &ROOT, "levels").map_err(|source| DomainError::Malformed {
        path: "levels".into(),
        source,
    })?;
    match stock.get(&levels, product.as_str())? {
        None => Err(DomainError::NoCounter(product.clone())),
        Some((value, _)) => {
            counter_of(product.as_str(), &value).map_err(|source| DomainError::Malformed {
                path: format!("levels.{product}"),
                source,
            })
        }
    }
}

/// Reads and checks a stock document: counters, movements, alerts. A
/// counter that differs from the sum of its movements is reported.
pub fn read_stock<R: ReadDoc>(doc: &R) -> StockView {
    read_stock_where(doc, KeySelection::All, KeySelection::All, true)
}

/// [`read_stock`] with every level but only the selected movements and
/// alerts, and without the counter check (which needs every movement of a
/// product; the export derives it in SQL). A movement's validity depends
/// only on itself and on which products have a counter.
pub(crate) fn read_stock_selected<R: ReadDoc>(
    doc: &R,
    movement_keys: KeySelection<'_>,
    alert_keys: KeySelection<'_>,
) -> StockView {
    read_stock_where(doc, movement_keys, alert_keys, false)
}

fn read_stock_where<R: ReadDoc>(
    doc: &R,
    movement_keys: KeySelection<'_>,
    alert_keys: KeySelection<'_>,
    check_counters: bool,
) -> StockView {
    let mut violations = check_root(doc, DocKind::Stock);
    let meta = doc_meta(doc).ok();
    let mut levels = BTreeMap::new();
    if let Ok(map) = get_map(doc, &ROOT, "levels") {
        for (key, copies) in keys_with_conflicts(doc, &map) {
            if copies > 1 {
                violations.push(Violation::record(
                    "levels",
                    &key,
                    None,
                    Problem::KeyWrittenTwice { copies },
                ));
            }
            let product = match ProductId::new(key.clone()) {
                Ok(product) => product,
                Err(error) => {
                    violations.push(Violation::record(
                        "levels",
                        &key,
                        None,
                        FieldError::invalid("key", error).into(),
                    ));
                    continue;
                }
            };
            let level = doc
                .get(&map, key.as_str())
                .map_err(|e| FieldError::invalid(&key, e))
                .and_then(|value| match value {
                    Some((value, _)) => counter_of(&key, &value),
                    None => Err(FieldError::Missing { field: key.clone() }),
                });
            match level {
                Ok(level) => {
                    levels.insert(product, level);
                }
                Err(error) => {
                    violations.push(Violation::record("levels", &key, None, error.into()))
                }
            }
        }
    }
    let all = |_: &str, _: &ObjId| true;
    let movements = read_records_selected(
        doc,
        "movements",
        movement_keys,
        all,
        &mut violations,
        |key, obj| {
            let mut p = Problems::default();
            let kind = p.take(get_parsed(doc, obj, "kind", |s| {
                MovementKind::parse(&s).ok_or_else(|| format!("unknown movement kind {s:?}"))
            }));
            let product = p.take(get_parsed(doc, obj, "product", ProductId::new));
            let delta = p.take(get_int(doc, obj, "delta"));
            let record = p.take(get_string(doc, obj, "record"));
            let author = p.take(get_string(doc, obj, "author"));
            let at_ms = p.take(get_int(doc, obj, "at_ms"));
            if let (Some(kind), Some(delta)) = (kind, delta) {
                if !kind.sign_ok(delta) {
                    p.push(Problem::WrongSign {
                        kind: kind.as_str(),
                        delta,
                    });
                }
            }
            if let Some(product) = &product {
                if !levels.contains_key(product) {
                    p.push(Problem::NoCounter {
                        product: product.clone(),
                    });
                }
            }
            match (kind, product, delta, record, author, at_ms) {
                (
                    Some(kind),
                    Some(product),
                    Some(delta),
                    Some(record),
                    Some(author),
                    Some(at_ms),
                ) if p.0.is_empty() => Ok((
                    key.to_owned(),
                    Movement {
                        id: key.to_owned(),
                        kind,
                        product,
                        delta,
                        record,
                        author,
                        at_ms,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );
    if check_counters {
        violations.extend(counter_drift(&levels, &movements));
    }
    let alerts = read_alerts(doc, alert_keys, &mut violations);
    StockView {
        meta,
        levels,
        movements,
        alerts,
        violations,
    }
}

/// Every increment comes with its movement in one change, so a counter
/// equals the sum of its valid movements unless a movement was rejected or
/// someone wrote the counter without one.
fn counter_drift(
    levels: &BTreeMap<ProductId, i64>,
    movements: &BTreeMap<String, Movement>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (product, level) in levels {
        let sum = checked_sum(
            movements
                .values()
                .filter(|m| &m.product == product)
                .map(|m| m.delta),
        );
        match sum {
            Ok(sum) if sum == *level => {}
            Ok(sum) => violations.push(Violation::record(
                "levels",
                product.as_str(),
                None,
                Problem::CounterDrift {
                    counter: *level,
                    movements: sum,
                },
            )),
            Err(_) => violations.push(Violation::record(
                "levels",
                product.as_str(),
                None,
                Problem::AmountOverflow,
            )),
        }
    }
    violations
}

fn stock_period(meta: &DocMeta) -> Result<Period, DomainError> {
    meta.period.ok_or(DomainError::Malformed {
        path: "meta.period".into(),
        source: FieldError::Missing {
            field: "period".into(),
        },
    })
}

/// Opens the stock document of the month after `previous` (server, once):
/// same location and products, each counter starting at the previous closing
/// level through an `opening` movement `opening/{product}`.
pub fn open_next_stock_period(previous: &Automerge) -> Result<Automerge, DomainError> {
    let meta = expect_kind(previous, DocKind::Stock)?;
    let period = stock_period(&meta)?;
    let next = Period::of_ms(period.start_ms().saturating_add(32 * 86_400_000));
    let location = LocationId::new(meta.owner.clone())?;
    let view = read_stock(previous);
    let products: Vec<ProductId> = view.levels.keys().cloned().collect();
    let mut doc = create_stock_doc(&meta.tenant, &location, next, &products)?;
    let openings: Vec<Movement> = view
        .levels
        .iter()
        .filter(|(_, level)| **level != 0)
        .map(|(product, level)| Movement {
            id: format!("opening/{product}"),
            kind: MovementKind::Opening,
            product: product.clone(),
            delta: *level,
            record: DocKey::stock(&location, period).to_string(),
            author: "server".into(),
            at_ms: next.start_ms(),
        })
        .collect();
    move_stock(&mut doc, &openings)?;
    Ok(doc)
}

/// Brings into `next` whatever reached `previous` after `next` was opened
/// (devices that were offline across the month boundary): for each product,
/// the previous level minus what `next` already carried (opening and earlier
/// carries) becomes one `carry_over` movement. Server only; calling it again
/// without new late movements writes nothing. Returns the movements written.
pub fn carry_late_movements(
    previous: &Automerge,
    next: &mut Automerge,
    at_ms: i64,
) -> Result<Vec<Movement>, DomainError> {
    let previous_meta = expect_kind(previous, DocKind::Stock)?;
    let next_meta = expect_kind(next, DocKind::Stock)?;
    if previous_meta.owner != next_meta.owner {
        return Err(DomainError::WrongLocation {
            expected: LocationId::new(previous_meta.owner)?,
            found: next_meta.owner,
        });
    }
    let previous_period = stock_period(&previous_meta)?;
    let source = DocKey::stock(
        &LocationId::new(previous_meta.owner.clone())?,
        previous_period,
    )
    .to_string();
    let old = read_stock(previous);
    let new = read_stock(&*next);
    let missing: Vec<ProductId> = old
        .levels
        .keys()
        .filter(|p| !new.levels.contains_key(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        add_stock_products(next, &missing)?;
    }
    let mut movements = Vec::new();
    for (product, level) in &old.levels {
        let carried: Vec<&Movement> = new
            .movements
            .values()
            .filter(|m| {
                &m.product == product
                    && matches!(m.kind, MovementKind::Opening | MovementKind::CarryOver)
            })
            .collect();
        let carried_sum = checked_sum(carried.iter().map(|m| m.delta))?;
        let delta = level
            .checked_sub(carried_sum)
            .ok_or(super::money::AmountOverflow)?;
        if delta == 0 {
            continue;
        }
        let count = carried
            .iter()
            .filter(|m| m.kind == MovementKind::CarryOver)
            .count();
        movements.push(Movement {
            id: format!("carry/{product}/{}", count + 1),
            kind: MovementKind::CarryOver,
            product: product.clone(),
            delta,
            record: source.clone(),
            author: "server".into(),
            at_ms,
        });
    }
    move_stock(next, &movements)?;
    Ok(movements)
}
