//! Property tests of the wire format: every message survives a round trip, and no input, however
//! broken, makes decoding panic.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use ventas_sync_protocol::ids::{DocumentId, PeerId, StorageId};
use ventas_sync_protocol::wire::{
    decode, encode, HeadsAt, Message, PeerMetadata, MESSAGE_BYTES_MAX_DEFAULT,
};

const MAX: usize = MESSAGE_BYTES_MAX_DEFAULT;

/// Frames captured from automerge-repo 2.5.6, used as seeds for mutation.
const CAPTURED_FRAMES: [&[u8]; 10] = [
    include_bytes!("fixtures/js-frames/01-join.cbor"),
    include_bytes!("fixtures/js-frames/02-request.cbor"),
    include_bytes!("fixtures/js-frames/03-remote-heads-changed.cbor"),
    include_bytes!("fixtures/js-frames/04-sync.cbor"),
    include_bytes!("fixtures/js-frames/06-remote-heads-changed.cbor"),
    include_bytes!("fixtures/js-frames/11-ephemeral.cbor"),
    include_bytes!("fixtures/js-frames/12-remote-subscription-change.cbor"),
    include_bytes!("fixtures/js-frames/server-peer.cbor"),
    include_bytes!("fixtures/js-frames/server-doc-unavailable.cbor"),
    include_bytes!("fixtures/js-frames/server-sync.cbor"),
];

fn peer_id() -> impl Strategy<Value = PeerId> {
    any::<String>().prop_map(PeerId::new)
}

fn storage_id() -> impl Strategy<Value = StorageId> {
    any::<String>().prop_map(StorageId::new)
}

fn document_id() -> impl Strategy<Value = DocumentId> {
    any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn peer_metadata() -> impl Strategy<Value = Option<PeerMetadata>> {
    option::of(
        (option::of(storage_id()), any::<bool>()).prop_map(|(storage_id, is_ephemeral)| {
            PeerMetadata {
                storage_id,
                is_ephemeral,
            }
        }),
    )
}

fn heads_at() -> impl Strategy<Value = HeadsAt> {
    (vec(any::<String>(), 0..4), any::<u64>()).prop_map(|(heads, timestamp_ms)| HeadsAt {
        heads,
        timestamp_ms,
    })
}

/// Distinct storages in any order (a storage named twice on the wire keeps one entry).
fn new_heads() -> impl Strategy<Value = Vec<(StorageId, HeadsAt)>> {
    btree_map(any::<String>(), heads_at(), 0..4)
        .prop_map(|entries| {
            entries
                .into_iter()
                .map(|(storage, heads_at)| (StorageId::new(storage), heads_at))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (peer_id(), vec(any::<String>(), 0..4), peer_metadata()).prop_map(
            |(sender_id, supported_protocol_versions, peer_metadata)| Message::Join {
                sender_id,
                supported_protocol_versions,
                peer_metadata,
            }
        ),
        (peer_id(), peer_id(), any::<String>(), peer_metadata()).prop_map(
            |(sender_id, target_id, selected_protocol_version, peer_metadata)| Message::Peer {
                sender_id,
                target_id,
                selected_protocol_version,
                peer_metadata,
            }
        ),
        peer_id().prop_map(|sender_id| Message::Leave { sender_id }),
        (
            option::of(peer_id()),
            option::of(peer_id()),
            any::<String>()
        )
            .prop_map(|(sender_id, target_id, message)| Message::Error {
                sender_id,
                target_id,
                message,
            }),
        (peer_id(), peer_id(), document_id(), data()).prop_map(
            |(sender_id, target_id, document_id, data)| Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        ),
        (peer_id(), peer_id(), document_id(), data()).prop_map(
            |(sender_id, target_id, document_id, data)| Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        ),
        (peer_id(), peer_id(), document_id()).prop_map(|(sender_id, target_id, document_id)| {
            Message::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            }
        }),
        (
            peer_id(),
            peer_id(),
            any::<u64>(),
            any::<String>(),
            document_id(),
            data()
        )
            .prop_map(
                |(sender_id, target_id, count, session_id, document_id, data)| {
                    Message::Ephemeral {
                        sender_id,
                        target_id,
                        count,
                        session_id,
                        document_id,
                        data,
                    }
                }
            ),
        (
            peer_id(),
            peer_id(),
            vec(storage_id(), 0..4),
            vec(storage_id(), 0..4)
        )
            .prop_map(|(sender_id, target_id, add, remove)| {
                Message::RemoteSubscriptionChange {
                    sender_id,
                    target_id,
                    add,
                    remove,
                }
            }),
        (peer_id(), peer_id(), document_id(), new_heads()).prop_map(
            |(sender_id, target_id, document_id, new_heads)| Message::RemoteHeadsChanged {
                sender_id,
                target_id,
                document_id,
                new_heads,
            }
        ),
    ]
}

/// One edit to a frame; positions are taken modulo the frame's length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBits { position: usize, mask: u8 },
    Overwrite { position: usize, byte: u8 },
    Insert { position: usize, byte: u8 },
    Remove { position: usize },
    Truncate { position: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX)
            .prop_map(|(position, mask)| Mutation::FlipBits { position, mask }),
        (any::<usize>(), any::<u8>())
            .prop_map(|(position, byte)| Mutation::Overwrite { position, byte }),
        (any::<usize>(), any::<u8>())
            .prop_map(|(position, byte)| Mutation::Insert { position, byte }),
        any::<usize>().prop_map(|position| Mutation::Remove { position }),
        any::<usize>().prop_map(|position| Mutation::Truncate { position }),
    ]
}

fn mutate(frame: &mut Vec<u8>, mutation: &Mutation) {
    let len = frame.len();
    if len == 0 {
        if let Mutation::Insert { byte, .. } = mutation {
            frame.push(*byte);
        }
        return;
    }
    match *mutation {
        Mutation::FlipBits { position, mask } => frame[position % len] ^= mask,
        Mutation::Overwrite { position, byte } => frame[position % len] = byte,
        Mutation::Insert { position, byte } => frame.insert(position % (len + 1), byte),
        Mutation::Remove { position } => {
            frame.remove(position % len);
        }
        Mutation::Truncate { position } => frame.truncate(position % len),
    }
}

/// A frame to mutate: a fresh encoding or one captured from automerge-repo.
fn seed_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        message().prop_map(|message| encode(&message)),
        proptest::sample::select(CAPTURED_FRAMES.to_vec()).prop_map(<[u8]>::to_vec),
    ]
}

/// Whatever decodes must re-encode to something that decodes to the same message.
fn assert_decoding_is_stable(frame: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = decode(frame, MAX) {
        prop_assert_eq!(decode(&encode(&message), MAX), Ok(message));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(message in message()) {
        prop_assert_eq!(decode(&encode(&message), MAX), Ok(message));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        assert_decoding_is_stable(&bytes)?;
    }

    /// Arbitrary entries behind a map header get past the first byte far more often.
    #[test]
    fn decoding_arbitrary_map_entries_never_panics(
        header in prop_oneof![Just(0xbfu8), 0xa0u8..=0xb7],
        bytes in vec(any::<u8>(), 0..512),
    ) {
        let frame = [&[header][..], &bytes].concat();
        assert_decoding_is_stable(&frame)?;
    }

    #[test]
    fn decoding_mutated_frames_never_panics(
        mut frame in seed_frame(),
        mutations in vec(mutation(), 1..8),
    ) {
        for mutation in &mutations {
            mutate(&mut frame, mutation);
        }
        assert_decoding_is_stable(&frame)?;
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_rejected(message in message()) {
        let frame = encode(&message);
        for len in 0..frame.len() {
            prop_assert!(decode(&frame[..len], MAX).is_err());
        }
    }
}
