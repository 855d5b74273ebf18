//! The automerge-repo 2.x wire format (protocol version "1"): one CBOR map per WebSocket frame.
//!
//! This module is the whole of the framing layer, and it is pure: [`encode`] turns a [`Message`]
//! into the bytes of one binary frame and [`decode`] turns a frame back into a `Message`. The
//! socket code hands frames in and out and never looks inside them. A frame that is too large,
//! malformed, of an unknown `type` or missing a field is a [`DecodeError`] value, never a panic,
//! so the caller chooses what to do (usually: answer with an `error` message and close).
//!
//! Decoding runs in two passes over the input slice, to bound the work an untrusted peer can
//! cause. The first pass checks that the frame is exactly one well-formed CBOR map, nested at
//! most [`CBOR_NESTING_MAX`] deep, and notes where the values of known fields start and end; it
//! allocates only to join the chunks of indefinite-length strings. The second pass reads only the fields the message `type` needs. Declared
//! lengths are checked against the bytes actually present before anything is copied, and list
//! items are capped by [`LIST_ITEMS_MAX`], so a decoded message takes memory proportional to its
//! frame.
//!
//! JavaScript peers encode with cbor-x, which writes every number that is not a 32-bit integer
//! as a float, may tag byte strings as typed arrays (tag 64) and writes `undefined` for absent
//! optional fields. Decoding therefore reads integral floats as integers, looks through tags and
//! treats `null` and `undefined` as absent; unknown fields are ignored. Encoding writes what
//! automerge-repo's own encoder writes: plain byte strings, and integers above `u32::MAX` as
//! floats when that is exact (cbor-x would read a 64-bit CBOR integer as a `BigInt`).
//!
//! ```
//! use ventas_sync_protocol::ids::PeerId;
//! use ventas_sync_protocol::wire::{decode, encode, Message, MESSAGE_BYTES_MAX_DEFAULT};
//!
//! let leave = Message::Leave { sender_id: PeerId::new("phone-7") };
//! let frame = encode(&leave);
//! assert_eq!(decode(&frame, MESSAGE_BYTES_MAX_DEFAULT), Ok(leave));
//! assert!(decode(&frame[..frame.len() - 1], MESSAGE_BYTES_MAX_DEFAULT).is_err());
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use ciborium::Value;

use crate::ids::{DocumentId, IdError, PeerId, StorageId};

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1";

/// Default and suggested upper bound for the size of one frame, in bytes.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;

/// The deepest nesting of arrays, maps and tags accepted in a frame; the message map itself is
/// level 1.
pub const CBOR_NESTING_MAX: usize = 16;

/// The most list items one message may carry, counted across all its lists (protocol versions,
/// storage ids, `newHeads` entries and the heads in them).
///
/// An empty string takes one byte on the wire but 24 in memory; this cap keeps a decoded message
/// close to the size of its frame.
pub const LIST_ITEMS_MAX: usize = 4096;

/// How many characters of an unrecognised `type` are kept in [`DecodeError::UnknownType`].
const UNKNOWN_TYPE_CHARS_MAX: usize = 64;

/// What a peer says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's durable storage, if it has any.
    pub storage_id: Option<StorageId>,
    /// An ephemeral peer keeps nothing, so others should not count it as a replica.
    pub is_ephemeral: bool,
}

/// The heads of a document as last seen in one peer's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadsAt {
    /// Change hashes as the sender wrote them (automerge-repo 2.x uses bs58check text); passed
    /// through unchanged.
    pub heads: Vec<String>,
    /// When these heads were seen, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// One automerge-repo message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A client's first message on a connection.
    Join {
        sender_id: PeerId,
        supported_protocol_versions: Vec<String>,
        peer_metadata: Option<PeerMetadata>,
    },
    /// The server's answer to `join`.
    Peer {
        sender_id: PeerId,
        target_id: PeerId,
        selected_protocol_version: String,
        peer_metadata: Option<PeerMetadata>,
    },
    /// A client leaving (sent by older clients only).
    Leave { sender_id: PeerId },
    /// A fatal problem; the sender closes the connection after it.
    Error {
        sender_id: Option<PeerId>,
        target_id: Option<PeerId>,
        message: String,
    },
    /// A sync message for a document the sender does not have yet.
    Request {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    /// An automerge sync message (carried opaquely in `data`).
    Sync {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    /// The answer to a `request` when no one has the document.
    DocUnavailable {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
    },
    /// Application data that is relayed but never stored (presence, cursors).
    Ephemeral {
        sender_id: PeerId,
        target_id: PeerId,
        count: u64,
        session_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    /// Start or stop hearing about heads in the listed storages.
    RemoteSubscriptionChange {
        sender_id: PeerId,
        target_id: PeerId,
        add: Vec<StorageId>,
        remove: Vec<StorageId>,
    },
    /// A document's heads as seen in other peers' storage.
    RemoteHeadsChanged {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        /// One entry per storage, in frame order; a storage named twice keeps its last value.
        new_heads: Vec<(StorageId, HeadsAt)>,
    },
}

impl Message {
    /// The `type` field of this message on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Peer { .. } => "peer",
            Self::Leave { .. } => "leave",
            Self::Error { .. } => "error",
            Self::Request { .. } => "request",
            Self::Sync { .. } => "sync",
            Self::DocUnavailable { .. } => "doc-unavailable",
            Self::Ephemeral { .. } => "ephemeral",
            Self::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Self::RemoteHeadsChanged { .. } => "remote-heads-changed",
        }
    }

    /// The document this message is about, if it is about one.
    pub fn document_id(&self) -> Option<DocumentId> {
        match self {
            Self::Request { document_id, .. }
            | Self::Sync { document_id, .. }
            | Self::DocUnavailable { document_id, .. }
            | Self::Ephemeral { document_id, .. }
            | Self::RemoteHeadsChanged { document_id, .. } => Some(*document_id),
            Self::Join { .. }
            | Self::Peer { .. }
            | Self::Leave { .. }
            | Self::Error { .. }
            | Self::RemoteSubscriptionChange { .. } => None,
        }
    }

    /// The peer that sent this message (optional only for `error`).
    pub fn sender_id(&self) -> Option<&PeerId> {
        match self {
            Self::Join { sender_id, .. }
            | Self::Peer { sender_id, .. }
            | Self::Leave { sender_id }
            | Self::Request { sender_id, .. }
            | Self::Sync { sender_id, .. }
            | Self::DocUnavailable { sender_id, .. }
            | Self::Ephemeral { sender_id, .. }
            | Self::RemoteSubscriptionChange { sender_id, .. }
            | Self::RemoteHeadsChanged { sender_id, .. } => Some(sender_id),
            Self::Error { sender_id, .. } => sender_id.as_ref(),
        }
    }
}

/// Why a frame is not a message. Every variant is an expected outcome of reading untrusted input.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The frame is longer than allowed; it was not parsed.
    #[error("message is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("message is empty")]
    Empty,
    /// Not well-formed CBOR, nested too deeply, invalid UTF-8 in a needed text, or bytes left
    /// over after the message map.
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    /// Well-formed CBOR, but not a map.
    #[error("message is not a CBOR map")]
    NotAMap,
    /// The map has no `type` field (or it is `null`/`undefined`).
    #[error("message has no \"type\" field")]
    MissingType,
    #[error("{message_type:?} message is missing the {field:?} field")]
    MissingField {
        message_type: String,
        field: &'static str,
    },
    #[error("field {field:?} is not a {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// The `type` is not one this protocol version defines (truncated to 64 characters).
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid document id: {0}")]
    InvalidDocumentId(IdError),
    /// The message's lists hold more than [`LIST_ITEMS_MAX`] items in all.
    #[error("field {field:?} takes the message over {max} list items")]
    TooManyItems { field: &'static str, max: usize },
}

type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Encodes one message as the bytes of one WebSocket binary frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut map = MapBuilder::default();
    map.text("type", message.type_name());
    match message {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            peer_metadata,
        } => {
            map.text("senderId", sender_id.as_str());
            map.entry(
                "supportedProtocolVersions",
                text_array(supported_protocol_versions.iter().map(String::as_str)),
            );
            if let Some(metadata) = peer_metadata {
                map.entry("peerMetadata", peer_metadata_value(metadata));
            }
        }
        Message::Peer {
            sender_id,
            target_id,
            selected_protocol_version,
            peer_metadata,
        } => {
            map.text("senderId", sender_id.as_str());
            map.text("targetId", target_id.as_str());
            map.text("selectedProtocolVersion", selected_protocol_version);
            if let Some(metadata) = peer_metadata {
                map.entry("peerMetadata", peer_metadata_value(metadata));
            }
        }
        Message::Leave { sender_id } => map.text("senderId", sender_id.as_str()),
        Message::Error {
            sender_id,
            target_id,
            message,
        } => {
            if let Some(sender_id) = sender_id {
                map.text("senderId", sender_id.as_str());
            }
            if let Some(target_id) = target_id {
                map.text("targetId", target_id.as_str());
            }
            map.text("message", message);
        }
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
        | Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            map.text("senderId", sender_id.as_str());
            map.text("targetId", target_id.as_str());
            map.text("documentId", &document_id.to_string());
            map.entry("data", Value::Bytes(data.clone()));
        }
        Message::DocUnavailable {
            sender_id,
            target_id,
            document_id,
        } => {
            map.text("senderId", sender_id.as_str());
            map.text("targetId", target_id.as_str());
            map.text("documentId", &document_id.to_string());
        }
        Message::Ephemeral {
            sender_id,
            target_id,
            count,
            session_id,
            document_id,
            data,
        } => {
            map.text("senderId", sender_id.as_str());
            map.text("targetId", target_id.as_str());
            map.entry("count", number_value(*count));
            map.text("sessionId", session_id);
            map.text("documentId", &document_id.to_string());
            map.entry("data", Value::Bytes(data.clone()));
        }
        Message::RemoteSubscriptionChange {
            sender_id,
            target_id,
            add,
            remove,
        } => {
            map.text("senderId", sender_id.as_str());
            map.text("targetId", target_id.as_str());
            // automerge-repo treats a missing list like an empty one.
            if !add.is_empty() {
                map.entry("add", text_array(add.iter().map(StorageId::as_str)));
            }
            if !remove.is_empty() {
                map.entry("remove", text_array(remove.iter().map(StorageId::as_str)));
            }
        }
        Message::RemoteHeadsChanged {
            sender_id,
            target_id,
            document_id,
            new_heads,
        } => {
            map.text("senderId", sender_id.as_str());
            map.text("targetId", target_id.as_str());
            map.text("documentId", &document_id.to_string());
            let entries = new_heads
                .iter()
                .map(|(storage_id, heads_at)| {
                    let mut heads_map = MapBuilder::default();
                    heads_map.entry(
                        "heads",
                        text_array(heads_at.heads.iter().map(String::as_str)),
                    );
                    heads_map.entry("timestamp", number_value(heads_at.timestamp_ms));
                    (
                        Value::Text(storage_id.as_str().to_owned()),
                        heads_map.build(),
                    )
                })
                .collect();
            map.entry("newHeads", Value::Map(entries));
        }
    }
    let mut frame = Vec::new();
    ciborium::into_writer(&map.build(), &mut frame)
        .expect("serialising a ciborium::Value into a Vec<u8> cannot fail");
    frame
}

/// The entries of a CBOR map with text keys, in insertion order.
#[derive(Default)]
struct MapBuilder {
    entries: Vec<(Value, Value)>,
}

impl MapBuilder {
    fn entry(&mut self, key: &str, value: Value) {
        self.entries.push((Value::Text(key.to_owned()), value));
    }

    fn text(&mut self, key: &str, text: &str) {
        self.entry(key, Value::Text(text.to_owned()));
    }

    fn build(self) -> Value {
        Value::Map(self.entries)
    }
}

fn text_array<'t>(texts: impl Iterator<Item = &'t str>) -> Value {
    Value::Array(texts.map(|text| Value::Text(text.to_owned())).collect())
}

fn peer_metadata_value(metadata: &PeerMetadata) -> Value {
    let mut map = MapBuilder::default();
    if let Some(storage_id) = &metadata.storage_id {
        map.text("storageId", storage_id.as_str());
    }
    map.entry("isEphemeral", Value::Bool(metadata.is_ephemeral));
    map.build()
}

/// A number as cbor-x would write it: an integer up to `u32::MAX`, above that a float64 while
/// that is exact. cbor-x reads 64-bit CBOR integers as `BigInt`, which automerge-repo does not
/// expect; only values beyond 2^53 (not JavaScript numbers anyway) are written that way.
fn number_value(number: u64) -> Value {
    const FLOAT_EXACT_INTEGER_MAX: u64 = 1 << 53;
    if number <= u64::from(u32::MAX) || number > FLOAT_EXACT_INTEGER_MAX {
        return Value::Integer(number.into());
    }
    // Exact: the number is below 2^53, so it has an f64 representation.
    let float = number as f64;
    Value::Float(float)
}

/// Decodes one WebSocket binary frame.
///
/// `message_bytes_max` is checked before any parsing. Never panics; see [`DecodeError`].
pub fn decode(bytes: &[u8], message_bytes_max: usize) -> Result<Message> {
    if bytes.len() > message_bytes_max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: message_bytes_max,
        });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let fields = Fields::scan(bytes)?;
    let type_name = match fields.reader(Field::Type) {
        Some(mut reader) => reader.text(Field::Type.wire_name())?,
        None => None,
    }
    .ok_or(DecodeError::MissingType)?;
    let message_type = match MESSAGE_TYPES.iter().find(|known| **known == type_name) {
        Some(known) => *known,
        None => {
            let shown = type_name.chars().take(UNKNOWN_TYPE_CHARS_MAX).collect();
            return Err(DecodeError::UnknownType(shown));
        }
    };
    MessageFields {
        message_type,
        fields,
        list_items_left: LIST_ITEMS_MAX,
    }
    .into_message()
}

const MESSAGE_TYPES: [&str; 10] = [
    "join",
    "peer",
    "leave",
    "error",
    "request",
    "sync",
    "doc-unavailable",
    "ephemeral",
    "remote-subscription-change",
    "remote-heads-changed",
];

/// The top-level fields any message type uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Type,
    SenderId,
    TargetId,
    DocumentId,
    Data,
    Count,
    SessionId,
    Message,
    SupportedProtocolVersions,
    SelectedProtocolVersion,
    PeerMetadata,
    Add,
    Remove,
    NewHeads,
}

impl Field {
    const ALL: [Field; 14] = [
        Field::Type,
        Field::SenderId,
        Field::TargetId,
        Field::DocumentId,
        Field::Data,
        Field::Count,
        Field::SessionId,
        Field::Message,
        Field::SupportedProtocolVersions,
        Field::SelectedProtocolVersion,
        Field::PeerMetadata,
        Field::Add,
        Field::Remove,
        Field::NewHeads,
    ];

    const fn wire_name(self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::SenderId => "senderId",
            Field::TargetId => "targetId",
            Field::DocumentId => "documentId",
            Field::Data => "data",
            Field::Count => "count",
            Field::SessionId => "sessionId",
            Field::Message => "message",
            Field::SupportedProtocolVersions => "supportedProtocolVersions",
            Field::SelectedProtocolVersion => "selectedProtocolVersion",
            Field::PeerMetadata => "peerMetadata",
            Field::Add => "add",
            Field::Remove => "remove",
            Field::NewHeads => "newHeads",
        }
    }

    fn named(key: &[u8]) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|field| field.wire_name().as_bytes() == key)
    }
}

/// Where the value of each known field lies in a frame that has been checked to be one
/// well-formed map.
struct Fields<'a> {
    values: [Option<&'a [u8]>; Field::ALL.len()],
}

impl<'a> Fields<'a> {
    /// The first pass: checks the whole frame and finds the known fields, allocating only to join
    /// the chunks of indefinite-length strings.
    fn scan(bytes: &'a [u8]) -> Result<Self> {
        let mut reader = Reader::new(bytes);
        let mut depth = 0;
        let len = loop {
            match reader.header()? {
                Header::Tag(_) => depth = enter(depth)?,
                Header::Map(len) => break len,
                _ => return Err(DecodeError::NotAMap),
            }
        };
        let depth = enter(depth)?;
        let mut fields = Fields {
            values: [None; Field::ALL.len()],
        };
        reader.entries(len, depth, |reader, key| {
            let value = reader.skip_span(depth)?;
            if let Some(field) = key.as_deref().and_then(Field::named) {
                // Like a JavaScript object, the last of duplicate keys wins.
                fields.values[field as usize] = Some(value);
            }
            Ok(())
        })?;
        if !reader.is_at_end() {
            return Err(DecodeError::Cbor(format!(
                "{} bytes after the message map",
                reader.remaining()
            )));
        }
        Ok(fields)
    }

    fn reader(&self, field: Field) -> Option<Reader<'a>> {
        self.values[field as usize].map(Reader::new)
    }
}

/// The second pass: reads the fields one message type needs.
struct MessageFields<'a> {
    message_type: &'static str,
    fields: Fields<'a>,
    list_items_left: usize,
}

impl MessageFields<'_> {
    fn into_message(mut self) -> Result<Message> {
        let message = match self.message_type {
            "join" => Message::Join {
                sender_id: self.peer_id(Field::SenderId)?,
                supported_protocol_versions: self
                    .text_list(Field::SupportedProtocolVersions)?
                    .unwrap_or_else(|| vec![PROTOCOL_VERSION.to_owned()]),
                peer_metadata: self.peer_metadata()?,
            },
            "peer" => Message::Peer {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                selected_protocol_version: self.required_text(Field::SelectedProtocolVersion)?,
                peer_metadata: self.peer_metadata()?,
            },
            "leave" => Message::Leave {
                sender_id: self.peer_id(Field::SenderId)?,
            },
            "error" => Message::Error {
                sender_id: self.optional_text(Field::SenderId)?.map(PeerId::new),
                target_id: self.optional_text(Field::TargetId)?.map(PeerId::new),
                message: self.required_text(Field::Message)?,
            },
            "request" => Message::Request {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                document_id: self.document_id()?,
                data: self.data()?,
            },
            "sync" => Message::Sync {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                document_id: self.document_id()?,
                data: self.data()?,
            },
            "doc-unavailable" => Message::DocUnavailable {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                document_id: self.document_id()?,
            },
            "ephemeral" => Message::Ephemeral {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                count: self.count()?,
                session_id: self.required_text(Field::SessionId)?,
                document_id: self.document_id()?,
                data: self.data()?,
            },
            "remote-subscription-change" => Message::RemoteSubscriptionChange {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                add: self.storage_ids(Field::Add)?,
                remove: self.storage_ids(Field::Remove)?,
            },
            "remote-heads-changed" => Message::RemoteHeadsChanged {
                sender_id: self.peer_id(Field::SenderId)?,
                target_id: self.peer_id(Field::TargetId)?,
                document_id: self.document_id()?,
                new_heads: self.new_heads()?,
            },
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        };
        Ok(message)
    }

    fn missing(&self, field: &'static str) -> DecodeError {
        DecodeError::MissingField {
            message_type: self.message_type.to_owned(),
            field,
        }
    }

    fn optional_text(&self, field: Field) -> Result<Option<String>> {
        match self.fields.reader(field) {
            Some(mut reader) => reader.text(field.wire_name()),
            None => Ok(None),
        }
    }

    fn required_text(&self, field: Field) -> Result<String> {
        self.optional_text(field)?
            .ok_or_else(|| self.missing(field.wire_name()))
    }

    fn peer_id(&self, field: Field) -> Result<PeerId> {
        self.required_text(field).map(PeerId::new)
    }

    fn document_id(&self) -> Result<DocumentId> {
        let text = self.required_text(Field::DocumentId)?;
        DocumentId::parse(&text).map_err(DecodeError::InvalidDocumentId)
    }

    fn data(&self) -> Result<Vec<u8>> {
        let field = Field::Data;
        match self.fields.reader(field) {
            Some(mut reader) => reader.byte_string(field.wire_name()),
            None => Ok(None),
        }?
        .ok_or_else(|| self.missing(field.wire_name()))
    }

    fn count(&self) -> Result<u64> {
        let field = Field::Count;
        match self.fields.reader(field) {
            Some(mut reader) => reader.unsigned(field.wire_name()),
            None => Ok(None),
        }?
        .ok_or_else(|| self.missing(field.wire_name()))
    }

    fn text_list(&mut self, field: Field) -> Result<Option<Vec<String>>> {
        match self.fields.reader(field) {
            Some(mut reader) => reader.text_list(field.wire_name(), &mut self.list_items_left),
            None => Ok(None),
        }
    }

    fn storage_ids(&mut self, field: Field) -> Result<Vec<StorageId>> {
        let texts = self.text_list(field)?.unwrap_or_default();
        Ok(texts.into_iter().map(StorageId::new).collect())
    }

    fn peer_metadata(&self) -> Result<Option<PeerMetadata>> {
        const FIELD: &str = "peerMetadata";
        let Some(mut reader) = self.fields.reader(Field::PeerMetadata) else {
            return Ok(None);
        };
        let len = match reader.value_header()? {
            Header::Map(len) => len,
            header if header.is_absent() => return Ok(None),
            _ => return Err(wrong_type(FIELD, "map")),
        };
        let mut metadata = PeerMetadata::default();
        reader.entries(len, 0, |reader, key| {
            match key.as_deref() {
                Some(b"storageId") => {
                    metadata.storage_id =
                        reader.text("peerMetadata.storageId")?.map(StorageId::new);
                }
                Some(b"isEphemeral") => {
                    metadata.is_ephemeral =
                        reader.boolean("peerMetadata.isEphemeral")?.unwrap_or(false);
                }
                _ => reader.skip(0)?,
            }
            Ok(())
        })?;
        Ok(Some(metadata))
    }

    fn new_heads(&mut self) -> Result<Vec<(StorageId, HeadsAt)>> {
        const FIELD: &str = "newHeads";
        let Some(mut reader) = self.fields.reader(Field::NewHeads) else {
            return Err(self.missing(FIELD));
        };
        let len = match reader.value_header()? {
            Header::Map(len) => len,
            header if header.is_absent() => return Err(self.missing(FIELD)),
            _ => return Err(wrong_type(FIELD, "map")),
        };
        let message_type = self.message_type;
        let items_left = &mut self.list_items_left;
        let mut new_heads: Vec<(StorageId, HeadsAt)> = Vec::new();
        let mut index_by_storage: BTreeMap<StorageId, usize> = BTreeMap::new();
        reader.entries(len, 0, |reader, key| {
            let key = key.ok_or_else(|| wrong_type(FIELD, "map keyed by text"))?;
            let storage_id = String::from_utf8(key.into_owned())
                .map(StorageId::new)
                .map_err(|_| DecodeError::Cbor("a newHeads key is not valid UTF-8".to_owned()))?;
            take_list_item(items_left, FIELD)?;
            let heads_at = read_heads_at(reader, message_type, items_left)?;
            // Like a JavaScript object, the last of duplicate keys wins, in the first's place.
            match index_by_storage.get(&storage_id) {
                Some(&index) => {
                    if let Some(entry) = new_heads.get_mut(index) {
                        entry.1 = heads_at;
                    }
                }
                None => {
                    index_by_storage.insert(storage_id.clone(), new_heads.len());
                    new_heads.push((storage_id, heads_at));
                }
            }
            Ok(())
        })?;
        Ok(new_heads)
    }
}

/// Reads one `{ heads, timestamp }` value of `newHeads`.
fn read_heads_at(
    reader: &mut Reader<'_>,
    message_type: &'static str,
    items_left: &mut usize,
) -> Result<HeadsAt> {
    const HEADS: &str = "newHeads.heads";
    const TIMESTAMP: &str = "newHeads.timestamp";
    let len = match reader.value_header()? {
        Header::Map(len) => len,
        _ => return Err(wrong_type("newHeads", "map of { heads, timestamp } maps")),
    };
    let mut heads = None;
    let mut timestamp_ms = None;
    reader.entries(len, 0, |reader, key| {
        match key.as_deref() {
            Some(b"heads") => heads = reader.text_list(HEADS, items_left)?,
            Some(b"timestamp") => timestamp_ms = reader.unsigned(TIMESTAMP)?,
            _ => reader.skip(0)?,
        }
        Ok(())
    })?;
    let missing = |field| DecodeError::MissingField {
        message_type: message_type.to_owned(),
        field,
    };
    Ok(HeadsAt {
        heads: heads.ok_or_else(|| missing(HEADS))?,
        timestamp_ms: timestamp_ms.ok_or_else(|| missing(TIMESTAMP))?,
    })
}

fn wrong_type(field: &'static str, expected: &'static str) -> DecodeError {
    DecodeError::WrongType { field, expected }
}

fn take_list_item(items_left: &mut usize, field: &'static str) -> Result<()> {
    *items_left = items_left.checked_sub(1).ok_or(DecodeError::TooManyItems {
        field,
        max: LIST_ITEMS_MAX,
    })?;
    Ok(())
}

/// Returns the nesting level inside a new container at `depth`, if that is allowed.
fn enter(depth: usize) -> Result<usize> {
    let inner = depth + 1;
    if inner > CBOR_NESTING_MAX {
        return Err(DecodeError::Cbor(format!(
            "nested more than {CBOR_NESTING_MAX} levels deep"
        )));
    }
    Ok(inner)
}

/// The CBOR simple values that matter here (RFC 8949 section 3.3).
const SIMPLE_FALSE: u8 = 20;
const SIMPLE_TRUE: u8 = 21;
const SIMPLE_NULL: u8 = 22;
const SIMPLE_UNDEFINED: u8 = 23;

/// The head of one CBOR data item (RFC 8949 section 3). Lengths are as declared, not yet
/// checked against the input; `None` is an indefinite length.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Header {
    Unsigned(u64),
    /// The value is `-1 - n`.
    Negative(u64),
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    Tag(u64),
    Simple(u8),
    Float(f64),
    Break,
}

impl Header {
    /// `null` and `undefined` both mean "absent" in automerge-repo messages.
    fn is_absent(self) -> bool {
        matches!(self, Header::Simple(SIMPLE_NULL | SIMPLE_UNDEFINED))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StringKind {
    Bytes,
    Text,
}

/// A cursor over CBOR input. Every read checks the input is long enough before taking from it.
struct Reader<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, position: 0 }
    }

    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.position)
    }

    fn is_at_end(&self) -> bool {
        self.remaining() == 0
    }

    fn malformed(&self, what: &str) -> DecodeError {
        DecodeError::Cbor(format!("{what} at byte {}", self.position))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.input.len())
            .ok_or_else(|| self.malformed("input ends inside a data item"))?;
        let taken = self
            .input
            .get(self.position..end)
            .ok_or_else(|| self.malformed("input ends inside a data item"))?;
        self.position = end;
        Ok(taken)
    }

    /// Takes a length declared in the input, which may be anything up to 2^64 - 1.
    fn take_declared(&mut self, len: u64) -> Result<&'a [u8]> {
        let len =
            usize::try_from(len).map_err(|_| self.malformed("input ends inside a data item"))?;
        self.take(len)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let taken = self.take(N)?;
        <[u8; N]>::try_from(taken).map_err(|_| self.malformed("input ends inside a data item"))
    }

    fn header(&mut self) -> Result<Header> {
        let [initial] = self.take_array::<1>()?;
        let major = initial >> 5;
        let additional = initial & 0x1f;
        if major == 7 {
            return match additional {
                0..=23 => Ok(Header::Simple(additional)),
                24 => match self.take_array::<1>()? {
                    [value] if value >= 32 => Ok(Header::Simple(value)),
                    _ => Err(self.malformed("two-byte encoding of a one-byte simple value")),
                },
                25 => Ok(Header::Float(f16_to_f64(u16::from_be_bytes(
                    self.take_array()?,
                )))),
                26 => Ok(Header::Float(f64::from(f32::from_be_bytes(
                    self.take_array()?,
                )))),
                27 => Ok(Header::Float(f64::from_be_bytes(self.take_array()?))),
                31 => Ok(Header::Break),
                _ => Err(self.malformed("reserved additional information")),
            };
        }
        let argument = match additional {
            0..=23 => Some(u64::from(additional)),
            24 => Some(u64::from(u8::from_be_bytes(self.take_array()?))),
            25 => Some(u64::from(u16::from_be_bytes(self.take_array()?))),
            26 => Some(u64::from(u32::from_be_bytes(self.take_array()?))),
            27 => Some(u64::from_be_bytes(self.take_array()?)),
            31 => None,
            _ => return Err(self.malformed("reserved additional information")),
        };
        match (major, argument) {
            (0, Some(value)) => Ok(Header::Unsigned(value)),
            (1, Some(value)) => Ok(Header::Negative(value)),
            (2, len) => Ok(Header::Bytes(len)),
            (3, len) => Ok(Header::Text(len)),
            (4, len) => Ok(Header::Array(len)),
            (5, len) => Ok(Header::Map(len)),
            (6, Some(tag)) => Ok(Header::Tag(tag)),
            _ => Err(self.malformed("indefinite length on an integer or tag")),
        }
    }

    /// The header of the next value, looking through any tags (cbor-x tags typed arrays).
    fn value_header(&mut self) -> Result<Header> {
        loop {
            match self.header()? {
                Header::Tag(_) => continue,
                header => return Ok(header),
            }
        }
    }

    /// Consumes a break (`0xff`) if one is next.
    fn next_is_break(&mut self) -> bool {
        let is_break = self.input.get(self.position) == Some(&0xff);
        if is_break {
            self.position += 1;
        }
        is_break
    }

    /// The content of a byte or text string whose header has been read. Borrowed unless the
    /// string is split into chunks.
    fn string(&mut self, kind: StringKind, len: Option<u64>) -> Result<Cow<'a, [u8]>> {
        if let Some(len) = len {
            return self.take_declared(len).map(Cow::Borrowed);
        }
        let mut joined = Vec::new();
        loop {
            let chunk_len = match (kind, self.header()?) {
                (_, Header::Break) => return Ok(Cow::Owned(joined)),
                (StringKind::Bytes, Header::Bytes(Some(len)))
                | (StringKind::Text, Header::Text(Some(len))) => len,
                _ => return Err(self.malformed("bad chunk in an indefinite-length string")),
            };
            joined.extend_from_slice(self.take_declared(chunk_len)?);
        }
    }

    /// Calls `each` once per item of an array (or per entry of a map) of length `len`.
    ///
    /// Each call consumes at least one byte or fails, so a huge declared length ends at the end
    /// of the input.
    fn items(
        &mut self,
        len: Option<u64>,
        mut each: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        match len {
            Some(len) => {
                for _ in 0..len {
                    each(self)?;
                }
            }
            None => {
                while !self.next_is_break() {
                    each(self)?;
                }
            }
        }
        Ok(())
    }

    /// Calls `each` with every key of a map whose header has been read; `each` must consume the
    /// value. Keys that are not text strings are passed as `None`.
    fn entries(
        &mut self,
        len: Option<u64>,
        depth: usize,
        mut each: impl FnMut(&mut Self, Option<Cow<'a, [u8]>>) -> Result<()>,
    ) -> Result<()> {
        self.items(len, |reader| {
            let key = reader.skip_span(depth)?;
            each(reader, text_key(key))
        })
    }

    /// Skips one data item enclosed by `depth` containers and returns its bytes.
    fn skip_span(&mut self, depth: usize) -> Result<&'a [u8]> {
        let start = self.position;
        self.skip(depth)?;
        self.input
            .get(start..self.position)
            .ok_or_else(|| self.malformed("internal: skipped past the input"))
    }

    /// Skips one data item enclosed by `depth` containers, checking that it is well formed.
    fn skip(&mut self, depth: usize) -> Result<()> {
        match self.header()? {
            Header::Unsigned(_) | Header::Negative(_) | Header::Simple(_) | Header::Float(_) => {
                Ok(())
            }
            Header::Bytes(len) => self.string(StringKind::Bytes, len).map(drop),
            Header::Text(len) => self.string(StringKind::Text, len).map(drop),
            Header::Array(len) => {
                let inner = enter(depth)?;
                self.items(len, |reader| reader.skip(inner))
            }
            Header::Map(len) => {
                let inner = enter(depth)?;
                self.items(len, |reader| {
                    reader.skip(inner)?;
                    reader.skip(inner)
                })
            }
            Header::Tag(_) => {
                let inner = enter(depth)?;
                self.skip(inner)
            }
            Header::Break => Err(self.malformed("unexpected break")),
        }
    }

    fn text(&mut self, field: &'static str) -> Result<Option<String>> {
        match self.value_header()? {
            Header::Text(len) => {
                let bytes = self.string(StringKind::Text, len)?;
                let text = match bytes {
                    Cow::Borrowed(bytes) => std::str::from_utf8(bytes).map(str::to_owned).ok(),
                    Cow::Owned(bytes) => String::from_utf8(bytes).ok(),
                };
                text.map(Some)
                    .ok_or_else(|| DecodeError::Cbor(format!("field {field:?} is not valid UTF-8")))
            }
            header if header.is_absent() => Ok(None),
            _ => Err(wrong_type(field, "text string")),
        }
    }

    fn byte_string(&mut self, field: &'static str) -> Result<Option<Vec<u8>>> {
        match self.value_header()? {
            Header::Bytes(len) => Ok(Some(self.string(StringKind::Bytes, len)?.into_owned())),
            header if header.is_absent() => Ok(None),
            _ => Err(wrong_type(field, "byte string")),
        }
    }

    /// A non-negative integer, which JavaScript peers may send as an integral float.
    fn unsigned(&mut self, field: &'static str) -> Result<Option<u64>> {
        match self.value_header()? {
            Header::Unsigned(value) => Ok(Some(value)),
            Header::Float(value) => integral_float_to_u64(value)
                .map(Some)
                .ok_or_else(|| wrong_type(field, "non-negative integer")),
            header if header.is_absent() => Ok(None),
            _ => Err(wrong_type(field, "non-negative integer")),
        }
    }

    fn boolean(&mut self, field: &'static str) -> Result<Option<bool>> {
        match self.value_header()? {
            Header::Simple(SIMPLE_FALSE) => Ok(Some(false)),
            Header::Simple(SIMPLE_TRUE) => Ok(Some(true)),
            header if header.is_absent() => Ok(None),
            _ => Err(wrong_type(field, "boolean")),
        }
    }

    fn text_list(
        &mut self,
        field: &'static str,
        items_left: &mut usize,
    ) -> Result<Option<Vec<String>>> {
        let len = match self.value_header()? {
            Header::Array(len) => len,
            header if header.is_absent() => return Ok(None),
            _ => return Err(wrong_type(field, "array of text strings")),
        };
        let mut texts = Vec::new();
        self.items(len, |reader| {
            take_list_item(items_left, field)?;
            let text = reader
                .text(field)?
                .ok_or_else(|| wrong_type(field, "array of text strings"))?;
            texts.push(text);
            Ok(())
        })?;
        Ok(Some(texts))
    }
}

/// The bytes of a map key if it is a text string (looking through tags).
fn text_key(key: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut reader = Reader::new(key);
    match reader.value_header() {
        Ok(Header::Text(len)) => reader.string(StringKind::Text, len).ok(),
        _ => None,
    }
}

/// Reads an IEEE 754 half-precision float (RFC 8949 appendix D).
fn f16_to_f64(bits: u16) -> f64 {
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mantissa + 1024.0) * 2f64.powi(exponent - 25),
    };
    if bits & 0x8000 == 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// The value of a float that holds a whole number in `u64` range, as cbor-x writes any number
/// that is not a 32-bit integer.
fn integral_float_to_u64(value: f64) -> Option<u64> {
    // 2^64 is exactly representable, and so is every whole number below it that an f64 holds.
    const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;
    let whole = value.is_finite() && value.fract() == 0.0;
    // Exact: `value` is whole and within [0, 2^64).
    (whole && (0.0..TWO_TO_THE_64).contains(&value)).then_some(value as u64)
}
