//! Unit tests of each operation.

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ROOT};

use super::*;

#[test]
fn sale_totals_are_derived_from_catalog_prices() {
    let mut world = World::new();
    let sale = world.sell("tab-a1", &[(0, 3), (1, 2)]);
    assert_eq!(sale.lines[0].line_total_cents, 750);
    assert_eq!(sale.lines[1].line_total_cents, 2_398);
    assert_eq!(sale.total_cents, 3_148);
    assert_eq!(sale.receipt, "KA1-1");
    assert_eq!(sale.id.to_string(), "tab-a1:0000000001");
    let view = read_ledger(&world.ledgers[&world.sellers[0]], Some(&world.catalog_view));
    assert!(view.violations.is_empty(), "{:?}", view.violations);
    assert_eq!(view.sales.get(&sale.id), Some(&sale));
}

#[test]
fn record_sale_refuses_another_sellers_ledger() {
    let mut world = World::new();
    let device = world.device("tab-b1");
    let input = world.sale_input(&device, &[(0, 1)], november_ms());
    let ana = world.sellers[0].clone();
    let result = world.try_sale(&device, &ana, &input);
    assert!(
        matches!(result, Err(DomainError::NotOwner { .. })),
        "{result:?}"
    );
    assert!(read_ledger(&world.ledgers[&ana], None).sales.is_empty());
}

#[test]
fn record_sale_refuses_a_date_outside_the_ledgers_month() {
    let mut world = World::new();
    let device = world.device("tab-a1");
    let december = Period::parse("2026-12").expect("period").start_ms();
    let input = world.sale_input(&device, &[(0, 1)], december);
    let ana = world.sellers[0].clone();
    let result = world.try_sale(&device, &ana, &input);
    assert!(
        matches!(result, Err(DomainError::WrongPeriod { .. })),
        "{result:?}"
    );
}

#[test]
fn record_sale_refuses_bad_input() {
    let mut world = World::new();
    let device = world.device("tab-a1");
    let ana = world.sellers[0].clone();
    let mut attempt = |input: SaleInput| world.try_sale(&device, &ana, &input);
    let base = SaleInput {
        customer: id(CustomerId::new("shop-9")),
        location: id(LocationId::new("van-ana")),
        at_ms: november_ms(),
        lines: vec![],
    };
    assert!(matches!(attempt(base.clone()), Err(DomainError::EmptySale)));
    let line = |product: &str, quantity| SaleLineInput {
        product: id(ProductId::new(product)),
        quantity,
    };
    let zero = SaleInput {
        lines: vec![line("soap", 0)],
        ..base.clone()
    };
    assert!(matches!(
        attempt(zero),
        Err(DomainError::NonPositiveQuantity { .. })
    ));
    let ghost = SaleInput {
        lines: vec![line("ghost", 1)],
        ..base.clone()
    };
    assert!(matches!(
        attempt(ghost),
        Err(DomainError::UnknownProduct(_))
    ));
    let twice = SaleInput {
        lines: vec![line("soap", 1), line("soap", 2)],
        ..base.clone()
    };
    assert!(matches!(attempt(twice), Err(DomainError::DuplicateLine(_))));
    let stranger = SaleInput {
        customer: id(CustomerId::new("nobody")),
        lines: vec![line("soap", 1)],
        ..base
    };
    assert!(matches!(
        attempt(stranger),
        Err(DomainError::UnknownCustomer(_))
    ));
    assert!(read_ledger(&world.ledgers[&ana], None).sales.is_empty());
}

#[test]
fn reinstall_resumes_the_counter_past_every_number_the_server_has_seen() {
    let mut world = World::new();
    let device = world.device("tab-a1");
    let ana = world.sellers[0].clone();
    // The server's copies: the device document synced after two sales, the
    // ledger after five.
    let mut server_device_doc = Automerge::new();
    for n in 1..=5 {
        world.sell("tab-a1", &[(0, 1)]);
        if n == 2 {
            server_device_doc = world.device_docs[&device].clone();
        }
    }
    let server_november = world.ledgers[&ana].clone();
    let mut server_december = create_ledger_doc(
        &world.tenant,
        &ana,
        Period::parse("2026-12").expect("period"),
    )
    .expect("ledger");

    // Reinstall: everything comes back from the server, with a new actor.
    let mut restored = replica(&server_device_doc, 9, 1);
    let november = replica(&server_november, 9, 1);
    assert_eq!(read_device(&restored).expect("device").last_seq, 2);
    assert_eq!(
        resume_counter(&mut restored, &[&november, &server_december]).expect("resume"),
        5
    );

    // The next sale, even into a ledger that has none of the old ones, is 6.
    let december_ms = Period::parse("2026-12").expect("period").start_ms() + 1;
    let input = world.sale_input(&device, &[(0, 1)], december_ms);
    let sale = record_sale(
        &mut restored,
        &mut server_december,
        &world.catalog_view,
        &input,
    )
    .expect("sale");
    assert_eq!(sale.id, RecordId::new(device.clone(), 6));
    assert_eq!(sale.receipt, "KA1-6");

    // Without the resume, the stale counter would only be saved by the scan
    // of the target ledger: writing into November it still skips past 5.
    let mut stale = replica(&server_device_doc, 9, 2);
    let mut november = replica(&server_november, 9, 2);
    let input = world.sale_input(&device, &[(0, 1)], november_ms());
    let sale = record_sale(&mut stale, &mut november, &world.catalog_view, &input).expect("sale");
    assert_eq!(sale.id.seq, 6);
}

#[test]
fn the_counter_register_takes_the_maximum_of_concurrent_values() {
    let world = World::new();
    let device = world.device("tab-a1");
    let mut old_install = replica(&world.device_docs[&device], 1, 0);
    let mut new_install = replica(&world.device_docs[&device], 2, 0);
    for _ in 0..7 {
        allocate_record_id(&mut old_install, 0).expect("allocate");
    }
    allocate_record_id(&mut new_install, 0).expect("allocate");
    sync_pair(&mut old_install, &mut new_install);
    assert_eq!(read_device(&new_install).expect("device").last_seq, 7);
    assert_eq!(
        allocate_record_id(&mut new_install, 0)
            .expect("allocate")
            .seq,
        8
    );
}

#[test]
fn concurrent_void_and_payment_merge_to_one_status_and_report_the_conflict() {
    let mut world = World::new();
    let sale = world.sell("tab-a1", &[(0, 4)]);
    let ana = world.sellers[0].clone();
    let (a1, a2) = (world.device("tab-a1"), world.device("tab-a2"));
    let mut ledger_a1 = replica(&world.ledgers[&ana], 1, 0);
    let mut ledger_a2 = replica(&world.ledgers[&ana], 2, 0);
    let void = void_sale(
        world.device_docs.get_mut(&a1).expect("doc"),
        &mut ledger_a1,
        &sale.id,
        "customer refused",
        november_ms(),
    )
    .expect("void");
    let payment = record_payment(
        world.device_docs.get_mut(&a2).expect("doc"),
        &mut ledger_a2,
        &sale.id,
        1_000,
        "cash",
        november_ms(),
    )
    .expect("payment");
    let mut one_way = ledger_a1.clone();
    one_way.merge(&mut ledger_a2.clone()).expect("merge");
    let mut other_way = ledger_a2.clone();
    other_way.merge(&mut ledger_a1.clone()).expect("merge");
    let status_one = sale_statuses(&read_ledger(&one_way, None));
    let status_other = sale_statuses(&read_ledger(&other_way, None));
    assert_eq!(status_one, status_other);
    let status = &status_one[&sale.id];
    assert_eq!(status.state, SaleState::Voided);
    assert_eq!(
        status.conflicts,
        vec![SaleConflict::VoidedAndPaid {
            voids: vec![void.id.clone()],
            payments: vec![payment.id.clone()],
        }]
    );
    assert_eq!(sale_conflicts(&read_ledger(&one_way, None)).len(), 1);
    // Once a replica sees the void, it refuses further payments.
    let refused = record_payment(
        world.device_docs.get_mut(&a2).expect("doc"),
        &mut one_way,
        &sale.id,
        1,
        "cash",
        november_ms(),
    );
    assert!(
        matches!(refused, Err(DomainError::SaleVoided(_))),
        "{refused:?}"
    );
}

#[test]
fn payments_and_returns_derive_what_is_due() {
    let mut world = World::new();
    let sale = world.sell("tab-a1", &[(0, 4), (2, 1)]);
    let ana = world.sellers[0].clone();
    let a1 = world.device("tab-a1");
    let doc = world.device_docs.get_mut(&a1).expect("doc");
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let van = id(LocationId::new("van-ana"));
    let back = record_return(
        doc,
        ledger,
        &sale.id,
        &[SaleLineInput {
            product: id(ProductId::new("soap")),
            quantity: 1,
        }],
        &van,
        november_ms(),
    )
    .expect("return");
    assert_eq!(back.refund_cents, 250);
    let too_many = record_return(
        doc,
        ledger,
        &sale.id,
        &[SaleLineInput {
            product: id(ProductId::new("soap")),
            quantity: 4,
        }],
        &van,
        november_ms(),
    );
    assert!(
        matches!(too_many, Err(DomainError::ReturnExceedsSold { .. })),
        "{too_many:?}"
    );
    let over = record_payment(doc, ledger, &sale.id, 1_456, "cash", november_ms());
    assert!(
        matches!(
            over,
            Err(DomainError::Overpayment {
                due_cents: 1_455,
                ..
            })
        ),
        "{over:?}"
    );
    record_payment(doc, ledger, &sale.id, 1_455, "cash", november_ms()).expect("pay");
    let status = &sale_statuses(&read_ledger(ledger, None))[&sale.id];
    assert_eq!(
        (status.state, status.due_cents, status.paid_cents),
        (SaleState::Paid, 1_455, 1_455)
    );
    assert!(status.conflicts.is_empty());
}

#[test]
fn applying_a_sale_twice_moves_stock_once() {
    let mut world = World::new();
    let sale = world.sell("tab-a1", &[(0, 3), (1, 1)]);
    let van = id(LocationId::new("van-ana"));
    let stock = world.stocks.get_mut(&van).expect("stock");
    assert_eq!(
        apply_sale_to_stock(stock, &sale).expect("apply"),
        vec![MoveOutcome::Applied; 2]
    );
    assert_eq!(
        apply_sale_to_stock(stock, &sale).expect("apply"),
        vec![MoveOutcome::AlreadyApplied; 2]
    );
    assert_eq!(stock_level(stock, &world.products[0]).expect("level"), -3);
    assert_eq!(stock_level(stock, &world.products[1]).expect("level"), -1);
    let wrong = world
        .stocks
        .get_mut(&id(LocationId::new("van-bo")))
        .expect("stock");
    assert!(matches!(
        apply_sale_to_stock(wrong, &sale),
        Err(DomainError::WrongLocation { .. })
    ));
}

#[test]
fn concurrent_sales_on_two_devices_subtract_from_one_counter() {
    let mut world = World::new();
    let van = id(LocationId::new("van-ana"));
    let soap = world.products[0].clone();
    let load = office_load("delivery-1", "delivery-1", &soap, 10, november_ms());
    move_stock(world.stocks.get_mut(&van).expect("stock"), &[load]).expect("load");
    let mut stock_a1 = replica(&world.stocks[&van], 1, 0);
    let mut stock_a2 = replica(&world.stocks[&van], 2, 0);
    let one = world.sell("tab-a1", &[(0, 4)]);
    let two = world.sell("tab-a2", &[(0, 5)]);
    apply_sale_to_stock(&mut stock_a1, &one).expect("apply");
    apply_sale_to_stock(&mut stock_a2, &two).expect("apply");
    sync_pair(&mut stock_a1, &mut stock_a2);
    assert_eq!(stock_level(&stock_a1, &soap).expect("level"), 1);
    assert_eq!(stock_a1.get_heads(), stock_a2.get_heads());
    assert!(read_stock(&stock_a1).violations.is_empty());
}

#[test]
fn transfers_move_stock_between_locations() {
    let mut world = World::new();
    let soap = world.products[0].clone();
    let mut warehouse = world
        .stocks
        .remove(&id(LocationId::new("wh-main")))
        .expect("stock");
    let van = world
        .stocks
        .get_mut(&id(LocationId::new("van-ana")))
        .expect("stock");
    let outcome = transfer_stock(
        &mut warehouse,
        van,
        "transfer-7",
        &soap,
        6,
        "office",
        november_ms(),
    )
    .expect("transfer");
    assert_eq!(outcome, (MoveOutcome::Applied, MoveOutcome::Applied));
    let again = transfer_stock(
        &mut warehouse,
        van,
        "transfer-7",
        &soap,
        6,
        "office",
        november_ms(),
    )
    .expect("transfer");
    assert_eq!(
        again,
        (MoveOutcome::AlreadyApplied, MoveOutcome::AlreadyApplied)
    );
    assert_eq!(stock_level(&warehouse, &soap).expect("level"), -6);
    assert_eq!(stock_level(van, &soap).expect("level"), 6);
}

#[test]
fn oversell_is_recorded_once_then_updated_then_cleared() {
    let mut world = World::new();
    let van = id(LocationId::new("van-ana"));
    let soap = world.products[0].clone();
    let mut server = world.stocks.remove(&van).expect("stock");
    move_stock(
        &mut server,
        &[office_load(
            "load-1",
            "load-1",
            &soap,
            5,
            november_ms() - 10,
        )],
    )
    .expect("load");
    let mut stock_a1 = replica(&server, 1, 0);
    let mut stock_a2 = replica(&server, 2, 0);
    let one = world.sell("tab-a1", &[(0, 4)]);
    let two = world.sell("tab-a2", &[(0, 3)]);
    apply_sale_to_stock(&mut stock_a1, &one).expect("apply");
    apply_sale_to_stock(&mut stock_a2, &two).expect("apply");
    server.merge(&mut stock_a1).expect("merge");
    server.merge(&mut stock_a2).expect("merge");

    let view = read_stock(&server);
    let alerts = detect_oversells(&view);
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert.level, -2);
    assert_eq!(
        alert.movements.len(),
        1,
        "only the sale that crossed zero: {alert:?}"
    );
    let changes =
        record_oversell_alerts(&mut server, &view, &alerts, november_ms()).expect("record");
    assert_eq!(changes.opened, vec![alert.id.clone()]);
    // Detecting again changes nothing and writes nothing.
    let heads = server.get_heads();
    let view = read_stock(&server);
    let again = record_oversell_alerts(
        &mut server,
        &view,
        &detect_oversells(&view),
        november_ms() + 1,
    )
    .expect("record");
    assert!(again.is_empty());
    assert_eq!(server.get_heads(), heads);

    // A third sale deepens the same oversell: the same alert is updated.
    let three = world.sell("tab-a1", &[(0, 1)]);
    let later = Sale {
        recorded_at_ms: november_ms() + 5,
        ..three
    };
    apply_sale_to_stock(&mut server, &later).expect("apply");
    let view = read_stock(&server);
    let alerts = detect_oversells(&view);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].id, alert.id);
    assert_eq!(
        alerts[0].authors,
        vec!["tab-a1".to_string(), "tab-a2".to_string()]
    );
    let changes =
        record_oversell_alerts(&mut server, &view, &alerts, november_ms() + 2).expect("record");
    assert_eq!(changes.updated, vec![alert.id.clone()]);

    // A load brings the level back: the alert is cleared, not deleted.
    move_stock(
        &mut server,
        &[office_load(
            "load-2",
            "load-2",
            &soap,
            10,
            november_ms() + 100,
        )],
    )
    .expect("load");
    let view = read_stock(&server);
    assert!(detect_oversells(&view).is_empty());
    let changes =
        record_oversell_alerts(&mut server, &view, &[], november_ms() + 3).expect("record");
    assert_eq!(changes.cleared, vec![alert.id.clone()]);
    let view = read_stock(&server);
    assert_eq!(view.alerts[&alert.id].status, AlertStatus::Cleared);
    assert!(view.violations.is_empty(), "{:?}", view.violations);
}

#[test]
fn strings_written_as_text_objects_by_js_read_back() {
    let mut world = World::new();
    let sale = world.sell("tab-a1", &[(0, 2)]);
    let ana = world.sellers[0].clone();
    let ledger = world.ledgers.get_mut(&ana).expect("ledger");
    let sales = ledger.get(ROOT, "sales").expect("get").expect("sales").1;
    let map = ledger
        .get(&sales, sale.id.to_string())
        .expect("get")
        .expect("sale")
        .1;
    // What @automerge/automerge 3.x writes for a JS string: a Text object.
    let mut tx = ledger.transaction();
    let text = tx.put_object(&map, "customer", ObjType::Text).expect("put");
    tx.splice_text(&text, 0, 0, "shop-9").expect("splice");
    let currency = tx.put_object(&map, "currency", ObjType::Text).expect("put");
    tx.splice_text(&currency, 0, 0, "EUR").expect("splice");
    // And a JS number that happens to be stored as a float.
    tx.put(
        &map,
        "recorded_at_ms",
        automerge::ScalarValue::F64(november_ms() as f64),
    )
    .expect("put");
    tx.commit();
    let view = read_ledger(ledger, Some(&world.catalog_view));
    assert!(view.violations.is_empty(), "{:?}", view.violations);
    assert_eq!(view.sales.get(&sale.id), Some(&sale));
}

#[test]
fn sales_between_filters_and_orders_by_time() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let device = world.device("tab-a1");
    let mut ids = Vec::new();
    for offset in [30, 10, 20] {
        let input = world.sale_input(&device, &[(0, 1)], november_ms() + offset);
        let sale = world.try_sale(&device, &ana, &input).expect("sale");
        ids.push(sale.id);
    }
    let view = read_ledger(&world.ledgers[&ana], None);
    let found: Vec<_> = sales_between(&view, november_ms() + 10, november_ms() + 30)
        .into_iter()
        .map(|sale| sale.id.clone())
        .collect();
    assert_eq!(found, vec![ids[1].clone(), ids[2].clone()]);
}

#[test]
fn every_document_says_its_kind_and_owner() {
    let world = World::new();
    let meta = doc_meta(&world.ledgers[&world.sellers[1]]).expect("meta");
    assert_eq!(
        (meta.kind, meta.owner.as_str(), meta.period),
        (DocKind::Ledger, "bo", Some(world.period))
    );
    assert_eq!(
        doc_meta(&world.catalog).expect("meta").kind,
        DocKind::Catalog
    );
    let stock = doc_meta(&world.stocks[&id(LocationId::new("van-bo"))]).expect("meta");
    assert_eq!(
        (stock.kind, stock.owner.as_str()),
        (DocKind::Stock, "van-bo")
    );
    let device = doc_meta(&world.device_docs[&world.device("tab-b1")]).expect("meta");
    assert_eq!(
        (device.kind, device.owner.as_str(), device.schema_version),
        (DocKind::Device, "tab-b1", SCHEMA_VERSION)
    );
    assert!(doc_meta(&Automerge::new()).is_err());
    let wrong = read_device(&world.catalog);
    assert!(
        matches!(wrong, Err(DomainError::WrongDocument { .. })),
        "{wrong:?}"
    );
}

#[test]
fn the_catalog_directory_finds_each_document_by_kind_owner_and_period() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let key = DocKey::of(&doc_meta(&world.ledgers[&ana]).expect("meta"));
    assert_eq!(key, DocKey::ledger(&ana, world.period));
    assert_eq!(key.to_string(), "ledger/ana/2026-11");
    assert_eq!(
        DocKey::stock(&id(LocationId::new("van-bo")), world.period).to_string(),
        "stock/van-bo/2026-11"
    );
    put_directory_entry(
        &mut world.catalog,
        &key,
        "automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ",
    )
    .expect("put");
    let view = read_catalog(&world.catalog);
    assert_eq!(
        view.find_doc(&key),
        Some("automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ")
    );
    assert_eq!(
        view.find_doc(&DocKey::device(&world.device("tab-a1"))),
        None
    );
    assert!(view.violations.is_empty(), "{:?}", view.violations);
}

/// The test world, with Ana's van's November stock taken out of it after
/// the office loaded 10 soaps into it.
fn van_loaded_with_ten_soaps() -> (World, LocationId, ProductId, automerge::Automerge) {
    let mut world = World::new();
    let van = id(LocationId::new("van-ana"));
    let soap = world.products[0].clone();
    let mut november = world.stocks.remove(&van).expect("stock");
    let load = office_load("load-1", "delivery-1", &soap, 10, november_ms());
    move_stock(&mut november, &[load]).expect("load");
    (world, van, soap, november)
}

#[test]
fn stock_rolls_over_to_a_new_month_and_carries_late_sales_once() {
    let (mut world, _, soap, mut november) = van_loaded_with_ten_soaps();
    let first = world.sell("tab-a1", &[(0, 3)]);
    apply_sale_to_stock(&mut november, &first).expect("apply");
    // A device that will stay offline across the month boundary.
    let mut offline = replica(&november, 7, 0);

    let mut december = open_next_stock_period(&november).expect("open");
    let meta = doc_meta(&december).expect("meta");
    assert_eq!(meta.period, Some(Period::parse("2026-12").expect("period")));
    assert_eq!(stock_level(&december, &soap).expect("level"), 7);
    assert_eq!(
        stock_level(&december, &world.products[1]).expect("level"),
        0
    );

    // Late sales reach November's document after December was opened.
    let late = world.sell("tab-a1", &[(0, 2)]);
    apply_sale_to_stock(&mut offline, &late).expect("apply");
    november.merge(&mut offline).expect("merge");
    let december_ms = Period::parse("2026-12").expect("period").start_ms();
    let carried =
        carry_late_movements(&november, &mut december, december_ms + 1_000).expect("carry");
    assert_eq!(carried.len(), 1);
    assert_eq!(carried[0].delta, -2);
    assert_eq!(stock_level(&december, &soap).expect("level"), 5);
    let heads = december.get_heads();
    assert!(
        carry_late_movements(&november, &mut december, november_ms())
            .expect("carry")
            .is_empty()
    );
    assert_eq!(december.get_heads(), heads, "carrying again writes nothing");

    let later = world.sell("tab-a1", &[(0, 6)]);
    apply_sale_to_stock(&mut november, &later).expect("apply");
    carry_late_movements(&november, &mut december, december_ms + 3_000).expect("carry");
    assert_eq!(stock_level(&december, &soap).expect("level"), -1);
    let view = read_stock(&december);
    assert!(view.violations.is_empty(), "{:?}", view.violations);
    let alerts = detect_oversells(&view);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].movements, vec!["carry/soap/2".to_string()]);
}

#[test]
fn a_late_sale_that_moves_where_an_oversell_started_updates_the_same_alert() {
    let mut world = World::new();
    let van = id(LocationId::new("van-ana"));
    let soap = world.products[0].clone();
    let mut server = world.stocks.remove(&van).expect("stock");
    let at = |offset: i64| november_ms() + offset;
    move_stock(
        &mut server,
        &[office_load("load-1", "load-1", &soap, 5, at(0))],
    )
    .expect("load");
    let sale_at = |sale: Sale, offset: i64| Sale {
        recorded_at_ms: at(offset),
        ..sale
    };
    let a = sale_at(world.sell("tab-a1", &[(0, 4)]), 20);
    let b = sale_at(world.sell("tab-a2", &[(0, 3)]), 30);
    apply_sale_to_stock(&mut server, &a).expect("apply");
    apply_sale_to_stock(&mut server, &b).expect("apply");
    let view = read_stock(&server);
    let first = detect_oversells(&view);
    assert_eq!(first[0].movements, vec![format!("{}/0", b.id)]);
    record_oversell_alerts(&mut server, &view, &first, at(40)).expect("record");

    // A sale made earlier on an offline device arrives late.
    let late = sale_at(world.sell("tab-b1", &[(0, 2)]), 10);
    let late = Sale {
        location: van.clone(),
        ..late
    };
    apply_sale_to_stock(&mut server, &late).expect("apply");
    let view = read_stock(&server);
    let second = detect_oversells(&view);
    assert_eq!(
        second[0].movements,
        vec![format!("{}/0", a.id), format!("{}/0", b.id)]
    );
    assert_ne!(
        second[0].id, first[0].id,
        "detection alone derives a new id"
    );
    let changes = record_oversell_alerts(&mut server, &view, &second, at(50)).expect("record");
    assert_eq!(
        changes,
        AlertChanges {
            updated: vec![first[0].id.clone()],
            ..AlertChanges::default()
        }
    );
    let view = read_stock(&server);
    assert_eq!(view.alerts.len(), 1, "still one alert for this oversell");
    assert_eq!(view.alerts[&first[0].id].alert.level, -4);
    assert_eq!(view.alerts[&first[0].id].first_detected_at_ms, at(40));
}

#[test]
fn a_transfer_to_a_location_without_the_counter_writes_nothing() {
    let world = World::new();
    let soap = world.products[0].clone();
    let mut warehouse = world.stocks[&id(LocationId::new("wh-main"))].clone();
    let tenant = world.tenant.clone();
    let mut empty_van =
        create_stock_doc(&tenant, &id(LocationId::new("van-new")), world.period, &[])
            .expect("stock");
    let heads = warehouse.get_heads();
    let result = transfer_stock(
        &mut warehouse,
        &mut empty_van,
        "transfer-9",
        &soap,
        2,
        "office",
        november_ms(),
    );
    assert!(
        matches!(result, Err(DomainError::NoCounter(_))),
        "{result:?}"
    );
    assert_eq!(warehouse.get_heads(), heads);
    assert_eq!(
        add_stock_products(&mut empty_van, std::slice::from_ref(&soap)).expect("add"),
        1
    );
    transfer_stock(
        &mut warehouse,
        &mut empty_van,
        "transfer-9",
        &soap,
        2,
        "office",
        november_ms(),
    )
    .expect("transfer");
    assert_eq!(stock_level(&empty_van, &soap).expect("level"), 2);
}

/// Figures for docs/data-model.md; run in release:
/// `SALES=3000 cargo test --release --lib measure_a_month -- --ignored --nocapture`
/// (debug builds of automerge check list seeks the slow way and are much slower).
#[test]
#[ignore = "measurement, run by hand in release"]
fn measure_a_month_of_sales_in_one_ledger() {
    let mut world = World::new();
    let ana = world.sellers[0].clone();
    let started = std::time::Instant::now();
    let mut last = None;
    let count: usize = std::env::var("SALES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    for n in 0..count {
        last = Some(world.sell(
            if n % 2 == 0 { "tab-a1" } else { "tab-a2" },
            &[(0, 1), (1, 2)],
        ));
    }
    println!("record {count} sales: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let view = read_ledger(&world.ledgers[&ana], Some(&world.catalog_view));
    println!(
        "read_ledger 3000: {:?} ({} sales)",
        started.elapsed(),
        view.sales.len()
    );
    let a1 = world.device("tab-a1");
    let started = std::time::Instant::now();
    let sale = last.expect("sale");
    record_payment(
        world.device_docs.get_mut(&a1).expect("doc"),
        world.ledgers.get_mut(&ana).expect("ledger"),
        &sale.id,
        1,
        "cash",
        november_ms(),
    )
    .expect("pay");
    println!("one payment: {:?}", started.elapsed());
    let bytes = world.ledgers[&ana].save();
    println!("ledger bytes: {}", bytes.len());
    let started = std::time::Instant::now();
    Automerge::load(&bytes).expect("load");
    println!("load: {:?}", started.elapsed());
}

#[test]
fn move_stock_refuses_a_bad_id_or_sign_and_writes_nothing() {
    let world = World::new();
    let soap = world.products[0].clone();
    let mut stock = world.stocks[&id(LocationId::new("van-ana"))].clone();
    let heads = stock.get_heads();
    let movement = |id: &str, kind, delta| Movement {
        kind,
        delta,
        ..office_load(id, "delivery-1", &soap, 1, november_ms())
    };
    let bad_id = |result| matches!(result, Err(DomainError::BadMovementId(_)));
    let wrong_sign = |result| matches!(result, Err(DomainError::WrongSign { .. }));
    let longest = "m".repeat(MOVEMENT_ID_BYTES_MAX);
    assert!(bad_id(move_stock(
        &mut stock,
        &[movement("", MovementKind::Load, 1)]
    )));
    let too_long = format!("{longest}m");
    assert!(bad_id(move_stock(
        &mut stock,
        &[movement(&too_long, MovementKind::Load, 1)]
    )));
    // No kind moves zero units; loads, returns and transfers in add, sales
    // and transfers out take away.
    for kind in [
        MovementKind::Load,
        MovementKind::Return,
        MovementKind::TransferIn,
        MovementKind::Sale,
        MovementKind::TransferOut,
        MovementKind::Adjustment,
        MovementKind::Opening,
        MovementKind::CarryOver,
    ] {
        assert!(
            wrong_sign(move_stock(&mut stock, &[movement("m-0", kind, 0)])),
            "{kind:?}"
        );
    }
    for kind in [
        MovementKind::Load,
        MovementKind::Return,
        MovementKind::TransferIn,
    ] {
        assert!(
            wrong_sign(move_stock(&mut stock, &[movement("m-1", kind, -1)])),
            "{kind:?}"
        );
    }
    for kind in [MovementKind::Sale, MovementKind::TransferOut] {
        assert!(
            wrong_sign(move_stock(&mut stock, &[movement("m-2", kind, 1)])),
            "{kind:?}"
        );
    }
    assert_eq!(
        stock.get_heads(),
        heads,
        "a refused movement writes nothing"
    );
    move_stock(&mut stock, &[movement(&longest, MovementKind::Load, 1)])
        .expect("an id of exactly the limit");
    assert_eq!(stock_level(&stock, &soap).expect("level"), 1);
}

#[test]
fn move_stock_refuses_a_level_that_is_not_a_counter() {
    let world = World::new();
    let soap = world.products[0].clone();
    let mut stock = world.stocks[&id(LocationId::new("van-ana"))].clone();
    let (_, levels) = stock
        .get(ROOT, "levels")
        .expect("read")
        .expect("a levels map");
    let mut tx = stock.transaction();
    tx.put(&levels, soap.as_str(), 5_i64).expect("put");
    tx.commit();
    let load = office_load("load-1", "delivery-1", &soap, 1, november_ms());
    assert!(matches!(
        move_stock(&mut stock, &[load]),
        Err(DomainError::NoCounter(product)) if product == soap
    ));
}

#[test]
fn a_level_two_replicas_created_at_once_is_reported_and_a_selected_read_sees_the_levels() {
    let world = World::new();
    let mut stock = world.stocks[&id(LocationId::new("van-ana"))].clone();
    let fresh = read_stock(&stock);
    assert!(!fresh.levels.is_empty());
    assert!(fresh.violations.is_empty(), "{:?}", fresh.violations);
    let selected = read_stock_selected(&stock, KeySelection::All, KeySelection::All);
    assert_eq!(selected.levels, fresh.levels);

    let new_product = id(ProductId::new("shampoo"));
    let mut other = replica(&stock, 9, 0);
    add_stock_products(&mut stock, std::slice::from_ref(&new_product)).expect("add");
    add_stock_products(&mut other, &[new_product]).expect("add");
    stock.merge(&mut other).expect("merge");
    let view = read_stock(&stock);
    assert!(
        view.violations
            .iter()
            .any(|v| v.key == "shampoo"
                && matches!(v.problem, Problem::KeyWrittenTwice { copies: 2 })),
        "{:?}",
        view.violations
    );
}

#[test]
fn a_product_the_next_month_lacks_is_carried_with_its_level() {
    let (world, van, soap, november) = van_loaded_with_ten_soaps();
    let december_period = Period::parse("2026-12").expect("period");
    let mut december = create_stock_doc(&world.tenant, &van, december_period, &[]).expect("stock");
    let carried =
        carry_late_movements(&november, &mut december, december_period.start_ms()).expect("carry");
    assert_eq!(carried.len(), 1, "{carried:?}");
    assert_eq!(stock_level(&december, &soap).expect("level"), 10);
}
