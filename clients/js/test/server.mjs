// A real ventas server for the SDK's tests: the debug binary cargo built
// (`VENTAS_BIN`, or target/debug/ventas of this repository), in a fresh
// temporary data directory, on 127.0.0.1 port 0 (the port is read back from
// its `listening on` line), with a cleared environment. Credentials are
// issued with `ventas token issue` before it starts.
import { spawn, execFile } from "node:child_process"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { createInterface } from "node:readline"

const run = promisify(execFile)
const here = dirname(fileURLToPath(import.meta.url))
/** How long the server may take to print its address, in ms. */
const SERVER_START_TIMEOUT_MS = 30_000

export const VENTAS_BIN = process.env.VENTAS_BIN ?? join(here, "..", "..", "..", "target", "debug", "ventas")

/**
 * Starts a server after issuing `credentials` ({name: {tenant, seller,
 * device, role, expires?}}). Returns {url, httpUrl, tokens, stop(), dataDir}.
 */
export async function startServer(credentials = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), "ventas-js-sdk-"))
  const tokens = {}
  for (const [name, c] of Object.entries(credentials)) {
    const args = ["token", "issue", "--data-dir", dataDir, "--tenant", c.tenant, "--seller", c.seller,
      "--device", c.device, "--role", c.role]
    if (c.expires) args.push("--expires", c.expires)
    const { stdout } = await run(VENTAS_BIN, args, { env: {} })
    tokens[name] = stdout.trim()
  }
  let server = await serve(dataDir, "127.0.0.1:0")
  return {
    url: `ws://${server.address}/`,
    httpUrl: `http://${server.address}`,
    tokens,
    dataDir,
    log: () => server.log(),
    /** Stops the server and starts it again on the same address and data. */
    async restart() {
      await server.stop()
      server = await serve(dataDir, server.address)
    },
    async stop() {
      await server.stop()
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}

/** `ventas serve` on `listen` until it prints its address. */
async function serve(dataDir, listen) {
  const child = spawn(VENTAS_BIN, ["serve", "--listen", listen, "--data-dir", dataDir], {
    env: {},
    stdio: ["ignore", "pipe", "pipe"],
  })
  const stderr = []
  child.stderr.on("data", chunk => {
    stderr.push(chunk)
    if (stderr.length > 200) stderr.shift()
  })
  const exited = new Promise(resolve => child.once("exit", resolve))
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("ventas did not print its address in time")), SERVER_START_TIMEOUT_MS)
    const lines = createInterface({ input: child.stdout })
    lines.on("line", line => {
      const match = /^listening on (\S+)$/.exec(line)
      if (match) {
        clearTimeout(timer)
        resolve(match[1])
      }
    })
    child.once("exit", code => {
      clearTimeout(timer)
      reject(new Error(`ventas exited (${code}) before listening: ${Buffer.concat(stderr).toString()}`))
    })
    child.once("error", reject)
  })
  return {
    address,
    log: () => Buffer.concat(stderr).toString(),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      await exited
    },
  }
}

/** Resolves when `predicate()` holds, polling, or rejects after `timeoutMs`. */
export async function until(what, predicate, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 10))
  }
}

/** The next `event` of a VentasConnection, or a rejection after `timeoutMs`. */
export function nextEvent(connection, event, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`no ${event} event within ${timeoutMs} ms`))
    }, timeoutMs)
    const off = connection.onEvent(event, payload => {
      clearTimeout(timer)
      off()
      resolve(payload)
    })
  })
}
