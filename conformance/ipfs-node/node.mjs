// An IPFS node for detwasm's tests: Helia (a real IPFS implementation in JavaScript: its
// file blockstore, UnixFS importer and exporter, CAR import and export) behind the two
// HTTP interfaces detwasm talks to:
//
// - a trustless gateway: GET /ipfs/CID?format=car (or Accept: application/vnd.ipld.car)
//   answers the CID's whole DAG as a CARv1;
// - Kubo's RPC: POST /api/v0/dag/export?arg=CID (the same CAR) and POST
//   /api/v0/dag/import (a multipart CAR upload; every block is checked against its CID
//   by Helia before it is stored), answered as Kubo answers.
//
// Usage (REPO is a folder holding the node's blocks):
//   node node.mjs serve REPO [PORT] prints "listening PORT" once it listens on 127.0.0.1
//                                   (PORT: any free port when not given)
//   node node.mjs add REPO PATH     adds a file or folder (hidden files included) with
//                                   Helia's importer and prints its CID
//   node node.mjs cat REPO CID      prints the bytes of a file (CID or CID/path)
//   node node.mjs has REPO CID      exits 0 when the node holds the CID's whole DAG
//
// Node 20 lacks Promise.withResolvers, which Helia's dependencies use: it is added
// before they are loaded.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((a, b) => { resolve = a; reject = b })
    return { promise, resolve, reject }
  }
}
const http = await import('node:http')
const fs = await import('node:fs')
const path = await import('node:path')
const { createHeliaHTTP } = await import('@helia/http')
const { unixfs, globSource } = await import('@helia/unixfs')
const { car } = await import('@helia/car')
const { CarReader } = await import('@ipld/car')
const { FsBlockstore } = await import('blockstore-fs')
const { CID } = await import('multiformats/cid')

const [command, repo, arg] = process.argv.slice(2)
if (!command || !repo) {
  console.error('usage: node node.mjs serve|add|cat|has REPO [PATH|CID]')
  process.exit(2)
}
fs.mkdirSync(repo, { recursive: true })
const blockstore = new FsBlockstore(path.join(repo, 'blocks'))
// No block brokers and no routers: the node answers from its own blocks only.
const helia = await createHeliaHTTP({ blockstore, blockBrokers: [], routers: [] })
const files = unixfs(helia)

if (command === 'add') {
  const stat = fs.statSync(arg)
  let root
  if (stat.isDirectory()) {
    for await (const entry of files.addAll(globSource(arg, '**/*', { hidden: true }), { wrapWithDirectory: true })) {
      root = entry.cid
    }
  } else {
    root = await files.addBytes(fs.readFileSync(arg))
  }
  console.log(root.toString())
  await helia.stop()
} else if (command === 'cat') {
  const [cid, ...rest] = arg.split('/')
  for await (const chunk of files.cat(CID.parse(cid), { path: rest.join('/'), offline: true })) {
    process.stdout.write(chunk)
  }
  await helia.stop()
} else if (command === 'has') {
  let ok = true
  try {
    for await (const _ of car(helia).stream(CID.parse(arg), { offline: true })) { /* every block */ }
  } catch { ok = false }
  await helia.stop()
  process.exit(ok ? 0 : 1)
} else if (command === 'serve') {
  serve()
} else {
  console.error(`unknown command ${command}`)
  process.exit(2)
}

function serve () {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://node')
    try {
      const gateway = req.method === 'GET' && url.pathname.startsWith('/ipfs/')
      if (gateway || (req.method === 'POST' && url.pathname === '/api/v0/dag/export')) {
        const text = gateway ? url.pathname.slice('/ipfs/'.length) : url.searchParams.get('arg')
        if (gateway) {
          const accept = req.headers.accept ?? ''
          if (url.searchParams.get('format') !== 'car' && !accept.includes('application/vnd.ipld.car')) {
            return send(res, 406, 'only CAR responses (format=car) are served here\n')
          }
        }
        let cid
        try { cid = CID.parse(text) } catch { return send(res, 400, `not a CID: ${text}\n`) }
        if (!(await blockstore.has(cid))) return send(res, 404, `no block ${cid}\n`)
        // The whole DAG is checked to be here before the answer starts: a gateway that
        // lacks a block answers an error, not a truncated CAR with status 200.
        try {
          for await (const _ of car(helia).stream(cid, { offline: true })) { /* every block */ }
        } catch (e) { return send(res, 404, `part of ${cid} is missing: ${e.message}\n`) }
        res.writeHead(200, { 'content-type': 'application/vnd.ipld.car; version=1' })
        for await (const chunk of car(helia).stream(cid, { offline: true })) res.write(chunk)
        return res.end()
      }
      if (req.method === 'POST' && url.pathname === '/api/v0/dag/import') {
        const body = await readBody(req)
        const upload = multipartFile(req.headers['content-type'] ?? '', body)
        if (!upload) return send(res, 400, 'expected a multipart upload of one CAR file\n')
        const reader = await CarReader.fromBytes(upload)
        await car(helia).import(reader)
        const roots = await reader.getRoots()
        res.writeHead(200, { 'content-type': 'application/json' })
        for (const root of roots) res.write(JSON.stringify({ Root: { Cid: { '/': root.toString() }, PinErrorMsg: '' } }) + '\n')
        return res.end()
      }
      send(res, 404, 'not found\n')
    } catch (e) {
      send(res, 500, `${e.message}\n`)
    }
  })
  server.listen(Number(arg ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`))
}

function send (res, status, text) {
  res.writeHead(status, { 'content-type': 'text/plain' })
  res.end(text)
}

async function readBody (req) {
  const chunks = []
  for await (const c of req) chunks.push(c)
  return Buffer.concat(chunks)
}

// The first file part of a multipart/form-data body.
function multipartFile (type, body) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/.exec(type)
  if (!m) return null
  const boundary = Buffer.from(`--${m[1] ?? m[2]}`)
  const start = body.indexOf(boundary)
  if (start < 0) return null
  const headersEnd = body.indexOf('\r\n\r\n', start)
  if (headersEnd < 0) return null
  const end = body.indexOf(Buffer.concat([Buffer.from('\r\n'), boundary]), headersEnd)
  if (end < 0) return null
  return body.subarray(headersEnd + 4, end)
}
