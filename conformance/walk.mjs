// How the differential peer walks a tree on disk, like `ipfs add -r`: names sorted by
// bytes, names starting with `.` skipped unless `hidden`, symlinks stored (never
// followed), every directory given explicitly (so empty ones are kept). The root is
// imported under the path `root`.
import * as fs from 'node:fs'
import * as path from 'node:path'

export const ROOT = 'root'

// Opens the file only when the importer starts reading it (so a big folder does not
// open every file at once).
async function * lazyRead (file) {
  yield * fs.createReadStream(file)
}

function * candidates (dir, rel, hidden) {
  const names = fs.readdirSync(dir, { encoding: 'buffer' })
    .filter(n => hidden || n[0] !== 0x2e)
    .sort(Buffer.compare)
  for (const nb of names) {
    const name = nb.toString('utf8')
    const full = path.join(dir, name)
    const r = `${rel}/${name}`
    const st = fs.lstatSync(full)
    if (st.isSymbolicLink()) {
      yield { path: r, link: fs.readlinkSync(full) }
    } else if (st.isDirectory()) {
      yield { path: r }
      yield * candidates(full, r, hidden)
    } else if (st.isFile()) {
      yield { path: r, content: lazyRead(full) }
    } else {
      throw new Error(`unsupported file type: ${full}`)
    }
  }
}

export function rootCandidates (p, hidden) {
  const st = fs.lstatSync(p)
  if (st.isSymbolicLink()) return [{ path: ROOT, link: fs.readlinkSync(p) }]
  if (st.isFile()) return [{ path: ROOT, content: lazyRead(p) }]
  return [{ path: ROOT }, ...candidates(p, ROOT, hidden)]
}
