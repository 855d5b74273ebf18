//! Real `@automerge/automerge-repo` 2.5.x clients (pinned in
//! `tests/js/package-lock.json`) against our server. `.ci/run` installs
//! them; without `tests/js/node_modules` these tests fail, they never skip.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

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
