//! The business schema across languages: documents created by the Rust
//! domain layer (`ventas::domain`), synced through our server, written and
//! read by a real `@automerge/automerge-repo` 2.5.6 client through
//! `clients/js/ventas.mjs` (scripts `tests/js/domain-sale.mjs`,
//! `tests/js/domain-correct.mjs` and `tests/js/domain-read.mjs`). A sale or
//! correction (void, payment, return, stock transfer) written in JS must
//! validate in Rust with no violations and the same Automerge types Rust
//! writes; one written in Rust must read in JS as plain strings and integer
//! numbers, with the sale statuses Rust derives. A tenant set up with the
//! JS office helpers (`tests/js/domain-provision.mjs`) reads in Rust with no
//! violation.

use std::collections::BTreeMap;
use std::str::FromStr;

use automerge::{Automerge, ChangeHash, ObjId, ReadDoc, ScalarValue, Value, ROOT};
use serde_json::{json, Value as Json};
use ventas::client::DocHandle;
use ventas::domain::*;

use crate::harness::*;
use crate::office::*;

/// Waits until the handle holds every change in `heads` (hex, from JS).
async fn wait_for_heads(handle: &DocHandle, heads: &Json) {
    let heads: Vec<ChangeHash> = heads
        .as_array()
        .expect("heads array")
        .iter()
        .map(|h| ChangeHash::from_str(h.as_str().expect("hex")).expect("change hash"))
        .collect();
    within(
        "the JS changes to arrive",
        handle.wait_until(move |doc| heads.iter().all(|h| doc.get_change_by_hash(h).is_some())),
    )
    .await
    .expect("client alive");
}

/// The Automerge type of every field of a map, recursively: what Rust
/// readers (and other language bindings) see, independent of JS.
fn automerge_types(doc: &Automerge, obj: &ObjId) -> Json {
    let describe = |value: Value<'_>, child: ObjId| -> Json {
        match value {
            Value::Object(_) => automerge_types(doc, &child),
            Value::Scalar(scalar) => Json::from(match scalar.as_ref() {
                ScalarValue::Str(_) => "str",
                ScalarValue::Int(_) => "int",
                ScalarValue::Uint(_) => "uint",
                ScalarValue::F64(_) => "f64",
                ScalarValue::Counter(_) => "counter",
                ScalarValue::Boolean(_) => "boolean",
                _ => "other",
            }),
        }
    };
    match doc.object_type(obj) {
        Ok(automerge::ObjType::List) => Json::Array(
            (0..doc.length(obj))
                .map(|index| {
                    let (value, child) = doc.get(obj, index).expect("read").expect("present");
                    describe(value, child)
                })
                .collect(),
        ),
        Ok(automerge::ObjType::Text) => Json::from("text"),
        _ => Json::Object(
            doc.keys(obj)
                .map(|key| {
                    let (value, child) =
                        doc.get(obj, key.as_str()).expect("read").expect("present");
                    (key, describe(value, child))
                })
                .collect(),
        ),
    }
}

fn child(doc: &Automerge, path: &[&str]) -> ObjId {
    path.iter().fold(ROOT, |obj, key| {
        match doc.get(&obj, *key).expect("read").expect("present") {
            (Value::Object(_), id) => id,
            other => panic!("{key} is not an object: {other:?}"),
        }
    })
}

#[tokio::test]
async fn a_sale_recorded_in_js_validates_in_rust_with_rust_types() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let office = Office::set_up(&url, dir.path(), "tab-js", "JS1").await;
    let at_ms = sale_time_ms();

    // The device already has sale 1 in the ledger, but the device document
    // the JS client opens lags behind (as after a restore): the JS client
    // must number past what it sees in the ledger, like Rust.
    let catalog = office.catalog_view();
    let earlier = change_both(&office.device, &office.ledger, |device, ledger| {
        let mut stale_device = device.clone();
        record_sale(
            &mut stale_device,
            ledger,
            &catalog,
            &SaleInput {
                customer: id(CustomerId::new, "shop-9"),
                location: id(LocationId::new, "van-ana"),
                at_ms,
                lines: vec![SaleLineInput {
                    product: id(ProductId::new, "soap"),
                    quantity: 1,
                }],
            },
        )
        .expect("earlier sale")
    });
    assert_eq!(earlier.id.to_string(), "tab-js:0000000001");
    office.synced().await;

    let input = json!({
        "movements": [
            {"id": "load/delivery-1/soap", "kind": "load", "product": "soap", "delta": 10,
             "record": "delivery-1", "author": "tab-js", "at_ms": at_ms},
            {"id": "load/delivery-1/brush", "kind": "load", "product": "brush", "delta": 5,
             "record": "delivery-1", "author": "tab-js", "at_ms": at_ms},
        ],
        "sale": {
            "customer": "shop-9", "location": "van-ana", "atMs": at_ms,
            "lines": [{"product": "soap", "quantity": 3}, {"product": "brush", "quantity": 2}],
        },
    });
    let js = node(
        "domain-sale.mjs",
        &[
            &url,
            &office.catalog.url(),
            &office.device.url(),
            &office.ledger.url(),
            &office.stock.url(),
            &input.to_string(),
        ],
    )
    .await;
    let expected_sale = json!({
        "id": "tab-js:0000000002", "device": "tab-js", "seq": 2, "receipt": "JS1-2",
        "seller": "ana", "customer": "shop-9", "location": "van-ana",
        "recorded_at_ms": at_ms, "currency": "EUR",
        "lines": [
            {"product": "soap", "quantity": 3, "unit_price_cents": 250, "line_total_cents": 750},
            {"product": "brush", "quantity": 2, "unit_price_cents": 1199, "line_total_cents": 2398},
        ],
        "total_cents": 3148,
    });
    assert_eq!(js["sale"], expected_sale, "{js}");
    assert_eq!(js["movementOutcomes"], json!(["applied", "applied"]));
    assert_eq!(js["saleOutcomes"], json!(["applied", "applied"]));
    assert_eq!(js["levels"], json!({"soap": 7, "brush": 3}));
    assert_eq!(js["lastSeq"], 2);

    // The office's Rust client has the documents open: the server forwards
    // the JS changes to it.
    wait_for_heads(&office.device, &js["heads"]["device"]).await;
    wait_for_heads(&office.ledger, &js["heads"]["ledger"]).await;
    wait_for_heads(&office.stock, &js["heads"]["stock"]).await;

    let catalog = office.catalog_view();
    assert!(catalog.violations.is_empty(), "{:?}", catalog.violations);
    let (view, writers, types, registered_writers) = office
        .ledger
        .read(|doc| {
            let view = read_ledger(doc, Some(&catalog));
            let writers = check_record_writers(doc);
            let sale = child(doc, &["sales", "tab-js:0000000002"]);
            let types = automerge_types(doc, &sale);
            // The JS actor registered itself for tab-js, as Rust does.
            let registered = automerge_types(doc, &child(doc, &["writers"]));
            (view, writers, types, registered)
        })
        .expect("read");
    assert!(view.violations.is_empty(), "{:?}", view.violations);
    assert!(writers.is_empty(), "{writers:?}");
    assert_eq!(
        registered_writers.as_object().map(|w| w.len()),
        Some(2),
        "office and JS actors: {registered_writers}"
    );
    assert_eq!(view.sales.len(), 2);
    let sale = view
        .sales
        .get(&RecordId::parse("tab-js:0000000002").expect("id"))
        .expect("the JS sale validates");
    assert_eq!(sale.receipt, "JS1-2");
    assert_eq!(sale.seller.as_str(), "ana");
    assert_eq!(sale.total_cents, 3_148);
    assert_eq!(
        sale.lines
            .iter()
            .map(|l| (l.product.as_str(), l.quantity, l.line_total_cents))
            .collect::<Vec<_>>(),
        [("soap", 3, 750), ("brush", 2, 2_398)]
    );
    assert_eq!(sale.recorded_at_ms, at_ms);
    // Exactly the types Rust's `record_sale` writes: no Text, no f64.
    let line_types = json!({"product": "str", "quantity": "int",
        "unit_price_cents": "int", "line_total_cents": "int"});
    assert_eq!(
        types,
        json!({
            "device": "str", "seq": "int", "receipt": "str", "seller": "str",
            "customer": "str", "location": "str", "recorded_at_ms": "int",
            "currency": "str", "lines": [line_types.clone(), line_types], "total_cents": "int",
        })
    );
    let rust_types = office
        .ledger
        .read(|doc| automerge_types(doc, &child(doc, &["sales", "tab-js:0000000001"])))
        .expect("read");
    assert_eq!(
        rust_types["device"], types["device"],
        "same types as the Rust-written sale"
    );
    assert_eq!(rust_types["lines"][0], types["lines"][0]);

    let (stock, movement_types, level_types) = office
        .stock
        .read(|doc| {
            (
                read_stock(doc),
                automerge_types(doc, &child(doc, &["movements", "tab-js:0000000002/1"])),
                automerge_types(doc, &child(doc, &["levels"])),
            )
        })
        .expect("read");
    assert!(stock.violations.is_empty(), "{:?}", stock.violations);
    let levels: BTreeMap<&str, i64> = stock.levels.iter().map(|(p, l)| (p.as_str(), *l)).collect();
    assert_eq!(levels, BTreeMap::from([("soap", 7), ("brush", 3)]));
    let movement = stock
        .movements
        .get("tab-js:0000000002/1")
        .expect("sale movement");
    assert_eq!(movement.kind, MovementKind::Sale);
    assert_eq!(movement.delta, -2);
    assert_eq!(movement.record, "tab-js:0000000002");
    assert_eq!(movement.author, "tab-js");
    assert_eq!(
        movement_types,
        json!({"kind": "str", "product": "str", "delta": "int", "record": "str",
               "author": "str", "at_ms": "int"})
    );
    assert_eq!(level_types, json!({"brush": "counter", "soap": "counter"}));

    let device = office
        .device
        .read(read_device)
        .expect("read")
        .expect("device");
    assert_eq!(device.last_seq, 2);

    office.close().await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_sale_recorded_in_rust_reads_in_js_as_strings_and_integers() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let office = Office::set_up(&url, dir.path(), "tab-7", "K7Q").await;
    let at_ms = sale_time_ms();
    let soap = id(ProductId::new, "soap");
    let brush = id(ProductId::new, "brush");

    let load = |product: &ProductId, delta| delivery_load(product, delta, at_ms);
    office
        .stock
        .change(|doc| move_stock(doc, &[load(&soap, 10), load(&brush, 5)]))
        .expect("change applies")
        .expect("loaded");
    office.sell(at_ms, &[("soap", 3), ("brush", 1)]);
    office.synced().await;
    let actor = office
        .ledger
        .read(|doc| doc.get_actor().to_hex_string())
        .expect("read");

    let js = node(
        "domain-read.mjs",
        &[&url, &office.ledger.url(), &office.stock.url(), "--sales=1"],
    )
    .await;
    let ledger = &js["ledger"];
    assert_eq!(
        ledger["meta"],
        json!({"kind": "ledger", "tenant": "acme", "owner": "ana", "period": "2026-11",
               "schema_version": 1})
    );
    assert_eq!(
        ledger["sales"],
        json!({"tab-7:0000000001": {
            "id": "tab-7:0000000001", "device": "tab-7", "seq": 1, "receipt": "K7Q-1",
            "seller": "ana", "customer": "shop-9", "location": "van-ana",
            "recorded_at_ms": at_ms, "currency": "EUR",
            "lines": [
                {"product": "soap", "quantity": 3, "unit_price_cents": 250,
                 "line_total_cents": 750},
                {"product": "brush", "quantity": 1, "unit_price_cents": 1199,
                 "line_total_cents": 1199},
            ],
            "total_cents": 1949,
        }}),
        "{js}"
    );
    assert_eq!(ledger["problems"], json!([]));
    assert_eq!(ledger["writers"], json!({ actor: "tab-7" }));
    // How JS holds each raw field: Rust's scalar strings are ImmutableString,
    // its Int are integral JS numbers.
    let line = json!({"product": "ImmutableString", "quantity": "int",
        "unit_price_cents": "int", "line_total_cents": "int"});
    assert_eq!(
        js["types"],
        json!({"tab-7:0000000001": {
            "device": "ImmutableString", "seq": "int", "receipt": "ImmutableString",
            "seller": "ImmutableString", "customer": "ImmutableString",
            "location": "ImmutableString", "recorded_at_ms": "int",
            "currency": "ImmutableString", "lines": [line.clone(), line], "total_cents": "int",
        }})
    );
    let stock = &js["stock"];
    assert_eq!(stock["levels"], json!({"soap": 7, "brush": 4}));
    assert_eq!(
        stock["levelTypes"],
        json!({"soap": "Counter", "brush": "Counter"})
    );
    assert_eq!(
        stock["movements"]["tab-7:0000000001/0"],
        json!({"kind": "sale", "product": "soap", "delta": -3, "record": "tab-7:0000000001",
               "author": "tab-7", "at_ms": at_ms})
    );
    assert_eq!(stock["movements"].as_object().map(|m| m.len()), Some(4));

    office.close().await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_js_client_numbers_and_refuses_sales_like_the_rust_domain() {
    // Offline checks of clients/js/ventas.mjs (no server): numbering,
    // refusals mirroring `DomainError`, idempotent stock movements.
    let report = node("domain-selftest.mjs", &[]).await;
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["passed"], 8, "{report}");
}

/// A stock document for another location (the warehouse), created by the
/// office like the van's, for transfers.
/// The office loading `delta` units of `product` from delivery 1.
fn delivery_load(product: &ProductId, delta: i64, at_ms: i64) -> Movement {
    Movement {
        id: format!("load/delivery-1/{product}"),
        kind: MovementKind::Load,
        product: product.clone(),
        delta,
        record: "delivery-1".into(),
        author: "office".into(),
        at_ms,
    }
}

fn warehouse_stock(office: &Office) -> DocHandle {
    let period = Period::of_ms(sale_time_ms());
    let products = [id(ProductId::new, "soap"), id(ProductId::new, "brush")];
    create_in(
        &office.client,
        create_stock_doc(
            &id(TenantId::new, "acme"),
            &id(LocationId::new, "main"),
            period,
            &products,
        )
        .expect("stock doc"),
    )
}

#[tokio::test]
async fn corrections_recorded_in_js_validate_in_rust_with_rust_types() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let office = Office::set_up(&url, dir.path(), "tab-js", "JS1").await;
    let warehouse = warehouse_stock(&office);
    within("warehouse synced", warehouse.synced())
        .await
        .expect("synced");
    let at_ms = sale_time_ms();

    let js = node(
        "domain-correct.mjs",
        &[
            &url,
            &office.catalog.url(),
            &office.device.url(),
            &office.ledger.url(),
            &office.stock.url(),
            &warehouse.url(),
            &at_ms.to_string(),
        ],
    )
    .await;
    assert_eq!(
        js["refusals"],
        json!({"overpayment": "Overpayment", "payVoided": "SaleVoided", "voidTwice": "SaleVoided",
               "returnTooMany": "ReturnExceedsSold", "unknownSale": "SaleNotFound",
               "transferZero": "NonPositiveQuantity"}),
        "{js}"
    );
    assert_eq!(js["transferOutcomes"], json!(["applied", "applied"]));
    assert_eq!(js["returnOutcomes"], json!(["applied"]));
    wait_for_heads(&office.device, &js["heads"]["device"]).await;
    wait_for_heads(&office.ledger, &js["heads"]["ledger"]).await;
    wait_for_heads(&office.stock, &js["heads"]["van"]).await;
    wait_for_heads(&warehouse, &js["heads"]["warehouse"]).await;

    let catalog = office.catalog_view();
    let (view, writers, types) = office
        .ledger
        .read(|doc| {
            let types = json!({
                "void": automerge_types(doc, &child(doc, &["voids", "tab-js:0000000005"])),
                "payment": automerge_types(doc, &child(doc, &["payments", "tab-js:0000000002"])),
                "return": automerge_types(doc, &child(doc, &["returns", "tab-js:0000000003"])),
            });
            (
                read_ledger(doc, Some(&catalog)),
                check_record_writers(doc),
                types,
            )
        })
        .expect("read");
    assert!(view.violations.is_empty(), "{:?}", view.violations);
    assert!(writers.is_empty(), "{writers:?}");
    let record = |value: &str| RecordId::parse(value).expect("record id");
    let sale_a = record("tab-js:0000000001");
    let sale_b = record("tab-js:0000000004");
    assert_eq!(
        view.payments.get(&record("tab-js:0000000002")),
        Some(&Payment {
            id: record("tab-js:0000000002"),
            sale: sale_a.clone(),
            amount_cents: 1_000,
            currency: Currency::new("EUR").expect("currency"),
            method: "cash".into(),
            at_ms: at_ms + 1,
        })
    );
    assert_eq!(
        view.returns.get(&record("tab-js:0000000003")),
        Some(&SaleReturn {
            id: record("tab-js:0000000003"),
            sale: sale_a.clone(),
            receipt: "JS1-3".into(),
            location: id(LocationId::new, "van-ana"),
            at_ms: at_ms + 2,
            lines: vec![ReturnLine {
                product: id(ProductId::new, "soap"),
                quantity: 1,
                refund_cents: 250,
            }],
            refund_cents: 250,
        })
    );
    assert_eq!(
        view.voids.get(&record("tab-js:0000000005")),
        Some(&Void {
            id: record("tab-js:0000000005"),
            sale: sale_b.clone(),
            reason: "wrong customer".into(),
            at_ms: at_ms + 4,
        })
    );
    // Exactly the types Rust's `void_sale`, `record_payment` and
    // `record_return` write.
    assert_eq!(
        types,
        json!({
            "void": {"device": "str", "seq": "int", "sale": "str", "reason": "str", "at_ms": "int"},
            "payment": {"device": "str", "seq": "int", "sale": "str", "amount_cents": "int",
                        "currency": "str", "method": "str", "at_ms": "int"},
            "return": {"device": "str", "seq": "int", "sale": "str", "receipt": "str",
                       "location": "str", "at_ms": "int",
                       "lines": [{"product": "str", "quantity": "int", "refund_cents": "int"}],
                       "refund_cents": "int"},
        })
    );
    // Rust derives the same statuses JS reported.
    let statuses = sale_statuses(&view);
    for (sale, state) in [(&sale_a, SaleState::Open), (&sale_b, SaleState::Voided)] {
        let status = statuses.get(sale).expect("status");
        let reported = &js["statuses"][sale.to_string()];
        assert_eq!(status.state, state);
        assert_eq!(reported["state"], format!("{state:?}").to_lowercase());
        assert_eq!(reported["due_cents"], status.due_cents, "{reported}");
        assert_eq!(reported["paid_cents"], status.paid_cents, "{reported}");
        assert_eq!(
            reported["refunded_cents"], status.refunded_cents,
            "{reported}"
        );
    }
    assert_eq!(statuses[&sale_a].due_cents, 750 + 2_398 - 250);

    for (handle, expected) in [
        (
            &office.stock,
            BTreeMap::from([("soap", 4 - 3 + 1), ("brush", 5 - 2 - 1)]),
        ),
        (&warehouse, BTreeMap::from([("soap", 10 - 4), ("brush", 0)])),
    ] {
        let stock = handle.read(read_stock).expect("read");
        assert!(stock.violations.is_empty(), "{:?}", stock.violations);
        let levels: BTreeMap<&str, i64> =
            stock.levels.iter().map(|(p, l)| (p.as_str(), *l)).collect();
        assert_eq!(levels, expected);
        let transfer = stock
            .movements
            .get("transfer-1")
            .expect("transfer movement");
        assert_eq!(transfer.record, "transfer-1");
        assert_eq!(transfer.author, "tab-js");
    }
    let van = office.stock.read(read_stock).expect("read");
    assert_eq!(van.movements["transfer-1"].kind, MovementKind::TransferIn);
    assert_eq!(
        van.movements["tab-js:0000000003/0"].kind,
        MovementKind::Return
    );
    assert_eq!(van.movements["tab-js:0000000003/0"].delta, 1);
    assert_eq!(js["levels"]["van"], json!({"soap": 2, "brush": 2}));
    assert_eq!(js["levels"]["warehouse"], json!({"soap": 6, "brush": 0}));

    office.close().await;
    server.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn corrections_recorded_in_rust_read_in_js_as_strings_and_integers() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let office = Office::set_up(&url, dir.path(), "tab-7", "K7Q").await;
    let warehouse = warehouse_stock(&office);
    let at_ms = sale_time_ms();
    let soap = id(ProductId::new, "soap");
    let brush = id(ProductId::new, "brush");
    let load = |product: &ProductId, delta| delivery_load(product, delta, at_ms);
    for handle in [&office.stock, &warehouse] {
        handle
            .change(|doc| move_stock(doc, &[load(&soap, 10), load(&brush, 5)]))
            .expect("change applies")
            .expect("loaded");
    }
    let paid = office.sell(at_ms, &[("soap", 3), ("brush", 1)]);
    let voided = office.sell(at_ms, &[("brush", 1)]);
    let payment = change_both(&office.device, &office.ledger, |device, ledger| {
        record_payment(device, ledger, &paid.id, 500, "card", at_ms + 1).expect("payment")
    });
    let sale_return = change_both(&office.device, &office.ledger, |device, ledger| {
        let lines = [SaleLineInput {
            product: soap.clone(),
            quantity: 2,
        }];
        let van = id(LocationId::new, "van-ana");
        record_return(device, ledger, &paid.id, &lines, &van, at_ms + 2).expect("return")
    });
    office
        .stock
        .change(|doc| apply_return_to_stock(doc, &sale_return))
        .expect("change applies")
        .expect("returned");
    let void = change_both(&office.device, &office.ledger, |device, ledger| {
        void_sale(device, ledger, &voided.id, "duplicate", at_ms + 3).expect("void")
    });
    change_both(&warehouse, &office.stock, |from, to| {
        transfer_stock(from, to, "transfer-9", &soap, 4, "office", at_ms + 4).expect("transfer")
    });
    office.synced().await;
    within("warehouse synced", warehouse.synced())
        .await
        .expect("synced");

    let js = node(
        "domain-read.mjs",
        &[
            &url,
            &office.ledger.url(),
            &office.stock.url(),
            "--sales=2",
            "--records=5",
        ],
    )
    .await;
    let ledger = &js["ledger"];
    assert_eq!(ledger["problems"], json!([]), "{js}");
    assert_eq!(
        ledger["payments"],
        json!({payment.id.to_string(): {
            "device": "tab-7", "seq": 3, "sale": paid.id.to_string(), "amount_cents": 500,
            "currency": "EUR", "method": "card", "at_ms": at_ms + 1,
        }})
    );
    assert_eq!(
        ledger["returns"],
        json!({sale_return.id.to_string(): {
            "device": "tab-7", "seq": 4, "sale": paid.id.to_string(), "receipt": "K7Q-4",
            "location": "van-ana", "at_ms": at_ms + 2,
            "lines": [{"product": "soap", "quantity": 2, "refund_cents": 500}],
            "refund_cents": 500,
        }})
    );
    assert_eq!(
        ledger["voids"],
        json!({void.id.to_string(): {
            "device": "tab-7", "seq": 5, "sale": voided.id.to_string(), "reason": "duplicate",
            "at_ms": at_ms + 3,
        }})
    );
    // JS derives the statuses Rust derives.
    let view = office
        .ledger
        .read(|doc| read_ledger(doc, None))
        .expect("read");
    for (sale, status) in sale_statuses(&view) {
        let reported = &js["statuses"][sale.to_string()];
        assert_eq!(
            reported,
            &json!({
                "sale": sale.to_string(),
                "state": format!("{:?}", status.state).to_lowercase(),
                "total_cents": status.total_cents,
                "refunded_cents": status.refunded_cents,
                "due_cents": status.due_cents,
                "paid_cents": status.paid_cents,
                "voids": status.voids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "payments": status.payments.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        );
    }
    assert_eq!(js["statuses"][voided.id.to_string()]["state"], "voided");
    assert_eq!(
        js["statuses"][paid.id.to_string()]["due_cents"],
        1_949 - 500
    );

    let stock = &js["stock"];
    assert_eq!(
        stock["movements"]["transfer-9"],
        json!({"kind": "transfer_in", "product": "soap", "delta": 4, "record": "transfer-9",
               "author": "office", "at_ms": at_ms + 4})
    );
    assert_eq!(
        stock["movements"][format!("{}/0", sale_return.id)],
        json!({"kind": "return", "product": "soap", "delta": 2, "record": sale_return.id.to_string(),
               "author": "tab-7", "at_ms": at_ms + 2})
    );
    assert_eq!(
        stock["levels"],
        json!({"soap": 10 - 3 + 2 + 4, "brush": 5 - 1 - 1})
    );

    office.close().await;
    server.running.shutdown().await.expect("shutdown");
}

/// Issue 13: an office sets up a whole tenant from JS (`tests/js/
/// domain-provision.mjs`: the `clients/js` office helpers), the server
/// opens the new seller's ledger on its own (its keeper passes only every
/// hour here), and a JS device sells into it. Rust reads every document
/// with no violation and the values the JS side wrote.
#[tokio::test]
async fn a_tenant_provisioned_in_js_reads_in_rust_with_no_violations() {
    let server = TestServer::start_with(|config| {
        config.period_check_interval_ms = 3_600_000;
    })
    .await;
    let url = server.url();
    let js = node("domain-provision.mjs", &[&url]).await;
    let dir = tempfile::tempdir().expect("dir");
    let reader = device(&url, dir.path(), "rust-reader");
    let mut handles = BTreeMap::new();
    for name in ["catalog", "device", "ledger", "stock"] {
        let doc_url = js["urls"][name].as_str().expect("url");
        let handle = reader.open_url(doc_url).expect("open");
        wait_for_heads(&handle, &js["heads"][name]).await;
        handles.insert(name, handle);
    }
    let catalog = handles["catalog"].read(read_catalog).expect("read");
    assert!(catalog.violations.is_empty(), "{:?}", catalog.violations);
    assert_eq!(
        catalog.meta.as_ref().map(|m| m.tenant.as_str()),
        Some("acme")
    );
    let soap = id(ProductId::new, "soap");
    let product = &catalog.products[&soap];
    assert_eq!(product.unit_price_cents, 250);
    assert_eq!(product.currency.as_str(), "EUR");
    assert!(product.active);
    assert!(catalog.sellers.contains_key(&id(SellerId::new, "ana")));
    let tablet = &catalog.devices[&id(DeviceId::new, "tab-js")];
    assert_eq!(tablet.seller.as_str(), "ana");
    assert_eq!(tablet.receipt_prefix, "JS1");
    let van = &catalog.locations[&id(LocationId::new, "van-ana")];
    assert_eq!(van.kind, LocationKind::Vehicle);
    assert_eq!(van.seller.as_ref().map(SellerId::as_str), Some("ana"));
    let ledger_key = js["ledgerKey"].as_str().expect("key");
    assert_eq!(
        catalog.directory.get(ledger_key).map(String::as_str),
        js["urls"]["ledger"].as_str()
    );
    assert_eq!(
        catalog.directory.get("device/tab-js").map(String::as_str),
        js["urls"]["device"].as_str()
    );

    let device_info = handles["device"]
        .read(read_device)
        .expect("read")
        .expect("device");
    assert_eq!(device_info.seller.as_str(), "ana");
    assert_eq!(device_info.last_seq, 1);

    let stock = handles["stock"].read(read_stock).expect("read");
    assert!(stock.violations.is_empty(), "{:?}", stock.violations);
    assert_eq!(stock.levels[&soap], 37);
    assert_eq!(stock.levels[&id(ProductId::new, "brush")], 5);
    assert_eq!(stock.movements["opening/soap"].kind, MovementKind::Opening);

    let ledger = handles["ledger"]
        .read(|doc| read_ledger(doc, Some(&catalog)))
        .expect("read");
    assert!(ledger.violations.is_empty(), "{:?}", ledger.violations);
    assert_eq!(ledger.sales.len(), 1);
    let sale = ledger.sales.values().next().expect("sale");
    assert_eq!(sale.total_cents, 750);
    assert_eq!(sale.receipt, "JS1-1");
    reader.close().await.expect("close");
    server.running.shutdown().await.expect("shutdown");
}
