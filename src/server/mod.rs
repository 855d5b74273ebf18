//! The sync server: axum routes, WebSocket upgrade, start and shutdown.
//!
//! ```text
//!   device ──ws──▶ connection task ──HubInput──▶ hub task ──▶ DocStore (sled)
//!          ◀─────── outbound queue ◀── Effects ──┘      └──▶ flusher thread
//! ```
//!
//! `GET /` upgrades to the automerge-repo WebSocket protocol (the path
//! `@automerge/automerge-repo-network-websocket` clients use); an operator
//! credential is refused there (403): the operator syncs no documents.
//! The other routes (sync log, export status, violation reports,
//! credentials), who may call them within which tenant, and the JSON error
//! shape are in [`api`], whose route table builds the router.
//!
//! Beside the hub runs the period keeper ([`periods`]), a server-internal
//! peer on the hub's inbox (no socket) that creates each month's ledgers
//! and stock documents and lists them in the tenants' catalogs, opens a
//! new seller's ledgers as soon as the hub task sees the catalog gain her,
//! and writes a new tenant's documents for [`tenants`] (`POST /v1/tenants`,
//! `ventas tenant init`).
//!
//! Connections are accepted by our own loop ([`accept`]): a header read
//! timeout, a keep-alive idle timeout, a cap on connections still in the
//! HTTP phase and a socket budget under the open-file limit.
//! The connection cap is taken before the upgrade; past it the client gets
//! HTTP 503. Per remote address and per tenant caps ([`limits`]) are taken
//! there too; past them HTTP 429. With `tls_cert` and `tls_key` the server
//! speaks TLS itself ([`tls`]). An [`Authenticator`] runs before the upgrade too (a refused
//! credential gets HTTP 401, the same for every reason), and the
//! [`Identity`] it returns is bound to the connection for its lifetime; see
//! [`auth`] for credentials, the join binding and revocation. Every refusal
//! before the upgrade is a JSON [`api::ApiError`].

mod accept;
pub mod access;
pub mod api;
pub mod auth;
mod connection;
pub mod exporter;
pub mod hub_task;
pub mod limits;
pub mod owners;
pub mod periods;
pub mod review;
pub mod sessions;
pub mod tenants;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{debug, error, info, warn};
use ventas_storage::{DocStore, SledConfig, SledStore, StoreError};
use ventas_sync_protocol::hub::HubConfig;
use ventas_sync_protocol::ids::{PeerId, StorageId};

use crate::config::{ConfigError, ServerConfig};
use api::ApiError;
pub use auth::{AllowAnonymous, AuthError, Authenticator, Identity};
use auth::{AuthMode, CredentialError, Credentials, Role};
use connection::Connection;
use exporter::{ExportMarks, ExportState};
use hub_task::HubInput;
use limits::ConnectionCounts;
use sessions::SessionLog;

/// Key of the server's persistent storage id in the metadata keyspace.
const STORAGE_ID_KEY: &[u8] = b"server/storage-id";
/// How long shutdown waits for connections to close before flushing anyway.
const SHUTDOWN_CONNECTIONS_WAIT_MS: u64 = 5_000;
/// How long [`RunningServer::shutdown`] waits, after serving stopped, for
/// every holder of the store (flusher thread, blocking loads, an aborted
/// exporter's last call) to let go and for sled to release the directory
/// lock, in milliseconds.
const SHUTDOWN_STORE_RELEASE_WAIT_MS: u64 = 10_000;
/// Pause between looks at whether the store was let go, in milliseconds.
const SHUTDOWN_STORE_RELEASE_POLL_MS: u64 = 5;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// Shutdown finished serving, but something still held the store after
    /// [`SHUTDOWN_STORE_RELEASE_WAIT_MS`]: a restart could not open it.
    #[error("the store is still held {holders} time(s) after shutdown")]
    StoreStillHeld { holders: usize },
}

#[derive(Clone)]
struct AppState {
    config: ServerConfig,
    hub: mpsc::Sender<HubInput>,
    sessions: SessionLog,
    connections: Arc<Semaphore>,
    connection_counts: ConnectionCounts,
    next_conn: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
    authenticator: Arc<dyn Authenticator>,
    store: Arc<dyn DocStore>,
    export_marks: Arc<ExportMarks>,
    export_state: Arc<ExportState>,
    keeper: mpsc::Sender<periods::KeeperRequest>,
}

/// A server running in this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    keeper_passes: watch::Receiver<u64>,
    review_passes: watch::Receiver<u64>,
    keeper: mpsc::Sender<periods::KeeperRequest>,
    authenticator: Arc<dyn Authenticator>,
    join: tokio::task::JoinHandle<Result<(), ServerError>>,
    /// The store, without keeping it open: shutdown waits for it to go.
    store: std::sync::Weak<dyn DocStore>,
    data_dir: std::path::PathBuf,
}

impl RunningServer {
    /// Passes of the period keeper that have ended so far (see
    /// [`periods::spawn`]).
    pub fn keeper_passes(&self) -> watch::Receiver<u64> {
        self.keeper_passes.clone()
    }

    /// Ticks of the stock reviewer that found every changed document
    /// reviewed, nothing waiting and nothing out for review (see
    /// [`review::Review::is_settled`]): "the reviews are done" as an event.
    pub fn review_passes(&self) -> watch::Receiver<u64> {
        self.review_passes.clone()
    }

    /// Provisions a tenant on this server (what `POST /v1/tenants` does,
    /// without a caller to check): see [`tenants`].
    pub async fn provision(
        &self,
        spec: crate::provision::TenantSpec,
    ) -> Result<tenants::Provisioned, tenants::ProvisionError> {
        tenants::provision(
            &self.keeper,
            Arc::clone(&self.authenticator),
            spec,
            crate::now_ms(),
        )
        .await
    }

    /// Graceful shutdown: stop accepting, close peers, flush storage. Returns
    /// only once every clone of the store is dropped and the data
    /// directory's lock is released, so a restart on the same directory
    /// right after it never races.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        // The registry holds the store: let go of it before waiting for
        // the store to be released.
        drop(self.authenticator);
        drop(self.keeper);
        let _ = self.shutdown.send(true);
        let served = match self.join.await {
            Ok(result) => result,
            Err(join_error) => Err(ServerError::Io(std::io::Error::other(join_error))),
        };
        let released = release_store(self.store, self.data_dir).await;
        served.and(released)
    }
}

/// Waits until nothing holds the store and its directory lock is free.
async fn release_store(
    store: std::sync::Weak<dyn DocStore>,
    data_dir: std::path::PathBuf,
) -> Result<(), ServerError> {
    let started = std::time::Instant::now();
    let wait = Duration::from_millis(SHUTDOWN_STORE_RELEASE_WAIT_MS);
    loop {
        let holders = store.strong_count();
        if holders == 0 {
            break;
        }
        if started.elapsed() >= wait {
            error!(holders, "the store is still held after shutdown");
            return Err(ServerError::StoreStillHeld { holders });
        }
        tokio::time::sleep(Duration::from_millis(SHUTDOWN_STORE_RELEASE_POLL_MS)).await;
    }
    let left_ms = SHUTDOWN_STORE_RELEASE_WAIT_MS
        .saturating_sub(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    tokio::task::spawn_blocking(move || SledStore::wait_until_unlocked(&data_dir, left_ms))
        .await
        .map_err(|join_error| ServerError::Io(std::io::Error::other(join_error)))??;
    Ok(())
}

/// Opens the store in `config.data_dir`, binds `config.listen`, and serves
/// until [`RunningServer::shutdown`].
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen).await?;
    start_on(config, listener).await
}

/// [`start`] on a listener the caller bound (`config.listen` is ignored):
/// a test keeps a clone of one listening socket across restarts, so its
/// port is never free for someone else to take in between.
pub async fn start_on(
    config: ServerConfig,
    listener: TcpListener,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let store: Arc<dyn DocStore> = Arc::new(SledStore::open_with(
        &config.data_dir,
        SledConfig {
            cache_capacity_bytes: config.store_cache_bytes,
            ..SledConfig::default()
        },
    )?);
    let credentials = Credentials::load(Arc::clone(&store), config.auth_mode)?;
    match credentials.mode() {
        AuthMode::Off => warn!(
            "AUTHENTICATION IS OFF (--auth off): anyone who can reach this server can read \
             and change every document"
        ),
        AuthMode::Auto if !credentials.required() => warn!(
            "AUTHENTICATION IS OFF: no credential has been issued in this data directory, so \
             anyone who can reach this server can read and change every document; issue one \
             with `ventas token issue` (server stopped) to require credentials"
        ),
        AuthMode::Auto | AuthMode::Required => {
            info!(credentials = credentials.count(), "credentials required")
        }
    }
    let tls = load_tls(&config)?;
    let addr = listener.local_addr()?;
    let store_weak = Arc::downgrade(&store);
    let data_dir = config.data_dir.clone();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut wait = shutdown_rx.clone();
    let signal = async move {
        let _ = wait.wait_for(|stop| *stop).await;
    };
    let (keeper_passes_tx, keeper_passes) = watch::channel(0);
    let (review_passes_tx, review_passes) = watch::channel(0);
    let (keeper, keeper_requests) = mpsc::channel(periods::KEEPER_REQUESTS_QUEUED_MAX);
    let authenticator: Arc<dyn Authenticator> = Arc::new(credentials);
    let join = tokio::spawn(serve_with_tls(
        config,
        listener,
        tls,
        store,
        Arc::clone(&authenticator),
        Keeper {
            passes: keeper_passes_tx,
            requests: keeper_requests,
            sender: keeper.clone(),
            review_passes: review_passes_tx,
        },
        signal,
    ));
    Ok(RunningServer {
        addr,
        shutdown: shutdown_tx,
        keeper_passes,
        review_passes,
        keeper,
        authenticator,
        join,
        store: store_weak,
        data_dir,
    })
}

/// Serves on `listener` (with TLS if `config` names a certificate) until
/// `signal` resolves, then shuts down in order: stop accepting, close every
/// peer, wait for their tasks, final flush.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    store: Arc<dyn DocStore>,
    authenticator: Arc<dyn Authenticator>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let tls = load_tls(&config)?;
    let (passes, _) = watch::channel(0);
    let (sender, requests) = mpsc::channel(periods::KEEPER_REQUESTS_QUEUED_MAX);
    serve_with_tls(
        config,
        listener,
        tls,
        store,
        authenticator,
        Keeper {
            passes,
            requests,
            sender,
            review_passes: watch::channel(0).0,
        },
        signal,
    )
    .await
}

/// The period keeper's channels (passes it reports, requests it answers)
/// and where the stock reviewer counts its settled ticks (see
/// [`RunningServer::review_passes`]).
struct Keeper {
    passes: watch::Sender<u64>,
    requests: mpsc::Receiver<periods::KeeperRequest>,
    sender: mpsc::Sender<periods::KeeperRequest>,
    review_passes: watch::Sender<u64>,
}

/// The rustls configuration `config` asks for, if any.
fn load_tls(config: &ServerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(tls::load(cert, key)?)),
        _ => Ok(None),
    }
}

async fn serve_with_tls(
    config: ServerConfig,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    store: Arc<dyn DocStore>,
    authenticator: Arc<dyn Authenticator>,
    keeper: Keeper,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let storage_id = storage_id(store.as_ref())?;
    let keeper_peer = PeerId::new(format!("ventas-keeper-{}", storage_id.as_str()));
    let mut hub_config = HubConfig::new(PeerId::new(format!("ventas-{}", storage_id.as_str())));
    hub_config.storage_id = Some(storage_id);
    hub_config.docs_per_peer_max = config.docs_per_peer_max;
    hub_config.change_limits = ventas_sync_protocol::doc_sync::ChangeLimits {
        change_bytes_max: config.change_bytes_max,
        change_ops_max: config.change_ops_max,
        object_depth_max: config.object_depth_max,
        doc_ops_max: config.doc_ops_max,
    };
    hub_config.docs_in_memory_max = config.docs_in_memory_max;
    hub_config.docs_held_per_group_max = config.docs_held_per_tenant_max;
    // A reserve larger than half of memory would leave tenants too little
    // (a test server with a handful of slots).
    hub_config.docs_in_memory_reserved_for_server = config
        .docs_in_memory_reserved_for_server
        .min(config.docs_in_memory_max / 2);
    let role_limits =
        |change_ops_max, change_bytes_max| ventas_sync_protocol::doc_sync::ChangeLimits {
            change_ops_max,
            change_bytes_max,
            ..hub_config.change_limits
        };
    let fairness = hub_task::Fairness {
        seller: role_limits(config.seller_change_ops_max, config.seller_change_bytes_max),
        office: role_limits(config.office_change_ops_max, config.office_change_bytes_max),
        docs_loading_per_connection_max: config.docs_loading_per_connection_max,
    };
    hub_config.doc_idle_evict_after_ms = config.doc_idle_evict_after_ms;
    hub_config.doc_queue_messages_max = config.doc_queue_messages_max;
    let export_marks = ExportMarks::open(Arc::clone(&store), config.postgres_url.is_some())?;
    let export_state = Arc::new(ExportState::default());
    let (hub, hub_join) = hub_task::spawn(
        hub_config,
        fairness,
        Arc::clone(&store),
        Arc::clone(&export_marks),
        hub_task::HubTaskSettings {
            inbox_messages_max: config.hub_inbox_messages_max,
            tick_interval_ms: config.tick_interval_ms,
            skip_flush: config.unsafe_skip_flush,
            keeper: Some(keeper.sender.clone()),
            review_passes: keeper.review_passes,
        },
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let exporter_join = config.postgres_url.clone().map(|url| {
        exporter::spawn(
            url,
            config.postgres_timeout_ms,
            Arc::clone(&store),
            Arc::clone(&export_marks),
            Arc::clone(&export_state),
            shutdown_rx.clone(),
        )
    });
    let next_conn = Arc::new(AtomicU64::new(1));
    let clock_offset_ms = config.period_clock_offset_ms;
    let keeper_join = periods::spawn(
        hub.clone(),
        Arc::clone(&next_conn),
        keeper_peer,
        Arc::clone(&store),
        periods::KeeperSettings {
            open_ahead_days: config.period_open_ahead_days,
            check_interval_ms: config.period_check_interval_ms,
            message_bytes_max: config.message_bytes_max,
            outbound_queue_messages_max: config.outbound_queue_messages_max,
            // A keeper session holds the catalog and what it created; the
            // hub allows a connection `docs_per_peer_max` documents.
            documents_created_per_pass_max: config
                .period_documents_per_pass_max
                .min(config.docs_per_peer_max.saturating_sub(1).max(1)),
            now_ms: Arc::new(move || crate::now_ms().saturating_add_signed(clock_offset_ms)),
        },
        periods::KeeperChannels {
            passes: keeper.passes,
            requests: keeper.requests,
        },
        shutdown_rx.clone(),
    );
    let connections = Arc::new(Semaphore::new(config.connections_max));
    let sessions = SessionLog::new(Arc::clone(&store)).with_export_marks(Arc::clone(&export_marks));
    // Index keys a crash left without their record (see `sessions`), gone
    // before anyone can page through them.
    let stale_index = {
        let sessions = sessions.clone();
        tokio::task::spawn_blocking(move || sessions.prune_stale_index()).await
    };
    match stale_index {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => info!(removed, "sync log: removed index keys left by a crash"),
        Ok(Err(error)) => warn!("sync log: cannot prune stale index keys: {error}"),
        Err(error) => warn!("sync log: stale index pruning failed: {error}"),
    }
    let state = AppState {
        config: config.clone(),
        hub: hub.clone(),
        sessions,
        connections: Arc::clone(&connections),
        connection_counts: ConnectionCounts::new(
            config.connections_per_address_max,
            config.connections_per_tenant_max,
        ),
        next_conn,
        shutdown: shutdown_rx.clone(),
        authenticator,
        store: Arc::clone(&store),
        export_marks,
        export_state,
        keeper: keeper.sender,
    };
    let app = api::router(state);
    info!(
        addr = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        tls = tls.is_some(),
        "serving"
    );
    // Our own accept loop (see [`accept`]): header and idle deadlines, the
    // HTTP-phase cap and the socket budget that axum's `serve` lacks.
    let settings = accept::AcceptSettings::new(&config, accept::raise_open_files_limit());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let http_phase = accept::run(listener, acceptor, app, settings, signal, shutdown_rx).await;
    // Stopped accepting; now every connection task is told to close.
    info!("shutting down: closing peers");
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(
        Duration::from_millis(SHUTDOWN_CONNECTIONS_WAIT_MS),
        http_phase.drained(),
    )
    .await
    .is_err()
    {
        warn!("HTTP connections still open after {SHUTDOWN_CONNECTIONS_WAIT_MS} ms");
    }
    let all = u32::try_from(config.connections_max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        Duration::from_millis(SHUTDOWN_CONNECTIONS_WAIT_MS),
        connections.acquire_many(all),
    )
    .await;
    if drained.is_err() {
        error!("connections still open after {SHUTDOWN_CONNECTIONS_WAIT_MS} ms; flushing anyway");
    }
    // The keeper saw the signal and stops between steps; its sessions end
    // with the hub's shutdown at the latest.
    if tokio::time::timeout(
        Duration::from_millis(SHUTDOWN_CONNECTIONS_WAIT_MS),
        keeper_join,
    )
    .await
    .is_err()
    {
        warn!("the period keeper did not stop in time");
    }
    let (done_tx, done_rx) = oneshot::channel();
    if hub.send(HubInput::Shutdown { done: done_tx }).await.is_ok() {
        let _ = done_rx.await;
    }
    let _ = hub_join.await;
    if let Some(mut exporter_join) = exporter_join {
        // The exporter saw the shutdown signal; it stops between items, and
        // whatever it had not committed is still marked for the next run.
        let wait = Duration::from_millis(SHUTDOWN_CONNECTIONS_WAIT_MS);
        if tokio::time::timeout(wait, &mut exporter_join)
            .await
            .is_err()
        {
            warn!("the exporter is still busy with PostgreSQL; stopping it");
            exporter_join.abort();
        }
    }
    store.flush()?;
    info!("stopped");
    Ok(())
}

/// The server's storage id: made once, kept in the metadata keyspace.
fn storage_id(store: &dyn DocStore) -> Result<StorageId, StoreError> {
    if let Some(bytes) = store.meta_get(STORAGE_ID_KEY)? {
        if let Ok(text) = String::from_utf8(bytes) {
            return Ok(StorageId::new(text));
        }
    }
    let fresh: [u8; 16] = rand::random();
    let text = fresh.iter().map(|b| format!("{b:02x}")).collect::<String>();
    store.meta_put(STORAGE_ID_KEY, text.as_bytes())?;
    store.flush()?;
    Ok(StorageId::new(text))
}

async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote_addr): ConnectInfo<SocketAddr>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let identity = match state.authenticator.authenticate(&headers, &query) {
        Ok(identity) => identity,
        Err(error) => {
            debug!(%remote_addr, "upgrade refused: {error}");
            return ApiError::unauthorized().into_response();
        }
    };
    // The operator runs the server and syncs no documents.
    if let Some(identity) = identity.as_ref().filter(|i| i.role == Role::Operator) {
        debug!(%remote_addr, "upgrade refused: operator credential");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_does_not_sync",
            format!("the {} role syncs no documents", identity.role),
        )
        .into_response();
    }
    // The server answers `ventas` and nothing else: echoing the
    // `ventas.bearer.<token>` one would put the token in a response header
    // (proxy logs). A browser that offers subprotocols fails the handshake
    // unless one is selected, so clients offer `["ventas",
    // "ventas.bearer.<token>"]`.
    let upgrade = upgrade.protocols([auth::SUBPROTOCOL]);
    let tenant = identity.as_ref().map(|identity| identity.tenant.as_str());
    let slot = match state.connection_counts.admit(remote_addr.ip(), tenant) {
        Ok(slot) => slot,
        Err(refusal) => {
            debug!(%remote_addr, "upgrade refused: {refusal}");
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                refusal.to_string(),
            )
            .into_response();
        }
    };
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection_limit",
            format!(
                "connection limit reached ({} connections)",
                state.config.connections_max
            ),
        )
        .into_response();
    };
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let config = state.config.clone();
    let connection = Connection {
        conn,
        remote_addr,
        identity,
        authenticator: Arc::clone(&state.authenticator),
        hub: state.hub.clone(),
        sessions: state.sessions.clone(),
        config: config.clone(),
        shutdown: state.shutdown.clone(),
    };
    // The WebSocket layer reads messages up to twice the limit whole, so
    // that the connection task can refuse one just over it with close code
    // 1009 and a reason; one it cuts off mid-frame leaves bytes unread, and
    // the reset that follows can cost the peer its close frame.
    let frame_bytes_max = config.message_bytes_max.saturating_mul(2);
    upgrade
        .max_message_size(frame_bytes_max)
        .max_frame_size(frame_bytes_max)
        .read_buffer_size(crate::config::SOCKET_READ_BUFFER_BYTES_DEFAULT)
        .write_buffer_size(crate::config::SOCKET_WRITE_BUFFER_BYTES_DEFAULT)
        // tungstenite panics unless this exceeds the write buffer size, which
        // a small `message_bytes_max` (1 KiB is valid) would not.
        .max_write_buffer_size(
            config
                .message_bytes_max
                .saturating_mul(2)
                .max(crate::config::SOCKET_WRITE_BUFFER_BYTES_DEFAULT.saturating_mul(2)),
        )
        .on_upgrade(move |socket| async move {
            connection.run(socket).await;
            drop(permit);
            drop(slot);
        })
}
