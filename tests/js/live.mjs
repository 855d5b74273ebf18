#!/usr/bin/env node
// live.mjs SERVER_URL AUTOMERGE_URL WAIT_FOR_JSON [--timeout-ms=N]
//
// TWO-LINE protocol on stdout:
//   line 1, as soon as repo.find resolved:  {"opened":true,"doc":{...},"elapsedMs":N}
//           (the parent can now make the edit it wants this client to see live)
//   line 2, once WAIT_FOR_JSON is satisfied (checked on every change event,
//           and immediately):               {"doc":{...},"heads":[hex...],"elapsedMs":N}
// Unavailable doc: line 1 is {"unavailable":true,...} and exit 0 (no line 2).
// On failure (after or instead of line 1): {"error":"..."}, exit 1 (124 on timeout).
import {
  parseArgs, installGuards, parseJsonArg, makeRepo, waitForPeer, waitForHandle,
  satisfies, docToJSON, hexHeads, emit, finish, fail, log, elapsedMs,
} from "./lib.mjs"

const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)

try {
  const [serverUrl, url, waitJson] = positional
  if (!serverUrl || !url || waitJson === undefined)
    throw new Error("usage: live.mjs SERVER_URL AUTOMERGE_URL WAIT_FOR_JSON [--timeout-ms=N]")
  const want = parseJsonArg(waitJson, "WAIT_FOR_JSON")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)

  stage = "finding the document"
  let handle
  try {
    handle = await repo.find(url)
  } catch (e) {
    if (/unavailable/i.test(e.message)) await finish({ unavailable: true, elapsedMs: elapsedMs() })
    throw e
  }
  await emit({ opened: true, doc: docToJSON(handle.doc()), elapsedMs: elapsedMs() })

  stage = () => `waiting for a live change satisfying ${JSON.stringify(want)} (doc now: ${JSON.stringify(docToJSON(handle.doc()))})`
  await waitForHandle(handle, h => satisfies(docToJSON(h.doc()), want))
  await finish({ doc: docToJSON(handle.doc()), heads: hexHeads(handle), elapsedMs: elapsedMs() })
} catch (e) {
  await fail(e)
}
