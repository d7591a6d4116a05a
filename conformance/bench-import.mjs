// The JS side of benches/hash-vs-peers.py: import PATH with ipfs-unixfs-importer 17 and
// print the root CID only (blocks are discarded, as `detwasm hash` without --car).
// Usage: node bench-import.mjs PATH [unixfs-v0-2015|unixfs-v1-2025]
import { importer } from 'ipfs-unixfs-importer'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import { ROOT, rootCandidates } from './walk.mjs'

const [p, profile = 'unixfs-v0-2015'] = process.argv.slice(2)
let root
for await (const e of importer(rootCandidates(p, false), new BlackHoleBlockstore(), { profile })) {
  if (e.path === ROOT) root = e.cid.toString()
}
process.stdout.write(`${root}\n`)
