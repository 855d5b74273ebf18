//! Random sequences of document operations, flushes and reopens, checked
//! after every step against a `BTreeMap` model of the store.
//!
//! After `Reopen` (flush, drop, open) the store must equal the model. After
//! `ReopenUnflushed` (drop, open) it may hold any prefix of the writes since
//! the last flush (sled recovers a prefix of its log), so it must equal the
//! model as it was at some step since then; the model continues from there.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{open_in, temp_dir};
use crate::{DocKey, DocStore, StoredDoc};

/// Document keys the operations pick from: the extremes of the key space and
/// one in the middle, so listing and neighbours are exercised.
pub(super) const DOCS: [DocKey; 3] = [[0x00; 16], [0x7f; 16], [0xff; 16]];

#[derive(Debug, Clone)]
enum Op {
    Append {
        doc: usize,
        chunk: Vec<u8>,
    },
    /// Compact through `covers_percent`% of the document's last seq, which
    /// may be older than its snapshot (a stale compaction).
    Compact {
        doc: usize,
        covers_percent: u64,
        snapshot: Vec<u8>,
    },
    Flush,
    Reopen,
    ReopenUnflushed,
}

fn op() -> impl Strategy<Value = Op> {
    let doc = 0..DOCS.len();
    let bytes = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        6 => (doc.clone(), bytes.clone()).prop_map(|(doc, chunk)| Op::Append { doc, chunk }),
        2 => (doc, 0..=100u64, bytes).prop_map(|(doc, covers_percent, snapshot)| Op::Compact { doc, covers_percent, snapshot }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReopenUnflushed),
    ]
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ModelDoc {
    pub(super) last_seq: u64,
    pub(super) snapshot: Option<(u64, Vec<u8>)>,
    pub(super) chunks: BTreeMap<u64, Vec<u8>>,
}

pub(super) type Model = BTreeMap<DocKey, ModelDoc>;

impl ModelDoc {
    /// What the store must do for an append: the seq it hands out.
    pub(super) fn append(&mut self, chunk: Vec<u8>) -> u64 {
        self.last_seq += 1;
        self.chunks.insert(self.last_seq, chunk);
        self.last_seq
    }

    /// What the store must do for a compaction through `covers`
    /// (nothing if a newer snapshot is stored).
    pub(super) fn compact(&mut self, covers: u64, snapshot: Vec<u8>) {
        let stale = self.snapshot.as_ref().is_some_and(|(old, _)| *old > covers);
        if !stale {
            self.snapshot = Some((covers, snapshot));
            self.chunks.retain(|&seq, _| seq > covers);
        }
    }
}

fn expected_load(model: &Model, doc: &DocKey) -> Option<StoredDoc> {
    model.get(doc).map(|model_doc| StoredDoc {
        snapshot: model_doc.snapshot.as_ref().map(|(_, bytes)| bytes.clone()),
        chunks: model_doc.chunks.values().cloned().collect(),
        last_chunk_seq: model_doc.last_seq,
    })
}

/// Everything the store reports, for comparison with [`expected_state`].
pub(super) type ObservedState = (Vec<Option<StoredDoc>>, u64, Vec<DocKey>, Vec<bool>);

pub(super) fn observed_state(store: &impl DocStore) -> Result<ObservedState, TestCaseError> {
    let mut loads = Vec::new();
    let mut contains = Vec::new();
    for doc in &DOCS {
        loads.push(store.load(doc)?);
        contains.push(store.contains(doc)?);
    }
    Ok((
        loads,
        store.doc_count()?,
        store.list_docs(None, 10)?,
        contains,
    ))
}

pub(super) fn expected_state(model: &Model) -> ObservedState {
    let count = u64::try_from(model.len()).unwrap_or(u64::MAX);
    (
        DOCS.iter().map(|doc| expected_load(model, doc)).collect(),
        count,
        model.keys().copied().collect(),
        DOCS.iter().map(|doc| model.contains_key(doc)).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn store_matches_a_model_across_flushes_and_reopens(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = temp_dir();
        let mut store = open_in(dir.path())?;
        let mut model = Model::new();
        // Model states since the last flush, oldest first; the first is the
        // flushed state.
        let mut since_flush = vec![model.clone()];

        for op in ops {
            match op {
                Op::Append { doc, chunk } => {
                    let key = DOCS[doc];
                    let seq = store.append_chunk(&key, &chunk)?;
                    let expected = model.entry(key).or_default().append(chunk);
                    prop_assert_eq!(seq, expected, "seqs grow by one from the last ever handed out");
                }
                Op::Compact { doc, covers_percent, snapshot } => {
                    let key = DOCS[doc];
                    let last_seq = model.get(&key).map_or(0, |model_doc| model_doc.last_seq);
                    let covers = last_seq * covers_percent / 100;
                    store.compact(&key, &snapshot, covers)?;
                    model.entry(key).or_default().compact(covers, snapshot);
                }
                Op::Flush => {
                    store.flush()?;
                    since_flush = vec![model.clone()];
                }
                Op::Reopen => {
                    store.flush()?;
                    drop(store);
                    store = open_in(dir.path())?;
                    since_flush = vec![model.clone()];
                }
                Op::ReopenUnflushed => {
                    drop(store);
                    store = open_in(dir.path())?;
                    let observed = observed_state(&store)?;
                    let Some(recovered) = since_flush
                        .iter()
                        .rev()
                        .find(|candidate| expected_state(candidate) == observed)
                    else {
                        return Err(TestCaseError::fail(format!(
                            "after reopen the store is {observed:?}, no state since the last flush"
                        )));
                    };
                    model = recovered.clone();
                    since_flush = vec![model.clone()];
                }
            }
            if since_flush.last() != Some(&model) {
                since_flush.push(model.clone());
            }
            prop_assert_eq!(observed_state(&store)?, expected_state(&model));
        }
    }
}
