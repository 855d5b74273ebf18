//! The sync state of one (peer, document) pair.
//!
//! [`PeerDocSync`] wraps `automerge::sync::State` and adds what the repo
//! protocol needs on top: applying a message reports exactly the changes
//! the document gained ([`Applied::added`]), so the caller can persist them
//! as they came (their raw chunks, which `load_incremental` accepts back to
//! back) without re-encoding anything, and generating a message reports how
//! many changes it carried, for the sync log. Both sides (server hub and
//! device) use this type.
//!
//! The server also asks, before anything applies, what the *new* changes of
//! a message do ([`PeerDocSync::receive_admitting`]): a caller's check sees
//! a [`NewChanges`] (the actors of the changes the document does not hold
//! yet, the root keys their operations write under, and for a document that
//! holds nothing yet the document the message would create), and a
//! [`Denial`] keeps every change of the message out while the rest of it
//! (heads, have, need) still applies. The check knows no schema: "the root
//! key `meta` is frozen after creation" is the caller's rule, stated over
//! [`NewChanges::root_keys`].

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::sync::{ChunkList, Message as AutomergeSyncMessage, State, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, Prop, ReadDoc};

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

/// What the new changes of one incoming message would do, as the admission
/// check of [`PeerDocSync::receive_admitting`] sees them before anything
/// applies. "New" means the document does not hold the change yet: changes
/// it already has are harmless relaying, whoever sends them.
#[derive(Debug)]
pub struct NewChanges<'a> {
    /// Actors of the new changes: sorted, once each, never empty.
    pub actors: &'a [ActorId],
    /// Every root key the new changes' operations write under: a put,
    /// delete or new object at that root key, or any operation inside an
    /// object that sits (at any depth) under it. Sorted.
    pub root_keys: &'a BTreeSet<String>,
    /// Some operation writes into an object that neither the document nor
    /// the message makes (its change waits for a dependency): which root key
    /// it lands under cannot be told, so a caller guarding root keys should
    /// refuse the message.
    pub unplaced: bool,
    /// Set when the document holds no change yet: what the message would
    /// make of it (every new change applied to an empty document).
    pub creates: Option<&'a Automerge>,
    /// With [`NewChanges::creates`]: some change would still wait for a
    /// dependency (of the message, or one the document held back before),
    /// so the created document could change when that arrives.
    pub creation_incomplete: bool,
}

/// What applying one incoming sync message did to the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Heads before the message; `doc.save_after(&heads_before)` holds the
    /// same changes as [`Applied::added`].
    pub heads_before: Vec<ChangeHash>,
    /// Exactly the changes the document gained, once each, in an order
    /// `load_incremental` accepts (each after its dependencies, or in the
    /// same chunk list): mostly the message's own change chunks, never
    /// re-encoded; `Automerge::get_changes` only when automerge held
    /// changes waiting for their dependencies before the message (they may
    /// have applied too) or when a whole-document chunk went unexpanded.
    pub added: Vec<automerge::Change>,
    /// Set when the admission check refused the message's changes: none of
    /// them applied, the rest of the message did.
    pub denied: Option<Denial>,
    /// The message was one whole document holding every change of ours,
    /// taken as it was loaded for the checks instead of being applied again
    /// (see [`Whole`]).
    pub fast_forwarded: bool,
}

impl Applied {
    /// Number of changes the document gained.
    pub fn changes_added(&self) -> usize {
        self.added.len()
    }

    /// Whether the document gained any change.
    pub fn changed(&self) -> bool {
        !self.added.is_empty()
    }

    /// The gained changes as one incremental chunk for storage: their raw
    /// change chunks back to back.
    pub fn chunk(&self) -> Vec<u8> {
        let mut chunk = Vec::new();
        append_raw(&self.added, &mut chunk);
        chunk
    }
}

/// Appends the raw chunks of `changes` to `chunk` (an incremental chunk
/// that `Automerge::load_incremental` reads back to the same changes).
pub fn append_raw(changes: &[automerge::Change], chunk: &mut Vec<u8>) {
    for change in changes {
        chunk.extend_from_slice(change.raw_bytes());
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
/// are set or `admitting`).
///
/// Every change the receiving document `doc` does not hold yet is returned
/// (once each, in message order) so the caller can count and persist what
/// applied. With `admitting` (the server's path) each of them is also
/// expanded op by op, which
///
/// - refuses a change automerge itself would panic on: automerge 0.7 checks
///   a change's checksum and columns but not that its operations name
///   actors the change lists, and both `Change::decode` and
///   `load_incremental` index its actor table unchecked (see
///   `tests/corrupt_changes.rs`); the expansion runs under `catch_unwind`,
///   before the document is touched;
/// - measures how deep the new objects nest ([`ChangeLimits::object_depth_max`]);
/// - returns the changes' actors (sorted, once each): changes the receiver
///   already has are not new, whoever relays them, and are not expanded
///   (their bytes hash to a change the document accepted).
fn check_change_chunks(
    message: &AutomergeSyncMessage,
    limits: &ChangeLimits,
    doc: &Automerge,
    admitting: bool,
) -> Result<CheckedChanges, SyncError> {
    let mut check = ChunkCheck {
        limits,
        admitting,
        change_bytes: 0,
        change_ops: 0,
        new_ops: 0,
        new_actors: Vec::new(),
        new_changes: Vec::new(),
        new_hashes: HashSet::new(),
        all_listed: true,
        made: HashMap::new(),
        root_keys: BTreeSet::new(),
        objects_written: HashSet::new(),
    };
    // The document of a message that is one document chunk and nothing
    // else, once loaded to check its changes (see `Whole`).
    let one_entry = message.changes.len() == 1;
    let mut whole_doc = None;
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
                check.count(&change)?;
                check
                    .new_change(doc, change)
                    .map_err(|what| refuse(&what))?;
            } else if kind == CHUNK_TYPE_DOCUMENT
                && (admitting
                    || (limits.change_bytes_max, limits.change_ops_max) != (usize::MAX, usize::MAX))
            {
                // A peer sending most of a document sends it whole (a V2
                // message). Counting its changes means loading it once more;
                // bounded by the frame size, and only when limits are set.
                let whole = catch_unwind(|| Automerge::load(chunk))
                    .map_err(|_| refuse("is a corrupt document: automerge cannot load it"))?
                    .map_err(|error| refuse(&format!("is a corrupt document: {error}")))?;
                for change in whole.get_changes(&[]) {
                    check.count(&change)?;
                    check
                        .new_change(doc, change)
                        .map_err(|what| refuse(&what))?;
                }
                // The chunk is the message's only entry, whole.
                if one_entry && chunk.len() == entry.len() {
                    whole_doc = Some(whole);
                }
            } else {
                // Any other chunk (a document chunk left to automerge, or
                // a type automerge ignores): its changes are not listed.
                check.all_listed = false;
            }
            rest = after;
        }
    }
    if admitting && !check.made.is_empty() && limits.object_depth_max != usize::MAX {
        check.check_depths(doc)?;
    }
    let unplaced = admitting && check.place_written_objects(doc);
    check.new_actors.sort();
    Ok(CheckedChanges {
        new_ops: check.new_ops,
        new_actors: check.new_actors,
        new_changes: check.new_changes,
        all_listed: check.all_listed,
        whole: whole_doc.map(Whole),
        root_keys: check.root_keys,
        unplaced,
    })
}

/// What [`check_change_chunks`] found in a message it let through.
struct CheckedChanges {
    /// Operations of `new_changes`.
    new_ops: usize,
    /// Actors of the new changes, sorted, once each.
    new_actors: Vec<ActorId>,
    /// The changes the document did not hold, once each, in message order.
    new_changes: Vec<automerge::Change>,
    /// Whether `new_changes` lists every change the message carries that
    /// the document lacks (false when a whole-document chunk was left to
    /// automerge unexpanded).
    all_listed: bool,
    /// The message's only chunk, a whole document, as loaded and checked.
    whole: Option<Whole>,
    /// Root keys the new changes write under (see [`NewChanges::root_keys`]);
    /// collected only when admitting.
    root_keys: BTreeSet<String>,
    /// Some new operation writes into an object nobody makes.
    unplaced: bool,
}

/// A whole document a message carried as its only chunk (automerge's sync
/// sends one when more than a third of the document is new to the peer,
/// as after a device reconnects with its offline changes), loaded by
/// [`check_change_chunks`] to expand and check its changes.
///
/// When it holds every change of the receiving document (each of its
/// heads), merging it gives exactly this document: a document is its set of
/// changes. Applying the message through automerge would rebuild every
/// change of the chunk once more and apply it (as much work again as the
/// check's load); [`Whole::fast_forward`] takes the loaded document
/// instead, under the receiving document's actor, and automerge then finds
/// that it holds the chunk's heads and applies nothing.
struct Whole(Automerge);

impl Whole {
    /// Replaces `doc` with the whole document, if that is what applying
    /// `message` (this document as its only chunk) would make of it:
    /// `doc` has no changes waiting for dependencies (they could apply
    /// with the message and are not in the chunk), the chunk holds each of
    /// `doc`'s heads (so every change of `doc`), and each head the message
    /// names (so the sync state ends as it would: every head known).
    /// Returns whether it did.
    fn fast_forward(self, doc: &mut Automerge, message: &AutomergeSyncMessage) -> bool {
        let Whole(whole) = self;
        let holds = |hash: &ChangeHash| whole.get_change_meta_by_hash(hash).is_some();
        if !doc.get_missing_deps(&[]).is_empty()
            || !doc.get_heads().iter().all(holds)
            || !message.heads.iter().all(holds)
        {
            return false;
        }
        let actor = doc.get_actor().clone();
        *doc = whole.with_actor(actor);
        true
    }
}

/// What [`check_change_chunks`] has seen of one message so far.
struct ChunkCheck<'a> {
    limits: &'a ChangeLimits,
    /// Expand new changes, collect their actors and nesting (server path).
    admitting: bool,
    change_bytes: usize,
    change_ops: usize,
    /// Operations of the changes the document does not hold yet.
    new_ops: usize,
    new_actors: Vec<ActorId>,
    new_changes: Vec<automerge::Change>,
    new_hashes: HashSet<ChangeHash>,
    all_listed: bool,
    /// Each object the message's new changes make, and where it is made.
    made: HashMap<ObjectKey, Parent>,
    /// Root keys written directly (an operation on the root object).
    root_keys: BTreeSet<String>,
    /// Objects the new operations write into, once each.
    objects_written: HashSet<ObjectKey>,
}

/// Where an object the message makes is made.
#[derive(Debug)]
enum Parent {
    /// At this key of the root.
    Root(String),
    /// Inside this object.
    Object(ObjectKey),
}

impl ChunkCheck<'_> {
    fn count(&mut self, change: &automerge::Change) -> Result<(), SyncError> {
        self.change_bytes = self.change_bytes.saturating_add(change.raw_bytes().len());
        self.change_ops = self.change_ops.saturating_add(change.len());
        if self.change_bytes > self.limits.change_bytes_max {
            return Err(SyncError::TooLarge(format!(
                "changes of {}+ decoded bytes exceed the limit of {}",
                self.change_bytes, self.limits.change_bytes_max
            )));
        }
        if self.change_ops > self.limits.change_ops_max {
            return Err(SyncError::TooLarge(format!(
                "changes of {}+ operations exceed the limit of {}",
                self.change_ops, self.limits.change_ops_max
            )));
        }
        Ok(())
    }

    /// Keeps a change `doc` does not hold yet (once) and, when admitting,
    /// expands it (see [`check_change_chunks`]); `Err` says what is wrong
    /// with it.
    fn new_change(&mut self, doc: &Automerge, change: automerge::Change) -> Result<(), String> {
        let hash = change.hash();
        if self.new_hashes.contains(&hash) || doc.get_change_meta_by_hash(&hash).is_some() {
            return Ok(());
        }
        self.new_hashes.insert(hash);
        self.new_ops = self.new_ops.saturating_add(change.len());
        if !self.admitting {
            self.new_changes.push(change);
            return Ok(());
        }
        if !self.new_actors.contains(change.actor_id()) {
            self.new_actors.push(change.actor_id().clone());
        }
        let expanded = catch_unwind(|| change.decode())
            .map_err(|_| "is corrupt: its operations name actors it does not list".to_string())?;
        self.new_changes.push(change);
        let start_op = expanded.start_op.get();
        for (index, op) in expanded.operations.iter().enumerate() {
            // Where the operation writes: a root key, or an object.
            let parent = match (&op.obj, &op.key) {
                (ObjectId::Root, Key::Map(key)) => {
                    if !self.root_keys.contains(key.as_str()) {
                        self.root_keys.insert(key.to_string());
                    }
                    Parent::Root(key.to_string())
                }
                // automerge's root is a map; a sequence key there is not
                // an operation it can apply, and it names no root key.
                (ObjectId::Root, Key::Seq(_)) => continue,
                (ObjectId::Id(OpId(counter, actor)), _) => {
                    let object = (*counter, actor.clone());
                    if !self.objects_written.contains(&object) {
                        self.objects_written.insert(object.clone());
                    }
                    Parent::Object(object)
                }
            };
            if !matches!(op.action, OpType::Make(_)) {
                continue;
            }
            let counter = u64::try_from(index)
                .ok()
                .and_then(|index| start_op.checked_add(index))
                .ok_or_else(|| "has an operation counter past 2^64".to_string())?;
            self.made
                .insert((counter, expanded.actor_id.clone()), parent);
        }
        Ok(())
    }

    /// Adds to `root_keys` the root key under which each written object
    /// sits: up the chain of objects the message makes, then in `doc`.
    /// Returns whether some object sits nowhere known (see
    /// [`NewChanges::unplaced`]). Each object is placed once.
    fn place_written_objects(&mut self, doc: &Automerge) -> bool {
        let mut placed: HashMap<ObjectKey, Option<String>> = HashMap::new();
        let mut unplaced = false;
        for object in &self.objects_written {
            let mut chain: Vec<&ObjectKey> = Vec::new();
            let mut current = object;
            let root_key = loop {
                if let Some(known) = placed.get(current) {
                    break known.clone();
                }
                match self.made.get(current) {
                    Some(Parent::Root(key)) => {
                        chain.push(current);
                        break Some(key.clone());
                    }
                    Some(Parent::Object(parent)) => {
                        chain.push(current);
                        // A cycle cannot be made (an object is made after
                        // its parent), but hostile input is not made.
                        if chain.len() > self.made.len() {
                            break None;
                        }
                        current = parent;
                    }
                    None => {
                        chain.push(current);
                        break root_key_in(doc, current);
                    }
                }
            };
            for key in chain {
                placed.insert(key.clone(), root_key.clone());
            }
            match root_key {
                Some(key) => {
                    if !self.root_keys.contains(key.as_str()) {
                        self.root_keys.insert(key);
                    }
                }
                None => unplaced = true,
            }
        }
        unplaced
    }

    /// Refuses the message if an object it makes nests deeper than
    /// [`ChangeLimits::object_depth_max`]. The changes of a message may come
    /// in any order, so depths are worked out once every object is known:
    /// up each object's chain of parents made by the message, to the root
    /// or to an object of `doc`; each object once.
    fn check_depths(&self, doc: &Automerge) -> Result<(), SyncError> {
        let max = self.limits.object_depth_max;
        let too_deep = |depth: usize| {
            SyncError::Rejected(format!(
                "the message nests objects {depth} deep, past the limit of {max}"
            ))
        };
        let mut depths: HashMap<&ObjectKey, usize> = HashMap::new();
        for object in self.made.keys() {
            // The chain up from `object`, stopping at the first object of
            // known depth.
            let mut chain: Vec<&ObjectKey> = Vec::new();
            let mut next = Some(object);
            let base = loop {
                let Some(current) = next else {
                    break 0; // the root
                };
                if let Some(depth) = depths.get(current) {
                    break *depth;
                }
                match self.made.get(current) {
                    Some(parent) => {
                        chain.push(current);
                        if chain.len() > max {
                            return Err(too_deep(chain.len()));
                        }
                        next = match parent {
                            Parent::Root(_) => None,
                            Parent::Object(object) => Some(object),
                        };
                    }
                    None => break depth_in(doc, current),
                }
            };
            for (above, key) in chain.iter().rev().enumerate() {
                let depth = base.saturating_add(above + 1);
                if depth > max {
                    return Err(too_deep(depth));
                }
                depths.insert(key, depth);
            }
        }
        Ok(())
    }
}

/// An object id as a change names it: (counter, actor).
type ObjectKey = (u64, ActorId);

/// How deep an object of `doc` is (1 if `doc` does not have it: automerge
/// refuses a change into a missing object).
fn depth_in(doc: &Automerge, (counter, actor): &ObjectKey) -> usize {
    doc.import(&format!("{counter}@{actor}"))
        .ok()
        .and_then(|(id, _)| doc.parents(&id).ok())
        // Its parents, the root included: one per level.
        .map_or(1, |parents| parents.count().max(1))
}

/// The root key under which an object of `doc` sits, at any depth; `None`
/// if `doc` does not have the object.
fn root_key_in(doc: &Automerge, (counter, actor): &ObjectKey) -> Option<String> {
    let (id, _) = doc.import(&format!("{counter}@{actor}")).ok()?;
    // The last parent up the path is the root, with the object's root key.
    match doc.parents(&id).ok()?.last()?.prop {
        Prop::Map(key) => Some(key),
        Prop::Seq(_) => None,
    }
}

std::thread_local! {
    /// Set while this thread runs automerge on a peer's input under
    /// [`catch_unwind`].
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic now, on this thread, is automerge failing on a peer's
/// hostile input under `catch_unwind`: expected, and already turned into a
/// refusal of that input. A process's panic hook may log such a panic as
/// one line instead of a crash report (the server does).
pub fn panic_is_guarded() -> bool {
    GUARDED.with(std::cell::Cell::get)
}

/// Runs automerge code that may panic on hostile input; a panic becomes
/// `Err`. automerge holds no state of ours across the call.
fn catch_unwind<T>(run: impl FnOnce() -> T) -> Result<T, ()> {
    let outer = GUARDED.with(|guarded| guarded.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|_| ());
    GUARDED.with(|guarded| guarded.set(outer));
    result
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

/// The document a message's new changes make of an empty one, and whether
/// it is the message's whole-document chunk as loaded: that chunk, else
/// the changes applied to an empty document (automerge refusing them
/// refuses the message, as applying it would).
fn creation(
    whole: Option<Whole>,
    new_changes: &[automerge::Change],
) -> Result<(Automerge, bool), SyncError> {
    if let Some(Whole(whole)) = whole {
        return Ok((whole, true));
    }
    let mut created = Automerge::new();
    catch_unwind(|| created.apply_changes(new_changes.iter().cloned()))
        .map_err(|_| SyncError::Rejected("automerge cannot apply the changes".to_string()))?
        .map_err(|error| SyncError::Rejected(error.to_string()))?;
    Ok((created, false))
}

/// Bounds on what one incoming sync message may add, counted over its
/// change chunks after decompression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLimits {
    /// Decoded bytes of all changes in one message.
    pub change_bytes_max: usize,
    /// Operations of all changes in one message.
    pub change_ops_max: usize,
    /// How deep the objects a message makes may nest, in levels (an object
    /// in the root is at level 1). Checked only on the server's path
    /// ([`PeerDocSync::receive_admitting`]).
    pub object_depth_max: usize,
    /// Operations the document may hold once the message's new changes
    /// apply. A message that would take it past this keeps all its changes
    /// out like a [`Denial`] (the peer is told; the rest of the message
    /// applies). Checked only on the server's path.
    pub doc_ops_max: usize,
}

impl ChangeLimits {
    /// No bound (what a device accepts from its server).
    pub const UNLIMITED: Self = Self {
        change_bytes_max: usize::MAX,
        change_ops_max: usize::MAX,
        object_depth_max: usize::MAX,
        doc_ops_max: usize::MAX,
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
        self.receive_checked(doc, data, None::<fn(&NewChanges<'_>) -> Result<(), Denial>>)
    }

    /// Like [`PeerDocSync::receive`], but first hands what the message's
    /// new changes (changes `doc` does not hold yet) would do to `admit`,
    /// only if there are any (see [`NewChanges`]). A [`Denial`] keeps all
    /// the message's changes out (reported in [`Applied::denied`]); the rest
    /// of the message still applies, so the sync state learns the peer's
    /// heads.
    ///
    /// When `doc` holds no change, the message's new changes are first
    /// applied to an empty document ([`NewChanges::creates`]; the loaded
    /// whole-document chunk when that is what the message carries); if they
    /// are admitted and none waits, that document becomes `doc` (under
    /// `doc`'s actor) instead of being built a second time.
    pub fn receive_admitting(
        &mut self,
        doc: &mut Automerge,
        data: &[u8],
        admit: impl FnOnce(&NewChanges<'_>) -> Result<(), Denial>,
    ) -> Result<Applied, SyncError> {
        self.receive_checked(doc, data, Some(admit))
    }

    fn receive_checked(
        &mut self,
        doc: &mut Automerge,
        data: &[u8],
        admit: Option<impl FnOnce(&NewChanges<'_>) -> Result<(), Denial>>,
    ) -> Result<Applied, SyncError> {
        let mut message = AutomergeSyncMessage::decode(data)
            .map_err(|error| SyncError::Malformed(error.to_string()))?;
        let checked = check_change_chunks(&message, &self.limits, doc, admit.is_some())?;
        let mut new_changes = checked.new_changes;
        let mut whole = checked.whole;
        let mut denied = None;
        // The document the message creates, once admitted.
        let mut created = None;
        let doc_ops = usize::try_from(doc.stats().num_ops).unwrap_or(usize::MAX);
        if admit.is_some() && doc_ops.saturating_add(checked.new_ops) > self.limits.doc_ops_max {
            message.changes = ChunkList::empty();
            new_changes.clear();
            denied = Some(Denial {
                reason: format!(
                    "the document would hold {}+ operations, past the limit of {}",
                    doc_ops.saturating_add(checked.new_ops),
                    self.limits.doc_ops_max
                ),
            });
        } else if let Some(admit) = admit.filter(|_| !checked.new_actors.is_empty()) {
            let creates = if doc.get_heads().is_empty() {
                Some(creation(whole.take(), &new_changes)?)
            } else {
                None
            };
            let creation_incomplete = creates.as_ref().is_some_and(|(created, _)| {
                !created.get_missing_deps(&[]).is_empty() || !doc.get_missing_deps(&[]).is_empty()
            });
            let new = NewChanges {
                actors: &checked.new_actors,
                root_keys: &checked.root_keys,
                unplaced: checked.unplaced,
                creates: creates.as_ref().map(|(created, _)| created),
                creation_incomplete,
            };
            match admit(&new) {
                Err(denial) => {
                    message.changes = ChunkList::empty();
                    new_changes.clear();
                    denied = Some(denial);
                }
                Ok(()) if !creation_incomplete => created = creates,
                Ok(()) => {}
            }
        }
        let heads_before = doc.get_heads();
        // automerge keeps changes whose dependencies it lacks in a queue
        // and applies them once those arrive; each of them has a missing
        // dependency. With none waiting, the document can gain only changes
        // of this message.
        let only_listed = checked.all_listed && doc.get_missing_deps(&[]).is_empty();
        let fast_forwarded = match created {
            // automerge then finds every change of the message held.
            Some((created, from_whole)) => {
                let actor = doc.get_actor().clone();
                *doc = created.with_actor(actor);
                from_whole
            }
            None => whole
                .filter(|_| denied.is_none())
                .is_some_and(|whole| whole.fast_forward(doc, &message)),
        };
        doc.receive_sync_message(&mut self.state, message)
            .map_err(|error| SyncError::Rejected(error.to_string()))?;
        let added = if doc.get_heads() == heads_before {
            Vec::new()
        } else if !only_listed {
            // Cost proportional to the new changes, re-encoded: the walk
            // stops at `heads_before`.
            doc.get_changes(&heads_before)
        } else if doc.get_missing_deps(&[]).is_empty() {
            // Nothing waits: every new change of the message applied.
            new_changes
        } else {
            // Some of the message's changes wait for dependencies.
            new_changes.retain(|change| doc.get_change_meta_by_hash(&change.hash()).is_some());
            new_changes
        };
        Ok(Applied {
            heads_before,
            added,
            denied,
            fast_forwarded,
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
    ///
    /// That is each of our heads being one of theirs. A head of ours
    /// that is not one of theirs is outside their history whenever we
    /// hold all their heads (a change of `doc` descending from it would
    /// make it no head), so `doc.get_changes(their_heads)` would list it;
    /// and if they named a change we lack we cannot tell what it covers.
    /// Checking the heads alone answers the same as that `get_changes`
    /// (which re-encodes every change since their heads: after a device
    /// reconnects with 1,000 offline changes, 0.1 G instructions per
    /// call, once per message received) without walking the history;
    /// `tests::peer_has_all_of_is_the_history_definition` compares the
    /// two.
    pub fn peer_has_all_of(&self, doc: &Automerge) -> bool {
        let Some(their_heads) = self.their_heads() else {
            return false;
        };
        doc.get_heads()
            .iter()
            .all(|head| their_heads.contains(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::MessageVersion;

    #[test]
    fn a_panic_is_guarded_only_inside_catch_unwind() {
        assert!(!panic_is_guarded());
        let seen_by_hook = catch_unwind(panic_is_guarded).expect("no panic");
        assert!(seen_by_hook);
        // Still guarded while the panic unwinds (when a hook would run).
        let unwound = catch_unwind(|| {
            let _guard = AssertOnDrop;
            panic!("automerge failing on hostile input");
        });
        assert!(unwound.is_err());
        assert!(!panic_is_guarded(), "cleared after a panic too");
    }

    struct AssertOnDrop;
    impl Drop for AssertOnDrop {
        fn drop(&mut self) {
            assert!(panic_is_guarded());
        }
    }
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    /// A sync message from `from` carrying these raw change chunks.
    fn carrying(from: &Automerge, changes: Vec<Vec<u8>>) -> Vec<u8> {
        AutomergeSyncMessage {
            heads: from.get_heads(),
            need: vec![],
            have: vec![],
            changes: changes.into(),
            supported_capabilities: None,
            version: MessageVersion::V1,
        }
        .encode()
    }

    /// Commits one put on `doc` and returns the change's raw bytes.
    fn put(doc: &mut Automerge, key: &str) -> Vec<u8> {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, 1_i64).expect("put");
        tx.commit();
        doc.get_last_local_change()
            .expect("a change")
            .raw_bytes()
            .to_vec()
    }

    fn hashes(changes: &[automerge::Change]) -> Vec<ChangeHash> {
        let mut hashes: Vec<ChangeHash> = changes.iter().map(|change| change.hash()).collect();
        hashes.sort();
        hashes
    }

    /// Receives `data` into `server` (admitting everyone) and checks that
    /// what it reports added is exactly the document's gain, and that the
    /// persisted chunk, loaded on top of the document as it was, gives the
    /// same document.
    fn receive_exactly(server: &mut Automerge, data: &[u8]) -> Applied {
        let before = server.clone();
        let applied = PeerDocSync::new()
            .receive_admitting(server, data, |_| Ok(()))
            .expect("applies");
        assert_eq!(
            hashes(&applied.added),
            hashes(&server.get_changes(&applied.heads_before)),
            "added is the gain"
        );
        let mut reloaded = before;
        reloaded
            .load_incremental(&applied.chunk())
            .expect("the chunk loads");
        assert_eq!(reloaded.get_heads(), server.get_heads());
        applied
    }

    /// What `peer_has_all_of` answered before it checked heads alone:
    /// our heads among theirs, or everything we hold in their history.
    fn has_all_by_history(their_heads: &[ChangeHash], doc: &Automerge) -> bool {
        doc.get_heads()
            .iter()
            .all(|head| their_heads.contains(head))
            || (their_heads
                .iter()
                .all(|head| doc.get_change_by_hash(head).is_some())
                && doc.get_changes(their_heads).is_empty())
    }

    proptest::proptest! {
        /// Histories with forks and merges among three replicas; the peer
        /// reports any subset of our changes, possibly with a change we
        /// lack (it is ahead of us).
        #[test]
        fn peer_has_all_of_is_the_history_definition(
            steps in proptest::collection::vec((0usize..3, 0usize..4), 1..24),
            picks in proptest::collection::vec(proptest::bool::ANY, 0..40),
            ahead in proptest::bool::ANY,
        ) {
            let mut replicas: Vec<Automerge> = (0..3).map(|_| Automerge::new()).collect();
            for (index, (replica, action)) in steps.iter().enumerate() {
                if *action == 0 {
                    // Merge the next replica into this one.
                    let mut other = replicas[(replica + 1) % 3].clone();
                    replicas[*replica].merge(&mut other).expect("merge");
                } else {
                    put(&mut replicas[*replica], &format!("k{index}"));
                }
            }
            let doc = replicas[0].clone();
            let all: Vec<ChangeHash> =
                doc.get_changes(&[]).iter().map(|change| change.hash()).collect();
            let mut their_heads: Vec<ChangeHash> = all
                .iter()
                .zip(picks.iter().chain(std::iter::repeat(&false)))
                .filter(|(_, pick)| **pick)
                .map(|(hash, _)| *hash)
                .collect();
            // Their heads exactly ours, sometimes.
            if picks.first() == Some(&true) && picks.get(1) == Some(&true) {
                their_heads = doc.get_heads();
            }
            if ahead {
                let mut further = doc.clone();
                put(&mut further, "ahead");
                their_heads.extend(further.get_heads());
            }
            let mut sync = PeerDocSync::new();
            proptest::prop_assert!(!sync.peer_has_all_of(&doc) || doc.get_heads().is_empty());
            sync.state.their_heads = Some(their_heads.clone());
            proptest::prop_assert_eq!(
                sync.peer_has_all_of(&doc),
                has_all_by_history(&their_heads, &doc)
            );
        }
    }

    #[test]
    fn a_change_sent_twice_in_one_message_counts_once() {
        let mut writer = Automerge::new();
        let change = put(&mut writer, "a");
        let mut server = Automerge::new();
        let applied = receive_exactly(
            &mut server,
            &carrying(&writer, vec![change.clone(), change]),
        );
        assert_eq!(applied.changes_added(), 1);
        assert_eq!(applied.chunk().len(), applied.added[0].raw_bytes().len());
    }

    #[test]
    fn changes_out_of_order_in_one_message_all_count_and_reload() {
        let mut writer = Automerge::new();
        let first = put(&mut writer, "a");
        let second = put(&mut writer, "b");
        let third = put(&mut writer, "c");
        let mut server = Automerge::new();
        let applied = receive_exactly(&mut server, &carrying(&writer, vec![third, first, second]));
        assert_eq!(applied.changes_added(), 3);
        assert_eq!(server.get_heads(), writer.get_heads());
    }

    #[test]
    fn changes_the_document_holds_do_not_count() {
        let mut writer = Automerge::new();
        let first = put(&mut writer, "a");
        let mut server = Automerge::new();
        receive_exactly(&mut server, &carrying(&writer, vec![first.clone()]));
        let second = put(&mut writer, "b");
        let applied = receive_exactly(&mut server, &carrying(&writer, vec![first.clone(), second]));
        assert_eq!(applied.changes_added(), 1);
        let applied = receive_exactly(&mut server, &carrying(&writer, vec![first]));
        assert_eq!(applied.changes_added(), 0);
        assert!(applied.chunk().is_empty());
    }

    #[test]
    fn a_change_waiting_for_its_dependency_counts_when_that_arrives() {
        let mut writer = Automerge::new();
        let first = put(&mut writer, "a");
        let second = put(&mut writer, "b");
        let third = put(&mut writer, "c");
        let mut server = Automerge::new();
        receive_exactly(&mut server, &carrying(&writer, vec![first]));
        // The third change alone: automerge keeps it waiting for the second.
        let applied = receive_exactly(&mut server, &carrying(&writer, vec![third]));
        assert_eq!(applied.changes_added(), 0);
        // The second arrives: both apply, and both are persisted.
        let applied = receive_exactly(&mut server, &carrying(&writer, vec![second]));
        assert_eq!(applied.changes_added(), 2);
        assert_eq!(server.get_heads(), writer.get_heads());
    }

    #[test]
    fn a_partly_waiting_message_counts_only_what_applied() {
        let mut writer = Automerge::new();
        let first = put(&mut writer, "a");
        let _second = put(&mut writer, "b");
        let third = put(&mut writer, "c");
        let mut other = Automerge::new();
        let concurrent = put(&mut other, "z");
        let mut server = Automerge::new();
        let applied = receive_exactly(
            &mut server,
            &carrying(&writer, vec![first, third, concurrent]),
        );
        assert_eq!(
            applied.changes_added(),
            2,
            "the first and the concurrent one"
        );
    }

    #[test]
    fn a_denied_message_adds_nothing() {
        let mut writer = Automerge::new();
        let change = put(&mut writer, "a");
        let mut server = Automerge::new();
        let applied = PeerDocSync::new()
            .receive_admitting(&mut server, &carrying(&writer, vec![change]), |_| {
                Err(Denial {
                    reason: "no".to_string(),
                })
            })
            .expect("the rest applies");
        assert!(applied.denied.is_some());
        assert_eq!(applied.changes_added(), 0);
        assert!(server.get_heads().is_empty());
    }

    /// Receives `data` into `server` through `PeerDocSync` (admitting
    /// everyone) and, on clones, through plain automerge; both must end
    /// with the same document, actor, sync state and next message, and
    /// `added` must be exactly the gain. Returns what `PeerDocSync` applied.
    fn receive_as_automerge_does(
        server: &mut Automerge,
        sync: &mut PeerDocSync,
        data: &[u8],
    ) -> Applied {
        let (mut plain, mut plain_state) = (server.clone(), sync.state.clone());
        let message = AutomergeSyncMessage::decode(data).expect("decodes");
        plain
            .receive_sync_message(&mut plain_state, message)
            .expect("automerge applies it");
        let before = server.clone();
        let applied = sync
            .receive_admitting(server, data, |_| Ok(()))
            .expect("applies");
        assert_eq!(server.get_heads(), plain.get_heads());
        assert_eq!(
            hashes(&server.get_changes(&[])),
            hashes(&plain.get_changes(&[]))
        );
        assert_eq!(server.save(), plain.save());
        assert_eq!(server.get_actor(), plain.get_actor());
        assert_eq!(sync.state, plain_state);
        assert_eq!(
            hashes(&applied.added),
            hashes(&server.get_changes(&applied.heads_before))
        );
        let mut reloaded = before;
        reloaded
            .load_incremental(&applied.chunk())
            .expect("the chunk loads");
        assert_eq!(reloaded.get_heads(), server.get_heads());
        let ours = sync.state_generate(server).map(|message| message.encode());
        let theirs = plain
            .generate_sync_message(&mut plain_state)
            .map(|message| message.encode());
        assert_eq!(ours, theirs, "the next message is the same");
        applied
    }

    /// A server holding `prefix` of the writer's changes, with its own
    /// actor and a sync state that has heard from the writer.
    fn server_with(writer_changes: &[Vec<u8>], prefix: usize) -> (Automerge, PeerDocSync) {
        let mut server = Automerge::new().with_actor(ActorId::from(b"the-server".as_slice()));
        let mut sync = PeerDocSync::new();
        sync.receive(
            &mut server,
            &carrying_heads(&[], writer_changes[..prefix].to_vec()),
        )
        .expect("the prefix applies");
        (server, sync)
    }

    /// A sync message with these heads and raw chunks.
    fn carrying_heads(heads: &[ChangeHash], changes: Vec<Vec<u8>>) -> Vec<u8> {
        AutomergeSyncMessage {
            heads: heads.to_vec(),
            need: vec![],
            have: vec![],
            changes: changes.into(),
            supported_capabilities: None,
            version: MessageVersion::V2,
        }
        .encode()
    }

    #[test]
    fn a_whole_document_holding_ours_fast_forwards_as_automerge_would_merge_it() {
        let mut writer = Automerge::new();
        let changes: Vec<Vec<u8>> = (0..20)
            .map(|i| put(&mut writer, &format!("k{i}")))
            .collect();
        for prefix in [0, 1, 5, 20] {
            let (mut server, mut sync) = server_with(&changes, prefix);
            let actor = server.get_actor().clone();
            let applied = receive_as_automerge_does(
                &mut server,
                &mut sync,
                &carrying(&writer, vec![writer.save()]),
            );
            assert!(
                applied.fast_forwarded,
                "prefix {prefix}: takes the whole document"
            );
            assert_eq!(server.get_heads(), writer.get_heads());
            assert_eq!(server.get_actor(), &actor, "the server keeps its actor");
        }
    }

    #[test]
    fn a_whole_document_missing_a_change_of_ours_is_merged() {
        let mut writer = Automerge::new();
        let changes: Vec<Vec<u8>> = (0..5).map(|i| put(&mut writer, &format!("k{i}"))).collect();
        let (mut server, mut sync) = server_with(&changes, 2);
        // The server holds a change the writer's document lacks.
        let mut other = Automerge::new();
        let concurrent = put(&mut other, "other");
        sync.receive(&mut server, &carrying_heads(&[], vec![concurrent]))
            .expect("applies");
        let message = carrying(&writer, vec![writer.save()]);
        let applied = receive_as_automerge_does(&mut server, &mut sync, &message);
        assert!(!applied.fast_forwarded);
        assert_eq!(server.get_heads().len(), 2, "both branches");
        assert!(server
            .get(automerge::ROOT, "other")
            .expect("reads")
            .is_some());
    }

    #[test]
    fn a_whole_document_while_a_change_of_ours_waits_is_merged() {
        let mut writer = Automerge::new();
        let changes: Vec<Vec<u8>> = (0..3).map(|i| put(&mut writer, &format!("k{i}"))).collect();
        let mut late = writer.clone();
        put(&mut late, "late-a");
        let waiting = put(&mut late, "late-b");
        let (mut server, mut sync) = server_with(&changes, 1);
        // `late-b` waits for `late-a`, which the whole document lacks too.
        sync.receive(&mut server, &carrying_heads(&[], vec![waiting]))
            .expect("applies");
        assert!(!server.get_missing_deps(&[]).is_empty());
        let message = carrying(&writer, vec![writer.save()]);
        let applied = receive_as_automerge_does(&mut server, &mut sync, &message);
        assert!(!applied.fast_forwarded);
        assert!(
            !server.get_missing_deps(&[]).is_empty(),
            "late-b still waits"
        );
    }

    #[test]
    fn a_whole_document_under_heads_it_lacks_is_merged() {
        let mut writer = Automerge::new();
        let changes: Vec<Vec<u8>> = (0..4).map(|i| put(&mut writer, &format!("k{i}"))).collect();
        let mut ahead = writer.clone();
        put(&mut ahead, "ahead");
        let (mut server, mut sync) = server_with(&changes, 1);
        // The message names a head its document does not hold.
        let message = carrying_heads(&ahead.get_heads(), vec![writer.save()]);
        let applied = receive_as_automerge_does(&mut server, &mut sync, &message);
        assert!(!applied.fast_forwarded);
        assert_eq!(server.get_heads(), writer.get_heads());
    }

    #[test]
    fn a_whole_document_message_counts_its_changes() {
        let mut writer = Automerge::new();
        put(&mut writer, "a");
        put(&mut writer, "b");
        let mut server = Automerge::new();
        let whole = writer.save();
        let applied = receive_exactly(&mut server, &carrying(&writer, vec![whole.clone()]));
        assert_eq!(applied.changes_added(), 2);
        // On the device's path the document chunk is not expanded; the
        // count comes from the document instead.
        let mut device = Automerge::new();
        let applied = PeerDocSync::new()
            .receive(&mut device, &carrying(&writer, vec![whole]))
            .expect("applies");
        assert_eq!(applied.changes_added(), 2);
        assert_eq!(device.get_heads(), writer.get_heads());
    }

    /// Receives `data` into `server`, admitting everything, and returns
    /// what the admission check saw: (root keys, unplaced, created doc's
    /// heads if creating, creation incomplete).
    fn seen_by_admission(
        server: &mut Automerge,
        data: &[u8],
    ) -> (BTreeSet<String>, bool, Option<Vec<ChangeHash>>, bool) {
        let mut seen = None;
        PeerDocSync::new()
            .receive_admitting(server, data, |new| {
                seen = Some((
                    new.root_keys.clone(),
                    new.unplaced,
                    new.creates.map(Automerge::get_heads),
                    new.creation_incomplete,
                ));
                Ok(())
            })
            .expect("applies");
        seen.expect("asked")
    }

    fn keys(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    /// A document with maps `meta` (holding `inner`) and `sales` at the
    /// root, and the server's copy of it.
    fn created_pair() -> (Automerge, Automerge) {
        let mut writer = Automerge::new();
        let mut tx = writer.transaction();
        let meta = tx
            .put_object(ROOT, "meta", automerge::ObjType::Map)
            .expect("map");
        tx.put(&meta, "tenant", "acme").expect("put");
        tx.put_object(&meta, "inner", automerge::ObjType::Map)
            .expect("map");
        tx.put_object(ROOT, "sales", automerge::ObjType::Map)
            .expect("map");
        tx.commit();
        let mut server = Automerge::new();
        server.merge(&mut writer.clone()).expect("merge");
        (writer, server)
    }

    fn last_change(doc: &Automerge) -> Vec<u8> {
        doc.get_last_local_change()
            .expect("a change")
            .raw_bytes()
            .to_vec()
    }

    #[test]
    fn a_message_creating_a_document_shows_the_created_document() {
        let (writer, _) = created_pair();
        let mut server = Automerge::new();
        let (root_keys, unplaced, creates, incomplete) =
            seen_by_admission(&mut server, &carrying(&writer, vec![last_change(&writer)]));
        assert_eq!(root_keys, keys(&["meta", "sales"]));
        assert!(!unplaced && !incomplete);
        assert_eq!(creates, Some(writer.get_heads()));
        assert_eq!(server.get_heads(), writer.get_heads(), "taken as built");
        // Once created, a message shows no creation.
        let mut more = writer.clone();
        put(&mut more, "later");
        let (root_keys, _, creates, _) =
            seen_by_admission(&mut server, &carrying(&more, vec![last_change(&more)]));
        assert_eq!(root_keys, keys(&["later"]));
        assert_eq!(creates, None);
    }

    #[test]
    fn a_whole_document_creating_a_document_is_shown_and_taken() {
        let (writer, _) = created_pair();
        let mut server = Automerge::new();
        let (root_keys, _, creates, _) =
            seen_by_admission(&mut server, &carrying(&writer, vec![writer.save()]));
        assert_eq!(root_keys, keys(&["meta", "sales"]));
        assert_eq!(creates, Some(writer.get_heads()));
        assert_eq!(server.get_heads(), writer.get_heads());
    }

    #[test]
    fn a_creation_waiting_for_a_dependency_is_incomplete() {
        let mut writer = Automerge::new();
        let _first = put(&mut writer, "a");
        let second = put(&mut writer, "b");
        let mut server = Automerge::new();
        let (_, _, creates, incomplete) =
            seen_by_admission(&mut server, &carrying(&writer, vec![second]));
        assert_eq!(creates, Some(vec![]), "nothing applies yet");
        assert!(incomplete);
    }

    #[test]
    fn writes_inside_a_root_map_at_any_depth_name_its_root_key() {
        let (mut writer, mut server) = created_pair();
        // Into `meta.inner`, an object the server holds, two levels down.
        let inner = match writer.get(ROOT, "meta").expect("get") {
            Some((_, meta)) => match writer.get(&meta, "inner").expect("get") {
                Some((_, inner)) => inner,
                None => panic!("no inner"),
            },
            None => panic!("no meta"),
        };
        let mut tx = writer.transaction();
        tx.put(&inner, "x", 1_i64).expect("put");
        tx.commit();
        let (root_keys, unplaced, _, _) =
            seen_by_admission(&mut server, &carrying(&writer, vec![last_change(&writer)]));
        assert_eq!(root_keys, keys(&["meta"]));
        assert!(!unplaced);
        // Deleting the root key itself.
        let mut tx = writer.transaction();
        tx.delete(ROOT, "meta").expect("delete");
        tx.commit();
        let (root_keys, _, _, _) =
            seen_by_admission(&mut server, &carrying(&writer, vec![last_change(&writer)]));
        assert_eq!(root_keys, keys(&["meta"]));
    }

    #[test]
    fn objects_made_by_the_message_are_placed_whatever_the_change_order() {
        let (mut writer, mut server) = created_pair();
        let sales = writer.get(ROOT, "sales").expect("get").expect("sales").1;
        let mut tx = writer.transaction();
        let sale = tx
            .put_object(&sales, "s1", automerge::ObjType::Map)
            .expect("map");
        tx.commit();
        let first = last_change(&writer);
        let mut tx = writer.transaction();
        let lines = tx
            .put_object(&sale, "lines", automerge::ObjType::List)
            .expect("list");
        tx.insert(&lines, 0, 5_i64).expect("insert");
        tx.commit();
        let second = last_change(&writer);
        let (root_keys, unplaced, _, _) =
            seen_by_admission(&mut server, &carrying(&writer, vec![second, first]));
        assert_eq!(root_keys, keys(&["sales"]));
        assert!(!unplaced);
    }

    #[test]
    fn a_write_into_an_object_nobody_makes_is_unplaced() {
        let (mut writer, mut server) = created_pair();
        let mut tx = writer.transaction();
        let hidden = tx
            .put_object(ROOT, "elsewhere", automerge::ObjType::Map)
            .expect("map");
        tx.commit();
        // The change making `elsewhere` never reaches the server.
        let mut tx = writer.transaction();
        tx.put(&hidden, "x", 1_i64).expect("put");
        tx.commit();
        let (root_keys, unplaced, _, _) =
            seen_by_admission(&mut server, &carrying(&writer, vec![last_change(&writer)]));
        assert!(unplaced);
        assert!(root_keys.is_empty(), "{root_keys:?}");
    }

    proptest::proptest! {
        /// Writes at random depths under random root keys, split into
        /// changes sent in reverse order: the reported root keys are
        /// exactly the root keys written under (the model).
        #[test]
        fn reported_root_keys_are_the_root_keys_written_under(
            writes in proptest::collection::vec((0usize..3, 0usize..4), 1..12),
            split in 1usize..4,
        ) {
            let (mut writer, mut server) = created_pair();
            let names = ["meta", "sales", "other"];
            let mut model = BTreeSet::new();
            let mut changes = Vec::new();
            for (index, chunk) in writes.chunks(split).enumerate() {
                let mut tx = writer.transaction();
                for (key_index, (root, depth)) in chunk.iter().enumerate() {
                    let name = names[*root];
                    model.insert(name.to_string());
                    let field = format!("f{index}-{key_index}");
                    let mut at = match tx.get(ROOT, name).expect("get") {
                        Some((automerge::Value::Object(automerge::ObjType::Map), id)) => id,
                        _ => tx.put_object(ROOT, name, automerge::ObjType::Map).expect("map"),
                    };
                    if *depth == 0 {
                        tx.put(ROOT, name, 1_i64).expect("put");
                        continue;
                    }
                    for level in 1..*depth {
                        at = tx
                            .put_object(&at, format!("{field}-{level}"), automerge::ObjType::Map)
                            .expect("map");
                    }
                    tx.put(&at, field.clone(), 1_i64).expect("put");
                }
                tx.commit();
                changes.push(last_change(&writer));
            }
            changes.reverse();
            let (root_keys, unplaced, _, _) =
                seen_by_admission(&mut server, &carrying(&writer, changes));
            proptest::prop_assert!(!unplaced);
            proptest::prop_assert_eq!(root_keys, model);
            proptest::prop_assert_eq!(server.get_heads(), writer.get_heads());
        }
    }
}
