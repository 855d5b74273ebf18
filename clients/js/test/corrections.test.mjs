// Corrections (void, payment, return, transfer) on in-memory documents
// built the way the Rust `create_*_doc` functions build them: the records
// written, and every refusal with the Rust `DomainError` variant's name.
// (Rust reads what these write in tests/it/domain_interop.rs.)
import { test } from "node:test"
import assert from "node:assert/strict"
import * as A from "@automerge/automerge"
import {
  VentasError, readCatalog, recordSale, applySaleToStock, voidSale, recordPayment, recordReturn,
  applyReturnToStock, transferStock, saleStatuses, stockLevel, readLedger, moveStock, NOTE_BYTES_MAX,
} from "../index.mjs"

const S = v => new A.ImmutableString(v)
const AT_MS = Date.UTC(2026, 10, 3, 9) // 2026-11
const CONTAINERS = {
  catalog: ["products", "customers", "sellers", "devices", "locations", "directory"],
  device: ["state"],
  ledger: ["sales", "voids", "payments", "returns", "writers"],
  stock: ["levels", "movements", "alerts"],
}

function handle(doc) {
  return {
    doc: () => doc,
    change(fn) {
      doc = A.change(doc, fn)
    },
  }
}

function create(kind, owner, period, fill = () => {}) {
  return handle(A.change(A.init(), d => {
    d.meta = {}
    d.meta.kind = S(kind)
    d.meta.tenant = S("acme")
    d.meta.owner = S(owner)
    if (period) d.meta.period = S(period)
    d.meta.schema_version = 1
    for (const name of CONTAINERS[kind]) d[name] = {}
    fill(d)
  }))
}

function setUp() {
  const catalog = readCatalog(create("catalog", "acme", null, d => {
    d.products.soap = { name: "Soap", unit_price_cents: 250, currency: "EUR", active: true }
    d.products.brush = { name: "Brush", unit_price_cents: 1199, currency: "EUR", active: true }
    d.customers["shop-9"] = { name: "Shop" }
    d.sellers.ana = { name: "Ana" }
    d.devices["tab-1"] = { seller: "ana", receipt_prefix: "T1" }
    d.locations["van-ana"] = { name: "Van", kind: "vehicle", seller: "ana" }
  }).doc())
  const device = create("device", "tab-1", null, d => {
    d.state.seller = S("ana")
    d.state.receipt_prefix = S("T1")
    d.state.last_seq = 0
  })
  const ledger = create("ledger", "ana", "2026-11")
  const stockOf = location => create("stock", location, "2026-11", d => {
    d.levels.soap = new A.Counter(0)
    d.levels.brush = new A.Counter(0)
  })
  const van = stockOf("van-ana")
  const warehouse = stockOf("main")
  moveStock(van, [{ id: "load-1", kind: "load", product: "soap", delta: 10, record: "dn-1", author: "office", at_ms: AT_MS }])
  const sale = recordSale(device, ledger, catalog, {
    customer: "shop-9", location: "van-ana", atMs: AT_MS,
    lines: [{ product: "soap", quantity: 4 }, { product: "brush", quantity: 1 }],
  })
  applySaleToStock(van, sale)
  return { catalog, device, ledger, van, warehouse, sale }
}

const refusal = (fn, code) => {
  assert.throws(fn, error => {
    assert.ok(error instanceof VentasError, `${error}`)
    assert.equal(error.code, code, error.message)
    return true
  })
}

test("a payment, a return and a void are new ledger records numbered from the device counter", () => {
  const { device, ledger, van, sale } = setUp()
  assert.equal(sale.total_cents, 4 * 250 + 1199)
  const payment = recordPayment(device, ledger, { sale: sale.id, amountCents: 1000, method: "cash", atMs: AT_MS + 1 })
  assert.deepEqual(payment, {
    id: "tab-1:0000000002", device: "tab-1", seq: 2, sale: sale.id, amount_cents: 1000,
    currency: "EUR", method: "cash", at_ms: AT_MS + 1,
  })
  const back = recordReturn(device, ledger, {
    sale: sale.id, location: "van-ana", atMs: AT_MS + 2, lines: [{ product: "soap", quantity: 2 }],
  })
  assert.deepEqual(back, {
    id: "tab-1:0000000003", device: "tab-1", seq: 3, sale: sale.id, receipt: "T1-3",
    location: "van-ana", at_ms: AT_MS + 2, lines: [{ product: "soap", quantity: 2, refund_cents: 500 }],
    refund_cents: 500,
  })
  assert.deepEqual(applyReturnToStock(van, back), ["applied"])
  assert.deepEqual(applyReturnToStock(van, back), ["already_applied"])
  assert.equal(stockLevel(van.doc(), "soap"), 10 - 4 + 2)

  const status = saleStatuses(ledger.doc())[sale.id]
  assert.deepEqual({ state: status.state, due: status.due_cents, paid: status.paid_cents }, {
    state: "open", due: 2199 - 500, paid: 1000,
  })
  const voided = voidSale(device, ledger, { sale: sale.id, reason: "wrong customer", atMs: AT_MS + 3 })
  assert.equal(voided.id, "tab-1:0000000004")
  assert.equal(saleStatuses(ledger.doc())[sale.id].state, "voided")

  // Stored with the types Rust writes: scalar strings and integers.
  const raw = ledger.doc()
  assert.ok(A.isImmutableString(raw.voids[voided.id].reason))
  assert.ok(A.isImmutableString(raw.payments[payment.id].currency))
  assert.equal(raw.returns[back.id].lines[0].refund_cents, 500)
  const view = readLedger(raw)
  assert.deepEqual(view.problems, [])
  assert.equal(Object.keys(view.writers).length, 1)
})

test("refusals carry the Rust DomainError codes and write nothing", () => {
  const { catalog, device, ledger, sale } = setUp()
  const before = A.getHeads(ledger.doc())
  const pay = input => () => recordPayment(device, ledger, { sale: sale.id, amountCents: 100, method: "cash", atMs: AT_MS, ...input })
  refusal(pay({ amountCents: 0 }), "NonPositiveAmount")
  refusal(pay({ amountCents: 2.5 }), "Malformed")
  refusal(pay({ amountCents: sale.total_cents + 1 }), "Overpayment")
  refusal(pay({ sale: "tab-1:0000000099" }), "SaleNotFound")
  refusal(pay({ sale: "not a record id" }), "Id")
  refusal(pay({ method: "x".repeat(NOTE_BYTES_MAX + 1) }), "NoteTooLong")
  refusal(pay({ atMs: "today" }), "Malformed")
  const ret = input => () => recordReturn(device, ledger, {
    sale: sale.id, location: "van-ana", atMs: AT_MS, lines: [{ product: "soap", quantity: 1 }], ...input,
  })
  refusal(ret({ lines: [] }), "EmptySale")
  refusal(ret({ lines: [{ product: "soap", quantity: 5 }] }), "ReturnExceedsSold")
  refusal(ret({ lines: [{ product: "soap", quantity: 0 }] }), "NonPositiveQuantity")
  refusal(ret({ lines: [{ product: "soap", quantity: 1 }, { product: "soap", quantity: 1 }] }), "DuplicateLine")
  refusal(ret({ lines: [{ product: "comb", quantity: 1 }] }), "UnknownProduct")
  refusal(ret({ location: "" }), "Id")
  refusal(() => voidSale(device, ledger, { sale: sale.id, reason: "é".repeat(251), atMs: AT_MS }), "NoteTooLong")
  assert.deepEqual(A.getHeads(ledger.doc()), before, "refusals wrote nothing")

  // Another seller's ledger, and a ledger that is not one.
  const other = create("ledger", "bea", "2026-11")
  refusal(() => voidSale(device, other, { sale: sale.id, reason: "r", atMs: AT_MS }), "NotOwner")
  refusal(() => voidSale(device, create("stock", "van-ana", "2026-11"), { sale: sale.id, reason: "r", atMs: AT_MS }), "WrongDocument")

  voidSale(device, ledger, { sale: sale.id, reason: "duplicate", atMs: AT_MS })
  refusal(() => voidSale(device, ledger, { sale: sale.id, reason: "again", atMs: AT_MS }), "SaleVoided")
  refusal(pay({}), "SaleVoided")
  assert.ok(catalog.products.soap)
})

test("a transfer moves stock out of one location and into another, once", () => {
  const { van, warehouse } = setUp()
  moveStock(warehouse, [{ id: "load-w", kind: "load", product: "soap", delta: 20, record: "dn-2", author: "office", at_ms: AT_MS }])
  const input = { id: "transfer-7", product: "soap", quantity: 5, author: "tab-1", atMs: AT_MS }
  assert.deepEqual(transferStock(warehouse, van, input), ["applied", "applied"])
  assert.deepEqual(transferStock(warehouse, van, input), ["already_applied", "already_applied"])
  assert.equal(stockLevel(warehouse.doc(), "soap"), 15)
  assert.equal(stockLevel(van.doc(), "soap"), 10 - 4 + 5)
  const out = warehouse.doc().movements["transfer-7"]
  assert.equal(String(out.kind), "transfer_out")
  assert.equal(out.delta, -5)
  assert.equal(String(van.doc().movements["transfer-7"].kind), "transfer_in")

  const before = [A.getHeads(warehouse.doc()), A.getHeads(van.doc())]
  refusal(() => transferStock(warehouse, van, { ...input, id: "t-8", quantity: 0 }), "NonPositiveQuantity")
  refusal(() => transferStock(warehouse, van, { ...input, id: "t-8", product: "comb" }), "NoCounter")
  refusal(() => transferStock(warehouse, van, { ...input, id: "" }), "BadMovementId")
  refusal(() => transferStock(warehouse, van, { ...input, id: "x".repeat(161) }), "BadMovementId")
  refusal(() => transferStock(warehouse, create("ledger", "ana", "2026-11"), { ...input, id: "t-8" }), "WrongDocument")
  assert.deepEqual([A.getHeads(warehouse.doc()), A.getHeads(van.doc())], before, "refusals wrote nothing")
})
