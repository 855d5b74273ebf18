//! Restarts and crashes at the windows that matter.
//!
//! A restart right after [`RunningServer::shutdown`] must find the data
//! directory free: shutdown returns only once every holder of the store has
//! let go and sled released its lock.

use ventas::config::ServerConfig;
use ventas::server::{self, RunningServer};
use ventas::storage::SledStore;

use crate::harness::{device, init_logs, put, wait_for_keys, within};

/// Start, write, shut down, restart: this many times on one directory.
const RESTART_ROUNDS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_right_after_shutdown_finds_the_directory_free_every_time() {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("server");
    let mut written = Vec::new();
    for round in 0..RESTART_ROUNDS {
        let running: RunningServer = server::start(ServerConfig::for_test(data_dir.clone()))
            .await
            .unwrap_or_else(|error| panic!("round {round}: the server starts: {error}"));
        let client = device(
            &format!("ws://{}", running.addr),
            dir.path(),
            &format!("device-{round}"),
        );
        let handle = client.create().expect("create");
        let key = format!("sale-{round}");
        put(&handle, &key, "100");
        within("the write to be acknowledged", handle.synced())
            .await
            .expect("synced");
        wait_for_keys(&handle, std::slice::from_ref(&key)).await;
        written.push(handle.url());
        drop(handle);
        client.close().await.expect("device closes");
        running.shutdown().await.expect("clean shutdown");
        // Not "eventually": free the moment shutdown returned.
        SledStore::wait_until_unlocked(&data_dir, 0)
            .unwrap_or_else(|error| panic!("round {round}: lock still held: {error}"));
    }
    let store = SledStore::open(&data_dir).expect("reopens");
    for url in &written {
        let id = ventas_sync_protocol::ids::DocumentId::parse(url).expect("url");
        assert!(
            ventas::storage::DocStore::contains(&store, id.as_bytes()).expect("readable"),
            "{url} was acknowledged and must be stored"
        );
    }
}
