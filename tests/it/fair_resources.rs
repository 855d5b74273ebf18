//! Fair resources (issue 10): no one tenant can stall or lock out the
//! others. Requests for documents that do not exist hold no memory slot; a
//! tenant holds at most its quota of documents in memory; each role's
//! sync messages are bounded by that role's limits.

use std::collections::HashMap;

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use ventas::config::ServerConfig;
use ventas::domain::{create_ledger_doc, Period, SellerId, TenantId};
use ventas::server::auth::Role;
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

use crate::harness::{bearer, issue_credentials, RawPeer, TestServer};

/// (tenant, seller, device, role) of every credential the tests use.
const PEOPLE: &[(&str, &str, &str, Role)] = &[
    ("acme", "boss", "acme-office", Role::Office),
    ("acme", "ana", "tab-ana", Role::Seller),
    ("globex", "gina", "globex-office", Role::Office),
];

/// A server with small memory limits (8 documents, 2 of them reserved for
/// the server's own peers, 4 per tenant) and everyone's credentials.
async fn server(
    adjust: impl FnOnce(&mut ServerConfig),
) -> (TestServer, HashMap<&'static str, String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let wanted: Vec<_> = PEOPLE
        .iter()
        .map(|(tenant, seller, device, role)| (*tenant, *seller, *device, *role, None))
        .collect();
    let tokens = issue_credentials(dir.path(), &wanted);
    let tokens = PEOPLE.iter().map(|person| person.2).zip(tokens).collect();
    let server = TestServer::start_in(dir, |config| {
        config.docs_in_memory_max = 8;
        config.docs_in_memory_reserved_for_server = 2;
        config.docs_held_per_tenant_max = 4;
        adjust(config);
    })
    .await;
    (server, tokens)
}

/// A device speaking the protocol by hand about one document at a time.
struct Writer {
    peer: RawPeer,
    server: PeerId,
}

impl Writer {
    /// Connects with `device`'s credential as peer `peer_id` (the device id
    /// or `device/...`).
    async fn connect(
        url: &str,
        tokens: &HashMap<&str, String>,
        device: &str,
        peer_id: &str,
    ) -> Self {
        let (peer, server) = RawPeer::connect_with(bearer(url, &tokens[device]), peer_id)
            .await
            .handshake()
            .await;
        Self { peer, server }
    }

    fn sync(&self, document_id: DocumentId, data: Vec<u8>) -> Message {
        Message::Sync {
            sender_id: self.peer.peer_id.clone(),
            target_id: self.server.clone(),
            document_id,
            data,
        }
    }

    /// Syncs `doc` with the server until the server holds every change of
    /// it (Ok) or answers an error (Err with it).
    async fn push(&mut self, document_id: DocumentId, doc: &mut Automerge) -> Result<(), String> {
        let mut state = State::new();
        let first = doc
            .generate_sync_message(&mut state)
            .expect("first message");
        self.peer
            .send(&self.sync(document_id, first.encode()))
            .await;
        loop {
            match self.peer.recv().await {
                Some(Message::Sync { data, .. }) => {
                    let reply = automerge::sync::Message::decode(&data).expect("decodes");
                    doc.receive_sync_message(&mut state, reply)
                        .expect("applies");
                    let theirs = state.their_heads.clone().unwrap_or_default();
                    if doc.get_heads().iter().all(|head| theirs.contains(head)) {
                        return Ok(());
                    }
                    if let Some(next) = doc.generate_sync_message(&mut state) {
                        self.peer.send(&self.sync(document_id, next.encode())).await;
                    }
                }
                Some(Message::Error { message, .. }) => return Err(message),
                None => return Err("closed".to_string()),
                Some(_) => {}
            }
        }
    }

    /// Fetches a document the server has; returns the local copy.
    async fn fetch(&mut self, document_id: DocumentId) -> Automerge {
        let mut doc = Automerge::new();
        let mut state = State::new();
        let request = self.peer.request(&self.server, document_id);
        self.peer.send(&request).await;
        loop {
            match self.peer.recv().await {
                Some(Message::Sync { data, .. }) => {
                    let reply = automerge::sync::Message::decode(&data).expect("decodes");
                    doc.receive_sync_message(&mut state, reply)
                        .expect("applies");
                    let heads = doc.get_heads();
                    if !heads.is_empty() && state.their_heads.as_ref() == Some(&heads) {
                        return doc;
                    }
                    if let Some(next) = doc.generate_sync_message(&mut state) {
                        self.peer.send(&self.sync(document_id, next.encode())).await;
                    }
                }
                other => panic!("fetching {document_id}: {other:?}"),
            }
        }
    }
}

/// A new document holding `ops` root keys.
fn doc_with_ops(ops: usize) -> Automerge {
    let mut doc = Automerge::new();
    add_ops(&mut doc, "k", ops);
    doc
}

fn add_ops(doc: &mut Automerge, prefix: &str, ops: usize) {
    let mut tx = doc.transaction();
    for n in 0..ops {
        tx.put(ROOT, format!("{prefix}{n}"), 1_i64).expect("put");
    }
    tx.commit();
}

fn random_id() -> DocumentId {
    DocumentId::from_bytes(rand::random())
}

/// Issue 10, item 6: five office connections asking for thousands of random
/// ids filled every memory slot and nobody could create a document. Now
/// every request is answered doc-unavailable and holds no slot.
#[tokio::test]
async fn requests_for_random_ids_never_lock_other_tenants_out_of_memory() {
    let (server, tokens) = server(|_| {}).await;
    let mut attackers = Vec::new();
    for n in 0..5 {
        let peer_id = format!("acme-office/{n}");
        attackers.push(Writer::connect(&server.url(), &tokens, "acme-office", &peer_id).await);
    }
    // 5 x 40 requests, 25 times the memory, all open at once.
    const REQUESTS_PER_CONNECTION: usize = 40;
    for attacker in &mut attackers {
        for _ in 0..REQUESTS_PER_CONNECTION {
            let request = attacker.peer.request(&attacker.server, random_id());
            attacker.peer.send(&request).await;
        }
    }
    for attacker in &mut attackers {
        for n in 0..REQUESTS_PER_CONNECTION {
            let answer = attacker.peer.recv().await;
            assert!(
                matches!(answer, Some(Message::DocUnavailable { .. })),
                "request {n}: {answer:?}"
            );
        }
    }

    // Another tenant creates all the documents its quota allows, and so
    // does the attacking tenant itself.
    let mut victim =
        Writer::connect(&server.url(), &tokens, "globex-office", "globex-office").await;
    for n in 0..4 {
        victim
            .push(random_id(), &mut doc_with_ops(3))
            .await
            .unwrap_or_else(|error| panic!("document {n} of globex refused: {error}"));
    }
    attackers[0]
        .push(random_id(), &mut doc_with_ops(3))
        .await
        .expect("acme still creates a document");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_tenant_at_its_memory_quota_is_refused_and_another_tenant_is_not() {
    let (server, tokens) = server(|_| {}).await;
    let mut acme = Writer::connect(&server.url(), &tokens, "acme-office", "acme-office").await;
    for n in 0..4 {
        acme.push(random_id(), &mut doc_with_ops(2))
            .await
            .unwrap_or_else(|error| panic!("document {n} is within the quota: {error}"));
    }
    // All four stay open on the connection, so none can be evicted.
    let refused = acme
        .push(random_id(), &mut doc_with_ops(2))
        .await
        .expect_err("the fifth document is past the quota");
    assert!(
        refused.contains("tenant holds its maximum of 4"),
        "{refused}"
    );

    let mut globex =
        Writer::connect(&server.url(), &tokens, "globex-office", "globex-office").await;
    globex
        .push(random_id(), &mut doc_with_ops(2))
        .await
        .expect("another tenant is not affected");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_sellers_message_is_bounded_by_the_seller_limit_and_an_offices_by_the_office_limit() {
    let (server, tokens) = server(|config| {
        config.seller_change_ops_max = 500;
        config.office_change_ops_max = 5_000;
    })
    .await;
    let tenant = TenantId::new("acme").expect("tenant");
    let seller = SellerId::new("ana").expect("seller");
    let ledger_id = random_id();
    let mut office = Writer::connect(&server.url(), &tokens, "acme-office", "acme-office").await;
    let mut ledger = create_ledger_doc(&tenant, &seller, Period::parse("2026-11").expect("period"))
        .expect("ledger");
    office
        .push(ledger_id, &mut ledger)
        .await
        .expect("office creates ana's ledger");

    let mut ana = Writer::connect(&server.url(), &tokens, "tab-ana", "tab-ana").await;
    let mut copy = ana.fetch(ledger_id).await;
    add_ops(&mut copy, "small", 100);
    ana.push(ledger_id, &mut copy)
        .await
        .expect("100 ops are within the seller limit");
    add_ops(&mut copy, "big", 1_000);
    let refused = ana
        .push(ledger_id, &mut copy)
        .await
        .expect_err("1,000 ops are past the seller limit");
    assert!(refused.contains("exceed the limit of 500"), "{refused}");

    // The same message from the office is within its limit.
    add_ops(&mut ledger, "big", 1_000);
    office
        .push(ledger_id, &mut ledger)
        .await
        .expect("1,000 ops are within the office limit");
    server.running.shutdown().await.expect("shutdown");
}
