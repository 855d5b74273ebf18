//! The metadata keyspace and `next_id`.

use super::{doc, open_in, temp_dir};
use crate::{
    DocStore, SledStore, StoreError, LIST_LIMIT_MAX, META_KEY_BYTES_MAX, META_VALUE_BYTES_MAX,
};

/// A session key as the server builds them: prefix, then a big-endian id.
fn session_key(id: u64) -> Vec<u8> {
    let mut key = b"session/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

#[test]
fn meta_records_put_get_overwrite_and_remove() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    assert_eq!(store.meta_get(b"watermark")?, None);
    store.meta_put(b"watermark", b"1")?;
    store.meta_put(b"watermark", b"2")?;
    assert_eq!(store.meta_get(b"watermark")?, Some(b"2".to_vec()));
    store.meta_put(b"", b"empty key")?;
    assert_eq!(store.meta_get(b"")?, Some(b"empty key".to_vec()));
    store.meta_remove(b"watermark")?;
    store.meta_remove(b"never there")?;
    assert_eq!(store.meta_get(b"watermark")?, None);
    Ok(())
}

#[test]
fn meta_records_are_separate_from_documents() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    // A key shaped exactly like a document head record.
    let mut head_shaped = doc(4).to_vec();
    head_shaped.extend_from_slice(&[0; 9]);
    store.meta_put(&head_shaped, &[0; 24])?;
    assert_eq!(store.doc_count()?, 0);
    assert!(!store.contains(&doc(4))?);
    assert_eq!(store.list_docs(None, 10)?, Vec::<[u8; 16]>::new());
    store.append_chunk(&doc(4), b"c")?;
    assert_eq!(store.meta_scan_prefix_rev(b"", None, 10)?.len(), 1);
    Ok(())
}

#[test]
fn meta_scan_prefix_rev_pages_newest_first_with_a_before_cursor() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    for id in [3, 1, 25, 256, 2, 255, 24] {
        store.meta_put(&session_key(id), &id.to_be_bytes())?;
    }
    // Neighbours that must never show up: a shorter key, and keys just
    // below and just above the prefix.
    store.meta_put(b"session", b"no")?;
    store.meta_put(b"session.", b"no")?;
    store.meta_put(b"session0", b"no")?;

    let mut ids = Vec::new();
    let mut before: Option<Vec<u8>> = None;
    loop {
        let page = store.meta_scan_prefix_rev(b"session/", before.as_deref(), 3)?;
        assert!(page.len() <= 3);
        let Some((last_key, _)) = page.last() else {
            break;
        };
        before = Some(last_key.clone());
        for (key, value) in &page {
            assert!(key.starts_with(b"session/"));
            let id = u64::from_be_bytes(value.as_slice().try_into().expect("8-byte value"));
            assert_eq!(*key, session_key(id));
            ids.push(id);
        }
    }
    assert_eq!(ids, vec![256, 255, 25, 24, 3, 2, 1]);

    // A cursor between entries, past the prefix, and below it.
    let page = store.meta_scan_prefix_rev(b"session/", Some(&session_key(24)), 10)?;
    assert_eq!(
        page.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(),
        vec![session_key(3), session_key(2), session_key(1)]
    );
    assert_eq!(
        store.meta_scan_prefix_rev(b"session/", Some(b"t"), 1)?[0].0,
        session_key(256)
    );
    assert!(store
        .meta_scan_prefix_rev(b"session/", Some(b"session/"), 10)?
        .is_empty());
    assert!(store
        .meta_scan_prefix_rev(b"session/", Some(b"a"), 10)?
        .is_empty());
    assert!(store.meta_scan_prefix_rev(b"session/", None, 0)?.is_empty());
    assert!(matches!(
        store.meta_scan_prefix_rev(b"session/", None, LIST_LIMIT_MAX + 1),
        Err(StoreError::LimitTooLarge { .. })
    ));
    Ok(())
}

#[test]
fn meta_scan_prefix_rev_handles_empty_and_all_ff_prefixes() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    for key in [
        &[0x00][..],
        &[0x7f],
        &[0xff],
        &[0xff, 0xff],
        &[0xff, 0xff, 0x01],
    ] {
        store.meta_put(key, b"")?;
    }
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
        entries.into_iter().map(|(key, _)| key).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.meta_scan_prefix_rev(&[0xff, 0xff], None, 10)?),
        vec![vec![0xff, 0xff, 0x01], vec![0xff, 0xff]]
    );
    assert_eq!(
        keys(store.meta_scan_prefix_rev(&[], Some(&[0xff]), 10)?),
        vec![vec![0x7f], vec![0x00]]
    );
    assert_eq!(store.meta_scan_prefix_rev(&[], None, 10)?.len(), 5);
    Ok(())
}

#[test]
fn meta_keys_and_values_over_their_limits_are_rejected() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    let long_key = vec![b'k'; usize::try_from(META_KEY_BYTES_MAX + 1).expect("fits in usize")];
    let big_value = vec![0; usize::try_from(META_VALUE_BYTES_MAX + 1).expect("fits in usize")];
    assert!(matches!(
        store.meta_put(&long_key, b"v"),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.meta_put(b"k", &big_value),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.meta_get(&long_key),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.meta_get(b"k")?, None);
    Ok(())
}

#[test]
fn meta_records_and_next_id_survive_reopen_and_ids_keep_growing() -> Result<(), StoreError> {
    let dir = temp_dir();
    let store = open_in(dir.path())?;
    let mut last_id = store.next_id()?;
    for _ in 0..100 {
        let id = store.next_id()?;
        assert!(id > last_id, "{id} after {last_id}");
        last_id = id;
    }
    store.meta_put(b"watermark", b"42")?;
    store.flush()?;
    drop(store);

    for _ in 0..3 {
        let store = open_in(dir.path())?;
        assert_eq!(store.meta_get(b"watermark")?, Some(b"42".to_vec()));
        let id = store.next_id()?;
        assert!(id > last_id, "{id} after reopen, last was {last_id}");
        last_id = id;
    }
    Ok(())
}

#[test]
fn remove_if_and_replace_if_act_only_on_the_expected_value() -> Result<(), StoreError> {
    let store = SledStore::temporary()?;
    store.meta_put(b"marker", b"first")?;
    // Rewritten meanwhile: the older value no longer matches and stays.
    store.meta_put(b"marker", b"second")?;
    assert!(!store.meta_remove_if(b"marker", b"first")?);
    assert_eq!(store.meta_get(b"marker")?, Some(b"second".to_vec()));
    assert!(store.meta_remove_if(b"marker", b"second")?);
    assert_eq!(store.meta_get(b"marker")?, None);
    // A missing key is not removed and is not an error.
    assert!(!store.meta_remove_if(b"marker", b"second")?);
    // Replacing works the same way.
    store.meta_put(b"marker", b"third")?;
    assert!(!store.meta_replace_if(b"marker", b"second", b"fourth")?);
    assert!(store.meta_replace_if(b"marker", b"third", b"fourth")?);
    assert_eq!(store.meta_get(b"marker")?, Some(b"fourth".to_vec()));
    Ok(())
}
