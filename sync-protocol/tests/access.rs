//! Per-connection access policies on the bare hub: hidden documents look
//! missing, read-only peers are served but never write, and a document can
//! become visible once its content arrives; a policy that binds actors to
//! connections refuses changes written under another connection's actor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ReadDoc, ROOT};
use ventas_sync_protocol::hub::{Access, AccessPolicy, Denial, Effect, Hub, HubConfig, NewChanges};
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

const NOW_MS: u64 = 1_000;
/// Sync rounds one peer may take to converge with the hub.
const ROUNDS_MAX: usize = 20;
const DOCUMENT: DocumentId = DocumentId::from_bytes([3; 16]);

/// The same answer for every document.
#[derive(Debug)]
struct Fixed(Access);

impl AccessPolicy for Fixed {
    fn access(&mut self, _document_id: &DocumentId, _doc: &Automerge) -> Access {
        self.0
    }
}

/// Hidden while the document is empty, readable once it has content.
#[derive(Debug)]
struct ReadableOnceWritten;

impl AccessPolicy for ReadableOnceWritten {
    fn access(&mut self, _document_id: &DocumentId, doc: &Automerge) -> Access {
        if doc.get_heads().is_empty() {
            Access::Hidden
        } else {
            Access::Read
        }
    }
}

/// A peer with its own replica of [`DOCUMENT`].
struct Peer {
    conn: u64,
    name: PeerId,
    doc: Automerge,
    state: State,
}

impl Peer {
    fn join(hub: &mut Hub, conn: u64, name: &str, access: Option<Access>) -> Self {
        match access {
            Some(access) => hub.connect_with_access(conn, Box::new(Fixed(access))),
            None => hub.connect(conn),
        }
        Self::joined(hub, conn, name)
    }

    fn joined(hub: &mut Hub, conn: u64, name: &str) -> Self {
        let effects = hub.receive(
            conn,
            Message::Join {
                sender_id: PeerId::new(name),
                supported_protocol_versions: vec!["1".to_string()],
                peer_metadata: None,
            },
            NOW_MS,
        );
        assert!(matches!(
            &effects[..],
            [Effect::Send {
                message: Message::Peer { .. },
                ..
            }]
        ));
        Self {
            conn,
            name: PeerId::new(name),
            doc: Automerge::new(),
            state: State::new(),
        }
    }

    fn put(&mut self, key: &str) {
        let mut tx = self.doc.transaction();
        tx.put(ROOT, key, true).expect("put");
        tx.commit();
    }

    fn request(&self) -> Message {
        Message::Request {
            sender_id: self.name.clone(),
            target_id: PeerId::new("server"),
            document_id: DOCUMENT,
            data: Automerge::new()
                .generate_sync_message(&mut State::new())
                .expect("first message")
                .encode(),
        }
    }

    /// Syncs with the hub the way a real peer does: a message, then one
    /// more only in answer to a sync message from the hub, until either
    /// side falls silent. Carries out flushes; returns every effect.
    fn sync(&mut self, hub: &mut Hub) -> Vec<Effect> {
        let mut all = Vec::new();
        for _ in 0..ROUNDS_MAX {
            let Some(message) = self.doc.generate_sync_message(&mut self.state) else {
                return all;
            };
            let message = Message::Sync {
                sender_id: self.name.clone(),
                target_id: PeerId::new("server"),
                document_id: DOCUMENT,
                data: message.encode(),
            };
            let mut round = Vec::new();
            send(hub, self.conn, message, &mut round);
            let answered = sent_to(&round, self.conn)
                .iter()
                .any(|m| matches!(m, Message::Sync { .. }));
            self.apply_replies(&round);
            all.extend(round);
            if !answered {
                return all;
            }
        }
        panic!("no convergence in {ROUNDS_MAX} rounds");
    }

    fn apply_replies(&mut self, effects: &[Effect]) {
        for effect in effects {
            if let Effect::Send {
                conn,
                message: Message::Sync { data, .. },
            } = effect
            {
                if *conn == self.conn {
                    let reply = automerge::sync::Message::decode(data).expect("decodes");
                    // Replies already applied are no-ops for automerge.
                    let _ = self.doc.receive_sync_message(&mut self.state, reply);
                }
            }
        }
    }
}

/// Hands the hub a message from `conn` and carries out the flushes it asks
/// for; every effect is appended to `all`.
fn send(hub: &mut Hub, conn: u64, message: Message, all: &mut Vec<Effect>) {
    let mut pending = hub.receive(conn, message, NOW_MS);
    while !pending.is_empty() {
        let mut next = Vec::new();
        for effect in pending {
            if let Effect::Flush { epoch } = effect {
                next.extend(hub.flushed(epoch, NOW_MS));
            }
            all.push(effect);
        }
        pending = next;
    }
}

fn hub_with_document() -> Hub {
    let mut hub = Hub::new(HubConfig::new(PeerId::new("server")));
    hub.doc_loaded(DOCUMENT, None, NOW_MS).expect("loads");
    hub
}

fn sent_to(effects: &[Effect], to: u64) -> Vec<&Message> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { conn, message } if *conn == to => Some(message),
            _ => None,
        })
        .collect()
}

fn server_has(hub: &Hub, key: &str) -> bool {
    hub.doc(&DOCUMENT)
        .and_then(|doc| doc.get(ROOT, key).ok().flatten())
        .is_some()
}

/// Checks that `effects` refused a write of `key` from `conn` without a
/// close or a persist, with exactly one error to it, and returns that
/// error's text.
fn refused_quietly(hub: &Hub, effects: &[Effect], conn: u64, key: &str) -> String {
    assert!(!server_has(hub, key));
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::Persist { .. } | Effect::Close { .. })));
    let errors: Vec<String> = sent_to(effects, conn)
        .into_iter()
        .filter_map(|m| match m {
            Message::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{effects:?}");
    errors[0].clone()
}

#[test]
fn a_hidden_document_looks_missing_and_nothing_of_it_reaches_the_peer() {
    let mut hub = hub_with_document();
    let mut writer = Peer::join(&mut hub, 1, "writer", None);
    writer.put("created");
    writer.sync(&mut hub);
    assert!(server_has(&hub, "created"));

    let mut outsider = Peer::join(&mut hub, 2, "outsider", Some(Access::Hidden));
    let mut effects = Vec::new();
    send(&mut hub, 2, outsider.request(), &mut effects);
    assert!(
        matches!(&sent_to(&effects, 2)[..], [Message::DocUnavailable { .. }]),
        "{effects:?}"
    );

    // Its own changes are not applied, and it hears nothing of later ones.
    outsider.put("forged");
    let effects = outsider.sync(&mut hub);
    assert!(!server_has(&hub, "forged"));
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::Persist { .. } | Effect::Close { .. })));
    assert!(sent_to(&effects, 2)
        .iter()
        .all(|m| matches!(m, Message::DocUnavailable { .. })));
    writer.put("later");
    let effects = writer.sync(&mut hub);
    assert!(sent_to(&effects, 2).is_empty(), "{effects:?}");
    let stats = hub.conn_stats(2).expect("connected");
    assert!(stats.documents.is_empty(), "not subscribed: {stats:?}");
}

#[test]
fn a_reader_is_served_but_its_changes_are_refused_and_it_stays_connected() {
    let mut hub = hub_with_document();
    let mut writer = Peer::join(&mut hub, 1, "writer", None);
    writer.put("created");
    writer.sync(&mut hub);

    let mut reader = Peer::join(&mut hub, 2, "reader", Some(Access::Read));
    reader.sync(&mut hub);
    assert!(reader.doc.get(ROOT, "created").expect("read").is_some());

    reader.put("forged");
    let effects = reader.sync(&mut hub);
    let error = refused_quietly(&hub, &effects, 2, "forged");
    assert!(error.contains("may only read"), "{error}");
    let stats = hub.conn_stats(2).expect("still connected");
    assert_eq!(stats.writes_denied, 1);
    assert_eq!(stats.denials.len(), 1);
    assert_eq!(stats.changes_in, 0);

    // Still subscribed: the writer's next change reaches the reader (after
    // the reader's answer at the latest, when automerge's filter left it
    // out; see the next test).
    writer.put("later");
    let effects = writer.sync(&mut hub);
    reader.apply_replies(&effects);
    reader.sync(&mut hub);
    assert!(reader.doc.get(ROOT, "later").expect("read").is_some());
    // With nothing new, the hub falls silent instead of arguing forever
    // about the heads they will never share.
    let effects = reader.sync(&mut hub);
    assert!(
        !sent_to(&effects, 2)
            .iter()
            .any(|m| matches!(m, Message::Sync { .. })),
        "{effects:?}"
    );
    assert_eq!(hub.conn_stats(2).expect("connected").writes_denied, 1);
}

#[test]
fn a_document_becomes_visible_once_its_content_arrives() {
    let mut hub = hub_with_document();
    hub.connect_with_access(2, Box::new(ReadableOnceWritten));
    let mut early = Peer::joined(&mut hub, 2, "early");
    let mut effects = Vec::new();
    send(&mut hub, 2, early.request(), &mut effects);
    assert!(matches!(
        &sent_to(&effects, 2)[..],
        [Message::DocUnavailable { .. }]
    ));

    let mut creator = Peer::join(&mut hub, 1, "creator", None);
    creator.put("created");
    let effects = creator.sync(&mut hub);
    assert!(
        sent_to(&effects, 2).is_empty(),
        "a hidden requester is not subscribed"
    );

    early.sync(&mut hub);
    assert!(early.doc.get(ROOT, "created").expect("read").is_some());
}

#[test]
fn ephemeral_messages_about_a_hidden_document_are_dropped() {
    let mut hub = hub_with_document();
    let mut writer = Peer::join(&mut hub, 1, "writer", None);
    writer.put("created");
    writer.sync(&mut hub);
    Peer::join(&mut hub, 2, "outsider", Some(Access::Hidden));
    let effects = hub.receive(
        2,
        Message::Ephemeral {
            sender_id: PeerId::new("outsider"),
            target_id: PeerId::new("server"),
            count: 1,
            session_id: "s".to_string(),
            document_id: DOCUMENT,
            data: vec![1],
        },
        NOW_MS,
    );
    assert!(effects.is_empty(), "{effects:?}");
}

/// Every actor belongs to the first connection whose new changes it wrote;
/// records each call, so a test sees which actors were asked about.
#[derive(Debug)]
struct ActorsBoundToConnections {
    conn: u64,
    owners: Arc<Mutex<HashMap<ActorId, u64>>>,
    asked: Arc<Mutex<Vec<Vec<ActorId>>>>,
}

impl AccessPolicy for ActorsBoundToConnections {
    fn access(&mut self, _document_id: &DocumentId, _doc: &Automerge) -> Access {
        Access::ReadWrite
    }

    fn admit_changes(
        &mut self,
        _document_id: &DocumentId,
        changes: &NewChanges<'_>,
    ) -> Result<(), Denial> {
        let actors = changes.actors;
        self.asked.lock().expect("lock").push(actors.to_vec());
        let mut owners = self.owners.lock().expect("lock");
        if let Some(actor) = actors
            .iter()
            .find(|actor| owners.get(*actor).is_some_and(|owner| *owner != self.conn))
        {
            return Err(Denial {
                reason: format!("actor {actor} belongs to another connection"),
            });
        }
        for actor in actors {
            owners.insert(actor.clone(), self.conn);
        }
        Ok(())
    }
}

#[test]
fn changes_under_another_connections_actor_are_refused_and_the_peer_stays_connected() {
    let mut hub = hub_with_document();
    let owners = Arc::new(Mutex::new(HashMap::new()));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut bound = |conn: u64, name: &str| {
        hub.connect_with_access(
            conn,
            Box::new(ActorsBoundToConnections {
                conn,
                owners: Arc::clone(&owners),
                asked: Arc::clone(&asked),
            }),
        );
        Peer::joined(&mut hub, conn, name)
    };
    let mut writer = bound(1, "writer");
    let mut forger = bound(2, "forger");
    let mut relay = bound(3, "relay");
    writer.put("created");
    writer.sync(&mut hub);
    let writers_actor = writer.doc.get_actor().clone();
    assert_eq!(owners.lock().expect("lock").get(&writers_actor), Some(&1));

    // The forger fetches the document, then writes as the writer.
    forger.sync(&mut hub);
    assert!(forger.doc.get(ROOT, "created").expect("read").is_some());
    let forgers_actor = forger.doc.get_actor().clone();
    forger.doc.set_actor(writers_actor.clone());
    forger.put("forged");
    let heads_before = hub.doc(&DOCUMENT).expect("loaded").get_heads();
    let effects = forger.sync(&mut hub);
    assert_eq!(
        hub.doc(&DOCUMENT).expect("loaded").get_heads(),
        heads_before,
        "the document is unchanged"
    );
    let error = refused_quietly(&hub, &effects, 2, "forged");
    assert!(error.contains(&format!("actor {writers_actor}")), "{error}");
    assert!(sent_to(&effects, 1).is_empty(), "the writer hears nothing");
    let stats = hub.conn_stats(2).expect("still connected");
    assert_eq!((stats.writes_denied, stats.changes_in), (1, 0));
    assert!(stats.denials[0].contains("another connection"), "{stats:?}");

    // The writer goes on writing, and the forger, still subscribed, hears
    // of it (its own replica cannot take the change: it made another one
    // with the same actor and sequence number, its own problem).
    writer.put("later");
    let effects = writer.sync(&mut hub);
    assert!(server_has(&hub, "later"));
    assert!(
        sent_to(&effects, 2)
            .iter()
            .any(|m| matches!(m, Message::Sync { .. })),
        "{effects:?}"
    );

    // Relaying a change the server already has is not writing: the policy
    // is not even asked. The relay holds the writer's history and sends
    // the writer's first change again.
    let asked_before = asked.lock().expect("lock").len();
    relay.doc = writer.doc.fork();
    relay.doc.set_actor(forgers_actor);
    let mut first = relay
        .doc
        .generate_sync_message(&mut relay.state)
        .expect("first message");
    let mut already_there = writer.doc.get_changes(&[]);
    first.changes = vec![already_there.remove(0).bytes().to_vec()].into();
    let mut effects = Vec::new();
    send(&mut hub, 3, sync_message(&relay, first), &mut effects);
    assert!(
        !sent_to(&effects, 3)
            .iter()
            .any(|m| matches!(m, Message::Error { .. })),
        "{effects:?}"
    );
    assert_eq!(asked.lock().expect("lock").len(), asked_before);
}

fn sync_message(peer: &Peer, message: automerge::sync::Message) -> Message {
    Message::Sync {
        sender_id: peer.name.clone(),
        target_id: PeerId::new("server"),
        document_id: DOCUMENT,
        data: message.encode(),
    }
}

/// After a refused write the reader and the hub never share heads, and the
/// hub stays silent when it has told the reader everything. A change the
/// hub's message left out (automerge's bloom filter has false positives, so
/// a few runs in a hundred leave one out) must still reach the
/// reader when the reader asks for it: silence is only for a reader that
/// needs nothing.
#[test]
fn a_reader_after_a_refused_write_gets_every_later_change_in_any_run() {
    for run in 0..250 {
        let mut hub = hub_with_document();
        let mut writer = Peer::join(&mut hub, 1, "writer", None);
        writer.put("created");
        writer.sync(&mut hub);
        let mut reader = Peer::join(&mut hub, 2, "reader", Some(Access::Read));
        reader.sync(&mut hub);
        reader.put("forged");
        reader.sync(&mut hub);

        writer.put("later");
        let effects = writer.sync(&mut hub);
        reader.apply_replies(&effects);
        reader.sync(&mut hub);
        assert!(
            reader.doc.get(ROOT, "later").expect("read").is_some(),
            "run {run}: the reader never got the writer's change"
        );
    }
}

#[test]
fn the_servers_own_changes_are_written_as_the_configured_server_actor() {
    let mut hub = hub_with_document();
    let mut writer = Peer::join(&mut hub, 1, "writer", None);
    writer.put("created");
    writer.sync(&mut hub);
    let (_, effects) = hub
        .change_local(DOCUMENT, NOW_MS, |doc| {
            let mut tx = doc.transaction();
            tx.put(ROOT, "alert", true).expect("put");
            tx.commit();
        })
        .expect("durable, so the server may change it");
    assert!(effects.iter().any(|e| matches!(e, Effect::Persist { .. })));
    let doc = hub.doc(&DOCUMENT).expect("loaded");
    let heads = doc.get_heads();
    let change = doc.get_change_by_hash(&heads[0]).expect("the alert change");
    assert_eq!(change.actor_id(), &hub.config().server_actor);
    assert_eq!(
        hub.config().server_actor,
        ActorId::from(b"server".to_vec()),
        "derived from the server's peer id, so stable across restarts"
    );
}
