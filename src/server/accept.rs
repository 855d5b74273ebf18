//! The accept loop: sockets in, one task per connection, and the limits of
//! the HTTP phase (everything before a WebSocket upgrade or an answer).
//!
//! axum's `serve` reads request headers without a deadline and accepts
//! without a cap, so half-open requests could hold file descriptors until
//! the process ran out of them and `/health` stopped answering (issue 10).
//! This loop drives hyper's HTTP/1.1 connection itself:
//!
//! ```text
//! accept ─▶ socket budget ─▶ HTTP-phase slot ─▶ task: [TLS handshake] ─▶ hyper ─▶ router
//!   │ fails (EMFILE): pause     │ none: close at once                      │ 101: the WebSocket task
//!   │ and accept again          │                                          │ keeps the socket's budget
//! ```
//!
//! - The *socket budget* counts every open client socket, upgraded ones
//!   included: the process's open-file limit (raised from soft to hard at
//!   start, see [`raise_open_files_limit`]) less `reserved_open_files`, and
//!   at most `connections_max + http_connections_max`. Its slot travels
//!   inside the socket ([`Budgeted`]), so it is given back exactly when the
//!   socket closes, whoever holds it then. The caps therefore hit before the
//!   open-file limit: storage, the sync log and open sessions never meet
//!   EMFILE because of clients.
//! - An *HTTP-phase slot* (`http_connections_max`) is held from accept until
//!   hyper lets go of the connection: after a WebSocket upgrade, a close, or
//!   a timeout. Past the cap a new connection is closed at once; the others
//!   are untouched.
//! - Deadlines: the TLS handshake, then the headers of each request, within
//!   `http_header_read_timeout_ms` (hyper's header timer); a keep-alive
//!   connection with no request in progress is closed after
//!   `http_keep_alive_idle_timeout_ms` ([`Activity`]). hyper's header timer
//!   also runs while a keep-alive connection waits, so the idle timeout is
//!   never longer than the header timeout.
//! - `accept` failing for lack of descriptors (EMFILE, ENFILE, ENOBUFS)
//!   pauses accepting for [`ACCEPT_ERROR_PAUSE_MS`] instead of spinning;
//!   nothing else is disturbed, and refusals are logged at most every
//!   [`REFUSALS_LOG_INTERVAL_MS`].
//!
//! Shutdown: [`run`] returns once its signal fires (the listener closes
//! with it); the caller then tells every connection task through the
//! shutdown channel, and [`HttpPhase::drained`] waits for the tasks still
//! in the HTTP phase (they finish their request, if any, then close).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;

/// Pause after `accept` failed for a reason of the server's own (out of
/// file descriptors, say) before trying again.
pub const ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// Refused connections and failed accepts are logged at most this often,
/// with their counts since the last line (a flood must not flood the log).
pub const REFUSALS_LOG_INTERVAL_MS: u64 = 10_000;

/// The limits of the accept loop, from [`ServerConfig`] and the process's
/// open-file limit.
#[derive(Debug, Clone)]
pub struct AcceptSettings {
    pub header_read_timeout: Duration,
    pub keep_alive_idle_timeout: Duration,
    pub http_connections_max: usize,
    /// Client sockets open at once, upgraded or not.
    pub sockets_max: usize,
}

impl AcceptSettings {
    /// The settings `config` asks for, within `open_files_limit` (none: no
    /// limit known).
    pub fn new(config: &ServerConfig, open_files_limit: Option<u64>) -> Self {
        let wanted = config
            .connections_max
            .saturating_add(config.http_connections_max);
        let sockets_max = match open_files_limit {
            Some(limit) => {
                let room = limit.saturating_sub(config.reserved_open_files).max(1);
                let room = usize::try_from(room).unwrap_or(usize::MAX);
                if room < wanted {
                    warn!(
                        open_files_limit = limit,
                        reserved_open_files = config.reserved_open_files,
                        "the open-file limit allows {room} client sockets, fewer than \
                         connections_max + http_connections_max ({wanted}): connections past \
                         {room} are closed at once (raise the hard limit, `ulimit -Hn`)"
                    );
                }
                room.min(wanted)
            }
            None => wanted,
        };
        Self {
            header_read_timeout: Duration::from_millis(config.http_header_read_timeout_ms),
            keep_alive_idle_timeout: Duration::from_millis(config.http_keep_alive_idle_timeout_ms),
            http_connections_max: config.http_connections_max,
            // tokio's semaphore holds at most `usize::MAX >> 3` permits.
            sockets_max: sockets_max.min(Semaphore::MAX_PERMITS),
        }
    }
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard one and
/// returns the limit now in force; none where the platform has no such
/// limit or it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(u64::MAX) => None,
        Ok(limit) => {
            info!(open_files_limit = limit, "open-file limit");
            Some(limit)
        }
        Err(error) => {
            warn!("cannot read or raise the open-file limit: {error}");
            None
        }
    }
}

/// The connections still in the HTTP phase, for shutdown to wait on.
pub struct HttpPhase {
    slots: Arc<Semaphore>,
    max: usize,
}

impl HttpPhase {
    /// Resolves once no connection is in the HTTP phase any more.
    pub async fn drained(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }
}

/// Accepts on `listener` until `signal` resolves, serving each connection
/// (over TLS when `tls` is given) with `router` in its own task. Connection
/// tasks close once `stop` turns true.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    settings: AcceptSettings,
    signal: impl Future<Output = ()>,
    stop: watch::Receiver<bool>,
) -> HttpPhase {
    let settings = Arc::new(settings);
    let sockets = Arc::new(Semaphore::new(settings.sockets_max));
    let http_phase = Arc::new(Semaphore::new(settings.http_connections_max));
    let mut refusals = Refusals::default();
    tokio::pin!(signal);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut signal => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote_addr) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we took it: nothing of ours failed.
            Err(error) if is_client_error(&error) => continue,
            Err(error) => {
                refusals.note(Refusal::AcceptFailed(error));
                tokio::select! {
                    biased;
                    () = &mut signal => break,
                    () = tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)) => continue,
                }
            }
        };
        let Ok(socket_slot) = Arc::clone(&sockets).try_acquire_owned() else {
            refusals.note(Refusal::Sockets(settings.sockets_max));
            continue;
        };
        let Ok(http_slot) = Arc::clone(&http_phase).try_acquire_owned() else {
            refusals.note(Refusal::HttpPhase(settings.http_connections_max));
            continue;
        };
        tokio::spawn(connection(
            tcp,
            remote_addr,
            tls.clone(),
            router.clone(),
            Arc::clone(&settings),
            socket_slot,
            http_slot,
            stop.clone(),
        ));
    }
    HttpPhase {
        slots: http_phase,
        max: settings.http_connections_max,
    }
}

/// An `accept` error that concerns only the connection being accepted.
fn is_client_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection: the TLS handshake if any, then HTTP until hyper lets go
/// (an upgrade hands the socket to the WebSocket task).
#[allow(clippy::too_many_arguments)]
async fn connection(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    settings: Arc<AcceptSettings>,
    socket_slot: OwnedSemaphorePermit,
    http_slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    match tls {
        None => {
            let io = Budgeted::new(tcp, socket_slot);
            serve_http(io, remote_addr, router, &settings, stop).await;
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(settings.header_read_timeout, acceptor.accept(tcp));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let io = Budgeted::new(stream, socket_slot);
                    serve_http(io, remote_addr, router, &settings, stop).await;
                }
                Ok(Err(error)) => debug!(%remote_addr, "TLS handshake failed: {error}"),
                Err(_) => debug!(%remote_addr, "TLS handshake timed out"),
            }
        }
    }
    drop(http_slot);
}

/// Serves HTTP/1.1 on `io` until the connection closes, is upgraded, times
/// out, or `stop` turns true (then after the request in progress, if any).
async fn serve_http<I>(
    io: I,
    remote_addr: SocketAddr,
    router: Router,
    settings: &AcceptSettings,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(Instant::now()));
    let service = {
        let activity = Arc::clone(&activity);
        let inner = TowerToHyperService::new(router);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote_addr));
            let answering = Activity::begin(&activity);
            let response = inner.call(request);
            async move {
                let response = response.await;
                drop(answering);
                response
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let idle = settings.keep_alive_idle_timeout;
    let mut check_idle_at = Instant::now() + idle;
    // Once closing, the request in progress gets one more header timeout
    // to finish; then the socket is dropped.
    let mut closing_deadline = None;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    debug!(%remote_addr, "HTTP connection ended: {error}");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if closing_deadline.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing_deadline = Some(Instant::now() + settings.header_read_timeout);
            }
            () = tokio::time::sleep_until(check_idle_at), if closing_deadline.is_none() => {
                let now = Instant::now();
                match activity.idle_deadline(idle) {
                    Some(deadline) if deadline <= now => {
                        debug!(%remote_addr, "keep-alive connection idle; closing");
                        connection.as_mut().graceful_shutdown();
                        closing_deadline = Some(now + settings.header_read_timeout);
                    }
                    Some(deadline) => check_idle_at = deadline,
                    None => check_idle_at = now + idle,
                }
            }
            () = sleep_until_some(closing_deadline) => {
                debug!(%remote_addr, "HTTP connection did not close in time; dropping it");
                return;
            }
        }
    }
}

/// Sleeps until `deadline`; forever if there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What one HTTP connection is doing: requests being answered, and since
/// when it has been idle after its last answer.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
}

#[derive(Debug)]
struct ActivityState {
    answering: usize,
    answered: u64,
    idle_since: Instant,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(ActivityState {
                answering: 0,
                answered: 0,
                idle_since: now,
            }),
        }
    }

    /// Marks a request in progress until the returned guard drops.
    fn begin(activity: &Arc<Self>) -> Answering {
        activity.lock().answering += 1;
        Answering(Arc::clone(activity))
    }

    /// When the connection becomes too idle: after `idle` with no request
    /// in progress since its last answer. None while a request is in
    /// progress, and before the first (hyper's header timer covers that).
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let state = self.lock();
        (state.answering == 0 && state.answered > 0).then(|| state.idle_since + idle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.answering = state.answering.saturating_sub(1);
        state.answered += 1;
        state.idle_since = Instant::now();
    }
}

/// A client socket holding its place in the socket budget: the place is
/// given back when the socket is dropped, by the HTTP task or, after an
/// upgrade, by the WebSocket task.
pub struct Budgeted<I> {
    io: I,
    _slot: OwnedSemaphorePermit,
}

impl<I> Budgeted<I> {
    fn new(io: I, slot: OwnedSemaphorePermit) -> Self {
        Self { io, _slot: slot }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Budgeted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Budgeted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a connection was not served.
#[derive(Debug)]
enum Refusal {
    /// The socket budget (open-file limit less the reserve) is spent.
    Sockets(usize),
    /// `http_connections_max` connections are in the HTTP phase.
    HttpPhase(usize),
    /// `accept` itself failed (out of file descriptors, say).
    AcceptFailed(io::Error),
}

/// Counts refusals and logs them at most every [`REFUSALS_LOG_INTERVAL_MS`].
#[derive(Debug, Default)]
struct Refusals {
    logged_at: Option<Instant>,
    sockets: u64,
    http_phase: u64,
    accept_failed: u64,
}

impl Refusals {
    fn note(&mut self, refusal: Refusal) {
        let detail = match &refusal {
            Refusal::Sockets(max) => {
                self.sockets += 1;
                format!("{max} client sockets open (open-file limit less the reserve)")
            }
            Refusal::HttpPhase(max) => {
                self.http_phase += 1;
                format!("{max} connections in the HTTP phase")
            }
            Refusal::AcceptFailed(error) => {
                self.accept_failed += 1;
                format!("accept failed: {error}")
            }
        };
        let now = Instant::now();
        let due = self.logged_at.is_none_or(|at| {
            now.saturating_duration_since(at) >= Duration::from_millis(REFUSALS_LOG_INTERVAL_MS)
        });
        if due {
            warn!(
                refused_sockets_full = self.sockets,
                refused_http_phase_full = self.http_phase,
                accept_failed = self.accept_failed,
                "refusing new connections: {detail}"
            );
            *self = Self {
                logged_at: Some(now),
                ..Self::default()
            };
        }
    }
}
