//! Hub rules that a single peer can break, checked on the bare state machine.

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use ventas_sync_protocol::hub::{AllowAll, ConnLimits, Effect, Hub, HubConfig, NoRoom, QuotaGroup};
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

const NOW_MS: u64 = 1_000;

fn hub() -> Hub {
    Hub::new(HubConfig::new(PeerId::new("server")))
}

fn join(hub: &mut Hub, conn: u64, name: &str) {
    hub.connect(conn);
    send_join(hub, conn, name);
}

/// Connects `conn` in `group`, with the hub's change limits, and joins.
fn join_in(hub: &mut Hub, conn: u64, name: &str, group: QuotaGroup) {
    let limits = ConnLimits {
        quota_group: group,
        ..hub.default_conn_limits()
    };
    hub.connect_with(conn, Box::new(AllowAll), limits);
    send_join(hub, conn, name);
}

fn send_join(hub: &mut Hub, conn: u64, name: &str) {
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
}

fn closes(effects: &[Effect], conn: u64) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Close { conn: c, .. } if *c == conn))
}

fn first_sync_message(doc: &Automerge) -> Vec<u8> {
    doc.generate_sync_message(&mut State::new())
        .expect("first message")
        .encode()
}

fn load_if_needed(hub: &mut Hub, message: &Message) {
    if let Some(id) = hub.doc_to_load(message) {
        hub.doc_loaded(id, None, NOW_MS).expect("empty doc loads");
    }
}

#[test]
fn a_message_before_join_gets_an_error_and_a_close() {
    let mut hub = hub();
    hub.connect(1);
    let effects = hub.receive(
        1,
        Message::Leave {
            sender_id: PeerId::new("x"),
        },
        NOW_MS,
    );
    assert!(
        matches!(&effects[0], Effect::Send { message: Message::Error { message, .. }, .. } if message.contains("expected join"))
    );
    assert!(closes(&effects, 1));
}

#[test]
fn a_message_claiming_another_sender_gets_an_error_and_a_close() {
    let mut hub = hub();
    join(&mut hub, 1, "honest");
    let message = Message::Sync {
        sender_id: PeerId::new("impostor"),
        target_id: PeerId::new("server"),
        document_id: DocumentId::from_bytes([1; 16]),
        data: first_sync_message(&Automerge::new()),
    };
    load_if_needed(&mut hub, &message);
    let effects = hub.receive(1, message, NOW_MS);
    assert!(closes(&effects, 1), "{effects:?}");
}

#[test]
fn garbage_sync_data_fails_only_that_peer() {
    let mut hub = hub();
    join(&mut hub, 1, "vandal");
    join(&mut hub, 2, "bystander");
    let message = Message::Sync {
        sender_id: PeerId::new("vandal"),
        target_id: PeerId::new("server"),
        document_id: DocumentId::from_bytes([1; 16]),
        data: vec![0x42, 0x00, 0xff],
    };
    load_if_needed(&mut hub, &message);
    let effects = hub.receive(1, message, NOW_MS);
    assert!(closes(&effects, 1));
    assert!(!closes(&effects, 2));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Persist { .. })));
}

#[test]
fn an_echoed_ephemeral_message_is_not_forwarded_again() {
    let mut hub = hub();
    let document_id = DocumentId::from_bytes([5; 16]);
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "k", "v").expect("put");
    tx.commit();
    hub.doc_loaded(
        document_id,
        Some(ventas_sync_protocol::hub::LoadedDoc {
            snapshot: Some(doc.save()),
            chunks: vec![],
            last_chunk_seq: 0,
        }),
        NOW_MS,
    )
    .expect("loads");
    for (conn, name) in [(1, "a"), (2, "b")] {
        join(&mut hub, conn, name);
        let request = Message::Request {
            sender_id: PeerId::new(name),
            target_id: PeerId::new("server"),
            document_id,
            data: first_sync_message(&Automerge::new()),
        };
        hub.receive(conn, request, NOW_MS);
    }
    // Always a's message: b relays it with a's sender id.
    let ephemeral = || Message::Ephemeral {
        sender_id: PeerId::new("a"),
        target_id: PeerId::new("server"),
        count: 1,
        session_id: "s".to_string(),
        document_id,
        data: vec![1, 2, 3],
    };
    let from_a = hub.receive(1, ephemeral(), NOW_MS);
    assert!(from_a.iter().any(|e| matches!(
        e,
        Effect::Send {
            conn: 2,
            message: Message::Ephemeral { .. }
        }
    )));
    // automerge-repo clients re-broadcast what they receive, back to us.
    let echoed_by_b = hub.receive(2, ephemeral(), NOW_MS);
    assert!(
        !closes(&echoed_by_b, 2),
        "a relayed ephemeral is not an impostor"
    );
    assert!(
        !echoed_by_b.iter().any(|e| matches!(
            e,
            Effect::Send {
                message: Message::Ephemeral { .. },
                ..
            }
        )),
        "echo forwarded again: {echoed_by_b:?}"
    );
}

#[test]
fn a_requester_of_a_missing_document_gets_it_once_someone_creates_it() {
    let mut hub = hub();
    let document_id = DocumentId::from_bytes([8; 16]);
    join(&mut hub, 1, "early");
    let request = Message::Request {
        sender_id: PeerId::new("early"),
        target_id: PeerId::new("server"),
        document_id,
        data: first_sync_message(&Automerge::new()),
    };
    load_if_needed(&mut hub, &request);
    let effects = hub.receive(1, request, NOW_MS);
    assert!(matches!(
        &effects[..],
        [Effect::Send {
            message: Message::DocUnavailable { .. },
            ..
        }]
    ));

    // Another peer creates the document by syncing its changes.
    join(&mut hub, 2, "creator");
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "created", true).expect("put");
    tx.commit();
    let mut state = State::new();
    let mut server_state_flush = None;
    for _ in 0..10 {
        let Some(message) = doc.generate_sync_message(&mut state) else {
            break;
        };
        let effects = hub.receive(
            2,
            Message::Sync {
                sender_id: PeerId::new("creator"),
                target_id: PeerId::new("server"),
                document_id,
                data: message.encode(),
            },
            NOW_MS,
        );
        for effect in effects {
            match effect {
                Effect::Flush { epoch } => server_state_flush = Some(epoch),
                Effect::Send {
                    conn: 2,
                    message: Message::Sync { data, .. },
                } => {
                    let reply = automerge::sync::Message::decode(&data).expect("decodes");
                    doc.receive_sync_message(&mut state, reply)
                        .expect("applies");
                }
                _ => {}
            }
        }
        if server_state_flush.is_some() {
            break;
        }
    }
    let epoch = server_state_flush.expect("creation is persisted and flushed");
    let effects = hub.flushed(epoch, NOW_MS);
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Send {
                conn: 1,
                message: Message::Sync { .. }
            }
        )),
        "the early requester must hear of the new document: {effects:?}"
    );
}

#[test]
fn a_storage_failure_drops_the_document_and_acknowledges_nothing() {
    let mut hub = hub();
    let document_id = DocumentId::from_bytes([4; 16]);
    join(&mut hub, 1, "writer");
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "k", 1_i64).expect("put");
    tx.commit();
    let mut state = State::new();
    let mut persisted = false;
    for _ in 0..10 {
        let Some(message) = doc.generate_sync_message(&mut state) else {
            break;
        };
        let message = Message::Sync {
            sender_id: PeerId::new("writer"),
            target_id: PeerId::new("server"),
            document_id,
            data: message.encode(),
        };
        load_if_needed(&mut hub, &message);
        for effect in hub.receive(1, message, NOW_MS) {
            match effect {
                Effect::Persist { .. } => persisted = true,
                Effect::Send {
                    message: Message::Sync { data, .. },
                    ..
                } => {
                    let reply = automerge::sync::Message::decode(&data).expect("decodes");
                    doc.receive_sync_message(&mut state, reply)
                        .expect("applies");
                }
                _ => {}
            }
        }
        if persisted {
            break;
        }
    }
    assert!(persisted);
    let effects = hub.persist_failed(document_id);
    assert!(closes(&effects, 1));
    assert!(hub.doc(&document_id).is_none());
    let after_flush = hub.flushed(1, NOW_MS);
    assert!(
        !after_flush.iter().any(|e| matches!(
            e,
            Effect::Send {
                message: Message::Sync { .. },
                ..
            }
        )),
        "nothing may be acknowledged after a failed write: {after_flush:?}"
    );
}

/// Drives the device's sync exchange with the hub until its changes are
/// persisted or the connection is closed; returns every effect seen.
fn push_changes(
    hub: &mut Hub,
    conn: u64,
    name: &str,
    document_id: DocumentId,
    doc: &mut Automerge,
) -> Vec<Effect> {
    let mut state = State::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let Some(message) = doc.generate_sync_message(&mut state) else {
            break;
        };
        let message = Message::Sync {
            sender_id: PeerId::new(name),
            target_id: PeerId::new("server"),
            document_id,
            data: message.encode(),
        };
        load_if_needed(hub, &message);
        let effects = hub.receive(conn, message, NOW_MS);
        let mut done = false;
        for effect in &effects {
            match effect {
                Effect::Persist { .. } | Effect::Close { .. } => done = true,
                Effect::Send {
                    conn: c,
                    message: Message::Sync { data, .. },
                } if *c == conn => {
                    let reply = automerge::sync::Message::decode(data).expect("decodes");
                    doc.receive_sync_message(&mut state, reply)
                        .expect("applies");
                }
                _ => {}
            }
        }
        seen.extend(effects);
        if done {
            break;
        }
    }
    seen
}

/// A document whose only change holds `ops` operations.
fn doc_with_ops(ops: usize) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    for n in 0..ops {
        tx.put(ROOT, format!("k{n}"), 1_i64).expect("put");
    }
    tx.commit();
    doc
}

fn hub_with_limits(change_bytes_max: usize, change_ops_max: usize) -> Hub {
    let mut config = HubConfig::new(PeerId::new("server"));
    config.change_limits = ventas_sync_protocol::doc_sync::ChangeLimits {
        change_bytes_max,
        change_ops_max,
        ..config.change_limits
    };
    Hub::new(config)
}

#[test]
fn changes_at_the_operation_limit_apply_and_one_more_disconnects() {
    let mut hub = hub_with_limits(usize::MAX, 50);
    join(&mut hub, 1, "at-limit");
    let effects = push_changes(
        &mut hub,
        1,
        "at-limit",
        DocumentId::from_bytes([1; 16]),
        &mut doc_with_ops(50),
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Persist { .. })),
        "50 ops must apply: {effects:?}"
    );
    assert!(!closes(&effects, 1));

    join(&mut hub, 2, "over-limit");
    let over = DocumentId::from_bytes([2; 16]);
    let effects = push_changes(&mut hub, 2, "over-limit", over, &mut doc_with_ops(51));
    assert!(closes(&effects, 2), "51 ops must be refused: {effects:?}");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Persist { .. })),
        "nothing of it may apply"
    );
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Send { conn: 2, message: Message::Error { message, .. } } if message.contains("operations exceed"))
    ));
    assert!(hub.doc(&over).is_none_or(|d| d.get_heads().is_empty()));
}

#[test]
fn changes_at_the_byte_limit_apply_and_one_byte_more_disconnects() {
    let mut doc = doc_with_ops(20);
    let change_bytes = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().len())
        .sum::<usize>();
    let mut hub = hub_with_limits(change_bytes, usize::MAX);
    join(&mut hub, 1, "at-limit");
    let effects = push_changes(
        &mut hub,
        1,
        "at-limit",
        DocumentId::from_bytes([3; 16]),
        &mut doc,
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Persist { .. })),
        "{effects:?}"
    );

    let mut hub = hub_with_limits(change_bytes - 1, usize::MAX);
    join(&mut hub, 1, "over-limit");
    let effects = push_changes(
        &mut hub,
        1,
        "over-limit",
        DocumentId::from_bytes([4; 16]),
        &mut doc_with_ops(20),
    );
    assert!(closes(&effects, 1), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Persist { .. })));
}

#[test]
fn messages_waiting_on_a_flushing_document_are_bounded_per_document() {
    let mut config = HubConfig::new(PeerId::new("server"));
    config.doc_queue_messages_max = 2;
    let mut hub = Hub::new(config);
    let document_id = DocumentId::from_bytes([6; 16]);
    join(&mut hub, 1, "writer");
    let effects = push_changes(&mut hub, 1, "writer", document_id, &mut doc_with_ops(3));
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Flush { .. })),
        "the write must leave a flush pending: {effects:?}"
    );
    // While the flush is in flight, messages for the document wait.
    let waiting = |name: &str| Message::Sync {
        sender_id: PeerId::new(name),
        target_id: PeerId::new("server"),
        document_id,
        data: first_sync_message(&Automerge::new()),
    };
    for (conn, name) in [(2, "b"), (3, "c")] {
        join(&mut hub, conn, name);
        let effects = hub.receive(conn, waiting(name), NOW_MS);
        assert!(
            effects.is_empty(),
            "message {name} must wait, got {effects:?}"
        );
    }
    join(&mut hub, 4, "d");
    let effects = hub.receive(4, waiting("d"), NOW_MS);
    assert!(
        closes(&effects, 4),
        "the third waiting message is over the bound: {effects:?}"
    );
    assert!(!closes(&effects, 2) && !closes(&effects, 3));
    // The two that waited are answered once the flush completes.
    let effects = hub.flushed(1, NOW_MS);
    for conn in [2, 3] {
        assert!(
            effects.iter().any(|e| matches!(e, Effect::Send { conn: c, message: Message::Sync { .. } } if *c == conn)),
            "conn {conn} must be answered after the flush: {effects:?}"
        );
    }
}

/// A hub with small memory limits: `docs_in_memory_max` slots, of which
/// `reserved` only for the server's peers, `per_group` per group.
fn hub_with_slots(docs_in_memory_max: usize, reserved: usize, per_group: usize) -> Hub {
    let mut config = HubConfig::new(PeerId::new("server"));
    config.docs_in_memory_max = docs_in_memory_max;
    config.docs_in_memory_reserved_for_server = reserved;
    config.docs_held_per_group_max = per_group;
    Hub::new(config)
}

fn request_for(name: &str, document_id: DocumentId) -> Message {
    Message::Request {
        sender_id: PeerId::new(name),
        target_id: PeerId::new("server"),
        document_id,
        data: first_sync_message(&Automerge::new()),
    }
}

fn persisted(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::Persist { .. }))
}

fn error_to(effects: &[Effect], conn: u64, text: &str) -> bool {
    effects.iter().any(|e| {
        matches!(e, Effect::Send { conn: c, message: Message::Error { message, .. } }
            if *c == conn && message.contains(text))
    })
}

/// Loads `document_id` (not stored) for `conn` as the server does, through
/// [`Hub::doc_parsed_for`], then hands the hub the message.
fn receive_loading(hub: &mut Hub, conn: u64, message: Message) -> Vec<Effect> {
    let mut effects = Vec::new();
    if let Some(id) = hub.doc_to_load(&message) {
        hub.doc_parsed_for(conn, id, None, NOW_MS, &mut effects)
            .expect("a missing document needs no room");
    }
    effects.extend(hub.receive(conn, message, NOW_MS));
    effects
}

#[test]
fn requests_for_missing_documents_hold_no_memory_slot() {
    let mut hub = hub_with_slots(2, 0, 2);
    join_in(&mut hub, 1, "prober", QuotaGroup::Group(1));
    for n in 0..50_u8 {
        let effects = receive_loading(
            &mut hub,
            1,
            request_for("prober", DocumentId::from_bytes([n; 16])),
        );
        assert!(
            matches!(
                &effects[..],
                [Effect::Send {
                    message: Message::DocUnavailable { .. },
                    ..
                }]
            ),
            "request {n}: {effects:?}"
        );
    }
    assert_eq!(hub.slots_used(None), 0);

    // Memory is not full: another group creates both documents it may hold.
    join_in(&mut hub, 2, "creator", QuotaGroup::Group(2));
    for n in 100..102_u8 {
        let effects = push_changes(
            &mut hub,
            2,
            "creator",
            DocumentId::from_bytes([n; 16]),
            &mut doc_with_ops(1),
        );
        assert!(
            persisted(&effects),
            "document {n} must be created: {effects:?}"
        );
    }
    assert_eq!(hub.slots_used(Some(QuotaGroup::Group(2))), 2);

    // The placeholders leave memory once their requester is gone.
    hub.disconnect(1);
    hub.tick(NOW_MS);
    assert_eq!(hub.docs_in_memory(), 2);
}

#[test]
fn a_group_creates_documents_up_to_its_quota_and_the_next_is_refused_to_it_alone() {
    let mut hub = hub_with_slots(100, 0, 3);
    join_in(&mut hub, 1, "greedy", QuotaGroup::Group(1));
    for n in 0..3_u8 {
        let effects = push_changes(
            &mut hub,
            1,
            "greedy",
            DocumentId::from_bytes([n; 16]),
            &mut doc_with_ops(1),
        );
        assert!(
            persisted(&effects),
            "document {n} is within the quota: {effects:?}"
        );
    }
    let over = DocumentId::from_bytes([3; 16]);
    let effects = push_changes(&mut hub, 1, "greedy", over, &mut doc_with_ops(1));
    assert!(
        !persisted(&effects),
        "the fourth document is past the quota: {effects:?}"
    );
    assert!(
        error_to(&effects, 1, "tenant holds its maximum of 3"),
        "{effects:?}"
    );
    assert!(!closes(&effects, 1), "the session goes on");
    assert!(hub.doc(&over).is_none_or(|doc| doc.get_heads().is_empty()));
    assert_eq!(hub.slots_used(Some(QuotaGroup::Group(1))), 3);

    // Another group is not affected.
    join_in(&mut hub, 2, "other", QuotaGroup::Group(2));
    let effects = push_changes(
        &mut hub,
        2,
        "other",
        DocumentId::from_bytes([9; 16]),
        &mut doc_with_ops(1),
    );
    assert!(persisted(&effects), "{effects:?}");
}

#[test]
fn a_group_at_its_quota_evicts_its_own_idle_document_first() {
    let mut hub = hub_with_slots(100, 0, 2);
    join_in(&mut hub, 1, "first", QuotaGroup::Group(1));
    join_in(&mut hub, 3, "bystander", QuotaGroup::Group(2));
    let bystanders = DocumentId::from_bytes([50; 16]);
    assert!(persisted(&push_changes(
        &mut hub,
        3,
        "bystander",
        bystanders,
        &mut doc_with_ops(1)
    )));
    hub.disconnect(3);
    for n in 0..2_u8 {
        assert!(persisted(&push_changes(
            &mut hub,
            1,
            "first",
            DocumentId::from_bytes([n; 16]),
            &mut doc_with_ops(1)
        )));
    }
    for epoch in 1..10 {
        hub.flushed(epoch, NOW_MS);
    }
    hub.disconnect(1);
    join_in(&mut hub, 2, "second", QuotaGroup::Group(1));
    let effects = push_changes(
        &mut hub,
        2,
        "second",
        DocumentId::from_bytes([7; 16]),
        &mut doc_with_ops(1),
    );
    assert!(
        persisted(&effects),
        "an idle document of the group makes room: {effects:?}"
    );
    assert_eq!(hub.slots_used(Some(QuotaGroup::Group(1))), 2);
    assert!(
        hub.doc(&bystanders).is_some(),
        "another group's idle document stays"
    );
}

#[test]
fn the_last_slots_are_reserved_for_the_servers_own_peers() {
    let mut hub = hub_with_slots(3, 1, 100);
    join_in(&mut hub, 1, "tenant", QuotaGroup::Group(1));
    for n in 0..2_u8 {
        assert!(persisted(&push_changes(
            &mut hub,
            1,
            "tenant",
            DocumentId::from_bytes([n; 16]),
            &mut doc_with_ops(1)
        )));
    }
    let effects = push_changes(
        &mut hub,
        1,
        "tenant",
        DocumentId::from_bytes([2; 16]),
        &mut doc_with_ops(1),
    );
    assert!(
        !persisted(&effects),
        "the reserve is not the tenant's: {effects:?}"
    );
    assert!(
        error_to(&effects, 1, "server holds its maximum of 3"),
        "{effects:?}"
    );

    join_in(&mut hub, 2, "keeper", QuotaGroup::Server);
    let effects = push_changes(
        &mut hub,
        2,
        "keeper",
        DocumentId::from_bytes([3; 16]),
        &mut doc_with_ops(1),
    );
    assert!(
        persisted(&effects),
        "the server's peer uses the reserve: {effects:?}"
    );
    assert_eq!(hub.slots_used(None), 3);
}

#[test]
fn a_stored_document_loads_only_within_its_groups_quota() {
    let mut hub = hub_with_slots(100, 0, 1);
    join_in(&mut hub, 1, "reader", QuotaGroup::Group(1));
    assert!(persisted(&push_changes(
        &mut hub,
        1,
        "reader",
        DocumentId::from_bytes([1; 16]),
        &mut doc_with_ops(1)
    )));
    let stored = |doc: Automerge| ventas_sync_protocol::hub::LoadedDoc {
        snapshot: Some(doc.save()),
        chunks: Vec::new(),
        last_chunk_seq: 0,
    };
    let second = DocumentId::from_bytes([2; 16]);
    let parsed = stored(doc_with_ops(1)).parse(second).expect("parses");
    let mut effects = Vec::new();
    assert_eq!(
        hub.doc_parsed_for(1, second, Some(parsed), NOW_MS, &mut effects),
        Err(NoRoom::Group { max: 1 })
    );
    assert!(hub.doc(&second).is_none());

    join_in(&mut hub, 2, "other", QuotaGroup::Group(2));
    let parsed = stored(doc_with_ops(1)).parse(second).expect("parses");
    assert_eq!(
        hub.doc_parsed_for(2, second, Some(parsed), NOW_MS, &mut effects),
        Ok(())
    );
    assert_eq!(hub.slots_used(Some(QuotaGroup::Group(2))), 1);
}

#[test]
fn each_connection_gets_its_own_change_limits() {
    let mut hub = hub();
    let limited = |change_ops_max| ConnLimits {
        change_limits: ventas_sync_protocol::doc_sync::ChangeLimits {
            change_ops_max,
            ..hub.default_conn_limits().change_limits
        },
        quota_group: QuotaGroup::Group(1),
    };
    let (at_limit, below) = (limited(50), limited(49));
    hub.connect_with(1, Box::new(AllowAll), at_limit);
    send_join(&mut hub, 1, "office");
    hub.connect_with(2, Box::new(AllowAll), below);
    send_join(&mut hub, 2, "seller");
    let effects = push_changes(
        &mut hub,
        1,
        "office",
        DocumentId::from_bytes([1; 16]),
        &mut doc_with_ops(50),
    );
    assert!(
        persisted(&effects),
        "50 ops within this connection's limit: {effects:?}"
    );
    let effects = push_changes(
        &mut hub,
        2,
        "seller",
        DocumentId::from_bytes([2; 16]),
        &mut doc_with_ops(50),
    );
    assert!(
        !persisted(&effects),
        "50 ops past this connection's limit: {effects:?}"
    );
    assert!(closes(&effects, 2) && !closes(&effects, 1));
}

/// A hub whose documents hold at most `doc_ops_max` operations.
fn hub_with_doc_ops_max(doc_ops_max: usize) -> Hub {
    let mut config = HubConfig::new(PeerId::new("server"));
    config.change_limits.doc_ops_max = doc_ops_max;
    Hub::new(config)
}

/// Adds a change of `ops` operations to `doc`.
fn add_ops(doc: &mut Automerge, prefix: &str, ops: usize) {
    let mut tx = doc.transaction();
    for n in 0..ops {
        tx.put(ROOT, format!("{prefix}{n}"), 1_i64).expect("put");
    }
    tx.commit();
}

#[test]
fn a_document_grows_to_its_operation_limit_and_a_change_past_it_is_refused() {
    let mut hub = hub_with_doc_ops_max(100);
    let document_id = DocumentId::from_bytes([5; 16]);
    join(&mut hub, 1, "writer");
    let mut doc = doc_with_ops(60);
    assert!(persisted(&push_changes(
        &mut hub,
        1,
        "writer",
        document_id,
        &mut doc
    )));
    hub.flushed(1, NOW_MS);
    add_ops(&mut doc, "more", 40);
    let effects = push_changes(&mut hub, 1, "writer", document_id, &mut doc);
    assert!(
        persisted(&effects),
        "100 operations are at the limit: {effects:?}"
    );
    hub.flushed(2, NOW_MS);
    let heads_at_limit = hub.doc(&document_id).expect("loaded").get_heads();

    add_ops(&mut doc, "past", 1);
    let effects = push_changes(&mut hub, 1, "writer", document_id, &mut doc);
    assert!(
        !persisted(&effects),
        "the 101st operation is refused: {effects:?}"
    );
    assert!(
        error_to(&effects, 1, "past the limit of 100"),
        "{effects:?}"
    );
    assert!(!closes(&effects, 1), "the session goes on");
    assert_eq!(
        hub.doc(&document_id).expect("loaded").get_heads(),
        heads_at_limit
    );
}
