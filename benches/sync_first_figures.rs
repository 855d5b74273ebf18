//! First figures for the sync path (issue 6 makes them rigorous):
//! live latency device -> server -> device, and durable ingest, each beside
//! an in-process floor measured in the same run.
//!
//! Run: `cargo bench --bench sync_first_figures` (not part of the tests).

use std::time::{Duration, Instant};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use ventas::client::{Client, ClientConfig, DocHandle};
use ventas::config::ServerConfig;

const LATENCY_SAMPLES: usize = 300;
const INGEST_CHANGES_PER_DEVICE: usize = 2_000;
const INGEST_DEVICES: usize = 10;

fn put(handle: &DocHandle, key: &str) {
    handle
        .change(|doc| {
            let mut tx = doc.transaction();
            tx.put(ROOT, key, 1_i64).expect("put");
            tx.commit();
        })
        .expect("change");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn device(url: &str, dir: &std::path::Path, name: &str) -> Client {
    let mut config = ClientConfig::new(url, dir.join(name));
    config.peer_id = Some(name.to_string());
    Client::open(config).expect("client")
}

/// One change from A to B through plain automerge sync, in memory.
fn floor_latency() -> Duration {
    let mut a = Automerge::new();
    let mut b = Automerge::new();
    let (mut sa, mut sb) = (State::new(), State::new());
    let sync = |a: &mut Automerge, b: &mut Automerge, sa: &mut State, sb: &mut State| loop {
        let mut moved = false;
        if let Some(m) = a.generate_sync_message(sa) {
            b.receive_sync_message(sb, m).expect("receive");
            moved = true;
        }
        if let Some(m) = b.generate_sync_message(sb) {
            a.receive_sync_message(sa, m).expect("receive");
            moved = true;
        }
        if !moved {
            break;
        }
    };
    sync(&mut a, &mut b, &mut sa, &mut sb);
    let mut samples = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let mut tx = a.transaction();
        tx.put(ROOT, format!("k{i}"), 1_i64).expect("put");
        tx.commit();
        sync(&mut a, &mut b, &mut sa, &mut sb);
        assert!(b.get(ROOT, format!("k{i}")).expect("get").is_some());
        samples.push(started.elapsed());
    }
    samples.sort();
    percentile(&samples, 0.5)
}

async fn live_latency(url: &str, dir: &std::path::Path) -> Vec<Duration> {
    let a = device(url, dir, "latency-a");
    let b = device(url, dir, "latency-b");
    let on_a = a.create().expect("create");
    put(&on_a, "start");
    on_a.synced().await.expect("synced");
    let on_b = b.open_url(&on_a.url()).expect("open");
    on_b.ready().await.expect("ready");
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let key = format!("k{i}");
        let started = Instant::now();
        put(&on_a, &key);
        on_b.wait_until(|d| d.get(ROOT, key.as_str()).ok().flatten().is_some())
            .await
            .expect("arrives");
        samples.push(started.elapsed());
    }
    samples.sort();
    drop((on_a, on_b));
    a.close().await.expect("close");
    b.close().await.expect("close");
    samples
}

/// Devices each record changes as fast as they can into their own document;
/// returns changes per second acknowledged durable by the server.
async fn ingest(url: &str, dir: &std::path::Path, tag: &str) -> f64 {
    let clients: Vec<Client> = (0..INGEST_DEVICES)
        .map(|n| device(url, dir, &format!("{tag}-{n}")))
        .collect();
    let handles: Vec<DocHandle> = clients
        .iter()
        .map(|c| c.create().expect("create"))
        .collect();
    for h in &handles {
        put(h, "start");
        h.synced().await.expect("synced");
    }
    let started = Instant::now();
    let tasks: Vec<_> = handles
        .iter()
        .cloned()
        .map(|h| {
            tokio::spawn(async move {
                for i in 0..INGEST_CHANGES_PER_DEVICE {
                    put(&h, &format!("sale-{i}"));
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                h.synced().await.expect("synced");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();
    drop(handles);
    for c in clients {
        c.close().await.expect("close");
    }
    (INGEST_DEVICES * INGEST_CHANGES_PER_DEVICE) as f64 / elapsed.as_secs_f64()
}

/// The same changes applied in memory: device docs -> one server doc each.
fn floor_ingest() -> f64 {
    let started = Instant::now();
    for _ in 0..INGEST_DEVICES {
        let mut device = Automerge::new();
        for i in 0..INGEST_CHANGES_PER_DEVICE {
            let mut tx = device.transaction();
            tx.put(ROOT, format!("sale-{i}"), 1_i64).expect("put");
            tx.commit();
        }
        let mut server = Automerge::new();
        let (mut sd, mut ss) = (State::new(), State::new());
        loop {
            let mut moved = false;
            if let Some(m) = device.generate_sync_message(&mut sd) {
                server.receive_sync_message(&mut ss, m).expect("receive");
                moved = true;
            }
            if let Some(m) = server.generate_sync_message(&mut ss) {
                device.receive_sync_message(&mut sd, m).expect("receive");
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }
    (INGEST_DEVICES * INGEST_CHANGES_PER_DEVICE) as f64 / started.elapsed().as_secs_f64()
}

async fn run_server(dir: &std::path::Path, skip_flush: bool) -> ventas::server::RunningServer {
    let mut config = ServerConfig::for_test(dir.join(if skip_flush {
        "server-noflush"
    } else {
        "server"
    }));
    config.unsafe_skip_flush = skip_flush;
    ventas::server::start(config).await.expect("server")
}

fn main() {
    // `cargo test` and nextest run bench targets without `--bench` (to list
    // or smoke-test them); only `cargo bench` measures.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        let server = run_server(dir.path(), false).await;
        let url = format!("ws://{}", server.addr);

        let floor = floor_latency();
        let samples = live_latency(&url, dir.path()).await;
        println!("live latency A->server->B, {LATENCY_SAMPLES} changes:");
        println!(
            "  p50 {:?}  p99 {:?}  max {:?}   (in-process automerge sync floor p50 {:?})",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            floor
        );

        let durable = ingest(&url, dir.path(), "durable").await;
        server.shutdown().await.expect("shutdown");
        let server = run_server(dir.path(), true).await;
        let url = format!("ws://{}", server.addr);
        let no_flush = ingest(&url, dir.path(), "noflush").await;
        server.shutdown().await.expect("shutdown");
        let floor = floor_ingest();
        println!(
            "ingest, {INGEST_DEVICES} devices x {INGEST_CHANGES_PER_DEVICE} changes, own doc each:"
        );
        println!("  durable {durable:.0} changes/s; flush off {no_flush:.0} changes/s (durable/no-flush {:.2})", durable / no_flush);
        println!("  in-process automerge sync floor {floor:.0} changes/s (durable/floor {:.2})", durable / floor);
    });
}
