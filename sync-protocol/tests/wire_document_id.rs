//! Document ids and automerge URLs, checked against automerge-repo's own test vector and the bs58
//! crate.

use proptest::prelude::*;
use ventas_sync_protocol::ids::{DocumentId, IdError, PeerId, StorageId};

/// From automerge-repo's `AutomergeUrl.test.ts`: `goodBinaryDocumentId` and `goodDocumentId`.
const KNOWN_BYTES: [u8; 16] = [
    241, 194, 156, 132, 116, 200, 74, 222, 184, 0, 190, 71, 98, 125, 51, 191,
];
const KNOWN_TEXT: &str = "4NMNnkMhL8jXrdJ9jamS58PAVdXu";

const BASE58_ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

#[test]
fn automerge_repo_test_vector_round_trips() {
    let id = DocumentId::from_bytes(KNOWN_BYTES);
    assert_eq!(id.to_string(), KNOWN_TEXT);
    assert_eq!(id.to_url(), format!("automerge:{KNOWN_TEXT}"));
    assert_eq!(DocumentId::parse(KNOWN_TEXT), Ok(id));
    assert_eq!(KNOWN_TEXT.parse::<DocumentId>(), Ok(id));
    assert_eq!(id.as_bytes(), &KNOWN_BYTES);
}

#[test]
fn text_is_bs58check_of_the_bytes() {
    let bytes = *b"ventas-doc-00001";
    let expected = bs58::encode(bytes).with_check().into_string();
    let id = DocumentId::from_bytes(bytes);
    assert_eq!(id.to_string(), expected);
    // 16 bytes and a 4-byte checksum take at most 28 base58 characters.
    assert!((20..=28).contains(&expected.len()), "{expected}");
    assert!(expected.chars().all(|c| BASE58_ALPHABET.contains(c)));
}

#[test]
fn urls_parse_with_and_without_heads() {
    let id = DocumentId::from_bytes(KNOWN_BYTES);
    let head = bs58::encode([1u8, 2, 3, 4]).with_check().into_string();
    for url in [
        format!("automerge:{KNOWN_TEXT}"),
        format!("automerge:{KNOWN_TEXT}#{head}"),
        format!("automerge:{KNOWN_TEXT}#{head}|{head}"),
        format!("automerge:{KNOWN_TEXT}#"),
    ] {
        assert_eq!(DocumentId::parse(&url), Ok(id), "{url}");
    }
}

#[test]
fn wrong_checksum_is_rejected() {
    assert_eq!(
        DocumentId::parse("4NMNnkMhL8jXrdJ9jamS58PAVdXv"),
        Err(IdError::BadChecksum)
    );
    let mut bytes = bs58::decode(KNOWN_TEXT)
        .into_vec()
        .expect("the known vector is base58");
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
    let corrupted = bs58::encode(bytes).into_string();
    assert_eq!(DocumentId::parse(&corrupted), Err(IdError::BadChecksum));
    assert!(DocumentId::parse("automerge:badbadbad").is_err());
}

#[test]
fn payloads_of_other_lengths_are_rejected() {
    for len in [0, 1, 15, 17, 32] {
        let text = bs58::encode(vec![7u8; len]).with_check().into_string();
        assert_eq!(
            DocumentId::parse(&text),
            Err(IdError::WrongLength { len }),
            "{len} bytes"
        );
    }
    // Too short to hold even a checksum.
    assert_eq!(DocumentId::parse("2"), Err(IdError::WrongLength { len: 0 }));
}

#[test]
fn empty_and_non_base58_text_is_rejected() {
    assert_eq!(DocumentId::parse(""), Err(IdError::Empty));
    assert_eq!(DocumentId::parse("automerge:"), Err(IdError::Empty));
    assert_eq!(DocumentId::parse("automerge:#heads"), Err(IdError::Empty));
    assert_eq!(
        DocumentId::parse("4NMNnkMhL8jXrdJ9jamS58PAVdX0"),
        Err(IdError::InvalidBase58 { index: 27 })
    );
    // A heads suffix is only part of a URL.
    assert_eq!(
        DocumentId::parse(&format!("{KNOWN_TEXT}#heads")),
        Err(IdError::InvalidBase58 { index: 28 })
    );
    assert!(matches!(
        DocumentId::parse("4NMNnkMhL8jXrdJ9jamS58PAVdXé"),
        Err(IdError::InvalidBase58 { .. })
    ));
    assert!(DocumentId::parse("Automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu").is_err());
}

#[test]
fn overlong_text_is_rejected_without_decoding_it() {
    // Base58 decoding is quadratic; a megabyte of it would take minutes.
    let text = "z".repeat(1 << 20);
    assert_eq!(
        DocumentId::parse(&text),
        Err(IdError::TooLong {
            len: 1 << 20,
            max: 64
        })
    );
}

#[test]
fn debug_and_display_show_the_text() {
    let id = DocumentId::from_bytes(KNOWN_BYTES);
    assert_eq!(format!("{id:?}"), format!("DocumentId({KNOWN_TEXT})"));
    assert_eq!(format!("{id}"), KNOWN_TEXT);
    let peer = PeerId::new("peer-yzc329m9i");
    assert_eq!(
        (peer.as_str(), peer.to_string().as_str()),
        ("peer-yzc329m9i", "peer-yzc329m9i")
    );
    let storage = StorageId::new("disk-1");
    assert_eq!(
        (storage.as_str(), storage.to_string().as_str()),
        ("disk-1", "disk-1")
    );
}

proptest! {
    #[test]
    fn any_bytes_round_trip_through_text_and_url(bytes in any::<[u8; 16]>()) {
        let id = DocumentId::from_bytes(bytes);
        let text = id.to_string();
        prop_assert_eq!(&text, &bs58::encode(bytes).with_check().into_string());
        prop_assert!(text.len() <= 28);
        prop_assert_eq!(DocumentId::parse(&text), Ok(id));
        prop_assert_eq!(DocumentId::parse(&id.to_url()), Ok(id));
        prop_assert_eq!(DocumentId::parse(&text).map(|id| *id.as_bytes()), Ok(bytes));
    }

    #[test]
    fn parsing_any_text_never_panics(text in any::<String>()) {
        let _ = DocumentId::parse(&text);
        let _ = DocumentId::parse(&format!("automerge:{text}"));
    }
}
