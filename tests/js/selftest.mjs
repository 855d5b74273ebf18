#!/usr/bin/env node
// selftest.mjs — validates the client scripts against ref-server.mjs.
//
//   node tests/js/selftest.mjs
//
// Starts ref-server.mjs on a free port with a temporary DATA_DIR, runs the
// scenarios below as child processes exactly like the Rust tests will, prints
// one line per check plus timings on stdout and ends with "N passed, N failed".
// Exit 0 iff everything passed.

import { spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { generateAutomergeUrl } from "@automerge/automerge-repo"

const here = path.dirname(fileURLToPath(import.meta.url))
let passed = 0
let failed = 0
const timings = {}

function check(name, cond, detail = "") {
  if (cond) passed++
  else failed++
  process.stdout.write(`${cond ? "ok  " : "FAIL"} ${name}${!cond && detail ? ` — ${detail}` : ""}\n`)
  return cond
}

/** Run `node tests/js/<script> ...args`; resolves {code, lines, stderr, ms}. */
function run(script, args, { onLine } = {}) {
  return new Promise(resolve => {
    const t = performance.now()
    const child = spawn(process.execPath, [path.join(here, script), ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const lines = []
    child.stdout.on("data", d => {
      out += d
      let i
      while ((i = out.indexOf("\n")) >= 0) {
        const line = out.slice(0, i)
        out = out.slice(i + 1)
        let parsed
        try {
          parsed = JSON.parse(line)
        } catch {
          parsed = { unparseable: line }
        }
        lines.push(parsed)
        onLine?.(parsed)
      }
    })
    child.stderr.on("data", d => (err += d))
    child.on("close", code => {
      if (out.trim()) lines.push({ unterminated: out })
      resolve({ code, lines, stderr: err, ms: Math.round(performance.now() - t) })
    })
  })
}

function startRef(port, dataDir) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, "ref-server.mjs"), String(port), dataDir], { stdio: ["ignore", "pipe", "pipe"] })
    let buf = ""
    child.stderr.on("data", () => {})
    child.stdout.on("data", d => {
      buf += d
      const i = buf.indexOf("\n")
      if (i >= 0) {
        const ready = JSON.parse(buf.slice(0, i))
        if (ready.ready) resolve({ child, port: ready.port })
        else reject(new Error(buf))
      }
    })
    child.on("exit", c => reject(new Error(`ref-server exited ${c}`)))
  })
}
const stopRef = ref => new Promise(r => { ref.child.once("exit", c => r(c)); ref.child.kill("SIGTERM") })

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)
const one = (r, name) => check(`${name}: exactly one stdout line`, r.lines.length === 1, JSON.stringify(r.lines))

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ventas-selftest-"))
  let ref = await startRef(0, dataDir)
  const S = `ws://127.0.0.1:${ref.port}`
  process.stdout.write(`ref-server on ${S}, data ${dataDir}\n`)

  // 1. create
  const content = { items: ["from-js"], n: 1 }
  const c = await run("create.mjs", [S, JSON.stringify(content)])
  timings.create = c.ms
  check("create exits 0", c.code === 0, c.stderr.slice(-300))
  one(c, "create")
  const created = c.lines[0] ?? {}
  check("create returns url/heads/doc", /^automerge:/.test(created.url) && Array.isArray(created.heads) && same(created.doc, content), JSON.stringify(created))
  const url = created.url

  // 2. find
  const f = await run("find.mjs", [S, url])
  timings.findExisting = f.ms
  check("find exits 0", f.code === 0)
  one(f, "find")
  check("find sees created content", same(f.lines[0]?.doc, content) && same(f.lines[0]?.heads, created.heads), JSON.stringify(f.lines[0]))

  const fw = await run("find.mjs", [S, url, JSON.stringify({ items: ["from-js"] })])
  check("find with satisfied WAIT_FOR", fw.code === 0 && same(fw.lines[0]?.doc, content))

  // 3. live + edit concurrently
  let opened
  const openedP = new Promise(r => (opened = r))
  const liveP = run("live.mjs", [S, url, JSON.stringify({ color: "red", items: ["js-color"] })], {
    onLine: l => l.opened && opened(performance.now()),
  })
  const openedAt = await Promise.race([openedP, new Promise(r => setTimeout(() => r(null), 10000))])
  check("live prints opened", openedAt !== null)
  const tEdit = performance.now()
  const e = await run("edit.mjs", [S, url, "color", '"red"'])
  const l = await liveP
  timings.edit = e.ms
  timings.liveSawEditAfterEditStartMs = Math.round(performance.now() - tEdit)
  check("edit exits 0", e.code === 0, e.stderr.slice(-300))
  one(e, "edit")
  const expected = { items: ["from-js", "js-color"], n: 1, color: "red" }
  const canon = o => JSON.stringify(Object.fromEntries(Object.entries(o ?? {}).sort()))
  check("edit result", canon(e.lines[0]?.doc) === canon(expected), JSON.stringify(e.lines[0]))
  check("live exits 0 with two lines", l.code === 0 && l.lines.length === 2 && l.lines[0].opened === true, JSON.stringify(l.lines))
  check("live saw the edit", canon(l.lines[1]?.doc) === canon(expected))

  // 4. two concurrent editors, each waiting for the other's change
  const [e1, e2] = await Promise.all([
    run("edit.mjs", [S, url, "a", "1", JSON.stringify({ b: 2 })]),
    run("edit.mjs", [S, url, "b", "2", JSON.stringify({ a: 1 })]),
  ])
  timings.concurrentEdits = Math.max(e1.ms, e2.ms)
  check("concurrent edits both exit 0", e1.code === 0 && e2.code === 0, e1.stderr.slice(-200) + e2.stderr.slice(-200))
  check("concurrent edits converge", canon(e1.lines[0]?.doc) === canon(e2.lines[0]?.doc) && same([...e1.lines[0].heads].sort(), [...e2.lines[0].heads].sort()), JSON.stringify([e1.lines[0], e2.lines[0]]))
  check("concurrent edits: items has both", ["js-a", "js-b"].every(x => e1.lines[0]?.doc?.items?.includes(x)))

  // 5. unknown doc -> unavailable
  const u = await run("find.mjs", [S, generateAutomergeUrl()])
  timings.findUnknownProcess = u.ms
  timings.findUnknownFindCall = u.lines[0]?.findMs
  check("find unknown: unavailable, exit 0", u.code === 0 && u.lines[0]?.unavailable === true, JSON.stringify(u.lines))
  one(u, "find unknown")
  const lu = await run("live.mjs", [S, generateAutomergeUrl(), "{}"])
  check("live unknown: unavailable, exit 0", lu.code === 0 && lu.lines[0]?.unavailable === true, JSON.stringify(lu.lines))
  const eu = await run("edit.mjs", [S, generateAutomergeUrl(), "k", "1"])
  check("edit unknown: error, exit 1", eu.code === 1 && /unavailable/.test(eu.lines[0]?.error ?? ""), JSON.stringify(eu.lines))

  // 6. failures are bounded and reported as JSON
  const nt = await run("find.mjs", ["ws://127.0.0.1:1", url, "--timeout-ms=1500"])
  check("no server: timeout exit 124 with error JSON", nt.code === 124 && /timeout/.test(nt.lines[0]?.error ?? "") && nt.ms < 5000, `${nt.ms}ms ${JSON.stringify(nt.lines)}`)
  const wt = await run("find.mjs", [S, url, JSON.stringify({ never: true }), "--timeout-ms=1500"])
  check("unsatisfiable WAIT_FOR: timeout exit 124", wt.code === 124 && wt.lines.length === 1 && /timeout/.test(wt.lines[0]?.error ?? ""), JSON.stringify(wt.lines))
  const bj = await run("create.mjs", [S, "{not json"])
  check("bad JSON: exit 1 with error JSON", bj.code === 1 && /JSON_CONTENT/.test(bj.lines[0]?.error ?? ""), JSON.stringify(bj.lines))
  const envT = await new Promise(resolve => {
    const t = performance.now()
    const child = spawn(process.execPath, [path.join(here, "find.mjs"), "ws://127.0.0.1:1", url], { stdio: ["ignore", "pipe", "ignore"], env: { ...process.env, VENTAS_JS_TIMEOUT_MS: "700" } })
    child.on("close", code => resolve({ code, ms: Math.round(performance.now() - t) }))
  })
  check("VENTAS_JS_TIMEOUT_MS honoured", envT.code === 124 && envT.ms < 3000, JSON.stringify(envT))

  // 7. ref-server persistence across restart (same port, same DATA_DIR)
  const rc = await stopRef(ref)
  check("ref-server exits 0 on SIGTERM", rc === 0, String(rc))
  ref = await startRef(ref.port, dataDir)
  const p = await run("find.mjs", [S, url])
  check("ref-server persisted doc across restart", p.code === 0 && canon(p.lines[0]?.doc) === canon(e1.lines[0]?.doc), JSON.stringify(p.lines))
  await stopRef(ref)
  fs.rmSync(dataDir, { recursive: true, force: true })

  process.stdout.write(`timings(ms): ${JSON.stringify(timings)}\n`)
  process.stdout.write(`${passed} passed, ${failed} failed\n`)
  process.exit(failed === 0 ? 0 : 1)
}

main().catch(e => {
  process.stdout.write(`FAIL selftest crashed: ${e.stack}\n${passed} passed, ${failed + 1} failed\n`)
  process.exit(1)
})
