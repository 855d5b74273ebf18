// The ventas schema bound to the @automerge/automerge this package resolves
// (a peer dependency: install the same version your automerge-repo uses, so
// the process holds one Automerge module). To bind another instance, import
// `bindVentas` from ./ventas.mjs instead.
import * as Automerge from "@automerge/automerge"
import { bindVentas } from "./ventas.mjs"

export * from "./ventas.mjs"
export const {
  plain, docMeta, readCatalog, readDevice, highestSeqInLedger, planSale, writeLastSeq,
  writeSale, recordSale, writeMovements, moveStock, saleMovements, applySaleToStock,
  stockLevel, readLedger,
} = bindVentas(Automerge)
