//! Example-based tests of the wire format: frames as automerge-repo's JavaScript peers write
//! them, the tolerances that requires, and every way a frame can be rejected.

use ciborium::Value;
use ventas_sync_protocol::ids::{DocumentId, IdError, PeerId, StorageId};
use ventas_sync_protocol::wire::{
    decode, encode, DecodeError, HeadsAt, Message, PeerMetadata, CBOR_NESTING_MAX, LIST_ITEMS_MAX,
    MESSAGE_BYTES_MAX_DEFAULT,
};

/// A document id taken from automerge-repo's own tests (`AutomergeUrl.test.ts`).
const DOCUMENT_ID_TEXT: &str = "4NMNnkMhL8jXrdJ9jamS58PAVdXu";

const MAX: usize = MESSAGE_BYTES_MAX_DEFAULT;

/// Hand-built CBOR, so a test controls every byte: widths, tags, `undefined`, chunked strings.
#[derive(Default)]
struct Cbor(Vec<u8>);

impl Cbor {
    fn head(mut self, major: u8, argument: u64) -> Self {
        let major = major << 5;
        match argument {
            0..=23 => self.0.push(major | u8::try_from(argument).unwrap_or(0)),
            24..=0xff => {
                self.0.push(major | 24);
                self.0.push(u8::try_from(argument).unwrap_or(0));
            }
            0x100..=0xffff => {
                self.0.push(major | 25);
                self.0
                    .extend_from_slice(&u16::try_from(argument).unwrap_or(0).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(major | 26);
                self.0
                    .extend_from_slice(&u32::try_from(argument).unwrap_or(0).to_be_bytes());
            }
            _ => {
                self.0.push(major | 27);
                self.0.extend_from_slice(&argument.to_be_bytes());
            }
        }
        self
    }

    fn uint(self, value: u64) -> Self {
        self.head(0, value)
    }

    fn negative(self, minus_one_minus: u64) -> Self {
        self.head(1, minus_one_minus)
    }

    fn bytes(self, bytes: &[u8]) -> Self {
        self.head(2, bytes.len() as u64).raw(bytes)
    }

    fn text(self, text: &str) -> Self {
        self.head(3, text.len() as u64).raw(text.as_bytes())
    }

    fn array(self, len: u64) -> Self {
        self.head(4, len)
    }

    fn map(self, len: u64) -> Self {
        self.head(5, len)
    }

    fn tag(self, tag: u64) -> Self {
        self.head(6, tag)
    }

    fn f64(self, value: f64) -> Self {
        self.raw(&[0xfb]).raw(&value.to_be_bytes())
    }

    fn f32(self, value: f32) -> Self {
        self.raw(&[0xfa]).raw(&value.to_be_bytes())
    }

    fn f16_bits(self, bits: u16) -> Self {
        self.raw(&[0xf9]).raw(&bits.to_be_bytes())
    }

    fn boolean(self, value: bool) -> Self {
        self.raw(&[if value { 0xf5 } else { 0xf4 }])
    }

    fn null(self) -> Self {
        self.raw(&[0xf6])
    }

    fn undefined(self) -> Self {
        self.raw(&[0xf7])
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn build(self) -> Vec<u8> {
        self.0
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("test hex is valid"))
        .collect()
}

fn document_id(text: &str) -> DocumentId {
    DocumentId::parse(text).expect("test document id is valid")
}

/// An ephemeral message whose `count` is written by `count`.
fn ephemeral_with_count(count: impl FnOnce(Cbor) -> Cbor) -> Vec<u8> {
    let frame = Cbor::default()
        .map(7)
        .text("type")
        .text("ephemeral")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("count");
    count(frame)
        .text("sessionId")
        .text("s")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("data")
        .bytes(&[1, 2, 3])
        .build()
}

/// A join message whose `peerMetadata` value is written by `metadata`.
fn join_with_metadata(metadata: impl FnOnce(Cbor) -> Cbor) -> Vec<u8> {
    let frame = Cbor::default()
        .map(3)
        .text("type")
        .text("join")
        .text("senderId")
        .text("phone-1")
        .text("peerMetadata");
    metadata(frame).build()
}

/// A sync message with one extra entry written by `extra` (key and value).
fn sync_with_extra_entry(extra: impl FnOnce(Cbor) -> Cbor) -> Vec<u8> {
    let frame = Cbor::default()
        .map(6)
        .text("type")
        .text("sync")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("data")
        .bytes(&[9, 9]);
    extra(frame).build()
}

fn expected_sync() -> Message {
    Message::Sync {
        sender_id: PeerId::new("a"),
        target_id: PeerId::new("b"),
        document_id: document_id(DOCUMENT_ID_TEXT),
        data: vec![9, 9],
    }
}

fn decode_count(count: impl FnOnce(Cbor) -> Cbor) -> Result<u64, DecodeError> {
    match decode(&ephemeral_with_count(count), MAX)? {
        Message::Ephemeral { count, .. } => Ok(count),
        other => panic!("expected an ephemeral message, got {other:?}"),
    }
}

fn count_is_not_an_integer() -> Result<u64, DecodeError> {
    Err(DecodeError::WrongType {
        field: "count",
        expected: "non-negative integer",
    })
}

#[test]
fn join_written_by_cbor_x_decodes() {
    // `cbor.encode({type: "join", senderId: "abc", peerMetadata: {isEphemeral: false},
    // supportedProtocolVersions: ["1"]})` with automerge-repo 2.5.6's cbor-x encoder: every
    // object is a map with a 16-bit length (0xb9), keys in insertion order.
    let frame = hex(concat!(
        "b90004",
        "6474797065",
        "646a6f696e",
        "6873656e6465724964",
        "63616263",
        "6c706565724d65746164617461",
        "b90001",
        "6b6973457068656d6572616c",
        "f4",
        "7819737570706f7274656450726f746f636f6c56657273696f6e73",
        "816131",
    ));
    assert_eq!(
        decode(&frame, MAX),
        Ok(Message::Join {
            sender_id: PeerId::new("abc"),
            supported_protocol_versions: vec!["1".to_owned()],
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: false,
            }),
        })
    );
}

#[test]
fn frames_captured_from_automerge_repo_decode() {
    let client = PeerId::new("peer-yzc329m9i");
    let capture_server = PeerId::new("server");
    let reference_server = PeerId::new("ref-server-11202");
    let reference_client = PeerId::new("peer-hcy0duw3k");
    let unknown_document = document_id("4U7oTQZ94tGXdgo6z3Xy2GVNUjcd");
    let created_document = document_id("TffTq1vfG72KgbPDd164UE9oziS");
    let reference_document = document_id("2hSVnzAPdj14yK5YJ5H9zFmY1Nxe");
    let frame = |bytes: &[u8]| decode(bytes, MAX).expect("captured frame decodes");

    assert_eq!(
        frame(include_bytes!("fixtures/js-frames/01-join.cbor")),
        Message::Join {
            sender_id: client.clone(),
            supported_protocol_versions: vec!["1".to_owned()],
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        }
    );
    assert_eq!(
        frame(include_bytes!("fixtures/js-frames/02-request.cbor")),
        Message::Request {
            sender_id: client.clone(),
            target_id: capture_server.clone(),
            document_id: unknown_document,
            data: hex("42000001000000020284"),
        }
    );
    assert_eq!(
        frame(include_bytes!(
            "fixtures/js-frames/03-remote-heads-changed.cbor"
        )),
        Message::RemoteHeadsChanged {
            sender_id: client.clone(),
            target_id: capture_server.clone(),
            document_id: unknown_document,
            new_heads: vec![(
                StorageId::new("capture-server-storage-id"),
                HeadsAt {
                    heads: vec!["6h17WRJWd11MoKXrSGrDFMSd5GaS1QzExMVPW7oZWV6io7uMD".to_owned()],
                    timestamp_ms: 1_795_846_348_577,
                },
            )],
        }
    );
    match frame(include_bytes!("fixtures/js-frames/04-sync.cbor")) {
        Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            assert_eq!(
                (sender_id, target_id),
                (client.clone(), capture_server.clone())
            );
            assert_eq!(document_id, unknown_document);
            assert_eq!(data.len(), 74);
            assert_eq!(data.first(), Some(&0x43), "an automerge sync message");
        }
        other => panic!("expected sync, got {other:?}"),
    }
    assert_eq!(
        frame(include_bytes!(
            "fixtures/js-frames/06-remote-heads-changed.cbor"
        )),
        Message::RemoteHeadsChanged {
            sender_id: client.clone(),
            target_id: capture_server.clone(),
            document_id: created_document,
            new_heads: vec![(
                StorageId::new("capture-server-storage-id"),
                HeadsAt {
                    heads: vec![],
                    timestamp_ms: 1_795_846_348_587,
                },
            )],
        }
    );
    match frame(include_bytes!("fixtures/js-frames/11-ephemeral.cbor")) {
        Message::Ephemeral {
            sender_id,
            target_id,
            count,
            session_id,
            document_id,
            data,
        } => {
            assert_eq!(
                (sender_id, target_id),
                (client.clone(), capture_server.clone())
            );
            assert_eq!((count, session_id.as_str()), (1, "5z1581yr62d"));
            assert_eq!(document_id, created_document);
            assert_eq!(data.len(), 29);
        }
        other => panic!("expected ephemeral, got {other:?}"),
    }
    assert_eq!(
        frame(include_bytes!(
            "fixtures/js-frames/12-remote-subscription-change.cbor"
        )),
        Message::RemoteSubscriptionChange {
            sender_id: client,
            target_id: capture_server,
            add: vec![StorageId::new("capture-other-storage-id")],
            remove: vec![],
        }
    );
    assert_eq!(
        frame(include_bytes!("fixtures/js-frames/server-peer.cbor")),
        Message::Peer {
            sender_id: reference_server.clone(),
            target_id: reference_client.clone(),
            selected_protocol_version: "1".to_owned(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(StorageId::new("2c3de376-f0ac-4d51-a90d-0e557b4c2b75")),
                is_ephemeral: false,
            }),
        }
    );
    assert_eq!(
        frame(include_bytes!(
            "fixtures/js-frames/server-doc-unavailable.cbor"
        )),
        Message::DocUnavailable {
            sender_id: reference_server.clone(),
            target_id: reference_client.clone(),
            document_id: reference_document,
        }
    );
    match frame(include_bytes!("fixtures/js-frames/server-sync.cbor")) {
        Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        } => {
            assert_eq!((sender_id, target_id), (reference_server, reference_client));
            assert_eq!(document_id, reference_document);
            assert_eq!(data.len(), 25);
        }
        other => panic!("expected sync, got {other:?}"),
    }
}

#[test]
fn count_sent_as_an_integral_float_is_accepted() {
    assert_eq!(decode_count(|frame| frame.f64(3.0)), Ok(3));
    assert_eq!(decode_count(|frame| frame.f32(3.0)), Ok(3));
    // 3.0 as a half-precision float: exponent 16, mantissa 512.
    assert_eq!(decode_count(|frame| frame.f16_bits(0x4200)), Ok(3));
    assert_eq!(decode_count(|frame| frame.f64(-0.0)), Ok(0));
    // The largest f64 below 2^64.
    assert_eq!(
        decode_count(|frame| frame.f64(18_446_744_073_709_549_568.0)),
        Ok(18_446_744_073_709_549_568)
    );
    assert_eq!(decode_count(|frame| frame.uint(u64::MAX)), Ok(u64::MAX));
}

#[test]
fn count_with_a_fraction_is_rejected() {
    assert_eq!(
        decode_count(|frame| frame.f64(3.5)),
        count_is_not_an_integer()
    );
    assert_eq!(
        decode_count(|frame| frame.f64(0.1)),
        count_is_not_an_integer()
    );
}

#[test]
fn negative_count_is_rejected() {
    assert_eq!(
        decode_count(|frame| frame.f64(-1.0)),
        count_is_not_an_integer()
    );
    assert_eq!(
        decode_count(|frame| frame.negative(0)),
        count_is_not_an_integer()
    );
}

#[test]
fn non_finite_and_out_of_range_counts_are_rejected() {
    assert_eq!(
        decode_count(|frame| frame.f64(f64::NAN)),
        count_is_not_an_integer()
    );
    assert_eq!(
        decode_count(|frame| frame.f64(f64::INFINITY)),
        count_is_not_an_integer()
    );
    // Half-precision infinity.
    assert_eq!(
        decode_count(|frame| frame.f16_bits(0x7c00)),
        count_is_not_an_integer()
    );
    assert_eq!(
        decode_count(|frame| frame.f64(18_446_744_073_709_551_616.0)),
        count_is_not_an_integer()
    );
    assert_eq!(
        decode_count(|frame| frame.text("3")),
        count_is_not_an_integer()
    );
}

#[test]
fn undefined_or_null_storage_id_means_none() {
    for absent in [Cbor::undefined, Cbor::null] {
        let frame = join_with_metadata(|frame| {
            absent(frame.map(2).text("storageId"))
                .text("isEphemeral")
                .boolean(true)
        });
        assert_eq!(
            decode(&frame, MAX),
            Ok(Message::Join {
                sender_id: PeerId::new("phone-1"),
                supported_protocol_versions: vec!["1".to_owned()],
                peer_metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: true,
                }),
            })
        );
    }
}

#[test]
fn absent_peer_metadata_and_absent_is_ephemeral_have_defaults() {
    for absent in [Cbor::undefined, Cbor::null] {
        let frame = join_with_metadata(absent);
        assert!(matches!(
            decode(&frame, MAX),
            Ok(Message::Join {
                peer_metadata: None,
                ..
            })
        ));
    }
    let frame = join_with_metadata(|frame| frame.map(1).text("storageId").text("laptop-disk"));
    assert!(matches!(
        decode(&frame, MAX),
        Ok(Message::Join {
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(_),
                is_ephemeral: false,
            }),
            ..
        })
    ));
}

#[test]
fn missing_supported_protocol_versions_means_version_1() {
    let frame = join_with_metadata(|frame| frame.map(0));
    assert!(matches!(
        decode(&frame, MAX),
        Ok(Message::Join { supported_protocol_versions, .. }) if supported_protocol_versions == ["1"]
    ));
    let frame = Cbor::default()
        .map(3)
        .text("type")
        .text("join")
        .text("senderId")
        .text("phone-1")
        .text("supportedProtocolVersions")
        .undefined()
        .build();
    assert!(matches!(
        decode(&frame, MAX),
        Ok(Message::Join { supported_protocol_versions, .. }) if supported_protocol_versions == ["1"]
    ));
}

#[test]
fn unknown_type_is_an_error_value() {
    let frame = Cbor::default()
        .map(2)
        .text("type")
        .text("gossip")
        .text("senderId")
        .text("a")
        .build();
    assert_eq!(
        decode(&frame, MAX),
        Err(DecodeError::UnknownType("gossip".to_owned()))
    );
}

#[test]
fn unknown_type_is_reported_truncated() {
    let long_type = "x".repeat(10_000);
    let frame = Cbor::default().map(1).text("type").text(&long_type).build();
    assert_eq!(
        decode(&frame, MAX),
        Err(DecodeError::UnknownType("x".repeat(64)))
    );
}

#[test]
fn missing_or_non_text_type_is_reported() {
    let no_type = Cbor::default().map(1).text("senderId").text("a").build();
    assert_eq!(decode(&no_type, MAX), Err(DecodeError::MissingType));
    let null_type = Cbor::default().map(1).text("type").null().build();
    assert_eq!(decode(&null_type, MAX), Err(DecodeError::MissingType));
    let numeric_type = Cbor::default().map(1).text("type").uint(7).build();
    assert_eq!(
        decode(&numeric_type, MAX),
        Err(DecodeError::WrongType {
            field: "type",
            expected: "text string"
        })
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let frame = sync_with_extra_entry(|frame| {
        frame
            .text("futureField")
            .map(3)
            .uint(1)
            .tag(1)
            .f64(1.5)
            .text("nested")
            .array(2)
            .null()
            .undefined()
            .negative(9)
            .bytes(b"non-text key")
    });
    assert_eq!(decode(&frame, MAX), Ok(expected_sync()));
}

#[test]
fn known_fields_that_a_message_type_does_not_use_are_ignored_whatever_their_type() {
    let frame = sync_with_extra_entry(|frame| frame.text("count").text("not a number"));
    assert_eq!(decode(&frame, MAX), Ok(expected_sync()));
}

#[test]
fn non_text_keys_are_ignored() {
    let frame = sync_with_extra_entry(|frame| frame.uint(7).text("value of an integer key"));
    assert_eq!(decode(&frame, MAX), Ok(expected_sync()));
}

#[test]
fn duplicate_keys_keep_the_last_value() {
    let frame = sync_with_extra_entry(|frame| frame.text("senderId").text("z"));
    match decode(&frame, MAX) {
        Ok(Message::Sync { sender_id, .. }) => assert_eq!(sender_id, PeerId::new("z")),
        other => panic!("expected sync, got {other:?}"),
    }
}

#[test]
fn tagged_and_chunked_byte_strings_are_read_as_data() {
    // cbor-x without `tagUint8Array: false` tags a Uint8Array with 64.
    let tagged = Cbor::default()
        .map(5)
        .text("type")
        .text("sync")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("data")
        .tag(64)
        .bytes(&[9, 9])
        .build();
    assert_eq!(decode(&tagged, MAX), Ok(expected_sync()));

    let chunked = Cbor::default()
        .map(5)
        .text("type")
        .text("sync")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("data")
        .raw(&[0x5f])
        .bytes(&[9])
        .bytes(&[])
        .bytes(&[9])
        .raw(&[0xff])
        .build();
    assert_eq!(decode(&chunked, MAX), Ok(expected_sync()));
}

#[test]
fn indefinite_length_maps_and_arrays_are_accepted() {
    let frame = Cbor::default()
        .raw(&[0xbf])
        .text("type")
        .text("join")
        .text("senderId")
        .text("a")
        .text("supportedProtocolVersions")
        .raw(&[0x9f])
        .text("1")
        .text("2")
        .raw(&[0xff, 0xff])
        .build();
    assert!(matches!(
        decode(&frame, MAX),
        Ok(Message::Join { supported_protocol_versions, .. }) if supported_protocol_versions == ["1", "2"]
    ));
}

#[test]
fn frame_of_exactly_the_maximum_size_is_accepted_and_one_byte_over_is_too_large() {
    let frame = encode(&expected_sync());
    let len = frame.len();
    assert_eq!(decode(&frame, len), Ok(expected_sync()));
    assert_eq!(
        decode(&frame, len - 1),
        Err(DecodeError::TooLarge { len, max: len - 1 })
    );
}

#[test]
fn size_is_checked_before_parsing() {
    let garbage = vec![0xff; 100];
    assert_eq!(
        decode(&garbage, 99),
        Err(DecodeError::TooLarge { len: 100, max: 99 })
    );
}

#[test]
fn empty_frame_is_empty() {
    assert_eq!(decode(&[], MAX), Err(DecodeError::Empty));
}

#[test]
fn frame_that_is_not_a_map_is_rejected() {
    for frame in [
        Cbor::default().array(0).build(),
        Cbor::default().text("join").build(),
        Cbor::default().null().build(),
    ] {
        assert_eq!(decode(&frame, MAX), Err(DecodeError::NotAMap));
    }
}

#[test]
fn nesting_up_to_the_limit_is_accepted_and_deeper_is_rejected() {
    // The message map is level 1, so an unknown field may hold this many nested arrays.
    let arrays_allowed = CBOR_NESTING_MAX - 1;
    let nested = |arrays: usize| {
        sync_with_extra_entry(|frame| {
            let mut frame = frame.text("deep");
            for _ in 0..arrays {
                frame = frame.array(1);
            }
            frame.uint(0)
        })
    };
    assert_eq!(decode(&nested(arrays_allowed), MAX), Ok(expected_sync()));
    assert!(matches!(
        decode(&nested(arrays_allowed + 1), MAX),
        Err(DecodeError::Cbor(_))
    ));
    // A long chain of tags is nesting too.
    let tags = sync_with_extra_entry(|frame| {
        let mut frame = frame.text("tagged");
        for _ in 0..100_000 {
            frame = frame.tag(6);
        }
        frame.uint(0)
    });
    assert!(matches!(decode(&tags, MAX), Err(DecodeError::Cbor(_))));
    // So deep that unbounded recursion would overflow the stack.
    let mut bomb = Cbor::default().map(1).text("x");
    for _ in 0..1_000_000 {
        bomb = bomb.array(1);
    }
    assert!(matches!(
        decode(&bomb.build(), MAX),
        Err(DecodeError::Cbor(_))
    ));
}

#[test]
fn bytes_after_the_map_are_rejected() {
    let mut frame = encode(&expected_sync());
    frame.push(0x00);
    assert!(matches!(decode(&frame, MAX), Err(DecodeError::Cbor(_))));
    let mut two_messages = encode(&expected_sync());
    two_messages.extend(encode(&expected_sync()));
    assert!(matches!(
        decode(&two_messages, MAX),
        Err(DecodeError::Cbor(_))
    ));
}

#[test]
fn truncated_frames_are_rejected() {
    let frame = encode(&expected_sync());
    for len in 1..frame.len() {
        assert!(
            matches!(decode(&frame[..len], MAX), Err(DecodeError::Cbor(_))),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn huge_declared_lengths_are_rejected_without_allocating_them() {
    let declared: u64 = 1 << 60;
    let headers: [&[u8]; 4] = [&[0x5b], &[0x7b], &[0x9b], &[0xbb]];
    for header in headers {
        // As the value of an unknown field, and as the value of `data`/`senderId`.
        for key in ["unknown", "data", "senderId", "supportedProtocolVersions"] {
            let frame = Cbor::default()
                .map(2)
                .text("type")
                .text("join")
                .text(key)
                .raw(header)
                .raw(&declared.to_be_bytes())
                .raw(b"tiny")
                .build();
            assert!(matches!(decode(&frame, MAX), Err(DecodeError::Cbor(_))));
        }
    }
    // Largest possible lengths, which overflow usize arithmetic if added carelessly.
    let frame = Cbor::default()
        .map(1)
        .text("x")
        .raw(&[0x5b])
        .raw(&u64::MAX.to_be_bytes())
        .build();
    assert!(matches!(decode(&frame, MAX), Err(DecodeError::Cbor(_))));
}

#[test]
fn malformed_cbor_is_an_error_value() {
    let cases: [&[u8]; 8] = [
        &[0xa1, 0x1c],                               // reserved additional information 28
        &[0xa1, 0x61, 0x78, 0xff],                   // break where a value belongs
        &[0xa1, 0x61, 0x78, 0x1f],                   // indefinite-length integer
        &[0xa1, 0x61, 0x78, 0xf8, 0x10],             // two-byte simple value below 32
        &[0xa1, 0x61, 0x78, 0x5f, 0x61, 0x61, 0xff], // text chunk in a byte string
        &[0xa1, 0x61, 0x78, 0x5f, 0x5f, 0xff, 0xff], // nested indefinite chunk
        &[0xbf, 0x61, 0x78, 0xff],                   // break between a key and its value
        &[0xa1, 0x61],                               // input ends inside a key
    ];
    for frame in cases {
        assert!(
            matches!(decode(frame, MAX), Err(DecodeError::Cbor(_))),
            "{frame:02x?}"
        );
    }
}

#[test]
fn invalid_utf8_in_a_needed_text_is_rejected() {
    let frame = Cbor::default()
        .map(2)
        .text("type")
        .text("leave")
        .text("senderId")
        .raw(&[0x62, 0xc3, 0x28])
        .build();
    assert!(matches!(decode(&frame, MAX), Err(DecodeError::Cbor(_))));
}

#[test]
fn document_id_with_a_bad_checksum_is_rejected() {
    // The last character of a valid id, changed.
    let frame = Cbor::default()
        .map(4)
        .text("type")
        .text("doc-unavailable")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text("4NMNnkMhL8jXrdJ9jamS58PAVdXv")
        .build();
    assert_eq!(
        decode(&frame, MAX),
        Err(DecodeError::InvalidDocumentId(IdError::BadChecksum))
    );
}

#[test]
fn wrong_field_types_are_reported_by_name() {
    let sender_number = Cbor::default()
        .map(2)
        .text("type")
        .text("leave")
        .text("senderId")
        .uint(5)
        .build();
    assert_eq!(
        decode(&sender_number, MAX),
        Err(DecodeError::WrongType {
            field: "senderId",
            expected: "text string"
        })
    );
    let data_text = sync_with_extra_entry(|frame| frame.text("data").text("not bytes"));
    assert_eq!(
        decode(&data_text, MAX),
        Err(DecodeError::WrongType {
            field: "data",
            expected: "byte string"
        })
    );
    let metadata_array = join_with_metadata(|frame| frame.array(0));
    assert_eq!(
        decode(&metadata_array, MAX),
        Err(DecodeError::WrongType {
            field: "peerMetadata",
            expected: "map"
        })
    );
    let ephemeral_flag_number =
        join_with_metadata(|frame| frame.map(1).text("isEphemeral").uint(1));
    assert_eq!(
        decode(&ephemeral_flag_number, MAX),
        Err(DecodeError::WrongType {
            field: "peerMetadata.isEphemeral",
            expected: "boolean"
        })
    );
    let version_number = Cbor::default()
        .map(3)
        .text("type")
        .text("join")
        .text("senderId")
        .text("a")
        .text("supportedProtocolVersions")
        .array(1)
        .uint(1)
        .build();
    assert_eq!(
        decode(&version_number, MAX),
        Err(DecodeError::WrongType {
            field: "supportedProtocolVersions",
            expected: "text string"
        })
    );
}

#[test]
fn missing_required_fields_name_the_message_type() {
    let no_data = Cbor::default()
        .map(4)
        .text("type")
        .text("sync")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .build();
    assert_eq!(
        decode(&no_data, MAX),
        Err(DecodeError::MissingField {
            message_type: "sync".to_owned(),
            field: "data"
        })
    );
    let null_sender = Cbor::default()
        .map(2)
        .text("type")
        .text("leave")
        .text("senderId")
        .null()
        .build();
    assert_eq!(
        decode(&null_sender, MAX),
        Err(DecodeError::MissingField {
            message_type: "leave".to_owned(),
            field: "senderId"
        })
    );
    let heads_without_timestamp = Cbor::default()
        .map(5)
        .text("type")
        .text("remote-heads-changed")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("newHeads")
        .map(1)
        .text("storage")
        .map(1)
        .text("heads")
        .array(0)
        .build();
    assert_eq!(
        decode(&heads_without_timestamp, MAX),
        Err(DecodeError::MissingField {
            message_type: "remote-heads-changed".to_owned(),
            field: "newHeads.timestamp"
        })
    );
}

#[test]
fn error_message_needs_only_its_text() {
    let frame = Cbor::default()
        .map(2)
        .text("type")
        .text("error")
        .text("message")
        .text("unsupported protocol version")
        .build();
    let message = Message::Error {
        sender_id: None,
        target_id: None,
        message: "unsupported protocol version".to_owned(),
    };
    assert_eq!(decode(&frame, MAX), Ok(message.clone()));
    assert_eq!(encode(&message), frame);
}

#[test]
fn list_items_are_capped_per_message() {
    let join_with_versions = |count: usize| {
        let mut frame = Cbor::default()
            .map(3)
            .text("type")
            .text("join")
            .text("senderId")
            .text("a")
            .text("supportedProtocolVersions")
            .array(count as u64);
        for _ in 0..count {
            frame = frame.text("");
        }
        frame.build()
    };
    assert!(decode(&join_with_versions(LIST_ITEMS_MAX), MAX).is_ok());
    assert_eq!(
        decode(&join_with_versions(LIST_ITEMS_MAX + 1), MAX),
        Err(DecodeError::TooManyItems {
            field: "supportedProtocolVersions",
            max: LIST_ITEMS_MAX
        })
    );

    // Items in nested lists count towards the same cap.
    let storages = 64;
    let heads_each = LIST_ITEMS_MAX / storages;
    let mut frame = Cbor::default()
        .map(5)
        .text("type")
        .text("remote-heads-changed")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("newHeads")
        .map(storages as u64);
    for storage in 0..storages {
        frame = frame
            .text(&format!("storage-{storage}"))
            .map(2)
            .text("timestamp")
            .uint(1)
            .text("heads")
            .array(heads_each as u64);
        for _ in 0..heads_each {
            frame = frame.text("");
        }
    }
    assert!(matches!(
        decode(&frame.build(), MAX),
        Err(DecodeError::TooManyItems {
            max: LIST_ITEMS_MAX,
            ..
        })
    ));
}

#[test]
fn duplicate_storages_in_new_heads_keep_the_last_value_in_the_first_place() {
    let frame = Cbor::default()
        .map(5)
        .text("type")
        .text("remote-heads-changed")
        .text("senderId")
        .text("a")
        .text("targetId")
        .text("b")
        .text("documentId")
        .text(DOCUMENT_ID_TEXT)
        .text("newHeads")
        .map(3)
        .text("s1")
        .map(2)
        .text("heads")
        .array(0)
        .text("timestamp")
        .uint(1)
        .text("s2")
        .map(2)
        .text("heads")
        .array(0)
        .text("timestamp")
        .uint(2)
        .text("s1")
        .map(2)
        .text("heads")
        .array(0)
        .text("timestamp")
        .uint(3)
        .build();
    let heads_at = |timestamp_ms| HeadsAt {
        heads: vec![],
        timestamp_ms,
    };
    assert!(matches!(
        decode(&frame, MAX),
        Ok(Message::RemoteHeadsChanged { new_heads, .. })
            if new_heads == vec![(StorageId::new("s1"), heads_at(3)), (StorageId::new("s2"), heads_at(2))]
    ));
}

/// Reads our own encoding with an independent decoder.
fn as_value(frame: &[u8]) -> Vec<(String, Value)> {
    match ciborium::from_reader::<Value, _>(frame).expect("our encoding is valid CBOR") {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(key, value)| match key {
                Value::Text(key) => (key, value),
                other => panic!("non-text key {other:?}"),
            })
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

fn field<'v>(entries: &'v [(String, Value)], name: &str) -> Option<&'v Value> {
    entries
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[test]
fn encoding_uses_text_keys_and_plain_byte_strings() {
    let entries = as_value(&encode(&expected_sync()));
    let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["type", "senderId", "targetId", "documentId", "data"]);
    assert_eq!(
        field(&entries, "type"),
        Some(&Value::Text("sync".to_owned()))
    );
    assert_eq!(
        field(&entries, "documentId"),
        Some(&Value::Text(DOCUMENT_ID_TEXT.to_owned()))
    );
    assert_eq!(field(&entries, "data"), Some(&Value::Bytes(vec![9, 9])));
}

#[test]
fn numbers_are_encoded_like_cbor_x() {
    let heads_changed = |timestamp_ms| Message::RemoteHeadsChanged {
        sender_id: PeerId::new("a"),
        target_id: PeerId::new("b"),
        document_id: document_id(DOCUMENT_ID_TEXT),
        new_heads: vec![(
            StorageId::new("s"),
            HeadsAt {
                heads: vec!["h".to_owned()],
                timestamp_ms,
            },
        )],
    };
    let timestamp_value = |timestamp_ms| {
        let entries = as_value(&encode(&heads_changed(timestamp_ms)));
        match field(&entries, "newHeads") {
            Some(Value::Map(storages)) => match storages.first() {
                Some((_, Value::Map(heads_at))) => heads_at
                    .iter()
                    .find(|(key, _)| key == &Value::Text("timestamp".to_owned()))
                    .map(|(_, value)| value.clone())
                    .expect("timestamp is encoded"),
                other => panic!("unexpected newHeads entry {other:?}"),
            },
            other => panic!("unexpected newHeads {other:?}"),
        }
    };
    // A u32 stays an integer; a Date.now() timestamp becomes a float64, as cbor-x writes it
    // (cbor-x would read a 64-bit integer as a BigInt); beyond 2^53 only an integer is exact.
    assert_eq!(timestamp_value(7), Value::Integer(7u64.into()));
    assert_eq!(
        timestamp_value(u64::from(u32::MAX)),
        Value::Integer(u64::from(u32::MAX).into())
    );
    assert_eq!(
        timestamp_value(1_795_846_348_577),
        Value::Float(1_795_846_348_577.0)
    );
    assert_eq!(
        timestamp_value(1 << 60),
        Value::Integer((1u64 << 60).into())
    );
    let frame = encode(&heads_changed(1_795_846_348_577));
    let float64 = [&[0xfb][..], &1_795_846_348_577f64.to_be_bytes()].concat();
    assert!(frame.windows(9).any(|window| window == float64));
}

#[test]
fn peer_metadata_encoding_omits_an_absent_storage_id() {
    let peer = |storage_id: Option<StorageId>| Message::Peer {
        sender_id: PeerId::new("server"),
        target_id: PeerId::new("phone"),
        selected_protocol_version: "1".to_owned(),
        peer_metadata: Some(PeerMetadata {
            storage_id,
            is_ephemeral: false,
        }),
    };
    let metadata_of = |message| {
        let entries = as_value(&encode(&message));
        field(&entries, "peerMetadata").cloned()
    };
    assert_eq!(
        metadata_of(peer(None)),
        Some(Value::Map(vec![(
            Value::Text("isEphemeral".to_owned()),
            Value::Bool(false)
        )]))
    );
    assert_eq!(
        metadata_of(peer(Some(StorageId::new("disk")))),
        Some(Value::Map(vec![
            (
                Value::Text("storageId".to_owned()),
                Value::Text("disk".to_owned())
            ),
            (Value::Text("isEphemeral".to_owned()), Value::Bool(false)),
        ]))
    );
    let no_metadata = Message::Join {
        sender_id: PeerId::new("phone"),
        supported_protocol_versions: vec!["1".to_owned()],
        peer_metadata: None,
    };
    assert_eq!(
        field(&as_value(&encode(&no_metadata)), "peerMetadata"),
        None
    );
}

#[test]
fn message_accessors_report_type_document_and_sender() {
    let sync = expected_sync();
    assert_eq!(sync.type_name(), "sync");
    assert_eq!(sync.document_id(), Some(document_id(DOCUMENT_ID_TEXT)));
    assert_eq!(sync.sender_id(), Some(&PeerId::new("a")));
    let error = Message::Error {
        sender_id: None,
        target_id: Some(PeerId::new("b")),
        message: "bye".to_owned(),
    };
    assert_eq!(error.type_name(), "error");
    assert_eq!(error.document_id(), None);
    assert_eq!(error.sender_id(), None);
    let unavailable = Message::DocUnavailable {
        sender_id: PeerId::new("a"),
        target_id: PeerId::new("b"),
        document_id: document_id(DOCUMENT_ID_TEXT),
    };
    assert_eq!(unavailable.type_name(), "doc-unavailable");
    assert_eq!(
        as_value(&encode(&unavailable)).first(),
        Some(&("type".to_owned(), Value::Text("doc-unavailable".to_owned())))
    );
}
