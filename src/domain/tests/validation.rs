//! One test per validation rule, each with a record that breaks it: the
//! record is reported with its reason, kept in the document, and left out of
//! the typed view.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, ROOT};

use super::*;

fn sale_map(ledger: &Automerge, sale: &RecordId) -> ObjId {
    let sales = ledger.get(ROOT, "sales").expect("get").expect("sales").1;
    ledger
        .get(&sales, sale.to_string())
        .expect("get")
        .expect("sale")
        .1
}

fn first_line(ledger: &Automerge, sale: &RecordId) -> ObjId {
    let map = sale_map(ledger, sale);
    let lines = ledger.get(&map, "lines").expect("get").expect("lines").1;
    ledger.get(&lines, 0).expect("get").expect("line").1
}

/// Breaks the sale with `edit`, then checks the sale is reported with a
/// problem matching `expected`, excluded from the view, and still stored.
fn assert_sale_rejected(
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &ObjId, &ObjId),
    expected: impl Fn(&Problem) -> bool,
) {
    let mut world = World::new();
    let sale = world.sell("tab-a1", &[(0, 2), (1, 1)]);
    let ana = world.sellers[0].clone();
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let (map, line) = (sale_map(ledger, &sale.id), first_line(ledger, &sale.id));
    let mut tx = ledger.transaction();
    edit(&mut tx, &map, &line);
    tx.commit();
    let view = read_ledger(ledger, Some(&world.catalog_view));
    assert!(
        view.violations.iter().any(|v| v.collection == "sales"
            && v.key == sale.id.to_string()
            && expected(&v.problem)),
        "not reported as expected: {:?}",
        view.violations
    );
    assert!(
        view.violations.iter().all(|v| v.actor.is_some()),
        "{:?}",
        view.violations
    );
    assert!(
        !view.sales.contains_key(&sale.id),
        "an invalid sale is kept aside"
    );
    let sales = ledger.get(ROOT, "sales").expect("get").expect("sales").1;
    assert!(
        ledger
            .get(&sales, sale.id.to_string())
            .expect("get")
            .is_some(),
        "and never vanishes"
    );
}

#[test]
fn a_sale_missing_a_field_is_reported() {
    assert_sale_rejected(
        |tx, map, _| tx.delete(map, "customer").expect("delete"),
        |p| matches!(p, Problem::Field(FieldError::Missing { field }) if field == "customer"),
    );
}

#[test]
fn a_field_of_the_wrong_type_is_reported() {
    assert_sale_rejected(
        |tx, _, line| tx.put(line, "quantity", "two").expect("put"),
        |p| matches!(p, Problem::Field(FieldError::WrongType { field, expected: "integer", .. }) if field == "quantity"),
    );
}

#[test]
fn a_non_integral_number_is_reported() {
    assert_sale_rejected(
        |tx, _, line| {
            tx.put(line, "quantity", ScalarValue::F64(1.5))
                .expect("put")
        },
        |p| matches!(p, Problem::Field(FieldError::Invalid { field, .. }) if field == "quantity"),
    );
}

#[test]
fn a_negative_quantity_is_reported() {
    assert_sale_rejected(
        |tx, map, line| {
            tx.put(line, "quantity", -2i64).expect("put");
            tx.put(line, "line_total_cents", -500i64).expect("put");
            tx.put(map, "total_cents", 699i64).expect("put");
        },
        |p| {
            matches!(
                p,
                Problem::NonPositiveQuantity {
                    line: 0,
                    quantity: -2
                }
            )
        },
    );
}

#[test]
fn a_line_total_that_is_not_quantity_times_price_is_reported() {
    assert_sale_rejected(
        |tx, _, line| tx.put(line, "line_total_cents", 1i64).expect("put"),
        |p| {
            matches!(
                p,
                Problem::LineTotalMismatch {
                    line: 0,
                    stored: 1,
                    derived: 500
                }
            )
        },
    );
}

#[test]
fn a_sale_total_that_is_not_the_sum_of_lines_is_reported() {
    assert_sale_rejected(
        |tx, map, _| tx.put(map, "total_cents", 1i64).expect("put"),
        |p| {
            matches!(
                p,
                Problem::SaleTotalMismatch {
                    stored: 1,
                    derived: 1_699
                }
            )
        },
    );
}

#[test]
fn an_overflowing_line_is_reported() {
    assert_sale_rejected(
        |tx, _, line| tx.put(line, "quantity", i64::MAX).expect("put"),
        |p| matches!(p, Problem::AmountOverflow),
    );
}

#[test]
fn a_line_for_an_unknown_product_is_reported() {
    assert_sale_rejected(
        |tx, _, line| tx.put(line, "product", "ghost").expect("put"),
        |p| matches!(p, Problem::UnknownProduct { line: 0, product } if product.as_str() == "ghost"),
    );
}

#[test]
fn a_sale_for_another_seller_in_this_ledger_is_reported() {
    assert_sale_rejected(
        |tx, map, _| tx.put(map, "seller", "bo").expect("put"),
        |p| matches!(p, Problem::ForeignSeller { seller, .. } if seller.as_str() == "bo"),
    );
}

#[test]
fn a_sale_dated_outside_the_ledgers_month_is_reported() {
    let december = Period::parse("2026-12").expect("period").start_ms();
    assert_sale_rejected(
        |tx, map, _| tx.put(map, "recorded_at_ms", december).expect("put"),
        |p| matches!(p, Problem::WrongPeriod { .. }),
    );
}

#[test]
fn a_sale_whose_key_is_not_its_device_and_sequence_is_reported() {
    assert_sale_rejected(
        |tx, map, _| tx.put(map, "seq", 99i64).expect("put"),
        |p| matches!(p, Problem::KeyMismatch { .. }),
    );
}

#[test]
fn a_sale_with_no_lines_is_reported() {
    assert_sale_rejected(
        |tx, map, _| {
            tx.put_object(map, "lines", ObjType::List).expect("put");
            tx.put(map, "total_cents", 0i64).expect("put");
        },
        |p| matches!(p, Problem::EmptySale),
    );
}

#[test]
fn a_sale_by_a_device_registered_to_another_seller_is_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    // tab-b1 belongs to bo; a buggy or hostile client writes into ana's ledger
    // claiming to be ana's.
    let device = world.device("tab-b1");
    let input = world.sale_input(&world.device("tab-a1"), &[(0, 1)], november_ms());
    let id = RecordId::new(device.clone(), 1);
    let sale = Sale {
        receipt: "KB1-1".into(),
        id: id.clone(),
        seller: ana.clone(),
        customer: input.customer,
        location: input.location,
        recorded_at_ms: november_ms(),
        currency: id_currency(),
        lines: vec![SaleLine {
            product: world.products[0].clone(),
            quantity: 1,
            unit_price_cents: 250,
            line_total_cents: 250,
        }],
        total_cents: 250,
    };
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    crate::domain::ledger::write_sale(ledger, &sale).expect("write");
    let view = read_ledger(ledger, Some(&world.catalog_view));
    assert!(
        view.violations.iter().any(|v| matches!(&v.problem,
            Problem::ForeignSeller { device_seller: Some(s), .. } if s.as_str() == "bo")),
        "{:?}",
        view.violations
    );
    assert!(view.sales.is_empty());
    // Without the catalog the device cannot be checked, and the sale's own
    // seller field matches: the rule needs the catalog.
    assert!(read_ledger(ledger, None).sales.contains_key(&id));
}

fn id_currency() -> Currency {
    Currency::new("EUR").expect("currency")
}

#[test]
fn a_sale_by_an_unregistered_device_is_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let sale = world.sell("tab-a1", &[(0, 1)]);
    let stranger = Sale {
        id: RecordId::new(id(DeviceId::new("tab-zz")), 1),
        ..sale
    };
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    crate::domain::ledger::write_sale(ledger, &stranger).expect("write");
    let view = read_ledger(ledger, Some(&world.catalog_view));
    assert!(view.violations.iter().any(
        |v| matches!(&v.problem, Problem::UnknownDevice { device } if device.as_str() == "tab-zz")
    ));
    assert_eq!(view.sales.len(), 1);
}

#[test]
fn corrections_of_an_unknown_sale_are_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let sale = world.sell("tab-a1", &[(0, 1)]);
    let a1 = world.device("tab-a1");
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let void = void_sale(
        world.device_docs.get_mut(&a1).expect("doc"),
        ledger,
        &sale.id,
        "typo",
        november_ms(),
    )
    .expect("void");
    let voids = ledger.get(ROOT, "voids").expect("get").expect("voids").1;
    let map = ledger
        .get(&voids, void.id.to_string())
        .expect("get")
        .expect("void")
        .1;
    let mut tx = ledger.transaction();
    tx.put(&map, "sale", "tab-a1:0000000077").expect("put");
    tx.commit();
    let view = read_ledger(ledger, None);
    assert!(view
        .violations
        .iter()
        .any(|v| v.collection == "voids" && matches!(&v.problem, Problem::UnknownSale { .. })));
    assert!(view.voids.is_empty());
}

#[test]
fn a_payment_in_another_currency_or_not_positive_is_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let sale = world.sell("tab-a1", &[(0, 4)]);
    let a1 = world.device("tab-a1");
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let payment = record_payment(
        world.device_docs.get_mut(&a1).expect("doc"),
        ledger,
        &sale.id,
        100,
        "cash",
        november_ms(),
    )
    .expect("pay");
    let payments = ledger
        .get(ROOT, "payments")
        .expect("get")
        .expect("payments")
        .1;
    let map = ledger
        .get(&payments, payment.id.to_string())
        .expect("get")
        .expect("payment")
        .1;
    let mut tx = ledger.transaction();
    tx.put(&map, "currency", "USD").expect("put");
    tx.put(&map, "amount_cents", 0i64).expect("put");
    tx.commit();
    let view = read_ledger(ledger, None);
    let problems: Vec<_> = view.violations.iter().map(|v| &v.problem).collect();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::CurrencyMismatch { .. })),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::NonPositiveAmount { amount_cents: 0 })),
        "{problems:?}"
    );
    assert!(view.payments.is_empty());
}

#[test]
fn concurrent_returns_exceeding_the_sale_are_reported_deterministically() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let sale = world.sell("tab-a1", &[(0, 3)]);
    let (a1, a2) = (world.device("tab-a1"), world.device("tab-a2"));
    let van = id(LocationId::new("van-ana"));
    let mut ledger_a1 = replica(&world.ledgers[&ana], 1, 0);
    let mut ledger_a2 = replica(&world.ledgers[&ana], 2, 0);
    let lines = [SaleLineInput {
        product: world.products[0].clone(),
        quantity: 2,
    }];
    let first = record_return(
        world.device_docs.get_mut(&a1).expect("doc"),
        &mut ledger_a1,
        &sale.id,
        &lines,
        &van,
        november_ms(),
    )
    .expect("return");
    let second = record_return(
        world.device_docs.get_mut(&a2).expect("doc"),
        &mut ledger_a2,
        &sale.id,
        &lines,
        &van,
        november_ms(),
    )
    .expect("return");
    sync_pair(&mut ledger_a1, &mut ledger_a2);
    for ledger in [&ledger_a1, &ledger_a2] {
        let view = read_ledger(ledger, None);
        // Checked in id order: tab-a1's return is accepted, tab-a2's is not.
        assert!(view.returns.contains_key(&first.id));
        assert!(!view.returns.contains_key(&second.id));
        assert!(view
            .violations
            .iter()
            .any(|v| v.key == second.id.to_string()
                && matches!(
                    v.problem,
                    Problem::ReturnExceedsSold {
                        sold: 3,
                        returned: 4,
                        ..
                    }
                )));
    }
}

#[test]
fn a_record_key_written_by_two_replicas_is_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let sale = world.sell("tab-a1", &[(0, 1)]);
    // Simulate the collision our ids make impossible: two replicas write the
    // same key.
    let empty = create_ledger_doc(&world.tenant, &ana, world.period).expect("ledger");
    let mut one = replica(&empty, 1, 0);
    let mut two = replica(&empty, 2, 0);
    crate::domain::ledger::write_sale(&mut one, &sale).expect("write");
    crate::domain::ledger::write_sale(
        &mut two,
        &Sale {
            total_cents: 250,
            ..sale.clone()
        },
    )
    .expect("write");
    sync_pair(&mut one, &mut two);
    let view = read_ledger(&one, None);
    assert!(
        view.violations
            .iter()
            .any(|v| matches!(v.problem, Problem::KeyWrittenTwice { copies: 2 })),
        "{:?}",
        view.violations
    );
}

#[test]
fn a_container_created_twice_is_reported() {
    let world = World::new();
    let ana = world.sellers[0].clone();
    let mut one = create_ledger_doc(&world.tenant, &ana, world.period).expect("ledger");
    let mut two = create_ledger_doc(&world.tenant, &ana, world.period).expect("ledger");
    sync_pair(&mut one, &mut two);
    let view = read_ledger(&one, None);
    assert!(
        view.violations.iter().any(|v| v.key == "sales"
            && matches!(v.problem, Problem::ContainerCreatedTwice { copies: 2 })),
        "{:?}",
        view.violations
    );
}

#[test]
fn a_document_without_meta_is_reported_not_a_panic() {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "sales", "not a map").expect("put");
    tx.commit();
    let view = read_ledger(&doc, None);
    assert!(view.violations.iter().any(|v| v.key == "meta"));
    assert!(view
        .violations
        .iter()
        .any(|v| v.key == "sales"
            && matches!(&v.problem, Problem::Field(FieldError::WrongType { .. }))));
    assert!(read_stock(&doc)
        .violations
        .iter()
        .any(|v| v.key == "levels"));
    assert!(!read_catalog(&doc).violations.is_empty());
}

#[test]
fn stock_counter_drift_wrong_sign_and_plain_integers_are_reported() {
    let world = World::new();
    let mut stock = world.stocks[&id(LocationId::new("van-ana"))].clone();
    let levels = stock.get(ROOT, "levels").expect("get").expect("levels").1;
    let movements = stock
        .get(ROOT, "movements")
        .expect("get")
        .expect("movements")
        .1;
    let mut tx = stock.transaction();
    // Drift: a counter changed without a movement.
    tx.increment(&levels, "soap", -4).expect("increment");
    // A plain integer where a counter belongs: concurrent changes would not merge.
    tx.put(&levels, "rice", 3i64).expect("put");
    // A sale movement that adds stock.
    let bad = tx.put_object(&movements, "m-1", ObjType::Map).expect("put");
    for (field, value) in [
        ("kind", "sale"),
        ("product", "oil"),
        ("record", "x"),
        ("author", "tab-a1"),
    ] {
        tx.put(&bad, field, value).expect("put");
    }
    tx.put(&bad, "delta", 2i64).expect("put");
    tx.put(&bad, "at_ms", november_ms()).expect("put");
    tx.increment(&levels, "oil", 2).expect("increment");
    tx.commit();
    let view = read_stock(&stock);
    let has = |key: &str, f: &dyn Fn(&Problem) -> bool| {
        view.violations
            .iter()
            .any(|v| v.key == key && f(&v.problem))
    };
    assert!(
        has("soap", &|p| matches!(
            p,
            Problem::CounterDrift {
                counter: -4,
                movements: 0
            }
        )),
        "{:?}",
        view.violations
    );
    assert!(
        has("rice", &|p| matches!(
            p,
            Problem::Field(FieldError::WrongType {
                expected: "counter",
                ..
            })
        )),
        "{:?}",
        view.violations
    );
    assert!(
        has("m-1", &|p| matches!(
            p,
            Problem::WrongSign {
                kind: "sale",
                delta: 2
            }
        )),
        "{:?}",
        view.violations
    );
    assert!(view.movements.is_empty());
}

#[test]
fn catalog_records_with_bad_fields_are_reported() {
    let mut world = World::new();
    let products = world
        .catalog
        .get(ROOT, "products")
        .expect("get")
        .expect("products")
        .1;
    let soap = world
        .catalog
        .get(&products, "soap")
        .expect("get")
        .expect("soap")
        .1;
    let mut tx = world.catalog.transaction();
    tx.put(&soap, "currency", "euro").expect("put");
    tx.put(&soap, "unit_price_cents", -1i64).expect("put");
    tx.commit();
    let view = read_catalog(&world.catalog);
    assert!(view.violations.iter().any(|v| v.key == "soap" && matches!(&v.problem, Problem::Field(FieldError::Invalid { field, .. }) if field == "currency")));
    assert!(view
        .violations
        .iter()
        .any(|v| v.key == "soap" && matches!(v.problem, Problem::NegativePrice { .. })));
    assert!(!view.products.contains_key(&world.products[0]));
}

#[test]
fn records_that_are_not_maps_or_have_bad_keys_are_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    world.sell("tab-a1", &[(0, 1)]);
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let sales = ledger.get(ROOT, "sales").expect("get").expect("sales").1;
    let mut tx = ledger.transaction();
    tx.put(&sales, "tab-a1:0000000050", 42i64).expect("put");
    tx.put_object(&sales, "junk", ObjType::Map).expect("put");
    tx.commit();
    let view = read_ledger(ledger, None);
    assert!(
        view.violations.iter().any(|v| v.key == "tab-a1:0000000050"
            && matches!(
                &v.problem,
                Problem::Field(FieldError::WrongType {
                    expected: "map",
                    ..
                })
            )),
        "{:?}",
        view.violations
    );
    assert!(view.violations.iter().any(|v| v.key == "junk"
        && matches!(&v.problem, Problem::Field(FieldError::Invalid { field, .. }) if field == "key")), "{:?}", view.violations);
    assert_eq!(view.sales.len(), 1);
}

#[test]
fn records_written_in_another_devices_name_are_reported() {
    let world = World::new();
    let ana = world.sellers[0].clone();
    let (a1, a2) = (world.device("tab-a1"), world.device("tab-a2"));
    let mut phone_a1 = replica(&world.device_docs[&a1], 1, 0);
    let mut phone_a2 = replica(&world.device_docs[&a2], 2, 0);
    let mut ledger_a1 = replica(&world.ledgers[&ana], 1, 0);
    let mut ledger_a2 = replica(&world.ledgers[&ana], 2, 0);
    let input = world.sale_input(&a1, &[(0, 1)], november_ms());
    let honest =
        record_sale(&mut phone_a1, &mut ledger_a1, &world.catalog_view, &input).expect("sale");
    let input = world.sale_input(&a2, &[(0, 1)], november_ms());
    record_sale(&mut phone_a2, &mut ledger_a2, &world.catalog_view, &input).expect("sale");
    // The same replica (actor 2, registered to tab-a2) then writes a sale
    // naming tab-a1.
    let forged = Sale {
        id: RecordId::new(a1.clone(), 99),
        ..honest.clone()
    };
    crate::domain::ledger::write_sale(&mut ledger_a2, &forged).expect("write");
    // A replica that skips registration (a hand-written client) writes one.
    let mut stranger = replica(&world.ledgers[&ana], 3, 0);
    let unregistered = Sale {
        id: RecordId::new(a2.clone(), 5),
        ..honest.clone()
    };
    let sales = stranger.get(ROOT, "sales").expect("get").expect("sales").1;
    let mut tx = stranger.transaction();
    tx.put_object(&sales, unregistered.id.to_string(), ObjType::Map)
        .expect("put");
    tx.commit();
    sync_pair(&mut ledger_a1, &mut ledger_a2);
    sync_pair(&mut ledger_a1, &mut stranger);

    let violations = check_record_writers(&ledger_a1);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations.iter().any(|v| v.key == forged.id.to_string()
        && matches!(&v.problem, Problem::WrittenByOtherDevice { writer } if *writer == a2)));
    assert!(violations
        .iter()
        .any(|v| v.key == unregistered.id.to_string() && v.problem == Problem::UnknownWriter));
}

/// Appends copies-in-shape of a line to `lines` until it holds `count`.
fn pad_lines(tx: &mut automerge::transaction::Transaction<'_>, lines: &ObjId, count: usize) {
    for index in tx.length(lines)..count {
        let line = tx
            .insert_object(lines, index, ObjType::Map)
            .expect("insert line");
        tx.put(&line, "product", "soap").expect("put");
        tx.put(&line, "quantity", 1i64).expect("put");
    }
}

#[test]
fn a_sale_with_more_lines_than_the_limit_is_reported() {
    assert_sale_rejected(
        |tx, map, _| {
            let lines = tx.get(map, "lines").expect("get").expect("lines").1;
            pad_lines(tx, &lines, SALE_LINES_MAX + 1);
        },
        |p| matches!(p, Problem::Field(error) if error.to_string().contains("more than")),
    );
}

#[test]
fn a_return_with_more_lines_than_the_limit_is_reported() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let sale = world.sell("tab-a1", &[(0, 3)]);
    let device = world.device("tab-a1");
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let returned = record_return(
        world.device_docs.get_mut(&device).expect("doc"),
        ledger,
        &sale.id,
        &[SaleLineInput {
            product: world.products[0].clone(),
            quantity: 1,
        }],
        &id(LocationId::new("van-ana")),
        november_ms(),
    )
    .expect("return");
    let returns = ledger
        .get(ROOT, "returns")
        .expect("get")
        .expect("returns")
        .1;
    let map = ledger
        .get(&returns, returned.id.to_string())
        .expect("get")
        .expect("return")
        .1;
    let lines = ledger.get(&map, "lines").expect("get").expect("lines").1;
    let mut tx = ledger.transaction();
    pad_lines(&mut tx, &lines, SALE_LINES_MAX + 1);
    tx.commit();
    let view = read_ledger(ledger, None);
    assert!(
        view.violations.iter().any(|v| v.collection == "returns"
            && v.key == returned.id.to_string()
            && v.problem.to_string().contains("more than")),
        "{:?}",
        view.violations
    );
    assert!(!view.returns.contains_key(&returned.id));
}
