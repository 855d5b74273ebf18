// Minimal CBOR -> diagnostic-notation printer (RFC 8949 §8 style), written so
// fixture docs show the exact CBOR types the JS client puts on the wire:
//   1          unsigned/negative integer (major 0/1), with /u8|u16|u32|u64/ width when > 23
//   1.5_f64    float (major 7, ai 25/26/27 -> _f16/_f32/_f64)
//   "text"     text string (major 3)
//   h'0a0b'    byte string (major 2), long ones abbreviated with their length
//   undefined  simple value 23 (0xf7), null = 22, true/false
//   tag(N, x)  tagged item

const WIDTH = { 24: "u8", 25: "u16", 26: "u32", 27: "u64" }

export function cborDiag(bytes, { maxBytes = 24 } = {}) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  let pos = 0

  function readArg(ai) {
    if (ai < 24) return { n: ai, w: null }
    if (ai === 24) return { n: dv.getUint8(pos++), w: WIDTH[24] }
    if (ai === 25) { const n = dv.getUint16(pos); pos += 2; return { n, w: WIDTH[25] } }
    if (ai === 26) { const n = dv.getUint32(pos); pos += 4; return { n, w: WIDTH[26] } }
    if (ai === 27) { const n = dv.getBigUint64(pos); pos += 8; return { n, w: WIDTH[27] } }
    if (ai === 31) return { n: null, w: "indef" }
    throw new Error(`bad additional info ${ai} at ${pos - 1}`)
  }

  function item() {
    const ib = dv.getUint8(pos++)
    const major = ib >> 5
    const ai = ib & 0x1f
    if (major === 7) {
      if (ai === 20) return "false"
      if (ai === 21) return "true"
      if (ai === 22) return "null"
      if (ai === 23) return "undefined"
      if (ai === 25) { const v = half(dv.getUint16(pos)); pos += 2; return `${fmtF(v)}_f16` }
      if (ai === 26) { const v = dv.getFloat32(pos); pos += 4; return `${fmtF(v)}_f32` }
      if (ai === 27) { const v = dv.getFloat64(pos); pos += 8; return `${fmtF(v)}_f64` }
      if (ai < 24) return `simple(${ai})`
      if (ai === 24) return `simple(${dv.getUint8(pos++)})`
      throw new Error(`unsupported major 7 ai ${ai}`)
    }
    const { n, w } = readArg(ai)
    const wtag = w && w !== "indef" ? ` /${w}/` : ""
    switch (major) {
      case 0: return `${n}${wtag}`
      case 1: return `${-1n - BigInt(n)}${wtag}`
      case 2: {
        if (n === null) throw new Error("indefinite bytes unsupported")
        const len = Number(n)
        const b = buf.subarray(pos, pos + len); pos += len
        const hex = Buffer.from(b.subarray(0, maxBytes)).toString("hex")
        return len > maxBytes ? `h'${hex}…' /${len} bytes/` : `h'${hex}'`
      }
      case 3: {
        const len = Number(n)
        const s = Buffer.from(buf.subarray(pos, pos + len)).toString("utf8"); pos += len
        return JSON.stringify(s)
      }
      case 4: {
        const out = []
        if (n === null) { while (dv.getUint8(pos) !== 0xff) out.push(item()); pos++ }
        else for (let i = 0; i < Number(n); i++) out.push(item())
        return `[${out.join(", ")}]`
      }
      case 5: {
        const out = []
        const pair = () => { const k = item(); const v = item(); out.push(`${k}: ${v}`) }
        if (n === null) { while (dv.getUint8(pos) !== 0xff) pair(); pos++ }
        else for (let i = 0; i < Number(n); i++) pair()
        return `{${out.join(", ")}}`
      }
      case 6: return `tag(${n}, ${item()})`
    }
    throw new Error("unreachable")
  }

  const out = item()
  if (pos !== buf.length) return `${out} /+${buf.length - pos} trailing bytes/`
  return out
}

function fmtF(v) {
  return Number.isInteger(v) ? v.toFixed(1) : String(v)
}

function half(h) {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >> 10) & 0x1f
  const f = h & 0x3ff
  if (e === 0) return s * 2 ** -14 * (f / 1024)
  if (e === 31) return f ? NaN : s * Infinity
  return s * 2 ** (e - 15) * (1 + f / 1024)
}
