//! The on-disk layout of the documents tree: pure functions from records to
//! bytes and back, so the layout is written down in one place and tested
//! without a database.
//!
//! Every document record has a 25-byte key `[doc: 16][kind: 1][seq: u64 BE]`,
//! so a document's records are contiguous and sorted head, snapshot, chunks
//! (by seq, because big-endian integers sort like numbers):
//!
//! | kind | key seq | value |
//! | --- | --- | --- |
//! | `0` head | `0` | [`HeadRecord`]: `[last_seq u64 BE][chunk_count u64 BE][chunk_bytes u64 BE]` |
//! | `1` snapshot | the seq the snapshot covers through | snapshot bytes |
//! | `2` chunk | the chunk's seq (>= 1) | chunk bytes |
//!
//! One more key lives in the tree: [`DOC_COUNT_KEY`] (`[0x00]`), holding the
//! number of documents as a u64 BE. It is one byte long, so it sorts before
//! every 25-byte record key and never shows up in a scan that starts at a
//! document key. Decoding rejects anything else as corrupt.
//!
//! ```text
//! [00]                                  doc count = 2
//! [0a..0a][00][00 00 00 00 00 00 00 00] head: last_seq 7, 2 chunks, 40 bytes
//! [0a..0a][01][00 00 00 00 00 00 00 05] snapshot covering seqs 1..=5
//! [0a..0a][02][00 00 00 00 00 00 00 06] chunk 6
//! [0a..0a][02][00 00 00 00 00 00 00 07] chunk 7
//! [ff..ff][00][00 00 00 00 00 00 00 00] head of the next document
//! ```

use crate::{DocKey, StoreError};

/// Bytes of a document key.
pub(crate) const DOC_KEY_BYTES: usize = 16;
/// Bytes of a record key: document, kind, seq.
pub(crate) const RECORD_KEY_BYTES: usize = DOC_KEY_BYTES + 1 + 8;
/// Bytes of a [`HeadRecord`] value.
pub(crate) const HEAD_RECORD_BYTES: usize = 3 * 8;
/// Key of the document counter. Shorter than any record key and a prefix of
/// (or less than) all of them, so it sorts first.
pub(crate) const DOC_COUNT_KEY: [u8; 1] = [0];

/// Which record of a document a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RecordKind {
    Head,
    Snapshot,
    Chunk,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Head => 0,
            RecordKind::Snapshot => 1,
            RecordKind::Chunk => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(RecordKind::Head),
            1 => Some(RecordKind::Snapshot),
            2 => Some(RecordKind::Chunk),
            _ => None,
        }
    }
}

/// A decoded record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordKey {
    pub(crate) doc: DocKey,
    pub(crate) kind: RecordKind,
    pub(crate) seq: u64,
}

impl RecordKey {
    pub(crate) fn head(doc: &DocKey) -> Self {
        RecordKey {
            doc: *doc,
            kind: RecordKind::Head,
            seq: 0,
        }
    }

    pub(crate) fn snapshot(doc: &DocKey, covers_through_seq: u64) -> Self {
        RecordKey {
            doc: *doc,
            kind: RecordKind::Snapshot,
            seq: covers_through_seq,
        }
    }

    pub(crate) fn chunk(doc: &DocKey, seq: u64) -> Self {
        RecordKey {
            doc: *doc,
            kind: RecordKind::Chunk,
            seq,
        }
    }

    pub(crate) fn encode(&self) -> [u8; RECORD_KEY_BYTES] {
        let mut key = [0u8; RECORD_KEY_BYTES];
        key[..DOC_KEY_BYTES].copy_from_slice(&self.doc);
        key[DOC_KEY_BYTES] = self.kind.to_byte();
        key[DOC_KEY_BYTES + 1..].copy_from_slice(&self.seq.to_be_bytes());
        key
    }

    /// Decodes a key read from the documents tree (other than
    /// [`DOC_COUNT_KEY`]); anything this crate could not have written is
    /// `Corrupt`.
    pub(crate) fn decode(key: &[u8]) -> Result<Self, StoreError> {
        let Ok(bytes) = <&[u8; RECORD_KEY_BYTES]>::try_from(key) else {
            return Err(StoreError::corrupt(
                key,
                "document record key has the wrong length",
            ));
        };
        let mut doc = [0u8; DOC_KEY_BYTES];
        doc.copy_from_slice(&bytes[..DOC_KEY_BYTES]);
        let Some(kind) = RecordKind::from_byte(bytes[DOC_KEY_BYTES]) else {
            return Err(StoreError::corrupt(key, "unknown document record kind"));
        };
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&bytes[DOC_KEY_BYTES + 1..]);
        let seq = u64::from_be_bytes(seq_bytes);
        match kind {
            RecordKind::Head if seq != 0 => Err(StoreError::corrupt(
                key,
                "head record key has a nonzero seq",
            )),
            RecordKind::Chunk if seq == 0 => {
                Err(StoreError::corrupt(key, "chunk record key has seq 0"))
            }
            _ => Ok(RecordKey { doc, kind, seq }),
        }
    }
}

/// The per-document bookkeeping record. `last_seq` is the highest seq ever
/// handed out, so seqs keep growing across compactions and restarts;
/// `chunk_count` and `chunk_bytes` describe the chunks after the snapshot and
/// are checked against them on every load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeadRecord {
    pub(crate) last_seq: u64,
    pub(crate) chunk_count: u64,
    pub(crate) chunk_bytes: u64,
}

impl HeadRecord {
    pub(crate) fn encode(&self) -> [u8; HEAD_RECORD_BYTES] {
        let mut value = [0u8; HEAD_RECORD_BYTES];
        value[..8].copy_from_slice(&self.last_seq.to_be_bytes());
        value[8..16].copy_from_slice(&self.chunk_count.to_be_bytes());
        value[16..].copy_from_slice(&self.chunk_bytes.to_be_bytes());
        value
    }

    /// Decodes the value stored under `key` (used only to report corruption).
    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        let Ok(bytes) = <&[u8; HEAD_RECORD_BYTES]>::try_from(value) else {
            return Err(StoreError::corrupt(key, "head record has the wrong length"));
        };
        let field = |index: usize| {
            let mut field = [0u8; 8];
            field.copy_from_slice(&bytes[index * 8..(index + 1) * 8]);
            u64::from_be_bytes(field)
        };
        Ok(HeadRecord {
            last_seq: field(0),
            chunk_count: field(1),
            chunk_bytes: field(2),
        })
    }
}

/// Encodes the document counter's value.
pub(crate) fn encode_doc_count(count: u64) -> [u8; 8] {
    count.to_be_bytes()
}

/// Decodes the document counter's value.
pub(crate) fn decode_doc_count(value: &[u8]) -> Result<u64, StoreError> {
    match <[u8; 8]>::try_from(value) {
        Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
        Err(_) => Err(StoreError::corrupt(
            &DOC_COUNT_KEY,
            "document count has the wrong length",
        )),
    }
}

/// The smallest document key greater than `doc`, or `None` for `ff..ff`.
pub(crate) fn doc_successor(doc: &DocKey) -> Option<DocKey> {
    u128::from_be_bytes(*doc)
        .checked_add(1)
        .map(u128::to_be_bytes)
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` if there is none (an empty or all-`ff` prefix).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last_below_ff = prefix.iter().rposition(|&byte| byte != 0xff)?;
    let mut successor = prefix[..=last_below_ff].to_vec();
    successor[last_below_ff] += 1;
    Some(successor)
}

/// A slice's length in bytes as a u64 (saturating, which only matters on a
/// platform with more than 64-bit addresses).
pub(crate) fn byte_len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip() -> Result<(), StoreError> {
        let doc = [0xab; 16];
        for key in [
            RecordKey::head(&doc),
            RecordKey::snapshot(&doc, 0),
            RecordKey::snapshot(&doc, u64::MAX),
            RecordKey::chunk(&doc, 1),
            RecordKey::chunk(&doc, u64::MAX),
        ] {
            assert_eq!(RecordKey::decode(&key.encode())?, key);
        }
        Ok(())
    }

    #[test]
    fn a_documents_records_sort_head_then_snapshot_then_chunks_by_seq() {
        let doc = [5; 16];
        let keys = [
            RecordKey::head(&doc).encode(),
            RecordKey::snapshot(&doc, u64::MAX).encode(),
            RecordKey::chunk(&doc, 1).encode(),
            RecordKey::chunk(&doc, 255).encode(),
            RecordKey::chunk(&doc, 256).encode(),
            RecordKey::chunk(&doc, u64::MAX).encode(),
            RecordKey::head(&[6; 16]).encode(),
        ];
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(DOC_COUNT_KEY.as_slice() < RecordKey::head(&[0; 16]).encode().as_slice());
    }

    #[test]
    fn keys_this_crate_never_writes_decode_as_corrupt() {
        let doc = [1; 16];
        let mut unknown_kind = RecordKey::chunk(&doc, 3).encode();
        unknown_kind[DOC_KEY_BYTES] = 9;
        let mut head_with_seq = RecordKey::head(&doc).encode();
        head_with_seq[RECORD_KEY_BYTES - 1] = 1;
        for key in [
            &DOC_COUNT_KEY[..],
            &doc[..],
            &RecordKey::chunk(&doc, 3).encode()[..24],
            &[0; 26][..],
            &unknown_kind[..],
            &head_with_seq[..],
            &RecordKey::chunk(&doc, 0).encode()[..],
        ] {
            assert!(
                matches!(RecordKey::decode(key), Err(StoreError::Corrupt { .. })),
                "{key:02x?} decoded"
            );
        }
    }

    #[test]
    fn head_records_round_trip_and_reject_wrong_lengths() -> Result<(), StoreError> {
        let head = HeadRecord {
            last_seq: 9,
            chunk_count: 2,
            chunk_bytes: u64::MAX,
        };
        assert_eq!(HeadRecord::decode(b"k", &head.encode())?, head);
        assert!(HeadRecord::decode(b"k", &head.encode()[1..]).is_err());
        assert!(HeadRecord::decode(b"k", &[]).is_err());
        assert_eq!(decode_doc_count(&encode_doc_count(42))?, 42);
        assert!(decode_doc_count(b"1234567").is_err());
        Ok(())
    }

    #[test]
    fn successors_are_the_next_key_up() {
        assert_eq!(
            doc_successor(&[0; 16]),
            Some([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        let mut carry = [0xff; 16];
        carry[0] = 0x01;
        let mut carried = [0; 16];
        carried[0] = 0x02;
        assert_eq!(doc_successor(&carry), Some(carried));
        assert_eq!(doc_successor(&[0xff; 16]), None);

        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(&[]), None);
    }
}
