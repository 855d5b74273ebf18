#!/usr/bin/env node
// server.mjs PORT DATA_DIR
//
// The reference server ventas is compared with: automerge-repo's own Node
// sync server, as `automerge-repo-sync-server` runs it (a Repo with a
// NodeWSServerAdapter on a `ws` server and NodeFSStorageAdapter, never
// announcing documents). PORT 0 picks a free port. Prints one line on
// stdout once it accepts connections: `listening on 127.0.0.1:<port>`.
// Logs go to stderr; SIGTERM/SIGINT flush storage and exit 0.
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

console.log = (...a) => console.error(...a)

const [portArg, dataDir] = process.argv.slice(2)
if (portArg === undefined || !dataDir) {
  console.error("usage: server.mjs PORT DATA_DIR")
  process.exit(2)
}

// The adapter listens for connections only once the Repo has connected it
// (after reading its storage id), so announce readiness after both.
let adapterConnected
const adapterReady = new Promise(resolve => (adapterConnected = resolve))
class ReadyAdapter extends NodeWSServerAdapter {
  connect(...args) {
    super.connect(...args)
    adapterConnected()
  }
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(portArg), maxPayload: 64 * 1024 * 1024 })
const listening = new Promise(resolve => wss.on("listening", resolve))
const repo = new Repo({
  network: [new ReadyAdapter(wss)],
  storage: new NodeFSStorageAdapter(dataDir),
  peerId: `peer-server-${process.pid}`,
  sharePolicy: async () => false,
})
wss.on("error", error => {
  console.error(`server error: ${error.message ?? error}`)
  process.exit(1)
})
Promise.all([listening, adapterReady]).then(() => {
  process.stdout.write(`listening on 127.0.0.1:${wss.address().port}\n`)
})

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  try {
    await repo.flush(Object.values(repo.handles).filter(h => h.isReady()).map(h => h.documentId))
  } catch (error) {
    console.error("flush failed", error)
  }
  wss.close()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
