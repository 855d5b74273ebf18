//! ventas: an offline-first sync server and device SDK for field-sales teams.
//!
//! Devices keep their sales and stock in Automerge documents and sync them
//! over WebSocket with the automerge-repo 2.x protocol; the server merges
//! every change, makes it durable in sled before acknowledging it, and
//! forwards it to every peer that has the document open.
//!
//! This crate is the I/O shell around the sans-IO core in
//! [`ventas_sync_protocol`]:
//!
//! - [`server`]: axum WebSocket endpoint, the hub task that owns the
//!   documents, group-committed flushes, the sync log, HTTP status.
//! - [`client`]: the Rust device client (tokio-tungstenite, its own sled
//!   store, reconnect with backoff).
//! - [`config`]: server settings with units and defaults.
//! - [`domain`]: sales, stock and catalog as pure functions over Automerge documents.
//! - [`provision`]: a tenant's first documents from a TOML or JSON description.
//! - [`loadgen`]: simulated devices and raw floors for the benchmarks (`ventas-loadgen`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ventas::client::{Client, ClientConfig};
//! let client = Client::open(ClientConfig::new("ws://127.0.0.1:3030", "./phone-data"))?;
//! let handle = client.create()?;
//! handle.change(|doc| {
//!     use automerge::transaction::Transactable;
//!     let mut tx = doc.transaction();
//!     tx.put(automerge::ROOT, "note", "hola")?;
//!     tx.commit();
//!     Ok::<_, automerge::AutomergeError>(())
//! })??;
//! handle.synced().await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod config;
pub mod domain;
pub mod export;
pub mod loadgen;
pub mod provision;
pub mod server;

pub use ventas_storage as storage;
pub use ventas_sync_protocol as protocol;

/// Milliseconds since the Unix epoch; the one place the wall clock is read.
pub fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}
