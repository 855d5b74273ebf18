//! The Rust device client: works offline, syncs when it can.
//!
//! A [`Client`] keeps its documents in its own [`SledStore`] directory and in
//! a [`DeviceCore`]. Local changes are applied and flushed to the device's
//! disk at once ([`DocHandle::change`]), whether or not the server is
//! reachable. A background task keeps a WebSocket to the server, reconnects
//! with exponential backoff and jitter, and on every reconnect resyncs each
//! document, which is how offline changes reach the server and the
//! server's changes reach the device.
//!
//! The device's credential ([`ClientConfig::token`]) goes in an
//! `Authorization: Bearer` header on every upgrade request. A refused
//! credential (HTTP 401) is not a network blip: the link waits the longest
//! backoff, [`AUTH_REFUSED_RETRY_MS_DEFAULT`], before trying again, unless
//! [`Client::set_token`] hands it a new credential, which wakes it at once.
//! A rotated token is used from the next connection on.
//!
//! [`DocHandle::synced`] resolves when the server has acknowledged every
//! local change of the document; the server acknowledges only what it has
//! flushed, so this is "saved on server".

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use automerge::Automerge;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::{debug, info, warn};
use ventas_storage::{DocStore, SledStore, StoreError};
use ventas_sync_protocol::device::{DeviceCore, DeviceEffect};
use ventas_sync_protocol::ids::{DocumentId, IdError, PeerId};
use ventas_sync_protocol::wire::{self, Message, MESSAGE_BYTES_MAX_DEFAULT};

/// Defaults, units last.
pub const RECONNECT_INITIAL_MS_DEFAULT: u64 = 100;
pub const RECONNECT_MAX_MS_DEFAULT: u64 = 10_000;
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const OUTBOUND_QUEUE_MESSAGES_MAX_DEFAULT: usize = 1_024;
pub const CHANGE_EVENTS_QUEUE_MAX: usize = 1_024;
/// Wait after the server refused the credential (HTTP 401), unless a new
/// token arrives first.
pub const AUTH_REFUSED_RETRY_MS_DEFAULT: u64 = 30_000;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` of the sync server.
    pub server_url: String,
    /// The device's own store.
    pub data_dir: PathBuf,
    /// The peer id to join with; a random one if None. With a credential it
    /// must be the credential's device id (or `<device>/...`).
    pub peer_id: Option<String>,
    /// The device credential (`ventas token issue`), sent as
    /// `Authorization: Bearer`; None for a server with authentication off.
    pub token: Option<String>,
    /// Wait after a refused credential, in ms.
    pub auth_refused_retry_ms: u64,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    pub connect_timeout_ms: u64,
    pub message_bytes_max: usize,
    /// Messages waiting for the socket; when full the link is dropped and
    /// re-established (resync regenerates whatever was queued).
    pub outbound_queue_messages_max: usize,
    /// DER certificates to trust for `wss://` *instead of* the public web
    /// PKI (a private CA, or a self-signed server); empty: the web PKI.
    pub tls_root_certificates: Vec<Vec<u8>>,
}

impl ClientConfig {
    pub fn new(server_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            server_url: server_url.into(),
            data_dir: data_dir.into(),
            peer_id: None,
            token: None,
            auth_refused_retry_ms: AUTH_REFUSED_RETRY_MS_DEFAULT,
            reconnect_initial_ms: RECONNECT_INITIAL_MS_DEFAULT,
            reconnect_max_ms: RECONNECT_MAX_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            outbound_queue_messages_max: OUTBOUND_QUEUE_MESSAGES_MAX_DEFAULT,
            tls_root_certificates: Vec::new(),
        }
    }
}

/// Errors of the device client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("device storage: {0}")]
    Store(#[from] StoreError),
    #[error("document in device storage is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid document URL: {0}")]
    Url(#[from] IdError),
    #[error("unknown document {0}")]
    UnknownDocument(DocumentId),
    #[error("the server does not have document {0}")]
    Unavailable(DocumentId),
    #[error("client is closed")]
    Closed,
}

/// Key prefix in the device store's metadata: the documents this device
/// tracks (so a document created offline is remembered before it has any
/// change).
const TRACKED_PREFIX: &[u8] = b"tracked/";
/// Rows per metadata page when listing tracked documents.
const TRACKED_PAGE_ROWS: usize = 500;

struct Shared {
    core: Mutex<DeviceCore>,
    store: Arc<dyn DocStore>,
    outbound: Mutex<Option<mpsc::Sender<Message>>>,
    changes: broadcast::Sender<DocumentId>,
    /// Bumped after every input, so waiters re-check their condition.
    progress: watch::Sender<u64>,
    /// The credential for the next connection.
    token: Mutex<Option<String>>,
    /// Wakes a link waiting out a refused credential.
    token_changed: Notify,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, DeviceCore> {
        // A panic while holding the lock leaves the core as consistent as
        // after any other step; keep going rather than poison every call.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Carries out the core's effects: persist (and flush) locally first,
    /// then send.
    fn execute(&self, effects: Vec<DeviceEffect>) -> Result<(), ClientError> {
        let mut persisted = false;
        for effect in &effects {
            if let DeviceEffect::Persist { document_id, chunk } = effect {
                self.store.append_chunk(document_id.as_bytes(), chunk)?;
                persisted = true;
            }
        }
        if persisted {
            self.store.flush()?;
        }
        for effect in effects {
            match effect {
                DeviceEffect::Send(message) => self.send(message),
                DeviceEffect::Changed { document_id } => {
                    let _ = self.changes.send(document_id);
                }
                DeviceEffect::Unavailable { document_id } => {
                    debug!(%document_id, "server does not have the document");
                }
                DeviceEffect::ServerError { message } => warn!("server error: {message}"),
                DeviceEffect::Persist { .. } => {}
            }
        }
        self.bump();
        Ok(())
    }

    fn send(&self, message: Message) {
        let mut outbound = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = outbound.as_ref() else {
            return;
        };
        if sender.try_send(message).is_err() {
            // Full or gone: drop the link; the reconnect resyncs everything.
            warn!("outbound queue full: dropping the link to resync");
            *outbound = None;
        }
    }
}

/// A device's connection to the sync server and its local documents.
pub struct Client {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Opens the device store, loads its documents, and starts syncing in
    /// the background. Must be called within a tokio runtime.
    pub fn open(config: ClientConfig) -> Result<Self, ClientError> {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::open(&config.data_dir)?);
        let peer_id = match &config.peer_id {
            Some(id) => id.clone(),
            None => format!("device-{:016x}", rand::random::<u64>()),
        };
        let mut core = DeviceCore::new(PeerId::new(peer_id), None);
        for document_id in tracked_documents(store.as_ref())? {
            let doc = load_doc(store.as_ref(), &document_id)?;
            let _ = core.add_doc(document_id, doc);
        }
        let (changes, _) = broadcast::channel(CHANGE_EVENTS_QUEUE_MAX);
        let (progress, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            store,
            outbound: Mutex::new(None),
            changes,
            progress,
            token: Mutex::new(config.token.clone()),
            token_changed: Notify::new(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(link_task(Arc::clone(&shared), config, shutdown_rx));
        Ok(Self {
            shared,
            shutdown,
            task,
        })
    }

    /// Replaces the credential. It is used from the next connection on (the
    /// current one, if any, stays up until it drops or the old credential is
    /// revoked); a link waiting after a refused credential retries at once.
    pub fn set_token(&self, token: Option<String>) {
        *self.shared.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        self.shared.token_changed.notify_one();
    }

    /// The peer id this device joins with.
    pub fn peer_id(&self) -> PeerId {
        self.shared.core().peer_id().clone()
    }

    /// Whether the link to the server is up (handshake done).
    pub fn is_online(&self) -> bool {
        matches!(
            self.shared.core().link(),
            ventas_sync_protocol::device::Link::Ready { .. }
        )
    }

    /// Creates a new document with a fresh random id.
    pub fn create(&self) -> Result<DocHandle, ClientError> {
        let document_id = DocumentId::from_bytes(rand::random());
        self.track(document_id, Automerge::new())?;
        Ok(self.handle(document_id))
    }

    /// Starts syncing a document built elsewhere (e.g. by a domain
    /// `create_*_doc` function), under a fresh random id. Its content is
    /// persisted on the device before this returns.
    pub fn create_with(&self, mut doc: Automerge) -> Result<DocHandle, ClientError> {
        let document_id = DocumentId::from_bytes(rand::random());
        if !doc.get_heads().is_empty() {
            self.shared
                .store
                .append_chunk(document_id.as_bytes(), &doc.save())?;
        }
        // The device writes with its own actor from now on.
        doc.set_actor(automerge::ActorId::random());
        self.track(document_id, doc)?;
        Ok(self.handle(document_id))
    }

    /// Opens a document by URL or id; if the device does not hold it, it is
    /// fetched from the server (see [`DocHandle::ready`]).
    pub fn open_url(&self, url: &str) -> Result<DocHandle, ClientError> {
        let document_id = DocumentId::parse(url)?;
        let known = self.shared.core().doc(&document_id).is_some();
        if !known {
            self.track(document_id, Automerge::new())?;
        }
        Ok(self.handle(document_id))
    }

    /// Documents this device holds.
    pub fn documents(&self) -> Vec<DocumentId> {
        self.shared.core().document_ids().into_iter().collect()
    }

    fn handle(&self, document_id: DocumentId) -> DocHandle {
        DocHandle {
            shared: Arc::clone(&self.shared),
            document_id,
        }
    }

    fn track(&self, document_id: DocumentId, doc: Automerge) -> Result<(), ClientError> {
        let mut key = TRACKED_PREFIX.to_vec();
        key.extend_from_slice(document_id.as_bytes());
        self.shared.store.meta_put(&key, &[])?;
        self.shared.store.flush()?;
        let effects = self.shared.core().add_doc(document_id, doc);
        self.shared.execute(effects)
    }

    /// Stops syncing and flushes the device store.
    pub async fn close(self) -> Result<(), ClientError> {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.shared.store.flush()?;
        Ok(())
    }
}

/// One document on the device.
#[derive(Clone)]
pub struct DocHandle {
    shared: Arc<Shared>,
    document_id: DocumentId,
}

impl DocHandle {
    pub fn document_id(&self) -> DocumentId {
        self.document_id
    }

    /// `automerge:<id>`, the form automerge-repo clients open.
    pub fn url(&self) -> String {
        self.document_id.to_url()
    }

    /// Applies a local change and persists it on the device before
    /// returning; it is sent to the server when the link is up.
    pub fn change<R>(&self, change: impl FnOnce(&mut Automerge) -> R) -> Result<R, ClientError> {
        let (result, effects) = self
            .shared
            .core()
            .change(&self.document_id, change)
            .ok_or(ClientError::UnknownDocument(self.document_id))?;
        self.shared.execute(effects)?;
        Ok(result)
    }

    /// Reads the document.
    pub fn read<R>(&self, read: impl FnOnce(&Automerge) -> R) -> Result<R, ClientError> {
        let core = self.shared.core();
        let doc = core
            .doc(&self.document_id)
            .ok_or(ClientError::UnknownDocument(self.document_id))?;
        Ok(read(doc))
    }

    /// The heads the server last acknowledged for this document, if the
    /// link is up and the server has spoken.
    pub fn server_heads(&self) -> Option<Vec<automerge::ChangeHash>> {
        self.shared.core().server_heads(&self.document_id)
    }

    /// A stream of "this document changed" events.
    pub fn subscribe(&self) -> Changes {
        Changes {
            receiver: self.shared.changes.subscribe(),
            document_id: self.document_id,
        }
    }

    /// Resolves when the server has acknowledged (made durable) every local
    /// change of this document.
    pub async fn synced(&self) -> Result<(), ClientError> {
        self.wait(|core, id| core.is_synced(id)).await
    }

    /// Resolves when the document has content (local or fetched); fails if
    /// the server says it does not have it.
    pub async fn ready(&self) -> Result<(), ClientError> {
        let id = self.document_id;
        self.wait(|core, id| {
            core.is_unavailable(id) || core.doc(id).is_some_and(|d| !d.get_heads().is_empty())
        })
        .await?;
        if self.shared.core().is_unavailable(&id) {
            return Err(ClientError::Unavailable(id));
        }
        Ok(())
    }

    /// Resolves when `condition` holds for the document.
    pub async fn wait_until(
        &self,
        condition: impl Fn(&Automerge) -> bool,
    ) -> Result<(), ClientError> {
        self.wait(|core, id| core.doc(id).is_some_and(&condition))
            .await
    }

    async fn wait(
        &self,
        condition: impl Fn(&DeviceCore, &DocumentId) -> bool,
    ) -> Result<(), ClientError> {
        let mut progress = self.shared.progress.subscribe();
        loop {
            if condition(&self.shared.core(), &self.document_id) {
                return Ok(());
            }
            if progress.changed().await.is_err() {
                return Err(ClientError::Closed);
            }
        }
    }
}

/// Change notifications for one document.
pub struct Changes {
    receiver: broadcast::Receiver<DocumentId>,
    document_id: DocumentId,
}

impl Changes {
    /// Waits for the next change of the document. Missed notifications
    /// (a slow reader) collapse into one.
    pub async fn next(&mut self) -> Result<(), ClientError> {
        loop {
            match self.receiver.recv().await {
                Ok(id) if id == self.document_id => return Ok(()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                Err(broadcast::error::RecvError::Closed) => return Err(ClientError::Closed),
            }
        }
    }
}

/// Every document this device tracks, read in pages.
fn tracked_documents(store: &dyn DocStore) -> Result<Vec<DocumentId>, ClientError> {
    let mut documents = Vec::new();
    let mut before: Option<Vec<u8>> = None;
    loop {
        let page =
            store.meta_scan_prefix_rev(TRACKED_PREFIX, before.as_deref(), TRACKED_PAGE_ROWS)?;
        let full = page.len() == TRACKED_PAGE_ROWS;
        before = page.last().map(|(key, _)| key.clone());
        for (key, _) in page {
            let bytes = key
                .get(TRACKED_PREFIX.len()..)
                .and_then(|b| <[u8; 16]>::try_from(b).ok());
            match bytes {
                Some(bytes) => documents.push(DocumentId::from_bytes(bytes)),
                None => {
                    return Err(ClientError::Corrupt(format!(
                        "tracked-document key {key:?}"
                    )))
                }
            }
        }
        if !full {
            return Ok(documents);
        }
    }
}

fn load_doc(store: &dyn DocStore, document_id: &DocumentId) -> Result<Automerge, ClientError> {
    let Some(stored) = store.load(document_id.as_bytes())? else {
        return Ok(Automerge::new());
    };
    ventas_sync_protocol::stored::load_document(stored.snapshot.as_deref(), &stored.chunks)
        .map_err(|e| ClientError::Corrupt(e.to_string()))
}

/// Keeps a link to the server up until shutdown.
async fn link_task(shared: Arc<Shared>, config: ClientConfig, mut shutdown: watch::Receiver<bool>) {
    let mut backoff_ms = config.reconnect_initial_ms;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(config.message_bytes_max);
        ws_config.max_frame_size = Some(config.message_bytes_max);
        let token = shared
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let request = match upgrade_request(&config.server_url, token.as_deref()) {
            Ok(request) => request,
            Err(error) => {
                warn!("cannot build the upgrade request: {error}");
                backoff_ms = config.reconnect_max_ms;
                if wait_or_shutdown(&shared, backoff_ms, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let connector = match tls_connector(&config.tls_root_certificates) {
            Ok(connector) => connector,
            Err(error) => {
                warn!("cannot use the configured TLS root certificates: {error}");
                backoff_ms = config.reconnect_max_ms;
                if wait_or_shutdown(&shared, backoff_ms, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            false,
            connector,
        );
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok((socket, _))) => {
                info!(url = %config.server_url, "connected");
                backoff_ms = config.reconnect_initial_ms;
                run_link(&shared, socket, &config, &mut shutdown).await;
                shared.core().disconnected();
                *shared.outbound.lock().unwrap_or_else(|p| p.into_inner()) = None;
                shared.bump();
                info!("disconnected");
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
                if response.status() == StatusCode::UNAUTHORIZED =>
            {
                warn!(
                    "the server refused this device's credential; retrying in {} ms or when set_token is called",
                    config.auth_refused_retry_ms
                );
                if wait_or_shutdown(&shared, config.auth_refused_retry_ms, &mut shutdown).await {
                    return;
                }
                continue;
            }
            Ok(Err(error)) => debug!("connect failed: {error}"),
            Err(_) => debug!("connect timed out"),
        }
        // Full jitter in [backoff/2, backoff], so devices that lost the
        // server together do not come back together.
        let jittered = backoff_ms / 2 + rand::random::<u64>() % (backoff_ms / 2 + 1);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(jittered)) => {}
            _ = shutdown.changed() => return,
        }
        backoff_ms = backoff_ms.saturating_mul(2).min(config.reconnect_max_ms);
    }
}

/// A rustls connector trusting exactly `roots` (DER), or `None` for the
/// default (the web PKI) when there are none.
fn tls_connector(roots: &[Vec<u8>]) -> Result<Option<tokio_tungstenite::Connector>, rustls::Error> {
    if roots.is_empty() {
        return Ok(None);
    }
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(rustls_pki_types::CertificateDer::from(root.clone()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(Some(tokio_tungstenite::Connector::Rustls(
        std::sync::Arc::new(config),
    )))
}

/// The upgrade request, with the credential as `Authorization: Bearer`.
fn upgrade_request(
    url: &str,
    token: Option<&str>,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// Sleeps `wait_ms` or until a new token arrives; true on shutdown.
async fn wait_or_shutdown(
    shared: &Shared,
    wait_ms: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => false,
        _ = shared.token_changed.notified() => false,
        _ = shutdown.changed() => true,
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run_link(
    shared: &Arc<Shared>,
    socket: Socket,
    config: &ClientConfig,
    shutdown: &mut watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel(config.outbound_queue_messages_max);
    *shared.outbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let effects = shared.core().connected();
    if let Err(error) = shared.execute(effects) {
        warn!("cannot start sync: {error}");
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = sink.send(WsMessage::Close(None)).await;
                return;
            }
            outgoing = rx.recv() => match outgoing {
                Some(message) => {
                    if sink.send(WsMessage::Binary(wire::encode(&message).into())).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let message = match wire::decode(&bytes, config.message_bytes_max) {
                        Ok(message) => message,
                        Err(error) => {
                            warn!("undecodable frame from server: {error}");
                            return;
                        }
                    };
                    let received = shared.core().receive(message);
                    match received {
                        Ok(effects) => {
                            if let Err(error) = shared.execute(effects) {
                                warn!("cannot apply server message: {error}");
                                return;
                            }
                        }
                        Err(error) => {
                            warn!("server message rejected: {error}");
                            return;
                        }
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    debug!("server closed the link: {frame:?}");
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    debug!("socket error: {error}");
                    return;
                }
                None => return,
            },
        }
    }
}
