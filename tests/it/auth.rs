//! Device credentials end to end: refused before the upgrade, accepted in
//! all three places a token can travel, revoked and expired while
//! connected, bound to the peer id, guarding the sync log, and managed by
//! the `ventas token` CLI.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use ventas::client::{Client, ClientConfig};
use ventas::server::auth::Role;
use ventas::storage::{DocStore, SledStore};
use ventas_sync_protocol::ids::PeerId;

use crate::harness::{
    bearer, http_get, http_request, issue_credentials, put, wait_for_keys, within, RawPeer,
    TestServer,
};

/// How long a test waits for a revoked or expired credential's connection
/// to close. The product promise is an event, not a duration: revoking
/// re-checks every open connection at once (a change counter every
/// connection watches, no polling), and expiry fires each connection's
/// own timer at `expires_at_ms` (never before: checked below). Milliseconds
/// are expected; a loaded machine must not fail the test, and a server
/// that never closes still does.
const CLOSE_AFTER_REVOKE_MS_MAX: u64 = crate::harness::WAIT_MS_MAX;

/// Issues `acme`/`ana` credentials into the data directory of a server yet
/// to start. Each entry is (device, role, expires_at_ms).
fn issue(dir: &Path, wanted: &[(&str, Role, Option<u64>)]) -> Vec<String> {
    let wanted: Vec<_> = wanted
        .iter()
        .map(|(device, role, expires)| ("acme", "ana", *device, *role, *expires))
        .collect();
    issue_credentials(dir, &wanted)
}

/// A server whose store holds the given credentials (auth mode auto, so
/// they make it required).
async fn server_with(wanted: &[(&str, Role, Option<u64>)]) -> (TestServer, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = issue(dir.path(), wanted);
    (TestServer::start_in(dir, |_| {}).await, tokens)
}

/// The one body every refused credential gets, whatever the reason.
const REFUSAL_BODY: &str =
    r#"{"error":{"code":"unauthorized","message":"missing or invalid credential"}}"#;

/// The HTTP status of a refused upgrade; its body must be the generic one.
async fn refused_status(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> u16 {
    match within("upgrade", tokio_tungstenite::connect_async(request)).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(body), REFUSAL_BODY);
            response.status().as_u16()
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Connects with `request` and completes the join as `name`.
async fn joined_with(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    name: &str,
) -> RawPeer {
    RawPeer::connect_with(request, name)
        .await
        .handshake()
        .await
        .0
}

/// Waits (bounded) until the server closes `peer`; returns its error message.
async fn closed_with_error(peer: &mut RawPeer, within_ms: u64) -> String {
    match tokio::time::timeout(
        Duration::from_millis(within_ms),
        peer.expect_error_and_close(),
    )
    .await
    {
        Ok(message) => message,
        Err(_) => panic!("connection still open after {within_ms} ms"),
    }
}

/// The peer still gets answers: a request for an unknown document is
/// answered with doc-unavailable.
async fn still_served(peer: &mut RawPeer, server: &PeerId) {
    peer.assert_unavailable(
        server,
        ventas_sync_protocol::ids::DocumentId::from_bytes([9; 16]),
        "expected doc-unavailable",
    )
    .await;
}

#[tokio::test]
async fn upgrade_without_a_token_is_refused_with_401_before_the_upgrade() {
    let (server, _tokens) = server_with(&[("tab-1", Role::Seller, None)]).await;
    let request = server.url().into_client_request().expect("request");
    assert_eq!(refused_status(request).await, 401);
    let (health, body) = http_get(server.addr(), "/health").await;
    assert_eq!((health, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn upgrade_with_a_wrong_token_is_refused_with_401() {
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, None)]).await;
    let id = tokens[0].split('_').nth(1).expect("id");
    let forged = format!("ventas_{id}_{}", "0".repeat(64));
    for wrong in [forged.as_str(), "not-a-token", ""] {
        assert_eq!(
            refused_status(bearer(&server.url(), wrong)).await,
            401,
            "{wrong}"
        );
    }
    let query = format!("{}/?token={forged}", server.url());
    assert_eq!(
        refused_status(query.into_client_request().expect("request")).await,
        401
    );
}

#[tokio::test]
async fn upgrade_with_an_expired_token_is_refused_with_401() {
    let past = ventas::now_ms() - 1_000;
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, Some(past))]).await;
    assert_eq!(refused_status(bearer(&server.url(), &tokens[0])).await, 401);
}

#[tokio::test]
async fn devices_with_bearer_tokens_sync_a_document() {
    // Office devices: once credentials exist, a document without a domain
    // `meta` map is the office's alone (see `authorization.rs`).
    let (server, tokens) =
        server_with(&[("tab-1", Role::Office, None), ("tab-2", Role::Office, None)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |name: &str, token: &str| {
        let mut config = ClientConfig::new(server.url(), dir.path().join(name));
        config.peer_id = Some(name.to_string());
        config.token = Some(token.to_string());
        config.reconnect_initial_ms = 20;
        config.reconnect_max_ms = 200;
        Client::open(config).expect("device opens")
    };
    let writer = open("tab-1", &tokens[0]);
    let handle = writer.create().expect("create");
    put(&handle, "sale", "1");
    within("sale saved on server", handle.synced())
        .await
        .expect("synced");
    let reader = open("tab-2", &tokens[1]);
    let copy = reader.open_url(&handle.url()).expect("open");
    wait_for_keys(&copy, &["sale".to_string()]).await;
    writer.close().await.expect("close");
    reader.close().await.expect("close");
}

#[tokio::test]
async fn a_token_in_the_query_string_connects_and_syncs() {
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, None)]).await;
    let url = format!("{}/?token={}", server.url(), tokens[0]);
    let (mut peer, server_id) = RawPeer::connect_with(url, "tab-1").await.handshake().await;
    still_served(&mut peer, &server_id).await;
}

#[tokio::test]
async fn a_token_in_the_subprotocol_connects_and_the_server_selects_ventas() {
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, None)]).await;
    let mut request = server.url().into_client_request().expect("request");
    let offered = format!("ventas, ventas.bearer.{}", tokens[0]);
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&offered).expect("header"),
    );
    let (socket, response) = within("connect", tokio_tungstenite::connect_async(request))
        .await
        .expect("upgrade accepted");
    assert_eq!(
        response.headers().get(header::SEC_WEBSOCKET_PROTOCOL),
        Some(&HeaderValue::from_static("ventas"))
    );
    let (mut peer, server_id) = RawPeer {
        socket,
        peer_id: PeerId::new("tab-1"),
    }
    .handshake()
    .await;
    still_served(&mut peer, &server_id).await;
}

#[tokio::test]
async fn a_token_offered_only_as_a_subprotocol_is_never_echoed_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, None)]).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: ventas.bearer.{}\r\n\r\n",
        server.addr(),
        tokens[0]
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = within("the answer", stream.read(&mut byte))
            .await
            .expect("read");
        assert_eq!(read, 1, "closed before the end of the head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        !head.contains(&tokens[0].to_lowercase()),
        "token echoed: {head}"
    );
    assert!(!head.contains("ventas.bearer"), "{head}");
}

#[tokio::test]
async fn revoking_a_token_closes_its_open_connection_at_once_and_spares_others() {
    let (server, tokens) = server_with(&[
        ("tab-1", Role::Seller, None),
        ("tab-2", Role::Seller, None),
        ("office-1", Role::Office, None),
    ])
    .await;
    let mut doomed = joined_with(bearer(&server.url(), &tokens[0]), "tab-1").await;
    let (mut spared, server_id) = RawPeer::connect_with(bearer(&server.url(), &tokens[1]), "tab-2")
        .await
        .handshake()
        .await;
    let id = tokens[0].split('_').nth(1).expect("id");
    let office = format!("Bearer {}", tokens[2]);
    let (status, body) = http_request(
        server.addr(),
        "POST",
        &format!("/v1/tokens/{id}/revoke"),
        &[("Authorization", office.as_str())],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let error = closed_with_error(&mut doomed, CLOSE_AFTER_REVOKE_MS_MAX).await;
    assert!(error.contains("revoked"), "{error}");
    still_served(&mut spared, &server_id).await;
    assert_eq!(refused_status(bearer(&server.url(), &tokens[0])).await, 401);
}

#[tokio::test]
async fn an_open_connection_closes_when_its_token_expires() {
    // Starting a server and joining takes milliseconds: 4 s is over 10x
    // that, so the join is never refused as already expired. What the test
    // checks does not depend on timing: the close says "expired", and it
    // never comes before the expiry (a credential works until then).
    const LIFETIME_MS: u64 = 4_000;
    let expires_at_ms = ventas::now_ms() + LIFETIME_MS;
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, Some(expires_at_ms))]).await;
    let mut peer = joined_with(bearer(&server.url(), &tokens[0]), "tab-1").await;
    let error = closed_with_error(&mut peer, LIFETIME_MS + CLOSE_AFTER_REVOKE_MS_MAX).await;
    let closed_at_ms = ventas::now_ms();
    assert!(error.contains("expired"), "{error}");
    assert!(
        closed_at_ms >= expires_at_ms,
        "closed {} ms before the expiry",
        expires_at_ms - closed_at_ms
    );
}

#[tokio::test]
async fn a_join_claiming_another_peer_id_gets_an_error_and_a_close() {
    let (server, tokens) = server_with(&[("tab-1", Role::Seller, None)]).await;
    for claimed in ["tab-2", "tab-10", "other/tab-1"] {
        let mut peer = RawPeer::connect_with(bearer(&server.url(), &tokens[0]), claimed).await;
        peer.send_join().await;
        let error = closed_with_error(&mut peer, CLOSE_AFTER_REVOKE_MS_MAX).await;
        assert!(error.contains("not allowed"), "{claimed}: {error}");
    }
    // Its own device id, with or without a `/` suffix, is fine.
    joined_with(bearer(&server.url(), &tokens[0]), "tab-1/tab2").await;
}

#[tokio::test]
async fn the_sync_log_needs_an_office_or_reporting_credential() {
    let (server, tokens) = server_with(&[
        ("tab-1", Role::Seller, None),
        ("office-1", Role::Office, None),
        ("report-1", Role::Reporting, None),
    ])
    .await;
    let path = "/v1/sync-sessions";
    assert_eq!(http_get(server.addr(), path).await.0, 401);
    let with = |token: &str| format!("Bearer {token}");
    let seller = with(&tokens[0]);
    let office = with(&tokens[1]);
    let reporting = with(&tokens[2]);
    let addr = server.addr();
    let get = |auth: String| async move {
        http_request(addr, "GET", path, &[("Authorization", auth.as_str())], "").await
    };
    assert_eq!(get(seller).await.0, 403);
    let (status, body) = get(office).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"sessions\""), "{body}");
    assert_eq!(get(reporting).await.0, 200);
    assert_eq!(get(with("ventas_nope")).await.0, 401);
}

#[tokio::test]
async fn with_no_credential_issued_the_server_runs_open_but_admin_stays_closed() {
    // Auto mode with an empty store, as `cargo run -- serve` starts.
    let server = TestServer::start().await;
    let (mut anonymous, server_id) = RawPeer::joined(&server.url(), "anyone").await;
    still_served(&mut anonymous, &server_id).await;
    assert_eq!(http_get(server.addr(), "/v1/sync-sessions").await.0, 200);
    // Nobody can mint the first credential over the network.
    let (status, _) = http_request(
        server.addr(),
        "POST",
        "/v1/tokens",
        &[],
        r#"{"tenant":"acme","seller":"ana","device":"x","role":"office"}"#,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(http_get(server.addr(), "/v1/tokens").await.0, 401);
}

#[tokio::test]
async fn office_tokens_issue_and_list_credentials_over_http() {
    let (server, tokens) = server_with(&[
        ("office-1", Role::Office, None),
        ("tab-1", Role::Seller, None),
    ])
    .await;
    let office = format!("Bearer {}", tokens[0]);
    let seller = format!("Bearer {}", tokens[1]);
    let body =
        r#"{"tenant":"acme","seller":"bea","device":"tab-9","role":"seller","expires":"1d"}"#;
    let (status, _) = http_request(
        server.addr(),
        "POST",
        "/v1/tokens",
        &[("Authorization", seller.as_str())],
        body,
    )
    .await;
    assert_eq!(status, 403);
    let (status, issued) = http_request(
        server.addr(),
        "POST",
        "/v1/tokens",
        &[("Authorization", office.as_str())],
        body,
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let issued: serde_json::Value = serde_json::from_str(&issued).expect("json");
    let token = issued["token"].as_str().expect("token").to_string();
    joined_with(bearer(&server.url(), &token), "tab-9").await;
    let (status, list) = http_request(
        server.addr(),
        "GET",
        "/v1/tokens",
        &[("Authorization", office.as_str())],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(list.contains("tab-9"), "{list}");
    assert!(!list.contains(&token), "lists never show tokens");
    assert!(!list.contains("token_sha256"), "nor their hashes");
}

#[tokio::test]
async fn a_refused_device_recovers_at_once_when_given_a_new_token() {
    // An office device, the role that may create documents.
    let (server, tokens) = server_with(&[("tab-1", Role::Office, None)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ClientConfig::new(server.url(), dir.path().join("tab-1"));
    config.peer_id = Some("tab-1".to_string());
    config.token = Some("ventas_wrong".to_string());
    // Far longer than the test may wait: only set_token can wake it.
    config.auth_refused_retry_ms = 10 * crate::harness::WAIT_MS_MAX;
    // Through a forwarder that counts ended connections: the test sets the
    // new token only once the server has refused the old one (an event),
    // so the sync after it can only come from set_token waking the device.
    let forwarder = EndCountingForwarder::start(server.addr()).await;
    config.server_url = format!("ws://{}", forwarder.addr);
    let client = Client::open(config).expect("device opens");
    let handle = client.create().expect("create");
    put(&handle, "sale", "1");
    let mut ended = forwarder.ended.clone();
    within("the refused upgrade to end", ended.wait_for(|n| *n >= 1))
        .await
        .expect("forwarder alive");
    assert!(!client.is_online(), "a refused device is offline");
    client.set_token(Some(tokens[0].clone()));
    within("synced after the new token", handle.synced())
        .await
        .expect("synced");
    client.close().await.expect("close");
}

#[tokio::test]
async fn token_cli_issues_lists_and_revokes_and_keeps_only_hashes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let ventas = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ventas"))
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .output()
            .expect("ventas runs");
        assert!(
            output.status.success(),
            "ventas {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let token = ventas(&[
        "token",
        "issue",
        "--tenant",
        "acme",
        "--seller",
        "ana",
        "--device",
        "tab-1",
        "--role",
        "seller",
        "--expires",
        "90d",
    ]);
    let token = token.trim().to_string();
    let id = token.split('_').nth(1).expect("id").to_string();
    let list = ventas(&["token", "list"]);
    assert!(list.contains(&id) && list.contains("active"), "{list}");
    assert!(!list.contains(&token));
    let revoked = ventas(&["token", "revoke", "--id", &id]);
    assert!(revoked.contains(&id), "{revoked}");
    let list = ventas(&["token", "list"]);
    assert!(list.contains("revoked"), "{list}");
    // Only the hash is on disk: the record holds no secret, and neither
    // does any file of the data directory.
    let secret = token.rsplit('_').next().expect("secret").to_string();
    let store = SledStore::open(&data_dir).expect("store");
    let record = store
        .meta_get(format!("credential/{id}").as_bytes())
        .expect("read")
        .expect("record");
    let record = String::from_utf8(record).expect("json");
    assert!(
        !record.contains(&secret) && !record.contains(&token),
        "{record}"
    );
    drop(store);
    for entry in walk(&data_dir) {
        let bytes = std::fs::read(&entry).expect("read file");
        let found = bytes
            .windows(secret.len())
            .any(|window| window == secret.as_bytes());
        assert!(!found, "the secret is in {}", entry.display());
    }
    // A server on that directory requires credentials and refuses the
    // revoked one.
    let served_dir = data_dir.clone();
    let server = TestServer::start_in(dir, move |config| config.data_dir = served_dir).await;
    assert_eq!(refused_status(bearer(&server.url(), &token)).await, 401);
    let anonymous = server.url().into_client_request().expect("request");
    assert_eq!(refused_status(anonymous).await, 401);
}

#[tokio::test]
async fn token_cli_issues_an_operator_without_a_tenant_and_the_operator_manages_every_tenant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = TestServer::data_dir_in(dir.path());
    let ventas = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ventas"))
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .output()
            .expect("ventas runs")
    };
    let issue = [
        "token", "issue", "--seller", "opal", "--device", "ops-1", "--role",
    ];
    let refused = ventas(&[&issue[..], &["office"]].concat());
    assert!(!refused.status.success(), "an office needs --tenant");
    let issued = ventas(&[&issue[..], &["operator"]].concat());
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let operator = String::from_utf8(issued.stdout).expect("utf-8");
    let list = String::from_utf8(ventas(&["token", "list"]).stdout).expect("utf-8");
    assert!(list.contains("operators\topal\tops-1\toperator"), "{list}");
    let server = TestServer::start_in(dir, |_| {}).await;
    let auth = format!("Bearer {}", operator.trim());
    let body = r#"{"tenant":"globex","seller":"gus","device":"pc-1","role":"office"}"#;
    let (status, text) = http_request(
        server.addr(),
        "POST",
        "/v1/tokens",
        &[("Authorization", auth.as_str())],
        body,
    )
    .await;
    assert_eq!(status, 201, "{text}");
}

#[tokio::test]
async fn token_cli_refuses_a_data_directory_held_by_a_running_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = TestServer::data_dir_in(dir.path());
    let server = TestServer::start_in(dir, |_| {}).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ventas"))
        .args(["token", "list", "--data-dir"])
        .arg(&data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("ventas runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/v1/tokens"), "{stderr}");
    server.running.shutdown().await.expect("shutdown");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn a_refused_device_backs_off_instead_of_hammering() {
    // A stand-in server that refuses every upgrade with 401 and counts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let refuser = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ClientConfig::new(format!("ws://{addr}"), dir.path().join("tab-1"));
    config.token = Some("ventas_wrong".to_string());
    config.reconnect_initial_ms = 5;
    config.reconnect_max_ms = 10;
    config.auth_refused_retry_ms = 10 * crate::harness::WAIT_MS_MAX;
    let client = Client::open(config).expect("device opens");
    within("the first attempt", async {
        while attempts.load(std::sync::atomic::Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Not an ordering but a rate: for 500 ms (50x the network-error backoff
    // of 5-10 ms) after the first attempt, no second one. A wrong backoff
    // makes dozens in that time; a slow machine makes fewer, never more,
    // so this cannot fail by bad luck.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    client.set_token(Some("ventas_rotated".to_string()));
    within("a retry with the new token", async {
        while attempts.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    client.close().await.expect("close");
    refuser.abort();
}

/// A TCP forwarder to a server that counts the connections that ended.
struct EndCountingForwarder {
    addr: std::net::SocketAddr,
    ended: tokio::sync::watch::Receiver<u64>,
}

impl EndCountingForwarder {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (count, ended) = tokio::sync::watch::channel(0u64);
        let count = Arc::new(count);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    count.send_modify(|n| *n += 1);
                });
            }
        });
        Self { addr, ended }
    }
}
