#!/usr/bin/env node
// denied.mjs SERVER_URL PEER_ID READONLY_URL WRITABLE_URL WAIT_FOR_JSON [--watch-ms=N] [--timeout-ms=N]
//
// A JS device whose credential may only READ one document changes it
// anyway, and we watch what follows. SERVER_URL carries the credential
// (`ws://host/?token=...`); PEER_ID must be the credential's device id (or
// `<device>/<anything>`).
//
//   1. find READONLY_URL and WRITABLE_URL;
//   2. change READONLY (doc["js-forged"] = true), print line 1:
//      {"changed":true,"heads":[hex...],"elapsedMs":N}
//      (the parent now changes READONLY itself, from an allowed device);
//   3. wait until READONLY satisfies WAIT_FOR_JSON (other devices' updates
//      still arrive);
//   4. change WRITABLE (doc["js-wrote"] = true) and wait for the server's
//      ack of it;
//   5. keep watching until --watch-ms (default 3000) have passed since
//      step 2, then print line 2:
//      {"frames":{"out":{DOC:{TYPE:n}},"in":{DOC:{TYPE:n}}},"errors":[msg...],
//       "readonly":{"doc":{...},"heads":[...],"ready":bool},
//       "writable":{"doc":{...},"heads":[...],"acked":true},
//       "watchMs":N,"elapsedMs":N}
//
// Frames are counted on the WebSocket adapter, per document and message
// type, from step 2 on; `errors` are the server's `error` messages (the
// adapter only logs them with `debug`, nothing reaches the application).
import { decode } from "cbor-x"
import {
  parseArgs, installGuards, parseJsonArg, makeRepo, waitForPeer, waitForHandle,
  waitForServerAck, satisfies, docToJSON, hexHeads, emit, finish, fail, log, elapsedMs,
} from "./lib.mjs"

const { positional, timeoutMs } = parseArgs()
let watchMs = 3000
for (const a of process.argv.slice(2)) {
  const m = /^--watch-ms=(\d+)$/.exec(a)
  if (m) watchMs = Number(m[1])
}
let stage = "starting"
installGuards(timeoutMs, () => stage)
const sleep = ms => new Promise(r => setTimeout(r, ms))

try {
  const [serverUrl, peerId, readonlyUrl, writableUrl, waitJson] = positional.filter(
    a => !a.startsWith("--watch-ms=")
  )
  if (!serverUrl || !peerId || !readonlyUrl || !writableUrl || waitJson === undefined)
    throw new Error("usage: denied.mjs SERVER_URL PEER_ID READONLY_URL WRITABLE_URL WAIT_FOR_JSON [--watch-ms=N]")
  const want = parseJsonArg(waitJson, "WAIT_FOR_JSON")

  const { repo, adapter } = makeRepo(serverUrl, { peerId })
  const frames = { out: {}, in: {} }
  const errors = []
  let counting = false
  const count = (direction, message) => {
    if (!counting) return
    const doc = message.documentId ?? "-"
    const byType = (frames[direction][doc] ??= {})
    byType[message.type] = (byType[message.type] ?? 0) + 1
  }
  const send = adapter.send.bind(adapter)
  adapter.send = message => {
    count("out", message)
    return send(message)
  }
  const receive = adapter.receiveMessage.bind(adapter)
  adapter.receiveMessage = bytes => {
    try {
      const message = decode(new Uint8Array(bytes))
      count("in", message)
      if (message.type === "error") errors.push(message.message)
    } catch {
      /* the adapter reports undecodable frames itself */
    }
    return receive(bytes)
  }

  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)
  stage = "finding the documents"
  const readonly = await repo.find(readonlyUrl)
  const writable = await repo.find(writableUrl)

  counting = true
  const changedAt = performance.now()
  readonly.change(d => {
    d["js-forged"] = true
  })
  await emit({ changed: true, heads: hexHeads(readonly), elapsedMs: elapsedMs() })

  stage = () => `waiting for the read-only document to satisfy ${JSON.stringify(want)} (doc now: ${JSON.stringify(docToJSON(readonly.doc()))})`
  await waitForHandle(readonly, h => satisfies(docToJSON(h.doc()), want))
  log("read-only document updated by another device")

  stage = "waiting for the server to acknowledge the writable document"
  writable.change(d => {
    d["js-wrote"] = true
  })
  await waitForServerAck(repo, writable, serverPeerId)
  log("writable document acknowledged")

  stage = "watching the traffic"
  const left = watchMs - (performance.now() - changedAt)
  if (left > 0) await sleep(left)
  await finish({
    frames,
    errors,
    readonly: { doc: docToJSON(readonly.doc()), heads: hexHeads(readonly), ready: readonly.isReady() },
    writable: { doc: docToJSON(writable.doc()), heads: hexHeads(writable), acked: true },
    watchMs: Math.round(performance.now() - changedAt),
    elapsedMs: elapsedMs(),
  })
} catch (e) {
  await fail(e)
}
