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

use automerge::{Automerge, ChangeHash};
use tracing::warn;
use ventas_storage::DocStore;
use ventas_sync_protocol::hub::{Access, AccessPolicy};
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
                Role::Seller | Role::Reporting => Access::Hidden,
            }
        }
        DocClass::Domain(meta) => meta,
    };
    if meta.tenant.as_str() != identity.tenant {
        return Access::Hidden;
    }
    match identity.role {
        Role::Office => Access::ReadWrite,
        Role::Reporting => Access::Read,
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
        let mut doc = match &stored.snapshot {
            Some(snapshot) => Automerge::load(snapshot).ok()?,
            None => Automerge::new(),
        };
        for chunk in &stored.chunks {
            if let Err(error) = doc.load_incremental(chunk) {
                warn!(%document_id, "the stored catalog is corrupt: {error}");
                return None;
            }
        }
        Some(doc)
    }
}

fn catalog_key(tenant: &str) -> Vec<u8> {
    let mut key = CATALOG_OF_PREFIX.to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

/// The [`AccessPolicy`] of one authenticated connection.
#[derive(Debug)]
pub struct ConnectionAccess {
    identity: Identity,
    catalogs: SharedCatalogIndex,
}

impl ConnectionAccess {
    pub fn new(identity: Identity, catalogs: SharedCatalogIndex) -> Self {
        Self { identity, catalogs }
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
        let mut as_ana = ConnectionAccess::new(ana.clone(), Arc::clone(&catalogs));
        let mut as_bob = ConnectionAccess::new(bob.clone(), Arc::clone(&catalogs));
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
        let mut fresh = ConnectionAccess::new(ana, CatalogIndex::shared(store));
        assert_eq!(fresh.access(&stock_id, &stock), ReadWrite);
    }
}
