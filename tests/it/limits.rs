//! Each limit at its bound: accepted at the limit, refused past it, and
//! only the offending peer is affected.

use std::time::Duration;

use serde_json::Value;
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::{encode, Message};

use crate::harness::*;

/// An ephemeral message of exactly `bytes` encoded bytes.
fn ephemeral_of_size(
    sender: &str,
    target: &PeerId,
    document_id: DocumentId,
    bytes: usize,
) -> Vec<u8> {
    let mut data_len = bytes;
    loop {
        let message = Message::Ephemeral {
            sender_id: PeerId::new(sender),
            target_id: target.clone(),
            count: 1,
            session_id: "s".to_string(),
            document_id,
            data: vec![0u8; data_len],
        };
        let frame = encode(&message);
        match frame.len().cmp(&bytes) {
            std::cmp::Ordering::Equal => return frame,
            std::cmp::Ordering::Greater => data_len -= frame.len() - bytes,
            std::cmp::Ordering::Less => data_len += bytes - frame.len(),
        }
    }
}

#[tokio::test]
async fn a_message_at_the_size_limit_is_accepted_and_one_byte_over_disconnects() {
    let limit = 64 * 1024;
    let server = TestServer::start_with(|c| c.message_bytes_max = limit).await;
    let doc = DocumentId::from_bytes([1; 16]);

    let (mut at_limit, server_id) = RawPeer::joined(&server.url(), "at-limit").await;
    at_limit
        .send_raw(ephemeral_of_size("at-limit", &server_id, doc, limit))
        .await;
    // Still served: a request after it is answered.
    at_limit
        .assert_unavailable(&server_id, doc, "a frame at the limit must be accepted")
        .await;

    let (mut over, over_server_id) = RawPeer::joined(&server.url(), "over-limit").await;
    over.send_raw(ephemeral_of_size(
        "over-limit",
        &over_server_id,
        doc,
        limit + 1,
    ))
    .await;
    let error = over.expect_error_and_close().await;
    assert!(error.contains("over the limit"), "{error}");
    let session = ended_session(&server, "over-limit").await;
    assert!(
        session["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{session}"
    );

    // The peer at the limit is undisturbed.
    at_limit
        .assert_unavailable(&server_id, doc, "still served")
        .await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn connections_past_the_limit_get_http_503_and_a_freed_slot_is_reused() {
    let server = TestServer::start_with(|c| c.connections_max = 2).await;
    let (first, _) = RawPeer::joined(&server.url(), "one").await;
    let (_second, _) = RawPeer::joined(&server.url(), "two").await;
    let refused = tokio_tungstenite::connect_async(server.url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("third connection should get 503, got {other:?}"),
    }
    drop(first);
    assert_admitted_soon("a freed slot must admit a new connection", || {
        Box::pin(tokio_tungstenite::connect_async(server.url()))
    })
    .await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn opening_more_documents_than_allowed_disconnects_that_peer_only() {
    let server = TestServer::start_with(|c| c.docs_per_peer_max = 2).await;
    let (mut greedy, server_id) = RawPeer::joined(&server.url(), "greedy").await;
    for n in 1..=2u8 {
        greedy
            .assert_unavailable(
                &server_id,
                DocumentId::from_bytes([n; 16]),
                "doc {n} is within the limit",
            )
            .await;
    }
    let (mut modest, _) = RawPeer::joined(&server.url(), "modest").await;
    let request = greedy.request(&server_id, DocumentId::from_bytes([3; 16]));
    greedy.send(&request).await;
    let error = greedy.expect_error_and_close().await;
    assert!(error.contains("too many documents"), "{error}");

    modest
        .assert_unavailable(&server_id, DocumentId::from_bytes([3; 16]), "still served")
        .await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_after_the_join_timeout() {
    let server = TestServer::start_with(|c| c.join_timeout_ms = 200).await;
    let mut silent = RawPeer::connect(&server.url(), "silent").await;
    let started = std::time::Instant::now();
    assert!(
        silent.recv().await.is_none(),
        "server must close a silent connection"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "closed too early"
    );
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_unsupported_protocol_version_gets_an_error_and_a_close() {
    let server = TestServer::start().await;
    let mut peer = RawPeer::connect(&server.url(), "future").await;
    peer.send(&Message::Join {
        sender_id: PeerId::new("future"),
        supported_protocol_versions: vec!["2".to_string()],
        peer_metadata: None,
    })
    .await;
    let error = peer.expect_error_and_close().await;
    assert!(error.contains("unsupported protocol version"), "{error}");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_disconnected_when_its_queue_fills() {
    let server = TestServer::start_with(|c| c.outbound_queue_messages_max = 4).await;
    let dir = tempfile::tempdir().expect("dir");
    let phone = device(&server.url(), dir.path(), "phone");
    let doc = phone.create().expect("create");
    put(&doc, "k", "v");
    within("synced", doc.synced()).await.expect("synced");
    let document_id = doc.document_id();

    // The slow peer opens the document, then never reads again.
    let (mut slow, server_id) = RawPeer::joined(&server.url(), "slow").await;
    let request = slow.request(&server_id, document_id);
    slow.send(&request).await;
    // A chatty peer floods ephemeral messages on the same document.
    let (mut chatty, _) = RawPeer::joined(&server.url(), "chatty").await;
    let request = chatty.request(&server_id, document_id);
    chatty.send(&request).await;
    assert!(matches!(chatty.recv().await, Some(Message::Sync { .. })));
    let mut count = 0u64;
    let session = loop {
        for _ in 0..16 {
            count += 1;
            let message = flood_message(&server_id, document_id, count);
            chatty.send(&message).await;
        }
        let (_, body) = http_get(server.addr(), "/v1/sync-sessions?limit=500").await;
        let page: Value = serde_json::from_str(&body).expect("json");
        let ended = page["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["peer_id"] == "slow" && !s["disconnected_at_ms"].is_null())
            .cloned();
        if let Some(session) = ended {
            break session;
        }
        assert!(count < 100_000, "the slow peer was never disconnected");
    };
    assert!(
        session["error"]
            .as_str()
            .is_some_and(|e| e.contains("outbound queue full")),
        "{session}"
    );
    // Everyone else is still served.
    put(&doc, "after", "flood");
    within("synced", doc.synced()).await.expect("synced");
    drop(slow);
    phone.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn documents_beyond_the_memory_limit_are_evicted_and_reload_from_disk() {
    let server = TestServer::start_with(|c| {
        c.docs_in_memory_max = 2;
        c.doc_idle_evict_after_ms = 0;
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    // Five documents written one after the other by short-lived devices:
    // the server never holds more than two, so it must evict and reload.
    let mut urls = Vec::new();
    for n in 0..5 {
        let client = device(&server.url(), dir.path(), &format!("writer-{n}"));
        let doc = client.create().expect("create");
        put(&doc, "n", &n.to_string());
        within("synced", doc.synced()).await.expect("synced");
        urls.push(doc.url());
        drop(doc);
        client.close().await.expect("close");
    }
    // Each read by a short-lived device, so at most one is open at a time.
    for (n, url) in urls.iter().enumerate() {
        let reader = device(&server.url(), dir.path(), &format!("reader-{n}"));
        let handle = reader.open_url(url).expect("open");
        within("reload", handle.ready())
            .await
            .expect("available after eviction");
        wait_for_keys(&handle, &["n".to_string()]).await;
        drop(handle);
        reader.close().await.expect("close");
    }

    // Three documents open at once on one connection exceed the memory
    // limit: the third is refused with an error, nothing crashes.
    let (mut peer, server_id) = RawPeer::joined(&server.url(), "hoarder").await;
    let mut errors = 0;
    for url in urls.iter().take(3) {
        let id = DocumentId::parse(url).expect("url");
        let request = peer.request(&server_id, id);
        peer.send(&request).await;
        match peer.recv().await {
            Some(Message::Sync { .. }) => {}
            Some(Message::Error { message, .. }) => {
                assert!(message.contains("maximum"), "{message}");
                errors += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(errors, 1, "exactly the third document must be refused");
    server.running.shutdown().await.expect("shutdown");
}
