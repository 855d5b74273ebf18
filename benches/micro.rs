//! Micro-benchmarks of the building blocks (criterion): wire codec per
//! message type, applying sync messages of 1 / 100 / 1,000 sales to
//! documents of 1k and 10k sales, storage append + flush (single and
//! batched), and the domain's `record_sale`.
//!
//! Run: `cargo bench --bench micro` (add `-- --quick` for a short pass).
//! Not part of the test suite; CI only builds it.

use std::hint::black_box;

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use ventas::domain::{
    create_device_doc, create_ledger_doc, read_catalog, record_sale, sample_catalog, CustomerId,
    DeviceId, LocationId, Period, ProductId, SaleInput, SaleLineInput, SampleCatalog, SellerId,
    TenantId,
};
use ventas_storage::{DocStore, SledStore};
use ventas_sync_protocol::ids::{DocumentId, PeerId, StorageId};
use ventas_sync_protocol::wire::{
    decode, encode, HeadsAt, Message, PeerMetadata, MESSAGE_BYTES_MAX_DEFAULT,
};

fn messages() -> Vec<(&'static str, Message)> {
    let sender_id = PeerId::new("device-0123456789abcdef");
    let target_id = PeerId::new("ventas-server");
    let document_id = DocumentId::from_bytes([7; 16]);
    let data = vec![0x42; 1024];
    vec![
        (
            "join",
            Message::Join {
                sender_id: sender_id.clone(),
                supported_protocol_versions: vec!["1".into()],
                peer_metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: false,
                }),
            },
        ),
        (
            "peer",
            Message::Peer {
                sender_id: target_id.clone(),
                target_id: sender_id.clone(),
                selected_protocol_version: "1".into(),
                peer_metadata: Some(PeerMetadata {
                    storage_id: Some(StorageId::new("a1b2c3d4e5f60718293a4b5c6d7e8f90")),
                    is_ephemeral: false,
                }),
            },
        ),
        (
            "request_1KiB",
            Message::Request {
                sender_id: sender_id.clone(),
                target_id: target_id.clone(),
                document_id,
                data: data.clone(),
            },
        ),
        (
            "sync_1KiB",
            Message::Sync {
                sender_id: sender_id.clone(),
                target_id: target_id.clone(),
                document_id,
                data: data.clone(),
            },
        ),
        (
            "doc_unavailable",
            Message::DocUnavailable {
                sender_id: target_id.clone(),
                target_id: sender_id.clone(),
                document_id,
            },
        ),
        (
            "ephemeral_1KiB",
            Message::Ephemeral {
                sender_id: sender_id.clone(),
                target_id: target_id.clone(),
                count: 42,
                session_id: "session".into(),
                document_id,
                data,
            },
        ),
        (
            "remote_heads_changed",
            Message::RemoteHeadsChanged {
                sender_id,
                target_id,
                document_id,
                new_heads: vec![(
                    StorageId::new("a1b2c3d4e5f60718293a4b5c6d7e8f90"),
                    HeadsAt {
                        heads: vec!["4NMNnkMhL8jXrdJ9jamS58PAVdXu".into()],
                        timestamp_ms: 1_764_300_000_000,
                    },
                )],
            },
        ),
    ]
}

fn wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    for (name, message) in messages() {
        let bytes = encode(&message);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| encode(black_box(&message)))
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| decode(black_box(&bytes), MESSAGE_BYTES_MAX_DEFAULT))
        });
    }
    group.finish();
}

/// One sale as a map of a few scalar fields under `sales`.
fn add_sales(doc: &mut Automerge, from: usize, count: usize) {
    let sales = match automerge::ReadDoc::get(doc, ROOT, "sales") {
        Ok(Some((_, id))) => id,
        _ => {
            let mut tx = doc.transaction();
            let id = tx
                .put_object(ROOT, "sales", ObjType::Map)
                .expect("sales map");
            tx.commit();
            id
        }
    };
    for n in from..from + count {
        let mut tx = doc.transaction();
        let sale = tx
            .put_object(&sales, format!("dev:{n:010}"), ObjType::Map)
            .expect("sale");
        tx.put(&sale, "customer", "shop-9").expect("put");
        tx.put(&sale, "total_cents", 1_250_i64).expect("put");
        tx.put(&sale, "at_ms", 1_764_300_000_000_i64 + n as i64)
            .expect("put");
        tx.commit();
    }
}

fn sync_until_quiet(a: &mut Automerge, b: &mut Automerge, sa: &mut State, sb: &mut State) {
    loop {
        let mut moved = false;
        if let Some(m) = a.generate_sync_message(sa) {
            b.receive_sync_message(sb, m).expect("receive");
            moved = true;
        }
        if let Some(m) = b.generate_sync_message(sb) {
            a.receive_sync_message(sa, m).expect("receive");
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn sync_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_apply");
    group.sample_size(10);
    for doc_sales in [1_000usize, 10_000] {
        let mut server = Automerge::new();
        add_sales(&mut server, 0, doc_sales);
        let mut device = server.fork();
        let (mut server_state, mut device_state) = (State::new(), State::new());
        sync_until_quiet(
            &mut server,
            &mut device,
            &mut server_state,
            &mut device_state,
        );
        for new_sales in [1usize, 100, 1_000] {
            let mut writer = device.fork();
            let mut writer_state = device_state.clone();
            add_sales(&mut writer, doc_sales, new_sales);
            let message = writer
                .generate_sync_message(&mut writer_state)
                .expect("message")
                .encode();
            group.throughput(Throughput::Elements(new_sales as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("doc_{doc_sales}"), format!("{new_sales}_sales")),
                &message,
                |b, message| {
                    b.iter_batched(
                        || (server.clone(), server_state.clone()),
                        |(mut doc, mut state)| {
                            let decoded =
                                automerge::sync::Message::decode(message).expect("decode");
                            doc.receive_sync_message(&mut state, decoded)
                                .expect("apply");
                            doc
                        },
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    group.finish();
}

fn storage(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage");
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("store");
    let chunk = vec![0x5a; 1024];
    let doc = [3u8; 16];
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_1KiB_then_flush", |b| {
        b.iter(|| {
            store.append_chunk(&doc, &chunk).expect("append");
            store.flush().expect("flush");
        })
    });
    group.bench_function("append_1KiB_no_flush", |b| {
        b.iter(|| store.append_chunk(&doc, &chunk).expect("append"))
    });
    const BATCH: usize = 64;
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("append_64x1KiB_then_one_flush", |b| {
        b.iter(|| {
            for n in 0..BATCH {
                let doc = [n as u8; 16];
                store.append_chunk(&doc, &chunk).expect("append");
            }
            store.flush().expect("flush");
        })
    });
    group.finish();
}

fn domain(c: &mut Criterion) {
    let tenant = TenantId::new("acme").expect("id");
    let seller = SellerId::new("ana").expect("id");
    let device = DeviceId::new("tab-1").expect("id");
    let van = LocationId::new("van-ana").expect("id");
    let soap = ProductId::new("soap").expect("id");
    let shop = CustomerId::new("shop-9").expect("id");
    let catalog = sample_catalog(&SampleCatalog {
        tenant: "acme",
        sellers: &["ana"],
        customer: "shop-9",
        products: &[("soap", 250)],
        devices: &[("tab-1", "ana", "K7Q")],
    })
    .expect("catalog");
    let view = read_catalog(&catalog);
    let period = Period::parse("2026-11").expect("period");
    let at_ms = period.start_ms() + 1_000;
    let input = SaleInput {
        customer: shop,
        location: van,
        at_ms,
        lines: vec![SaleLineInput {
            product: soap,
            quantity: 3,
        }],
    };
    let mut group = c.benchmark_group("domain");
    group.sample_size(20);
    for prior_sales in [0usize, 1_000] {
        let mut phone = create_device_doc(&tenant, &device, &seller, "K7Q").expect("device doc");
        let mut ledger = create_ledger_doc(&tenant, &seller, period).expect("ledger");
        for _ in 0..prior_sales {
            record_sale(&mut phone, &mut ledger, &view, &input).expect("sale");
        }
        group.bench_function(
            BenchmarkId::new("record_sale", format!("ledger_of_{prior_sales}")),
            |b| {
                b.iter_batched(
                    || (phone.clone(), ledger.clone()),
                    |(mut phone, mut ledger)| {
                        record_sale(&mut phone, &mut ledger, &view, &input).expect("sale")
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, wire, sync_apply, storage, domain);

fn main() {
    // Test runners list and smoke-run bench targets without `--bench`;
    // only `cargo bench` measures.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
