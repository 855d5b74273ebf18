//! HTTP hygiene (issue 10): what a client can hold before its WebSocket
//! upgrade. Half-open requests and idle keep-alive connections are closed,
//! connections in the HTTP phase are capped, and at its open-file limit the
//! server keeps its sessions and answers again once the flood is gone.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    http_get, put, wait_for_keys, within, PhoneAndTablet, ServerProcess, TestServer, WAIT_MS_MAX,
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
