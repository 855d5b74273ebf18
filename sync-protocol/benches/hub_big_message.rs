//! How long the hub is busy with the largest message the per-role limits
//! allow (issue 10, item 5). The hub runs on one task: while it applies one
//! message, every other peer's message waits, so this time is the stall a
//! huge change inflicts on other tenants.
//!
//! A device holds a ledger-like document of N operations in changes of 21
//! (one sale each) that the server lacks, and syncs it to a fresh hub: the
//! time of each `Hub::receive` is measured, and the longest is the stall.
//!
//! `cargo bench -p ventas-sync-protocol --bench hub_big_message`

use std::time::{Duration, Instant};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use ventas_sync_protocol::doc_sync::ChangeLimits;
use ventas_sync_protocol::hub::{AllowAll, ConnLimits, Effect, Hub, HubConfig, QuotaGroup};
use ventas_sync_protocol::ids::{DocumentId, PeerId};
use ventas_sync_protocol::wire::Message;

/// Operations of one sale (`record_sale` with a two-line sale).
const OPS_PER_SALE: usize = 21;

/// A document of about `ops` operations, one change per sale.
fn ledger_of(ops: usize) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    let sales = tx.put_object(ROOT, "sales", ObjType::Map).expect("sales");
    tx.commit();
    for n in 0..ops / OPS_PER_SALE {
        let mut tx = doc.transaction();
        let sale = tx
            .put_object(&sales, format!("sale-{n}"), ObjType::Map)
            .expect("sale");
        for field in 0..OPS_PER_SALE - 1 {
            tx.put(&sale, format!("f{field}"), 1_000_i64 + field as i64)
                .expect("field");
        }
        tx.commit();
    }
    doc
}

/// Syncs `doc` from a device into a fresh hub; returns the longest and
/// the total time of `Hub::receive`, and whether everything applied.
fn sync_into_hub(doc: &Automerge, limits: ChangeLimits) -> (Duration, Duration, bool) {
    let mut hub = Hub::new(HubConfig::new(PeerId::new("server")));
    let conn_limits = ConnLimits {
        change_limits: limits,
        quota_group: QuotaGroup::Group(1),
    };
    hub.connect_with(1, Box::new(AllowAll), conn_limits);
    hub.receive(
        1,
        Message::Join {
            sender_id: PeerId::new("device"),
            supported_protocol_versions: vec!["1".to_string()],
            peer_metadata: None,
        },
        0,
    );
    let document_id = DocumentId::from_bytes([1; 16]);
    hub.doc_loaded(document_id, None, 0).expect("empty");
    let mut state = State::new();
    let (mut longest, mut total) = (Duration::ZERO, Duration::ZERO);
    let mut persisted = false;
    for _ in 0..10 {
        let Some(message) = doc.generate_sync_message(&mut state) else {
            break;
        };
        let message = Message::Sync {
            sender_id: PeerId::new("device"),
            target_id: PeerId::new("server"),
            document_id,
            data: message.encode(),
        };
        let started = Instant::now();
        let effects = hub.receive(1, message, 0);
        let took = started.elapsed();
        longest = longest.max(took);
        total += took;
        let mut flush = None;
        for effect in effects {
            match effect {
                Effect::Persist { .. } => persisted = true,
                Effect::Flush { epoch } => flush = Some(epoch),
                Effect::Send {
                    message: Message::Sync { data, .. },
                    ..
                } => {
                    let reply = automerge::sync::Message::decode(&data).expect("decodes");
                    let mut copy = doc.clone();
                    copy.receive_sync_message(&mut state, reply)
                        .expect("applies");
                }
                Effect::Close { .. } => return (longest, total, false),
                _ => {}
            }
        }
        if let Some(epoch) = flush {
            let started = Instant::now();
            hub.flushed(epoch, 0);
            total += started.elapsed();
            break;
        }
    }
    (longest, total, persisted)
}

fn main() {
    // The defaults of the server's config.rs: seller 100,000 operations,
    // office 500,000; and the old global default of 2,000,000.
    for (who, ops) in [
        ("seller", 100_000),
        ("office", 500_000),
        ("old default", 2_000_000),
    ] {
        let doc = ledger_of(ops);
        let limits = ChangeLimits {
            change_ops_max: ops,
            change_bytes_max: usize::MAX,
            object_depth_max: 100,
            doc_ops_max: usize::MAX,
        };
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(sync_into_hub(&doc, limits));
        }
        runs.sort();
        let (longest, total, applied) = runs[1];
        println!(
            "{who:>12}: {ops:>9} ops: longest Hub::receive {:>8.1} ms, total {:>8.1} ms, applied {applied} (median of 3)",
            longest.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }
}
