//! Backfill throughput (`ventas export`'s code path: load from sled, build
//! rows, delete the batch's old rows, binary COPY into the tables,
//! export_state) against a
//! raw binary COPY of the very same rows straight into the same tables of
//! the same Postgres, measured in the same run.
//!
//! Needs Postgres on 127.0.0.1:5432 (user postgres, database `test`); it
//! creates and drops its own databases. Run:
//! `cargo bench --bench export_backfill` (env `EXPORT_BENCH_DOCS`,
//! `EXPORT_BENCH_SALES` change the size).

use std::sync::Arc;
use std::time::Instant;

use ventas::export::backfill::{backfill, copy_into, load_doc, BackfillConfig};
use ventas::export::{self, build_rows, Row, Table};
use ventas_storage::{DocStore, SledStore};
use ventas_sync_protocol::ids::DocumentId;

#[path = "support/export_world.rs"]
mod world;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn create_db() -> (String, tokio_postgres::Client) {
    let name = format!("ventas_bench_{:016x}", rand::random::<u64>());
    let admin = export::connect(ADMIN_URL).await.expect("connect");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create db");
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=disable");
    let mut client = export::connect(&url).await.expect("connect");
    export::migrate(&mut client).await.expect("migrate");
    (name, client)
}

async fn drop_db(name: &str) {
    let admin = export::connect(ADMIN_URL).await.expect("connect");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop db");
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let docs = env_usize("EXPORT_BENCH_DOCS", 200);
    let sales = env_usize("EXPORT_BENCH_SALES", 300);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SledStore::open(&dir.path().join("data")).expect("store"));
    let mut world = world::World::new();
    world.sell(sales);
    let saved = world.ledger.save();
    let ids: Vec<DocumentId> = (0..docs)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            DocumentId::from_bytes(key)
        })
        .collect();
    for id in &ids {
        store.append_chunk(id.as_bytes(), &saved).expect("append");
    }
    store.flush().expect("flush");
    let store: Arc<dyn DocStore> = store;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // The same rows, built beforehand for the raw COPY (timed apart:
        // what loading and building alone cost).
        let started = Instant::now();
        let exports: Vec<_> = ids
            .iter()
            .map(|id| {
                let doc = load_doc(store.as_ref(), id).expect("load").expect("doc");
                build_rows(id, &doc, &[]).expect("rows")
            })
            .collect();
        let rows_total: usize = exports.iter().map(|e| e.row_count()).sum();
        let build_secs = started.elapsed().as_secs_f64();
        let doc = load_doc(store.as_ref(), &ids[0]).expect("load").expect("doc");
        let t = Instant::now();
        for _ in 0..5 { let _ = load_doc(store.as_ref(), &ids[0]); }
        let load_ms = t.elapsed().as_secs_f64() * 200.0;
        let t = Instant::now();
        for _ in 0..5 { let _ = ventas::domain::read_ledger(&doc, None); }
        let read_ms = t.elapsed().as_secs_f64() * 200.0;
        let t = Instant::now();
        for _ in 0..5 { let _ = build_rows(&ids[0], &doc, &[]); }
        let rows_ms = t.elapsed().as_secs_f64() * 200.0;
        println!("one doc: load {load_ms:.1} ms, read_ledger {read_ms:.1} ms, build_rows {rows_ms:.1} ms");

        let (raw_db, mut raw) = create_db().await;
        let started = Instant::now();
        let tx = raw.transaction().await.expect("tx");
        for table in Table::ALL {
            let rows: Vec<&Row> = exports
                .iter()
                .filter_map(|e| e.rows.get(&table))
                .flatten()
                .collect();
            if !rows.is_empty() {
                copy_into(&tx, table.name(), table, &rows).await.expect("copy");
            }
        }
        tx.commit().await.expect("commit");
        let raw_secs = started.elapsed().as_secs_f64();
        drop(raw);
        drop_db(&raw_db).await;

        let (backfill_db, mut client) = create_db().await;
        let started = Instant::now();
        let report = backfill(store.clone(), &mut client, BackfillConfig::default(), |_| {})
            .await
            .expect("backfill");
        let backfill_secs = started.elapsed().as_secs_f64();
        assert_eq!(report.rows as usize, rows_total);
        drop(client);
        drop_db(&backfill_db).await;

        let raw_rate = rows_total as f64 / raw_secs;
        let backfill_rate = rows_total as f64 / backfill_secs;
        println!("documents: {docs} ledgers of {sales} sales (half paid); rows: {rows_total}");
        println!("raw binary COPY of the rows:  {raw_secs:.2} s, {raw_rate:.0} rows/s");
        println!(
            "backfill (load+build+COPY+upsert): {backfill_secs:.2} s, {backfill_rate:.0} rows/s, {:.1} documents/s",
            docs as f64 / backfill_secs
        );
        println!(
            "load + build_rows alone, one thread: {build_secs:.2} s, {:.0} rows/s",
            rows_total as f64 / build_secs
        );
        println!("backfill / raw COPY = {:.2}", backfill_rate / raw_rate);
    });
}
