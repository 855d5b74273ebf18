//! Durable storage for ventas: Automerge documents as opaque bytes, plus a
//! small metadata keyspace. This is the only crate that names sled.
//!
//! The sync core decides *what* to persist; this crate only keeps bytes safe.
//! Data flows through it like this:
//!
//! 1. Each change the server accepts for a document is written with
//!    [`DocStore::append_chunk`] (an incremental Automerge save), which hands
//!    back a per-document sequence number that only ever grows.
//! 2. Writes become durable when the caller calls [`DocStore::flush`]; sled's
//!    own periodic flush is off by default, so the caller decides when to pay
//!    for an fsync (typically once per batch of messages, and at shutdown).
//! 3. [`DocStore::load`] returns the latest snapshot and every chunk after it;
//!    the caller rebuilds the document with `Automerge::load(snapshot)` and
//!    `load_incremental(chunk)` for each chunk, in order.
//! 4. Now and then the caller saves the whole document and calls
//!    [`DocStore::compact`] with the sequence number the snapshot covers; the
//!    snapshot replaces those chunks in one atomic batch.
//!
//! The crate knows nothing of Automerge, peers or the network: a document is a
//! [`DocKey`] and some bytes. Everything stored is bounded by the limits below,
//! and bad bytes on disk come back as [`StoreError::Corrupt`], never a panic.
//!
//! ```
//! use ventas_storage::{DocStore, SledStore, StoredDoc};
//!
//! # fn main() -> Result<(), ventas_storage::StoreError> {
//! let store = SledStore::temporary()?;
//! let doc = [7u8; 16];
//! assert_eq!(store.append_chunk(&doc, b"change 1")?, 1);
//! assert_eq!(store.append_chunk(&doc, b"change 2")?, 2);
//! store.compact(&doc, b"snapshot of 1 and 2", 2)?;
//! assert_eq!(store.append_chunk(&doc, b"change 3")?, 3);
//! store.flush()?;
//! assert_eq!(
//!     store.load(&doc)?,
//!     Some(StoredDoc {
//!         snapshot: Some(b"snapshot of 1 and 2".to_vec()),
//!         chunks: vec![b"change 3".to_vec()],
//!         last_chunk_seq: 3,
//!     })
//! );
//! # Ok(())
//! # }
//! ```

mod error;
mod layout;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod sled_store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use error::StoreError;
pub use sled_store::{SledConfig, SledStore, CACHE_CAPACITY_BYTES_DEFAULT, OPEN_LOCK_WAIT_MS_MAX};

/// Opaque document key: the 16 raw bytes of an automerge-repo DocumentId.
pub type DocKey = [u8; 16];

/// Largest incremental chunk [`DocStore::append_chunk`] accepts, in bytes.
pub const CHUNK_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest snapshot [`DocStore::compact`] accepts, in bytes.
pub const SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Most chunks a document may hold after its snapshot. Past this,
/// [`DocStore::append_chunk`] returns [`StoreError::CompactionRequired`]; it
/// bounds the work and memory of a [`DocStore::load`].
pub const PENDING_CHUNKS_MAX: u64 = 100_000;

/// Most bytes of chunks a document may hold after its snapshot. Past this,
/// [`DocStore::append_chunk`] returns [`StoreError::CompactionRequired`].
/// With [`SNAPSHOT_BYTES_MAX`] it bounds the memory of one
/// [`DocStore::load`].
pub const PENDING_CHUNK_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Longest metadata key, in bytes.
pub const META_KEY_BYTES_MAX: u64 = 1024;

/// Largest metadata value, in bytes. The metadata keyspace is for small
/// records (sync sessions, export watermarks), not documents.
pub const META_VALUE_BYTES_MAX: u64 = 64 * 1024;

/// Largest `limit` that [`DocStore::list_docs`] and
/// [`DocStore::meta_scan_prefix_rev`] accept, in entries.
pub const LIST_LIMIT_MAX: usize = 1000;

/// One metadata record as [`DocStore::meta_scan_prefix_rev`] returns it:
/// `(key, value)`.
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// What [`DocStore::load`] returns: the latest compacted snapshot (if any)
/// and every incremental chunk appended after it, in append order.
///
/// Loading is `Automerge::load(snapshot)` then `load_incremental(chunk)` for
/// each chunk; the caller does that, this crate never parses the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    pub snapshot: Option<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
    /// The highest sequence number ever handed out for this document (0 if
    /// no chunk was ever appended). Every change through it is in `snapshot`
    /// or `chunks`, so it is the right `covers_through_seq` for a
    /// [`DocStore::compact`] of a snapshot saved from this load.
    pub last_chunk_seq: u64,
}

/// What [`DocStore::load_after`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedAfter {
    /// Every change through the given seq is still in chunks the caller has
    /// seen: only the chunks after it, in order (possibly none).
    Chunks {
        chunks: Vec<Vec<u8>>,
        last_chunk_seq: u64,
    },
    /// A compaction folded chunks the caller has not seen into the
    /// snapshot: the whole document, as [`DocStore::load`] returns it.
    Whole(StoredDoc),
}

/// A store of documents and metadata. [`SledStore`] is the implementation;
/// the trait exists so the rest of ventas never names sled, and so
/// `Arc<dyn DocStore>` can be shared across tasks.
///
/// Every method is a blocking call (sled does its own I/O); async callers
/// should run them on a blocking-friendly thread.
pub trait DocStore: Send + Sync + 'static {
    /// The document's snapshot and chunks, or `None` if the document was
    /// never stored.
    fn load(&self, doc: &DocKey) -> Result<Option<StoredDoc>, StoreError>;

    /// What changed since a reader last loaded through chunk `after_seq`
    /// (its `last_chunk_seq`): only the newer chunks, unless a compaction
    /// has since moved them into the snapshot. `None` if never stored.
    fn load_after(&self, doc: &DocKey, after_seq: u64) -> Result<Option<LoadedAfter>, StoreError>;

    /// Appends one incremental chunk (not yet durable until [`flush`]).
    /// Returns its sequence number: strictly increasing per document,
    /// starting at 1, never reused, not even across compactions and restarts.
    ///
    /// [`flush`]: DocStore::flush
    fn append_chunk(&self, doc: &DocKey, chunk: &[u8]) -> Result<u64, StoreError>;

    /// Atomically stores `snapshot` as the document's snapshot and deletes
    /// every chunk with seq <= `covers_through_seq`; chunks appended after
    /// `covers_through_seq` are kept.
    ///
    /// Crash-safe: if the process dies at any point, a later `load` sees
    /// either the old snapshot and all chunks, or the new snapshot and the
    /// chunks after `covers_through_seq`; never a state missing a change.
    ///
    /// A compaction older than the stored snapshot (`covers_through_seq`
    /// below what the stored snapshot covers) is a no-op: the stored snapshot
    /// already holds more. Compacting a document that was never stored (with
    /// `covers_through_seq` 0) creates it from the snapshot alone.
    fn compact(
        &self,
        doc: &DocKey,
        snapshot: &[u8],
        covers_through_seq: u64,
    ) -> Result<(), StoreError>;

    /// Makes every previous write durable (fsync).
    fn flush(&self) -> Result<(), StoreError>;

    /// Whether the document exists (cheap; no chunk is read).
    fn contains(&self, doc: &DocKey) -> Result<bool, StoreError>;

    /// Number of documents stored (one record read).
    fn doc_count(&self) -> Result<u64, StoreError>;

    /// A page of document keys in key order, strictly after `after` if
    /// given, at most `limit` (<= [`LIST_LIMIT_MAX`]) of them. Pass the last
    /// key of a page as `after` to get the next; an empty page is the end.
    fn list_docs(&self, after: Option<&DocKey>, limit: usize) -> Result<Vec<DocKey>, StoreError>;

    /// Stores a metadata record (sync sessions, export watermarks), in a
    /// keyspace separate from documents. Not durable until [`flush`].
    ///
    /// [`flush`]: DocStore::flush
    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// The metadata record under `key`, if any.
    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes the metadata record under `key`; removing a missing key is
    /// not an error.
    fn meta_remove(&self, key: &[u8]) -> Result<(), StoreError>;

    /// Removes the metadata record under `key` only if it still holds
    /// exactly `expected` (an atomic compare-and-remove). Returns whether it
    /// was removed; a record rewritten meanwhile stays. Used to clear a
    /// marker without losing one set again while its work was being done.
    fn meta_remove_if(&self, key: &[u8], expected: &[u8]) -> Result<bool, StoreError>;

    /// Replaces the metadata record under `key` with `new` only if it still
    /// holds exactly `expected` (atomic). Returns whether it was replaced.
    fn meta_replace_if(&self, key: &[u8], expected: &[u8], new: &[u8]) -> Result<bool, StoreError>;

    /// Metadata entries whose key starts with `prefix`, in descending key
    /// order (newest first when keys embed a big-endian increasing id),
    /// starting strictly before `before` if given, at most `limit`
    /// (<= [`LIST_LIMIT_MAX`]). Pass the last key of a page as `before` to
    /// get the next; an empty page is the end.
    fn meta_scan_prefix_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<MetaEntry>, StoreError>;

    /// A process-wide id that only grows, also across restarts and crashes
    /// (not contiguous: a restart skips ahead), for session ids and the like.
    fn next_id(&self) -> Result<u64, StoreError>;
}

/// Forwards every call, so `Arc<SledStore>` and `Arc<dyn DocStore>` are
/// stores too.
impl<T: DocStore + ?Sized> DocStore for Arc<T> {
    fn load(&self, doc: &DocKey) -> Result<Option<StoredDoc>, StoreError> {
        (**self).load(doc)
    }

    fn load_after(&self, doc: &DocKey, after_seq: u64) -> Result<Option<LoadedAfter>, StoreError> {
        (**self).load_after(doc, after_seq)
    }

    fn append_chunk(&self, doc: &DocKey, chunk: &[u8]) -> Result<u64, StoreError> {
        (**self).append_chunk(doc, chunk)
    }

    fn compact(
        &self,
        doc: &DocKey,
        snapshot: &[u8],
        covers_through_seq: u64,
    ) -> Result<(), StoreError> {
        (**self).compact(doc, snapshot, covers_through_seq)
    }

    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }

    fn contains(&self, doc: &DocKey) -> Result<bool, StoreError> {
        (**self).contains(doc)
    }

    fn doc_count(&self) -> Result<u64, StoreError> {
        (**self).doc_count()
    }

    fn list_docs(&self, after: Option<&DocKey>, limit: usize) -> Result<Vec<DocKey>, StoreError> {
        (**self).list_docs(after, limit)
    }

    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).meta_put(key, value)
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).meta_get(key)
    }

    fn meta_remove(&self, key: &[u8]) -> Result<(), StoreError> {
        (**self).meta_remove(key)
    }

    fn meta_remove_if(&self, key: &[u8], expected: &[u8]) -> Result<bool, StoreError> {
        (**self).meta_remove_if(key, expected)
    }

    fn meta_replace_if(&self, key: &[u8], expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        (**self).meta_replace_if(key, expected, new)
    }

    fn meta_scan_prefix_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<MetaEntry>, StoreError> {
        (**self).meta_scan_prefix_rev(prefix, before, limit)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        (**self).next_id()
    }
}
