//! The sync log: one record per connection session, kept in the store's
//! metadata keyspace and served newest first at `GET /v1/sync-sessions`.
//!
//! Keys are `session/` + the session id (big-endian u64 from
//! [`DocStore::next_id`]), so a reverse prefix scan yields newest first and
//! the id doubles as the pagination cursor.
//!
//! Each record names the tenant, seller and device of the credential the
//! connection presented (none when authentication is off). Office and
//! reporting callers see only their tenant's records ([`SessionLog::page_in`]):
//! beside each record of a tenant an index key
//! `session-tenant/<tenant>/<id>` (empty value) is written first, so a tenant's page is a reverse
//! scan of its own index (at most `limit` index rows and `limit` record
//! reads), never of the whole log. Tenant names cannot hold `/`, so one
//! tenant's index prefix never covers another's. Records written before
//! the index existed (no tenant) are seen by the operator only.
//!
//! A crash between the index key and its record's first write leaves an
//! index key that points at nothing. Pages skip such keys (the record is
//! the authority), and [`SessionLog::prune_stale_index`], run once at
//! startup before the server accepts, removes them so they do not pile up
//! over many crashes.

use std::sync::Arc;

use super::auth::{Identity, Scope};
use super::exporter::ExportMarks;
use super::limits::{truncate_to_bytes, PEER_ID_BYTES_MAX};
use serde::{Deserialize, Serialize};
use ventas_storage::{DocStore, StoreError};

const SESSION_PREFIX: &[u8] = b"session/";
/// Per-tenant index keys: `session-tenant/<tenant>/<id>`.
const TENANT_INDEX_PREFIX: &[u8] = b"session-tenant/";
/// Bytes of document ids one record keeps (about 1,200 ids); the rest are
/// counted in `documents_omitted`. With the bounds below a record stays
/// well under the store's metadata value limit (64 KiB), so a session, and
/// any refused write in it, is always recorded whatever the peer sent.
pub const SESSION_DOCUMENTS_BYTES_MAX: usize = 40 * 1024;
/// Bytes of each denial a record keeps (`hub::DENIALS_KEPT_MAX` of them).
pub const SESSION_DENIAL_BYTES_MAX: usize = 256;
/// Bytes of the ending error a record keeps.
pub const SESSION_ERROR_BYTES_MAX: usize = 1_024;
/// Sessions kept in the sync log; older ones are pruned.
pub const SYNC_SESSIONS_KEPT_MAX_DEFAULT: u64 = 100_000;
/// Rows removed per pruning page.
const PRUNE_PAGE_ROWS: usize = 500;

/// One connection, from upgrade to close.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSession {
    pub id: u64,
    /// The automerge-repo peer id the device joined with.
    pub peer_id: Option<String>,
    /// The authenticated identity bound at the upgrade, if any.
    pub identity: Option<String>,
    /// The tenant, seller and device of that identity (None when
    /// authentication is off, and in records older than these fields).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub seller: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    pub remote_addr: String,
    pub connected_at_ms: u64,
    /// None while the session is open.
    pub disconnected_at_ms: Option<u64>,
    /// Documents the peer opened (bs58check ids), the first
    /// [`SESSION_DOCUMENTS_BYTES_MAX`] bytes of them.
    pub documents: Vec<String>,
    /// Documents opened but left out of `documents` for space.
    #[serde(default)]
    pub documents_omitted: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub changes_in: u64,
    pub changes_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Sync messages whose changes the server refused because the peer may
    /// only read that document (see `server::access`).
    #[serde(default)]
    pub writes_denied: u64,
    /// The first denials (at most `hub::DENIALS_KEPT_MAX`), each
    /// `"<document>: <reason>"`.
    #[serde(default)]
    pub denials: Vec<String>,
    /// Why the session ended, when it was not a clean close by the peer.
    pub error: Option<String>,
}

impl SyncSession {
    /// A fresh record of session `id` for a connection admitted as
    /// `identity` (None: anonymous).
    pub fn opened(
        id: u64,
        identity: Option<&Identity>,
        remote_addr: String,
        connected_at_ms: u64,
    ) -> Self {
        Self {
            id,
            identity: identity.map(|i| i.subject.clone()),
            tenant: identity.map(|i| i.tenant.clone()),
            seller: identity.map(|i| i.seller.clone()),
            device: identity.map(|i| i.device.clone()),
            remote_addr,
            connected_at_ms,
            ..Self::default()
        }
    }

    /// This record within its bounds: what a peer chose (its id, the
    /// documents it opened, denial and error texts) is truncated, so the
    /// record always fits the store.
    pub fn bounded(&self) -> Self {
        let mut bounded = self.clone();
        let cut = |text: &str, bytes_max| truncate_to_bytes(text, bytes_max).to_string();
        bounded.peer_id = self.peer_id.as_deref().map(|p| cut(p, PEER_ID_BYTES_MAX));
        bounded.error = self
            .error
            .as_deref()
            .map(|e| cut(e, SESSION_ERROR_BYTES_MAX));
        bounded.denials = self
            .denials
            .iter()
            .take(ventas_sync_protocol::hub::DENIALS_KEPT_MAX)
            .map(|denial| cut(denial, SESSION_DENIAL_BYTES_MAX))
            .collect();
        let mut documents_bytes = 0usize;
        bounded.documents = self
            .documents
            .iter()
            .take_while(|id| {
                documents_bytes = documents_bytes.saturating_add(id.len() + 3);
                documents_bytes <= SESSION_DOCUMENTS_BYTES_MAX
            })
            .cloned()
            .collect();
        let omitted = self.documents.len() - bounded.documents.len();
        bounded.documents_omitted = self
            .documents_omitted
            .saturating_add(u64::try_from(omitted).unwrap_or(u64::MAX));
        bounded
    }
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
    kept_max: u64,
    /// Marks each written session for the export to PostgreSQL.
    export_marks: Option<Arc<ExportMarks>>,
}

impl SessionLog {
    pub fn new(store: Arc<dyn DocStore>) -> Self {
        Self::with_limit(store, SYNC_SESSIONS_KEPT_MAX_DEFAULT)
    }

    /// A log that keeps at most `kept_max` sessions (by id distance).
    pub fn with_limit(store: Arc<dyn DocStore>, kept_max: u64) -> Self {
        Self {
            store,
            kept_max,
            export_marks: None,
        }
    }

    /// The same log, marking every session it writes for export.
    pub fn with_export_marks(mut self, marks: Arc<ExportMarks>) -> Self {
        self.export_marks = Some(marks);
        self
    }

    /// Removes every session more than `kept_max` ids older than
    /// `newest_id`. Returns how many were removed.
    pub fn prune(&self, newest_id: u64) -> Result<usize, SessionLogError> {
        let Some(cutoff) = newest_id.checked_sub(self.kept_max) else {
            return Ok(0);
        };
        let cutoff_key = key(cutoff.saturating_add(1));
        let mut removed = 0;
        loop {
            let page = self.store.meta_scan_prefix_rev(
                SESSION_PREFIX,
                Some(&cutoff_key),
                PRUNE_PAGE_ROWS,
            )?;
            if page.is_empty() {
                return Ok(removed);
            }
            for (row_key, value) in page {
                // The index key first: a crash between the two leaves a
                // record without index (seen by the operator, pruned next
                // time), never an index key nobody removes.
                let tenant = serde_json::from_slice::<SyncSession>(&value)
                    .ok()
                    .and_then(|session| session.tenant);
                if let (Some(tenant), Some(id)) = (tenant, id_of(&row_key)) {
                    self.store.meta_remove(&tenant_key(&tenant, id))?;
                }
                self.store.meta_remove(&row_key)?;
                removed += 1;
            }
        }
    }

    /// Removes every index key whose record is missing or names another
    /// tenant (left by a crash between the two writes of [`SessionLog::put`]).
    /// Walks the whole index a page at a time: one record read per key, at
    /// most [`SYNC_SESSIONS_KEPT_MAX_DEFAULT`] keys by default (its time at
    /// startup is not measured yet). Returns how many keys were removed.
    pub fn prune_stale_index(&self) -> Result<usize, SessionLogError> {
        let mut removed = 0;
        let mut before: Option<Vec<u8>> = None;
        loop {
            let page = self.store.meta_scan_prefix_rev(
                TENANT_INDEX_PREFIX,
                before.as_deref(),
                PRUNE_PAGE_ROWS,
            )?;
            let Some((last_key, _)) = page.last() else {
                return Ok(removed);
            };
            before = Some(last_key.clone());
            for (index_key, _) in page {
                let stale = match index_entry(&index_key) {
                    // A record names its tenant; a key under another
                    // tenant's prefix, or one without a record, is stale.
                    Some((tenant, id)) => match self.store.meta_get(&key(id))? {
                        Some(value) => serde_json::from_slice::<SyncSession>(&value)
                            .map(|session| session.tenant.as_deref() != Some(tenant))
                            // An unreadable record is reported where it is
                            // read; its index key stays.
                            .unwrap_or(false),
                        None => true,
                    },
                    // Not a key this module writes: not ours to judge.
                    None => false,
                };
                if stale {
                    self.store.meta_remove(&index_key)?;
                    removed += 1;
                }
            }
        }
    }

    /// A fresh session id.
    pub fn next_id(&self) -> Result<u64, SessionLogError> {
        Ok(self.store.next_id()?)
    }

    /// Writes (or rewrites) a session record.
    pub fn put(&self, session: &SyncSession) -> Result<(), SessionLogError> {
        let session = session.bounded();
        let value = serde_json::to_vec(&session).map_err(|e| SessionLogError::Corrupt {
            id: session.id,
            reason: e.to_string(),
        })?;
        // The index key before the record: a crash between the two leaves
        // an index key whose record is missing, which pages skip.
        if let Some(tenant) = &session.tenant {
            self.store.meta_put(&tenant_key(tenant, session.id), &[])?;
        }
        self.store.meta_put(&key(session.id), &value)?;
        if let Some(marks) = &self.export_marks {
            marks.session_written(session.id)?;
        }
        Ok(())
    }

    /// One session, if the log still holds it.
    pub fn get(&self, id: u64) -> Result<Option<SyncSession>, SessionLogError> {
        let Some(value) = self.store.meta_get(&key(id))? else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| SessionLogError::Corrupt {
                id,
                reason: e.to_string(),
            })
    }

    /// Whether session `id` belongs to `tenant` (one index lookup).
    pub fn is_of_tenant(&self, tenant: &str, id: u64) -> Result<bool, StoreError> {
        Ok(self.store.meta_get(&tenant_key(tenant, id))?.is_some())
    }

    /// The sessions `scope` may see, newest first, older than `before` if
    /// given.
    pub fn page_in(
        &self,
        scope: &Scope,
        before: Option<u64>,
        limit: usize,
    ) -> Result<SessionPage, SessionLogError> {
        let Some(tenant) = scope.tenant() else {
            return self.page(before, limit);
        };
        let prefix = tenant_prefix(tenant);
        let before_key = before.map(|id| tenant_key(tenant, id));
        let rows = self
            .store
            .meta_scan_prefix_rev(&prefix, before_key.as_deref(), limit)?;
        let full = rows.len() == limit;
        let last_id = rows
            .last()
            .and_then(|(row_key, _)| row_key.get(prefix.len()..))
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes);
        let mut sessions = Vec::with_capacity(rows.len());
        for (row_key, _) in rows {
            let Some(id) = row_key
                .get(prefix.len()..)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            // The record is the authority: an index key whose record is
            // gone (pruned, or a crash between the writes) or names another
            // tenant shows nothing.
            match self.get(id)? {
                Some(session) if session.tenant.as_deref() == Some(tenant) => {
                    sessions.push(session)
                }
                _ => continue,
            }
        }
        Ok(SessionPage {
            sessions,
            next_before: if full { last_id } else { None },
        })
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

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut prefix = TENANT_INDEX_PREFIX.to_vec();
    prefix.extend_from_slice(tenant.as_bytes());
    prefix.push(b'/');
    prefix
}

fn tenant_key(tenant: &str, id: u64) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The tenant and session id of an index key `session-tenant/<tenant>/<id>`.
fn index_entry(index_key: &[u8]) -> Option<(&str, u64)> {
    let rest = index_key.strip_prefix(TENANT_INDEX_PREFIX)?;
    let split = rest.len().checked_sub(9)?;
    let (tenant, slash_and_id) = rest.split_at(split);
    let id_bytes: [u8; 8] = slash_and_id.strip_prefix(b"/")?.try_into().ok()?;
    Some((
        std::str::from_utf8(tenant).ok()?,
        u64::from_be_bytes(id_bytes),
    ))
}

fn id_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(SESSION_PREFIX.len()..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ventas_storage::SledStore;

    fn log(kept_max: u64) -> SessionLog {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        SessionLog::with_limit(store, kept_max)
    }

    fn session(id: u64) -> SyncSession {
        SyncSession {
            id,
            ..SyncSession::default()
        }
    }

    #[test]
    fn a_session_of_a_hostile_peer_is_bounded_and_still_recorded() {
        let log = log(100);
        let huge = "x".repeat(1024 * 1024);
        let hostile = SyncSession {
            id: 7,
            peer_id: Some(huge.clone()),
            documents: (0..10_000).map(|n| format!("{n:0>30}")).collect(),
            denials: vec![huge.clone(); 1_000],
            error: Some(huge),
            ..SyncSession::default()
        };
        log.put(&hostile).expect("recorded in spite of its size");
        let kept = log.get(7).expect("read").expect("kept");
        assert_eq!(kept.peer_id.map(|p| p.len()), Some(PEER_ID_BYTES_MAX));
        assert_eq!(kept.error.map(|e| e.len()), Some(SESSION_ERROR_BYTES_MAX));
        assert_eq!(
            kept.denials.len(),
            ventas_sync_protocol::hub::DENIALS_KEPT_MAX
        );
        assert!(kept
            .denials
            .iter()
            .all(|d| d.len() == SESSION_DENIAL_BYTES_MAX));
        assert_eq!(
            kept.documents.len() as u64 + kept.documents_omitted,
            10_000,
            "every document is listed or counted"
        );
        assert!(kept.documents.len() >= 1_000, "{}", kept.documents.len());
    }

    #[test]
    fn pages_are_newest_first_with_a_cursor() {
        let log = log(100);
        for id in 1..=5 {
            log.put(&session(id)).expect("put");
        }
        let first = log.page(None, 2).expect("page");
        let ids: Vec<u64> = first.sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![5, 4]);
        let second = log.page(first.next_before, 2).expect("page");
        let ids: Vec<u64> = second.sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![3, 2]);
        let last = log.page(second.next_before, 2).expect("page");
        assert_eq!(last.sessions.len(), 1);
        assert_eq!(last.next_before, None);
    }

    fn session_of(id: u64, tenant: &str) -> SyncSession {
        SyncSession {
            id,
            tenant: Some(tenant.to_string()),
            ..SyncSession::default()
        }
    }

    /// Every id `scope` sees, page by page of `limit`.
    fn all_ids(log: &SessionLog, scope: &Scope, limit: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut before = None;
        loop {
            let page = log.page_in(scope, before, limit).expect("page");
            assert!(page.sessions.len() <= limit);
            ids.extend(page.sessions.iter().map(|s| s.id));
            match page.next_before {
                Some(cursor) => before = Some(cursor),
                None => return ids,
            }
        }
    }

    #[test]
    fn a_tenant_pages_through_its_own_sessions_only_and_the_operator_through_all() {
        let log = log(1_000);
        // acme's sessions are a few among many of globex's: its pages must
        // come from its index, full and in order.
        for id in 1..=200 {
            let tenant = if id % 10 == 0 { "acme" } else { "globex" };
            log.put(&session_of(id, tenant)).expect("put");
        }
        // A record from before tenants were logged: the operator's only.
        log.put(&session(201)).expect("put");
        let acme = Scope::Tenant("acme".to_string());
        let expected: Vec<u64> = (1..=20).rev().map(|n| n * 10).collect();
        assert_eq!(all_ids(&log, &acme, 3), expected);
        let first = log.page_in(&acme, None, 20).expect("page");
        assert_eq!(first.sessions.len(), 20, "one page at the limit");
        let globex = all_ids(&log, &Scope::Tenant("globex".to_string()), 50);
        assert_eq!(globex.len(), 180);
        assert!(globex.iter().all(|id| id % 10 != 0));
        assert_eq!(all_ids(&log, &Scope::All, 50).len(), 201);
        assert!(all_ids(&log, &Scope::Tenant("nobody".to_string()), 5).is_empty());
    }

    #[test]
    fn pruning_removes_a_tenants_index_keys_with_its_records() {
        let log = log(10);
        for id in 1..=30 {
            log.put(&session_of(id, "acme")).expect("put");
        }
        assert_eq!(log.prune(30).expect("prune"), 20);
        let acme = Scope::Tenant("acme".to_string());
        assert_eq!(all_ids(&log, &acme, 4), (21..=30).rev().collect::<Vec<_>>());
        let index = log
            .store
            .meta_scan_prefix_rev(TENANT_INDEX_PREFIX, None, 100)
            .expect("scan");
        assert_eq!(index.len(), 10, "no index key outlives its record");
    }

    #[test]
    fn index_keys_left_by_a_crash_are_skipped_on_read_and_pruned_at_startup() {
        let log = log(1_000);
        for id in 1..=6 {
            log.put(&session_of(id, "acme")).expect("put");
        }
        // A crash after the index key, before the record: ids 3 and 7 are
        // index keys only; 5's key sits under globex but its record is acme's.
        log.store.meta_remove(&key(3)).expect("remove");
        log.store
            .meta_put(&tenant_key("acme", 7), &[])
            .expect("stale key");
        log.store
            .meta_put(&tenant_key("globex", 5), &[])
            .expect("stale key");
        let acme = Scope::Tenant("acme".to_string());
        assert_eq!(all_ids(&log, &acme, 2), vec![6, 5, 4, 2, 1]);
        assert!(all_ids(&log, &Scope::Tenant("globex".to_string()), 2).is_empty());

        assert_eq!(log.prune_stale_index().expect("prune"), 3);
        let index: Vec<Vec<u8>> = log
            .store
            .meta_scan_prefix_rev(TENANT_INDEX_PREFIX, None, 100)
            .expect("scan")
            .into_iter()
            .map(|(index_key, _)| index_key)
            .collect();
        let expected: Vec<Vec<u8>> = [6, 5, 4, 2, 1]
            .into_iter()
            .map(|id| tenant_key("acme", id))
            .collect();
        assert_eq!(index, expected, "exactly the stale keys are gone");
        assert_eq!(all_ids(&log, &acme, 2), vec![6, 5, 4, 2, 1]);
        assert_eq!(log.prune_stale_index().expect("prune again"), 0);
    }

    #[test]
    fn pruning_stale_index_keys_walks_past_one_page() {
        let log = log(10_000);
        for id in 1..=(PRUNE_PAGE_ROWS as u64 * 2 + 7) {
            log.store
                .meta_put(&tenant_key("acme", id), &[])
                .expect("stale key");
        }
        log.put(&session_of(1, "acme")).expect("put");
        assert_eq!(
            log.prune_stale_index().expect("prune"),
            PRUNE_PAGE_ROWS * 2 + 6
        );
        let acme = Scope::Tenant("acme".to_string());
        assert_eq!(all_ids(&log, &acme, 3), vec![1]);
    }

    #[test]
    fn pruning_keeps_exactly_the_newest_sessions_at_the_limit() {
        let log = log(1_000);
        for id in 1..=1_600 {
            log.put(&session(id)).expect("put");
        }
        assert_eq!(log.prune(1_600).expect("prune"), 600);
        let mut ids = Vec::new();
        let mut before = None;
        loop {
            let page = log.page(before, 500).expect("page");
            ids.extend(page.sessions.iter().map(|s| s.id));
            match page.next_before {
                Some(cursor) => before = Some(cursor),
                None => break,
            }
        }
        assert_eq!(ids.len(), 1_000);
        assert_eq!(ids.first(), Some(&1_600));
        assert_eq!(ids.last(), Some(&601));
        assert_eq!(log.prune(1_600).expect("prune again"), 0);
    }
}
