#!/usr/bin/env node
// domain-correct.mjs SERVER_URL CATALOG_URL DEVICE_URL LEDGER_URL VAN_STOCK_URL WAREHOUSE_STOCK_URL AT_MS [--timeout-ms=N]
//
// A JS device correcting sales through clients/js/ventas.mjs, for Rust to
// validate (tests/it/domain_interop.rs). With the office's documents:
//   1. loads the warehouse (soap 10) and the van (brush 5), transfers 4
//      soap from the warehouse to the van (`transfer-1`);
//   2. records sale A (3 soap, 2 brush) and takes it out of the van; pays
//      1000 cents of it; returns 1 soap into the van;
//   3. records sale B (1 brush), takes it out of the van, voids it;
//   4. tries what the Rust domain refuses and keeps each refusal's code
//      (nothing is written by them).
// Waits until the server acknowledged every document. Prints ONE line:
//   {"saleA":{...},"saleB":{...},"payment":{...},"saleReturn":{...},"void":{...},
//    "transferOutcomes":[...],"returnOutcomes":[...],"refusals":{name:code},
//    "statuses":{id:{state,due_cents,paid_cents,...}},"levels":{"van":{},"warehouse":{}},
//    "heads":{"device","ledger","van","warehouse"},"elapsedMs":N}
import {
  A, parseArgs, installGuards, makeRepo, waitForPeer, waitForServerAck, hexHeads, finish, fail, log,
  elapsedMs,
} from "./lib.mjs"
import { bindVentas, VentasError } from "../../clients/js/ventas.mjs"

const ventas = bindVentas(A)
const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)

/** The refusal code of `fn`, or a failure if it does not refuse. */
function refusalCode(fn) {
  try {
    fn()
  } catch (error) {
    if (error instanceof VentasError) return error.code
    throw error
  }
  throw new Error("expected a refusal, the write went through")
}

try {
  const [serverUrl, catalogUrl, deviceUrl, ledgerUrl, vanUrl, warehouseUrl, atMsArg] = positional
  const atMs = Number(atMsArg)
  if (!serverUrl || !catalogUrl || !deviceUrl || !ledgerUrl || !vanUrl || !warehouseUrl || !Number.isSafeInteger(atMs))
    throw new Error("usage: domain-correct.mjs SERVER_URL CATALOG_URL DEVICE_URL LEDGER_URL VAN_STOCK_URL WAREHOUSE_STOCK_URL AT_MS")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  stage = "finding the documents"
  const [catalogHandle, device, ledger, van, warehouse] = await Promise.all(
    [catalogUrl, deviceUrl, ledgerUrl, vanUrl, warehouseUrl].map(url => repo.find(url)),
  )
  const catalog = ventas.readCatalog(catalogHandle.doc())

  stage = "writing"
  const load = (id, product, delta) => ({ id, kind: "load", product, delta, record: "delivery-1", author: "office", at_ms: atMs })
  ventas.moveStock(warehouse, [load("load/warehouse/soap", "soap", 10)])
  ventas.moveStock(van, [load("load/van/brush", "brush", 5)])
  const transferOutcomes = ventas.transferStock(warehouse, van, {
    id: "transfer-1", product: "soap", quantity: 4, author: "tab-js", atMs,
  })
  const saleA = ventas.recordSale(device, ledger, catalog, {
    customer: "shop-9", location: "van-ana", atMs,
    lines: [{ product: "soap", quantity: 3 }, { product: "brush", quantity: 2 }],
  })
  ventas.applySaleToStock(van, saleA)
  const payment = ventas.recordPayment(device, ledger, { sale: saleA.id, amountCents: 1000, method: "cash", atMs: atMs + 1 })
  const saleReturn = ventas.recordReturn(device, ledger, {
    sale: saleA.id, location: "van-ana", atMs: atMs + 2, lines: [{ product: "soap", quantity: 1 }],
  })
  const returnOutcomes = ventas.applyReturnToStock(van, saleReturn)
  const saleB = ventas.recordSale(device, ledger, catalog, {
    customer: "shop-9", location: "van-ana", atMs: atMs + 3, lines: [{ product: "brush", quantity: 1 }],
  })
  ventas.applySaleToStock(van, saleB)
  const voided = ventas.voidSale(device, ledger, { sale: saleB.id, reason: "wrong customer", atMs: atMs + 4 })

  const refusals = {
    overpayment: refusalCode(() => ventas.recordPayment(device, ledger, { sale: saleA.id, amountCents: 100_000, method: "cash", atMs })),
    payVoided: refusalCode(() => ventas.recordPayment(device, ledger, { sale: saleB.id, amountCents: 1, method: "cash", atMs })),
    voidTwice: refusalCode(() => ventas.voidSale(device, ledger, { sale: saleB.id, reason: "again", atMs })),
    returnTooMany: refusalCode(() => ventas.recordReturn(device, ledger, {
      sale: saleA.id, location: "van-ana", atMs, lines: [{ product: "soap", quantity: 3 }],
    })),
    unknownSale: refusalCode(() => ventas.voidSale(device, ledger, { sale: "tab-js:0000000099", reason: "r", atMs })),
    transferZero: refusalCode(() => ventas.transferStock(warehouse, van, { id: "t-2", product: "soap", quantity: 0, author: "tab-js", atMs })),
  }
  log("wrote", saleA.id, payment.id, saleReturn.id, saleB.id, voided.id)

  stage = "waiting for the server to acknowledge every document"
  await Promise.all([device, ledger, van, warehouse].map(h => waitForServerAck(repo, h, serverPeerId)))
  const levels = handle => Object.fromEntries(
    Object.keys(handle.doc().levels).map(p => [p, ventas.stockLevel(handle.doc(), p)]),
  )
  await finish({
    saleA, saleB, payment, saleReturn, void: voided, transferOutcomes, returnOutcomes, refusals,
    statuses: ventas.saleStatuses(ledger.doc()),
    levels: { van: levels(van), warehouse: levels(warehouse) },
    heads: { device: hexHeads(device), ledger: hexHeads(ledger), van: hexHeads(van), warehouse: hexHeads(warehouse) },
    elapsedMs: elapsedMs(),
  })
} catch (e) {
  await fail(e)
}
