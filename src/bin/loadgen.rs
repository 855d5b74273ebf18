//! `ventas-loadgen`: drives a running sync server (ventas, or the
//! automerge-repo Node reference server in `benches/peer/`) over real
//! WebSockets as simulated devices, and measures the raw floors.
//!
//! Each scenario prints a small table and a `FIGURE {...}` JSON line;
//! `report` turns saved output into side-by-side markdown tables.
//! `benches/run-all.sh` runs the whole comparison; `smoke` is the CI check.
//!
//! ```text
//! ventas-loadgen ingest --url ws://127.0.0.1:3030 --devices 100 --seconds 10
//! ventas-loadgen report results.txt
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use ventas::loadgen::scenarios::{self, IngestOptions, LatencyOptions};
use ventas::loadgen::{floors, process, report, Figure};

#[derive(Debug, Parser)]
#[command(
    name = "ventas-loadgen",
    about = "Load generator and benchmark figures for ventas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which server, for the figures.
#[derive(Debug, Args)]
struct Target {
    /// WebSocket URL of the running server.
    #[arg(long)]
    url: String,
    /// Name of the server in the figures (ventas, ventas-noflush, peer).
    #[arg(long, default_value = "ventas")]
    target: String,
    /// Server process id, to read its RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Devices record sales as fast as they can (bounded in flight); sales/s
    /// acknowledged by the server.
    Ingest {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10)]
        devices: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Unacknowledged sales per device before it waits (default: 64,
        /// or fewer so that all devices together keep at most
        /// `IN_FLIGHT_TOTAL_DEFAULT` in flight).
        #[arg(long)]
        in_flight: Option<usize>,
        /// Skip timing the same sales synced in-process afterwards.
        #[arg(long)]
        no_floor: bool,
    },
    /// Idle devices plus writers, each writer's ledger watched by another
    /// device: change-to-arrival latency.
    Latency {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100)]
        idle: usize,
        #[arg(long, default_value_t = 10)]
        writers: usize,
        /// Sales a second each writer records.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// A device records sales offline, reconnects: time until acknowledged.
    Reconnect {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1_000)]
        sales: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Hold idle connections; server RSS per connection.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Seed documents on disk, start ventas on them: cold start and RSS
    /// with some of them active.
    Docs {
        /// The ventas binary (default: next to this one).
        #[arg(long)]
        ventas_bin: Option<PathBuf>,
        #[arg(long, default_value_t = 100_000)]
        docs: usize,
        #[arg(long, default_value_t = 1_000)]
        active: usize,
    },
    /// The raw floors: in-process automerge sync, storage, WebSocket echo.
    Floors {
        /// Sales for the ingest floor.
        #[arg(long, default_value_t = 2_000)]
        sales: usize,
        /// Offline sales for the reconnect floor.
        #[arg(long, default_value_t = 1_000)]
        reconnect_sales: usize,
    },
    /// Tiny ingest against a ventas it starts itself (CI); fails unless
    /// every sale was acknowledged.
    Smoke {
        #[arg(long)]
        ventas_bin: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        devices: usize,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Markdown tables from saved loadgen output (`FIGURE` lines).
    Report { files: Vec<PathBuf> },
}

/// Unacknowledged sales of all ingest devices together, by default: enough
/// to keep the server busy, few enough to drain within the scenario's
/// timeout once recording stops.
const IN_FLIGHT_TOTAL_DEFAULT: usize = 4_096;

fn millis(seconds: f64) -> u64 {
    // Clamped to a day: scenario lengths are seconds to minutes.
    (seconds.clamp(0.0, 86_400.0) * 1000.0).round() as u64
}

fn ventas_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given
        .or_else(process::ventas_next_to_me)
        .context("no ventas binary next to this one; pass --ventas-bin")
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let figures: Vec<Figure> = runtime.block_on(async {
        Ok::<_, anyhow::Error>(match cli.command {
            Command::Ingest {
                target,
                devices,
                seconds,
                in_flight,
                no_floor,
            } => {
                let options = IngestOptions {
                    devices,
                    duration_ms: millis(seconds),
                    in_flight_max: in_flight
                        .unwrap_or_else(|| (IN_FLIGHT_TOTAL_DEFAULT / devices.max(1)).clamp(2, 64))
                        .max(1),
                    measure_floor: !no_floor,
                };
                let outcome =
                    scenarios::ingest(&target.url, &target.target, &options, target.server_pid)
                        .await?;
                vec![outcome.figure]
            }
            Command::Latency {
                target,
                idle,
                writers,
                rate,
                seconds,
            } => {
                let options = LatencyOptions {
                    idle,
                    writers,
                    sales_per_second: rate,
                    duration_ms: millis(seconds),
                };
                vec![
                    scenarios::latency(&target.url, &target.target, &options, target.server_pid)
                        .await?,
                ]
            }
            Command::Reconnect {
                target,
                sales,
                repeat,
            } => vec![scenarios::reconnect(&target.url, &target.target, sales, repeat).await?],
            Command::Idle {
                target,
                connections,
            } => vec![
                scenarios::idle(&target.url, &target.target, connections, target.server_pid)
                    .await?,
            ],
            Command::Docs {
                ventas_bin: bin,
                docs,
                active,
            } => vec![scenarios::documents_on_disk(&ventas_bin(bin)?, docs, active).await?],
            Command::Floors {
                sales,
                reconnect_sales,
            } => vec![
                floors::ingest(sales)?,
                floors::latency(100, 300)?,
                floors::reconnect(reconnect_sales)?,
                floors::storage(500, 64)?,
                floors::batch_apply(1_000, 40)?,
                floors::websocket_echo(2_000, 600).await?,
            ],
            Command::Smoke {
                ventas_bin: bin,
                devices,
                seconds,
            } => vec![scenarios::smoke(&ventas_bin(bin)?, devices, millis(seconds)).await?],
            Command::Report { files } => {
                let mut figures = Vec::new();
                for file in files {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    figures.extend(report::parse(&text));
                }
                println!("{}", report::render(&figures));
                Vec::new()
            }
        })
    })?;
    for figure in &figures {
        figure.print();
    }
    Ok(())
}
