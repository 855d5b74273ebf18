#!/usr/bin/env node
// domain-selftest.mjs: offline checks of clients/js/ventas.mjs (no server):
// numbering (resume past the ledger, maximum of concurrent counters),
// refusals that mirror Rust's DomainError, idempotent stock movements, a
// refused batch writing nothing, integer types of negative deltas, readLedger
// problems. Documents are built here the way the Rust `create_*_doc`
// functions build them (meta + every container in one change).
// Prints ONE line {"passed":N,"failed":N,"failures":[...]}; exit 1 on failure.
import { A, emit } from "./lib.mjs"
import { bindVentas, VentasError } from "../../clients/js/ventas.mjs"

const ventas = bindVentas(A)
const S = v => new A.ImmutableString(v)
const AT_MS = Date.UTC(2026, 10, 1, 1) // 2026-11
const CONTAINERS = {
  catalog: ["products", "customers", "sellers", "devices", "locations", "directory"],
  device: ["state"],
  ledger: ["sales", "voids", "payments", "returns", "writers"],
  stock: ["levels", "movements", "alerts"],
}

/** An in-memory stand-in for a DocHandle. */
function handle(doc) {
  return {
    doc: () => doc,
    change(fn) {
      doc = A.change(doc, fn)
    },
    set(next) {
      doc = next
    },
  }
}

function create(kind, owner, period, fill = () => {}) {
  let doc = A.init()
  doc = A.change(doc, d => {
    d.meta = {}
    d.meta.kind = S(kind)
    d.meta.tenant = S("acme")
    d.meta.owner = S(owner)
    if (period) d.meta.period = S(period)
    d.meta.schema_version = 1
    for (const name of CONTAINERS[kind]) d[name] = {}
    fill(d)
  })
  return handle(doc)
}

// The catalog uses plain JS strings (Text), as a JS office would: readers
// accept both.
const catalogHandle = create("catalog", "acme", null, d => {
  d.products.soap = { name: "Soap", unit_price_cents: 250, currency: "EUR", active: true }
  d.products.old = { name: "Old", unit_price_cents: 100, currency: "EUR", active: false }
  d.products.usd = { name: "Import", unit_price_cents: 100, currency: "USD", active: true }
  d.customers["shop-9"] = { name: "Shop" }
  d.sellers.ana = { name: "Ana" }
  d.devices["tab-1"] = { seller: "ana", receipt_prefix: "T1" }
  d.locations["van-ana"] = { name: "Van", kind: "vehicle", seller: "ana" }
})
const catalog = ventas.readCatalog(catalogHandle.doc())
const device = () =>
  create("device", "tab-1", null, d => {
    d.state.seller = S("ana")
    d.state.receipt_prefix = S("T1")
    d.state.last_seq = 0
  })
const ledger = (owner = "ana", period = "2026-11") => create("ledger", owner, period)
const stock = () =>
  create("stock", "van-ana", "2026-11", d => {
    d.levels.soap = new A.Counter(0)
  })
const sale = (lines = [{ product: "soap", quantity: 2 }], extra = {}) => ({
  customer: "shop-9", location: "van-ana", atMs: AT_MS, lines, ...extra,
})

const results = []
function check(name, fn) {
  try {
    fn()
    results.push({ name, ok: true })
  } catch (e) {
    results.push({ name, ok: false, error: e.stack ?? String(e) })
  }
}
function assertEq(actual, expected, what = "") {
  const a = JSON.stringify(actual)
  const b = JSON.stringify(expected)
  if (a !== b) throw new Error(`${what} expected ${b}, got ${a}`)
}
function refuses(code, fn) {
  try {
    fn()
  } catch (e) {
    if (e instanceof VentasError && e.code === code) return
    throw new Error(`expected ${code}, got ${e}`)
  }
  throw new Error(`expected ${code}, but it was accepted`)
}
const typeOf = (doc, path, key) => {
  let obj = doc
  for (const p of path) obj = obj[p]
  return doc[Symbol.for("_am_meta")].handle.getWithType(A.getObjectId(obj), key)[0]
}

check("sales are numbered from the device counter, receipts from its prefix", () => {
  const d = device()
  const l = ledger()
  const first = ventas.recordSale(d, l, catalog, sale())
  const second = ventas.recordSale(d, l, catalog, sale())
  assertEq([first.id, first.receipt, second.id, second.receipt],
    ["tab-1:0000000001", "T1-1", "tab-1:0000000002", "T1-2"])
  assertEq(ventas.readDevice(d.doc()).last_seq, 2)
  assertEq(first.total_cents, 500)
  const actor = A.getActorId(l.doc())
  assertEq(ventas.plain(l.doc().writers), { [actor]: "tab-1" })
})

check("numbering resumes past the highest number of the device in the ledger", () => {
  const l = ledger()
  l.change(d => {
    d.payments["tab-1:0000000007"] = {}
    d.sales["tab-9:0000000042"] = {}
  })
  assertEq(ventas.recordSale(device(), l, catalog, sale()).id, "tab-1:0000000008")
})

check("the counter is the maximum of concurrent values", () => {
  const d = device()
  const other = A.clone(d.doc())
  const a = A.change(d.doc(), x => { x.state.last_seq = 5 })
  const b = A.change(other, x => { x.state.last_seq = 3 })
  d.set(A.merge(a, b))
  assertEq(ventas.readDevice(d.doc()).last_seq, 5)
  assertEq(ventas.recordSale(d, ledger(), catalog, sale()).seq, 6)
})

check("what Rust refuses is refused, and nothing is written", () => {
  const d = device()
  const l = ledger()
  const heads = [A.getHeads(d.doc()), A.getHeads(l.doc())]
  refuses("EmptySale", () => ventas.recordSale(d, l, catalog, sale([])))
  refuses("UnknownProduct", () => ventas.recordSale(d, l, catalog, sale([{ product: "old", quantity: 1 }])))
  refuses("UnknownProduct", () => ventas.recordSale(d, l, catalog, sale([{ product: "nope", quantity: 1 }])))
  refuses("UnknownCustomer", () => ventas.recordSale(d, l, catalog, sale(undefined, { customer: "nobody" })))
  refuses("UnknownLocation", () => ventas.recordSale(d, l, catalog, sale(undefined, { location: "nowhere" })))
  refuses("WrongPeriod", () => ventas.recordSale(d, l, catalog, sale(undefined, { atMs: Date.UTC(2026, 11, 1) })))
  refuses("NotOwner", () => ventas.recordSale(d, ledger("bob"), catalog, sale()))
  refuses("DuplicateLine", () => ventas.recordSale(d, l, catalog,
    sale([{ product: "soap", quantity: 1 }, { product: "soap", quantity: 1 }])))
  refuses("NonPositiveQuantity", () => ventas.recordSale(d, l, catalog, sale([{ product: "soap", quantity: 0 }])))
  refuses("NonPositiveQuantity", () => ventas.recordSale(d, l, catalog, sale([{ product: "soap", quantity: 1.5 }])))
  refuses("CurrencyMismatch", () => ventas.recordSale(d, l, catalog,
    sale([{ product: "soap", quantity: 1 }, { product: "usd", quantity: 1 }])))
  refuses("WrongDocument", () => ventas.recordSale(l, d, catalog, sale()))
  assertEq([A.getHeads(d.doc()), A.getHeads(l.doc())], heads, "heads")
})

check("a recorded sale is never overwritten", () => {
  const l = ledger()
  const s = ventas.recordSale(device(), l, catalog, sale())
  let error = null
  l.change(x => {
    try {
      ventas.writeSale(x, s, "00")
    } catch (e) {
      error = e
    }
  })
  if (!(error instanceof VentasError) || error.code !== "RecordExists") throw new Error(`got ${error}`)
})

check("stock moves by counter increments with movements, idempotently", () => {
  const st = stock()
  const s = ventas.recordSale(device(), ledger(), catalog, sale([{ product: "soap", quantity: 3 }]))
  assertEq(ventas.moveStock(st, [{ id: "load/1", kind: "load", product: "soap", delta: 10,
    record: "note-1", author: "office", at_ms: AT_MS }]), ["applied"])
  assertEq(ventas.applySaleToStock(st, s), ["applied"])
  assertEq(ventas.applySaleToStock(st, s), ["already_applied"])
  assertEq(ventas.stockLevel(st.doc(), "soap"), 7)
  assertEq(ventas.plain(st.doc().movements["tab-1:0000000001/0"]), {
    kind: "sale", product: "soap", delta: -3, record: "tab-1:0000000001", author: "tab-1", at_ms: AT_MS,
  })
  // Negative integers are stored as int, not f64.
  assertEq(typeOf(st.doc(), ["movements", "tab-1:0000000001/0"], "delta"), "int")
  assertEq(typeOf(st.doc(), ["movements", "tab-1:0000000001/0"], "kind"), "str")
  assertEq(typeOf(st.doc(), ["levels"], "soap"), "counter")
})

check("a refused stock batch writes nothing", () => {
  const st = stock()
  const heads = A.getHeads(st.doc())
  const good = { id: "a", kind: "load", product: "soap", delta: 1, record: "r", author: "o", at_ms: AT_MS }
  refuses("WrongSign", () => ventas.moveStock(st, [good, { ...good, id: "b", kind: "sale", delta: 1 }]))
  refuses("NoCounter", () => ventas.moveStock(st, [good, { ...good, id: "b", product: "brush" }]))
  refuses("BadMovementId", () => ventas.moveStock(st, [{ ...good, id: "x".repeat(161) }]))
  refuses("WrongLocation", () => ventas.applySaleToStock(st, { location: "warehouse", lines: [] }))
  assertEq(A.getHeads(st.doc()), heads, "heads")
})

check("readLedger reports a sale whose totals do not add up", () => {
  const l = ledger()
  const s = ventas.recordSale(device(), l, catalog, sale())
  assertEq(Object.keys(ventas.readLedger(l.doc()).sales), [s.id])
  l.change(x => { x.sales[s.id].total_cents = 1 })
  const view = ventas.readLedger(l.doc())
  assertEq(Object.keys(view.sales), [])
  assertEq(view.problems.map(p => p.key), [s.id])
})

const failures = results.filter(r => !r.ok)
for (const r of results) console.error(`${r.ok ? "ok  " : "FAIL"} ${r.name}${r.ok ? "" : `\n${r.error}`}`)
await emit({ passed: results.length - failures.length, failed: failures.length, failures })
process.exit(failures.length ? 1 : 0)
