//! Criterion benchmarks of `export::build_rows`: a full export of a ledger
//! of 1,000 and 3,000 sales (half of them paid), and the incremental export
//! of one more sale into each (what the live exporter does for a trickle of
//! sales).
//!
//! Run: `cargo bench --bench export_rows -- --quick`.

use std::hint::black_box;

use criterion::{criterion_group, BenchmarkId, Criterion};
use ventas::export::build_rows;
use ventas_sync_protocol::ids::DocumentId;

#[path = "support/export_world.rs"]
mod world;

fn rows(c: &mut Criterion) {
    let document_id = DocumentId::from_bytes([5; 16]);
    let mut group = c.benchmark_group("export_build_rows");
    group.sample_size(10);
    for sales in [1_000usize, 3_000] {
        let mut world = world::World::new();
        world.sell(sales);
        let before = world.ledger.get_heads();
        world.sell(1);
        let ledger = world.ledger;
        group.bench_with_input(BenchmarkId::new("full", sales), &ledger, |b, ledger| {
            b.iter(|| black_box(build_rows(&document_id, ledger, &[]).expect("rows")))
        });
        let heads = ledger.get_heads();
        // How fast the same records read with one `map_range` pass per
        // record map instead of one `get` per field (what a faster domain
        // reader would do); for comparison with `full`.
        group.bench_with_input(
            BenchmarkId::new("one_pass_scan", sales),
            &ledger,
            |b, ledger| {
                use automerge::ReadDoc;
                b.iter(|| {
                    let mut values = 0usize;
                    for collection in ["sales", "payments"] {
                        let (_, map) = ledger
                            .get(automerge::ROOT, collection)
                            .expect("get")
                            .expect("map");
                        for record in ledger.map_range(&map, ..) {
                            for field in ledger.map_range(record.id(), ..) {
                                values += 1;
                                if field.key == "lines" {
                                    for line in ledger.list_range(field.id(), ..) {
                                        values += ledger.map_range(line.id(), ..).count();
                                    }
                                }
                            }
                        }
                    }
                    black_box(values)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("diff_alone", sales),
            &ledger,
            |b, ledger| b.iter(|| black_box(ledger.diff(&before, &heads))),
        );
        group.bench_with_input(
            BenchmarkId::new("incremental_one_sale", sales),
            &ledger,
            |b, ledger| {
                b.iter(|| {
                    let export = build_rows(&document_id, ledger, &before).expect("rows");
                    assert!(!export.is_full());
                    black_box(export)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, rows);

fn main() {
    // Test runners list and smoke-run bench targets without `--bench`;
    // only `cargo bench` measures.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
