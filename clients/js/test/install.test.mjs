// The package as a consumer gets it: `npm pack`, then `npm install` of the
// tarball in a scratch project (dependencies from the npm cache or
// registry), then the consumer imports it, connects to nothing and shuts
// down, and type-checks examples/seller.ts against the installed types.
import { test } from "node:test"
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { mkdtemp, rm, writeFile, copyFile, readdir } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const run = promisify(execFile)
const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..")
/** npm pack + install may fetch from the registry on a cold cache. */
const INSTALL_TIMEOUT_MS = 180_000

test("a consumer installs the packed package, imports it and type-checks against it", { timeout: INSTALL_TIMEOUT_MS }, async () => {
  const consumer = await mkdtemp(join(tmpdir(), "ventas-client-consumer-"))
  try {
    const { stdout } = await run("npm", ["pack", "--silent", "--pack-destination", consumer], { cwd: packageDir })
    const tarball = stdout.trim().split("\n").pop()
    assert.match(tarball, /^ventas-client-.*\.tgz$/)
    await writeFile(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
    await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", `./${tarball}`], {
      cwd: consumer,
      timeout: INSTALL_TIMEOUT_MS,
    })
    // Its dependencies came with it: no "cannot find @automerge/automerge".
    assert.deepEqual((await readdir(join(consumer, "node_modules", "@automerge"))).sort(), ["automerge", "automerge-repo"])
    const script = `
      import { connect, whenSaved, recordSale, voidSale } from "ventas-client"
      const repo = connect({ url: "ws://127.0.0.1:9/", token: "t", device: "tab-1" })
      const handle = repo.create({ a: 1 })
      const saved = await whenSaved(handle, { timeoutMs: 50 }).then(() => "saved", e => e.code)
      await repo.shutdown()
      console.log(JSON.stringify({ peer: repo.peerId.split("/")[0], saved, fns: [typeof recordSale, typeof voidSale] }))
    `
    await writeFile(join(consumer, "use.mjs"), script)
    const used = await run(process.execPath, ["use.mjs"], { cwd: consumer, timeout: 30_000 })
    assert.deepEqual(JSON.parse(used.stdout), { peer: "tab-1", saved: "timeout", fns: ["function", "function"] })

    await copyFile(join(packageDir, "examples", "seller.ts"), join(consumer, "seller.ts"))
    await writeFile(join(consumer, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", lib: ["ESNext", "DOM"],
        types: [], strict: true, noEmit: true, skipLibCheck: true,
      },
      include: ["seller.ts"],
    }))
    const tsc = join(packageDir, "node_modules", "typescript", "bin", "tsc")
    await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: consumer, timeout: 60_000 })
  } finally {
    await rm(consumer, { recursive: true, force: true })
  }
})
