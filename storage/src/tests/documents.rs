//! Appends, loads, compaction and listing of documents.

use std::sync::Arc;

use super::{doc, open_in, temp_dir};
use crate::{
    DocStore, LoadedAfter, SledStore, StoreError, StoredDoc, CHUNK_BYTES_MAX, LIST_LIMIT_MAX,
    SNAPSHOT_BYTES_MAX,
};

fn stored(snapshot: Option<&[u8]>, chunks: &[&[u8]], last_chunk_seq: u64) -> Option<StoredDoc> {
    Some(StoredDoc {
        snapshot: snapshot.map(<[u8]>::to_vec),
        chunks: chunks.iter().map(|chunk| chunk.to_vec()).collect(),
        last_chunk_seq,
    })
}

#[test]
fn a_document_never_stored_loads_as_none() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    assert_eq!(store.load(&doc(1))?, None);
    assert!(!store.contains(&doc(1))?);
    assert_eq!(store.doc_count()?, 0);
    assert_eq!(store.list_docs(None, 10)?, Vec::<[u8; 16]>::new());
    Ok(())
}

#[test]
fn appended_chunks_load_in_append_order_with_seqs_from_one() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    assert_eq!(store.append_chunk(&doc(1), b"a")?, 1);
    assert_eq!(store.append_chunk(&doc(1), b"")?, 2);
    assert_eq!(store.append_chunk(&doc(1), b"c")?, 3);
    assert_eq!(store.load(&doc(1))?, stored(None, &[b"a", b"", b"c"], 3));
    assert!(store.contains(&doc(1))?);
    assert_eq!(store.doc_count()?, 1);
    Ok(())
}

#[test]
fn compaction_replaces_covered_chunks_with_the_snapshot() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    for chunk in [b"1", b"2", b"3"] {
        store.append_chunk(&doc(1), chunk)?;
    }
    store.compact(&doc(1), b"S123", 3)?;
    assert_eq!(store.load(&doc(1))?, stored(Some(b"S123"), &[], 3));
    // A second compaction replaces the first snapshot.
    store.append_chunk(&doc(1), b"4")?;
    store.compact(&doc(1), b"S1234", 4)?;
    assert_eq!(store.load(&doc(1))?, stored(Some(b"S1234"), &[], 4));
    assert_eq!(store.doc_count()?, 1);
    Ok(())
}

#[test]
fn compaction_covering_fewer_chunks_keeps_the_later_ones() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    for chunk in [b"1", b"2", b"3", b"4"] {
        store.append_chunk(&doc(1), chunk)?;
    }
    // The snapshot was saved when only 1 and 2 had been appended.
    store.compact(&doc(1), b"S12", 2)?;
    assert_eq!(store.load(&doc(1))?, stored(Some(b"S12"), &[b"3", b"4"], 4));
    Ok(())
}

#[test]
fn compacting_one_document_leaves_the_others_untouched() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    // Neighbours on both sides in key order.
    for (byte, chunk) in [(0, b"x"), (1, b"a"), (2, b"y")] {
        store.append_chunk(&doc(byte), chunk)?;
        store.append_chunk(&doc(byte), chunk)?;
    }
    store.compact(&doc(1), b"Saa", 2)?;
    assert_eq!(store.load(&doc(0))?, stored(None, &[b"x", b"x"], 2));
    assert_eq!(store.load(&doc(1))?, stored(Some(b"Saa"), &[], 2));
    assert_eq!(store.load(&doc(2))?, stored(None, &[b"y", b"y"], 2));
    Ok(())
}

#[test]
fn a_compaction_older_than_the_stored_snapshot_changes_nothing() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    for chunk in [b"1", b"2", b"3"] {
        store.append_chunk(&doc(1), chunk)?;
    }
    store.compact(&doc(1), b"S123", 3)?;
    // A slower compactor finishes late with a snapshot of 1 only; storing it
    // would lose changes 2 and 3.
    store.compact(&doc(1), b"S1", 1)?;
    assert_eq!(store.load(&doc(1))?, stored(Some(b"S123"), &[], 3));
    Ok(())
}

#[test]
fn compaction_past_the_last_seq_is_rejected_and_writes_nothing() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    store.append_chunk(&doc(1), b"1")?;
    let result = store.compact(&doc(1), b"S", 2);
    assert!(matches!(
        result,
        Err(StoreError::CompactBeyondLastSeq {
            covers_through_seq: 2,
            last_seq: 1
        })
    ));
    assert_eq!(store.load(&doc(1))?, stored(None, &[b"1"], 1));
    Ok(())
}

#[test]
fn compacting_a_new_document_creates_it_from_the_snapshot() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    store.compact(&doc(1), b"imported", 0)?;
    assert_eq!(store.load(&doc(1))?, stored(Some(b"imported"), &[], 0));
    assert_eq!(store.doc_count()?, 1);
    assert_eq!(store.append_chunk(&doc(1), b"1")?, 1);
    assert_eq!(store.load(&doc(1))?, stored(Some(b"imported"), &[b"1"], 1));
    assert_eq!(store.doc_count()?, 1);
    Ok(())
}

#[test]
fn seqs_keep_growing_across_compaction_and_reopen() -> Result<(), StoreError> {
    let dir = temp_dir();
    let store = open_in(dir.path())?;
    assert_eq!(store.append_chunk(&doc(1), b"1")?, 1);
    assert_eq!(store.append_chunk(&doc(1), b"2")?, 2);
    store.compact(&doc(1), b"S12", 2)?;
    // Every chunk is gone, but seq 1 and 2 are not handed out again.
    assert_eq!(store.append_chunk(&doc(1), b"3")?, 3);
    store.compact(&doc(1), b"S123", 3)?;
    store.flush()?;
    drop(store);

    let store = open_in(dir.path())?;
    assert_eq!(store.load(&doc(1))?, stored(Some(b"S123"), &[], 3));
    assert_eq!(store.append_chunk(&doc(1), b"4")?, 4);
    assert_eq!(store.append_chunk(&doc(2), b"other")?, 1);
    assert_eq!(store.doc_count()?, 2);
    Ok(())
}

#[test]
fn values_over_their_limits_are_rejected_without_writing() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    let too_big = vec![0u8; usize::try_from(CHUNK_BYTES_MAX + 1).expect("fits in usize")];
    assert!(matches!(
        store.append_chunk(&doc(1), &too_big),
        Err(StoreError::TooLarge { what: "chunk", .. })
    ));
    assert_eq!(store.load(&doc(1))?, None);
    let too_big = vec![0u8; usize::try_from(SNAPSHOT_BYTES_MAX + 1).expect("fits in usize")];
    assert!(matches!(
        store.compact(&doc(1), &too_big, 0),
        Err(StoreError::TooLarge {
            what: "snapshot",
            ..
        })
    ));
    assert_eq!(store.load(&doc(1))?, None);
    assert_eq!(store.doc_count()?, 0);
    Ok(())
}

#[test]
fn list_docs_pages_through_every_document_in_key_order() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    // The extremes of the key space, plus documents with several records.
    let mut expected = vec![doc(0x00), doc(0xff)];
    for byte in [0x10, 0x01, 0x80, 0xfe, 0x7f] {
        expected.push(doc(byte));
    }
    for (index, key) in expected.iter().enumerate() {
        for _ in 0..=index {
            store.append_chunk(key, b"chunk")?;
        }
    }
    store.compact(&doc(0x10), b"S", 1)?;
    expected.sort();
    assert_eq!(store.doc_count()?, 7);

    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_docs(after.as_ref(), 3)?;
        assert!(page.len() <= 3);
        let Some(last) = page.last().copied() else {
            break;
        };
        listed.extend(page);
        after = Some(last);
    }
    assert_eq!(listed, expected);
    assert_eq!(store.list_docs(None, 0)?, Vec::<[u8; 16]>::new());
    assert_eq!(
        store.list_docs(Some(&doc(0xff)), 10)?,
        Vec::<[u8; 16]>::new()
    );
    assert!(matches!(
        store.list_docs(None, LIST_LIMIT_MAX + 1),
        Err(StoreError::LimitTooLarge { .. })
    ));
    Ok(())
}

#[test]
fn concurrent_writers_get_distinct_seqs_and_readers_see_whole_states() -> Result<(), StoreError> {
    const THREADS: u8 = 4;
    const APPENDS_PER_THREAD: u64 = 50;
    let store = Arc::new(SledStore::temporary()?);
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Result<Vec<u64>, StoreError> {
                let mut seqs = Vec::new();
                for round in 0..APPENDS_PER_THREAD {
                    seqs.push(store.append_chunk(&doc(0xaa), &[thread])?);
                    // Every thread also creates documents of its own.
                    store.append_chunk(&doc(thread), &[thread])?;
                    if round % 10 == 9 {
                        let loaded = store.load(&doc(0xaa))?.unwrap_or_default();
                        store.compact(&doc(0xaa), b"S", loaded.last_chunk_seq)?;
                    }
                }
                Ok(seqs)
            })
        })
        .collect();
    // A reader loading the shared document throughout must always see one
    // consistent state, never a half-applied append or compaction.
    let reader = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || -> Result<u64, StoreError> {
            let mut last_seen = 0;
            while last_seen < u64::from(THREADS) * APPENDS_PER_THREAD {
                let loaded = store.load(&doc(0xaa))?.unwrap_or_default();
                assert!(
                    loaded.last_chunk_seq >= last_seen,
                    "last seq went backwards"
                );
                last_seen = loaded.last_chunk_seq;
            }
            Ok(last_seen)
        })
    };
    let mut all_seqs = Vec::new();
    for worker in workers {
        all_seqs.extend(worker.join().expect("worker thread panicked")?);
    }
    reader.join().expect("reader thread panicked")?;
    all_seqs.sort_unstable();
    let expected: Vec<u64> = (1..=u64::from(THREADS) * APPENDS_PER_THREAD).collect();
    assert_eq!(all_seqs, expected);
    assert_eq!(store.doc_count()?, u64::from(THREADS) + 1);
    let shared = store.load(&doc(0xaa))?.unwrap_or_default();
    assert_eq!(
        shared.last_chunk_seq,
        u64::from(THREADS) * APPENDS_PER_THREAD
    );
    Ok(())
}

#[test]
fn an_arc_dyn_doc_store_forwards_to_the_store() -> Result<(), StoreError> {
    let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary()?);
    fn use_store(store: &impl DocStore) -> Result<u64, StoreError> {
        store.append_chunk(&doc(3), b"x")
    }
    assert_eq!(use_store(&store)?, 1);
    assert_eq!(store.load(&doc(3))?, stored(None, &[b"x"], 1));
    store.meta_put(b"k", b"v")?;
    assert_eq!(store.meta_get(b"k")?, Some(b"v".to_vec()));
    Ok(())
}

/// Every page of documents, from the start.
fn list_all(store: &SledStore) -> Result<Vec<[u8; 16]>, StoreError> {
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_docs(after.as_ref(), 7)?;
        let Some(last) = page.last().copied() else {
            return Ok(listed);
        };
        listed.extend(page);
        after = Some(last);
    }
}

#[test]
fn listing_while_documents_are_created_sees_no_half_created_document() -> Result<(), StoreError> {
    const WRITERS: u8 = 2;
    const DOCS_PER_WRITER: u8 = 120;
    let key = |writer: u8, index: u8| {
        let mut key = [0u8; 16];
        key[0] = index;
        key[15] = writer;
        key
    };
    let store = Arc::new(SledStore::temporary()?);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> Result<(), StoreError> {
                for index in 0..DOCS_PER_WRITER {
                    if index % 3 == 0 {
                        store.compact(&key(writer, index), b"imported", 0)?;
                    } else {
                        store.append_chunk(&key(writer, index), b"first change")?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    while !writers.iter().all(|writer| writer.is_finished()) {
        let listed = list_all(&store)?;
        assert!(listed.windows(2).all(|pair| pair[0] < pair[1]));
    }
    for writer in writers {
        writer.join().expect("writer thread panicked")?;
    }
    let mut expected: Vec<[u8; 16]> = (0..WRITERS)
        .flat_map(|writer| (0..DOCS_PER_WRITER).map(move |index| key(writer, index)))
        .collect();
    expected.sort_unstable();
    assert_eq!(list_all(&store)?, expected);
    assert_eq!(
        store.doc_count()?,
        u64::try_from(expected.len()).expect("fits in u64")
    );
    Ok(())
}

#[test]
fn load_after_returns_only_newer_chunks_until_a_compaction_folds_them() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    let key = doc(9);
    assert_eq!(store.load_after(&key, 0)?, None);
    for n in 1..=3u8 {
        store.append_chunk(&key, &[n])?;
    }
    assert_eq!(
        store.load_after(&key, 1)?,
        Some(LoadedAfter::Chunks {
            chunks: vec![vec![2], vec![3]],
            last_chunk_seq: 3
        })
    );
    assert_eq!(
        store.load_after(&key, 3)?,
        Some(LoadedAfter::Chunks {
            chunks: vec![],
            last_chunk_seq: 3
        })
    );
    // Compacted through 2: a reader at 2 still gets chunk 3 alone, a reader
    // at 1 never saw chunk 2 and must start over.
    store.compact(&key, b"snapshot", 2)?;
    assert_eq!(
        store.load_after(&key, 2)?,
        Some(LoadedAfter::Chunks {
            chunks: vec![vec![3]],
            last_chunk_seq: 3
        })
    );
    let Some(LoadedAfter::Whole(whole)) = store.load_after(&key, 1)? else {
        panic!("a reader behind the snapshot gets the whole document");
    };
    assert_eq!(whole.snapshot.as_deref(), Some(&b"snapshot"[..]));
    assert_eq!(whole.chunks, vec![vec![3]]);
    // A seq from the future (another store) is not trusted either.
    assert!(matches!(
        store.load_after(&key, 99)?,
        Some(LoadedAfter::Whole(_))
    ));
    Ok(())
}
