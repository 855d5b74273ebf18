//! Server configuration: every limit named, with its unit and default.
//!
//! Settings arrive as CLI flags or environment variables (see `main.rs`),
//! are validated once, and become a [`ServerConfig`]. Tests build one with
//! [`ServerConfig::for_test`].

use std::net::SocketAddr;
use std::path::PathBuf;

use ventas_sync_protocol::hub;

use crate::server::auth::AuthMode;
use ventas_sync_protocol::wire::MESSAGE_BYTES_MAX_DEFAULT;

/// Defaults, units last.
pub const LISTEN_ADDR_DEFAULT: &str = "127.0.0.1:3030";
pub const DATA_DIR_DEFAULT: &str = "./data";
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
pub const OUTBOUND_QUEUE_MESSAGES_MAX_DEFAULT: usize = 256;
pub const HUB_INBOX_MESSAGES_MAX_DEFAULT: usize = 4_096;
pub const JOIN_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const KEEPALIVE_INTERVAL_MS_DEFAULT: u64 = 20_000;
pub const TICK_INTERVAL_MS_DEFAULT: u64 = 1_000;
pub const SOCKET_READ_BUFFER_BYTES_DEFAULT: usize = 4 * 1024;
pub const SOCKET_WRITE_BUFFER_BYTES_DEFAULT: usize = 4 * 1024;
pub const SYNC_SESSIONS_PAGE_MAX: usize = 500;
pub const STORE_CACHE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Largest WebSocket message accepted from a peer.
    pub message_bytes_max: usize,
    /// Concurrent WebSocket connections; past it the upgrade gets HTTP 503.
    pub connections_max: usize,
    /// Messages queued for one peer; a peer that lets it fill is slow and
    /// is disconnected.
    pub outbound_queue_messages_max: usize,
    /// Messages from all peers waiting for the hub; senders wait when full.
    pub hub_inbox_messages_max: usize,
    /// Documents one connection may open.
    pub docs_per_peer_max: usize,
    /// Documents held in memory.
    pub docs_in_memory_max: usize,
    /// A document nobody has open leaves memory after this long.
    pub doc_idle_evict_after_ms: u64,
    /// Messages waiting on one document during its flush.
    pub doc_queue_messages_max: usize,
    /// A connection that has not sent `join` after this long is closed.
    pub join_timeout_ms: u64,
    /// Interval of server pings on idle connections.
    pub keepalive_interval_ms: u64,
    /// Interval of the hub's housekeeping (eviction).
    pub tick_interval_ms: u64,
    /// sled page cache.
    pub store_cache_bytes: u64,
    /// Turns the group-commit flush into a no-op. Only for measuring what
    /// durability costs; never acknowledged-means-durable.
    pub unsafe_skip_flush: bool,
    /// Whether connections and the sync log need a credential; see
    /// [`AuthMode`] (default `Auto`: required once any credential exists).
    pub auth_mode: AuthMode,
}

/// Settings that cannot work together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} must be at least {min} (got {value})")]
    TooSmall {
        name: &'static str,
        min: u64,
        value: u64,
    },
}

impl ServerConfig {
    /// Defaults for everything but where to listen and store.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            outbound_queue_messages_max: OUTBOUND_QUEUE_MESSAGES_MAX_DEFAULT,
            hub_inbox_messages_max: HUB_INBOX_MESSAGES_MAX_DEFAULT,
            docs_per_peer_max: hub::DOCS_PER_PEER_MAX_DEFAULT,
            docs_in_memory_max: hub::DOCS_IN_MEMORY_MAX_DEFAULT,
            doc_idle_evict_after_ms: hub::DOC_IDLE_EVICT_AFTER_MS_DEFAULT,
            doc_queue_messages_max: hub::DOC_QUEUE_MESSAGES_MAX_DEFAULT,
            join_timeout_ms: JOIN_TIMEOUT_MS_DEFAULT,
            keepalive_interval_ms: KEEPALIVE_INTERVAL_MS_DEFAULT,
            tick_interval_ms: TICK_INTERVAL_MS_DEFAULT,
            store_cache_bytes: STORE_CACHE_BYTES_DEFAULT,
            unsafe_skip_flush: false,
            auth_mode: AuthMode::default(),
        }
    }

    /// Port 0 on loopback and the given data directory.
    pub fn for_test(data_dir: PathBuf) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Self::new(listen, data_dir);
        config.tick_interval_ms = 100;
        config
    }

    /// Checks that the limits make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |name, min: u64, value: u64| {
            if value < min {
                Err(ConfigError::TooSmall { name, min, value })
            } else {
                Ok(())
            }
        };
        at_least("message_bytes_max", 1024, self.message_bytes_max as u64)?;
        at_least("connections_max", 1, self.connections_max as u64)?;
        at_least(
            "outbound_queue_messages_max",
            4,
            self.outbound_queue_messages_max as u64,
        )?;
        at_least(
            "hub_inbox_messages_max",
            1,
            self.hub_inbox_messages_max as u64,
        )?;
        at_least("docs_per_peer_max", 1, self.docs_per_peer_max as u64)?;
        at_least("docs_in_memory_max", 1, self.docs_in_memory_max as u64)?;
        at_least(
            "doc_queue_messages_max",
            1,
            self.doc_queue_messages_max as u64,
        )?;
        at_least("tick_interval_ms", 1, self.tick_interval_ms)?;
        at_least("keepalive_interval_ms", 100, self.keepalive_interval_ms)?;
        Ok(())
    }
}
