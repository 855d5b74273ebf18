// connect.mjs: a device's connection to a ventas server, and "saved on the
// server".
//
// `connect({ url, token, device, storage })` returns a `VentasRepo` (an
// automerge-repo 2.x `Repo`) whose only network adapter is a
// `VentasConnection`: one WebSocket to the server that offers the
// subprotocols `["ventas", "ventas.bearer.<token>"]`, so the credential
// never appears in the URL (proxy logs) and works in browsers, which cannot
// set headers on a WebSocket. The peer id is `<device>/<random>`: the server
// only lets a device credential join as its device id or `<device>/...`, and
// the random part keeps two tabs of one device apart.
//
// Failures are states, not exceptions. The connection is always in one of
// `connecting`, `connected`, `offline` (waiting to retry), `auth-refused`
// (the server refused the credential: HTTP 401/403 at the upgrade, or a
// close with "credential no longer valid" / a refused peer id) and
// `closed`, and it emits `state` on every change and `auth-refused` with the
// server's reason. It retries with exponential backoff and full jitter
// between `RECONNECT_DELAY_MS_MIN` and `RECONNECT_DELAY_MS_MAX`, so a
// thousand devices refused at once come back spread over the window rather
// than together. `setToken(token)` reconnects with the new credential at
// once; documents live in the Repo, so nothing written meanwhile is lost.
//
// `whenSaved(handle, { timeoutMs })` resolves when the server has
// acknowledged the handle's heads: the heads the server reported in its sync
// state for its storage id (announced in its `peer` message) include the
// heads the handle had when called. The server answers only from flushed
// state, so this means "on the server's disk", like `synced()` of the Rust
// client. It rejects with a `SaveError` on timeout and when the server sends
// an `error` naming the document (a denied write).
//
//   import { connect, whenSaved } from "ventas-client"
//   const repo = connect({ url: "wss://sync.example.com/", token, device: "tablet-7" })
//   repo.connection.on("auth-refused", ({ reason }) => showLogin(reason))
//   const handle = await repo.find(ledgerUrl)
//   handle.change(d => { ... })
//   await whenSaved(handle, { timeoutMs: 10_000 })

import { Repo, NetworkAdapter, cbor } from "@automerge/automerge-repo"

/** The subprotocol the server selects. */
export const SUBPROTOCOL = "ventas"
/** Prefix of the subprotocol that carries the credential. */
export const SUBPROTOCOL_BEARER_PREFIX = "ventas.bearer."
/** automerge-repo wire protocol version this adapter speaks. */
export const PROTOCOL_VERSION = "1"
/** First retry delay after a failed or lost connection, in ms. */
export const RECONNECT_DELAY_MS_MIN = 500
/** Longest retry delay, in ms (the backoff stops doubling here). */
export const RECONNECT_DELAY_MS_MAX = 30_000
/** Default time `whenSaved` waits, in ms. */
export const WHEN_SAVED_TIMEOUT_MS_DEFAULT = 30_000
/** Longest server reason kept from a refused upgrade's body, in bytes. */
export const REFUSAL_REASON_BYTES_MAX = 512
/** WebSocket close code of a policy violation (RFC 6455). */
const CLOSE_POLICY = 1008
/** Close code this client uses for its own closes. */
const CLOSE_NORMAL = 1000

/** A small event emitter (browser and Node alike; no dependency). */
class Emitter {
  #listeners = new Map()
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set())
    this.#listeners.get(event).add(listener)
    return this
  }
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener)
    return this
  }
  once(event, listener) {
    const wrapper = payload => {
      this.off(event, wrapper)
      listener(payload)
    }
    return this.on(event, wrapper)
  }
  emit(event, payload) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      // A listener's bug must not break the connection.
      try {
        listener(payload)
      } catch (error) {
        queueMicrotask(() => {
          throw error
        })
      }
    }
  }
}

/**
 * The delay before retry number `attempt` (0-based): exponential backoff
 * with full jitter, between `minMs` and `min(maxMs, minMs * 2^attempt)`.
 */
export function reconnectDelayMs(attempt, { minMs = RECONNECT_DELAY_MS_MIN, maxMs = RECONNECT_DELAY_MS_MAX, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30))
  return Math.round(minMs + random() * (ceiling - minMs))
}

/** True if a close from the server means the credential was refused. */
function isAuthClose(code, reason) {
  return code === CLOSE_POLICY &&
    (reason.startsWith("credential no longer valid") || /^peer id .* is not allowed for device/.test(reason))
}

/** Path, relative to the WebSocket URL, of an API route that needs a valid credential. */
export const PROBE_PATH = "v1/export/status"

/**
 * The URL the browser's refusal probe GETs: `PROBE_PATH` next to the
 * WebSocket URL (`wss://host/sync/` -> `https://host/sync/v1/export/status`).
 */
function probeUrlOf(url) {
  const http = new URL(url.replace(/^ws(s?):/, "http$1:"))
  if (!http.pathname.endsWith("/")) http.pathname += "/"
  http.search = ""
  return new URL(PROBE_PATH, http).toString()
}

/** The server's reason from a refusal body (`{"error":{"code","message"}}` JSON, or text). */
function reasonOf(status, body) {
  let text = String(body ?? "").slice(0, REFUSAL_REASON_BYTES_MAX)
  try {
    const parsed = JSON.parse(text)
    const error = parsed?.error
    if (error && typeof error.message === "string")
      text = typeof error.code === "string" ? `${error.code}: ${error.message}` : error.message
  } catch {
    // not JSON: keep the text
  }
  return `HTTP ${status}${text ? `: ${text}` : ""}`
}

async function defaultWebSocket() {
  if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket
  // Node < 22 has no global WebSocket: use `ws`, which also reports the
  // server's HTTP refusal (status and body).
  const ws = await import("ws")
  return ws.WebSocket ?? ws.default
}

/**
 * The network adapter: one WebSocket to a ventas server, with the
 * credential as a subprotocol, reconnection with backoff and visible
 * states. Events (`onEvent`): `state` {state, reason}, `auth-refused`
 * {reason}, `server-error` {message} (the server's `error` messages). A
 * listener that throws does not break the connection; its error is
 * rethrown on a microtask, as browsers report EventTarget listener errors.
 */
export class VentasConnection extends NetworkAdapter {
  #url
  #token
  #WebSocketClass
  #socket = null
  #serverPeerId = null
  #serverStorageId = null
  #attempt = 0
  #retryTimer = null
  #state = "closed"
  #reason = null
  #stopped = true
  /** `disconnect()` came before the Repo's first `connect()` (a quick shutdown). */
  #cancelled = false
  #connectedOnce = false
  #ready = false
  #readyResolvers = []
  #events = new Emitter()
  #random

  /**
   * @param {{url: string, token: string, WebSocket?: any, random?: () => number}} options
   */
  constructor({ url, token, WebSocket, random = Math.random }) {
    super()
    if (typeof url !== "string" || !/^wss?:\/\//.test(url))
      throw new TypeError(`url must be a ws:// or wss:// URL, got ${JSON.stringify(url)}`)
    if (/[?&]token=/.test(url)) throw new TypeError("the token goes in `token`, never in the URL")
    checkToken(token)
    this.#url = url
    this.#token = token
    this.#WebSocketClass = WebSocket ?? null
    this.#random = random
  }

  /** `connecting`, `connected`, `offline`, `auth-refused` or `closed`. */
  get state() {
    return this.#state
  }
  /** Why the connection is in its state (server reason, error), or null. */
  get reason() {
    return this.#reason
  }
  /** The server's peer id while connected. */
  get serverPeerId() {
    return this.#serverPeerId
  }
  /** The server's storage id (from its `peer` message), once known. */
  get serverStorageId() {
    return this.#serverStorageId
  }

  /** Listens to `state`, `auth-refused` or `server-error`. */
  onEvent(event, listener) {
    this.#events.on(event, listener)
    return () => this.#events.off(event, listener)
  }

  isReady() {
    return this.#ready
  }

  /**
   * Ready once the server has answered `join`, or once the first attempt
   * failed: an offline device must still open its local documents.
   */
  whenReady() {
    if (this.#ready) return Promise.resolve()
    return new Promise(resolve => this.#readyResolvers.push(resolve))
  }

  #markReady() {
    if (this.#ready) return
    this.#ready = true
    for (const resolve of this.#readyResolvers.splice(0)) resolve()
  }

  #setState(state, reason = null) {
    this.#state = state
    this.#reason = reason
    this.#events.emit("state", { state, reason })
    if (state === "auth-refused") this.#events.emit("auth-refused", { reason })
  }

  connect(peerId, peerMetadata) {
    this.peerId = peerId
    this.peerMetadata = peerMetadata ?? {}
    // The Repo connects its adapters once its storage id is known, which may
    // be after a quick `shutdown()`: then stay closed.
    if (this.#cancelled) return
    this.#connectedOnce = true
    this.#stopped = false
    this.#open()
  }

  /** Swaps the credential and reconnects now; documents are untouched. */
  setToken(token) {
    checkToken(token)
    this.#token = token
    if (this.#stopped) return
    this.#attempt = 0
    this.#dropSocket("token changed")
    this.#open()
  }

  disconnect() {
    if (!this.#connectedOnce) this.#cancelled = true
    this.#stopped = true
    clearTimeout(this.#retryTimer)
    this.#retryTimer = null
    this.#dropSocket("client disconnect")
    this.#setState("closed")
  }

  send(message) {
    const socket = this.#socket
    // While not joined, messages are dropped: automerge-repo syncs every
    // document again when the server peer comes back.
    if (!socket || !this.#serverPeerId || socket.readyState !== 1) return
    if (message.targetId !== this.#serverPeerId) return
    socket.send(cbor.encode(message))
  }

  #dropSocket(why) {
    const socket = this.#socket
    this.#socket = null
    if (socket) {
      detach(socket)
      try {
        socket.close(CLOSE_NORMAL, why)
      } catch {
        // already closing
      }
    }
    this.#peerGone()
  }

  #peerGone() {
    const peerId = this.#serverPeerId
    this.#serverPeerId = null
    if (peerId) this.emit("peer-disconnected", { peerId })
  }

  async #open() {
    clearTimeout(this.#retryTimer)
    this.#retryTimer = null
    if (this.#stopped) return
    if (!this.#WebSocketClass) {
      this.#WebSocketClass ??= await defaultWebSocket()
    }
    if (this.#stopped || this.#socket) return
    if (this.#state !== "auth-refused") this.#setState("connecting")
    const protocols = [SUBPROTOCOL, SUBPROTOCOL_BEARER_PREFIX + this.#token]
    let socket
    try {
      socket = new this.#WebSocketClass(this.#url, protocols)
    } catch (error) {
      this.#failed({ reason: `cannot open the WebSocket: ${error?.message ?? error}` })
      return
    }
    this.#socket = socket
    socket.binaryType = "arraybuffer"
    let opened = false
    let refusal = null
    const reportsResponse = typeof socket.on === "function"
    if (reportsResponse) {
      // `ws` (Node) reports the refused upgrade with the server's status and
      // body; a browser's WebSocket does not (see #probeRefusal).
      socket.on("unexpected-response", (request, response) => {
        const chunks = []
        let bytes = 0
        response.on("data", chunk => {
          if (bytes < REFUSAL_REASON_BYTES_MAX) chunks.push(chunk)
          bytes += chunk.length
        })
        response.on("end", () => {
          request.destroy()
          const body = Buffer.concat(chunks).toString("utf8")
          refusal = { status: response.statusCode, reason: reasonOf(response.statusCode, body) }
          if (this.#socket === socket) {
            this.#socket = null
            detach(socket)
            this.#failed({ refusal })
          }
        })
        response.on("error", () => {})
      })
    }
    socket.onopen = () => {
      opened = true
      socket.send(cbor.encode({
        type: "join",
        senderId: this.peerId,
        peerMetadata: this.peerMetadata,
        supportedProtocolVersions: [PROTOCOL_VERSION],
      }))
    }
    socket.onmessage = event => this.#receive(socket, event.data)
    socket.onerror = () => {
      // The close event follows and carries what there is to know.
    }
    socket.onclose = event => {
      if (this.#socket !== socket) return
      this.#socket = null
      detach(socket)
      const code = event?.code ?? 1006
      const reason = event?.reason ?? ""
      this.#peerGone()
      if (opened && isAuthClose(code, reason)) this.#failed({ refusal: { status: null, reason } })
      else if (!opened) this.#failed({ reason: reason || `connection failed (close ${code})`, probe: !reportsResponse })
      else this.#failed({ reason: `connection closed (${code}${reason ? `: ${reason}` : ""})` })
    }
  }

  #receive(socket, data) {
    if (this.#socket !== socket) return
    let message
    try {
      message = cbor.decode(new Uint8Array(data))
    } catch (error) {
      this.#events.emit("server-error", { message: `undecodable message from the server: ${error?.message ?? error}` })
      return
    }
    if (message?.type === "peer") {
      this.#serverPeerId = message.senderId
      this.#serverStorageId = message.peerMetadata?.storageId ?? null
      this.#attempt = 0
      this.#setState("connected")
      this.emit("peer-candidate", { peerId: message.senderId, peerMetadata: message.peerMetadata ?? {} })
      this.#markReady()
    } else if (message?.type === "error") {
      this.#events.emit("server-error", { message: String(message.message ?? "") })
    } else if (message && typeof message.type === "string") {
      this.emit("message", message)
    }
  }

  /** A failed attempt: record why, tell, and schedule the next one. */
  async #failed({ refusal = null, reason = null, probe = false }) {
    if (this.#stopped) return
    if (!refusal && probe) refusal = await this.#probeRefusal()
    if (this.#stopped || this.#socket) return
    if (refusal && (refusal.status === null || refusal.status === 401 || refusal.status === 403))
      this.#setState("auth-refused", refusal.reason)
    else this.#setState("offline", refusal?.reason ?? reason)
    this.#markReady()
    const delay = reconnectDelayMs(this.#attempt++, { random: this.#random })
    this.#retryTimer = setTimeout(() => this.#open(), delay)
  }

  /**
   * A browser's WebSocket hides why the upgrade failed. A GET of an API
   * route next to it with the credential in a header tells a refused
   * credential (401) from anything else (a network failure, a full server,
   * a role that may read the API or not). It needs the same origin or CORS;
   * without it, the state is `offline`.
   */
  async #probeRefusal() {
    if (typeof globalThis.fetch !== "function") return null
    try {
      const response = await globalThis.fetch(probeUrlOf(this.#url), {
        headers: { authorization: `Bearer ${this.#token}` },
      })
      if (response.status !== 401) return null
      return { status: response.status, reason: reasonOf(response.status, await response.text()) }
    } catch {
      return null
    }
  }
}

function detach(socket) {
  socket.onopen = socket.onmessage = socket.onclose = null
  socket.onerror = () => {}
}

function checkToken(token) {
  if (typeof token !== "string" || token.length === 0 || !/^[\x21-\x7e]+$/.test(token))
    throw new TypeError("token must be a non-empty string of printable ASCII (a ventas credential)")
}

/** Random hex, for the per-repo part of the peer id. */
function randomHex(bytes) {
  const buffer = new Uint8Array(bytes)
  globalThis.crypto.getRandomValues(buffer)
  return Array.from(buffer, b => b.toString(16).padStart(2, "0")).join("")
}

/** Every Repo `connect` made, to find the one holding a handle. */
const repos = new Set()
const register = repo => {
  repos.add(repo)
  return repo
}

/** A Repo connected to a ventas server through a `VentasConnection`. */
export class VentasRepo extends Repo {
  /** The connection: `state`, `reason`, `onEvent(...)`, `setToken(...)`. */
  connection
  /** The device id this Repo joins as. */
  device

  constructor({ connection, device, ...config }) {
    super({ ...config, network: [connection] })
    this.connection = connection
    this.device = device
  }

  /** Swaps the credential (a renewed token); local documents are kept. */
  setToken(token) {
    this.connection.setToken(token)
  }

  async shutdown() {
    repos.delete(this)
    return super.shutdown()
  }
}

const DEVICE_ID = /^[A-Za-z0-9._-]{1,64}$/

/**
 * A Repo for `device`, connected to the ventas server at `url` with
 * `token` (its credential). `storage` is any automerge-repo storage adapter
 * (IndexedDB in browsers, NodeFS in Node); without one documents live in
 * memory only.
 */
export function connect({ url, token, device, storage, WebSocket, random, sharePolicy } = {}) {
  if (typeof device !== "string" || !DEVICE_ID.test(device))
    throw new TypeError(`device must be the credential's device id (1 to 64 of [A-Za-z0-9._-]), got ${JSON.stringify(device)}`)
  const connection = new VentasConnection({ url, token, WebSocket, random })
  return register(new VentasRepo({
    connection,
    device,
    storage,
    sharePolicy,
    peerId: `${device}/${randomHex(6)}`,
  }))
}

/** Why `whenSaved` gave up: `code` is `timeout` or `denied`. */
export class SaveError extends Error {
  constructor(code, message) {
    super(message)
    this.name = "SaveError"
    this.code = code
  }
}


function repoOf(handle) {
  for (const repo of repos) if (repo.handles[handle.documentId] === handle) return repo
  return null
}

/**
 * Resolves once the server has acknowledged `handle`'s current heads.
 * Rejects with `SaveError` (`timeout`; `denied` with the server's reason).
 * `repo` is found from the handle among the Repos `connect` made that are
 * not shut down; pass it for a handle from elsewhere.
 */
export function whenSaved(handle, { timeoutMs = WHEN_SAVED_TIMEOUT_MS_DEFAULT, repo = repoOf(handle) } = {}) {
  if (!repo || !(repo.connection instanceof VentasConnection))
    return Promise.reject(new TypeError("whenSaved: the handle does not belong to a Repo made by connect()"))
  const connection = repo.connection
  const target = handle.heads()
  return new Promise((resolve, reject) => {
    const cleanups = []
    const finish = (error, value) => {
      for (const cleanup of cleanups) cleanup()
      if (error) reject(error)
      else resolve(value)
    }
    const check = () => {
      const storageId = connection.serverStorageId
      if (!storageId) return
      const serverHeads = handle.getSyncInfo(storageId)?.lastHeads
      if (!serverHeads) return
      const current = handle.heads()
      const hasAll = heads => heads.every(h => serverHeads.includes(h))
      if (hasAll(target) || hasAll(current)) finish(null, serverHeads)
    }
    const timer = setTimeout(
      () => finish(new SaveError("timeout", `the server did not acknowledge document ${handle.documentId} within ${timeoutMs} ms`)),
      timeoutMs,
    )
    cleanups.push(() => clearTimeout(timer))
    handle.on("remote-heads", check)
    cleanups.push(() => handle.off("remote-heads", check))
    handle.on("heads-changed", check)
    cleanups.push(() => handle.off("heads-changed", check))
    cleanups.push(connection.onEvent("state", check))
    cleanups.push(connection.onEvent("server-error", ({ message }) => {
      if (message.includes(handle.documentId)) finish(new SaveError("denied", message))
    }))
    check()
  })
}
