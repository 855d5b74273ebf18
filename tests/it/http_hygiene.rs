//! HTTP hygiene (issue 10): what a client can hold before its WebSocket
//! upgrade. Half-open requests and idle keep-alive connections are closed,
//! connections in the HTTP phase are capped, and at its open-file limit the
//! server keeps its sessions and answers again once the flood is gone.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::MaybeTlsStream;
use ventas_sync_protocol::ids::{DocumentId, PeerId};

use crate::harness::{
    device, flood_message, http_get, put, wait_for_keys, within, PhoneAndTablet, RawPeer,
    ServerProcess, TestServer, WAIT_MS_MAX,
};

/// Reads until the server closes the connection (a reset counts as
/// closed); returns what it sent before.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut received = Vec::new();
    let _ = within(what, stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).to_string()
}

/// GET /health until it answers 200, every 20 ms, for [`WAIT_MS_MAX`].
async fn health_answers_soon(addr: std::net::SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let request =
                format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            Some(String::from_utf8_lossy(&response).to_string())
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Some(response)) = tokio::time::timeout(left, attempt).await {
            if response.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: /health did not answer within {WAIT_MS_MAX} ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_whose_headers_do_not_arrive_within_the_header_timeout_is_closed() {
    let server = TestServer::start_with(|config| {
        config.http_header_read_timeout_ms = 300;
    })
    .await;
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    let mut half_open = TcpStream::connect(server.addr()).await.expect("connect");
    half_open
        .write_all(b"GET /health HTTP/1.1\r\nHost: ventas\r\n")
        .await
        .expect("write half a request");
    let answer = read_until_closed(&mut half_open, "the half-open request to be closed").await;
    assert!(
        !answer.contains(" 200 "),
        "no answer to half a request: {answer}"
    );
    let answer = read_until_closed(&mut silent, "the silent connection to be closed").await;
    assert!(answer.is_empty() || !answer.contains(" 200 "), "{answer}");
    // Everyone else is still served.
    assert_eq!(
        http_get(server.addr(), "/health").await,
        (200, "ok".to_string())
    );
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(|config| {
        // Far beyond the test: only the idle timeout can close it.
        config.http_header_read_timeout_ms = 600_000;
        config.http_keep_alive_idle_timeout_ms = 300;
    })
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: ventas\r\n\r\n")
        .await
        .expect("write a keep-alive request");
    let answer = read_until_closed(&mut stream, "the idle keep-alive connection to close").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answered first: {answer}"
    );
    assert!(answer.ends_with("ok"), "{answer}");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn past_the_http_phase_cap_a_new_connection_is_closed_at_once_and_the_others_are_served() {
    const HTTP_CONNECTIONS_MAX: usize = 3;
    let server = TestServer::start_with(|config| {
        config.http_connections_max = HTTP_CONNECTIONS_MAX;
        // Far beyond the test: the held connections stay in the HTTP phase.
        config.http_header_read_timeout_ms = 600_000;
    })
    .await;
    // The accept queue is first in, first out: these three are accepted
    // before the one past the cap.
    let mut held = Vec::new();
    for _ in 0..HTTP_CONNECTIONS_MAX {
        held.push(TcpStream::connect(server.addr()).await.expect("connect"));
    }
    let mut past_cap = TcpStream::connect(server.addr()).await.expect("connect");
    let answer = read_until_closed(&mut past_cap, "the connection past the cap to close").await;
    assert!(answer.is_empty(), "closed without an answer: {answer}");

    // The held ones were not harmed: each still gets its answer.
    for stream in &mut held {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: ventas\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_until_closed(stream, "a held connection's answer").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Their slots are free again.
    health_answers_soon(server.addr(), "after the held connections closed").await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn at_its_open_file_limit_the_server_keeps_its_sessions_and_answers_health_again() {
    /// The server's RLIMIT_NOFILE (soft and hard): far fewer than the flood.
    const OPEN_FILES: u64 = 128;
    const FLOOD_CONNECTIONS: usize = 400;
    let dir = tempfile::tempdir().expect("dir");
    // No reserve: the budget is the whole limit, so `accept` itself fails
    // with EMFILE (the worst case; the reserve normally refuses first).
    let server = ServerProcess::spawn_with_open_files(
        &dir.path().join("server"),
        0,
        &[
            "--http-header-read-timeout-ms",
            "500",
            "--reserved-open-files",
            "0",
        ],
        OPEN_FILES,
    )
    .await;
    let url = server.url();
    let PhoneAndTablet {
        phone,
        tablet,
        on_phone,
        on_tablet,
    } = PhoneAndTablet::start(&url, dir.path(), "before").await;

    // A flood that holds its sockets and never sends a byte.
    let mut flood = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        match TcpStream::connect(server.addr).await {
            Ok(stream) => flood.push(stream),
            Err(_) => break,
        }
    }
    assert!(
        flood.len() as u64 > OPEN_FILES,
        "the flood outnumbers the server's descriptors ({} connections)",
        flood.len()
    );
    // The open sessions still sync while the flood holds on.
    put(&on_phone, "during", "2");
    wait_for_keys(&on_tablet, &["during".to_string()]).await;
    // The flood's connections time out in turn, so a new request is served
    // even before the flood lets go (it waits behind it in the queue).
    health_answers_soon(server.addr, "while the flood holds its sockets").await;
    drop(flood);
    health_answers_soon(server.addr, "after the flood").await;
    put(&on_phone, "after", "3");
    wait_for_keys(&on_tablet, &["after".to_string()]).await;

    let mut child = server.child;
    assert!(
        child.try_wait().expect("child status").is_none(),
        "the server is still running"
    );
    phone.close().await.expect("close");
    tablet.close().await.expect("close");
    child.kill().await.expect("kill");
}

/// A handler that panics (here at the `export-status-handler` failpoint)
/// answers 500 with the JSON error shape, and the server, and even the
/// same keep-alive connection, go on serving.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_panicking_handler_answers_a_json_500_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::spawn_isolated(
        &dir.path().join("server"),
        &[],
        &[("FAILPOINTS", "export-status-handler=return")],
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // Two requests on one connection: the panic must not end it.
    stream
        .write_all(
            b"GET /v1/export/status HTTP/1.1\r\nHost: ventas\r\n\r\n\
              GET /health HTTP/1.1\r\nHost: ventas\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write two requests");
    let answers = read_until_closed(&mut stream, "both answers").await;
    let (status, body) = crate::harness::status_and_body(&answers);
    assert_eq!(status, 500, "{answers}");
    let json_end = body.find("HTTP/1.1").unwrap_or(body.len());
    let error: serde_json::Value =
        serde_json::from_str(body.get(..json_end).unwrap_or_default()).expect("a JSON body");
    assert_eq!(error["error"]["code"], "internal", "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(
        !error.to_string().contains("on purpose"),
        "the panic's text stays in the log: {error}"
    );
    let second = answers
        .get(answers.find("\r\n\r\n").unwrap_or(0)..)
        .unwrap_or_default();
    assert!(
        second.contains("HTTP/1.1 200") && second.ends_with("ok"),
        "the same connection answers the next request: {answers}"
    );
    // New connections too.
    assert_eq!(
        http_get(server.addr, "/health").await,
        (200, "ok".to_string())
    );
    assert_eq!(http_get(server.addr, "/v1/export/status").await.0, 500);
    let mut child = server.child;
    assert!(
        child.try_wait().expect("child status").is_none(),
        "the server is still running"
    );
    child.kill().await.expect("kill");
}

/// Asserts `peer` gets a close frame with `code` and a reason containing
/// `reason`, not the bare end of the connection (1006).
async fn assert_closed_with(peer: &mut RawPeer, code: u16, reason: &str) {
    let Some((got_code, got_reason)) = peer.close_frame().await else {
        panic!("closed without a close frame (1006), expected {code} {reason:?}");
    };
    assert_eq!(got_code, code, "close code (reason {got_reason:?})");
    assert!(got_reason.contains(reason), "close reason {got_reason:?}");
}

#[tokio::test]
async fn a_frame_over_twice_the_message_limit_is_closed_with_1009_and_a_reason() {
    const LIMIT: usize = 1024;
    let server = TestServer::start_with(|config| config.message_bytes_max = LIMIT).await;
    // Whole, payload and all: the server reads no more than its frame
    // limit, yet the peer must still learn why.
    let (mut whole, _) = RawPeer::joined(&server.url(), "whole").await;
    // The server may close while the frame is still being written.
    let _ = whole
        .socket
        .send(WsMessage::Binary(vec![0xa0; LIMIT * 4].into()))
        .await;
    assert_closed_with(&mut whole, 1009, "over the limit of 1024 bytes").await;

    // Only a header claiming 1 GiB, written on the raw socket.
    let (mut claims, _) = RawPeer::joined(&server.url(), "claims").await;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    match claims.socket.get_mut() {
        MaybeTlsStream::Plain(stream) => stream.write_all(&header).await.expect("write header"),
        _ => panic!("a plain socket"),
    }
    assert_closed_with(&mut claims, 1009, "over the limit of 1024 bytes").await;

    // Everyone else is still served.
    let (mut other, server_id) = RawPeer::joined(&server.url(), "other").await;
    other
        .assert_unavailable(
            &server_id,
            DocumentId::from_bytes([9; 16]),
            "after the big frames",
        )
        .await;
    server.running.shutdown().await.expect("shutdown");
}

/// A peer that stops reading while others flood its document falls behind:
/// once it reads again it finds, after what was already on its way, a close
/// frame 1013 ("try again later") saying why, not a bare reset.
#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_with_1013_and_a_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, mut log) = ServerProcess::spawn_logged(
        &dir.path().join("server"),
        &[
            "--outbound-queue-messages-max",
            "4",
            "--peer-messages-burst-max",
            "1000000",
        ],
    )
    .await;
    let url = server.url();
    let phone = device(&url, dir.path(), "phone");
    let doc = phone.create().expect("create");
    put(&doc, "k", "v");
    within("synced", doc.synced()).await.expect("synced");
    let document_id = doc.document_id();

    // The slow peer: a small receive buffer, so its socket fills quickly.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (socket, _) = within(
        "upgrade",
        tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("upgrade accepted");
    let (mut slow, server_id) = RawPeer {
        socket,
        peer_id: PeerId::new("slow"),
    }
    .handshake()
    .await;
    let request = slow.request(&server_id, document_id);
    slow.send(&request).await;

    // The server logs the moment it lets the slow peer go.
    let (killed_tx, killed) = tokio::sync::oneshot::channel();
    let log_reader = tokio::spawn(async move {
        let mut killed_tx = Some(killed_tx);
        while let Ok(Some(line)) = log.next_line().await {
            if line.contains("disconnecting slow peer") {
                if let Some(tx) = killed_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    // A chatty peer floods ephemeral messages on the document until then.
    let (mut chatty, _) = RawPeer::joined(&url, "chatty").await;
    let request = chatty.request(&server_id, document_id);
    chatty.send(&request).await;
    let flood = async {
        let mut count = 0u64;
        loop {
            count += 1;
            let message = flood_message(&server_id, document_id, count);
            chatty.send(&message).await;
        }
    };
    tokio::select! {
        _ = within("the slow peer to be let go", killed) => {}
        _ = flood => unreachable!("the flood never ends"),
    }
    // Now it reads again: what was on its way, then the close frame.
    assert_closed_with(&mut slow, 1013, "peer too slow").await;

    // Everyone else is still served.
    put(&doc, "after", "flood");
    within("synced", doc.synced()).await.expect("synced");
    phone.close().await.expect("close");
    let mut child = server.child;
    child.kill().await.expect("kill");
    log_reader.abort();
}
