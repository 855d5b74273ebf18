//! The period keeper (`server::periods`): the server creates next month's
//! ledgers ahead and lists them, so a device offline on the 1st can sell;
//! it opens each location's next stock document at the start of a month
//! and carries late movements into it exactly once. The server's clock is
//! shifted with `period_clock_offset_ms`; everything else is real (sockets,
//! sled, the Rust client).

use ventas::client::DocHandle;
use ventas::config::ServerConfig;
use ventas::domain::*;
use ventas_storage::{DocStore, SledStore};

use crate::harness::*;
use crate::office::*;

/// How often the keeper runs in these tests.
const CHECK_INTERVAL_MS: u64 = 200;

/// A server config whose period keeper believes it is `at_ms`.
fn config_at(dir: &std::path::Path, at_ms: i64) -> ServerConfig {
    init_logs();
    let mut config = ServerConfig::for_test(dir.join("server"));
    config.period_check_interval_ms = CHECK_INTERVAL_MS;
    let real_ms = i64::try_from(ventas::now_ms()).expect("now fits");
    config.period_clock_offset_ms = at_ms - real_ms;
    config
}

/// Where a test's server listens (a port it keeps across restarts) and
/// where it and the devices keep their data.
struct Place {
    port: ReservedPort,
    url: String,
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Self {
        let port = ReservedPort::new();
        Self {
            url: port.url(),
            port,
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    /// [`config_at`] for this place.
    fn config_at(&self, at_ms: i64) -> ServerConfig {
        config_at(self.dir.path(), at_ms)
    }

    /// A server on this place's port.
    async fn start(&self, config: ServerConfig) -> ventas::server::RunningServer {
        self.port.start(config).await
    }

    /// Starts a server on `config` and sets up the office on it (device
    /// `tab-1`, receipt prefix `K1`).
    async fn start_office(&self, config: ServerConfig) -> (ventas::server::RunningServer, Office) {
        let server = self.start(config).await;
        let office = Office::set_up(&self.url, self.dir.path(), "tab-1", "K1").await;
        (server, office)
    }
}

/// Adds the seller `seller` called `name` to the catalog.
fn add_seller(catalog: &DocHandle, seller: &str, name: &str) {
    catalog
        .change(|doc| {
            put_seller(
                doc,
                &Seller {
                    id: id(SellerId::new, seller),
                    name: name.into(),
                },
            )
            .expect("seller")
        })
        .expect("change");
}

/// Waits until the catalog lists `key`; returns its URL.
async fn listed(catalog: &DocHandle, key: &DocKey) -> String {
    let wanted = key.clone();
    within(
        "the keeper to list the document",
        catalog.wait_until(move |doc| read_catalog(doc).find_doc(&wanted).is_some()),
    )
    .await
    .expect("client alive");
    catalog
        .read(|doc| read_catalog(doc).find_doc(key).map(str::to_string))
        .expect("read")
        .expect("listed")
}

fn directory(catalog: &DocHandle) -> std::collections::BTreeMap<String, String> {
    catalog
        .read(|doc| read_catalog(doc).directory)
        .expect("read")
}

/// Documents in the server's store (server stopped).
fn stored_documents(dir: &std::path::Path) -> u64 {
    let store = SledStore::open(&dir.join("server")).expect("store");
    store.doc_count().expect("count")
}

#[tokio::test]
async fn next_months_ledger_is_created_ahead_so_an_offline_device_can_sell_on_the_first() {
    let place = Place::new();
    let Place { url, dir, .. } = &place;
    let december = Period::parse("2026-12").expect("period");
    // Three days before December: inside PERIOD_OPEN_AHEAD_DAYS_DEFAULT.
    let config = place.config_at(december.start_ms() - 3 * 86_400_000);
    let (server, office) = place.start_office(config.clone()).await;
    let ana = id(SellerId::new, "ana");

    let december_key = DocKey::ledger(&ana, december);
    let december_url = listed(&office.catalog, &december_key).await;

    // The device syncs what it needs for December, then goes offline (the
    // server stops) and sells on the 1st.
    let tablet = device(url, dir.path(), "tab-1");
    let catalog = tablet.open_url(&office.catalog.url()).expect("open");
    let device_doc = tablet.open_url(&office.device.url()).expect("open");
    let ledger = tablet.open_url(&december_url).expect("open");
    for handle in [&catalog, &device_doc, &ledger] {
        within("the device to fetch", handle.ready())
            .await
            .expect("ready");
    }
    server.shutdown().await.expect("shutdown");
    let view = catalog.read(read_catalog).expect("read");
    let first_of_december = december.start_ms() + 9 * 3_600_000;
    let input = SaleInput {
        customer: id(CustomerId::new, "shop-9"),
        location: id(LocationId::new, "van-ana"),
        at_ms: first_of_december,
        lines: vec![SaleLineInput {
            product: id(ProductId::new, "soap"),
            quantity: 4,
        }],
    };
    let sale = change_both(&device_doc, &ledger, |device, ledger| {
        record_sale(device, ledger, &view, &input).expect("the sale fits December's ledger")
    });

    // Back online: the sale is acknowledged and valid.
    let server = place.start(config.clone()).await;
    within("the sale to be acknowledged", ledger.synced())
        .await
        .expect("synced");
    let read = ledger
        .read(|doc| read_ledger(doc, Some(&view)))
        .expect("read");
    assert!(read.violations.is_empty(), "{:?}", read.violations);
    assert_eq!(read.sales.len(), 1);
    assert_eq!(read.sales.get(&sale.id).map(|s| s.total_cents), Some(1_000));

    // More passes (and the one at restart) create nothing new.
    keeper_passes(&server, 2).await;
    let entries = directory(&office.catalog);
    assert_eq!(entries.get(&december_key.to_string()), Some(&december_url));
    let ledgers: Vec<&String> = entries
        .keys()
        .filter(|k| k.starts_with("ledger/"))
        .collect();
    assert_eq!(ledgers, ["ledger/ana/2026-11", "ledger/ana/2026-12"]);
    tablet.close().await.expect("close");
    office.close().await;
    server.shutdown().await.expect("shutdown");
    // The office's four documents and December's ledger.
    assert_eq!(stored_documents(dir.path()), 5);
}

#[tokio::test]
async fn the_next_stock_document_opens_at_closing_levels_and_takes_late_sales_once() {
    let place = Place::new();
    let november = Period::parse("2026-11").expect("period");
    let december = Period::parse("2026-12").expect("period");
    let soap = id(ProductId::new, "soap");
    let van = id(LocationId::new, "van-ana");

    // In mid-November the office sets up and loads 10 soap into the van.
    let in_november = place.config_at(november.start_ms() + 14 * 86_400_000);
    let (server, office) = place.start_office(in_november).await;
    office
        .stock
        .change(|doc| {
            let load = Movement {
                id: "load-1".into(),
                kind: MovementKind::Load,
                product: soap.clone(),
                delta: 10,
                record: "note-1".into(),
                author: "office".into(),
                at_ms: sale_time_ms(),
            };
            move_stock(doc, &[load]).expect("load")
        })
        .expect("change");
    within("the load saved", office.stock.synced())
        .await
        .expect("synced");
    server.shutdown().await.expect("shutdown");
    assert!(
        !directory(&office.catalog).contains_key(&DocKey::stock(&van, december).to_string()),
        "nothing opens December before it starts"
    );

    // December 2nd: the server opens December's stock at the closing level.
    let config = place.config_at(december.start_ms() + 86_400_000);
    let server = place.start(config.clone()).await;
    let december_key = DocKey::stock(&van, december);
    let december_url = listed(&office.catalog, &december_key).await;
    let next = office.client.open_url(&december_url).expect("open");
    within("December's stock", next.ready())
        .await
        .expect("ready");
    let view = next.read(read_stock).expect("read");
    assert_eq!(view.levels.get(&soap), Some(&10));
    let opening = view
        .movements
        .get("opening/soap")
        .expect("opening movement");
    assert_eq!((opening.kind, opening.delta), (MovementKind::Opening, 10));

    // A late November sale reaches the server; it is carried over once.
    office.sell(november.start_ms() + 29 * 86_400_000, &[("soap", 2)]);
    within("the late sale saved", office.stock.synced())
        .await
        .expect("synced");
    within(
        "the carry-over",
        next.wait_until(|doc| read_stock(doc).levels.get(&soap) == Some(&8)),
    )
    .await
    .expect("alive");
    keeper_passes(&server, 2).await;
    server.shutdown().await.expect("shutdown");
    // A restart forgets what the keeper remembered; still nothing new.
    let server = place.start(config).await;
    keeper_passes(&server, 2).await;
    within("December's stock synced", next.synced())
        .await
        .expect("synced");
    let view = next.read(read_stock).expect("read");
    let carried: Vec<&Movement> = view
        .movements
        .values()
        .filter(|m| m.kind == MovementKind::CarryOver)
        .collect();
    assert_eq!(carried.len(), 1, "{carried:?}");
    assert_eq!(
        (carried[0].id.as_str(), carried[0].delta),
        ("carry/soap/1", -2)
    );
    assert_eq!(view.levels.get(&soap), Some(&8));
    assert!(view.violations.is_empty(), "{:?}", view.violations);
    assert_eq!(
        directory(&office.catalog).get(&december_key.to_string()),
        Some(&december_url)
    );
    office.close().await;
    server.shutdown().await.expect("shutdown");
}

/// Ledgers of `period` listed in the catalog.
fn ledgers_listed(doc: &automerge::Automerge, period: Period) -> usize {
    let suffix = format!("/{period}");
    read_catalog(doc)
        .directory
        .keys()
        .filter(|key| key.starts_with("ledger/") && key.ends_with(&suffix))
        .count()
}

#[tokio::test]
async fn a_pass_creates_at_most_period_documents_per_pass_max() {
    let place = Place::new();
    let Place { dir, .. } = &place;
    let november = Period::parse("2026-11").expect("period");
    // Mid-November, one pass at start and no other during the test.
    let mut config = place.config_at(november.start_ms() + 14 * 86_400_000);
    config.period_check_interval_ms = 3_600_000;
    config.period_documents_per_pass_max = 1;
    let (mut server, office) = place.start_office(config.clone()).await;
    // Three more sellers in one change, none with a November ledger: the
    // keeper reacts to the change at once, within the same budget.
    office
        .catalog
        .change(|doc| {
            for (seller, name) in [("bea", "Bea"), ("cruz", "Cruz"), ("dia", "Dia")] {
                put_seller(
                    doc,
                    &Seller {
                        id: id(SellerId::new, seller),
                        name: name.into(),
                    },
                )
                .expect("seller");
            }
        })
        .expect("change");
    within("the sellers saved", office.catalog.synced())
        .await
        .expect("synced");
    within(
        "the keeper's reaction to list one more ledger",
        office
            .catalog
            .wait_until(move |doc| ledgers_listed(doc, november) >= 2),
    )
    .await
    .expect("alive");

    // Each restart runs one pass, which creates one ledger.
    for listed_after in [3, 4] {
        server.shutdown().await.expect("shutdown");
        server = place.start(config.clone()).await;
        // The pass at start (the only one: the interval is an hour) ended.
        within(
            "the pass at start",
            server.keeper_passes().wait_for(|ended| *ended >= 1),
        )
        .await
        .expect("the keeper runs");
        within(
            "the pass to list one more ledger",
            office
                .catalog
                .wait_until(move |doc| ledgers_listed(doc, november) >= listed_after),
        )
        .await
        .expect("alive");
        let listed = office
            .catalog
            .read(|doc| ledgers_listed(doc, november))
            .expect("read");
        assert_eq!(listed, listed_after, "one document per pass");
    }
    office.close().await;
    server.shutdown().await.expect("shutdown");
    // The office's four documents and the three ledgers.
    assert_eq!(stored_documents(dir.path()), 7);
}

#[tokio::test]
async fn a_catalog_with_a_broken_directory_entry_does_not_stop_the_others() {
    let place = Place::new();
    let november = Period::parse("2026-11").expect("period");
    let october = Period::parse("2026-10").expect("period");
    let config = place.config_at(november.start_ms() + 14 * 86_400_000);
    let (server, office) = place.start_office(config).await;
    add_seller(&office.catalog, "bob", "Bob");

    // Tenant "zeta" (looked at before "acme"): a van whose October stock
    // entry is not a document URL.
    let zoe = id(SellerId::new, "zoe");
    let van = id(LocationId::new, "van-zoe");
    let mut broken = create_catalog_doc(&id(TenantId::new, "zeta")).expect("catalog");
    put_seller(
        &mut broken,
        &Seller {
            id: zoe.clone(),
            name: "Zoe".into(),
        },
    )
    .expect("seller");
    put_location(
        &mut broken,
        &Location {
            id: van.clone(),
            name: "Zoe's van".into(),
            kind: LocationKind::Vehicle,
            seller: Some(zoe.clone()),
        },
    )
    .expect("location");
    put_directory_entry(&mut broken, &DocKey::stock(&van, october), "not-a-url").expect("entry");
    let broken = create_in(&office.client, broken);
    within("the broken catalog saved", broken.synced())
        .await
        .expect("synced");

    // Both tenants get their missing ledgers; the broken entry is skipped.
    let bob_url = listed(
        &office.catalog,
        &DocKey::ledger(&id(SellerId::new, "bob"), november),
    )
    .await;
    let zoe_url = listed(&broken, &DocKey::ledger(&zoe, november)).await;
    keeper_passes(&server, 2).await;
    let entries = directory(&broken);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        entries.get(&DocKey::ledger(&zoe, november).to_string()),
        Some(&zoe_url)
    );
    assert!(!entries.contains_key(&DocKey::stock(&van, november).to_string()));
    assert_eq!(
        directory(&office.catalog)
            .get(&DocKey::ledger(&id(SellerId::new, "bob"), november).to_string()),
        Some(&bob_url)
    );
    let (status, body) = http_get(server.addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    office.close().await;
    server.shutdown().await.expect("shutdown");
}
