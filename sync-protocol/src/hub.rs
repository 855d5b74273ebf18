//! The server's sync core: many peers, many documents, no I/O.
//!
//! A [`Hub`] owns the in-memory documents and one [`PeerDocSync`] per
//! (connection, document). The I/O layer feeds it decoded messages, storage
//! results and the current time, and carries out the [`Effect`]s it returns,
//! in order.
//!
//! # Acknowledged means durable
//!
//! The hub never generates a sync message from a document that holds changes
//! not yet flushed to disk. When a message adds changes, the hub emits
//! [`Effect::Persist`] (the new changes as one chunk) and, if no flush is in
//! flight, [`Effect::Flush`] for the current *epoch*. Until the I/O layer
//! reports [`Hub::flushed`] for that epoch, further messages for the same
//! document wait in a bounded per-document queue, and no sync message for it
//! leaves. Writes to other documents during the flush join the next epoch:
//! one fsync covers every document and peer that wrote meanwhile (group
//! commit), and a hot document cannot starve because its queue is applied
//! as one batch after each flush.
//!
//! # Documents in memory
//!
//! A message for a document not in memory makes [`Hub::doc_to_load`] name it;
//! the I/O layer reads it from storage and hands it over with
//! [`Hub::doc_loaded`] before passing the message to [`Hub::receive`].
//! [`Hub::tick`] evicts documents nobody has open after an idle period and
//! keeps at most [`HubConfig::docs_in_memory_max`] documents loaded.
//!
//! # Memory slots and quota groups
//!
//! Only a document with content holds one of the
//! [`HubConfig::docs_in_memory_max`] *slots*. A document that does not exist
//! (a `request` answered `doc-unavailable`) stays in memory only as long as
//! a peer has it open, as an empty placeholder that holds no slot, so that
//! peer hears of it if someone creates it; nobody holding it, the next
//! [`Hub::tick`] drops it. Requests for random ids therefore cost each
//! connection at most [`HubConfig::docs_per_peer_max`] small placeholders and
//! never lock other peers out of memory.
//!
//! The I/O layer puts each connection in a [`QuotaGroup`] ([`ConnLimits`],
//! given at [`Hub::connect_with`]); the hub knows nothing of what a group
//! is (the server uses one per tenant). A slot is charged to the group of
//! the connection that loaded or created the document, and one group holds
//! at most [`HubConfig::docs_held_per_group_max`] slots: past it its own
//! least recently used idle document is evicted, or, if all of its documents
//! are open, the load or creation is refused to that peer alone. The last
//! [`HubConfig::docs_in_memory_reserved_for_server`] slots are kept for
//! [`QuotaGroup::Server`] connections (the server's own peers, such as the
//! period keeper), so no group can starve them.
//!
//! The hub only ever sends a document to a peer that asked for it (sent a
//! `request` or `sync` for it); it never announces documents.
//!
//! # Access
//!
//! Each connection carries an [`AccessPolicy`], supplied by the I/O layer at
//! [`Hub::connect_with_access`] (the plain [`Hub::connect`] allows
//! everything). The hub knows nothing of tenants or roles: before it
//! subscribes a peer to a document and before it applies any message, it
//! asks the policy for an [`Access`] to that document as it stands in
//! memory. [`Access::Hidden`] is answered with `doc-unavailable`, exactly as
//! for a document that does not exist, and the peer is not subscribed.
//! [`Access::Read`] serves the document but never applies a change from the
//! peer: a sync message that carries changes gets an `error` message (not a
//! close), is applied without its changes (so the sync state still learns
//! the peer's heads), and is counted in [`ConnStats::writes_denied`].
//! Where the access is [`Access::ReadWrite`], the policy also sees what the
//! message's *new* changes do ([`AccessPolicy::admit_changes`], a
//! [`NewChanges`]: their actors, the root keys they write under, the
//! document they create) and may refuse them the same way; the server uses
//! this to bind each actor to one device, to record who a new document
//! belongs to, and to freeze a document's `meta` after its creation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use automerge::{ActorId, Automerge, ChangeHash};

use crate::doc_sync::{ChangeLimits, PeerDocSync, SyncError};
pub use crate::doc_sync::{Denial, NewChanges};
use crate::ids::{DocumentId, PeerId, StorageId};
use crate::wire::{Message, PeerMetadata, PROTOCOL_VERSION};

/// Identifies one connection; chosen by the I/O layer, unique per process.
pub type ConnId = u64;

/// Defaults for [`HubConfig`], units last.
pub const DOCS_PER_PEER_MAX_DEFAULT: usize = 1_024;
pub const DOCS_IN_MEMORY_MAX_DEFAULT: usize = 4_096;
pub const DOC_IDLE_EVICT_AFTER_MS_DEFAULT: u64 = 60_000;
pub const DOC_QUEUE_MESSAGES_MAX_DEFAULT: usize = 1_024;
pub const COMPACT_AFTER_CHUNKS_DEFAULT: u64 = 256;
/// Decoded change bytes one sync message may carry.
pub const CHANGE_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Operations one sync message may carry (a JS string is one op per
/// character, so this also bounds text pasted into one message).
pub const CHANGE_OPS_MAX_DEFAULT: usize = 2_000_000;
/// Operations one document may hold: about 15 months of a very busy
/// seller's sales (65,100 operations a month, see the server's
/// `config.rs`), or a catalog of 200,000 products (5 operations each).
/// Bounds the time and memory of loading one document.
pub const DOC_OPS_MAX_DEFAULT: usize = 1_000_000;
/// Levels objects may nest (an object in the root is at level 1). Readers
/// that recurse (automerge's JS materialisation, `hydrate`, our domain
/// readers) must not be handed thousands; the domain documents need 4 (a sale line:
/// `sales` > sale > `lines` > line).
pub const OBJECT_DEPTH_MAX_DEFAULT: usize = 100;
/// Slots one [`QuotaGroup::Group`] may hold (half the default memory: two
/// busy tenants may share a server, one hostile tenant cannot fill it).
pub const DOCS_HELD_PER_GROUP_MAX_DEFAULT: usize = DOCS_IN_MEMORY_MAX_DEFAULT / 2;
/// Slots only [`QuotaGroup::Server`] connections may take: the period keeper
/// holds one catalog and the documents it creates in one pass (200 at most
/// by default) at a time, and a pass gives up on a catalog it cannot load.
pub const DOCS_IN_MEMORY_RESERVED_FOR_SERVER_DEFAULT: usize = 256;
/// Ephemeral (sender, session) pairs remembered per document for
/// de-duplication; past it the memory is cleared.
pub const EPHEMERAL_SESSIONS_PER_DOC_MAX: usize = 1_024;

/// Denied writes remembered per connection for the sync log (the count
/// goes on past it).
pub const DENIALS_KEPT_MAX: usize = 32;

/// What a connection may do with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// As if the document did not exist: `doc-unavailable`, no subscription.
    Hidden,
    /// Served and kept up to date; changes from the peer are refused.
    Read,
    /// Served, and the peer's changes are applied.
    ReadWrite,
}

/// Decides a connection's [`Access`] to a document, given the document as
/// the server holds it (possibly empty: not stored yet). Implemented by the
/// I/O layer, one value per connection; asked again for every message, so
/// a document can become visible once its content arrives.
pub trait AccessPolicy: std::fmt::Debug + Send {
    fn access(&mut self, document_id: &DocumentId, doc: &Automerge) -> Access;

    /// Whether the peer may add the new changes of one of its sync
    /// messages: the changes the document does not hold yet (changes the
    /// server already has are not new, whoever relays them), described by
    /// [`NewChanges`] (their actors, the root keys they write under, and
    /// for a document that holds nothing yet the document they create).
    /// Asked only where [`AccessPolicy::access`] gave
    /// [`Access::ReadWrite`], right before the message applies, and only if
    /// it has new changes. A [`Denial`] keeps every change of the message
    /// out, exactly like a write to a read-only document: an `error` to the
    /// peer, counted in [`ConnStats`], the session goes on. The default
    /// admits everything.
    fn admit_changes(
        &mut self,
        _document_id: &DocumentId,
        _changes: &NewChanges<'_>,
    ) -> Result<(), Denial> {
        Ok(())
    }
}

/// Whose memory quota a connection's documents count against (see the
/// module documentation). Opaque to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaGroup {
    /// The server's own peers (and, on a server without authentication,
    /// every peer): no group quota, and the reserved slots are theirs too.
    Server,
    /// Peers sharing one quota of [`HubConfig::docs_held_per_group_max`]
    /// slots (the server uses one group per tenant).
    Group(u64),
}

/// What one connection may do, chosen by the I/O layer when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// What one sync message of this peer may add.
    pub change_limits: ChangeLimits,
    /// Whose quota the documents it loads or creates count against.
    pub quota_group: QuotaGroup,
}

/// Why a document could not get a memory slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    #[error("the server holds its maximum of {max} documents in memory, all in use")]
    Server { max: usize },
    #[error("this tenant holds its maximum of {max} documents in memory, all in use")]
    Group { max: usize },
}

/// The policy of [`Hub::connect`]: every document, read and write.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl AccessPolicy for AllowAll {
    fn access(&mut self, _document_id: &DocumentId, _doc: &Automerge) -> Access {
        Access::ReadWrite
    }
}

/// Limits and identity of a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The peer id the server announces in `peer` messages.
    pub server_peer_id: PeerId,
    /// The actor of the server's own changes ([`Hub::change_local`]);
    /// by default the server peer id's bytes, so it stays the same across
    /// restarts and an access policy can reserve it.
    pub server_actor: ActorId,
    /// The server's storage id, announced in `peer` metadata.
    pub storage_id: Option<StorageId>,
    /// Documents one connection may have open; past it the peer gets an
    /// error and is disconnected.
    pub docs_per_peer_max: usize,
    /// Documents with content held in memory at once (slots; see the
    /// module documentation).
    pub docs_in_memory_max: usize,
    /// Slots the connections of one [`QuotaGroup::Group`] may hold.
    pub docs_held_per_group_max: usize,
    /// Slots of `docs_in_memory_max` that only [`QuotaGroup::Server`]
    /// connections may take.
    pub docs_in_memory_reserved_for_server: usize,
    /// A document nobody has open is evicted after this idle time.
    pub doc_idle_evict_after_ms: u64,
    /// Messages that may wait on one document while its flush is in flight.
    pub doc_queue_messages_max: usize,
    /// Incremental chunks after which a document is compacted to a snapshot.
    pub compact_after_chunks: u64,
    /// What one incoming sync message may add; past it the peer gets an
    /// error and is disconnected, and nothing of the message applies.
    pub change_limits: ChangeLimits,
}

impl HubConfig {
    pub fn new(server_peer_id: PeerId) -> Self {
        Self {
            server_actor: ActorId::from(server_peer_id.as_str().as_bytes()),
            server_peer_id,
            storage_id: None,
            docs_per_peer_max: DOCS_PER_PEER_MAX_DEFAULT,
            docs_in_memory_max: DOCS_IN_MEMORY_MAX_DEFAULT,
            docs_held_per_group_max: DOCS_HELD_PER_GROUP_MAX_DEFAULT,
            docs_in_memory_reserved_for_server: DOCS_IN_MEMORY_RESERVED_FOR_SERVER_DEFAULT,
            doc_idle_evict_after_ms: DOC_IDLE_EVICT_AFTER_MS_DEFAULT,
            doc_queue_messages_max: DOC_QUEUE_MESSAGES_MAX_DEFAULT,
            compact_after_chunks: COMPACT_AFTER_CHUNKS_DEFAULT,
            change_limits: ChangeLimits {
                change_bytes_max: CHANGE_BYTES_MAX_DEFAULT,
                change_ops_max: CHANGE_OPS_MAX_DEFAULT,
                object_depth_max: OBJECT_DEPTH_MAX_DEFAULT,
                doc_ops_max: DOC_OPS_MAX_DEFAULT,
            },
        }
    }
}

/// What the I/O layer must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send a message on a connection.
    Send { conn: ConnId, message: Message },
    /// Close the connection once everything queued before is sent.
    Close { conn: ConnId, reason: String },
    /// Append a chunk of changes to the document's storage (not yet
    /// durable), then report its sequence number with
    /// [`Hub::chunk_persisted`].
    Persist {
        document_id: DocumentId,
        chunk: Vec<u8>,
    },
    /// Replace the document's stored chunks up to `covers_through_seq` by
    /// this snapshot, atomically.
    Compact {
        document_id: DocumentId,
        snapshot: Vec<u8>,
        covers_through_seq: u64,
    },
    /// Make every write so far durable, then call [`Hub::flushed`] with
    /// this epoch (or [`Hub::flush_failed`]).
    Flush { epoch: u64 },
}

/// A document as read from storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedDoc {
    pub snapshot: Option<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
    pub last_chunk_seq: u64,
}

impl LoadedDoc {
    /// Parses the stored snapshot and chunks (O(document); can run on any
    /// thread).
    pub fn parse(self, document_id: DocumentId) -> Result<ParsedDoc, LoadError> {
        let doc =
            crate::stored::load_document(self.snapshot.as_deref(), &self.chunks).map_err(|e| {
                LoadError {
                    document_id,
                    reason: e.to_string(),
                }
            })?;
        Ok(ParsedDoc {
            doc,
            last_chunk_seq: self.last_chunk_seq,
            chunks_since_snapshot: self.chunks.len() as u64,
        })
    }
}

/// A stored document, parsed: what [`Hub::doc_parsed`] takes.
#[derive(Debug)]
pub struct ParsedDoc {
    pub doc: Automerge,
    pub last_chunk_seq: u64,
    pub chunks_since_snapshot: u64,
}

/// A stored document that automerge cannot load.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("stored document {document_id} is corrupt: {reason}")]
pub struct LoadError {
    pub document_id: DocumentId,
    pub reason: String,
}

/// What one connection did, for the sync log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub peer_id: Option<PeerId>,
    pub documents: BTreeSet<DocumentId>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub changes_in: u64,
    pub changes_out: u64,
    /// Sync messages whose changes were refused (the peer may only read).
    pub writes_denied: u64,
    /// The first [`DENIALS_KEPT_MAX`] denials, as `"<document>: <reason>"`.
    pub denials: Vec<String>,
}

#[derive(Debug)]
struct Conn {
    peer_id: Option<PeerId>,
    docs: HashMap<DocumentId, PeerDocSync>,
    stats: ConnStats,
    closing: bool,
    access: Box<dyn AccessPolicy>,
    limits: ConnLimits,
    /// Documents of which this peer holds changes the server refused. Their
    /// heads never meet, so automerge would answer every message with
    /// another and the two would talk forever: the server answers such a
    /// peer only when it has news (heads the peer has not been told).
    diverged: HashSet<DocumentId>,
}

impl Conn {
    fn new(access: Box<dyn AccessPolicy>, limits: ConnLimits) -> Self {
        Self {
            peer_id: None,
            docs: HashMap::new(),
            stats: ConnStats::default(),
            closing: false,
            access,
            limits,
            diverged: HashSet::new(),
        }
    }
}

#[derive(Debug)]
struct DocState {
    doc: Automerge,
    subscribers: BTreeSet<ConnId>,
    /// The epoch holding this document's unflushed changes, if any.
    pending_epoch: Option<u64>,
    /// Messages that arrived while `pending_epoch` was set.
    queue: VecDeque<(ConnId, Message)>,
    last_used_ms: u64,
    last_chunk_seq: u64,
    chunks_since_snapshot: u64,
    /// Highest ephemeral `count` forwarded per (sender, session):
    /// automerge-repo clients re-broadcast ephemeral messages to all their
    /// peers, the server included, so without this they would loop.
    ephemeral_seen: HashMap<(PeerId, String), u64>,
    /// The group charged with this document's memory slot; `None` while it
    /// is empty (holds no slot).
    slot: Option<QuotaGroup>,
}

impl DocState {
    fn new(doc: Automerge, now_ms: u64) -> Self {
        Self {
            doc,
            subscribers: BTreeSet::new(),
            pending_epoch: None,
            queue: VecDeque::new(),
            last_used_ms: now_ms,
            last_chunk_seq: 0,
            chunks_since_snapshot: 0,
            ephemeral_seen: HashMap::new(),
            slot: None,
        }
    }

    fn evictable(&self) -> bool {
        self.subscribers.is_empty() && self.pending_epoch.is_none() && self.queue.is_empty()
    }
}

/// The server's state machine. See the module documentation.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    conns: HashMap<ConnId, Conn>,
    docs: HashMap<DocumentId, DocState>,
    /// Epoch that new writes join.
    open_epoch: u64,
    /// Whether any write joined `open_epoch`.
    open_epoch_dirty: bool,
    flush_in_flight: Option<u64>,
    /// Documents waiting for each epoch's flush.
    waiting_by_epoch: BTreeMap<u64, Vec<DocumentId>>,
    /// Documents holding a memory slot, in all.
    slots_used: usize,
    /// Slots held per [`QuotaGroup::Group`] (no entry: none).
    slots_by_group: HashMap<u64, usize>,
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            conns: HashMap::new(),
            docs: HashMap::new(),
            open_epoch: 1,
            open_epoch_dirty: false,
            flush_in_flight: None,
            waiting_by_epoch: BTreeMap::new(),
            slots_used: 0,
            slots_by_group: HashMap::new(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Documents currently in memory, empty placeholders included.
    pub fn docs_in_memory(&self) -> usize {
        self.docs.len()
    }

    /// Documents holding a memory slot (with content), in all or of one
    /// group.
    pub fn slots_used(&self, group: Option<QuotaGroup>) -> usize {
        match group {
            None => self.slots_used,
            Some(QuotaGroup::Server) => {
                let grouped: usize = self.slots_by_group.values().sum();
                self.slots_used.saturating_sub(grouped)
            }
            Some(QuotaGroup::Group(key)) => self.slots_by_group.get(&key).copied().unwrap_or(0),
        }
    }

    /// The limits a connection gets from [`Hub::connect`] and
    /// [`Hub::connect_with_access`]: the configured change limits, no group.
    pub fn default_conn_limits(&self) -> ConnLimits {
        ConnLimits {
            change_limits: self.config.change_limits,
            quota_group: QuotaGroup::Server,
        }
    }

    /// Connections currently known.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The in-memory document, if loaded (for tests and status).
    pub fn doc(&self, document_id: &DocumentId) -> Option<&Automerge> {
        self.docs.get(document_id).map(|state| &state.doc)
    }

    /// Statistics of a live connection.
    pub fn conn_stats(&self, conn: ConnId) -> Option<&ConnStats> {
        self.conns.get(&conn).map(|c| &c.stats)
    }

    /// A new connection that may read and write every document; it must
    /// `join` before anything else.
    pub fn connect(&mut self, conn: ConnId) {
        self.connect_with_access(conn, Box::new(AllowAll));
    }

    /// A new connection whose access to each document `access` decides
    /// (see the module documentation); it must `join` before anything else.
    pub fn connect_with_access(&mut self, conn: ConnId, access: Box<dyn AccessPolicy>) {
        let limits = self.default_conn_limits();
        self.connect_with(conn, access, limits);
    }

    /// Like [`Hub::connect_with_access`], with this connection's own
    /// [`ConnLimits`].
    pub fn connect_with(
        &mut self,
        conn: ConnId,
        access: Box<dyn AccessPolicy>,
        limits: ConnLimits,
    ) {
        self.conns.insert(conn, Conn::new(access, limits));
    }

    /// The connection is gone; returns what it did.
    pub fn disconnect(&mut self, conn: ConnId) -> Option<ConnStats> {
        let state = self.conns.remove(&conn)?;
        for document_id in state.docs.keys() {
            if let Some(doc) = self.docs.get_mut(document_id) {
                doc.subscribers.remove(&conn);
                doc.queue.retain(|(queued_conn, _)| *queued_conn != conn);
            }
        }
        Some(state.stats)
    }

    /// The document this message needs in memory before [`Hub::receive`].
    pub fn doc_to_load(&self, message: &Message) -> Option<DocumentId> {
        match message {
            Message::Request { document_id, .. } | Message::Sync { document_id, .. } => {
                (!self.docs.contains_key(document_id)).then_some(*document_id)
            }
            _ => None,
        }
    }

    /// Whether another document can be loaded by a [`QuotaGroup::Server`]
    /// connection; evicts the least recently used idle document if memory is
    /// full. (The server uses [`Hub::doc_parsed_for`], which does this for
    /// the loading connection's group.)
    pub fn make_room(&mut self, effects: &mut Vec<Effect>) -> bool {
        self.room_for(QuotaGroup::Server, effects).is_ok()
    }

    /// Evicts idle documents until `group` may take one more slot (its own
    /// least recently used first when the group is at its quota); `Err`
    /// when every candidate is open.
    fn room_for(&mut self, group: QuotaGroup, effects: &mut Vec<Effect>) -> Result<(), NoRoom> {
        if let QuotaGroup::Group(_) = group {
            let max = self.config.docs_held_per_group_max;
            while self.slots_used(Some(group)) >= max {
                let victim = self
                    .least_recently_used_idle(|slot| slot == Some(group))
                    .ok_or(NoRoom::Group { max })?;
                self.evict(victim, effects);
            }
        }
        let max = match group {
            QuotaGroup::Server => self.config.docs_in_memory_max,
            QuotaGroup::Group(_) => self
                .config
                .docs_in_memory_max
                .saturating_sub(self.config.docs_in_memory_reserved_for_server),
        };
        while self.slots_used >= max {
            let victim =
                self.least_recently_used_idle(|slot| slot.is_some())
                    .ok_or(NoRoom::Server {
                        max: self.config.docs_in_memory_max,
                    })?;
            self.evict(victim, effects);
        }
        Ok(())
    }

    /// The idle document used longest ago among those whose slot `holder`
    /// accepts.
    fn least_recently_used_idle(
        &self,
        holder: impl Fn(Option<QuotaGroup>) -> bool,
    ) -> Option<DocumentId> {
        self.docs
            .iter()
            .filter(|(_, state)| state.evictable() && holder(state.slot))
            .min_by_key(|(_, state)| state.last_used_ms)
            .map(|(id, _)| *id)
    }

    /// Charges `group` with the slot of a document that has content and
    /// holds none yet (room was made before).
    fn claim_slot_if_filled(&mut self, document_id: &DocumentId, group: QuotaGroup) {
        let Some(doc) = self.docs.get_mut(document_id) else {
            return;
        };
        if doc.slot.is_some() || doc.doc.get_heads().is_empty() {
            return;
        }
        doc.slot = Some(group);
        self.slots_used += 1;
        if let QuotaGroup::Group(key) = group {
            *self.slots_by_group.entry(key).or_insert(0) += 1;
        }
    }

    /// Takes a document out of memory, returning its slot.
    fn remove_doc(&mut self, document_id: &DocumentId) -> Option<DocState> {
        let doc = self.docs.remove(document_id)?;
        if let Some(group) = doc.slot {
            self.slots_used = self.slots_used.saturating_sub(1);
            if let QuotaGroup::Group(key) = group {
                if let Some(held) = self.slots_by_group.get_mut(&key) {
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        self.slots_by_group.remove(&key);
                    }
                }
            }
        }
        Some(doc)
    }

    /// Hands over a document read from storage (`None`: not stored).
    /// Parses it here; a server that parses off its event loop uses
    /// [`LoadedDoc::parse`] there and [`Hub::doc_parsed`] here.
    pub fn doc_loaded(
        &mut self,
        document_id: DocumentId,
        stored: Option<LoadedDoc>,
        now_ms: u64,
    ) -> Result<(), LoadError> {
        let parsed = match stored {
            None => None,
            Some(stored) => Some(stored.parse(document_id)?),
        };
        self.doc_parsed(document_id, parsed, now_ms);
        Ok(())
    }

    /// Hands over a document already parsed from storage (`None`: not
    /// stored). Cheap: no parsing happens here. Its slot is charged to
    /// [`QuotaGroup::Server`]; call [`Hub::make_room`] first.
    pub fn doc_parsed(&mut self, document_id: DocumentId, parsed: Option<ParsedDoc>, now_ms: u64) {
        self.insert_doc(document_id, parsed, now_ms, QuotaGroup::Server);
    }

    /// Hands over a document that `conn`'s message needed, already parsed
    /// from storage (`None`: not stored), after making room for it in the
    /// connection's [`QuotaGroup`]. A document that does not exist takes no
    /// slot (see the module documentation). `Err`: no room; nothing changed
    /// but the evictions in `effects`, and the peer should be told.
    pub fn doc_parsed_for(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        parsed: Option<ParsedDoc>,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), NoRoom> {
        let group = self.quota_group(conn);
        if parsed
            .as_ref()
            .is_some_and(|parsed| !parsed.doc.get_heads().is_empty())
            && !self.docs.contains_key(&document_id)
        {
            self.room_for(group, effects)?;
        }
        self.insert_doc(document_id, parsed, now_ms, group);
        Ok(())
    }

    /// The quota group of a connection (the server's for one unknown).
    fn quota_group(&self, conn: ConnId) -> QuotaGroup {
        self.conns
            .get(&conn)
            .map_or(QuotaGroup::Server, |state| state.limits.quota_group)
    }

    fn insert_doc(
        &mut self,
        document_id: DocumentId,
        parsed: Option<ParsedDoc>,
        now_ms: u64,
        group: QuotaGroup,
    ) {
        self.remove_doc(&document_id);
        let mut state = match parsed {
            None => DocState::new(Automerge::new(), now_ms),
            Some(parsed) => {
                let mut state = DocState::new(parsed.doc, now_ms);
                state.last_chunk_seq = parsed.last_chunk_seq;
                state.chunks_since_snapshot = parsed.chunks_since_snapshot;
                state
            }
        };
        state.last_used_ms = now_ms;
        self.docs.insert(document_id, state);
        self.claim_slot_if_filled(&document_id, group);
    }

    /// Storage assigned `seq` to the last chunk persisted for this document.
    pub fn chunk_persisted(&mut self, document_id: &DocumentId, seq: u64) {
        if let Some(state) = self.docs.get_mut(document_id) {
            state.last_chunk_seq = seq;
        }
    }

    /// A frame from this connection could not be decoded.
    pub fn decode_failed(&mut self, conn: ConnId, reason: &str) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.fail(conn, format!("malformed message: {reason}"), &mut effects);
        effects
    }

    /// A decoded message from a connection. Any document it names must be
    /// in memory (see [`Hub::doc_to_load`]); otherwise the peer is told the
    /// server could not load it.
    pub fn receive(&mut self, conn: ConnId, message: Message, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(state) = self.conns.get_mut(&conn) else {
            return effects;
        };
        if state.closing {
            return effects;
        }
        state.stats.messages_in += 1;
        match (&state.peer_id, message) {
            (
                None,
                Message::Join {
                    sender_id,
                    supported_protocol_versions,
                    ..
                },
            ) => self.join(conn, sender_id, &supported_protocol_versions, &mut effects),
            (None, other) => self.fail(
                conn,
                format!("expected join, got {}", other.type_name()),
                &mut effects,
            ),
            (Some(_), Message::Join { .. }) => {
                self.fail(conn, "join sent twice".to_string(), &mut effects)
            }
            (Some(peer_id), message) => {
                // automerge-repo peers relay ephemeral messages with the
                // original sender's id, so only other messages must come
                // from the joined peer itself.
                let relayed = matches!(message, Message::Ephemeral { .. });
                if let Some(sender) = message.sender_id().filter(|_| !relayed) {
                    if sender != peer_id {
                        let reason =
                            format!("sender {sender} does not match the joined peer {peer_id}");
                        self.fail(conn, reason, &mut effects);
                        return effects;
                    }
                }
                self.receive_joined(conn, message, now_ms, &mut effects);
            }
        }
        effects
    }

    fn join(
        &mut self,
        conn: ConnId,
        sender_id: PeerId,
        versions: &[String],
        effects: &mut Vec<Effect>,
    ) {
        if !versions.iter().any(|v| v == PROTOCOL_VERSION) {
            let reason = format!(
                "unsupported protocol version {versions:?}; this server speaks {PROTOCOL_VERSION:?}"
            );
            self.fail(conn, reason, effects);
            return;
        }
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.peer_id = Some(sender_id.clone());
        state.stats.peer_id = Some(sender_id.clone());
        self.send(
            conn,
            Message::Peer {
                sender_id: self.config.server_peer_id.clone(),
                target_id: sender_id,
                selected_protocol_version: PROTOCOL_VERSION.to_string(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: self.config.storage_id.clone(),
                    is_ephemeral: false,
                }),
            },
            effects,
        );
    }

    fn receive_joined(
        &mut self,
        conn: ConnId,
        message: Message,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        match message {
            Message::Request { document_id, .. } | Message::Sync { document_id, .. } => {
                if self.access(conn, &document_id) == Some(Access::Hidden) {
                    self.send_unavailable(conn, document_id, effects);
                    return;
                }
                if !self.subscribe(conn, document_id, effects) {
                    return;
                }
                let Some(doc) = self.docs.get_mut(&document_id) else {
                    self.send_error(
                        conn,
                        format!("document {document_id} is not loaded"),
                        effects,
                    );
                    return;
                };
                doc.last_used_ms = now_ms;
                if doc.pending_epoch.is_some() {
                    if doc.queue.len() >= self.config.doc_queue_messages_max {
                        let reason = format!(
                            "too many messages waiting on document {document_id} (max {})",
                            self.config.doc_queue_messages_max
                        );
                        self.fail(conn, reason, effects);
                        return;
                    }
                    doc.queue.push_back((conn, message));
                    return;
                }
                self.apply_batch(document_id, [(conn, message)], effects);
            }
            Message::Ephemeral {
                sender_id,
                count,
                session_id,
                document_id,
                data,
                ..
            } => {
                // Forwarded messages carry the sender's joined peer id,
                // never one it chose (issue 10: a seller's messages arrived
                // as from the office PC). automerge-repo clients relay what
                // they receive with the original sender's id; the hub already
                // sent the original to every subscriber, so a relay is
                // dropped rather than forwarded under the relaying peer's
                // name.
                let Some(joined) = self.conns.get(&conn).and_then(|c| c.peer_id.clone()) else {
                    return;
                };
                if sender_id != joined {
                    return;
                }
                // A peer cannot reach the subscribers of a document it may
                // not see.
                if !matches!(
                    self.access(conn, &document_id),
                    Some(Access::Read | Access::ReadWrite)
                ) {
                    return;
                }
                let Some(doc) = self.docs.get_mut(&document_id) else {
                    return;
                };
                let seen_key = (sender_id.clone(), session_id.clone());
                if doc
                    .ephemeral_seen
                    .get(&seen_key)
                    .is_some_and(|seen| *seen >= count)
                {
                    return;
                }
                if doc.ephemeral_seen.len() >= EPHEMERAL_SESSIONS_PER_DOC_MAX {
                    doc.ephemeral_seen.clear();
                }
                doc.ephemeral_seen.insert(seen_key, count);
                let targets: Vec<ConnId> = doc
                    .subscribers
                    .iter()
                    .copied()
                    .filter(|other| *other != conn)
                    .collect();
                for target in targets {
                    let Some(target_id) = self.conns.get(&target).and_then(|c| c.peer_id.clone())
                    else {
                        continue;
                    };
                    let message = Message::Ephemeral {
                        sender_id: joined.clone(),
                        target_id,
                        count,
                        session_id: session_id.clone(),
                        document_id,
                        data: data.clone(),
                    };
                    self.send(target, message, effects);
                }
            }
            Message::Leave { .. } => {
                effects.push(Effect::Close {
                    conn,
                    reason: "peer left".to_string(),
                });
                if let Some(state) = self.conns.get_mut(&conn) {
                    state.closing = true;
                }
            }
            // Advisory messages the server has no use for: accepted, ignored.
            Message::DocUnavailable { .. }
            | Message::Error { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged { .. } => {}
            Message::Peer { .. } | Message::Join { .. } => {
                self.fail(conn, "unexpected peer message".to_string(), effects)
            }
        }
    }

    /// The connection's access to a loaded document; `None` when either is
    /// unknown.
    fn access(&mut self, conn: ConnId, document_id: &DocumentId) -> Option<Access> {
        let conn_state = self.conns.get_mut(&conn)?;
        let doc = self.docs.get(document_id)?;
        Some(conn_state.access.access(document_id, &doc.doc))
    }

    /// Tells the peer the document does not exist (for it).
    fn send_unavailable(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        effects: &mut Vec<Effect>,
    ) {
        let Some(target_id) = self.conns.get(&conn).and_then(|c| c.peer_id.clone()) else {
            return;
        };
        let message = Message::DocUnavailable {
            sender_id: self.config.server_peer_id.clone(),
            target_id,
            document_id,
        };
        self.send(conn, message, effects);
    }

    /// Opens the document for the connection. False if the connection was
    /// failed for exceeding its document limit.
    fn subscribe(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else {
            return false;
        };
        if state.docs.contains_key(&document_id) {
            return true;
        }
        if state.docs.len() >= self.config.docs_per_peer_max {
            let reason = format!(
                "too many documents open on one connection (max {})",
                self.config.docs_per_peer_max
            );
            self.fail(conn, reason, effects);
            return false;
        }
        state.docs.insert(
            document_id,
            PeerDocSync::with_limits(state.limits.change_limits),
        );
        state.stats.documents.insert(document_id);
        if let Some(doc) = self.docs.get_mut(&document_id) {
            doc.subscribers.insert(conn);
        }
        true
    }

    /// Applies a batch of request/sync messages to one loaded document
    /// that has no flush pending. The changes the whole batch added are
    /// persisted as one chunk; a message that changed nothing is answered at
    /// once as long as the document holds only durable changes.
    fn apply_batch(
        &mut self,
        document_id: DocumentId,
        batch: impl IntoIterator<Item = (ConnId, Message)>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(heads_before) = self.docs.get(&document_id).map(|d| d.doc.get_heads()) else {
            return;
        };
        let mut added = Some(Vec::new());
        for (conn, message) in batch {
            self.apply_one(
                conn,
                document_id,
                message,
                &heads_before,
                &mut added,
                effects,
            );
        }
        self.persist_since(document_id, &heads_before, added, effects);
    }

    /// Persists what the document gained since `heads_before`, if anything,
    /// and holds its outgoing messages until the flush of the current epoch.
    /// `added` is that gain when the caller knows it exactly
    /// ([`crate::doc_sync::Applied::added`] of each message): persisted as
    /// the changes' raw chunks back to back, which `load_incremental` reads;
    /// with `None` the gain is re-encoded with `save_after`.
    fn persist_since(
        &mut self,
        document_id: DocumentId,
        heads_before: &[ChangeHash],
        added: Option<Vec<automerge::Change>>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(doc) = self.docs.get_mut(&document_id) else {
            return;
        };
        if doc.doc.get_heads() == heads_before {
            return;
        }
        let chunk = match added {
            Some(added) => {
                debug_assert_gained_exactly(&doc.doc, heads_before, &added);
                let mut chunk = Vec::new();
                crate::doc_sync::append_raw(&added, &mut chunk);
                chunk
            }
            None => doc.doc.save_after(heads_before),
        };
        effects.push(Effect::Persist { document_id, chunk });
        doc.chunks_since_snapshot += 1;
        doc.pending_epoch = Some(self.open_epoch);
        self.open_epoch_dirty = true;
        self.waiting_by_epoch
            .entry(self.open_epoch)
            .or_default()
            .push(document_id);
        self.maybe_start_flush(effects);
    }

    fn apply_one(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        message: Message,
        batch_heads_before: &[ChangeHash],
        batch_added: &mut Option<Vec<automerge::Change>>,
        effects: &mut Vec<Effect>,
    ) {
        let (mut data, is_request) = match message {
            Message::Request { data, .. } => (data, true),
            Message::Sync { data, .. } => (data, false),
            _ => return,
        };
        let (Some(conn_state), Some(doc)) =
            (self.conns.get_mut(&conn), self.docs.get_mut(&document_id))
        else {
            return;
        };
        if conn_state.closing {
            return;
        }
        // Asked again at apply time: the message may have waited in the
        // queue while the document changed.
        match conn_state.access.access(&document_id, &doc.doc) {
            Access::ReadWrite => {}
            Access::Hidden => {
                self.send_unavailable(conn, document_id, effects);
                return;
            }
            Access::Read => match strip_changes(&data) {
                Ok(None) => {}
                Ok(Some((stripped, chunks))) => {
                    data = stripped;
                    let reason = format!(
                        "document {document_id}: this connection may only read it; \
                         {chunks} change chunk(s) not applied"
                    );
                    self.deny_write(conn, document_id, reason, "read-only", effects);
                }
                Err(error) => {
                    let reason = format!("document {document_id}: {error}");
                    self.fail(conn, reason, effects);
                    return;
                }
            },
        }
        let group = self.quota_group(conn);
        let creating = self
            .docs
            .get(&document_id)
            .is_some_and(|doc| doc.slot.is_none());
        if creating && !self.room_to_create(conn, document_id, group, &mut data, effects) {
            return;
        }
        let (Some(conn_state), Some(doc)) =
            (self.conns.get_mut(&conn), self.docs.get_mut(&document_id))
        else {
            return;
        };
        let Conn {
            docs,
            access,
            stats,
            ..
        } = conn_state;
        let Some(sync) = docs.get_mut(&document_id) else {
            return;
        };
        // What the new changes do is the policy's to judge too (each actor
        // belongs to one device, say, or a root key is frozen).
        let received = sync.receive_admitting(&mut doc.doc, &data, |changes| {
            access.admit_changes(&document_id, changes)
        });
        match received {
            Ok(applied) => {
                stats.changes_in += applied.changes_added() as u64;
                if let Some(batch_added) = batch_added {
                    batch_added.extend(applied.added);
                }
                if creating {
                    self.claim_slot_if_filled(&document_id, group);
                }
                if let Some(denial) = applied.denied {
                    let reason = format!(
                        "document {document_id}: {}; the message's changes were not applied",
                        denial.reason
                    );
                    self.deny_write(conn, document_id, reason, &denial.reason, effects);
                }
            }
            Err(error) => {
                // automerge may have applied some of the message's changes
                // before the bad one: the batch's gain is worked out from
                // the heads instead.
                *batch_added = None;
                if creating {
                    self.claim_slot_if_filled(&document_id, group);
                }
                let reason = format!("document {document_id}: {error}");
                self.fail(conn, reason, effects);
                return;
            }
        }
        let (Some(conn_state), Some(doc)) =
            (self.conns.get_mut(&conn), self.docs.get(&document_id))
        else {
            return;
        };
        let Some(sync) = conn_state.docs.get(&document_id) else {
            return;
        };
        let heads = doc.doc.get_heads();
        if heads != batch_heads_before {
            // Answered after the flush, with every other subscriber.
            return;
        }
        if is_request && heads.is_empty() {
            self.send_unavailable(conn, document_id, effects);
            return;
        }
        if conn_state.diverged.contains(&document_id)
            && sync.told_heads_are(&heads)
            && sync.they_need_nothing()
        {
            return;
        }
        self.generate_for(conn, document_id, effects);
    }

    /// A message about to apply to a document without content (no slot):
    /// if it carries changes, it creates the document, which then needs a
    /// slot in `group`. Without room its changes are refused like a denied
    /// write (stripped from `data`; the peer is told, the session goes on).
    /// False when the message cannot be read (the peer was failed).
    fn room_to_create(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        group: QuotaGroup,
        data: &mut Vec<u8>,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let stripped = match strip_changes(data) {
            Ok(None) => return true,
            Ok(Some((stripped, _))) => stripped,
            Err(error) => {
                self.fail(conn, format!("document {document_id}: {error}"), effects);
                return false;
            }
        };
        if let Err(no_room) = self.room_for(group, effects) {
            *data = stripped;
            let reason = format!("document {document_id} not created: {no_room}; retry later");
            self.deny_write(conn, document_id, reason, "no memory slot", effects);
        }
        true
    }

    /// The peer's changes to a document were refused (`what`: why, short,
    /// for the sync log): it is told `reason`, the refusal is counted, and
    /// the connection goes on.
    fn deny_write(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        reason: String,
        what: &str,
        effects: &mut Vec<Effect>,
    ) {
        let Some(conn_state) = self.conns.get_mut(&conn) else {
            return;
        };
        conn_state.diverged.insert(document_id);
        let stats = &mut conn_state.stats;
        stats.writes_denied += 1;
        if stats.denials.len() < DENIALS_KEPT_MAX {
            stats.denials.push(format!("{document_id}: {what}"));
        }
        self.send_error(conn, reason, effects);
    }

    fn maybe_start_flush(&mut self, effects: &mut Vec<Effect>) {
        if self.flush_in_flight.is_some() || !self.open_epoch_dirty {
            return;
        }
        let epoch = self.open_epoch;
        self.flush_in_flight = Some(epoch);
        self.open_epoch += 1;
        self.open_epoch_dirty = false;
        effects.push(Effect::Flush { epoch });
    }

    /// Storage made every write up to `epoch` durable.
    pub fn flushed(&mut self, epoch: u64, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.flush_in_flight == Some(epoch) {
            self.flush_in_flight = None;
        }
        let later = self.waiting_by_epoch.split_off(&(epoch + 1));
        let durable = std::mem::replace(&mut self.waiting_by_epoch, later);
        for document_id in durable.into_values().flatten() {
            let Some(doc) = self.docs.get_mut(&document_id) else {
                continue;
            };
            if doc.pending_epoch.is_some_and(|pending| pending <= epoch) {
                doc.pending_epoch = None;
            } else {
                continue;
            }
            doc.last_used_ms = now_ms;
            // Everyone with the document open hears of the new changes.
            let subscribers: Vec<ConnId> = doc.subscribers.iter().copied().collect();
            for conn in subscribers {
                self.generate_for(conn, document_id, &mut effects);
            }
            self.maybe_compact(document_id, &mut effects);
            // Then the messages that waited apply as one batch.
            let queued = self
                .docs
                .get_mut(&document_id)
                .map(|doc| std::mem::take(&mut doc.queue))
                .unwrap_or_default();
            if !queued.is_empty() {
                self.apply_batch(document_id, queued, &mut effects);
            }
        }
        self.maybe_start_flush(&mut effects);
        effects
    }

    /// The flush of `epoch` failed: the I/O layer retries; nothing waiting
    /// on it is acknowledged meanwhile.
    pub fn flush_failed(&mut self, epoch: u64) -> Vec<Effect> {
        if self.flush_in_flight == Some(epoch) {
            self.flush_in_flight = None;
        }
        // Writes of the failed epoch stay waiting; the next flush covers
        // them as well, since a flush makes *every* earlier write durable.
        self.open_epoch_dirty = true;
        let mut effects = Vec::new();
        if let Some(waiting) = self.waiting_by_epoch.remove(&epoch) {
            for document_id in &waiting {
                if let Some(doc) = self.docs.get_mut(document_id) {
                    doc.pending_epoch = Some(self.open_epoch);
                }
            }
            self.waiting_by_epoch
                .entry(self.open_epoch)
                .or_default()
                .extend(waiting);
        }
        self.maybe_start_flush(&mut effects);
        effects
    }

    fn maybe_compact(&mut self, document_id: DocumentId, effects: &mut Vec<Effect>) {
        let Some(doc) = self.docs.get_mut(&document_id) else {
            return;
        };
        if doc.chunks_since_snapshot < self.config.compact_after_chunks {
            return;
        }
        compact(document_id, doc, effects);
    }

    /// Whether a flush is in flight or writes wait for one.
    pub fn flush_pending(&self) -> bool {
        self.flush_in_flight.is_some() || self.open_epoch_dirty
    }

    /// The I/O layer could not load a document for this connection's
    /// message: the peer is told, and nothing else changes.
    pub fn load_failed(
        &mut self,
        conn: ConnId,
        document_id: DocumentId,
        reason: &str,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.send_error(
            conn,
            format!("document {document_id} cannot be loaded: {reason}"),
            &mut effects,
        );
        effects
    }

    /// Storage refused the changes of a document. They are not durable, so
    /// they must never be acknowledged: the in-memory copy is dropped and
    /// every peer that has it open is disconnected; on reconnect they resend
    /// what the server lacks.
    pub fn persist_failed(&mut self, document_id: DocumentId) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(doc) = self.remove_doc(&document_id) else {
            return effects;
        };
        for conn in doc.subscribers {
            self.fail(
                conn,
                format!("storage failure on document {document_id}; reconnect to retry"),
                &mut effects,
            );
            if let Some(state) = self.conns.get_mut(&conn) {
                state.docs.remove(&document_id);
                state.diverged.remove(&document_id);
            }
        }
        for waiting in self.waiting_by_epoch.values_mut() {
            waiting.retain(|id| *id != document_id);
        }
        effects
    }

    /// Whether the document is in memory with every change flushed, so a
    /// local change may be made now (see [`Hub::change_local`]).
    pub fn doc_is_durable(&self, document_id: &DocumentId) -> bool {
        self.docs
            .get(document_id)
            .is_some_and(|doc| doc.pending_epoch.is_none() && doc.queue.is_empty())
    }

    /// A change made by the server itself (e.g. recording an alert), as
    /// [`HubConfig::server_actor`]. It is persisted and flushed like a
    /// peer's, then reaches every subscriber.
    /// `None` when the document is not in memory or has a flush pending:
    /// try again later (a change now would leave before its own flush).
    pub fn change_local<R>(
        &mut self,
        document_id: DocumentId,
        now_ms: u64,
        change: impl FnOnce(&mut Automerge) -> R,
    ) -> Option<(R, Vec<Effect>)> {
        if !self.doc_is_durable(&document_id) {
            return None;
        }
        let doc = self.docs.get_mut(&document_id)?;
        doc.last_used_ms = now_ms;
        let heads_before = doc.doc.get_heads();
        doc.doc.set_actor(self.config.server_actor.clone());
        let result = change(&mut doc.doc);
        self.claim_slot_if_filled(&document_id, QuotaGroup::Server);
        let mut effects = Vec::new();
        self.persist_since(document_id, &heads_before, None, &mut effects);
        Some((result, effects))
    }

    /// Evicts idle documents, and at once the empty placeholders of
    /// documents that do not exist once nobody has them open; call
    /// periodically.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let idle: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, state)| {
                state.evictable()
                    && (state.slot.is_none()
                        || now_ms.saturating_sub(state.last_used_ms)
                            >= self.config.doc_idle_evict_after_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        for document_id in idle {
            self.evict(document_id, &mut effects);
        }
        effects
    }

    fn evict(&mut self, document_id: DocumentId, effects: &mut Vec<Effect>) {
        if let Some(mut doc) = self.remove_doc(&document_id) {
            if doc.chunks_since_snapshot > 1 {
                compact(document_id, &mut doc, effects);
            }
        }
    }

    /// Every connection is told to close; call before shutting down.
    pub fn shutdown(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            effects.push(Effect::Close {
                conn,
                reason: "server shutting down".to_string(),
            });
        }
        effects
    }

    fn generate_for(&mut self, conn: ConnId, document_id: DocumentId, effects: &mut Vec<Effect>) {
        let (Some(conn_state), Some(doc)) =
            (self.conns.get_mut(&conn), self.docs.get(&document_id))
        else {
            return;
        };
        debug_assert!(
            doc.pending_epoch.is_none(),
            "sync generated from unflushed document"
        );
        let Some(target_id) = conn_state.peer_id.clone() else {
            return;
        };
        let Some(sync) = conn_state.docs.get_mut(&document_id) else {
            return;
        };
        let Some(generated) = sync.generate_acknowledging(&doc.doc) else {
            return;
        };
        conn_state.stats.changes_out += generated.changes_sent as u64;
        let message = Message::Sync {
            sender_id: self.config.server_peer_id.clone(),
            target_id,
            document_id,
            data: generated.data,
        };
        self.send(conn, message, effects);
    }

    fn send(&mut self, conn: ConnId, message: Message, effects: &mut Vec<Effect>) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.stats.messages_out += 1;
        }
        effects.push(Effect::Send { conn, message });
    }

    fn send_error(&mut self, conn: ConnId, reason: String, effects: &mut Vec<Effect>) {
        let target_id = self.conns.get(&conn).and_then(|c| c.peer_id.clone());
        let message = Message::Error {
            sender_id: Some(self.config.server_peer_id.clone()),
            target_id,
            message: reason,
        };
        self.send(conn, message, effects);
    }

    /// Tells the peer what went wrong and closes its connection; nothing
    /// else is disturbed.
    fn fail(&mut self, conn: ConnId, reason: String, effects: &mut Vec<Effect>) {
        let already_closing = self
            .conns
            .get(&conn)
            .map(|state| state.closing)
            .unwrap_or(true);
        if already_closing {
            return;
        }
        self.send_error(conn, reason.clone(), effects);
        effects.push(Effect::Close { conn, reason });
        if let Some(state) = self.conns.get_mut(&conn) {
            state.closing = true;
        }
    }
}

/// The automerge sync message `data` without its changes, and how many
/// change chunks it carried; `None` when it carries none.
/// Our own check, in debug builds, right before a write: `added` holds
/// exactly the changes `doc` gained since `heads_before`, once each.
fn debug_assert_gained_exactly(
    doc: &Automerge,
    heads_before: &[ChangeHash],
    added: &[automerge::Change],
) {
    if cfg!(debug_assertions) {
        let gained: BTreeSet<ChangeHash> = doc
            .get_changes(heads_before)
            .iter()
            .map(|change| change.hash())
            .collect();
        let listed: BTreeSet<ChangeHash> = added.iter().map(|change| change.hash()).collect();
        assert_eq!(listed.len(), added.len(), "a change listed twice");
        assert_eq!(listed, gained, "the changes to persist are not the gain");
    }
}

fn strip_changes(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, SyncError> {
    let mut message = automerge::sync::Message::decode(data)
        .map_err(|error| SyncError::Malformed(error.to_string()))?;
    if message.changes.is_empty() {
        return Ok(None);
    }
    let chunks = message.changes.len();
    message.changes = automerge::sync::ChunkList::empty();
    Ok(Some((message.encode(), chunks)))
}

fn compact(document_id: DocumentId, doc: &mut DocState, effects: &mut Vec<Effect>) {
    effects.push(Effect::Compact {
        document_id,
        snapshot: doc.doc.save(),
        covers_through_seq: doc.last_chunk_seq,
    });
    doc.chunks_since_snapshot = 0;
}
