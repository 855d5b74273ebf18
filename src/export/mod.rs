//! The PostgreSQL projection of the documents, for reporting jobs
//! (accounting, BI, the office's daily screens): SQL tables of sales, sale
//! lines, corrections, catalog records, stock levels and movements,
//! oversell alerts, invalid records and the sync log (schema and example
//! queries: `docs/reporting.md`; DDL: `migrations/`).
//!
//! Data flows in three steps, each its own function so that the caller
//! (the server's live exporter, or the `ventas export` backfill) decides
//! where each runs:
//!
//! 1. [`exported_heads`]: up to which heads the document is already in
//!    Postgres (its `export_state` row).
//! 2. [`build_rows`] (pure, CPU-bound: run it in `spawn_blocking`): the rows
//!    of the document, either all of them (no heads yet) or only those of
//!    the records that changed since those heads, found from the operations
//!    of the changes made since. Records are read with the `domain` readers, so a record that
//!    breaks a rule goes to `invalid_records`, never into the business
//!    tables, in both paths alike.
//! 3. [`apply`]: one transaction that checks the document's exported heads
//!    are still the ones the rows were built from, replaces the rows of the
//!    changed records, and writes the new heads. Rows and heads commit
//!    together, so a crash at any point neither loses nor duplicates a row,
//!    and applying the same export twice changes nothing.
//!
//! ```no_run
//! # async fn demo(doc: automerge::Automerge, id: ventas::protocol::ids::DocumentId)
//! # -> Result<(), ventas::export::ExportError> {
//! use ventas::export;
//! let mut client = export::connect("postgres://postgres@127.0.0.1/reports?sslmode=disable").await?;
//! export::migrate(&mut client).await?;
//! let since = export::exported_heads(&client, &id).await?;
//! let rows = export::build_rows(&id, &doc, since.as_deref().unwrap_or(&[]))?;
//! export::apply(&mut client, &rows, since.as_deref()).await?;
//! # Ok(()) }
//! ```

mod apply;
pub mod backfill;
mod cached;
mod connect;
mod rows;
mod tables;
pub mod verify;

use ventas_sync_protocol::ids::DocumentId;

pub use apply::{apply, apply_many, apply_sessions, exported_heads, exported_heads_many, migrate};
pub use connect::connect;
pub use rows::{build_rows, DocExport, ExportScope};
pub use tables::{Cell, Row, Table};

/// Why an export step failed. A [`ExportError::Conflict`] is expected when
/// two exporters race or the database moved on: re-read the heads and
/// build again.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migration: {0}")]
    Migration(#[from] refinery::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("postgres url: {0}")]
    Url(String),
    #[error(
        "document {document_id}: exported heads are {found:?} in postgres, the rows were built from {expected:?}"
    )]
    Conflict {
        document_id: DocumentId,
        expected: Option<Vec<String>>,
        found: Option<Vec<String>>,
    },
    #[error("document {document_id}: {reason}")]
    Malformed {
        document_id: DocumentId,
        reason: String,
    },
    #[error("{field} = {value} does not fit a postgres bigint")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("storage: {0}")]
    Store(#[from] ventas_storage::StoreError),
    #[error("sync log: {0}")]
    Sessions(#[from] crate::server::sessions::SessionLogError),
    #[error("export task: {0}")]
    Task(String),
}

/// tokio-postgres prints "db error" for a server error; the server's
/// message is in the source.
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

/// Heads as stored in `export_state.heads`: hex, sorted.
pub fn heads_to_hex(heads: &[automerge::ChangeHash]) -> Vec<String> {
    let mut out: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
    out.sort();
    out
}
