//! Provisioning a tenant (issue 13): `ventas tenant init` on a stopped
//! data directory, then the real binary serves it and a device syncs a
//! sale with the token it printed; `POST /v1/tenants` by an office (its own
//! tenant only); a refused spec names the field and writes nothing; and a
//! seller added to a catalog by any means gets her ledger at once, not at
//! the keeper's next pass.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use automerge::Automerge;
use ventas::client::{Client, ClientConfig, DocHandle};
use ventas::domain::*;
use ventas::provision::TenantSpec;
use ventas::server::auth::Role;

use crate::harness::*;
use crate::office::{change_both, id};

fn example_spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tenant.example.toml")
}

/// `ventas tenant init` with a cleared environment; (exit ok, stdout,
/// stderr).
async fn tenant_init(data_dir: &Path, file: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = within(
        "ventas tenant init",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ventas"))
            .env_clear()
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .args(["tenant", "init", "--tenant", "acme", "--file"])
            .arg(file)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .output(),
    )
    .await
    .expect("ventas runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// A device client that presents `token` and joins as `device`.
fn client_with_token(url: &str, dir: &Path, device: &str, token: &str) -> Client {
    let mut config = ClientConfig::new(url, dir.join(device));
    config.peer_id = Some(device.to_string());
    config.token = Some(token.to_string());
    config.reconnect_initial_ms = 20;
    config.reconnect_max_ms = 200;
    Client::open(config).expect("client opens")
}

fn str_of<'a>(value: &'a serde_json::Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{pointer} in {value}"))
}

/// `wanted` of the entry of `list` in a provisioning's answer whose
/// `field` is `value`.
fn listed<'a>(
    provisioned: &'a serde_json::Value,
    list: &str,
    (field, value): (&str, &str),
    wanted: &str,
) -> &'a str {
    provisioned[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {provisioned}"))
        .iter()
        .find(|entry| entry[field] == value)
        .and_then(|entry| entry[wanted].as_str())
        .unwrap_or_else(|| panic!("no {wanted} for {field} {value} in {provisioned}"))
}

/// The URL of the document listed under `key` in a provisioning's answer.
fn url_of<'a>(provisioned: &'a serde_json::Value, key: &str) -> &'a str {
    listed(provisioned, "documents", ("key", key), "url")
}

fn token_of<'a>(provisioned: &'a serde_json::Value, device: &str) -> &'a str {
    listed(provisioned, "credentials", ("device", device), "token")
}

async fn open_when(
    client: &Client,
    url: &str,
    what: &str,
    ok: impl Fn(&Automerge) -> bool,
) -> DocHandle {
    let handle = client.open_url(url).expect("open");
    within(what, handle.wait_until(ok)).await.expect(what);
    handle
}

#[tokio::test]
async fn cli_init_then_serve_then_a_device_syncs_a_sale() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("server");
    let (ok, stdout, stderr) = tenant_init(&data_dir, &example_spec_path(), &["--json"]).await;
    assert!(ok, "tenant init failed: {stderr}");
    let provisioned: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let period = Period::of_ms(i64::try_from(ventas::now_ms()).expect("now"));

    // The same tenant again is refused, and says why.
    let (again, _, stderr) = tenant_init(&data_dir, &example_spec_path(), &[]).await;
    assert!(!again, "a second init of acme must fail");
    assert!(stderr.contains("already has a catalog"), "{stderr}");

    let server = ServerProcess::spawn(&data_dir, 0).await;
    let url = server.url();
    let tablet = client_with_token(
        &url,
        dir.path(),
        "tablet-7",
        token_of(&provisioned, "tablet-7"),
    );
    let catalog = open_when(
        &tablet,
        str_of(&provisioned, "/catalog_url"),
        "catalog",
        |doc| read_catalog(doc).products.len() == 2,
    )
    .await;
    let device = open_when(
        &tablet,
        url_of(&provisioned, "device/tablet-7"),
        "device",
        |doc| read_device(doc).is_ok(),
    )
    .await;
    let ledger_key = format!("ledger/ana/{period}");
    let ledger = open_when(
        &tablet,
        url_of(&provisioned, &ledger_key),
        "ledger",
        |doc| read_ledger(doc, None).meta.is_some(),
    )
    .await;
    let soap = id(ProductId::new, "soap");
    let stock_key = format!("stock/van-ana/{period}");
    let stock = open_when(&tablet, url_of(&provisioned, &stock_key), "stock", |doc| {
        stock_level(doc, &ProductId::new("soap").expect("id")).ok() == Some(40)
    })
    .await;

    let view = catalog.read(read_catalog).expect("read");
    assert_eq!(
        view.find_doc(&DocKey::ledger(&id(SellerId::new, "ana"), period)),
        Some(url_of(&provisioned, &ledger_key)),
        "the catalog lists the seller's ledger"
    );
    let input = SaleInput {
        customer: id(CustomerId::new, "shop-9"),
        location: id(LocationId::new, "van-ana"),
        at_ms: i64::try_from(ventas::now_ms()).expect("now"),
        lines: vec![SaleLineInput {
            product: soap.clone(),
            quantity: 3,
        }],
    };
    let sale = change_both(&device, &ledger, |device, ledger| {
        record_sale(device, ledger, &view, &input).expect("sale")
    });
    stock
        .change(|doc| apply_sale_to_stock(doc, &sale))
        .expect("change")
        .expect("stock moved");
    assert_eq!(sale.total_cents, 750);
    assert_eq!(sale.receipt, "K7-1");
    for handle in [&device, &ledger, &stock] {
        within("the sale is saved on the server", handle.synced())
            .await
            .expect("synced");
    }
    tablet.close().await.expect("close");

    // The office sees it on the server with the office token it was given.
    let office = client_with_token(
        &url,
        dir.path(),
        "office-pc",
        token_of(&provisioned, "office-pc"),
    );
    let sale_id = sale.id.to_string();
    open_when(
        &office,
        url_of(&provisioned, &ledger_key),
        "the sale at the office",
        |doc| {
            read_ledger(doc, None)
                .sales
                .iter()
                .any(|(id, _)| id.to_string() == sale_id)
        },
    )
    .await;
    open_when(
        &office,
        url_of(&provisioned, &stock_key),
        "the stock at the office",
        |doc| stock_level(doc, &ProductId::new("soap").expect("id")).ok() == Some(37),
    )
    .await;
    office.close().await.expect("close");
    server.kill().await;
}

#[tokio::test]
async fn cli_init_names_the_bad_field_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("server");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example_spec_path())
        .expect("example")
        .replace("unit_price_cents = 1199", "unit_price_cents = -5");
    std::fs::write(&bad, text).expect("write");
    let (ok, _, stderr) = tenant_init(&data_dir, &bad, &[]).await;
    assert!(!ok, "a negative price must be refused");
    assert!(stderr.contains("products[1].unit_price_cents"), "{stderr}");
    assert!(!data_dir.exists(), "nothing written for a refused spec");
    // The good file then works on the same (absent) directory.
    let (ok, stdout, stderr) = tenant_init(&data_dir, &example_spec_path(), &[]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("token\tseller\tana\ttablet-7\tventas_"),
        "{stdout}"
    );
}

/// Starts a server whose keeper passes every hour only, with an office of
/// acme and an operator issued.
async fn server_with_office() -> (TestServer, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = issue_credentials(
        dir.path(),
        &[
            ("acme", "olga", "pc-1", Role::Office, None),
            ("operators", "opal", "ops-1", Role::Operator, None),
            ("acme", "sam", "tab-9", Role::Seller, None),
        ],
    );
    let server = TestServer::start_in(dir, |config| {
        config.period_check_interval_ms = 3_600_000;
    })
    .await;
    (server, tokens[0].clone(), tokens[1].clone())
}

async fn post_tenant(server: &TestServer, token: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let (status, text) = http_request(
        server.addr(),
        "POST",
        "/v1/tenants",
        &[("Authorization", &auth)],
        body,
    )
    .await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

fn example_json(tenant: &str) -> String {
    let table: toml::Table =
        toml::from_str(&std::fs::read_to_string(example_spec_path()).expect("example"))
            .expect("toml");
    let mut value = serde_json::to_value(table).expect("json");
    value["tenant"] = tenant.into();
    value.to_string()
}

#[tokio::test]
async fn an_office_provisions_its_own_tenant_over_http_and_no_other() {
    let (server, office, operator) = server_with_office().await;
    let (status, answer) = post_tenant(&server, &office, &example_json("globex")).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "other_tenant");

    let (status, provisioned) = post_tenant(&server, &office, &example_json("acme")).await;
    assert_eq!(status, 201, "{provisioned}");
    assert!(str_of(&provisioned, "/catalog_url").starts_with("automerge:"));
    let period = Period::of_ms(i64::try_from(ventas::now_ms()).expect("now"));
    url_of(&provisioned, &format!("ledger/ana/{period}"));
    assert!(token_of(&provisioned, "tablet-7").starts_with("ventas_"));

    let (status, answer) = post_tenant(&server, &office, &example_json("acme")).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "tenant_exists");

    // The operator provisions any tenant.
    let (status, answer) = post_tenant(&server, &operator, &example_json("globex")).await;
    assert_eq!(status, 201, "{answer}");

    // The device credential it issued syncs the tenant's documents.
    let dir = tempfile::tempdir().expect("dir");
    let tablet = client_with_token(
        &server.url(),
        dir.path(),
        "tablet-7",
        token_of(&provisioned, "tablet-7"),
    );
    open_when(
        &tablet,
        str_of(&provisioned, "/catalog_url"),
        "catalog",
        |doc| read_catalog(doc).devices.len() == 1,
    )
    .await;
    tablet.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

/// Every credential the server holds, as the operator lists them.
async fn token_list(server: &TestServer, operator: &str) -> serde_json::Value {
    let auth = format!("Bearer {operator}");
    let (status, list) = http_request(
        server.addr(),
        "GET",
        "/v1/tokens",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{list}");
    serde_json::from_str(&list).expect("json")
}

#[tokio::test]
async fn a_refused_spec_names_the_field_and_writes_nothing() {
    let (server, office, operator) = server_with_office().await;
    let tokens_before = token_list(&server, &operator).await;
    let mut bad: serde_json::Value = serde_json::from_str(&example_json("acme")).expect("json");
    bad["devices"][0]["seller"] = "nobody".into();
    let (status, answer) = post_tenant(&server, &office, &bad.to_string()).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_spec");
    assert!(
        str_of(&answer, "/error/message").contains("devices[0].seller"),
        "{answer}"
    );
    let mut bad: serde_json::Value = serde_json::from_str(&example_json("acme")).expect("json");
    bad["token_expires"] = "soon".into();
    let (status, answer) = post_tenant(&server, &office, &bad.to_string()).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        str_of(&answer, "/error/message").contains("token_expires"),
        "{answer}"
    );
    let (status, answer) = post_tenant(&server, &office, "{\"tenant\": ").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json");

    // Nothing was written: no credential, and acme has no catalog yet.
    let tokens_after = token_list(&server, &operator).await;
    assert_eq!(tokens_before, tokens_after);
    let (status, answer) = post_tenant(&server, &office, &example_json("acme")).await;
    assert_eq!(status, 201, "{answer}");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_new_seller_gets_her_ledger_long_before_the_next_keeper_pass() {
    let (server, _, _) = server_with_office().await;
    let spec =
        TenantSpec::from_toml(&std::fs::read_to_string(example_spec_path()).expect("example"))
            .expect("spec");
    let provisioned = within("provisioning", server.running.provision(spec))
        .await
        .expect("provisioned");
    let passes_before = *server.running.keeper_passes().borrow();
    let dir = tempfile::tempdir().expect("dir");
    let office = client_with_token(
        &server.url(),
        dir.path(),
        "office-pc",
        provisioned.token_of("office-pc").expect("office token"),
    );
    let catalog = open_when(&office, &provisioned.catalog_url, "catalog", |doc| {
        read_catalog(doc).sellers.len() == 1
    })
    .await;
    // Added the way an office app adds her: a change to the catalog.
    let bea = id(SellerId::new, "bea");
    catalog
        .change(|doc| {
            put_seller(
                doc,
                &Seller {
                    id: bea.clone(),
                    name: "Bea".into(),
                },
            )
        })
        .expect("change")
        .expect("seller");
    let period = Period::of_ms(i64::try_from(ventas::now_ms()).expect("now"));
    let key = DocKey::ledger(&bea, period);
    let started = std::time::Instant::now();
    within(
        "bea's ledger listed",
        catalog.wait_until(|doc| read_catalog(doc).find_doc(&key).is_some()),
    )
    .await
    .expect("listed");
    let took = started.elapsed();
    let url = catalog
        .read(|doc| read_catalog(doc).find_doc(&key).map(str::to_string))
        .expect("read")
        .expect("listed");
    let ledger = open_when(&office, &url, "bea's ledger", |doc| {
        read_ledger(doc, None)
            .meta
            .is_some_and(|meta| meta.owner == "bea")
    })
    .await;
    drop(ledger);
    // The keeper passes every hour: no pass ran in between.
    assert_eq!(
        *server.running.keeper_passes().borrow(),
        passes_before,
        "took {took:?}"
    );
    office.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}
