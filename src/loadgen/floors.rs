//! Raw floors, measured in the same run as the scenarios: the same sales
//! synced in-process with plain `automerge::sync` (no network, no disk),
//! the storage alone (append + flush, per change and grouped), and a plain
//! tokio-tungstenite WebSocket echo round trip on loopback.

use std::time::Instant;

use automerge::sync::{State, SyncDoc};
use automerge::Automerge;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::device::Fixture;
use super::{quantile, sorted, Figure, LoadgenError};
use crate::domain::record_sale;
use crate::storage::{DocStore, SledStore};

/// Sync rounds before two in-memory documents must have converged.
const SYNC_ROUNDS_MAX: usize = 64;

/// Exchanges sync messages between `a` and `b` until neither has anything
/// to say.
fn sync_until_quiet(
    a: &mut Automerge,
    b: &mut Automerge,
    state_a: &mut State,
    state_b: &mut State,
) -> Result<(), LoadgenError> {
    for _ in 0..SYNC_ROUNDS_MAX {
        let mut moved = false;
        if let Some(message) = a.generate_sync_message(state_a) {
            b.receive_sync_message(state_b, message)?;
            moved = true;
        }
        if let Some(message) = b.generate_sync_message(state_b) {
            a.receive_sync_message(state_a, message)?;
            moved = true;
        }
        if !moved {
            return Ok(());
        }
    }
    Err(LoadgenError::Protocol(format!(
        "in-memory sync did not converge in {SYNC_ROUNDS_MAX} rounds"
    )))
}

/// Time for one device (`name`) to record `sales` sales into its ledger,
/// each synced to quiet with a server-side copy in memory; checks the copy
/// converged.
fn record_and_sync(
    fixture: &Fixture,
    name: &str,
    sales: usize,
) -> Result<std::time::Duration, LoadgenError> {
    let (mut device_doc, mut ledger) = fixture.device_docs(name)?;
    let mut server = Automerge::new();
    let (mut device_state, mut server_state) = (State::new(), State::new());
    sync_until_quiet(
        &mut ledger,
        &mut server,
        &mut device_state,
        &mut server_state,
    )?;
    let started = Instant::now();
    for _ in 0..sales {
        record_sale(
            &mut device_doc,
            &mut ledger,
            &fixture.catalog,
            &fixture.sale,
        )?;
        sync_until_quiet(
            &mut ledger,
            &mut server,
            &mut device_state,
            &mut server_state,
        )?;
    }
    let elapsed = started.elapsed();
    if server.get_heads() != ledger.get_heads() {
        return Err(LoadgenError::Protocol("floor: server copy diverged".into()));
    }
    Ok(elapsed)
}

/// Ingest floor: one device records `sales` sales with `record_sale` and
/// syncs each to a server-side document in memory (device -> server ->
/// acknowledgement), as the ingest scenario's devices and server do, on
/// one core. Also the recording alone.
pub fn ingest(sales: usize) -> Result<Figure, LoadgenError> {
    let fixture = Fixture::new()?;
    let synced_s = record_and_sync(&fixture, "floor", sales)?.as_secs_f64();
    let (mut device_doc, mut ledger) = fixture.device_docs("floor-record")?;
    let started = Instant::now();
    for _ in 0..sales {
        record_sale(
            &mut device_doc,
            &mut ledger,
            &fixture.catalog,
            &fixture.sale,
        )?;
    }
    let record_s = started.elapsed().as_secs_f64();
    Ok(Figure::new("floor_ingest", "floor")
        .param("sales", sales as f64)
        .value("record_and_sync_sales_per_s", sales as f64 / synced_s)
        .value("record_only_sales_per_s", sales as f64 / record_s))
}

/// Ingest floor for a given shape: `devices` devices each record
/// `sales_per_device` sales into their own ledger, each synced in memory to
/// a server-side copy as it is recorded (record + sync to quiet, on one
/// core). Returns sales per second; at most `SHAPE_SALES_MAX` sales are
/// timed (fewer devices, same sales each).
pub fn ingest_same_sales(devices: usize, sales_per_device: usize) -> Result<f64, LoadgenError> {
    let fixture = Fixture::new()?;
    let devices = devices
        .min(SHAPE_SALES_MAX / sales_per_device.max(1))
        .max(1);
    let mut timed = std::time::Duration::ZERO;
    for index in 0..devices {
        timed += record_and_sync(&fixture, &format!("floor-{index}"), sales_per_device)?;
    }
    let sales = devices * sales_per_device;
    Ok(sales as f64 / timed.as_secs_f64().max(1e-9))
}

/// Sales the shape-matched ingest floor times at most.
pub const SHAPE_SALES_MAX: usize = 20_000;

/// Latency floor: one sale travels writer -> server -> observer through
/// in-memory sync (the recording itself not timed), on a ledger of
/// `prior_sales`; p50 and p99 of `samples`.
pub fn latency(prior_sales: usize, samples: usize) -> Result<Figure, LoadgenError> {
    let fixture = Fixture::new()?;
    let (mut device_doc, mut writer) = fixture.device_docs("floor")?;
    for _ in 0..prior_sales {
        record_sale(
            &mut device_doc,
            &mut writer,
            &fixture.catalog,
            &fixture.sale,
        )?;
    }
    let (mut server, mut observer) = (Automerge::new(), Automerge::new());
    let (mut writer_state, mut server_for_writer) = (State::new(), State::new());
    let (mut server_for_observer, mut observer_state) = (State::new(), State::new());
    sync_until_quiet(
        &mut writer,
        &mut server,
        &mut writer_state,
        &mut server_for_writer,
    )?;
    sync_until_quiet(
        &mut server,
        &mut observer,
        &mut server_for_observer,
        &mut observer_state,
    )?;
    let mut times_us = Vec::with_capacity(samples);
    for _ in 0..samples {
        record_sale(
            &mut device_doc,
            &mut writer,
            &fixture.catalog,
            &fixture.sale,
        )?;
        let started = Instant::now();
        sync_until_quiet(
            &mut writer,
            &mut server,
            &mut writer_state,
            &mut server_for_writer,
        )?;
        sync_until_quiet(
            &mut server,
            &mut observer,
            &mut server_for_observer,
            &mut observer_state,
        )?;
        times_us.push(started.elapsed().as_secs_f64() * 1e6);
        if observer.get_heads() != writer.get_heads() {
            return Err(LoadgenError::Protocol("floor: observer diverged".into()));
        }
    }
    let times = sorted(times_us);
    Ok(Figure::new("floor_latency", "floor")
        .param("prior_sales", prior_sales as f64)
        .param("samples", samples as f64)
        .value("sync_p50_ms", quantile(&times, 0.5) / 1000.0)
        .value("sync_p99_ms", quantile(&times, 0.99) / 1000.0))
}

/// Reconnect floor: `sales` offline sales synced in memory from fresh sync
/// states to a server copy that holds the ledger as it was before them.
pub fn reconnect(sales: usize) -> Result<Figure, LoadgenError> {
    let fixture = Fixture::new()?;
    let (mut device_doc, mut ledger) = fixture.device_docs("floor")?;
    let mut server = Automerge::load(&ledger.save())?;
    for _ in 0..sales {
        record_sale(
            &mut device_doc,
            &mut ledger,
            &fixture.catalog,
            &fixture.sale,
        )?;
    }
    let started = Instant::now();
    sync_until_quiet(
        &mut ledger,
        &mut server,
        &mut State::new(),
        &mut State::new(),
    )?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if server.get_heads() != ledger.get_heads() {
        return Err(LoadgenError::Protocol("floor: server copy diverged".into()));
    }
    Ok(Figure::new("floor_reconnect", "floor")
        .param("sales", sales as f64)
        .value("sync_ms", elapsed_ms))
}

/// Storage floor: appending one sale's change chunk and flushing, per
/// change (one document), and grouped as the server's group commit does it:
/// `group` documents each get one chunk, then one flush.
pub fn storage(changes: usize, group: usize) -> Result<Figure, LoadgenError> {
    let fixture = Fixture::new()?;
    let (mut device_doc, mut ledger) = fixture.device_docs("floor")?;
    let heads = ledger.get_heads();
    record_sale(
        &mut device_doc,
        &mut ledger,
        &fixture.catalog,
        &fixture.sale,
    )?;
    let chunk = ledger.save_after(&heads);
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path())?;
    let doc = [7u8; 16];
    let started = Instant::now();
    for _ in 0..changes {
        store.append_chunk(&doc, &chunk)?;
        store.flush()?;
    }
    let single_s = started.elapsed().as_secs_f64();
    let group = group.max(1);
    let groups = changes.div_ceil(group);
    let (mut appending, mut flushing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for index in 0..groups {
        let started = Instant::now();
        for member in 0..group {
            let mut doc = [0u8; 16];
            doc[..8].copy_from_slice(&((index * group + member) as u64 + 1000).to_be_bytes());
            store.append_chunk(&doc, &chunk)?;
        }
        let appended = Instant::now();
        store.flush()?;
        appending += appended.duration_since(started);
        flushing += appended.elapsed();
    }
    let grouped_s = (appending + flushing).as_secs_f64();
    Ok(Figure::new("floor_storage", "floor")
        .param("changes", changes as f64)
        .param("group", group as f64)
        .param("chunk_bytes", chunk.len() as f64)
        .value("append_flush_each_per_s", changes as f64 / single_s)
        .value(
            "append_group_flush_per_s",
            (groups * group) as f64 / grouped_s,
        )
        .value(
            "group_append_ms_per_change",
            appending.as_secs_f64() * 1000.0 / (groups * group) as f64,
        )
        .value(
            "group_flush_ms_per_flush",
            flushing.as_secs_f64() * 1000.0 / groups as f64,
        ))
}

/// WebSocket floor: a tokio-tungstenite echo server on loopback in this
/// process; `round_trips` sequential round trips of `bytes`-byte binary
/// messages.
pub async fn websocket_echo(round_trips: usize, bytes: usize) -> Result<Figure, LoadgenError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let mut socket = tokio_tungstenite::accept_async(stream).await?;
        while let Some(message) = socket.next().await {
            match message? {
                WsMessage::Binary(data) => socket.send(WsMessage::Binary(data)).await?,
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
        Ok::<(), LoadgenError>(())
    });
    let mut socket = super::device::connect(&format!("ws://{addr}")).await?;
    let payload = vec![0x42u8; bytes];
    let mut times_us = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let started = Instant::now();
        socket
            .send(WsMessage::Binary(payload.clone().into()))
            .await?;
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Binary(_))) => break,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => return Err(LoadgenError::Closed),
            }
        }
        times_us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let _ = socket.close(None).await;
    let _ = server.await;
    let times = sorted(times_us);
    Ok(Figure::new("floor_websocket", "floor")
        .param("round_trips", round_trips as f64)
        .param("bytes", bytes as f64)
        .value("round_trip_p50_ms", quantile(&times, 0.5) / 1000.0)
        .value("round_trip_p99_ms", quantile(&times, 0.99) / 1000.0))
}

/// What batching could save the server: a device pipelines `batch` sales
/// (one sync message each) into a ledger of `prior_sales`; the server
/// applies them (a) one message at a time, as `Hub::apply_batch` does, and
/// (b) with one `apply_changes` of all their changes first, then the same
/// messages (which then add nothing).
pub fn batch_apply(prior_sales: usize, batch: usize) -> Result<Figure, LoadgenError> {
    let fixture = Fixture::new()?;
    let (mut device_doc, mut ledger) = fixture.device_docs("floor")?;
    for _ in 0..prior_sales {
        record_sale(
            &mut device_doc,
            &mut ledger,
            &fixture.catalog,
            &fixture.sale,
        )?;
    }
    let mut server = Automerge::new();
    let (mut device_state, mut server_state) = (State::new(), State::new());
    sync_until_quiet(
        &mut ledger,
        &mut server,
        &mut device_state,
        &mut server_state,
    )?;
    let heads_before = ledger.get_heads();
    let mut messages = Vec::with_capacity(batch);
    for _ in 0..batch {
        record_sale(
            &mut device_doc,
            &mut ledger,
            &fixture.catalog,
            &fixture.sale,
        )?;
        if let Some(message) = ledger.generate_sync_message(&mut device_state) {
            messages.push(message);
        }
    }
    let changes: Vec<automerge::Change> = ledger.get_changes(&heads_before);

    let (mut one_by_one, mut state) = (server.clone(), server_state.clone());
    let started = Instant::now();
    for message in messages.clone() {
        one_by_one.receive_sync_message(&mut state, message)?;
    }
    let one_by_one_ms = started.elapsed().as_secs_f64() * 1000.0;

    let (mut batched, mut state) = (server.clone(), server_state.clone());
    let started = Instant::now();
    batched.apply_changes(changes)?;
    let apply_ms = started.elapsed().as_secs_f64() * 1000.0;
    for message in messages {
        batched.receive_sync_message(&mut state, message)?;
    }
    let batched_ms = started.elapsed().as_secs_f64() * 1000.0;
    if one_by_one.get_heads() != ledger.get_heads() || batched.get_heads() != ledger.get_heads() {
        return Err(LoadgenError::Protocol("floor: batch apply diverged".into()));
    }
    Ok(Figure::new("floor_batch_apply", "floor")
        .param("prior_sales", prior_sales as f64)
        .param("batch", batch as f64)
        .value("one_message_at_a_time_ms", one_by_one_ms)
        .value("apply_changes_once_ms", apply_ms)
        .value("apply_changes_then_messages_ms", batched_ms))
}
