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
}
