// A seller's device as a TypeScript app would write it: connect with the
// device's credential, record a sale, wait until the server has saved it,
// void it. `npm run typecheck` checks this file against the package's types
// (it imports the package by name, as a consumer does); it is not run.
import {
  connect, whenSaved, SaveError, VentasError, readCatalog, recordSale, applySaleToStock,
  voidSale, recordPayment, recordReturn, transferStock, type ConnectionState, type Sale,
} from "ventas-client"
import type { AutomergeUrl } from "@automerge/automerge-repo"

export async function sellerDay(urls: {
  catalog: AutomergeUrl
  device: AutomergeUrl
  ledger: AutomergeUrl
  van: AutomergeUrl
  warehouse: AutomergeUrl
}, token: string): Promise<Sale> {
  const repo = connect({ url: "wss://sync.example.com/", token, device: "tab-1" })
  repo.connection.onEvent("auth-refused", ({ reason }) => console.warn(`log in again: ${reason}`))
  repo.connection.onEvent("state", ({ state }: { state: ConnectionState }) => console.log(state))

  const catalog = readCatalog((await repo.find(urls.catalog)).doc())
  const device = await repo.find(urls.device)
  const ledger = await repo.find(urls.ledger)
  const van = await repo.find(urls.van)
  const warehouse = await repo.find(urls.warehouse)

  let sale: Sale
  try {
    sale = recordSale(device, ledger, catalog, {
      customer: "shop-9", location: "van-ana", atMs: Date.now(),
      lines: [{ product: "soap", quantity: 3 }],
    })
  } catch (error) {
    if (error instanceof VentasError && error.code === "UnknownProduct") throw new Error("refresh the catalog")
    throw error
  }
  applySaleToStock(van, sale)
  try {
    await whenSaved(ledger, { timeoutMs: 10_000 })
  } catch (error) {
    if (error instanceof SaveError && error.code === "denied") console.error(error.message)
  }
  const payment = recordPayment(device, ledger, { sale: sale.id, amountCents: 100, method: "cash", atMs: Date.now() })
  const back = recordReturn(device, ledger, {
    sale: sale.id, location: "van-ana", atMs: Date.now(), lines: [{ product: "soap", quantity: 1 }],
  })
  const refund: number = back.refund_cents
  const voided = voidSale(device, ledger, { sale: sale.id, reason: "wrong customer", atMs: Date.now() })
  const [out, into] = transferStock(warehouse, van, {
    id: "load-2026-11-03", product: "soap", quantity: 12, author: "tab-1", atMs: Date.now(),
  })
  console.log(payment.amount_cents, refund, voided.reason, out, into)
  repo.setToken("ventas_renewed")
  await repo.shutdown()
  return sale
}
