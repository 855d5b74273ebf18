//! The task that owns the [`Hub`] and carries out its effects.
//!
//! Connection tasks decode frames and send [`HubInput`]s over one bounded
//! channel; this task applies them to the hub one at a time, so every
//! document has a single writer. Effects become frames on each peer's
//! bounded outbound queue, chunk appends and compactions in the store, and
//! flush requests for the flusher thread. The flusher runs `DocStore::flush`
//! off the async runtime and reports back on a separate channel, which this
//! task polls first, so acknowledgements are never stuck behind a flood of
//! incoming frames.
//!
//! A peer whose outbound queue is full is slow: its kill switch is pulled and
//! its connection task closes the socket. Nothing else waits for it.
//!
//! Fair resources: each connection gets its [`ConnLimits`] from its
//! identity when it connects ([`Fairness`]): the change limits of its role,
//! and its tenant as the hub's [`QuotaGroup`] (connections without an
//! identity, the period keeper's and those of a server without
//! authentication, are [`QuotaGroup::Server`]). Loads from the store are
//! taken in turn from each group's queue, so a tenant asking for thousands
//! of documents delays another tenant's load by at most one of its own,
//! and one connection may have at most
//! [`Fairness::docs_loading_per_connection_max`] documents waiting to load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};
use ventas_storage::DocStore;
use ventas_sync_protocol::doc_sync::ChangeLimits;
use ventas_sync_protocol::hub::{
    ConnId, ConnLimits, ConnStats, Effect, Hub, HubConfig, LoadedDoc, ParsedDoc, QuotaGroup,
};
use ventas_sync_protocol::ids::DocumentId;
use ventas_sync_protocol::wire::{self, Message};

use super::access::{ActorBindings, CatalogIndex, ConnectionAccess, KeeperAccess, SharedRecords};
use super::auth::{Identity, Role};
use super::exporter::ExportMarks;
use super::owners::{OwnerRecords, Ownership};
use super::periods::KeeperRequest;
use super::review::{self, Review};
use crate::now_ms;

/// Delay before retrying a failed flush.
const FLUSH_RETRY_DELAY_MS: u64 = 100;

/// What a connection task tells the hub task.
#[derive(Debug)]
pub enum HubInput {
    Connect {
        conn: ConnId,
        /// Who authenticated; `None` (authentication off) may read and
        /// write every document.
        identity: Option<Identity>,
        outbound: mpsc::Sender<Outbound>,
        kill: oneshot::Sender<String>,
    },
    Message {
        conn: ConnId,
        message: Message,
    },
    DecodeFailed {
        conn: ConnId,
        reason: String,
    },
    Disconnect {
        conn: ConnId,
        stats: oneshot::Sender<Option<ConnStats>>,
    },
    /// The period keeper's session (a server-internal peer, see
    /// [`KeeperAccess`]): every document, its actors bound to the keeper.
    ConnectKeeper {
        conn: ConnId,
        outbound: mpsc::Sender<Outbound>,
        kill: oneshot::Sender<String>,
    },
    /// Close every connection, flush, and stop.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What the hub task hands a connection task.
#[derive(Debug)]
pub enum Outbound {
    /// One encoded wire message.
    Frame(Vec<u8>),
    /// Send a close frame with this reason after the frames before it.
    Close(String),
}

/// Documents read and parsed from the store at once, off the hub task.
pub const LOADS_IN_FLIGHT_MAX: usize = 4;

/// Documents one connection may have waiting to load, by default: a device
/// opening every document it may hold at once (`docs_per_peer_max`).
pub const DOCS_LOADING_PER_CONNECTION_MAX_DEFAULT: usize =
    ventas_sync_protocol::hub::DOCS_PER_PEER_MAX_DEFAULT;

/// Per-identity limits (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fairness {
    /// What one sync message of a seller or reporting credential may add.
    pub seller: ChangeLimits,
    /// What one sync message of an office credential may add.
    pub office: ChangeLimits,
    /// Documents one connection may have waiting to load.
    pub docs_loading_per_connection_max: usize,
}

impl Fairness {
    /// The change limits of a role. Reporting cannot write, so the smallest
    /// limits do; a role that syncs no documents gets them too.
    fn change_limits(&self, role: Role) -> ChangeLimits {
        match role {
            Role::Office => self.office,
            _ => self.seller,
        }
    }
}

/// A document read and parsed on a blocking thread.
#[derive(Debug)]
struct LoadDone {
    document_id: DocumentId,
    /// `Ok(None)`: not stored.
    parsed: Result<Option<ParsedDoc>, String>,
}

/// Reads a document from the store and parses it. Blocking.
fn load_parsed(store: &dyn DocStore, document_id: DocumentId) -> Result<Option<ParsedDoc>, String> {
    let Some(stored) = store
        .load(document_id.as_bytes())
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let loaded = LoadedDoc {
        snapshot: stored.snapshot,
        chunks: stored.chunks,
        last_chunk_seq: stored.last_chunk_seq,
    };
    loaded.parse(document_id).map(Some).map_err(|e| e.reason)
}

/// The document a message must have in memory to apply, if any.
fn needs_document(message: &Message) -> Option<DocumentId> {
    match message {
        Message::Request { document_id, .. } | Message::Sync { document_id, .. } => {
            Some(*document_id)
        }
        _ => None,
    }
}

/// What a review thread found in one document.
#[derive(Debug)]
struct ReviewDone {
    document_id: DocumentId,
    finding: Result<review::Finding, String>,
}

/// Loads a document from the store, makes what was read durable, and
/// reads it as business data (see [`review::examine`]). Blocking.
fn examine_stored(
    store: &dyn DocStore,
    document_id: DocumentId,
) -> Result<review::Finding, String> {
    let stored = store
        .load(document_id.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "not in the store".to_string())?;
    let doc =
        ventas_sync_protocol::stored::load_document(stored.snapshot.as_deref(), &stored.chunks)
            .map_err(|e| e.to_string())?;
    // Alerts are written from this reading: nothing in it may vanish.
    store.flush().map_err(|e| e.to_string())?;
    Ok(review::examine(&doc))
}

/// Reports from the flusher thread.
#[derive(Debug)]
enum FlushReport {
    Flushed { epoch: u64 },
    Failed { epoch: u64, reason: String },
}

struct ConnHandle {
    outbound: mpsc::Sender<Outbound>,
    kill: Option<oneshot::Sender<String>>,
    quota_group: QuotaGroup,
    /// Documents whose load this connection asked for, not done yet.
    loads: usize,
}

/// How the hub task runs, beside the hub's own configuration.
pub struct HubTaskSettings {
    /// Inputs queued for the hub task at most.
    pub inbox_messages_max: usize,
    /// Time between two ticks of the hub, in ms.
    pub tick_interval_ms: u64,
    /// Never fsync (benchmarks only).
    pub skip_flush: bool,
    /// Where a catalog that gained a seller is reported (the period
    /// keeper); `None`: nowhere.
    pub keeper: Option<mpsc::Sender<KeeperRequest>>,
    /// Counts the ticks that found every changed document reviewed.
    pub review_passes: watch::Sender<u64>,
}

/// Spawns the hub task and its flusher thread; returns the inbox.
pub fn spawn(
    hub_config: HubConfig,
    fairness: Fairness,
    store: Arc<dyn DocStore>,
    export_marks: Arc<ExportMarks>,
    settings: HubTaskSettings,
) -> (mpsc::Sender<HubInput>, tokio::task::JoinHandle<()>) {
    let HubTaskSettings {
        inbox_messages_max,
        tick_interval_ms,
        skip_flush,
        keeper,
        review_passes,
    } = settings;
    let (inbox_tx, inbox_rx) = mpsc::channel(inbox_messages_max);
    let (flush_request_tx, flush_request_rx) = std::sync::mpsc::channel::<u64>();
    let (flush_report_tx, flush_report_rx) = mpsc::unbounded_channel();
    let flusher_store = Arc::clone(&store);
    // At most one flush is in flight (the hub's invariant), so the request
    // channel never holds more than one item and the report channel more
    // than one report.
    std::thread::Builder::new()
        .name("ventas-flusher".to_string())
        .spawn(move || flusher(flusher_store, flush_request_rx, flush_report_tx, skip_flush))
        .map_err(|e| error!("cannot start flusher thread: {e}"))
        .ok();
    let (review_tx, review_rx) = mpsc::unbounded_channel();
    let (load_tx, load_rx) = mpsc::unbounded_channel();
    let records = SharedRecords {
        catalogs: CatalogIndex::shared(Arc::clone(&store)),
        actors: ActorBindings::shared(Arc::clone(&store), hub_config.server_actor.clone()),
        owners: OwnerRecords::shared(Arc::clone(&store)),
    };
    let task = HubTask {
        hub: Hub::new(hub_config),
        conns: HashMap::new(),
        flush_requests: flush_request_tx,
        review: Review::default(),
        review_passes,
        loading: HashMap::new(),
        loads_waiting: HashMap::new(),
        load_turns: std::collections::VecDeque::new(),
        fairness,
        tenant_groups: HashMap::new(),
        loads_in_flight: 0,
        loads_done: load_tx,
        reviews_done: review_tx,
        records,
        store,
        export_marks,
        keeper,
    };
    let join = tokio::spawn(task.run(
        inbox_rx,
        flush_report_rx,
        load_rx,
        review_rx,
        tick_interval_ms,
    ));
    (inbox_tx, join)
}

fn flusher(
    store: Arc<dyn DocStore>,
    requests: std::sync::mpsc::Receiver<u64>,
    reports: mpsc::UnboundedSender<FlushReport>,
    skip_flush: bool,
) {
    while let Ok(epoch) = requests.recv() {
        // Crash windows for tests/it/crash_points.rs (nothing in release).
        fail::fail_point!("flush-after-write-before-flush");
        let result = if skip_flush { Ok(()) } else { store.flush() };
        if result.is_ok() {
            fail::fail_point!("flush-after-flush-before-ack");
        }
        let report = match result {
            Ok(()) => FlushReport::Flushed { epoch },
            Err(error) => FlushReport::Failed {
                epoch,
                reason: error.to_string(),
            },
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

struct HubTask {
    hub: Hub,
    store: Arc<dyn DocStore>,
    conns: HashMap<ConnId, ConnHandle>,
    flush_requests: std::sync::mpsc::Sender<u64>,
    review: Review,
    /// Documents being loaded, with the messages waiting for each.
    loading: HashMap<DocumentId, Vec<(ConnId, Message)>>,
    /// Loads waiting for a free slot, per group, in arrival order.
    loads_waiting: HashMap<QuotaGroup, std::collections::VecDeque<DocumentId>>,
    /// Groups with loads waiting, in the order they get their next turn.
    load_turns: std::collections::VecDeque<QuotaGroup>,
    fairness: Fairness,
    /// Each tenant's quota group (numbered as first seen).
    tenant_groups: HashMap<String, u64>,
    loads_in_flight: usize,
    /// Where load threads send the parsed document.
    loads_done: mpsc::UnboundedSender<LoadDone>,
    /// Where review threads send what they found (at most
    /// `REVIEWS_IN_FLIGHT_MAX` outstanding, so unbounded is bounded).
    reviews_done: mpsc::UnboundedSender<ReviewDone>,
    /// Each tenant's catalog, which device each Automerge actor belongs
    /// to, and who each document belongs to: for the access policies.
    records: SharedRecords,
    /// Marks each persisted document for the export to PostgreSQL.
    export_marks: Arc<ExportMarks>,
    /// Counts the ticks that found every changed document reviewed (see
    /// [`Review::is_settled`]): a test waits on it instead of sleeping.
    review_passes: watch::Sender<u64>,
    /// Where a catalog that gained a seller is reported (the period
    /// keeper; `None` in tests of the hub task alone).
    keeper: Option<mpsc::Sender<KeeperRequest>>,
}

impl HubTask {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<HubInput>,
        mut flush_reports: mpsc::UnboundedReceiver<FlushReport>,
        mut loads_done: mpsc::UnboundedReceiver<LoadDone>,
        mut reviews_done: mpsc::UnboundedReceiver<ReviewDone>,
        tick_interval_ms: u64,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(tick_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown_done: Option<oneshot::Sender<()>> = None;
        loop {
            tokio::select! {
                biased;
                Some(report) = flush_reports.recv() => self.on_flush_report(report).await,
                Some(done) = loads_done.recv() => self.on_load_done(done),
                Some(done) = reviews_done.recv() => self.on_review_done(done),
                input = inbox.recv(), if shutdown_done.is_none() => match input {
                    Some(HubInput::Shutdown { done }) => {
                        let effects = self.hub.shutdown();
                        self.execute(effects);
                        shutdown_done = Some(done);
                        if !self.hub.flush_pending() { break; }
                    }
                    Some(input) => self.on_input(input),
                    None => break,
                },
                _ = tick.tick() => {
                    self.review_due();
                    if self.review.is_settled() {
                        self.review_passes.send_modify(|passes| *passes += 1);
                    }
                    let effects = self.hub.tick(now_ms());
                    self.execute(effects);
                }
            }
            if shutdown_done.is_some() && !self.hub.flush_pending() {
                break;
            }
        }
        if let Err(error) = self.store.flush() {
            error!("final flush failed: {error}");
        }
        if let Some(done) = shutdown_done {
            let _ = done.send(());
        }
        info!("hub stopped");
    }

    async fn on_flush_report(&mut self, report: FlushReport) {
        let effects = match report {
            FlushReport::Flushed { epoch } => {
                tracing::trace!(epoch, "flushed");
                self.hub.flushed(epoch, now_ms())
            }
            FlushReport::Failed { epoch, reason } => {
                error!("flush of epoch {epoch} failed, retrying: {reason}");
                tokio::time::sleep(Duration::from_millis(FLUSH_RETRY_DELAY_MS)).await;
                self.hub.flush_failed(epoch)
            }
        };
        self.execute(effects);
    }

    fn on_input(&mut self, input: HubInput) {
        match input {
            HubInput::Connect {
                conn,
                identity,
                outbound,
                kill,
            } => {
                let quota_group = match identity {
                    Some(identity) => {
                        let limits = self.limits_of(&identity);
                        let access = ConnectionAccess::new(identity, self.records.clone());
                        self.hub.connect_with(conn, Box::new(access), limits);
                        limits.quota_group
                    }
                    None => {
                        self.hub.connect(conn);
                        QuotaGroup::Server
                    }
                };
                self.conns.insert(
                    conn,
                    ConnHandle {
                        outbound,
                        kill: Some(kill),
                        quota_group,
                        loads: 0,
                    },
                );
            }
            HubInput::ConnectKeeper {
                conn,
                outbound,
                kill,
            } => {
                let access = KeeperAccess::new(self.records.clone());
                // The keeper is the server's own peer: the server's quota
                // group and its memory reserve.
                self.hub.connect_with_access(conn, Box::new(access));
                self.conns.insert(
                    conn,
                    ConnHandle {
                        outbound,
                        kill: Some(kill),
                        quota_group: QuotaGroup::Server,
                        loads: 0,
                    },
                );
            }
            HubInput::Message { conn, message } => {
                tracing::trace!(conn, kind = message.type_name(), doc = ?message.document_id(), "in");
                if let Some(document_id) = needs_document(&message) {
                    if let Some(waiting) = self.loading.get_mut(&document_id) {
                        if waiting.len() >= self.hub.config().doc_queue_messages_max {
                            let effects = self.hub.load_failed(
                                conn,
                                document_id,
                                "too many messages wait for it to load",
                            );
                            self.execute(effects);
                        } else {
                            waiting.push((conn, message));
                        }
                        return;
                    }
                }
                if let Some(document_id) = self.hub.doc_to_load(&message) {
                    self.load_for(conn, document_id, message);
                    return;
                }
                let effects = self.hub.receive(conn, message, now_ms());
                self.execute(effects);
            }
            HubInput::DecodeFailed { conn, reason } => {
                let effects = self.hub.decode_failed(conn, &reason);
                self.execute(effects);
            }
            HubInput::Disconnect { conn, stats } => {
                self.conns.remove(&conn);
                let _ = stats.send(self.hub.disconnect(conn));
            }
            HubInput::Shutdown { .. } => {}
        }
    }

    /// Sends the documents whose changes are durable and due for review
    /// (see [`review`]) to blocking threads: each loads the document from
    /// the store and reads it there, so a large ledger never holds the hub
    /// task up.
    fn review_due(&mut self) {
        let now = now_ms();
        let hub = &self.hub;
        let due = self
            .review
            .due(now, |id| hub.doc_is_durable(id), |id| hub.doc(id).is_some());
        for document_id in due {
            let store = Arc::clone(&self.store);
            let done = self.reviews_done.clone();
            tokio::task::spawn_blocking(move || {
                let finding = examine_stored(store.as_ref(), document_id);
                let _ = done.send(ReviewDone {
                    document_id,
                    finding,
                });
            });
        }
    }

    /// A review came back: its report is stored, and a stock document's
    /// alerts are written through the hub (idempotent, pushed to every
    /// subscriber).
    fn on_review_done(&mut self, done: ReviewDone) {
        let ReviewDone {
            document_id,
            finding,
        } = done;
        self.review.finished(&document_id);
        let finding = match finding {
            Ok(finding) => finding,
            Err(reason) => {
                warn!(%document_id, "cannot review: {reason}");
                return;
            }
        };
        let now = now_ms();
        if let Err(error) = self
            .review
            .report(self.store.as_ref(), document_id, &finding, now)
        {
            warn!(%document_id, "cannot store the violation report: {error}");
        }
        let Some((view, detected)) = &finding.stock else {
            return;
        };
        let at_ms = i64::try_from(now).unwrap_or(i64::MAX);
        let recorded = self.hub.change_local(document_id, now, |doc| {
            crate::domain::record_oversell_alerts(doc, view, detected, at_ms)
        });
        match recorded {
            Some((Ok(changes), effects)) => {
                if !changes.is_empty() {
                    warn!(
                        %document_id,
                        opened = ?changes.opened,
                        updated = ?changes.updated,
                        cleared = ?changes.cleared,
                        "oversell alerts"
                    );
                }
                self.execute(effects);
            }
            Some((Err(error), effects)) => {
                warn!(%document_id, "cannot record oversell alerts: {error}");
                self.execute(effects);
            }
            // Changed meanwhile, or left memory: reviewed again on a later
            // tick if it is still loaded (else when it next changes).
            None => self.review.touched(document_id),
        }
    }

    /// A catalog's location -> seller map decides sellers' access to stock
    /// documents, so the index follows every change to a document recorded
    /// as a catalog. (A document written without a policy, authentication
    /// off, gets its record here, from its `meta`.)
    fn catalog_changed(&mut self, document_id: DocumentId) {
        let Some(doc) = self.hub.doc(&document_id) else {
            return;
        };
        let owner = self
            .records
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .owner_of(&document_id, doc);
        match owner {
            Ok(Ownership::Owned(owner)) => {
                let seller_added = self
                    .records
                    .catalogs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .observe(document_id, doc, &owner);
                // A new seller's ledgers are the keeper's to create, now
                // rather than at its next pass; never wait for it here.
                if seller_added {
                    if let Some(keeper) = &self.keeper {
                        if keeper
                            .try_send(KeeperRequest::CatalogChanged(document_id))
                            .is_err()
                        {
                            debug!(%document_id, "the keeper's queue is full; its next pass adds the ledgers");
                        }
                    }
                }
            }
            Ok(Ownership::New | Ownership::Unowned) => {}
            Err(error) => warn!(%document_id, "cannot read the ownership record: {error}"),
        }
    }

    /// The limits of an authenticated connection: its role's change
    /// limits, its tenant's quota group.
    fn limits_of(&mut self, identity: &Identity) -> ConnLimits {
        let next = u64::try_from(self.tenant_groups.len()).unwrap_or(u64::MAX);
        let group = *self
            .tenant_groups
            .entry(identity.tenant.clone())
            .or_insert(next);
        let mut change_limits = self.fairness.change_limits(identity.role);
        change_limits.object_depth_max = self.hub.config().change_limits.object_depth_max;
        change_limits.doc_ops_max = self.hub.config().change_limits.doc_ops_max;
        ConnLimits {
            change_limits,
            quota_group: QuotaGroup::Group(group),
        }
    }

    /// `message` needs a document not in memory: it waits while the
    /// document is read, unless its connection already has its maximum
    /// of documents waiting to load.
    fn load_for(&mut self, conn: ConnId, document_id: DocumentId, message: Message) {
        let max = self.fairness.docs_loading_per_connection_max;
        let Some(handle) = self.conns.get_mut(&conn) else {
            return;
        };
        if handle.loads >= max {
            let reason = format!("this connection has {max} documents loading already; retry");
            let effects = self.hub.load_failed(conn, document_id, &reason);
            self.execute(effects);
            return;
        }
        handle.loads += 1;
        let group = handle.quota_group;
        // Parsed on a blocking thread; its messages wait.
        self.loading.insert(document_id, vec![(conn, message)]);
        self.start_load(document_id, group);
    }

    /// Reads and parses a document on a blocking thread (at most
    /// [`LOADS_IN_FLIGHT_MAX`] at once; the rest wait their group's turn).
    fn start_load(&mut self, document_id: DocumentId, group: QuotaGroup) {
        if self.loads_in_flight >= LOADS_IN_FLIGHT_MAX {
            let queue = self.loads_waiting.entry(group).or_default();
            if queue.is_empty() {
                self.load_turns.push_back(group);
            }
            queue.push_back(document_id);
            return;
        }
        self.loads_in_flight += 1;
        let store = Arc::clone(&self.store);
        let done = self.loads_done.clone();
        tokio::task::spawn_blocking(move || {
            let parsed = load_parsed(store.as_ref(), document_id);
            let _ = done.send(LoadDone {
                document_id,
                parsed,
            });
        });
    }

    /// A load came back: make room, hand the document to the hub, and apply
    /// the messages that waited for it, in their order.
    fn on_load_done(&mut self, done: LoadDone) {
        self.loads_in_flight = self.loads_in_flight.saturating_sub(1);
        self.start_next_load();
        let LoadDone {
            document_id,
            parsed,
        } = done;
        let waiting = self.loading.remove(&document_id).unwrap_or_default();
        let first_conn = waiting.first().map(|(conn, _)| *conn);
        if let Some(handle) = first_conn.and_then(|conn| self.conns.get_mut(&conn)) {
            handle.loads = handle.loads.saturating_sub(1);
        }
        let refuse = |task: &mut Self, reason: &str| {
            warn!(%document_id, "cannot load document: {reason}");
            for (conn, _) in &waiting {
                let effects = task.hub.load_failed(*conn, document_id, reason);
                task.execute(effects);
            }
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => return refuse(self, &reason),
        };
        let mut effects = Vec::new();
        let now = now_ms();
        // The slot is charged to the group of the connection that asked.
        let placed = self.hub.doc_parsed_for(
            first_conn.unwrap_or(0),
            document_id,
            parsed,
            now,
            &mut effects,
        );
        self.execute(effects);
        if let Err(no_room) = placed {
            return refuse(self, &no_room.to_string());
        }
        for (conn, message) in waiting {
            let effects = self.hub.receive(conn, message, now);
            self.execute(effects);
        }
    }

    /// Starts the waiting load of the group whose turn it is.
    fn start_next_load(&mut self) {
        let Some(group) = self.load_turns.pop_front() else {
            return;
        };
        let Some(queue) = self.loads_waiting.get_mut(&group) else {
            return;
        };
        let next = queue.pop_front();
        if queue.is_empty() {
            self.loads_waiting.remove(&group);
        } else {
            self.load_turns.push_back(group);
        }
        if let Some(document_id) = next {
            self.start_load(document_id, group);
        }
    }

    fn execute(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match &effect {
                Effect::Send { conn, message } => {
                    tracing::trace!(conn, kind = message.type_name(), "out")
                }
                Effect::Flush { epoch } => tracing::trace!(epoch, "flush"),
                Effect::Persist { .. } => tracing::trace!("persist"),
                _ => {}
            }
            match effect {
                Effect::Send { conn, message } => {
                    let frame = wire::encode(&message);
                    self.deliver(conn, Outbound::Frame(frame));
                }
                Effect::Close { conn, reason } => {
                    debug!(conn, "closing: {reason}");
                    self.deliver(conn, Outbound::Close(reason));
                }
                Effect::Persist { document_id, chunk } => {
                    self.review.touched(document_id);
                    match self.store.append_chunk(document_id.as_bytes(), &chunk) {
                        Ok(seq) => {
                            self.hub.chunk_persisted(&document_id, seq);
                            // Flushed with the chunk, so durable exactly
                            // when the change is.
                            if let Err(error) = self.export_marks.document_changed(&document_id) {
                                error!(%document_id, "cannot mark the change for export: {error}");
                            }
                            self.catalog_changed(document_id);
                        }
                        Err(error) => {
                            error!(%document_id, "cannot persist changes: {error}");
                            let effects = self.hub.persist_failed(document_id);
                            self.execute(effects);
                        }
                    }
                }
                Effect::Compact {
                    document_id,
                    snapshot,
                    covers_through_seq,
                } => {
                    fail::fail_point!("compact-before-store");
                    if let Err(error) =
                        self.store
                            .compact(document_id.as_bytes(), &snapshot, covers_through_seq)
                    {
                        // The chunks stay; compaction is an optimisation.
                        warn!(%document_id, "compaction failed: {error}");
                    }
                }
                Effect::Flush { epoch } => {
                    if self.flush_requests.send(epoch).is_err() {
                        error!("flusher thread is gone; epoch {epoch} cannot be made durable");
                    }
                }
            }
        }
    }

    /// Queues a frame for a peer; a full queue means a slow peer, which is
    /// disconnected rather than buffered.
    fn deliver(&mut self, conn: ConnId, outbound: Outbound) {
        let Some(handle) = self.conns.get_mut(&conn) else {
            return;
        };
        match handle.outbound.try_send(outbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(kill) = handle.kill.take() {
                    warn!(conn, "outbound queue full: disconnecting slow peer");
                    let _ = kill.send(format!(
                        "outbound queue full ({} messages): peer too slow",
                        handle.outbound.max_capacity()
                    ));
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
