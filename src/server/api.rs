//! The HTTP side of the server: the route table, who may call each route
//! and within which tenant, and the one JSON error shape.
//!
//! [`ROUTES`] is the whole route table: [`router`] builds the axum router
//! from it and nothing else, and the integration matrix
//! (`tests/it/tenant_routes.rs`) walks it, so a route added here without a
//! rule in that matrix fails the test.
//!
//! **Who may call what.** Callers are resolved by extractors that run
//! before any body or path is parsed, so an unauthenticated request with a
//! bad body gets 401, not 422. [`Reader`] (sync log, export status,
//! violation reports): anonymous when authentication is off, else an
//! office, reporting or operator credential. [`Admin`] (credentials): an
//! office or operator credential in every auth mode, so an open
//! development server cannot be taken over. Both carry a [`Scope`]: office
//! and reporting see and manage only their own tenant (another tenant's
//! credential or report answers exactly like an unknown one, 404), the
//! operator and anonymous callers of an open server see every tenant. The
//! operator syncs no documents and reads no document content (violation
//! reports: 403); no credential issues an operator over HTTP (only
//! `ventas token issue` on the data directory does).
//!
//! `POST /v1/tenants` ([`Route::ProvisionTenant`]) is an [`Admin`] route
//! too: an office provisions its own tenant, the operator any.
//!
//! **Errors.** Every error answer, ours and axum's (bad JSON, bad query,
//! body too large, unknown route, wrong method, a refused upgrade), is
//! `{"error": {"code": "...", "message": "..."}}` with a stable snake_case
//! code ([`ApiError`]); internals go to the log, never to the caller. A
//! handler that panics answers 500 `internal` and the server goes on
//! ([`answer_panics`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use futures_util::FutureExt as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, error};

use super::auth::{self, Authenticator, CredentialError, Identity, IssueRequest, Role, Scope};
use super::periods::KeeperError;
use super::tenants::{self, ProvisionError};
use super::{exporter, review, AppState};
use crate::config::SYNC_SESSIONS_PAGE_MAX;
use crate::provision::TenantSpec;

/// Sessions per page of `GET /v1/sync-sessions` when `limit` is not given.
pub const SYNC_SESSIONS_PAGE_DEFAULT: usize = 50;
/// Longest error text of axum's own kept in a JSON error, in bytes.
const REJECTION_TEXT_BYTES_MAX: usize = 1_024;

/// Every route the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /`: the automerge-repo WebSocket upgrade.
    Upgrade,
    /// `GET /health`: `ok`, always open.
    Health,
    /// `GET /v1/sync-sessions`: the caller's tenant's sync log, newest first.
    SyncSessions,
    /// `GET /v1/documents/{id}/violations`: the last review of a document.
    DocumentViolations,
    /// `GET /v1/export/status`: how far behind the export is.
    ExportStatus,
    /// `GET /v1/tokens`: the credentials the caller may manage.
    ListTokens,
    /// `POST /v1/tokens`: issue a credential.
    IssueToken,
    /// `POST /v1/tokens/{id}/revoke`: revoke a credential.
    RevokeToken,
    /// `POST /v1/tenants`: provision a tenant (catalog, devices, stock,
    /// ledgers, credentials) from a JSON spec.
    ProvisionTenant,
}

/// The route table: the router is built from it alone.
pub const ROUTES: &[Route] = &[
    Route::Upgrade,
    Route::Health,
    Route::SyncSessions,
    Route::DocumentViolations,
    Route::ExportStatus,
    Route::ListTokens,
    Route::IssueToken,
    Route::RevokeToken,
    Route::ProvisionTenant,
];

impl Route {
    pub fn method(self) -> Method {
        match self {
            Self::IssueToken | Self::RevokeToken | Self::ProvisionTenant => Method::POST,
            Self::Upgrade
            | Self::Health
            | Self::SyncSessions
            | Self::DocumentViolations
            | Self::ExportStatus
            | Self::ListTokens => Method::GET,
        }
    }

    /// The path in axum's syntax (`{id}` is a parameter).
    pub fn path(self) -> &'static str {
        match self {
            Self::Upgrade => "/",
            Self::Health => "/health",
            Self::SyncSessions => "/v1/sync-sessions",
            Self::DocumentViolations => "/v1/documents/{id}/violations",
            Self::ExportStatus => "/v1/export/status",
            Self::ListTokens | Self::IssueToken => "/v1/tokens",
            Self::RevokeToken => "/v1/tokens/{id}/revoke",
            Self::ProvisionTenant => "/v1/tenants",
        }
    }

    fn filter(self) -> MethodFilter {
        if self.method() == Method::POST {
            MethodFilter::POST
        } else {
            MethodFilter::GET
        }
    }

    fn handler(self) -> axum::routing::MethodRouter<AppState> {
        let filter = self.filter();
        match self {
            Self::Upgrade => on(filter, super::upgrade),
            Self::Health => on(filter, || async { "ok" }),
            Self::SyncSessions => on(filter, list_sessions),
            Self::DocumentViolations => on(filter, document_violations),
            Self::ExportStatus => on(filter, export_status),
            Self::ListTokens => on(filter, list_tokens),
            Self::IssueToken => on(filter, issue_token),
            Self::RevokeToken => on(filter, revoke_token),
            Self::ProvisionTenant => on(filter, provision_tenant),
        }
    }
}

/// The server's router: [`ROUTES`], a JSON 404 and 405 for everything
/// else, and every error answer turned into JSON.
pub(super) fn router(state: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path(), route.handler())
        })
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn(answer_panics))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// A handler that panics (a bug of ours) answers 500 `internal` like any
/// failure of ours, the panic is logged, and the connection and the server
/// go on; without this the panic would end hyper's connection task and the
/// caller would see the connection drop with no answer.
async fn answer_panics(request: Request<Body>, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            error!(path, "HTTP handler panicked: {message}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error while handling the request",
            )
            .into_response()
        }
    }
}

/// An HTTP error answer: a status, a stable snake_case code, and a message
/// safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The one answer to a refused credential: it says nothing about why.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credential",
        )
    }

    pub fn forbidden(role: Role) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {role} role may not do this"),
        )
    }

    /// A failure of ours: logged in full, answered in general terms.
    fn internal(what: &str, error: impl std::fmt::Display) -> Self {
        error!("{what} failed: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} unavailable"),
        )
    }

    /// One of axum's own refusals (a bad body, query or path).
    fn rejected(code: &'static str, status: StatusCode, text: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => code,
        };
        Self::new(status, code, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"error"}}"#.to_vec());
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The code of an error answer nobody gave a code (axum's own).
fn code_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_server_error() => "internal",
        _ => "error",
    }
}

/// The safety net behind [`ApiError`]: an error answer that is not JSON
/// yet (axum's rejections outside our extractors, e.g. a plain GET of the
/// WebSocket route) is rewritten as one, keeping its status and text.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, REJECTION_TEXT_BYTES_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut rewritten = ApiError::new(status, code_of_status(status), message).into_response();
    // Keep what the original said beyond its body (`Allow`, `Retry-After`).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name.clone(), value.clone());
        }
    }
    rewritten
}

/// `Json` whose refusal is an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    ApiError::rejected("invalid_json", rejection.status(), rejection.body_text())
}

/// `Query` whose refusal is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::rejected("invalid_query", rejection.status(), rejection.body_text())
}

/// `Path` whose refusal is an [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::rejected("invalid_path", rejection.status(), rejection.body_text())
}

/// The query pairs of a request, for a `?token=` (none if it does not
/// parse: the credential is then looked for in the headers only).
fn raw_query(parts: &Parts) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|Query(pairs)| pairs)
        .unwrap_or_default()
}

/// A caller of the status and report routes: anonymous when
/// authentication is off, else office, reporting or operator.
pub struct Reader {
    pub identity: Option<Identity>,
    pub scope: Scope,
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let query = raw_query(parts);
        match state.authenticator.authenticate(&parts.headers, &query) {
            Ok(None) => Ok(Self {
                identity: None,
                scope: Scope::All,
            }),
            Ok(Some(identity)) if identity.role == Role::Seller => {
                Err(ApiError::forbidden(identity.role))
            }
            Ok(Some(identity)) => Ok(Self {
                scope: Scope::of(Some(&identity)),
                identity: Some(identity),
            }),
            Err(refusal) => {
                debug!("status request refused: {refusal}");
                Err(ApiError::unauthorized())
            }
        }
    }
}

/// A caller of the credential routes: an office or operator credential,
/// whatever the auth mode, checked against the registry.
pub struct Admin {
    pub identity: Identity,
    pub scope: Scope,
    authenticator: Arc<dyn Authenticator>,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(credentials) = state.authenticator.credentials() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_registry",
                "this server keeps no credential registry",
            ));
        };
        let query = raw_query(parts);
        let Some(token) = auth::presented_token(&parts.headers, &query) else {
            return Err(ApiError::unauthorized());
        };
        match credentials.verify(token, crate::now_ms()) {
            Ok(identity) if matches!(identity.role, Role::Office | Role::Operator) => Ok(Self {
                scope: Scope::of(Some(&identity)),
                identity,
                authenticator: Arc::clone(&state.authenticator),
            }),
            Ok(identity) => Err(ApiError::forbidden(identity.role)),
            Err(refusal) => {
                debug!("admin request refused: {refusal}");
                Err(ApiError::unauthorized())
            }
        }
    }
}

impl Admin {
    /// Runs `action` on the registry off the async runtime (it writes and
    /// flushes the store).
    async fn with_registry<T: Send + 'static>(
        self,
        what: &'static str,
        action: impl FnOnce(&auth::Credentials) -> Result<T, CredentialError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let authenticator = self.authenticator;
        let done =
            tokio::task::spawn_blocking(move || authenticator.credentials().map(action)).await;
        match done {
            Ok(Some(Ok(value))) => Ok(value),
            Ok(Some(Err(error))) => Err(credential_error(what, error)),
            Ok(None) => Err(ApiError::internal(what, "no registry")),
            Err(join) => Err(ApiError::internal(what, join)),
        }
    }
}

/// Runs `read` (storage, a blocking call) off the async runtime; a failed
/// or panicked read is logged and answered 500.
async fn blocking_read<T, E>(
    what: &'static str,
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ApiError::internal(what, error)),
        Err(join) => Err(ApiError::internal(what, join)),
    }
}

#[derive(Debug, Deserialize)]
struct SessionQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

/// The sync log of the caller's scope, newest first.
async fn list_sessions(
    reader: Reader,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SessionQuery>,
) -> Result<Response, ApiError> {
    let limit = query
        .limit
        .unwrap_or(SYNC_SESSIONS_PAGE_DEFAULT)
        .clamp(1, SYNC_SESSIONS_PAGE_MAX);
    let sessions = state.sessions.clone();
    let page = blocking_read("sync log", move || {
        sessions.page_in(&reader.scope, query.before, limit)
    })
    .await?;
    Ok(Json(page).into_response())
}

/// How far behind the export to PostgreSQL is, for the caller's scope.
async fn export_status(
    reader: Reader,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    // A bug in a handler, on demand: `tests/it/http_hygiene.rs` checks
    // that a panic is answered with JSON and the server goes on serving.
    fail::fail_point!("export-status-handler", |_| {
        panic!("export status handler failed on purpose")
    });
    let marks = Arc::clone(&state.export_marks);
    let export_state = Arc::clone(&state.export_state);
    let status = blocking_read("export status", move || {
        exporter::status(&marks, &export_state, &reader.scope)
    })
    .await?;
    Ok(Json(status).into_response())
}

/// The last review of a business document: the records that break a rule.
async fn document_violations(
    reader: Reader,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    if let Some(identity) = reader.identity.as_ref() {
        // Reports are document content; the operator reads none.
        if identity.role == Role::Operator {
            return Err(ApiError::forbidden(identity.role));
        }
    }
    let Ok(document_id) = ventas_sync_protocol::ids::DocumentId::parse(&id) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_document_id",
            "not a document id or automerge: URL",
        ));
    };
    let store = Arc::clone(&state.store);
    let key = review::report_key(&document_id);
    let report = blocking_read("violation report", move || store.meta_get(&key)).await?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_report",
            "no review of this document",
        )
    };
    let Some(bytes) = report else {
        return Err(missing());
    };
    // Another tenant's report looks exactly like a missing one.
    if let Scope::Tenant(tenant) = &reader.scope {
        let report_tenant = serde_json::from_slice::<review::ViolationReport>(&bytes)
            .ok()
            .and_then(|report| report.tenant);
        if report_tenant.as_deref() != Some(tenant.as_str()) {
            return Err(missing());
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

/// The credentials the caller may manage, oldest first.
async fn list_tokens(admin: Admin) -> Result<Response, ApiError> {
    let scope = admin.scope.clone();
    let list = admin
        .with_registry("credential list", move |credentials| {
            Ok(credentials.list_in(&scope))
        })
        .await?;
    Ok(Json(list).into_response())
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

/// Issues a credential within the caller's scope; never an operator.
async fn issue_token(
    admin: Admin,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    if body.role == Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_only_from_cli",
            "operator credentials are issued only by `ventas token issue` on the data directory",
        ));
    }
    if !admin.scope.admits(Some(&body.tenant)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "other_tenant",
            format!(
                "an office credential issues credentials of its own tenant only ({})",
                admin.identity.tenant
            ),
        ));
    }
    let lifetime = body
        .expires
        .as_deref()
        .unwrap_or(auth::TOKEN_LIFETIME_DEFAULT);
    let lifetime_ms = auth::parse_lifetime_ms(lifetime)
        .map_err(|reason| ApiError::new(StatusCode::BAD_REQUEST, "invalid_lifetime", reason))?;
    let now_ms = crate::now_ms();
    let request = IssueRequest {
        tenant: body.tenant,
        seller: body.seller,
        device: body.device,
        role: body.role,
        expires_at_ms: lifetime_ms.map(|ms| now_ms.saturating_add(ms)),
    };
    let issued = admin
        .with_registry("credential issue", move |credentials| {
            credentials.issue(request, now_ms)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// Revokes a credential within the caller's scope; one outside it answers
/// exactly like an unknown id.
async fn revoke_token(admin: Admin, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let scope = admin.scope.clone();
    let now_ms = crate::now_ms();
    let info = admin
        .with_registry("credential revoke", move |credentials| {
            match credentials.get(&id) {
                Some(info) if scope.admits_credential(&info) => credentials.revoke(&id, now_ms),
                _ => Err(CredentialError::NotFound { id }),
            }
        })
        .await?;
    Ok(Json(info).into_response())
}

/// Provisions a tenant (`crate::provision` for the body, [`tenants`] for
/// what is made): an office for its own tenant, the operator for any. A
/// refused spec answers 422 `invalid_spec` naming the field, before
/// anything is written; a tenant with a catalog already, 409
/// `tenant_exists`.
async fn provision_tenant(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let spec = TenantSpec::parse(&body).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_spec",
            error.to_string(),
        )
    })?;
    if !admin.scope.admits(Some(spec.tenant.as_str())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "other_tenant",
            format!(
                "an office credential provisions its own tenant only ({})",
                admin.identity.tenant
            ),
        ));
    }
    let provisioned = tenants::provision(
        &state.keeper,
        Arc::clone(&admin.authenticator),
        spec,
        crate::now_ms(),
    )
    .await
    .map_err(provision_error)?;
    Ok((StatusCode::CREATED, Json(provisioned)).into_response())
}

fn provision_error(error: ProvisionError) -> ApiError {
    match error {
        ProvisionError::InvalidLifetime(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_spec",
            error.to_string(),
        ),
        ProvisionError::Keeper(KeeperError::TenantExists { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "tenant_exists", error.to_string())
        }
        ProvisionError::Timeout => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is busy; try again",
        ),
        ProvisionError::NoRegistry => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_registry",
            "this server keeps no credential registry",
        ),
        other => ApiError::internal("provisioning", other),
    }
}

fn credential_error(what: &'static str, error: CredentialError) -> ApiError {
    match error {
        CredentialError::InvalidName { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", error.to_string())
        }
        CredentialError::TooMany => ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_credentials",
            error.to_string(),
        ),
        CredentialError::NotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "no_credential", error.to_string())
        }
        CredentialError::Store(_) | CredentialError::Corrupt { .. } => {
            ApiError::internal(what, error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_method_and_path_and_no_two_collide() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method(), route.path())),
                "{route:?} twice"
            );
        }
    }

    #[test]
    fn names_in_error_codes_stay_snake_case() {
        for status in [400u16, 401, 403, 404, 405, 413, 415, 422, 429, 500, 503] {
            let status = StatusCode::from_u16(status).expect("status");
            let code = code_of_status(status);
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }
}
