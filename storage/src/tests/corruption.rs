//! Records this crate could not have written come back as `Corrupt`.

use proptest::prelude::*;

use super::doc;
use crate::layout::{RecordKey, DOC_COUNT_KEY};
use crate::{DocStore, SledStore, StoreError};

fn is_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Corrupt { .. }))
}

/// A store holding document 1 with a snapshot covering seq 1 and chunks 2
/// and 3, plus an untouched document 2.
fn store_with_documents() -> Result<SledStore, StoreError> {
    let store = SledStore::temporary()?;
    for chunk in [b"1", b"2", b"3"] {
        store.append_chunk(&doc(1), chunk)?;
    }
    store.compact(&doc(1), b"S1", 1)?;
    store.append_chunk(&doc(2), b"other")?;
    Ok(store)
}

#[test]
fn a_garbage_head_record_is_corrupt_for_every_document_call() -> Result<(), StoreError> {
    let store = store_with_documents()?;
    store.insert_raw_document_record(&RecordKey::head(&doc(1)).encode(), b"garbage")?;
    assert!(is_corrupt(store.load(&doc(1))));
    assert!(is_corrupt(store.append_chunk(&doc(1), b"4")));
    assert!(is_corrupt(store.compact(&doc(1), b"S", 1)));
    // The other document is still fine.
    assert_eq!(
        store.load(&doc(2))?.map(|stored| stored.chunks),
        Some(vec![b"other".to_vec()])
    );
    Ok(())
}

#[test]
fn a_missing_chunk_is_corrupt_rather_than_a_silently_lost_change() -> Result<(), StoreError> {
    let store = store_with_documents()?;
    store.remove_raw_document_record(&RecordKey::chunk(&doc(1), 2).encode())?;
    assert!(is_corrupt(store.load(&doc(1))));
    Ok(())
}

#[test]
fn a_chunk_with_changed_bytes_is_corrupt() -> Result<(), StoreError> {
    let store = store_with_documents()?;
    store.insert_raw_document_record(
        &RecordKey::chunk(&doc(1), 2).encode(),
        b"longer than before",
    )?;
    assert!(is_corrupt(store.load(&doc(1))));
    Ok(())
}

#[test]
fn records_out_of_place_are_corrupt() -> Result<(), StoreError> {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "chunk past the last seq",
            RecordKey::chunk(&doc(1), 9).encode().to_vec(),
        ),
        (
            "chunk covered by the snapshot",
            RecordKey::chunk(&doc(1), 1).encode().to_vec(),
        ),
        (
            "second snapshot",
            RecordKey::snapshot(&doc(1), 2).encode().to_vec(),
        ),
        ("key of the wrong length", [&doc(1)[..], &[2]].concat()),
        ("unknown kind", [&doc(1)[..], &[7], &[0; 8]].concat()),
    ];
    for (case, key) in cases {
        let store = store_with_documents()?;
        store.insert_raw_document_record(&key, b"x")?;
        assert!(is_corrupt(store.load(&doc(1))), "{case}");
    }
    Ok(())
}

#[test]
fn records_without_a_head_are_corrupt_for_load_and_list() -> Result<(), StoreError> {
    let store = store_with_documents()?;
    store.insert_raw_document_record(&RecordKey::chunk(&doc(5), 1).encode(), b"orphan")?;
    assert!(is_corrupt(store.load(&doc(5))));
    assert!(is_corrupt(store.list_docs(None, 10)));
    assert_eq!(store.list_docs(None, 2)?, vec![doc(1), doc(2)]);
    Ok(())
}

#[test]
fn a_garbage_document_count_is_corrupt() -> Result<(), StoreError> {
    let store = store_with_documents()?;
    store.insert_raw_document_record(&DOC_COUNT_KEY, b"three")?;
    assert!(is_corrupt(store.doc_count()));
    assert!(is_corrupt(store.append_chunk(&doc(9), b"new document")));
    assert_eq!(store.load(&doc(9))?, None);
    Ok(())
}

#[test]
fn a_head_at_the_last_seq_is_corrupt_not_an_overflow() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(&u64::MAX.to_be_bytes());
    store.insert_raw_document_record(&RecordKey::head(&doc(1)).encode(), &head)?;
    assert!(is_corrupt(store.append_chunk(&doc(1), b"x")));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever lands under a document's key range, no call panics.
    #[test]
    fn arbitrary_records_under_a_document_never_panic(
        records in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..40)),
            1..6,
        ),
    ) {
        let store = store_with_documents()?;
        for (suffix, value) in &records {
            store.insert_raw_document_record(&[&doc(1)[..], suffix].concat(), value)?;
        }
        let _ = store.load(&doc(1));
        let _ = store.list_docs(None, 10);
        let _ = store.append_chunk(&doc(1), b"more");
        let _ = store.compact(&doc(1), b"S", 2);
        let _ = store.load(&doc(1));
        let _ = store.doc_count();
        prop_assert_eq!(store.load(&doc(2))?.map(|stored| stored.chunks), Some(vec![b"other".to_vec()]));
    }
}
