//! `ventas export --verify`: reconciliation of Postgres with the documents.
//!
//! For each document of the store, figures computed from the domain views
//! (not from the export's rows) are compared with the same figures
//! aggregated in SQL: counts and money totals of sales, lines, voids,
//! payments and returns, each stock level, movement counts and sums,
//! alerts, catalog records, invalid records, and the exported heads. Then
//! every sync-log record still in the store is compared with its
//! `sync_sessions` row (the table keeps records the store has pruned, so
//! only missing or different rows count). Every difference is reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_postgres::Client;
use ventas_storage::{DocStore, LIST_LIMIT_MAX};
use ventas_sync_protocol::ids::DocumentId;

use super::backfill::{exported_state, load_doc, SESSIONS_PAGE_MAX};
use super::{heads_to_hex, ExportError};
use crate::domain::{self, DocKind, Problem, Violation};
use crate::server::sessions::{SessionLog, SyncSession};

/// One figure that differs between a document and Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub document_id: String,
    pub figure: String,
    pub in_document: String,
    pub in_postgres: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: document {}, postgres {}",
            self.document_id, self.figure, self.in_document, self.in_postgres
        )
    }
}

/// Figures by name ("sales", "sales.total_cents", "level.soap", ...).
type Figures = BTreeMap<String, i64>;

/// Compares every document of `store` with the database.
pub async fn verify(
    store: Arc<dyn DocStore>,
    client: &Client,
) -> Result<(Vec<Difference>, u64), ExportError> {
    let postgres = postgres_figures(client).await?;
    let heads = exported_state(client).await?;
    let mut differences = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after = None;
    let mut documents = 0u64;
    loop {
        let page = store.list_docs(after.as_ref(), LIST_LIMIT_MAX)?;
        let Some(last) = page.last() else { break };
        after = Some(*last);
        for key in page {
            let document_id = DocumentId::from_bytes(key);
            let id = document_id.to_string();
            let Some(doc) = load_doc(store.as_ref(), &document_id)? else {
                continue;
            };
            documents += 1;
            seen.insert(id.clone());
            let doc_heads = heads_to_hex(&doc.get_heads());
            match heads.get(&id) {
                None => {
                    differences.push(Difference {
                        document_id: id.clone(),
                        figure: "export_state".into(),
                        in_document: "present".into(),
                        in_postgres: "missing".into(),
                    });
                }
                Some(exported) if exported != &doc_heads => differences.push(Difference {
                    document_id: id.clone(),
                    figure: "heads".into(),
                    in_document: doc_heads.join(","),
                    in_postgres: exported.join(","),
                }),
                Some(_) => {}
            }
            let from_doc = document_figures(&doc);
            let empty = Figures::new();
            let from_pg = postgres.get(&id).unwrap_or(&empty);
            let names: std::collections::BTreeSet<&String> =
                from_doc.keys().chain(from_pg.keys()).collect();
            for name in names {
                let a = from_doc.get(name).copied().unwrap_or(0);
                let b = from_pg.get(name).copied().unwrap_or(0);
                if a != b {
                    differences.push(Difference {
                        document_id: id.clone(),
                        figure: name.clone(),
                        in_document: a.to_string(),
                        in_postgres: b.to_string(),
                    });
                }
            }
        }
    }
    for id in heads.keys().filter(|id| !seen.contains(*id)) {
        differences.push(Difference {
            document_id: id.clone(),
            figure: "export_state".into(),
            in_document: "missing".into(),
            in_postgres: "present".into(),
        });
    }
    verify_sessions(store, client, &mut differences).await?;
    Ok((differences, documents))
}

/// What `sync_sessions` must hold of a sync-log record: each figure's
/// name, its SQL expression over the row, and its value in the record.
type SessionFigure = (&'static str, &'static str, fn(&SyncSession) -> i64);

const SESSION_FIGURES: [SessionFigure; 10] = [
    (
        "disconnected_at_ms",
        "coalesce(disconnected_at_ms, -1)",
        |s| s.disconnected_at_ms.map_or(-1, big),
    ),
    ("messages_in", "messages_in", |s| big(s.messages_in)),
    ("messages_out", "messages_out", |s| big(s.messages_out)),
    ("changes_in", "changes_in", |s| big(s.changes_in)),
    ("changes_out", "changes_out", |s| big(s.changes_out)),
    ("bytes_in", "bytes_in", |s| big(s.bytes_in)),
    ("bytes_out", "bytes_out", |s| big(s.bytes_out)),
    ("writes_denied", "writes_denied", |s| big(s.writes_denied)),
    ("documents", "cardinality(documents)::bigint", |s| {
        count(s.documents.iter())
    }),
    ("denials", "cardinality(denials)::bigint", |s| {
        count(s.denials.iter())
    }),
];

/// A counter as the `bigint` Postgres holds (saturating).
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Compares each sync-log record of the store with its `sync_sessions` row,
/// a page at a time; differences are named `sync_session <id>`.
async fn verify_sessions(
    store: Arc<dyn DocStore>,
    client: &Client,
    differences: &mut Vec<Difference>,
) -> Result<(), ExportError> {
    let log = SessionLog::new(store);
    let expressions: Vec<&str> = SESSION_FIGURES.iter().map(|(_, sql, _)| *sql).collect();
    let select = format!(
        "SELECT session_id, tenant, {} FROM sync_sessions WHERE session_id = ANY($1)",
        expressions.join(", ")
    );
    let mut before = None;
    loop {
        let page = log.page(before, SESSIONS_PAGE_MAX)?;
        let ids: Vec<i64> = page
            .sessions
            .iter()
            .map(|session| big(session.id))
            .collect();
        let rows = client.query(&select, &[&ids]).await?;
        let in_postgres: HashMap<i64, (Option<String>, Vec<i64>)> = rows
            .iter()
            .map(|row| {
                let figures = (2..2 + SESSION_FIGURES.len())
                    .map(|at| row.get(at))
                    .collect();
                (row.get(0), (row.get(1), figures))
            })
            .collect();
        for (session, id) in page.sessions.iter().zip(&ids) {
            let name = format!("sync_session {}", session.id);
            let Some((tenant, found)) = in_postgres.get(id) else {
                differences.push(Difference {
                    document_id: name,
                    figure: "row".into(),
                    in_document: "present".into(),
                    in_postgres: "missing".into(),
                });
                continue;
            };
            if *tenant != session.tenant {
                let shown = |tenant: &Option<String>| tenant.clone().unwrap_or("NULL".into());
                differences.push(Difference {
                    document_id: name.clone(),
                    figure: "tenant".into(),
                    in_document: shown(&session.tenant),
                    in_postgres: shown(tenant),
                });
            }
            for ((figure, _, value), found) in SESSION_FIGURES.iter().zip(found) {
                let expected = value(session);
                if expected != *found {
                    differences.push(Difference {
                        document_id: name.clone(),
                        figure: (*figure).to_string(),
                        in_document: expected.to_string(),
                        in_postgres: found.to_string(),
                    });
                }
            }
        }
        match page.next_before {
            Some(next) => before = Some(next),
            None => return Ok(()),
        }
    }
}

fn invalid_count(violations: &[Violation]) -> i64 {
    count(
        violations
            .iter()
            .filter(|v| !matches!(v.problem, Problem::CounterDrift { .. })),
    )
}

fn count<T>(items: impl Iterator<Item = T>) -> i64 {
    i64::try_from(items.count()).unwrap_or(i64::MAX)
}

fn sum(values: impl Iterator<Item = i64>) -> i64 {
    values.fold(0i64, |a, b| a.saturating_add(b))
}

/// The figures of one document, from the domain's readers.
fn document_figures(doc: &automerge::Automerge) -> Figures {
    let mut out = Figures::new();
    let Ok(meta) = domain::doc_meta(doc) else {
        return out;
    };
    let mut put = |name: &str, value: i64| {
        out.insert(name.to_owned(), value);
    };
    match meta.kind {
        DocKind::Ledger => {
            let view = domain::read_ledger(doc, None);
            put("sales", count(view.sales.values()));
            put(
                "sales.total_cents",
                sum(view.sales.values().map(|s| s.total_cents)),
            );
            put(
                "sale_lines",
                count(view.sales.values().flat_map(|s| s.lines.iter())),
            );
            put("voids", count(view.voids.values()));
            put("payments", count(view.payments.values()));
            put(
                "payments.amount_cents",
                sum(view.payments.values().map(|p| p.amount_cents)),
            );
            put("returns", count(view.returns.values()));
            put(
                "returns.refund_cents",
                sum(view.returns.values().map(|r| r.refund_cents)),
            );
            put("invalid_records", invalid_count(&view.violations));
        }
        DocKind::Stock => {
            let view = domain::read_stock(doc);
            for (product, level) in &view.levels {
                put(&format!("level.{product}"), *level);
            }
            put("levels", count(view.levels.keys()));
            put("movements", count(view.movements.values()));
            put(
                "movements.delta",
                sum(view.movements.values().map(|m| m.delta)),
            );
            put("alerts", count(view.alerts.values()));
            put("invalid_records", invalid_count(&view.violations));
        }
        DocKind::Catalog => {
            let view = domain::read_catalog(doc);
            put("products", count(view.products.keys()));
            put("customers", count(view.customers.keys()));
            put("sellers", count(view.sellers.keys()));
            put("devices", count(view.devices.keys()));
            put("locations", count(view.locations.keys()));
            put("invalid_records", invalid_count(&view.violations));
        }
        DocKind::Device => {}
    }
    // A zero figure and a missing one are the same thing.
    out.retain(|_, value| *value != 0);
    out
}

/// The same figures, aggregated in SQL per document.
async fn postgres_figures(client: &Client) -> Result<HashMap<String, Figures>, ExportError> {
    let mut out: HashMap<String, Figures> = HashMap::new();
    let queries: [(&str, &[&str]); 12] = [
        (
            "SELECT document_id, count(*), sum(total_cents)::bigint FROM sales GROUP BY 1",
            &["sales", "sales.total_cents"],
        ),
        (
            "SELECT document_id, count(*) FROM sale_lines GROUP BY 1",
            &["sale_lines"],
        ),
        (
            "SELECT document_id, count(*) FROM voids GROUP BY 1",
            &["voids"],
        ),
        (
            "SELECT document_id, count(*), sum(amount_cents)::bigint FROM payments GROUP BY 1",
            &["payments", "payments.amount_cents"],
        ),
        (
            "SELECT document_id, count(*), sum(refund_cents)::bigint FROM returns GROUP BY 1",
            &["returns", "returns.refund_cents"],
        ),
        (
            "SELECT document_id, count(*) FROM stock_levels GROUP BY 1",
            &["levels"],
        ),
        (
            "SELECT document_id, count(*), sum(delta)::bigint FROM stock_movements GROUP BY 1",
            &["movements", "movements.delta"],
        ),
        (
            "SELECT document_id, count(*) FROM oversell_alerts GROUP BY 1",
            &["alerts"],
        ),
        (
            "SELECT document_id, count(*) FROM invalid_records GROUP BY 1",
            &["invalid_records"],
        ),
        (
            "SELECT document_id, count(*) FROM products GROUP BY 1",
            &["products"],
        ),
        (
            "SELECT document_id, count(*) FROM customers GROUP BY 1",
            &["customers"],
        ),
        (
            "SELECT d.document_id, (SELECT count(*) FROM sellers s WHERE s.document_id = d.document_id), \
             (SELECT count(*) FROM devices v WHERE v.document_id = d.document_id), \
             (SELECT count(*) FROM locations l WHERE l.document_id = d.document_id) \
             FROM export_state d WHERE d.kind = 'catalog'",
            &["sellers", "devices", "locations"],
        ),
    ];
    for (sql, names) in queries {
        for row in client.query(sql, &[]).await? {
            let id: String = row.get(0);
            let figures = out.entry(id).or_default();
            for (index, name) in names.iter().enumerate() {
                let value: Option<i64> = row.get(index + 1);
                figures.insert((*name).to_owned(), value.unwrap_or(0));
            }
        }
    }
    for row in client
        .query(
            "SELECT document_id, product_id, level FROM stock_levels",
            &[],
        )
        .await?
    {
        let id: String = row.get(0);
        let product: String = row.get(1);
        out.entry(id)
            .or_default()
            .insert(format!("level.{product}"), row.get(2));
    }
    for figures in out.values_mut() {
        figures.retain(|_, value| *value != 0);
    }
    Ok(out)
}
