//! The sync server: axum routes, WebSocket upgrade, start and shutdown.
//!
//! ```text
//!   device ──ws──▶ connection task ──HubInput──▶ hub task ──▶ DocStore (sled)
//!          ◀─────── outbound queue ◀── Effects ──┘      └──▶ flusher thread
//! ```
//!
//! `GET /` upgrades to the automerge-repo WebSocket protocol (the path
//! `@automerge/automerge-repo-network-websocket` clients use).
//! `GET /v1/sync-sessions` lists the sync log, newest first.
//! `GET /health` answers `ok` (always open).
//! `GET /v1/export/status` tells how far behind the export to PostgreSQL is
//! (pending documents and sessions, seconds behind, lag percentiles, last
//! error); office or reporting credential, like the sync log.
//! `GET /v1/tokens`, `POST /v1/tokens` (JSON `{tenant, seller, device,
//! role, expires?}`) and `POST /v1/tokens/{id}/revoke` manage credentials on
//! the running server; they need an office credential in every auth mode.
//!
//! Beside the hub runs the period keeper ([`periods`]), a server-internal
//! peer on the hub's inbox (no socket) that creates each month's ledgers
//! and stock documents and lists them in the tenants' catalogs.
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
//! [`auth`] for credentials, the join binding and revocation. The sync log
//! needs an office or reporting credential whenever authentication is on.

mod accept;
pub mod access;
pub mod auth;
mod connection;
pub mod exporter;
pub mod hub_task;
pub mod limits;
pub mod owners;
pub mod periods;
pub mod review;
pub mod sessions;
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
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{debug, error, info, warn};
use ventas_storage::{DocStore, SledConfig, SledStore, StoreError};
use ventas_sync_protocol::hub::HubConfig;
use ventas_sync_protocol::ids::{PeerId, StorageId};

use crate::config::{ConfigError, ServerConfig, SYNC_SESSIONS_PAGE_MAX};
pub use auth::{AllowAnonymous, AuthError, Authenticator, Identity};
use auth::{AuthMode, CredentialError, Credentials, IssueRequest, Role};
use connection::Connection;
use exporter::{ExportMarks, ExportState};
use hub_task::HubInput;
use limits::ConnectionCounts;
use sessions::SessionLog;

/// Key of the server's persistent storage id in the metadata keyspace.
const STORAGE_ID_KEY: &[u8] = b"server/storage-id";
/// How long shutdown waits for connections to close before flushing anyway.
const SHUTDOWN_CONNECTIONS_WAIT_MS: u64 = 5_000;

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
}

/// A server running in this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    join: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Graceful shutdown: stop accepting, close peers, flush storage.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        match self.join.await {
            Ok(result) => result,
            Err(join_error) => Err(ServerError::Io(std::io::Error::other(join_error))),
        }
    }
}

/// Opens the store in `config.data_dir`, binds `config.listen`, and serves
/// until [`RunningServer::shutdown`].
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
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
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut wait = shutdown_rx.clone();
    let signal = async move {
        let _ = wait.wait_for(|stop| *stop).await;
    };
    let join = tokio::spawn(serve_with_tls(
        config,
        listener,
        tls,
        store,
        Arc::new(credentials),
        signal,
    ));
    Ok(RunningServer {
        addr,
        shutdown: shutdown_tx,
        join,
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
    serve_with_tls(config, listener, tls, store, authenticator, signal).await
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
    };
    hub_config.docs_in_memory_max = config.docs_in_memory_max;
    hub_config.doc_idle_evict_after_ms = config.doc_idle_evict_after_ms;
    hub_config.doc_queue_messages_max = config.doc_queue_messages_max;
    let export_marks = ExportMarks::open(Arc::clone(&store), config.postgres_url.is_some())?;
    let export_state = Arc::new(ExportState::default());
    let (hub, hub_join) = hub_task::spawn(
        hub_config,
        Arc::clone(&store),
        Arc::clone(&export_marks),
        config.hub_inbox_messages_max,
        config.tick_interval_ms,
        config.unsafe_skip_flush,
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
        shutdown_rx.clone(),
    );
    let connections = Arc::new(Semaphore::new(config.connections_max));
    let state = AppState {
        config: config.clone(),
        hub: hub.clone(),
        sessions: SessionLog::new(Arc::clone(&store)).with_export_marks(Arc::clone(&export_marks)),
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
    };
    let app = Router::new()
        .route("/", get(upgrade))
        .route("/health", get(|| async { "ok" }))
        .route("/v1/sync-sessions", get(list_sessions))
        .route("/v1/documents/{id}/violations", get(document_violations))
        .route("/v1/export/status", get(export_status))
        .route("/v1/tokens", get(list_tokens).post(issue_token))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .with_state(state);
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
            return unauthorized();
        }
    };
    // A browser that offered its token as a subprotocol must get one back
    // or it fails the handshake: `ventas` if offered, else the token one.
    let mut protocols = vec![auth::SUBPROTOCOL.to_string()];
    protocols.extend(auth::bearer_subprotocol(&headers).map(str::to_string));
    let upgrade = upgrade.protocols(protocols);
    let tenant = identity.as_ref().map(|identity| identity.tenant.as_str());
    let slot = match state.connection_counts.admit(remote_addr.ip(), tenant) {
        Ok(slot) => slot,
        Err(refusal) => {
            debug!(%remote_addr, "upgrade refused: {refusal}");
            return (StatusCode::TOO_MANY_REQUESTS, refusal.to_string()).into_response();
        }
    };
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
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

#[derive(Debug, Deserialize)]
struct SessionQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

async fn list_sessions(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    Query(raw_query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    require_reader(&state, &headers, &raw_query)?;
    let limit = query.limit.unwrap_or(50).clamp(1, SYNC_SESSIONS_PAGE_MAX);
    let sessions = state.sessions.clone();
    let page = blocking_read("sync log", "sync log unavailable", move || {
        sessions.page(query.before, limit)
    })
    .await?;
    Ok(Json(page).into_response())
}

/// Runs `read` (storage, a blocking call) off the async runtime. A failed
/// read is logged as `{what} read failed` and, like a panicked read task,
/// answered 500 with `unavailable` (internals stay in the log).
async fn blocking_read<T, E>(
    what: &'static str,
    unavailable: &'static str,
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Response>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            error!("{what} read failed: {error}");
            Err((StatusCode::INTERNAL_SERVER_ERROR, unavailable).into_response())
        }
        Err(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, unavailable).into_response()),
    }
}

/// How far behind the export to PostgreSQL is (see [`exporter`]).
async fn export_status(
    State(state): State<AppState>,
    Query(raw_query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    require_reader(&state, &headers, &raw_query)?;
    let marks = Arc::clone(&state.export_marks);
    let export_state = Arc::clone(&state.export_state);
    let status = blocking_read("export status", "export status unavailable", move || {
        exporter::status(&marks, &export_state)
    })
    .await?;
    Ok(Json(status).into_response())
}

/// The last review of a business document: the records that break a rule.
async fn document_violations(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(raw_query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let reader = require_reader(&state, &headers, &raw_query)?;
    let Ok(document_id) = ventas_sync_protocol::ids::DocumentId::parse(&id) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "not a document id or automerge: URL",
        )
            .into_response());
    };
    let store = Arc::clone(&state.store);
    let key = review::report_key(&document_id);
    let report = blocking_read("violation report", "report unavailable", move || {
        store.meta_get(&key)
    })
    .await?;
    let missing = || (StatusCode::NOT_FOUND, "no review of this document").into_response();
    Ok(match report {
        Some(bytes) => {
            // Another tenant's report looks exactly like a missing one.
            if let Some(reader) = reader {
                let tenant = serde_json::from_slice::<review::ViolationReport>(&bytes)
                    .ok()
                    .and_then(|report| report.tenant);
                if tenant.as_deref() != Some(reader.tenant.as_str()) {
                    return Ok(missing());
                }
            }
            (
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response()
        }
        None => missing(),
    })
}

/// Status and report endpoints: open when authentication is off, else an
/// office or reporting credential.
fn require_reader(
    state: &AppState,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Option<Identity>, AdminRefusal> {
    match state.authenticator.authenticate(headers, query) {
        Ok(None) => Ok(None),
        Ok(Some(identity)) if matches!(identity.role, Role::Office | Role::Reporting) => {
            Ok(Some(identity))
        }
        Ok(Some(identity)) => Err(AdminRefusal::Forbidden(identity.role)),
        Err(_) => Err(AdminRefusal::Unauthorized),
    }
}

/// The one answer to a refused credential: it says nothing about why.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        "missing or invalid credential",
    )
        .into_response()
}

fn forbidden(role: Role) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("the {role} role may not do this"),
    )
        .into_response()
}

/// The credential registry, if the caller presents a valid office
/// credential. Admin endpoints need one whatever the auth mode, so an open
/// development server cannot be taken over by issuing credentials.
fn operator(
    state: &AppState,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Arc<dyn Authenticator>, AdminRefusal> {
    let Some(credentials) = state.authenticator.credentials() else {
        return Err(AdminRefusal::NoRegistry);
    };
    let Some(token) = auth::presented_token(headers, query) else {
        return Err(AdminRefusal::Unauthorized);
    };
    match credentials.verify(token, crate::now_ms()) {
        Ok(identity) if identity.role == Role::Office => Ok(Arc::clone(&state.authenticator)),
        Ok(identity) => Err(AdminRefusal::Forbidden(identity.role)),
        Err(_) => Err(AdminRefusal::Unauthorized),
    }
}

/// Why an admin, status or report request was refused.
#[derive(Debug)]
enum AdminRefusal {
    /// The authenticator keeps no credentials (a custom one).
    NoRegistry,
    Unauthorized,
    Forbidden(Role),
}

/// Lets a handler answering `Result<Response, Response>` refuse with `?`.
impl From<AdminRefusal> for Response {
    fn from(refusal: AdminRefusal) -> Self {
        refusal.into_response()
    }
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        match self {
            Self::NoRegistry => (StatusCode::NOT_FOUND, "no credential registry").into_response(),
            Self::Unauthorized => unauthorized(),
            Self::Forbidden(role) => forbidden(role),
        }
    }
}

async fn list_tokens(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let authenticator = operator(&state, &headers, &query)?;
    Ok(match authenticator.credentials() {
        Some(credentials) => Json(credentials.list()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
struct IssueBody {
    tenant: String,
    seller: String,
    device: String,
    role: Role,
    /// `90d`, `12h`, `never`; default [`auth::TOKEN_LIFETIME_DEFAULT`].
    expires: Option<String>,
}

async fn issue_token(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    Json(body): Json<IssueBody>,
) -> Result<Response, Response> {
    let authenticator = operator(&state, &headers, &query)?;
    let lifetime = body
        .expires
        .as_deref()
        .unwrap_or(auth::TOKEN_LIFETIME_DEFAULT);
    let lifetime_ms = match auth::parse_lifetime_ms(lifetime) {
        Ok(lifetime_ms) => lifetime_ms,
        Err(reason) => return Err((StatusCode::BAD_REQUEST, reason).into_response()),
    };
    let now_ms = crate::now_ms();
    let request = IssueRequest {
        tenant: body.tenant,
        seller: body.seller,
        device: body.device,
        role: body.role,
        expires_at_ms: lifetime_ms.map(|ms| now_ms.saturating_add(ms)),
    };
    let issued = tokio::task::spawn_blocking(move || {
        authenticator
            .credentials()
            .map(|credentials| credentials.issue(request, now_ms))
    })
    .await;
    Ok(match issued {
        Ok(Some(Ok(issued))) => (StatusCode::CREATED, Json(issued)).into_response(),
        Ok(Some(Err(error))) => credential_error(error),
        Ok(None) | Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot issue").into_response(),
    })
}

async fn revoke_token(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let authenticator = operator(&state, &headers, &query)?;
    let now_ms = crate::now_ms();
    let revoked = tokio::task::spawn_blocking(move || {
        authenticator
            .credentials()
            .map(|credentials| credentials.revoke(&id, now_ms))
    })
    .await;
    Ok(match revoked {
        Ok(Some(Ok(info))) => Json(info).into_response(),
        Ok(Some(Err(error))) => credential_error(error),
        Ok(None) | Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot revoke").into_response(),
    })
}

fn credential_error(error: CredentialError) -> Response {
    match error {
        CredentialError::InvalidName { .. } | CredentialError::TooMany => {
            (StatusCode::BAD_REQUEST, error.to_string()).into_response()
        }
        CredentialError::NotFound { .. } => {
            (StatusCode::NOT_FOUND, error.to_string()).into_response()
        }
        CredentialError::Store(_) | CredentialError::Corrupt { .. } => {
            error!("credential store failed: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "credential store unavailable",
            )
                .into_response()
        }
    }
}
