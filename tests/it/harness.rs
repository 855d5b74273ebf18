//! Shared test helpers: servers, devices, raw protocol peers, HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ventas::client::{Client, ClientConfig, DocHandle};
use ventas::config::ServerConfig;
use ventas::server::auth::{AuthMode, Credentials, IssueRequest, Role};
use ventas::server::{self, RunningServer};
use ventas::storage::{DocStore, SledStore};
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::{self, Message, MESSAGE_BYTES_MAX_DEFAULT};

/// Upper bound on any single wait in these tests.
pub const WAIT_MS_MAX: u64 = 20_000;

pub fn wait_max() -> Duration {
    Duration::from_millis(WAIT_MS_MAX)
}

/// Awaits `future` or fails the test after [`WAIT_MS_MAX`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(wait_max(), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT_MS_MAX} ms waiting for {what}"),
    }
}

/// An in-process server on port 0 with its own temp dir.
pub struct TestServer {
    pub running: RunningServer,
    /// Keeps the server's data directory alive as long as the server.
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), adjust).await
    }

    /// The data directory a server started in `dir` uses.
    pub fn data_dir_in(dir: &Path) -> PathBuf {
        dir.join("server")
    }

    /// Starts a server on a data directory prepared in `dir` (e.g. with
    /// credentials already issued).
    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        init_logs();
        let mut config = ServerConfig::for_test(Self::data_dir_in(dir.path()));
        adjust(&mut config);
        let running = server::start(config).await.expect("server starts");
        Self { running, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.running.addr)
    }
}

/// Logs to the test's captured output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A device client with its own store under `dir`.
pub fn device(url: &str, dir: &Path, name: &str) -> Client {
    let mut config = ClientConfig::new(url, dir.join(name));
    config.peer_id = Some(name.to_string());
    config.reconnect_initial_ms = 20;
    config.reconnect_max_ms = 200;
    Client::open(config).expect("device opens")
}

/// Puts `key = value` at the document root.
pub fn put(handle: &DocHandle, key: &str, value: &str) {
    handle
        .change(|doc| {
            let mut tx = doc.transaction();
            tx.put(ROOT, key, value).expect("put");
            tx.commit();
        })
        .expect("change applies");
}

/// The root keys of a document.
pub fn keys(doc: &Automerge) -> Vec<String> {
    doc.keys(ROOT).collect()
}

pub fn root_keys(handle: &DocHandle) -> Vec<String> {
    handle.read(keys).expect("readable")
}

/// Waits until the document has all of `wanted` at its root.
pub async fn wait_for_keys(handle: &DocHandle, wanted: &[String]) {
    let wanted = wanted.to_vec();
    within(
        "keys to arrive",
        handle.wait_until(move |doc| {
            wanted
                .iter()
                .all(|k| doc.get(ROOT, k.as_str()).ok().flatten().is_some())
        }),
    )
    .await
    .expect("client alive");
}

/// A loopback listening socket the test holds for its whole life, so a
/// server restarted "on the same URL" gets the same port without it ever
/// being free for another process to take: each in-process server serves a
/// clone of this one socket ([`ReservedPort::start`]); connections that
/// arrive while no server runs wait in its backlog.
pub struct ReservedPort {
    listener: std::net::TcpListener,
    pub addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        Self { listener, addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A server on this port (whatever `config.listen` says).
    pub async fn start(&self, config: ServerConfig) -> RunningServer {
        let clone = self.listener.try_clone().expect("clone the listener");
        let listener = tokio::net::TcpListener::from_std(clone).expect("tokio listener");
        server::start_on(config, listener)
            .await
            .expect("server starts")
    }
}

/// A free loopback port (bound then released): only for a program that
/// must bind its own port (nginx). Anything else keeps its listener
/// ([`ReservedPort`]) or takes the port a server bound on port 0.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The real `ventas` binary, for kill -9 tests.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on `port` (0 for any: a restart then passes the
    /// port the first run got, `addr.port()`).
    pub async fn spawn(data_dir: &Path, port: u16) -> Self {
        Self::spawn_with(data_dir, port, &[]).await
    }

    /// Starts the binary with more `serve` arguments.
    pub async fn spawn_with(data_dir: &Path, port: u16, args: &[&str]) -> Self {
        Self::started(serve_command(data_dir, port, args)).await
    }

    /// Starts the binary under `prlimit` with `open_files` as both its soft
    /// and hard RLIMIT_NOFILE (so the server cannot raise it); a cleared
    /// environment but for `PATH`, to find `prlimit`.
    pub async fn spawn_with_open_files(
        data_dir: &Path,
        port: u16,
        args: &[&str],
        open_files: u64,
    ) -> Self {
        let mut command = tokio::process::Command::new("prlimit");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ventas"));
        serve_args(&mut command, data_dir, port, args);
        Self::started(command).await
    }

    /// Starts `ventas serve` on port 0 with only `env` added to its cleared
    /// environment (see [`serve_command`]).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn spawn_isolated(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_isolated_on(data_dir, 0, args, env).await
    }

    /// [`ServerProcess::spawn_isolated`] on `port` (0 for any; a restart
    /// passes the port the first run got, so devices find it again).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn spawn_isolated_on(
        data_dir: &Path,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = serve_command(data_dir, port, args);
        command.envs(env.iter().copied());
        Self::started(command).await
    }

    /// As [`ServerProcess::spawn_with`] on port 0, with the server's log
    /// (stderr, `RUST_LOG=warn`) piped to the caller line by line: a test
    /// can wait on a logged event instead of guessing when it happened.
    pub async fn spawn_logged(
        data_dir: &Path,
        args: &[&str],
    ) -> (
        Self,
        tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    ) {
        let mut command = serve_command(data_dir, 0, args);
        command.stderr(Stdio::piped());
        let mut server = Self::started(command).await;
        let stderr = server.child.stderr.take().expect("stderr piped");
        (server, BufReader::new(stderr).lines())
    }

    async fn started(mut command: tokio::process::Command) -> Self {
        let mut child = command.spawn().expect("ventas binary runs");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = within("server to listen", lines.next_line())
            .await
            .expect("read stdout")
            .expect("server printed its address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Self { child, addr }
    }

    /// SIGKILL: no shutdown, no final flush.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGINT (a clean shutdown), then waits for the exit, which must be a
    /// success. (Only the failpoint tests stop a child cleanly.)
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn interrupt(mut self) {
        interrupt(&mut self.child).await;
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

/// `ventas serve` on `port` (0: any) in `data_dir`, stdout piped for the
/// address it prints.
/// `ventas serve` with a CLEARED environment (but `RUST_LOG=warn`): a
/// stray `VENTAS_UNSAFE_SKIP_FLUSH` or `DATABASE_URL` of the developer's
/// shell must not change what a test runs.
fn serve_command(data_dir: &Path, port: u16, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ventas"));
    command
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    serve_args(&mut command, data_dir, port, args);
    command
}

/// `serve` and its arguments, stdout piped (the `listening on` line).
fn serve_args(command: &mut tokio::process::Command, data_dir: &Path, port: u16, args: &[&str]) {
    command
        .arg("serve")
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
}

/// Tries `connect` every 20 ms, 100 times at most, and asserts that one
/// attempt is admitted (a freed connection slot is reused); `what` says
/// which slot.
pub async fn assert_admitted_soon<T, E>(
    what: &str,
    mut connect: impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>>>>,
) {
    let mut admitted = false;
    for _ in 0..100 {
        if connect().await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "{what}");
}

/// A hand-driven protocol peer over a raw WebSocket.
pub struct RawPeer {
    pub socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    pub peer_id: PeerId,
}

impl RawPeer {
    pub async fn connect(url: &str, name: &str) -> Self {
        Self::connect_with(url, name).await
    }

    /// Connects with `request` (a URL, or a request carrying a credential);
    /// the upgrade must be accepted.
    pub async fn connect_with(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
        name: &str,
    ) -> Self {
        let (socket, _) = within("connect", tokio_tungstenite::connect_async(request))
            .await
            .expect("upgrade accepted");
        Self {
            socket,
            peer_id: PeerId::new(name),
        }
    }

    /// Connects and completes the join/peer handshake.
    pub async fn joined(url: &str, name: &str) -> (Self, PeerId) {
        Self::connect(url, name).await.handshake().await
    }

    /// Sends `join` as this peer (protocol version 1).
    pub async fn send_join(&mut self) {
        self.send(&Message::Join {
            sender_id: self.peer_id.clone(),
            supported_protocol_versions: vec!["1".to_string()],
            peer_metadata: None,
        })
        .await;
    }

    /// Joins and expects the server's `peer` answer; returns the server's
    /// peer id with the peer.
    pub async fn handshake(mut self) -> (Self, PeerId) {
        self.send_join().await;
        match self.recv().await {
            Some(Message::Peer { sender_id, .. }) => (self, sender_id),
            other => panic!("expected peer, got {other:?}"),
        }
    }

    /// Requests `document_id`, unknown to the server, and asserts the
    /// answer is doc-unavailable: the peer is still served. `what` says why
    /// it should be.
    pub async fn assert_unavailable(
        &mut self,
        server: &PeerId,
        document_id: DocumentId,
        what: &str,
    ) {
        let request = self.request(server, document_id);
        self.send(&request).await;
        let answer = self.recv().await;
        assert!(
            matches!(answer, Some(Message::DocUnavailable { .. })),
            "{what}: {answer:?}"
        );
    }

    pub async fn send(&mut self, message: &Message) {
        self.send_raw(wire::encode(message)).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(WsMessage::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// The next protocol message; None once the server closed.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let frame = within("a frame", self.socket.next()).await;
            match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    return Some(
                        wire::decode(&bytes, MESSAGE_BYTES_MAX_DEFAULT)
                            .expect("server frames decode"),
                    )
                }
                Some(Ok(WsMessage::Close(_))) => {
                    self.finish_close().await;
                    return None;
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// After the server's close frame: polls once more so the close reply
    /// goes out (the server waits for it before it lets the socket go).
    async fn finish_close(&mut self) {
        while let Some(Ok(_)) = within("the close handshake", self.socket.next()).await {}
    }

    /// Reads until the server closes; returns the close frame's code and
    /// reason, or None if the connection ended without one (the 1006 a
    /// browser reports).
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        loop {
            match within("the close frame", self.socket.next()).await {
                Some(Ok(WsMessage::Close(frame))) => {
                    self.finish_close().await;
                    return frame.map(|frame| (u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    }

    /// Reads until the server closes; returns the error message it sent.
    pub async fn expect_error_and_close(&mut self) -> String {
        let mut error = None;
        while let Some(message) = self.recv().await {
            if let Message::Error { message, .. } = message {
                error = Some(message);
            }
        }
        error.expect("server sent an error before closing")
    }

    /// A request for `document_id` carrying an empty automerge sync message.
    pub fn request(&self, server: &PeerId, document_id: DocumentId) -> Message {
        let mut state = automerge::sync::State::new();
        let data = automerge::sync::SyncDoc::generate_sync_message(&Automerge::new(), &mut state)
            .expect("first message")
            .encode();
        Message::Request {
            sender_id: self.peer_id.clone(),
            target_id: server.clone(),
            document_id,
            data,
        }
    }

    /// A barrier on this connection: requests a fresh document id nobody
    /// has and reads until the server answers it. The server handles one
    /// connection's messages in order and queues what it sends in order, so
    /// whatever it sent this peer before the barrier is in
    /// [`Barrier::before`]: an absence check ("nothing was announced") is
    /// then an assertion on that list, not a guess after a fixed wait.
    pub async fn barrier(&mut self, server: &PeerId) -> Barrier {
        let marker = DocumentId::from_bytes(rand::random());
        let request = self.request(server, marker);
        self.send(&request).await;
        let mut before = Vec::new();
        while let Some(message) = self.recv().await {
            match message {
                Message::DocUnavailable { document_id, .. } if document_id == marker => {
                    return Barrier {
                        before,
                        closed: false,
                    }
                }
                other => before.push(other),
            }
        }
        Barrier {
            before,
            closed: true,
        }
    }
}

/// What [`RawPeer::barrier`] saw.
#[derive(Debug)]
pub struct Barrier {
    /// Messages the server sent before it answered the barrier.
    pub before: Vec<Message>,
    /// The server closed the connection before answering.
    pub closed: bool,
}

/// Plain HTTP/1.1 GET on loopback; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], "").await
}

/// Plain HTTP/1.1 request on loopback with extra headers and a JSON body
/// (if not empty); returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    within("http response", stream.read_to_end(&mut response))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let (status, body) = status_and_body(&text);
    // Chunked bodies: keep only the JSON between the chunk headers.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

/// The status and the body of a raw HTTP/1.1 response (0 if it has none).
pub fn status_and_body(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// Runs a script of `tests/js` to completion and returns its (last) JSON
/// line; fails the test if the pinned JS clients are not installed (they
/// never skip) or the script fails.
pub async fn node(script: &str, args: &[&str]) -> serde_json::Value {
    assert!(
        js_dir()
            .join("node_modules/@automerge/automerge-repo")
            .exists(),
        "JS deps missing: run `npm install --no-audit --no-fund` in tests/js (.ci/run does)"
    );
    let output = within(
        script,
        tokio::process::Command::new("node")
            .arg(js_dir().join(script))
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot run node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    let value: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{script} printed {stdout:?} ({e})"));
    assert!(
        output.status.success(),
        "{script} failed ({:?}): {value}",
        output.status
    );
    value
}

/// Issues credentials into the data directory of a server yet to start
/// (see [`TestServer::start_in`]). Each entry is (tenant, seller, device,
/// role, expires_at_ms); returns the tokens in order.
pub fn issue_credentials(
    dir: &Path,
    wanted: &[(&str, &str, &str, Role, Option<u64>)],
) -> Vec<String> {
    let data_dir = TestServer::data_dir_in(dir);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let store: Arc<dyn DocStore> = Arc::new(SledStore::open(&data_dir).expect("store"));
    let credentials = Credentials::load(Arc::clone(&store), AuthMode::Auto).expect("load");
    let tokens = wanted
        .iter()
        .map(|(tenant, seller, device, role, expires_at_ms)| {
            credentials
                .issue(
                    IssueRequest {
                        tenant: tenant.to_string(),
                        seller: seller.to_string(),
                        device: device.to_string(),
                        role: *role,
                        expires_at_ms: *expires_at_ms,
                    },
                    ventas::now_ms(),
                )
                .expect("issue")
                .token
        })
        .collect();
    store.flush().expect("flush");
    tokens
}

/// An upgrade request carrying `Authorization: Bearer <token>`.
pub fn bearer(
    url: &str,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    request
}

/// The sync-log entry of the session that joined as `peer`, once closed.
/// Polled with a deadline of [`WAIT_MS_MAX`]: a session ends within
/// milliseconds of its close, or after the server's close handshake wait
/// (5 s) when the peer never answers the close; a fixed count of polls
/// (5 s in all, as before) raced that wait.
pub async fn ended_session(server: &TestServer, peer: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while tokio::time::Instant::now() < deadline {
        let (_, body) = http_get(server.addr(), "/v1/sync-sessions?limit=500").await;
        let page: serde_json::Value = serde_json::from_str(&body).expect("json");
        let found = page["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["peer_id"] == peer && !s["disconnected_at_ms"].is_null())
            .cloned();
        if let Some(session) = found {
            return session;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no ended session for {peer}");
}

/// Path of the JS harness.
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// The PostgreSQL the export tests use (`.ci/run` makes sure it runs).
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of this test's own, dropped when the value is.
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("ventas_t_{:016x}", rand::random::<u64>());
        let admin = postgres_client(POSTGRES_ADMIN_URL).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        Self { name }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
            self.name
        )
    }

    /// The same database through another host and port (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}?sslmode=disable", self.name)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        postgres_client(&self.url()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a runtime; the drop needs its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = postgres_client(POSTGRES_ADMIN_URL).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A plain connection (no TLS) for checking what the export wrote.
pub async fn postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} must be running: {e}"));
    tokio::spawn(connection);
    client
}

/// A TCP proxy to PostgreSQL that a test can cut (every connection
/// dropped, new ones refused), stall (connections stay open but nothing
/// gets through: a hung database), slow down (every chunk each way held
/// for a delay: a database that is slow but alive) and restore: a database
/// outage without stopping the shared server.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    mode: Arc<tokio::sync::watch::Sender<ProxyMode>>,
    /// Delay per forwarded chunk, each way, in ms (0: none).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Open,
    Cut,
    Stalled,
}

/// Copies `from` to `to`, holding each chunk for the proxy's current delay.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    delay_ms: &std::sync::atomic::AtomicU64,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                // Passes the end on, as copy_bidirectional would.
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        let delay = delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, _) = tokio::sync::watch::channel(ProxyMode::Open);
        let mode = Arc::new(mode);
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let accepting = Arc::clone(&mode);
        let delays = Arc::clone(&delay_ms);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut watch = accepting.subscribe();
                let now = *watch.borrow();
                match now {
                    ProxyMode::Cut => continue, // dropped: refused, in effect
                    ProxyMode::Stalled => {
                        // Held open, never answered, until restored.
                        tokio::spawn(async move {
                            let _ = watch.wait_for(|mode| *mode == ProxyMode::Open).await;
                            drop(inbound);
                        });
                        continue;
                    }
                    ProxyMode::Open => {}
                }
                let delay_ms = Arc::clone(&delays);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // The halves outlive the pumps: a stalled connection
                    // stays open after its pumps are dropped.
                    let (mut inbound_read, mut inbound_write) = inbound.into_split();
                    let (mut outbound_read, mut outbound_write) = outbound.into_split();
                    let up = pump(&mut inbound_read, &mut outbound_write, &delay_ms);
                    let down = pump(&mut outbound_read, &mut inbound_write, &delay_ms);
                    let interrupted = tokio::select! {
                        _ = async { tokio::join!(up, down) } => false,
                        changed = watch.wait_for(|mode| *mode != ProxyMode::Open) => changed.is_ok(),
                    };
                    if interrupted {
                        // Cut: dropped now. Stalled: both ends silent until
                        // restored, then dropped.
                        let _ = watch.wait_for(|mode| *mode != ProxyMode::Stalled).await;
                    }
                });
            }
        });
        Self {
            addr,
            mode,
            delay_ms,
        }
    }

    /// Holds every chunk, each way, for `delay_ms` from now on (0: none).
    pub fn slow_down(&self, delay_ms: u64) {
        self.delay_ms
            .store(delay_ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn cut(&self) {
        self.mode.send_replace(ProxyMode::Cut);
    }

    pub fn stall(&self) {
        self.mode.send_replace(ProxyMode::Stalled);
    }

    pub fn restore(&self) {
        self.mode.send_replace(ProxyMode::Open);
    }
}

/// Waits until `count` more passes of `server`'s period keeper have ended
/// (with 2, at least one whole pass started after the call): the barrier
/// for "later passes change nothing".
pub async fn keeper_passes(server: &RunningServer, count: u64) {
    let mut passes = server.keeper_passes();
    let start = *passes.borrow_and_update();
    within(
        "period keeper passes",
        passes.wait_for(|ended| *ended >= start.saturating_add(count)),
    )
    .await
    .expect("the keeper runs");
}

/// Two devices on one document: the phone created it with `key = "1"`
/// (acknowledged by the server) and the tablet has fetched it.
pub struct PhoneAndTablet {
    pub phone: Client,
    pub tablet: Client,
    pub on_phone: DocHandle,
    pub on_tablet: DocHandle,
}

impl PhoneAndTablet {
    pub async fn start(url: &str, dir: &Path, key: &str) -> Self {
        let phone = device(url, dir, "phone");
        let tablet = device(url, dir, "tablet");
        let on_phone = phone.create().expect("create");
        put(&on_phone, key, "1");
        within("phone saved on server", on_phone.synced())
            .await
            .expect("synced");
        let on_tablet = tablet.open_url(&on_phone.url()).expect("open");
        within("tablet fetch", on_tablet.ready())
            .await
            .expect("document exists");
        Self {
            phone,
            tablet,
            on_phone,
            on_tablet,
        }
    }
}

/// SIGINT to a child server (a clean shutdown), then waits for its exit,
/// which must be a success. (Only the failpoint tests stop a child cleanly.)
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub async fn interrupt(child: &mut tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success());
    let status = within("the server to stop", child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "a clean stop: {status}");
}

/// The `count`th of a flood of 256 KiB ephemeral messages from peer
/// `chatty` about `document_id`.
pub fn flood_message(server_id: &PeerId, document_id: DocumentId, count: u64) -> Message {
    Message::Ephemeral {
        sender_id: PeerId::new("chatty"),
        target_id: server_id.clone(),
        count,
        session_id: "flood".to_string(),
        document_id,
        data: vec![7u8; 256 * 1024],
    }
}
