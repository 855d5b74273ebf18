//! The scenarios: ingest, live latency, reconnect, idle connections, and
//! documents on disk (cold start and memory). Each runs simulated devices
//! ([`SimDevice`]) against a server at a `ws://` URL and returns a
//! [`Figure`].
//!
//! Every multi-device scenario runs in three steps so that connecting is
//! not timed: each device connects, joins and syncs its documents, reports
//! ready, waits for the common start, runs, and returns its samples.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use super::device::{
    connect_and_join, pump, pump_ready, pump_until, send_effects, Fixture, SentTimes, SimDevice,
    Socket,
};
use super::process::{self, ServerProcess};
use super::{quantile, sorted, Figure, LoadgenError};
use crate::protocol::ids::DocumentId;

/// Devices connecting at once (the rest wait their turn, untimed).
pub const CONNECTS_IN_FLIGHT_MAX: usize = 64;
/// How long devices may take to connect and sync before the start.
pub const SETUP_TIMEOUT_MS: u64 = 120_000;
/// After the recording stops, how long acknowledgements may take.
pub const DRAIN_TIMEOUT_MS: u64 = 120_000;

/// The ingest scenario's parameters.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub devices: usize,
    pub duration_ms: u64,
    /// Sales a device records before it waits for acknowledgements.
    pub in_flight_max: usize,
    /// Also time the same sales synced in-process (the floor), after the run.
    pub measure_floor: bool,
}

/// What one ingest device did.
#[derive(Debug, Clone)]
pub struct IngestDevice {
    pub ledger: DocumentId,
    pub recorded: u64,
    pub acknowledged: u64,
    ack_latencies_us: Vec<f64>,
    last_ack_at: Option<Instant>,
    /// Why the device stopped early (the server closed it, or its
    /// acknowledgements never came), if it did.
    pub dropped: Option<String>,
}

/// The ingest figure, and each device's ledger (for checking the store).
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub figure: Figure,
    pub devices: Vec<IngestDevice>,
}

/// Start line shared by a scenario's devices.
#[derive(Clone)]
struct StartLine {
    ready: mpsc::Sender<()>,
    start: watch::Receiver<Option<Instant>>,
}

impl StartLine {
    /// Says this device is ready and waits for the common start, still
    /// reading its socket (servers ping, and drop peers that do not answer).
    async fn ready_then_start(
        &mut self,
        socket: &mut Socket,
        device: &mut SimDevice,
    ) -> Result<Instant, LoadgenError> {
        let gone = || LoadgenError::Task("the coordinator is gone".into());
        self.ready.send(()).await.map_err(|_| gone())?;
        loop {
            if let Some(start) = *self.start.borrow_and_update() {
                return Ok(start);
            }
            tokio::select! {
                changed = self.start.changed() => changed.map_err(|_| gone())?,
                item = socket.next() => pump(socket, device, item).await?,
            }
        }
    }
}

/// Waits for `count` ready devices (or the first failed task), then starts
/// them all.
async fn start_when_ready<T: 'static>(
    count: usize,
    ready: &mut mpsc::Receiver<()>,
    start: &watch::Sender<Option<Instant>>,
    tasks: &mut JoinSet<Result<T, LoadgenError>>,
) -> Result<Instant, LoadgenError> {
    let wait = async {
        let mut seen = 0;
        while seen < count {
            tokio::select! {
                got = ready.recv() => {
                    got.ok_or_else(|| LoadgenError::Task("devices vanished".into()))?;
                    seen += 1;
                }
                Some(done) = tasks.join_next() => {
                    match done {
                        Ok(Err(error)) => return Err(error),
                        Err(error) => return Err(LoadgenError::Task(error.to_string())),
                        Ok(Ok(_)) => return Err(LoadgenError::Task("a device ended before the start".into())),
                    }
                }
            }
        }
        Ok(())
    };
    super::device::within(SETUP_TIMEOUT_MS, "devices to connect and sync", wait).await??;
    let now = Instant::now();
    let _ = start.send(Some(now));
    Ok(now)
}

async fn join_all<T: 'static>(
    mut tasks: JoinSet<Result<T, LoadgenError>>,
) -> Result<Vec<T>, LoadgenError> {
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.map_err(|error| LoadgenError::Task(error.to_string()))??);
    }
    Ok(results)
}

/// Connects a writer and syncs its new ledger to the server.
async fn connect_writer(url: &str, device: &mut SimDevice) -> Result<Socket, LoadgenError> {
    let mut socket = connect_and_join(url, device).await?;
    pump_until(
        &mut socket,
        device,
        SETUP_TIMEOUT_MS,
        "the ledger's first sync",
        SimDevice::is_synced,
    )
    .await?;
    Ok(socket)
}

async fn close(mut socket: Socket) {
    let _ = socket.close(None).await;
}

/// Devices record sales as fast as they can, at most `in_flight_max`
/// unacknowledged each, for `duration_ms`; then wait for the last
/// acknowledgements. Sales/s acknowledged = acknowledged / (last
/// acknowledgement - start).
pub async fn ingest(
    url: &str,
    target: &str,
    options: &IngestOptions,
    server_pid: Option<u32>,
) -> Result<IngestOutcome, LoadgenError> {
    let fixture = Arc::new(Fixture::new()?);
    let (ready_tx, mut ready_rx) = mpsc::channel(options.devices.max(1));
    let (start_tx, start_rx) = watch::channel(None);
    let connects = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT_MAX));
    let mut tasks = JoinSet::new();
    for index in 0..options.devices {
        let fixture = Arc::clone(&fixture);
        let url = url.to_string();
        let mut line = StartLine {
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        let connects = Arc::clone(&connects);
        let options = options.clone();
        tasks.spawn(async move {
            let mut device = SimDevice::writer(fixture, &format!("ingest-{index}"))?;
            let permit = connects.acquire_owned().await;
            let mut socket = connect_writer(&url, &mut device).await?;
            drop(permit);
            let start = line.ready_then_start(&mut socket, &mut device).await?;
            // A device the server drops mid-run is counted, not fatal: a
            // server that sheds load shows it in `devices_dropped`.
            let run = async {
                let deadline = start + Duration::from_millis(options.duration_ms);
                let drain_deadline = deadline + Duration::from_millis(DRAIN_TIMEOUT_MS);
                loop {
                    pump_ready(&mut socket, &mut device).await?;
                    let now = Instant::now();
                    if now < deadline {
                        if device.pending() < options.in_flight_max {
                            let effects = device.record_sale()?;
                            send_effects(&mut socket, effects).await?;
                            tokio::task::yield_now().await;
                            continue;
                        }
                    } else if device.pending() == 0 {
                        break;
                    }
                    if now >= drain_deadline {
                        return Err(LoadgenError::Timeout {
                            what: format!("{} acknowledgements", device.pending()),
                            after_ms: DRAIN_TIMEOUT_MS,
                        });
                    }
                    let wake = if now < deadline {
                        deadline
                    } else {
                        drain_deadline
                    };
                    tokio::select! {
                        item = socket.next() => pump(&mut socket, &mut device, item).await?,
                        _ = tokio::time::sleep_until(wake.into()) => {}
                    }
                }
                Ok::<(), LoadgenError>(())
            }
            .await;
            let dropped = match run {
                Ok(()) => None,
                Err(error) => Some(error.to_string()),
            };
            close(socket).await;
            Ok(IngestDevice {
                ledger: device.ledger,
                recorded: device.recorded,
                acknowledged: device.acknowledged,
                ack_latencies_us: std::mem::take(&mut device.ack_latencies_us),
                last_ack_at: device.last_ack_at,
                dropped,
            })
        });
    }
    drop(ready_tx);
    let start = start_when_ready(options.devices, &mut ready_rx, &start_tx, &mut tasks).await?;
    let cpu_before = (
        server_pid.and_then(|pid| process::cpu_ms(&pid.to_string())),
        process::cpu_ms("self"),
    );
    // Memory while the load runs, just before the recording stops.
    let sample_after = Duration::from_millis(options.duration_ms.saturating_mul(9) / 10);
    let rss_sampler = tokio::spawn(async move {
        tokio::time::sleep(sample_after).await;
        server_pid.and_then(process::rss_kib)
    });
    let devices = join_all(tasks).await?;
    let cpu_after = (
        server_pid.and_then(|pid| process::cpu_ms(&pid.to_string())),
        process::cpu_ms("self"),
    );
    let rss_kib = rss_sampler.await.ok().flatten();
    let dropped: Vec<&str> = devices
        .iter()
        .filter_map(|d| d.dropped.as_deref())
        .collect();
    if let Some(first) = dropped.first() {
        eprintln!(
            "{} devices stopped early; the first: {first}",
            dropped.len()
        );
    }
    let recorded: u64 = devices.iter().map(|d| d.recorded).sum();
    let acknowledged: u64 = devices.iter().map(|d| d.acknowledged).sum();
    let last_ack = devices.iter().filter_map(|d| d.last_ack_at).max();
    let elapsed_s = last_ack.map_or(0.0, |at| at.duration_since(start).as_secs_f64());
    let latencies = sorted(
        devices
            .iter()
            .flat_map(|d| d.ack_latencies_us.iter().copied())
            .collect(),
    );
    let per_s = if elapsed_s > 0.0 {
        acknowledged as f64 / elapsed_s
    } else {
        0.0
    };
    let sales_per_device =
        usize::try_from(acknowledged.div_ceil(options.devices.max(1) as u64)).unwrap_or(usize::MAX);
    let floor = if options.measure_floor {
        let devices = options.devices;
        let floor = tokio::task::spawn_blocking(move || {
            super::floors::ingest_same_sales(devices, sales_per_device)
        })
        .await
        .map_err(|error| LoadgenError::Task(error.to_string()))??;
        Some(floor)
    } else {
        None
    };
    let mut figure = Figure::new("ingest", target)
        .param("devices", options.devices as f64)
        .param("seconds", options.duration_ms as f64 / 1000.0)
        .param("in_flight_max", options.in_flight_max as f64)
        .value("sales_acknowledged_per_s", per_s)
        .value("sales_recorded", recorded as f64)
        .value("sales_acknowledged", acknowledged as f64)
        .value("devices_dropped", dropped.len() as f64)
        .value("until_last_ack_s", elapsed_s)
        .value("ack_latency_p50_ms", quantile(&latencies, 0.5) / 1000.0)
        .value("ack_latency_p99_ms", quantile(&latencies, 0.99) / 1000.0);
    if let Some(rss) = rss_kib {
        figure = figure.value("server_rss_under_load_kib", rss as f64);
    }
    if let Some(floor) = floor {
        figure = figure.value("floor_same_sales_per_s", floor);
    }
    // CPU per acknowledged sale, on each side: less noisy than rates on a
    // shared machine, and shows who the two cores went to.
    let per_sale = |before: Option<u64>, after: Option<u64>| {
        before
            .zip(after)
            .map(|(before, after)| after.saturating_sub(before) as f64 / acknowledged.max(1) as f64)
    };
    if let Some(ms) = per_sale(cpu_before.0, cpu_after.0) {
        figure = figure.value("server_cpu_ms_per_sale", ms);
    }
    if let Some(ms) = per_sale(cpu_before.1, cpu_after.1) {
        figure = figure.value("loadgen_cpu_ms_per_sale", ms);
    }
    Ok(IngestOutcome { figure, devices })
}

/// The live-latency scenario's parameters.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    pub idle: usize,
    pub writers: usize,
    /// Sales a second each writer records.
    pub sales_per_second: f64,
    pub duration_ms: u64,
}

/// What a latency-scenario task brings back.
enum LatencyRole {
    Idle,
    Writer { recorded: u64 },
    Observer { samples_us: Vec<f64> },
}

/// `idle` devices connected with their ledger open, `writers` devices each
/// recording `sales_per_second`, and for each writer an observer device
/// with the writer's ledger open; per sale, the time from the writer's
/// change until the observer holds it.
pub async fn latency(
    url: &str,
    target: &str,
    options: &LatencyOptions,
    server_pid: Option<u32>,
) -> Result<Figure, LoadgenError> {
    let fixture = Arc::new(Fixture::new()?);
    let participants = options.idle + options.writers * 2;
    let (ready_tx, mut ready_rx) = mpsc::channel(participants.max(1));
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let connects = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT_MAX));
    let mut tasks: JoinSet<Result<LatencyRole, LoadgenError>> = JoinSet::new();
    for index in 0..options.idle {
        let (fixture, url, connects) =
            (Arc::clone(&fixture), url.to_string(), Arc::clone(&connects));
        let mut line = StartLine {
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let mut device = SimDevice::writer(fixture, &format!("idle-{index}"))?;
            let permit = connects.acquire_owned().await;
            let mut socket = connect_writer(&url, &mut device).await?;
            drop(permit);
            line.ready_then_start(&mut socket, &mut device).await?;
            loop {
                tokio::select! {
                    item = socket.next() => pump(&mut socket, &mut device, item).await?,
                    _ = stop.changed() => break,
                }
            }
            close(socket).await;
            Ok(LatencyRole::Idle)
        });
    }
    let interval = Duration::from_secs_f64(1.0 / options.sales_per_second.max(0.001));
    for index in 0..options.writers {
        let (fixture, url) = (Arc::clone(&fixture), url.to_string());
        let sent: SentTimes = SentTimes::default();
        let mut writer = SimDevice::writer(Arc::clone(&fixture), &format!("writer-{index}"))?;
        writer.publish_to(Arc::clone(&sent));
        // The writer's ledger must be on the server before its observer asks.
        let mut writer_socket = connect_writer(&url, &mut writer).await?;
        let mut observer =
            SimDevice::observer(fixture, &format!("observer-{index}"), writer.ledger, sent);
        let mut observer_socket = connect_and_join(&url, &mut observer).await?;
        pump_until(
            &mut observer_socket,
            &mut observer,
            SETUP_TIMEOUT_MS,
            "the observer to open the writer's ledger",
            SimDevice::has_document,
        )
        .await?;
        let mut line = StartLine {
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        let duration = Duration::from_millis(options.duration_ms);
        tasks.spawn(async move {
            let start = line
                .ready_then_start(&mut writer_socket, &mut writer)
                .await?;
            let deadline = start + duration;
            let mut ticks = tokio::time::interval_at(start.into(), interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                tokio::select! {
                    item = writer_socket.next() => pump(&mut writer_socket, &mut writer, item).await?,
                    _ = ticks.tick() => {
                        let effects = writer.record_sale()?;
                        send_effects(&mut writer_socket, effects).await?;
                    }
                }
            }
            pump_until(
                &mut writer_socket,
                &mut writer,
                DRAIN_TIMEOUT_MS,
                "the writer's acknowledgements",
                |device| device.pending() == 0,
            )
            .await?;
            close(writer_socket).await;
            Ok(LatencyRole::Writer {
                recorded: writer.recorded,
            })
        });
        let mut line = StartLine {
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            line.ready_then_start(&mut observer_socket, &mut observer)
                .await?;
            loop {
                tokio::select! {
                    item = observer_socket.next() => pump(&mut observer_socket, &mut observer, item).await?,
                    _ = stop.changed() => break,
                }
            }
            close(observer_socket).await;
            Ok(LatencyRole::Observer {
                samples_us: std::mem::take(&mut observer.arrival_latencies_us),
            })
        });
    }
    drop(ready_tx);
    start_when_ready(participants, &mut ready_rx, &start_tx, &mut tasks).await?;
    tokio::time::sleep(Duration::from_millis(options.duration_ms)).await;
    let rss_kib = server_pid.and_then(process::rss_kib);
    // Let the last changes arrive, then stop the idle devices and observers.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let _ = stop_tx.send(true);
    let roles = join_all(tasks).await?;
    let mut samples = Vec::new();
    let mut recorded = 0;
    for role in roles {
        match role {
            LatencyRole::Idle => {}
            LatencyRole::Writer { recorded: count } => recorded += count,
            LatencyRole::Observer { samples_us } => samples.extend(samples_us),
        }
    }
    let samples = sorted(samples);
    let mut figure = Figure::new("latency", target)
        .param("idle", options.idle as f64)
        .param("writers", options.writers as f64)
        .param("sales_per_s_per_writer", options.sales_per_second)
        .param("seconds", options.duration_ms as f64 / 1000.0)
        .value("sales_recorded", recorded as f64)
        .value("sales_seen_by_observer", samples.len() as f64)
        .value("latency_p50_ms", quantile(&samples, 0.5) / 1000.0)
        .value("latency_p99_ms", quantile(&samples, 0.99) / 1000.0)
        .value(
            "latency_max_ms",
            samples.last().copied().unwrap_or(0.0) / 1000.0,
        );
    if let Some(rss) = rss_kib {
        figure = figure.value("server_rss_kib", rss as f64);
    }
    Ok(figure)
}

/// A device syncs its ledger, goes offline, records `sales`, reconnects:
/// time from the reconnect until the server acknowledged them all.
/// Repeated `repeat` times with fresh devices; the median is the figure.
pub async fn reconnect(
    url: &str,
    target: &str,
    sales: usize,
    repeat: usize,
) -> Result<Figure, LoadgenError> {
    let fixture = Arc::new(Fixture::new()?);
    let mut times_ms = Vec::new();
    for round in 0..repeat.max(1) {
        let mut device = SimDevice::writer(Arc::clone(&fixture), &format!("offline-{round}"))?;
        let socket = connect_writer(url, &mut device).await?;
        close(socket).await;
        device.disconnected();
        for _ in 0..sales {
            // Offline: the effects are only "persist" and "changed".
            let _ = device.record_sale()?;
        }
        let started = Instant::now();
        let mut socket = connect_and_join(url, &mut device).await?;
        pump_until(
            &mut socket,
            &mut device,
            DRAIN_TIMEOUT_MS,
            "the offline sales' acknowledgement",
            SimDevice::is_synced,
        )
        .await?;
        times_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        close(socket).await;
    }
    let times = sorted(times_ms);
    Ok(Figure::new("reconnect", target)
        .param("sales", sales as f64)
        .param("repeat", repeat as f64)
        .value("until_acknowledged_p50_ms", quantile(&times, 0.5))
        .value(
            "until_acknowledged_max_ms",
            times.last().copied().unwrap_or(0.0),
        ))
}

/// Opens `count` connections that only join (or, with `documents`, each
/// opens one of them), `CONNECTS_IN_FLIGHT_MAX` at a time; returns the
/// sockets that made it and how many failed.
async fn open_connections(
    url: &str,
    count: usize,
    documents: Option<&[DocumentId]>,
    stop: watch::Receiver<bool>,
) -> (
    JoinSet<Result<(), LoadgenError>>,
    mpsc::Receiver<Result<(), String>>,
) {
    let fixture = match Fixture::new() {
        Ok(fixture) => Arc::new(fixture),
        Err(error) => {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Err(error.to_string()));
            return (JoinSet::new(), rx);
        }
    };
    let connects = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT_MAX));
    let (report_tx, report_rx) = mpsc::channel(count.max(1));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let document = documents.and_then(|docs| docs.get(index % docs.len().max(1)).copied());
        let (url, connects, report) = (url.to_string(), Arc::clone(&connects), report_tx.clone());
        let fixture = Arc::clone(&fixture);
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let mut device = SimDevice::reader(fixture, &format!("held-{index}"), document);
            let permit = connects.acquire_owned().await;
            let joined = async {
                let mut socket = connect_and_join(&url, &mut device).await?;
                if document.is_some() {
                    pump_until(
                        &mut socket,
                        &mut device,
                        SETUP_TIMEOUT_MS,
                        "the document",
                        SimDevice::has_document,
                    )
                    .await?;
                }
                Ok::<Socket, LoadgenError>(socket)
            }
            .await;
            drop(permit);
            let mut socket = match joined {
                Ok(socket) => {
                    let _ = report.send(Ok(())).await;
                    socket
                }
                Err(error) => {
                    let _ = report.send(Err(error.to_string())).await;
                    return Ok(());
                }
            };
            loop {
                tokio::select! {
                    item = socket.next() => pump(&mut socket, &mut device, item).await?,
                    _ = stop.changed() => break,
                }
            }
            close(socket).await;
            Ok(())
        });
    }
    (tasks, report_rx)
}

/// Counts connection reports until `count` arrived: (held, failed, first error).
async fn count_reports(
    reports: &mut mpsc::Receiver<Result<(), String>>,
    count: usize,
) -> (usize, usize, Option<String>) {
    let (mut held, mut failed, mut first_error) = (0, 0, None);
    while held + failed < count {
        match reports.recv().await {
            Some(Ok(())) => held += 1,
            Some(Err(error)) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
            None => break,
        }
    }
    (held, failed, first_error)
}

/// Holds `count` idle connections (join only) and reads the server's RSS
/// before and after: KiB per idle connection.
pub async fn idle(
    url: &str,
    target: &str,
    count: usize,
    server_pid: Option<u32>,
) -> Result<Figure, LoadgenError> {
    let rss_before = server_pid.and_then(process::rss_kib);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let (tasks, mut reports) = open_connections(url, count, None, stop_rx).await;
    let (held, failed, first_error) = count_reports(&mut reports, count).await;
    let connect_s = started.elapsed().as_secs_f64();
    // Let allocations settle (the server's join bookkeeping, keepalive timers).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let rss_after = server_pid.and_then(process::rss_kib);
    let _ = stop_tx.send(true);
    join_all(tasks).await?;
    if let Some(error) = &first_error {
        eprintln!("{failed} connections failed; the first: {error}");
    }
    let mut figure = Figure::new("idle", target)
        .param("connections", count as f64)
        .value("connections_held", held as f64)
        .value("connections_failed", failed as f64)
        .value("connect_all_s", connect_s);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        figure = figure
            .value("server_rss_before_kib", before as f64)
            .value("server_rss_after_kib", after as f64)
            .value(
                "rss_per_connection_kib",
                after.saturating_sub(before) as f64 / held.max(1) as f64,
            );
    }
    Ok(figure)
}

/// Writes `docs` ledger documents of `sales_per_doc` sales straight into a
/// new store at `data_dir` (no server), the way tests seed one. Returns
/// their ids.
pub fn seed_store(
    data_dir: &Path,
    docs: usize,
    sales_per_doc: usize,
) -> Result<Vec<DocumentId>, LoadgenError> {
    use crate::storage::{DocStore, SledStore};
    let fixture = Fixture::new()?;
    let (mut device_doc, mut ledger) = fixture.device_docs("seed")?;
    for _ in 0..sales_per_doc {
        crate::domain::record_sale(
            &mut device_doc,
            &mut ledger,
            &fixture.catalog,
            &fixture.sale,
        )?;
    }
    let bytes = ledger.save();
    let store = SledStore::open(data_dir)?;
    let mut ids = Vec::with_capacity(docs);
    for _ in 0..docs {
        let id = super::device::random_document_id();
        store.append_chunk(id.as_bytes(), &bytes)?;
        ids.push(id);
    }
    store.flush()?;
    Ok(ids)
}

/// Cold start and memory with many documents on disk: seeds `docs`
/// documents into a fresh data directory, starts the `ventas` binary on it
/// (process start until `/health` answers), then `active` devices each open
/// one document; server RSS at each step.
pub async fn documents_on_disk(
    ventas_bin: &Path,
    docs: usize,
    active: usize,
) -> Result<Figure, LoadgenError> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let seeding = Instant::now();
    let ids = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        move || seed_store(&data_dir, docs, 10)
    })
    .await
    .map_err(|error| LoadgenError::Task(error.to_string()))??;
    let seed_s = seeding.elapsed().as_secs_f64();
    let server = ServerProcess::spawn_ventas(ventas_bin, &data_dir, &[])?;
    let cold_start_ms = server.health_after_ms().await?;
    let rss_idle = process::rss_kib(server.pid());
    let (stop_tx, stop_rx) = watch::channel(false);
    let active_ids: Vec<DocumentId> = ids.iter().take(active).copied().collect();
    let (tasks, mut reports) =
        open_connections(&server.url(), active, Some(&active_ids), stop_rx).await;
    let (held, failed, first_error) = count_reports(&mut reports, active).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rss_active = process::rss_kib(server.pid());
    let _ = stop_tx.send(true);
    join_all(tasks).await?;
    server.stop().await?;
    if let Some(error) = first_error {
        return Err(LoadgenError::Task(format!(
            "{failed} devices could not open their document; the first: {error}"
        )));
    }
    let mut figure = Figure::new("docs", "ventas")
        .param("docs_on_disk", docs as f64)
        .param("active", active as f64)
        .value("seed_s", seed_s)
        .value("cold_start_ms", cold_start_ms)
        .value("active_devices_with_document", held as f64);
    if let Some(rss) = rss_idle {
        figure = figure.value("server_rss_after_start_kib", rss as f64);
    }
    if let Some(rss) = rss_active {
        figure = figure.value("server_rss_with_active_kib", rss as f64);
    }
    Ok(figure)
}

/// The CI smoke run: starts `ventas` on port 0 in a temporary directory,
/// runs a tiny ingest, and fails unless every sale was acknowledged.
pub async fn smoke(
    ventas_bin: &Path,
    devices: usize,
    duration_ms: u64,
) -> Result<Figure, LoadgenError> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::spawn_ventas(ventas_bin, &dir.path().join("data"), &[])?;
    let options = IngestOptions {
        devices,
        duration_ms,
        in_flight_max: 16,
        measure_floor: false,
    };
    let outcome = ingest(&server.url(), "ventas", &options, Some(server.pid())).await;
    server.stop().await?;
    let outcome = outcome?;
    if let Some(reason) = outcome.devices.iter().find_map(|d| d.dropped.as_deref()) {
        return Err(LoadgenError::Task(format!(
            "smoke: a device stopped early: {reason}"
        )));
    }
    let recorded = outcome.devices.iter().map(|d| d.recorded).sum::<u64>();
    let acknowledged = outcome.devices.iter().map(|d| d.acknowledged).sum::<u64>();
    if recorded == 0 || acknowledged != recorded {
        return Err(LoadgenError::Task(format!(
            "smoke: {acknowledged} of {recorded} sales acknowledged"
        )));
    }
    Ok(outcome.figure)
}
