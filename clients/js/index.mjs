// The package's entry point: the ventas schema bound to the
// @automerge/automerge this package resolves (the one its automerge-repo
// uses, so the process holds one Automerge module; to bind another
// instance, import `bindVentas` from ./ventas.mjs instead), and the
// connection (`connect`, `whenSaved`, from ./connect.mjs).
import * as Automerge from "@automerge/automerge"
import { bindVentas } from "./ventas.mjs"

export * from "./ventas.mjs"
export const {
  createCatalog, addProduct, addCustomer, addSeller, addLocation, addDevice, openStock, plain, docMeta, readCatalog, readDevice, highestSeqInLedger, planSale, writeLastSeq,
  writeSale, recordSale, writeMovements, moveStock, saleMovements, applySaleToStock,
  stockLevel, readLedger, saleStatuses, writeRecord, voidSale, recordPayment, recordReturn,
  returnMovements, applyReturnToStock, transferStock,
} = bindVentas(Automerge)

export {
  connect, whenSaved, VentasConnection, VentasRepo, SaveError, reconnectDelayMs,
  SUBPROTOCOL, SUBPROTOCOL_BEARER_PREFIX, RECONNECT_DELAY_MS_MIN, RECONNECT_DELAY_MS_MAX,
  WHEN_SAVED_TIMEOUT_MS_DEFAULT, PROBE_PATH, PROTOCOL_VERSION, REFUSAL_REASON_BYTES_MAX,
} from "./connect.mjs"
