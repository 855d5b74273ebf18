//! The per-peer and per-source limits (message rate, connections per
//! address and per tenant, idle timeout), each at its bound and past it,
//! and TLS served directly with a self-signed certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::Connector;
use ventas::server::auth::Role;
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

use crate::harness::*;

/// Rounds of a hand-driven sync conversation before the test gives up.
const SYNC_ROUNDS_MAX: usize = 20;

/// An ephemeral message for a document nobody has open: the hub drops it
/// without an answer, so it costs the sender one message and nothing else.
fn ephemeral(sender: &PeerId, server: &PeerId, count: u64) -> Message {
    Message::Ephemeral {
        sender_id: sender.clone(),
        target_id: server.clone(),
        count,
        session_id: "rate".to_string(),
        document_id: DocumentId::from_bytes([9; 16]),
        data: vec![1],
    }
}

/// The HTTP status a refused upgrade got.
async fn refused_upgrade_status(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> u16 {
    match within("upgrade", tokio_tungstenite::connect_async(request)).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_peer_over_its_message_rate_gets_an_error_and_others_are_unaffected() {
    let burst = 20;
    // One token a second: the few seconds a loaded test machine may take
    // cannot refill the five messages sent past the burst.
    let server = TestServer::start_with(|c| {
        c.peer_messages_per_second_max = 1;
        c.peer_messages_burst_max = burst;
    })
    .await;
    let (mut calm, server_id) = RawPeer::joined(&server.url(), "calm").await;
    let (mut chatty, _) = RawPeer::joined(&server.url(), "chatty").await;

    // At the bound: the join, burst - 2 ephemerals and one request are
    // exactly `burst` messages, and the request is still answered.
    for count in 1..=u64::from(burst - 2) {
        chatty
            .send(&ephemeral(&chatty.peer_id.clone(), &server_id, count))
            .await;
    }
    chatty
        .assert_unavailable(
            &server_id,
            DocumentId::from_bytes([1; 16]),
            "a peer within its burst is served",
        )
        .await;

    // Past it: the next messages exceed the rate.
    for count in 100..105 {
        chatty
            .send(&ephemeral(&chatty.peer_id.clone(), &server_id, count))
            .await;
    }
    let error = chatty.expect_error_and_close().await;
    assert!(error.contains("message rate limit exceeded"), "{error}");

    // The calm peer, on the same server, is still served.
    calm.assert_unavailable(&server_id, DocumentId::from_bytes([2; 16]), "still served")
        .await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn connections_past_the_per_address_limit_get_http_429_and_a_freed_slot_is_reused() {
    let server = TestServer::start_with(|c| c.connections_per_address_max = 2).await;
    let (first, _) = RawPeer::joined(&server.url(), "one").await;
    let (mut second, server_id) = RawPeer::joined(&server.url(), "two").await;
    let request = server.url().into_client_request().expect("request");
    assert_eq!(refused_upgrade_status(request).await, 429);

    // The connections at the limit are still served.
    second
        .assert_unavailable(&server_id, DocumentId::from_bytes([1; 16]), "still served")
        .await;

    drop(first);
    assert_admitted_soon("a freed slot must admit a new connection", || {
        Box::pin(tokio_tungstenite::connect_async(server.url()))
    })
    .await;
    server.running.shutdown().await.expect("shutdown");
}

/// Issues seller credentials, (tenant, device) each, into the data
/// directory of a server yet to start; returns the tokens in order.
fn issue(dir: &Path, wanted: &[(&str, &str)]) -> Vec<String> {
    let wanted: Vec<_> = wanted
        .iter()
        .map(|(tenant, device)| (*tenant, "ana", *device, Role::Seller, None))
        .collect();
    issue_credentials(dir, &wanted)
}

#[tokio::test]
async fn connections_past_the_per_tenant_limit_get_http_429_and_other_tenants_are_admitted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = issue(
        dir.path(),
        &[
            ("acme", "tablet-1"),
            ("acme", "tablet-2"),
            ("acme", "tablet-3"),
            ("globex", "tablet-9"),
        ],
    );
    let server = TestServer::start_in(dir, |c| c.connections_per_tenant_max = 2).await;
    let url = server.url();
    let connect = |token: &str| tokio_tungstenite::connect_async(bearer(&url, token));
    let (first, _) = within("first", connect(&tokens[0]))
        .await
        .expect("first of acme admitted");
    let (_second, _) = within("second", connect(&tokens[1]))
        .await
        .expect("second of acme admitted: at the limit");
    assert_eq!(refused_upgrade_status(bearer(&url, &tokens[2])).await, 429);
    let (_other, _) = within("other tenant", connect(&tokens[3]))
        .await
        .expect("another tenant is not affected");

    drop(first);
    assert_admitted_soon("a freed tenant slot must admit a new connection", || {
        Box::pin(connect(&tokens[2]))
    })
    .await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_peer_that_answers_no_pings_is_closed_after_the_idle_timeout_and_a_live_one_stays() {
    // Pings every 100 ms; a reading peer answers within milliseconds, so an
    // idle timeout of 1 s is over 10x what the live peer needs even on a
    // loaded machine.
    let idle_timeout_ms = 1_000;
    let server = TestServer::start_with(|c| {
        c.keepalive_interval_ms = 100;
        c.idle_timeout_ms = idle_timeout_ms;
    })
    .await;
    let (mut live, server_id) = RawPeer::joined(&server.url(), "live").await;
    let (mut frozen, _) = RawPeer::joined(&server.url(), "frozen").await;
    let started = std::time::Instant::now();

    // The frozen peer reads nothing, so it sends no pongs: the
    // server has closed it. (Its `error` message went out before the close
    // frame, but the pongs a reading client then owes the closed socket
    // make the kernel reset it and drop what was unread, so the sync log
    // is where to look.)
    // The live peer keeps reading (answering pings) while the server ends
    // the frozen one's session, close handshake wait included.
    let session = tokio::select! {
        session = ended_session(&server, "frozen") => session,
        message = live.recv() => panic!("the live peer must stay open, got {message:?}"),
    };
    let error = session["error"].as_str().unwrap_or_default();
    assert!(error.contains("idle for 1000 ms"), "{session}");
    let lasted_ms = session["disconnected_at_ms"].as_u64().unwrap_or(0)
        - session["connected_at_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(lasted_ms >= idle_timeout_ms, "closed too early: {session}");
    while frozen.recv().await.is_some() {}
    assert!(started.elapsed() >= Duration::from_millis(idle_timeout_ms));

    live.assert_unavailable(&server_id, DocumentId::from_bytes([1; 16]), "still served")
        .await;
    server.running.shutdown().await.expect("shutdown");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM
/// files into `dir`; returns (cert path, key path, certificate DER).
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).expect("write key");
    (cert_path, key_path, certified.cert.der().to_vec())
}

/// A rustls client that trusts exactly `certificate`.
fn trusting(certificate: Vec<u8>) -> Connector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(certificate))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

/// Connects over wss:// trusting `certificate` and joins as `name`.
async fn joined_over_tls(url: &str, certificate: &[u8], name: &str) -> (RawPeer, PeerId) {
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(trusting(certificate.to_vec())),
    );
    let (socket, _) = within("wss connect", connect)
        .await
        .expect("TLS handshake and upgrade");
    RawPeer {
        socket,
        peer_id: PeerId::new(name),
    }
    .handshake()
    .await
}

/// Runs the automerge sync conversation for `doc` until `done`; the first
/// message is a `request` when `requesting` (we lack the document).
async fn sync_until(
    peer: &mut RawPeer,
    server: &PeerId,
    document_id: DocumentId,
    doc: &mut Automerge,
    requesting: bool,
    done: impl Fn(&Automerge, &State) -> bool,
) {
    let mut state = State::new();
    let mut first = true;
    for _ in 0..SYNC_ROUNDS_MAX {
        if let Some(message) = doc.generate_sync_message(&mut state) {
            let data = message.encode();
            let message = if first && requesting {
                Message::Request {
                    sender_id: peer.peer_id.clone(),
                    target_id: server.clone(),
                    document_id,
                    data,
                }
            } else {
                Message::Sync {
                    sender_id: peer.peer_id.clone(),
                    target_id: server.clone(),
                    document_id,
                    data,
                }
            };
            first = false;
            peer.send(&message).await;
        }
        if done(doc, &state) {
            return;
        }
        match peer.recv().await {
            Some(Message::Sync { data, .. }) => {
                let message = automerge::sync::Message::decode(&data).expect("decodes");
                doc.receive_sync_message(&mut state, message)
                    .expect("applies");
            }
            Some(Message::RemoteHeadsChanged { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no sync after {SYNC_ROUNDS_MAX} rounds");
}

#[tokio::test]
async fn the_server_serves_wss_with_a_self_signed_certificate_and_peers_sync_over_it() {
    let certificates = tempfile::tempdir().expect("dir");
    let (cert_path, key_path, certificate) = self_signed(certificates.path());
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert_path);
        c.tls_key = Some(key_path);
    })
    .await;
    let url = format!("wss://{}", server.addr());

    // A writer syncs a change until the server acknowledges it.
    let (mut writer, server_id) = joined_over_tls(&url, &certificate, "writer").await;
    let document_id = DocumentId::from_bytes([7; 16]);
    let mut written = Automerge::new();
    let mut tx = written.transaction();
    tx.put(ROOT, "sold", "3 boxes").expect("put");
    tx.commit();
    sync_until(
        &mut writer,
        &server_id,
        document_id,
        &mut written,
        false,
        |doc, state| {
            let theirs = state.their_heads.clone().unwrap_or_default();
            doc.get_heads().iter().all(|head| theirs.contains(head))
        },
    )
    .await;

    // A reader, also over TLS, gets it from the server.
    let (mut reader, _) = joined_over_tls(&url, &certificate, "reader").await;
    let mut read = Automerge::new();
    sync_until(
        &mut reader,
        &server_id,
        document_id,
        &mut read,
        true,
        |doc, _| doc.get(ROOT, "sold").ok().flatten().is_some(),
    )
    .await;

    // Plain ws:// to a TLS port does not get through.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}", server.addr())).await;
    assert!(plain.is_err(), "plain WebSocket to a TLS port must fail");
    drop(writer);
    drop(reader);
    server.running.shutdown().await.expect("shutdown");
}

/// Asserts the close frame `peer` gets: `code`, and a reason containing
/// `reason` (a peer cut off by a limit must learn which).
async fn assert_closed_with(peer: &mut RawPeer, code: u16, reason: &str) {
    let frame = peer.close_frame().await;
    let Some((got_code, got_reason)) = frame else {
        panic!("closed without a close frame (1006), expected {code} {reason:?}");
    };
    assert_eq!(got_code, code, "close code (reason {got_reason:?})");
    assert!(got_reason.contains(reason), "close reason {got_reason:?}");
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009_and_a_reason() {
    let limit = 1024;
    let server = TestServer::start_with(|c| c.message_bytes_max = limit).await;
    let (mut peer, _) = RawPeer::joined(&server.url(), "big").await;
    peer.send_raw(vec![0xa0; limit + 1]).await;
    assert_closed_with(&mut peer, 1009, "over the limit of 1024 bytes").await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_peer_over_its_message_rate_is_closed_with_1008_and_a_reason() {
    let server = TestServer::start_with(|c| {
        c.peer_messages_per_second_max = 1;
        c.peer_messages_burst_max = 2;
    })
    .await;
    let (mut peer, server_id) = RawPeer::joined(&server.url(), "chatty").await;
    // The join took one token; these overrun the burst.
    for count in 0..4 {
        peer.send(&ephemeral(&peer.peer_id.clone(), &server_id, count))
            .await;
    }
    assert_closed_with(&mut peer, 1008, "message rate limit exceeded").await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_peer_past_its_documents_is_closed_with_1008_and_a_reason() {
    let server = TestServer::start_with(|c| c.docs_per_peer_max = 1).await;
    let (mut peer, server_id) = RawPeer::joined(&server.url(), "greedy").await;
    peer.assert_unavailable(&server_id, DocumentId::from_bytes([1; 16]), "within")
        .await;
    let request = peer.request(&server_id, DocumentId::from_bytes([2; 16]));
    peer.send(&request).await;
    assert_closed_with(&mut peer, 1008, "too many documents").await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_with_1008_and_a_reason() {
    let server = TestServer::start_with(|c| c.join_timeout_ms = 200).await;
    let mut silent = RawPeer::connect(&server.url(), "silent").await;
    assert_closed_with(&mut silent, 1008, "no join within 200 ms").await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_frozen_peer_is_closed_after_the_idle_timeout_with_1008_and_a_reason() {
    let idle_timeout_ms = 200;
    let server = TestServer::start_with(|c| {
        c.keepalive_interval_ms = 100;
        c.idle_timeout_ms = idle_timeout_ms;
    })
    .await;
    let (mut frozen, _) = RawPeer::joined(&server.url(), "frozen").await;
    // Reading answers pings, so the peer must not read to be idle: it
    // stops for ten idle timeouts, well inside the server's close handshake
    // wait (5 s), then reads what the server sent. This sleep orders no
    // events: not reading for a while is the behaviour under test, and the
    // close it then finds is an event (a close frame with its reason).
    tokio::time::sleep(Duration::from_millis(10 * idle_timeout_ms)).await;
    assert_closed_with(&mut frozen, 1008, "idle for 200 ms").await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_peer_id_of_256_bytes_joins_and_257_is_refused_with_a_reason() {
    let server = TestServer::start().await;
    let at_limit = "p".repeat(256);
    let (mut joined, server_id) = RawPeer::joined(&server.url(), &at_limit).await;
    joined
        .assert_unavailable(&server_id, DocumentId::from_bytes([1; 16]), "joined")
        .await;

    let mut over = RawPeer::connect(&server.url(), &"p".repeat(257)).await;
    over.send_join().await;
    let error = match over.recv().await {
        Some(Message::Error { message, .. }) => message,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(error.contains("peer id of 257 bytes"), "{error}");
    assert_closed_with(&mut over, 1008, "over the limit of 256 bytes").await;
    server.running.shutdown().await.expect("shutdown");
}
