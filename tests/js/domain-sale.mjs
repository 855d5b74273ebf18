#!/usr/bin/env node
// domain-sale.mjs SERVER_URL CATALOG_URL DEVICE_URL LEDGER_URL STOCK_URL INPUT_JSON [--timeout-ms=N]
//
// A JS device recording business facts through clients/js/ventas.mjs: finds
// the four documents (created by the office and synced to the server), reads
// the catalog, then
//   1. applies INPUT_JSON.movements (if any) to the stock with moveStock,
//   2. records INPUT_JSON.sale ({customer, location, atMs, lines:[{product,
//      quantity}]}) with recordSale (device counter + ledger),
//   3. takes the sale's goods out of the stock with applySaleToStock,
// then waits until the server acknowledged the device, ledger and stock
// documents (and, unless VENTAS_JS_VERIFY=0, a second Repo sees the ledger
// and stock heads). Prints ONE line:
//   {"sale":{...},"movementOutcomes":[...],"saleOutcomes":[...],
//    "levels":{product:n},"lastSeq":n,"heads":{"device":[hex],"ledger":[hex],"stock":[hex]},
//    "verifyAttempts":N,"elapsedMs":N}
// A refusal from the module is an error: {"error":"<Code>: ..."}, exit 1.
import {
  A, parseArgs, installGuards, parseJsonArg, makeRepo, waitForPeer, waitForServerAck,
  verifyServerHas, hexHeads, finish, fail, log, elapsedMs,
} from "./lib.mjs"
import { bindVentas } from "../../clients/js/ventas.mjs"

const ventas = bindVentas(A)
const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)
const deadline = performance.now() + timeoutMs

try {
  const [serverUrl, catalogUrl, deviceUrl, ledgerUrl, stockUrl, inputJson] = positional
  if (!serverUrl || !catalogUrl || !deviceUrl || !ledgerUrl || !stockUrl || inputJson === undefined)
    throw new Error("usage: domain-sale.mjs SERVER_URL CATALOG_URL DEVICE_URL LEDGER_URL STOCK_URL INPUT_JSON [--timeout-ms=N]")
  const input = parseJsonArg(inputJson, "INPUT_JSON")
  if (!input?.sale) throw new Error("INPUT_JSON needs a `sale`")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)

  stage = "finding the catalog, device, ledger and stock documents"
  const [catalogHandle, deviceHandle, ledgerHandle, stockHandle] = await Promise.all(
    [catalogUrl, deviceUrl, ledgerUrl, stockUrl].map(url => repo.find(url)),
  )
  const catalog = ventas.readCatalog(catalogHandle.doc())

  stage = "writing"
  const movementOutcomes = input.movements?.length
    ? ventas.moveStock(stockHandle, input.movements)
    : []
  const sale = ventas.recordSale(deviceHandle, ledgerHandle, catalog, input.sale)
  const saleOutcomes = ventas.applySaleToStock(stockHandle, sale)
  log("recorded", sale.id, "outcomes", movementOutcomes, saleOutcomes)

  stage = "waiting for the server to acknowledge the device, ledger and stock documents"
  await Promise.all(
    [deviceHandle, ledgerHandle, stockHandle].map(h => waitForServerAck(repo, h, serverPeerId)),
  )
  const heads = {
    device: hexHeads(deviceHandle),
    ledger: hexHeads(ledgerHandle),
    stock: hexHeads(stockHandle),
  }
  stage = "verifying with a second repo that the server serves the ledger and stock"
  const verifyAttempts =
    (await verifyServerHas(serverUrl, ledgerUrl, heads.ledger, deadline)) +
    (await verifyServerHas(serverUrl, stockUrl, heads.stock, deadline))

  const stockDoc = stockHandle.doc()
  const levels = Object.fromEntries(
    Object.keys(stockDoc.levels).map(product => [product, ventas.stockLevel(stockDoc, product)]),
  )
  await finish({
    sale,
    movementOutcomes,
    saleOutcomes,
    levels,
    lastSeq: ventas.readDevice(deviceHandle.doc()).last_seq,
    heads,
    verifyAttempts,
    elapsedMs: elapsedMs(),
  })
} catch (e) {
  await fail(e)
}
