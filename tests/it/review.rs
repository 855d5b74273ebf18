//! The server reads business documents after their changes are durable:
//! oversells become alert records pushed to devices, broken rules become a
//! report at `GET /v1/documents/{id}/violations`.

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};
use serde_json::Value;
use ventas::domain::{
    create_ledger_doc, create_stock_doc, move_stock, read_stock, AlertStatus, LocationId, Movement,
    MovementKind, Period, ProductId, SellerId, TenantId,
};

use crate::harness::*;

/// `office` creates the November 2026 ledger of acme's seller ana.
fn ana_ledger(office: &ventas::client::Client) -> ventas::client::DocHandle {
    let tenant = TenantId::new("acme").expect("id");
    let seller = SellerId::new("ana").expect("id");
    let period = Period::parse("2026-11").expect("period");
    office
        .create_with(create_ledger_doc(&tenant, &seller, period).expect("ledger"))
        .expect("import")
}

/// Writes the sale `rogue:0000000001`, holding only a negative total,
/// straight into `ledger`'s `sales` map (no record_sale, no checks).
fn put_rogue_sale(ledger: &ventas::client::DocHandle) {
    ledger
        .change(|doc| {
            let Some((_, sales)) = doc.get(ROOT, "sales").expect("read") else {
                panic!("ledger has a sales map");
            };
            let mut tx = doc.transaction();
            let sale = tx
                .put_object(&sales, "rogue:0000000001", automerge::ObjType::Map)
                .expect("put");
            tx.put(&sale, "total_cents", -5_i64).expect("put");
            tx.commit();
        })
        .expect("change");
}

fn sale_movement(
    id: &str,
    device: &str,
    product: &ProductId,
    quantity: i64,
    at_ms: i64,
) -> Movement {
    Movement {
        id: id.to_string(),
        kind: MovementKind::Sale,
        product: product.clone(),
        delta: -quantity,
        record: id.to_string(),
        author: device.to_string(),
        at_ms,
    }
}

#[tokio::test]
async fn concurrent_offline_sales_that_oversell_are_reported_once_to_every_device() {
    let port = ReservedPort::new();
    let url = port.url();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = TenantId::new("acme").expect("id");
    let van = LocationId::new("van-ana").expect("id");
    let soap = ProductId::new("soap").expect("id");
    let period = Period::parse("2026-11").expect("period");
    let at_ms = period.start_ms() + 60_000;

    // The office creates the van's stock document and loads 5 units.
    let config = ventas::config::ServerConfig::for_test(dir.path().join("server"));
    let server = port.start(config.clone()).await;
    let office = device(&url, dir.path(), "office");
    let stock = office
        .create_with(
            create_stock_doc(&tenant, &van, period, std::slice::from_ref(&soap))
                .expect("stock doc"),
        )
        .expect("import");
    stock
        .change(|doc| {
            let load = Movement {
                id: "load-1".into(),
                kind: MovementKind::Load,
                product: soap.clone(),
                delta: 5,
                record: "load-1".into(),
                author: "office".into(),
                at_ms,
            };
            move_stock(doc, &[load]).expect("load")
        })
        .expect("change");
    within("stock saved", stock.synced()).await.expect("synced");

    // Two devices take the document, then go offline (server stopped) and
    // each sells 3 of the 5 units.
    let phone = device(&url, dir.path(), "phone");
    let tablet = device(&url, dir.path(), "tablet");
    let on_phone = phone.open_url(&stock.url()).expect("open");
    let on_tablet = tablet.open_url(&stock.url()).expect("open");
    within("phone ready", on_phone.ready())
        .await
        .expect("ready");
    within("tablet ready", on_tablet.ready())
        .await
        .expect("ready");
    server.shutdown().await.expect("shutdown");
    on_phone
        .change(|doc| {
            move_stock(
                doc,
                &[sale_movement("phone:1", "phone", &soap, 3, at_ms + 1)],
            )
            .expect("sale")
        })
        .expect("change");
    on_tablet
        .change(|doc| {
            move_stock(
                doc,
                &[sale_movement("tablet:1", "tablet", &soap, 3, at_ms + 2)],
            )
            .expect("sale")
        })
        .expect("change");

    // Back online: both sales merge, the level is -1, and the server records
    // one open alert naming both sales, which reaches both devices.
    let server = port.start(config.clone()).await;
    for handle in [&on_phone, &on_tablet] {
        within(
            "the alert to reach the device",
            handle.wait_until(|doc| {
                let view = read_stock(doc);
                view.levels.get(&soap) == Some(&-1)
                    && view.alerts.values().any(|a| a.status == AlertStatus::Open)
            }),
        )
        .await
        .expect("alive");
    }
    let view = on_phone.read(read_stock).expect("read");
    let open: Vec<_> = view
        .alerts
        .values()
        .filter(|a| a.status == AlertStatus::Open)
        .collect();
    assert_eq!(open.len(), 1, "exactly one open alert: {:?}", view.alerts);
    assert_eq!(open[0].alert.level, -1);
    // The domain names the movements since the level was last
    // non-negative, in time order: the phone's sale left 2, the tablet's
    // crossed zero.
    assert_eq!(open[0].alert.records, vec!["tablet:1".to_string()]);
    assert_eq!(open[0].alert.authors, vec!["tablet".to_string()]);

    // Reviewing again records nothing new. The alert's own change is
    // reviewed once more (after REVIEW_INTERVAL_MS): wait for a reviewer
    // pass that found every change reviewed, counted after the alert
    // reached the phone, so it comes after that second review (and after
    // any alert it would have written had become durable and been sent).
    let heads = on_phone.read(|d| d.get_heads()).expect("read");
    let mut passes = server.review_passes();
    let seen = *passes.borrow_and_update();
    within(
        "a reviewer pass after the alert",
        passes.wait_for(|passes| *passes > seen),
    )
    .await
    .expect("the server is running");
    within("synced", on_phone.synced()).await.expect("synced");
    assert_eq!(
        on_phone.read(|d| d.get_heads()).expect("read"),
        heads,
        "the alert was written twice"
    );

    drop((stock, on_phone, on_tablet));
    for client in [office, phone, tablet] {
        client.close().await.expect("close");
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_ledger_record_that_breaks_a_rule_is_reported_and_kept() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let office = device(&server.url(), dir.path(), "office");
    let ledger = ana_ledger(&office);
    within("ledger saved", ledger.synced())
        .await
        .expect("synced");
    let document_id = ledger.document_id();

    // A hostile or buggy writer puts a sale with a negative quantity and a
    // made-up total straight into the ledger, bypassing record_sale.
    put_rogue_sale(&ledger);
    within("synced", ledger.synced()).await.expect("synced");

    let path = format!("/v1/documents/{document_id}/violations");
    let mut report = Value::Null;
    for _ in 0..200 {
        let (status, body) = http_get(server.addr(), &path).await;
        if status == 200 {
            report = serde_json::from_str(&body).expect("json");
            if report["violations_total"].as_u64() > Some(0) {
                break;
            }
        }
        // A poll, not an ordering: the first review of a changed document
        // runs on the next tick (milliseconds); 200 polls 50 ms apart give
        // it 10 s.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(report["kind"], "ledger", "{report}");
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    assert!(
        violations.iter().any(|v| v["key"] == "rogue:0000000001"),
        "the rogue sale must be reported: {report}"
    );
    // Kept aside, not deleted: the record is still in the document.
    let kept = ledger
        .read(|doc| {
            let sales = doc.get(ROOT, "sales").ok().flatten().map(|(_, id)| id);
            sales
                .and_then(|s| doc.get(&s, "rogue:0000000001").ok().flatten())
                .is_some()
        })
        .expect("read");
    assert!(kept);
    let (status, _) = http_get(server.addr(), "/v1/documents/not-an-id/violations").await;
    assert_eq!(status, 400);
    drop(ledger);
    office.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_violation_report_is_shown_only_to_its_own_tenant() {
    use ventas::server::auth::Role;
    let dir = tempfile::tempdir().expect("dir");
    let acme = issue_credentials(
        dir.path(),
        &[
            ("acme", "ana", "office-1", Role::Office, None),
            ("acme", "ana", "report-1", Role::Reporting, None),
        ],
    );
    let globex = issue_credentials(
        dir.path(),
        &[("globex", "ana", "report-2", Role::Reporting, None)],
    );
    let clients_dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir, |_| {}).await;

    let mut config =
        ventas::client::ClientConfig::new(server.url(), clients_dir.path().join("office"));
    config.peer_id = Some("office-1".to_string());
    config.token = Some(acme[0].clone());
    let office = ventas::client::Client::open(config).expect("client");
    let ledger = ana_ledger(&office);
    put_rogue_sale(&ledger);
    within("synced", ledger.synced()).await.expect("synced");

    let path = format!("/v1/documents/{}/violations", ledger.document_id());
    let addr = server.addr();
    let get = |token: Option<String>| {
        let path = path.clone();
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| ("Authorization", a))
                .into_iter()
                .collect();
            http_request(addr, "GET", &path, &headers, "").await
        }
    };
    let mut own = (0, String::new());
    for _ in 0..200 {
        own = get(Some(acme[1].clone())).await;
        if own.0 == 200 {
            break;
        }
        // A poll, not an ordering: the first review of a changed document
        // runs on the next tick (milliseconds); 200 polls 50 ms apart give
        // it 10 s.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(own.0, 200, "{}", own.1);
    assert!(own.1.contains("rogue:0000000001"), "{}", own.1);
    let other = get(Some(globex[0].clone())).await;
    assert_eq!(
        other.0, 404,
        "another tenant must not see the report: {}",
        other.1
    );
    // Exactly what a document without any report answers.
    let unknown = ventas_sync_protocol::ids::DocumentId::from_bytes([9; 16]);
    let auth = format!("Bearer {}", globex[0]);
    let missing = http_request(
        addr,
        "GET",
        &format!("/v1/documents/{unknown}/violations"),
        &[("Authorization", auth.as_str())],
        "",
    )
    .await;
    assert_eq!(missing, other);
    assert_eq!(get(None).await.0, 401);
    drop(ledger);
    office.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}
