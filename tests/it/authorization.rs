//! Per-document authorization end to end: with credentials, a device sees
//! only its tenant's documents its role may read, and writes only those it
//! may write (see `ventas::server::access`). Refused writes get an `error`,
//! change nothing on the server, leave the connection serving, and are in
//! the sync log. Each Automerge actor belongs to the device that first
//! wrote with it: another device's changes under that actor are refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use ventas::client::{Client, ClientConfig, DocHandle};
use ventas::domain::{
    create_catalog_doc, create_device_doc, create_ledger_doc, create_stock_doc, put_location,
    DeviceId, Location, LocationId, LocationKind, Period, SellerId, TenantId,
};
use ventas::server::auth::Role;
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

use crate::harness::{http_request, issue_credentials, within, RawPeer, TestServer};

/// How long a raw device waits, at most, for the server to answer what it
/// sent in a conversation (an answer is expected within milliseconds; a
/// loaded machine must never cut a conversation short).
const CONVERSATION_MS_MAX: u64 = crate::harness::WAIT_MS_MAX;

/// What a raw device still waits for about one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// It requested the document: a sync message or doc-unavailable.
    Answer,
    /// It sent changes: the server's acknowledgement (sent only once they
    /// are durable, so it can come after a barrier), an error or
    /// doc-unavailable.
    Acknowledgement,
}

/// (tenant, seller, device, role) of every credential the tests use.
const PEOPLE: &[(&str, &str, &str, Role)] = &[
    ("acme", "boss", "office-1", Role::Office),
    ("acme", "ana", "tab-ana", Role::Seller),
    ("acme", "ana", "phone-ana", Role::Seller),
    ("acme", "bob", "tab-bob", Role::Seller),
    ("acme", "audit", "rep-1", Role::Reporting),
    ("globex", "gus", "tab-gus", Role::Seller),
];

/// A server whose store holds a credential for each of [`PEOPLE`], and
/// their tokens by device.
async fn server() -> (TestServer, HashMap<&'static str, String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = issue(dir.path());
    (TestServer::start_in(dir, |_| {}).await, tokens)
}

/// A server with everyone's credentials that a test can restart on the
/// same data directory.
struct Restartable {
    _dir: tempfile::TempDir,
    config: ventas::config::ServerConfig,
    running: ventas::server::RunningServer,
    tokens: HashMap<&'static str, String>,
}

impl Restartable {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = issue(dir.path());
        let config = ventas::config::ServerConfig::for_test(TestServer::data_dir_in(dir.path()));
        let running = ventas::server::start(config.clone()).await.expect("server");
        Self {
            _dir: dir,
            config,
            running,
            tokens,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.running.addr)
    }

    async fn restart(self) -> Self {
        let Self {
            _dir,
            config,
            running,
            tokens,
        } = self;
        running.shutdown().await.expect("shutdown");
        let running = ventas::server::start(config.clone())
            .await
            .expect("restart");
        Self {
            _dir,
            config,
            running,
            tokens,
        }
    }
}

fn issue(dir: &Path) -> HashMap<&'static str, String> {
    let wanted: Vec<_> = PEOPLE
        .iter()
        .map(|(tenant, seller, device, role)| (*tenant, *seller, *device, *role, None))
        .collect();
    let tokens = issue_credentials(dir, &wanted);
    PEOPLE
        .iter()
        .map(|(_, _, device, _)| *device)
        .zip(tokens)
        .collect()
}

/// A device client (the office, here) with its credential.
pub(crate) fn client(url: &str, dir: &Path, device: &str, token: &str) -> Client {
    let mut config = ClientConfig::new(url, dir.join(device));
    config.peer_id = Some(device.to_string());
    config.token = Some(token.to_string());
    config.reconnect_initial_ms = 20;
    config.reconnect_max_ms = 200;
    Client::open(config).expect("device opens")
}

fn tenant() -> TenantId {
    TenantId::new("acme").expect("id")
}

fn period() -> Period {
    Period::parse("2026-11").expect("period")
}

/// The ledger of `seller` (of [`tenant`]) for [`period`].
fn ledger_doc(seller: &str) -> Automerge {
    create_ledger_doc(&tenant(), &SellerId::new(seller).expect("id"), period()).expect("doc")
}

fn van() -> LocationId {
    LocationId::new("van-ana").expect("id")
}

/// The office creates `doc` on the server.
pub(crate) async fn created(office: &Client, doc: Automerge) -> DocHandle {
    let handle = office.create_with(doc).expect("import");
    within("document saved", handle.synced())
        .await
        .expect("synced");
    handle
}

/// acme's catalog, with the van assigned to ana.
fn catalog() -> Automerge {
    let mut catalog = create_catalog_doc(&tenant()).expect("catalog");
    put_location(
        &mut catalog,
        &Location {
            id: van(),
            name: "Ana's van".into(),
            kind: LocationKind::Vehicle,
            seller: Some(SellerId::new("ana").expect("id")),
        },
    )
    .expect("location");
    catalog
}

/// A device speaking the protocol by hand, so the test sees every message.
pub(crate) struct RawDevice {
    pub(crate) peer: RawPeer,
    pub(crate) server: PeerId,
    pub(crate) docs: HashMap<DocumentId, (Automerge, State)>,
    /// Documents the current conversation waits on an answer about.
    awaiting: HashMap<DocumentId, Awaiting>,
}

impl RawDevice {
    pub(crate) async fn connect(url: &str, device: &str, token: &str) -> Self {
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let (peer, server) = RawPeer::connect_with(request, device)
            .await
            .handshake()
            .await;
        Self {
            peer,
            server,
            docs: HashMap::new(),
            awaiting: HashMap::new(),
        }
    }

    /// Requests a document; Ok once the conversation about it is over,
    /// Err with the message if the server said it is unavailable.
    pub(crate) async fn fetch(
        &mut self,
        document_id: DocumentId,
    ) -> Result<Vec<Message>, Vec<Message>> {
        let (doc, state) = self
            .docs
            .entry(document_id)
            .or_insert_with(|| (Automerge::new(), State::new()));
        let data = doc
            .generate_sync_message(state)
            .expect("first message")
            .encode();
        self.peer
            .send(&Message::Request {
                sender_id: self.peer.peer_id.clone(),
                target_id: self.server.clone(),
                document_id,
                data,
            })
            .await;
        self.awaiting.insert(document_id, Awaiting::Answer);
        let heard = self.converse().await;
        let unavailable = heard.iter().any(
            |m| matches!(m, Message::DocUnavailable { document_id: id, .. } if *id == document_id),
        );
        if unavailable {
            Err(heard)
        } else {
            Ok(heard)
        }
    }

    /// Changes the local copy: a root key, as any writer could.
    pub(crate) fn mark(&mut self, document_id: DocumentId, key: &str) {
        let (doc, _) = self
            .docs
            .entry(document_id)
            .or_insert_with(|| (Automerge::new(), State::new()));
        let mut tx = doc.transaction();
        tx.put(ROOT, key, true).expect("put");
        tx.commit();
    }

    /// Sends what the server lacks of a document; returns every message
    /// heard until the conversation is over.
    pub(crate) async fn push(&mut self, document_id: DocumentId) -> Vec<Message> {
        self.send_sync(document_id).await;
        if self.docs.contains_key(&document_id) && !self.acknowledged(document_id) {
            self.awaiting.insert(document_id, Awaiting::Acknowledgement);
        }
        self.converse().await
    }

    /// Writes `key` into the document and pushes it: the server answers no
    /// error and acknowledges every change.
    pub(crate) async fn write_accepted(&mut self, document_id: DocumentId, key: &str) {
        self.mark(document_id, key);
        let heard = self.push(document_id).await;
        assert!(errors(&heard).is_empty(), "{heard:?}");
        assert!(self.acknowledged(document_id));
    }

    /// Writes `key` into the document and pushes it: the server answers
    /// exactly one error, returned.
    pub(crate) async fn write_refused(&mut self, document_id: DocumentId, key: &str) -> String {
        self.mark(document_id, key);
        let heard = self.push(document_id).await;
        let mut refused = errors(&heard);
        assert_eq!(refused.len(), 1, "{heard:?}");
        refused.remove(0)
    }

    /// Closes the connection cleanly (a close frame, then the server's).
    pub(crate) async fn close(mut self) {
        self.peer
            .socket
            .close(None)
            .await
            .expect("close frame sent");
        while self.peer.recv().await.is_some() {}
    }

    /// Whether the server acknowledged every change of our copy.
    pub(crate) fn acknowledged(&self, document_id: DocumentId) -> bool {
        let (doc, state) = &self.docs[&document_id];
        let theirs = state.their_heads.clone().unwrap_or_default();
        doc.get_heads().iter().all(|head| theirs.contains(head))
    }

    /// Whether the server announced heads our copy does not have.
    fn lacks_theirs(&self, document_id: DocumentId) -> bool {
        let Some((doc, state)) = self.docs.get(&document_id) else {
            return false;
        };
        state
            .their_heads
            .iter()
            .flatten()
            .any(|head| doc.get_change_by_hash(head).is_none())
    }

    /// Writes from now on as `actor` (a forger's move).
    fn write_as(&mut self, document_id: DocumentId, actor: automerge::ActorId) {
        if let Some((doc, _)) = self.docs.get_mut(&document_id) {
            doc.set_actor(actor);
        }
    }

    fn actor(&self, document_id: DocumentId) -> automerge::ActorId {
        self.docs[&document_id].0.get_actor().clone()
    }

    pub(crate) fn has(&self, document_id: DocumentId, key: &str) -> bool {
        self.docs
            .get(&document_id)
            .and_then(|(doc, _)| doc.get(ROOT, key).ok().flatten())
            .is_some()
    }

    /// Sends what the server lacks of a document, if anything; whether it
    /// sent.
    async fn send_sync(&mut self, document_id: DocumentId) -> bool {
        let Some((doc, state)) = self.docs.get_mut(&document_id) else {
            return false;
        };
        let Some(message) = doc.generate_sync_message(state) else {
            return false;
        };
        self.peer
            .send(&Message::Sync {
                sender_id: self.peer.peer_id.clone(),
                target_id: self.server.clone(),
                document_id,
                data: message.encode(),
            })
            .await;
        true
    }

    /// Answers sync messages as a device does until the conversation is
    /// over; returns everything heard. Over means: a barrier
    /// ([`RawPeer::barrier`]) came back with nothing left to answer, and
    /// every request and every push of this conversation got its answer
    /// (see [`Awaiting`]). So a slow server never cuts a conversation
    /// short, and "heard nothing" means the server sent nothing before the
    /// barrier, not that it was quiet for a while. Panics if the server
    /// closes the connection or leaves something unanswered for
    /// [`CONVERSATION_MS_MAX`].
    pub(crate) async fn converse(&mut self) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(CONVERSATION_MS_MAX);
        let mut heard = Vec::new();
        loop {
            let barrier = tokio::time::timeout_at(deadline, self.peer.barrier(&self.server))
                .await
                .unwrap_or_else(|_| panic!("no barrier answer; heard {heard:?}"));
            assert!(
                !barrier.closed,
                "the server closed the connection; heard {heard:?} then {:?}",
                barrier.before
            );
            let mut replied = false;
            for message in barrier.before {
                replied |= self.answer(&message).await;
                heard.push(message);
            }
            if replied {
                continue;
            }
            if self.awaiting.is_empty() {
                return heard;
            }
            // An acknowledgement waits for the flush: the next message.
            let next = tokio::time::timeout_at(deadline, self.peer.recv()).await;
            let message = match next {
                Err(_) => panic!(
                    "still waiting on {:?} after {CONVERSATION_MS_MAX} ms; heard {heard:?}",
                    self.awaiting
                ),
                Ok(None) => panic!("the server closed the connection; heard {heard:?}"),
                Ok(Some(message)) => message,
            };
            self.answer(&message).await;
            heard.push(message);
        }
    }

    /// Takes one message of the server into account: applies a sync
    /// message and answers it; whether it sent an answer.
    async fn answer(&mut self, message: &Message) -> bool {
        match message {
            Message::Sync {
                document_id, data, ..
            } => {
                let document_id = *document_id;
                if let Some((doc, state)) = self.docs.get_mut(&document_id) {
                    let reply = automerge::sync::Message::decode(data).expect("decodes");
                    doc.receive_sync_message(state, reply).expect("applies");
                }
                if self.awaiting.get(&document_id) == Some(&Awaiting::Answer)
                    || (self.docs.contains_key(&document_id) && self.acknowledged(document_id))
                {
                    self.awaiting.remove(&document_id);
                }
                // The server has changes we lack: their answer to our
                // request for them may wait behind a flush.
                if self.lacks_theirs(document_id) {
                    self.awaiting.insert(document_id, Awaiting::Answer);
                }
                self.send_sync(document_id).await
            }
            Message::DocUnavailable { document_id, .. } => {
                self.awaiting.remove(document_id);
                false
            }
            // The server refused (errors name no document): nothing it
            // refused will be acknowledged.
            Message::Error { .. } => {
                self.awaiting.clear();
                false
            }
            _ => false,
        }
    }
}

/// Everything heard says doc-unavailable: the document stays hidden.
pub(crate) fn assert_only_unavailable(heard: &[Message]) {
    assert!(
        heard
            .iter()
            .all(|m| matches!(m, Message::DocUnavailable { .. })),
        "{heard:?}"
    );
}

pub(crate) fn errors(heard: &[Message]) -> Vec<String> {
    heard
        .iter()
        .filter_map(|m| match m {
            Message::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// A fresh office device reads `document_id` as the server holds it, once
/// its heads equal `server_heads`.
pub(crate) async fn server_copy(
    server: SocketAddr,
    token: &str,
    document_id: DocumentId,
    server_heads: Vec<automerge::ChangeHash>,
) -> Automerge {
    let dir = tempfile::tempdir().expect("dir");
    let reader = client(&format!("ws://{server}"), dir.path(), "office-1", token);
    let handle = reader
        .open_url(&format!("automerge:{document_id}"))
        .expect("open");
    within(
        "the server's copy",
        handle.wait_until(move |doc| doc.get_heads() == server_heads),
    )
    .await
    .expect("alive");
    let doc = handle.read(|doc| doc.clone()).expect("read");
    drop(handle);
    reader.close().await.expect("close");
    doc
}

/// [`server_copy`] of the document behind `handle`, at `handle`'s heads.
async fn server_copy_of(server: SocketAddr, token: &str, handle: &DocHandle) -> Automerge {
    let heads = handle.read(|d| d.get_heads()).expect("read");
    server_copy(server, token, handle.document_id(), heads).await
}

/// The sync log's record of the session of `subject`, once it ended.
pub(crate) async fn ended_session(server: SocketAddr, office_token: &str, subject: &str) -> Value {
    let auth = format!("Bearer {office_token}");
    for _ in 0..200 {
        let (status, body) = http_request(
            server,
            "GET",
            "/v1/sync-sessions",
            &[("Authorization", auth.as_str())],
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).expect("json");
        let found = page["sessions"].as_array().and_then(|sessions| {
            sessions
                .iter()
                .find(|s| s["identity"] == subject && !s["disconnected_at_ms"].is_null())
                .cloned()
        });
        if let Some(session) = found {
            return session;
        }
        // A poll, not an ordering: the session ends within milliseconds of
        // the close; 200 polls 50 ms apart give it 10 s.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no ended session of {subject} in the sync log");
}

#[tokio::test]
async fn another_tenants_document_is_unavailable_exactly_like_a_missing_one() {
    let (server, tokens) = server().await;
    let dir = tempfile::tempdir().expect("dir");
    let office = client(&server.url(), dir.path(), "office-1", &tokens["office-1"]);
    let ledger = created(&office, ledger_doc("ana")).await;

    let mut outsider = RawDevice::connect(&server.url(), "tab-gus", &tokens["tab-gus"]).await;
    let theirs = outsider
        .fetch(ledger.document_id())
        .await
        .expect_err("another tenant's ledger is unavailable");
    let missing = outsider
        .fetch(DocumentId::from_bytes([42; 16]))
        .await
        .expect_err("a missing document is unavailable");
    let shape =
        |heard: &[Message]| -> Vec<&'static str> { heard.iter().map(Message::type_name).collect() };
    assert_eq!(shape(&theirs), shape(&missing));
    assert_eq!(shape(&theirs), vec!["doc-unavailable"]);

    // Nor can it write into it: its changes are not applied, and it hears
    // nothing of the document when the office changes it.
    outsider.mark(ledger.document_id(), "forged");
    let heard = outsider.push(ledger.document_id()).await;
    assert_eq!(shape(&heard), vec!["doc-unavailable"]);
    crate::harness::put(&ledger, "office-note", "1");
    within("synced", ledger.synced()).await.expect("synced");
    let heard = outsider.converse().await;
    assert!(heard.is_empty(), "{heard:?}");
    let copy = server_copy_of(server.addr(), &tokens["office-1"], &ledger).await;
    assert!(copy.get(ROOT, "forged").expect("read").is_none());

    drop(ledger);
    office.close().await.expect("close");
}

#[tokio::test]
async fn a_seller_sees_only_its_own_ledger_and_cannot_write_the_catalog() {
    let (server, tokens) = server().await;
    let dir = tempfile::tempdir().expect("dir");
    let office = client(&server.url(), dir.path(), "office-1", &tokens["office-1"]);
    let catalog = created(&office, catalog()).await;
    let ana_ledger = created(&office, ledger_doc("ana")).await;
    let bob_ledger = created(&office, ledger_doc("bob")).await;

    let mut ana = RawDevice::connect(&server.url(), "tab-ana", &tokens["tab-ana"]).await;
    // Another seller's ledger: unavailable, and a write into it is ignored.
    ana.fetch(bob_ledger.document_id())
        .await
        .expect_err("bob's ledger is hidden from ana");
    ana.mark(bob_ledger.document_id(), "forged");
    let heard = ana.push(bob_ledger.document_id()).await;
    assert_only_unavailable(&heard);

    // The catalog: readable, but a change is refused with an error, and
    // the connection stays open.
    ana.fetch(catalog.document_id())
        .await
        .expect("ana reads the catalog");
    assert!(ana.has(catalog.document_id(), "locations"));
    let refused = ana.write_refused(catalog.document_id(), "cheaper").await;
    assert!(refused.contains("may only read"), "{refused}");
    assert!(!ana.acknowledged(catalog.document_id()));

    // The same connection still writes its own ledger.
    ana.fetch(ana_ledger.document_id())
        .await
        .expect("ana's own ledger");
    ana.write_accepted(ana_ledger.document_id(), "ana-was-here")
        .await;
    within(
        "ana's change reaches the office",
        ana_ledger.wait_until(|doc| doc.get(ROOT, "ana-was-here").ok().flatten().is_some()),
    )
    .await
    .expect("alive");

    // Neither refused change is on the server.
    for handle in [&catalog, &bob_ledger] {
        let copy = server_copy_of(server.addr(), &tokens["office-1"], handle).await;
        for key in ["forged", "cheaper"] {
            assert!(copy.get(ROOT, key).expect("read").is_none(), "{key}");
        }
    }

    // The sync log shows the refusal.
    ana.close().await;
    let session = ended_session(server.addr(), &tokens["office-1"], "acme/ana/tab-ana").await;
    assert_eq!(session["writes_denied"], 1, "{session}");
    let denials = session["denials"].as_array().cloned().unwrap_or_default();
    assert_eq!(denials.len(), 1, "{session}");
    let denial = denials[0].as_str().unwrap_or_default();
    assert!(
        denial.starts_with(&catalog.document_id().to_string()),
        "{denial}"
    );
    assert!(
        session["error"].is_null(),
        "the server did not end the session: {session}"
    );

    drop((catalog, ana_ledger, bob_ledger));
    office.close().await.expect("close");
}

#[tokio::test]
async fn reporting_reads_every_ledger_of_its_tenant_but_writes_none() {
    let (server, tokens) = server().await;
    let dir = tempfile::tempdir().expect("dir");
    let office = client(&server.url(), dir.path(), "office-1", &tokens["office-1"]);
    let ledger = created(&office, ledger_doc("ana")).await;
    crate::harness::put(&ledger, "office-note", "1");
    within("synced", ledger.synced()).await.expect("synced");

    let mut audit = RawDevice::connect(&server.url(), "rep-1", &tokens["rep-1"]).await;
    audit
        .fetch(ledger.document_id())
        .await
        .expect("reporting reads a seller's ledger");
    assert!(audit.has(ledger.document_id(), "office-note"));
    audit.write_refused(ledger.document_id(), "audited").await;

    // Still subscribed: the office's next change reaches it.
    crate::harness::put(&ledger, "second-note", "1");
    within("synced", ledger.synced()).await.expect("synced");
    let heard = audit.converse().await;
    assert!(errors(&heard).is_empty(), "{heard:?}");
    assert!(audit.has(ledger.document_id(), "second-note"));
    let copy = server_copy_of(server.addr(), &tokens["office-1"], &ledger).await;
    assert!(copy.get(ROOT, "audited").expect("read").is_none());

    drop(ledger);
    office.close().await.expect("close");
}

#[tokio::test]
async fn the_office_writes_the_catalog_and_stock_follows_the_catalogs_vans() {
    let (server, tokens) = server().await;
    let dir = tempfile::tempdir().expect("dir");
    let office = client(&server.url(), dir.path(), "office-1", &tokens["office-1"]);
    let catalog = created(&office, catalog()).await;
    // The office changes the catalog like any document.
    crate::harness::put(&catalog, "office-note", "1");
    within("catalog change saved", catalog.synced())
        .await
        .expect("synced");
    let stock = created(
        &office,
        create_stock_doc(&tenant(), &van(), period(), &[]).expect("doc"),
    )
    .await;

    // The van is ana's in the catalog: she writes its stock; bob only
    // reads it.
    let mut ana = RawDevice::connect(&server.url(), "tab-ana", &tokens["tab-ana"]).await;
    ana.fetch(stock.document_id()).await.expect("ana's stock");
    ana.write_accepted(stock.document_id(), "ana-counted").await;

    let mut bob = RawDevice::connect(&server.url(), "tab-bob", &tokens["tab-bob"]).await;
    bob.fetch(stock.document_id()).await.expect("bob reads it");
    assert!(bob.has(stock.document_id(), "ana-counted"));
    bob.write_refused(stock.document_id(), "bob-counted").await;

    // The office gives the van to bob: from then on he writes its stock.
    catalog
        .change(|doc| {
            put_location(
                doc,
                &Location {
                    id: van(),
                    name: "Bob's van".into(),
                    kind: LocationKind::Vehicle,
                    seller: Some(SellerId::new("bob").expect("id")),
                },
            )
        })
        .expect("change")
        .expect("location");
    within("catalog change saved", catalog.synced())
        .await
        .expect("synced");
    let mut bob = RawDevice::connect(&server.url(), "tab-bob", &tokens["tab-bob"]).await;
    bob.fetch(stock.document_id()).await.expect("bob's stock");
    bob.write_accepted(stock.document_id(), "bob-counted-later")
        .await;

    drop((catalog, stock));
    office.close().await.expect("close");
}

#[tokio::test]
async fn with_credentials_only_the_office_creates_documents() {
    let (server, tokens) = server().await;
    let fresh = DocumentId::from_bytes([77; 16]);
    let mut ana = RawDevice::connect(&server.url(), "tab-ana", &tokens["tab-ana"]).await;
    ana.mark(fresh, "made-by-ana");
    let heard = ana.push(fresh).await;
    assert_only_unavailable(&heard);
    assert!(!ana.acknowledged(fresh));

    let mut office = RawDevice::connect(&server.url(), "office-1", &tokens["office-1"]).await;
    office.write_accepted(fresh, "made-by-office").await;
}

#[tokio::test]
async fn after_a_restart_the_server_still_knows_whose_van_a_stock_document_is() {
    let server = Restartable::start().await;
    let tokens = server.tokens.clone();
    let url = server.url();
    let devices = tempfile::tempdir().expect("dir");
    let office = client(&url, devices.path(), "office-1", &tokens["office-1"]);
    let catalog = created(&office, catalog()).await;
    let stock = created(
        &office,
        create_stock_doc(&tenant(), &van(), period(), &[]).expect("doc"),
    )
    .await;
    let stock_id = stock.document_id();
    drop((catalog, stock));
    office.close().await.expect("close");

    // Nobody opens the catalog after the restart; ana writes her van's
    // stock straight away.
    let server = server.restart().await;
    let url = server.url();
    let mut ana = RawDevice::connect(&url, "tab-ana", &tokens["tab-ana"]).await;
    ana.fetch(stock_id).await.expect("ana's stock");
    ana.write_accepted(stock_id, "ana-counted").await;
    ana.close().await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_device_writing_under_another_devices_actor_is_refused_even_after_a_restart() {
    let server = Restartable::start().await;
    let tokens = server.tokens.clone();
    let url = server.url();
    let devices = tempfile::tempdir().expect("dir");
    let office = client(&url, devices.path(), "office-1", &tokens["office-1"]);
    let ana = SellerId::new("ana").expect("id");
    let ledger = created(&office, ledger_doc("ana")).await;
    let phone_doc = created(
        &office,
        create_device_doc(
            &tenant(),
            &DeviceId::new("phone-ana").expect("id"),
            &ana,
            "K",
        )
        .expect("doc"),
    )
    .await;
    let ledger_id = ledger.document_id();

    // Ana's tablet writes her ledger: its actor is the tablet's from now on.
    let mut tablet = RawDevice::connect(&url, "tab-ana", &tokens["tab-ana"]).await;
    tablet.fetch(ledger_id).await.expect("ana's ledger");
    tablet.write_accepted(ledger_id, "from-tablet").await;
    let tablets_actor = tablet.actor(ledger_id);

    // Her phone may write the same ledger, but not as the tablet.
    let mut phone = RawDevice::connect(&url, "phone-ana", &tokens["phone-ana"]).await;
    phone.fetch(ledger_id).await.expect("ana's ledger");
    assert!(phone.has(ledger_id, "from-tablet"));
    phone.write_as(ledger_id, tablets_actor.clone());
    let refused = phone.write_refused(ledger_id, "forged").await;
    assert!(refused.contains("another device"), "{refused}");
    assert!(!refused.contains("tab-ana"), "names no device: {refused}");
    assert!(!phone.acknowledged(ledger_id));

    // The phone's own document still syncs on the same connection.
    phone
        .fetch(phone_doc.document_id())
        .await
        .expect("its device doc");
    phone
        .write_accepted(phone_doc.document_id(), "phone-was-here")
        .await;
    phone.close().await;

    // The tablet writes on, unaffected.
    tablet.write_accepted(ledger_id, "tablet-again").await;
    tablet.close().await;

    // The server's copy holds the tablet's changes and not the forgery.
    within(
        "the office has the tablet's change",
        ledger.wait_until(|doc| doc.get(ROOT, "tablet-again").ok().flatten().is_some()),
    )
    .await
    .expect("alive");
    let heads = ledger.read(|d| d.get_heads()).expect("read");
    let copy = server_copy(server.running.addr, &tokens["office-1"], ledger_id, heads).await;
    assert!(copy.get(ROOT, "forged").expect("read").is_none());
    assert!(copy.get(ROOT, "tablet-again").expect("read").is_some());
    let session = ended_session(
        server.running.addr,
        &tokens["office-1"],
        "acme/ana/phone-ana",
    )
    .await;
    assert_eq!(session["writes_denied"], 1, "{session}");
    let denial = session["denials"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        denial.starts_with(&ledger_id.to_string()) && denial.contains("another device"),
        "{session}"
    );
    drop((ledger, phone_doc));
    office.close().await.expect("close");

    // After a restart the binding holds: a fresh phone replica still
    // cannot write as the tablet.
    let server = server.restart().await;
    let url = server.url();
    let mut phone = RawDevice::connect(&url, "phone-ana", &tokens["phone-ana"]).await;
    phone.fetch(ledger_id).await.expect("ana's ledger");
    phone.write_as(ledger_id, tablets_actor);
    phone.write_refused(ledger_id, "forged-after-restart").await;
    assert!(!phone.acknowledged(ledger_id));
    phone.close().await;
    server.running.shutdown().await.expect("shutdown");
}
