//! `ventas export`: every document of a data directory into Postgres.
//!
//! Blocking threads (one per core) load documents from the store and build
//! their full exports ([`super::build_rows`]) while the async side writes
//! the previous batch: per batch of at most [`BACKFILL_BATCH_DOCS_MAX`] documents (or
//! [`BACKFILL_BATCH_ROWS_MAX`] rows), one transaction deletes the batch's
//! old rows, binary-COPYs the new ones straight into the tables (the delete
//! leaves no row they could collide with; every row is keyed by its
//! document) and writes the documents' `export_state` heads. Interrupted, it is rerun: a document
//! whose exported heads equal its heads is skipped, any other is exported
//! again. Then the sync log is upserted.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::Automerge;
use futures_util::pin_mut;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};
use ventas_storage::{DocStore, LIST_LIMIT_MAX};
use ventas_sync_protocol::ids::DocumentId;

use super::apply::{apply_sessions, heads_by_document, lock_and_read_heads, migrate, write_states};
use super::rows::{build_rows, DocExport};
use super::tables::{Row, Table};
use super::{heads_to_hex, ExportError};
use crate::server::sessions::SessionLog;

/// Documents per backfill transaction.
pub const BACKFILL_BATCH_DOCS_MAX: usize = 64;
/// Rows per backfill transaction (a batch closes early past it).
pub const BACKFILL_BATCH_ROWS_MAX: usize = 100_000;
/// Built batches waiting for the writer (bounds memory while Postgres is
/// slower than the builder).
const BATCHES_QUEUED_MAX: usize = 2;
/// Sync-log records read and upserted at a time.
pub const SESSIONS_PAGE_MAX: usize = 500;

/// Counts so far, passed to the progress callback after each batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Documents in the store when the backfill started.
    pub documents_total: u64,
    pub documents_seen: u64,
    pub documents_exported: u64,
    /// Already exported at their current heads.
    pub documents_skipped: u64,
    pub rows: u64,
    pub sessions: u64,
}

/// Loads a stored document as the server does (snapshot, then chunks).
pub fn load_doc(
    store: &dyn DocStore,
    document_id: &DocumentId,
) -> Result<Option<Automerge>, ExportError> {
    let Some(stored) = store.load(document_id.as_bytes())? else {
        return Ok(None);
    };
    ventas_sync_protocol::stored::load_document(stored.snapshot.as_deref(), &stored.chunks)
        .map(Some)
        .map_err(|e| ExportError::Malformed {
            document_id: *document_id,
            reason: e.to_string(),
        })
}

/// Sizes of a backfill's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillConfig {
    /// Documents per transaction, at most [`BACKFILL_BATCH_DOCS_MAX`].
    pub batch_docs_max: usize,
    /// Rows per transaction (a batch closes once past it), at most
    /// [`BACKFILL_BATCH_ROWS_MAX`].
    pub batch_rows_max: usize,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            batch_docs_max: BACKFILL_BATCH_DOCS_MAX,
            batch_rows_max: BACKFILL_BATCH_ROWS_MAX,
        }
    }
}

impl BackfillConfig {
    /// Clamps both sizes into `1..=max`.
    pub fn bounded(self) -> Self {
        Self {
            batch_docs_max: self.batch_docs_max.clamp(1, BACKFILL_BATCH_DOCS_MAX),
            batch_rows_max: self.batch_rows_max.clamp(1, BACKFILL_BATCH_ROWS_MAX),
        }
    }
}

/// Exports every document of `store` and its sync log into the database
/// behind `client` (migrating it first).
pub async fn backfill(
    store: Arc<dyn DocStore>,
    client: &mut Client,
    config: BackfillConfig,
    mut progress: impl FnMut(&BackfillReport),
) -> Result<BackfillReport, ExportError> {
    let config = config.bounded();
    migrate(client).await?;
    let mut report = BackfillReport {
        documents_total: store.doc_count()?,
        ..BackfillReport::default()
    };
    progress(&report);
    let exported = exported_state(client).await?;

    let (sender, mut batches) = mpsc::channel::<Result<Batch, ExportError>>(BATCHES_QUEUED_MAX);
    // Reading documents is the expensive part (the domain readers check
    // every record); one builder per core, each taking every n-th document.
    let builders = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, BUILDERS_MAX);
    let exported = Arc::new(exported);
    let mut producers = Vec::with_capacity(builders);
    for builder in 0..builders {
        let store = store.clone();
        let exported = exported.clone();
        let sender = sender.clone();
        let share = Share {
            index: builder,
            of: builders,
        };
        producers.push(tokio::task::spawn_blocking(move || {
            build_batches(store.as_ref(), &exported, config, share, &sender)
        }));
    }
    drop(sender);
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        report.documents_seen += batch.seen;
        report.documents_skipped += batch.skipped;
        if !batch.exports.is_empty() {
            write_batch(client, &batch).await?;
            // A crash between two committed batches (tests/it/
            // export_backfill.rs kills `ventas export` here, then reruns it).
            fail::fail_point!("backfill-after-batch", |_| {
                panic!("failpoint backfill-after-batch")
            });
            report.documents_exported += batch.exports.len() as u64;
            report.rows += batch.rows as u64;
        }
        progress(&report);
    }
    for producer in producers {
        producer
            .await
            .map_err(|e| ExportError::Task(format!("backfill builder thread: {e}")))?;
    }

    let log = SessionLog::new(store);
    let mut before = None;
    loop {
        let page = log.page(before, SESSIONS_PAGE_MAX)?;
        apply_sessions(client, &page.sessions).await?;
        report.sessions += page.sessions.len() as u64;
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    progress(&report);
    Ok(report)
}

/// Every document's exported heads (hex, sorted).
pub(crate) async fn exported_state(
    client: &Client,
) -> Result<HashMap<String, Vec<String>>, ExportError> {
    let rows = client
        .query("SELECT document_id, heads FROM export_state", &[])
        .await?;
    Ok(heads_by_document(rows))
}

/// One transaction's worth of documents.
struct Batch {
    exports: Vec<DocExport>,
    /// The exported heads each document had when the backfill started.
    previous: Vec<Option<Vec<String>>>,
    rows: usize,
    seen: u64,
    skipped: u64,
}

impl Batch {
    fn new() -> Self {
        Self {
            exports: Vec::new(),
            previous: Vec::new(),
            rows: 0,
            seen: 0,
            skipped: 0,
        }
    }
}

/// Builder threads at most, whatever the machine.
const BUILDERS_MAX: usize = 8;

/// Which documents one builder takes: the `index`-th of every `of`.
#[derive(Debug, Clone, Copy)]
struct Share {
    index: usize,
    of: usize,
}

/// A builder thread: pages through the store, loads each document of its
/// share, skips those already exported at their heads, builds the rest.
fn build_batches(
    store: &dyn DocStore,
    exported: &HashMap<String, Vec<String>>,
    config: BackfillConfig,
    share: Share,
    sender: &mpsc::Sender<Result<Batch, ExportError>>,
) {
    let mut position = 0usize;
    let send = |batch| sender.blocking_send(batch).is_ok();
    let mut after = None;
    let mut batch = Batch::new();
    loop {
        let page = match store.list_docs(after.as_ref(), LIST_LIMIT_MAX) {
            Ok(page) => page,
            Err(error) => {
                send(Err(error.into()));
                return;
            }
        };
        let Some(last) = page.last() else { break };
        after = Some(*last);
        for key in page {
            position += 1;
            if (position - 1) % share.of != share.index {
                continue;
            }
            let document_id = DocumentId::from_bytes(key);
            batch.seen += 1;
            let doc = match load_doc(store, &document_id) {
                Ok(Some(doc)) => doc,
                Ok(None) => continue,
                Err(error) => {
                    send(Err(error));
                    return;
                }
            };
            let previous = exported.get(&document_id.to_string()).cloned();
            if previous.as_ref() == Some(&heads_to_hex(&doc.get_heads())) {
                batch.skipped += 1;
                continue;
            }
            let export = match build_rows(&document_id, &doc, &[]) {
                Ok(export) => export,
                Err(error) => {
                    send(Err(error));
                    return;
                }
            };
            batch.rows += export.row_count();
            batch.exports.push(export);
            batch.previous.push(previous);
            let full =
                batch.exports.len() >= config.batch_docs_max || batch.rows >= config.batch_rows_max;
            if full && !send(Ok(std::mem::replace(&mut batch, Batch::new()))) {
                return;
            }
        }
    }
    send(Ok(batch));
}

async fn write_batch(client: &mut Client, batch: &Batch) -> Result<(), ExportError> {
    let tx = client.transaction().await?;
    let ids: Vec<String> = batch
        .exports
        .iter()
        .map(|export| export.document_id.to_string())
        .collect();
    // Exactly once against another backfill of the same database: the
    // documents' heads must still be those read at the start.
    let found = lock_and_read_heads(&tx, &ids).await?;
    for ((id, export), previous) in ids.iter().zip(&batch.exports).zip(&batch.previous) {
        if found.get(id) != previous.as_ref() {
            return Err(ExportError::Conflict {
                document_id: export.document_id,
                expected: previous.clone(),
                found: found.get(id).cloned(),
            });
        }
    }
    // Pipelined: one round trip for every table (children first).
    let deletes: Vec<String> = Table::ALL
        .iter()
        .rev()
        .map(|table| format!("DELETE FROM {} WHERE document_id = ANY($1)", table.name()))
        .collect();
    let params: [&(dyn ToSql + Sync); 1] = [&ids];
    futures_util::future::try_join_all(deletes.iter().map(|sql| tx.execute(sql.as_str(), &params)))
        .await?;
    for table in Table::ALL {
        let rows: Vec<&Row> = batch
            .exports
            .iter()
            .filter_map(|export| export.rows.get(&table))
            .flatten()
            .collect();
        if rows.is_empty() {
            continue;
        }
        copy_into(&tx, table.name(), table, &rows).await?;
    }
    write_states(&tx, &batch.exports).await?;
    tx.commit().await?;
    Ok(())
}

/// `COPY <target> (<columns>) FROM STDIN (FORMAT binary)` of `rows`.
pub async fn copy_into(
    tx: &Transaction<'_>,
    target: &str,
    table: Table,
    rows: &[&Row],
) -> Result<(), ExportError> {
    let columns: Vec<&str> = table.columns().iter().map(|(name, _)| *name).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &table.types());
    pin_mut!(writer);
    for row in rows {
        let values: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|cell| cell as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}
