//! The export against a real PostgreSQL: incremental exports after every
//! step of a random workload end in exactly the database a full export of
//! the final documents gives; `apply` is idempotent and refuses stale heads;
//! migrations re-run as no-ops.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use ventas::domain::*;
use ventas::export::{self, ExportError, Table};
use ventas::protocol::ids::DocumentId;

use crate::harness::{TestDatabase, POSTGRES_ADMIN_URL};

/// Every exported table and `export_state` (without `exported_at`), as
/// text, for comparing two databases.
pub async fn dump(client: &Client) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let rows = client.query(&table.dump_sql(), &[]).await.expect("dump");
        out.push((
            table.name().to_owned(),
            rows.iter().map(|row| row.get::<_, String>(0)).collect(),
        ));
    }
    let rows = client
        .query(
            "SELECT json_build_array(document_id, kind, tenant, owner, period, heads)::text \
             FROM export_state ORDER BY document_id",
            &[],
        )
        .await
        .expect("dump state");
    out.push((
        "export_state".into(),
        rows.iter().map(|row| row.get::<_, String>(0)).collect(),
    ));
    out
}

pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

fn id<T>(result: Result<T, IdError>) -> T {
    result.expect("valid test id")
}

pub fn november_ms() -> i64 {
    Period::parse("2026-11").expect("period").start_ms() + 3_600_000
}

/// One seller with two devices writing on two forks of the ledger and of
/// the van's stock, merged into the "server" copies that are exported.
pub struct Workload {
    pub rng: StdRng,
    pub catalog: Automerge,
    pub ledger: Automerge,
    pub stock: Automerge,
    forks: Vec<Fork>,
    products: Vec<ProductId>,
    van: LocationId,
    pub sales: Vec<RecordId>,
    clock_ms: i64,
}

struct Fork {
    device: Automerge,
    ledger: Automerge,
    stock: Automerge,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        let tenant = id(TenantId::new("acme"));
        let seller = id(SellerId::new("ana"));
        let van = id(LocationId::new("van-ana"));
        let catalog = sample_catalog(&SampleCatalog {
            tenant: "acme",
            sellers: &["ana"],
            customer: "shop-9",
            products: &[("soap", 250), ("rice", 1_199), ("oil", 705), ("salt", 99)],
            devices: &[("tab-1", "ana", "K1"), ("tab-2", "ana", "K2")],
        })
        .expect("catalog");
        let products: Vec<ProductId> = ["soap", "rice", "oil", "salt"]
            .into_iter()
            .map(|p| id(ProductId::new(p)))
            .collect();
        let period = Period::of_ms(november_ms());
        let ledger = create_ledger_doc(&tenant, &seller, period).expect("ledger");
        // "salt" has no counter yet: movements for it are invalid until the
        // office adds it.
        let stock = create_stock_doc(&tenant, &van, period, &products[..3]).expect("stock");
        let mut forks = Vec::new();
        for (name, prefix) in [("tab-1", "K1"), ("tab-2", "K2")] {
            let device = id(DeviceId::new(name));
            forks.push(Fork {
                device: create_device_doc(&tenant, &device, &seller, prefix).expect("device doc"),
                ledger: ledger.fork(),
                stock: stock.fork(),
            });
        }
        Self {
            rng: StdRng::seed_from_u64(seed),
            catalog,
            ledger,
            stock,
            forks,
            products,
            van,
            sales: Vec::new(),
            clock_ms: november_ms(),
        }
    }

    fn tick(&mut self) -> i64 {
        self.clock_ms += self.rng.gen_range(1_000..600_000);
        self.clock_ms
    }

    /// One random operation. Refusals by the domain (voiding a voided
    /// sale, overpaying, ...) are part of the workload and ignored.
    pub fn step(&mut self) {
        let at_ms = self.tick();
        let fork = self.rng.gen_range(0..self.forks.len());
        let catalog_view = read_catalog(&self.catalog);
        let choice = self.rng.gen_range(0..100);
        let pick_sale = |rng: &mut StdRng, sales: &[RecordId]| -> Option<RecordId> {
            (!sales.is_empty()).then(|| sales[rng.gen_range(0..sales.len())].clone())
        };
        match choice {
            0..=39 => {
                let first = self.rng.gen_range(0..3);
                let mut lines = vec![SaleLineInput {
                    product: self.products[first].clone(),
                    quantity: self.rng.gen_range(1..6),
                }];
                if self.rng.gen_bool(0.4) {
                    lines.push(SaleLineInput {
                        product: self.products[(first + 1) % 3].clone(),
                        quantity: self.rng.gen_range(1..4),
                    });
                }
                let f = &mut self.forks[fork];
                let input = SaleInput {
                    customer: id(CustomerId::new("shop-9")),
                    location: self.van.clone(),
                    at_ms,
                    lines,
                };
                if let Ok(sale) = record_sale(&mut f.device, &mut f.ledger, &catalog_view, &input) {
                    apply_sale_to_stock(&mut f.stock, &sale).expect("sale to stock");
                    self.sales.push(sale.id);
                }
            }
            40..=47 => {
                if let Some(sale) = pick_sale(&mut self.rng, &self.sales) {
                    let f = &mut self.forks[fork];
                    let _ = void_sale(&mut f.device, &mut f.ledger, &sale, "wrong", at_ms);
                }
            }
            48..=59 => {
                if let Some(sale) = pick_sale(&mut self.rng, &self.sales) {
                    let amount = self.rng.gen_range(1..2_000);
                    let f = &mut self.forks[fork];
                    let _ =
                        record_payment(&mut f.device, &mut f.ledger, &sale, amount, "cash", at_ms);
                }
            }
            60..=67 => {
                if let Some(sale) = pick_sale(&mut self.rng, &self.sales) {
                    let product = self.products[self.rng.gen_range(0..3)].clone();
                    let van = self.van.clone();
                    let f = &mut self.forks[fork];
                    let lines = [SaleLineInput {
                        product,
                        quantity: 1,
                    }];
                    if let Ok(back) =
                        record_return(&mut f.device, &mut f.ledger, &sale, &lines, &van, at_ms)
                    {
                        apply_return_to_stock(&mut f.stock, &back).expect("return to stock");
                    }
                }
            }
            68..=73 => {
                let product = self.products[self.rng.gen_range(0..4)].clone();
                let price = self.rng.gen_range(50..3_000);
                put_product(
                    &mut self.catalog,
                    &Product {
                        id: product.clone(),
                        name: format!("Product {product}"),
                        unit_price_cents: price,
                        currency: Currency::new("EUR").expect("currency"),
                        active: true,
                    },
                )
                .expect("price change");
            }
            74..=79 => {
                let view = read_stock(&self.stock);
                let alerts = detect_oversells(&view);
                record_oversell_alerts(&mut self.stock, &view, &alerts, at_ms).expect("alerts");
            }
            80..=83 => self.raw_invalid_record(fork, at_ms),
            84..=86 => {
                let _ = add_stock_products(&mut self.stock, &self.products[3..]);
            }
            87..=89 => {
                let customer = format!("shop-{}", self.rng.gen_range(10..20));
                put_customer(
                    &mut self.catalog,
                    &Customer {
                        id: id(CustomerId::new(customer)),
                        name: "Another shop".into(),
                    },
                )
                .expect("customer");
            }
            _ => self.sync_fork(fork),
        }
        if self.rng.gen_bool(0.3) {
            self.merge_fork(fork);
        }
    }

    /// Records a device could not write through the domain: a void of a
    /// sale that does not exist yet (it becomes valid when that sale
    /// arrives), a sale whose total does not add up, a movement for a
    /// product without a counter, a payment in another currency.
    fn raw_invalid_record(&mut self, fork: usize, at_ms: i64) {
        let kind = self.rng.gen_range(0..4);
        let device = if fork == 0 { "tab-1" } else { "tab-2" };
        let seq: u64 = self.rng.gen_range(9_000..9_100);
        let f = &mut self.forks[fork];
        match kind {
            0 => {
                // The void takes the next number; the device's next sale
                // takes the one after, which the void already names.
                let highest = highest_seq_in_ledger(&f.ledger, &id(DeviceId::new(device)));
                let target = RecordId::new(id(DeviceId::new(device)), highest + 2);
                write_record(&mut f.ledger, "voids", device, highest + 1, |tx, map| {
                    tx.put(map, "sale", target.to_string())?;
                    tx.put(map, "reason", "early")?;
                    tx.put(map, "at_ms", at_ms)
                });
            }
            1 => {
                write_record(&mut f.ledger, "sales", device, seq, |tx, map| {
                    tx.put(map, "receipt", "X-1")?;
                    tx.put(map, "seller", "ana")?;
                    tx.put(map, "customer", "shop-9")?;
                    tx.put(map, "location", "van-ana")?;
                    tx.put(map, "recorded_at_ms", at_ms)?;
                    tx.put(map, "currency", "EUR")?;
                    let lines = tx.put_object(map, "lines", ObjType::List)?;
                    let line = tx.insert_object(&lines, 0, ObjType::Map)?;
                    tx.put(&line, "product", "soap")?;
                    tx.put(&line, "quantity", 2i64)?;
                    tx.put(&line, "unit_price_cents", 250i64)?;
                    tx.put(&line, "line_total_cents", 500i64)?;
                    tx.put(map, "total_cents", 999i64)
                });
            }
            2 => {
                let movements = f
                    .stock
                    .get(ROOT, "movements")
                    .expect("get")
                    .expect("movements")
                    .1;
                let mut tx = f.stock.transaction();
                let map = tx
                    .put_object(&movements, format!("raw/{seq}"), ObjType::Map)
                    .expect("raw movement");
                tx.put(&map, "kind", "load").expect("put");
                tx.put(&map, "product", "salt").expect("put");
                tx.put(&map, "delta", 5i64).expect("put");
                tx.put(&map, "record", "delivery-1").expect("put");
                tx.put(&map, "author", "office").expect("put");
                tx.put(&map, "at_ms", at_ms).expect("put");
                tx.commit();
            }
            _ => {
                let Some(sale) = self.sales.first().cloned() else {
                    return;
                };
                write_record(&mut f.ledger, "payments", device, seq, |tx, map| {
                    tx.put(map, "sale", sale.to_string())?;
                    tx.put(map, "amount_cents", 100i64)?;
                    tx.put(map, "currency", "USD")?;
                    tx.put(map, "method", "cash")?;
                    tx.put(map, "at_ms", at_ms)
                });
            }
        }
    }

    fn merge_fork(&mut self, fork: usize) {
        let f = &mut self.forks[fork];
        self.ledger.merge(&mut f.ledger).expect("merge ledger");
        self.stock.merge(&mut f.stock).expect("merge stock");
    }

    fn sync_fork(&mut self, fork: usize) {
        self.merge_fork(fork);
        let f = &mut self.forks[fork];
        f.ledger.merge(&mut self.ledger).expect("sync ledger");
        f.stock.merge(&mut self.stock).expect("sync stock");
    }

    pub fn merge_all(&mut self) {
        for fork in 0..self.forks.len() {
            self.merge_fork(fork);
        }
    }
}

/// Writes `collection[device:seq]` raw, with its `device` and `seq`.
fn write_record(
    ledger: &mut Automerge,
    collection: &str,
    device: &str,
    seq: u64,
    fill: impl FnOnce(
        &mut automerge::transaction::Transaction<'_>,
        &automerge::ObjId,
    ) -> Result<(), automerge::AutomergeError>,
) {
    let container = ledger
        .get(ROOT, collection)
        .expect("get")
        .expect("container")
        .1;
    let key = RecordId::new(id(DeviceId::new(device)), seq).to_string();
    let mut tx = ledger.transaction();
    if tx.get(&container, key.as_str()).expect("get").is_some() {
        return;
    }
    let map = tx
        .put_object(&container, key.as_str(), ObjType::Map)
        .expect("record");
    tx.put(&map, "device", device).expect("put");
    tx.put(&map, "seq", i64::try_from(seq).expect("seq"))
        .expect("put");
    fill(&mut tx, &map).expect("fill record");
    tx.commit();
}

/// Builds and applies an incremental export from the heads in Postgres.
/// Returns whether it was incremental.
async fn export_step(client: &mut Client, document_id: &DocumentId, doc: &Automerge) -> bool {
    let since = export::exported_heads(client, document_id)
        .await
        .expect("exported heads");
    let rows =
        export::build_rows(document_id, doc, since.as_deref().unwrap_or(&[])).expect("build rows");
    export::apply(client, &rows, since.as_deref())
        .await
        .expect("apply");
    !rows.is_full()
}

fn documents() -> [DocumentId; 3] {
    [
        DocumentId::from_bytes([1; 16]),
        DocumentId::from_bytes([2; 16]),
        DocumentId::from_bytes([3; 16]),
    ]
}

async fn incremental_equals_full(seed: u64, steps: usize) {
    let incremental = TestDatabase::create().await;
    let full = TestDatabase::create().await;
    let mut inc = incremental.client().await;
    let mut fresh = full.client().await;
    export::migrate(&mut inc).await.expect("migrate");
    export::migrate(&mut fresh).await.expect("migrate");

    let [catalog_id, ledger_id, stock_id] = documents();
    let mut work = Workload::new(seed);
    let mut incremental_exports = 0;
    for step in 0..steps {
        work.step();
        if step % 3 == 0 || step + 1 == steps {
            for (document_id, doc) in [
                (&catalog_id, &work.catalog),
                (&ledger_id, &work.ledger),
                (&stock_id, &work.stock),
            ] {
                if export_step(&mut inc, document_id, doc).await {
                    incremental_exports += 1;
                }
            }
        }
    }
    work.merge_all();
    for (document_id, doc) in [
        (&catalog_id, &work.catalog),
        (&ledger_id, &work.ledger),
        (&stock_id, &work.stock),
    ] {
        export_step(&mut inc, document_id, doc).await;
        let all = export::build_rows(document_id, doc, &[]).expect("full rows");
        export::apply(&mut fresh, &all, None)
            .await
            .expect("apply full");
    }

    let got = dump(&inc).await;
    let want = dump(&fresh).await;
    for ((table, got_rows), (_, want_rows)) in got.iter().zip(&want) {
        assert_eq!(got_rows, want_rows, "seed {seed}: table {table} differs");
    }
    // Not vacuous: the workload produced every kind of row, and most
    // exports took the incremental path.
    for table in [
        "sales",
        "sale_lines",
        "payments",
        "stock_movements",
        "invalid_records",
    ] {
        assert!(
            count(&fresh, table).await > 0,
            "seed {seed}: no rows in {table}"
        );
    }
    assert!(
        incremental_exports > steps / 3,
        "seed {seed}: only {incremental_exports} incremental exports"
    );
    // The document's own reading agrees with the tables.
    let view = read_ledger(&work.ledger, None);
    assert_eq!(count(&inc, "sales").await, view.sales.len() as i64);
    let stock = read_stock(&work.stock);
    for (product, level) in &stock.levels {
        let row = inc
            .query_one(
                "SELECT level FROM stock_levels WHERE product_id = $1",
                &[&product.as_str()],
            )
            .await
            .expect("level");
        assert_eq!(
            row.get::<_, i64>(0),
            *level,
            "seed {seed}: level of {product}"
        );
    }
    drop(inc);
    drop(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_exports_of_a_random_workload_equal_a_full_export() {
    // Debug builds of automerge are slow (the workload, not the export,
    // takes most of the time): two seeds, one of which catches a reader
    // that forgets the corrections of a changed sale.
    for seed in [3, 1] {
        incremental_equals_full(seed, 75).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_same_export_twice_changes_nothing_and_stale_heads_conflict() {
    let db = TestDatabase::create().await;
    let mut client = db.client().await;
    export::migrate(&mut client).await.expect("migrate");
    let [_, ledger_id, _] = documents();
    let mut work = Workload::new(7);
    for _ in 0..20 {
        work.step();
    }
    work.merge_all();
    let first = export::build_rows(&ledger_id, &work.ledger, &[]).expect("rows");
    export::apply(&mut client, &first, None)
        .await
        .expect("apply");
    let before = dump(&client).await;
    export::apply(&mut client, &first, None)
        .await
        .expect("apply again is a no-op");
    assert_eq!(dump(&client).await, before);

    // More sales, built from the right heads, but applied as if the
    // document had never been exported: refused, nothing written.
    for _ in 0..10 {
        work.step();
    }
    work.merge_all();
    let next = export::build_rows(&ledger_id, &work.ledger, &first.heads).expect("rows");
    assert_ne!(next.heads, first.heads, "the workload changed the ledger");
    match export::apply(&mut client, &next, None).await {
        Err(ExportError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let stale = [automerge::ChangeHash([7; 32])];
    match export::apply(&mut client, &next, Some(&stale)).await {
        Err(ExportError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(dump(&client).await, before, "a refused apply wrote nothing");
    export::apply(&mut client, &next, Some(&first.heads))
        .await
        .expect("apply from the right heads");
    assert_eq!(
        export::exported_heads(&client, &ledger_id)
            .await
            .expect("heads"),
        Some(work.ledger.get_heads())
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_twice_and_on_a_database_at_the_latest_version_are_no_ops() {
    let db = TestDatabase::create().await;
    let mut client = db.client().await;
    export::migrate(&mut client).await.expect("first migration");
    let versions = count(&client, "refinery_schema_history").await;
    assert!(versions >= 1);
    export::migrate(&mut client)
        .await
        .expect("second migration");
    assert_eq!(count(&client, "refinery_schema_history").await, versions);
    // Another connection (another process, in production) finds it at the
    // latest version too.
    let mut other = db.client().await;
    export::migrate(&mut other)
        .await
        .expect("migration elsewhere");
    assert_eq!(count(&other, "refinery_schema_history").await, versions);
    assert_eq!(count(&other, "sales").await, 0);
    drop(client);
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_of_no_known_kind_exports_only_its_state() {
    let db = TestDatabase::create().await;
    let mut client = db.client().await;
    export::migrate(&mut client).await.expect("migrate");
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "hello", "world").expect("put");
    tx.commit();
    let document_id = DocumentId::from_bytes([9; 16]);
    let rows = export::build_rows(&document_id, &doc, &[]).expect("rows");
    assert_eq!(rows.row_count(), 0);
    export::apply(&mut client, &rows, None)
        .await
        .expect("apply");
    let kind: Option<String> = client
        .query_one("SELECT kind FROM export_state", &[])
        .await
        .expect("state")
        .get(0);
    assert_eq!(kind, None);
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_speaks_tls_when_required() {
    let url = format!("{POSTGRES_ADMIN_URL}?sslmode=require");
    let client = export::connect(&url).await.expect("connect with TLS");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the connection is encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_log_upserts_by_session_id() {
    use ventas::server::sessions::SyncSession;
    let db = TestDatabase::create().await;
    let mut client = db.client().await;
    export::migrate(&mut client).await.expect("migrate");
    let mut sessions: Vec<SyncSession> = (1..=3)
        .map(|id| SyncSession {
            id,
            peer_id: Some(format!("tab-{id}")),
            remote_addr: "127.0.0.1:9".into(),
            connected_at_ms: 1_000 * id,
            documents: vec!["doc".into()],
            ..SyncSession::default()
        })
        .collect();
    export::apply_sessions(&mut client, &sessions)
        .await
        .expect("apply");
    export::apply_sessions(&mut client, &sessions)
        .await
        .expect("apply again");
    assert_eq!(count(&client, "sync_sessions").await, 3);
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM sync_sessions WHERE disconnected_at IS NULL",
            &[],
        )
        .await
        .expect("open sessions")
        .get(0);
    assert_eq!(open, 3);
    // The session ends: its record is rewritten, not duplicated.
    sessions[1].disconnected_at_ms = Some(9_000);
    sessions[1].bytes_in = 42;
    export::apply_sessions(&mut client, &sessions[1..2])
        .await
        .expect("apply the ended session");
    assert_eq!(count(&client, "sync_sessions").await, 3);
    let row = client
        .query_one(
            "SELECT disconnected_at_ms, bytes_in, extract(epoch FROM disconnected_at)::bigint \
             FROM sync_sessions WHERE session_id = 2",
            &[],
        )
        .await
        .expect("session 2");
    assert_eq!(row.get::<_, Option<i64>>(0), Some(9_000));
    assert_eq!(row.get::<_, i64>(1), 42);
    assert_eq!(row.get::<_, i64>(2), 9);
    drop(client);
}
