#!/usr/bin/env node
// ref-server.mjs PORT DATA_DIR
//
// The reference automerge-repo sync server (what the official
// automerge-repo-sync-server does): Repo + NodeWSServerAdapter on a `ws`
// WebSocketServer bound to 127.0.0.1:PORT (PORT 0 = pick a free port),
// NodeFSStorageAdapter(DATA_DIR).
//
// sharePolicy: async () => false  (like the official sync server): the
// server never *announces* documents to clients; it answers `request`/`sync`
// for any document (shareConfig.access defaults to true) and forwards changes
// to every peer that has requested/synced that document.
//
// Prints ONE line on stdout once listening: {"ready":true,"port":N,"peerId":"..."}
// Logs go to stderr. Exits 0 on SIGTERM/SIGINT (after flushing storage).
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

console.log = (...a) => console.error(...a)

const [portArg, dataDir] = process.argv.slice(2)
if (portArg === undefined || !dataDir) {
  process.stdout.write(JSON.stringify({ error: "usage: ref-server.mjs PORT DATA_DIR" }) + "\n")
  process.exit(1)
}

// NodeWSServerAdapter only starts listening for "connection" events when the
// Repo calls adapter.connect(), which happens asynchronously (after the storage
// id has been read from DATA_DIR). A client that connects before that is never
// answered (and is terminated by the keepalive ~5 s later), so only announce
// readiness once BOTH the socket is listening AND the adapter is connected.
let adapterConnected
const adapterReady = new Promise(r => (adapterConnected = r))
class ReadyNotifyingAdapter extends NodeWSServerAdapter {
  connect(...args) {
    super.connect(...args)
    adapterConnected()
  }
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(portArg) })
const listening = new Promise(r => wss.on("listening", r))
const peerId = process.env.REF_SERVER_PEER_ID ?? `ref-server-${process.pid}`
const repo = new Repo({
  network: [new ReadyNotifyingAdapter(wss)],
  storage: new NodeFSStorageAdapter(dataDir),
  peerId,
  sharePolicy: async () => false,
})

wss.on("connection", (_socket, req) => console.error(`[ref-server] connection from ${req.socket.remotePort}`))
wss.on("error", e => {
  process.stdout.write(JSON.stringify({ error: String(e.message ?? e) }) + "\n")
  process.exit(1)
})
Promise.all([listening, adapterReady]).then(() => {
  const { port } = wss.address()
  process.stdout.write(JSON.stringify({ ready: true, port, peerId }) + "\n")
  console.error(`[ref-server] listening on ws://127.0.0.1:${port}, data in ${dataDir}`)
})

let stopping = false
async function stop(sig) {
  if (stopping) return
  stopping = true
  console.error(`[ref-server] ${sig}, shutting down`)
  try {
    // flush() throws on handles that never became ready (e.g. unavailable docs)
    await repo.flush(Object.values(repo.handles).filter(h => h.isReady()).map(h => h.documentId))
  } catch (e) {
    console.error("[ref-server] flush failed", e)
  }
  wss.close()
  process.exit(0)
}
process.on("SIGTERM", () => void stop("SIGTERM"))
process.on("SIGINT", () => void stop("SIGINT"))
