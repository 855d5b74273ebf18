//! The path of a change: device -> WebSocket -> server -> sled -> devices.

use automerge::ReadDoc;
use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn a_change_on_one_device_appears_live_on_another() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let PhoneAndTablet {
        phone,
        tablet,
        on_phone,
        on_tablet,
    } = PhoneAndTablet::start(&server.url(), dir.path(), "first").await;
    assert_eq!(root_keys(&on_tablet), vec!["first".to_string()]);

    // Live: the tablet has it open, the phone changes it again.
    let mut changes = on_tablet.subscribe();
    put(&on_phone, "second", "2");
    within("live change", changes.next())
        .await
        .expect("change event");
    wait_for_keys(&on_tablet, &["second".to_string()]).await;
    phone.close().await.expect("close");
    tablet.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_device_offline_for_many_changes_merges_on_reconnect() {
    let port = ReservedPort::new();
    let url = port.url();
    let dir = tempfile::tempdir().expect("dir");
    // The device starts with no server at all.
    let phone = device(&url, dir.path(), "phone");
    let doc = phone.create().expect("create");
    let offline_changes = 300;
    for i in 0..offline_changes {
        put(&doc, &format!("sale-{i}"), "offline");
    }
    assert!(!phone.is_online());

    let config = ventas::config::ServerConfig::for_test(dir.path().join("server"));
    let server = port.start(config).await;
    within("offline changes durable on server", doc.synced())
        .await
        .expect("synced");

    // A second device sees every one of them.
    let tablet = device(&url, dir.path(), "tablet");
    let on_tablet = tablet.open_url(&doc.url()).expect("open");
    let wanted: Vec<String> = (0..offline_changes).map(|i| format!("sale-{i}")).collect();
    wait_for_keys(&on_tablet, &wanted).await;
    assert_eq!(root_keys(&on_tablet).len(), offline_changes);
    phone.close().await.expect("close");
    tablet.close().await.expect("close");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn three_devices_editing_one_document_concurrently_converge() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let devices: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| device(&server.url(), dir.path(), name))
        .collect();
    let first = devices[0].create().expect("create");
    put(&first, "created-by", "a");
    within("created", first.synced()).await.expect("synced");
    let handles: Vec<_> = devices
        .iter()
        .map(|d| d.open_url(&first.url()).expect("open"))
        .collect();
    for handle in &handles {
        within("ready", handle.ready()).await.expect("ready");
    }
    let per_device = 40;
    let writers = handles.iter().enumerate().map(|(i, handle)| {
        let handle = handle.clone();
        tokio::spawn(async move {
            for n in 0..per_device {
                put(&handle, &format!("d{i}-{n}"), "x");
                // Also edit one shared key concurrently: a conflict that
                // automerge resolves the same way on every replica.
                put(&handle, "shared", &format!("d{i}-{n}"));
                tokio::task::yield_now().await;
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.expect("writer");
    }
    let mut wanted: Vec<String> = (0..3)
        .flat_map(|i| (0..per_device).map(move |n| format!("d{i}-{n}")))
        .collect();
    wanted.push("created-by".to_string());
    for handle in &handles {
        wait_for_keys(handle, &wanted).await;
        within("synced", handle.synced()).await.expect("synced");
    }
    // Same heads and same winner of the shared key everywhere. `synced()`
    // says the server holds this device's changes; another device's last
    // `shared` edit may still be on its way here, so wait for the heads to
    // meet (a replica that never converges fails the wait).
    let heads_now = || -> Vec<_> {
        handles
            .iter()
            .map(|h| h.read(|d| d.get_heads()).expect("read"))
            .collect()
    };
    within("the replicas' heads to meet", async {
        while !heads_now().windows(2).all(|w| w[0] == w[1]) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let heads = heads_now();
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "heads differ: {heads:?}"
    );
    let shared: Vec<String> = handles
        .iter()
        .map(|h| {
            h.read(|d| {
                d.get(automerge::ROOT, "shared")
                    .ok()
                    .flatten()
                    .map(|(v, _)| v.to_string())
            })
            .expect("read")
            .unwrap_or_default()
        })
        .collect();
    assert!(
        shared.windows(2).all(|w| w[0] == w[1]),
        "shared differs: {shared:?}"
    );
    for d in devices {
        d.close().await.expect("close");
    }
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_server_killed_and_restarted_keeps_every_acknowledged_change() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("server");
    let server = ServerProcess::spawn(&data, 0).await;
    let port = server.addr.port();
    let phone = device(&server.url(), dir.path(), "phone");
    let doc = phone.create().expect("create");
    let acknowledged = 50;
    for i in 0..acknowledged {
        put(&doc, &format!("sale-{i}"), "acked");
        within("ack", doc.synced()).await.expect("synced");
    }
    // Unacknowledged changes race with the kill; they may or may not
    // survive the kill, but must arrive after the restart from the device.
    for i in 0..20 {
        put(&doc, &format!("late-{i}"), "maybe");
    }
    server.kill().await;
    let url = doc.url();
    // Handles keep the device store open; drop them with the client.
    drop(doc);
    phone.close().await.expect("close");

    // A fresh device (no local copy) sees every acknowledged change.
    let server = ServerProcess::spawn(&data, port).await;
    let tablet = device(&server.url(), dir.path(), "tablet");
    let on_tablet = tablet.open_url(&url).expect("open");
    let wanted: Vec<String> = (0..acknowledged).map(|i| format!("sale-{i}")).collect();
    wait_for_keys(&on_tablet, &wanted).await;

    // The phone comes back and its late changes reach the server.
    let phone = device(&server.url(), dir.path(), "phone");
    let doc_again = phone.open_url(&url).expect("reopen");
    within("late changes synced", doc_again.synced())
        .await
        .expect("synced");
    let late: Vec<String> = (0..20).map(|i| format!("late-{i}")).collect();
    wait_for_keys(&on_tablet, &late).await;
    phone.close().await.expect("close");
    tablet.close().await.expect("close");
    server.kill().await;
}

#[tokio::test]
async fn a_malformed_frame_disconnects_only_its_sender() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let phone = device(&server.url(), dir.path(), "phone");
    let tablet = device(&server.url(), dir.path(), "tablet");
    let doc = phone.create().expect("create");
    put(&doc, "before", "1");
    within("synced", doc.synced()).await.expect("synced");
    let on_tablet = tablet.open_url(&doc.url()).expect("open");
    within("ready", on_tablet.ready()).await.expect("ready");

    let (mut vandal, _) = RawPeer::joined(&server.url(), "vandal").await;
    vandal.send_raw(vec![0xff, 0x00, 0x13, 0x37]).await;
    let error = vandal.expect_error_and_close().await;
    assert!(error.contains("malformed"), "error was: {error}");

    put(&doc, "after", "2");
    wait_for_keys(&on_tablet, &["after".to_string()]).await;
    assert!(phone.is_online() && tablet.is_online());
    phone.close().await.expect("close");
    tablet.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn unknown_documents_are_unavailable_and_never_announced() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let phone = device(&server.url(), dir.path(), "phone");
    let doc = phone.create().expect("create");
    put(&doc, "secret", "1");
    within("synced", doc.synced()).await.expect("synced");

    let (mut peer, server_id) = RawPeer::joined(&server.url(), "curious").await;
    let unknown = ventas_sync_protocol::ids::DocumentId::from_bytes([9; 16]);
    let request = peer.request(&server_id, unknown);
    peer.send(&request).await;
    match peer.recv().await {
        Some(ventas_sync_protocol::wire::Message::DocUnavailable { document_id, .. }) => {
            assert_eq!(document_id, unknown)
        }
        other => panic!("expected doc-unavailable, got {other:?}"),
    }
    // The phone keeps changing its document: nothing of it reaches a peer
    // that never asked for it.
    put(&doc, "more", "2");
    within("synced", doc.synced()).await.expect("synced");
    // The change was acknowledged, so anything the server would announce
    // to this peer is queued before the answer to a later request.
    let barrier = peer.barrier(&server_id).await;
    assert!(!barrier.closed, "the curious peer was dropped");
    assert!(
        barrier.before.is_empty(),
        "server announced something: {:?}",
        barrier.before
    );
    phone.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn every_session_is_in_the_sync_log_newest_first() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    for name in ["first", "second", "third"] {
        let client = device(&server.url(), dir.path(), name);
        let doc = client.create().expect("create");
        put(&doc, "k", name);
        within("synced", doc.synced()).await.expect("synced");
        client.close().await.expect("close");
    }
    // Sessions are written when their task ends; give the server a moment.
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let (status, body) = http_get(server.addr(), "/v1/sync-sessions?limit=2").await;
        assert_eq!(status, 200, "body: {body}");
        let page: Value = serde_json::from_str(&body).expect("json");
        sessions = page["sessions"].as_array().cloned().unwrap_or_default();
        let complete = sessions.iter().all(|s| !s["disconnected_at_ms"].is_null());
        if complete && sessions.first().is_some_and(|s| s["peer_id"] == "third") {
            let before = page["next_before"].as_u64().expect("a next page");
            let (_, older) = http_get(
                server.addr(),
                &format!("/v1/sync-sessions?limit=2&before={before}"),
            )
            .await;
            let older: Value = serde_json::from_str(&older).expect("json");
            assert_eq!(older["sessions"][0]["peer_id"], "first");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["peer_id"], "third");
    assert_eq!(sessions[1]["peer_id"], "second");
    let third = &sessions[0];
    assert_eq!(third["documents"].as_array().map(Vec::len), Some(1));
    assert!(third["changes_in"].as_u64() >= Some(1));
    assert!(third["bytes_in"].as_u64() > Some(0));
    assert!(third["bytes_out"].as_u64() > Some(0));
    assert!(third["remote_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn graceful_shutdown_closes_peers_and_keeps_data() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("server");
    let config = ventas::config::ServerConfig::for_test(data.clone());
    let port = ReservedPort::new();
    let server = port.start(config.clone()).await;
    let phone = device(&port.url(), dir.path(), "phone");
    let doc = phone.create().expect("create");
    put(&doc, "kept", "1");
    within("synced", doc.synced()).await.expect("synced");
    within("shutdown", server.shutdown())
        .await
        .expect("clean shutdown");
    within("phone notices", async {
        while phone.is_online() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let server = port.start(config).await;
    let tablet = device(&port.url(), dir.path(), "tablet");
    let on_tablet = tablet.open_url(&doc.url()).expect("open");
    wait_for_keys(&on_tablet, &["kept".to_string()]).await;
    phone.close().await.expect("close");
    tablet.close().await.expect("close");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn many_sequential_live_changes_all_arrive() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let a = device(&server.url(), dir.path(), "a");
    let b = device(&server.url(), dir.path(), "b");
    let on_a = a.create().expect("create");
    put(&on_a, "start", "1");
    within("synced", on_a.synced()).await.expect("synced");
    let on_b = b.open_url(&on_a.url()).expect("open");
    within("ready", on_b.ready()).await.expect("ready");
    for i in 0..200 {
        let key = format!("k{i}");
        put(&on_a, &key, "v");
        within(
            &format!("change {i} to arrive"),
            on_b.wait_until(|d| {
                automerge::ReadDoc::get(d, automerge::ROOT, key.as_str())
                    .ok()
                    .flatten()
                    .is_some()
            }),
        )
        .await
        .expect("arrives");
    }
    drop((on_a, on_b));
    a.close().await.expect("close");
    b.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_each_writing_their_own_document_are_all_acknowledged() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let clients: Vec<_> = (0..10)
        .map(|n| device(&server.url(), dir.path(), &format!("writer-{n}")))
        .collect();
    let handles: Vec<_> = clients
        .iter()
        .map(|c| c.create().expect("create"))
        .collect();
    for (n, h) in handles.iter().enumerate() {
        put(h, "start", "1");
        within(&format!("device {n} acknowledged"), h.synced())
            .await
            .expect("synced");
    }
    let tasks: Vec<_> = handles
        .iter()
        .cloned()
        .map(|h| {
            tokio::spawn(async move {
                for i in 0..100 {
                    put(&h, &format!("sale-{i}"), "x");
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                if tokio::time::timeout(wait_max(), h.synced()).await.is_err() {
                    let ours = h.read(|d| d.get_heads()).expect("read");
                    panic!(
                        "not acknowledged: ours {ours:?} server {:?}",
                        h.server_heads()
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    drop(handles);
    for c in clients {
        c.close().await.expect("close");
    }
    server.running.shutdown().await.expect("shutdown");
}
