//! The exported tables as data: name, inserted columns with their Postgres
//! types, primary key, and which document collection feeds each. One
//! description serves the row-by-row upsert ([`super::apply`]), the binary
//! COPY of the backfill and the tests' table comparisons.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// One value of an exported row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Int4(i32),
    Bool(bool),
    TextArray(Vec<String>),
}

/// Values in the order of [`Table::columns`].
pub type Row = Vec<Cell>;

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Text(value) => value.to_sql(ty, out),
            Cell::OptText(value) => value.to_sql(ty, out),
            Cell::Int(value) => value.to_sql(ty, out),
            Cell::OptInt(value) => value.to_sql(ty, out),
            Cell::Int4(value) => value.to_sql(ty, out),
            Cell::Bool(value) => value.to_sql(ty, out),
            Cell::TextArray(value) => value.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TEXT,
            Type::INT8,
            Type::INT4,
            Type::BOOL,
            Type::TEXT_ARRAY,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

/// Every table a document feeds (`export_state` and `sync_sessions` are
/// written separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Products,
    Customers,
    Sellers,
    Devices,
    Locations,
    Sales,
    SaleLines,
    Voids,
    Payments,
    Returns,
    ReturnLines,
    StockLevels,
    StockMovements,
    OversellAlerts,
    InvalidRecords,
}

const T: Type = Type::TEXT;
const I8: Type = Type::INT8;
const I4: Type = Type::INT4;
const B: Type = Type::BOOL;
const TA: Type = Type::TEXT_ARRAY;

impl Table {
    /// Parents before children (foreign keys), so inserting in this order
    /// and deleting in reverse never trips a constraint.
    pub const ALL: [Table; 15] = [
        Table::Products,
        Table::Customers,
        Table::Sellers,
        Table::Devices,
        Table::Locations,
        Table::Sales,
        Table::SaleLines,
        Table::Voids,
        Table::Payments,
        Table::Returns,
        Table::ReturnLines,
        Table::StockLevels,
        Table::StockMovements,
        Table::OversellAlerts,
        Table::InvalidRecords,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Products => "products",
            Table::Customers => "customers",
            Table::Sellers => "sellers",
            Table::Devices => "devices",
            Table::Locations => "locations",
            Table::Sales => "sales",
            Table::SaleLines => "sale_lines",
            Table::Voids => "voids",
            Table::Payments => "payments",
            Table::Returns => "returns",
            Table::ReturnLines => "return_lines",
            Table::StockLevels => "stock_levels",
            Table::StockMovements => "stock_movements",
            Table::OversellAlerts => "oversell_alerts",
            Table::InvalidRecords => "invalid_records",
        }
    }

    /// The columns the exporter writes (generated timestamp columns are
    /// left out), with their types. `document_id` and `tenant` come first.
    pub fn columns(self) -> &'static [(&'static str, Type)] {
        match self {
            Table::Products => &[
                ("document_id", T),
                ("tenant", T),
                ("product_id", T),
                ("name", T),
                ("unit_price_cents", I8),
                ("currency", T),
                ("active", B),
            ],
            Table::Customers => &[
                ("document_id", T),
                ("tenant", T),
                ("customer_id", T),
                ("name", T),
            ],
            Table::Sellers => &[
                ("document_id", T),
                ("tenant", T),
                ("seller_id", T),
                ("name", T),
            ],
            Table::Devices => &[
                ("document_id", T),
                ("tenant", T),
                ("device_id", T),
                ("seller_id", T),
                ("receipt_prefix", T),
            ],
            Table::Locations => &[
                ("document_id", T),
                ("tenant", T),
                ("location_id", T),
                ("name", T),
                ("kind", T),
                ("seller_id", T),
            ],
            Table::Sales => &[
                ("document_id", T),
                ("tenant", T),
                ("sale_id", T),
                ("device_id", T),
                ("seq", I8),
                ("receipt", T),
                ("seller_id", T),
                ("customer_id", T),
                ("location_id", T),
                ("currency", T),
                ("total_cents", I8),
                ("line_count", I4),
                ("recorded_at_ms", I8),
            ],
            Table::SaleLines => &[
                ("document_id", T),
                ("tenant", T),
                ("sale_id", T),
                ("line_no", I4),
                ("product_id", T),
                ("quantity", I8),
                ("unit_price_cents", I8),
                ("line_total_cents", I8),
            ],
            Table::Voids => &[
                ("document_id", T),
                ("tenant", T),
                ("void_id", T),
                ("sale_id", T),
                ("device_id", T),
                ("seq", I8),
                ("reason", T),
                ("at_ms", I8),
            ],
            Table::Payments => &[
                ("document_id", T),
                ("tenant", T),
                ("payment_id", T),
                ("sale_id", T),
                ("device_id", T),
                ("seq", I8),
                ("amount_cents", I8),
                ("currency", T),
                ("method", T),
                ("at_ms", I8),
            ],
            Table::Returns => &[
                ("document_id", T),
                ("tenant", T),
                ("return_id", T),
                ("sale_id", T),
                ("device_id", T),
                ("seq", I8),
                ("receipt", T),
                ("location_id", T),
                ("refund_cents", I8),
                ("at_ms", I8),
            ],
            Table::ReturnLines => &[
                ("document_id", T),
                ("tenant", T),
                ("return_id", T),
                ("line_no", I4),
                ("product_id", T),
                ("quantity", I8),
                ("refund_cents", I8),
            ],
            Table::StockLevels => &[
                ("document_id", T),
                ("tenant", T),
                ("location_id", T),
                ("period", T),
                ("product_id", T),
                ("level", I8),
            ],
            Table::StockMovements => &[
                ("document_id", T),
                ("tenant", T),
                ("location_id", T),
                ("period", T),
                ("movement_id", T),
                ("kind", T),
                ("product_id", T),
                ("delta", I8),
                ("record", T),
                ("author", T),
                ("at_ms", I8),
            ],
            Table::OversellAlerts => &[
                ("document_id", T),
                ("tenant", T),
                ("alert_id", T),
                ("location_id", T),
                ("period", T),
                ("product_id", T),
                ("level", I8),
                ("movements", TA),
                ("records", TA),
                ("authors", TA),
                ("status", T),
                ("first_detected_at_ms", I8),
                ("updated_at_ms", I8),
            ],
            Table::InvalidRecords => &[
                ("document_id", T),
                ("tenant", T),
                ("kind", T),
                ("collection", T),
                ("record_key", T),
                ("problem_no", I4),
                ("actor", T),
                ("problem_code", T),
                ("problem", T),
            ],
        }
    }

    pub fn types(self) -> Vec<Type> {
        self.columns().iter().map(|(_, ty)| ty.clone()).collect()
    }

    /// Primary key columns.
    pub fn key(self) -> &'static [&'static str] {
        match self {
            Table::Products => &["document_id", "product_id"],
            Table::Customers => &["document_id", "customer_id"],
            Table::Sellers => &["document_id", "seller_id"],
            Table::Devices => &["document_id", "device_id"],
            Table::Locations => &["document_id", "location_id"],
            Table::Sales => &["document_id", "sale_id"],
            Table::SaleLines => &["document_id", "sale_id", "line_no"],
            Table::Voids => &["document_id", "void_id"],
            Table::Payments => &["document_id", "payment_id"],
            Table::Returns => &["document_id", "return_id"],
            Table::ReturnLines => &["document_id", "return_id", "line_no"],
            Table::StockLevels => &["document_id", "product_id"],
            Table::StockMovements => &["document_id", "movement_id"],
            Table::OversellAlerts => &["document_id", "alert_id"],
            Table::InvalidRecords => &["document_id", "collection", "record_key", "problem_no"],
        }
    }

    /// The business table fed by a document collection, and the column
    /// holding the collection's key. Child tables (lines) go with their
    /// parent through `ON DELETE CASCADE`.
    pub fn for_collection(collection: &str) -> Option<(Table, &'static str)> {
        Some(match collection {
            "products" => (Table::Products, "product_id"),
            "customers" => (Table::Customers, "customer_id"),
            "sellers" => (Table::Sellers, "seller_id"),
            "devices" => (Table::Devices, "device_id"),
            "locations" => (Table::Locations, "location_id"),
            "sales" => (Table::Sales, "sale_id"),
            "voids" => (Table::Voids, "void_id"),
            "payments" => (Table::Payments, "payment_id"),
            "returns" => (Table::Returns, "return_id"),
            "levels" => (Table::StockLevels, "product_id"),
            "movements" => (Table::StockMovements, "movement_id"),
            "alerts" => (Table::OversellAlerts, "alert_id"),
            _ => return None,
        })
    }

    /// `INSERT .. ON CONFLICT (key) DO UPDATE`: the upsert keyed by domain ids.
    pub fn upsert_sql(self) -> String {
        let columns: Vec<&str> = self.columns().iter().map(|(name, _)| *name).collect();
        let key = self.key();
        let updates: Vec<String> = columns
            .iter()
            .filter(|column| !key.contains(column))
            .map(|column| format!("{column} = EXCLUDED.{column}"))
            .collect();
        let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let source = format!("VALUES ({})", params.join(", "));
        format!(
            "INSERT INTO {} ({}) {} ON CONFLICT ({}) DO UPDATE SET {}",
            self.name(),
            columns.join(", "),
            source,
            key.join(", "),
            updates.join(", ")
        )
    }

    /// Every row, as JSON text without the generated columns, sorted by
    /// key: for comparing two databases.
    pub fn dump_sql(self) -> String {
        let columns: Vec<&str> = self.columns().iter().map(|(name, _)| *name).collect();
        format!(
            "SELECT json_build_array({})::text FROM {} ORDER BY {}",
            columns.join(", "),
            self.name(),
            self.key().join(", ")
        )
    }
}
