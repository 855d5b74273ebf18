//! Who a document belongs to, as the server recorded it when the document
//! was created: the tenant always, and for ventas documents the kind, owner
//! and period its first `meta` map named.
//!
//! Access decisions read this record, never the document's `meta` map: a
//! later change could alter that map, the record cannot be altered by any
//! peer. Records live in the metadata keyspace under `doc-owner/<16 id
//! bytes>` as JSON, written once (see [`record`]) in the same sled epoch as
//! the document's first chunk, so a flushed document always has its record.
//!
//! Documents stored before records existed have none: the first time the
//! server looks at such a document ([`OwnerRecords::owner_of`]), a ventas
//! document is recorded from its `meta` as it stands then (before any
//! change of a credentialed connection can apply, since the policy asks
//! first), and a plain one stays unowned, hidden from every credential (a
//! connection without credentials, authentication off, still sees it).
//!
//! ```
//! use ventas::server::owners::DocOwner;
//! let plain = DocOwner::plain("acme");
//! assert_eq!(plain.tenant, "acme");
//! assert!(plain.kind.is_none());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use serde::{Deserialize, Serialize};
use ventas_storage::{DocStore, StoreError};
use ventas_sync_protocol::ids::DocumentId;

use crate::domain::{doc_meta, DocKind, DocMeta};

/// Ownership records kept in memory; past it the cache starts afresh (the
/// store holds every record).
pub const DOC_OWNERS_CACHED_MAX: usize = 65_536;

/// Metadata key prefix of ownership records.
pub const OWNER_PREFIX: &[u8] = b"doc-owner/";

/// Longest ownership record, in bytes. A document's first `meta` is peer
/// input: a record past this is refused, not written.
pub const OWNER_RECORD_BYTES_MAX: usize = 1_024;

/// The server's record of who a document belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocOwner {
    /// The tenant of the credential that created the document (for a ventas
    /// document, also the tenant its first `meta` names: they must agree).
    pub tenant: String,
    /// `catalog`, `device`, `ledger` or `stock`; `None` for a plain
    /// (non-ventas) document.
    pub kind: Option<String>,
    /// Device id, seller id or location id (the `meta.owner` at creation).
    pub owner: Option<String>,
    /// `YYYY-MM` of a ledger or stock document.
    pub period: Option<String>,
}

impl DocOwner {
    /// A plain document created by a connection of `tenant`.
    pub fn plain(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            kind: None,
            owner: None,
            period: None,
        }
    }

    /// A ventas document as its first `meta` describes it.
    pub fn of_meta(meta: &DocMeta) -> Self {
        Self {
            tenant: meta.tenant.as_str().to_string(),
            kind: Some(meta.kind.as_str().to_string()),
            owner: Some(meta.owner.clone()),
            period: meta.period.map(|period| period.to_string()),
        }
    }

    /// The recorded kind, if it is a ventas kind.
    pub fn doc_kind(&self) -> Option<DocKind> {
        self.kind.as_deref().and_then(DocKind::parse)
    }
}

/// Errors reading ownership records.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ownership record of {document_id} is unreadable: {reason}")]
    Corrupt {
        document_id: DocumentId,
        reason: String,
    },
    #[error("the ownership record of {document_id} would be {bytes} bytes (max {OWNER_RECORD_BYTES_MAX})")]
    TooLarge {
        document_id: DocumentId,
        bytes: usize,
    },
}

/// The metadata key of `document_id`'s ownership record.
pub fn owner_key(document_id: &DocumentId) -> Vec<u8> {
    let mut key = OWNER_PREFIX.to_vec();
    key.extend_from_slice(document_id.as_bytes());
    key
}

/// The recorded owner of `document_id`, if the server recorded one.
pub fn read(
    store: &dyn DocStore,
    document_id: &DocumentId,
) -> Result<Option<DocOwner>, OwnerError> {
    let Some(bytes) = store.meta_get(&owner_key(document_id))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| OwnerError::Corrupt {
            document_id: *document_id,
            reason: error.to_string(),
        })
}

/// Records `owner` for `document_id` (durable with the store's next flush).
pub fn record(
    store: &dyn DocStore,
    document_id: &DocumentId,
    owner: &DocOwner,
) -> Result<(), OwnerError> {
    let bytes = serde_json::to_vec(owner).map_err(|error| OwnerError::Corrupt {
        document_id: *document_id,
        reason: error.to_string(),
    })?;
    if bytes.len() > OWNER_RECORD_BYTES_MAX {
        return Err(OwnerError::TooLarge {
            document_id: *document_id,
            bytes: bytes.len(),
        });
    }
    store.meta_put(&owner_key(document_id), &bytes)?;
    Ok(())
}

/// Who a document belongs to, as [`OwnerRecords::owner_of`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No change and no record: nobody created it yet.
    New,
    /// Stored before records existed, without a readable `meta`.
    Unowned,
    /// Recorded (the document may still be empty if its creation failed
    /// after the record was written; it is then its tenant's to create).
    Owned(DocOwner),
}

/// The ownership records, with a bounded cache (records never change, so
/// a cached one is never stale). Shared by the hub task's access policies.
pub struct OwnerRecords {
    store: Arc<dyn DocStore>,
    cache: HashMap<DocumentId, DocOwner>,
}

impl fmt::Debug for OwnerRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerRecords")
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// The records as the hub task shares them with its connections' policies.
pub type SharedOwnerRecords = Arc<Mutex<OwnerRecords>>;

impl OwnerRecords {
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self {
            store,
            cache: HashMap::new(),
        }
    }

    pub fn shared(store: Arc<dyn DocStore>) -> SharedOwnerRecords {
        Arc::new(Mutex::new(Self::new(store)))
    }

    /// The record of `document_id`, if any.
    pub fn get(&mut self, document_id: &DocumentId) -> Result<Option<DocOwner>, OwnerError> {
        if let Some(owner) = self.cache.get(document_id) {
            return Ok(Some(owner.clone()));
        }
        let owner = read(self.store.as_ref(), document_id)?;
        if let Some(owner) = &owner {
            self.remember(document_id, owner);
        }
        Ok(owner)
    }

    /// Records `owner` for `document_id` (see [`record`]).
    pub fn record(&mut self, document_id: &DocumentId, owner: &DocOwner) -> Result<(), OwnerError> {
        record(self.store.as_ref(), document_id, owner)?;
        self.remember(document_id, owner);
        Ok(())
    }

    /// Who `doc` (the document as the server holds it) belongs to: its
    /// record; else, for a stored document from before records, its
    /// current `meta`, recorded now (see the module documentation).
    pub fn owner_of(
        &mut self,
        document_id: &DocumentId,
        doc: &Automerge,
    ) -> Result<Ownership, OwnerError> {
        if let Some(owner) = self.get(document_id)? {
            return Ok(Ownership::Owned(owner));
        }
        if doc.get_heads().is_empty() {
            return Ok(Ownership::New);
        }
        match doc_meta(doc) {
            Ok(meta) => {
                let owner = DocOwner::of_meta(&meta);
                self.record(document_id, &owner)?;
                Ok(Ownership::Owned(owner))
            }
            Err(_) => Ok(Ownership::Unowned),
        }
    }

    fn remember(&mut self, document_id: &DocumentId, owner: &DocOwner) {
        if self.cache.len() >= DOC_OWNERS_CACHED_MAX {
            self.cache.clear();
        }
        self.cache.insert(*document_id, owner.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use ventas_storage::SledStore;

    #[test]
    fn a_record_reads_back_and_a_missing_one_is_none() {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let document_id = DocumentId::from_bytes([3; 16]);
        assert_eq!(read(store.as_ref(), &document_id).expect("read"), None);
        let owner = DocOwner::plain("acme");
        record(store.as_ref(), &document_id, &owner).expect("record");
        assert_eq!(
            read(store.as_ref(), &document_id).expect("read"),
            Some(owner)
        );
    }

    #[test]
    fn a_document_from_before_records_is_recorded_from_its_meta_once() {
        use crate::domain::{create_catalog_doc, TenantId};
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let mut records = OwnerRecords::new(Arc::clone(&store));
        let (old, plain, empty) = (
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
            DocumentId::from_bytes([3; 16]),
        );
        let catalog = create_catalog_doc(&TenantId::new("acme").expect("id")).expect("doc");
        let Ownership::Owned(owner) = records.owner_of(&old, &catalog).expect("read") else {
            panic!("recorded from meta");
        };
        assert_eq!(owner.tenant, "acme");
        assert_eq!(owner.doc_kind(), Some(DocKind::Catalog));
        assert_eq!(read(store.as_ref(), &old).expect("read"), Some(owner));

        let mut sales = Automerge::new();
        let mut tx = sales.transaction();
        automerge::transaction::Transactable::put_object(
            &mut tx,
            automerge::ROOT,
            "sales",
            automerge::ObjType::List,
        )
        .expect("list");
        tx.commit();
        assert_eq!(
            records.owner_of(&plain, &sales).expect("read"),
            Ownership::Unowned
        );
        assert_eq!(
            records.owner_of(&empty, &Automerge::new()).expect("read"),
            Ownership::New
        );
    }
}
