//! Fuzz harnesses, shared by the `cargo fuzz` targets in `fuzz/` and by the
//! corpus replay test (`tests/fuzz_replay.rs`), so that both run exactly
//! the same code. Compiled only with the `fuzzing` feature; not a public
//! API.
//!
//! - [`wire_decode`]: any bytes through [`wire::decode`]; what decodes must
//!   survive `encode` and decode back to the same message.
//! - [`hub_sequence`]: the bytes are a script of operations on one [`Hub`]
//!   (connections coming and going, joins, requests, sync messages made by
//!   real automerge replicas, corrupted sync messages, raw frames, loads,
//!   flushes, failed flushes, ticks, shutdown), run against an in-memory
//!   store, with the hub's invariants checked after every step.
//!
//! ```
//! # #[cfg(feature = "fuzzing")] {
//! ventas_sync_protocol::fuzzing::wire_decode(b"\xa1\x64type\x64join");
//! ventas_sync_protocol::fuzzing::hub_sequence(&[0, 0, 2, 0, 3, 0, 0]);
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};

use crate::hub::{ConnId, Effect, Hub, HubConfig, LoadedDoc};
use crate::ids::{DocumentId, PeerId};
use crate::wire::{self, Message, MESSAGE_BYTES_MAX_DEFAULT};

/// Connections and documents the script can name: few, so that operations
/// meet each other.
const CONNS: u64 = 3;
const DOCS: u8 = 3;
/// Steps per input, so one input cannot run for long.
const STEPS_MAX: usize = 256;
/// Raw frames and keys are cut to this many bytes.
const PAYLOAD_BYTES_MAX: usize = 512;

/// Decodes `data` with the default frame limit; a decoded message must
/// encode and decode back to itself.
pub fn wire_decode(data: &[u8]) {
    let Ok(message) = wire::decode(data, MESSAGE_BYTES_MAX_DEFAULT) else {
        return;
    };
    let encoded = wire::encode(&message);
    let again = wire::decode(&encoded, MESSAGE_BYTES_MAX_DEFAULT);
    assert_eq!(
        again.as_ref(),
        Ok(&message),
        "decode(encode(m)) != m for {message:?}"
    );
}

/// Runs `data` as a script of hub operations; panics if an invariant
/// breaks (see [`HubRun::check`]).
pub fn hub_sequence(data: &[u8]) {
    let mut run = HubRun::new();
    let mut input = Input(data);
    for _ in 0..STEPS_MAX {
        let Some(op) = input.byte() else { break };
        run.step(op, &mut input);
    }
    // Whatever was written, storage must load it back.
    let stored: Vec<DocumentId> = run.store.keys().copied().collect();
    for document_id in stored {
        run.stored(&document_id);
    }
}

/// The unread rest of the fuzzer's input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn byte_or_zero(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let len = len.min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken
    }
}

/// A document as the in-memory store holds it.
#[derive(Default, Clone)]
struct StoredDoc {
    snapshot: Option<Vec<u8>>,
    chunks: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
}

/// A device: one automerge replica and sync state per (connection, doc).
struct Replica {
    doc: Automerge,
    state: State,
}

struct HubRun {
    hub: Hub,
    now_ms: u64,
    connected: HashSet<ConnId>,
    store: BTreeMap<DocumentId, StoredDoc>,
    replicas: HashMap<(ConnId, DocumentId), Replica>,
    /// Flush epochs the hub asked for, not yet reported.
    flushes: Vec<u64>,
    /// Documents persisted since the last `Flush` effect.
    persisted_unassigned: HashSet<DocumentId>,
    /// Documents with a persisted chunk waiting on this flush epoch.
    persisted_in_epoch: HashMap<DocumentId, u64>,
}

fn document_id(index: u8) -> DocumentId {
    DocumentId::from_bytes([index % DOCS + 1; 16])
}

fn peer_id(conn: ConnId) -> PeerId {
    PeerId::new(format!("peer-{conn}"))
}

fn server_id() -> PeerId {
    PeerId::new("server")
}

impl HubRun {
    fn new() -> Self {
        let mut config = HubConfig::new(server_id());
        // Small limits, so the fuzzer reaches them.
        config.docs_per_peer_max = 2;
        config.docs_in_memory_max = 2;
        config.doc_idle_evict_after_ms = 1_000;
        config.doc_queue_messages_max = 3;
        config.compact_after_chunks = 3;
        Self {
            hub: Hub::new(config),
            now_ms: 0,
            connected: HashSet::new(),
            store: BTreeMap::new(),
            replicas: HashMap::new(),
            flushes: Vec::new(),
            persisted_unassigned: HashSet::new(),
            persisted_in_epoch: HashMap::new(),
        }
    }

    fn step(&mut self, op: u8, input: &mut Input) {
        let conn = u64::from(input.byte_or_zero()) % CONNS;
        match op % 14 {
            0 => {
                if self.connected.insert(conn) {
                    self.hub.connect(conn);
                }
            }
            1 => self.disconnect(conn),
            2 => {
                let versions = match input.byte_or_zero() % 4 {
                    0 => vec![],
                    1 => vec!["0".to_string()],
                    _ => vec!["1".to_string()],
                };
                self.deliver(
                    conn,
                    Message::Join {
                        sender_id: peer_id(conn),
                        supported_protocol_versions: versions,
                        peer_metadata: None,
                    },
                );
            }
            3 => {
                let document_id = document_id(input.byte_or_zero());
                let data = Automerge::new()
                    .generate_sync_message(&mut State::new())
                    .map(|m| m.encode())
                    .unwrap_or_default();
                self.deliver(
                    conn,
                    Message::Request {
                        sender_id: peer_id(conn),
                        target_id: server_id(),
                        document_id,
                        data,
                    },
                );
            }
            4 => {
                // A device changes its replica (a flat key, or when `shape` is a
                // multiple of 4, a nest of `shape / 4` maps).
                let document_id = document_id(input.byte_or_zero());
                let shape = input.byte_or_zero();
                let len = usize::from(input.byte_or_zero());
                let key = String::from_utf8_lossy(input.bytes(len)).into_owned();
                let replica = self.replica(conn, document_id);
                let mut tx = replica.doc.transaction();
                let result = if shape & 3 == 0 {
                    let mut object = ROOT;
                    let mut outcome = Ok(());
                    for _ in 0..(shape / 4) {
                        match tx.put_object(&object, key.as_str(), ObjType::Map) {
                            Ok(child) => object = child,
                            Err(error) => {
                                outcome = Err(error);
                                break;
                            }
                        }
                    }
                    outcome
                } else {
                    tx.put(ROOT, key.as_str(), i64::from(shape))
                };
                if result.is_ok() {
                    tx.commit();
                } else {
                    tx.rollback();
                }
            }
            5 | 6 => {
                // The replica's next sync message; op 6 corrupts it.
                let document_id = document_id(input.byte_or_zero());
                let at = usize::from(input.byte_or_zero());
                let mask = input.byte_or_zero() | 1;
                let replica = self.replica(conn, document_id);
                let Some(message) = replica.doc.generate_sync_message(&mut replica.state) else {
                    return;
                };
                let mut data = message.encode();
                if op % 14 == 6 && !data.is_empty() {
                    let at = at % data.len();
                    data[at] ^= mask;
                }
                self.deliver(
                    conn,
                    Message::Sync {
                        sender_id: peer_id(conn),
                        target_id: server_id(),
                        document_id,
                        data,
                    },
                );
            }
            7 => {
                let len = usize::from(input.byte_or_zero()) * 2;
                let frame = input.bytes(len.min(PAYLOAD_BYTES_MAX)).to_vec();
                self.frame(conn, &frame);
            }
            8 => {
                // Storage completes the oldest flush asked for (or fails it).
                if self.flushes.is_empty() {
                    return;
                }
                let epoch = self.flushes.remove(0);
                if input.byte_or_zero() & 7 == 0 {
                    for (document_id, waiting) in self.persisted_in_epoch.iter() {
                        if *waiting == epoch {
                            self.persisted_unassigned.insert(*document_id);
                        }
                    }
                    self.persisted_in_epoch
                        .retain(|_, waiting| *waiting != epoch);
                    let effects = self.hub.flush_failed(epoch);
                    self.apply(effects);
                } else {
                    self.persisted_in_epoch
                        .retain(|_, waiting| *waiting > epoch);
                    let effects = self.hub.flushed(epoch, self.now_ms);
                    self.apply(effects);
                }
            }
            9 => {
                self.now_ms += u64::from(input.byte_or_zero()) * 100;
                let effects = self.hub.tick(self.now_ms);
                self.apply(effects);
            }
            10 => {
                let document_id = document_id(input.byte_or_zero());
                let count = u64::from(input.byte_or_zero());
                self.deliver(
                    conn,
                    Message::Ephemeral {
                        sender_id: peer_id(conn),
                        target_id: server_id(),
                        count,
                        session_id: "session".to_string(),
                        document_id,
                        data: vec![0xf6],
                    },
                );
            }
            11 => self.deliver(
                conn,
                Message::Leave {
                    sender_id: peer_id(conn),
                },
            ),
            12 => {
                // A message that names another peer as its sender.
                let document_id = document_id(input.byte_or_zero());
                self.deliver(
                    conn,
                    Message::Sync {
                        sender_id: peer_id(conn + 1),
                        target_id: server_id(),
                        document_id,
                        data: vec![0x42],
                    },
                );
            }
            _ => {
                if input.byte_or_zero() & 15 == 0 {
                    let effects = self.hub.shutdown();
                    self.apply(effects);
                }
            }
        }
    }

    fn replica(&mut self, conn: ConnId, document_id: DocumentId) -> &mut Replica {
        self.replicas
            .entry((conn, document_id))
            .or_insert_with(|| Replica {
                doc: Automerge::new(),
                state: State::new(),
            })
    }

    fn disconnect(&mut self, conn: ConnId) {
        if self.connected.remove(&conn) {
            self.hub.disconnect(conn);
        }
        // A reconnecting device starts a new sync session.
        for ((replica_conn, _), replica) in self.replicas.iter_mut() {
            if *replica_conn == conn {
                replica.state = State::new();
            }
        }
    }

    /// A frame as the connection task gets it.
    fn frame(&mut self, conn: ConnId, frame: &[u8]) {
        if !self.connected.contains(&conn) {
            return;
        }
        match wire::decode(frame, MESSAGE_BYTES_MAX_DEFAULT) {
            Ok(message) => self.deliver(conn, message),
            Err(error) => {
                let effects = self.hub.decode_failed(conn, &error.to_string());
                self.apply(effects);
            }
        }
    }

    /// A decoded message, loading its document first as the hub task does.
    fn deliver(&mut self, conn: ConnId, message: Message) {
        if !self.connected.contains(&conn) {
            return;
        }
        if let Some(document_id) = self.hub.doc_to_load(&message) {
            let mut effects = Vec::new();
            let has_room = self.hub.make_room(&mut effects);
            self.apply(effects);
            if !has_room {
                let effects = self.hub.load_failed(conn, document_id, "memory full");
                self.apply(effects);
                return;
            }
            let stored = self.stored(&document_id);
            self.hub
                .doc_loaded(document_id, stored, self.now_ms)
                .expect("what the hub stored loads back");
        }
        let effects = self.hub.receive(conn, message, self.now_ms);
        self.apply(effects);
    }

    /// The document as storage would return it; asserts it loads.
    fn stored(&self, document_id: &DocumentId) -> Option<LoadedDoc> {
        let stored = self.store.get(document_id)?;
        let loaded = LoadedDoc {
            snapshot: stored.snapshot.clone(),
            chunks: stored.chunks.values().cloned().collect(),
            last_chunk_seq: stored.next_seq.saturating_sub(1),
        };
        let mut doc = match &loaded.snapshot {
            Some(snapshot) => Automerge::load(snapshot).expect("stored snapshot loads"),
            None => Automerge::new(),
        };
        for chunk in &loaded.chunks {
            doc.load_incremental(chunk).expect("stored chunk loads");
        }
        Some(loaded)
    }

    /// Checks the effects, then carries them out as the hub task would.
    fn apply(&mut self, effects: Vec<Effect>) {
        self.check(&effects);
        let mut closed = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { conn, message } => self.reach_device(conn, message),
                Effect::Close { conn, .. } => closed.push(conn),
                Effect::Persist { document_id, chunk } => {
                    let stored = self.store.entry(document_id).or_default();
                    stored.next_seq += 1;
                    let seq = stored.next_seq;
                    stored.chunks.insert(seq, chunk);
                    self.hub.chunk_persisted(&document_id, seq);
                }
                Effect::Compact {
                    document_id,
                    snapshot,
                    covers_through_seq,
                } => {
                    let stored = self.store.entry(document_id).or_default();
                    stored.snapshot = Some(snapshot);
                    stored.chunks.retain(|seq, _| *seq > covers_through_seq);
                }
                Effect::Flush { epoch } => self.flushes.push(epoch),
            }
        }
        for conn in closed {
            self.disconnect(conn);
        }
    }

    /// A sync message from the server reaches the device's replica.
    fn reach_device(&mut self, conn: ConnId, message: Message) {
        let Message::Sync {
            document_id, data, ..
        } = message
        else {
            return;
        };
        let Ok(message) = automerge::sync::Message::decode(&data) else {
            panic!("the hub sent an undecodable sync message");
        };
        let replica = self.replica(conn, document_id);
        let _ = replica
            .doc
            .receive_sync_message(&mut replica.state, message);
    }

    /// The invariants over one batch of effects:
    ///
    /// - acknowledged means durable: no `sync` leaves for a document with a
    ///   persisted chunk whose flush has not completed;
    /// - bad input harms only its sender: every `Close` follows an `error`
    ///   to the same connection in the same batch, unless the peer left or
    ///   the server is shutting down.
    fn check(&mut self, effects: &[Effect]) {
        let mut errored: HashSet<ConnId> = HashSet::new();
        for effect in effects {
            match effect {
                Effect::Persist { document_id, .. } => {
                    self.persisted_unassigned.insert(*document_id);
                }
                Effect::Flush { epoch } => {
                    for document_id in self.persisted_unassigned.drain() {
                        self.persisted_in_epoch.insert(document_id, *epoch);
                    }
                }
                Effect::Send {
                    conn,
                    message: Message::Sync { document_id, .. },
                } => {
                    assert!(
                        !self.persisted_unassigned.contains(document_id)
                            && !self.persisted_in_epoch.contains_key(document_id),
                        "sync for {document_id} sent to {conn} before its changes were flushed"
                    );
                }
                Effect::Send {
                    conn,
                    message: Message::Error { .. },
                } => {
                    errored.insert(*conn);
                }
                Effect::Close { conn, reason } => {
                    assert!(
                        errored.contains(conn)
                            || reason == "peer left"
                            || reason == "server shutting down",
                        "connection {conn} closed without an error first: {reason}"
                    );
                }
                _ => {}
            }
        }
    }
}
