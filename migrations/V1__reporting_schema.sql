-- The reporting projection of ventas documents (issue 4). Every business
-- row carries the tenant and the id of the document it comes from
-- (bs58check text); rows are keyed by (document, domain id). Money is
-- bigint cents, quantities bigint units, times timestamptz derived from the
-- stored milliseconds (kept too). See docs/reporting.md.

-- One row per exported document: what was exported, up to which heads.
-- The exporter writes rows and heads in one transaction.
CREATE TABLE export_state (
    document_id  text PRIMARY KEY,
    kind         text,             -- catalog, device, ledger, stock; NULL: not a ventas document
    tenant       text,
    owner        text,
    period       text,             -- YYYY-MM (ledger, stock)
    heads        text[] NOT NULL,  -- automerge change hashes (hex), sorted
    exported_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX export_state_tenant_kind ON export_state (tenant, kind, owner, period);

-- Catalog.
CREATE TABLE products (
    document_id      text NOT NULL,
    tenant           text NOT NULL,
    product_id       text NOT NULL,
    name             text NOT NULL,
    unit_price_cents bigint NOT NULL,
    currency         text NOT NULL,
    active           boolean NOT NULL,
    PRIMARY KEY (document_id, product_id)
);
CREATE INDEX products_tenant ON products (tenant, product_id);

CREATE TABLE customers (
    document_id text NOT NULL,
    tenant      text NOT NULL,
    customer_id text NOT NULL,
    name        text NOT NULL,
    PRIMARY KEY (document_id, customer_id)
);
CREATE INDEX customers_tenant ON customers (tenant, customer_id);

CREATE TABLE sellers (
    document_id text NOT NULL,
    tenant      text NOT NULL,
    seller_id   text NOT NULL,
    name        text NOT NULL,
    PRIMARY KEY (document_id, seller_id)
);
CREATE INDEX sellers_tenant ON sellers (tenant, seller_id);

CREATE TABLE devices (
    document_id    text NOT NULL,
    tenant         text NOT NULL,
    device_id      text NOT NULL,
    seller_id      text NOT NULL,
    receipt_prefix text NOT NULL,
    PRIMARY KEY (document_id, device_id)
);
CREATE INDEX devices_tenant ON devices (tenant, device_id);

CREATE TABLE locations (
    document_id text NOT NULL,
    tenant      text NOT NULL,
    location_id text NOT NULL,
    name        text NOT NULL,
    kind        text NOT NULL,     -- warehouse, vehicle
    seller_id   text,              -- vehicles: whose vehicle
    PRIMARY KEY (document_id, location_id)
);
CREATE INDEX locations_tenant ON locations (tenant, location_id);

-- Ledgers. Corrections (voids, payments, returns) have no foreign key to
-- sales: validity is decided per document by the domain rules, and only
-- valid records are here, but a reporting table must never refuse a row
-- because of the order documents are exported in.
CREATE TABLE sales (
    document_id    text NOT NULL,
    tenant         text NOT NULL,
    sale_id        text NOT NULL,  -- {device}:{seq}
    device_id      text NOT NULL,
    seq            bigint NOT NULL,
    receipt        text NOT NULL,
    seller_id      text NOT NULL,
    customer_id    text NOT NULL,
    location_id    text NOT NULL,
    currency       text NOT NULL,
    total_cents    bigint NOT NULL,
    line_count     integer NOT NULL,
    recorded_at_ms bigint NOT NULL,
    recorded_at    timestamptz GENERATED ALWAYS AS (to_timestamp(recorded_at_ms / 1000.0)) STORED,
    PRIMARY KEY (document_id, sale_id)
);
CREATE INDEX sales_tenant_sale ON sales (tenant, sale_id);
CREATE INDEX sales_seller_time ON sales (tenant, seller_id, recorded_at);
CREATE INDEX sales_customer ON sales (tenant, customer_id);

CREATE TABLE sale_lines (
    document_id      text NOT NULL,
    tenant           text NOT NULL,
    sale_id          text NOT NULL,
    line_no          integer NOT NULL, -- 0-based, as in the document
    product_id       text NOT NULL,
    quantity         bigint NOT NULL,
    unit_price_cents bigint NOT NULL,
    line_total_cents bigint NOT NULL,
    PRIMARY KEY (document_id, sale_id, line_no),
    FOREIGN KEY (document_id, sale_id) REFERENCES sales (document_id, sale_id) ON DELETE CASCADE
);
CREATE INDEX sale_lines_product ON sale_lines (tenant, product_id);

CREATE TABLE voids (
    document_id text NOT NULL,
    tenant      text NOT NULL,
    void_id     text NOT NULL,
    sale_id     text NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    reason      text NOT NULL,
    at_ms       bigint NOT NULL,
    at          timestamptz GENERATED ALWAYS AS (to_timestamp(at_ms / 1000.0)) STORED,
    PRIMARY KEY (document_id, void_id)
);
CREATE INDEX voids_sale ON voids (document_id, sale_id);

CREATE TABLE payments (
    document_id  text NOT NULL,
    tenant       text NOT NULL,
    payment_id   text NOT NULL,
    sale_id      text NOT NULL,
    device_id    text NOT NULL,
    seq          bigint NOT NULL,
    amount_cents bigint NOT NULL,
    currency     text NOT NULL,
    method       text NOT NULL,
    at_ms        bigint NOT NULL,
    at           timestamptz GENERATED ALWAYS AS (to_timestamp(at_ms / 1000.0)) STORED,
    PRIMARY KEY (document_id, payment_id)
);
CREATE INDEX payments_sale ON payments (document_id, sale_id);
CREATE INDEX payments_time ON payments (tenant, at);

CREATE TABLE returns (
    document_id  text NOT NULL,
    tenant       text NOT NULL,
    return_id    text NOT NULL,
    sale_id      text NOT NULL,
    device_id    text NOT NULL,
    seq          bigint NOT NULL,
    receipt      text NOT NULL,
    location_id  text NOT NULL,
    refund_cents bigint NOT NULL,
    at_ms        bigint NOT NULL,
    at           timestamptz GENERATED ALWAYS AS (to_timestamp(at_ms / 1000.0)) STORED,
    PRIMARY KEY (document_id, return_id)
);
CREATE INDEX returns_sale ON returns (document_id, sale_id);

CREATE TABLE return_lines (
    document_id  text NOT NULL,
    tenant       text NOT NULL,
    return_id    text NOT NULL,
    line_no      integer NOT NULL,
    product_id   text NOT NULL,
    quantity     bigint NOT NULL,
    refund_cents bigint NOT NULL,
    PRIMARY KEY (document_id, return_id, line_no),
    FOREIGN KEY (document_id, return_id) REFERENCES returns (document_id, return_id) ON DELETE CASCADE
);
CREATE INDEX return_lines_product ON return_lines (tenant, product_id);

-- Stock documents: one per (location, month).
CREATE TABLE stock_levels (
    document_id text NOT NULL,
    tenant      text NOT NULL,
    location_id text NOT NULL,
    period      text NOT NULL,
    product_id  text NOT NULL,
    level       bigint NOT NULL,   -- the counter; negative = oversold
    PRIMARY KEY (document_id, product_id)
);
CREATE INDEX stock_levels_location ON stock_levels (tenant, location_id, period, product_id);

CREATE TABLE stock_movements (
    document_id text NOT NULL,
    tenant      text NOT NULL,
    location_id text NOT NULL,
    period      text NOT NULL,
    movement_id text NOT NULL,
    kind        text NOT NULL,
    product_id  text NOT NULL,
    delta       bigint NOT NULL,
    record      text NOT NULL,
    author      text NOT NULL,
    at_ms       bigint NOT NULL,
    at          timestamptz GENERATED ALWAYS AS (to_timestamp(at_ms / 1000.0)) STORED,
    PRIMARY KEY (document_id, movement_id)
);
CREATE INDEX stock_movements_product ON stock_movements (document_id, product_id);
CREATE INDEX stock_movements_location_time ON stock_movements (tenant, location_id, at);

CREATE TABLE oversell_alerts (
    document_id          text NOT NULL,
    tenant               text NOT NULL,
    alert_id             text NOT NULL,
    location_id          text NOT NULL,
    period               text NOT NULL,
    product_id           text NOT NULL,
    level                bigint NOT NULL,
    movements            text[] NOT NULL,
    records              text[] NOT NULL,
    authors              text[] NOT NULL,
    status               text NOT NULL, -- open, cleared
    first_detected_at_ms bigint NOT NULL,
    updated_at_ms        bigint NOT NULL,
    first_detected_at    timestamptz GENERATED ALWAYS AS (to_timestamp(first_detected_at_ms / 1000.0)) STORED,
    updated_at           timestamptz GENERATED ALWAYS AS (to_timestamp(updated_at_ms / 1000.0)) STORED,
    PRIMARY KEY (document_id, alert_id)
);
CREATE INDEX oversell_alerts_open ON oversell_alerts (tenant, status, location_id);

-- Records that break a rule: kept out of the tables above, one row per
-- problem. collection 'root' holds problems of the document's structure.
CREATE TABLE invalid_records (
    document_id  text NOT NULL,
    tenant       text NOT NULL,
    kind         text NOT NULL,
    collection   text NOT NULL,
    record_key   text NOT NULL,
    problem_no   integer NOT NULL, -- 0-based, per record
    actor        text,             -- hex actor that created the record
    problem_code text NOT NULL,
    problem      text NOT NULL,
    PRIMARY KEY (document_id, collection, record_key, problem_no)
);
CREATE INDEX invalid_records_tenant ON invalid_records (tenant, kind, problem_code);

-- The sync log (one row per connection session).
CREATE TABLE sync_sessions (
    session_id         bigint PRIMARY KEY,
    peer_id            text,
    identity           text,
    remote_addr        text NOT NULL,
    connected_at_ms    bigint NOT NULL,
    disconnected_at_ms bigint,
    connected_at       timestamptz GENERATED ALWAYS AS (to_timestamp(connected_at_ms / 1000.0)) STORED,
    disconnected_at    timestamptz GENERATED ALWAYS AS (to_timestamp(disconnected_at_ms / 1000.0)) STORED,
    documents          text[] NOT NULL,
    messages_in        bigint NOT NULL,
    messages_out       bigint NOT NULL,
    changes_in         bigint NOT NULL,
    changes_out        bigint NOT NULL,
    bytes_in           bigint NOT NULL,
    bytes_out          bigint NOT NULL,
    writes_denied      bigint NOT NULL,
    denials            text[] NOT NULL,
    error              text
);
CREATE INDEX sync_sessions_connected ON sync_sessions (connected_at);
CREATE INDEX sync_sessions_peer ON sync_sessions (peer_id, connected_at);

-- Derived views. A sale's status follows the domain's rule: any valid void
-- wins; otherwise paid once payments cover total minus refunds.
CREATE VIEW sale_status AS
SELECT s.document_id, s.tenant, s.sale_id, s.seller_id, s.customer_id, s.currency,
       s.recorded_at, s.total_cents,
       COALESCE(r.refunded_cents, 0) AS refunded_cents,
       s.total_cents - COALESCE(r.refunded_cents, 0) AS due_cents,
       COALESCE(p.paid_cents, 0) AS paid_cents,
       COALESCE(v.voids, 0) > 0 AS voided,
       COALESCE(r.returns, 0) > 0 AS returned,
       CASE WHEN COALESCE(v.voids, 0) > 0 THEN 'voided'
            WHEN COALESCE(p.paid_cents, 0) >= s.total_cents - COALESCE(r.refunded_cents, 0) THEN 'paid'
            ELSE 'open' END AS state
FROM sales s
LEFT JOIN (SELECT document_id, sale_id, count(*) AS voids FROM voids GROUP BY 1, 2) v
       USING (document_id, sale_id)
LEFT JOIN (SELECT document_id, sale_id, sum(amount_cents) AS paid_cents FROM payments GROUP BY 1, 2) p
       USING (document_id, sale_id)
LEFT JOIN (SELECT document_id, sale_id, count(*) AS returns, sum(refund_cents) AS refunded_cents
           FROM returns GROUP BY 1, 2) r
       USING (document_id, sale_id);

-- Non-voided sales per UTC day and seller, net of refunds.
CREATE VIEW sales_per_day_per_seller AS
SELECT tenant, seller_id, (recorded_at AT TIME ZONE 'UTC')::date AS day, currency,
       count(*) AS sales,
       sum(total_cents)::bigint AS gross_cents,
       sum(refunded_cents)::bigint AS refunded_cents,
       sum(due_cents)::bigint AS net_cents,
       sum(paid_cents)::bigint AS paid_cents
FROM sale_status
WHERE NOT voided
GROUP BY tenant, seller_id, day, currency;

-- Units and revenue per product over non-voided sales, with returns.
CREATE VIEW sales_per_product AS
SELECT l.tenant, l.product_id, st.currency,
       count(DISTINCT (l.document_id, l.sale_id)) AS sales,
       sum(l.quantity)::bigint AS quantity_sold,
       sum(l.line_total_cents)::bigint AS revenue_cents,
       COALESCE((SELECT sum(rl.quantity) FROM return_lines rl
                 WHERE rl.tenant = l.tenant AND rl.product_id = l.product_id), 0)::bigint AS quantity_returned
FROM sale_lines l
JOIN sale_status st USING (document_id, sale_id)
WHERE NOT st.voided
GROUP BY l.tenant, l.product_id, st.currency;

-- Current stock per location: the levels of each location's latest period.
CREATE VIEW stock_by_location AS
SELECT sl.tenant, sl.location_id, sl.period, sl.product_id, sl.level,
       sl.level < 0 AS oversold, sl.document_id
FROM stock_levels sl
WHERE sl.period = (SELECT max(x.period) FROM stock_levels x
                   WHERE x.tenant = sl.tenant AND x.location_id = sl.location_id);

-- Counters that differ from the sum of their valid movements (the domain's
-- CounterDrift rule, derived here so it stays exact under incremental export).
CREATE VIEW stock_counter_drift AS
SELECT sl.document_id, sl.tenant, sl.location_id, sl.period, sl.product_id, sl.level,
       COALESCE(m.movements_sum, 0) AS movements_sum
FROM stock_levels sl
LEFT JOIN (SELECT document_id, product_id, sum(delta) AS movements_sum
           FROM stock_movements GROUP BY 1, 2) m USING (document_id, product_id)
WHERE sl.level <> COALESCE(m.movements_sum, 0);
