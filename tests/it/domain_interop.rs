//! The business schema across languages: documents created by the Rust
//! domain layer (`ventas::domain`), synced through our server, written and
//! read by a real `@automerge/automerge-repo` 2.5.6 client through
//! `clients/js/ventas.mjs` (scripts `tests/js/domain-sale.mjs` and
//! `tests/js/domain-read.mjs`). A sale written in JS must validate in Rust
//! with no violations and the same Automerge types Rust writes; a sale
//! written in Rust must read in JS as plain strings and integer numbers.

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

    let load = |product: &ProductId, delta| Movement {
        id: format!("load/delivery-1/{product}"),
        kind: MovementKind::Load,
        product: product.clone(),
        delta,
        record: "delivery-1".into(),
        author: "office".into(),
        at_ms,
    };
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
