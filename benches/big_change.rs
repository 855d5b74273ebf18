//! What the largest message a role may send costs the rest of the server
//! (issue 10): the memory of the server process before, at the peak of and
//! after such a change, and the round-trip latency of another tenant's
//! sellers while it applies.
//!
//! The bench runs the release `ventas` binary on loopback with a cleared
//! environment, credentials for two tenants (acme: an office and a seller;
//! globex: an office and `GLOBEX_SELLERS` sellers), and:
//!
//! 1. globex's sellers do round trips (one sale of 21 operations into their
//!    ledger, then wait for the server's sync reply holding it) for
//!    `QUIET_MS`: latency without a big change;
//! 2. acme's seller sends the largest message a seller may send (100,000
//!    operations, sale-shaped changes; 95% of it) into her ledger, then
//!    acme's office 47% of the office limit (500,000) as a new document
//!    (the most the server accepts there today: the first message of a
//!    new document looks counted twice, see BENCHMARKS.md), while globex
//!    keeps doing round trips: latency during;
//! 3. acme disconnects; the documents are evicted after
//!    `--doc-idle-evict-after-ms`; the server's VmRSS is read from
//!    /proc/<pid>/status until it stops falling.
//!
//! `cargo bench --bench big_change` (`-- --idle-ms N` to wait longer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ventas::domain::{create_ledger_doc, Period, SellerId, TenantId};
use ventas::server::auth::{AuthMode, Credentials, IssueRequest, Role};
use ventas::storage::{DocStore, SledStore};
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::{self, Message};

/// Operations of one sale (`record_sale` with a two-line sale).
const OPS_PER_SALE: usize = 21;
/// The server's defaults (src/config.rs).
const SELLER_CHANGE_OPS_MAX: usize = 100_000;
const OFFICE_CHANGE_OPS_MAX: usize = 500_000;
/// Round trips before the big change, per seller.
const QUIET_MS: u64 = 5_000;
const GLOBEX_SELLERS: usize = 4;
/// Documents untouched this long are evicted (the server's flag).
const EVICT_AFTER_MS: u64 = 1_000;
/// How long to watch RSS fall after the change, by default.
const IDLE_MS_DEFAULT: u64 = 20_000;
const WAIT: Duration = Duration::from_secs(600);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Device {
    socket: Socket,
    peer_id: PeerId,
    server: PeerId,
}

impl Device {
    async fn connect(url: &str, token: &str, device: &str) -> Self {
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(256 << 20);
        config.max_frame_size = Some(256 << 20);
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                .await
                .expect("upgrade");
        let mut device = Self {
            socket,
            peer_id: PeerId::new(device),
            server: PeerId::new(""),
        };
        device
            .send(&Message::Join {
                sender_id: device.peer_id.clone(),
                supported_protocol_versions: vec!["1".to_string()],
                peer_metadata: None,
            })
            .await;
        match device.recv().await {
            Message::Peer { sender_id, .. } => device.server = sender_id,
            other => panic!("expected peer, got {other:?}"),
        }
        device
    }

    async fn send(&mut self, message: &Message) {
        self.socket
            .send(WsMessage::Binary(wire::encode(message).into()))
            .await
            .expect("send");
    }

    async fn recv(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame in time");
            match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    return wire::decode(&bytes, 256 << 20).expect("decodes")
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    fn sync(&self, document_id: DocumentId, data: Vec<u8>) -> Message {
        Message::Sync {
            sender_id: self.peer_id.clone(),
            target_id: self.server.clone(),
            document_id,
            data,
        }
    }

    /// Syncs until the server holds every change of `doc`.
    async fn push(&mut self, document_id: DocumentId, doc: &mut Automerge, state: &mut State) {
        if let Some(first) = doc.generate_sync_message(state) {
            self.send(&self.sync(document_id, first.encode())).await;
        }
        loop {
            match self.recv().await {
                Message::Sync { data, .. } => {
                    let reply = automerge::sync::Message::decode(&data).expect("decodes");
                    doc.receive_sync_message(state, reply).expect("applies");
                    let theirs = state.their_heads.clone().unwrap_or_default();
                    if doc.get_heads().iter().all(|head| theirs.contains(head)) {
                        return;
                    }
                    if let Some(next) = doc.generate_sync_message(state) {
                        self.send(&self.sync(document_id, next.encode())).await;
                    }
                }
                Message::Error { message, .. } => panic!("refused: {message}"),
                _ => {}
            }
        }
    }
}

/// Adds `sales` sale-shaped changes (21 operations each) to `doc`.
fn add_sales(doc: &mut Automerge, prefix: &str, sales: usize) {
    for n in 0..sales {
        let mut tx = doc.transaction();
        let sale = tx
            .put_object(ROOT, format!("{prefix}-{n}"), ObjType::Map)
            .expect("sale");
        for field in 0..OPS_PER_SALE - 1 {
            tx.put(&sale, format!("f{field}"), 1_000_i64 + field as i64)
                .expect("field");
        }
        tx.commit();
    }
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentiles(name: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(index).copied().unwrap_or_default()
    };
    println!(
        "{name}: {} round trips, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idle_ms = args
        .iter()
        .position(|a| a == "--idle-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(IDLE_MS_DEFAULT);
    let dir = tempfile::tempdir().expect("dir");
    println!(
        "server log: {}",
        std::env::temp_dir()
            .join("ventas-big-change-server.log")
            .display()
    );
    let data_dir = dir.path().join("server");
    let mut people = vec![
        ("acme", "boss", "acme-office".to_string(), Role::Office),
        ("acme", "ana", "tab-ana".to_string(), Role::Seller),
        ("globex", "gina", "globex-office".to_string(), Role::Office),
    ];
    for n in 0..GLOBEX_SELLERS {
        people.push(("globex", "", format!("tab-g{n}"), Role::Seller));
    }
    let tokens: Vec<String> = {
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let store: Arc<dyn DocStore> = Arc::new(SledStore::open(&data_dir).expect("store"));
        let credentials = Credentials::load(Arc::clone(&store), AuthMode::Auto).expect("load");
        let tokens = people
            .iter()
            .enumerate()
            .map(|(n, (tenant, seller, device, role))| {
                let seller = if seller.is_empty() {
                    format!("g{n}")
                } else {
                    seller.to_string()
                };
                credentials
                    .issue(
                        IssueRequest {
                            tenant: tenant.to_string(),
                            seller,
                            device: device.clone(),
                            role: *role,
                            expires_at_ms: None,
                        },
                        ventas::now_ms(),
                    )
                    .expect("issue")
                    .token
            })
            .collect();
        store.flush().expect("flush");
        tokens
    };
    // The big documents first (seconds on a loaded machine), so that no
    // connection sits unread meanwhile.
    let period = Period::parse("2026-11").expect("period");
    let ana_base = create_ledger_doc(
        &TenantId::new("acme").expect("id"),
        &SellerId::new("ana").expect("id"),
        period,
    )
    .expect("ledger");
    let mut ana_doc = ana_base.fork();
    add_sales(
        &mut ana_doc,
        "big",
        SELLER_CHANGE_OPS_MAX * 95 / 100 / OPS_PER_SALE,
    );
    let mut office_doc = Automerge::new();
    add_sales(
        &mut office_doc,
        "import",
        OFFICE_CHANGE_OPS_MAX * 47 / 100 / OPS_PER_SALE,
    );
    let ops = |doc: &Automerge| -> usize { doc.get_changes(&[]).iter().map(|c| c.len()).sum() };
    let (seller_ops, office_ops) = (ops(&ana_doc) - ops(&ana_base), ops(&office_doc));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ventas"))
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        // Round trips back to back exceed a device's message rate; the
        // rate limit is not what this measures.
        .args(["--peer-messages-per-second-max", "1000000"])
        .args(["--peer-messages-burst-max", "1000000"])
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("ventas-big-change-server.log"))
                .expect("log file"),
        )
        .args(["--doc-idle-evict-after-ms", &EVICT_AFTER_MS.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ventas runs");
    let pid = child.id().expect("pid");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read")
        .expect("a line");
    let addr = line
        .strip_prefix("listening on ")
        .expect("address")
        .to_string();
    let url = format!("ws://{addr}");
    let token = |device: &str| {
        let index = people.iter().position(|p| p.2 == device).expect("known");
        tokens[index].clone()
    };

    // Ledgers for every seller, created by their office.
    let mut acme_office = Device::connect(&url, &token("acme-office"), "acme-office").await;
    let mut globex_office = Device::connect(&url, &token("globex-office"), "globex-office").await;
    let ana_ledger = DocumentId::from_bytes(rand::random());
    acme_office
        .push(ana_ledger, &mut ana_base.clone(), &mut State::new())
        .await;
    let mut globex = Vec::new();
    for n in 0..GLOBEX_SELLERS {
        let index = 3 + n;
        let ledger_id = DocumentId::from_bytes(rand::random());
        let ledger = create_ledger_doc(
            &TenantId::new("globex").expect("id"),
            &SellerId::new(format!("g{index}")).expect("id"),
            period,
        )
        .expect("ledger");
        globex_office
            .push(ledger_id, &mut ledger.clone(), &mut State::new())
            .await;
        let device = format!("tab-g{n}");
        let seller = Device::connect(&url, &token(&device), &device).await;
        // A copy with the seller's own actor (actors are bound to devices).
        globex.push((seller, ledger_id, ledger.fork(), State::new()));
    }
    drop(globex_office);
    let (rss_start, _) = rss_kib(pid);
    println!("server pid {pid}, VmRSS at start {} MiB", rss_start / 1024);

    // globex's sellers do round trips until told to stop; each phase's
    // latencies are kept apart.
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let latencies = Arc::new(Mutex::new([Vec::new(), Vec::new()]));
    let mut sellers = Vec::new();
    for (n, (mut device, ledger_id, mut ledger, mut state)) in globex.into_iter().enumerate() {
        let phase = Arc::clone(&phase);
        let latencies = Arc::clone(&latencies);
        sellers.push(tokio::spawn(async move {
            let mut sale = 0;
            loop {
                let now = phase.load(std::sync::atomic::Ordering::SeqCst);
                if now >= 2 {
                    return;
                }
                sale += 1;
                add_sales(&mut ledger, &format!("s{n}-{sale}"), 1);
                let started = Instant::now();
                device.push(ledger_id, &mut ledger, &mut state).await;
                let took = started.elapsed();
                latencies.lock().await[usize::from(now)].push(took);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(QUIET_MS)).await;

    // The largest messages: a seller's into her ledger, an office's as a
    // new document, one after the other.
    let mut ana = Device::connect(&url, &token("tab-ana"), "tab-ana").await;
    let mut ana_state = State::new();
    let (rss_before, _) = rss_kib(pid);
    phase.store(1, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    ana.push(ana_ledger, &mut ana_doc, &mut ana_state).await;
    let seller_ms = started.elapsed().as_millis();
    let (rss_after_seller, hwm_seller) = rss_kib(pid);
    let started = Instant::now();
    acme_office
        .push(
            DocumentId::from_bytes(rand::random()),
            &mut office_doc,
            &mut State::new(),
        )
        .await;
    let office_ms = started.elapsed().as_millis();
    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    let (_, hwm) = rss_kib(pid);
    for seller in sellers {
        seller.await.expect("seller task");
    }
    drop(ana);
    drop(acme_office);
    println!(
        "seller's message ({seller_ops} ops) acknowledged in {seller_ms} ms; \
         office's ({office_ops} ops, new document) in {office_ms} ms"
    );
    {
        let mut latencies = latencies.lock().await;
        let [quiet, during] = &mut *latencies;
        percentiles("globex without a big change", quiet);
        percentiles("globex during acme's big changes", during);
    }
    println!(
        "VmRSS MiB: before {}, after the seller's message {} (peak so far {}), peak {}",
        rss_before / 1024,
        rss_after_seller / 1024,
        hwm_seller / 1024,
        hwm / 1024
    );
    // Idle: every document is evicted after EVICT_AFTER_MS; watch RSS.
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < Duration::from_millis(idle_ms) {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let (rss, _) = rss_kib(pid);
        if rss != last {
            println!(
                "  idle {:>5} ms: VmRSS {} MiB",
                started.elapsed().as_millis(),
                rss / 1024
            );
            last = rss;
        }
    }
    println!("VmRSS MiB after {idle_ms} ms idle: {}", last / 1024);
    child.kill().await.expect("kill");
    let log = std::fs::read_to_string(std::env::temp_dir().join("ventas-big-change-server.log"))
        .unwrap_or_default();
    for line in log
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
    {
        println!("server: {line}");
    }
}
