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
//! ```
//! use ventas::server::owners::DocOwner;
//! let plain = DocOwner::plain("acme");
//! assert_eq!(plain.tenant, "acme");
//! assert!(plain.kind.is_none());
//! ```

use serde::{Deserialize, Serialize};
use ventas_storage::{DocStore, StoreError};
use ventas_sync_protocol::ids::DocumentId;

use crate::domain::{DocKind, DocMeta};

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
}
