#!/usr/bin/env node
// create.mjs SERVER_URL JSON_CONTENT [--timeout-ms=N]
//
// Creates a new document initialised with JSON_CONTENT (a JSON object), waits
// until the server has it (server's sync heads == our heads, then an
// independent second Repo finds it), prints ONE line:
//   {"url":"automerge:...","documentId":"...","heads":[hex...],"doc":{...},
//    "elapsedMs":N,"ackMs":N,"verifyAttempts":N}
// On failure: {"error":"..."} and exit 1 (124 on timeout).
import {
  parseArgs, installGuards, parseJsonArg, makeRepo, waitForPeer, waitForServerAck,
  verifyServerHas, docToJSON, hexHeads, finish, fail, log, elapsedMs,
} from "./lib.mjs"

const { positional, timeoutMs } = parseArgs()
let stage = "starting"
installGuards(timeoutMs, () => stage)
const deadline = performance.now() + timeoutMs

try {
  const [serverUrl, contentJson] = positional
  if (!serverUrl || contentJson === undefined)
    throw new Error("usage: create.mjs SERVER_URL JSON_CONTENT [--timeout-ms=N]")
  const content = parseJsonArg(contentJson, "JSON_CONTENT")
  if (!content || typeof content !== "object" || Array.isArray(content))
    throw new Error("JSON_CONTENT must be a JSON object")

  const { repo } = makeRepo(serverUrl)
  stage = "waiting for the server's peer message"
  const serverPeerId = await waitForPeer(repo)
  log("connected to server peer", serverPeerId)

  stage = "creating"
  const handle = repo.create(content)
  const ack = waitForServerAck(repo, handle, serverPeerId)
  stage = "waiting for the server to acknowledge our heads"
  await ack
  const ackMs = elapsedMs()
  const heads = hexHeads(handle)
  log("server acked heads", heads)

  stage = "verifying with a second repo that the server serves the document"
  const verifyAttempts = await verifyServerHas(serverUrl, handle.url, heads, deadline)

  await finish({
    url: handle.url,
    documentId: handle.documentId,
    heads,
    doc: docToJSON(handle.doc()),
    elapsedMs: elapsedMs(),
    ackMs,
    verifyAttempts,
  })
} catch (e) {
  await fail(e)
}
