//! The device document: one per device, holding the counter that numbers
//! every record the device writes.
//!
//! `state.last_seq` is the highest number the device has issued. It is a
//! register that only grows: every write puts `max(all values seen) + 1`, and
//! a read takes the maximum over concurrent values (two replicas of the same
//! device document, e.g. an old install and a restored one, can both write
//! it). After a reinstall restores documents from the server, call
//! [`resume_counter`] with every ledger the device has: the counter moves past
//! every number the server has seen, even if the server's copy of the device
//! document lagged behind its ledgers. [`record_sale`](super::record_sale)
//! and the other writers also look at the target ledger before numbering, so
//! a record never overwrites another with the same id.

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};

use super::ids::{DeviceId, RecordId, SellerId, TenantId, RECORD_SEQ_MAX};
use super::meta::{container, create_doc, expect_kind, DocKind};
use super::read::{get_all_ints, get_map, get_parsed, get_string};
use super::DomainError;

/// What a device knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub seller: SellerId,
    pub receipt_prefix: String,
    /// Highest record number issued so far (0: none).
    pub last_seq: u64,
}

/// Creates a device's document (the office does this when it registers the
/// device, next to [`put_device`](super::put_device) in the catalog).
pub fn create_device_doc(
    tenant: &TenantId,
    device: &DeviceId,
    seller: &SellerId,
    receipt_prefix: &str,
) -> Result<Automerge, DomainError> {
    create_doc(DocKind::Device, tenant, device.as_str(), None, |tx| {
        let state = tx
            .get(ROOT, "state")?
            .map(|(_, id)| id)
            .ok_or(DomainError::Invariant("state container just created"))?;
        tx.put(&state, "seller", seller.as_str())?;
        tx.put(&state, "receipt_prefix", receipt_prefix)?;
        tx.put(&state, "last_seq", 0i64)?;
        Ok(())
    })
}

fn malformed(path: &str) -> impl FnOnce(super::read::FieldError) -> DomainError + '_ {
    move |source| DomainError::Malformed {
        path: path.to_owned(),
        source,
    }
}

/// Reads the device document.
pub fn read_device<R: ReadDoc>(doc: &R) -> Result<DeviceInfo, DomainError> {
    let meta = expect_kind(doc, DocKind::Device)?;
    let state = get_map(doc, &ROOT, "state").map_err(malformed("state"))?;
    let device = DeviceId::new(meta.owner.clone())?;
    let seller =
        get_parsed(doc, &state, "seller", SellerId::new).map_err(malformed("state.seller"))?;
    let receipt_prefix =
        get_string(doc, &state, "receipt_prefix").map_err(malformed("state.receipt_prefix"))?;
    let last_seq = get_all_ints(doc, &state, "last_seq")
        .map_err(malformed("state.last_seq"))?
        .into_iter()
        .max()
        .unwrap_or(0);
    let last_seq = u64::try_from(last_seq).map_err(|_| DomainError::Malformed {
        path: "state.last_seq".into(),
        source: super::read::FieldError::invalid("last_seq", "negative"),
    })?;
    Ok(DeviceInfo {
        tenant: meta.tenant,
        device,
        seller,
        receipt_prefix,
        last_seq,
    })
}

/// The highest sequence number of `device`'s records in a ledger (0: none).
/// One range scan per container: record keys sort by sequence.
pub fn highest_seq_in_ledger<R: ReadDoc>(ledger: &R, device: &DeviceId) -> u64 {
    let (low, high) = RecordId::key_range(device);
    super::ledger::RECORD_CONTAINERS
        .iter()
        .filter_map(|name| get_map(ledger, &ROOT, name).ok())
        .filter_map(|map| {
            ledger
                .map_range(&map, low.clone()..=high.clone())
                .filter_map(|item| RecordId::parse(&item.key).ok())
                .filter(|id| &id.device == device)
                .map(|id| id.seq)
                .max()
        })
        .max()
        .unwrap_or(0)
}

/// Issues the next record number: past both the device's own counter and
/// `seen_seq` (the highest number of this device found where the record will
/// be written). Commits the new counter to the device document.
pub fn allocate_record_id(
    device_doc: &mut Automerge,
    seen_seq: u64,
) -> Result<RecordId, DomainError> {
    let info = read_device(device_doc)?;
    let seq = info
        .last_seq
        .max(seen_seq)
        .checked_add(1)
        .filter(|seq| *seq <= RECORD_SEQ_MAX)
        .ok_or(DomainError::SequenceExhausted)?;
    write_last_seq(device_doc, seq)?;
    Ok(RecordId::new(info.device, seq))
}

fn write_last_seq(device_doc: &mut Automerge, seq: u64) -> Result<(), DomainError> {
    let state = container(device_doc, "state")?;
    let value = i64::try_from(seq).map_err(|_| DomainError::SequenceExhausted)?;
    let mut tx = device_doc.transaction();
    tx.put(&state, "last_seq", value)?;
    tx.commit();
    Ok(())
}

/// After a restore: moves the counter past every record of this device in
/// `ledgers`. Returns the counter's value. Writes only if it moved.
pub fn resume_counter(
    device_doc: &mut Automerge,
    ledgers: &[&Automerge],
) -> Result<u64, DomainError> {
    let info = read_device(device_doc)?;
    let seen = ledgers
        .iter()
        .map(|ledger| highest_seq_in_ledger(*ledger, &info.device))
        .max()
        .unwrap_or(0);
    if seen > info.last_seq {
        write_last_seq(device_doc, seen)?;
        return Ok(seen);
    }
    Ok(info.last_seq)
}

/// The number a customer reads aloud: `{receipt_prefix}-{seq}`, e.g. `K7Q-42`.
pub fn receipt_number(receipt_prefix: &str, seq: u64) -> String {
    format!("{receipt_prefix}-{seq}")
}
