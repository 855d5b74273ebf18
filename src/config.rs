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
/// Sustained messages a second from one peer; a device syncing a few
/// documents sends a handful.
pub const PEER_MESSAGES_PER_SECOND_MAX_DEFAULT: u32 = 100;
/// Messages one peer may send at once above the sustained rate (a device
/// opening all its documents on connect sends one request per document,
/// up to `docs_per_peer_max`).
pub const PEER_MESSAGES_BURST_MAX_DEFAULT: u32 = 2_048;
/// Open connections from one IP address (a shop's NAT, or a reverse proxy:
/// raise it there, see `docs/deploy.md`).
pub const CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: usize = 256;
/// Open connections of one tenant's credentials.
pub const CONNECTIONS_PER_TENANT_MAX_DEFAULT: usize = 2_000;
// Fair resources (issue 10): what one identity may make the hub do.
//
// Measured with the domain functions (`record_sale` with the load
// generator's two-line fixture sale; `put_product`): a sale is 21
// operations and about 440 bytes of changes; a product 5 operations and
// about 180 bytes. A very busy seller records 100 sales a day, 3,100 in a
// 31-day month: 65,100 operations, 1.4 MB of changes. A device back after
// days offline may send its whole ledger as one document chunk (automerge
// does when over a third is new), which counts every change of the month.

/// Operations one sync message of a seller (or reporting) credential may
/// carry: a very busy seller's whole month (65,100) with 1.5x margin.
pub const SELLER_CHANGE_OPS_MAX_DEFAULT: usize = 100_000;
/// Decoded change bytes one sync message of a seller may carry: a very busy
/// month (1.4 MB) with about 3x margin (notes make sales larger).
pub const SELLER_CHANGE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Operations one sync message of an office credential may carry: a
/// catalog import of 100,000 products (5 each).
pub const OFFICE_CHANGE_OPS_MAX_DEFAULT: usize = 500_000;
/// Decoded change bytes one sync message of an office credential may carry
/// (100,000 products at about 180 bytes: 18 MB, with margin).
pub const OFFICE_CHANGE_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;

/// A connection that sends nothing, not even a pong to our keepalive pings,
/// for this long is dead. Three keepalive intervals.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 3 * KEEPALIVE_INTERVAL_MS_DEFAULT;

// HTTP hygiene (issue 10): the phase before a WebSocket upgrade or an
// answer, and the file descriptors every socket costs.
/// Time from accept (TLS handshake included) to the complete headers of a
/// request; a client still sending them then is cut off.
pub const HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A keep-alive connection with no request in progress is closed after this.
pub const HTTP_KEEP_ALIVE_IDLE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Connections accepted but not yet upgraded nor done (TLS handshakes
/// included); past it new ones are closed at once.
pub const HTTP_CONNECTIONS_MAX_DEFAULT: usize = 1_024;
/// Open files kept free of sockets (storage, logs, PostgreSQL, accept
/// itself), so the socket caps hit before the process's open-file limit.
pub const RESERVED_OPEN_FILES_DEFAULT: u64 = 128;

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
    /// A connection that sends no frame at all (data, ping or pong) for
    /// this long is closed with an error. Clients answer our keepalive pings
    /// with pongs, so only a dead or frozen peer trips it; it must exceed
    /// `keepalive_interval_ms`.
    pub idle_timeout_ms: u64,
    /// Sustained protocol messages a second one connection may send (a
    /// token bucket of `peer_messages_burst_max` tokens); past it the peer
    /// gets an `error` and is disconnected. Pings and pongs do not count.
    pub peer_messages_per_second_max: u32,
    /// Messages one connection may send at once before the rate applies.
    pub peer_messages_burst_max: u32,
    /// Open connections from one remote IP address; past it the upgrade
    /// gets HTTP 429.
    pub connections_per_address_max: usize,
    /// Open connections whose credentials belong to one tenant (only
    /// connections with an identity count); past it HTTP 429.
    pub connections_per_tenant_max: usize,
    /// HTTP hygiene: see `server::accept`. Time a connection has, from
    /// accept, to finish its TLS handshake and the headers of its first
    /// request (and each later request's headers, from their first byte).
    pub http_header_read_timeout_ms: u64,
    /// A keep-alive HTTP connection with no request in progress is closed
    /// after this (at most `http_header_read_timeout_ms`: hyper's header
    /// timer also runs while it waits).
    pub http_keep_alive_idle_timeout_ms: u64,
    /// Connections in the HTTP phase (accepted, not yet upgraded nor
    /// closed); past it a new connection is closed at once.
    pub http_connections_max: usize,
    /// Open files left free of sockets: the server takes at most the
    /// process's open-file limit (soft, raised to the hard one at start)
    /// minus this in sockets, and closes new connections past it.
    pub reserved_open_files: u64,
    /// Decoded bytes of all changes in one incoming sync message; past it
    /// the peer gets an `error`, is disconnected, and nothing applies.
    pub change_bytes_max: usize,
    /// Operations of all changes in one incoming sync message (a JS string
    /// is one operation per character); past it as for `change_bytes_max`.
    pub change_ops_max: usize,
    /// Levels the objects of one incoming sync message may nest (an object
    /// in the document's root is at level 1); past it as for
    /// `change_bytes_max`.
    pub object_depth_max: usize,
    // Fair resources (issue 10); defaults and their arithmetic above.
    /// What one sync message of a seller or reporting credential may add
    /// (`change_bytes_max`/`change_ops_max` stay for connections without
    /// a credential, authentication off).
    pub seller_change_ops_max: usize,
    pub seller_change_bytes_max: usize,
    /// What one sync message of an office credential may add.
    pub office_change_ops_max: usize,
    pub office_change_bytes_max: usize,
    /// Operations a document may hold; a message that would take it past
    /// this is refused (error to the peer, nothing applies).
    pub doc_ops_max: usize,
    /// Documents with content one tenant's connections may hold in memory
    /// (slots of `docs_in_memory_max`).
    pub docs_held_per_tenant_max: usize,
    /// Slots of `docs_in_memory_max` only the server's own peers (the
    /// period keeper) may take.
    pub docs_in_memory_reserved_for_server: usize,
    /// Documents one connection may have waiting to load from the store;
    /// past it a request gets an `error`.
    pub docs_loading_per_connection_max: usize,
    /// PEM certificate chain to serve TLS with (with `tls_key`); none
    /// serves plain `ws://` (e.g. behind a TLS-terminating proxy).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
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
    /// PostgreSQL to keep the reporting tables in (`postgres://...`, with
    /// `sslmode=require` for TLS); none runs on sled alone. See
    /// `server::exporter`.
    pub postgres_url: Option<String>,
    /// Longest one step of the export to PostgreSQL may take before the
    /// connection is dropped and retried (doubled after each timeout in a
    /// row, see `server::exporter::EXPORT_TIMEOUT_GROWTH_MAX`).
    pub postgres_timeout_ms: u64,
    /// Days before a month starts from which the server creates its
    /// ledgers (see `server::periods`).
    pub period_open_ahead_days: u64,
    /// Time between two passes of the period keeper.
    pub period_check_interval_ms: u64,
    /// Documents the period keeper creates in one pass at most.
    pub period_documents_per_pass_max: usize,
    /// Shifts the period keeper's clock (ms, may be negative). Only for
    /// tests; 0 in production (no flag sets it).
    pub period_clock_offset_ms: i64,
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
    #[error("tls_cert and tls_key go together: give both or neither")]
    TlsIncomplete,
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
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            http_header_read_timeout_ms: HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT,
            http_keep_alive_idle_timeout_ms: HTTP_KEEP_ALIVE_IDLE_TIMEOUT_MS_DEFAULT,
            http_connections_max: HTTP_CONNECTIONS_MAX_DEFAULT,
            reserved_open_files: RESERVED_OPEN_FILES_DEFAULT,
            change_bytes_max: hub::CHANGE_BYTES_MAX_DEFAULT,
            change_ops_max: hub::CHANGE_OPS_MAX_DEFAULT,
            object_depth_max: hub::OBJECT_DEPTH_MAX_DEFAULT,
            peer_messages_per_second_max: PEER_MESSAGES_PER_SECOND_MAX_DEFAULT,
            peer_messages_burst_max: PEER_MESSAGES_BURST_MAX_DEFAULT,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            connections_per_tenant_max: CONNECTIONS_PER_TENANT_MAX_DEFAULT,
            seller_change_ops_max: SELLER_CHANGE_OPS_MAX_DEFAULT,
            seller_change_bytes_max: SELLER_CHANGE_BYTES_MAX_DEFAULT,
            office_change_ops_max: OFFICE_CHANGE_OPS_MAX_DEFAULT,
            office_change_bytes_max: OFFICE_CHANGE_BYTES_MAX_DEFAULT,
            doc_ops_max: hub::DOC_OPS_MAX_DEFAULT,
            docs_held_per_tenant_max: hub::DOCS_HELD_PER_GROUP_MAX_DEFAULT,
            docs_in_memory_reserved_for_server: hub::DOCS_IN_MEMORY_RESERVED_FOR_SERVER_DEFAULT,
            docs_loading_per_connection_max:
                crate::server::hub_task::DOCS_LOADING_PER_CONNECTION_MAX_DEFAULT,
            tls_cert: None,
            tls_key: None,
            tick_interval_ms: TICK_INTERVAL_MS_DEFAULT,
            store_cache_bytes: STORE_CACHE_BYTES_DEFAULT,
            unsafe_skip_flush: false,
            auth_mode: AuthMode::default(),
            postgres_url: None,
            postgres_timeout_ms: crate::server::exporter::EXPORT_POSTGRES_TIMEOUT_MS_DEFAULT,
            period_open_ahead_days: crate::server::periods::PERIOD_OPEN_AHEAD_DAYS_DEFAULT,
            period_check_interval_ms: crate::server::periods::PERIOD_CHECK_INTERVAL_MS_DEFAULT,
            period_documents_per_pass_max: crate::server::periods::DOCUMENTS_CREATED_PER_PASS_MAX,
            period_clock_offset_ms: 0,
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
        at_least("change_bytes_max", 1, self.change_bytes_max as u64)?;
        at_least("change_ops_max", 1, self.change_ops_max as u64)?;
        at_least("object_depth_max", 1, self.object_depth_max as u64)?;
        at_least("postgres_timeout_ms", 1, self.postgres_timeout_ms)?;
        at_least("docs_in_memory_max", 1, self.docs_in_memory_max as u64)?;
        at_least(
            "doc_queue_messages_max",
            1,
            self.doc_queue_messages_max as u64,
        )?;
        at_least("tick_interval_ms", 1, self.tick_interval_ms)?;
        at_least(
            "period_check_interval_ms",
            10,
            self.period_check_interval_ms,
        )?;
        at_least("keepalive_interval_ms", 100, self.keepalive_interval_ms)?;
        at_least(
            "idle_timeout_ms",
            self.keepalive_interval_ms.saturating_add(1),
            self.idle_timeout_ms,
        )?;
        at_least(
            "peer_messages_per_second_max",
            1,
            u64::from(self.peer_messages_per_second_max),
        )?;
        at_least(
            "peer_messages_burst_max",
            1,
            u64::from(self.peer_messages_burst_max),
        )?;
        at_least(
            "connections_per_address_max",
            1,
            self.connections_per_address_max as u64,
        )?;
        at_least(
            "connections_per_tenant_max",
            1,
            self.connections_per_tenant_max as u64,
        )?;
        for (name, value) in [
            ("seller_change_ops_max", self.seller_change_ops_max),
            ("seller_change_bytes_max", self.seller_change_bytes_max),
            ("office_change_ops_max", self.office_change_ops_max),
            ("office_change_bytes_max", self.office_change_bytes_max),
            ("doc_ops_max", self.doc_ops_max),
            ("docs_held_per_tenant_max", self.docs_held_per_tenant_max),
            (
                "docs_loading_per_connection_max",
                self.docs_loading_per_connection_max,
            ),
        ] {
            at_least(name, 1, value as u64)?;
        }
        at_least(
            "http_header_read_timeout_ms",
            1,
            self.http_header_read_timeout_ms,
        )?;
        at_least(
            "http_keep_alive_idle_timeout_ms",
            1,
            self.http_keep_alive_idle_timeout_ms,
        )?;
        at_least("http_connections_max", 1, self.http_connections_max as u64)?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsIncomplete);
        }
        Ok(())
    }
}
