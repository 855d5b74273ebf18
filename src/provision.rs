//! Provisioning a tenant: from a small description (TOML or JSON) to the
//! documents a tenant starts with.
//!
//! A [`TenantSpec`] lists the catalog (products with prices in integer
//! cents, customers, sellers, locations, devices with the seller each is
//! registered to) and the opening stock per location. [`TenantSpec::parse`]
//! reads it from a JSON value (TOML is turned into one first,
//! [`TenantSpec::from_toml`]) with a hand-written reader, so every refusal
//! names the field at fault (`products[1].unit_price_cents`), whichever
//! format it came in. [`build_documents`] then makes the documents with
//! the domain functions: a device document per device, a stock document per
//! location (a counter per product, an `opening/{product}` movement for
//! each opening quantity), a ledger per seller and period, and the catalog,
//! whose directory lists them all. Pure: no I/O, no clock (the caller
//! passes the periods and the time).
//!
//! Who writes them: `ventas tenant init` (a stopped data directory) and
//! `POST /v1/tenants` (a running server) both hand the spec to the period
//! keeper (`server::periods`), the server's one writer of the documents it
//! makes, which creates every document through the hub and the catalog
//! last, so a tenant either has a catalog listing everything or no catalog.
//!
//! ```
//! use ventas::provision::{SpecFileError, TenantSpec};
//! let spec = TenantSpec::from_toml(r#"
//!     tenant = "acme"
//!     currency = "EUR"
//!     [[products]]
//!     id = "soap"
//!     name = "Soap"
//!     unit_price_cents = 250
//! "#).expect("valid");
//! assert_eq!(spec.products[0].unit_price_cents, 250);
//! let bad = TenantSpec::from_toml("tenant = \"acme\"\ncurrency = \"EUR\"\n[[products]]\nid = \"soap\"\nname = \"Soap\"\nunit_price_cents = -1\n");
//! match bad {
//!     Err(SpecFileError::Spec(error)) => assert_eq!(error.field, "products[0].unit_price_cents"),
//!     other => panic!("{other:?}"),
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use automerge::Automerge;
use serde_json::{Map, Value};

use crate::domain::{
    create_catalog_doc, create_device_doc, create_ledger_doc, create_stock_doc, move_stock,
    put_customer, put_device, put_directory_entry, put_location, put_product, put_seller, Currency,
    Customer, CustomerId, DeviceId, DeviceRecord, DocKey, DomainError, Location, LocationId,
    LocationKind, Movement, MovementKind, Period, Product, ProductId, Seller, SellerId, TenantId,
};

/// Products one spec may list.
pub const PROVISION_PRODUCTS_MAX: usize = 2_000;
/// Customers one spec may list.
pub const PROVISION_CUSTOMERS_MAX: usize = 2_000;
/// Sellers, devices and locations one spec may list, each: every one of
/// them costs a document (or one per period for sellers).
pub const PROVISION_DOCUMENT_OWNERS_MAX: usize = 200;
/// Longest name (product, customer, seller, location), in bytes.
pub const PROVISION_NAME_BYTES_MAX: usize = 200;
/// Longest receipt prefix, in bytes.
pub const RECEIPT_PREFIX_BYTES_MAX: usize = 16;
/// Largest opening quantity of one product at one location, in units.
pub const OPENING_QUANTITY_MAX: i64 = 1_000_000_000;
/// The office credential's device id when the spec names none.
pub const OFFICE_DEVICE_DEFAULT: &str = "office";
/// The office credential's seller (the person) when the spec names none.
pub const OFFICE_SELLER_DEFAULT: &str = "office";
/// Who the opening stock movements name as their author.
pub const OPENING_AUTHOR: &str = "provisioning";

/// A spec that cannot be used, and the field at fault (`""`: the whole
/// document).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Who the tenant's office credential is issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeSpec {
    pub seller: String,
    pub device: String,
}

/// Opening stock of one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSpec {
    pub location: LocationId,
    /// Units on hand per product (>= 0).
    pub levels: BTreeMap<ProductId, i64>,
}

/// A validated tenant description: ids are valid and unique, every
/// reference (a device's seller, a vehicle's seller, a stock line's
/// location and product) names something the spec lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub tenant: TenantId,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    pub sellers: Vec<Seller>,
    pub locations: Vec<Location>,
    pub devices: Vec<DeviceRecord>,
    pub stock: Vec<StockSpec>,
    pub office: OfficeSpec,
    /// Lifetime of the credentials issued (`90d`, `never`); `None`: the
    /// default lifetime.
    pub token_expires: Option<String>,
}

/// Why a spec file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    #[error("not valid TOML: {0}")]
    Toml(String),
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

impl TenantSpec {
    /// Reads a spec written in TOML.
    pub fn from_toml(text: &str) -> Result<Self, SpecFileError> {
        let value: toml::Table =
            toml::from_str(text).map_err(|error| SpecFileError::Toml(error.to_string()))?;
        let value =
            serde_json::to_value(value).map_err(|error| SpecFileError::Toml(error.to_string()))?;
        Ok(Self::parse(&value)?)
    }

    /// Reads a spec written in JSON.
    pub fn from_json(text: &str) -> Result<Self, SpecFileError> {
        let value: Value =
            serde_json::from_str(text).map_err(|error| SpecFileError::Json(error.to_string()))?;
        Ok(Self::parse(&value)?)
    }

    /// Reads and validates a spec; the first problem found is the error.
    pub fn parse(value: &Value) -> Result<Self, SpecError> {
        let root = Fields::of(value, "")?;
        root.only(&[
            "tenant",
            "currency",
            "office",
            "products",
            "customers",
            "sellers",
            "locations",
            "devices",
            "stock",
            "token_expires",
        ])?;
        let tenant = root.id("tenant", TenantId::new)?;
        let currency = root
            .optional_str("currency")?
            .map(|code| {
                Currency::new(code).map_err(|error| SpecError::new("currency", error.to_string()))
            })
            .transpose()?;
        let office = match root.get("office") {
            None => OfficeSpec {
                seller: OFFICE_SELLER_DEFAULT.to_string(),
                device: OFFICE_DEVICE_DEFAULT.to_string(),
            },
            Some(value) => {
                let office = Fields::of(value, "office")?;
                office.only(&["seller", "device"])?;
                OfficeSpec {
                    seller: office
                        .optional_id("seller", SellerId::new)?
                        .map_or(OFFICE_SELLER_DEFAULT.to_string(), |id| id.to_string()),
                    device: office
                        .optional_id("device", DeviceId::new)?
                        .map_or(OFFICE_DEVICE_DEFAULT.to_string(), |id| id.to_string()),
                }
            }
        };
        let token_expires = root.optional_str("token_expires")?.map(str::to_string);

        let mut products = Vec::new();
        for (i, item) in root.list("products", PROVISION_PRODUCTS_MAX)? {
            item.only(&["id", "name", "unit_price_cents", "currency", "active"])?;
            let currency = match item.optional_str("currency")? {
                Some(code) => Currency::new(code)
                    .map_err(|error| SpecError::new(item.at("currency"), error.to_string()))?,
                None => currency.ok_or_else(|| {
                    SpecError::new(
                        item.at("currency"),
                        "no currency here and no top-level `currency`",
                    )
                })?,
            };
            let unit_price_cents = item.int("unit_price_cents")?;
            if unit_price_cents < 0 {
                return Err(SpecError::new(
                    item.at("unit_price_cents"),
                    "a price cannot be negative",
                ));
            }
            products.push(Product {
                id: item.id("id", ProductId::new)?,
                name: item.name("name")?,
                unit_price_cents,
                currency,
                active: item.optional_bool("active")?.unwrap_or(true),
            });
            unique(&products, |p| p.id.as_str(), "products", i)?;
        }
        let mut customers = Vec::new();
        for (i, item) in root.list("customers", PROVISION_CUSTOMERS_MAX)? {
            item.only(&["id", "name"])?;
            customers.push(Customer {
                id: item.id("id", CustomerId::new)?,
                name: item.name("name")?,
            });
            unique(&customers, |c| c.id.as_str(), "customers", i)?;
        }
        let mut sellers = Vec::new();
        for (i, item) in root.list("sellers", PROVISION_DOCUMENT_OWNERS_MAX)? {
            item.only(&["id", "name"])?;
            sellers.push(Seller {
                id: item.id("id", SellerId::new)?,
                name: item.name("name")?,
            });
            unique(&sellers, |s| s.id.as_str(), "sellers", i)?;
        }
        let seller_ids: BTreeSet<&str> = sellers.iter().map(|s| s.id.as_str()).collect();
        let known_seller = |item: &Fields, field: &str, seller: &SellerId| {
            if seller_ids.contains(seller.as_str()) {
                Ok(())
            } else {
                Err(SpecError::new(
                    item.at(field),
                    format!("seller {seller} is not in `sellers`"),
                ))
            }
        };
        let mut locations = Vec::new();
        for (i, item) in root.list("locations", PROVISION_DOCUMENT_OWNERS_MAX)? {
            item.only(&["id", "name", "kind", "seller"])?;
            let kind = match item.str("kind")? {
                "warehouse" => LocationKind::Warehouse,
                "vehicle" => LocationKind::Vehicle,
                other => {
                    return Err(SpecError::new(
                        item.at("kind"),
                        format!("{other:?} is not `warehouse` or `vehicle`"),
                    ))
                }
            };
            let seller = item.optional_id("seller", SellerId::new)?;
            match (kind, &seller) {
                (LocationKind::Vehicle, None) => {
                    return Err(SpecError::new(
                        item.at("seller"),
                        "a vehicle needs the seller whose vehicle it is",
                    ))
                }
                (LocationKind::Warehouse, Some(_)) => {
                    return Err(SpecError::new(
                        item.at("seller"),
                        "only a vehicle belongs to a seller",
                    ))
                }
                (_, Some(seller)) => known_seller(&item, "seller", seller)?,
                (_, None) => {}
            }
            locations.push(Location {
                id: item.id("id", LocationId::new)?,
                name: item.name("name")?,
                kind,
                seller,
            });
            unique(&locations, |l| l.id.as_str(), "locations", i)?;
        }
        let mut devices: Vec<DeviceRecord> = Vec::new();
        for (i, item) in root.list("devices", PROVISION_DOCUMENT_OWNERS_MAX)? {
            item.only(&["id", "seller", "receipt_prefix"])?;
            let seller = item.id("seller", SellerId::new)?;
            known_seller(&item, "seller", &seller)?;
            let receipt_prefix = item.str("receipt_prefix")?.to_string();
            let prefix_ok = !receipt_prefix.is_empty()
                && receipt_prefix.len() <= RECEIPT_PREFIX_BYTES_MAX
                && receipt_prefix.bytes().all(|b| b.is_ascii_alphanumeric());
            if !prefix_ok {
                return Err(SpecError::new(
                    item.at("receipt_prefix"),
                    format!("1 to {RECEIPT_PREFIX_BYTES_MAX} letters or digits"),
                ));
            }
            if devices.iter().any(|d| d.receipt_prefix == receipt_prefix) {
                return Err(SpecError::new(
                    item.at("receipt_prefix"),
                    format!("{receipt_prefix:?} is already another device's"),
                ));
            }
            devices.push(DeviceRecord {
                id: item.id("id", DeviceId::new)?,
                seller,
                receipt_prefix,
            });
            unique(&devices, |d| d.id.as_str(), "devices", i)?;
        }
        if devices.iter().any(|d| d.id.as_str() == office.device) {
            return Err(SpecError::new(
                "office.device",
                format!("{} is also a seller's device", office.device),
            ));
        }
        let product_ids: BTreeSet<&str> = products.iter().map(|p| p.id.as_str()).collect();
        let location_ids: BTreeSet<&str> = locations.iter().map(|l| l.id.as_str()).collect();
        let mut stock: Vec<StockSpec> = Vec::new();
        for (_, item) in root.list("stock", PROVISION_DOCUMENT_OWNERS_MAX)? {
            item.only(&["location", "levels"])?;
            let location = item.id("location", LocationId::new)?;
            if !location_ids.contains(location.as_str()) {
                return Err(SpecError::new(
                    item.at("location"),
                    format!("location {location} is not in `locations`"),
                ));
            }
            if stock.iter().any(|s| s.location == location) {
                return Err(SpecError::new(
                    item.at("location"),
                    format!("location {location} has opening stock twice"),
                ));
            }
            let mut levels = BTreeMap::new();
            if let Some(value) = item.get("levels") {
                let field = item.at("levels");
                let Value::Object(map) = value else {
                    return Err(SpecError::new(field, "expected a table of product = units"));
                };
                for (product, quantity) in map {
                    let at = format!("{field}.{product}");
                    let id = ProductId::new(product.clone())
                        .map_err(|error| SpecError::new(&at, error.to_string()))?;
                    if !product_ids.contains(id.as_str()) {
                        return Err(SpecError::new(&at, "the product is not in `products`"));
                    }
                    let units = integer(quantity, &at)?;
                    if !(0..=OPENING_QUANTITY_MAX).contains(&units) {
                        return Err(SpecError::new(
                            &at,
                            format!("0 to {OPENING_QUANTITY_MAX} units"),
                        ));
                    }
                    levels.insert(id, units);
                }
            }
            stock.push(StockSpec { location, levels });
        }
        Ok(Self {
            tenant,
            products,
            customers,
            sellers,
            locations,
            devices,
            stock,
            office,
            token_expires,
        })
    }
}

/// The `i`th item just pushed must not repeat an earlier id.
fn unique<T>(items: &[T], id: impl Fn(&T) -> &str, list: &str, i: usize) -> Result<(), SpecError> {
    let Some((last, earlier)) = items.split_last() else {
        return Ok(());
    };
    if earlier.iter().any(|item| id(item) == id(last)) {
        return Err(SpecError::new(
            format!("{list}[{i}].id"),
            format!("{} appears twice", id(last)),
        ));
    }
    Ok(())
}

fn integer(value: &Value, field: &str) -> Result<i64, SpecError> {
    value
        .as_i64()
        .ok_or_else(|| SpecError::new(field, "expected an integer"))
}

/// A JSON object with the path that leads to it, for error messages.
struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, path: &str) -> Result<Self, SpecError> {
        match value {
            Value::Object(map) => Ok(Self {
                path: path.to_string(),
                map,
            }),
            _ => Err(SpecError::new(path, "expected a table (object)")),
        }
    }

    fn at(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn only(&self, known: &[&str]) -> Result<(), SpecError> {
        match self.map.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(SpecError::new(self.at(key), "unknown field")),
            None => Ok(()),
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|value| !value.is_null())
    }

    fn optional_str(&self, field: &str) -> Result<Option<&'a str>, SpecError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(SpecError::new(self.at(field), "expected a string")),
        }
    }

    fn str(&self, field: &str) -> Result<&'a str, SpecError> {
        self.optional_str(field)?
            .ok_or_else(|| SpecError::new(self.at(field), "missing"))
    }

    fn name(&self, field: &str) -> Result<String, SpecError> {
        let name = self.str(field)?;
        if name.trim().is_empty() || name.len() > PROVISION_NAME_BYTES_MAX {
            return Err(SpecError::new(
                self.at(field),
                format!("1 to {PROVISION_NAME_BYTES_MAX} bytes, not blank"),
            ));
        }
        Ok(name.to_string())
    }

    fn optional_id<T, E: std::fmt::Display>(
        &self,
        field: &str,
        make: impl Fn(String) -> Result<T, E>,
    ) -> Result<Option<T>, SpecError> {
        self.optional_str(field)?
            .map(|text| {
                make(text.to_string())
                    .map_err(|error| SpecError::new(self.at(field), error.to_string()))
            })
            .transpose()
    }

    fn id<T, E: std::fmt::Display>(
        &self,
        field: &str,
        make: impl Fn(String) -> Result<T, E>,
    ) -> Result<T, SpecError> {
        self.optional_id(field, make)?
            .ok_or_else(|| SpecError::new(self.at(field), "missing"))
    }

    fn int(&self, field: &str) -> Result<i64, SpecError> {
        let value = self
            .get(field)
            .ok_or_else(|| SpecError::new(self.at(field), "missing"))?;
        integer(value, &self.at(field))
    }

    fn optional_bool(&self, field: &str) -> Result<Option<bool>, SpecError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(SpecError::new(self.at(field), "expected true or false")),
        }
    }

    /// The items of a list field (absent: none), each an object.
    fn list(&self, field: &str, max: usize) -> Result<Vec<(usize, Fields<'a>)>, SpecError> {
        let items = match self.get(field) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(SpecError::new(self.at(field), "expected a list")),
        };
        if items.len() > max {
            return Err(SpecError::new(
                self.at(field),
                format!("{} items; at most {max}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Ok((i, Fields::of(item, &format!("{}[{i}]", self.at(field)))?)))
            .collect()
    }
}

/// Every document of a new tenant, before it has an id.
pub struct TenantDocuments {
    /// The catalog without its directory (see [`list_in_catalog`]).
    pub catalog: Automerge,
    pub documents: Vec<(DocKey, Automerge)>,
}

/// Makes the tenant's documents: devices, stock for `current` (opening
/// movements at `at_ms`), ledgers of every seller for each of
/// `ledger_periods`, and the catalog.
pub fn build_documents(
    spec: &TenantSpec,
    ledger_periods: &[Period],
    current: Period,
    at_ms: i64,
) -> Result<TenantDocuments, DomainError> {
    let tenant = &spec.tenant;
    let mut catalog = create_catalog_doc(tenant)?;
    for product in &spec.products {
        put_product(&mut catalog, product)?;
    }
    for customer in &spec.customers {
        put_customer(&mut catalog, customer)?;
    }
    for seller in &spec.sellers {
        put_seller(&mut catalog, seller)?;
    }
    for location in &spec.locations {
        put_location(&mut catalog, location)?;
    }
    for device in &spec.devices {
        put_device(&mut catalog, device)?;
    }
    let mut documents = Vec::new();
    for device in &spec.devices {
        let doc = create_device_doc(tenant, &device.id, &device.seller, &device.receipt_prefix)?;
        documents.push((DocKey::device(&device.id), doc));
    }
    let product_ids: Vec<ProductId> = spec.products.iter().map(|p| p.id.clone()).collect();
    for location in &spec.locations {
        let mut doc = create_stock_doc(tenant, &location.id, current, &product_ids)?;
        let opening: Vec<Movement> = spec
            .stock
            .iter()
            .filter(|stock| stock.location == location.id)
            .flat_map(|stock| stock.levels.iter())
            .filter(|(_, units)| **units != 0)
            .map(|(product, units)| Movement {
                id: format!("opening/{product}"),
                kind: MovementKind::Opening,
                product: product.clone(),
                delta: *units,
                record: format!("opening/{}", current),
                author: OPENING_AUTHOR.to_string(),
                at_ms,
            })
            .collect();
        if !opening.is_empty() {
            move_stock(&mut doc, &opening)?;
        }
        documents.push((DocKey::stock(&location.id, current), doc));
    }
    for seller in &spec.sellers {
        for period in ledger_periods {
            let doc = create_ledger_doc(tenant, &seller.id, *period)?;
            documents.push((DocKey::ledger(&seller.id, *period), doc));
        }
    }
    Ok(TenantDocuments { catalog, documents })
}

/// Lists documents in the catalog's directory (`urls` in the order of
/// `keys`).
pub fn list_in_catalog(
    catalog: &mut Automerge,
    entries: &[(DocKey, String)],
) -> Result<(), DomainError> {
    for (key, url) in entries {
        put_directory_entry(catalog, key, url)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{read_catalog, read_stock};

    const EXAMPLE: &str = include_str!("../docs/tenant.example.toml");

    #[test]
    fn the_documented_example_is_a_valid_spec() {
        let spec = TenantSpec::from_toml(EXAMPLE).expect("example");
        assert_eq!(spec.tenant.as_str(), "acme");
        assert!(!spec.devices.is_empty());
        assert!(!spec.stock.is_empty());
    }

    #[test]
    fn json_and_toml_say_the_same() {
        let spec = TenantSpec::from_toml(EXAMPLE).expect("toml");
        let value: toml::Table = toml::from_str(EXAMPLE).expect("table");
        let json = serde_json::to_string(&value).expect("json");
        assert_eq!(TenantSpec::from_json(&json).expect("json"), spec);
    }

    fn refusal(json: &str) -> SpecError {
        match TenantSpec::from_json(json) {
            Err(SpecFileError::Spec(error)) => error,
            other => panic!("expected a spec error, got {other:?}"),
        }
    }

    #[test]
    fn every_refusal_names_the_field() {
        let cases = [
            (r#"{"tenant":"a b"}"#, "tenant"),
            (r#"{"tenant":"acme","colour":1}"#, "colour"),
            (
                r#"{"tenant":"acme","products":[{"id":"p","name":"P","unit_price_cents":1.5,"currency":"EUR"}]}"#,
                "products[0].unit_price_cents",
            ),
            (
                r#"{"tenant":"acme","products":[{"id":"p","name":"P","unit_price_cents":1}]}"#,
                "products[0].currency",
            ),
            (
                r#"{"tenant":"acme","sellers":[{"id":"ana","name":"Ana"}],"devices":[{"id":"t","seller":"bob","receipt_prefix":"T"}]}"#,
                "devices[0].seller",
            ),
            (
                r#"{"tenant":"acme","locations":[{"id":"van","name":"Van","kind":"vehicle"}]}"#,
                "locations[0].seller",
            ),
            (
                r#"{"tenant":"acme","currency":"EUR","products":[{"id":"p","name":"P","unit_price_cents":1}],"locations":[{"id":"w","name":"W","kind":"warehouse"}],"stock":[{"location":"w","levels":{"q":3}}]}"#,
                "stock[0].levels.q",
            ),
            (
                r#"{"tenant":"acme","sellers":[{"id":"ana","name":"Ana"},{"id":"ana","name":"Ana"}]}"#,
                "sellers[1].id",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(refusal(json).field, field, "{json}");
        }
    }

    #[test]
    fn the_documents_hold_the_catalog_stock_and_ledgers() {
        let spec = TenantSpec::from_toml(EXAMPLE).expect("example");
        let period = Period::parse("2026-12").expect("period");
        let built = build_documents(&spec, &[period], period, period.start_ms() + 1).expect("docs");
        let catalog = read_catalog(&built.catalog);
        assert!(catalog.violations.is_empty(), "{:?}", catalog.violations);
        assert_eq!(catalog.sellers.len(), spec.sellers.len());
        let ledgers = built
            .documents
            .iter()
            .filter(|(key, _)| key.kind == crate::domain::DocKind::Ledger)
            .count();
        assert_eq!(ledgers, spec.sellers.len());
        let stocked = &spec.stock[0];
        let (_, doc) = built
            .documents
            .iter()
            .find(|(key, _)| *key == DocKey::stock(&stocked.location, period))
            .expect("stock document");
        let view = read_stock(doc);
        assert!(view.violations.is_empty(), "{:?}", view.violations);
        for (product, units) in &stocked.levels {
            assert_eq!(view.levels.get(product).copied().unwrap_or(0), *units);
        }
    }
}
