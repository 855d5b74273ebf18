//! The server's business reading of documents, after their changes are
//! durable.
//!
//! The hub task marks a document when it persists changes to it
//! ([`Review::touched`]); on each tick, documents whose changes are all
//! flushed and whose last review is at least [`REVIEW_INTERVAL_MS`] old are
//! loaded from the store and read with the [`crate::domain`] functions on a
//! blocking thread (at most [`REVIEWS_IN_FLIGHT_MAX`] at once), never on the
//! hub task; what they find comes back to the hub task:
//!
//! - a **stock** document: oversells are detected and recorded as alert
//!   records in the document itself (a server change, flushed and pushed to
//!   every device that has it open); recording is idempotent, so an oversell
//!   is reported once however often it is seen;
//! - a **ledger** or **stock** document: every record that breaks a rule is
//!   kept in a report (metadata key `violations/<document>`), readable at
//!   `GET /v1/documents/{id}/violations`, and logged when the count changes.
//!
//! The records themselves are never touched: invalid data is reported and
//! kept aside by the domain's views, never deleted.

use std::collections::HashMap;

use automerge::Automerge;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use ventas_storage::{DocStore, StoreError};
use ventas_sync_protocol::ids::DocumentId;

use crate::domain::{self, DocKind, Violation};

/// Minimum time between two reviews of one document.
pub const REVIEW_INTERVAL_MS: u64 = 2_000;
/// Documents sent for review in one tick; the rest wait for the next tick.
pub const REVIEWS_PER_TICK_MAX: usize = 8;
/// Reviews running at once. A review loads and reads a whole document on a
/// blocking thread (0.42 s for a 3,000-sale ledger), never on the hub task;
/// this bounds the cores and memory they take from syncing.
pub const REVIEWS_IN_FLIGHT_MAX: usize = 2;
/// Violations kept in one report; the total is always counted.
pub const VIOLATIONS_REPORTED_MAX: usize = 1_000;
/// Documents remembered as reviewed; past it the memory is cleared (a
/// document is then at worst reviewed once more).
const REVIEWED_DOCS_MAX: usize = 16_384;

const REPORT_PREFIX: &[u8] = b"violations/";

/// Where a document's report lives in the metadata keyspace.
pub fn report_key(document_id: &DocumentId) -> Vec<u8> {
    let mut key = REPORT_PREFIX.to_vec();
    key.extend_from_slice(document_id.as_bytes());
    key
}

/// The rules a document breaks, as of its last review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationReport {
    pub document_id: String,
    pub kind: String,
    /// The document's tenant (from its `meta`); a credential of another
    /// tenant is told there is no report.
    #[serde(default)]
    pub tenant: Option<String>,
    pub reviewed_at_ms: u64,
    pub violations_total: usize,
    /// At most [`VIOLATIONS_REPORTED_MAX`] of them.
    pub violations: Vec<ReportedViolation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedViolation {
    pub collection: String,
    pub key: String,
    pub actor: Option<String>,
    pub problem: String,
}

impl From<&Violation> for ReportedViolation {
    fn from(violation: &Violation) -> Self {
        Self {
            collection: violation.collection.clone(),
            key: violation.key.clone(),
            actor: violation.actor.clone(),
            problem: violation.problem.to_string(),
        }
    }
}

/// What reviewing one document found.
#[derive(Debug, Default)]
pub struct Finding {
    pub kind: Option<DocKind>,
    pub tenant: Option<String>,
    pub violations: Vec<Violation>,
    /// For stock documents: what to write so the alerts match the levels.
    pub stock: Option<(domain::StockView, Vec<domain::OversellAlert>)>,
}

/// Reads a document as business data. Pure; documents of no known kind
/// (plain automerge-repo documents) give an empty finding.
pub fn examine(doc: &Automerge) -> Finding {
    let Ok(meta) = domain::doc_meta(doc) else {
        return Finding::default();
    };
    let tenant = Some(meta.tenant.to_string());
    match meta.kind {
        DocKind::Stock => {
            let view = domain::read_stock(doc);
            let detected = domain::detect_oversells(&view);
            Finding {
                kind: Some(DocKind::Stock),
                tenant,
                violations: view.violations.clone(),
                stock: Some((view, detected)),
            }
        }
        DocKind::Ledger => {
            let view = domain::read_ledger(doc, None);
            Finding {
                kind: Some(DocKind::Ledger),
                tenant,
                violations: view.violations,
                stock: None,
            }
        }
        kind => Finding {
            kind: Some(kind),
            tenant,
            ..Finding::default()
        },
    }
}

/// Which documents wait for a review, and when each was last reviewed.
#[derive(Debug, Default)]
pub struct Review {
    waiting: HashMap<DocumentId, ()>,
    /// Sent for review, result not back yet.
    in_flight: std::collections::HashSet<DocumentId>,
    reviewed_at_ms: HashMap<DocumentId, u64>,
    violation_counts: HashMap<DocumentId, usize>,
}

impl Review {
    /// Every changed document has been reviewed: none waits, none is out
    /// for review.
    pub fn is_settled(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    /// The document gained changes.
    pub fn touched(&mut self, document_id: DocumentId) {
        self.waiting.insert(document_id, ());
    }

    /// Documents due now for which `ready` holds (durable, in memory).
    /// Documents no longer in memory are dropped: they were reviewed, or
    /// will be when they next change.
    pub fn due(
        &mut self,
        now_ms: u64,
        ready: impl Fn(&DocumentId) -> bool,
        loaded: impl Fn(&DocumentId) -> bool,
    ) -> Vec<DocumentId> {
        self.waiting.retain(|id, _| loaded(id));
        let room = REVIEWS_IN_FLIGHT_MAX.saturating_sub(self.in_flight.len());
        let due: Vec<DocumentId> = self
            .waiting
            .keys()
            .filter(|id| ready(id) && !self.in_flight.contains(id))
            .filter(|id| {
                self.reviewed_at_ms
                    .get(id)
                    .is_none_or(|at| now_ms.saturating_sub(*at) >= REVIEW_INTERVAL_MS)
            })
            .take(REVIEWS_PER_TICK_MAX.min(room))
            .copied()
            .collect();
        if self.reviewed_at_ms.len() >= REVIEWED_DOCS_MAX {
            self.reviewed_at_ms.clear();
            self.violation_counts.clear();
        }
        for id in &due {
            self.waiting.remove(id);
            self.reviewed_at_ms.insert(*id, now_ms);
            self.in_flight.insert(*id);
        }
        due
    }

    /// The review of `document_id` came back (done or failed).
    pub fn finished(&mut self, document_id: &DocumentId) {
        self.in_flight.remove(document_id);
    }

    /// Stores the report of a finding and logs when its count changed.
    pub fn report(
        &mut self,
        store: &dyn DocStore,
        document_id: DocumentId,
        finding: &Finding,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let Some(kind) = finding.kind else {
            return Ok(());
        };
        let total = finding.violations.len();
        let previous = self.violation_counts.insert(document_id, total);
        if previous == Some(total) {
            return Ok(());
        }
        if total > 0 {
            warn!(%document_id, kind = kind.as_str(), violations = total, "document breaks business rules");
        } else if previous.is_some_and(|p| p > 0) {
            info!(%document_id, kind = kind.as_str(), "document no longer breaks business rules");
        }
        let report = ViolationReport {
            document_id: document_id.to_string(),
            kind: kind.as_str().to_string(),
            tenant: finding.tenant.clone(),
            reviewed_at_ms: now_ms,
            violations_total: total,
            violations: finding
                .violations
                .iter()
                .take(VIOLATIONS_REPORTED_MAX)
                .map(ReportedViolation::from)
                .collect(),
        };
        match serde_json::to_vec(&report) {
            Ok(bytes) if (bytes.len() as u64) <= ventas_storage::META_VALUE_BYTES_MAX => {
                store.meta_put(&report_key(&document_id), &bytes)
            }
            Ok(_) => {
                // Too large for one metadata record: keep the count only.
                let short = ViolationReport {
                    violations: Vec::new(),
                    ..report
                };
                let bytes = serde_json::to_vec(&short).unwrap_or_default();
                store.meta_put(&report_key(&document_id), &bytes)
            }
            Err(error) => {
                warn!(%document_id, "cannot encode violation report: {error}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tick_reviews_at_most_the_bound_and_the_rest_wait() {
        let mut review = Review::default();
        let total = REVIEWS_PER_TICK_MAX * 2 + 1;
        for n in 0..total {
            review.touched(DocumentId::from_bytes(
                [u8::try_from(n).expect("small"); 16],
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for tick in 0..total as u64 {
            let due = review.due(1_000 + tick, |_| true, |_| true);
            assert!(
                due.len() <= REVIEWS_PER_TICK_MAX.min(REVIEWS_IN_FLIGHT_MAX),
                "tick {tick}: {}",
                due.len()
            );
            // Nothing more is sent while the bound is in flight.
            assert!(review.due(1_000 + tick, |_| true, |_| true).is_empty());
            for id in &due {
                review.finished(id);
            }
            seen.extend(due);
        }
        assert_eq!(
            seen.len(),
            total,
            "every touched document is reviewed in the end"
        );
        assert!(review.due(2_000, |_| true, |_| true).is_empty());
    }

    #[test]
    fn a_document_is_not_reviewed_again_within_the_interval() {
        let mut review = Review::default();
        let id = DocumentId::from_bytes([1; 16]);
        review.touched(id);
        assert_eq!(review.due(0, |_| true, |_| true), vec![id]);
        review.finished(&id);
        review.touched(id);
        assert!(review
            .due(REVIEW_INTERVAL_MS - 1, |_| true, |_| true)
            .is_empty());
        assert_eq!(review.due(REVIEW_INTERVAL_MS, |_| true, |_| true), vec![id]);
    }
}
