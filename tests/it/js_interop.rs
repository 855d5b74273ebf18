//! Real `@automerge/automerge-repo` 2.5.x clients (pinned in
//! `tests/js/package-lock.json`) against our server. `.ci/run` installs
//! them; without `tests/js/node_modules` these tests fail, they never skip.
//! With credentials, a JS client whose write is refused keeps working and
//! the server does not argue with it.

use std::process::Stdio;

use automerge::{ReadDoc, ROOT};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use ventas::domain::{create_catalog_doc, create_ledger_doc, Period, SellerId, TenantId};
use ventas::server::auth::Role;

/// How long `denied.mjs` watches the traffic after its refused change.
const WATCH_MS: u64 = 3_000;
/// Frames about the refused document, each way, over [`WATCH_MS`]: the
/// first exchange, the refusal, the office's update and its answers.
const REFUSED_DOC_FRAMES_MAX: u64 = 12;

use crate::authorization::{client, created, ended_session, server_copy};
use crate::harness::*;

fn require_node_modules() {
    assert!(
        js_dir()
            .join("node_modules/@automerge/automerge-repo")
            .exists(),
        "JS deps missing: run `npm install --no-audit --no-fund` in tests/js (.ci/run does)"
    );
}

#[tokio::test]
async fn a_js_client_creates_a_document_and_another_js_client_finds_it() {
    require_node_modules();
    let server = TestServer::start().await;
    let url = server.url();
    let created = node("create.mjs", &[&url, r#"{"items":["from-js"],"n":1}"#]).await;
    let doc_url = created["url"].as_str().expect("url").to_string();
    let found = node("find.mjs", &[&url, &doc_url]).await;
    assert_eq!(
        found["doc"],
        serde_json::json!({"items": ["from-js"], "n": 1})
    );
    assert_eq!(found["heads"], created["heads"]);

    // A Rust device sees the same document.
    let dir = tempfile::tempdir().expect("dir");
    let phone = device(&url, dir.path(), "phone");
    let handle = phone.open_url(&doc_url).expect("open");
    within("ready", handle.ready()).await.expect("available");
    let heads: Vec<String> = handle
        .read(|d| d.get_heads().iter().map(|h| h.to_string()).collect())
        .expect("read");
    assert_eq!(serde_json::json!(heads), created["heads"]);
    phone.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_rust_client_and_a_js_client_editing_one_document_converge() {
    require_node_modules();
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let phone = device(&url, dir.path(), "phone");
    let doc = phone.create().expect("create");
    put(&doc, "rust", "1");
    within("synced", doc.synced()).await.expect("synced");

    // JS edits, then waits for the Rust edit that answers it.
    let js = tokio::spawn({
        let url = url.clone();
        let doc_url = doc.url();
        async move {
            node(
                "edit.mjs",
                &[&url, &doc_url, "js", r#""yes""#, r#"{"rust-reply":"2"}"#],
            )
            .await
        }
    });
    wait_for_keys(&doc, &["js".to_string()]).await;
    put(&doc, "rust-reply", "2");
    let js = within("js edit", js).await.expect("js task");
    within("synced", doc.synced()).await.expect("synced");
    let rust_heads: Vec<String> = doc
        .read(|d| d.get_heads().iter().map(|h| h.to_string()).collect())
        .expect("read");
    assert_eq!(
        serde_json::json!(rust_heads),
        js["heads"],
        "replicas diverged"
    );
    assert_eq!(js["doc"]["rust"], "1");
    assert_eq!(js["doc"]["js"], "yes");
    assert_eq!(js["doc"]["rust-reply"], "2");
    phone.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_js_client_with_the_document_open_sees_a_rust_change_live() {
    require_node_modules();
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let phone = device(&url, dir.path(), "phone");
    let doc = phone.create().expect("create");
    put(&doc, "opened", "yes");
    within("synced", doc.synced()).await.expect("synced");

    let mut live = tokio::process::Command::new("node")
        .arg(js_dir().join("live.mjs"))
        .args([url.as_str(), doc.url().as_str(), r#"{"pushed":"now"}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(live.stdout.take().expect("stdout")).lines();
    let opened = within("js opened", lines.next_line())
        .await
        .expect("read")
        .expect("line 1");
    assert!(opened.contains(r#""opened":true"#), "line 1: {opened}");
    put(&doc, "pushed", "now");
    let seen = within("js saw the change", lines.next_line())
        .await
        .expect("read")
        .expect("line 2");
    let seen: Value = serde_json::from_str(&seen).expect("json");
    assert_eq!(seen["doc"]["pushed"], "now", "{seen}");
    assert!(within("live exits", live.wait())
        .await
        .expect("wait")
        .success());
    phone.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_js_client_finding_an_unknown_document_is_told_it_is_unavailable() {
    require_node_modules();
    let server = TestServer::start().await;
    let unknown = ventas_sync_protocol::ids::DocumentId::from_bytes([7; 16]).to_url();
    let found = node("find.mjs", &[&server.url(), &unknown]).await;
    assert_eq!(found["unavailable"], true, "{found}");
    server.running.shutdown().await.expect("shutdown");
}

/// Frames of one direction (`out` or `in`) about one document, by type, as
/// counted by `denied.mjs`.
fn frames(report: &Value, direction: &str, document: &str) -> u64 {
    report["frames"][direction][document]
        .as_object()
        .map(|by_type| by_type.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_js_client_whose_write_is_refused_keeps_syncing_and_nobody_loops() {
    require_node_modules();
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = issue_credentials(
        dir.path(),
        &[
            ("acme", "boss", "office-1", Role::Office, None),
            ("acme", "ana", "tab-ana", Role::Seller, None),
        ],
    );
    let server = TestServer::start_in(dir, |_| {}).await;
    let devices = tempfile::tempdir().expect("dir");
    let office = client(&server.url(), devices.path(), "office-1", &tokens[0]);
    let tenant = TenantId::new("acme").expect("id");
    let catalog = created(&office, create_catalog_doc(&tenant).expect("doc")).await;
    let ana = SellerId::new("ana").expect("id");
    let period = Period::parse("2026-11").expect("period");
    let ledger = created(
        &office,
        create_ledger_doc(&tenant, &ana, period).expect("doc"),
    )
    .await;

    // Ana's JS device may read the catalog, not write it; it writes her
    // ledger.
    let url = format!("{}/?token={}", server.url(), tokens[1]);
    let mut js = tokio::process::Command::new("node")
        .arg(js_dir().join("denied.mjs"))
        .args([
            url.as_str(),
            "tab-ana/js",
            catalog.url().as_str(),
            ledger.url().as_str(),
            r#"{"office-note":"3"}"#,
            &format!("--watch-ms={WATCH_MS}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(js.stdout.take().expect("stdout")).lines();
    let changed = within("js changed the catalog", lines.next_line())
        .await
        .expect("read")
        .expect("line 1");
    assert!(changed.contains(r#""changed":true"#), "line 1: {changed}");
    // The office changes the catalog meanwhile, a few times (each one
    // acknowledged, so each reaches the JS client as its own update): the
    // JS client must see them, without re-sending its refused change each
    // time. The JS side waits for the last one, however long it takes.
    for note in ["1", "2", "3"] {
        put(&catalog, "office-note", note);
        within("synced", catalog.synced()).await.expect("synced");
    }
    let report = within("js report", lines.next_line())
        .await
        .expect("read")
        .expect("line 2");
    let report: Value = serde_json::from_str(&report).expect("json");
    assert!(within("js exits", js.wait()).await.expect("wait").success());
    eprintln!("denied.mjs: {report}");

    // The client is told once, keeps its own change locally, still hears
    // the office, and its other document syncs.
    let errors = report["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{report}");
    assert!(
        errors[0]
            .as_str()
            .unwrap_or_default()
            .contains("may only read"),
        "{report}"
    );
    assert_eq!(report["readonly"]["ready"], true, "{report}");
    assert_eq!(report["readonly"]["doc"]["office-note"], "3", "{report}");
    assert_eq!(report["readonly"]["doc"]["js-forged"], true, "{report}");
    assert_eq!(report["writable"]["acked"], true, "{report}");

    // Nobody loops: over the whole watch, a handful of frames each way
    // about the refused document.
    let catalog_id = catalog.document_id().to_string();
    let (out, heard) = (
        frames(&report, "out", &catalog_id),
        frames(&report, "in", &catalog_id),
    );
    // (Node's timers may fire a millisecond early.)
    assert!(
        report["watchMs"].as_u64().unwrap_or(0) + 10 >= WATCH_MS,
        "{report}"
    );
    assert!(out <= REFUSED_DOC_FRAMES_MAX, "client sent {out}: {report}");
    assert!(
        heard <= REFUSED_DOC_FRAMES_MAX,
        "server sent {heard}: {report}"
    );

    // The server's catalog is the office's; ana's ledger has her change;
    // the refusal is in the sync log.
    let heads = catalog.read(|d| d.get_heads()).expect("read");
    let copy = server_copy(server.addr(), &tokens[0], catalog.document_id(), heads).await;
    assert!(copy.get(ROOT, "js-forged").expect("read").is_none());
    assert!(copy.get(ROOT, "office-note").expect("read").is_some());
    within(
        "ana's JS change reaches the office",
        ledger.wait_until(|doc| doc.get(ROOT, "js-wrote").ok().flatten().is_some()),
    )
    .await
    .expect("alive");
    let session = ended_session(server.addr(), &tokens[0], "acme/ana/tab-ana").await;
    assert_eq!(session["writes_denied"], 1, "{session}");
    assert!(
        session["denials"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with(&catalog_id),
        "{session}"
    );
    drop((catalog, ledger));
    office.close().await.expect("close");
}
