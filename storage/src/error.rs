//! [`StoreError`]: everything that can go wrong in a store call.
//!
//! Errors fall in three groups: the world failed us (`Io`, `Engine`), the
//! bytes on disk are not what we wrote (`Corrupt`), or the caller asked for
//! something outside the limits (`TooLarge`, `CompactionRequired`,
//! `CompactBeyondLastSeq`, `LimitTooLarge`, `InvalidConfig`). "Not found" is
//! not an error: it is `Ok(None)`. sled's error type stays private, so
//! callers never name sled.
//!
//! ```
//! use ventas_storage::{DocStore, SledStore, StoreError};
//! # fn main() -> Result<(), StoreError> {
//! let store = SledStore::temporary()?;
//! let err = store.compact(&[1; 16], b"snapshot", 5).unwrap_err();
//! assert!(matches!(err, StoreError::CompactBeyondLastSeq { covers_through_seq: 5, last_seq: 0 }));
//! # Ok(())
//! # }
//! ```

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system failed (disk full, permissions, the store directory
    /// locked by another process, ...).
    #[error("storage i/o: {0}")]
    Io(#[source] std::io::Error),

    /// The storage engine refused the call or hit an internal bug.
    #[error("storage engine: {0}")]
    Engine(String),

    /// A record on disk is not one this crate could have written. `key` is
    /// the raw key of the offending record (empty when the engine itself
    /// found the corruption).
    #[error("corrupt record (key {key:02x?}): {reason}")]
    Corrupt { key: Vec<u8>, reason: &'static str },

    /// A value or key is over its limit; nothing was written.
    #[error("{what} is {bytes} bytes, over the limit of {limit_bytes} bytes")]
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit_bytes: u64,
    },

    /// The document holds so many chunks after its snapshot that one more
    /// would pass [`PENDING_CHUNKS_MAX`](crate::PENDING_CHUNKS_MAX) or
    /// [`PENDING_CHUNK_BYTES_MAX`](crate::PENDING_CHUNK_BYTES_MAX); compact
    /// it, then append again. Nothing was written.
    #[error(
        "document holds {chunk_count} chunks ({chunk_bytes} bytes) after its snapshot; \
         compact it before appending more"
    )]
    CompactionRequired { chunk_count: u64, chunk_bytes: u64 },

    /// `compact` was asked to cover a sequence number that was never handed
    /// out; that snapshot cannot be from this store's chunks.
    #[error(
        "compaction covers through seq {covers_through_seq} \
         but the document's last seq is {last_seq}"
    )]
    CompactBeyondLastSeq {
        covers_through_seq: u64,
        last_seq: u64,
    },

    /// A listing `limit` over [`LIST_LIMIT_MAX`](crate::LIST_LIMIT_MAX).
    #[error("list limit {limit} is over the maximum of {limit_max}")]
    LimitTooLarge { limit: usize, limit_max: usize },

    /// A [`SledConfig`](crate::SledConfig) field is out of range.
    #[error("invalid storage config: {0}")]
    InvalidConfig(&'static str),
}

impl StoreError {
    pub(crate) fn corrupt(key: &[u8], reason: &'static str) -> Self {
        StoreError::Corrupt {
            key: key.to_vec(),
            reason,
        }
    }
}

/// Converts sled's error without exposing its type in our public API.
pub(crate) fn from_sled(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(io) => StoreError::Io(io),
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            key: Vec::new(),
            reason: "the storage engine found corrupt data on disk",
        },
        other => StoreError::Engine(other.to_string()),
    }
}
