//! Hostile input over real sockets: corrupt Automerge changes, gigantic
//! strings, objects nested past `object_depth_max`, and a sync message for a document the
//! peer never asked for. In each case the attacker alone is answered (with
//! an `error` and a close when its input is refused), the stored document
//! stays whole (read by a fresh client, then again after a restart), and a
//! device that was connected all along keeps syncing with a third.

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ventas::client::{Client, DocHandle};
use ventas::config::ServerConfig;
use ventas::server::RunningServer;
use ventas_sync_protocol::hub::OBJECT_DEPTH_MAX_DEFAULT;
use ventas_sync_protocol::ids::PeerId;
use ventas_sync_protocol::wire::{self, Message, MESSAGE_BYTES_MAX_DEFAULT};

use crate::harness::*;

/// A server on a fixed loopback port (so it can restart on the same URL),
/// a phone that created a document, and a tablet that has it open.
struct Scene {
    dir: tempfile::TempDir,
    port: ReservedPort,
    config: ServerConfig,
    server: RunningServer,
    phone: Client,
    tablet: Client,
    on_phone: DocHandle,
    on_tablet: DocHandle,
}

impl Scene {
    async fn start() -> Self {
        init_logs();
        let dir = tempfile::tempdir().expect("dir");
        let config = ServerConfig::for_test(dir.path().join("server"));
        let port = ReservedPort::new();
        let server = port.start(config.clone()).await;
        let url = format!("ws://{}", server.addr);
        let phone = device(&url, dir.path(), "phone");
        let tablet = device(&url, dir.path(), "tablet");
        let on_phone = phone.create().expect("create");
        put(&on_phone, "before", "1");
        within("phone synced", on_phone.synced())
            .await
            .expect("synced");
        let on_tablet = tablet.open_url(&on_phone.url()).expect("open");
        wait_for_keys(&on_tablet, &["before".to_string()]).await;
        Self {
            dir,
            port,
            config,
            server,
            phone,
            tablet,
            on_phone,
            on_tablet,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.server.addr)
    }

    /// An attacker that joined and fetched the document: its replica and
    /// sync state know everything the server has.
    async fn attacker(&self, name: &str) -> (RawPeer, PeerId, Automerge, State) {
        let (mut peer, server_id) = RawPeer::joined(&self.url(), name).await;
        let document_id = self.on_phone.document_id();
        let mut doc = Automerge::new();
        let mut state = State::new();
        let first = doc
            .generate_sync_message(&mut state)
            .expect("first message")
            .encode();
        peer.send(&Message::Request {
            sender_id: peer.peer_id.clone(),
            target_id: server_id.clone(),
            document_id,
            data: first,
        })
        .await;
        // Sync until the replica holds what the phone wrote.
        while doc.get(ROOT, "before").expect("readable").is_none() {
            match peer.recv().await {
                Some(Message::Sync { data, .. }) => {
                    let message = automerge::sync::Message::decode(&data).expect("decodes");
                    doc.receive_sync_message(&mut state, message)
                        .expect("server's message applies");
                    if let Some(reply) = doc.generate_sync_message(&mut state) {
                        peer.send(&self.sync(&peer, &server_id, reply.encode()))
                            .await;
                    }
                }
                other => panic!("expected sync, got {other:?}"),
            }
        }
        (peer, server_id, doc, state)
    }

    fn sync(&self, peer: &RawPeer, server_id: &PeerId, data: Vec<u8>) -> Message {
        Message::Sync {
            sender_id: peer.peer_id.clone(),
            target_id: server_id.clone(),
            document_id: self.on_phone.document_id(),
            data,
        }
    }

    /// The phone changes the document during the attack; the tablet sees
    /// it. Then a fresh device reads the document, the server restarts, and
    /// another fresh device reads it again: both see exactly `expected`.
    async fn check_undisturbed(self, expected: &[&str]) {
        put(&self.on_phone, "during", "2");
        wait_for_keys(&self.on_tablet, &["during".to_string()]).await;
        within("phone synced", self.on_phone.synced())
            .await
            .expect("synced");
        assert!(self.phone.is_online() && self.tablet.is_online());

        let mut expected: Vec<String> = expected.iter().map(|k| k.to_string()).collect();
        expected.extend(["before".to_string(), "during".to_string()]);
        expected.sort();
        let url = self.on_phone.url();
        let fresh = device(&self.url(), self.dir.path(), "fresh");
        let on_fresh = fresh.open_url(&url).expect("open");
        wait_for_keys(&on_fresh, &expected).await;
        assert_eq!(root_keys(&on_fresh), expected);
        fresh.close().await.expect("close");

        self.phone.close().await.expect("close");
        self.tablet.close().await.expect("close");
        within("shutdown", self.server.shutdown())
            .await
            .expect("clean shutdown");
        let server = self.port.start(self.config.clone()).await;
        let later = device(&format!("ws://{}", server.addr), self.dir.path(), "later");
        let on_later = later.open_url(&url).expect("open");
        wait_for_keys(&on_later, &expected).await;
        assert_eq!(root_keys(&on_later), expected);
        later.close().await.expect("close");
        server.shutdown().await.expect("shutdown");
    }
}

/// A sync message carrying `doc`'s last local change as its one change
/// chunk (after `mangle`), with `doc`'s heads: what a peer sends once it
/// knows the server lacks that change.
fn carrying_last_change(doc: &Automerge, mangle: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut change = doc
        .get_last_local_change()
        .expect("a local change")
        .raw_bytes()
        .to_vec();
    mangle(&mut change);
    automerge::sync::Message {
        heads: doc.get_heads(),
        need: vec![],
        have: vec![],
        changes: vec![change].into(),
        supported_capabilities: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

/// Characters that do not compress, so the change really is this large on
/// the wire.
fn incompressible_text(bytes: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + u8::try_from(state % 26).expect("below 26"))
        })
        .collect()
}

#[tokio::test]
async fn a_corrupted_change_gets_an_error_and_a_close_and_harms_nothing() {
    let scene = Scene::start().await;
    let (mut vandal, server_id, mut doc, _state) = scene.attacker("vandal").await;
    let mut tx = doc.transaction();
    tx.put(ROOT, "vandalised", "yes").expect("put");
    tx.commit();
    // Flip bytes in the body of the change chunk (past its header): the
    // checksum no longer matches.
    let data = carrying_last_change(&doc, |change| {
        let len = change.len();
        for offset in [len / 2, len - 2] {
            change[offset] ^= 0xff;
        }
    });
    vandal.send(&scene.sync(&vandal, &server_id, data)).await;
    let error = vandal.expect_error_and_close().await;
    assert!(error.contains("document"), "error was: {error}");
    scene.check_undisturbed(&[]).await;
}

#[tokio::test]
async fn a_sync_message_with_bogus_hashes_does_not_disturb_anyone() {
    let scene = Scene::start().await;
    let (mut vandal, server_id, _doc, _state) = scene.attacker("hasher").await;
    // A well-formed message claiming heads and needs nobody has.
    let bogus = automerge::ChangeHash([0xab; 32]);
    let message = automerge::sync::Message {
        heads: vec![bogus],
        need: vec![bogus],
        have: vec![],
        changes: automerge::sync::ChunkList::empty(),
        supported_capabilities: None,
        version: automerge::sync::MessageVersion::V1,
    };
    vandal
        .send(&scene.sync(&vandal, &server_id, message.encode()))
        .await;
    // Whatever the server answers this peer, it must not be a close
    // without an error; the others go on. The barrier's answer comes after
    // the server's answer to the bogus message.
    let barrier = vandal.barrier(&server_id).await;
    if barrier.closed {
        assert!(
            barrier
                .before
                .iter()
                .any(|message| matches!(message, Message::Error { .. })),
            "closed without an error: {:?}",
            barrier.before
        );
    }
    scene.check_undisturbed(&[]).await;
}

#[tokio::test]
async fn a_four_mebibyte_string_is_a_legitimate_write_and_nine_is_refused() {
    let scene = Scene::start().await;
    let (mut writer, server_id, mut doc, _state) = scene.attacker("big-writer").await;
    let text = incompressible_text(4 * 1024 * 1024);
    let mut tx = doc.transaction();
    tx.put(ROOT, "big", text.as_str()).expect("put");
    tx.commit();
    let data = carrying_last_change(&doc, |_| {});
    assert!(data.len() > 4 * 1024 * 1024 && data.len() < MESSAGE_BYTES_MAX_DEFAULT);
    writer.send(&scene.sync(&writer, &server_id, data)).await;
    // Acknowledged: the server's reply tells the writer it has the change.
    acknowledged(&mut writer, &doc).await;
    wait_for_keys(&scene.on_tablet, &["big".to_string()]).await;
    let on_tablet = scene
        .on_tablet
        .read(|doc| {
            doc.get(ROOT, "big")
                .expect("readable")
                .and_then(|(value, _)| value.to_str().map(str::to_string))
        })
        .expect("readable")
        .expect("big is there");
    assert!(on_tablet == text, "the big string arrived intact");

    // Past the frame limit: refused at the socket, connection closed,
    // whatever the frame holds (so no 9 MiB change need be built).
    let (mut over, server_id) = RawPeer::joined(&scene.url(), "too-big").await;
    let data = incompressible_text(9 * 1024 * 1024).into_bytes();
    let frame = wire::encode(&scene.sync(&over, &server_id, data));
    assert!(frame.len() > MESSAGE_BYTES_MAX_DEFAULT);
    // The server may close while the frame is still being written.
    let _ = over.socket.send(WsMessage::Binary(frame.into())).await;
    // Up to twice the limit the frame is read whole, so the peer is told
    // why: close code 1009 with a reason (issue 10).
    let close = over.close_frame().await;
    assert!(
        close
            .as_ref()
            .is_some_and(|(code, reason)| *code == 1009 && reason.contains("over the limit")),
        "over the limit must close with 1009: {close:?}"
    );
    scene.check_undisturbed(&["big"]).await;
}

/// Waits for the server's sync reply whose heads are `doc`'s: it has
/// every change. Anything but sync messages before it fails the test.
async fn acknowledged(writer: &mut RawPeer, doc: &Automerge) {
    let head = doc.get_heads();
    loop {
        match writer.recv().await {
            Some(Message::Sync { data, .. }) => {
                let message = automerge::sync::Message::decode(&data).expect("decodes");
                if message.heads == head {
                    break;
                }
            }
            other => panic!("expected sync, got {other:?}"),
        }
    }
}

/// A change nesting `levels` maps under the root, the deepest holding
/// `bottom`.
fn nest(doc: &mut Automerge, levels: usize) {
    let mut tx = doc.transaction();
    let mut object = ROOT;
    for _ in 0..levels {
        object = tx
            .put_object(&object, "deeper", ObjType::Map)
            .expect("put_object");
    }
    tx.put(&object, "bottom", "reached").expect("put");
    tx.commit();
}

/// A sync message carrying one change by a fresh actor that nests `levels`
/// maps under the root, built without a document.
fn carrying_nested_change(levels: usize) -> Vec<u8> {
    use automerge::legacy::{Key, ObjectId, Op, OpId, OpType};
    let actor = automerge::ActorId::random();
    let mut parent = ObjectId::Root;
    let mut operations = Vec::with_capacity(levels);
    for counter in 1..=u64::try_from(levels).expect("levels fit u64") {
        operations.push(Op {
            action: OpType::Make(ObjType::Map),
            obj: parent,
            key: Key::Map("deeper".into()),
            pred: Vec::new().into(),
            insert: false,
        });
        parent = ObjectId::Id(OpId(counter, actor.clone()));
    }
    let change = automerge::Change::from(automerge::ExpandedChange {
        operations,
        actor_id: actor,
        hash: None,
        seq: 1,
        start_op: std::num::NonZeroU64::MIN,
        time: 0,
        message: None,
        deps: Vec::new(),
        extra_bytes: Vec::new(),
    });
    automerge::sync::Message {
        heads: vec![change.hash()],
        need: vec![],
        have: vec![],
        changes: vec![change.raw_bytes().to_vec()].into(),
        supported_capabilities: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

#[tokio::test]
async fn objects_nest_up_to_the_depth_limit_and_ten_thousand_levels_are_refused() {
    let scene = Scene::start().await;
    assert_eq!(scene.config.object_depth_max, OBJECT_DEPTH_MAX_DEFAULT);

    // At the limit: stored, acknowledged and served.
    let (mut writer, server_id, mut doc, _state) = scene.attacker("nester").await;
    nest(&mut doc, OBJECT_DEPTH_MAX_DEFAULT);
    let data = carrying_last_change(&doc, |_| {});
    writer.send(&scene.sync(&writer, &server_id, data)).await;
    acknowledged(&mut writer, &doc).await;
    wait_for_keys(&scene.on_tablet, &["deeper".to_string()]).await;

    // One level past it, and absurdly past it: an error and a close for
    // that peer, nothing applied. The nesting is one change that depends
    // on nothing (so it would apply to any document), written op by op:
    // automerge's own transaction takes minutes over 10,000 levels.
    for levels in [OBJECT_DEPTH_MAX_DEFAULT + 1, 10_000] {
        let built = std::time::Instant::now();
        let data = carrying_nested_change(levels);
        eprintln!("{levels} levels built in {:?}", built.elapsed());
        let (mut nester, server_id) = RawPeer::joined(&scene.url(), "deep-nester").await;
        let sent = std::time::Instant::now();
        nester.send(&scene.sync(&nester, &server_id, data)).await;
        let error = nester.expect_error_and_close().await;
        eprintln!("{levels} levels refused in {:?}", sent.elapsed());
        assert!(
            error.contains(&format!("past the limit of {OBJECT_DEPTH_MAX_DEFAULT}")),
            "error was: {error}"
        );
    }
    scene.check_undisturbed(&["deeper"]).await;
}

#[tokio::test]
async fn a_sync_for_a_document_never_requested_is_a_write_like_any_other() {
    // automerge-repo peers share a document by sending `sync` for it
    // unasked, so the server cannot tell a new document from one it has.
    // Without credentials every peer may write every document; with them,
    // the access policy decides before anything applies (see
    // tests/it/authorization.rs). Either way history only grows: a
    // concurrent write merges, nothing is lost.
    let scene = Scene::start().await;
    let (mut stranger, server_id) = RawPeer::joined(&scene.url(), "stranger").await;
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "stranger", "was here").expect("put");
    tx.put(ROOT, "before", "overwritten?").expect("put");
    tx.commit();
    let data = carrying_last_change(&doc, |_| {});
    stranger
        .send(&scene.sync(&stranger, &server_id, data))
        .await;
    wait_for_keys(&scene.on_tablet, &["stranger".to_string()]).await;
    // The phone's own value of a key both wrote is still in the history.
    let conflicts = scene
        .on_tablet
        .read(|doc| doc.get_all(ROOT, "before").expect("readable").len())
        .expect("readable");
    assert_eq!(conflicts, 2, "both concurrent values are kept");
    scene.check_undisturbed(&["stranger"]).await;
}
