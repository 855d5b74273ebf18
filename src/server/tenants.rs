//! Provisioning a tenant on a server: the one path behind both `ventas
//! tenant init` (a stopped data directory, served in-process for the
//! occasion) and `POST /v1/tenants` (a running server).
//!
//! ```text
//!  TenantSpec ──KeeperRequest::Provision──▶ period keeper ──sessions──▶ hub
//!      │                                     (devices, stock, ledgers,
//!      │                                      then the catalog)
//!      └── credentials (one per device, one office) issued once the
//!          documents are acknowledged ──▶ Provisioned (URLs + tokens)
//! ```
//!
//! The documents are written by the period keeper, the server's one
//! writer of the documents it makes, through the running hub like any
//! peer (no second writer of any document). A tenant that already has a
//! catalog is refused (`TenantExists`, HTTP 409) before anything is
//! written: provisioning is not idempotent, it says so. The credential
//! lifetime is checked before anything is written too; the credentials
//! are issued after the documents, so a refusal leaves no credential
//! behind.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::auth::{self, Authenticator, CredentialError, IssueRequest, Role};
use super::periods::{KeeperError, KeeperRequest};
use crate::provision::TenantSpec;

/// Longest a provisioning waits for the keeper (which may be in the middle
/// of a pass over every catalog) and the hub, in milliseconds.
pub const PROVISION_TIMEOUT_MS: u64 = 120_000;

/// Why a tenant was not provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("token_expires: {0}")]
    InvalidLifetime(String),
    #[error("this server keeps no credential registry")]
    NoRegistry,
    #[error("the period keeper is not running")]
    KeeperGone,
    #[error("no answer from the period keeper within {PROVISION_TIMEOUT_MS} ms")]
    Timeout,
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    #[error("the documents were created, but issuing the credentials failed: {0}")]
    Credentials(#[from] CredentialError),
    #[error("the credential worker thread failed: {0}")]
    Worker(String),
}

/// A document created for the tenant.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionedDocument {
    /// The catalog directory's key (`device/tablet-7`,
    /// `ledger/ana/2026-12`, `stock/van-ana/2026-12`).
    pub key: String,
    pub kind: String,
    pub owner: String,
    pub period: Option<String>,
    pub url: String,
}

/// A credential issued for the tenant; the token is shown only here.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionedCredential {
    pub credential_id: String,
    pub role: Role,
    pub seller: String,
    pub device: String,
    pub token: String,
    pub expires_at_ms: Option<u64>,
}

/// What a provisioning made: the answer of `POST /v1/tenants` and the
/// `--json` output of `ventas tenant init`.
#[derive(Debug, Clone, Serialize)]
pub struct Provisioned {
    pub tenant: String,
    pub catalog_url: String,
    pub documents: Vec<ProvisionedDocument>,
    /// One per device (role `seller`), then the office's.
    pub credentials: Vec<ProvisionedCredential>,
}

impl Provisioned {
    /// The URL of the document listed under `key`.
    pub fn url_of(&self, key: &str) -> Option<&str> {
        self.documents
            .iter()
            .find(|document| document.key == key)
            .map(|document| document.url.as_str())
    }

    /// The token issued to `device`.
    pub fn token_of(&self, device: &str) -> Option<&str> {
        self.credentials
            .iter()
            .find(|credential| credential.device == device)
            .map(|credential| credential.token.as_str())
    }
}

/// Provisions `spec`'s tenant through the keeper, then issues its
/// credentials (see the module documentation).
pub async fn provision(
    keeper: &mpsc::Sender<KeeperRequest>,
    authenticator: Arc<dyn Authenticator>,
    spec: TenantSpec,
    now_ms: u64,
) -> Result<Provisioned, ProvisionError> {
    if authenticator.credentials().is_none() {
        return Err(ProvisionError::NoRegistry);
    }
    let lifetime = spec
        .token_expires
        .as_deref()
        .unwrap_or(auth::TOKEN_LIFETIME_DEFAULT);
    let lifetime_ms = auth::parse_lifetime_ms(lifetime).map_err(ProvisionError::InvalidLifetime)?;
    let expires_at_ms = lifetime_ms.map(|ms| now_ms.saturating_add(ms));
    let tenant = spec.tenant.to_string();
    let mut requests: Vec<IssueRequest> = spec
        .devices
        .iter()
        .map(|device| IssueRequest {
            tenant: tenant.clone(),
            seller: device.seller.to_string(),
            device: device.id.to_string(),
            role: Role::Seller,
            expires_at_ms,
        })
        .collect();
    requests.push(IssueRequest {
        tenant: tenant.clone(),
        seller: spec.office.seller.clone(),
        device: spec.office.device.clone(),
        role: Role::Office,
        expires_at_ms,
    });

    let (reply, answer) = oneshot::channel();
    let request = KeeperRequest::Provision {
        spec: Box::new(spec),
        reply,
    };
    let wait = Duration::from_millis(PROVISION_TIMEOUT_MS);
    let answered = tokio::time::timeout(wait, async {
        keeper
            .send(request)
            .await
            .map_err(|_| ProvisionError::KeeperGone)?;
        answer.await.map_err(|_| ProvisionError::KeeperGone)
    })
    .await
    .map_err(|_| ProvisionError::Timeout)??;
    let created = answered?;

    let documents = created
        .documents
        .iter()
        .map(|(key, document_id)| ProvisionedDocument {
            key: key.to_string(),
            kind: key.kind.as_str().to_string(),
            owner: key.owner.clone(),
            period: key.period.map(|period| period.to_string()),
            url: document_id.to_url(),
        })
        .collect();
    let issued = tokio::task::spawn_blocking(move || {
        let Some(credentials) = authenticator.credentials() else {
            return Err(ProvisionError::NoRegistry);
        };
        requests
            .into_iter()
            .map(|request| {
                let issued = credentials.issue(request, now_ms)?;
                Ok(ProvisionedCredential {
                    credential_id: issued.credential.id,
                    role: issued.credential.role,
                    seller: issued.credential.seller,
                    device: issued.credential.device,
                    token: issued.token,
                    expires_at_ms: issued.credential.expires_at_ms,
                })
            })
            .collect::<Result<Vec<_>, ProvisionError>>()
    })
    .await
    .map_err(|error| ProvisionError::Worker(error.to_string()))??;
    Ok(Provisioned {
        tenant,
        catalog_url: created.catalog.to_url(),
        documents,
        credentials: issued,
    })
}
