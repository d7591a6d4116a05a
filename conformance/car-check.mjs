// Reads a CAR written by `detwasm hash --car` back with @ipld/car and
// ipfs-unixfs-exporter and checks it against the source tree.
//
// Usage: node car-check.mjs FILE.car SOURCE_PATH [--hidden]
// Checks: CARv1 header with exactly one root; every block's sha2-256 matches its CID;
// no block twice; blocks in `ipfs dag export` order (root first, depth-first in link
// order, each block once); then exports the DAG and compares every file's bytes, every
// directory's names and every symlink's target with SOURCE_PATH (names starting with
// `.` skipped unless --hidden). Prints {"root", "blocks", "files", "bytes"} or exits 1.
import { CarReader } from '@ipld/car'
import * as dagPb from '@ipld/dag-pb'
import { exporter } from 'ipfs-unixfs-exporter'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'uint8arrays/equals'
import * as fs from 'node:fs'
import * as path from 'node:path'

const [carPath, srcPath, ...flags] = process.argv.slice(2)
const hidden = flags.includes('--hidden')

function fail (msg) {
  process.stderr.write(`car-check: ${msg}\n`)
  process.exit(1)
}

const reader = await CarReader.fromBytes(fs.readFileSync(carPath))
if (reader.version !== 1) fail(`CAR version ${reader.version}, want 1`)
const roots = await reader.getRoots()
if (roots.length !== 1) fail(`${roots.length} roots, want 1`)
const root = roots[0]

const order = []
const blocks = new Map()
for await (const { cid, bytes } of reader.blocks()) {
  const key = cid.toString()
  if (blocks.has(key)) fail(`block ${key} appears twice`)
  const digest = await sha256.digest(bytes)
  if (!equals(digest.bytes, cid.multihash.bytes)) fail(`block ${key} does not hash to its CID`)
  blocks.set(key, { cid, bytes })
  order.push(key)
}

// Expected order: pre-order depth-first from the root, links in order, skipping seen.
const want = []
const seen = new Set()
const stack = [root]
while (stack.length > 0) {
  const cid = stack.pop()
  const key = cid.toString()
  if (seen.has(key)) continue
  seen.add(key)
  want.push(key)
  const b = blocks.get(key)
  if (b == null) fail(`block ${key} is linked but missing`)
  if (cid.code === dagPb.code) {
    const links = dagPb.decode(b.bytes).Links
    for (let i = links.length - 1; i >= 0; i--) stack.push(links[i].Hash)
  }
}
if (want.length !== order.length) fail(`${order.length} blocks, ${want.length} reachable from the root`)
for (let i = 0; i < want.length; i++) {
  if (want[i] !== order[i]) fail(`block ${i} is ${order[i]}, want ${want[i]} (dag export order)`)
}

const store = new MemoryBlockstore()
for (const { cid, bytes } of blocks.values()) await store.put(cid, bytes)

let files = 0
let total = 0
async function compare (entry, src) {
  const st = fs.lstatSync(src)
  if (st.isSymbolicLink()) {
    if (entry.type !== 'file' || entry.unixfs?.type !== 'symlink') fail(`${src}: want a symlink, got ${entry.type}/${entry.unixfs?.type}`)
    const target = Buffer.from(entry.unixfs.data ?? new Uint8Array()).toString('utf8')
    if (target !== fs.readlinkSync(src)) fail(`${src}: symlink target ${target}`)
  } else if (st.isDirectory()) {
    if (entry.type !== 'directory') fail(`${src}: want a directory, got ${entry.type}`)
    const names = fs.readdirSync(src).filter(n => hidden || !n.startsWith('.')).sort()
    const got = []
    for await (const child of entry.entries()) got.push(child)
    const gotNames = got.map(c => c.name).sort()
    if (JSON.stringify(gotNames) !== JSON.stringify(names)) fail(`${src}: entries ${JSON.stringify(gotNames)}, want ${JSON.stringify(names)}`)
    for (const child of got) await compare(await exporter(child.cid, store), path.join(src, child.name))
  } else {
    if (entry.type !== 'file' && entry.type !== 'raw') fail(`${src}: want a file, got ${entry.type}`)
    const chunks = []
    for await (const c of entry.content()) chunks.push(c)
    const bytes = Buffer.concat(chunks)
    if (!bytes.equals(fs.readFileSync(src))) fail(`${src}: exported bytes differ from the source`)
    files++
    total += bytes.length
  }
}
await compare(await exporter(root, store), srcPath)
process.stdout.write(JSON.stringify({ root: root.toString(), blocks: order.length, files, bytes: total }))
