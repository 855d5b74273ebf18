//! Oversell detection (run on the server, after merges).
//!
//! A negative counter is an oversell: devices sold, offline, goods that
//! together were not there. [`detect_oversells`] explains each negative level
//! by replaying the product's movements in a deterministic order (time, then
//! movement id): the movements that decremented since the replayed level was
//! last non-negative are the contributors. The alert id is
//! `{location}/{product}/{first contributor}`, so detecting again on the same
//! merged state finds the same alert. [`record_oversell_alerts`] keeps at
//! most one open alert per product and updates it in place while the level
//! stays negative: one record per oversell, however often detection runs and
//! whatever order the changes arrive in. An alert whose level is no longer
//! negative (goods loaded since) is marked `cleared`, not deleted.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc};

use super::catalog::{read_records_selected, KeySelection, Problems};
use super::ids::{LocationId, ProductId};
use super::meta::{container, expect_kind, DocKind};
use super::read::{get_int, get_list, get_parsed, list_strings};
use super::stock::StockView;
use super::validate::Violation;
use super::DomainError;

/// A negative level and who caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversellAlert {
    pub id: String,
    pub location: LocationId,
    pub product: ProductId,
    /// The (negative) counter value.
    pub level: i64,
    /// Decrementing movements since the replayed level was last
    /// non-negative, in replay order.
    pub movements: Vec<String>,
    /// The facts behind them (sale ids, transfer ids), sorted, distinct.
    pub records: Vec<String>,
    /// Devices or office users that wrote them, sorted, distinct.
    pub authors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Open,
    /// The level is no longer negative, or the oversell is now explained by
    /// another alert (a late movement moved where it started).
    Cleared,
}

impl AlertStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Cleared => "cleared",
        }
    }
}

/// An alert as kept in the stock document's `alerts` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    pub alert: OversellAlert,
    pub status: AlertStatus,
    pub first_detected_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Every oversell in a stock document, by alert id. Deterministic: a pure
/// function of the counters and the set of movements.
pub fn detect_oversells(view: &StockView) -> Vec<OversellAlert> {
    let Some(location) = view.location() else {
        return Vec::new();
    };
    let mut by_product: BTreeMap<&ProductId, Vec<&super::stock::Movement>> = BTreeMap::new();
    for movement in view.movements.values() {
        by_product
            .entry(&movement.product)
            .or_default()
            .push(movement);
    }
    let mut alerts = Vec::new();
    for (product, level) in &view.levels {
        if *level >= 0 {
            continue;
        }
        let mut movements = by_product.remove(product).unwrap_or_default();
        movements.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        let mut running: i64 = 0;
        let mut since = 0;
        for (index, movement) in movements.iter().enumerate() {
            running = running.saturating_add(movement.delta);
            if running >= 0 {
                since = index + 1;
            }
        }
        let contributors: Vec<_> = movements[since..].iter().filter(|m| m.delta < 0).collect();
        let first = contributors
            .first()
            .map_or("unexplained", |m| m.id.as_str());
        let records: BTreeSet<String> = contributors.iter().map(|m| m.record.clone()).collect();
        let authors: BTreeSet<String> = contributors.iter().map(|m| m.author.clone()).collect();
        alerts.push(OversellAlert {
            id: format!("{location}/{product}/{first}"),
            location: location.clone(),
            product: product.clone(),
            level: *level,
            movements: contributors.iter().map(|m| m.id.clone()).collect(),
            records: records.into_iter().collect(),
            authors: authors.into_iter().collect(),
        });
    }
    alerts
}

/// What [`record_oversell_alerts`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertChanges {
    pub opened: Vec<String>,
    pub updated: Vec<String>,
    pub cleared: Vec<String>,
}

impl AlertChanges {
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.updated.is_empty() && self.cleared.is_empty()
    }
}

/// Writes the detected alerts into the stock document's `alerts` map (the
/// server is its only writer). A product has at most one open alert: while
/// its level stays negative that alert is updated in place (deeper level,
/// more sales), keeping the id it was opened with even if a late movement
/// moved the start of the episode. A product detected negative with no open
/// alert gets a new one (or its cleared alert with the same id is reopened);
/// an open alert whose product is no longer negative is marked cleared, never
/// deleted. Writes nothing when nothing changed, so running it again is a
/// no-op.
pub fn record_oversell_alerts(
    stock: &mut Automerge,
    view: &StockView,
    detected: &[OversellAlert],
    at_ms: i64,
) -> Result<AlertChanges, DomainError> {
    expect_kind(stock, DocKind::Stock)?;
    let alerts = container(stock, "alerts")?;
    let mut open_by_product: BTreeMap<&ProductId, &StoredAlert> = BTreeMap::new();
    for stored in view.alerts.values() {
        if stored.status == AlertStatus::Open {
            // Keys iterate in order, so the first (smallest id) wins; any
            // other open alert for the product is cleared below.
            open_by_product
                .entry(&stored.alert.product)
                .or_insert(stored);
        }
    }
    let mut changes = AlertChanges::default();
    let mut still_open: BTreeSet<String> = BTreeSet::new();
    let mut tx = stock.transaction();
    for alert in detected {
        let target = open_by_product
            .get(&alert.product)
            .copied()
            .or_else(|| view.alerts.get(&alert.id));
        let wanted = OversellAlert {
            id: target.map_or_else(|| alert.id.clone(), |stored| stored.alert.id.clone()),
            ..alert.clone()
        };
        still_open.insert(wanted.id.clone());
        let first_detected_at_ms = match target {
            Some(stored) if stored.alert == wanted && stored.status == AlertStatus::Open => {
                continue
            }
            Some(stored) => {
                changes.updated.push(wanted.id.clone());
                stored.first_detected_at_ms
            }
            None => {
                changes.opened.push(wanted.id.clone());
                at_ms
            }
        };
        let map = tx.put_object(&alerts, wanted.id.as_str(), ObjType::Map)?;
        tx.put(&map, "location", wanted.location.as_str())?;
        tx.put(&map, "product", wanted.product.as_str())?;
        tx.put(&map, "level", wanted.level)?;
        for (field, values) in [
            ("movements", &wanted.movements),
            ("records", &wanted.records),
            ("authors", &wanted.authors),
        ] {
            let list = tx.put_object(&map, field, ObjType::List)?;
            for (index, value) in values.iter().enumerate() {
                tx.insert(&list, index, value.as_str())?;
            }
        }
        tx.put(&map, "status", AlertStatus::Open.as_str())?;
        tx.put(&map, "first_detected_at_ms", first_detected_at_ms)?;
        tx.put(&map, "updated_at_ms", at_ms)?;
    }
    for (id, stored) in &view.alerts {
        if stored.status == AlertStatus::Open && !still_open.contains(id) {
            if let Some((_, map)) = tx.get(&alerts, id.as_str())? {
                tx.put(&map, "status", AlertStatus::Cleared.as_str())?;
                tx.put(&map, "updated_at_ms", at_ms)?;
                changes.cleared.push(id.clone());
            }
        }
    }
    tx.commit();
    Ok(changes)
}

/// Reads the `alerts` map (used by [`super::read_stock`]).
pub(crate) fn read_alerts<R: ReadDoc>(
    doc: &R,
    keys: KeySelection<'_>,
    violations: &mut Vec<Violation>,
) -> BTreeMap<String, StoredAlert> {
    read_records_selected(
        doc,
        "alerts",
        keys,
        |_, _| true,
        violations,
        |key, obj| {
            let mut p = Problems::default();
            let location = p.take(get_parsed(doc, obj, "location", LocationId::new));
            let product = p.take(get_parsed(doc, obj, "product", ProductId::new));
            let level = p.take(get_int(doc, obj, "level"));
            let mut lists = Vec::new();
            for field in ["movements", "records", "authors"] {
                lists.push(p.take(
                    get_list(doc, obj, field).and_then(|list| list_strings(doc, &list, field)),
                ));
            }
            let status = p.take(get_parsed(doc, obj, "status", |s| match s.as_str() {
                "open" => Ok(AlertStatus::Open),
                "cleared" => Ok(AlertStatus::Cleared),
                other => Err(format!("unknown alert status {other:?}")),
            }));
            let first_detected_at_ms = p.take(get_int(doc, obj, "first_detected_at_ms"));
            let updated_at_ms = p.take(get_int(doc, obj, "updated_at_ms"));
            let mut lists = lists.into_iter();
            match (
                location,
                product,
                level,
                lists.next().flatten(),
                lists.next().flatten(),
                lists.next().flatten(),
                status,
                first_detected_at_ms,
                updated_at_ms,
            ) {
                (
                    Some(location),
                    Some(product),
                    Some(level),
                    Some(movements),
                    Some(records),
                    Some(authors),
                    Some(status),
                    Some(first_detected_at_ms),
                    Some(updated_at_ms),
                ) if p.0.is_empty() => Ok((
                    key.to_owned(),
                    StoredAlert {
                        alert: OversellAlert {
                            id: key.to_owned(),
                            location,
                            product,
                            level,
                            movements,
                            records,
                            authors,
                        },
                        status,
                        first_detected_at_ms,
                        updated_at_ms,
                    },
                )),
                _ => Err(p.0),
            }
        },
    )
}
