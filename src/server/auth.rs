//! Device credentials: issued by the operator, stored only as hashes,
//! checked before the WebSocket upgrade and re-checked while connected.
//!
//! A credential is a bearer token `ventas_<id>_<secret>`: `id` is 16 hex
//! digits (8 random bytes) that name the credential in lists and
//! revocations, `secret` is 64 hex digits (32 random bytes). The store keeps
//! a [`Credential`] record under `credential/<id>` in the metadata keyspace
//! with the SHA-256 of the whole token, never the token itself. At startup
//! [`Credentials::load`] reads every record into memory; the server checks
//! tokens against that map, and issuing or revoking through the same
//! [`Credentials`] (the HTTP admin endpoints) updates store and map together
//! and bumps a change counter, so every open connection re-checks its
//! credential at once: a revoked credential's connection gets an `error`
//! and a close. Expiry is noticed by each connection's own timer.
//!
//! A token may arrive three ways at the upgrade: `Authorization: Bearer
//! <token>` (native clients), a `?token=<token>` query parameter, or a
//! WebSocket subprotocol `ventas.bearer.<token>` (browsers cannot set
//! headers; offer `["ventas", "ventas.bearer.<token>"]`).
//!
//! ```
//! use std::sync::Arc;
//! use ventas::server::auth::{AuthMode, Credentials, IssueRequest, Role};
//! use ventas::storage::{DocStore, SledStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary()?);
//! let credentials = Credentials::load(store, AuthMode::Auto)?;
//! let issued = credentials.issue(
//!     IssueRequest {
//!         tenant: "acme".into(),
//!         seller: "ana".into(),
//!         device: "tablet-7".into(),
//!         role: Role::Seller,
//!         expires_at_ms: None,
//!     },
//!     1_000,
//! )?;
//! let identity = credentials.verify(&issued.token, 2_000)?;
//! assert_eq!(identity.subject, "acme/ana/tablet-7");
//! credentials.revoke(&issued.credential.id, 3_000)?;
//! assert!(credentials.verify(&issued.token, 4_000).is_err());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use ventas_storage::{DocStore, StoreError, LIST_LIMIT_MAX};

/// Start of every token, so secret scanners and humans recognise one.
pub const TOKEN_PREFIX: &str = "ventas_";
/// Random bytes naming a credential (hex-encoded in the token).
pub const CREDENTIAL_ID_BYTES: usize = 8;
/// Random secret bytes in a token (256 bits).
pub const TOKEN_SECRET_BYTES: usize = 32;
/// Length of a well-formed token, in bytes.
pub const TOKEN_BYTES: usize =
    TOKEN_PREFIX.len() + 2 * CREDENTIAL_ID_BYTES + 1 + 2 * TOKEN_SECRET_BYTES;
/// The WebSocket subprotocol a browser offers alongside its token one.
pub const SUBPROTOCOL: &str = "ventas";
/// Prefix of the subprotocol that carries a token.
pub const SUBPROTOCOL_BEARER_PREFIX: &str = "ventas.bearer.";
/// Most credentials (including revoked and expired ones) a store may hold;
/// they all live in memory.
pub const CREDENTIALS_MAX: usize = 100_000;
/// Longest tenant, seller or device name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Open connections re-check their credential at least this often, in ms;
/// revocations through the server are noticed at once, and expiry by a
/// timer set to the expiry instant.
pub const CREDENTIAL_RECHECK_INTERVAL_MS: u64 = 5_000;

/// Lifetime of a credential issued without one.
pub const TOKEN_LIFETIME_DEFAULT: &str = "90d";

/// Metadata key prefix of credential records.
const CREDENTIAL_PREFIX: &[u8] = b"credential/";

/// Whether connections must present a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Required as soon as the store holds any credential (issued ever,
    /// revoked and expired included); with none at all the server runs
    /// open and says so loudly. Local development needs no setup, and the
    /// first issued credential closes the server for good.
    #[default]
    Auto,
    /// Always required, even with no credential issued.
    Required,
    /// Never required (anonymous connections); admin endpoints still need
    /// an office or operator credential.
    Off,
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            "required" => Ok(Self::Required),
            "off" => Ok(Self::Off),
            other => Err(format!("unknown auth mode {other:?} (auto, required, off)")),
        }
    }
}

/// What a credential holder may do. Every role but [`Role::Operator`] acts
/// only within its credential's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A field device: syncs its documents.
    Seller,
    /// A tenant's back office: syncs, reads its tenant's sync log and export
    /// status, manages its tenant's credentials (office ones included).
    Office,
    /// Read-only reporting: syncs and reads its tenant's sync log.
    Reporting,
    /// The people who run the server: manage credentials of every tenant,
    /// read the global sync log and export status, sync no documents (the
    /// upgrade is refused). Issued only by `ventas token issue` on the data
    /// directory, never over HTTP. An operator credential's `tenant` names
    /// no tenant and grants nothing: it is a label for the team
    /// ([`OPERATOR_TENANT_DEFAULT`] unless given); `seller` is the person and
    /// `device` the machine, for the lists.
    Operator,
}

/// The `tenant` label of an operator credential issued without one.
pub const OPERATOR_TENANT_DEFAULT: &str = "operators";

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seller => "seller",
            Self::Office => "office",
            Self::Reporting => "reporting",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "seller" => Ok(Self::Seller),
            "office" => Ok(Self::Office),
            "reporting" => Ok(Self::Reporting),
            "operator" => Ok(Self::Operator),
            other => Err(format!(
                "unknown role {other:?} (seller, office, reporting, operator)"
            )),
        }
    }
}

/// Who is on the other end of a connection, as established before the
/// WebSocket opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `tenant/seller/device`.
    pub subject: String,
    pub credential_id: String,
    pub tenant: String,
    pub seller: String,
    pub device: String,
    pub role: Role,
    pub expires_at_ms: Option<u64>,
}

impl Identity {
    /// The join binding: a peer may join as its device id, or as the device
    /// id followed by `/` and anything (one device running several repos).
    /// Device ids cannot contain `/`, so no device can claim another's.
    pub fn may_join_as(&self, peer_id: &str) -> bool {
        match peer_id.strip_prefix(self.device.as_str()) {
            Some("") => true,
            Some(rest) => rest.starts_with('/'),
            None => false,
        }
    }
}

/// Which tenants' records (credentials, sync log, export backlog) a caller
/// may see and manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant: an operator, or anyone when authentication is off.
    All,
    /// One tenant: office and reporting (and seller) credentials.
    Tenant(String),
}

impl Scope {
    /// The scope of a caller; `None` is an anonymous caller, admitted only
    /// when authentication is off.
    pub fn of(identity: Option<&Identity>) -> Self {
        match identity {
            None => Self::All,
            Some(identity) if identity.role == Role::Operator => Self::All,
            Some(identity) => Self::Tenant(identity.tenant.clone()),
        }
    }

    /// Whether records of `tenant` are visible (`None`: a record that names
    /// no tenant, visible only to [`Scope::All`]).
    pub fn admits(&self, tenant: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(own) => tenant == Some(own.as_str()),
        }
    }

    /// Whether a credential is visible and manageable: a tenant scope sees
    /// its tenant's credentials but never an operator's, whatever its label.
    pub fn admits_credential(&self, credential: &CredentialInfo) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(_) => {
                credential.role != Role::Operator && self.admits(Some(&credential.tenant))
            }
        }
    }

    /// The one tenant, if the scope is one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Tenant(tenant) => Some(tenant),
        }
    }
}

/// Why a credential was refused. Every variant becomes the same HTTP 401
/// (403 for [`AuthError::Forbidden`]), so a caller learns nothing about
/// which credentials exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential presented")]
    Missing,
    #[error("credential is not a ventas token")]
    Malformed,
    #[error("unknown credential")]
    Unknown,
    #[error("credential {id} was revoked")]
    Revoked { id: String },
    #[error("credential {id} expired")]
    Expired { id: String },
    #[error("the {role} role may not do this")]
    Forbidden { role: Role },
    #[error("credentials are now required")]
    Required,
}

/// Failures managing credentials (issue, revoke, list, load).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{field} {value:?} is invalid: 1 to {NAME_BYTES_MAX} of A-Z a-z 0-9 . _ -")]
    InvalidName { field: &'static str, value: String },
    #[error("no credential {id}")]
    NotFound { id: String },
    #[error("the store holds {CREDENTIALS_MAX} credentials already")]
    TooMany,
}

/// A stored credential: who it names and the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub tenant: String,
    pub seller: String,
    pub device: String,
    pub role: Role,
    /// SHA-256 of the whole token text, lowercase hex.
    pub token_sha256: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

/// A credential as lists show it: everything but the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub id: String,
    pub tenant: String,
    pub seller: String,
    pub device: String,
    pub role: Role,
    pub issued_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

impl Credential {
    pub fn info(&self) -> CredentialInfo {
        CredentialInfo {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            seller: self.seller.clone(),
            device: self.device.clone(),
            role: self.role,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        }
    }

    /// Whether the credential admits its holder at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), AuthError> {
        if self.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked {
                id: self.id.clone(),
            });
        }
        if self.expires_at_ms.is_some_and(|expiry| now_ms >= expiry) {
            return Err(AuthError::Expired {
                id: self.id.clone(),
            });
        }
        Ok(())
    }

    fn identity(&self) -> Identity {
        Identity {
            subject: format!("{}/{}/{}", self.tenant, self.seller, self.device),
            credential_id: self.id.clone(),
            tenant: self.tenant.clone(),
            seller: self.seller.clone(),
            device: self.device.clone(),
            role: self.role,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    pub tenant: String,
    pub seller: String,
    pub device: String,
    pub role: Role,
    /// None: never expires.
    pub expires_at_ms: Option<u64>,
}

/// A freshly issued credential. `token` is shown once and never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub credential: CredentialInfo,
}

/// A token split into its parts (syntax only; nothing is looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    pub id: &'a str,
    pub text: &'a str,
}

/// Checks the shape `ventas_<16 hex>_<64 hex>`.
pub fn parse_token(text: &str) -> Result<ParsedToken<'_>, AuthError> {
    if text.len() != TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let rest = text
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if id.len() != 2 * CREDENTIAL_ID_BYTES
        || secret.len() != 2 * TOKEN_SECRET_BYTES
        || !lower_hex(id)
        || !lower_hex(secret)
    {
        return Err(AuthError::Malformed);
    }
    Ok(ParsedToken { id, text })
}

/// SHA-256 of the token text, lowercase hex.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn validate_name(field: &'static str, value: &str) -> Result<(), CredentialError> {
    let valid = !value.is_empty()
        && value.len() <= NAME_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CredentialError::InvalidName {
            field,
            value: value.to_string(),
        })
    }
}

/// Parses a lifetime like `90d`, `12h`, `30m`, `45s`; `never` is None.
pub fn parse_lifetime_ms(text: &str) -> Result<Option<u64>, String> {
    if text == "never" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: add a unit (s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number then s, m, h or d"))?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    if number == 0 {
        return Err(format!("{text:?}: a lifetime must be positive"));
    }
    number
        .checked_mul(unit_ms)
        .map(Some)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// The token a request presents, if any: `Authorization: Bearer`, then the
/// `ventas.bearer.` subprotocol, then `?token=`.
pub fn presented_token<'a>(
    headers: &'a HeaderMap,
    query: &'a [(String, String)],
) -> Option<&'a str> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if bearer.is_some() {
        return bearer;
    }
    if let Some(protocol) = bearer_subprotocol(headers) {
        return protocol.strip_prefix(SUBPROTOCOL_BEARER_PREFIX);
    }
    query
        .iter()
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.as_str())
}

/// The offered `ventas.bearer.<token>` subprotocol, if any.
pub fn bearer_subprotocol(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find(|protocol| protocol.starts_with(SUBPROTOCOL_BEARER_PREFIX))
}

/// Decides, from the upgrade request, who the peer is, and whether an open
/// connection may stay open.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)`: admitted anonymously (authentication is off).
    fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Option<Identity>, AuthError>;

    /// Whether a connection admitted as `identity` may stay open at
    /// `now_ms`. Connections call it every
    /// [`CREDENTIAL_RECHECK_INTERVAL_MS`], at their credential's expiry and
    /// whenever [`Authenticator::changes`] fires.
    fn still_valid(&self, _identity: Option<&Identity>, _now_ms: u64) -> Result<(), AuthError> {
        Ok(())
    }

    /// A counter that moves whenever credentials change.
    fn changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    /// The credential registry behind the admin endpoints, if this
    /// authenticator has one.
    fn credentials(&self) -> Option<&Credentials> {
        None
    }
}

/// Everyone is let in, with no identity.
#[derive(Debug, Default)]
pub struct AllowAnonymous;

impl Authenticator for AllowAnonymous {
    fn authenticate(
        &self,
        _headers: &HeaderMap,
        _query: &[(String, String)],
    ) -> Result<Option<Identity>, AuthError> {
        Ok(None)
    }
}

/// Every credential of a store, in memory, kept in step with the store.
pub struct Credentials {
    store: Arc<dyn DocStore>,
    mode: AuthMode,
    by_id: RwLock<HashMap<String, Credential>>,
    changes: watch::Sender<u64>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mode", &self.mode)
            .field("count", &self.read().len())
            .finish()
    }
}

impl Credentials {
    /// Reads every credential record of `store`.
    pub fn load(store: Arc<dyn DocStore>, mode: AuthMode) -> Result<Self, CredentialError> {
        let mut by_id = HashMap::new();
        let mut before: Option<Vec<u8>> = None;
        loop {
            let page =
                store.meta_scan_prefix_rev(CREDENTIAL_PREFIX, before.as_deref(), LIST_LIMIT_MAX)?;
            let full = page.len() == LIST_LIMIT_MAX;
            before = page.last().map(|(key, _)| key.clone());
            for (key, value) in page {
                let credential: Credential =
                    serde_json::from_slice(&value).map_err(|e| CredentialError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: e.to_string(),
                    })?;
                by_id.insert(credential.id.clone(), credential);
            }
            if by_id.len() > CREDENTIALS_MAX {
                return Err(CredentialError::TooMany);
            }
            if !full {
                break;
            }
        }
        let (changes, _) = watch::channel(0);
        Ok(Self {
            store,
            mode,
            by_id: RwLock::new(by_id),
            changes,
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Credential>> {
        // The map is replaced entry by entry; a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still usable.
        self.by_id.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Credential>> {
        self.by_id.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether connections must present a credential right now.
    pub fn required(&self) -> bool {
        match self.mode {
            AuthMode::Required => true,
            AuthMode::Off => false,
            AuthMode::Auto => !self.read().is_empty(),
        }
    }

    /// Creates a credential, stores its hash durably, and returns the token.
    pub fn issue(
        &self,
        request: IssueRequest,
        now_ms: u64,
    ) -> Result<IssuedToken, CredentialError> {
        validate_name("tenant", &request.tenant)?;
        validate_name("seller", &request.seller)?;
        validate_name("device", &request.device)?;
        if self.read().len() >= CREDENTIALS_MAX {
            return Err(CredentialError::TooMany);
        }
        let id = hex(&rand::random::<[u8; CREDENTIAL_ID_BYTES]>());
        let secret = hex(&rand::random::<[u8; TOKEN_SECRET_BYTES]>());
        let token = format!("{TOKEN_PREFIX}{id}_{secret}");
        debug_assert!(parse_token(&token).is_ok(), "issued tokens parse");
        let credential = Credential {
            id,
            tenant: request.tenant,
            seller: request.seller,
            device: request.device,
            role: request.role,
            token_sha256: token_sha256(&token),
            issued_at_ms: now_ms,
            expires_at_ms: request.expires_at_ms,
            revoked_at_ms: None,
        };
        self.save(&credential)?;
        let info = credential.info();
        self.write().insert(credential.id.clone(), credential);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(IssuedToken {
            token,
            credential: info,
        })
    }

    /// Marks the credential revoked (durably); it stops working at once,
    /// and connections using it are told to re-check.
    pub fn revoke(&self, id: &str, now_ms: u64) -> Result<CredentialInfo, CredentialError> {
        let mut credential = self
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| CredentialError::NotFound { id: id.to_string() })?;
        if credential.revoked_at_ms.is_some() {
            return Ok(credential.info());
        }
        credential.revoked_at_ms = Some(now_ms);
        // In memory first: the credential stops working even if the store
        // then fails (the caller sees the error and can retry the write).
        self.write()
            .insert(credential.id.clone(), credential.clone());
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.save(&credential)?;
        Ok(credential.info())
    }

    /// How many credentials the store holds (revoked and expired included).
    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// One credential (revoked and expired included), if the store holds it.
    pub fn get(&self, id: &str) -> Option<CredentialInfo> {
        self.read().get(id).map(Credential::info)
    }

    /// Every credential, oldest first.
    pub fn list(&self) -> Vec<CredentialInfo> {
        self.list_in(&Scope::All)
    }

    /// Every credential `scope` admits, oldest first.
    pub fn list_in(&self, scope: &Scope) -> Vec<CredentialInfo> {
        let mut all: Vec<CredentialInfo> = self
            .read()
            .values()
            .map(Credential::info)
            .filter(|info| scope.admits_credential(info))
            .collect();
        all.sort_by(|a, b| (a.issued_at_ms, &a.id).cmp(&(b.issued_at_ms, &b.id)));
        all
    }

    /// The identity a token stands for, if it is valid at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Identity, AuthError> {
        let parsed = parse_token(token)?;
        let map = self.read();
        let credential = map.get(parsed.id).ok_or(AuthError::Unknown)?;
        let presented = token_sha256(parsed.text);
        if !constant_time_eq(presented.as_bytes(), credential.token_sha256.as_bytes()) {
            return Err(AuthError::Unknown);
        }
        credential.check(now_ms)?;
        Ok(credential.identity())
    }

    /// Whether the credential with `id` still admits its holder.
    pub fn check(&self, id: &str, now_ms: u64) -> Result<(), AuthError> {
        self.read().get(id).ok_or(AuthError::Unknown)?.check(now_ms)
    }

    fn save(&self, credential: &Credential) -> Result<(), CredentialError> {
        let value = serde_json::to_vec(credential).map_err(|e| CredentialError::Corrupt {
            key: credential.id.clone(),
            reason: e.to_string(),
        })?;
        let mut key = CREDENTIAL_PREFIX.to_vec();
        key.extend_from_slice(credential.id.as_bytes());
        self.store.meta_put(&key, &value)?;
        // A revocation that a crash could undo would not be one.
        self.store.flush()?;
        Ok(())
    }
}

impl Authenticator for Credentials {
    fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Option<Identity>, AuthError> {
        match presented_token(headers, query) {
            Some(token) => self.verify(token, crate::now_ms()).map(Some),
            // With auth off a token is still honoured (it names the peer),
            // but none is needed.
            None if self.required() => Err(AuthError::Missing),
            None => Ok(None),
        }
    }

    fn still_valid(&self, identity: Option<&Identity>, now_ms: u64) -> Result<(), AuthError> {
        match identity {
            Some(identity) => self.check(&identity.credential_id, now_ms),
            None if self.required() => Err(AuthError::Required),
            None => Ok(()),
        }
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn credentials(&self) -> Option<&Credentials> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use ventas_storage::SledStore;

    fn credentials(mode: AuthMode) -> Credentials {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        Credentials::load(store, mode).expect("load")
    }

    fn request(device: &str, expires_at_ms: Option<u64>) -> IssueRequest {
        IssueRequest {
            tenant: "acme".to_string(),
            seller: "ana".to_string(),
            device: device.to_string(),
            role: Role::Seller,
            expires_at_ms,
        }
    }

    #[test]
    fn issued_tokens_parse_and_only_their_hash_is_stored() {
        let credentials = credentials(AuthMode::Auto);
        let issued = credentials
            .issue(request("tab-1", None), 10)
            .expect("issue");
        let parsed = parse_token(&issued.token).expect("parses");
        assert_eq!(parsed.id, issued.credential.id);
        let key = [CREDENTIAL_PREFIX, issued.credential.id.as_bytes()].concat();
        let stored = credentials
            .store
            .meta_get(&key)
            .expect("get")
            .expect("record");
        let stored_text = String::from_utf8(stored).expect("json");
        let secret = issued.token.rsplit('_').next().expect("secret");
        assert!(!stored_text.contains(secret), "the secret is not stored");
        assert!(stored_text.contains(&token_sha256(&issued.token)));
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        let good = format!("{TOKEN_PREFIX}{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse_token(&good).is_ok());
        for bad in [
            String::new(),
            "Bearer".to_string(),
            good.to_uppercase(),
            good.replace("ventas_", "vintas_"),
            format!("{good}0"),
            format!("{TOKEN_PREFIX}{}_{}", "a".repeat(17), "b".repeat(63)),
            format!("{TOKEN_PREFIX}{}_{}", "g".repeat(16), "b".repeat(64)),
        ] {
            assert_eq!(parse_token(&bad), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_token_with_a_known_id_but_wrong_secret_is_unknown() {
        let credentials = credentials(AuthMode::Auto);
        let issued = credentials
            .issue(request("tab-1", None), 10)
            .expect("issue");
        let forged = format!("{TOKEN_PREFIX}{}_{}", issued.credential.id, "0".repeat(64));
        assert_eq!(credentials.verify(&forged, 20), Err(AuthError::Unknown));
    }

    #[test]
    fn expiry_is_exclusive_of_the_expiry_instant() {
        let credentials = credentials(AuthMode::Auto);
        let issued = credentials
            .issue(request("tab-1", Some(1_000)), 10)
            .expect("issue");
        assert!(credentials.verify(&issued.token, 999).is_ok());
        assert!(matches!(
            credentials.verify(&issued.token, 1_000),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn revocation_is_durable_and_signalled() {
        let store: Arc<dyn DocStore> = Arc::new(SledStore::temporary().expect("store"));
        let credentials = Credentials::load(Arc::clone(&store), AuthMode::Auto).expect("load");
        let issued = credentials
            .issue(request("tab-1", None), 10)
            .expect("issue");
        let mut changes = Authenticator::changes(&credentials).expect("changes");
        changes.mark_unchanged();
        credentials
            .revoke(&issued.credential.id, 20)
            .expect("revoke");
        assert!(changes.has_changed().expect("sender alive"));
        let reloaded = Credentials::load(store, AuthMode::Auto).expect("reload");
        assert!(matches!(
            reloaded.verify(&issued.token, 30),
            Err(AuthError::Revoked { .. })
        ));
        assert!(matches!(
            credentials.revoke("0000000000000000", 40),
            Err(CredentialError::NotFound { .. })
        ));
    }

    #[test]
    fn auto_mode_is_open_until_the_first_credential_then_closed() {
        let credentials = credentials(AuthMode::Auto);
        let no_headers = HeaderMap::new();
        assert_eq!(credentials.authenticate(&no_headers, &[]), Ok(None));
        let issued = credentials
            .issue(request("tab-1", None), 10)
            .expect("issue");
        assert_eq!(
            credentials.authenticate(&no_headers, &[]),
            Err(AuthError::Missing)
        );
        assert_eq!(credentials.still_valid(None, 20), Err(AuthError::Required));
        credentials
            .revoke(&issued.credential.id, 30)
            .expect("revoke");
        assert!(
            credentials.required(),
            "revoking everything does not reopen"
        );
    }

    #[test]
    fn required_mode_refuses_anonymous_even_with_no_credentials() {
        let credentials = credentials(AuthMode::Required);
        assert_eq!(
            credentials.authenticate(&HeaderMap::new(), &[]),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn tokens_are_found_in_header_subprotocol_and_query() {
        let token = "t0k";
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t0k"),
        );
        assert_eq!(presented_token(&headers, &[]), Some(token));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("ventas, ventas.bearer.t0k"),
        );
        assert_eq!(presented_token(&headers, &[]), Some(token));
        let query = vec![("token".to_string(), token.to_string())];
        assert_eq!(presented_token(&HeaderMap::new(), &query), Some(token));
        assert_eq!(presented_token(&HeaderMap::new(), &[]), None);
    }

    #[test]
    fn lifetimes_parse_with_units() {
        assert_eq!(parse_lifetime_ms("90d"), Ok(Some(90 * 86_400_000)));
        assert_eq!(parse_lifetime_ms("12h"), Ok(Some(12 * 3_600_000)));
        assert_eq!(parse_lifetime_ms("45s"), Ok(Some(45_000)));
        assert_eq!(parse_lifetime_ms("never"), Ok(None));
        for bad in ["", "90", "d", "0d", "9x", "-1d", "99999999999999999999d"] {
            assert!(parse_lifetime_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_device_may_join_as_itself_or_a_slash_suffix_only() {
        let credentials = credentials(AuthMode::Auto);
        let issued = credentials
            .issue(request("tab-1", None), 10)
            .expect("issue");
        let identity = credentials.verify(&issued.token, 20).expect("valid");
        assert!(identity.may_join_as("tab-1"));
        assert!(identity.may_join_as("tab-1/tab2"));
        assert!(!identity.may_join_as("tab-10"));
        assert!(!identity.may_join_as("tab-"));
        assert!(!identity.may_join_as("other"));
    }

    #[test]
    fn names_outside_the_charset_are_refused() {
        let credentials = credentials(AuthMode::Auto);
        for device in ["", "a/b", "tab 1", &"x".repeat(NAME_BYTES_MAX + 1)] {
            assert!(matches!(
                credentials.issue(request(device, None), 10),
                Err(CredentialError::InvalidName { .. })
            ));
        }
        assert!(credentials.list().is_empty());
    }
}
