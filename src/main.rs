//! The `ventas` command: `ventas serve` runs the sync server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ventas::config::{self, ServerConfig};
use ventas::server;

#[derive(Debug, Parser)]
#[command(
    name = "ventas",
    version,
    about = "Offline-first sync server for field-sales teams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server (automerge-repo WebSocket protocol on sled).
    Serve(ServeArgs),
}

/// Raw settings; validated into a `ServerConfig`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "VENTAS_LISTEN", default_value = config::LISTEN_ADDR_DEFAULT)]
    listen: SocketAddr,
    /// Directory of the sled store.
    #[arg(long, env = "VENTAS_DATA_DIR", default_value = config::DATA_DIR_DEFAULT)]
    data_dir: PathBuf,
    /// Largest WebSocket message accepted from a peer, in bytes.
    #[arg(long, env = "VENTAS_MESSAGE_BYTES_MAX")]
    message_bytes_max: Option<usize>,
    /// Concurrent connections; more get HTTP 503.
    #[arg(long, env = "VENTAS_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    /// Messages queued for one peer before it is dropped as too slow.
    #[arg(long, env = "VENTAS_OUTBOUND_QUEUE_MESSAGES_MAX")]
    outbound_queue_messages_max: Option<usize>,
    /// Documents one connection may open.
    #[arg(long, env = "VENTAS_DOCS_PER_PEER_MAX")]
    docs_per_peer_max: Option<usize>,
    /// Documents held in memory.
    #[arg(long, env = "VENTAS_DOCS_IN_MEMORY_MAX")]
    docs_in_memory_max: Option<usize>,
    /// Idle time after which an unused document leaves memory, in ms.
    #[arg(long, env = "VENTAS_DOC_IDLE_EVICT_AFTER_MS")]
    doc_idle_evict_after_ms: Option<u64>,
    /// Time a new connection has to send `join`, in ms.
    #[arg(long, env = "VENTAS_JOIN_TIMEOUT_MS")]
    join_timeout_ms: Option<u64>,
    /// Skip fsync (benchmarks only: acknowledged changes may be lost).
    #[arg(long, env = "VENTAS_UNSAFE_SKIP_FLUSH", default_value_t = false)]
    unsafe_skip_flush: bool,
}

impl ServeArgs {
    fn into_config(self) -> ServerConfig {
        let mut config = ServerConfig::new(self.listen, self.data_dir);
        let set = |target: &mut usize, value: Option<usize>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut config.message_bytes_max, self.message_bytes_max);
        set(&mut config.connections_max, self.connections_max);
        set(
            &mut config.outbound_queue_messages_max,
            self.outbound_queue_messages_max,
        );
        set(&mut config.docs_per_peer_max, self.docs_per_peer_max);
        set(&mut config.docs_in_memory_max, self.docs_in_memory_max);
        if let Some(ms) = self.doc_idle_evict_after_ms {
            config.doc_idle_evict_after_ms = ms;
        }
        if let Some(ms) = self.join_timeout_ms {
            config.join_timeout_ms = ms;
        }
        config.unsafe_skip_flush = self.unsafe_skip_flush;
        config
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args.into_config())),
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let running = server::start(config).await.context("starting the server")?;
    // Tests and scripts read this line to learn the bound port.
    println!("listening on {}", running.addr);
    shutdown_signal().await;
    running.shutdown().await.context("shutting down")?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
