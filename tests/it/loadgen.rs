//! The load generator against an in-process server: a one-second ingest
//! must see every recorded sale acknowledged, and every acknowledged sale
//! must be in the server's store after shutdown.

use automerge::Automerge;
use ventas::config::ServerConfig;
use ventas::domain::read_ledger;
use ventas::loadgen::scenarios::{ingest, IngestOptions};
use ventas::storage::{DocStore, SledStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_ingest_sales_are_acknowledged_and_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut config = ServerConfig::for_test(data_dir.clone());
    // The simulated devices send a sale as fast as they can.
    config.peer_messages_per_second_max = 1_000_000;
    config.peer_messages_burst_max = 1_000_000;
    let server = ventas::server::start(config).await.expect("server starts");
    let options = IngestOptions {
        devices: 3,
        duration_ms: 1_000,
        in_flight_max: 8,
        measure_floor: false,
    };
    let outcome = ingest(&format!("ws://{}", server.addr), "ventas", &options, None)
        .await
        .expect("ingest runs");
    server.shutdown().await.expect("shutdown");

    assert_eq!(outcome.devices.len(), 3);
    let store = SledStore::open(&data_dir).expect("store reopens");
    for device in &outcome.devices {
        assert_eq!(device.dropped, None, "no device was dropped");
        assert!(device.recorded > 0, "every device recorded sales");
        assert_eq!(
            device.acknowledged, device.recorded,
            "every recorded sale was acknowledged"
        );
        let stored = store
            .load(device.ledger.as_bytes())
            .expect("load")
            .expect("the ledger is in the store");
        let mut doc = match &stored.snapshot {
            Some(snapshot) => Automerge::load(snapshot).expect("snapshot loads"),
            None => Automerge::new(),
        };
        for chunk in &stored.chunks {
            doc.load_incremental(chunk).expect("chunk loads");
        }
        let view = read_ledger(&doc, None);
        assert_eq!(
            view.sales.len() as u64,
            device.recorded,
            "the store holds every acknowledged sale"
        );
    }
    let figure = &outcome.figure;
    assert!(figure.values["sales_acknowledged_per_s"] > 0.0);
}
