//! The root `meta` map every domain document carries, written once by the
//! `create_*_doc` function that makes the document, so the server can tell
//! every document's kind and owner without guessing.
//!
//! Containers are created once, in one place: if two replicas each created
//! the root `sales` map, Automerge would keep one of them and the other's
//! contents would disappear from view. Devices therefore only open documents
//! the office or server created, and write inside existing containers.

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, ROOT};

use super::ids::{Period, TenantId};
use super::read::{get_int, get_map, get_optional_string, get_parsed, get_string, FieldError};
use super::validate::{Problem, Violation};
use super::DomainError;

/// The schema version written into `meta.schema_version` by this code.
pub const SCHEMA_VERSION: i64 = 1;

/// What a document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocKind {
    /// Products, customers, sellers, devices, locations of one tenant.
    Catalog,
    /// One device's own state: its record counter.
    Device,
    /// One seller's sales, voids, payments and returns for one month.
    Ledger,
    /// One location's stock levels, movements and oversell alerts.
    Stock,
}

impl DocKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DocKind::Catalog => "catalog",
            DocKind::Device => "device",
            DocKind::Ledger => "ledger",
            DocKind::Stock => "stock",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "catalog" => Some(DocKind::Catalog),
            "device" => Some(DocKind::Device),
            "ledger" => Some(DocKind::Ledger),
            "stock" => Some(DocKind::Stock),
            _ => None,
        }
    }

    /// The top-level maps (besides `meta`) a document of this kind has.
    pub fn containers(&self) -> &'static [&'static str] {
        match self {
            DocKind::Catalog => &[
                "products",
                "customers",
                "sellers",
                "devices",
                "locations",
                "directory",
            ],
            DocKind::Device => &["state"],
            DocKind::Ledger => &["sales", "voids", "payments", "returns", "writers"],
            DocKind::Stock => &["levels", "movements", "alerts"],
        }
    }
}

/// The address of a document in the catalog's `directory`:
/// `{kind}/{owner}` or, for ledgers, `{kind}/{owner}/{period}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    pub kind: DocKind,
    pub owner: String,
    pub period: Option<Period>,
}

impl DocKey {
    pub fn ledger(seller: &super::ids::SellerId, period: Period) -> Self {
        Self {
            kind: DocKind::Ledger,
            owner: seller.to_string(),
            period: Some(period),
        }
    }

    pub fn stock(location: &super::ids::LocationId, period: Period) -> Self {
        Self {
            kind: DocKind::Stock,
            owner: location.to_string(),
            period: Some(period),
        }
    }

    pub fn device(device: &super::ids::DeviceId) -> Self {
        Self {
            kind: DocKind::Device,
            owner: device.to_string(),
            period: None,
        }
    }

    /// The key of the document described by `meta`.
    pub fn of(meta: &DocMeta) -> Self {
        Self {
            kind: meta.kind,
            owner: meta.owner.clone(),
            period: meta.period,
        }
    }
}

impl std::fmt::Display for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.period {
            Some(period) => write!(f, "{}/{}/{period}", self.kind, self.owner),
            None => write!(f, "{}/{}", self.kind, self.owner),
        }
    }
}

impl std::fmt::Display for DocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The root `meta` map: kind, tenant, owner, period, schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMeta {
    pub kind: DocKind,
    pub tenant: TenantId,
    /// Tenant id (catalog), device id (device), seller id (ledger) or
    /// location id (stock).
    pub owner: String,
    /// The month of a ledger or stock document; `None` for other kinds.
    pub period: Option<Period>,
    pub schema_version: i64,
}

/// Reads the root `meta` map.
pub fn doc_meta<R: ReadDoc>(doc: &R) -> Result<DocMeta, FieldError> {
    let meta = get_map(doc, &ROOT, "meta")?;
    let kind = get_parsed(doc, &meta, "kind", |s| {
        DocKind::parse(&s).ok_or_else(|| format!("unknown document kind {s:?}"))
    })?;
    let tenant = get_parsed(doc, &meta, "tenant", TenantId::new)?;
    let owner = get_string(doc, &meta, "owner")?;
    let period = get_optional_string(doc, &meta, "period")?
        .map(|s| Period::parse(&s))
        .transpose()
        .map_err(|e| FieldError::invalid("period", e))?;
    let schema_version = get_int(doc, &meta, "schema_version")?;
    if matches!(kind, DocKind::Ledger | DocKind::Stock) && period.is_none() {
        return Err(FieldError::Missing {
            field: "period".into(),
        });
    }
    Ok(DocMeta {
        kind,
        tenant,
        owner,
        period,
        schema_version,
    })
}

/// Reads `meta` and checks the kind; the error a write function returns when
/// handed the wrong document.
pub(crate) fn expect_kind<R: ReadDoc>(doc: &R, kind: DocKind) -> Result<DocMeta, DomainError> {
    let meta = doc_meta(doc).map_err(|source| DomainError::Malformed {
        path: "meta".into(),
        source,
    })?;
    if meta.kind != kind {
        return Err(DomainError::WrongDocument {
            expected: kind,
            found: meta.kind,
        });
    }
    if meta.schema_version > SCHEMA_VERSION {
        return Err(DomainError::NewerSchema {
            version: meta.schema_version,
        });
    }
    Ok(meta)
}

/// A top-level container, for writing into it.
pub(crate) fn container<R: ReadDoc>(doc: &R, name: &str) -> Result<ObjId, DomainError> {
    get_map(doc, &ROOT, name).map_err(|source| DomainError::Malformed {
        path: name.to_owned(),
        source,
    })
}

/// Creates a document of `kind`: `meta` and every container, in one change.
pub(crate) fn create_doc(
    kind: DocKind,
    tenant: &TenantId,
    owner: &str,
    period: Option<Period>,
    fill: impl FnOnce(&mut Transaction<'_>) -> Result<(), DomainError>,
) -> Result<Automerge, DomainError> {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
    tx.put(&meta, "kind", kind.as_str())?;
    tx.put(&meta, "tenant", tenant.as_str())?;
    tx.put(&meta, "owner", owner)?;
    if let Some(period) = period {
        tx.put(&meta, "period", period.to_string())?;
    }
    tx.put(&meta, "schema_version", SCHEMA_VERSION)?;
    for name in kind.containers() {
        tx.put_object(ROOT, *name, ObjType::Map)?;
    }
    fill(&mut tx)?;
    tx.commit();
    Ok(doc)
}

/// Structural problems of the root: `meta` unreadable, a container missing,
/// or a container created twice concurrently (the loser's contents are
/// hidden, so this is reported, never ignored).
pub(crate) fn check_root<R: ReadDoc>(doc: &R, kind: DocKind) -> Vec<Violation> {
    let mut out = Vec::new();
    for name in std::iter::once("meta").chain(kind.containers().iter().copied()) {
        match doc.get_all(ROOT, name) {
            Ok(values) if values.len() > 1 => out.push(Violation::root(
                name,
                Problem::ContainerCreatedTwice {
                    copies: values.len(),
                },
            )),
            Ok(_) => {}
            Err(error) => out.push(Violation::root(
                name,
                Problem::Field(FieldError::invalid(name, error)),
            )),
        }
        if let Err(error) = get_map(doc, &ROOT, name) {
            out.push(Violation::root(name, Problem::Field(error)));
        }
    }
    match doc_meta(doc) {
        Ok(meta) if meta.kind != kind => out.push(Violation::root(
            "meta",
            Problem::Field(FieldError::invalid(
                "kind",
                format!("expected {kind}, found {}", meta.kind),
            )),
        )),
        Ok(_) => {}
        Err(error) => out.push(Violation::root("meta", Problem::Field(error))),
    }
    out
}
