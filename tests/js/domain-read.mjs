#!/usr/bin/env node
// domain-read.mjs SERVER_URL LEDGER_URL [STOCK_URL] [--sales=N] [--records=N] [--timeout-ms=N]
//
// Reads a ledger (and optionally a stock document) written by anyone, as a
// JS device sees it through clients/js/ventas.mjs. Waits until the ledger
// holds at least N sales (default 1) and N records in all (sales, voids,
// payments and returns; default 0). Prints ONE line:
//   {"ledger":{"meta":{...},"sales":{id:{...}},"voids":{},...,"problems":[]},
//    "statuses":{id:{state,total_cents,refunded_cents,due_cents,paid_cents,voids,payments}},
//    "types":{id:{field:"ImmutableString"|"int"|"number"|"Counter"|...}},
//    "stock":{"levels":{product:n},"movements":{id:{...}}},"heads":[hex],"elapsedMs":N}
// `types` says what each raw field of every sale is in JS (lines: per line),
// so the test can check that Rust's scalar strings arrive as ImmutableString
// and its integers as integral numbers.
import {
  A, parseArgs, installGuards, makeRepo, waitForPeer, waitForHandle, hexHeads, finish, fail, log,
  elapsedMs,
} from "./lib.mjs"
import { bindVentas } from "../../clients/js/ventas.mjs"

const ventas = bindVentas(A)
const { positional: args, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)

/** What a raw document value is, as JS sees it. */
function jsType(value) {
  if (A.isImmutableString(value)) return "ImmutableString"
  if (A.isCounter(value)) return "Counter"
  if (typeof value === "number") return Number.isSafeInteger(value) ? "int" : "number"
  if (Array.isArray(value)) return value.map(jsType)
  if (value && typeof value === "object")
    return Object.fromEntries(Object.keys(value).map(k => [k, jsType(value[k])]))
  return typeof value
}

try {
  let wantSales = 1
  let wantRecords = 0
  const positional = []
  for (const a of args) {
    const sales = /^--sales=(\d+)$/.exec(a)
    const records = /^--records=(\d+)$/.exec(a)
    if (sales) wantSales = Number(sales[1])
    else if (records) wantRecords = Number(records[1])
    else positional.push(a)
  }
  const [serverUrl, ledgerUrl, stockUrl] = positional
  if (!serverUrl || !ledgerUrl)
    throw new Error("usage: domain-read.mjs SERVER_URL LEDGER_URL [STOCK_URL] [--sales=N] [--timeout-ms=N]")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)

  stage = "finding the ledger"
  const ledgerHandle = await repo.find(ledgerUrl)
  stage = `waiting for ${wantSales} sale(s) in the ledger`
  const count = (doc, names) => names.reduce((n, name) => n + Object.keys(doc[name] ?? {}).length, 0)
  await waitForHandle(ledgerHandle, h =>
    count(h.doc(), ["sales"]) >= wantSales &&
    count(h.doc(), ["sales", "voids", "payments", "returns"]) >= wantRecords)
  const doc = ledgerHandle.doc()
  const ledger = ventas.readLedger(doc)
  const types = Object.fromEntries(Object.keys(doc.sales).map(id => [id, jsType(doc.sales[id])]))

  let stock
  if (stockUrl) {
    stage = "finding the stock document"
    const stockHandle = await repo.find(stockUrl)
    const stockDoc = stockHandle.doc()
    stock = {
      levels: Object.fromEntries(
        Object.keys(stockDoc.levels).map(p => [p, ventas.stockLevel(stockDoc, p)]),
      ),
      levelTypes: Object.fromEntries(
        Object.keys(stockDoc.levels).map(p => [p, jsType(stockDoc.levels[p])]),
      ),
      movements: ventas.plain(stockDoc.movements),
    }
  }
  await finish({ ledger, statuses: ventas.saleStatuses(doc), types, stock, heads: hexHeads(ledgerHandle), elapsedMs: elapsedMs() })
} catch (e) {
  await fail(e)
}
