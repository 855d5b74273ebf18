//! The load generator: simulated devices that drive a running sync server
//! over real WebSockets, and the raw floors their figures are compared with.
//!
//! A simulated device ([`device::SimDevice`]) is a [`DeviceCore`] (the same
//! sans-IO core the Rust client uses) over one tokio-tungstenite socket,
//! with no store of its own, so a thousand of them fit in one process. It
//! holds the domain's documents: its device document (record counter,
//! local only) and its seller's ledger, which it syncs; it records sales
//! with [`crate::domain::record_sale`] against a catalog made with the
//! domain's `create_catalog_doc`.
//!
//! Data flows like this in the ingest scenario:
//!
//! ```text
//!  SimDevice::record_sale ──DeviceCore──▶ sync frame ──ws──▶ server
//!        ▲                                                     │
//!        └── ack: the server's heads cover the sale ◀──────────┘
//! ```
//!
//! ventas answers only from flushed state, so "the server's heads cover the
//! sale" means "durable". The automerge-repo Node server has no durable
//! acknowledgement: against it the same test measures "applied in its
//! memory".
//!
//! Scenarios ([`scenarios`]) each return a [`Figure`]: named values with
//! units, printed as a small table and as one JSON line (`FIGURE {...}`)
//! that [`report`] turns into side-by-side tables. Floors ([`floors`]) do the
//! same work in-process without network or disk. [`process`] starts
//! servers and reads their memory from `/proc`.

pub mod device;
pub mod floors;
pub mod process;
pub mod report;
pub mod scenarios;

use std::collections::BTreeMap;

use crate::domain::DomainError;
pub use crate::protocol::device::DeviceCore;

/// Why a load-generator run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("domain: {0}")]
    Domain(#[from] DomainError),
    #[error("domain id: {0}")]
    Id(#[from] crate::domain::IdError),
    #[error("storage: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("the server sent an error: {0}")]
    ServerError(String),
    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout { what: String, after_ms: u64 },
    #[error("the server closed the connection")]
    Closed,
    #[error("server process: {0}")]
    Process(String),
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("a task failed: {0}")]
    Task(String),
}

/// One scenario's result: what ran against which server, and its values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    /// `ingest`, `latency`, `reconnect`, `idle`, `docs`, `floors`.
    pub scenario: String,
    /// Which server (or floor) this was measured on: `ventas`,
    /// `ventas-noflush`, `peer`, `floor`.
    pub target: String,
    /// Parameters (devices, seconds, ...), for the table heading.
    pub params: BTreeMap<String, f64>,
    /// Measured values; names end with their unit.
    pub values: BTreeMap<String, f64>,
}

impl Figure {
    pub fn new(scenario: &str, target: &str) -> Self {
        Self {
            scenario: scenario.to_string(),
            target: target.to_string(),
            params: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }

    pub fn param(mut self, name: &str, value: f64) -> Self {
        self.params.insert(name.to_string(), value);
        self
    }

    pub fn value(mut self, name: &str, value: f64) -> Self {
        self.values.insert(name.to_string(), value);
        self
    }

    /// A small table, then the JSON line `report` reads.
    pub fn print(&self) {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, value)| format!("{name}={}", report::number(*value)))
            .collect();
        println!(
            "\n{} on {} ({})",
            self.scenario,
            self.target,
            params.join(", ")
        );
        for (name, value) in &self.values {
            println!("  {name:<36} {:>14}", report::number(*value));
        }
        match serde_json::to_string(self) {
            Ok(json) => println!("FIGURE {json}"),
            Err(error) => eprintln!("cannot encode the figure: {error}"),
        }
    }
}

/// The p-th quantile (0..=1) of sorted samples; 0 for none.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let last = sorted.len() - 1;
    // Nearest rank; `p` is in 0..=1, so the index is in range.
    let index = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[index.min(last)]
}

/// Sorts samples for [`quantile`] (NaN-free: durations only).
pub fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let samples = sorted(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(quantile(&samples, 0.0), 1.0);
        assert_eq!(quantile(&samples, 0.5), 3.0);
        assert_eq!(quantile(&samples, 1.0), 5.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
