//! Writing to Postgres: migrations, the per-document transaction that
//! commits rows and heads together, and the sync log.

use std::str::FromStr;

use automerge::ChangeHash;
use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};
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
    let row = client
        .query_opt(
            "SELECT heads FROM export_state WHERE document_id = $1",
            &[&document_id.to_string()],
        )
        .await?;
    row.map(|row| parse_heads(document_id, row.get::<_, Vec<String>>(0)))
        .transpose()
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
pub async fn apply_many(
    client: &mut Client,
    exports: &[(&DocExport, Option<&[ChangeHash]>)],
) -> Result<(), ExportError> {
    let tx = client.transaction().await?;
    for (export, expected_previous) in exports {
        if let Err(error) = apply_in(&tx, export, *expected_previous).await {
            tx.rollback().await?;
            return Err(error);
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One document's part of a transaction (see [`apply`]).
async fn apply_in(
    tx: &Transaction<'_>,
    export: &DocExport,
    expected_previous: Option<&[ChangeHash]>,
) -> Result<(), ExportError> {
    let document_id = export.document_id.to_string();
    let found = lock_document(tx, &document_id).await?;
    let new_heads = heads_to_hex(&export.heads);
    if found.as_ref() == Some(&new_heads) {
        return Ok(());
    }
    let expected = expected_previous.map(heads_to_hex);
    if found != expected {
        return Err(ExportError::Conflict {
            document_id: export.document_id,
            expected,
            found,
        });
    }
    delete_scope(tx, &document_id, &export.scope).await?;
    for table in Table::ALL {
        if let Some(rows) = export.rows.get(&table) {
            insert_rows(tx, table, rows).await?;
        }
    }
    write_state(tx, export).await
}

/// Serializes exports of one document (whether or not its state row exists
/// yet) and reads its exported heads.
async fn lock_document(
    tx: &Transaction<'_>,
    document_id: &str,
) -> Result<Option<Vec<String>>, ExportError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&document_id],
    )
    .await?;
    let row = tx
        .query_opt(
            "SELECT heads FROM export_state WHERE document_id = $1 FOR UPDATE",
            &[&document_id],
        )
        .await?;
    Ok(row.map(|row| {
        let mut heads: Vec<String> = row.get(0);
        heads.sort();
        heads
    }))
}

/// Deletes the rows an export replaces. Child rows (sale and return lines)
/// go with their parents (`ON DELETE CASCADE`).
pub(crate) async fn delete_scope(
    tx: &Transaction<'_>,
    document_id: &str,
    scope: &ExportScope,
) -> Result<(), ExportError> {
    match scope {
        ExportScope::Full => {
            for table in Table::ALL.iter().rev() {
                tx.execute(
                    &format!("DELETE FROM {} WHERE document_id = $1", table.name()),
                    &[&document_id],
                )
                .await?;
            }
        }
        ExportScope::Records { keys, whole } => {
            for collection in whole {
                if let Some((table, _)) = Table::for_collection(collection) {
                    tx.execute(
                        &format!("DELETE FROM {} WHERE document_id = $1", table.name()),
                        &[&document_id],
                    )
                    .await?;
                }
                tx.execute(
                    "DELETE FROM invalid_records WHERE document_id = $1 AND collection = $2",
                    &[&document_id, collection],
                )
                .await?;
            }
            for (collection, keys) in keys {
                if keys.is_empty() || whole.contains(collection) {
                    continue;
                }
                let keys: Vec<&String> = keys.iter().collect();
                if let Some((table, column)) = Table::for_collection(collection) {
                    tx.execute(
                        &format!(
                            "DELETE FROM {} WHERE document_id = $1 AND {column} = ANY($2)",
                            table.name()
                        ),
                        &[&document_id, &keys],
                    )
                    .await?;
                }
                tx.execute(
                    "DELETE FROM invalid_records \
                     WHERE document_id = $1 AND collection = $2 AND record_key = ANY($3)",
                    &[&document_id, collection, &keys],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Upserts rows one statement each, pipelined on the connection.
async fn insert_rows(tx: &Transaction<'_>, table: Table, rows: &[Row]) -> Result<(), ExportError> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = tx.prepare(&table.upsert_sql()).await?;
    for chunk in rows.chunks(INSERTS_IN_FLIGHT_MAX) {
        try_join_all(chunk.iter().map(|row| {
            let params: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|cell| cell as &(dyn ToSql + Sync)).collect();
            let statement = &statement;
            async move { tx.execute(statement, &params).await }
        }))
        .await?;
    }
    Ok(())
}

/// Statements sent ahead of their answers (pipelining); bounds the memory
/// of one apply's queued requests.
const INSERTS_IN_FLIGHT_MAX: usize = 1_024;

pub(crate) async fn write_state(
    tx: &Transaction<'_>,
    export: &DocExport,
) -> Result<(), ExportError> {
    tx.execute(
        "INSERT INTO export_state (document_id, kind, tenant, owner, period, heads, exported_at) \
         VALUES ($1, $2, $3, $4, $5, $6, now()) \
         ON CONFLICT (document_id) DO UPDATE SET kind = EXCLUDED.kind, tenant = EXCLUDED.tenant, \
         owner = EXCLUDED.owner, period = EXCLUDED.period, heads = EXCLUDED.heads, \
         exported_at = EXCLUDED.exported_at",
        &[
            &export.document_id.to_string(),
            &export.kind.map(|kind| kind.as_str()),
            &export.tenant,
            &export.owner,
            &export.period,
            &heads_to_hex(&export.heads),
        ],
    )
    .await?;
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
