//! Rebuilding a document from what a store holds: an optional snapshot and
//! the incremental chunks appended after it.

use automerge::{Automerge, AutomergeError};

/// The document a snapshot plus chunks describe. A chunk that fails to
/// parse is an error, never silently skipped.
pub fn load_document(
    snapshot: Option<&[u8]>,
    chunks: &[Vec<u8>],
) -> Result<Automerge, AutomergeError> {
    let mut doc = match snapshot {
        Some(snapshot) => Automerge::load(snapshot)?,
        None => Automerge::new(),
    };
    for chunk in chunks {
        doc.load_incremental(chunk)?;
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    #[test]
    fn snapshot_plus_chunks_rebuild_the_document() -> Result<(), AutomergeError> {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "a", 1_i64)?;
        tx.commit();
        let snapshot = doc.save();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "b", 2_i64)?;
        tx.commit();
        let chunk = doc.save_after(&Automerge::load(&snapshot)?.get_heads());
        let rebuilt = load_document(Some(&snapshot), &[chunk])?;
        assert_eq!(rebuilt.get_heads(), doc.get_heads());
        assert!(load_document(None, &[b"not a chunk".to_vec()]).is_err());
        Ok(())
    }

    /// The hub persists a batch's new changes as their raw change chunks
    /// back to back, in the order messages carried them (not necessarily
    /// each after its dependencies, within one chunk).
    #[test]
    fn raw_change_chunks_back_to_back_rebuild_the_document() -> Result<(), AutomergeError> {
        let mut doc = Automerge::new();
        for key in ["a", "b", "c"] {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, key, 1_i64)?;
            tx.commit();
        }
        let changes = doc.get_changes(&[]);
        let first_only: Vec<u8> = changes[0].raw_bytes().to_vec();
        let mut rest_reversed = Vec::new();
        for change in changes[1..].iter().rev() {
            rest_reversed.extend_from_slice(change.raw_bytes());
        }
        let rebuilt = load_document(None, &[first_only, rest_reversed])?;
        assert_eq!(rebuilt.get_heads(), doc.get_heads());
        assert_eq!(rebuilt.get_changes(&[]).len(), 3);
        Ok(())
    }
}
