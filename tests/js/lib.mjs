// Shared helpers for the ventas JS harness scripts (create/find/edit/live).
//
// Contract common to every client script:
//   * stdout carries ONLY result JSON lines (one line for create/find/edit,
//     two for live). Everything else (automerge-repo's own console.log calls,
//     debug output, our logs) goes to stderr.
//   * exit 0 on success; on failure one `{"error": "..."}` line on stdout and
//     exit 1 (error) or 124 (overall timeout).
//   * overall timeout: `--timeout-ms=N` anywhere in argv, else env
//     VENTAS_JS_TIMEOUT_MS, else 15000 ms.

import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
// @automerge/automerge is not a direct dependency: it is the version
// automerge-repo resolved to in package-lock.json (hoisted).
import * as A from "@automerge/automerge"

// automerge-repo logs some errors with console.log; keep stdout clean.
console.log = (...args) => console.error(...args)
console.info = (...args) => console.error(...args)

const T0 = performance.now()
export const elapsedMs = () => Math.round(performance.now() - T0)

export function log(...args) {
  console.error(`[${process.argv[1]?.split("/").pop()} +${elapsedMs()}ms]`, ...args)
}

/** Split argv into positional args and the timeout. */
export function parseArgs() {
  let timeoutMs = Number(process.env.VENTAS_JS_TIMEOUT_MS ?? 15000)
  const positional = []
  for (const a of process.argv.slice(2)) {
    const m = /^--timeout-ms=(\d+)$/.exec(a)
    if (m) timeoutMs = Number(m[1])
    else positional.push(a)
  }
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) timeoutMs = 15000
  return { positional, timeoutMs }
}

/** Write one JSON line to stdout and wait until it is flushed. */
export function emit(obj) {
  return new Promise(resolve => {
    process.stdout.write(JSON.stringify(obj) + "\n", () => resolve())
  })
}

let finished = false
export async function finish(obj, code = 0) {
  if (finished) return
  finished = true
  await emit(obj)
  process.exit(code)
}

export function fail(err, code = 1) {
  const message = err instanceof Error ? err.message : String(err)
  log("FAIL:", err instanceof Error ? err.stack : err)
  return finish({ error: message }, code)
}

/**
 * Install the overall timeout and global error traps. `stage()` returns a
 * string (or a function returning one) describing what we were waiting for,
 * included in the timeout error.
 */
export function installGuards(timeoutMs, stage = () => "") {
  const t = setTimeout(() => {
    let s = stage()
    if (typeof s === "function") s = s()
    void fail(`timeout after ${timeoutMs}ms${s ? ` while ${s}` : ""}`, 124)
  }, timeoutMs)
  t.unref?.()
  process.on("uncaughtException", e => void fail(e))
  process.on("unhandledRejection", e => void fail(e))
}

export function parseJsonArg(s, what) {
  try {
    return JSON.parse(s)
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`)
  }
}

/** A Repo with no storage, one WebSocket client adapter, sharing generously. */
export function makeRepo(serverUrl, extra = {}) {
  const adapter = new WebSocketClientAdapter(serverUrl)
  const repo = new Repo({
    network: [adapter],
    storage: undefined,
    sharePolicy: async () => true,
    ...extra,
  })
  return { repo, adapter }
}

/**
 * Resolve with the server's peer id once the server answered our `join` with
 * `peer`. Without this, `repo.find` may declare a document unavailable
 * after ~1 s simply because no peer is connected yet (the websocket adapter
 * force-marks itself ready after 1 s).
 */
export function waitForPeer(repo) {
  if (repo.peers.length > 0) return Promise.resolve(repo.peers[0])
  return new Promise(resolve => {
    repo.networkSubsystem.once("peer", ({ peerId }) => resolve(peerId))
  })
}

export const docToJSON = doc => JSON.parse(JSON.stringify(doc))
export const hexHeads = handle => A.getHeads(handle.doc())

function deepEqual(a, b) {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b))
}
function canon(v) {
  if (Array.isArray(v)) return v.map(canon)
  if (v && typeof v === "object")
    return Object.fromEntries(Object.keys(v).sort().map(k => [k, canon(v[k])]))
  return v
}

/**
 * WAIT_FOR semantics: every top-level key of `want` must be present in `doc`;
 * arrays: doc's array must contain every listed element (deep-equal each);
 * anything else: deep-equal.
 */
export function satisfies(doc, want) {
  if (want == null) return true
  for (const [k, v] of Object.entries(want)) {
    if (!(k in doc)) return false
    const have = doc[k]
    if (Array.isArray(v)) {
      if (!Array.isArray(have)) return false
      if (!v.every(x => have.some(y => deepEqual(x, y)))) return false
    } else if (!deepEqual(have, v)) return false
  }
  return true
}

/** Resolve once predicate(handle) holds, re-checking on every change. */
export function waitForHandle(handle, predicate) {
  return new Promise(resolve => {
    const check = () => {
      if (handle.isReady() && predicate(handle)) {
        handle.off("change", check)
        handle.off("heads-changed", check)
        resolve()
        return true
      }
      return false
    }
    if (check()) return
    handle.on("change", check)
    handle.on("heads-changed", check)
  })
}

const sameSet = (a, b) =>
  a.length === b.length && a.every(x => b.includes(x))

/**
 * Resolve when the server's latest sync message reports heads equal to our
 * current local heads, i.e. the server has (at least) everything we have and
 * we have everything it has. Uses the DocSynchronizer's `sync-state` events
 * (`syncState.theirHeads`), which works whether or not the server advertises
 * a storageId (handle.getSyncInfo only works when it does).
 */
export function waitForServerAck(repo, handle, serverPeerId) {
  return new Promise(resolve => {
    let lastTheirHeads
    const check = () => {
      if (!lastTheirHeads || !handle.isReady()) return
      if (sameSet(lastTheirHeads, hexHeads(handle))) {
        repo.synchronizer.off("sync-state", onState)
        handle.off("heads-changed", check)
        resolve(lastTheirHeads)
      }
    }
    const onState = ({ peerId, documentId, syncState }) => {
      if (peerId !== serverPeerId || documentId !== handle.documentId) return
      if (syncState.theirHeads) lastTheirHeads = [...syncState.theirHeads]
      check()
    }
    repo.synchronizer.on("sync-state", onState)
    handle.on("heads-changed", check)
  })
}

const sleep = ms => new Promise(r => setTimeout(r, ms))

/**
 * Independent check that the server can serve `url` containing `heads` (hex):
 * open a second Repo (fresh peer id, own WebSocket), `find` the url and wait
 * until the document contains `heads`. Retries with a fresh Repo when the
 * server says doc-unavailable or an attempt stalls. Disable with
 * VENTAS_JS_VERIFY=0. Returns the number of attempts.
 */
export async function verifyServerHas(serverUrl, url, heads, deadline) {
  if (process.env.VENTAS_JS_VERIFY === "0") return 0
  for (let attempt = 1; ; attempt++) {
    const remaining = deadline - performance.now()
    if (remaining <= 0) throw new Error("verify: deadline passed")
    const perAttempt = Math.min(remaining, 5000)
    const { repo } = makeRepo(serverUrl)
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), perAttempt)
    try {
      await Promise.race([
        waitForPeer(repo),
        new Promise((_, rej) =>
          ac.signal.addEventListener("abort", () => rej(new Error("no peer")))
        ),
      ])
      const h = await repo.find(url, { signal: ac.signal })
      await Promise.race([
        waitForHandle(h, hh => A.hasHeads(hh.doc(), heads)),
        new Promise((_, rej) =>
          ac.signal.addEventListener("abort", () => rej(new Error("heads not reached")))
        ),
      ])
      return attempt
    } catch (e) {
      log(`verify attempt ${attempt} failed: ${e.message}`)
      await sleep(100)
    } finally {
      clearTimeout(timer)
      try {
        await repo.shutdown()
      } catch {
        /* ignore */
      }
    }
  }
}

export { A }
