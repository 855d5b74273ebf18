//! Writing to Postgres: migrations, the per-document transaction that
//! commits rows and heads together, and the sync log.

use std::collections::HashMap;
use std::str::FromStr;

use automerge::ChangeHash;
use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};
use ventas_sync_protocol::ids::DocumentId;

use super::rows::{DocExport, ExportScope};
use super::tables::{Cell, Row, Table};
use super::{heads_to_hex, ExportError};
use crate::server::sessions::SyncSession;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key serializing migrations of one database (two
/// processes starting at once must not both run `V1`).
const MIGRATION_LOCK_KEY: i64 = 0x7665_6e74_6173_0001;

/// Applies the migrations in `migrations/` that the database does not have
/// yet (refinery's `refinery_schema_history` table records them). Running
/// it again, or on a database already at the latest version, is a no-op.
pub async fn migrate(client: &mut Client) -> Result<(), ExportError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = embedded::migrations::runner().run_async(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    result?;
    Ok(())
}

/// The heads the document was last exported at; `None` if it never was.
pub async fn exported_heads(
    client: &Client,
    document_id: &DocumentId,
) -> Result<Option<Vec<ChangeHash>>, ExportError> {
    Ok(
        exported_heads_many(client, std::slice::from_ref(document_id))
            .await?
            .remove(document_id),
    )
}

/// [`exported_heads`] of several documents in one query; documents never
/// exported are absent from the map.
pub async fn exported_heads_many(
    client: &Client,
    document_ids: &[DocumentId],
) -> Result<HashMap<DocumentId, Vec<ChangeHash>>, ExportError> {
    if document_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let by_text: HashMap<String, DocumentId> = document_ids
        .iter()
        .map(|document_id| (document_id.to_string(), *document_id))
        .collect();
    let ids: Vec<&String> = by_text.keys().collect();
    let rows = client
        .query(
            "SELECT document_id, heads FROM export_state WHERE document_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        let Some(document_id) = by_text.get(row.get::<_, &str>(0)) else {
            continue;
        };
        found.insert(*document_id, parse_heads(document_id, row.get(1))?);
    }
    Ok(found)
}

pub(crate) fn parse_heads(
    document_id: &DocumentId,
    hex: Vec<String>,
) -> Result<Vec<ChangeHash>, ExportError> {
    hex.iter()
        .map(|text| {
            ChangeHash::from_str(text).map_err(|e| ExportError::Malformed {
                document_id: *document_id,
                reason: format!("export_state.heads holds {text:?}: {e}"),
            })
        })
        .collect()
}

/// Applies one document's export in one transaction: takes the document's
/// lock, checks its exported heads are `expected_previous` (`None`: never
/// exported) or already the export's own heads (then nothing is written:
/// a retry after a commit whose answer was lost), replaces the rows in the
/// export's scope, writes the new heads, commits. On a
/// [`ExportError::Conflict`] nothing is written.
pub async fn apply(
    client: &mut Client,
    export: &DocExport,
    expected_previous: Option<&[ChangeHash]>,
) -> Result<(), ExportError> {
    apply_many(client, &[(export, expected_previous)]).await
}

/// [`apply`] for several documents in ONE transaction (one commit, one
/// fsync for a whole page of documents): every document's rows and heads
/// commit together, or none do. A [`ExportError::Conflict`] on any of them
/// rolls back all of them; the caller may retry them one by one.
///
/// Round trips do not grow with the documents, the tables or the rows
/// (a remote database is as far away as its round trip): `BEGIN`; every
/// statement prepared at once; every document locked and its heads read;
/// every delete, upsert and heads write pipelined in order; `COMMIT`.
pub async fn apply_many(
    client: &mut Client,
    exports: &[(&DocExport, Option<&[ChangeHash]>)],
) -> Result<(), ExportError> {
    if exports.is_empty() {
        return Ok(());
    }
    let tx = client.transaction().await?;
    match apply_in(&tx, exports).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(())
        }
        Err(error) => {
            // A failed rollback changes nothing: dropping the transaction
            // (or the connection) rolls back too.
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// Locks every document of `ids` for the transaction (in id order, so two
/// writers of overlapping sets queue instead of deadlocking), then reads
/// their exported heads (sorted). One round trip once prepared.
async fn lock_documents(
    tx: &Transaction<'_>,
    lock: &Statement,
    read: &Statement,
    ids: &[String],
) -> Result<HashMap<String, Vec<String>>, ExportError> {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    // Sent in this order on first poll, so the read runs after the locks.
    let params: [&(dyn ToSql + Sync); 1] = [&sorted];
    let (_, rows) = futures_util::try_join!(tx.execute(lock, &params), tx.query(read, &params))?;
    Ok(heads_by_document(rows))
}

/// `(document_id, heads)` rows of `export_state` as a map, each document's
/// heads sorted.
pub(crate) fn heads_by_document(rows: Vec<tokio_postgres::Row>) -> HashMap<String, Vec<String>> {
    rows.into_iter()
        .map(|row| {
            let mut heads: Vec<String> = row.get(1);
            heads.sort();
            (row.get(0), heads)
        })
        .collect()
}

/// [`lock_documents`] with its two statements prepared here (one more
/// round trip).
pub(crate) async fn lock_and_read_heads(
    tx: &Transaction<'_>,
    ids: &[String],
) -> Result<HashMap<String, Vec<String>>, ExportError> {
    let (lock, read) = futures_util::try_join!(tx.prepare(LOCK_SQL), tx.prepare(HEADS_SQL))?;
    lock_documents(tx, &lock, &read, ids).await
}

/// Takes every document's advisory lock, one by one in array order.
const LOCK_SQL: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended(id, 0)) FROM unnest($1::text[]) AS ids(id)";
/// The exported heads of the documents, their rows locked.
const HEADS_SQL: &str =
    "SELECT document_id, heads FROM export_state WHERE document_id = ANY($1) FOR UPDATE";
const STATE_SQL: &str =
    "INSERT INTO export_state (document_id, kind, tenant, owner, period, heads, exported_at) \
     VALUES ($1, $2, $3, $4, $5, $6, now()) \
     ON CONFLICT (document_id) DO UPDATE SET kind = EXCLUDED.kind, tenant = EXCLUDED.tenant, \
     owner = EXCLUDED.owner, period = EXCLUDED.period, heads = EXCLUDED.heads, \
     exported_at = EXCLUDED.exported_at";
const INVALID_COLLECTION_SQL: &str =
    "DELETE FROM invalid_records WHERE document_id = $1 AND collection = $2";
const INVALID_KEYS_SQL: &str = "DELETE FROM invalid_records \
     WHERE document_id = $1 AND collection = $2 AND record_key = ANY($3)";

/// Distinct SQL texts of one transaction (a few dozen at most: one per
/// table and kind of delete), prepared in one round trip.
#[derive(Default)]
struct Statements {
    texts: Vec<String>,
    prepared: Vec<Statement>,
}

impl Statements {
    /// Registers `sql`; returns its handle for [`Statements::get`].
    fn add(&mut self, sql: String) -> usize {
        match self.texts.iter().position(|known| *known == sql) {
            Some(at) => at,
            None => {
                self.texts.push(sql);
                self.texts.len() - 1
            }
        }
    }

    async fn prepare(&mut self, tx: &Transaction<'_>) -> Result<(), ExportError> {
        self.prepared = try_join_all(self.texts.iter().map(|sql| tx.prepare(sql))).await?;
        Ok(())
    }

    fn get(&self, handle: usize) -> &Statement {
        &self.prepared[handle]
    }
}

/// The documents' part of [`apply_many`]'s transaction.
async fn apply_in(
    tx: &Transaction<'_>,
    exports: &[(&DocExport, Option<&[ChangeHash]>)],
) -> Result<(), ExportError> {
    let ids: Vec<String> = exports
        .iter()
        .map(|(export, _)| export.document_id.to_string())
        .collect();
    let new_heads: Vec<Vec<String>> = exports
        .iter()
        .map(|(export, _)| heads_to_hex(&export.heads))
        .collect();
    let kinds: Vec<Option<&str>> = exports
        .iter()
        .map(|(export, _)| export.kind.map(|kind| kind.as_str()))
        .collect();
    // Record keys as the array parameters their deletes take.
    let key_lists: Vec<Vec<(&String, Vec<&String>)>> = exports
        .iter()
        .map(|(export, _)| match &export.scope {
            ExportScope::Full => Vec::new(),
            ExportScope::Records { keys, whole } => keys
                .iter()
                .filter(|(collection, keys)| !keys.is_empty() && !whole.contains(*collection))
                .map(|(collection, keys)| (collection, keys.iter().collect()))
                .collect(),
        })
        .collect();

    let mut statements = Statements::default();
    let lock = statements.add(LOCK_SQL.to_string());
    let read = statements.add(HEADS_SQL.to_string());
    let state = statements.add(STATE_SQL.to_string());
    // Every statement the writes may need, in the order they run.
    let mut writes: Vec<(usize, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
    let mut planned: Vec<Vec<(usize, Vec<&(dyn ToSql + Sync)>)>> =
        Vec::with_capacity(exports.len());
    for (at, (export, _)) in exports.iter().enumerate() {
        let id = &ids[at];
        let mut plan: Vec<(usize, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
        match &export.scope {
            ExportScope::Full => {
                for table in Table::ALL.iter().rev() {
                    let sql = format!("DELETE FROM {} WHERE document_id = $1", table.name());
                    plan.push((statements.add(sql), vec![id]));
                }
            }
            ExportScope::Records { whole, .. } => {
                for collection in whole {
                    if let Some((table, _)) = Table::for_collection(collection) {
                        let sql = format!("DELETE FROM {} WHERE document_id = $1", table.name());
                        plan.push((statements.add(sql), vec![id]));
                    }
                    let sql = statements.add(INVALID_COLLECTION_SQL.to_string());
                    plan.push((sql, vec![id, collection]));
                }
                for (collection, keys) in &key_lists[at] {
                    if let Some((table, column)) = Table::for_collection(collection) {
                        let sql = format!(
                            "DELETE FROM {} WHERE document_id = $1 AND {column} = ANY($2)",
                            table.name()
                        );
                        plan.push((statements.add(sql), vec![id, keys]));
                    }
                    let sql = statements.add(INVALID_KEYS_SQL.to_string());
                    plan.push((sql, vec![id, *collection, keys]));
                }
            }
        }
        for table in Table::ALL {
            let Some(rows) = export.rows.get(&table) else {
                continue;
            };
            if rows.is_empty() {
                continue;
            }
            let upsert = statements.add(table.upsert_sql());
            for row in rows {
                plan.push((
                    upsert,
                    row.iter().map(|cell| cell as &(dyn ToSql + Sync)).collect(),
                ));
            }
        }
        plan.push((
            state,
            vec![
                id,
                &kinds[at],
                &export.tenant,
                &export.owner,
                &export.period,
                &new_heads[at],
            ],
        ));
        planned.push(plan);
    }
    statements.prepare(tx).await?;

    let found = lock_documents(tx, statements.get(lock), statements.get(read), &ids).await?;
    for (at, ((export, expected_previous), plan)) in exports.iter().zip(planned).enumerate() {
        let found = found.get(&ids[at]);
        if found == Some(&new_heads[at]) {
            // Already committed at these heads (a retry whose answer was
            // lost): nothing to write.
            continue;
        }
        let expected = expected_previous.map(heads_to_hex);
        if found != expected.as_ref() {
            return Err(ExportError::Conflict {
                document_id: export.document_id,
                expected,
                found: found.cloned(),
            });
        }
        writes.extend(plan);
    }
    // Sent in order, each on its future's first poll: Postgres runs them in
    // that order (deletes before upserts, parents before lines).
    for chunk in writes.chunks(INSERTS_IN_FLIGHT_MAX) {
        try_join_all(
            chunk
                .iter()
                .map(|(statement, params)| tx.execute(statements.get(*statement), params)),
        )
        .await?;
    }
    Ok(())
}

/// Statements sent ahead of their answers (pipelining); bounds the memory
/// of one apply's queued requests.
const INSERTS_IN_FLIGHT_MAX: usize = 1_024;

/// Writes the exported heads of `exports` (pipelined: one round trip).
pub(crate) async fn write_states(
    tx: &Transaction<'_>,
    exports: &[DocExport],
) -> Result<(), ExportError> {
    let statement = tx.prepare(STATE_SQL).await?;
    let values: Vec<(String, Option<&str>, Vec<String>)> = exports
        .iter()
        .map(|export| {
            (
                export.document_id.to_string(),
                export.kind.map(|kind| kind.as_str()),
                heads_to_hex(&export.heads),
            )
        })
        .collect();
    let params: Vec<[&(dyn ToSql + Sync); 6]> = exports
        .iter()
        .zip(&values)
        .map(|(export, (id, kind, heads))| {
            [
                id as &(dyn ToSql + Sync),
                kind,
                &export.tenant,
                &export.owner,
                &export.period,
                heads,
            ]
        })
        .collect();
    for chunk in params.chunks(INSERTS_IN_FLIGHT_MAX) {
        try_join_all(chunk.iter().map(|params| tx.execute(&statement, params))).await?;
    }
    Ok(())
}

/// The columns of `sync_sessions` the exporter writes.
pub(crate) const SESSION_COLUMNS: &str = "session_id, peer_id, identity, remote_addr, \
    connected_at_ms, disconnected_at_ms, documents, messages_in, messages_out, changes_in, \
    changes_out, bytes_in, bytes_out, writes_denied, denials, error";

/// One session as `sync_sessions` values, in [`SESSION_COLUMNS`] order.
pub(crate) fn session_row(session: &SyncSession) -> Result<Row, ExportError> {
    let big = |field: &'static str, value: u64| {
        i64::try_from(value)
            .map(Cell::Int)
            .map_err(|_| ExportError::OutOfRange { field, value })
    };
    Ok(vec![
        big("session_id", session.id)?,
        Cell::OptText(session.peer_id.clone()),
        Cell::OptText(session.identity.clone()),
        Cell::Text(session.remote_addr.clone()),
        big("connected_at_ms", session.connected_at_ms)?,
        match session.disconnected_at_ms {
            Some(ms) => big("disconnected_at_ms", ms)?,
            None => Cell::OptInt(None),
        },
        Cell::TextArray(session.documents.clone()),
        big("messages_in", session.messages_in)?,
        big("messages_out", session.messages_out)?,
        big("changes_in", session.changes_in)?,
        big("changes_out", session.changes_out)?,
        big("bytes_in", session.bytes_in)?,
        big("bytes_out", session.bytes_out)?,
        big("writes_denied", session.writes_denied)?,
        Cell::TextArray(session.denials.clone()),
        Cell::OptText(session.error.clone()),
    ])
}

/// Upserts sync-log records (keyed by session id) in one transaction;
/// applying the same sessions again changes nothing.
pub async fn apply_sessions(
    client: &mut Client,
    sessions: &[SyncSession],
) -> Result<(), ExportError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let rows = sessions
        .iter()
        .map(session_row)
        .collect::<Result<Vec<_>, _>>()?;
    let tx = client.transaction().await?;
    let columns: Vec<&str> = SESSION_COLUMNS.split(", ").map(str::trim).collect();
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = columns
        .iter()
        .skip(1)
        .map(|column| format!("{column} = EXCLUDED.{column}"))
        .collect();
    let statement = tx
        .prepare(&format!(
            "INSERT INTO sync_sessions ({}) VALUES ({}) ON CONFLICT (session_id) DO UPDATE SET {}",
            columns.join(", "),
            params.join(", "),
            updates.join(", ")
        ))
        .await?;
    for chunk in rows.chunks(INSERTS_IN_FLIGHT_MAX) {
        try_join_all(chunk.iter().map(|row| {
            let params: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|cell| cell as &(dyn ToSql + Sync)).collect();
            let statement = &statement;
            let tx = &tx;
            async move { tx.execute(statement, &params).await }
        }))
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
