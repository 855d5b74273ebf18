#!/usr/bin/env node
// domain-provision.mjs SERVER_URL [--timeout-ms=N]
//
// An office sets up a tenant from JS with clients/js/ventas.mjs's office
// helpers (createCatalog, addProduct, addCustomer, addSeller, addLocation,
// addDevice, openStock), waits for the server to list the seller's ledger
// for this month (the server creates it when the catalog gains the
// seller), then the device records one sale (3 soap) into it and takes the
// goods out of the van's stock; waits until the server acknowledged every
// document. Prints ONE line:
//   {"urls":{"catalog","device","ledger","stock"},"heads":{same keys: [hex]},
//    "ledgerKey":"ledger/ana/YYYY-MM","sale":{...},"elapsedMs":N}
import {
  A, parseArgs, installGuards, makeRepo, waitForPeer, waitForHandle, hexHeads,
  finish, fail, log, elapsedMs,
} from "./lib.mjs"
import { bindVentas, periodOfMs } from "../../clients/js/ventas.mjs"

const ventas = bindVentas(A)
const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)

try {
  const [serverUrl] = positional
  if (!serverUrl) throw new Error("usage: domain-provision.mjs SERVER_URL [--timeout-ms=N]")
  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)

  stage = "setting up the tenant"
  const now = Date.now()
  const catalog = ventas.createCatalog(repo, { tenant: "acme" })
  ventas.addProduct(catalog, { id: "soap", name: "Soap", unitPriceCents: 250, currency: "EUR" })
  ventas.addProduct(catalog, { id: "brush", name: "Brush", unitPriceCents: 1199, currency: "EUR" })
  ventas.addCustomer(catalog, { id: "shop-9", name: "Corner shop" })
  ventas.addSeller(catalog, { id: "ana", name: "Ana" })
  ventas.addLocation(catalog, { id: "van-ana", name: "Ana's van", kind: "vehicle", seller: "ana" })
  ventas.addLocation(catalog, { id: "main", name: "Main", kind: "warehouse" })
  const device = ventas.addDevice(repo, catalog, { id: "tab-js", seller: "ana", receiptPrefix: "JS1" })
  const stock = ventas.openStock(repo, catalog, { location: "van-ana", levels: { soap: 40, brush: 5 }, atMs: now })
  ventas.openStock(repo, catalog, { location: "main", levels: { soap: 1000 }, atMs: now })

  stage = "waiting for the server to list ana's ledger"
  const ledgerKey = `ledger/ana/${periodOfMs(now)}`
  await waitForHandle(catalog, h => ventas.readCatalog(h.doc()).directory[ledgerKey] !== undefined)
  const ledgerUrl = ventas.readCatalog(catalog.doc()).directory[ledgerKey]
  log("the server listed", ledgerKey, ledgerUrl)
  stage = "finding the ledger"
  const ledger = await repo.find(ledgerUrl)

  stage = "recording a sale"
  const sale = ventas.recordSale(device, ledger, ventas.readCatalog(catalog.doc()), {
    customer: "shop-9", location: "van-ana", atMs: Date.now(), lines: [{ product: "soap", quantity: 3 }],
  })
  ventas.applySaleToStock(stock, sale)

  stage = "waiting for the server to acknowledge every document"
  const handles = { catalog, device, ledger, stock }
  // The server reports the heads it stored under its storage id (it
  // acknowledges only what is on its disk). Polled: the catalog may have
  // been acknowledged before this wait began, with no message to come.
  const storageId = repo.peerMetadataByPeerId[serverPeerId]?.storageId
  if (!storageId) throw new Error("the server announced no storage id")
  const saved = h => {
    const theirs = h.getSyncInfo(storageId)?.lastHeads ?? []
    const ours = h.heads() // the same encoding as lastHeads (base58)
    return theirs.length === ours.length && ours.every(x => theirs.includes(x))
  }
  let polls = 0
  while (!Object.values(handles).every(saved)) {
    await new Promise(r => setTimeout(r, 20))
    polls += 1
    if (polls % 100 === 0)
      log("not saved yet:", Object.entries(handles).filter(([, h]) => !saved(h)).map(([name, h]) =>
        `${name} ours=${h.heads()} theirs=${h.getSyncInfo(storageId)?.lastHeads}`))
  }
  await finish({
    urls: Object.fromEntries(Object.entries(handles).map(([k, h]) => [k, h.url])),
    heads: Object.fromEntries(Object.entries(handles).map(([k, h]) => [k, hexHeads(h)])),
    ledgerKey,
    sale,
    elapsedMs: elapsedMs(),
  })
} catch (e) {
  await fail(e)
}
