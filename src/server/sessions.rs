//! The sync log: one record per connection session, kept in the store's
//! metadata keyspace and served newest first at `GET /v1/sync-sessions`.
//!
//! Keys are `session/` + the session id (big-endian u64 from
//! [`DocStore::next_id`]), so a reverse prefix scan yields newest first and
//! the id doubles as the pagination cursor.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ventas_storage::{DocStore, StoreError};

const SESSION_PREFIX: &[u8] = b"session/";

/// One connection, from upgrade to close.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSession {
    pub id: u64,
    /// The automerge-repo peer id the device joined with.
    pub peer_id: Option<String>,
    /// The authenticated identity bound at the upgrade, if any.
    pub identity: Option<String>,
    pub remote_addr: String,
    pub connected_at_ms: u64,
    /// None while the session is open.
    pub disconnected_at_ms: Option<u64>,
    /// Documents the peer opened (bs58check ids).
    pub documents: Vec<String>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub changes_in: u64,
    pub changes_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Why the session ended, when it was not a clean close by the peer.
    pub error: Option<String>,
}

/// A page of sessions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionPage {
    pub sessions: Vec<SyncSession>,
    /// Pass as `before` to get the next (older) page.
    pub next_before: Option<u64>,
}

/// Errors of the sync log.
#[derive(Debug, thiserror::Error)]
pub enum SessionLogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sync session record {id} is unreadable: {reason}")]
    Corrupt { id: u64, reason: String },
}

/// Reads and writes [`SyncSession`] records.
#[derive(Clone)]
pub struct SessionLog {
    store: Arc<dyn DocStore>,
}

impl SessionLog {
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self { store }
    }

    /// A fresh session id.
    pub fn next_id(&self) -> Result<u64, SessionLogError> {
        Ok(self.store.next_id()?)
    }

    /// Writes (or rewrites) a session record.
    pub fn put(&self, session: &SyncSession) -> Result<(), SessionLogError> {
        let value = serde_json::to_vec(session).map_err(|e| SessionLogError::Corrupt {
            id: session.id,
            reason: e.to_string(),
        })?;
        self.store.meta_put(&key(session.id), &value)?;
        Ok(())
    }

    /// Sessions newest first, older than `before` if given.
    pub fn page(&self, before: Option<u64>, limit: usize) -> Result<SessionPage, SessionLogError> {
        let before_key = before.map(key);
        let rows = self
            .store
            .meta_scan_prefix_rev(SESSION_PREFIX, before_key.as_deref(), limit)?;
        let mut sessions = Vec::with_capacity(rows.len());
        for (row_key, value) in rows {
            let id = id_of(&row_key).unwrap_or_default();
            let session: SyncSession =
                serde_json::from_slice(&value).map_err(|e| SessionLogError::Corrupt {
                    id,
                    reason: e.to_string(),
                })?;
            sessions.push(session);
        }
        let next_before = if sessions.len() == limit {
            sessions.last().map(|s| s.id)
        } else {
            None
        };
        Ok(SessionPage {
            sessions,
            next_before,
        })
    }
}

fn key(id: u64) -> Vec<u8> {
    let mut key = SESSION_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn id_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(SESSION_PREFIX.len()..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}
