//! One task per WebSocket: frames in, frames out, and the sync-log record.
//!
//! The task `select!`s over the socket, its bounded outbound queue, its kill
//! switch (pulled by the hub task when the queue overflows), the join
//! deadline, the idle deadline, a keepalive ping and server shutdown. Frames are decoded here,
//! in parallel across connections, so the hub task only sees typed
//! messages. Text frames and undecodable frames end the session with an
//! error to that peer alone.
//!
//! A `join` with a peer id over [`PEER_ID_BYTES_MAX`] bytes gets an `error`
//! and a close (1008) before the hub sees it.
//!
//! Identity: a connection admitted with a credential may only `join` as its
//! device (see [`Identity::may_join_as`]); any other claim gets an `error`
//! and a close before the hub sees it, so the hub stays generic. The
//! credential is re-checked whenever credentials change (a revocation), at
//! its expiry, and every [`CREDENTIAL_RECHECK_INTERVAL_MS`]; once it stops
//! working the peer gets an `error` and a close.
//!
//! Limits: every data frame (binary or text) takes a token from the
//! connection's [`MessageRate`]; a peer over `peer_messages_per_second_max`
//! (after its `peer_messages_burst_max` burst) gets an `error` and a close,
//! and its message is not forwarded. Any frame at all, pongs included,
//! counts as activity: a connection silent for `idle_timeout_ms` (longer
//! than the keepalive interval, so a live client's pongs keep it open) is
//! dead, and gets an `error` and a close.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::error::Error as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;
use tracing::{debug, info, warn};
use ventas_sync_protocol::hub::ConnId;
use ventas_sync_protocol::wire::{self, DecodeError, Message};

use super::auth::{Authenticator, Identity, CREDENTIAL_RECHECK_INTERVAL_MS};
use super::hub_task::{HubInput, Outbound};
use super::limits::{truncate_to_bytes, MessageRate, PEER_ID_BYTES_MAX};
use super::sessions::{SessionLog, SyncSession};
use crate::config::ServerConfig;
use crate::now_ms;

/// WebSocket close code for a policy violation (RFC 6455).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for going away (server shutdown).
const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for a normal close.
const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code for a message too big to process (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code for "try again later" (RFC 6455 registry): the
/// server let go of a peer that fell behind, not one that broke a rule.
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Longest close reason a control frame can carry (125 bytes minus the code).
const CLOSE_REASON_BYTES_MAX: usize = 123;
/// Every this many sessions, the sync log drops its oldest records.
const SESSIONS_PRUNE_EVERY: u64 = 1_024;
/// How long the close handshake may take before the socket is dropped
/// (a normal close, server shutdown, a failed socket).
const CLOSE_SEND_TIMEOUT_MS: u64 = 1_000;
/// As [`CLOSE_SEND_TIMEOUT_MS`] when a limit or a refusal closes the
/// session: the server waits for the peer's close reply, reading and
/// dropping whatever it still sends, so that the socket is not closed with
/// the peer's frames (pongs, messages in flight) unread. Closing then would
/// make the kernel reset the connection and drop the close frame the peer
/// had not read yet: it would see 1006 and no reason.
const CLOSE_HANDSHAKE_WAIT_MS: u64 = 5_000;

/// Everything a connection task needs.
pub struct Connection {
    pub conn: ConnId,
    pub remote_addr: SocketAddr,
    pub identity: Option<Identity>,
    pub authenticator: Arc<dyn Authenticator>,
    pub hub: mpsc::Sender<HubInput>,
    pub sessions: SessionLog,
    pub config: ServerConfig,
    pub shutdown: watch::Receiver<bool>,
}

impl Connection {
    /// Runs the session to its end, then records it in the sync log.
    pub async fn run(self, socket: WebSocket) {
        let session_id = match self.sessions.next_id() {
            Ok(id) => id,
            Err(error) => {
                warn!("sync log unavailable: {error}");
                0
            }
        };
        let mut session = SyncSession::opened(
            session_id,
            self.identity.as_ref(),
            self.remote_addr.to_string(),
            now_ms(),
        );
        if let Err(error) = self.sessions.put(&session) {
            warn!("cannot record session start: {error}");
        }
        let (outbound_tx, outbound_rx) = mpsc::channel(self.config.outbound_queue_messages_max);
        let (kill_tx, kill_rx) = oneshot::channel();
        let connected = self
            .hub
            .send(HubInput::Connect {
                conn: self.conn,
                identity: self.identity.clone(),
                outbound: outbound_tx,
                kill: kill_tx,
            })
            .await;
        let end = if connected.is_err() {
            Some("server is shutting down".to_string())
        } else {
            self.pump(socket, outbound_rx, kill_rx, &mut session).await
        };
        let (stats_tx, stats_rx) = oneshot::channel();
        let _ = self
            .hub
            .send(HubInput::Disconnect {
                conn: self.conn,
                stats: stats_tx,
            })
            .await;
        if let Ok(Some(stats)) = stats_rx.await {
            session.peer_id = stats.peer_id.map(|p| p.as_str().to_string());
            session.documents = stats.documents.iter().map(|d| d.to_string()).collect();
            session.messages_in = stats.messages_in;
            session.messages_out = stats.messages_out;
            session.changes_in = stats.changes_in;
            session.changes_out = stats.changes_out;
            session.writes_denied = stats.writes_denied;
            session.denials = stats.denials;
        }
        session.disconnected_at_ms = Some(now_ms());
        session.error = end;
        info!(
            conn = self.conn,
            peer = session.peer_id.as_deref().unwrap_or("-"),
            bytes_in = session.bytes_in,
            bytes_out = session.bytes_out,
            error = session.error.as_deref().unwrap_or("-"),
            "session ended"
        );
        if let Err(error) = self.sessions.put(&session) {
            warn!("cannot record session end: {error}");
        }
        if session.id.is_multiple_of(SESSIONS_PRUNE_EVERY) {
            let sessions = self.sessions.clone();
            let newest = session.id;
            let pruned = tokio::task::spawn_blocking(move || sessions.prune(newest)).await;
            if let Ok(Err(error)) = pruned {
                warn!("cannot prune the sync log: {error}");
            }
        }
    }

    /// Moves frames until the session ends; returns the error that ended
    /// it, if any.
    async fn pump(
        &self,
        socket: WebSocket,
        mut outbound: mpsc::Receiver<Outbound>,
        mut kill: oneshot::Receiver<String>,
        session: &mut SyncSession,
    ) -> Option<String> {
        let (mut sink, mut stream) = socket.split();
        let mut shutdown = self.shutdown.clone();
        let join_deadline = Instant::now() + Duration::from_millis(self.config.join_timeout_ms);
        let mut joined = false;
        let keepalive = Duration::from_millis(self.config.keepalive_interval_ms);
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        let mut joined_as = None;
        let mut credential_changes = self.authenticator.changes();
        let mut recheck_at = self.next_recheck();
        let idle_timeout = Duration::from_millis(self.config.idle_timeout_ms);
        let mut idle_deadline = Instant::now() + idle_timeout;
        let mut rate = MessageRate::new(
            self.config.peer_messages_per_second_max,
            self.config.peer_messages_burst_max,
            Instant::now().into_std(),
        );
        let ending = loop {
            tokio::select! {
                biased;
                reason = &mut kill => break Ending::killed(reason),
                _ = shutdown.changed() => break Ending::going_away(),
                changed = changed(&mut credential_changes) => {
                    if changed.is_err() {
                        credential_changes = None;
                    }
                    recheck_at = Instant::now();
                }
                _ = tokio::time::sleep_until(recheck_at) => {
                    if let Err(refused) = self.authenticator.still_valid(self.identity.as_ref(), now_ms()) {
                        break Ending::refusal(format!("credential no longer valid: {refused}"));
                    }
                    recheck_at = self.next_recheck();
                }
                item = outbound.recv() => match item {
                    Some(Outbound::Frame(frame)) => {
                        session.bytes_out += frame.len() as u64;
                        // A peer that stops reading blocks this send; the
                        // kill switch and shutdown must still get through.
                        tokio::select! {
                            biased;
                            reason = &mut kill => break Ending::killed(reason),
                            _ = shutdown.changed() => break Ending::going_away(),
                            sent = sink.send(WsMessage::Binary(frame.into())) => {
                                if let Err(e) = sent {
                                    break Ending::failed(format!("send failed: {e}"));
                                }
                            }
                        }
                    }
                    Some(Outbound::Close(reason)) => break Ending::policy(reason),
                    None => break Ending::normal(),
                },
                frame = stream.next() => {
                    if let Some(Ok(frame)) = &frame {
                        idle_deadline = Instant::now() + idle_timeout;
                        let data = matches!(frame, WsMessage::Binary(_) | WsMessage::Text(_));
                        if data && !rate.admit(Instant::now().into_std()) {
                            break Ending::refusal(format!(
                                "message rate limit exceeded ({} messages per second, burst {})",
                                self.config.peer_messages_per_second_max,
                                self.config.peer_messages_burst_max
                            ));
                        }
                    }
                    match frame {
                        Some(Ok(WsMessage::Binary(bytes))) => {
                            session.bytes_in += bytes.len() as u64;
                            // The decoder is the one place that checks the
                            // limit (before any parsing): a second check here
                            // would hide a decoder that stopped checking.
                            let input = match wire::decode(&bytes, self.config.message_bytes_max) {
                                Ok(message) => {
                                    if let Message::Join { sender_id, .. } = &message {
                                        let peer_id_bytes = sender_id.as_str().len();
                                        if peer_id_bytes > PEER_ID_BYTES_MAX {
                                            break Ending::refusal(format!(
                                                "peer id of {peer_id_bytes} bytes is over the limit of {PEER_ID_BYTES_MAX} bytes"
                                            ));
                                        }
                                        if let Some(identity) = &self.identity {
                                            if !identity.may_join_as(sender_id.as_str()) {
                                                break Ending::refusal(format!(
                                                    "peer id {sender_id} is not allowed for device {}",
                                                    identity.device
                                                ));
                                            }
                                        }
                                        if !joined {
                                            joined_as = Some(sender_id.clone());
                                        }
                                        joined = true;
                                    }
                                    HubInput::Message { conn: self.conn, message }
                                }
                                Err(DecodeError::TooLarge { len, max }) => {
                                    break Ending::too_big(len, max);
                                }
                                Err(e) => {
                                    debug!(conn = self.conn, "undecodable frame: {e}");
                                    HubInput::DecodeFailed { conn: self.conn, reason: e.to_string() }
                                }
                            };
                            if self.hub.send(input).await.is_err() {
                                break Ending::going_away();
                            }
                        }
                        Some(Ok(WsMessage::Text(_))) => {
                            let reason = "text frames are not part of the protocol; send binary CBOR".to_string();
                            let _ = self.hub.send(HubInput::DecodeFailed { conn: self.conn, reason }).await;
                        }
                        Some(Ok(WsMessage::Close(_))) | None => break Ending::normal(),
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                        Some(Err(e)) => break Ending::socket_error(e, self.config.message_bytes_max),
                    }
                },
                _ = tokio::time::sleep_until(idle_deadline) => {
                    break Ending::refusal(format!(
                        "idle for {} ms (no message, no pong)",
                        self.config.idle_timeout_ms
                    ));
                }
                _ = tokio::time::sleep_until(join_deadline), if !joined => {
                    break Ending::policy(format!("no join within {} ms", self.config.join_timeout_ms));
                }
                _ = ping.tick() => {
                    if sink.send(WsMessage::Ping(Default::default())).await.is_err() {
                        break Ending::failed("keepalive ping failed".to_string());
                    }
                }
            }
        };
        if ending.farewell {
            info!(conn = self.conn, "closing: {}", ending.reason);
        }
        let frame = CloseFrame {
            code: ending.code,
            reason: truncate_to_bytes(&ending.reason, CLOSE_REASON_BYTES_MAX).into(),
        };
        let farewell = ending.farewell.then(|| {
            wire::encode(&Message::Error {
                sender_id: None,
                target_id: joined_as,
                message: ending.reason.clone(),
            })
        });
        // A peer that does not read cannot take a close frame either.
        let goodbye = async {
            if let Some(frame) = farewell {
                session.bytes_out += frame.len() as u64;
                let _ = sink.send(WsMessage::Binary(frame.into())).await;
            }
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            // The close handshake: wait for the peer's reply, dropping what
            // it sends meanwhile (see `CLOSE_HANDSHAKE_WAIT_MS`).
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, WsMessage::Close(_)) {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        let wait_ms = if ending.code == CLOSE_NORMAL || ending.code == CLOSE_GOING_AWAY {
            CLOSE_SEND_TIMEOUT_MS
        } else {
            CLOSE_HANDSHAKE_WAIT_MS
        };
        let _ = tokio::time::timeout(Duration::from_millis(wait_ms), goodbye).await;
        ending.error
    }
}

impl Connection {
    /// When to re-check the credential next: the regular interval, or its
    /// expiry if that comes first.
    fn next_recheck(&self) -> Instant {
        let now = Instant::now();
        let regular = now + Duration::from_millis(CREDENTIAL_RECHECK_INTERVAL_MS);
        let expiry = self
            .identity
            .as_ref()
            .and_then(|identity| identity.expires_at_ms)
            .map(|expires_at_ms| {
                now + Duration::from_millis(expires_at_ms.saturating_sub(now_ms()))
            });
        match expiry {
            Some(expiry) if expiry < regular => expiry,
            _ => regular,
        }
    }
}

/// Resolves when the credential counter moves; never if there is none.
async fn changed(
    changes: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match changes {
        Some(receiver) => receiver.changed().await,
        None => std::future::pending().await,
    }
}

/// How a session ends: the close frame's code and reason, the error kept in
/// the sync log, and whether the peer is told with an `error` message first.
struct Ending {
    code: u16,
    reason: String,
    error: Option<String>,
    farewell: bool,
}

impl Ending {
    /// The peer closed, or the hub let the connection go.
    fn normal() -> Self {
        Self {
            code: CLOSE_NORMAL,
            reason: String::new(),
            error: None,
            farewell: false,
        }
    }

    fn going_away() -> Self {
        Self {
            code: CLOSE_GOING_AWAY,
            reason: "server shutting down".to_string(),
            error: None,
            farewell: false,
        }
    }

    /// The server closes for a reason the close frame carries.
    fn policy(reason: String) -> Self {
        Self {
            code: CLOSE_POLICY,
            error: Some(reason.clone()),
            reason,
            farewell: false,
        }
    }

    /// As [`Ending::policy`], and the peer gets an `error` message first.
    fn refusal(reason: String) -> Self {
        Self {
            farewell: true,
            ..Self::policy(reason)
        }
    }

    /// The hub task pulled the kill switch (a slow peer): close code 1013,
    /// the peer may come back once it keeps up.
    fn killed(reason: Result<String, oneshot::error::RecvError>) -> Self {
        Self {
            code: CLOSE_TRY_AGAIN_LATER,
            ..Self::policy(reason.unwrap_or_else(|_| "disconnected by server".to_string()))
        }
    }

    /// A message over `message_bytes_max`: close code 1009, after an
    /// `error` saying so.
    fn too_big(bytes: usize, bytes_max: usize) -> Self {
        Self {
            code: CLOSE_TOO_BIG,
            ..Self::refusal(format!(
                "message of {bytes} bytes is over the limit of {bytes_max} bytes"
            ))
        }
    }

    /// The socket failed. A frame over the WebSocket layer's own size limit
    /// (twice `message_bytes_max`, see `server::upgrade`) is a limit too and
    /// closes with 1009; anything else cannot be told to the peer.
    fn socket_error(error: axum::Error, bytes_max: usize) -> Self {
        let too_big = error
            .source()
            .and_then(|source| source.downcast_ref::<tungstenite::Error>())
            .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)));
        if too_big {
            return Self {
                code: CLOSE_TOO_BIG,
                ..Self::policy(format!(
                    "message over the limit of {bytes_max} bytes ({error})"
                ))
            };
        }
        Self::failed(format!("socket error: {error}"))
    }

    /// The socket failed; nothing useful can be said to the peer.
    fn failed(error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::normal()
        }
    }
}
