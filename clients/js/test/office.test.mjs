// The office helpers (createCatalog, addProduct, addCustomer, addSeller,
// addLocation, addDevice, openStock): what they write, every refusal with
// its code and nothing written, and against a real server a whole tenant
// set up from JS, whose new seller's ledger the server creates at once.
// (Rust reads a JS-provisioned tenant in tests/it/domain_interop.rs.)
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import * as A from "@automerge/automerge"
import {
  connect, whenSaved, VentasError, createCatalog, addProduct, addCustomer, addSeller, addLocation,
  addDevice, openStock, readCatalog, readDevice, stockLevel, periodOfMs,
} from "../index.mjs"
import { startServer, until } from "./server.mjs"

const AT_MS = Date.UTC(2026, 10, 3, 9) // 2026-11

/** An in-memory stand-in for a Repo: handles with `doc`, `change` and a `url`. */
function memoryRepo() {
  let next = 0
  return {
    create() {
      let doc = A.init()
      next += 1
      return {
        url: `automerge:memory${next}`,
        doc: () => doc,
        change(fn) {
          doc = A.change(doc, fn)
        },
      }
    },
  }
}

function tenant(repo = memoryRepo()) {
  const catalog = createCatalog(repo, { tenant: "acme" })
  addProduct(catalog, { id: "soap", name: "Soap", unitPriceCents: 250, currency: "EUR" })
  addProduct(catalog, { id: "brush", name: "Brush", unitPriceCents: 1199, currency: "EUR", active: false })
  addCustomer(catalog, { id: "shop-9", name: "Shop" })
  addSeller(catalog, { id: "ana", name: "Ana" })
  addLocation(catalog, { id: "van-ana", name: "Van", kind: "vehicle", seller: "ana" })
  addLocation(catalog, { id: "main", name: "Main", kind: "warehouse" })
  return { repo, catalog }
}

const refusedWith = code => error => error instanceof VentasError && error.code === code

test("the office helpers write the catalog, a device and opening stock as the Rust domain does", () => {
  const { repo, catalog } = tenant()
  const device = addDevice(repo, catalog, { id: "tab-1", seller: "ana", receiptPrefix: "T1" })
  const stock = openStock(repo, catalog, { location: "van-ana", levels: { soap: 40 }, atMs: AT_MS })

  const view = readCatalog(catalog.doc())
  assert.deepEqual(view.problems, [])
  assert.equal(view.meta.kind, "catalog")
  assert.equal(view.meta.owner, "acme")
  assert.deepEqual(view.products.soap, { name: "Soap", unit_price_cents: 250, currency: "EUR", active: true })
  assert.equal(view.products.brush.active, false)
  assert.deepEqual(view.devices["tab-1"], { seller: "ana", receipt_prefix: "T1" })
  assert.equal(view.locations["van-ana"].seller, "ana")
  assert.equal(view.directory["device/tab-1"], device.url)
  assert.equal(view.directory["stock/van-ana/2026-11"], stock.url)
  // Strings are scalar strings, as Rust writes them.
  assert.ok(A.isImmutableString(catalog.doc().products.soap.name))
  assert.ok(A.isImmutableString(catalog.doc().meta.kind))

  assert.deepEqual(readDevice(device.doc()), {
    tenant: "acme", device: "tab-1", seller: "ana", receipt_prefix: "T1", last_seq: 0,
  })
  assert.equal(stockLevel(stock.doc(), "soap"), 40)
  assert.equal(stockLevel(stock.doc(), "brush"), 0)
  const opening = stock.doc().movements["opening/soap"]
  assert.equal(String(opening.kind), "opening")
  assert.equal(opening.delta, 40)
  assert.equal(String(opening.record), "opening/2026-11")
  assert.equal(String(stock.doc().meta.period), "2026-11")
})

test("every refusal carries the domain's code and writes nothing", () => {
  const { repo, catalog } = tenant()
  addDevice(repo, catalog, { id: "tab-1", seller: "ana", receiptPrefix: "T1" })
  const heads = A.getHeads(catalog.doc())
  const cases = [
    ["Id", () => createCatalog(repo, { tenant: "a b" })],
    ["Malformed", () => addProduct(catalog, { id: "x", name: "X", unitPriceCents: -1, currency: "EUR" })],
    ["Malformed", () => addProduct(catalog, { id: "x", name: "X", unitPriceCents: 2.5, currency: "EUR" })],
    ["Id", () => addProduct(catalog, { id: "x", name: "X", unitPriceCents: 1, currency: "eur" })],
    ["Id", () => addSeller(catalog, { id: "", name: "Nobody" })],
    ["UnknownSeller", () => addLocation(catalog, { id: "van-x", name: "Van", kind: "vehicle", seller: "bob" })],
    ["Malformed", () => addLocation(catalog, { id: "w", name: "W", kind: "shed" })],
    ["UnknownSeller", () => addDevice(repo, catalog, { id: "tab-2", seller: "bob", receiptPrefix: "T2" })],
    ["RecordExists", () => addDevice(repo, catalog, { id: "tab-2", seller: "ana", receiptPrefix: "T1" })],
    ["Malformed", () => addDevice(repo, catalog, { id: "tab-2", seller: "ana", receiptPrefix: "T-2" })],
    ["RecordExists", () => addDevice(repo, catalog, { id: "tab-1", seller: "ana", receiptPrefix: "T9" })],
    ["UnknownLocation", () => openStock(repo, catalog, { location: "nowhere", atMs: AT_MS })],
    ["UnknownProduct", () => openStock(repo, catalog, { location: "main", levels: { gold: 1 }, atMs: AT_MS })],
    ["NonPositiveQuantity", () => openStock(repo, catalog, { location: "main", levels: { soap: -1 }, atMs: AT_MS })],
    ["Malformed", () => openStock(repo, catalog, { location: "main", atMs: "today" })],
  ]
  for (const [code, attempt] of cases) assert.throws(attempt, refusedWith(code), `${code}: ${attempt}`)
  assert.deepEqual(A.getHeads(catalog.doc()), heads, "nothing was written to the catalog")
  openStock(repo, catalog, { location: "main", atMs: AT_MS })
  assert.throws(() => openStock(repo, catalog, { location: "main", atMs: AT_MS }), refusedWith("RecordExists"))
})

let server
const repos = []
before(async () => {
  server = await startServer({
    office: { tenant: "acme", seller: "olga", device: "office-1", role: "office" },
  })
})
after(async () => {
  await Promise.all(repos.map(repo => repo.shutdown().catch(() => {})))
  await server?.stop()
})

test("an office sets up a tenant from JS; the server saves it and opens the new seller's ledger at once", async () => {
  const repo = connect({ url: server.url, token: server.tokens.office, device: "office-1" })
  repos.push(repo)
  await until("connected", () => repo.connection.state === "connected")
  const now = Date.now()
  const { catalog } = tenant(repo)
  const device = addDevice(repo, catalog, { id: "tab-1", seller: "ana", receiptPrefix: "T1" })
  const stock = openStock(repo, catalog, { location: "van-ana", levels: { soap: 40 }, atMs: now })
  for (const handle of [catalog, device, stock]) await whenSaved(handle, { timeoutMs: 10_000 })
  // The server's keeper passes once a minute by default: the ledger comes
  // from its reaction to the new seller, well before that.
  const key = `ledger/ana/${periodOfMs(now)}`
  await until("the server lists ana's ledger", () => readCatalog(catalog.doc()).directory[key] !== undefined, 10_000)
  const ledger = await repo.find(readCatalog(catalog.doc()).directory[key])
  assert.equal(String(ledger.doc().meta.owner), "ana")
  assert.equal(String(ledger.doc().meta.kind), "ledger")
})
