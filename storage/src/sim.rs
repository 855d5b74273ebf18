//! [`SimDisk`]: an in-memory [`DocStore`] with a page cache that a test can
//! lose, for power-loss tests (compiled with the `sim` feature, or for this
//! crate's own tests).
//!
//! A process kill cannot tell "acknowledged, then fsynced" from "fsynced,
//! then acknowledged": the kernel's page cache survives the process and
//! writes it out anyway. Only a lost page cache can, so this disk keeps two
//! images: what a reader sees (every write so far) and what is durable
//! (every write up to the last [`DocStore::flush`] that returned `Ok`).
//! [`SimDisk::power_loss`] throws the volatile image away and hands back a
//! fresh disk that boots from what survived; the old handle answers every
//! later call with an I/O error, as a dead machine would.
//!
//! Flushes can be held: after [`SimDisk::hold_flushes`] every `flush` call
//! blocks until the test calls [`SimDisk::release_flushes`] (the flush then
//! makes durable exactly the writes made before the call began, as an fsync
//! does) or cuts the power (the flush fails, nothing more is durable). So a
//! test can stop the world at "write done, flush in flight" and look at what
//! the server has told its peers; that order is what the test checks.
//!
//! Every store write is atomic (sled applies a batch whole or not at all and
//! recovers a prefix of its log; a torn record fails its checksum and is
//! dropped with everything after it). So a power cut keeps the durable image
//! plus a prefix of the writes since: none with [`PowerCut::LoseUnflushed`],
//! a seeded number with [`PowerCut::KeepPrefix`] (the last of them "torn"
//! means it and every later one is gone).
//!
//! ```
//! use ventas_storage::sim::{PowerCut, SimDisk};
//! use ventas_storage::DocStore;
//! # fn main() -> Result<(), ventas_storage::StoreError> {
//! let disk = SimDisk::new();
//! disk.append_chunk(&[1; 16], b"durable")?;
//! disk.flush()?;
//! disk.append_chunk(&[1; 16], b"only in the page cache")?;
//! let rebooted = disk.power_loss(PowerCut::LoseUnflushed);
//! assert!(disk.load(&[1; 16]).is_err(), "the old disk is dead");
//! let survived = rebooted.load(&[1; 16])?.expect("stored");
//! assert_eq!(survived.chunks, vec![b"durable".to_vec()]);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::layout::byte_len;
use crate::sled_store::{check_limit, check_room_for_chunk, check_size, prefix_scan_upper_bound};
use crate::{
    DocKey, DocStore, LoadedAfter, MetaEntry, StoreError, StoredDoc, CHUNK_BYTES_MAX,
    META_KEY_BYTES_MAX, META_VALUE_BYTES_MAX, SNAPSHOT_BYTES_MAX,
};

/// How far [`DocStore::next_id`] skips ahead after a power cut, like sled's
/// id reservations: ids handed out before the cut are never handed out
/// again, whether or not they were flushed.
const NEXT_ID_SKIP_AFTER_BOOT: u64 = 1_000_000;

/// What survives a [`SimDisk::power_loss`] beyond the durable image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// Nothing written since the last completed flush survives.
    LoseUnflushed,
    /// A prefix of the unflushed writes survives, its length chosen by the
    /// seed (possibly none, possibly all); the write after it was torn.
    KeepPrefix { seed: u64 },
}

/// One document as the disk holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SimDoc {
    last_seq: u64,
    /// `(covers_through_seq, bytes)`.
    snapshot: Option<(u64, Vec<u8>)>,
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl SimDoc {
    fn chunk_bytes(&self) -> u64 {
        self.chunks
            .values()
            .fold(0u64, |sum, chunk| sum.saturating_add(byte_len(chunk)))
    }

    fn stored(&self) -> StoredDoc {
        StoredDoc {
            snapshot: self.snapshot.as_ref().map(|(_, bytes)| bytes.clone()),
            chunks: self.chunks.values().cloned().collect(),
            last_chunk_seq: self.last_seq,
        }
    }
}

/// Everything a disk holds at one moment.
#[derive(Debug, Clone, Default)]
struct Image {
    docs: BTreeMap<DocKey, SimDoc>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// One write, already checked against the limits, as it goes to the log.
#[derive(Debug, Clone)]
enum Write {
    Append {
        doc: DocKey,
        seq: u64,
        chunk: Vec<u8>,
    },
    Compact {
        doc: DocKey,
        covers_through_seq: u64,
        snapshot: Vec<u8>,
    },
    MetaPut {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    MetaRemove {
        key: Vec<u8>,
    },
}

impl Image {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Append { doc, seq, chunk } => {
                let sim_doc = self.docs.entry(*doc).or_default();
                sim_doc.last_seq = *seq;
                sim_doc.chunks.insert(*seq, chunk.clone());
            }
            Write::Compact {
                doc,
                covers_through_seq,
                snapshot,
            } => {
                let sim_doc = self.docs.entry(*doc).or_default();
                sim_doc.snapshot = Some((*covers_through_seq, snapshot.clone()));
                sim_doc.chunks.retain(|&seq, _| seq > *covers_through_seq);
            }
            Write::MetaPut { key, value } => {
                self.meta.insert(key.clone(), value.clone());
            }
            Write::MetaRemove { key } => {
                self.meta.remove(key);
            }
        }
    }
}

/// The disk's state, behind one lock.
#[derive(Debug)]
struct State {
    powered: bool,
    durable: Image,
    volatile: Image,
    /// Writes since the durable image, oldest first.
    unflushed: Vec<Write>,
    /// Writes ever made on this boot (the log position).
    position: u64,
    /// Log position the durable image holds.
    durable_position: u64,
    /// Log position of each document's last write on this boot.
    last_write_position: BTreeMap<DocKey, u64>,
    holding: bool,
    /// Held flush calls: ticket -> the log position they make durable.
    held: BTreeMap<u64, u64>,
    next_ticket: u64,
    next_id: u64,
    /// Flush calls that returned `Ok`.
    flushes_completed: u64,
}

impl State {
    fn booted_from(image: Image, next_id: u64) -> Self {
        State {
            powered: true,
            durable: image.clone(),
            volatile: image,
            unflushed: Vec::new(),
            position: 0,
            durable_position: 0,
            last_write_position: BTreeMap::new(),
            holding: false,
            held: BTreeMap::new(),
            next_ticket: 0,
            next_id,
            flushes_completed: 0,
        }
    }

    fn check_powered(&self) -> Result<(), StoreError> {
        if self.powered {
            Ok(())
        } else {
            Err(StoreError::Io(std::io::Error::other(
                "simulated disk lost power",
            )))
        }
    }

    fn write(&mut self, doc: Option<DocKey>, write: Write) {
        self.volatile.apply(&write);
        self.unflushed.push(write);
        self.position = self.position.saturating_add(1);
        if let Some(doc) = doc {
            self.last_write_position.insert(doc, self.position);
        }
    }

    /// Moves every write up to log position `through` into the durable
    /// image (an fsync that began when the log was at `through`).
    fn make_durable(&mut self, through: u64) {
        if through <= self.durable_position {
            return;
        }
        let count = usize::try_from(through - self.durable_position).unwrap_or(usize::MAX);
        let count = count.min(self.unflushed.len());
        for write in self.unflushed.drain(..count) {
            self.durable.apply(&write);
        }
        self.durable_position = through;
    }
}

/// The simulated disk; see the module docs.
#[derive(Debug)]
pub struct SimDisk {
    state: Mutex<State>,
    /// Signalled when a held flush is released or the power goes.
    flush_released: Condvar,
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl SimDisk {
    /// An empty disk; flushes complete at once until [`hold_flushes`].
    ///
    /// [`hold_flushes`]: SimDisk::hold_flushes
    pub fn new() -> Self {
        Self::booted_from(Image::default(), 1)
    }

    fn booted_from(image: Image, next_id: u64) -> Self {
        SimDisk {
            state: Mutex::new(State::booted_from(image, next_id)),
            flush_released: Condvar::new(),
        }
    }

    /// The state; a panic elsewhere while it was held cannot leave it half
    /// updated (every update is one step under the lock), so poison is
    /// ignored.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on every `flush` blocks until [`release_flushes`] or
    /// [`power_loss`].
    ///
    /// [`release_flushes`]: SimDisk::release_flushes
    /// [`power_loss`]: SimDisk::power_loss
    pub fn hold_flushes(&self) {
        self.state().holding = true;
    }

    /// Completes every flush held now (each makes durable what was written
    /// before it began); later flushes are held again. Returns how many were
    /// released.
    pub fn release_flushes(&self) -> usize {
        let mut state = self.state();
        let held = std::mem::take(&mut state.held);
        if let Some(through) = held.values().copied().max() {
            state.make_durable(through);
        }
        drop(state);
        self.flush_released.notify_all();
        held.len()
    }

    /// Stops holding flushes and releases those held now.
    pub fn stop_holding_flushes(&self) {
        self.state().holding = false;
        self.release_flushes();
    }

    /// Flush calls blocked now, waiting for a release.
    pub fn held_flushes(&self) -> usize {
        self.state().held.len()
    }

    /// Whether a held flush will, once released, make durable every write
    /// up to log position `position`.
    pub fn held_flush_covers(&self, position: u64) -> bool {
        self.state()
            .held
            .values()
            .any(|&through| through >= position)
    }

    /// Writes made on this boot so far (the log position).
    pub fn position(&self) -> u64 {
        self.state().position
    }

    /// Log position of the last write to `doc` on this boot, if any.
    pub fn last_write_position(&self, doc: &DocKey) -> Option<u64> {
        self.state().last_write_position.get(doc).copied()
    }

    /// Log position the durable image holds.
    pub fn durable_position(&self) -> u64 {
        self.state().durable_position
    }

    /// Flush calls that have returned `Ok` on this boot.
    pub fn flushes_completed(&self) -> u64 {
        self.state().flushes_completed
    }

    /// Cuts the power: this disk fails every later call (held flushes
    /// return an error), and the returned disk boots from what survived:
    /// the durable image plus what `cut` keeps of the unflushed writes.
    pub fn power_loss(&self, cut: PowerCut) -> SimDisk {
        let mut state = self.state();
        state.powered = false;
        state.held.clear();
        let kept = match cut {
            PowerCut::LoseUnflushed => 0,
            PowerCut::KeepPrefix { seed } => {
                let choices = u64::try_from(state.unflushed.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                usize::try_from(split_mix64(seed) % choices).unwrap_or(0)
            }
        };
        let mut survived = state.durable.clone();
        for write in state.unflushed.iter().take(kept) {
            survived.apply(write);
        }
        let next_id = state.next_id.saturating_add(NEXT_ID_SKIP_AFTER_BOOT);
        drop(state);
        self.flush_released.notify_all();
        SimDisk::booted_from(survived, next_id)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): one well-mixed number from a seed,
/// so the storage crate needs no random-number dependency.
fn split_mix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DocStore for SimDisk {
    fn load(&self, doc: &DocKey) -> Result<Option<StoredDoc>, StoreError> {
        let state = self.state();
        state.check_powered()?;
        Ok(state.volatile.docs.get(doc).map(SimDoc::stored))
    }

    fn load_after(&self, doc: &DocKey, after_seq: u64) -> Result<Option<LoadedAfter>, StoreError> {
        let state = self.state();
        state.check_powered()?;
        let Some(sim_doc) = state.volatile.docs.get(doc) else {
            return Ok(None);
        };
        let snapshot_seq = sim_doc.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
        if snapshot_seq > after_seq || after_seq > sim_doc.last_seq {
            return Ok(Some(LoadedAfter::Whole(sim_doc.stored())));
        }
        Ok(Some(LoadedAfter::Chunks {
            chunks: sim_doc
                .chunks
                .range(after_seq.saturating_add(1)..)
                .map(|(_, chunk)| chunk.clone())
                .collect(),
            last_chunk_seq: sim_doc.last_seq,
        }))
    }

    fn append_chunk(&self, doc: &DocKey, chunk: &[u8]) -> Result<u64, StoreError> {
        check_size("chunk", chunk, CHUNK_BYTES_MAX)?;
        let mut state = self.state();
        state.check_powered()?;
        let (last_seq, chunk_count, chunk_bytes) =
            state.volatile.docs.get(doc).map_or((0, 0, 0), |sim_doc| {
                let count = u64::try_from(sim_doc.chunks.len()).unwrap_or(u64::MAX);
                (sim_doc.last_seq, count, sim_doc.chunk_bytes())
            });
        check_room_for_chunk(chunk_count, chunk_bytes, byte_len(chunk))?;
        let Some(seq) = last_seq.checked_add(1) else {
            return Err(StoreError::corrupt(doc, "last seq at u64::MAX"));
        };
        state.write(
            Some(*doc),
            Write::Append {
                doc: *doc,
                seq,
                chunk: chunk.to_vec(),
            },
        );
        Ok(seq)
    }

    fn compact(
        &self,
        doc: &DocKey,
        snapshot: &[u8],
        covers_through_seq: u64,
    ) -> Result<(), StoreError> {
        check_size("snapshot", snapshot, SNAPSHOT_BYTES_MAX)?;
        let mut state = self.state();
        state.check_powered()?;
        let existing = state.volatile.docs.get(doc);
        let last_seq = existing.map_or(0, |sim_doc| sim_doc.last_seq);
        if covers_through_seq > last_seq {
            return Err(StoreError::CompactBeyondLastSeq {
                covers_through_seq,
                last_seq,
            });
        }
        let stale = existing
            .and_then(|sim_doc| sim_doc.snapshot.as_ref())
            .is_some_and(|(old, _)| *old > covers_through_seq);
        if !stale {
            state.write(
                Some(*doc),
                Write::Compact {
                    doc: *doc,
                    covers_through_seq,
                    snapshot: snapshot.to_vec(),
                },
            );
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.state();
        state.check_powered()?;
        let through = state.position;
        if state.holding {
            let ticket = state.next_ticket;
            state.next_ticket = state.next_ticket.saturating_add(1);
            state.held.insert(ticket, through);
            // Released: `release_flushes` made it durable and removed the
            // ticket. Power cut: `power_loss` cleared every ticket.
            while state.held.contains_key(&ticket) {
                state = self
                    .flush_released
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.check_powered()?;
        } else {
            state.make_durable(through);
        }
        state.flushes_completed = state.flushes_completed.saturating_add(1);
        Ok(())
    }

    fn contains(&self, doc: &DocKey) -> Result<bool, StoreError> {
        let state = self.state();
        state.check_powered()?;
        Ok(state.volatile.docs.contains_key(doc))
    }

    fn doc_count(&self) -> Result<u64, StoreError> {
        let state = self.state();
        state.check_powered()?;
        Ok(u64::try_from(state.volatile.docs.len()).unwrap_or(u64::MAX))
    }

    fn list_docs(&self, after: Option<&DocKey>, limit: usize) -> Result<Vec<DocKey>, StoreError> {
        check_limit(limit)?;
        let state = self.state();
        state.check_powered()?;
        let lower = after.map_or(Bound::Unbounded, |after| Bound::Excluded(*after));
        Ok(state
            .volatile
            .docs
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(doc, _)| *doc)
            .collect())
    }

    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_size("metadata key", key, META_KEY_BYTES_MAX)?;
        check_size("metadata value", value, META_VALUE_BYTES_MAX)?;
        let mut state = self.state();
        state.check_powered()?;
        state.write(
            None,
            Write::MetaPut {
                key: key.to_vec(),
                value: value.to_vec(),
            },
        );
        Ok(())
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_size("metadata key", key, META_KEY_BYTES_MAX)?;
        let state = self.state();
        state.check_powered()?;
        Ok(state.volatile.meta.get(key).cloned())
    }

    fn meta_remove(&self, key: &[u8]) -> Result<(), StoreError> {
        check_size("metadata key", key, META_KEY_BYTES_MAX)?;
        let mut state = self.state();
        state.check_powered()?;
        state.write(None, Write::MetaRemove { key: key.to_vec() });
        Ok(())
    }

    fn meta_remove_if(&self, key: &[u8], expected: &[u8]) -> Result<bool, StoreError> {
        check_size("metadata key", key, META_KEY_BYTES_MAX)?;
        let mut state = self.state();
        state.check_powered()?;
        if state.volatile.meta.get(key).map(Vec::as_slice) != Some(expected) {
            return Ok(false);
        }
        state.write(None, Write::MetaRemove { key: key.to_vec() });
        Ok(true)
    }

    fn meta_replace_if(&self, key: &[u8], expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        check_size("metadata key", key, META_KEY_BYTES_MAX)?;
        check_size("metadata value", new, META_VALUE_BYTES_MAX)?;
        let mut state = self.state();
        state.check_powered()?;
        if state.volatile.meta.get(key).map(Vec::as_slice) != Some(expected) {
            return Ok(false);
        }
        state.write(
            None,
            Write::MetaPut {
                key: key.to_vec(),
                value: new.to_vec(),
            },
        );
        Ok(true)
    }

    fn meta_scan_prefix_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<MetaEntry>, StoreError> {
        check_limit(limit)?;
        let state = self.state();
        state.check_powered()?;
        let Some(upper) = prefix_scan_upper_bound(prefix, before) else {
            return Ok(Vec::new());
        };
        Ok(state
            .volatile
            .meta
            .range((Bound::Included(prefix.to_vec()), upper))
            .rev()
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        let mut state = self.state();
        state.check_powered()?;
        let id = state.next_id;
        state.next_id = state.next_id.saturating_add(1);
        Ok(id)
    }
}
