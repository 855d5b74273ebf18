// connect() and whenSaved() against a real ventas server.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import * as A from "@automerge/automerge"
import { WebSocket as NodeWebSocket } from "ws"
import { connect, whenSaved, SaveError, reconnectDelayMs, RECONNECT_DELAY_MS_MIN, RECONNECT_DELAY_MS_MAX } from "../index.mjs"
import { startServer, until, nextEvent } from "./server.mjs"

const S = v => new A.ImmutableString(v)
let server
const repos = []
const open = options => {
  const repo = connect(options)
  repos.push(repo)
  return repo
}

before(async () => {
  server = await startServer({
    office: { tenant: "acme", seller: "boss", device: "office-1", role: "office" },
    office2: { tenant: "acme", seller: "boss", device: "office-2", role: "office" },
    seller: { tenant: "acme", seller: "ana", device: "tab-1", role: "seller" },
    revoked: { tenant: "acme", seller: "bea", device: "tab-2", role: "seller" },
    expiring: { tenant: "acme", seller: "cai", device: "tab-3", role: "seller", expires: "3s" },
  })
})

after(async () => {
  await Promise.all(repos.map(repo => repo.shutdown().catch(() => {})))
  await server?.stop()
})

test("an office device's new document is saved on the server and another device reads it", async () => {
  const repo = open({ url: server.url, token: server.tokens.office, device: "office-1" })
  assert.match(repo.peerId, /^office-1\/[0-9a-f]{12}$/)
  await until("connected", () => repo.connection.state === "connected")
  const handle = repo.create({ note: "hello" })
  await whenSaved(handle, { timeoutMs: 10_000 })
  const storageId = repo.connection.serverStorageId
  assert.ok(storageId, "the server announced its storage id")
  assert.deepEqual(handle.getSyncInfo(storageId).lastHeads, handle.heads())

  const other = open({ url: server.url, token: server.tokens.office2, device: "office-2" })
  const found = await other.find(handle.url)
  assert.equal(found.doc().note, "hello")
})

test("a refused credential is the auth-refused state with the server's reason, and setToken recovers it without losing local changes", async () => {
  const bogus = `ventas_${"0".repeat(16)}_${"0".repeat(64)}`
  const repo = open({ url: server.url, token: bogus, device: "office-1" })
  const refused = await nextEvent(repo.connection, "auth-refused")
  assert.equal(repo.connection.state, "auth-refused")
  assert.match(refused.reason, /HTTP 401/)
  assert.equal(refused.reason, "HTTP 401: unauthorized: missing or invalid credential")
  // Offline work goes on while refused.
  const handle = repo.create({ offline: true })
  handle.change(d => {
    d.count = 1
  })
  repo.setToken(server.tokens.office)
  await whenSaved(handle, { timeoutMs: 10_000 })
  assert.equal(repo.connection.state, "connected")
  const other = open({ url: server.url, token: server.tokens.office2, device: "office-2" })
  const found = await other.find(handle.url)
  assert.deepEqual({ ...found.doc() }, { offline: true, count: 1 })
})

test("a credential revoked while connected becomes auth-refused with the server's close reason", async () => {
  const repo = open({ url: server.url, token: server.tokens.revoked, device: "tab-2" })
  await until("connected", () => repo.connection.state === "connected")
  const id = server.tokens.revoked.slice("ventas_".length, "ventas_".length + 16)
  const refused = nextEvent(repo.connection, "auth-refused")
  const response = await fetch(`${server.httpUrl}/v1/tokens/${id}/revoke`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.tokens.office}` },
  })
  assert.equal(response.status, 200, await response.text())
  const { reason } = await refused
  assert.match(reason, /credential no longer valid/)
})

test("a peer id that is not the credential's device is refused as auth-refused, never thrown", async () => {
  const repo = open({ url: server.url, token: server.tokens.seller, device: "someone-else" })
  const { reason } = await nextEvent(repo.connection, "auth-refused")
  assert.match(reason, /not allowed for device tab-1/)
})

test("a seller's write to the read-only catalog rejects whenSaved with the server's reason", async () => {
  const office = open({ url: server.url, token: server.tokens.office, device: "office-1" })
  const catalog = office.create()
  catalog.change(d => {
    d.meta = {}
    d.meta.kind = S("catalog")
    d.meta.tenant = S("acme")
    d.meta.owner = S("acme")
    d.meta.schema_version = 1
    for (const name of ["products", "customers", "sellers", "devices", "locations", "directory"]) d[name] = {}
  })
  await whenSaved(catalog, { timeoutMs: 10_000 })

  const seller = open({ url: server.url, token: server.tokens.seller, device: "tab-1" })
  const handle = await seller.find(catalog.url)
  assert.equal(handle.doc().meta.kind.toString(), "catalog")
  handle.change(d => {
    d.products.forged = { name: "Forged" }
  })
  const error = await whenSaved(handle, { timeoutMs: 10_000 }).then(
    () => assert.fail("a denied write was reported as saved"),
    e => e,
  )
  assert.ok(error instanceof SaveError)
  assert.equal(error.code, "denied")
  assert.match(error.message, new RegExp(catalog.documentId))
})

test("whenSaved times out when the server is unreachable", async () => {
  const repo = open({ url: "ws://127.0.0.1:9/", token: server.tokens.office, device: "office-1" })
  await until("offline", () => repo.connection.state === "offline")
  const handle = repo.create({ x: 1 })
  const error = await whenSaved(handle, { timeoutMs: 200 }).then(() => null, e => e)
  assert.ok(error instanceof SaveError)
  assert.equal(error.code, "timeout")
})

test("the token never goes in the URL", () => {
  assert.throws(
    () => connect({ url: `${server.url}?token=${server.tokens.office}`, token: server.tokens.office, device: "office-1" }),
    /never in the URL/,
  )
})

test("reconnect delays grow exponentially, stay inside the bounds and are jittered", () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const low = reconnectDelayMs(attempt, { random: () => 0 })
    const high = reconnectDelayMs(attempt, { random: () => 1 })
    assert.equal(low, RECONNECT_DELAY_MS_MIN)
    assert.equal(high, Math.min(RECONNECT_DELAY_MS_MAX, RECONNECT_DELAY_MS_MIN * 2 ** attempt))
  }
  const spread = new Set(Array.from({ length: 50 }, () => reconnectDelayMs(10)))
  assert.ok(spread.size > 10, "jitter spreads retries")
})

test("an expired credential becomes auth-refused with the server's reason", async () => {
  const repo = open({ url: server.url, token: server.tokens.expiring, device: "tab-3" })
  const { reason } = await nextEvent(repo.connection, "auth-refused", 20_000)
  // Connected before expiry: the server's close; a slow start: the 401.
  assert.match(reason, /credential no longer valid|HTTP 401/)
  assert.equal(repo.connection.state, "auth-refused")
})

test("a refused device retries on the backoff schedule, not in a storm", async () => {
  const attempts = []
  class CountingWebSocket extends NodeWebSocket {
    constructor(url, protocols) {
      super(url, protocols)
      attempts.push(performance.now())
    }
  }
  const bogus = `ventas_${"1".repeat(16)}_${"1".repeat(64)}`
  // random = 1: every delay is its ceiling, 500, 1000, 2000 ms.
  const repo = open({ url: server.url, token: bogus, device: "office-1", WebSocket: CountingWebSocket, random: () => 1 })
  await until("four attempts", () => attempts.length >= 4, 20_000)
  const gaps = attempts.slice(1).map((at, i) => at - attempts[i])
  for (const [i, least] of [RECONNECT_DELAY_MS_MIN, 2 * RECONNECT_DELAY_MS_MIN, 4 * RECONNECT_DELAY_MS_MIN].entries())
    assert.ok(gaps[i] >= least - 5, `gap ${i} was ${gaps[i]} ms, at least ${least} expected`)
  assert.equal(repo.connection.state, "auth-refused", repo.connection.reason)
})

test("after the server restarts the connection comes back by itself and what was written meanwhile is saved", async () => {
  const repo = open({ url: server.url, token: server.tokens.office, device: "office-1", random: () => 0 })
  await until("connected", () => repo.connection.state === "connected")
  const handle = repo.create({ n: 1 })
  await whenSaved(handle, { timeoutMs: 10_000 })
  const down = nextEvent(repo.connection, "state")
  await server.restart()
  assert.notEqual((await down).state, "connected")
  handle.change(d => {
    d.n = 2
  })
  await whenSaved(handle, { timeoutMs: 20_000 })
  assert.equal(repo.connection.state, "connected")
  const other = open({ url: server.url, token: server.tokens.office2, device: "office-2" })
  await until("the other device sees n = 2", async () => (await other.find(handle.url)).doc().n === 2)
})

/**
 * A WebSocket with only the browser's API: no `on`, no HTTP status of a
 * refused upgrade (the close is 1006 with no reason, as in browsers).
 */
class BrowserLikeWebSocket {
  #socket
  onopen = null
  onmessage = null
  onclose = null
  onerror = null
  constructor(url, protocols) {
    const socket = new NodeWebSocket(url, protocols)
    this.#socket = socket
    socket.on("open", () => this.onopen?.({}))
    socket.on("message", data => this.onmessage?.({ data: new Uint8Array(data).buffer }))
    socket.on("error", () => this.onerror?.({}))
    socket.on("close", (code, reason) => this.onclose?.({ code, reason: reason.toString() }))
  }
  set binaryType(value) {
    this.#socket.binaryType = value === "arraybuffer" ? "nodebuffer" : value
  }
  get readyState() {
    return this.#socket.readyState
  }
  send(data) {
    this.#socket.send(data)
  }
  close(code, reason) {
    this.#socket.close(code, reason)
  }
}

test("with a browser's WebSocket the refusal and its reason come from a probe of the same URL", async () => {
  const bogus = `ventas_${"2".repeat(16)}_${"2".repeat(64)}`
  const repo = open({ url: server.url, token: bogus, device: "office-1", WebSocket: BrowserLikeWebSocket })
  const { reason } = await nextEvent(repo.connection, "auth-refused")
  assert.match(reason, /HTTP 401: unauthorized: missing or invalid credential/)
  repo.setToken(server.tokens.office)
  await until("connected", () => repo.connection.state === "connected")
  const handle = repo.create({ browser: true })
  await whenSaved(handle, { timeoutMs: 10_000 })
})
