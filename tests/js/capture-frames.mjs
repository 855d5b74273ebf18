#!/usr/bin/env node
// capture-frames.mjs [OUT_DIR]   (default: ../fixtures/js-frames next to this file)
//
// Records the exact binary WebSocket frames a real @automerge/automerge-repo
// 2.5.x client (Repo + WebSocketClientAdapter, no storage) puts on the wire,
// and writes them as OUT_DIR/NN-<type>.cbor (raw bytes, one frame per file).
//
// Part 1 ("raw"): a tiny hand-written `ws` server (NO automerge-repo on the
//   server side) that answers join with a hand-built `peer`, answers `request`
//   for unknown docs with `doc-unavailable`, and runs a real Automerge sync
//   responder for `sync`. Client frames -> OUT_DIR/NN-<type>.cbor.
// Part 2 ("ref"): the same kind of client talking to ref-server.mjs through a
//   recording proxy; both directions -> OUT_DIR/ref-server/NN-<c2s|s2c>-<type>.cbor.
//
// Also (re)writes OUT_DIR/README.md and OUT_DIR/manifest.json with the decoded
// CBOR diagnostic of every frame plus the behavioural observations.
// Prints one JSON summary line on stdout; logs on stderr.

import { spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { WebSocketServer, WebSocket } from "ws"
import { Repo, cbor, generateAutomergeUrl, parseAutomergeUrl } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import * as A from "@automerge/automerge"
import { cborDiag } from "./cbor-diag.mjs"

console.log = (...a) => console.error(...a)
const here = path.dirname(fileURLToPath(import.meta.url))
const OUT = path.resolve(process.argv[2] ?? path.join(here, "../fixtures/js-frames"))
const REF_OUT = path.join(OUT, "ref-server")
const SERVER_PEER = "server"
const SERVER_STORAGE = "capture-server-storage-id"
const OTHER_STORAGE = "capture-other-storage-id"

const sleep = ms => new Promise(r => setTimeout(r, ms))
const t0 = performance.now()
const now = () => Math.round(performance.now() - t0)
const log = (...a) => console.error(`[capture +${now()}ms]`, ...a)
const pkgVersion = name =>
  JSON.parse(fs.readFileSync(path.join(here, "node_modules", name, "package.json"), "utf8")).version

async function waitFor(pred, ms, what) {
  const end = performance.now() + ms
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

function waitForPeer(repo) {
  if (repo.peers.length > 0) return Promise.resolve(repo.peers[0])
  return new Promise(r => repo.networkSubsystem.once("peer", ({ peerId }) => r(peerId)))
}

// ---------------------------------------------------------------- part 1: raw
const frames = [] // { seq, dir, type, bytes, msg, atMs, note }
const obs = {}

function record(dir, bytes, note) {
  const msg = cbor.decode(bytes)
  const f = { seq: frames.length + 1, dir, type: msg.type, bytes, msg, atMs: now(), note }
  frames.push(f)
  log(`${dir} #${f.seq} ${msg.type}${msg.documentId ? " " + msg.documentId : ""} (${bytes.length} B)`)
  return f
}

function startRawServer({ lax = false, silent = false } = {}) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  const state = { sockets: new Set(), docs: new Map(), clientPeerId: null, pongs: 0, socket: null }
  const send = (socket, m) => {
    const bytes = cbor.encode(m)
    if (!lax) record("s2c", new Uint8Array(bytes))
    socket.send(bytes)
  }
  const entry = id => {
    if (!state.docs.has(id)) state.docs.set(id, { doc: A.init(), ss: A.initSyncState(), known: false })
    return state.docs.get(id)
  }
  const syncReply = (socket, docId, targetId) => {
    const e = entry(docId)
    const [ss, reply] = A.generateSyncMessage(e.doc, e.ss)
    e.ss = ss
    if (reply) send(socket, { type: "sync", senderId: SERVER_PEER, targetId, documentId: docId, data: reply })
  }
  wss.on("connection", socket => {
    state.sockets.add(socket)
    state.socket = socket
    socket.on("pong", () => state.pongs++)
    socket.on("message", (data, isBinary) => {
      const bytes = new Uint8Array(data)
      if (!isBinary) log("WARNING: text frame from client")
      let msg
      if (silent) {
        state.silentTypes = [...(state.silentTypes ?? []), cbor.decode(bytes).type]
        return
      }
      if (lax) {
        msg = cbor.decode(bytes)
        state.laxTypes = [...(state.laxTypes ?? []), msg.type]
      } else msg = record("c2s", bytes).msg
      switch (msg.type) {
        case "join":
          state.clientPeerId = msg.senderId
          if (lax) {
            // Deliberately minimal peer message: no targetId, no peerMetadata.
            socket.send(cbor.encode({ type: "peer", senderId: SERVER_PEER, selectedProtocolVersion: "1" }))
            return
          }
          send(socket, {
            type: "peer",
            senderId: SERVER_PEER,
            targetId: msg.senderId,
            selectedProtocolVersion: "1",
            peerMetadata: { storageId: SERVER_STORAGE, isEphemeral: false },
          })
          // Ask the client to tell us about heads it learns for our own storage
          // id; this is what makes it emit `remote-heads-changed`.
          send(socket, { type: "remote-subscription-change", senderId: SERVER_PEER, targetId: msg.senderId, add: [SERVER_STORAGE] })
          break
        case "request":
        case "sync": {
          if (lax) {
            socket.send(cbor.encode({ type: "doc-unavailable", senderId: SERVER_PEER, targetId: msg.senderId, documentId: msg.documentId }))
            return
          }
          const e = entry(msg.documentId)
          const [doc, ss] = A.receiveSyncMessage(e.doc, e.ss, msg.data)
          e.doc = doc
          e.ss = ss
          if (msg.type === "request" && A.getHeads(e.doc).length === 0) {
            send(socket, { type: "doc-unavailable", senderId: SERVER_PEER, targetId: msg.senderId, documentId: msg.documentId })
          } else syncReply(socket, msg.documentId, msg.senderId)
          break
        }
        default:
          break
      }
    })
  })
  const ready = new Promise(r => wss.on("listening", r))
  return {
    wss, state, ready,
    url: () => `ws://127.0.0.1:${wss.address().port}`,
    /** server-initiated: give the server content for docId and push a sync message */
    push(docId, content) {
      const e = entry(docId)
      e.doc = A.merge(e.doc, A.from(content))
      syncReply(state.socket, docId, state.clientPeerId)
    },
    heads: docId => (state.docs.has(docId) ? A.getHeads(state.docs.get(docId).doc) : []),
    close: () => new Promise(r => { for (const s of state.sockets) s.terminate(); wss.close(() => r()) }),
  }
}

async function partRaw() {
  const srv = startRawServer()
  await srv.ready
  const repo = new Repo({
    network: [new WebSocketClientAdapter(srv.url())],
    storage: undefined,
    sharePolicy: async () => true,
    enableRemoteHeadsGossiping: true,
  })
  const tConnect = performance.now()
  await waitForPeer(repo)
  obs.joinToPeerMs = Math.round(performance.now() - tConnect)
  await sleep(300)

  // find of a random unknown doc -> request -> doc-unavailable
  const unknownUrl = generateAutomergeUrl()
  const unknownId = parseAutomergeUrl(unknownUrl).documentId
  let t = performance.now()
  let findErr = null
  try {
    await repo.find(unknownUrl)
  } catch (e) {
    findErr = e.message
  }
  obs.findUnknown = { rejected: !!findErr, error: findErr, ms: Math.round(performance.now() - t) }
  const before = frames.filter(f => f.dir === "c2s" && f.msg.documentId === unknownId).length
  await sleep(1500)
  const after = frames.filter(f => f.dir === "c2s" && f.msg.documentId === unknownId).length
  obs.framesForUnknownDocIn1500msAfterUnavailable = after - before
  obs.handleStateAfterUnavailable = repo.handles[unknownId]?.state

  // server later pushes a sync for that doc: does the client take it?
  srv.push(unknownId, { pushedLater: true })
  let accepted = false
  try {
    await waitFor(() => repo.handles[unknownId]?.state === "ready", 2000, "pushed doc")
    accepted = true
  } catch { /* not accepted */ }
  let refind = null
  try {
    const h = await repo.find(unknownUrl)
    refind = h.doc()
  } catch (e) {
    refind = { error: e.message }
  }
  obs.laterSyncAfterUnavailable = { handleBecameReady: accepted, findAfterwards: JSON.parse(JSON.stringify(refind)) }

  // create -> sync (not request)
  t = performance.now()
  const handle = repo.create({ items: ["from-js"], n: 1, f: 1.5, neg: -3, big: 2 ** 40, s: "text" })
  const heads = () => A.getHeads(handle.doc())
  await waitFor(() => srv.heads(handle.documentId).join() === heads().join(), 3000, "server to have created doc")
  obs.createUntilServerHasItMs = Math.round(performance.now() - t)
  await sleep(300)

  handle.change(d => { d.n = 2; d.items.push("js-edit") })
  await waitFor(() => srv.heads(handle.documentId).join() === heads().join(), 3000, "server to have edit")
  await sleep(300)

  handle.broadcast({ hello: "world", n: 1, f: 0.5 })
  await sleep(200)
  repo.subscribeToRemotes([OTHER_STORAGE])
  await sleep(300)

  // keepalive: the client sends nothing on its own while idle; it answers pings
  const idleFrom = frames.length
  srv.state.socket.ping()
  await sleep(6000)
  obs.idle6s = { framesSentByClient: frames.slice(idleFrom).filter(f => f.dir === "c2s").length, pongsForOneServerPing: srv.state.pongs }

  obs.clientPeerId = repo.peerId
  obs.createdDoc = { url: handle.url, heads: heads() }
  obs.unknownDoc = unknownUrl
  await repo.shutdown()
  await srv.close()

  // experiment: minimal `peer` reply (no targetId, no peerMetadata)
  const lax = startRawServer({ lax: true })
  await lax.ready
  const repo2 = new Repo({ network: [new WebSocketClientAdapter(lax.url())], storage: undefined, sharePolicy: async () => true })
  await Promise.race([waitForPeer(repo2), sleep(3000)])
  let laxFind
  try {
    await repo2.find(generateAutomergeUrl())
    laxFind = "resolved?!"
  } catch (e) {
    laxFind = e.message
  }
  obs.minimalPeerMessage = { peersSeen: repo2.peers, clientSentAfterJoin: lax.state.laxTypes, find: laxFind }
  await repo2.shutdown()
  await lax.close()

  // experiment: server accepts the socket but never answers `join`
  const silent = startRawServer({ silent: true })
  await silent.ready
  const repo3 = new Repo({ network: [new WebSocketClientAdapter(silent.url())], storage: undefined, sharePolicy: async () => true })
  const ts = performance.now()
  let silentFind
  try {
    await repo3.find(generateAutomergeUrl())
    silentFind = "resolved?!"
  } catch (e) {
    silentFind = e.message
  }
  obs.serverNeverAnswersJoin = { findRejectedAfterMs: Math.round(performance.now() - ts), find: silentFind, clientSent: silent.state.silentTypes }
  await repo3.shutdown()
  await silent.close()
}

// --------------------------------------------------- part 2: via ref-server
const refFrames = []

async function partRef() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ventas-ref-"))
  const child = spawn(process.execPath, [path.join(here, "ref-server.mjs"), "0", dataDir], { stdio: ["ignore", "pipe", "inherit"] })
  const readyLine = await new Promise((res, rej) => {
    let buf = ""
    child.stdout.on("data", d => {
      buf += d
      if (buf.includes("\n")) res(JSON.parse(buf.split("\n")[0]))
    })
    child.on("exit", c => rej(new Error(`ref-server exited ${c}`)))
  })
  const upstream = `ws://127.0.0.1:${readyLine.port}`
  const proxy = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  await new Promise(r => proxy.on("listening", r))
  let conn = 0
  proxy.on("connection", client => {
    const c = ++conn
    const up = new WebSocket(upstream)
    const pending = []
    const rec = (dir, data) => {
      const bytes = new Uint8Array(data)
      const msg = cbor.decode(bytes)
      refFrames.push({ seq: refFrames.length + 1, conn: c, dir, type: msg.type, bytes, msg, atMs: now() })
      log(`ref conn${c} ${dir} ${msg.type} (${bytes.length} B)`)
    }
    client.on("message", d => { rec("c2s", d); up.readyState === WebSocket.OPEN ? up.send(d) : pending.push(d) })
    up.on("open", () => { for (const d of pending.splice(0)) up.send(d) })
    up.on("message", d => { rec("s2c", d); if (client.readyState === WebSocket.OPEN) client.send(d) })
    client.on("close", () => up.close())
    up.on("close", () => client.close())
  })
  const purl = `ws://127.0.0.1:${proxy.address().port}`

  const mk = () => new Repo({ network: [new WebSocketClientAdapter(purl)], storage: undefined, sharePolicy: async () => true })
  const r1 = mk()
  await waitForPeer(r1)
  const unknownUrl = generateAutomergeUrl()
  let t = performance.now()
  try { await r1.find(unknownUrl) } catch { /* expected */ }
  obs.refFindUnknownMs = Math.round(performance.now() - t)
  await sleep(200)
  const h1 = r1.create({ items: ["from-js"], n: 1 })
  await sleep(500)
  const r2 = mk()
  await waitForPeer(r2)
  t = performance.now()
  const h2 = await r2.find(h1.url)
  obs.refFindExistingMs = Math.round(performance.now() - t)
  await sleep(300)
  t = performance.now()
  h1.change(d => { d.color = "red" })
  await waitFor(() => h2.doc().color === "red", 3000, "live change via ref server")
  obs.refLiveChangeMs = Math.round(performance.now() - t)
  await sleep(300)
  let gotEphemeral = false
  h2.on("ephemeral-message", () => { gotEphemeral = true })
  h1.broadcast({ cursor: 3 })
  await sleep(500)
  obs.refEphemeralForwarded = gotEphemeral
  await r1.shutdown()
  await r2.shutdown()
  await sleep(200)
  proxy.close()
  child.kill("SIGTERM")
  await new Promise(r => child.on("exit", r))
  fs.rmSync(dataDir, { recursive: true, force: true })
}

// --------------------------------------------------------------- write out
function writeOut() {
  fs.mkdirSync(REF_OUT, { recursive: true })
  for (const d of [OUT, REF_OUT])
    for (const f of fs.readdirSync(d)) if (f.endsWith(".cbor")) fs.rmSync(path.join(d, f))

  const rows = []
  let n = 0
  for (const f of frames.filter(f => f.dir === "c2s")) {
    const file = `${String(++n).padStart(2, "0")}-${f.type}.cbor`
    fs.writeFileSync(path.join(OUT, file), f.bytes)
    rows.push({ file, type: f.type, bytes: f.bytes.length, atMs: f.atMs, diag: cborDiag(f.bytes) })
  }
  const serverRows = frames.filter(f => f.dir === "s2c").map(f => ({ type: f.type, diag: cborDiag(f.bytes) }))
  const refRows = refFrames.map((f, i) => {
    const file = `${String(i + 1).padStart(2, "0")}-conn${f.conn}-${f.dir}-${f.type}.cbor`
    fs.writeFileSync(path.join(REF_OUT, file), f.bytes)
    return { file, conn: f.conn, dir: f.dir, type: f.type, bytes: f.bytes.length, diag: cborDiag(f.bytes) }
  })
  const versions = Object.fromEntries(
    ["@automerge/automerge-repo", "@automerge/automerge-repo-network-websocket", "@automerge/automerge", "cbor-x", "ws"].map(p => [p, pkgVersion(p)])
  )
  const manifest = { generatedBy: "tests/js/capture-frames.mjs", node: process.version, versions, observations: obs, clientFrames: rows, rawServerFramesSent: serverRows, refServerFrames: refRows }
  fs.writeFileSync(path.join(OUT, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n")
  fs.writeFileSync(path.join(OUT, "README.md"), readme(manifest))
  return manifest
}

function readme(m) {
  const v = m.versions
  const table = rows => rows.map(r => `| \`${r.file}\` | ${r.bytes} | \`${r.type}\` |`).join("\n")
  const diags = rows => rows.map(r => `${r.file}\n  ${r.diag}`).join("\n\n")
  return `# js-frames: wire fixtures from a real automerge-repo JS client

Generated by \`node tests/js/capture-frames.mjs\` (see that file); do not edit by
hand — re-run the script instead (peer ids, document ids, hashes and
timestamps change on every run; the *shapes* do not).

Versions: @automerge/automerge-repo ${v["@automerge/automerge-repo"]},
@automerge/automerge-repo-network-websocket ${v["@automerge/automerge-repo-network-websocket"]},
@automerge/automerge ${v["@automerge/automerge"]}, cbor-x ${v["cbor-x"]} (pure-JS
encoder; cbor-extract native addon not installed), ws ${v.ws}, node ${m.node}.

Each \`.cbor\` file is exactly one binary WebSocket message payload. Every
message is a single CBOR map with text keys (cbor-x \`useRecords:false\`,
\`tagUint8Array:false\`: no CBOR tags anywhere, \`data\` is a plain byte
string, major type 2).

## Diagnostic notation used below

- \`1\` integer (major 0 / major 1); \`/u8/\`, \`/u16/\`, \`/u32/\`, \`/u64/\` give the
  argument width when the value is > 23.
- \`1.5_f64\` float64 (major 7 ai 27). cbor-x encodes a JS number as a CBOR
  integer only when it fits in **u32 (0..2^32-1) or a negative 32-bit
  argument (-2^32..-1)**; every other number — non-integral OR an integer
  >= 2^32 such as a \`Date.now()\` timestamp — is a **float64**. So
  \`remote-heads-changed.newHeads[*].timestamp\` arrives as float64 while
  \`ephemeral.count\` is a small integer. A server must accept both.
- Every map header is \`0xb9\` + u16 length (non-minimal length encoding, even
  for a 4-entry map); arrays, text and byte strings use minimal headers.
- \`undefined\` is CBOR simple value 23 (byte \`0xf7\`): a JS \`undefined\`
  property is **encoded as a present key with value undefined**, not omitted
  (\`join.peerMetadata.storageId\` of a storage-less client,
  \`remote-subscription-change.remove\`). ciborium/serde maps it to \`None\`
  for \`Option<T>\` fields and to \`Value::Null\` for \`ciborium::Value\`.
- \`h'…' /N bytes/\` byte string, abbreviated.

## Behaviour facts (from the code of ${v["@automerge/automerge-repo"]} and the observations below)

- First frame on every (re)connection: \`join\` {type, senderId, peerMetadata:
  {storageId, isEphemeral}, supportedProtocolVersions: ["1"]}. A storage-less
  client sends storageId undefined and isEphemeral true. peerId is random
  \`peer-xxxxxxxxx\` per Repo; a reconnect re-sends join with the same senderId.
- The client accepts any map with type "peer": it uses only \`senderId\` (as
  the remote peer id; all later messages get \`targetId\` = that) and
  \`peerMetadata\` (optional). \`targetId\` and \`selectedProtocolVersion\` are
  not checked (see minimalPeerMessage). \`{type:"error", message}\` is only logged.
- Until \`peer\` arrives the client sends nothing else. If no \`peer\` arrives
  within 1 s the adapter is force-marked ready and a \`repo.find\` is declared
  unavailable without any network traffic (see serverNeverAnswersJoin).
- \`repo.find\` of a doc the client does not have: first frame \`request\`
  (automerge sync message for an empty doc). \`repo.create\`: first frame
  \`sync\` (never \`request\`), sent ~immediately, then the changes follow in
  the next \`sync\` after the server's reply. Later local changes: \`sync\`,
  throttled to one per 100 ms per doc and peer.
- \`doc-unavailable\` reply: the client rejects \`repo.find\` ("Document
  automerge:... is unavailable"), does NOT retry and sends nothing more for that
  doc; the handle stays cached in state "unavailable" (a new \`find\` in the
  same Repo rejects at once without network traffic). But a later
  server-initiated \`sync\` carrying the doc IS accepted: the handle becomes
  ready and a subsequent \`find\` resolves (see laterSyncAfterUnavailable).
  The reference JS server does push later: it keeps the requester as a peer of
  the doc. It answers a request for an unknown doc with a \`sync\` (its empty
  sync message) followed by \`doc-unavailable\`.
- If the server answers \`peer\` but never answers a \`request\`, the handle
  stays "requesting" for 60 s (DocHandle timeoutDelay) before becoming unavailable.
- Keepalive: the client never sends WebSocket pings nor application-level
  keepalive messages; \`ws\` answers server pings with pongs automatically. The
  reference server pings every 5 s and terminates a socket that did not pong
  since the previous ping. On close the client reconnects after 5 s
  (retryInterval) and re-sends join; sync restarts for all open docs.
- Ephemeral messages are gossiped: a client that receives an \`ephemeral\`
  from the server re-sends it to all its other peers of that doc — including
  back to the server — unchanged (original senderId/sessionId/count, new
  targetId). Servers must de-duplicate on (senderId, sessionId, count) like the
  JS NetworkSubsystem does, or loop.
- \`remote-heads-changed.newHeads[storageId].heads\` are bs58check-encoded
  change hashes (automerge-repo "UrlHeads"), not hex. The client only sends
  \`remote-subscription-change\` / \`remote-heads-changed\` when its Repo has
  \`enableRemoteHeadsGossiping: true\` (default false; the harness scripts do
  not enable it), and unknown types received are dropped silently.
- Map key order differs between message types (e.g. targetId before data);
  decode by key.

## Client -> server frames (raw capture against a hand-written server)

Scenario (part 1 of the script): Repo({network:[WebSocketClientAdapter], storage: undefined,
sharePolicy: async () => true, enableRemoteHeadsGossiping: true});
the server answers \`join\` with \`peer\` (peerMetadata {storageId: "${SERVER_STORAGE}", isEphemeral: false})
and a \`remote-subscription-change\` adding its own storage id; then
\`repo.find(<random url>)\` (server: \`doc-unavailable\`), server later pushes a
sync for that doc, \`repo.create({...})\`, one \`change\`, \`handle.broadcast(...)\`,
\`repo.subscribeToRemotes(["${OTHER_STORAGE}"])\`, 6 s idle with one server ping.

| file | bytes | type |
| --- | --- | --- |
${table(m.clientFrames)}

Decoded:

\`\`\`
${diags(m.clientFrames)}
\`\`\`

What the hand-written server sent (for reference; not saved as files):

\`\`\`
${m.rawServerFramesSent.map(r => r.diag).join("\n")}
\`\`\`

## Both directions through the reference JS server (\`ref-server/\`)

Scenario (part 2): client conn1 finds a random doc (unavailable) and creates a
doc; client conn2 finds it; conn1 changes it (pushed live to conn2); conn1
broadcasts an ephemeral message (forwarded to conn2). ref-server.mjs uses
sharePolicy false and a NodeFS storage (so its peerMetadata has a storageId).

| file | bytes | type |
| --- | --- | --- |
${table(m.refServerFrames)}

Decoded:

\`\`\`
${diags(m.refServerFrames)}
\`\`\`

## Observations from the run that produced these files

\`\`\`json
${JSON.stringify(m.observations, null, 2)}
\`\`\`
`
}

async function main() {
  const timer = setTimeout(() => { console.error("capture: overall timeout"); process.exit(124) }, 60000)
  await partRaw()
  await partRef()
  const m = writeOut()
  clearTimeout(timer)
  process.stdout.write(JSON.stringify({ ok: true, out: OUT, clientFrames: m.clientFrames.length, refServerFrames: m.refServerFrames.length, observations: m.observations }) + "\n")
  process.exit(0)
}
main().catch(e => {
  console.error(e)
  process.stdout.write(JSON.stringify({ error: String(e.message ?? e) }) + "\n")
  process.exit(1)
})
