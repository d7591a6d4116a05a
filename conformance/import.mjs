// Differential peer for detwasm-hasher: imports trees from disk with
// ipfs-unixfs-importer 17 (the IPIP-499 `profile` option) and prints their CIDs.
//
// Usage: node import.mjs JOB.json
//   JOB = { "cases": [ { "id": str, "path": str, "profile": "unixfs-v0-2015"|"unixfs-v1-2025",
//           "hidden": bool, "cidVersion"?: 0|1, "rawLeaves"?: bool, "chunkSize"?: int,
//           "maxLinks"?: int, "shardSplitThresholdBytes"?: int } ] }
// Prints one JSON array: [ { "id", "root", "entries": { relPath: cid } } ].
//
// The tree is walked like `ipfs add -r` (see walk.mjs).
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import * as fs from 'node:fs'
import { ROOT, rootCandidates } from './walk.mjs'

async function runCase (c) {
  const options = { profile: c.profile }
  if (c.cidVersion != null) options.cidVersion = c.cidVersion
  if (c.rawLeaves != null) options.rawLeaves = c.rawLeaves
  if (c.chunkSize != null) options.chunker = fixedSize({ chunkSize: c.chunkSize })
  if (c.maxLinks != null) options.layout = balanced({ maxChildrenPerNode: c.maxLinks })
  if (c.shardSplitThresholdBytes != null) options.shardSplitThresholdBytes = c.shardSplitThresholdBytes
  const entries = {}
  for await (const e of importer(rootCandidates(c.path, c.hidden), new BlackHoleBlockstore(), options)) {
    const rel = e.path === ROOT ? '' : e.path.slice(ROOT.length + 1)
    entries[rel] = e.cid.toString()
  }
  if (entries[''] == null) throw new Error(`case ${c.id}: the importer yielded no root`)
  return { id: c.id, root: entries[''], entries }
}

const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const out = []
for (const c of job.cases) out.push(await runCase(c))
process.stdout.write(JSON.stringify(out))
