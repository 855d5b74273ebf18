//! Deterministic simulation: one hub, several devices, an in-memory network
//! and an in-memory store, driven by a seeded random schedule.
//!
//! Each step picks one thing to happen: a device edits a document, one
//! message crosses one link (links are ordered, but links interleave in any
//! order), a link drops with its messages in flight, a device reconnects, a
//! pending flush completes, the hub evicts idle documents, or the server
//! crashes (losing every unflushed write) and restarts. At the end every
//! link comes up and the network runs until quiet, with a hard cap on
//! rounds. Then: every replica has the same heads, every edit made on any
//! device is present, and every edit a device saw acknowledged before a
//! crash survived it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use proptest::prelude::*;
use ventas_sync_protocol::device::{DeviceCore, DeviceEffect};
use ventas_sync_protocol::hub::{ConnId, Effect, Hub, HubConfig, LoadedDoc};
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::{decode, encode, Message, MESSAGE_BYTES_MAX_DEFAULT};

/// Hard cap on delivery rounds when draining the network at the end.
const QUIESCE_ROUNDS_MAX: usize = 100_000;

/// A tiny deterministic generator (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The server's disk: what was appended, and what a flush made durable.
#[derive(Default, Clone)]
struct MemStore {
    /// Visible to the running process (flushed or not).
    live: BTreeMap<DocumentId, LoadedDoc>,
    /// What survives a crash.
    durable: BTreeMap<DocumentId, LoadedDoc>,
}

impl MemStore {
    fn append(&mut self, id: DocumentId, chunk: Vec<u8>) -> u64 {
        let doc = self.live.entry(id).or_default();
        doc.last_chunk_seq += 1;
        doc.chunks.push(chunk);
        doc.last_chunk_seq
    }
    fn compact(&mut self, id: DocumentId, snapshot: Vec<u8>, covers_through_seq: u64) {
        let doc = self.live.entry(id).or_default();
        let keep_from = doc.chunks.len() as u64 - (doc.last_chunk_seq - covers_through_seq);
        doc.chunks.drain(..keep_from as usize);
        doc.snapshot = Some(snapshot);
    }
    fn flush(&mut self) {
        self.durable = self.live.clone();
    }
    fn crash(&mut self) {
        self.live = self.durable.clone();
    }
}

struct Link {
    conn: ConnId,
    to_server: VecDeque<Vec<u8>>,
    to_device: VecDeque<Vec<u8>>,
}

struct Device {
    core: DeviceCore,
    link: Option<Link>,
    /// Root keys this device wrote.
    written: BTreeSet<String>,
    /// Keys the device saw acknowledged by the server (synced).
    acknowledged: BTreeSet<String>,
}

struct Sim {
    rng: Rng,
    hub: Hub,
    store: MemStore,
    pending_flush: Option<u64>,
    devices: Vec<Device>,
    docs: Vec<DocumentId>,
    next_conn: ConnId,
    now_ms: u64,
    crashes: usize,
    /// No drops, reconnects or crashes: a fresh session after a failure
    /// resynchronises from scratch and can hide a lost message.
    calm: bool,
}

fn hub_config() -> HubConfig {
    let mut config = HubConfig::new(PeerId::new("server"));
    config.doc_idle_evict_after_ms = 50;
    config.compact_after_chunks = 4;
    config
}

impl Sim {
    fn new(seed: u64, devices: usize, docs: usize) -> Self {
        let mut rng = Rng::new(seed);
        let docs: Vec<DocumentId> = (0..docs)
            .map(|_| {
                let mut bytes = [0u8; 16];
                for b in &mut bytes {
                    *b = rng.below(256) as u8;
                }
                DocumentId::from_bytes(bytes)
            })
            .collect();
        let devices = (0..devices)
            .map(|i| {
                let mut core = DeviceCore::new(PeerId::new(format!("device-{i}")), None);
                for id in &docs {
                    let _ = core.add_doc(*id, Automerge::new());
                }
                Device {
                    core,
                    link: None,
                    written: BTreeSet::new(),
                    acknowledged: BTreeSet::new(),
                }
            })
            .collect();
        Self {
            rng,
            hub: Hub::new(hub_config()),
            store: MemStore::default(),
            pending_flush: None,
            devices,
            docs,
            next_conn: 1,
            now_ms: 0,
            crashes: 0,
            calm: false,
        }
    }

    fn connect(&mut self, device: usize) {
        if self.devices[device].link.is_some() {
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.hub.connect(conn);
        let effects = self.devices[device].core.connected();
        self.devices[device].link = Some(Link {
            conn,
            to_server: VecDeque::new(),
            to_device: VecDeque::new(),
        });
        self.device_effects(device, effects);
    }

    fn disconnect(&mut self, device: usize) {
        if let Some(link) = self.devices[device].link.take() {
            self.hub.disconnect(link.conn);
            self.devices[device].core.disconnected();
        }
    }

    fn edit(&mut self, device: usize) {
        let doc = self.docs[self.rng.below(self.docs.len() as u64) as usize];
        let key = format!("d{device}-{}", self.devices[device].written.len());
        let value = key.clone();
        let (_, effects) = self.devices[device]
            .core
            .change(&doc, |d| {
                let mut tx = d.transaction();
                tx.put(ROOT, &key, value).expect("put on root");
                tx.commit();
            })
            .expect("device tracks the doc");
        self.devices[device].written.insert(format!("{doc}/{key}"));
        self.device_effects(device, effects);
    }

    fn device_effects(&mut self, device: usize, effects: Vec<DeviceEffect>) {
        for effect in effects {
            if let DeviceEffect::Send(message) = effect {
                if let Some(link) = self.devices[device].link.as_mut() {
                    link.to_server.push_back(encode(&message));
                }
            }
        }
    }

    fn hub_effects(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { conn, message } => {
                    if let Some(link) = self.link_mut(conn) {
                        link.to_device.push_back(encode(&message));
                    }
                }
                Effect::Close { conn, .. } => {
                    if let Some(device) = self.device_of(conn) {
                        self.disconnect(device);
                    }
                }
                Effect::Persist { document_id, chunk } => {
                    let seq = self.store.append(document_id, chunk);
                    self.hub.chunk_persisted(&document_id, seq);
                }
                Effect::Compact {
                    document_id,
                    snapshot,
                    covers_through_seq,
                } => self
                    .store
                    .compact(document_id, snapshot, covers_through_seq),
                Effect::Flush { epoch } => {
                    assert!(self.pending_flush.is_none(), "two flushes in flight");
                    self.pending_flush = Some(epoch);
                }
            }
        }
    }

    fn link_mut(&mut self, conn: ConnId) -> Option<&mut Link> {
        self.devices
            .iter_mut()
            .filter_map(|d| d.link.as_mut())
            .find(|l| l.conn == conn)
    }

    fn device_of(&self, conn: ConnId) -> Option<usize> {
        self.devices
            .iter()
            .position(|d| d.link.as_ref().is_some_and(|l| l.conn == conn))
    }

    fn deliver_to_server(&mut self, device: usize) -> bool {
        let Some(link) = self.devices[device].link.as_mut() else {
            return false;
        };
        let Some(frame) = link.to_server.pop_front() else {
            return false;
        };
        let conn = link.conn;
        let message = decode(&frame, MESSAGE_BYTES_MAX_DEFAULT).expect("devices send valid frames");
        if let Some(id) = self.hub.doc_to_load(&message) {
            let mut effects = Vec::new();
            assert!(self.hub.make_room(&mut effects));
            self.hub_effects(effects);
            let stored = self.store.live.get(&id).cloned();
            self.hub
                .doc_loaded(id, stored, self.now_ms)
                .expect("stored docs load");
        }
        let effects = self.hub.receive(conn, message, self.now_ms);
        self.hub_effects(effects);
        true
    }

    fn deliver_to_device(&mut self, device: usize) -> bool {
        let Some(link) = self.devices[device].link.as_mut() else {
            return false;
        };
        let Some(frame) = link.to_device.pop_front() else {
            return false;
        };
        let message = decode(&frame, MESSAGE_BYTES_MAX_DEFAULT).expect("hub sends valid frames");
        let effects = self.devices[device]
            .core
            .receive(message)
            .expect("device accepts hub messages");
        self.device_effects(device, effects);
        self.note_acknowledged(device);
        true
    }

    /// Records, for each document the server acknowledged, the keys the
    /// device holds: they must survive any later crash.
    fn note_acknowledged(&mut self, device: usize) {
        let docs = self.docs.clone();
        for id in docs {
            if !self.devices[device].core.is_synced(&id) {
                continue;
            }
            let keys: Vec<String> = self.devices[device]
                .core
                .doc(&id)
                .map(|d| d.keys(ROOT).map(|k| format!("{id}/{k}")).collect())
                .unwrap_or_default();
            self.devices[device].acknowledged.extend(keys);
        }
    }

    fn complete_flush(&mut self) -> bool {
        let Some(epoch) = self.pending_flush.take() else {
            return false;
        };
        self.store.flush();
        let effects = self.hub.flushed(epoch, self.now_ms);
        self.hub_effects(effects);
        true
    }

    fn crash_server(&mut self) {
        self.crashes += 1;
        for device in 0..self.devices.len() {
            self.disconnect(device);
        }
        self.store.crash();
        self.pending_flush = None;
        self.hub = Hub::new(hub_config());
    }

    fn step(&mut self) {
        let device = self.rng.below(self.devices.len() as u64) as usize;
        let roll = self.rng.below(100);
        let roll = if self.calm && roll >= 85 {
            roll % 85
        } else {
            roll
        };
        match roll {
            0..=14 => self.edit(device),
            15..=44 => {
                self.deliver_to_server(device);
            }
            45..=74 => {
                self.deliver_to_device(device);
            }
            75..=84 => {
                self.complete_flush();
            }
            85..=89 => self.connect(device),
            90..=94 => self.disconnect(device),
            95..=97 => {
                self.now_ms += 100;
                let effects = self.hub.tick(self.now_ms);
                self.hub_effects(effects);
            }
            _ => {
                if self.rng.below(4) == 0 {
                    self.crash_server();
                }
            }
        }
    }

    /// Brings every link up and delivers until nothing moves.
    fn quiesce(&mut self) {
        for device in 0..self.devices.len() {
            self.connect(device);
        }
        for _ in 0..QUIESCE_ROUNDS_MAX {
            let mut moved = false;
            for device in 0..self.devices.len() {
                moved |= self.deliver_to_server(device);
                moved |= self.deliver_to_device(device);
            }
            moved |= self.complete_flush();
            if !moved {
                return;
            }
        }
        panic!("network did not quiesce within {QUIESCE_ROUNDS_MAX} rounds");
    }

    fn check(&mut self) {
        let mut expected: BTreeSet<String> = BTreeSet::new();
        for device in &self.devices {
            expected.extend(device.written.iter().cloned());
        }
        for id in self.docs.clone() {
            if self.hub.doc(&id).is_none() && self.store.live.contains_key(&id) {
                let stored = self.store.live.get(&id).cloned();
                self.hub
                    .doc_loaded(id, stored, self.now_ms)
                    .expect("stored docs load");
            }
            let server_heads = self.hub.doc(&id).map(|d| d.get_heads()).unwrap_or_default();
            for (i, device) in self.devices.iter().enumerate() {
                let device_heads = device
                    .core
                    .doc(&id)
                    .map(|d| d.get_heads())
                    .unwrap_or_default();
                assert_eq!(device_heads, server_heads, "device {i} diverged on {id}");
                // A document nobody wrote is empty on both sides and the
                // server answers `doc-unavailable`: nothing to acknowledge.
                if !device_heads.is_empty() {
                    assert!(device.core.is_synced(&id), "device {i} not synced on {id}");
                }
            }
        }
        let mut present = BTreeSet::new();
        for id in &self.docs {
            if let Some(doc) = self.hub.doc(id) {
                present.extend(doc.keys(ROOT).map(|k| format!("{id}/{k}")));
            }
        }
        let missing: Vec<_> = expected.difference(&present).collect();
        assert!(missing.is_empty(), "edits lost: {missing:?}");
        let extra: Vec<_> = present.difference(&expected).collect();
        assert!(extra.is_empty(), "edits nobody made: {extra:?}");
    }

    /// Every key acknowledged before a crash is still on the server.
    fn check_acknowledged_survived(&mut self) {
        for id in self.docs.clone() {
            if self.hub.doc(&id).is_none() {
                let stored = self.store.durable.get(&id).cloned();
                self.hub
                    .doc_loaded(id, stored, self.now_ms)
                    .expect("stored docs load");
            }
        }
        for (i, device) in self.devices.iter().enumerate() {
            for key in &device.acknowledged {
                let (id, name) = key.split_once('/').expect("doc/key");
                let id: DocumentId = id.parse().expect("doc id");
                let present = self
                    .hub
                    .doc(&id)
                    .is_some_and(|d| d.get(ROOT, name).ok().flatten().is_some());
                assert!(present, "device {i}: acknowledged {key} lost in a crash");
            }
        }
    }
}

fn run(seed: u64, devices: usize, docs: usize, steps: usize) -> Sim {
    let mut sim = Sim::new(seed, devices, docs);
    for _ in 0..steps {
        sim.step();
    }
    sim.quiesce();
    sim.check();
    sim
}

#[test]
fn three_devices_converge_through_drops_and_reorders() {
    for seed in 1..=20 {
        run(seed, 3, 2, 600);
    }
}

#[test]
fn acknowledged_edits_survive_server_crashes() {
    let mut crashes = 0;
    for seed in 100..130 {
        let mut sim = Sim::new(seed, 3, 1);
        for step in 0..800 {
            sim.step();
            if step % 97 == 0 {
                // Crash right after something was acknowledged.
                sim.crash_server();
                sim.check_acknowledged_survived();
                sim.crash_server();
            }
        }
        crashes += sim.crashes;
        sim.quiesce();
        sim.check();
    }
    assert!(crashes > 0, "the schedule never crashed the server");
}

/// With one device per document nobody else's change can carry the
/// server's heads back, so every acknowledgement must come from the
/// device's own exchange (regression: automerge skips a reply to a peer
/// that reported our heads, which lost the ack of a batched write).
#[test]
fn a_lone_device_is_acknowledged_after_any_schedule() {
    // Seed 185 reproduced the lost acknowledgement before the fix.
    for seed in (1..=40).chain([185]) {
        let mut sim = Sim::new(seed, 1, 1);
        sim.calm = true;
        sim.connect(0);
        for _ in 0..300 {
            sim.step();
        }
        sim.quiesce();
        sim.check();
    }
}

#[test]
fn offline_device_merges_many_edits_on_reconnect() {
    let mut sim = Sim::new(7, 2, 1);
    sim.connect(0);
    for _ in 0..200 {
        sim.edit(1);
    }
    for _ in 0..50 {
        sim.edit(0);
    }
    sim.quiesce();
    sim.check();
    let doc = sim.hub.doc(&sim.docs[0]).expect("loaded");
    assert_eq!(doc.keys(ROOT).count(), 250);
}

#[test]
fn server_sends_nothing_before_the_flush_completes() {
    let mut sim = Sim::new(3, 1, 1);
    sim.connect(0);
    while sim.deliver_to_server(0) || sim.deliver_to_device(0) || sim.complete_flush() {}
    sim.edit(0);
    // The first round trips negotiate (heads, need); the change itself
    // crosses in a later message. Deliver until the server has it.
    for _ in 0..QUIESCE_ROUNDS_MAX {
        if sim.pending_flush.is_some() {
            break;
        }
        sim.deliver_to_server(0);
        sim.deliver_to_device(0);
    }
    assert!(sim.pending_flush.is_some(), "an edit must start a flush");
    while sim.deliver_to_server(0) {}
    while sim.deliver_to_device(0) {}
    while sim.deliver_to_server(0) {}
    let queued_for_device = sim.devices[0].link.as_ref().map(|l| l.to_device.len());
    assert_eq!(queued_for_device, Some(0), "a reply left before the flush");
    assert!(!sim.devices[0].core.is_synced(&sim.docs[0]));
    assert!(sim.complete_flush());
    while sim.deliver_to_device(0) || sim.deliver_to_server(0) || sim.complete_flush() {}
    assert!(sim.devices[0].core.is_synced(&sim.docs[0]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_schedule_converges(seed in 1u64..u64::MAX, devices in 1usize..5, docs in 1usize..3, steps in 50usize..500) {
        run(seed, devices, docs, steps);
    }
}

#[test]
fn messages_round_trip_between_cores() {
    // A join as the device encodes it decodes to the same message.
    let mut core = DeviceCore::new(PeerId::new("d"), None);
    let effects = core.connected();
    let DeviceEffect::Send(join) = &effects[0] else {
        panic!("connected() must send join");
    };
    let decoded: Message = decode(&encode(join), MESSAGE_BYTES_MAX_DEFAULT).expect("decodes");
    assert_eq!(&decoded, join);
}

/// Found by `any_schedule_converges`: a lone device that never wrote its
/// second document, which the server therefore never had.
#[test]
fn a_document_nobody_wrote_converges_empty() {
    let sim = run(629103517366541259, 1, 2, 50);
    let empty = sim
        .docs
        .iter()
        .filter(|id| sim.hub.doc(id).is_none_or(|doc| doc.get_heads().is_empty()))
        .count();
    assert_eq!(empty, 1, "the seed still leaves one document unwritten");
}
