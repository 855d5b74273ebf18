//! The simulated disk against the `BTreeMap` model of `model.rs`: random
//! writes, flushes and power cuts, plus held flushes released or cut.
//!
//! After a power cut that loses everything unflushed the rebooted disk must
//! equal the model as of the last flush; after one that keeps a prefix it
//! must equal the model at some step since the last flush. The metadata
//! keyspace follows the same rule, checked with a second map.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::model::{expected_state, observed_state, Model, DOCS};
use crate::sim::{PowerCut, SimDisk};
use crate::{DocStore, StoreError};

/// Metadata keys the operations pick from.
const META_KEYS: [&[u8]; 2] = [b"export/a", b"session/b"];

/// Longest a test waits for a thread it started to reach a held flush.
const WAIT_MS_MAX: u64 = 20_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        doc: usize,
        chunk: Vec<u8>,
    },
    Compact {
        doc: usize,
        covers_percent: u64,
        snapshot: Vec<u8>,
    },
    MetaPut {
        key: usize,
        value: Vec<u8>,
    },
    MetaRemove {
        key: usize,
    },
    Flush,
    PowerLoss {
        keep_prefix_seed: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let doc = 0..DOCS.len();
    let key = 0..META_KEYS.len();
    let bytes = proptest::collection::vec(any::<u8>(), 0..32);
    prop_oneof![
        6 => (doc.clone(), bytes.clone()).prop_map(|(doc, chunk)| Op::Append { doc, chunk }),
        2 => (doc, 0..=100u64, bytes.clone()).prop_map(|(doc, covers_percent, snapshot)| Op::Compact { doc, covers_percent, snapshot }),
        2 => (key.clone(), bytes).prop_map(|(key, value)| Op::MetaPut { key, value }),
        1 => key.prop_map(|key| Op::MetaRemove { key }),
        2 => Just(Op::Flush),
        1 => proptest::option::of(any::<u64>()).prop_map(|keep_prefix_seed| Op::PowerLoss { keep_prefix_seed }),
    ]
}

type Meta = BTreeMap<Vec<u8>, Vec<u8>>;

fn observed_meta(disk: &SimDisk) -> Result<Meta, StoreError> {
    let mut meta = Meta::new();
    for key in META_KEYS {
        if let Some(value) = disk.meta_get(key)? {
            meta.insert(key.to_vec(), value);
        }
    }
    Ok(meta)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn simulated_disk_matches_a_model_across_flushes_and_power_cuts(ops in proptest::collection::vec(op(), 1..48)) {
        let mut disk = SimDisk::new();
        let mut model = Model::new();
        let mut meta = Meta::new();
        // States since the last flush, oldest first; the first is durable.
        let mut since_flush = vec![(model.clone(), meta.clone())];
        for op in ops {
            match op {
                Op::Append { doc, chunk } => {
                    let seq = disk.append_chunk(&DOCS[doc], &chunk)?;
                    prop_assert_eq!(seq, model.entry(DOCS[doc]).or_default().append(chunk));
                }
                Op::Compact { doc, covers_percent, snapshot } => {
                    let last_seq = model.get(&DOCS[doc]).map_or(0, |model_doc| model_doc.last_seq);
                    let covers = last_seq * covers_percent / 100;
                    disk.compact(&DOCS[doc], &snapshot, covers)?;
                    model.entry(DOCS[doc]).or_default().compact(covers, snapshot);
                }
                Op::MetaPut { key, value } => {
                    disk.meta_put(META_KEYS[key], &value)?;
                    meta.insert(META_KEYS[key].to_vec(), value);
                }
                Op::MetaRemove { key } => {
                    disk.meta_remove(META_KEYS[key])?;
                    meta.remove(META_KEYS[key]);
                }
                Op::Flush => {
                    disk.flush()?;
                    since_flush = vec![(model.clone(), meta.clone())];
                }
                Op::PowerLoss { keep_prefix_seed } => {
                    let cut = keep_prefix_seed.map_or(PowerCut::LoseUnflushed, |seed| PowerCut::KeepPrefix { seed });
                    let rebooted = disk.power_loss(cut);
                    prop_assert!(disk.load(&DOCS[0]).is_err(), "a disk without power answers nothing");
                    disk = rebooted;
                    let observed = (observed_state(&disk)?, observed_meta(&disk)?);
                    let candidates: &[(Model, Meta)] = match cut {
                        PowerCut::LoseUnflushed => &since_flush[..1],
                        PowerCut::KeepPrefix { .. } => &since_flush,
                    };
                    let Some(survived) = candidates
                        .iter()
                        .find(|(model, meta)| (expected_state(model), meta.clone()) == observed)
                    else {
                        return Err(TestCaseError::fail(format!(
                            "after {cut:?} the disk holds {observed:?}, no state it may hold"
                        )));
                    };
                    (model, meta) = survived.clone();
                    since_flush = vec![(model.clone(), meta.clone())];
                }
            }
            if since_flush.last() != Some(&(model.clone(), meta.clone())) {
                since_flush.push((model.clone(), meta.clone()));
            }
            prop_assert_eq!(observed_state(&disk)?, expected_state(&model));
            prop_assert_eq!(observed_meta(&disk)?, meta.clone());
        }
    }
}

/// Starts a flush on another thread and waits until the disk holds it.
fn flush_on_a_thread(disk: &Arc<SimDisk>) -> std::thread::JoinHandle<Result<(), StoreError>> {
    let held_before = disk.held_flushes();
    let flushing = Arc::clone(disk);
    let thread = std::thread::spawn(move || flushing.flush());
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while disk.held_flushes() == held_before {
        assert!(
            Instant::now() < deadline,
            "the flush never reached the disk"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    thread
}

#[test]
fn a_released_flush_makes_durable_exactly_the_writes_made_before_it_began() -> Result<(), StoreError>
{
    let disk = Arc::new(SimDisk::new());
    disk.hold_flushes();
    disk.append_chunk(&DOCS[0], b"before the flush")?;
    let flushing = flush_on_a_thread(&disk);
    disk.append_chunk(&DOCS[0], b"during the flush")?;
    assert!(disk.held_flush_covers(1) && !disk.held_flush_covers(2));
    assert_eq!(disk.release_flushes(), 1);
    flushing.join().expect("flush thread")?;
    let rebooted = disk.power_loss(PowerCut::LoseUnflushed);
    let survived = rebooted.load(&DOCS[0])?.expect("stored");
    assert_eq!(survived.chunks, vec![b"before the flush".to_vec()]);
    Ok(())
}

#[test]
fn a_power_cut_during_a_held_flush_fails_the_flush_and_loses_its_writes() -> Result<(), StoreError>
{
    let disk = Arc::new(SimDisk::new());
    disk.append_chunk(&DOCS[1], b"flushed")?;
    disk.flush()?;
    disk.hold_flushes();
    disk.append_chunk(&DOCS[1], b"in flight")?;
    let flushing = flush_on_a_thread(&disk);
    let rebooted = disk.power_loss(PowerCut::LoseUnflushed);
    assert!(matches!(
        flushing.join().expect("flush thread"),
        Err(StoreError::Io(_))
    ));
    let survived = rebooted.load(&DOCS[1])?.expect("stored");
    assert_eq!(survived.chunks, vec![b"flushed".to_vec()]);
    assert_eq!(survived.last_chunk_seq, 1);
    Ok(())
}

#[test]
fn ids_keep_growing_across_power_cuts_even_when_unflushed() -> Result<(), StoreError> {
    let disk = SimDisk::new();
    let before = disk.next_id()?;
    let rebooted = disk.power_loss(PowerCut::LoseUnflushed);
    assert!(rebooted.next_id()? > before);
    Ok(())
}
