// ventas.mjs: the ventas business schema (docs/schema.md) for JS devices.
//
// Records a sale and moves stock exactly the way the Rust domain layer
// (`src/domain/`, `ventas::domain`) does: the same record id allocation
// (`{device}:{seq:010}` from the device document's counter, past the highest
// number of this device already in the ledger), the same derived totals in
// integer cents, the same fields with the same Automerge types (scalar strings
// as `ImmutableString`, integers as `int`, stock levels as `Counter`s that are
// only ever incremented), and the same writer registration in the ledger's
// `writers` map. Rust validation (`read_ledger`, `check_record_writers`,
// `read_stock`) accepts what this module writes with no violations; the
// interop test is `tests/it/domain_interop.rs`.
//
// The module imports nothing. It is bound to the Automerge module the
// caller's Repo uses, so there is one Automerge instance in the process:
//
//   import * as Automerge from "@automerge/automerge"
//   import { bindVentas } from "ventas-client/ventas.mjs"
//   const ventas = bindVentas(Automerge)
//   const catalog = ventas.readCatalog(catalogHandle.doc())
//   const sale = ventas.recordSale(deviceHandle, ledgerHandle, catalog, {
//     customer: "shop-9", location: "van-ana", atMs: Date.now(),
//     lines: [{ product: "soap", quantity: 3 }],
//   })
//   ventas.applySaleToStock(stockHandle, sale)
//
// (`index.mjs` does this binding with the `@automerge/automerge` it resolves.)
// A "handle" is anything with `doc()` and `change(fn)`, e.g. an
// automerge-repo 2.x `DocHandle`.

/** Version of the schema this module writes (`meta.schema_version`). */
export const SCHEMA_VERSION = 1
/** Longest identifier, in bytes. */
export const ID_BYTES_MAX = 64
/** Digits of the zero-padded sequence inside a record id. */
export const RECORD_SEQ_DIGITS = 10
/** Highest record number a device may issue. */
export const RECORD_SEQ_MAX = 9_999_999_999
/** Most lines one sale may have. */
export const SALE_LINES_MAX = 200
/** Longest movement id, in bytes. */
export const MOVEMENT_ID_BYTES_MAX = 160
/** Longest free text (void reason, payment method), in bytes. */
export const NOTE_BYTES_MAX = 500
/** The ledger maps that hold records keyed by record id. */
export const RECORD_CONTAINERS = ["sales", "voids", "payments", "returns"]

/** Fields of a sale (before `lines`) and their Automerge types, in Rust's order. */
const SALE_FIELDS = [
  ["device", "str"], ["seq", "int"], ["receipt", "str"], ["seller", "str"], ["customer", "str"],
  ["location", "str"], ["recorded_at_ms", "int"], ["currency", "str"],
]
const SALE_LINE_FIELDS = [
  ["product", "str"], ["quantity", "int"], ["unit_price_cents", "int"], ["line_total_cents", "int"],
]
const VOID_FIELDS = [["device", "str"], ["seq", "int"], ["sale", "str"], ["reason", "str"], ["at_ms", "int"]]
const PAYMENT_FIELDS = [
  ["device", "str"], ["seq", "int"], ["sale", "str"], ["amount_cents", "int"], ["currency", "str"],
  ["method", "str"], ["at_ms", "int"],
]
/** Fields of a return (before `lines`), in Rust's order; `refund_cents` follows the lines. */
const RETURN_FIELDS = [
  ["device", "str"], ["seq", "int"], ["sale", "str"], ["receipt", "str"], ["location", "str"], ["at_ms", "int"],
]
const RETURN_LINE_FIELDS = [["product", "str"], ["quantity", "int"], ["refund_cents", "int"]]
const MOVEMENT_FIELDS = [
  ["kind", "str"], ["product", "str"], ["delta", "int"], ["record", "str"], ["author", "str"],
  ["at_ms", "int"],
]

/** Sign rule of each movement kind (as `MovementKind::sign_ok` in Rust). */
const MOVEMENT_SIGN = {
  load: d => d > 0,
  sale: d => d < 0,
  return: d => d > 0,
  adjustment: d => d !== 0,
  transfer_out: d => d < 0,
  transfer_in: d => d > 0,
  opening: d => d !== 0,
  carry_over: d => d !== 0,
}

/**
 * A refused operation. `code` is the name of the Rust `DomainError` variant
 * it mirrors (`UnknownProduct`, `RecordExists`, ...).
 */
export class VentasError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`)
    this.name = "VentasError"
    this.code = code
  }
}

const refuse = (code, message) => {
  throw new VentasError(code, message)
}

const utf8Bytes = s => new TextEncoder().encode(s).length

/** True for a valid id: 1 to 64 bytes of `[A-Za-z0-9._-]`. */
export function isId(value) {
  return typeof value === "string" && value.length >= 1 && value.length <= ID_BYTES_MAX &&
    /^[A-Za-z0-9._-]+$/.test(value)
}

function checkId(value, what) {
  if (!isId(value)) refuse("Id", `${what} ${JSON.stringify(value)} is not 1 to ${ID_BYTES_MAX} bytes of [A-Za-z0-9._-]`)
  return value
}

/** `{device}:{seq}` with the sequence zero-padded to 10 digits. */
export function formatRecordId(device, seq) {
  return `${device}:${String(seq).padStart(RECORD_SEQ_DIGITS, "0")}`
}

/** Parses `device:0000000042` into `{device, seq}`, or null. */
export function parseRecordId(value) {
  if (typeof value !== "string") return null
  const at = value.lastIndexOf(":")
  if (at < 0) return null
  const device = value.slice(0, at)
  const digits = value.slice(at + 1)
  if (digits.length !== RECORD_SEQ_DIGITS || !/^[0-9]+$/.test(digits) || !isId(device)) return null
  return { device, seq: Number(digits) }
}

/** The number the customer reads aloud: `{receipt_prefix}-{seq}`. */
export const receiptNumber = (prefix, seq) => `${prefix}-${seq}`

/** The UTC month `YYYY-MM` holding an instant (ms since the Unix epoch). */
export function periodOfMs(atMs) {
  return new Date(atMs).toISOString().slice(0, 7)
}

/**
 * Binds the schema functions to one Automerge module (the one your Repo
 * uses). Returns the API described in `ventas.d.ts`.
 */
export function bindVentas(Automerge) {
  const { ImmutableString } = Automerge
  if (typeof ImmutableString !== "function" || typeof Automerge.getActorId !== "function")
    throw new TypeError("bindVentas needs the @automerge/automerge module (3.x)")

  /** A scalar string exactly as Rust writes it (`ScalarValue::Str`). */
  const str = value => new ImmutableString(value)

  /**
   * Puts `fields` (name -> "str" | "int") of `values` into a document map,
   * one assignment each: strings as scalar strings, integers as int.
   */
  function putFields(map, values, fields) {
    for (const [name, type] of fields) map[name] = type === "str" ? str(values[name]) : values[name]
  }

  /** Checks `values` against `fields` before anything is written. */
  function checkFields(values, fields) {
    for (const [name, type] of fields) {
      const value = values?.[name]
      if (type === "str" ? typeof value !== "string" : !Number.isSafeInteger(value))
        refuse("Malformed", `${name} ${JSON.stringify(value)} is not ${type === "str" ? "a string" : "an integer"}`)
    }
  }

  /** A string field: a scalar string (ImmutableString) or Text (a JS string). */
  const readString = value => {
    if (typeof value === "string") return value
    if (Automerge.isImmutableString(value)) return value.toString()
    return undefined
  }
  /** An integer field that JS holds exactly. */
  const readInt = value =>
    typeof value === "number" && Number.isSafeInteger(value) ? value : undefined
  const isCounter = value => Automerge.isCounter(value)
  const isMap = value => value !== null && typeof value === "object" && !Array.isArray(value) &&
    !Automerge.isImmutableString(value) && !isCounter(value)

  /** A document value as plain JSON: strings, numbers, counters' values. */
  function plain(value) {
    if (value === null || value === undefined) return value ?? null
    if (typeof value !== "object") return value
    if (Automerge.isImmutableString(value)) return value.toString()
    if (isCounter(value)) return value.value
    if (value instanceof Uint8Array) return Array.from(value)
    if (value instanceof Date) return value.getTime()
    if (Array.isArray(value)) return value.map(plain)
    return Object.fromEntries(Object.keys(value).map(k => [k, plain(value[k])]))
  }

  /** The root `meta` map as plain values, or null if unreadable. */
  function docMeta(doc) {
    const meta = doc?.meta
    if (!isMap(meta)) return null
    const kind = readString(meta.kind)
    const tenant = readString(meta.tenant)
    const owner = readString(meta.owner)
    const period = meta.period === undefined ? null : readString(meta.period)
    const schemaVersion = readInt(meta.schema_version)
    if (!kind || !tenant || owner === undefined || period === undefined || schemaVersion === undefined)
      return null
    return { kind, tenant, owner, period, schema_version: schemaVersion }
  }

  function expectKind(doc, kind) {
    const meta = docMeta(doc)
    if (!meta) refuse("Malformed", `document field \`meta\` cannot be read`)
    if (meta.kind !== kind) refuse("WrongDocument", `expected a ${kind} document, found a ${meta.kind} document`)
    if (meta.schema_version > SCHEMA_VERSION)
      refuse("NewerSchema", `document schema version ${meta.schema_version} is newer than this code understands`)
    if ((kind === "ledger" || kind === "stock") && !/^\d{4}-\d{2}$/.test(meta.period ?? ""))
      refuse("Malformed", "document field `meta.period` is missing or not YYYY-MM")
    return meta
  }

  function container(doc, name) {
    const map = doc[name]
    if (!isMap(map)) refuse("Malformed", `document field \`${name}\` is not a map`)
    return map
  }

  /**
   * The catalog as plain values (`CatalogView` in Rust): products,
   * customers, sellers, devices, locations, directory. Records that cannot
   * be read are left out and listed in `problems`.
   */
  function readCatalog(doc) {
    const meta = expectKind(doc, "catalog")
    const problems = []
    const section = (name, read) => {
      const out = {}
      const map = doc[name]
      if (!isMap(map)) {
        problems.push({ collection: name, key: null, problem: "not a map" })
        return out
      }
      for (const key of Object.keys(map)) {
        const record = isMap(map[key]) ? read(map[key]) : null
        if (record && isId(key)) out[key] = record
        else problems.push({ collection: name, key, problem: "unreadable record" })
      }
      return out
    }
    const products = section("products", p => {
      const name = readString(p.name)
      const unitPriceCents = readInt(p.unit_price_cents)
      const currency = readString(p.currency)
      const active = p.active
      if (name === undefined || unitPriceCents === undefined || unitPriceCents < 0 ||
        !/^[A-Z]{3}$/.test(currency ?? "") || typeof active !== "boolean") return null
      return { name, unit_price_cents: unitPriceCents, currency, active }
    })
    const named = r => {
      const name = readString(r.name)
      return name === undefined ? null : { name }
    }
    const customers = section("customers", named)
    const sellers = section("sellers", named)
    const devices = section("devices", d => {
      const seller = readString(d.seller)
      const receiptPrefix = readString(d.receipt_prefix)
      if (!isId(seller) || receiptPrefix === undefined) return null
      return { seller, receipt_prefix: receiptPrefix }
    })
    const locations = section("locations", l => {
      const name = readString(l.name)
      const kind = readString(l.kind)
      const seller = l.seller === undefined ? null : readString(l.seller)
      if (name === undefined || (kind !== "warehouse" && kind !== "vehicle") || seller === undefined) return null
      return { name, kind, seller }
    })
    const directory = {}
    if (isMap(doc.directory))
      for (const key of Object.keys(doc.directory)) {
        const url = readString(doc.directory[key])
        if (url !== undefined) directory[key] = url
      }
    return { meta, products, customers, sellers, devices, locations, directory, problems }
  }

  /** The device document: tenant, device, seller, prefix, counter. */
  function readDevice(doc) {
    const meta = expectKind(doc, "device")
    const state = container(doc, "state")
    const device = checkId(meta.owner, "device")
    const seller = readString(state.seller)
    const receiptPrefix = readString(state.receipt_prefix)
    if (!isId(seller)) refuse("Malformed", "document field `state.seller` cannot be read")
    if (receiptPrefix === undefined) refuse("Malformed", "document field `state.receipt_prefix` cannot be read")
    // A register that only grows: the maximum of every concurrent value.
    // (getConflicts returns undefined unless there are two or more.)
    const conflicts = Automerge.getConflicts(state, "last_seq")
    const values = conflicts ? Object.values(conflicts)
      : state.last_seq === undefined ? [] : [state.last_seq]
    let lastSeq = 0
    for (const value of values) {
      const n = readInt(value)
      if (n === undefined || n < 0) refuse("Malformed", "document field `state.last_seq` is not a non-negative integer")
      lastSeq = Math.max(lastSeq, n)
    }
    return { tenant: meta.tenant, device, seller, receipt_prefix: receiptPrefix, last_seq: lastSeq }
  }

  /** The highest sequence number of `device`'s records in a ledger (0: none). */
  function highestSeqInLedger(ledger, device) {
    let highest = 0
    for (const name of RECORD_CONTAINERS) {
      const map = ledger[name]
      if (!isMap(map)) continue
      for (const key of Object.keys(map)) {
        const id = parseRecordId(key)
        if (id && id.device === device) highest = Math.max(highest, id.seq)
      }
    }
    return highest
  }

  function checkLedgerFor(ledger, device, atMs) {
    const meta = expectKind(ledger, "ledger")
    if (meta.tenant !== device.tenant)
      refuse("OtherTenant", `document belongs to tenant ${meta.tenant}, expected ${device.tenant}`)
    if (meta.owner !== device.seller)
      refuse("NotOwner", `ledger belongs to ${meta.owner}; device's seller is ${device.seller}`)
    if (periodOfMs(atMs) !== meta.period)
      refuse("WrongPeriod", `ledger is for ${meta.period}; the record is dated ${periodOfMs(atMs)}`)
    return meta
  }

  /**
   * Checks a sale against the device, ledger and catalog and prices it,
   * without writing anything. Returns the sale and the counter value to
   * write. `recordSale` is this plus the two writes.
   */
  function planSale(deviceDoc, ledgerDoc, catalog, input) {
    const device = readDevice(deviceDoc)
    const atMs = input?.atMs
    if (!Number.isSafeInteger(atMs)) refuse("Malformed", "atMs must be an integer (ms since the Unix epoch)")
    checkLedgerFor(ledgerDoc, device, atMs)
    const lines = input.lines ?? []
    if (lines.length === 0) refuse("EmptySale", "a sale needs at least one line")
    if (lines.length > SALE_LINES_MAX) refuse("TooManyLines", `${lines.length} lines; at most ${SALE_LINES_MAX}`)
    checkId(input.customer, "customer")
    checkId(input.location, "location")
    if (!Object.hasOwn(catalog.customers, input.customer))
      refuse("UnknownCustomer", `customer ${input.customer} is not in the catalog`)
    if (!Object.hasOwn(catalog.locations, input.location))
      refuse("UnknownLocation", `location ${input.location} is not in the catalog`)
    let currency = null
    const saleLines = []
    const seen = new Set()
    for (const line of lines) {
      const product = checkId(line.product, "product")
      const quantity = line.quantity
      if (!Number.isSafeInteger(quantity) || quantity <= 0)
        refuse("NonPositiveQuantity", `quantity ${quantity} of ${product} is not a positive integer`)
      if (seen.has(product)) refuse("DuplicateLine", `product ${product} appears on two lines`)
      seen.add(product)
      const found = Object.hasOwn(catalog.products, product) ? catalog.products[product] : null
      if (!found || !found.active)
        refuse("UnknownProduct", `product ${product} is not sellable (unknown, inactive, or not in the sale)`)
      if (currency === null) currency = found.currency
      else if (currency !== found.currency)
        refuse("CurrencyMismatch", `one sale cannot mix ${currency} and ${found.currency}`)
      const lineTotal = quantity * found.unit_price_cents
      if (!Number.isSafeInteger(lineTotal)) refuse("Overflow", "amount overflow")
      saleLines.push({ product, quantity, unit_price_cents: found.unit_price_cents, line_total_cents: lineTotal })
    }
    const total = saleLines.reduce((sum, line) => sum + line.line_total_cents, 0)
    if (!Number.isSafeInteger(total)) refuse("Overflow", "amount overflow")
    const seq = Math.max(device.last_seq, highestSeqInLedger(ledgerDoc, device.device)) + 1
    if (seq > RECORD_SEQ_MAX) refuse("SequenceExhausted", "the device has issued its last record number")
    const sale = {
      id: formatRecordId(device.device, seq),
      device: device.device,
      seq,
      receipt: receiptNumber(device.receipt_prefix, seq),
      seller: device.seller,
      customer: input.customer,
      location: input.location,
      recorded_at_ms: atMs,
      currency,
      lines: saleLines,
      total_cents: total,
    }
    return { sale, lastSeq: seq }
  }

  /** Inside a change of the device document: moves the counter to `seq`. */
  function writeLastSeq(deviceDoc, seq) {
    container(deviceDoc, "state").last_seq = seq
  }

  /**
   * Inside a change of the ledger: registers `actor` (hex) as a writer for
   * the sale's device if it is not yet, and writes the sale as a new key.
   * Refuses to overwrite an existing record.
   */
  function writeSale(ledgerDoc, sale, actor) {
    const sales = container(ledgerDoc, "sales")
    const writers = container(ledgerDoc, "writers")
    checkFields(sale, [...SALE_FIELDS, ["total_cents", "int"]])
    for (const line of sale.lines) checkFields(line, SALE_LINE_FIELDS)
    if (sale.id !== formatRecordId(sale.device, sale.seq)) refuse("Malformed", `key ${sale.id} is not device:seq`)
    if (Object.hasOwn(sales, sale.id)) refuse("RecordExists", `record ${sale.id} already exists`)
    if (!Object.hasOwn(writers, actor)) writers[actor] = str(sale.device)
    // Field by field, never as one object literal: Automerge JS 3.5 stores a
    // negative integer inside an inserted literal as f64, and we want every
    // integer stored as int, exactly like Rust's `write_sale`.
    sales[sale.id] = {}
    const map = sales[sale.id]
    putFields(map, sale, SALE_FIELDS)
    map.lines = []
    for (const [index, line] of sale.lines.entries()) {
      map.lines.push({})
      putFields(map.lines[index], line, SALE_LINE_FIELDS)
    }
    map.total_cents = sale.total_cents
  }

  /**
   * Records a sale on the device, like Rust's `record_sale`: numbers it
   * (device counter, committed first), prices it from the catalog, writes it
   * into the ledger as a new key, in one change per document. Stock is
   * moved separately with `applySaleToStock`. Returns the sale (plain).
   */
  function recordSale(deviceHandle, ledgerHandle, catalog, input) {
    const { sale, lastSeq } = planSale(deviceHandle.doc(), ledgerHandle.doc(), catalog, input)
    deviceHandle.change(d => writeLastSeq(d, lastSeq))
    const actor = Automerge.getActorId(ledgerHandle.doc())
    let error = null
    ledgerHandle.change(d => {
      try {
        writeSale(d, sale, actor)
      } catch (e) {
        error = e
      }
    })
    if (error) throw error
    return sale
  }

  function checkMovement(levels, movement) {
    const { id, kind, product, delta } = movement
    if (typeof id !== "string" || id.length === 0 || utf8Bytes(id) > MOVEMENT_ID_BYTES_MAX)
      refuse("BadMovementId", `movement id ${JSON.stringify(id)} is empty or too long`)
    const signOk = MOVEMENT_SIGN[kind]
    if (!signOk) refuse("Malformed", `unknown movement kind ${JSON.stringify(kind)}`)
    if (!Number.isSafeInteger(delta) || !signOk(delta))
      refuse("WrongSign", `a ${kind} movement cannot have delta ${delta}`)
    checkFields(movement, MOVEMENT_FIELDS)
    if (!isCounter(levels[product]))
      refuse("NoCounter", `no stock counter for product ${product} at this location (the office adds it)`)
  }

  /**
   * Inside a change of a stock document: records each movement and adds
   * its delta to the product's counter. Movements whose id is present are
   * skipped. Returns "applied" / "already_applied" per movement.
   */
  function writeMovements(stockDoc, movements) {
    const levels = container(stockDoc, "levels")
    const records = container(stockDoc, "movements")
    for (const movement of movements) checkMovement(levels, movement)
    return movements.map(movement => {
      if (Object.hasOwn(records, movement.id)) return "already_applied"
      records[movement.id] = {}
      putFields(records[movement.id], movement, MOVEMENT_FIELDS)
      levels[movement.product].increment(movement.delta)
      return "applied"
    })
  }

  /**
   * Applies movements `{id, kind, product, delta, record, author, at_ms}`
   * in one change, like Rust's `move_stock`. Checks every movement first;
   * a refused batch writes nothing.
   */
  function moveStock(stockHandle, movements) {
    const doc = stockHandle.doc()
    expectKind(doc, "stock")
    const levels = container(doc, "levels")
    container(doc, "movements")
    for (const movement of movements) checkMovement(levels, movement)
    let outcomes = []
    let error = null
    stockHandle.change(d => {
      try {
        outcomes = writeMovements(d, movements)
      } catch (e) {
        error = e
      }
    })
    if (error) throw error
    return outcomes
  }

  /** The movements of a sale: one per line, id `{sale}/{line}`, negative. */
  function saleMovements(sale) {
    return sale.lines.map((line, index) => ({
      id: `${sale.id}/${index}`,
      kind: "sale",
      product: line.product,
      delta: -line.quantity,
      record: sale.id,
      author: sale.device ?? parseRecordId(sale.id)?.device,
      at_ms: sale.recorded_at_ms,
    }))
  }

  /** Takes a sale's goods out of its location, like `apply_sale_to_stock`. */
  function applySaleToStock(stockHandle, sale) {
    const meta = expectKind(stockHandle.doc(), "stock")
    if (meta.owner !== sale.location)
      refuse("WrongLocation", `stock document is for ${meta.owner}, expected ${sale.location}`)
    return moveStock(stockHandle, saleMovements(sale))
  }

  /** A stock level (the counter's value), like `stock_level`. */
  function stockLevel(stockDoc, product) {
    const level = container(stockDoc, "levels")[product]
    if (level === undefined) refuse("NoCounter", `no stock counter for product ${product}`)
    if (!isCounter(level)) refuse("Malformed", `document field \`levels.${product}\` is not a counter`)
    return level.value
  }

  /**
   * Reads a ledger for display (minimal; Rust's `read_ledger` is the
   * authority). Sales come back as plain JSON with their `id`; a sale whose
   * fields do not read, whose key is not its `device:seq`, or whose totals
   * do not add up is left out and listed in `problems`. Voids, payments and
   * returns come back as plain JSON, unchecked.
   */
  function readLedger(doc) {
    const meta = docMeta(doc)
    const problems = []
    const sales = {}
    const salesMap = isMap(doc?.sales) ? doc.sales : {}
    for (const key of Object.keys(salesMap).sort()) {
      const problem = p => problems.push({ collection: "sales", key, problem: p })
      const raw = salesMap[key]
      if (!isMap(raw)) {
        problem("not a map")
        continue
      }
      const id = parseRecordId(key)
      const sale = {
        id: key,
        device: readString(raw.device),
        seq: readInt(raw.seq),
        receipt: readString(raw.receipt),
        seller: readString(raw.seller),
        customer: readString(raw.customer),
        location: readString(raw.location),
        recorded_at_ms: readInt(raw.recorded_at_ms),
        currency: readString(raw.currency),
        lines: Array.isArray(raw.lines)
          ? raw.lines.map(line => ({
            product: readString(line?.product),
            quantity: readInt(line?.quantity),
            unit_price_cents: readInt(line?.unit_price_cents),
            line_total_cents: readInt(line?.line_total_cents),
          }))
          : undefined,
        total_cents: readInt(raw.total_cents),
      }
      const missing = Object.keys(sale).filter(k => sale[k] === undefined)
      const badLines = (sale.lines ?? []).some(l => Object.values(l).some(v => v === undefined))
      if (missing.length || badLines) {
        problem(`unreadable fields: ${[...missing, ...(badLines ? ["lines"] : [])].join(", ")}`)
        continue
      }
      if (!id || id.device !== sale.device || id.seq !== sale.seq) {
        problem(`key is not ${sale.device}:${sale.seq}`)
        continue
      }
      if (meta && sale.seller !== meta.owner) problem(`seller ${sale.seller} is not the ledger owner ${meta.owner}`)
      if (sale.lines.length === 0) problem("a sale needs at least one line")
      for (const [index, line] of sale.lines.entries())
        if (line.quantity * line.unit_price_cents !== line.line_total_cents)
          problem(`line ${index}: total ${line.line_total_cents} is not quantity x price`)
      const sum = sale.lines.reduce((s, l) => s + l.line_total_cents, 0)
      if (sum !== sale.total_cents) problem(`total ${sale.total_cents}; lines add up to ${sum}`)
      if (!problems.some(p => p.key === key)) sales[key] = sale
    }
    const rest = name => (isMap(doc?.[name]) ? plain(doc[name]) : {})
    return {
      meta,
      sales,
      voids: rest("voids"),
      payments: rest("payments"),
      returns: rest("returns"),
      writers: rest("writers"),
      problems,
    }
  }


  // ---- Corrections: void, payment, return (ledger), transfer (stock) ----
  //
  // Each mirrors its Rust function (`void_sale`, `record_payment`,
  // `record_return`, `transfer_stock`): the same checks in the same order,
  // the same refusal codes, the same fields with the same Automerge types.
  // A correction gets its own record id from the device counter, like a
  // sale, and goes into the sale's ledger whatever its date.

  function checkNote(value, what) {
    if (typeof value !== "string") refuse("Malformed", `${what} ${JSON.stringify(value)} is not a string`)
    const bytes = utf8Bytes(value)
    if (bytes > NOTE_BYTES_MAX) refuse("NoteTooLong", `text of ${bytes} bytes; at most ${NOTE_BYTES_MAX}`)
    return value
  }

  function checkAtMs(atMs) {
    if (!Number.isSafeInteger(atMs)) refuse("Malformed", "atMs must be an integer (ms since the Unix epoch)")
    return atMs
  }

  function checkRecordId(value, what) {
    if (!parseRecordId(value)) refuse("Id", `${what} ${JSON.stringify(value)} is not a record id device:${"0".repeat(RECORD_SEQ_DIGITS)}`)
    return value
  }

  /** Start of the ledger's month, in ms: corrections check ownership with it. */
  function ledgerPeriodStartMs(ledgerDoc) {
    const meta = expectKind(ledgerDoc, "ledger")
    const match = /^(\d{4})-(\d{2})$/.exec(meta.period ?? "")
    if (!match) refuse("Malformed", "document field `meta.period` is missing or not YYYY-MM")
    return Date.UTC(Number(match[1]), Number(match[2]) - 1, 1)
  }

  /** The record maps of `collection` that read as `fields`, by key (device:seq checked). */
  function readRecords(ledgerDoc, collection, fields, lineFields) {
    const out = {}
    const map = ledgerDoc?.[collection]
    if (!isMap(map)) return out
    for (const key of Object.keys(map)) {
      const raw = map[key]
      if (!isMap(raw)) continue
      const record = { id: key }
      let ok = true
      for (const [name, type] of fields) {
        const value = type === "str" ? readString(raw[name]) : readInt(raw[name])
        if (value === undefined) ok = false
        record[name] = value
      }
      if (lineFields) {
        if (!Array.isArray(raw.lines)) ok = false
        else
          record.lines = raw.lines.map(line => {
            const out = {}
            for (const [name, type] of lineFields) {
              const value = isMap(line) ? (type === "str" ? readString(line[name]) : readInt(line[name])) : undefined
              if (value === undefined) ok = false
              out[name] = value
            }
            return out
          })
      }
      const id = parseRecordId(key)
      if (ok && id && id.device === record.device && id.seq === record.seq) out[key] = record
    }
    return out
  }

  /** The sale `saleId` with its status, as this replica sees it. */
  function saleForCorrection(ledgerDoc, saleId) {
    const sale = readLedger(ledgerDoc).sales[saleId]
    if (!sale) refuse("SaleNotFound", `sale ${saleId} is not in this ledger`)
    const of = records => Object.values(records).filter(r => r.sale === saleId)
    const voids = of(readRecords(ledgerDoc, "voids", VOID_FIELDS))
    const payments = of(readRecords(ledgerDoc, "payments", [...PAYMENT_FIELDS]))
    const returns = of(readRecords(ledgerDoc, "returns", [...RETURN_FIELDS, ["refund_cents", "int"]], RETURN_LINE_FIELDS))
    const refunded = returns.reduce((sum, r) => sum + r.refund_cents, 0)
    const paid = payments.reduce((sum, p) => sum + p.amount_cents, 0)
    return { sale, voids, payments, returns, due_cents: sale.total_cents - refunded, paid_cents: paid }
  }

  /**
   * The status of every readable sale of a ledger, like Rust's
   * `sale_statuses`: `open`, `paid` or `voided`, with what is due (total
   * less refunds) and paid.
   */
  function saleStatuses(ledgerDoc) {
    const out = {}
    for (const id of Object.keys(readLedger(ledgerDoc).sales)) {
      const { sale, voids, payments, due_cents, paid_cents } = saleForCorrection(ledgerDoc, id)
      out[id] = {
        sale: id,
        state: voids.length > 0 ? "voided" : paid_cents >= due_cents ? "paid" : "open",
        total_cents: sale.total_cents,
        refunded_cents: sale.total_cents - due_cents,
        due_cents,
        paid_cents,
        voids: voids.map(v => v.id).sort(),
        payments: payments.map(p => p.id).sort(),
      }
    }
    return out
  }

  /**
   * Numbers a correction (device counter, committed first), then writes it
   * in one change of the ledger as a new key of `collection`: writer
   * registration, `device`, `seq`, then `fill(map, id)`.
   */
  function writeCorrection(deviceHandle, ledgerHandle, device, collection, build) {
    const ledgerDoc = ledgerHandle.doc()
    const seq = Math.max(device.last_seq, highestSeqInLedger(ledgerDoc, device.device)) + 1
    if (seq > RECORD_SEQ_MAX) refuse("SequenceExhausted", "the device has issued its last record number")
    const record = build({ id: formatRecordId(device.device, seq), device: device.device, seq })
    deviceHandle.change(d => writeLastSeq(d, seq))
    const actor = Automerge.getActorId(ledgerDoc)
    let error = null
    ledgerHandle.change(d => {
      try {
        writeRecord(d, collection, record, actor)
      } catch (e) {
        error = e
      }
    })
    if (error) throw error
    return record
  }

  const CORRECTION_LAYOUT = {
    voids: { fields: VOID_FIELDS },
    payments: { fields: PAYMENT_FIELDS },
    returns: { fields: RETURN_FIELDS, lineFields: RETURN_LINE_FIELDS, after: [["refund_cents", "int"]] },
  }

  /**
   * Inside a change of the ledger: writes a void, payment or return
   * (`collection`) as a new key, registering `actor` as a writer for its
   * device. Refuses to overwrite.
   */
  function writeRecord(ledgerDoc, collection, record, actor) {
    const layout = CORRECTION_LAYOUT[collection]
    if (!layout) refuse("Malformed", `${collection} is not a correction collection`)
    const records = container(ledgerDoc, collection)
    const writers = container(ledgerDoc, "writers")
    checkFields(record, [...layout.fields, ...(layout.after ?? [])])
    if (layout.lineFields) for (const line of record.lines ?? []) checkFields(line, layout.lineFields)
    if (record.id !== formatRecordId(record.device, record.seq)) refuse("Malformed", `key ${record.id} is not device:seq`)
    if (Object.hasOwn(records, record.id)) refuse("RecordExists", `record ${record.id} already exists`)
    if (!Object.hasOwn(writers, actor)) writers[actor] = str(record.device)
    records[record.id] = {}
    const map = records[record.id]
    putFields(map, record, layout.fields)
    if (layout.lineFields) {
      map.lines = []
      for (const [index, line] of record.lines.entries()) {
        map.lines.push({})
        putFields(map.lines[index], line, layout.lineFields)
      }
    }
    if (layout.after) putFields(map, record, layout.after)
  }

  /** Voids a sale, like Rust's `void_sale`. Returns the void (plain). */
  function voidSale(deviceHandle, ledgerHandle, input) {
    const reason = checkNote(input?.reason, "reason")
    const saleId = checkRecordId(input?.sale, "sale")
    const atMs = checkAtMs(input?.atMs)
    const device = readDevice(deviceHandle.doc())
    const ledgerDoc = ledgerHandle.doc()
    checkLedgerFor(ledgerDoc, device, ledgerPeriodStartMs(ledgerDoc))
    const { voids } = saleForCorrection(ledgerDoc, saleId)
    if (voids.length > 0) refuse("SaleVoided", `sale ${saleId} is voided`)
    return writeCorrection(deviceHandle, ledgerHandle, device, "voids", base => ({
      ...base, sale: saleId, reason, at_ms: atMs,
    }))
  }

  /** Records a payment towards a sale, like Rust's `record_payment`. */
  function recordPayment(deviceHandle, ledgerHandle, input) {
    const method = checkNote(input?.method, "method")
    const saleId = checkRecordId(input?.sale, "sale")
    const atMs = checkAtMs(input?.atMs)
    const amount = input?.amountCents
    if (!Number.isSafeInteger(amount)) refuse("Malformed", `amountCents ${JSON.stringify(amount)} is not an integer number of cents`)
    const device = readDevice(deviceHandle.doc())
    const ledgerDoc = ledgerHandle.doc()
    checkLedgerFor(ledgerDoc, device, ledgerPeriodStartMs(ledgerDoc))
    const { sale, voids, due_cents, paid_cents } = saleForCorrection(ledgerDoc, saleId)
    if (amount <= 0) refuse("NonPositiveAmount", `amount ${amount} is not positive`)
    if (voids.length > 0) refuse("SaleVoided", `sale ${saleId} is voided`)
    const due = due_cents - paid_cents
    if (amount > due) refuse("Overpayment", `payment of ${amount} exceeds the ${due} due`)
    return writeCorrection(deviceHandle, ledgerHandle, device, "payments", base => ({
      ...base, sale: saleId, amount_cents: amount, currency: sale.currency, method, at_ms: atMs,
    }))
  }

  /**
   * Records goods coming back from a sale into `location`, like Rust's
   * `record_return`; refunds come from the sale's prices. Move the stock
   * with `applyReturnToStock`.
   */
  function recordReturn(deviceHandle, ledgerHandle, input) {
    const saleId = checkRecordId(input?.sale, "sale")
    const location = checkId(input?.location, "location")
    const atMs = checkAtMs(input?.atMs)
    const device = readDevice(deviceHandle.doc())
    const ledgerDoc = ledgerHandle.doc()
    checkLedgerFor(ledgerDoc, device, ledgerPeriodStartMs(ledgerDoc))
    const { sale, returns } = saleForCorrection(ledgerDoc, saleId)
    const lines = input.lines ?? []
    if (!Array.isArray(lines) || lines.length === 0) refuse("EmptySale", "a return needs at least one line")
    const seen = new Set()
    const returnLines = lines.map(line => {
      const product = checkId(line?.product, "product")
      const quantity = line.quantity
      if (!Number.isSafeInteger(quantity) || quantity <= 0)
        refuse("NonPositiveQuantity", `quantity ${quantity} of ${product} is not positive`)
      if (seen.has(product)) refuse("DuplicateLine", `product ${product} appears on two lines`)
      seen.add(product)
      const saleLine = sale.lines.find(l => l.product === product)
      if (!saleLine) refuse("UnknownProduct", `product ${product} is not sellable (unknown, inactive, or not in the sale)`)
      const sold = sale.lines.filter(l => l.product === product).reduce((s, l) => s + l.quantity, 0)
      const returned = returns.flatMap(r => r.lines).filter(l => l.product === product).reduce((s, l) => s + l.quantity, 0)
      if (returned + quantity > sold)
        refuse("ReturnExceedsSold", `returning ${quantity} of ${product}: ${returned} of ${sold} already returned`)
      const refund = quantity * saleLine.unit_price_cents
      if (!Number.isSafeInteger(refund)) refuse("Overflow", "amount overflow")
      return { product, quantity, refund_cents: refund }
    })
    const refundCents = returnLines.reduce((s, l) => s + l.refund_cents, 0)
    if (!Number.isSafeInteger(refundCents)) refuse("Overflow", "amount overflow")
    return writeCorrection(deviceHandle, ledgerHandle, device, "returns", base => ({
      ...base,
      sale: saleId,
      receipt: receiptNumber(device.receipt_prefix, base.seq),
      location,
      at_ms: atMs,
      lines: returnLines,
      refund_cents: refundCents,
    }))
  }

  /** The movements of a return: one per line, id `{return}/{line}`, positive. */
  function returnMovements(saleReturn) {
    return saleReturn.lines.map((line, index) => ({
      id: `${saleReturn.id}/${index}`,
      kind: "return",
      product: line.product,
      delta: line.quantity,
      record: saleReturn.id,
      author: saleReturn.device ?? parseRecordId(saleReturn.id)?.device,
      at_ms: saleReturn.at_ms,
    }))
  }

  /** Puts returned goods back into the return's location, like `apply_return_to_stock`. */
  function applyReturnToStock(stockHandle, saleReturn) {
    const meta = expectKind(stockHandle.doc(), "stock")
    if (meta.owner !== saleReturn.location)
      refuse("WrongLocation", `stock document is for ${meta.owner}, expected ${saleReturn.location}`)
    return moveStock(stockHandle, returnMovements(saleReturn))
  }

  /**
   * Moves `quantity` of `product` between two locations, like Rust's
   * `transfer_stock`: a `transfer_out` in `from` and a `transfer_in` in
   * `to`, both with movement id and record `id`. Both are checked before
   * either is written; calling again after a crash between the two writes
   * completes it (both are idempotent). Returns [outcome out, outcome in].
   */
  function transferStock(fromHandle, toHandle, input) {
    const { id, product, quantity, author } = input ?? {}
    const atMs = checkAtMs(input?.atMs)
    checkId(product, "product")
    if (!Number.isSafeInteger(quantity) || quantity <= 0)
      refuse("NonPositiveQuantity", `quantity ${quantity} of ${product} is not positive`)
    if (typeof author !== "string" || author.length === 0) refuse("Malformed", `author ${JSON.stringify(author)} is not a name`)
    const movement = (kind, delta) => ({ id, kind, product, delta, record: id, author, at_ms: atMs })
    const out = movement("transfer_out", -quantity)
    const into = movement("transfer_in", quantity)
    // Check both before writing either.
    const from = fromHandle.doc()
    expectKind(from, "stock")
    checkMovement(container(from, "levels"), out)
    container(from, "movements")
    const to = toHandle.doc()
    expectKind(to, "stock")
    stockLevel(to, product)
    checkMovement(container(to, "levels"), into)
    container(to, "movements")
    const [outOutcome] = moveStock(fromHandle, [out])
    const [inOutcome] = moveStock(toHandle, [into])
    return [outOutcome, inOutcome]
  }

  // ---- Office: creating a tenant's documents (mirrors the Rust
  // `create_*_doc` and `put_*` functions; the server creates each seller's
  // ledgers itself as soon as the seller is in the catalog).

  /** The top-level maps of each document kind (Rust `DocKind::containers`). */
  const CONTAINERS = {
    catalog: ["products", "customers", "sellers", "devices", "locations", "directory"],
    device: ["state"],
    ledger: ["sales", "voids", "payments", "returns", "writers"],
    stock: ["levels", "movements", "alerts"],
  }

  /** Inside a change of an empty document: `meta` and every container, as `create_doc`. */
  function writeNewDoc(d, kind, tenant, owner, period) {
    d.meta = {}
    d.meta.kind = str(kind)
    d.meta.tenant = str(tenant)
    d.meta.owner = str(owner)
    if (period) d.meta.period = str(period)
    d.meta.schema_version = SCHEMA_VERSION
    for (const name of CONTAINERS[kind]) d[name] = {}
  }

  /**
   * A new document from `repo.create()`, written in the same tick (so its
   * first sync carries `meta`: the server records a document's owner from
   * the change that creates it and freezes `meta` afterwards).
   */
  function createDoc(repo, kind, tenant, owner, period, fill = () => {}) {
    if (typeof repo?.create !== "function") throw new TypeError("expected an automerge-repo Repo")
    const handle = repo.create()
    handle.change(d => {
      writeNewDoc(d, kind, tenant, owner, period)
      fill(d)
    })
    return handle
  }

  function checkName(value, what) {
    if (typeof value !== "string" || value.trim().length === 0)
      refuse("Malformed", `${what} ${JSON.stringify(value)} is not a name`)
    return value
  }

  function checkCurrency(value) {
    if (typeof value !== "string" || !/^[A-Z]{3}$/.test(value))
      refuse("Id", `currency ${JSON.stringify(value)} is not three upper-case letters`)
    return value
  }

  function checkPeriod(value) {
    if (typeof value !== "string" || !/^\d{4}-(0[1-9]|1[0-2])$/.test(value))
      refuse("Id", `period ${JSON.stringify(value)} is not \`YYYY-MM\``)
    return value
  }

  /** One record map of the catalog, created or updated field by field (`record_map`). */
  function putRecord(catalogHandle, collection, id, fields) {
    expectKind(catalogHandle.doc(), "catalog")
    container(catalogHandle.doc(), collection)
    catalogHandle.change(d => {
      if (!isMap(d[collection][id])) d[collection][id] = {}
      const record = d[collection][id]
      for (const [name, value] of fields) record[name] = typeof value === "string" ? str(value) : value
    })
  }

  /** Creates a tenant's catalog (`create_catalog_doc`): `createCatalog(repo, {tenant})`. */
  function createCatalog(repo, input) {
    const tenant = checkId(input?.tenant, "tenant")
    return createDoc(repo, "catalog", tenant, tenant, null)
  }

  /** Adds or updates a product (`put_product`); the price applies to sales recorded after. */
  function addProduct(catalogHandle, input) {
    const { id, name, unitPriceCents, currency, active = true } = input ?? {}
    checkId(id, "product")
    checkName(name, "name")
    if (!Number.isSafeInteger(unitPriceCents) || unitPriceCents < 0)
      refuse("Malformed", `unit_price_cents ${JSON.stringify(unitPriceCents)} is not an integer >= 0`)
    checkCurrency(currency)
    if (typeof active !== "boolean") refuse("Malformed", `active ${JSON.stringify(active)} is not a boolean`)
    putRecord(catalogHandle, "products", id, [
      ["name", name], ["unit_price_cents", unitPriceCents], ["currency", currency], ["active", active],
    ])
  }

  /** Adds or renames a customer (`put_customer`). */
  function addCustomer(catalogHandle, input) {
    checkId(input?.id, "customer")
    putRecord(catalogHandle, "customers", input.id, [["name", checkName(input.name, "name")]])
  }

  /**
   * Adds or renames a seller (`put_seller`). The server creates the
   * seller's ledger for this month as soon as it has the change, and lists
   * it in the catalog's `directory` as `ledger/{seller}/{YYYY-MM}`.
   */
  function addSeller(catalogHandle, input) {
    checkId(input?.id, "seller")
    putRecord(catalogHandle, "sellers", input.id, [["name", checkName(input.name, "name")]])
  }

  /** The catalog's sellers, or a refusal naming an unknown one. */
  function checkSeller(catalogHandle, seller) {
    checkId(seller, "seller")
    const sellers = container(catalogHandle.doc(), "sellers")
    if (!isMap(sellers[seller])) refuse("UnknownSeller", `seller ${seller} is not in the catalog`)
  }

  /** Adds a stock location (`put_location`): a `warehouse`, or a `vehicle` of a seller. */
  function addLocation(catalogHandle, input) {
    const { id, name, kind, seller } = input ?? {}
    checkId(id, "location")
    checkName(name, "name")
    if (kind !== "warehouse" && kind !== "vehicle")
      refuse("Malformed", `location kind ${JSON.stringify(kind)} is not warehouse or vehicle`)
    if (kind === "vehicle") checkSeller(catalogHandle, seller)
    else if (seller !== undefined) refuse("Malformed", "only a vehicle belongs to a seller")
    const fields = [["name", name], ["kind", kind]]
    if (kind === "vehicle") fields.push(["seller", seller])
    putRecord(catalogHandle, "locations", id, fields)
  }

  /**
   * Registers a device to a seller: creates its device document
   * (`create_device_doc`, `last_seq` 0), puts it in the catalog's `devices`
   * (`put_device`) and lists it in the `directory` as `device/{id}`.
   * Returns the device document's handle. The receipt prefix must be
   * unique in the tenant. The device's credential comes from the server
   * (`POST /v1/tokens`).
   */
  function addDevice(repo, catalogHandle, input) {
    const { id, seller, receiptPrefix } = input ?? {}
    checkId(id, "device")
    const meta = expectKind(catalogHandle.doc(), "catalog")
    checkSeller(catalogHandle, seller)
    if (typeof receiptPrefix !== "string" || !/^[A-Za-z0-9]{1,16}$/.test(receiptPrefix))
      refuse("Malformed", `receipt_prefix ${JSON.stringify(receiptPrefix)} is not 1 to 16 letters or digits`)
    const devices = container(catalogHandle.doc(), "devices")
    if (container(catalogHandle.doc(), "directory")[`device/${id}`] !== undefined)
      refuse("RecordExists", `device ${id} already has a document`)
    for (const [other, record] of Object.entries(devices))
      if (other !== id && readString(record?.receipt_prefix) === receiptPrefix)
        refuse("RecordExists", `receipt prefix ${receiptPrefix} is device ${other}'s`)
    const handle = createDoc(repo, "device", meta.tenant, id, null, d => {
      d.state.seller = str(seller)
      d.state.receipt_prefix = str(receiptPrefix)
      d.state.last_seq = 0
    })
    putRecord(catalogHandle, "devices", id, [["seller", seller], ["receipt_prefix", receiptPrefix]])
    catalogHandle.change(d => {
      d.directory[`device/${id}`] = str(handle.url)
    })
    return handle
  }

  /**
   * Opens a location's stock document for a month (`create_stock_doc` and
   * `move_stock`): a zero counter for every product of the catalog, then
   * an `opening/{product}` movement (kind `opening`, record
   * `opening/{period}`) for each opening quantity of `levels`, all in the
   * creating change; lists it as `stock/{location}/{period}`. Returns the
   * stock document's handle. `period` defaults to the month of `atMs`.
   */
  function openStock(repo, catalogHandle, input) {
    const { location, levels = {}, author = "office" } = input ?? {}
    const atMs = checkAtMs(input?.atMs)
    const period = checkPeriod(input?.period ?? periodOfMs(atMs))
    checkId(location, "location")
    const catalogDoc = catalogHandle.doc()
    const meta = expectKind(catalogDoc, "catalog")
    if (!isMap(container(catalogDoc, "locations")[location]))
      refuse("UnknownLocation", `location ${location} is not in the catalog`)
    if (typeof author !== "string" || author.length === 0) refuse("Malformed", `author ${JSON.stringify(author)} is not a name`)
    const key = `stock/${location}/${period}`
    if (container(catalogDoc, "directory")[key] !== undefined)
      refuse("RecordExists", `${key} is already listed`)
    const products = Object.keys(container(catalogDoc, "products")).sort()
    const opening = []
    for (const [product, units] of Object.entries(levels ?? {})) {
      if (!products.includes(product)) refuse("UnknownProduct", `product ${product} is not in the catalog`)
      if (!Number.isSafeInteger(units) || units < 0)
        refuse("NonPositiveQuantity", `quantity ${units} of ${product} is not a whole number >= 0`)
      if (units > 0) opening.push({
        id: `opening/${product}`, kind: "opening", product, delta: units, record: `opening/${period}`,
        author, at_ms: atMs,
      })
    }
    const handle = createDoc(repo, "stock", meta.tenant, location, period, d => {
      for (const product of products) d.levels[product] = new Automerge.Counter(0)
    })
    if (opening.length > 0) moveStock(handle, opening)
    catalogHandle.change(d => {
      d.directory[key] = str(handle.url)
    })
    return handle
  }

  return {
    createCatalog,
    addProduct,
    addCustomer,
    addSeller,
    addLocation,
    addDevice,
    openStock,
    plain,
    docMeta,
    readCatalog,
    readDevice,
    highestSeqInLedger,
    planSale,
    writeLastSeq,
    writeSale,
    recordSale,
    writeMovements,
    moveStock,
    saleMovements,
    applySaleToStock,
    stockLevel,
    readLedger,
    saleStatuses,
    writeRecord,
    voidSale,
    recordPayment,
    recordReturn,
    returnMovements,
    applyReturnToStock,
    transferStock,
  }
}
