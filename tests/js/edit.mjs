#!/usr/bin/env node
// edit.mjs SERVER_URL AUTOMERGE_URL KEY VALUE_JSON [WAIT_FOR_JSON] [--timeout-ms=N]
//
// Finds the doc, sets doc[KEY] = VALUE (and, if doc.items is a list, pushes
// the string "js-<KEY>" onto it) in ONE change, then waits until
//   1. WAIT_FOR_JSON (if given) is satisfied, and
//   2. the server's sync heads equal our heads (server has our change), and
//   3. a second, independent Repo can find the doc with those heads.
// Prints ONE line: {"doc":{...},"heads":[hex...],"elapsedMs":N,"verifyAttempts":N}
// Unavailable doc is an error here: {"error":"Document ... is unavailable"}, exit 1.
import {
  parseArgs, installGuards, parseJsonArg, makeRepo, waitForPeer, waitForHandle,
  waitForServerAck, verifyServerHas, satisfies, docToJSON, hexHeads, finish, fail, log, elapsedMs,
} from "./lib.mjs"

const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)
const deadline = performance.now() + timeoutMs

try {
  const [serverUrl, url, key, valueJson, waitJson] = positional
  if (!serverUrl || !url || !key || valueJson === undefined)
    throw new Error("usage: edit.mjs SERVER_URL AUTOMERGE_URL KEY VALUE_JSON [WAIT_FOR_JSON] [--timeout-ms=N]")
  const value = parseJsonArg(valueJson, "VALUE_JSON")
  const want = waitJson === undefined ? null : parseJsonArg(waitJson, "WAIT_FOR_JSON")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)

  stage = "finding the document"
  const handle = await repo.find(url)

  handle.change(d => {
    d[key] = value
    if (Array.isArray(d.items)) d.items.push(`js-${key}`)
  })
  log("changed; heads now", hexHeads(handle))

  if (want) {
    stage = () => `waiting for the document to satisfy ${JSON.stringify(want)} (doc now: ${JSON.stringify(docToJSON(handle.doc()))})`
    await waitForHandle(handle, h => satisfies(docToJSON(h.doc()), want))
  }
  stage = "waiting for the server to acknowledge our heads"
  await waitForServerAck(repo, handle, serverPeerId)
  const heads = hexHeads(handle)
  stage = "verifying with a second repo that the server serves our change"
  const verifyAttempts = await verifyServerHas(serverUrl, url, heads, deadline)

  await finish({ doc: docToJSON(handle.doc()), heads, elapsedMs: elapsedMs(), verifyAttempts })
} catch (e) {
  await fail(e)
}
