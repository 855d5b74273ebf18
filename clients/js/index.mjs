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
  stockLevel, readLedger, saleStatuses, writeRecord, voidSale, recordPayment, recordReturn,
  returnMovements, applyReturnToStock, transferStock,
} = bindVentas(Automerge)

export {
  connect, whenSaved, VentasConnection, VentasRepo, SaveError, reconnectDelayMs,
  SUBPROTOCOL, SUBPROTOCOL_BEARER_PREFIX, RECONNECT_DELAY_MS_MIN, RECONNECT_DELAY_MS_MAX,
  WHEN_SAVED_TIMEOUT_MS_DEFAULT,
} from "./connect.mjs"
