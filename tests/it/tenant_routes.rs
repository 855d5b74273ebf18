//! Tenants never meet over HTTP: every route of the server's own route table
//! (`ventas::server::api::ROUTES`) x every caller (no credential, seller,
//! reporting, office, operator) x a target in the caller's own tenant or
//! another one, against ONE table of expected outcomes ([`EXPECTED`]). A
//! route added to the table without a rule here fails
//! [`every_route_answers_every_role_and_tenant_as_the_table_says`]. Then
//! each attack an adversarial probe found (issue 10, items 1 and 4) as a
//! named regression, and the JSON error shape (item 4 of the brief).

use std::sync::Arc;

use ventas::server::api::{Route, ROUTES};
use ventas::server::auth::Role;
use ventas::server::owners::{self, DocOwner};
use ventas::server::review;
use ventas::storage::{DocStore, SledStore};
use ventas_sync_protocol::ids::DocumentId;

use crate::harness::{
    bearer, http_request, issue_credentials, status_and_body, within, RawPeer, TestServer,
};

/// The callers of the matrix, in the column order of [`EXPECTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    Seller,
    Reporting,
    Office,
    Operator,
}

const CALLERS: [Caller; 5] = [
    Caller::Nobody,
    Caller::Seller,
    Caller::Reporting,
    Caller::Office,
    Caller::Operator,
];

/// Whose record the request is about: the caller's tenant (acme) or
/// another (globex). The operator has no tenant: both are "others" it may
/// manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own,
    Other,
}

/// Every route x target: the expected HTTP status per caller (columns as
/// [`CALLERS`]; 101 is an accepted WebSocket upgrade), and whether the
/// route lists records, in which case a 200 must show the target tenant's
/// records exactly when the caller may see them (own tenant, or operator).
#[rustfmt::skip]
const EXPECTED: &[(Route, Target, [u16; 5], bool)] = &[
    //                                        nobody seller report office operator
    (Route::Upgrade,            Target::Own,   [401,   101,   101,   101,   403], false),
    (Route::Upgrade,            Target::Other, [401,   101,   101,   101,   403], false),
    (Route::Health,             Target::Own,   [200,   200,   200,   200,   200], false),
    (Route::Health,             Target::Other, [200,   200,   200,   200,   200], false),
    (Route::SyncSessions,       Target::Own,   [401,   403,   200,   200,   200], true),
    (Route::SyncSessions,       Target::Other, [401,   403,   200,   200,   200], true),
    (Route::DocumentViolations, Target::Own,   [401,   403,   200,   200,   403], false),
    (Route::DocumentViolations, Target::Other, [401,   403,   404,   404,   403], false),
    (Route::ExportStatus,       Target::Own,   [401,   403,   200,   200,   200], true),
    (Route::ExportStatus,       Target::Other, [401,   403,   200,   200,   200], true),
    (Route::ListTokens,         Target::Own,   [401,   403,   403,   200,   200], true),
    (Route::ListTokens,         Target::Other, [401,   403,   403,   200,   200], true),
    (Route::IssueToken,         Target::Own,   [401,   403,   403,   201,   201], false),
    (Route::IssueToken,         Target::Other, [401,   403,   403,   403,   201], false),
    (Route::RevokeToken,        Target::Own,   [401,   403,   403,   200,   200], false),
    (Route::RevokeToken,        Target::Other, [401,   403,   403,   404,   200], false),
    (Route::ProvisionTenant,    Target::Own,   [401,   403,   403,   201,   201], false),
    (Route::ProvisionTenant,    Target::Other, [401,   403,   403,   403,   201], false),
];

const TENANTS: [&str; 2] = ["acme", "globex"];

/// Two tenants, each with a seller, a reporting and an office credential,
/// an operator, a stored document and a violation report per tenant, and
/// an export that cannot reach its database (so every marker stays
/// pending and the status shows whose it is).
struct Fixture {
    server: TestServer,
    /// `tokens[tenant][role]`: seller, reporting, office.
    tokens: [[String; 3]; 2],
    operator: String,
    /// A document per tenant with an ownership record and a report; globex
    /// has a second one, and one document has no record at all.
    documents: [DocumentId; 2],
}

/// A port nothing listens on: the export retries in the background.
const UNREACHABLE_POSTGRES: &str = "postgres://postgres@127.0.0.1:9/nothing";

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wanted = Vec::new();
        for tenant in TENANTS {
            wanted.push((tenant, "sam", "tab-1", Role::Seller, None));
            wanted.push((tenant, "rita", "rep-1", Role::Reporting, None));
            wanted.push((tenant, "olga", "pc-1", Role::Office, None));
        }
        wanted.push(("operators", "opal", "ops-1", Role::Operator, None));
        let issued = issue_credentials(dir.path(), &wanted);
        let token = |i: usize| issued[i].clone();
        let documents = [
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
        ];
        {
            let store: Arc<dyn DocStore> =
                Arc::new(SledStore::open(&TestServer::data_dir_in(dir.path())).expect("store"));
            let empty = automerge::Automerge::new().save();
            let extra = [
                (DocumentId::from_bytes([3; 16]), Some("globex")),
                (DocumentId::from_bytes([4; 16]), None),
            ];
            let all = documents
                .iter()
                .zip(TENANTS)
                .map(|(id, tenant)| (*id, Some(tenant)))
                .chain(extra);
            for (id, tenant) in all {
                store.append_chunk(id.as_bytes(), &empty).expect("doc");
                if let Some(tenant) = tenant {
                    owners::record(store.as_ref(), &id, &DocOwner::plain(tenant)).expect("owner");
                }
            }
            for (id, tenant) in documents.iter().zip(TENANTS) {
                let report = review::ViolationReport {
                    document_id: id.to_string(),
                    kind: "ledger".to_string(),
                    tenant: Some(tenant.to_string()),
                    reviewed_at_ms: 1,
                    violations_total: 0,
                    violations: Vec::new(),
                };
                store
                    .meta_put(
                        &review::report_key(id),
                        &serde_json::to_vec(&report).expect("json"),
                    )
                    .expect("report");
            }
            store.flush().expect("flush");
        }
        let server = TestServer::start_in(dir, |config| {
            config.postgres_url = Some(UNREACHABLE_POSTGRES.to_string());
        })
        .await;
        let fixture = Self {
            server,
            tokens: [
                [token(0), token(1), token(2)],
                [token(3), token(4), token(5)],
            ],
            operator: token(6),
            documents,
        };
        // One session per tenant in the sync log (a record is written when
        // the connection opens; closing it writes the end).
        for tenant in 0..2 {
            let peer = RawPeer::connect_with(
                bearer(&fixture.server.url(), &fixture.tokens[tenant][0]),
                "tab-1",
            )
            .await;
            peer.handshake().await.0.socket.close(None).await.ok();
        }
        fixture
    }

    fn tenant_index(tenant: &str) -> usize {
        TENANTS.iter().position(|t| *t == tenant).expect("tenant")
    }

    /// The token of `caller` in `tenant` (the operator's for the operator).
    fn token(&self, caller: Caller, tenant: &str) -> Option<&str> {
        let row = &self.tokens[Self::tenant_index(tenant)];
        match caller {
            Caller::Nobody => None,
            Caller::Seller => Some(&row[0]),
            Caller::Reporting => Some(&row[1]),
            Caller::Office => Some(&row[2]),
            Caller::Operator => Some(&self.operator),
        }
    }

    /// `method path` with `token` as a bearer credential.
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        let auth = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|auth| vec![("Authorization", auth)])
            .unwrap_or_default();
        http_request(self.server.addr(), method, path, &headers, body).await
    }

    /// Issues a fresh seller credential of `tenant` as the operator; its id.
    async fn victim(&self, tenant: &str, device: &str) -> String {
        let body = format!(
            r#"{{"tenant":"{tenant}","seller":"vic","device":"{device}","role":"seller"}}"#
        );
        let (status, issued) = self
            .call(Some(&self.operator), "POST", "/v1/tokens", &body)
            .await;
        assert_eq!(status, 201, "{issued}");
        json(&issued)["credential"]["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// The status of an upgrade with `token`: 101 when accepted.
    async fn upgrade_status(&self, token: Option<&str>) -> u16 {
        let request = match token {
            Some(token) => bearer(&self.server.url(), token),
            None => {
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                self.server.url().into_client_request().expect("request")
            }
        };
        match within("upgrade", tokio_tungstenite::connect_async(request)).await {
            Ok((mut socket, response)) => {
                socket.close(None).await.ok();
                response.status().as_u16()
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                let text = String::from_utf8_lossy(body);
                assert_json_error(&text);
                response.status().as_u16()
            }
            Err(other) => panic!("expected an HTTP answer, got {other}"),
        }
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The error shape: `{"error": {"code": snake_case, "message": text}}`.
fn assert_json_error(text: &str) -> String {
    let value = json(text);
    let code = value["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {text}"));
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "{code}"
    );
    assert!(value["error"]["message"].is_string(), "{text}");
    code.to_string()
}

/// The id of the first credential of `role` in a `GET /v1/tokens` answer.
fn credential_id(list: &str, role: &str) -> String {
    json(list)
        .as_array()
        .expect("array")
        .iter()
        .find(|credential| credential["role"] == role)
        .and_then(|credential| credential["id"].as_str())
        .unwrap_or_else(|| panic!("no {role} in {list}"))
        .to_string()
}

/// Whether a 200 of a listing route shows records of `tenant`.
fn shows_tenant(route: Route, body: &str, tenant: &str) -> bool {
    let value = json(body);
    match route {
        Route::SyncSessions => value["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|session| session["tenant"] == tenant),
        Route::ListTokens => value
            .as_array()
            .expect("credentials")
            .iter()
            .any(|credential| credential["tenant"] == tenant),
        // A tenant's status is about that tenant; the global one about all.
        Route::ExportStatus => value["tenant"].is_null() || value["tenant"] == tenant,
        other => panic!("{other:?} lists nothing"),
    }
}

#[tokio::test]
async fn every_route_answers_every_role_and_tenant_as_the_table_says() {
    for route in ROUTES {
        for target in [Target::Own, Target::Other] {
            let rows = EXPECTED
                .iter()
                .filter(|(r, t, _, _)| r == route && *t == target)
                .count();
            assert_eq!(rows, 1, "{route:?} {target:?} needs exactly one rule");
        }
    }
    let fixture = Fixture::start().await;
    let own = "acme";
    let mut cell = 0;
    let mut failures = Vec::new();
    for &(route, target, statuses, lists) in EXPECTED {
        let target_tenant = match target {
            Target::Own => own,
            Target::Other => "globex",
        };
        for (caller, expected) in CALLERS.into_iter().zip(statuses) {
            cell += 1;
            let token = fixture.token(caller, own);
            let path = match route {
                Route::DocumentViolations => route.path().replace(
                    "{id}",
                    &fixture.documents[Fixture::tenant_index(target_tenant)].to_string(),
                ),
                Route::RevokeToken => {
                    let id = fixture.victim(target_tenant, &format!("v-{cell}")).await;
                    route.path().replace("{id}", &id)
                }
                _ => route.path().to_string(),
            };
            let body = match route {
                Route::IssueToken => format!(
                    r#"{{"tenant":"{target_tenant}","seller":"new","device":"n-{cell}","role":"seller"}}"#
                ),
                // A tenant is provisioned once: the office just made
                // acme, so the operator's "own" cell provisions a fresh
                // tenant (the operator has none of its own anyway).
                Route::ProvisionTenant if caller == Caller::Operator && target == Target::Own => {
                    r#"{"tenant":"initech"}"#.to_string()
                }
                Route::ProvisionTenant => format!(r#"{{"tenant":"{target_tenant}"}}"#),
                _ => String::new(),
            };
            let (status, text) = match route {
                Route::Upgrade => (fixture.upgrade_status(token).await, String::new()),
                _ => {
                    fixture
                        .call(token, route.method().as_str(), &path, &body)
                        .await
                }
            };
            let what = format!("{route:?} {target:?} as {caller:?}");
            if status != expected {
                failures.push(format!("{what}: {status}, expected {expected}: {text}"));
                continue;
            }
            if status >= 400 && route != Route::Upgrade {
                assert_json_error(&text);
            }
            if lists && status == 200 {
                let may_see = target == Target::Own || caller == Caller::Operator;
                if shows_tenant(route, &text, target_tenant) != may_see {
                    failures.push(format!(
                        "{what}: shows {target_tenant}'s records: {}, expected {may_see}: {text}",
                        !may_see
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    fixture.server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn globex_office_lists_only_globex_credentials() {
    let fixture = Fixture::start().await;
    let globex_office = fixture.token(Caller::Office, "globex");
    let (status, list) = fixture.call(globex_office, "GET", "/v1/tokens", "").await;
    assert_eq!(status, 200, "{list}");
    let list = json(&list);
    let list = list.as_array().expect("array");
    assert_eq!(
        list.len(),
        3,
        "globex's seller, reporting and office: {list:?}"
    );
    assert!(list.iter().all(|c| c["tenant"] == "globex"), "{list:?}");
    assert!(
        list.iter().all(|c| c["role"] != "operator"),
        "operators are nobody's tenant's"
    );
}

#[tokio::test]
async fn globex_office_cannot_issue_an_acme_office_credential() {
    let fixture = Fixture::start().await;
    let globex_office = fixture.token(Caller::Office, "globex");
    let body = r#"{"tenant":"acme","seller":"mole","device":"pc-9","role":"office"}"#;
    let (status, text) = fixture
        .call(globex_office, "POST", "/v1/tokens", body)
        .await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(assert_json_error(&text), "other_tenant");
    let (_, list) = fixture
        .call(Some(&fixture.operator), "GET", "/v1/tokens", "")
        .await;
    assert!(!list.contains("mole"), "nothing was issued: {list}");
    // Its own tenant's office credentials it may issue.
    let own = r#"{"tenant":"globex","seller":"ivy","device":"pc-2","role":"office"}"#;
    assert_eq!(
        fixture
            .call(globex_office, "POST", "/v1/tokens", own)
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn acme_office_cannot_mint_a_credential_for_a_brand_new_tenant() {
    let fixture = Fixture::start().await;
    let acme_office = fixture.token(Caller::Office, "acme");
    let body = r#"{"tenant":"initech","seller":"bill","device":"pc-1","role":"office"}"#;
    let (status, text) = fixture.call(acme_office, "POST", "/v1/tokens", body).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(assert_json_error(&text), "other_tenant");
    // The operator onboards new tenants.
    let (status, text) = fixture
        .call(Some(&fixture.operator), "POST", "/v1/tokens", body)
        .await;
    assert_eq!(status, 201, "{text}");
}

#[tokio::test]
async fn globex_office_revoking_an_acme_credential_answers_like_an_unknown_id() {
    let fixture = Fixture::start().await;
    let globex_office = fixture.token(Caller::Office, "globex");
    let (_, list) = fixture
        .call(
            fixture.token(Caller::Office, "acme"),
            "GET",
            "/v1/tokens",
            "",
        )
        .await;
    let acme_seller_id = credential_id(&list, "seller");
    let unknown_id = "0123456789abcdef";
    let (status, acme_answer) = fixture
        .call(
            globex_office,
            "POST",
            &format!("/v1/tokens/{acme_seller_id}/revoke"),
            "",
        )
        .await;
    assert_eq!(status, 404, "{acme_answer}");
    let (status, unknown_answer) = fixture
        .call(
            globex_office,
            "POST",
            &format!("/v1/tokens/{unknown_id}/revoke"),
            "",
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        acme_answer.replace(&acme_seller_id, "ID"),
        unknown_answer.replace(unknown_id, "ID"),
        "the same answer as for an id that does not exist"
    );
    // acme's seller still connects.
    let acme_seller = fixture.token(Caller::Seller, "acme");
    assert_eq!(fixture.upgrade_status(acme_seller).await, 101);
    // Nor can an office revoke the operator.
    let (_, all) = fixture
        .call(Some(&fixture.operator), "GET", "/v1/tokens", "")
        .await;
    let operator_id = credential_id(&all, "operator");
    let (status, _) = fixture
        .call(
            globex_office,
            "POST",
            &format!("/v1/tokens/{operator_id}/revoke"),
            "",
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn globex_reporting_reads_none_of_acmes_sync_log_on_any_page() {
    let fixture = Fixture::start().await;
    // More acme sessions than globex ones, so a filter applied after a
    // global page would come back short or empty.
    for _ in 0..5 {
        let status = fixture
            .upgrade_status(fixture.token(Caller::Seller, "acme"))
            .await;
        assert_eq!(status, 101);
    }
    // Their records are written as each connection task starts: wait for
    // all six acme sessions before reading globex's pages.
    let deadline = std::time::Instant::now() + crate::harness::wait_max();
    loop {
        let (_, all) = fixture
            .call(
                Some(&fixture.operator),
                "GET",
                "/v1/sync-sessions?limit=500",
                "",
            )
            .await;
        let acme = json(&all)["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter(|s| s["tenant"] == "acme")
            .count();
        if acme == 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acme sessions: {acme}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let globex_reporting = fixture.token(Caller::Reporting, "globex");
    let mut before: Option<u64> = None;
    let mut seen = 0;
    loop {
        let path = match before {
            Some(cursor) => format!("/v1/sync-sessions?limit=1&before={cursor}"),
            None => "/v1/sync-sessions?limit=1".to_string(),
        };
        let (status, page) = fixture.call(globex_reporting, "GET", &path, "").await;
        assert_eq!(status, 200, "{page}");
        assert!(!page.contains("acme"), "{page}");
        let page = json(&page);
        let sessions = page["sessions"].as_array().expect("sessions");
        assert!(sessions.len() <= 1);
        seen += sessions.len();
        match page["next_before"].as_u64() {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, 1, "globex's one session, on a page of its own");
}

#[tokio::test]
async fn globex_reporting_reads_only_globex_export_status() {
    let fixture = Fixture::start().await;
    let globex_reporting = fixture.token(Caller::Reporting, "globex");
    let (status, text) = fixture
        .call(globex_reporting, "GET", "/v1/export/status", "")
        .await;
    assert_eq!(status, 200, "{text}");
    let globex = json(&text);
    assert_eq!(globex["tenant"], "globex");
    assert_eq!(globex["pending_documents"], 2, "{globex}");
    assert!(globex.get("last_error").is_none(), "{globex}");
    let (_, text) = fixture
        .call(Some(&fixture.operator), "GET", "/v1/export/status", "")
        .await;
    let global = json(&text);
    assert!(global["tenant"].is_null(), "{global}");
    assert_eq!(global["pending_documents"], 4, "{global}");
}

#[tokio::test]
async fn an_unauthenticated_post_with_a_bad_body_gets_401_not_422() {
    let fixture = Fixture::start().await;
    for body in ["{not json", r#"{"tenant":"acme"}"#, "[]"] {
        let (status, text) = fixture.call(None, "POST", "/v1/tokens", body).await;
        assert_eq!(status, 401, "{body}: {text}");
        assert_eq!(assert_json_error(&text), "unauthorized");
    }
}

/// A request that must fail: credential, method, path, body, then the
/// expected status and error code.
type ErrorCase<'a> = (Option<&'a str>, &'a str, &'a str, String, u16, &'a str);

#[tokio::test]
async fn every_error_the_server_answers_is_json_with_a_code() {
    let fixture = Fixture::start().await;
    let office = fixture.token(Caller::Office, "acme");
    let cases: Vec<ErrorCase> = vec![
        (
            office,
            "POST",
            "/v1/tokens",
            "{not json".into(),
            400,
            "invalid_json",
        ),
        (
            office,
            "POST",
            "/v1/tokens",
            r#"{"tenant":"acme"}"#.into(),
            422,
            "invalid_json",
        ),
        (
            office,
            "POST",
            "/v1/tokens",
            r#"{"tenant":"acme","seller":"a b","device":"x","role":"seller"}"#.into(),
            400,
            "invalid_name",
        ),
        (
            office,
            "GET",
            "/v1/sync-sessions?limit=lots",
            String::new(),
            400,
            "invalid_query",
        ),
        (
            office,
            "GET",
            "/v1/no-such-route",
            String::new(),
            404,
            "not_found",
        ),
        (
            office,
            "DELETE",
            "/v1/tokens",
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            office,
            "GET",
            "/v1/documents/nope/violations",
            String::new(),
            400,
            "invalid_document_id",
        ),
        (
            office,
            "POST",
            "/v1/tokens/0123456789abcdef/revoke",
            String::new(),
            404,
            "no_credential",
        ),
        (
            None,
            "GET",
            "/v1/tokens",
            String::new(),
            401,
            "unauthorized",
        ),
        (office, "GET", "/", String::new(), 400, "bad_request"),
    ];
    for (token, method, path, body, status, code) in cases {
        let (got, text) = fixture.call(token, method, path, &body).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        assert_eq!(assert_json_error(&text), code, "{method} {path}");
    }
    // A body over axum's limit.
    let (status, text) = over_limit_post(fixture.server.addr(), office.expect("office")).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(assert_json_error(&text), "payload_too_large");
}

/// Axum's default body limit for JSON extractors, in bytes.
const AXUM_BODY_BYTES_MAX: usize = 2 << 20;

/// `POST /v1/tokens` with a JSON body a little over axum's limit.
async fn over_limit_post(addr: std::net::SocketAddr, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let body = format!(
        r#"{{"tenant":"acme","pad":"{}"}}"#,
        "x".repeat(AXUM_BODY_BYTES_MAX)
    );
    let request = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // The server may answer before reading the last bytes and close: the
    // write may fail, the answer is what counts.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(request.as_bytes()).await;
        writer
    });
    // Read up to the end of the JSON error, not EOF.
    let mut response = Vec::new();
    within("413 answer", async {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&response)
            .trim_end()
            .ends_with("}}")
        {
            let read = reader.read(&mut buffer).await.expect("read");
            assert!(read > 0, "closed before an answer: {response:?}");
            response.extend_from_slice(&buffer[..read]);
        }
    })
    .await;
    drop(within("request written", writing).await);
    status_and_body(&String::from_utf8_lossy(&response))
}

#[tokio::test]
async fn no_one_issues_an_operator_credential_over_http_and_the_operator_syncs_nothing() {
    let fixture = Fixture::start().await;
    for token in [
        Some(fixture.operator.as_str()),
        fixture.token(Caller::Office, "acme"),
    ] {
        let body = r#"{"tenant":"acme","seller":"eve","device":"pc-7","role":"operator"}"#;
        let (status, text) = fixture.call(token, "POST", "/v1/tokens", body).await;
        assert_eq!(status, 403, "{text}");
        assert_eq!(assert_json_error(&text), "operator_only_from_cli");
    }
    assert_eq!(fixture.upgrade_status(Some(&fixture.operator)).await, 403);
}
