#!/usr/bin/env node
// find.mjs SERVER_URL AUTOMERGE_URL [WAIT_FOR_JSON] [--timeout-ms=N]
//
// Waits for the server's `peer` message, then repo.find(AUTOMERGE_URL).
// If WAIT_FOR_JSON is given, waits until the doc satisfies it (every top-level
// key present; arrays: contain all listed elements; else deep-equal).
// Prints ONE line:
//   found:        {"doc":{...},"heads":[hex...],"elapsedMs":N,"findMs":N}
//   unavailable:  {"unavailable":true,"elapsedMs":N,"findMs":N}   (exit 0 too)
// On failure: {"error":"..."} and exit 1 (124 on timeout).
import {
  parseArgs, installGuards, parseJsonArg, makeRepo, waitForPeer, waitForHandle,
  satisfies, docToJSON, hexHeads, finish, fail, log, elapsedMs,
} from "./lib.mjs"

const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)

try {
  const [serverUrl, url, waitJson] = positional
  if (!serverUrl || !url)
    throw new Error("usage: find.mjs SERVER_URL AUTOMERGE_URL [WAIT_FOR_JSON] [--timeout-ms=N]")
  const want = waitJson === undefined ? null : parseJsonArg(waitJson, "WAIT_FOR_JSON")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)

  stage = "finding the document"
  const t = performance.now()
  let handle
  try {
    handle = await repo.find(url)
  } catch (e) {
    if (/unavailable/i.test(e.message)) {
      const findMs = Math.round(performance.now() - t)
      log("unavailable:", e.message)
      await finish({ unavailable: true, elapsedMs: elapsedMs(), findMs })
    }
    throw e
  }
  const findMs = Math.round(performance.now() - t)

  if (want) {
    stage = () => `waiting for the document to satisfy ${JSON.stringify(want)} (doc now: ${JSON.stringify(docToJSON(handle.doc()))})`
    await waitForHandle(handle, h => satisfies(docToJSON(h.doc()), want))
  }
  await finish({ doc: docToJSON(handle.doc()), heads: hexHeads(handle), elapsedMs: elapsedMs(), findMs })
} catch (e) {
  await fail(e)
}
