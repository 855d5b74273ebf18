//! The period keeper: the server opens each month's documents itself.
//!
//! `docs/data-model.md` promises that next month's ledgers exist (and are
//! listed in the catalog's directory) before the month starts, so a device
//! offline on the 1st can still record sales, and that the server opens
//! each location's next stock document at the start of a month and carries
//! late movements into it. The [`spawn`]ed task keeps that promise.
//!
//! It is a server-internal peer, not a WebSocket client: a
//! [`DeviceCore`] wired straight to the hub task's inbox with
//! [`HubInput::ConnectKeeper`] (full access; its actors are bound to the
//! keeper, so no device writes as the keeper afterwards), joining as
//! `ventas-keeper-<storage id>`. It keeps no store of its own: it asks the
//! hub for the documents it needs, creates new ones with the domain
//! functions, syncs them until the hub acknowledged them (flushed), and
//! only then lists them in the catalog. A crash in between leaves at worst
//! an unlisted document, and the next pass creates another.
//!
//! ```text
//!  every check_interval_ms:
//!    for each tenant's catalog (metadata `catalog-of/<tenant>`, rotating):
//!      ledgers: current month, and next month from open_ahead_days before
//!               it starts, for every seller missing one -> create, ack, list
//!      stock:   per location with last month's stock listed:
//!               this month's missing -> open_next_stock_period, ack, list
//!               last month's changed -> carry_late_movements, ack
//! ```
//!
//! Between passes it answers [`KeeperRequest`]s, one at a time:
//!
//! - `CatalogChanged`: the hub task saw a catalog gain a seller; the keeper
//!   keeps that catalog at once (creates and lists the seller's ledgers),
//!   so a new seller can sell within a second, not at the next pass
//!   (within the pass budget, `documents_created_per_pass_max`).
//! - `Provision`: a new tenant ([`crate::provision`]): unless the tenant
//!   already has a catalog (then `TenantExists`), it creates every device,
//!   stock and ledger document, then the catalog listing them, each
//!   acknowledged by the hub before the next; a crash in between leaves at
//!   worst unlisted documents and no catalog, so provisioning again works.
//!   Being the one task that makes documents for the server, it never races
//!   a pass into a second ledger for the same seller.
//!
//! Work is bounded per pass ([`CATALOGS_PER_PASS_MAX`],
//! [`DOCUMENTS_CREATED_PER_PASS_MAX`]) and so is what it holds: one session
//! per catalog (the catalog and the ledgers it created this pass) and one
//! per location (its two stock documents), each dropped when done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use automerge::{Automerge, ChangeHash, ReadDoc};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use ventas_storage::DocStore;
use ventas_sync_protocol::device::{DeviceCore, DeviceEffect, Link};
use ventas_sync_protocol::hub::ConnId;
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire;

use super::access;
use super::hub_task::{HubInput, Outbound};
use crate::domain::{
    carry_late_movements, create_ledger_doc, open_next_stock_period, put_directory_entry,
    read_catalog, DocKey, DomainError, Period, TenantId,
};
use crate::provision::{self, TenantSpec};

/// Days before a month starts from which its ledgers are created.
pub const PERIOD_OPEN_AHEAD_DAYS_DEFAULT: u64 = 7;
/// Time between two passes of the keeper.
pub const PERIOD_CHECK_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Catalogs looked at in one pass; the next pass goes on after the last.
pub const CATALOGS_PER_PASS_MAX: usize = 100;
/// Documents (ledgers and stock) created in one pass, by default
/// (`ServerConfig::period_documents_per_pass_max`).
pub const DOCUMENTS_CREATED_PER_PASS_MAX: usize = 200;
/// Longest the keeper waits for the hub to answer one step (a fetch, an
/// acknowledgement) before it gives up on the pass.
pub const KEEPER_STEP_TIMEOUT_MS: u64 = 10_000;
/// Previous-month stock documents whose carried heads are remembered; past
/// it the memory starts afresh (carrying again is idempotent).
pub const CARRY_MARKS_MAX: usize = 10_000;

const MS_PER_DAY: u64 = 86_400_000;

/// Requests queued for the keeper at most; the hub drops a
/// `CatalogChanged` past it (the next pass does that work).
pub const KEEPER_REQUESTS_QUEUED_MAX: usize = 64;

/// Work asked of the keeper between its passes (see the module
/// documentation).
#[derive(Debug)]
pub enum KeeperRequest {
    /// A catalog gained a seller: create the seller's ledgers now.
    CatalogChanged(DocumentId),
    /// Create a new tenant's documents.
    Provision {
        spec: Box<TenantSpec>,
        reply: oneshot::Sender<Result<ProvisionedDocuments, KeeperError>>,
    },
}

/// The documents a provisioning created, by their directory key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedDocuments {
    pub catalog: DocumentId,
    pub documents: Vec<(DocKey, DocumentId)>,
}

/// Why a pass (or one catalog of it) stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("the hub task is gone")]
    HubGone,
    #[error("the hub closed the keeper's session: {0}")]
    Closed(String),
    #[error("no answer from the hub within {KEEPER_STEP_TIMEOUT_MS} ms ({0})")]
    Timeout(&'static str),
    #[error("the hub sent a frame the keeper cannot read: {0}")]
    Decode(String),
    #[error("sync: {0}")]
    Sync(#[from] ventas_sync_protocol::device::DeviceError),
    #[error("document {document_id}: {source}")]
    Domain {
        document_id: DocumentId,
        source: Box<DomainError>,
    },
    #[error("catalog {0} is not available on the server")]
    CatalogMissing(DocumentId),
    #[error("directory entry {key} holds {url:?}, not a document URL")]
    BadDirectoryEntry { key: String, url: String },
    #[error("the store: {0}")]
    Store(#[from] ventas_storage::StoreError),
    #[error("tenant {tenant} already has a catalog ({catalog})")]
    TenantExists { tenant: String, catalog: DocumentId },
    #[error("building the tenant's documents: {0}")]
    Build(Box<DomainError>),
    #[error("the keeper's worker thread failed: {0}")]
    Worker(String),
}

/// How the keeper runs; see the module documentation.
#[derive(Clone)]
pub struct KeeperSettings {
    pub open_ahead_days: u64,
    pub check_interval_ms: u64,
    pub message_bytes_max: usize,
    pub outbound_queue_messages_max: usize,
    /// Documents created in one pass at most.
    pub documents_created_per_pass_max: usize,
    /// The keeper's clock, in ms since the epoch (`crate::now_ms` in
    /// production; tests shift it).
    pub now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub catalogs: usize,
    pub ledgers_created: usize,
    pub stock_opened: usize,
    pub carried: usize,
}

impl PassReport {
    fn created(&self) -> usize {
        self.ledgers_created.saturating_add(self.stock_opened)
    }

    /// Whether the pass created or wrote anything.
    pub fn changed_anything(&self) -> bool {
        self.created() > 0 || self.carried > 0
    }
}

/// What the keeper reports and what it answers.
pub struct KeeperChannels {
    /// Passes that ended (see [`spawn`]).
    pub passes: watch::Sender<u64>,
    /// Work asked between passes ([`KeeperRequest`]).
    pub requests: mpsc::Receiver<KeeperRequest>,
}

/// Spawns the keeper; it runs a pass at once and then every
/// `check_interval_ms` until `shutdown` turns true. `passes` counts the
/// passes that ended (done or failed): a test waits for the next one
/// instead of sleeping through a few intervals.
pub fn spawn(
    hub: mpsc::Sender<HubInput>,
    next_conn: Arc<AtomicU64>,
    peer_id: PeerId,
    store: Arc<dyn DocStore>,
    settings: KeeperSettings,
    channels: KeeperChannels,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let KeeperChannels {
        passes,
        mut requests,
    } = channels;
    let mut keeper = Keeper {
        hub,
        next_conn,
        peer_id,
        store,
        settings,
        cursor: None,
        carried: HashMap::new(),
    };
    tokio::spawn(async move {
        loop {
            let pass = keeper.pass();
            let outcome = tokio::select! {
                outcome = pass => Some(outcome),
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            match outcome {
                None => return,
                Some(Ok(report)) if report.changed_anything() => {
                    info!(?report, "period keeper pass")
                }
                Some(Ok(report)) => debug!(?report, "period keeper pass"),
                Some(Err(error)) => warn!("period keeper pass stopped: {error}"),
            }
            passes.send_modify(|ended| *ended = ended.saturating_add(1));
            let next_pass = tokio::time::Instant::now()
                + Duration::from_millis(keeper.settings.check_interval_ms);
            loop {
                let request = tokio::select! {
                    _ = tokio::time::sleep_until(next_pass) => break,
                    request = requests.recv() => request,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                let Some(request) = request else {
                    // Nobody can ask any more; passes go on.
                    tokio::select! {
                        _ = tokio::time::sleep_until(next_pass) => break,
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                };
                tokio::select! {
                    _ = keeper.answer(request) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    })
}

struct Keeper {
    hub: mpsc::Sender<HubInput>,
    next_conn: Arc<AtomicU64>,
    peer_id: PeerId,
    store: Arc<dyn DocStore>,
    settings: KeeperSettings,
    /// The last catalog key of the previous pass, to go on after it.
    cursor: Option<Vec<u8>>,
    /// Previous-month stock document -> its heads when last carried.
    carried: HashMap<DocumentId, Vec<ChangeHash>>,
}

/// The keeper's view of the calendar at one moment.
struct Today {
    now: i64,
    current: Period,
    /// This month, and next month from `open_ahead_days` before it.
    ledger_periods: Vec<Period>,
}

impl Keeper {
    fn today(&self) -> Today {
        let now_ms = (self.settings.now_ms)();
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let current = Period::of_ms(now);
        let next = next_period(current);
        let ahead_ms = self.settings.open_ahead_days.saturating_mul(MS_PER_DAY);
        let next_start = u64::try_from(next.start_ms()).unwrap_or(0);
        let mut ledger_periods = vec![current];
        if now_ms.saturating_add(ahead_ms) >= next_start {
            ledger_periods.push(next);
        }
        Today {
            now,
            current,
            ledger_periods,
        }
    }

    async fn answer(&mut self, request: KeeperRequest) {
        match request {
            KeeperRequest::CatalogChanged(catalog_id) => {
                let Today {
                    now,
                    current,
                    ledger_periods,
                } = self.today();
                let mut report = PassReport::default();
                let kept = self
                    .keep_catalog(catalog_id, &ledger_periods, current, now, &mut report)
                    .await;
                match kept {
                    Ok(()) if report.changed_anything() => {
                        info!(%catalog_id, ?report, "period keeper kept a changed catalog")
                    }
                    Ok(()) => debug!(%catalog_id, "period keeper: nothing to do for the catalog"),
                    Err(error) => warn!(%catalog_id, "period keeper skips the catalog: {error}"),
                }
            }
            KeeperRequest::Provision { spec, reply } => {
                let tenant = spec.tenant.to_string();
                let outcome = self.provision(*spec).await;
                match &outcome {
                    Ok(done) => info!(tenant, catalog = %done.catalog,
                        documents = done.documents.len(), "provisioned a tenant"),
                    Err(error) => warn!(tenant, "provisioning failed: {error}"),
                }
                let _ = reply.send(outcome);
            }
        }
    }

    /// See the module documentation (`Provision`).
    async fn provision(&mut self, spec: TenantSpec) -> Result<ProvisionedDocuments, KeeperError> {
        // The store read and building up to a few thousand records into
        // documents run off the runtime.
        let store = Arc::clone(&self.store);
        let today = self.today();
        let built = tokio::task::spawn_blocking(move || {
            let tenant = spec.tenant.to_string();
            if let Some(catalog) = access::recorded_catalog_of(store.as_ref(), &tenant)? {
                return Err(KeeperError::TenantExists { tenant, catalog });
            }
            provision::build_documents(&spec, &today.ledger_periods, today.current, today.now)
                .map_err(|error| KeeperError::Build(Box::new(error)))
        })
        .await
        .map_err(|error| KeeperError::Worker(error.to_string()))??;
        let mut catalog = built.catalog;
        let mut documents = Vec::with_capacity(built.documents.len());
        // One session per document: a session holds what it created, and
        // a connection may hold `docs_per_peer_max` documents.
        for (key, doc) in built.documents {
            let mut session = self.session().await?;
            let created = session.create(doc).await;
            session.close().await;
            documents.push((key, created?));
        }
        let entries: Vec<(DocKey, String)> = documents
            .iter()
            .map(|(key, document_id)| (key.clone(), document_id.to_url()))
            .collect();
        provision::list_in_catalog(&mut catalog, &entries)
            .map_err(|error| KeeperError::Build(Box::new(error)))?;
        let mut session = self.session().await?;
        let created = session.create(catalog).await;
        session.close().await;
        Ok(ProvisionedDocuments {
            catalog: created?,
            documents,
        })
    }

    async fn pass(&mut self) -> Result<PassReport, KeeperError> {
        let Today {
            now,
            current,
            ledger_periods,
        } = self.today();
        let catalogs = access::recorded_catalogs(
            self.store.as_ref(),
            self.cursor.as_deref(),
            CATALOGS_PER_PASS_MAX,
        )?;
        let page_full = catalogs.len() >= CATALOGS_PER_PASS_MAX;
        // The next pass starts strictly after the last catalog this one
        // finished; a catalog cut short by the budget is looked at again.
        let mut resume_after = self.cursor.clone();
        let mut budget_spent = false;
        let mut report = PassReport::default();
        for (key, tenant, catalog_id) in catalogs {
            if report.created() >= self.settings.documents_created_per_pass_max {
                budget_spent = true;
                break;
            }
            report.catalogs += 1;
            let result = self
                .keep_catalog(catalog_id, &ledger_periods, current, now, &mut report)
                .await;
            match result {
                Ok(()) => {}
                Err(error @ (KeeperError::HubGone | KeeperError::Closed(_))) => return Err(error),
                Err(error) => {
                    warn!(tenant, %catalog_id, "period keeper skips the catalog: {error}")
                }
            }
            if report.created() >= self.settings.documents_created_per_pass_max {
                budget_spent = true;
                break;
            }
            resume_after = Some(key);
        }
        self.cursor = if budget_spent || page_full {
            resume_after
        } else {
            None
        };
        Ok(report)
    }

    async fn session(&self) -> Result<Session, KeeperError> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        Session::open(conn, self.peer_id.clone(), self.hub.clone(), &self.settings).await
    }

    async fn keep_catalog(
        &mut self,
        catalog_id: DocumentId,
        ledger_periods: &[Period],
        current: Period,
        now: i64,
        report: &mut PassReport,
    ) -> Result<(), KeeperError> {
        let mut session = self.session().await?;
        let result = self
            .keep_catalog_in(
                &mut session,
                catalog_id,
                ledger_periods,
                current,
                now,
                report,
            )
            .await;
        session.close().await;
        result
    }

    async fn keep_catalog_in(
        &mut self,
        session: &mut Session,
        catalog_id: DocumentId,
        ledger_periods: &[Period],
        current: Period,
        now: i64,
        report: &mut PassReport,
    ) -> Result<(), KeeperError> {
        let catalog = session
            .fetch(catalog_id)
            .await?
            .ok_or(KeeperError::CatalogMissing(catalog_id))?;
        let view = read_catalog(&catalog);
        let Some(meta) = view.meta.clone() else {
            warn!(%catalog_id, "period keeper: the catalog has no readable meta; skipped");
            return Ok(());
        };
        let tenant: TenantId = meta.tenant;

        // Ledgers: create every missing one, wait for the hub, then list.
        let mut listed = Vec::new();
        let mut failure = None;
        'sellers: for seller in view.sellers.keys() {
            for period in ledger_periods {
                let key = DocKey::ledger(seller, *period);
                if view.find_doc(&key).is_some() {
                    continue;
                }
                if report.created() >= self.settings.documents_created_per_pass_max {
                    break 'sellers;
                }
                let doc = create_ledger_doc(&tenant, seller, *period).map_err(|source| {
                    KeeperError::Domain {
                        document_id: catalog_id,
                        source: Box::new(source),
                    }
                })?;
                match session.create(doc).await {
                    Ok(document_id) => {
                        report.ledgers_created += 1;
                        listed.push((key, document_id));
                    }
                    Err(error) => {
                        failure = Some(error);
                        break 'sellers;
                    }
                }
            }
        }
        // What the hub acknowledged is listed even if a later one failed.
        session.list(catalog_id, &listed).await?;
        if let Some(error) = failure {
            return Err(error);
        }

        // Stock: open this month's document for each location that had
        // one last month, and carry what reached last month late.
        let previous = previous_period(current);
        for location in view.locations.keys() {
            let Some(previous_url) = view.find_doc(&DocKey::stock(location, previous)) else {
                continue;
            };
            let current_key = DocKey::stock(location, current);
            let ids = parse_url(&DocKey::stock(location, previous), previous_url).and_then(
                |previous_id| match view.find_doc(&current_key) {
                    Some(url) => Ok((previous_id, Some(parse_url(&current_key, url)?))),
                    None => Ok((previous_id, None)),
                },
            );
            let (previous_id, current_id) = match ids {
                Ok(ids) => ids,
                Err(error) => {
                    warn!(%location, "period keeper skips the location: {error}");
                    continue;
                }
            };
            if current_id.is_none()
                && report.created() >= self.settings.documents_created_per_pass_max
            {
                continue;
            }
            let mut stock_session = self.session().await?;
            let outcome = self
                .keep_stock(&mut stock_session, previous_id, current_id, now)
                .await;
            stock_session.close().await;
            match outcome {
                Ok(StockOutcome::Opened(document_id)) => {
                    report.stock_opened += 1;
                    session
                        .list(catalog_id, &[(current_key, document_id)])
                        .await?;
                }
                Ok(StockOutcome::Carried(count)) => report.carried += count,
                Ok(StockOutcome::Nothing) => {}
                Err(error @ (KeeperError::HubGone | KeeperError::Closed(_))) => return Err(error),
                Err(error) => warn!(%location, "period keeper skips the location: {error}"),
            }
        }
        Ok(())
    }

    async fn keep_stock(
        &mut self,
        session: &mut Session,
        previous_id: DocumentId,
        current_id: Option<DocumentId>,
        now: i64,
    ) -> Result<StockOutcome, KeeperError> {
        let Some(previous) = session.fetch(previous_id).await? else {
            return Ok(StockOutcome::Nothing);
        };
        let heads = previous.get_heads();
        match current_id {
            None => {
                let next = open_next_stock_period(&previous).map_err(domain_error(previous_id))?;
                let document_id = session.create(next).await?;
                self.mark_carried(previous_id, heads);
                Ok(StockOutcome::Opened(document_id))
            }
            Some(current_id) => {
                if self.carried.get(&previous_id) == Some(&heads) {
                    return Ok(StockOutcome::Nothing);
                }
                if session.fetch(current_id).await?.is_none() {
                    return Ok(StockOutcome::Nothing);
                }
                let carried = session
                    .change(current_id, |next| {
                        carry_late_movements(&previous, next, now)
                    })
                    .await?
                    .map_err(domain_error(current_id))?;
                self.mark_carried(previous_id, heads);
                Ok(StockOutcome::Carried(carried.len()))
            }
        }
    }

    fn mark_carried(&mut self, previous_id: DocumentId, heads: Vec<ChangeHash>) {
        if self.carried.len() >= CARRY_MARKS_MAX && !self.carried.contains_key(&previous_id) {
            self.carried.clear();
        }
        self.carried.insert(previous_id, heads);
    }
}

enum StockOutcome {
    Opened(DocumentId),
    Carried(usize),
    Nothing,
}

/// Wraps a domain error about `document_id`.
fn domain_error(document_id: DocumentId) -> impl Fn(DomainError) -> KeeperError {
    move |source| KeeperError::Domain {
        document_id,
        source: Box::new(source),
    }
}

fn parse_url(key: &DocKey, url: &str) -> Result<DocumentId, KeeperError> {
    DocumentId::parse(url).map_err(|_| KeeperError::BadDirectoryEntry {
        key: key.to_string(),
        url: url.to_string(),
    })
}

/// The month after `period`.
pub fn next_period(period: Period) -> Period {
    Period::of_ms(period.start_ms().saturating_add(32 * 86_400_000))
}

/// The month before `period`.
pub fn previous_period(period: Period) -> Period {
    Period::of_ms(period.start_ms().saturating_sub(1))
}

/// One connection of the keeper to the hub: a [`DeviceCore`] whose frames
/// go straight to the hub's inbox and come back on a bounded queue.
struct Session {
    conn: ConnId,
    core: DeviceCore,
    hub: mpsc::Sender<HubInput>,
    outbound: mpsc::Receiver<Outbound>,
    kill: oneshot::Receiver<String>,
    message_bytes_max: usize,
}

impl Session {
    async fn open(
        conn: ConnId,
        peer_id: PeerId,
        hub: mpsc::Sender<HubInput>,
        settings: &KeeperSettings,
    ) -> Result<Self, KeeperError> {
        let (outbound_tx, outbound) = mpsc::channel(settings.outbound_queue_messages_max);
        let (kill_tx, kill) = oneshot::channel();
        hub.send(HubInput::ConnectKeeper {
            conn,
            outbound: outbound_tx,
            kill: kill_tx,
        })
        .await
        .map_err(|_| KeeperError::HubGone)?;
        let mut session = Self {
            conn,
            core: DeviceCore::new(peer_id, None),
            hub,
            outbound,
            kill,
            message_bytes_max: settings.message_bytes_max,
        };
        match session.join().await {
            Ok(()) => Ok(session),
            Err(error) => {
                session.close().await;
                Err(error)
            }
        }
    }

    async fn join(&mut self) -> Result<(), KeeperError> {
        let effects = self.core.connected();
        self.carry_out(effects).await?;
        self.pump_until("join", |core| matches!(core.link(), Link::Ready { .. }))
            .await
    }

    /// The document as the hub holds it, or `None` if it has none.
    async fn fetch(&mut self, document_id: DocumentId) -> Result<Option<Automerge>, KeeperError> {
        let effects = self.core.add_doc(document_id, Automerge::new());
        self.carry_out(effects).await?;
        self.pump_until("fetch", |core| {
            core.is_unavailable(&document_id) || holds_all_the_server_has(core, &document_id)
        })
        .await?;
        if self.core.is_unavailable(&document_id) {
            return Ok(None);
        }
        // An empty document (created, never written) is as good as none.
        Ok(self
            .core
            .doc(&document_id)
            .filter(|doc| !doc.get_heads().is_empty())
            .cloned())
    }

    /// Creates `doc` on the hub under a fresh id; returns once the hub
    /// acknowledged it (flushed).
    async fn create(&mut self, doc: Automerge) -> Result<DocumentId, KeeperError> {
        let document_id = DocumentId::from_bytes(rand::random());
        let effects = self.core.add_doc(document_id, doc);
        self.carry_out(effects).await?;
        self.pump_until("create", |core| core.is_synced(&document_id))
            .await?;
        debug!(%document_id, "period keeper created a document");
        Ok(document_id)
    }

    /// Changes a fetched document and waits for the hub's acknowledgement.
    async fn change<R>(
        &mut self,
        document_id: DocumentId,
        change: impl FnOnce(&mut Automerge) -> R,
    ) -> Result<R, KeeperError> {
        let Some((result, effects)) = self.core.change(&document_id, change) else {
            return Err(KeeperError::CatalogMissing(document_id));
        };
        self.carry_out(effects).await?;
        self.pump_until("acknowledge", |core| core.is_synced(&document_id))
            .await?;
        Ok(result)
    }

    /// Lists acknowledged documents in the catalog's directory.
    async fn list(
        &mut self,
        catalog_id: DocumentId,
        entries: &[(DocKey, DocumentId)],
    ) -> Result<(), KeeperError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.change(catalog_id, |catalog| {
            entries.iter().try_for_each(|(key, document_id)| {
                put_directory_entry(catalog, key, &document_id.to_url())
            })
        })
        .await?
        .map_err(|source| KeeperError::Domain {
            document_id: catalog_id,
            source: Box::new(source),
        })?;
        for (key, document_id) in entries {
            info!(%key, %document_id, "period keeper listed a document");
        }
        Ok(())
    }

    async fn carry_out(&mut self, effects: Vec<DeviceEffect>) -> Result<(), KeeperError> {
        for effect in effects {
            match effect {
                DeviceEffect::Send(message) => self
                    .hub
                    .send(HubInput::Message {
                        conn: self.conn,
                        message,
                    })
                    .await
                    .map_err(|_| KeeperError::HubGone)?,
                DeviceEffect::ServerError { message } => {
                    warn!("the hub told the period keeper: {message}")
                }
                // Nothing is stored here, and nobody subscribes.
                DeviceEffect::Persist { .. }
                | DeviceEffect::Changed { .. }
                | DeviceEffect::Unavailable { .. } => {}
            }
        }
        Ok(())
    }

    /// Feeds the hub's frames to the core until `done` holds.
    async fn pump_until(
        &mut self,
        step: &'static str,
        done: impl Fn(&DeviceCore) -> bool,
    ) -> Result<(), KeeperError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(KEEPER_STEP_TIMEOUT_MS);
        while !done(&self.core) {
            let item = tokio::select! {
                item = self.outbound.recv() => item,
                reason = &mut self.kill => {
                    return Err(KeeperError::Closed(reason.unwrap_or_default()));
                }
                _ = tokio::time::sleep_until(deadline) => return Err(KeeperError::Timeout(step)),
            };
            match item {
                Some(Outbound::Frame(bytes)) => {
                    let message = wire::decode(&bytes, self.message_bytes_max)
                        .map_err(|error| KeeperError::Decode(error.to_string()))?;
                    let effects = self.core.receive(message)?;
                    self.carry_out(effects).await?;
                }
                Some(Outbound::Close(reason)) => return Err(KeeperError::Closed(reason)),
                None => return Err(KeeperError::HubGone),
            }
        }
        Ok(())
    }

    async fn close(self) {
        let (stats, _) = oneshot::channel();
        let _ = self
            .hub
            .send(HubInput::Disconnect {
                conn: self.conn,
                stats,
            })
            .await;
    }
}

/// Whether the core holds every change the hub reported for the document
/// (a fetched document is complete; the hub may hold an empty one).
fn holds_all_the_server_has(core: &DeviceCore, document_id: &DocumentId) -> bool {
    let Some(doc) = core.doc(document_id) else {
        return false;
    };
    let Some(server_heads) = core.server_heads(document_id) else {
        return false;
    };
    (server_heads.is_empty() || !doc.get_heads().is_empty())
        && server_heads
            .iter()
            .all(|head| doc.get_change_by_hash(head).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_and_previous_periods_cross_the_year() {
        let december = Period::parse("2026-12").expect("period");
        let january = Period::parse("2027-01").expect("period");
        assert_eq!(next_period(december), january);
        assert_eq!(previous_period(january), december);
        let february = Period::parse("2028-02").expect("period");
        assert_eq!(next_period(february), Period::parse("2028-03").expect("p"));
    }
}
