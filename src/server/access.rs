//! Per-document authorization: which documents a connection may see and
//! which it may change, from its [`Identity`] and the document's root
//! `meta` map (see [`crate::domain::doc_meta`]).
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
//! The rules, for a connection of tenant `t` (see [`decide`]):
//!
//! | document | office | seller | reporting |
//! |---|---|---|---|
//! | of another tenant | hidden | hidden | hidden |
//! | no readable `meta` (empty, being created, or a plain document) | read-write | hidden | hidden |
//! | `catalog` | read-write | read | read |
//! | `device`, owner = this device | read-write | read-write | read |
//! | `device`, another device | read-write | hidden | read |
//! | `ledger`, owner = this seller | read-write | read-write | read |
//! | `ledger`, another seller | read-write | hidden | read |
//! | `stock`, location's seller = this seller | read-write | read-write | read |
//! | `stock`, any other location | read-write | read | read |
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
//! The hub asks [`ConnectionAccess::admit_actors`] about the actors of the
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
//! use ventas::server::access::{decide, DocClass};
//! use ventas::server::auth::{Identity, Role};
//! use ventas_sync_protocol::hub::Access;
//! let office = Identity {
//!     subject: "acme/-/pc".into(), credential_id: "1".into(), tenant: "acme".into(),
//!     seller: "-".into(), device: "pc".into(), role: Role::Office, expires_at_ms: None,
//! };
//! assert_eq!(decide(&office, &DocClass::NoMeta, None), Access::ReadWrite);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use automerge::{ActorId, Automerge, ChangeHash};
use tracing::warn;
use ventas_storage::{DocStore, StoreError};
use ventas_sync_protocol::hub::{Access, AccessPolicy, Denial};
use ventas_sync_protocol::ids::DocumentId;

use super::auth::{Identity, Role};
use crate::domain::{doc_meta, read_catalog, DocKind, DocMeta};

/// Metadata key prefix under which each tenant's catalog document id is
/// kept.
const CATALOG_OF_PREFIX: &[u8] = b"catalog-of/";

/// What the rules need to know about a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocClass {
    /// No readable `meta` map: an empty document (not stored yet, or being
    /// created), or a document that is not a domain document.
    NoMeta,
    /// A domain document.
    Domain(DocMeta),
}

impl DocClass {
    pub fn of(doc: &Automerge) -> Self {
        match doc_meta(doc) {
            Ok(meta) => Self::Domain(meta),
            Err(_) => Self::NoMeta,
        }
    }
}

/// The rules table of the module documentation. `location_seller` is the
/// seller the tenant's catalog assigns a stock document's location to, if
/// known; it matters only for stock documents and the seller role.
pub fn decide(identity: &Identity, class: &DocClass, location_seller: Option<&str>) -> Access {
    let meta = match class {
        DocClass::NoMeta => {
            return match identity.role {
                Role::Office => Access::ReadWrite,
                // The operator syncs nothing (its upgrade is refused).
                Role::Seller | Role::Reporting | Role::Operator => Access::Hidden,
            };
        }
        DocClass::Domain(meta) => meta,
    };
    if meta.tenant.as_str() != identity.tenant {
        return Access::Hidden;
    }
    match identity.role {
        Role::Office => Access::ReadWrite,
        Role::Reporting => Access::Read,
        Role::Operator => Access::Hidden,
        Role::Seller => match meta.kind {
            DocKind::Catalog => Access::Read,
            DocKind::Device if meta.owner == identity.device => Access::ReadWrite,
            DocKind::Ledger if meta.owner == identity.seller => Access::ReadWrite,
            DocKind::Device | DocKind::Ledger => Access::Hidden,
            DocKind::Stock if location_seller == Some(identity.seller.as_str()) => {
                Access::ReadWrite
            }
            DocKind::Stock => Access::Read,
        },
    }
}

/// One tenant's catalog, as far as authorization needs it.
#[derive(Debug)]
struct TenantCatalog {
    document_id: DocumentId,
    heads: Vec<ChangeHash>,
    /// Location id -> the seller it belongs to.
    location_sellers: HashMap<String, String>,
}

impl TenantCatalog {
    fn read(document_id: DocumentId, doc: &Automerge) -> Self {
        let location_sellers = read_catalog(doc)
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

    /// A document changed or was read; if it is a catalog, its tenant's
    /// entry is brought up to date. The first catalog document recorded for
    /// a tenant is the tenant's catalog; another one is ignored (logged).
    pub fn observe(&mut self, document_id: DocumentId, doc: &Automerge, meta: &DocMeta) {
        if meta.kind != DocKind::Catalog {
            return;
        }
        let tenant = meta.tenant.as_str();
        if let Some(known) = self.tenants.get(tenant) {
            if known.document_id != document_id {
                warn!(%document_id, tenant, catalog = %known.document_id,
                    "a second catalog document for the tenant is ignored for authorization");
                return;
            }
            if known.heads == doc.get_heads() {
                return;
            }
        } else {
            match self.recorded_catalog(tenant) {
                Some(recorded) if recorded != document_id => {
                    warn!(%document_id, tenant, catalog = %recorded,
                        "a second catalog document for the tenant is ignored for authorization");
                    return;
                }
                Some(_) => {}
                None => {
                    let key = catalog_key(tenant);
                    if let Err(error) = self.store.meta_put(&key, document_id.as_bytes()) {
                        warn!(%document_id, tenant, "cannot record the tenant's catalog: {error}");
                    }
                }
            }
        }
        self.tenants
            .insert(tenant.to_string(), TenantCatalog::read(document_id, doc));
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
        match self.store.meta_get(&catalog_key(tenant)) {
            Ok(Some(bytes)) => match <[u8; 16]>::try_from(bytes.as_slice()) {
                Ok(bytes) => Some(DocumentId::from_bytes(bytes)),
                Err(_) => {
                    warn!(tenant, "the recorded catalog id is corrupt");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                warn!(tenant, "cannot read the tenant's catalog id: {error}");
                None
            }
        }
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

/// The [`AccessPolicy`] of one authenticated connection.
#[derive(Debug)]
pub struct ConnectionAccess {
    identity: Identity,
    /// `<tenant>/<device>`: what this connection's actors are bound to.
    device: String,
    catalogs: SharedCatalogIndex,
    actors: SharedActorBindings,
}

impl ConnectionAccess {
    pub fn new(
        identity: Identity,
        catalogs: SharedCatalogIndex,
        actors: SharedActorBindings,
    ) -> Self {
        let device = format!("{}/{}", identity.tenant, identity.device);
        Self {
            identity,
            device,
            catalogs,
            actors,
        }
    }
}

impl AccessPolicy for ConnectionAccess {
    fn access(&mut self, document_id: &DocumentId, doc: &Automerge) -> Access {
        let class = DocClass::of(doc);
        let mut catalogs = self.catalogs.lock().unwrap_or_else(PoisonError::into_inner);
        let location_seller = match &class {
            DocClass::Domain(meta) => {
                catalogs.observe(*document_id, doc, meta);
                let needed = meta.kind == DocKind::Stock
                    && self.identity.role == Role::Seller
                    && meta.tenant.as_str() == self.identity.tenant;
                if needed {
                    catalogs.location_seller(&self.identity.tenant, &meta.owner)
                } else {
                    None
                }
            }
            DocClass::NoMeta => None,
        };
        decide(&self.identity, &class, location_seller.as_deref())
    }

    /// Binds the actors nobody has yet to this device; refuses the message
    /// if one of them belongs to another device (the office may relay).
    /// Nothing is bound when the message is refused.
    fn admit_actors(&mut self, document_id: &DocumentId, actors: &[ActorId]) -> Result<(), Denial> {
        if let Some(actor) = actors
            .iter()
            .find(|actor| actor.to_bytes().len() > ACTOR_ID_BYTES_MAX)
        {
            return Err(Denial {
                reason: format!(
                    "actor id of {} bytes (max {ACTOR_ID_BYTES_MAX})",
                    actor.to_bytes().len()
                ),
            });
        }
        let mut bindings = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        let cannot_check = |error: StoreError| {
            warn!(%document_id, "cannot read or record an actor binding: {error}");
            Denial {
                reason: "the server cannot check who wrote these changes now; try again later"
                    .to_string(),
            }
        };
        let mut unbound = Vec::new();
        for actor in actors {
            match bindings.owner(actor).map_err(cannot_check)? {
                ActorOwner::Nobody => unbound.push(actor),
                ActorOwner::Server => {
                    return Err(Denial {
                        reason: format!("changes by actor {actor}, which is the server's"),
                    })
                }
                ActorOwner::Device(device) if device == self.device => {}
                // The office may hand in other devices' changes.
                ActorOwner::Device(_) if self.identity.role == Role::Office => {}
                ActorOwner::Device(_) => {
                    return Err(Denial {
                        reason: format!(
                            "changes by actor {actor}, which belongs to another device"
                        ),
                    })
                }
            }
        }
        for actor in unbound {
            bindings.bind(actor, &self.device).map_err(cannot_check)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        create_catalog_doc, create_device_doc, create_ledger_doc, create_stock_doc, put_location,
        DeviceId, Location, LocationId, LocationKind, Period, SellerId, TenantId,
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

    fn domain(doc: &Automerge) -> DocClass {
        let class = DocClass::of(doc);
        assert!(matches!(class, DocClass::Domain(_)), "{class:?}");
        class
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

    fn row(class: &DocClass, tenant: &str, location_seller: Option<&str>) -> [Access; 4] {
        identities(tenant).map(|who| decide(&who, class, location_seller))
    }

    #[test]
    fn documents_without_meta_are_only_for_the_office() {
        let empty = DocClass::of(&Automerge::new());
        assert_eq!(empty, DocClass::NoMeta);
        assert_eq!(
            row(&empty, "acme", None),
            [ReadWrite, Hidden, Hidden, Hidden]
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
        let mut as_ana = ConnectionAccess::new(ana.clone(), Arc::clone(&catalogs), actors(&store));
        let mut as_bob = ConnectionAccess::new(bob.clone(), Arc::clone(&catalogs), actors(&store));
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
            &doc_meta(&reassigned).expect("meta"),
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
            CatalogIndex::shared(Arc::clone(&store)),
            actors(&store),
        );
        assert_eq!(fresh.access(&stock_id, &stock), ReadWrite);
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
            ConnectionAccess::new(who.clone(), Arc::clone(&catalogs), Arc::clone(bindings))
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
}
