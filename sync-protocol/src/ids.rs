//! Identifiers that travel in automerge-repo messages: documents, peers and storage.
//!
//! A [`DocumentId`] is 16 random bytes (a UUID). On the wire and in URLs automerge-repo writes it
//! in "bs58check" form: base58 of the bytes followed by the first 4 bytes of their double SHA-256,
//! so a mistyped id fails its checksum instead of naming another document. An
//! `automerge:<bs58check>` URL names the same document; newer versions may append `#<heads>`,
//! which names a point in its history and is ignored here. [`PeerId`] and [`StorageId`] are
//! opaque strings chosen by the peers themselves.
//!
//! ```
//! use ventas_sync_protocol::ids::DocumentId;
//!
//! let id = DocumentId::from_bytes([7; 16]);
//! let url = id.to_url();
//! assert!(url.starts_with("automerge:"));
//! assert_eq!(DocumentId::parse(&url), Ok(id));
//! assert_eq!(id.to_string().parse::<DocumentId>(), Ok(id));
//! ```

use std::fmt;
use std::str::FromStr;

/// The prefix of an automerge URL.
const URL_PREFIX: &str = "automerge:";

/// The number of bytes in a document id.
const DOCUMENT_ID_BYTES: usize = 16;

/// The longest bs58check text accepted before decoding.
///
/// 16 bytes plus a 4-byte checksum encode to at most 28 base58 characters. Base58 decoding takes
/// time quadratic in the input, so longer text is rejected without being decoded.
const DOCUMENT_ID_TEXT_BYTES_MAX: usize = 64;

/// Why a text could not be read as a [`DocumentId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum IdError {
    /// The text (or the part after `automerge:`) is empty.
    #[error("document id is empty")]
    Empty,
    /// The text is far longer than any document id; it was not decoded.
    #[error("document id is {len} bytes long, more than the {max} a document id can take")]
    TooLong { len: usize, max: usize },
    /// The text holds a character outside the base58 alphabet.
    #[error("document id has a character outside the base58 alphabet at byte {index}")]
    InvalidBase58 { index: usize },
    /// The last 4 decoded bytes are not the checksum of the others.
    #[error("document id checksum does not match")]
    BadChecksum,
    /// The payload is not 16 bytes long (`len` is 0 when it is too short to hold a checksum).
    #[error("document id holds {len} bytes, expected 16")]
    WrongLength { len: usize },
}

/// A document's identity: 16 bytes, written as bs58check text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; DOCUMENT_ID_BYTES]);

impl DocumentId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the bs58check form or an `automerge:` URL.
    ///
    /// A `#...` suffix is ignored in a URL (it names heads, not a document) but not in bare
    /// bs58check text, where `#` is simply not a base58 character.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let encoded = match text.strip_prefix(URL_PREFIX) {
            Some(rest) => rest.split_once('#').map_or(rest, |(id, _heads)| id),
            None => text,
        };
        if encoded.is_empty() {
            return Err(IdError::Empty);
        }
        if encoded.len() > DOCUMENT_ID_TEXT_BYTES_MAX {
            return Err(IdError::TooLong {
                len: encoded.len(),
                max: DOCUMENT_ID_TEXT_BYTES_MAX,
            });
        }
        // Decoded bytes never outnumber base58 characters, so this buffer always suffices.
        let mut decoded = [0u8; DOCUMENT_ID_TEXT_BYTES_MAX];
        let payload_len = bs58::decode(encoded)
            .with_check(None)
            .onto(&mut decoded)
            .map_err(|error| match error {
                bs58::decode::Error::InvalidCharacter { index, .. }
                | bs58::decode::Error::NonAsciiCharacter { index } => {
                    IdError::InvalidBase58 { index }
                }
                bs58::decode::Error::InvalidChecksum { .. } => IdError::BadChecksum,
                bs58::decode::Error::NoChecksum => IdError::WrongLength { len: 0 },
                _ => IdError::TooLong {
                    len: encoded.len(),
                    max: DOCUMENT_ID_TEXT_BYTES_MAX,
                },
            })?;
        let payload = decoded.get(..payload_len).unwrap_or_default();
        let bytes = <[u8; DOCUMENT_ID_BYTES]>::try_from(payload)
            .map_err(|_| IdError::WrongLength { len: payload_len })?;
        Ok(Self(bytes))
    }

    /// The `automerge:<bs58check>` URL of this document.
    pub fn to_url(&self) -> String {
        format!("{URL_PREFIX}{self}")
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// A peer's self-chosen name for one connection (automerge-repo's `PeerId`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PeerId(String);

impl PeerId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The name of a peer's durable storage, which outlives its connections (automerge-repo's
/// `StorageId`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StorageId(String);

impl StorageId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}
