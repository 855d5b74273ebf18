//! The catalog document: one per tenant, written only by the office (the
//! server), read by every device. Products with prices, customers, sellers,
//! devices (with the seller each is registered to) and stock locations.

use std::collections::BTreeMap;
use std::ops::Bound;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ReadDoc, ROOT};

use super::ids::{CustomerId, DeviceId, LocationId, ProductId, SellerId, TenantId};
use super::meta::{
    check_root, container, create_doc, doc_meta, expect_kind, DocKey, DocKind, DocMeta,
};
use super::money::Currency;
use super::read::{get_bool, get_int, get_optional_string, get_parsed, get_string, get_value};
use super::validate::{Problem, Violation};
use super::DomainError;

/// A product and its current price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub unit_price_cents: i64,
    pub currency: Currency,
    /// Inactive products stay readable (old sales refer to them) but cannot
    /// be sold.
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seller {
    pub id: SellerId,
    pub name: String,
}

/// A device registered to a seller, with the short prefix of its receipt
/// numbers (unique within the tenant; the office assigns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub seller: SellerId,
    pub receipt_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    Warehouse,
    Vehicle,
}

impl LocationKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LocationKind::Warehouse => "warehouse",
            LocationKind::Vehicle => "vehicle",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub id: LocationId,
    pub name: String,
    pub kind: LocationKind,
    /// The seller whose vehicle this is.
    pub seller: Option<SellerId>,
}

/// The catalog as typed values, plus every record that could not be read.
#[derive(Debug, Clone, Default)]
pub struct CatalogView {
    pub meta: Option<DocMeta>,
    pub products: BTreeMap<ProductId, Product>,
    pub customers: BTreeMap<CustomerId, Customer>,
    pub sellers: BTreeMap<SellerId, Seller>,
    pub devices: BTreeMap<DeviceId, DeviceRecord>,
    pub locations: BTreeMap<LocationId, Location>,
    /// Where each document lives: [`DocKey`] text -> automerge URL.
    pub directory: BTreeMap<String, String>,
    pub violations: Vec<Violation>,
}

impl CatalogView {
    /// The automerge URL of a document, if the office has listed it.
    pub fn find_doc(&self, key: &DocKey) -> Option<&str> {
        self.directory.get(&key.to_string()).map(String::as_str)
    }
}

/// Creates a tenant's catalog document (the office does this once).
pub fn create_catalog_doc(tenant: &TenantId) -> Result<Automerge, DomainError> {
    create_doc(DocKind::Catalog, tenant, tenant.as_str(), None, |_| Ok(()))
}

/// The record map `collection[key]`, created if absent. Only the office
/// writes the catalog, so a record is never created concurrently.
fn record_map(
    tx: &mut automerge::transaction::Transaction<'_>,
    collection: &ObjId,
    key: &str,
) -> Result<ObjId, DomainError> {
    match tx.get(collection, key)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Ok(tx.put_object(collection, key, ObjType::Map)?),
    }
}

/// Adds or updates a product (its price applies to sales recorded after).
pub fn put_product(catalog: &mut Automerge, product: &Product) -> Result<(), DomainError> {
    expect_kind(catalog, DocKind::Catalog)?;
    let products = container(catalog, "products")?;
    let mut tx = catalog.transaction();
    let map = record_map(&mut tx, &products, product.id.as_str())?;
    tx.put(&map, "name", product.name.as_str())?;
    tx.put(&map, "unit_price_cents", product.unit_price_cents)?;
    tx.put(&map, "currency", product.currency.as_str())?;
    tx.put(&map, "active", product.active)?;
    tx.commit();
    Ok(())
}

pub fn put_customer(catalog: &mut Automerge, customer: &Customer) -> Result<(), DomainError> {
    expect_kind(catalog, DocKind::Catalog)?;
    let customers = container(catalog, "customers")?;
    let mut tx = catalog.transaction();
    let map = record_map(&mut tx, &customers, customer.id.as_str())?;
    tx.put(&map, "name", customer.name.as_str())?;
    tx.commit();
    Ok(())
}

pub fn put_seller(catalog: &mut Automerge, seller: &Seller) -> Result<(), DomainError> {
    expect_kind(catalog, DocKind::Catalog)?;
    let sellers = container(catalog, "sellers")?;
    let mut tx = catalog.transaction();
    let map = record_map(&mut tx, &sellers, seller.id.as_str())?;
    tx.put(&map, "name", seller.name.as_str())?;
    tx.commit();
    Ok(())
}

pub fn put_device(catalog: &mut Automerge, device: &DeviceRecord) -> Result<(), DomainError> {
    expect_kind(catalog, DocKind::Catalog)?;
    let devices = container(catalog, "devices")?;
    let mut tx = catalog.transaction();
    let map = record_map(&mut tx, &devices, device.id.as_str())?;
    tx.put(&map, "seller", device.seller.as_str())?;
    tx.put(&map, "receipt_prefix", device.receipt_prefix.as_str())?;
    tx.commit();
    Ok(())
}

pub fn put_location(catalog: &mut Automerge, location: &Location) -> Result<(), DomainError> {
    expect_kind(catalog, DocKind::Catalog)?;
    let locations = container(catalog, "locations")?;
    let mut tx = catalog.transaction();
    let map = record_map(&mut tx, &locations, location.id.as_str())?;
    tx.put(&map, "name", location.name.as_str())?;
    tx.put(&map, "kind", location.kind.as_str())?;
    if let Some(seller) = &location.seller {
        tx.put(&map, "seller", seller.as_str())?;
    }
    tx.commit();
    Ok(())
}

/// Lists a document in the catalog's directory, so devices can find its
/// automerge URL (`automerge:...`) by kind, owner and period. The office
/// calls this right after it creates the document.
pub fn put_directory_entry(
    catalog: &mut Automerge,
    key: &DocKey,
    url: &str,
) -> Result<(), DomainError> {
    expect_kind(catalog, DocKind::Catalog)?;
    let directory = container(catalog, "directory")?;
    let mut tx = catalog.transaction();
    tx.put(&directory, key.to_string(), url)?;
    tx.commit();
    Ok(())
}

/// The actor (hex) that created an object, for violation reports.
pub(crate) fn creator(id: &ObjId) -> Option<String> {
    match id {
        ObjId::Root => None,
        ObjId::Id(_, actor, _) => Some(actor.to_hex_string()),
    }
}

/// Parses the records of a top-level map (every key or the selected
/// ones; see [`KeySelection`]) that `keep` accepts (checked before
/// parsing; it sees the key and the record's object). Records that parse
/// go to the result; the others become violations. A key written by two
/// replicas is reported (its hidden copies are lost from view) and its
/// visible copy is still parsed.
///
/// Which keys of a collection a selective reader parses: every key, or
/// the listed ones (each looked up on its own, so the cost follows the
/// selection, not the size of the collection).
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeySelection<'a> {
    All,
    Only(&'a std::collections::BTreeSet<String>),
}

/// [`read_records_where`] over a [`KeySelection`], with a `keep` that also
/// sees the key: what the export reads when a few records changed.
pub(crate) fn read_records_selected<R: ReadDoc, K: Ord, T>(
    doc: &R,
    collection: &str,
    keys: KeySelection<'_>,
    keep: impl Fn(&str, &ObjId) -> bool,
    violations: &mut Vec<Violation>,
    mut parse: impl FnMut(&str, &ObjId) -> Result<(K, T), Vec<Problem>>,
) -> BTreeMap<K, T> {
    let mut out = BTreeMap::new();
    match keys {
        KeySelection::All => read_records_into(
            doc,
            collection,
            (Bound::Unbounded, Bound::Unbounded),
            &keep,
            violations,
            &mut parse,
            &mut out,
        ),
        KeySelection::Only(keys) => {
            for key in keys {
                read_records_into(
                    doc,
                    collection,
                    (Bound::Included(key.clone()), Bound::Included(key.clone())),
                    &keep,
                    violations,
                    &mut parse,
                    &mut out,
                );
            }
        }
    }
    out
}

fn read_records_into<R: ReadDoc, K: Ord, T>(
    doc: &R,
    collection: &str,
    range: (Bound<String>, Bound<String>),
    keep: impl Fn(&str, &ObjId) -> bool,
    violations: &mut Vec<Violation>,
    mut parse: impl FnMut(&str, &ObjId) -> Result<(K, T), Vec<Problem>>,
    out: &mut BTreeMap<K, T>,
) {
    let Ok(map) = super::read::get_map(doc, &ROOT, collection) else {
        // Reported by `check_root`.
        return;
    };
    for (key, copies) in super::read::keys_with_conflicts_in(doc, &map, range) {
        let value = match get_value(doc, &map, &key) {
            Ok(value) => value,
            Err(error) => {
                violations.push(Violation::record(collection, &key, None, error.into()));
                continue;
            }
        };
        let Some((value, id)) = value else { continue };
        if value == automerge::Value::Object(ObjType::Map) && !keep(&key, &id) {
            continue;
        }
        let actor = creator(&id);
        if copies > 1 {
            violations.push(Violation::record(
                collection,
                &key,
                actor.clone(),
                Problem::KeyWrittenTwice { copies },
            ));
        }
        if value != automerge::Value::Object(ObjType::Map) {
            let problem = super::read::get_map(doc, &map, &key)
                .err()
                .unwrap_or_else(|| super::read::FieldError::invalid(&key, "not a map"));
            violations.push(Violation::record(collection, &key, actor, problem.into()));
            continue;
        }
        match parse(&key, &id) {
            Ok((k, record)) => {
                out.insert(k, record);
            }
            Err(problems) => {
                for problem in problems {
                    violations.push(Violation::record(collection, &key, actor.clone(), problem));
                }
            }
        }
    }
}

/// Collects field errors while parsing one record, so a record reports
/// every problem it has, not only the first.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn take<T, E: Into<Problem>>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error.into());
                None
            }
        }
    }

    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }
}

fn parse_key<T>(
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, super::ids::IdError>,
) -> Result<T, Vec<Problem>> {
    parse(key).map_err(|error| {
        vec![Problem::Field(super::read::FieldError::invalid(
            "key", error,
        ))]
    })
}

/// Reads the catalog; never fails, reports what it cannot read.
pub fn read_catalog<R: ReadDoc>(doc: &R) -> CatalogView {
    read_catalog_selected(doc, |_| KeySelection::All)
}

/// [`read_catalog`] restricted to the keys `select` names per collection
/// (`products`, `customers`, `sellers`, `devices`, `locations`,
/// `directory`); the root checks always run. For the export of a catalog
/// of which a few records changed.
pub(crate) fn read_catalog_selected<'a, R: ReadDoc>(
    doc: &R,
    select: impl Fn(&str) -> KeySelection<'a>,
) -> CatalogView {
    let mut violations = check_root(doc, DocKind::Catalog);
    let meta = doc_meta(doc).ok();
    let all = |_: &str, _: &ObjId| true;
    let products = read_records_selected(
        doc,
        "products",
        select("products"),
        all,
        &mut violations,
        |key, obj| {
            let id = parse_key(key, |k| ProductId::new(k))?;
            let mut p = Problems::default();
            let name = p.take(get_string(doc, obj, "name"));
            let unit_price_cents = p.take(get_int(doc, obj, "unit_price_cents"));
            let currency = p.take(get_parsed(doc, obj, "currency", |s| Currency::new(&s)));
            let active = p.take(get_bool(doc, obj, "active"));
            if let Some(price) = unit_price_cents.filter(|price| *price < 0) {
                p.push(Problem::NegativePrice {
                    line: 0,
                    unit_price_cents: price,
                });
            }
            match (name, unit_price_cents, currency, active, p.0.is_empty()) {
                (Some(name), Some(unit_price_cents), Some(currency), Some(active), true) => Ok((
                    id.clone(),
                    Product {
                        id,
                        name,
                        unit_price_cents,
                        currency,
                        active,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );
    let customers = read_records_selected(
        doc,
        "customers",
        select("customers"),
        all,
        &mut violations,
        |key, obj| {
            let id = parse_key(key, |k| CustomerId::new(k))?;
            let name = get_string(doc, obj, "name").map_err(|e| vec![e.into()])?;
            Ok((id.clone(), Customer { id, name }))
        },
    );
    let sellers = read_records_selected(
        doc,
        "sellers",
        select("sellers"),
        all,
        &mut violations,
        |key, obj| {
            let id = parse_key(key, |k| SellerId::new(k))?;
            let name = get_string(doc, obj, "name").map_err(|e| vec![e.into()])?;
            Ok((id.clone(), Seller { id, name }))
        },
    );
    let devices = read_records_selected(
        doc,
        "devices",
        select("devices"),
        all,
        &mut violations,
        |key, obj| {
            let id = parse_key(key, |k| DeviceId::new(k))?;
            let mut p = Problems::default();
            let seller = p.take(get_parsed(doc, obj, "seller", SellerId::new));
            let receipt_prefix = p.take(get_string(doc, obj, "receipt_prefix"));
            match (seller, receipt_prefix) {
                (Some(seller), Some(receipt_prefix)) => Ok((
                    id.clone(),
                    DeviceRecord {
                        id,
                        seller,
                        receipt_prefix,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );
    let locations = read_records_selected(
        doc,
        "locations",
        select("locations"),
        all,
        &mut violations,
        |key, obj| {
            let id = parse_key(key, |k| LocationId::new(k))?;
            let mut p = Problems::default();
            let name = p.take(get_string(doc, obj, "name"));
            let kind = p.take(get_parsed(doc, obj, "kind", |s| match s.as_str() {
                "warehouse" => Ok(LocationKind::Warehouse),
                "vehicle" => Ok(LocationKind::Vehicle),
                other => Err(format!("unknown location kind {other:?}")),
            }));
            let seller = p.take(get_optional_string(doc, obj, "seller").and_then(|s| {
                s.map(SellerId::new)
                    .transpose()
                    .map_err(|e| super::read::FieldError::invalid("seller", e))
            }));
            match (name, kind, seller) {
                (Some(name), Some(kind), Some(seller)) => Ok((
                    id.clone(),
                    Location {
                        id,
                        name,
                        kind,
                        seller,
                    },
                )),
                _ => Err(p.0),
            }
        },
    );
    let mut directory = BTreeMap::new();
    if let Ok(map) = super::read::get_map(doc, &ROOT, "directory") {
        let keys = match select("directory") {
            KeySelection::All => super::read::keys_with_conflicts(doc, &map),
            KeySelection::Only(keys) => keys
                .iter()
                .flat_map(|key| {
                    super::read::keys_with_conflicts_in(
                        doc,
                        &map,
                        (Bound::Included(key.clone()), Bound::Included(key.clone())),
                    )
                })
                .collect(),
        };
        for (key, _) in keys {
            match get_string(doc, &map, &key) {
                Ok(url) => {
                    directory.insert(key, url);
                }
                Err(error) => {
                    violations.push(Violation::record("directory", &key, None, error.into()))
                }
            }
        }
    }
    CatalogView {
        meta,
        products,
        customers,
        sellers,
        devices,
        locations,
        directory,
        violations,
    }
}
