//! Power loss under the real server: the hub task, the flusher thread and
//! the store path run over a simulated disk ([`SimDisk`]) whose page cache
//! the test can throw away, with real devices (the Rust client) writing to
//! one shared document over real sockets.
//!
//! A kill -9 cannot see whether the server acknowledged a change before or
//! after its fsync: the kernel writes the page cache out anyway. This can.
//! Flushes are held, so the world stops at "written, flush in flight"; each
//! seeded schedule of writes and flush releases is cut off by a power cut
//! after every one of its steps in turn. At the cut every device must find,
//! in what survived, every change the server told it it holds (its sync
//! heads); a fresh server booted on what survived must then bring every
//! device to the same document, holding every change anyone wrote.
//!
//! Whether an acknowledgement was sent is read behind a barrier, not after
//! a wait: each device asks for a document nobody has and waits for the
//! "unavailable" answer. The hub takes flush reports before inbox messages
//! and a connection's frames go out in order, so an acknowledgement sent
//! before the barrier's answer has reached the device by then.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash, ReadDoc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use ventas::client::{Client, ClientError, DocHandle};
use ventas::config::ServerConfig;
use ventas::server::{self, AllowAnonymous};
use ventas::storage::DocStore;
use ventas_storage::sim::{PowerCut, SimDisk};
use ventas_sync_protocol::ids::DocumentId;

use crate::harness::{device, init_logs, keys, put, wait_for_keys, within, WAIT_MS_MAX};

/// Devices writing to the shared document.
const DEVICES: usize = 3;
/// Steps of each schedule; the power is cut after each of them in turn.
const SCHEDULE_STEPS: usize = 6;
/// Seeds of the schedules every run tries (fixed, so a failure replays).
const SCHEDULE_SEEDS: [u64; 3] = [17, 4242, 900_001];
/// Pause between looks at the disk while waiting for the server.
const POLL_INTERVAL_MS: u64 = 2;

/// One step of a schedule.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Device `device` writes one sale key to the shared document.
    Write { device: usize },
    /// Every flush held now completes.
    Release,
}

/// The seeded schedule: a write first (so the first cut always falls on a
/// write whose flush is in flight), then writes and releases.
fn schedule(seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = vec![Step::Write { device: 0 }];
    while steps.len() < SCHEDULE_STEPS {
        if rng.gen_bool(0.6) {
            steps.push(Step::Write {
                device: rng.gen_range(0..DEVICES),
            });
        } else {
            steps.push(Step::Release);
        }
    }
    steps
}

/// A server serving one disk until its task is aborted (the power cut) or
/// told to stop.
struct Life {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServerError>>,
}

async fn boot(disk: Arc<SimDisk>, data_dir: &Path, skip_flush: bool) -> Life {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let mut config = ServerConfig::for_test(data_dir.to_path_buf());
    config.unsafe_skip_flush = skip_flush;
    let (stop, stopped) = oneshot::channel::<()>();
    let store: Arc<dyn DocStore> = disk;
    let task = tokio::spawn(server::serve(
        config,
        listener,
        store,
        Arc::new(AllowAnonymous),
        async move {
            let _ = stopped.await;
        },
    ));
    Life { url, stop, task }
}

/// Polls `condition` until it holds, failing the test after
/// [`WAIT_MS_MAX`] (the server's part takes milliseconds).
async fn poll_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_MS_MAX} ms waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// The shared document as the disk holds it now.
fn stored_doc(disk: &SimDisk, document_id: &DocumentId) -> Option<Automerge> {
    let stored = disk.load(document_id.as_bytes()).expect("disk readable")?;
    let doc =
        ventas_sync_protocol::stored::load_document(stored.snapshot.as_deref(), &stored.chunks)
            .expect("stored document loads");
    Some(doc)
}

/// Waits until the server has done all it can with a device's latest
/// change while flushes are held: either the change is written and a held
/// flush covers it, or it waits in the hub behind a held flush of earlier
/// writes to the same document.
async fn wait_until_write_is_held(disk: &SimDisk, document_id: &DocumentId, change: ChangeHash) {
    poll_until("the write to reach a held flush", || {
        let doc_key = document_id.as_bytes();
        let Some(last_write) = disk.last_write_position(doc_key) else {
            return false;
        };
        let written = stored_doc(disk, document_id)
            .is_some_and(|doc| doc.get_change_by_hash(&change).is_some());
        if written {
            return disk.held_flush_covers(last_write);
        }
        last_write > disk.durable_position() && disk.held_flush_covers(last_write)
    })
    .await;
}

/// Asks the server for a document nobody has and waits for its answer, so
/// every frame the server queued for this device before is in.
async fn barrier(client: &Client) {
    let mut unknown = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut unknown);
    let url = DocumentId::from_bytes(unknown).to_string();
    let handle = client.open_url(&url).expect("open unknown document");
    let answer = within("the barrier's answer", handle.ready()).await;
    assert!(
        matches!(answer, Err(ClientError::Unavailable(_))),
        "a document nobody has is unavailable: {answer:?}"
    );
}

/// Every change hash the server has told `handle`'s device it holds.
fn acknowledged(handle: &DocHandle) -> Vec<ChangeHash> {
    handle.server_heads().unwrap_or_default()
}

/// Runs `steps` on a fresh disk, cuts the power after the last, and checks
/// the promise and convergence. `skip_flush` runs the server in its unsafe
/// never-fsync mode (for the check that this test catches it).
async fn cut_after(steps: &[Step], cut: PowerCut, skip_flush: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = Arc::new(SimDisk::new());
    let life = boot(Arc::clone(&disk), &dir.path().join("server-1"), skip_flush).await;
    let names: Vec<String> = (0..DEVICES).map(|d| format!("device-{d}")).collect();
    let mut clients: Vec<Client> = names
        .iter()
        .map(|name| device(&life.url, dir.path(), name))
        .collect();
    let first = clients[0].create().expect("create");
    put(&first, "opened", "yes");
    within("the first write to be acknowledged", first.synced())
        .await
        .expect("synced");
    let document_id = first.document_id();
    let url = first.url();
    let mut handles = vec![first];
    for client in &clients[1..] {
        let handle = client.open_url(&url).expect("open");
        within("the document to reach every device", handle.ready())
            .await
            .expect("ready");
        handles.push(handle);
    }
    // Only now hold flushes: setup is durable, so the first write of the
    // schedule starts a flush of its own.
    poll_until("setup to be durable", || {
        disk.last_write_position(document_id.as_bytes())
            .is_some_and(|last| last <= disk.durable_position())
    })
    .await;
    disk.hold_flushes();

    let mut written = vec!["opened".to_string()];
    for (index, step) in steps.iter().enumerate() {
        match *step {
            Step::Write { device } => {
                let key = format!("sale-{index}-by-{device}");
                put(&handles[device], &key, "100");
                written.push(key);
                let change = handles[device]
                    .read(|doc| doc.get_heads())
                    .expect("readable")
                    .first()
                    .copied()
                    .expect("a head after a write");
                if skip_flush {
                    // No flush is ever called: the write is as far as it
                    // goes once the server says it holds it.
                    let writer = &handles[device];
                    poll_until("the unflushed write to be acknowledged", || {
                        acknowledged(writer).contains(&change)
                    })
                    .await;
                } else {
                    wait_until_write_is_held(&disk, &document_id, change).await;
                }
            }
            Step::Release => {
                disk.release_flushes();
            }
        }
    }

    for client in &clients {
        barrier(client).await;
    }
    let promised: BTreeSet<ChangeHash> = handles.iter().flat_map(acknowledged).collect();
    let survivor = Arc::new(disk.power_loss(cut));
    life.task.abort();
    let survived = stored_doc(&survivor, &document_id);
    let lost: Vec<&ChangeHash> = promised
        .iter()
        .filter(|hash| {
            survived
                .as_ref()
                .is_none_or(|doc| doc.get_change_by_hash(hash).is_none())
        })
        .collect();
    assert!(
        lost.is_empty(),
        "after {steps:?} and {cut:?} the server had acknowledged changes the disk lost: {lost:?}"
    );

    // Reboot on what survived; every device reconnects and resyncs. A
    // handle keeps its device's store open, so they go first.
    drop(handles);
    for client in clients.drain(..) {
        client.close().await.expect("device closes");
    }
    let life = boot(Arc::clone(&survivor), &dir.path().join("server-2"), false).await;
    clients = names
        .iter()
        .map(|name| device(&life.url, dir.path(), name))
        .collect();
    let mut heads = Vec::new();
    for client in &clients {
        let handle = client.open_url(&url).expect("open");
        wait_for_keys(&handle, &written).await;
        within("the device's changes to be acknowledged", handle.synced())
            .await
            .expect("synced");
        let mut device_heads = handle.read(|doc| doc.get_heads()).expect("readable");
        device_heads.sort();
        heads.push(device_heads);
    }
    assert!(
        heads.windows(2).all(|pair| pair[0] == pair[1]),
        "replicas differ after resync: {heads:?}"
    );
    let server_keys = keys(&stored_doc(&survivor, &document_id).expect("stored"));
    for key in &written {
        assert!(server_keys.contains(key), "the rebooted server lacks {key}");
    }
    for client in clients {
        client.close().await.expect("device closes");
    }
    let _ = life.stop.send(());
    within("the rebooted server to stop", life.task)
        .await
        .expect("server task")
        .expect("server stops cleanly");
}

/// The cut of each experiment: seeded, mostly losing everything unflushed,
/// sometimes keeping a prefix of it as sled may.
fn cut_for(seed: u64, step: usize) -> PowerCut {
    let mut rng = StdRng::seed_from_u64(seed ^ (step as u64).rotate_left(32));
    if rng.gen_bool(0.7) {
        PowerCut::LoseUnflushed
    } else {
        PowerCut::KeepPrefix {
            seed: rng.next_u64(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_change_is_lost_at_a_power_cut_after_any_step_of_seeded_schedules() {
    for seed in SCHEDULE_SEEDS {
        let steps = schedule(seed);
        for cut_at in 1..=steps.len() {
            cut_after(&steps[..cut_at], cut_for(seed, cut_at), false).await;
        }
    }
}

/// The unsafe never-fsync mode acknowledges what no flush made durable:
/// the check above must see it (a cut right after a write loses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "acknowledged changes the disk lost")]
async fn a_server_that_never_fsyncs_is_caught_losing_acknowledged_changes() {
    let steps = schedule(SCHEDULE_SEEDS[0]);
    cut_after(&steps[..1], PowerCut::LoseUnflushed, true).await;
}
