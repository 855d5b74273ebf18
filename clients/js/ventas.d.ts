// Types of ventas.mjs / index.mjs. Field names of records are the document's
// (snake_case, docs/schema.md); inputs use camelCase.

export const SCHEMA_VERSION: 1
export const ID_BYTES_MAX: 64
export const RECORD_SEQ_DIGITS: 10
export const RECORD_SEQ_MAX: 9_999_999_999
export const SALE_LINES_MAX: 200
export const MOVEMENT_ID_BYTES_MAX: 160
export const NOTE_BYTES_MAX: 500
export const RECORD_CONTAINERS: readonly ["sales", "voids", "payments", "returns"]

/** Name of the Rust `DomainError` variant a refusal mirrors. */
export type VentasErrorCode =
  | "Malformed" | "WrongDocument" | "NewerSchema" | "OtherTenant" | "NotOwner" | "WrongPeriod"
  | "WrongLocation" | "Id" | "Overflow" | "EmptySale" | "TooManyLines" | "DuplicateLine"
  | "NonPositiveQuantity" | "UnknownProduct" | "UnknownCustomer" | "UnknownLocation"
  | "CurrencyMismatch" | "RecordExists" | "SequenceExhausted" | "BadMovementId" | "WrongSign"
  | "NoCounter" | "NonPositiveAmount" | "SaleNotFound" | "SaleVoided" | "Overpayment"
  | "ReturnExceedsSold" | "NoteTooLong"
  /** JS only (office helpers): a device or vehicle names a seller the catalog lacks. */
  | "UnknownSeller"

export class VentasError extends Error {
  code: VentasErrorCode
}

export function isId(value: unknown): value is string
export function formatRecordId(device: string, seq: number): string
export function parseRecordId(value: unknown): { device: string; seq: number } | null
export function receiptNumber(prefix: string, seq: number): string
/** `YYYY-MM` (UTC). */
export function periodOfMs(atMs: number): string

/** Anything with `doc()` and `change(fn)`: an automerge-repo 2.x DocHandle. */
export interface HandleLike<T = any> {
  doc(): T
  change(fn: (doc: T) => void): void
}

export interface DocMeta {
  kind: "catalog" | "device" | "ledger" | "stock"
  tenant: string
  owner: string
  period: string | null
  schema_version: number
}

export interface Problem {
  collection: string
  key: string | null
  problem: string
}

export interface CatalogView {
  meta: DocMeta
  products: Record<string, { name: string; unit_price_cents: number; currency: string; active: boolean }>
  customers: Record<string, { name: string }>
  sellers: Record<string, { name: string }>
  devices: Record<string, { seller: string; receipt_prefix: string }>
  locations: Record<string, { name: string; kind: "warehouse" | "vehicle"; seller: string | null }>
  directory: Record<string, string>
  problems: Problem[]
}

export interface DeviceInfo {
  tenant: string
  device: string
  seller: string
  receipt_prefix: string
  last_seq: number
}

export interface SaleLineInput {
  product: string
  /** Positive integer units. */
  quantity: number
}

export interface SaleInput {
  customer: string
  location: string
  /** Integer ms since the Unix epoch, inside the ledger's month (UTC). */
  atMs: number
  lines: SaleLineInput[]
}

export interface SaleLine {
  product: string
  quantity: number
  unit_price_cents: number
  line_total_cents: number
}

/** A sale as stored (plus its `id`, the record key). Every number is an integer. */
export interface Sale {
  id: string
  device: string
  seq: number
  receipt: string
  seller: string
  customer: string
  location: string
  recorded_at_ms: number
  currency: string
  lines: SaleLine[]
  total_cents: number
}

export type MovementKind =
  | "load" | "sale" | "return" | "adjustment" | "transfer_out" | "transfer_in" | "opening" | "carry_over"

export interface Movement {
  id: string
  kind: MovementKind
  product: string
  /** Signed integer units, never 0; sign per kind. */
  delta: number
  record: string
  author: string
  at_ms: number
}

export type MoveOutcome = "applied" | "already_applied"

/** Common fields of a ledger record (sale or correction). */
interface RecordBase {
  /** `{device}:{seq:010}`, the record key. */
  id: string
  device: string
  seq: number
}

/** A sale cancelled as a whole. It does not move stock. */
export interface Void extends RecordBase {
  sale: string
  reason: string
  at_ms: number
}

export interface Payment extends RecordBase {
  sale: string
  amount_cents: number
  currency: string
  method: string
  at_ms: number
}

export interface ReturnLine {
  product: string
  quantity: number
  /** `quantity` x the sale's unit price for the product. */
  refund_cents: number
}

/** Goods brought back from a sale, into `location`. */
export interface SaleReturn extends RecordBase {
  sale: string
  receipt: string
  location: string
  at_ms: number
  lines: ReturnLine[]
  refund_cents: number
}

export interface VoidInput {
  /** Record id of the sale. */
  sale: string
  /** At most 500 bytes. */
  reason: string
  atMs: number
}

export interface PaymentInput {
  sale: string
  /** Positive integer cents, at most what is due. */
  amountCents: number
  /** E.g. `cash`; at most 500 bytes. */
  method: string
  atMs: number
}

export interface ReturnInput {
  sale: string
  /** Where the goods go back. */
  location: string
  atMs: number
  lines: SaleLineInput[]
}

export interface TransferInput {
  /** Movement id and record of both movements (at most 160 bytes). */
  id: string
  product: string
  /** Positive integer units. */
  quantity: number
  /** Device id or office name. */
  author: string
  atMs: number
}

export interface SaleStatus {
  sale: string
  state: "open" | "paid" | "voided"
  total_cents: number
  refunded_cents: number
  /** Total less refunds. */
  due_cents: number
  paid_cents: number
  voids: string[]
  payments: string[]
}

export type CorrectionCollection = "voids" | "payments" | "returns"

export interface LedgerView {
  meta: DocMeta | null
  sales: Record<string, Sale>
  voids: Record<string, unknown>
  payments: Record<string, unknown>
  returns: Record<string, unknown>
  writers: Record<string, string>
  problems: Problem[]
}

/** Anything with `create()`: an automerge-repo 2.x Repo. */
export interface RepoLike<H extends HandleLike & { url: string } = HandleLike & { url: string }> {
  create(): H
}

export interface ProductInput {
  id: string
  name: string
  /** Integer cents, >= 0. */
  unitPriceCents: number
  /** ISO 4217, e.g. "EUR". */
  currency: string
  /** Default true. */
  active?: boolean
}

export interface LocationInput {
  id: string
  name: string
  kind: "warehouse" | "vehicle"
  /** A vehicle's seller (required for a vehicle, absent for a warehouse). */
  seller?: string
}

export interface DeviceInput {
  id: string
  seller: string
  /** 1 to 16 letters or digits, unique in the tenant. */
  receiptPrefix: string
}

export interface OpenStockInput {
  location: string
  /** Opening units per product (integers >= 0). */
  levels?: Record<string, number>
  /** When the stock opens, ms since the Unix epoch. */
  atMs: number
  /** `YYYY-MM`; default the month of `atMs`. */
  period?: string
  /** Who the opening movements name; default "office". */
  author?: string
}

export interface Ventas {
  /** Creates a tenant's catalog document (office). */
  createCatalog<H extends HandleLike & { url: string }>(repo: RepoLike<H>, input: { tenant: string }): H
  addProduct(catalog: HandleLike, input: ProductInput): void
  addCustomer(catalog: HandleLike, input: { id: string; name: string }): void
  /** The server then creates the seller's ledger for this month at once. */
  addSeller(catalog: HandleLike, input: { id: string; name: string }): void
  addLocation(catalog: HandleLike, input: LocationInput): void
  /** Creates the device document and lists it in the catalog; returns its handle. */
  addDevice<H extends HandleLike & { url: string }>(repo: RepoLike<H>, catalog: HandleLike, input: DeviceInput): H
  /** Creates a location's stock document for a month and lists it; returns its handle. */
  openStock<H extends HandleLike & { url: string }>(repo: RepoLike<H>, catalog: HandleLike, input: OpenStockInput): H
  /** A document value as plain JSON (ImmutableString -> string, Counter -> number). */
  plain(value: unknown): unknown
  docMeta(doc: any): DocMeta | null
  readCatalog(doc: any): CatalogView
  readDevice(doc: any): DeviceInfo
  highestSeqInLedger(ledger: any, device: string): number
  planSale(deviceDoc: any, ledgerDoc: any, catalog: CatalogView, input: SaleInput): { sale: Sale; lastSeq: number }
  /** Inside a change of the device document. */
  writeLastSeq(deviceDoc: any, seq: number): void
  /** Inside a change of the ledger; `actor` is the hex actor id of that change. */
  writeSale(ledgerDoc: any, sale: Sale, actor: string): void
  recordSale(device: HandleLike, ledger: HandleLike, catalog: CatalogView, input: SaleInput): Sale
  /** Inside a change of a stock document. */
  writeMovements(stockDoc: any, movements: Movement[]): MoveOutcome[]
  moveStock(stock: HandleLike, movements: Movement[]): MoveOutcome[]
  saleMovements(sale: Sale): Movement[]
  applySaleToStock(stock: HandleLike, sale: Sale): MoveOutcome[]
  stockLevel(stockDoc: any, product: string): number
  readLedger(doc: any): LedgerView
  saleStatuses(ledgerDoc: any): Record<string, SaleStatus>
  /** Inside a change of the ledger; `actor` is the hex actor id of that change. */
  writeRecord(ledgerDoc: any, collection: CorrectionCollection, record: Void | Payment | SaleReturn, actor: string): void
  voidSale(device: HandleLike, ledger: HandleLike, input: VoidInput): Void
  recordPayment(device: HandleLike, ledger: HandleLike, input: PaymentInput): Payment
  recordReturn(device: HandleLike, ledger: HandleLike, input: ReturnInput): SaleReturn
  returnMovements(saleReturn: SaleReturn): Movement[]
  applyReturnToStock(stock: HandleLike, saleReturn: SaleReturn): MoveOutcome[]
  /** Returns [outcome in `from`, outcome in `to`]. */
  transferStock(from: HandleLike, to: HandleLike, input: TransferInput): [MoveOutcome, MoveOutcome]
}

/** Binds the schema to one `@automerge/automerge` module (the Repo's). */
export function bindVentas(automerge: typeof import("@automerge/automerge")): Ventas

// index.mjs: the same, bound to the @automerge/automerge it resolves.
export const createCatalog: Ventas["createCatalog"]
export const addProduct: Ventas["addProduct"]
export const addCustomer: Ventas["addCustomer"]
export const addSeller: Ventas["addSeller"]
export const addLocation: Ventas["addLocation"]
export const addDevice: Ventas["addDevice"]
export const openStock: Ventas["openStock"]
export const plain: Ventas["plain"]
export const docMeta: Ventas["docMeta"]
export const readCatalog: Ventas["readCatalog"]
export const readDevice: Ventas["readDevice"]
export const highestSeqInLedger: Ventas["highestSeqInLedger"]
export const planSale: Ventas["planSale"]
export const writeLastSeq: Ventas["writeLastSeq"]
export const writeSale: Ventas["writeSale"]
export const recordSale: Ventas["recordSale"]
export const writeMovements: Ventas["writeMovements"]
export const moveStock: Ventas["moveStock"]
export const saleMovements: Ventas["saleMovements"]
export const applySaleToStock: Ventas["applySaleToStock"]
export const stockLevel: Ventas["stockLevel"]
export const readLedger: Ventas["readLedger"]
export const saleStatuses: Ventas["saleStatuses"]
export const writeRecord: Ventas["writeRecord"]
export const voidSale: Ventas["voidSale"]
export const recordPayment: Ventas["recordPayment"]
export const recordReturn: Ventas["recordReturn"]
export const returnMovements: Ventas["returnMovements"]
export const applyReturnToStock: Ventas["applyReturnToStock"]
export const transferStock: Ventas["transferStock"]
