//! A corrupt change in a sync message is refused with an error, never
//! silently dropped (automerge's `load_incremental` drops bad chunks, which
//! would leave the sender believing it is still syncing).

use automerge::sync::{Message, MessageVersion};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use ventas_sync_protocol::doc_sync::{PeerDocSync, SyncError};

fn carrying(doc: &Automerge, change: Vec<u8>) -> Vec<u8> {
    Message {
        heads: doc.get_heads(),
        need: vec![],
        have: vec![],
        changes: vec![change].into(),
        supported_capabilities: None,
        version: MessageVersion::V1,
    }
    .encode()
}

#[test]
fn a_change_with_any_one_byte_flipped_is_rejected_and_changes_nothing() {
    let mut server = Automerge::new();
    let mut writer = server.fork();
    let mut tx = writer.transaction();
    tx.put(ROOT, "vandalised", "yes").expect("put");
    tx.commit();
    let good = writer
        .get_last_local_change()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    for offset in 0..good.len() {
        let mut change = good.clone();
        change[offset] ^= 0xff;
        let outcome = PeerDocSync::new().receive(&mut server, &carrying(&writer, change));
        assert!(
            matches!(outcome, Err(SyncError::Rejected(_))),
            "byte {offset} flipped: {outcome:?}"
        );
        assert!(server.get_heads().is_empty(), "byte {offset} flipped");
    }
    let applied = PeerDocSync::new()
        .receive(&mut server, &carrying(&writer, good))
        .expect("the intact change applies");
    assert_eq!(applied.changes_added, 1);
    assert!(server.get(ROOT, "vandalised").expect("readable").is_some());
}
