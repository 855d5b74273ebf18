//! Per-document authorization: which documents a connection may see and
//! which it may change, from its [`Identity`] and who the document belongs
//! to as the server recorded it when it was created ([`super::owners`]),
//! never from the document's `meta` map, which a later change could alter.
//!
//! The hub stays generic: it asks a [`ConnectionAccess`] (this module's
//! [`AccessPolicy`]) for an [`Access`] before it subscribes a peer to a
//! document and before it applies each of the peer's messages, on the
//! document as the server holds it. Hidden documents get `doc-unavailable`,
//! exactly like documents that do not exist; changes to a readable but not
//! writable document are refused with an `error` message and counted in the
//! sync log. A connection without an identity (authentication off, or
//! `auto` mode with no credential issued) gets [`ConnectionAccess`] never:
//! the hub task connects it with the hub's allow-all policy, as before.
//!
//! The rules, for a connection of tenant `t` (see [`decide`]; a role not
//! named here, such as an operator, sees no document):
//!
//! | document (by its ownership record) | office | seller | reporting |
//! |---|---|---|---|
//! | of another tenant | hidden | hidden | hidden |
//! | not created yet (no change, no record) | read-write | hidden | hidden |
//! | plain (no `meta` at creation), of `t` | read-write | hidden | hidden |
//! | plain, stored before records existed | hidden | hidden | hidden |
//! | `catalog` | read-write | read | read |
//! | `device`, owner = this device | read-write | read-write | read |
//! | `device`, another device | read-write | hidden | read |
//! | `ledger`, owner = this seller | read-write | read-write | read |
//! | `ledger`, another seller | read-write | hidden | read |
//! | `stock`, location's seller = this seller | read-write | read-write | read |
//! | `stock`, any other location | read-write | read | read |
//!
//! Plain documents stay hidden from sellers and reporting: sellers work
//! only in the documents the office made for them, and reporting reads
//! business data, which lives in ventas documents.
//!
//! # Creation and `meta`
//!
//! The hub shows [`AccessPolicy::admit_changes`] what a message's new
//! changes do ([`NewChanges`]) before anything applies. A message that
//! creates a document (the server holds no change of it) is admitted only
//! from the office, only whole (no change waiting for a dependency), and
//! only if the document it makes either has no `meta` (a plain document:
//! recorded as the office's tenant's) or has a readable `meta` naming the
//! office's tenant (recorded as that `meta` says). The record is written
//! right there, before the changes apply, so it is in the store before the
//! hub task appends the document's first chunk and durable with the same
//! flush. Every later message writing under the root key [`META_KEY`] is
//! refused, whoever sends it. The period keeper's sessions use
//! [`KeeperAccess`]: full access, the same recording and freezing, and its
//! actors bound to [`KEEPER_DEVICE`].
//!
//! So with credentials only the office creates documents. Which seller a
//! stock location belongs to comes from the tenant's catalog
//! (`locations[id].seller`); the [`CatalogIndex`] keeps that map for each
//! tenant, rebuilt whenever a catalog document changes, and remembers each
//! tenant's catalog document under `catalog-of/<tenant>` in the metadata
//! keyspace so it can be read back after a restart. Without a known catalog
//! a seller may only read stock.
//!
//! # Actors
//!
//! Every Automerge change names the actor that wrote it. [`ActorBindings`]
//! binds each actor to the device (`<tenant>/<device>` of the credential)
//! whose connection first delivered a *new* change written by it, and keeps
//! the binding under `actor/<actor bytes>` in the metadata keyspace (with
//! an in-memory cache of at most [`ACTOR_BINDINGS_CACHED_MAX`] entries).
//! The hub asks [`AccessPolicy::admit_changes`] about the actors of the
//! new changes of each message it may apply: a seller's message carrying a
//! change under an actor bound to another device is refused whole (an
//! `error`, counted in the sync log; the session goes on). Only *new*
//! changes count: re-sending a change the server already has is harmless
//! relaying. The office may also relay new changes of other devices'
//! actors (say, a broken phone's backup); actors it shows first are bound
//! to it. The server's own actor (`HubConfig::server_actor`, used for its
//! alert records) is reserved: no connection writes as the server. Actor
//! ids longer than [`ACTOR_ID_BYTES_MAX`] are refused.
//!
//! ```
//! use ventas::server::access::decide;
//! use ventas::server::owners::{DocOwner, Ownership};
//! use ventas::server::auth::{Identity, Role};
//! use ventas_sync_protocol::hub::Access;
//! let office = Identity {
//!     subject: "acme/-/pc".into(), credential_id: "1".into(), tenant: "acme".into(),
//!     seller: "-".into(), device: "pc".into(), role: Role::Office, expires_at_ms: None,
//! };
//! let own = Ownership::Owned(DocOwner::plain("acme"));
//! let theirs = Ownership::Owned(DocOwner::plain("globex"));
//! assert_eq!(decide(&office, &own, None), Access::ReadWrite);
//! assert_eq!(decide(&office, &theirs, None), Access::Hidden);
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use automerge::{ActorId, Automerge, ChangeHash};
use tracing::warn;
use ventas_storage::{DocStore, StoreError};
use ventas_sync_protocol::hub::{Access, AccessPolicy, Denial};
use ventas_sync_protocol::ids::DocumentId;

use super::auth::{Identity, Role};
use super::owners::{DocOwner, OwnerError, Ownership, SharedOwnerRecords};
use crate::domain::{doc_meta, read_catalog, DocKind};
use automerge::ReadDoc;
use ventas_sync_protocol::hub::NewChanges;

/// Metadata key prefix under which each tenant's catalog document id is
/// kept.
const CATALOG_OF_PREFIX: &[u8] = b"catalog-of/";

/// The root key a ventas document keeps its `meta` map under: frozen once
/// the document exists (see the module documentation).
pub const META_KEY: &str = "meta";

/// The rules table of the module documentation, over who the document
/// belongs to as the server recorded it (never its `meta` map).
/// `location_seller` is the seller the tenant's catalog assigns a stock
/// document's location to, if known; it matters only for stock documents
/// and the seller role. A role the table does not name sees nothing.
pub fn decide(identity: &Identity, class: &Ownership, location_seller: Option<&str>) -> Access {
    let owner = match class {
        Ownership::Unowned => return Access::Hidden,
        // Only the office creates documents.
        Ownership::New => return office_only(identity.role),
        Ownership::Owned(owner) => owner,
    };
    if owner.tenant != identity.tenant {
        return Access::Hidden;
    }
    let Some(kind) = owner.doc_kind() else {
        // A plain document: its tenant's office's.
        return office_only(identity.role);
    };
    let owned_by = owner.owner.as_deref();
    match identity.role {
        Role::Office => Access::ReadWrite,
        Role::Reporting => Access::Read,
        Role::Seller => match kind {
            DocKind::Catalog => Access::Read,
            DocKind::Device if owned_by == Some(identity.device.as_str()) => Access::ReadWrite,
            DocKind::Ledger if owned_by == Some(identity.seller.as_str()) => Access::ReadWrite,
            DocKind::Device | DocKind::Ledger => Access::Hidden,
            DocKind::Stock if location_seller == Some(identity.seller.as_str()) => {
                Access::ReadWrite
            }
            DocKind::Stock => Access::Read,
        },
        #[allow(unreachable_patterns)]
        _ => Access::Hidden,
    }
}

fn office_only(role: Role) -> Access {
    match role {
        Role::Office => Access::ReadWrite,
        _ => Access::Hidden,
    }
}

/// One tenant's catalog, as far as authorization needs it.
#[derive(Debug)]
struct TenantCatalog {
    document_id: DocumentId,
    heads: Vec<ChangeHash>,
    /// Location id -> the seller it belongs to.
    location_sellers: HashMap<String, String>,
    /// Every seller the catalog lists, to tell when one is added.
    sellers: BTreeSet<String>,
}

impl TenantCatalog {
    fn read(document_id: DocumentId, doc: &Automerge) -> Self {
        let view = read_catalog(doc);
        let sellers = view
            .sellers
            .keys()
            .map(|seller| seller.as_str().to_string())
            .collect();
        let location_sellers = view
            .locations
            .into_values()
            .filter_map(|location| {
                let seller = location.seller?;
                Some((
                    location.id.as_str().to_string(),
                    seller.as_str().to_string(),
                ))
            })
            .collect();
        Self {
            document_id,
            heads: doc.get_heads(),
            location_sellers,
            sellers,
        }
    }
}

/// Each tenant's catalog document and its location -> seller map. Shared by
/// every [`ConnectionAccess`] of the hub task (only that task uses it).
pub struct CatalogIndex {
    store: Arc<dyn DocStore>,
    tenants: HashMap<String, TenantCatalog>,
}

impl fmt::Debug for CatalogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogIndex")
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

/// The index as the hub task shares it with its connections' policies.
pub type SharedCatalogIndex = Arc<Mutex<CatalogIndex>>;

impl CatalogIndex {
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self {
            store,
            tenants: HashMap::new(),
        }
    }

    pub fn shared(store: Arc<dyn DocStore>) -> SharedCatalogIndex {
        Arc::new(Mutex::new(Self::new(store)))
    }

    /// A document changed or was read; if its ownership record says it is
    /// a catalog, its tenant's entry is brought up to date. The first
    /// catalog document recorded for a tenant is the tenant's catalog;
    /// another one is ignored (logged). Only the record counts: a document
    /// whose `meta` claims to be some tenant's catalog is no catalog.
    ///
    /// Returns whether the tenant's catalog now lists a seller it did not
    /// list before (every seller of a new catalog): the period keeper then
    /// creates the seller's ledgers at once. A catalog recorded before the
    /// server started counts nothing as added the first time it is seen
    /// (the keeper's pass at start covered it; a seller it gained while the
    /// server was down gets her ledger at the next pass).
    pub fn observe(&mut self, document_id: DocumentId, doc: &Automerge, owner: &DocOwner) -> bool {
        if owner.doc_kind() != Some(DocKind::Catalog) || doc.get_heads().is_empty() {
            return false;
        }
        let tenant = owner.tenant.as_str();
        // `None`: the catalog was recorded before this server started and
        // is seen for the first time since; the keeper's pass at start
        // looked at it, so nothing counts as added.
        let mut sellers_before = Some(BTreeSet::new());
        if let Some(known) = self.tenants.get(tenant) {
            if known.document_id != document_id {
                warn!(%document_id, tenant, catalog = %known.document_id,
                    "a second catalog document for the tenant is ignored for authorization");
                return false;
            }
            if known.heads == doc.get_heads() {
                return false;
            }
            sellers_before = Some(known.sellers.clone());
        } else {
            match self.recorded_catalog(tenant) {
                Some(recorded) if recorded != document_id => {
                    warn!(%document_id, tenant, catalog = %recorded,
                        "a second catalog document for the tenant is ignored for authorization");
                    return false;
                }
                Some(_) => sellers_before = None,
                None => {
                    let key = catalog_key(tenant);
                    if let Err(error) = self.store.meta_put(&key, document_id.as_bytes()) {
                        warn!(%document_id, tenant, "cannot record the tenant's catalog: {error}");
                    }
                }
            }
        }
        let catalog = TenantCatalog::read(document_id, doc);
        let seller_added = sellers_before.is_some_and(|before| !catalog.sellers.is_subset(&before));
        self.tenants.insert(tenant.to_string(), catalog);
        seller_added
    }

    /// The seller the tenant's catalog assigns `location` to, if the
    /// catalog is known (read from the store the first time after a
    /// restart).
    pub fn location_seller(&mut self, tenant: &str, location: &str) -> Option<String> {
        if !self.tenants.contains_key(tenant) {
            let document_id = self.recorded_catalog(tenant)?;
            let doc = self.load(document_id)?;
            self.tenants
                .insert(tenant.to_string(), TenantCatalog::read(document_id, &doc));
        }
        self.tenants
            .get(tenant)?
            .location_sellers
            .get(location)
            .cloned()
    }

    fn recorded_catalog(&self, tenant: &str) -> Option<DocumentId> {
        recorded_catalog_of(self.store.as_ref(), tenant).unwrap_or_else(|error| {
            warn!(tenant, "cannot read the tenant's catalog id: {error}");
            None
        })
    }

    fn load(&self, document_id: DocumentId) -> Option<Automerge> {
        let stored = match self.store.load(document_id.as_bytes()) {
            Ok(stored) => stored?,
            Err(error) => {
                warn!(%document_id, "cannot read the catalog: {error}");
                return None;
            }
        };
        match ventas_sync_protocol::stored::load_document(
            stored.snapshot.as_deref(),
            &stored.chunks,
        ) {
            Ok(doc) => Some(doc),
            Err(error) => {
                warn!(%document_id, "the stored catalog is corrupt: {error}");
                None
            }
        }
    }
}

/// The catalog recorded for `tenant`, if any (a corrupt record counts as
/// none, logged).
pub fn recorded_catalog_of(
    store: &dyn DocStore,
    tenant: &str,
) -> Result<Option<DocumentId>, StoreError> {
    Ok(store.meta_get(&catalog_key(tenant))?.and_then(|bytes| {
        match <[u8; 16]>::try_from(bytes.as_slice()) {
            Ok(bytes) => Some(DocumentId::from_bytes(bytes)),
            Err(_) => {
                warn!(tenant, "the recorded catalog id is corrupt");
                None
            }
        }
    }))
}

/// Tenants' catalogs as recorded under `catalog-of/<tenant>`: `(metadata
/// key, tenant, catalog id)`, in descending key order, starting strictly
/// before `before`, at most `limit` (<= `ventas_storage::LIST_LIMIT_MAX`).
/// A corrupt record is skipped (logged). The period keeper pages with it.
pub fn recorded_catalogs(
    store: &dyn DocStore,
    before: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, String, DocumentId)>, StoreError> {
    let entries = store.meta_scan_prefix_rev(CATALOG_OF_PREFIX, before, limit)?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, value)| {
            let tenant = key
                .strip_prefix(CATALOG_OF_PREFIX)
                .and_then(|tenant| std::str::from_utf8(tenant).ok())?
                .to_string();
            match <[u8; 16]>::try_from(value.as_slice()) {
                Ok(bytes) => Some((key, tenant, DocumentId::from_bytes(bytes))),
                Err(_) => {
                    warn!(tenant, "the recorded catalog id is corrupt");
                    None
                }
            }
        })
        .collect())
}

fn catalog_key(tenant: &str) -> Vec<u8> {
    let mut key = CATALOG_OF_PREFIX.to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

/// Metadata key prefix of actor bindings: `actor/<actor bytes>` ->
/// `<tenant>/<device>`.
const ACTOR_PREFIX: &[u8] = b"actor/";

/// Actor bindings kept in memory; past it the cache starts afresh (the
/// store holds every binding).
pub const ACTOR_BINDINGS_CACHED_MAX: usize = 65_536;

/// Longest actor id the server binds (automerge's own are 16 bytes); a
/// change under a longer one is refused.
pub const ACTOR_ID_BYTES_MAX: usize = 64;

/// Who an actor belongs to, as [`ActorBindings::owner`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorOwner {
    /// Bound to no device yet.
    Nobody,
    /// The server's own actor (`HubConfig::server_actor`): no device may
    /// write as the server (its alert records, say).
    Server,
    /// Bound to this device (`<tenant>/<device>`).
    Device(String),
}

/// Which device each Automerge actor belongs to (see the module
/// documentation). Shared by every [`ConnectionAccess`] of the hub task.
pub struct ActorBindings {
    store: Arc<dyn DocStore>,
    server_actor: ActorId,
    cache: HashMap<ActorId, String>,
}

impl fmt::Debug for ActorBindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorBindings")
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// The bindings as the hub task shares them with its connections' policies.
pub type SharedActorBindings = Arc<Mutex<ActorBindings>>;

impl ActorBindings {
    /// Bindings kept in `store`; `server_actor` is reserved for the server.
    pub fn new(store: Arc<dyn DocStore>, server_actor: ActorId) -> Self {
        Self {
            store,
            server_actor,
            cache: HashMap::new(),
        }
    }

    pub fn shared(store: Arc<dyn DocStore>, server_actor: ActorId) -> SharedActorBindings {
        Arc::new(Mutex::new(Self::new(store, server_actor)))
    }

    /// The device `actor` is bound to.
    pub fn owner(&mut self, actor: &ActorId) -> Result<ActorOwner, StoreError> {
        if *actor == self.server_actor {
            return Ok(ActorOwner::Server);
        }
        if let Some(device) = self.cache.get(actor) {
            return Ok(ActorOwner::Device(device.clone()));
        }
        let Some(bytes) = self.store.meta_get(&actor_key(actor))? else {
            return Ok(ActorOwner::Nobody);
        };
        let device = String::from_utf8_lossy(&bytes).into_owned();
        self.remember(actor, &device);
        Ok(ActorOwner::Device(device))
    }

    /// Binds an unbound `actor` to `device` (written to the store; durable
    /// with the next flush, which the changes it came with wait for).
    pub fn bind(&mut self, actor: &ActorId, device: &str) -> Result<(), StoreError> {
        self.store.meta_put(&actor_key(actor), device.as_bytes())?;
        self.remember(actor, device);
        Ok(())
    }

    fn remember(&mut self, actor: &ActorId, device: &str) {
        if self.cache.len() >= ACTOR_BINDINGS_CACHED_MAX {
            self.cache.clear();
        }
        self.cache.insert(actor.clone(), device.to_string());
    }
}

fn actor_key(actor: &ActorId) -> Vec<u8> {
    let mut key = ACTOR_PREFIX.to_vec();
    key.extend_from_slice(actor.to_bytes());
    key
}

/// Actors bound to this "device" wrote the period keeper's changes; no
/// credential can name it (`*` is in no tenant or device id).
pub const KEEPER_DEVICE: &str = "*server*/period-keeper";

/// What the access policies of one hub task share.
#[derive(Debug, Clone)]
pub struct SharedRecords {
    pub catalogs: SharedCatalogIndex,
    pub actors: SharedActorBindings,
    pub owners: SharedOwnerRecords,
}

/// The [`AccessPolicy`] of one authenticated connection.
#[derive(Debug)]
pub struct ConnectionAccess {
    identity: Identity,
    /// `<tenant>/<device>`: what this connection's actors are bound to.
    device: String,
    records: SharedRecords,
}

impl ConnectionAccess {
    pub fn new(identity: Identity, records: SharedRecords) -> Self {
        let device = format!("{}/{}", identity.tenant, identity.device);
        Self {
            identity,
            device,
            records,
        }
    }

    /// Who a document this connection creates belongs to: a plain document
    /// to the connection's tenant; a ventas document as its first `meta`
    /// says, which must name the connection's tenant. Only the office
    /// creates.
    fn creation_record(&self, created: &Automerge) -> Result<DocOwner, Denial> {
        let refuse = |reason: String| Err(Denial { reason });
        if self.identity.role != Role::Office {
            return refuse("only the office creates documents".to_string());
        }
        if !has_meta(created) {
            return Ok(DocOwner::plain(&self.identity.tenant));
        }
        match doc_meta(created) {
            Ok(meta) if meta.tenant.as_str() == self.identity.tenant => Ok(DocOwner::of_meta(&meta)),
            Ok(meta) => refuse(format!(
                "a new document of tenant {:?}; this connection creates documents of tenant {:?} only",
                meta.tenant.as_str(),
                self.identity.tenant
            )),
            Err(error) => refuse(format!("the new document's meta is unreadable: {error}")),
        }
    }
}

/// Whether the document has a root `meta` key at all.
fn has_meta(doc: &Automerge) -> bool {
    matches!(doc.get(automerge::ROOT, META_KEY), Ok(Some(_)))
}

/// The ownership record is unreadable: nobody sees the document meanwhile.
fn unreadable_record(document_id: &DocumentId, error: &OwnerError) -> Access {
    warn!(%document_id, "cannot read the document's ownership record: {error}");
    Access::Hidden
}

impl AccessPolicy for ConnectionAccess {
    fn access(&mut self, document_id: &DocumentId, doc: &Automerge) -> Access {
        let class = match lock(&self.records.owners).owner_of(document_id, doc) {
            Ok(class) => class,
            Err(error) => return unreadable_record(document_id, &error),
        };
        let mut catalogs = lock(&self.records.catalogs);
        let location_seller = match &class {
            Ownership::Owned(owner) => {
                catalogs.observe(*document_id, doc, owner);
                let needed = owner.doc_kind() == Some(DocKind::Stock)
                    && self.identity.role == Role::Seller
                    && owner.tenant == self.identity.tenant;
                match owner.owner.as_deref() {
                    Some(location) if needed => {
                        catalogs.location_seller(&self.identity.tenant, location)
                    }
                    _ => None,
                }
            }
            Ownership::New | Ownership::Unowned => None,
        };
        decide(&self.identity, &class, location_seller.as_deref())
    }

    /// Refuses changes to `meta` after creation; records who a new
    /// document belongs to; binds the actors nobody has yet to this device
    /// and refuses actors of another device (the office may relay).
    /// Nothing is recorded or bound when the message is refused.
    fn admit_changes(
        &mut self,
        document_id: &DocumentId,
        changes: &NewChanges<'_>,
    ) -> Result<(), Denial> {
        let device = self.device.clone();
        let may_relay = self.identity.role == Role::Office;
        let records = self.records.clone();
        admit(
            &records,
            document_id,
            changes,
            &device,
            may_relay,
            |created| self.creation_record(created),
        )
    }
}

/// The [`AccessPolicy`] of the period keeper's sessions (a server-internal
/// peer): every document, read and write, but like any connection it
/// records who the documents it creates belong to (from their `meta`: it
/// opens documents for every tenant), leaves `meta` alone afterwards, and
/// its actors are bound to [`KEEPER_DEVICE`], so nobody else writes as
/// the keeper.
#[derive(Debug)]
pub struct KeeperAccess {
    records: SharedRecords,
}

impl KeeperAccess {
    pub fn new(records: SharedRecords) -> Self {
        Self { records }
    }
}

impl AccessPolicy for KeeperAccess {
    fn access(&mut self, _document_id: &DocumentId, _doc: &Automerge) -> Access {
        Access::ReadWrite
    }

    fn admit_changes(
        &mut self,
        document_id: &DocumentId,
        changes: &NewChanges<'_>,
    ) -> Result<(), Denial> {
        admit(
            &self.records,
            document_id,
            changes,
            KEEPER_DEVICE,
            false,
            |created| {
                doc_meta(created)
                    .map(|meta| DocOwner::of_meta(&meta))
                    .map_err(|error| Denial {
                        reason: format!("the keeper's new document has no readable meta: {error}"),
                    })
            },
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The admission rules every policy shares (see the module
/// documentation): a creation is recorded (`creation_record` says as
/// whom), a later change to `meta` is refused, and the actors are bound to
/// `device` (`may_relay`: actors of other devices pass too). Checks run
/// first; the record and the bindings are written only if all pass.
fn admit(
    records: &SharedRecords,
    document_id: &DocumentId,
    changes: &NewChanges<'_>,
    device: &str,
    may_relay: bool,
    creation_record: impl FnOnce(&Automerge) -> Result<DocOwner, Denial>,
) -> Result<(), Denial> {
    let refuse = |reason: &str| {
        Err(Denial {
            reason: reason.to_string(),
        })
    };
    // A write into an object the server does not have yet (`unplaced`) is
    // admitted: the change making that object is checked when it arrives,
    // and the write cannot apply before it.
    let record = match changes.creates {
        // Changes held back at creation would apply later unchecked.
        Some(_) if changes.creation_incomplete => {
            return refuse("a new document must arrive with every change it depends on")
        }
        Some(created) => Some(creation_record(created)?),
        None if changes.root_keys.contains(META_KEY) => {
            return refuse("a document's meta cannot change after its creation")
        }
        None => None,
    };
    let mut bindings = lock(&records.actors);
    let unbound = unbound_actors(&mut bindings, changes.actors, device, may_relay)
        .map_err(|error| error.unwrap_or_else(|error| cannot_check(document_id, &error)))?;
    if let Some(owner) = record {
        lock(&records.owners)
            .record(document_id, &owner)
            .map_err(|error| cannot_check(document_id, &error))?;
    }
    for actor in unbound {
        bindings
            .bind(&actor, device)
            .map_err(|error| cannot_check(document_id, &error))?;
    }
    Ok(())
}

/// The store failed while checking a message: it is refused (the peer may
/// send it again later).
fn cannot_check(document_id: &DocumentId, error: &dyn std::fmt::Display) -> Denial {
    warn!(%document_id, "cannot read or record an actor binding or ownership record: {error}");
    Denial {
        reason: "the server cannot check these changes now; try again later".to_string(),
    }
}

/// The actors of `actors` bound to nobody yet; `Err(Ok(denial))` if one
/// is too long, the server's, or another device's (unless `may_relay`),
/// `Err(Err(_))` if the store cannot tell.
fn unbound_actors(
    bindings: &mut ActorBindings,
    actors: &[ActorId],
    device: &str,
    may_relay: bool,
) -> Result<Vec<ActorId>, Result<Denial, StoreError>> {
    if let Some(actor) = actors
        .iter()
        .find(|actor| actor.to_bytes().len() > ACTOR_ID_BYTES_MAX)
    {
        return Err(Ok(Denial {
            reason: format!(
                "actor id of {} bytes (max {ACTOR_ID_BYTES_MAX})",
                actor.to_bytes().len()
            ),
        }));
    }
    let mut unbound = Vec::new();
    for actor in actors {
        match bindings.owner(actor).map_err(Err)? {
            ActorOwner::Nobody => unbound.push(actor.clone()),
            ActorOwner::Server => {
                return Err(Ok(Denial {
                    reason: format!("changes by actor {actor}, which is the server's"),
                }))
            }
            ActorOwner::Device(owner) if owner == device => {}
            // The office may hand in other devices' changes.
            ActorOwner::Device(_) if may_relay => {}
            ActorOwner::Device(_) => {
                return Err(Ok(Denial {
                    reason: format!("changes by actor {actor}, which belongs to another device"),
                }))
            }
        }
    }
    Ok(unbound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        create_catalog_doc, create_device_doc, create_ledger_doc, create_stock_doc, put_location,
        put_seller, DeviceId, Location, LocationId, LocationKind, Period, Seller, SellerId,
        TenantId,
    };
    use ventas_storage::SledStore;

    use Access::{Hidden, Read, ReadWrite};

    fn identity(tenant: &str, seller: &str, device: &str, role: Role) -> Identity {
        Identity {
            subject: format!("{tenant}/{seller}/{device}"),
            credential_id: "0".repeat(16),
            tenant: tenant.to_string(),
            seller: seller.to_string(),
            device: device.to_string(),
            role,
            expires_at_ms: None,
        }
    }

    fn domain(doc: &Automerge) -> Ownership {
        Ownership::Owned(DocOwner::of_meta(&doc_meta(doc).expect("meta")))
    }

    fn records(
        store: &Arc<dyn DocStore>,
        catalogs: &SharedCatalogIndex,
        actors: &SharedActorBindings,
    ) -> SharedRecords {
        SharedRecords {
            catalogs: Arc::clone(catalogs),
            actors: Arc::clone(actors),
            owners: super::super::owners::OwnerRecords::shared(Arc::clone(store)),
        }
    }

    /// `admit_changes` for a message of new changes by `actors` that
    /// writes no frozen key and creates nothing.
    trait AdmitActors {
        fn admit_actors(&mut self, doc: &DocumentId, actors: &[ActorId]) -> Result<(), Denial>;
    }

    impl AdmitActors for ConnectionAccess {
        fn admit_actors(&mut self, doc: &DocumentId, actors: &[ActorId]) -> Result<(), Denial> {
            let root_keys = std::collections::BTreeSet::from(["sales".to_string()]);
            self.admit_changes(
                doc,
                &NewChanges {
                    actors,
                    root_keys: &root_keys,
                    unplaced: false,
                    creates: None,
                    creation_incomplete: false,
                },
            )
        }
    }

    fn period() -> Period {
        Period::parse("2026-11").expect("period")
    }

    fn ids() -> (TenantId, SellerId, LocationId) {
        (
            TenantId::new("acme").expect("id"),
            SellerId::new("ana").expect("id"),
            LocationId::new("van-ana").expect("id"),
        )
    }

    /// (office, seller ana on tab-1, seller bob on tab-2, reporting)
    fn identities(tenant: &str) -> [Identity; 4] {
        [
            identity(tenant, "boss", "pc-1", Role::Office),
            identity(tenant, "ana", "tab-1", Role::Seller),
            identity(tenant, "bob", "tab-2", Role::Seller),
            identity(tenant, "audit", "rep-1", Role::Reporting),
        ]
    }

    fn row(class: &Ownership, tenant: &str, location_seller: Option<&str>) -> [Access; 4] {
        identities(tenant).map(|who| decide(&who, class, location_seller))
    }

    #[test]
    fn a_new_document_is_the_offices_to_create_and_a_plain_one_its_tenants_offices() {
        assert_eq!(
            row(&Ownership::New, "acme", None),
            [ReadWrite, Hidden, Hidden, Hidden]
        );
        let plain = Ownership::Owned(DocOwner::plain("acme"));
        assert_eq!(
            row(&plain, "acme", None),
            [ReadWrite, Hidden, Hidden, Hidden]
        );
        assert_eq!(
            row(&plain, "globex", None),
            [Hidden, Hidden, Hidden, Hidden]
        );
        // A plain document from before ownership records: nobody's.
        assert_eq!(
            row(&Ownership::Unowned, "acme", None),
            [Hidden, Hidden, Hidden, Hidden]
        );
    }

    #[test]
    fn another_tenants_documents_are_hidden_from_every_role() {
        let (tenant, seller, van) = ids();
        let docs = [
            create_catalog_doc(&tenant).expect("doc"),
            create_ledger_doc(&tenant, &seller, period()).expect("doc"),
            create_stock_doc(&tenant, &van, period(), &[]).expect("doc"),
            create_device_doc(&tenant, &DeviceId::new("tab-1").expect("id"), &seller, "K")
                .expect("doc"),
        ];
        for doc in &docs {
            assert_eq!(
                row(&domain(doc), "globex", Some("ana")),
                [Hidden, Hidden, Hidden, Hidden]
            );
        }
    }

    #[test]
    fn the_catalog_is_written_by_the_office_and_read_by_everyone() {
        let (tenant, _, _) = ids();
        let catalog = domain(&create_catalog_doc(&tenant).expect("doc"));
        assert_eq!(row(&catalog, "acme", None), [ReadWrite, Read, Read, Read]);
    }

    #[test]
    fn a_ledger_is_written_by_its_seller_and_hidden_from_other_sellers() {
        let (tenant, seller, _) = ids();
        let ledger = domain(&create_ledger_doc(&tenant, &seller, period()).expect("doc"));
        assert_eq!(
            row(&ledger, "acme", None),
            [ReadWrite, ReadWrite, Hidden, Read]
        );
    }

    #[test]
    fn a_device_document_is_written_by_that_device_only() {
        let (tenant, seller, _) = ids();
        let device = DeviceId::new("tab-1").expect("id");
        let doc = domain(&create_device_doc(&tenant, &device, &seller, "K").expect("doc"));
        assert_eq!(
            row(&doc, "acme", None),
            [ReadWrite, ReadWrite, Hidden, Read]
        );
    }

    #[test]
    fn stock_is_written_by_the_seller_its_location_belongs_to() {
        let (tenant, _, van) = ids();
        let stock = domain(&create_stock_doc(&tenant, &van, period(), &[]).expect("doc"));
        assert_eq!(
            row(&stock, "acme", Some("ana")),
            [ReadWrite, ReadWrite, Read, Read]
        );
        // Unknown owner (no catalog, or the location is not a vehicle).
        assert_eq!(row(&stock, "acme", None), [ReadWrite, Read, Read, Read]);
    }

    fn catalog_with_van(tenant: &TenantId, seller: &str) -> Automerge {
        let mut catalog = create_catalog_doc(tenant).expect("doc");
        put_location(
            &mut catalog,
            &Location {
                id: LocationId::new("van-ana").expect("id"),
                name: "Van".into(),
                kind: LocationKind::Vehicle,
                seller: Some(SellerId::new(seller).expect("id")),
            },
        )
        .expect("location");
        catalog
    }

    #[test]
    fn the_catalog_index_follows_changes_and_survives_a_restart() {
        let (tenant, _, van) = ids();
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let catalog_id = DocumentId::from_bytes([7; 16]);
        let stock = create_stock_doc(&tenant, &van, period(), &[]).expect("doc");
        let [_, ana, bob, _] = identities("acme");
        let catalogs = CatalogIndex::shared(Arc::clone(&store));
        let shared = records(&store, &catalogs, &actors(&store));
        let mut as_ana = ConnectionAccess::new(ana.clone(), shared.clone());
        let mut as_bob = ConnectionAccess::new(bob.clone(), shared);
        let stock_id = DocumentId::from_bytes([8; 16]);
        // No catalog yet: sellers may only read stock.
        assert_eq!(as_ana.access(&stock_id, &stock), Read);

        let catalog = catalog_with_van(&tenant, "ana");
        store
            .append_chunk(catalog_id.as_bytes(), &catalog.save())
            .expect("store");
        assert_eq!(as_bob.access(&catalog_id, &catalog), Read);
        assert_eq!(as_ana.access(&stock_id, &stock), ReadWrite);
        assert_eq!(as_bob.access(&stock_id, &stock), Read);

        // The van moves to bob: the index follows the catalog's new heads.
        let mut reassigned = catalog.clone();
        put_location(
            &mut reassigned,
            &Location {
                id: van.clone(),
                name: "Van".into(),
                kind: LocationKind::Vehicle,
                seller: Some(SellerId::new("bob").expect("id")),
            },
        )
        .expect("location");
        catalogs.lock().expect("lock").observe(
            catalog_id,
            &reassigned,
            &DocOwner::of_meta(&doc_meta(&reassigned).expect("meta")),
        );
        assert_eq!(as_ana.access(&stock_id, &stock), Read);
        assert_eq!(as_bob.access(&stock_id, &stock), ReadWrite);

        // A second catalog for the same tenant does not take over.
        let rogue_id = DocumentId::from_bytes([9; 16]);
        let rogue = catalog_with_van(&tenant, "ana");
        assert_eq!(as_bob.access(&rogue_id, &rogue), Read);
        assert_eq!(as_bob.access(&stock_id, &stock), ReadWrite);

        // After a restart the index reads the recorded catalog from the
        // store (here: the version that gives the van to ana).
        let mut fresh = ConnectionAccess::new(
            ana,
            records(
                &store,
                &CatalogIndex::shared(Arc::clone(&store)),
                &actors(&store),
            ),
        );
        assert_eq!(fresh.access(&stock_id, &stock), ReadWrite);
    }

    #[test]
    fn the_catalog_index_reports_a_seller_added_but_not_a_catalog_known_before_a_restart() {
        let (tenant, _, _) = ids();
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let catalog_id = DocumentId::from_bytes([7; 16]);
        let mut catalog = catalog_with_van(&tenant, "ana");
        let owner = DocOwner::of_meta(&doc_meta(&catalog).expect("meta"));
        let add = |catalog: &mut Automerge, seller: &str| {
            put_seller(
                catalog,
                &Seller {
                    id: SellerId::new(seller).expect("id"),
                    name: seller.into(),
                },
            )
            .expect("seller")
        };
        let mut index = CatalogIndex::new(Arc::clone(&store));
        // A new catalog without sellers, then with one, then a product.
        assert!(!index.observe(catalog_id, &catalog, &owner));
        add(&mut catalog, "ana");
        assert!(index.observe(catalog_id, &catalog, &owner));
        assert!(!index.observe(catalog_id, &catalog, &owner), "same heads");
        add(&mut catalog, "ana");
        assert!(
            !index.observe(catalog_id, &catalog, &owner),
            "a rename adds no one"
        );
        // After a restart the recorded catalog is no news; a seller added
        // afterwards is.
        let mut restarted = CatalogIndex::new(Arc::clone(&store));
        add(&mut catalog, "bea");
        assert!(!restarted.observe(catalog_id, &catalog, &owner));
        add(&mut catalog, "cruz");
        assert!(restarted.observe(catalog_id, &catalog, &owner));
    }

    fn server_actor() -> ActorId {
        ActorId::from(b"ventas-test-server".to_vec())
    }

    fn actors(store: &Arc<dyn DocStore>) -> SharedActorBindings {
        ActorBindings::shared(Arc::clone(store), server_actor())
    }

    #[test]
    fn an_actor_belongs_to_the_device_that_first_wrote_with_it() {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let bindings = actors(&store);
        let [office, ana, bob, _] = identities("acme");
        let catalogs = CatalogIndex::shared(Arc::clone(&store));
        let policy = |who: &Identity, bindings: &SharedActorBindings| {
            ConnectionAccess::new(who.clone(), records(&store, &catalogs, bindings))
        };
        let (mut as_ana, mut as_bob) = (policy(&ana, &bindings), policy(&bob, &bindings));
        let doc = DocumentId::from_bytes([1; 16]);
        let anas = ActorId::random();
        let bobs = ActorId::random();

        as_ana
            .admit_actors(&doc, std::slice::from_ref(&anas))
            .expect("first use binds");
        as_ana
            .admit_actors(&doc, std::slice::from_ref(&anas))
            .expect("her own actor");
        let refused = as_bob
            .admit_actors(&doc, std::slice::from_ref(&anas))
            .expect_err("ana's actor");
        assert!(refused.reason.contains("another device"), "{refused:?}");
        // A refused message binds nothing, not even its other actors.
        as_bob
            .admit_actors(&doc, &[bobs.clone(), anas.clone()])
            .expect_err("mixed");
        assert_eq!(
            bindings.lock().expect("lock").owner(&bobs).expect("read"),
            ActorOwner::Nobody
        );

        // The office relays ana's changes; actors it shows first are its.
        let mut as_office = policy(&office, &bindings);
        let offices = ActorId::random();
        as_office
            .admit_actors(&doc, &[anas.clone(), offices.clone()])
            .expect("the office relays");
        as_ana
            .admit_actors(&doc, &[offices])
            .expect_err("the office's actor");

        // Another tenant's device with the same device id is another device.
        let twin = identity("globex", "ana", "tab-1", Role::Seller);
        policy(&twin, &bindings)
            .admit_actors(&doc, std::slice::from_ref(&anas))
            .expect_err("same device id, other tenant");

        let long = ActorId::from(vec![7u8; ACTOR_ID_BYTES_MAX + 1]);
        let refused = as_ana.admit_actors(&doc, &[long]).expect_err("too long");
        assert!(refused.reason.contains("max 64"), "{refused:?}");
        as_ana
            .admit_actors(&doc, &[ActorId::from(vec![7u8; ACTOR_ID_BYTES_MAX])])
            .expect("at the bound");

        // Nobody writes as the server, not even the office.
        for who in [&office, &ana] {
            let refused = policy(who, &bindings)
                .admit_actors(&doc, &[server_actor()])
                .expect_err("the server's actor");
            assert!(refused.reason.contains("the server's"), "{refused:?}");
        }

        // The bindings are in the store: a fresh cache (a restart) knows them.
        let fresh = actors(&store);
        policy(&bob, &fresh)
            .admit_actors(&doc, &[anas])
            .expect_err("still ana's after a restart");
    }

    fn creating<'a>(
        actors: &'a [ActorId],
        root_keys: &'a std::collections::BTreeSet<String>,
        doc: &'a Automerge,
    ) -> NewChanges<'a> {
        NewChanges {
            actors,
            root_keys,
            unplaced: false,
            creates: Some(doc),
            creation_incomplete: false,
        }
    }

    #[test]
    fn a_document_belongs_to_its_creators_tenant_and_its_meta_is_frozen() {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let catalogs = CatalogIndex::shared(Arc::clone(&store));
        let shared = records(&store, &catalogs, &actors(&store));
        let [office, ana, _, _] = identities("acme");
        let [globex_office, ..] = identities("globex");
        let mut as_office = ConnectionAccess::new(office, shared.clone());
        let mut as_ana = ConnectionAccess::new(ana, shared.clone());
        let mut as_globex = ConnectionAccess::new(globex_office, shared.clone());
        let keys = std::collections::BTreeSet::from(["meta".to_string()]);
        let actor = [ActorId::random()];

        // acme's office cannot create globex's catalog, nor can a seller
        // create anything.
        let globex_catalog =
            create_catalog_doc(&TenantId::new("globex").expect("id")).expect("doc");
        let plant = DocumentId::from_bytes([1; 16]);
        let refused = as_office
            .admit_changes(&plant, &creating(&actor, &keys, &globex_catalog))
            .expect_err("another tenant's document");
        assert!(refused.reason.contains("tenant"), "{refused:?}");
        assert!(
            lock(&shared.owners).get(&plant).expect("read").is_none(),
            "nothing recorded"
        );
        as_ana
            .admit_changes(&plant, &creating(&actor, &keys, &globex_catalog))
            .expect_err("sellers do not create");
        // globex's own office can, and the record is globex's catalog.
        as_globex
            .admit_changes(&plant, &creating(&actor, &keys, &globex_catalog))
            .expect("its own catalog");
        let owner = lock(&shared.owners)
            .get(&plant)
            .expect("read")
            .expect("recorded");
        assert_eq!(
            (owner.tenant.as_str(), owner.doc_kind()),
            ("globex", Some(DocKind::Catalog))
        );

        // A plain document is its creator's tenant's.
        let plain_id = DocumentId::from_bytes([2; 16]);
        let mut plain = Automerge::new();
        let mut tx = plain.transaction();
        automerge::transaction::Transactable::put(&mut tx, automerge::ROOT, "sales", 1_i64)
            .expect("put");
        tx.commit();
        let sales = std::collections::BTreeSet::from(["sales".to_string()]);
        as_office
            .admit_changes(&plain_id, &creating(&actor, &sales, &plain))
            .expect("plain");
        assert_eq!(
            lock(&shared.owners).get(&plain_id).expect("read"),
            Some(DocOwner::plain("acme"))
        );
        assert_eq!(as_globex.access(&plain_id, &plain), Hidden);
        assert_eq!(as_office.access(&plain_id, &plain), ReadWrite);

        // After creation nobody writes under `meta`, not even the office;
        // other root keys are fine.
        fn later<'a>(
            actors: &'a [ActorId],
            root_keys: &'a std::collections::BTreeSet<String>,
        ) -> NewChanges<'a> {
            NewChanges {
                actors,
                root_keys,
                unplaced: true,
                creates: None,
                creation_incomplete: false,
            }
        }
        let refused = as_office
            .admit_changes(&plain_id, &later(&actor, &keys))
            .expect_err("meta is frozen");
        assert!(refused.reason.contains("meta"), "{refused:?}");
        as_office
            .admit_changes(&plain_id, &later(&actor, &sales))
            .expect("sales");

        // A creation whose changes wait for dependencies is refused.
        let mut incomplete = creating(&actor, &sales, &plain);
        incomplete.creation_incomplete = true;
        as_office
            .admit_changes(&DocumentId::from_bytes([3; 16]), &incomplete)
            .expect_err("incomplete creation");
    }

    #[test]
    fn the_keepers_actors_are_bound_to_the_keeper() {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let catalogs = CatalogIndex::shared(Arc::clone(&store));
        let shared = records(&store, &catalogs, &actors(&store));
        let (tenant, seller, _) = ids();
        let ledger = create_ledger_doc(&tenant, &seller, period()).expect("doc");
        let ledger_id = DocumentId::from_bytes([4; 16]);
        let keepers = [ActorId::random()];
        let keys = std::collections::BTreeSet::from(["meta".to_string()]);
        KeeperAccess::new(shared.clone())
            .admit_changes(&ledger_id, &creating(&keepers, &keys, &ledger))
            .expect("the keeper creates");
        assert_eq!(
            lock(&shared.owners).get(&ledger_id).expect("read"),
            Some(DocOwner::of_meta(&doc_meta(&ledger).expect("meta")))
        );
        let [_, ana, _, _] = identities("acme");
        let refused = ConnectionAccess::new(ana, shared.clone())
            .admit_actors(&ledger_id, &keepers)
            .expect_err("the keeper's actor");
        assert!(refused.reason.contains("another device"), "{refused:?}");
        assert_eq!(
            lock(&shared.actors).owner(&keepers[0]).expect("read"),
            ActorOwner::Device(KEEPER_DEVICE.to_string())
        );
    }
}
