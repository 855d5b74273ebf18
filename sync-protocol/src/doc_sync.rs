//! The sync state of one (peer, document) pair.
//!
//! [`PeerDocSync`] wraps `automerge::sync::State` and adds what the repo
//! protocol needs on top: applying a message reports which heads it moved,
//! so the caller can persist exactly the new changes (`save_after`), and
//! generating a message reports how many changes it carried, for the sync
//! log. Both sides (server hub and device) use this type.
//!
//! The server also asks, before anything applies, who wrote the *new*
//! changes of a message ([`PeerDocSync::receive_admitting`]): the actors of
//! the changes the document does not hold yet go to a caller's check, and a
//! [`Denial`] keeps every change of the message out while the rest of it
//! (heads, have, need) still applies.

use automerge::sync::{ChunkList, Message as AutomergeSyncMessage, State, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};

/// Why an incoming automerge sync message could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SyncError {
    /// The bytes are not an automerge sync message.
    #[error("malformed automerge sync message: {0}")]
    Malformed(String),
    /// The message's changes exceed the receiver's [`ChangeLimits`].
    #[error("sync message too large: {0}")]
    TooLarge(String),
    /// The message decoded, but its changes were rejected by automerge
    /// (corrupt change, bad hash, invalid operation).
    #[error("automerge rejected the changes: {0}")]
    Rejected(String),
}

/// Why the changes of a message were kept out (see
/// [`PeerDocSync::receive_admitting`]); the peer is told `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: String,
}

/// What applying one incoming sync message did to the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Heads before the message; `doc.save_after(&heads_before)` is the
    /// chunk of changes this message added.
    pub heads_before: Vec<ChangeHash>,
    /// Number of changes the document gained.
    pub changes_added: usize,
    /// Set when the admission check refused the message's changes: none of
    /// them applied, the rest of the message did.
    pub denied: Option<Denial>,
}

impl Applied {
    /// Whether the document gained any change.
    pub fn changed(&self) -> bool {
        self.changes_added > 0
    }
}

/// An outgoing automerge sync message, encoded, with the number of changes
/// it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub data: Vec<u8>,
    pub changes_sent: usize,
}

/// The first bytes of every automerge storage chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types (the byte after magic and checksum) that hold one change.
const CHUNK_TYPE_DOCUMENT: u8 = 0;
const CHUNK_TYPE_CHANGE: u8 = 1;
const CHUNK_TYPE_CHANGE_COMPRESSED: u8 = 2;

/// Refuses a message carrying a change chunk that is not a valid change.
///
/// automerge's `receive_sync_message` loads the chunks with
/// `load_incremental`, which silently drops a chunk that fails to parse or
/// whose checksum does not match: the sender would never hear that its
/// change was refused, and the two sides would exchange sync messages
/// forever, their heads never meeting. One entry of the message may hold
/// several chunks back to back; each is framed as magic (4 bytes), checksum
/// (4), type (1), body length (LEB128), body. Document chunks (whole-document
/// V2 messages) are left to automerge, which checks their heads.
///
/// The same pass enforces [`ChangeLimits`]: decoded bytes and operations of
/// all change chunks in the message, and of the changes inside a
/// whole-document chunk (loaded once more to count them, only when limits
/// are set or actors are wanted).
///
/// With `new_in`, it also returns the actors (sorted, once each) of the
/// changes that document does not hold yet: changes the receiver already
/// has are not new, whoever relays them.
fn check_change_chunks(
    message: &AutomergeSyncMessage,
    limits: &ChangeLimits,
    new_in: Option<&Automerge>,
) -> Result<Vec<ActorId>, SyncError> {
    let mut change_bytes: usize = 0;
    let mut change_ops: usize = 0;
    let mut new_actors: Vec<ActorId> = Vec::new();
    let mut note_actor = |change: &automerge::Change| {
        let Some(doc) = new_in else {
            return;
        };
        if doc.get_change_meta_by_hash(&change.hash()).is_none()
            && !new_actors.contains(change.actor_id())
        {
            new_actors.push(change.actor_id().clone());
        }
    };
    for (index, entry) in message.changes.iter().enumerate() {
        let refuse = |what: &str| SyncError::Rejected(format!("change chunk {index} {what}"));
        let mut rest = entry;
        while !rest.is_empty() {
            let header_bytes = CHUNK_MAGIC.len() + 4 + 1;
            if rest.len() < header_bytes || rest[..CHUNK_MAGIC.len()] != CHUNK_MAGIC {
                return Err(refuse("is not an automerge chunk"));
            }
            let kind = rest[header_bytes - 1];
            let (body_bytes, length_bytes) =
                read_uleb128(&rest[header_bytes..]).ok_or_else(|| refuse("has a bad length"))?;
            let end = usize::try_from(body_bytes)
                .ok()
                .and_then(|body| body.checked_add(header_bytes + length_bytes))
                .filter(|end| *end <= rest.len())
                .ok_or_else(|| refuse("is truncated"))?;
            let (chunk, after) = rest.split_at(end);
            if matches!(kind, CHUNK_TYPE_CHANGE | CHUNK_TYPE_CHANGE_COMPRESSED) {
                let change = automerge::Change::try_from(chunk)
                    .map_err(|error| refuse(&format!("is corrupt: {error}")))?;
                change_bytes = change_bytes.saturating_add(change.raw_bytes().len());
                change_ops = change_ops.saturating_add(change.len());
                note_actor(&change);
            } else if kind == CHUNK_TYPE_DOCUMENT
                && (new_in.is_some()
                    || (limits.change_bytes_max, limits.change_ops_max) != (usize::MAX, usize::MAX))
            {
                // A peer sending most of a document sends it whole (a V2
                // message). Counting its changes means loading it once more;
                // bounded by the frame size, and only when limits are set.
                let whole = Automerge::load(chunk)
                    .map_err(|error| refuse(&format!("is a corrupt document: {error}")))?;
                for change in whole.get_changes(&[]) {
                    change_bytes = change_bytes.saturating_add(change.raw_bytes().len());
                    change_ops = change_ops.saturating_add(change.len());
                    note_actor(&change);
                }
            }
            if change_bytes > limits.change_bytes_max {
                return Err(SyncError::TooLarge(format!(
                    "changes of {change_bytes}+ decoded bytes exceed the limit of {}",
                    limits.change_bytes_max
                )));
            }
            if change_ops > limits.change_ops_max {
                return Err(SyncError::TooLarge(format!(
                    "changes of {change_ops}+ operations exceed the limit of {}",
                    limits.change_ops_max
                )));
            }
            rest = after;
        }
    }
    new_actors.sort();
    Ok(new_actors)
}

/// An unsigned LEB128 number and how many bytes it took; `None` if it runs
/// past the input or past 64 bits.
fn read_uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        let low = u64::from(byte & 0x7f);
        let shift = u32::try_from(index * 7).ok()?;
        if shift == 63 && low > 1 {
            return None;
        }
        value |= low << shift;
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// Bounds on what one incoming sync message may add, counted over its
/// change chunks after decompression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLimits {
    /// Decoded bytes of all changes in one message.
    pub change_bytes_max: usize,
    /// Operations of all changes in one message.
    pub change_ops_max: usize,
}

impl ChangeLimits {
    /// No bound (what a device accepts from its server).
    pub const UNLIMITED: Self = Self {
        change_bytes_max: usize::MAX,
        change_ops_max: usize::MAX,
    };
}

impl Default for ChangeLimits {
    fn default() -> Self {
        Self::UNLIMITED
    }
}

/// Sync state between this replica and one remote peer for one document.
#[derive(Debug, Default)]
pub struct PeerDocSync {
    state: State,
    /// Our heads as carried by the last message we actually generated.
    told_heads: Option<Vec<ChangeHash>>,
    limits: ChangeLimits,
}

impl PeerDocSync {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sync state that refuses messages whose changes exceed `limits`.
    pub fn with_limits(limits: ChangeLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Applies an encoded automerge sync message to `doc`.
    ///
    /// A rejected message leaves the document with at most the changes that
    /// automerge validated before the bad one; the caller persists whatever
    /// the heads moved by (see [`Applied::heads_before`]) either way.
    pub fn receive(&mut self, doc: &mut Automerge, data: &[u8]) -> Result<Applied, SyncError> {
        self.receive_checked(doc, data, None::<fn(&[ActorId]) -> Result<(), Denial>>)
    }

    /// Like [`PeerDocSync::receive`], but first hands the actors of the
    /// message's new changes (changes `doc` does not hold yet; sorted, once
    /// each) to `admit`, only if there are any. A [`Denial`] keeps all the
    /// message's changes out (reported in [`Applied::denied`]); the rest of
    /// the message still applies, so the sync state learns the peer's heads.
    pub fn receive_admitting(
        &mut self,
        doc: &mut Automerge,
        data: &[u8],
        admit: impl FnOnce(&[ActorId]) -> Result<(), Denial>,
    ) -> Result<Applied, SyncError> {
        self.receive_checked(doc, data, Some(admit))
    }

    fn receive_checked(
        &mut self,
        doc: &mut Automerge,
        data: &[u8],
        admit: Option<impl FnOnce(&[ActorId]) -> Result<(), Denial>>,
    ) -> Result<Applied, SyncError> {
        let mut message = AutomergeSyncMessage::decode(data)
            .map_err(|error| SyncError::Malformed(error.to_string()))?;
        let new_in = admit.as_ref().map(|_| &*doc);
        let new_actors = check_change_chunks(&message, &self.limits, new_in)?;
        let mut denied = None;
        if let Some(admit) = admit.filter(|_| !new_actors.is_empty()) {
            if let Err(denial) = admit(&new_actors) {
                message.changes = ChunkList::empty();
                denied = Some(denial);
            }
        }
        let heads_before = doc.get_heads();
        doc.receive_sync_message(&mut self.state, message)
            .map_err(|error| SyncError::Rejected(error.to_string()))?;
        // Cost proportional to the new changes only: the walk stops at
        // `heads_before`.
        let changes_added = if doc.get_heads() == heads_before {
            0
        } else {
            doc.get_changes(&heads_before).len()
        };
        Ok(Applied {
            heads_before,
            changes_added,
            denied,
        })
    }

    /// The next message to send to this peer, if there is anything to say.
    pub fn generate(&mut self, doc: &Automerge) -> Option<Generated> {
        let sent_before = self.state.sent_hashes.len();
        let message = self.state_generate(doc)?;
        self.told_heads = Some(message.heads.clone());
        let changes_sent = self.state.sent_hashes.len().saturating_sub(sent_before);
        Some(Generated {
            data: message.encode(),
            changes_sent,
        })
    }

    /// Like [`PeerDocSync::generate`], but also sends a message when the
    /// peer has not heard our current heads from us.
    ///
    /// automerge's sync skips that message when the peer itself reported
    /// exactly our heads (it sets `last_sent_heads` on receipt). For the
    /// server that message is the acknowledgement "these heads are on
    /// disk", which a device waits for; without it a device whose changes
    /// were applied in a batch never learns they are durable.
    pub fn generate_acknowledging(&mut self, doc: &Automerge) -> Option<Generated> {
        if let Some(generated) = self.generate(doc) {
            return Some(generated);
        }
        let heads = doc.get_heads();
        if self.told_heads.as_ref() == Some(&heads) {
            return None;
        }
        self.state.last_sent_heads.clear();
        self.generate(doc)
    }

    fn state_generate(&mut self, doc: &Automerge) -> Option<AutomergeSyncMessage> {
        doc.generate_sync_message(&mut self.state)
    }

    /// Whether the last message generated for this peer carried exactly
    /// these heads of ours.
    pub fn told_heads_are(&self, heads: &[ChangeHash]) -> bool {
        self.told_heads.as_deref() == Some(heads)
    }

    /// Whether the peer's last message asked for no change by hash (a peer
    /// asks when our heads name changes its filter made us leave out).
    pub fn they_need_nothing(&self) -> bool {
        self.state
            .their_need
            .as_ref()
            .is_none_or(|need| need.is_empty())
    }

    /// The heads the peer last told us it has, if it has spoken yet.
    pub fn their_heads(&self) -> Option<&[ChangeHash]> {
        self.state.their_heads.as_deref()
    }

    /// Whether the peer holds every change of `doc`: each of our heads is
    /// in the history the peer has acknowledged.
    pub fn peer_has_all_of(&self, doc: &Automerge) -> bool {
        let Some(their_heads) = self.their_heads() else {
            return false;
        };
        let ours = doc.get_heads();
        if ours.iter().all(|head| their_heads.contains(head)) {
            return true;
        }
        // The peer may be ahead of us; we hold all its heads, so anything
        // we have outside its history shows up in `get_changes`.
        their_heads
            .iter()
            .all(|head| doc.get_change_by_hash(head).is_some())
            && doc.get_changes(their_heads).is_empty()
    }
}
