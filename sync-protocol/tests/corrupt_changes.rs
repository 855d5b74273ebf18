//! A corrupt change in a sync message is refused with an error, never
//! silently dropped (automerge's `load_incremental` drops bad chunks, which
//! would leave the sender believing it is still syncing). A change whose
//! operations name an actor it does not list (automerge itself panics on
//! one) is refused before automerge sees it.

use automerge::sync::{Message, MessageVersion, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use sha2::{Digest, Sha256};
use ventas_sync_protocol::doc_sync::{ChangeLimits, PeerDocSync, SyncError};

fn carrying(doc: &Automerge, change: Vec<u8>) -> Vec<u8> {
    Message {
        heads: doc.get_heads(),
        need: vec![],
        have: vec![],
        changes: vec![change].into(),
        supported_capabilities: None,
        version: MessageVersion::V1,
    }
    .encode()
}

#[test]
fn a_change_with_any_one_byte_flipped_is_rejected_and_changes_nothing() {
    let mut server = Automerge::new();
    let mut writer = server.fork();
    let mut tx = writer.transaction();
    tx.put(ROOT, "vandalised", "yes").expect("put");
    tx.commit();
    let good = writer
        .get_last_local_change()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    for offset in 0..good.len() {
        let mut change = good.clone();
        change[offset] ^= 0xff;
        let outcome = PeerDocSync::new().receive(&mut server, &carrying(&writer, change));
        assert!(
            matches!(outcome, Err(SyncError::Rejected(_))),
            "byte {offset} flipped: {outcome:?}"
        );
        assert!(server.get_heads().is_empty(), "byte {offset} flipped");
    }
    let applied = PeerDocSync::new()
        .receive(&mut server, &carrying(&writer, good))
        .expect("the intact change applies");
    assert_eq!(applied.changes_added(), 1);
    assert!(server.get(ROOT, "vandalised").expect("readable").is_some());
}

fn read_uleb(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return value;
        }
    }
}

fn write_uleb(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let low = u8::try_from(value & 0x7f).expect("7 bits");
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// (the document before, a change by a second actor writing into an
/// object of the first, with its list of other actors emptied and its
/// checksum made right again).
fn change_naming_an_unlisted_actor() -> (Automerge, Vec<u8>) {
    let mut first = Automerge::new();
    let mut tx = first.transaction();
    let map = tx.put_object(ROOT, "map", ObjType::Map).expect("map");
    tx.commit();
    let mut second = first.fork();
    second.set_actor(ActorId::random());
    let mut tx = second.transaction();
    tx.put(&map, "key", 1_i64).expect("put");
    tx.commit();
    let raw = second
        .get_last_local_change()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    // magic (4), checksum (4), type (1), body length, body: deps, actor,
    // seq, start op, time, message, other actors, columns.
    assert_eq!(raw[8], 1, "an uncompressed change chunk");
    let mut at = 9;
    read_uleb(&raw, &mut at);
    let body_start = at;
    let deps = read_uleb(&raw, &mut at);
    at += 32 * usize::try_from(deps).expect("small");
    let actor_bytes = read_uleb(&raw, &mut at);
    at += usize::try_from(actor_bytes).expect("small");
    for _seq_start_time in 0..3 {
        read_uleb(&raw, &mut at);
    }
    let message_bytes = read_uleb(&raw, &mut at);
    at += usize::try_from(message_bytes).expect("small");
    let others_at = at;
    assert_eq!(read_uleb(&raw, &mut at), 1, "one other actor");
    let other_bytes = read_uleb(&raw, &mut at);
    at += usize::try_from(other_bytes).expect("small");
    let mut body = raw[body_start..others_at].to_vec();
    body.push(0);
    body.extend_from_slice(&raw[at..]);
    let mut hashed = vec![1];
    write_uleb(body.len(), &mut hashed);
    hashed.extend_from_slice(&body);
    let mut chunk = raw[..4].to_vec();
    chunk.extend_from_slice(&Sha256::digest(&hashed)[..4]);
    chunk.extend_from_slice(&hashed);
    (first, chunk)
}

#[test]
fn a_change_naming_an_actor_it_does_not_list_is_refused_before_automerge_panics() {
    let (mut server, chunk) = change_naming_an_unlisted_actor();
    assert!(
        automerge::Change::try_from(chunk.as_slice()).is_ok(),
        "automerge parses it"
    );
    let heads = server.get_heads();
    let mut admitted = false;
    let data = carrying(&server, chunk);
    let outcome = PeerDocSync::with_limits(ChangeLimits::UNLIMITED).receive_admitting(
        &mut server,
        &data,
        |_| {
            admitted = true;
            Ok(())
        },
    );
    assert!(
        matches!(&outcome, Err(SyncError::Rejected(reason)) if reason.contains("does not list")),
        "{outcome:?}"
    );
    assert!(!admitted, "refused before the policy is asked");
    assert_eq!(server.get_heads(), heads);
}

/// A document whose objects nest `levels` deep below the root, in one
/// change, and that change.
fn nested(levels: usize) -> (Automerge, Vec<u8>) {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    let mut object = ROOT;
    for _ in 0..levels {
        object = tx
            .put_object(&object, "deeper", ObjType::Map)
            .expect("nest");
    }
    tx.commit();
    let change = doc
        .get_last_local_change()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    (doc, change)
}

#[test]
fn objects_may_nest_to_the_depth_limit_and_not_one_level_more() {
    let limits = ChangeLimits {
        object_depth_max: 10,
        ..ChangeLimits::UNLIMITED
    };
    let receive = |server: &mut Automerge, data: &[u8]| {
        PeerDocSync::with_limits(limits).receive_admitting(server, data, |_| Ok(()))
    };
    let (writer, at_limit) = nested(10);
    let mut server = Automerge::new();
    receive(&mut server, &carrying(&writer, at_limit)).expect("10 levels apply");
    assert_eq!(server.get_heads(), writer.get_heads());

    let (writer, past) = nested(11);
    let mut server = Automerge::new();
    let outcome = receive(&mut server, &carrying(&writer, past));
    assert!(
        matches!(&outcome, Err(SyncError::Rejected(reason)) if reason.contains("11 deep")),
        "{outcome:?}"
    );
    assert!(server.get_heads().is_empty(), "nothing applied");

    // Levels add up across changes: one more level under a document
    // already at the limit is refused too.
    let (mut writer, at_limit) = nested(10);
    let mut server = Automerge::new();
    receive(&mut server, &carrying(&writer, at_limit)).expect("10 levels apply");
    let mut deepest = ROOT;
    while let Some((_, id)) = writer.get(&deepest, "deeper").expect("read") {
        deepest = id;
    }
    let mut tx = writer.transaction();
    tx.put_object(&deepest, "deeper", ObjType::Map)
        .expect("nest");
    tx.commit();
    let one_more = writer
        .get_last_local_change()
        .expect("change")
        .raw_bytes()
        .to_vec();
    let outcome = receive(&mut server, &carrying(&writer, one_more));
    assert!(
        matches!(&outcome, Err(SyncError::Rejected(reason)) if reason.contains("11 deep")),
        "{outcome:?}"
    );

    // Changes in a message may come in any order: a child listed before
    // its parent still counts from the root.
    let (mut writer, first) = nested(6);
    let mut deepest = ROOT;
    while let Some((_, id)) = writer.get(&deepest, "deeper").expect("read") {
        deepest = id;
    }
    let mut tx = writer.transaction();
    for _ in 0..6 {
        deepest = tx
            .put_object(&deepest, "deeper", ObjType::Map)
            .expect("nest");
    }
    tx.commit();
    let second = writer
        .get_last_local_change()
        .expect("change")
        .raw_bytes()
        .to_vec();
    let reversed = Message {
        heads: writer.get_heads(),
        need: vec![],
        have: vec![],
        changes: vec![second, first].into(),
        supported_capabilities: None,
        version: MessageVersion::V1,
    }
    .encode();
    let mut server = Automerge::new();
    let outcome = receive(&mut server, &reversed);
    assert!(
        matches!(&outcome, Err(SyncError::Rejected(reason)) if reason.contains("deep")),
        "{outcome:?}"
    );
    assert!(server.get_heads().is_empty(), "nothing applied");
}

#[test]
fn the_hub_survives_a_change_naming_an_unlisted_actor_and_serves_on() {
    use ventas_sync_protocol::hub::{Effect, Hub, HubConfig, LoadedDoc};
    use ventas_sync_protocol::ids::{DocumentId, PeerId};
    use ventas_sync_protocol::wire::Message as Wire;

    let (server, chunk) = change_naming_an_unlisted_actor();
    let document_id = DocumentId::from_bytes([5; 16]);
    let mut hub = Hub::new(HubConfig::new(PeerId::new("server")));
    let stored = LoadedDoc {
        snapshot: Some(server.save()),
        ..LoadedDoc::default()
    };
    hub.doc_loaded(document_id, Some(stored), 0).expect("loads");
    let sync = |peer: &str, data: Vec<u8>| Wire::Sync {
        sender_id: PeerId::new(peer),
        target_id: PeerId::new("server"),
        document_id,
        data,
    };
    for (conn, peer) in [(1, "vandal"), (2, "reader")] {
        hub.connect(conn);
        hub.receive(
            conn,
            Wire::Join {
                sender_id: PeerId::new(peer),
                supported_protocol_versions: vec!["1".to_string()],
                peer_metadata: None,
            },
            0,
        );
    }
    let effects = hub.receive(1, sync("vandal", carrying(&server, chunk)), 0);
    assert!(
        matches!(
            &effects[..],
            [
                Effect::Send {
                    conn: 1,
                    message: Wire::Error { .. }
                },
                Effect::Close { conn: 1, .. }
            ]
        ),
        "{effects:?}"
    );
    assert_eq!(
        hub.doc(&document_id).expect("loaded").get_heads(),
        server.get_heads()
    );
    // Another peer is served as before.
    let first = Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .expect("first message");
    let effects = hub.receive(2, sync("reader", first.encode()), 0);
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Send {
                conn: 2,
                message: Wire::Sync { .. }
            }
        )),
        "{effects:?}"
    );
}
