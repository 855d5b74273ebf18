//! The live export to PostgreSQL: keeps the reporting tables of
//! [`crate::export`] up to date while the server runs.
//!
//! **Markers.** When the hub task persists a change to a document, and when
//! the sync log records a session, [`ExportMarks`] writes a marker into the
//! metadata keyspace (`export-pending/d<document>` or
//! `export-pending/s<session id>`), in the same sled epoch as the change, so
//! a marker is durable exactly when its change is. The markers are the
//! exporter's queue: they survive restarts, crashes and Postgres outages,
//! and a document changed a thousand times while Postgres was down has one
//! marker.
//!
//! **Exporter task.** Sweeps the markers; for each document it reads the
//! heads last exported (from Postgres, or remembered from its own last
//! commit), brings its parsed copy of the document up to date from the store
//! (the whole document the first time, then only the chunks appended since:
//! `DocStore::load_after`; at most [`EXPORT_DOCS_CACHED_MAX`] kept), flushes
//! the store (so nothing it exports can be lost by a crash), builds
//! the rows that changed since those heads ([`crate::export::build_rows`],
//! on a blocking thread) and applies them with the new heads in one
//! transaction ([`crate::export::apply`]). Only then is the marker removed,
//! and only if it was not set again meanwhile (`meta_remove_if`). A crash at
//! any point leaves the marker, and the next export starts from the heads
//! that committed: nothing is lost and nothing is written twice.
//!
//! **Outages.** Any Postgres error drops the connection and retries with
//! exponential backoff ([`EXPORT_RETRY_DELAY_MIN_MS`] to
//! [`EXPORT_RETRY_DELAY_MAX_MS`]); the hub and every device go on as usual.
//! `GET /v1/export/status` ([`status`]) tells how far behind the export is:
//! per tenant for office and reporting (a pending document counts for the
//! tenant of its `server::owners` record; one without a record is shown to
//! the operator only), globally for the operator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::{Automerge, ChangeHash, ReadDoc};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};
use ventas_storage::{DocStore, LoadedAfter, StoreError};
use ventas_sync_protocol::ids::DocumentId;

use super::auth::Scope;
use super::owners::{self, OwnerError};
use super::sessions::SessionLog;
use crate::export::{self, ExportError};
use crate::now_ms;

/// A crash window for tests/it/crash_points.rs; nothing at all without the
/// `failpoints` feature (`fail_point!` expands to nothing, its name too).
/// `FAILPOINTS=<name>=panic` dies here with whatever the store had made
/// durable; `<name>=return` flushes the store first: a crash after the OS
/// wrote out everything this process wrote, which the hub's frequent
/// flushes make the likely case in production.
macro_rules! crash_window {
    ($name:literal, $store:expr) => {
        fail::fail_point!($name, |_| {
            let _ = $store.flush();
            panic!("failpoint {} after a flush", $name);
        })
    };
}

/// Markers read from the store in one page of a sweep.
pub const EXPORT_MARKERS_PER_PAGE: usize = 64;
/// First delay after a failed export; doubles on each failure in a row.
pub const EXPORT_RETRY_DELAY_MIN_MS: u64 = 200;
/// Longest delay between two attempts while Postgres keeps failing.
pub const EXPORT_RETRY_DELAY_MAX_MS: u64 = 10_000;
/// Longest wait for new markers before sweeping again anyway.
pub const EXPORT_IDLE_SWEEP_MS: u64 = 1_000;
/// Export lags remembered for the status percentiles.
pub const EXPORT_LAG_SAMPLES_MAX: usize = 4_096;
/// Markers counted by one status request; past it the count is a floor.
pub const EXPORT_STATUS_COUNT_MAX: usize = 100_000;
/// Markers examined by one tenant's status request: each costs a point
/// read (the document's ownership record or the session's tenant index
/// key), so fewer than for the global count; past it the count is a floor.
pub const EXPORT_STATUS_TENANT_MARKERS_MAX: usize = 10_000;
/// Longest one Postgres step (connect, migrate, a query, a transaction)
/// may take by default (`ServerConfig::postgres_timeout_ms`); past it the connection is dropped and retried like an error,
/// so a hung database cannot stall the export for good.
pub const EXPORT_POSTGRES_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// After each timeout in a row the next attempt gets twice the time, up to
/// this many times `postgres_timeout_ms`: a database that is slow but alive
/// (a loaded machine, a first migration, a big catch-up page) is caught up
/// with instead of being given up on at the same step forever. Any success
/// brings the timeout back to `postgres_timeout_ms`.
pub const EXPORT_TIMEOUT_GROWTH_MAX: u64 = 16;
/// Documents the exporter keeps parsed between exports.
pub const EXPORT_DOCS_CACHED_MAX: usize = 64;
/// Longest a lag line may wait in the log while the export is behind.
const EXPORT_LAG_LOG_INTERVAL_MS: u64 = 10_000;

const MARKER_PREFIX: &[u8] = b"export-pending/";
const DOC_TAG: u8 = b'd';
const SESSION_TAG: u8 = b's';
/// Present while every change since it was set has been marked; a server
/// run without export removes it, so the next run with export marks every
/// document once.
const MARKING_KEY: &[u8] = b"export/marking";
/// Marker value: when the first unexported change was marked (ms), then a
/// random token so a marker set again is never mistaken for the old one.
const MARKER_VALUE_BYTES: usize = 16;

/// Why the exporter could not export one item.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("document {document_id} does not load from the store: {reason}")]
    Load {
        document_id: DocumentId,
        reason: String,
    },
    #[error("sync session record {id} is unreadable: {reason}")]
    Session { id: u64, reason: String },
    #[error("export worker thread failed: {0}")]
    Join(String),
    #[error("PostgreSQL did not answer within {0} ms")]
    Timeout(u64),
}

/// The step timeout after a step timed out at `current`: doubled, at most
/// [`EXPORT_TIMEOUT_GROWTH_MAX`] times the configured `configured`.
fn next_step_timeout_ms(current: u64, configured: u64) -> u64 {
    current
        .saturating_mul(2)
        .min(configured.saturating_mul(EXPORT_TIMEOUT_GROWTH_MAX))
        .max(configured)
}

/// Runs one Postgres step, giving up after `timeout_ms`.
async fn within_timeout<T>(
    timeout_ms: u64,
    step: impl std::future::Future<Output = Result<T, ExportError>>,
) -> Result<T, ExporterError> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), step).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ExporterError::Timeout(timeout_ms)),
    }
}

/// Writes export markers (a no-op when the export is off).
pub struct ExportMarks {
    store: Arc<dyn DocStore>,
    enabled: bool,
    wake: Notify,
}

/// An export marker's key: which document or session is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Document(DocumentId),
    Session(u64),
}

impl Pending {
    fn key(&self) -> Vec<u8> {
        let mut key = MARKER_PREFIX.to_vec();
        match self {
            Self::Document(id) => {
                key.push(DOC_TAG);
                key.extend_from_slice(id.as_bytes());
            }
            Self::Session(id) => {
                key.push(SESSION_TAG);
                key.extend_from_slice(&id.to_be_bytes());
            }
        }
        key
    }

    fn parse(key: &[u8]) -> Option<Self> {
        let rest = key.strip_prefix(MARKER_PREFIX)?;
        let (tag, body) = rest.split_first()?;
        match *tag {
            DOC_TAG => {
                let bytes: [u8; 16] = body.try_into().ok()?;
                Some(Self::Document(DocumentId::from_bytes(bytes)))
            }
            SESSION_TAG => Some(Self::Session(u64::from_be_bytes(body.try_into().ok()?))),
            _ => None,
        }
    }
}

fn marker_first_ms(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

impl ExportMarks {
    /// Markers for a server whose export is `enabled`. When the export is
    /// turned on after a run without it, every stored document is marked
    /// once (their changes in between were not).
    pub fn open(store: Arc<dyn DocStore>, enabled: bool) -> Result<Arc<Self>, StoreError> {
        let marks = Arc::new(Self {
            store,
            enabled,
            wake: Notify::new(),
        });
        if !enabled {
            marks.store.meta_remove(MARKING_KEY)?;
            return Ok(marks);
        }
        if marks.store.meta_get(MARKING_KEY)?.is_none() {
            let marked = marks.mark_every_document()?;
            marks.store.meta_put(MARKING_KEY, b"1")?;
            marks.store.flush()?;
            info!(
                documents = marked,
                "export: every stored document marked for export"
            );
        }
        Ok(marks)
    }

    fn mark_every_document(&self) -> Result<u64, StoreError> {
        let mut after = None;
        let mut marked = 0;
        loop {
            let page = self
                .store
                .list_docs(after.as_ref(), ventas_storage::LIST_LIMIT_MAX)?;
            let Some(last) = page.last().copied() else {
                return Ok(marked);
            };
            for key in page {
                self.mark(Pending::Document(DocumentId::from_bytes(key)))?;
                marked += 1;
            }
            after = Some(last);
        }
    }

    /// A change to `document_id` was appended to the store (not yet
    /// flushed: the marker is flushed with it).
    pub fn document_changed(&self, document_id: &DocumentId) -> Result<(), StoreError> {
        self.mark(Pending::Document(*document_id))
    }

    /// The sync log wrote session `id`.
    pub fn session_written(&self, id: u64) -> Result<(), StoreError> {
        self.mark(Pending::Session(id))
    }

    fn mark(&self, pending: Pending) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        let marked = self.try_mark(pending);
        if marked.is_err() {
            // A change may now be unmarked: the next start marks every
            // document again (if the store lets us say so).
            let _ = self.store.meta_remove(MARKING_KEY);
        }
        marked
    }

    fn try_mark(&self, pending: Pending) -> Result<(), StoreError> {
        let key = pending.key();
        let first_ms = match self.store.meta_get(&key)? {
            Some(value) => marker_first_ms(&value).unwrap_or_else(now_ms),
            None => now_ms(),
        };
        let mut value = [0u8; MARKER_VALUE_BYTES];
        value[..8].copy_from_slice(&first_ms.to_be_bytes());
        value[8..].copy_from_slice(&rand::random::<u64>().to_be_bytes());
        self.store.meta_put(&key, &value)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Counts every pending marker (at most [`EXPORT_STATUS_COUNT_MAX`]).
    fn backlog_all(&self) -> Result<Backlog, StoreError> {
        self.backlog(|_| Ok(true), EXPORT_STATUS_COUNT_MAX)
    }

    /// Counts the pending markers `counted` admits and finds the oldest
    /// first-marked time among them, examining at most `examined_max`
    /// markers (past it the counts are floors).
    fn backlog(
        &self,
        mut counted: impl FnMut(Pending) -> Result<bool, StoreError>,
        examined_max: usize,
    ) -> Result<Backlog, StoreError> {
        let mut backlog = Backlog::default();
        let mut examined = 0;
        let mut before: Option<Vec<u8>> = None;
        loop {
            let page = self.store.meta_scan_prefix_rev(
                MARKER_PREFIX,
                before.as_deref(),
                ventas_storage::LIST_LIMIT_MAX.min(examined_max),
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(backlog);
            };
            before = Some(last.clone());
            for (key, value) in &page {
                examined += 1;
                let Some(pending) = Pending::parse(key) else {
                    continue;
                };
                if !counted(pending)? {
                    continue;
                }
                match pending {
                    Pending::Document(_) => backlog.documents += 1,
                    Pending::Session(_) => backlog.sessions += 1,
                }
                if let Some(first_ms) = marker_first_ms(value) {
                    backlog.oldest_ms =
                        Some(backlog.oldest_ms.map_or(first_ms, |o| o.min(first_ms)));
                }
            }
            if examined >= examined_max {
                backlog.capped = true;
                return Ok(backlog);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Backlog {
    documents: u64,
    sessions: u64,
    oldest_ms: Option<u64>,
    capped: bool,
}

/// What `GET /v1/export/status` answers. An office or reporting caller
/// gets its tenant's backlog only (`tenant` set, no global part); the
/// operator, or anyone when authentication is off, gets the whole backlog
/// and the global part.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ExportStatus {
    pub enabled: bool,
    /// Whether the exporter holds a working Postgres connection.
    pub connected: bool,
    /// The tenant these figures are about; absent for the global status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Documents changed and not yet exported.
    pub pending_documents: u64,
    /// Sync sessions written and not yet exported.
    pub pending_sessions: u64,
    /// The pending counts stopped at [`EXPORT_STATUS_COUNT_MAX`] markers
    /// ([`EXPORT_STATUS_TENANT_MARKERS_MAX`] examined for a tenant).
    pub pending_counts_capped: bool,
    /// How long the oldest unexported change has waited (0 when none).
    pub seconds_behind: f64,
    /// Figures about every tenant at once (totals, errors naming any
    /// document, lags): the global status only.
    #[serde(flatten)]
    pub global: Option<GlobalExportStatus>,
}

/// The part of [`ExportStatus`] only the global status shows.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GlobalExportStatus {
    pub documents_exported_total: u64,
    pub sessions_exported_total: u64,
    /// Failed attempts since the server started.
    pub failures_total: u64,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
    pub last_export_at_ms: Option<u64>,
    /// Time from a document change being marked to its rows committing,
    /// over the last [`EXPORT_LAG_SAMPLES_MAX`] document exports (sync-log
    /// records are not counted: they are written when a connection ends,
    /// not when a sale is made).
    pub lag_ms_p50: Option<u64>,
    pub lag_ms_p99: Option<u64>,
    pub lag_ms_max: Option<u64>,
}

/// Shared between the exporter task and the status endpoint.
#[derive(Default)]
pub struct ExportState {
    inner: Mutex<StateInner>,
    documents_exported: AtomicU64,
    sessions_exported: AtomicU64,
    failures: AtomicU64,
}

#[derive(Default)]
struct StateInner {
    connected: bool,
    last_error: Option<(String, u64)>,
    last_export_at_ms: Option<u64>,
    lags_ms: std::collections::VecDeque<u64>,
}

impl ExportState {
    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Something was exported at `at_ms`; a document's export also counts
    /// its lag.
    fn exported(&self, lag_ms: Option<u64>, at_ms: u64) {
        let mut inner = self.lock();
        inner.last_export_at_ms = Some(at_ms);
        let Some(lag_ms) = lag_ms else {
            return;
        };
        if inner.lags_ms.len() == EXPORT_LAG_SAMPLES_MAX {
            inner.lags_ms.pop_front();
        }
        inner.lags_ms.push_back(lag_ms);
    }

    fn failed(&self, error: &ExporterError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.connected = false;
        inner.last_error = Some((error.to_string(), now_ms()));
    }

    /// One document could not be exported; the connection is fine.
    fn document_failed(&self, error: &ExporterError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.lock().last_error = Some((error.to_string(), now_ms()));
    }

    fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
    }
}

/// The export status `scope` may see: counters from the exporter, backlog
/// from the markers (a blocking scan; call it off the async runtime).
pub fn status(
    marks: &ExportMarks,
    state: &ExportState,
    scope: &Scope,
) -> Result<ExportStatus, StoreError> {
    let backlog = match (marks.enabled, scope.tenant()) {
        (false, _) => Backlog::default(),
        (true, None) => marks.backlog_all()?,
        (true, Some(tenant)) => {
            let sessions = SessionLog::new(Arc::clone(&marks.store));
            marks.backlog(
                |pending| match pending {
                    // A document with no (or an unreadable) ownership
                    // record is of no known tenant: the operator's only.
                    Pending::Document(id) => Ok(match owners::read(marks.store.as_ref(), &id) {
                        Ok(owner) => owner.is_some_and(|owner| owner.tenant == tenant),
                        Err(OwnerError::Store(error)) => return Err(error),
                        Err(_) => false,
                    }),
                    Pending::Session(id) => sessions.is_of_tenant(tenant, id),
                },
                EXPORT_STATUS_TENANT_MARKERS_MAX,
            )?
        }
    };
    let now = now_ms();
    let inner = state.lock();
    let global = scope.tenant().is_none().then(|| {
        let mut lags: Vec<u64> = inner.lags_ms.iter().copied().collect();
        lags.sort_unstable();
        let percentile = |p: usize| -> Option<u64> {
            let last = lags.len().checked_sub(1)?;
            lags.get(last * p / 100).copied()
        };
        GlobalExportStatus {
            documents_exported_total: state.documents_exported.load(Ordering::Relaxed),
            sessions_exported_total: state.sessions_exported.load(Ordering::Relaxed),
            failures_total: state.failures.load(Ordering::Relaxed),
            last_error: inner.last_error.as_ref().map(|(error, _)| error.clone()),
            last_error_at_ms: inner.last_error.as_ref().map(|(_, at)| *at),
            last_export_at_ms: inner.last_export_at_ms,
            lag_ms_p50: percentile(50),
            lag_ms_p99: percentile(99),
            lag_ms_max: lags.last().copied(),
        }
    });
    Ok(ExportStatus {
        enabled: marks.enabled,
        connected: inner.connected,
        tenant: scope.tenant().map(str::to_string),
        pending_documents: backlog.documents,
        pending_sessions: backlog.sessions,
        pending_counts_capped: backlog.capped,
        seconds_behind: backlog
            .oldest_ms
            .map_or(0.0, |oldest| now.saturating_sub(oldest) as f64 / 1_000.0),
        global,
    })
}

/// Starts the exporter task for `postgres_url`; it stops when `shutdown`
/// turns true.
pub fn spawn(
    postgres_url: String,
    timeout_ms: u64,
    store: Arc<dyn DocStore>,
    marks: Arc<ExportMarks>,
    state: Arc<ExportState>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let exporter = Exporter {
        postgres_url,
        timeout_ms,
        step_timeout_ms: timeout_ms,
        store: Arc::clone(&store),
        sessions: SessionLog::new(store),
        marks,
        state,
        client: None,
        cache: ParsedCache::default(),
        last_lag_log_ms: 0,
    };
    tokio::spawn(exporter.run(shutdown))
}

struct Exporter {
    postgres_url: String,
    /// `ServerConfig::postgres_timeout_ms`.
    timeout_ms: u64,
    /// What the next step may take: `timeout_ms`, grown after timeouts in
    /// a row (see [`next_step_timeout_ms`]).
    step_timeout_ms: u64,
    store: Arc<dyn DocStore>,
    sessions: SessionLog,
    marks: Arc<ExportMarks>,
    state: Arc<ExportState>,
    client: Option<tokio_postgres::Client>,
    cache: ParsedCache,
    last_lag_log_ms: u64,
}

/// Which markers [`Exporter::clear_markers`] clears: only documents' count
/// in the lag percentiles.
#[derive(Debug, Clone, Copy)]
enum Lagged {
    Documents,
    Sessions,
}

/// What one sweep did.
enum Sweep {
    /// Every marker seen was exported; `exported` of them.
    Done {
        exported: usize,
    },
    Failed(ExporterError),
}

impl Exporter {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        info!("export to PostgreSQL started");
        let mut delay_ms = EXPORT_RETRY_DELAY_MIN_MS;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait_ms = match self.sweep().await {
                Sweep::Done { exported } => {
                    delay_ms = EXPORT_RETRY_DELAY_MIN_MS;
                    self.step_timeout_ms = self.timeout_ms;
                    if exported > 0 {
                        // More may have arrived while we worked.
                        continue;
                    }
                    EXPORT_IDLE_SWEEP_MS
                }
                Sweep::Failed(error) => {
                    warn!(retry_in_ms = delay_ms, "export failed: {error}");
                    self.state.failed(&error);
                    if matches!(error, ExporterError::Timeout(_)) {
                        self.step_timeout_ms =
                            next_step_timeout_ms(self.step_timeout_ms, self.timeout_ms);
                    }
                    if matches!(error, ExporterError::Export(_) | ExporterError::Timeout(_)) {
                        // A Postgres error may have broken the session.
                        self.client = None;
                    }
                    let wait = delay_ms;
                    delay_ms = delay_ms.saturating_mul(2).min(EXPORT_RETRY_DELAY_MAX_MS);
                    wait
                }
            };
            tokio::select! {
                _ = self.marks.wake.notified(), if wait_ms == EXPORT_IDLE_SWEEP_MS => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                _ = shutdown.changed() => {}
            }
        }
        info!("export to PostgreSQL stopped");
    }

    async fn connected(&mut self) -> Result<&mut tokio_postgres::Client, ExporterError> {
        if self
            .client
            .as_ref()
            .is_some_and(|client| client.is_closed())
        {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client =
                within_timeout(self.step_timeout_ms, export::connect(&self.postgres_url)).await?;
            within_timeout(self.step_timeout_ms, export::migrate(&mut client)).await?;
            info!("export: connected to PostgreSQL");
            self.state.set_connected(true);
            self.client = Some(client);
        }
        match self.client.as_mut() {
            Some(client) => Ok(client),
            None => Err(ExporterError::Join("no client".to_string())),
        }
    }

    /// Exports every pending marker, page by page.
    async fn sweep(&mut self) -> Sweep {
        let mut exported = 0;
        let mut before: Option<Vec<u8>> = None;
        loop {
            let store = Arc::clone(&self.store);
            let cursor = before.clone();
            let page = tokio::task::spawn_blocking(move || {
                store.meta_scan_prefix_rev(
                    MARKER_PREFIX,
                    cursor.as_deref(),
                    EXPORT_MARKERS_PER_PAGE,
                )
            })
            .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => return Sweep::Failed(error.into()),
                Err(error) => return Sweep::Failed(ExporterError::Join(error.to_string())),
            };
            let Some((last, _)) = page.last() else {
                return Sweep::Done { exported };
            };
            before = Some(last.clone());
            let mut sessions = Vec::new();
            let mut documents = Vec::new();
            for (key, value) in page {
                match Pending::parse(&key) {
                    Some(Pending::Document(document_id)) => {
                        documents.push((document_id, key, value));
                    }
                    Some(Pending::Session(id)) => sessions.push((id, key, value)),
                    None => {
                        warn!(?key, "export: dropping an unreadable marker");
                        if let Err(error) = self.store.meta_remove(&key) {
                            return Sweep::Failed(error.into());
                        }
                    }
                }
            }
            if !documents.is_empty() {
                match self.export_documents(documents).await {
                    Ok(count) => exported += count,
                    Err(error) => return Sweep::Failed(error),
                }
            }
            if !sessions.is_empty() {
                let count = sessions.len();
                if let Err(error) = self.export_sessions(sessions).await {
                    return Sweep::Failed(error);
                }
                exported += count;
            }
            self.log_lag();
        }
    }

    /// Exports one page of marked documents: brings each parsed copy up to
    /// date, flushes the store once (so nothing exported can vanish from
    /// sled), builds the rows on a blocking thread, then commits each
    /// document's rows and heads in its own transaction. Returns how many
    /// were exported; a document that cannot be loaded keeps its marker and
    /// does not hold up the others.
    async fn export_documents(
        &mut self,
        documents: Vec<(DocumentId, Vec<u8>, Vec<u8>)>,
    ) -> Result<usize, ExporterError> {
        // The heads this exporter committed last are the database's,
        // unless someone else wrote them (then `apply` reports a conflict
        // and the next attempt asks the database): one query for the
        // documents not in the cache.
        let uncached: Vec<DocumentId> = documents
            .iter()
            .map(|(document_id, _, _)| *document_id)
            .filter(|document_id| !self.cache.knows_exported(document_id))
            .collect();
        let mut in_database = if uncached.is_empty() {
            std::collections::HashMap::new()
        } else {
            let timeout_ms = self.step_timeout_ms;
            let client = self.connected().await?;
            within_timeout(timeout_ms, export::exported_heads_many(client, &uncached)).await?
        };
        let mut work = Vec::with_capacity(documents.len());
        for (document_id, _, _) in &documents {
            let cached = self.cache.take(document_id);
            let previous = match cached.as_ref().and_then(|c| c.exported.clone()) {
                Some(heads) => Some(heads),
                None => in_database.remove(document_id),
            };
            work.push((*document_id, cached, previous));
        }
        let store = Arc::clone(&self.store);
        let loaded_at_ms = now_ms();
        let built = tokio::task::spawn_blocking(move || build_page(store.as_ref(), work))
            .await
            .map_err(|error| ExporterError::Join(error.to_string()))??;
        // Everything built commits in one transaction; if one document's
        // heads moved under us (someone else wrote them), each is applied
        // on its own and the conflicting ones wait for the next sweep.
        let mut ready = Vec::new();
        for ((document_id, key, marker), (built_id, previous, result)) in
            documents.into_iter().zip(built)
        {
            debug_assert_eq!(document_id, built_id);
            match result {
                Ok((export, parsed)) => {
                    ready.push((document_id, key, marker, previous, export, parsed))
                }
                Err(error) => {
                    warn!(%document_id, "export: cannot export this document: {error}");
                    self.state.document_failed(&error);
                }
            }
        }
        let batch: Vec<(&export::DocExport, Option<&[ChangeHash]>)> = ready
            .iter()
            .filter_map(|(_, _, _, previous, export, _)| {
                export.as_ref().map(|export| (export, previous.as_deref()))
            })
            .collect();
        crash_window!("export-before-commit", self.store);
        let timeout_ms = self.step_timeout_ms;
        let client = self.connected().await?;
        let mut conflicted = std::collections::HashSet::new();
        match within_timeout(timeout_ms, export::apply_many(client, &batch)).await {
            Ok(()) => {}
            Err(ExporterError::Export(ExportError::Conflict { .. })) => {
                for (export, previous) in &batch {
                    match within_timeout(timeout_ms, export::apply(client, export, *previous)).await
                    {
                        Ok(()) => {}
                        Err(ExporterError::Export(ExportError::Conflict {
                            document_id, ..
                        })) => {
                            warn!(%document_id, "export: its exported heads changed elsewhere; re-reading them");
                            conflicted.insert(document_id);
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            Err(error) => return Err(error),
        }
        debug!(documents = batch.len(), "exported a page");
        drop(batch);
        let mut exported = 0;
        let mut cleared = Vec::with_capacity(ready.len());
        for (document_id, key, marker, previous, export, parsed) in ready {
            if conflicted.contains(&document_id) {
                continue;
            }
            if let Some(mut parsed) = parsed {
                parsed.exported = match &export {
                    Some(export) => Some(export.heads.clone()),
                    None => previous,
                };
                self.cache.put(document_id, parsed);
            }
            self.state
                .documents_exported
                .fetch_add(1, Ordering::Relaxed);
            cleared.push((key, marker));
            exported += 1;
        }
        crash_window!("export-after-commit-before-clear", self.store);
        self.clear_markers(cleared, loaded_at_ms, Lagged::Documents)
            .await?;
        Ok(exported)
    }

    async fn export_sessions(
        &mut self,
        pending: Vec<(u64, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), ExporterError> {
        let log = self.sessions.clone();
        let loaded_at_ms = now_ms();
        let ids: Vec<u64> = pending.iter().map(|(id, _, _)| *id).collect();
        let sessions = tokio::task::spawn_blocking(move || {
            let mut sessions = Vec::with_capacity(ids.len());
            for id in ids {
                match log.get(id) {
                    Ok(Some(session)) => sessions.push(session),
                    // Pruned from the sync log before it was exported.
                    Ok(None) => {}
                    Err(error) => {
                        return Err(ExporterError::Session {
                            id,
                            reason: error.to_string(),
                        })
                    }
                }
            }
            Ok(sessions)
        })
        .await
        .map_err(|error| ExporterError::Join(error.to_string()))??;
        let timeout_ms = self.step_timeout_ms;
        let client = self.connected().await?;
        within_timeout(timeout_ms, export::apply_sessions(client, &sessions)).await?;
        self.state
            .sessions_exported
            .fetch_add(sessions.len() as u64, Ordering::Relaxed);
        let cleared = pending
            .into_iter()
            .map(|(_, key, marker)| (key, marker))
            .collect();
        self.clear_markers(cleared, loaded_at_ms, Lagged::Sessions)
            .await
    }

    /// The markers' rows are committed: clears them (on a blocking thread,
    /// see [`clear_marker`]) and, for documents, records their lags.
    async fn clear_markers(
        &self,
        cleared: Vec<(Vec<u8>, Vec<u8>)>,
        loaded_at_ms: u64,
        lagged: Lagged,
    ) -> Result<(), ExporterError> {
        let store = Arc::clone(&self.store);
        let firsts = tokio::task::spawn_blocking(move || {
            cleared
                .iter()
                .enumerate()
                .map(|(index, (key, marker))| {
                    if index == 1 {
                        // One marker of the batch cleared, the rest not.
                        crash_window!("export-clear-mid-batch", store);
                    }
                    clear_marker(store.as_ref(), key, marker, loaded_at_ms)?;
                    Ok(marker_first_ms(marker))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .map_err(|error| ExporterError::Join(error.to_string()))??;
        let now = now_ms();
        match lagged {
            Lagged::Documents => {
                for first in firsts {
                    let lag_ms = first.map_or(0, |first| now.saturating_sub(first));
                    self.state.exported(Some(lag_ms), now);
                }
            }
            Lagged::Sessions => self.state.exported(None, now),
        }
        Ok(())
    }

    fn log_lag(&mut self) {
        let now = now_ms();
        if now.saturating_sub(self.last_lag_log_ms) < EXPORT_LAG_LOG_INTERVAL_MS {
            return;
        }
        self.last_lag_log_ms = now;
        let inner = self.state.lock();
        if let Some(lag_ms) = inner.lags_ms.back() {
            info!(last_lag_ms = lag_ms, "export: catching up");
        }
    }
}

/// Removes a marker whose rows are committed, unless it was set again
/// meanwhile; then it waits only for the changes made after
/// `loaded_at_ms`, so its first-marked time moves up to then. Blocking.
fn clear_marker(
    store: &dyn DocStore,
    key: &[u8],
    marker: &[u8],
    loaded_at_ms: u64,
) -> Result<(), StoreError> {
    if store.meta_remove_if(key, marker)? {
        return Ok(());
    }
    if let Some(current) = store.meta_get(key)? {
        if marker_first_ms(&current).is_some_and(|first| first < loaded_at_ms) {
            let mut moved = current.clone();
            moved[..8].copy_from_slice(&loaded_at_ms.to_be_bytes());
            // Lost to a newer marker: that one is right as it is.
            store.meta_replace_if(key, &current, &moved)?;
        }
    }
    Ok(())
}

/// A document kept parsed between exports, with the chunk it was loaded
/// through and the heads last committed from it.
struct Parsed {
    doc: Automerge,
    last_chunk_seq: u64,
    exported: Option<Vec<ChangeHash>>,
    used: u64,
}

/// At most [`EXPORT_DOCS_CACHED_MAX`] parsed documents; the least recently
/// used goes first. A hot ledger is then parsed once, and each export reads
/// only the chunks appended since the last one.
#[derive(Default)]
struct ParsedCache {
    docs: std::collections::HashMap<DocumentId, Parsed>,
    clock: u64,
}

impl ParsedCache {
    /// Whether the cache holds the heads this exporter last committed for
    /// the document.
    fn knows_exported(&self, document_id: &DocumentId) -> bool {
        self.docs
            .get(document_id)
            .is_some_and(|parsed| parsed.exported.is_some())
    }

    fn take(&mut self, document_id: &DocumentId) -> Option<Parsed> {
        self.docs.remove(document_id)
    }

    fn put(&mut self, document_id: DocumentId, mut parsed: Parsed) {
        if self.docs.len() >= EXPORT_DOCS_CACHED_MAX {
            let oldest = self
                .docs
                .iter()
                .min_by_key(|(_, parsed)| parsed.used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.docs.remove(&oldest);
            }
        }
        self.clock += 1;
        parsed.used = self.clock;
        self.docs.insert(document_id, parsed);
    }
}

/// One document's export and its parsed copy, or why it failed.
type Built = Result<(Option<export::DocExport>, Option<Parsed>), ExporterError>;

/// Loads a page of documents, flushes once, builds each export (see
/// [`load_parsed`] and [`build_export`]). Fails only if the flush does.
#[allow(clippy::type_complexity)]
fn build_page(
    store: &dyn DocStore,
    work: Vec<(DocumentId, Option<Parsed>, Option<Vec<ChangeHash>>)>,
) -> Result<Vec<(DocumentId, Option<Vec<ChangeHash>>, Built)>, ExporterError> {
    let loaded: Vec<_> = work
        .into_iter()
        .map(|(document_id, cached, previous)| {
            let parsed = load_parsed(store, document_id, cached);
            (document_id, previous, parsed)
        })
        .collect();
    // What was read must be durable before anything is exported from it.
    store.flush()?;
    Ok(loaded
        .into_iter()
        .map(|(document_id, previous, parsed)| {
            let built = parsed.and_then(|parsed| match parsed {
                None => Ok((None, None)),
                Some(parsed) => build_export(document_id, parsed, previous.as_deref()),
            });
            (document_id, previous, built)
        })
        .collect())
}

/// Brings a document up to date from the store: only the chunks appended
/// since `cached` was loaded, or the whole document. `None`: not stored.
fn load_parsed(
    store: &dyn DocStore,
    document_id: DocumentId,
    cached: Option<Parsed>,
) -> Result<Option<Parsed>, ExporterError> {
    let load_error = |error: automerge::AutomergeError| ExporterError::Load {
        document_id,
        reason: error.to_string(),
    };
    let whole = |stored: ventas_storage::StoredDoc| -> Result<Parsed, ExporterError> {
        let doc =
            ventas_sync_protocol::stored::load_document(stored.snapshot.as_deref(), &stored.chunks)
                .map_err(load_error)?;
        Ok(Parsed {
            doc,
            last_chunk_seq: stored.last_chunk_seq,
            exported: None,
            used: 0,
        })
    };
    let Some(mut parsed) = cached else {
        return store.load(document_id.as_bytes())?.map(whole).transpose();
    };
    match store.load_after(document_id.as_bytes(), parsed.last_chunk_seq)? {
        None => Ok(None),
        Some(LoadedAfter::Whole(stored)) => whole(stored).map(Some),
        Some(LoadedAfter::Chunks {
            chunks,
            last_chunk_seq,
        }) => {
            for chunk in &chunks {
                parsed.doc.load_incremental(chunk).map_err(load_error)?;
            }
            parsed.last_chunk_seq = last_chunk_seq;
            Ok(Some(parsed))
        }
    }
}

/// The export of `parsed` since `since` (the heads last exported; a full
/// export if none, or if they are not in the document, e.g. the database
/// came from elsewhere); `None` when its heads are the exported ones.
fn build_export(document_id: DocumentId, parsed: Parsed, since: Option<&[ChangeHash]>) -> Built {
    let doc = &parsed.doc;
    let heads = doc.get_heads();
    let since = since.unwrap_or(&[]);
    if !since.is_empty() && same_heads(since, &heads) {
        return Ok((None, Some(parsed)));
    }
    let since: &[ChangeHash] = if since
        .iter()
        .all(|hash| doc.get_change_by_hash(hash).is_some())
    {
        since
    } else {
        &[]
    };
    let export = export::build_rows(&document_id, doc, since)?;
    Ok((Some(export), Some(parsed)))
}

fn same_heads(a: &[ChangeHash], b: &[ChangeHash]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use ventas_storage::SledStore;

    fn marks(enabled: bool) -> (Arc<dyn DocStore>, Arc<ExportMarks>) {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let marks = ExportMarks::open(Arc::clone(&store), enabled).expect("marks");
        (store, marks)
    }

    #[test]
    fn the_step_timeout_doubles_after_each_timeout_up_to_its_bound() {
        let mut timeout = 500;
        let mut seen = vec![timeout];
        for _ in 0..6 {
            timeout = next_step_timeout_ms(timeout, 500);
            seen.push(timeout);
        }
        assert_eq!(seen, [500, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
        assert_eq!(EXPORT_TIMEOUT_GROWTH_MAX * 500, 8_000);
        assert_eq!(next_step_timeout_ms(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn only_document_exports_count_in_the_lag_percentiles() {
        let (_store, marks) = marks(true);
        let state = ExportState::default();
        state.exported(Some(40), 1_000);
        state.exported(Some(10), 1_001);
        // A sync-log record written when a day-long connection ended.
        state.exported(None, 1_002);
        let status = status(&marks, &state, &Scope::All).expect("status");
        let status = status.global.expect("the global status");
        assert_eq!(status.last_export_at_ms, Some(1_002));
        assert_eq!(status.lag_ms_p50, Some(10));
        assert_eq!(status.lag_ms_max, Some(40));
    }

    #[test]
    fn a_tenants_status_counts_its_own_pending_documents_and_sessions_only() {
        let (store, marks) = marks(true);
        let state = ExportState::default();
        let tenant_doc = |n: u8, tenant: Option<&str>| {
            let doc = DocumentId::from_bytes([n; 16]);
            if let Some(tenant) = tenant {
                owners::record(store.as_ref(), &doc, &owners::DocOwner::plain(tenant))
                    .expect("owner");
            }
            marks.document_changed(&doc).expect("mark");
        };
        tenant_doc(1, Some("acme"));
        tenant_doc(2, Some("globex"));
        tenant_doc(3, Some("globex"));
        // No ownership record: of no known tenant.
        tenant_doc(4, None);
        let log = SessionLog::new(Arc::clone(&store)).with_export_marks(Arc::clone(&marks));
        for (id, tenant) in [(10, "acme"), (11, "acme"), (12, "globex")] {
            log.put(&crate::server::sessions::SyncSession {
                id,
                tenant: Some(tenant.to_string()),
                ..Default::default()
            })
            .expect("session");
        }
        let acme = status(&marks, &state, &Scope::Tenant("acme".into())).expect("status");
        assert_eq!((acme.pending_documents, acme.pending_sessions), (1, 2));
        assert_eq!(acme.tenant.as_deref(), Some("acme"));
        assert!(acme.global.is_none(), "no global figures for a tenant");
        let json = serde_json::to_value(&acme).expect("json");
        assert!(json.get("last_error").is_none(), "{json}");
        let globex = status(&marks, &state, &Scope::Tenant("globex".into())).expect("status");
        assert_eq!((globex.pending_documents, globex.pending_sessions), (2, 1));
        let all = status(&marks, &state, &Scope::All).expect("status");
        assert_eq!((all.pending_documents, all.pending_sessions), (4, 3));
        assert!(all.global.is_some());
    }

    #[test]
    fn marker_keys_round_trip() {
        let doc = DocumentId::from_bytes([7; 16]);
        for pending in [Pending::Document(doc), Pending::Session(42)] {
            assert_eq!(Pending::parse(&pending.key()), Some(pending));
        }
        assert_eq!(Pending::parse(b"export-pending/x"), None);
        assert_eq!(Pending::parse(b"export-pending/d123"), None);
    }

    #[test]
    fn a_document_changed_many_times_has_one_marker_with_its_first_time() {
        let (_store, marks) = marks(true);
        let doc = DocumentId::from_bytes([1; 16]);
        marks.document_changed(&doc).expect("mark");
        let first = marks.backlog_all().expect("backlog");
        marks.document_changed(&doc).expect("mark again");
        marks.session_written(9).expect("session");
        let backlog = marks.backlog_all().expect("backlog");
        assert_eq!((backlog.documents, backlog.sessions), (1, 1));
        assert_eq!(backlog.oldest_ms, first.oldest_ms);
    }

    #[test]
    fn a_marker_set_again_during_its_export_stays() {
        let (store, marks) = marks(true);
        let doc = DocumentId::from_bytes([2; 16]);
        marks.document_changed(&doc).expect("mark");
        let key = Pending::Document(doc).key();
        let seen = store.meta_get(&key).expect("get").expect("marker");
        marks
            .document_changed(&doc)
            .expect("changed during the export");
        assert!(!store.meta_remove_if(&key, &seen).expect("remove_if"));
        assert_eq!(marks.backlog_all().expect("backlog").documents, 1);
    }

    #[test]
    fn a_marker_set_again_during_an_export_waits_from_the_export_on() {
        let (store, marks) = marks(true);
        let doc = DocumentId::from_bytes([3; 16]);
        marks.document_changed(&doc).expect("mark");
        let key = Pending::Document(doc).key();
        let seen = store.meta_get(&key).expect("get").expect("marker");
        let first = marker_first_ms(&seen).expect("time");
        // Changed again while being exported: the marker keeps its first time.
        marks.document_changed(&doc).expect("mark again");
        let again = store.meta_get(&key).expect("get").expect("marker");
        assert_eq!(marker_first_ms(&again), Some(first));
        let loaded_at_ms = first + 5_000;
        clear_marker(store.as_ref(), &key, &seen, loaded_at_ms).expect("cleared");
        // Still pending, but only for what came after the export's load.
        let left = store.meta_get(&key).expect("get").expect("still marked");
        assert_eq!(marker_first_ms(&left), Some(loaded_at_ms));
        assert_eq!(left[8..], again[8..]);
    }

    #[test]
    fn disabled_marks_write_nothing_and_reenabling_marks_every_document() {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        for byte in 0..3u8 {
            store.append_chunk(&[byte; 16], b"chunk").expect("append");
        }
        let off = ExportMarks::open(Arc::clone(&store), false).expect("marks");
        off.document_changed(&DocumentId::from_bytes([0; 16]))
            .expect("mark");
        assert_eq!(store.meta_get(MARKING_KEY).expect("get"), None);
        let on = ExportMarks::open(Arc::clone(&store), true).expect("marks");
        assert_eq!(on.backlog_all().expect("backlog").documents, 3);
        // Marking stays continuous: a second start marks nothing new.
        for (key, value) in store
            .meta_scan_prefix_rev(MARKER_PREFIX, None, 10)
            .expect("scan")
        {
            assert!(store.meta_remove_if(&key, &value).expect("remove"));
        }
        let again = ExportMarks::open(Arc::clone(&store), true).expect("marks");
        assert_eq!(again.backlog_all().expect("backlog").documents, 0);
    }
}
