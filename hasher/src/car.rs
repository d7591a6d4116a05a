//! CARv1 export, as `ipfs dag export` writes it: a DAG-CBOR header `{roots: [root],
//! version: 1}`, then one `varint(len) ‖ CID ‖ block` section per block, root first,
//! depth-first in link order, each block once.
//!
//! Blocks are produced bottom-up (leaves before the nodes that link them) and in
//! parallel, while the CAR must start with the root. So blocks are spooled to an
//! anonymous temporary file as they come, indexed by CID, and the CAR is written in
//! traversal order from the spool at the end: memory stays bounded by the index.

use crate::cid::{Cid, DAG_PB};
use crate::dagpb;
use crate::pb;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Where an importer puts every block it makes.
pub trait BlockSink: Sync {
    /// Store a block given as consecutive parts (leaves are `prefix ‖ chunk ‖ suffix`).
    fn put(&self, cid: &Cid, parts: &[&[u8]]) -> io::Result<()>;
}

struct Spool {
    file: BufWriter<File>,
    len: u64,
    index: HashMap<Cid, (u64, usize)>,
}

/// Collects blocks, then writes them as a CARv1 in `ipfs dag export` order.
pub struct CarBuilder {
    spool: Mutex<Spool>,
}

impl CarBuilder {
    /// A builder spooling to an anonymous temporary file (`$TMPDIR`).
    pub fn new() -> io::Result<CarBuilder> {
        Ok(CarBuilder {
            spool: Mutex::new(Spool {
                file: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
                len: 0,
                index: HashMap::new(),
            }),
        })
    }

    /// Write the CAR rooted at `root` to `out`. Every block reachable from `root` must
    /// have been put.
    pub fn finish(self, root: &Cid, out: &mut dyn Write) -> io::Result<()> {
        let spool = self.spool.into_inner().map_err(|_| poisoned())?;
        let file = spool.file.into_inner().map_err(|e| e.into_error())?;
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let header = header(root);
        let mut buf = Vec::new();
        pb::put_varint(&mut buf, header.len() as u64);
        out.write_all(&buf)?;
        out.write_all(&header)?;
        let mut seen: HashSet<Cid> = HashSet::new();
        let mut stack = vec![*root];
        let mut block = Vec::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let &(offset, len) = spool.index.get(&cid).ok_or_else(|| {
                io::Error::other(format!("block {cid} was never produced (internal error)"))
            })?;
            block.resize(len, 0);
            file.read_exact_at(&mut block, offset)?;
            let cid_bytes = cid.to_bytes();
            buf.clear();
            pb::put_varint(&mut buf, (cid_bytes.len() + len) as u64);
            out.write_all(&buf)?;
            out.write_all(&cid_bytes)?;
            out.write_all(&block)?;
            if cid.codec() == DAG_PB {
                let links = dagpb::decode_link_cids(&block);
                for link in links.iter().rev() {
                    stack.push(parse_cid(link)?);
                }
            }
        }
        out.flush()
    }
}

impl BlockSink for CarBuilder {
    fn put(&self, cid: &Cid, parts: &[&[u8]]) -> io::Result<()> {
        let mut spool = self.spool.lock().map_err(|_| poisoned())?;
        if spool.index.contains_key(cid) {
            return Ok(());
        }
        let offset = spool.len;
        let mut len = 0;
        for part in parts {
            spool.file.write_all(part)?;
            len += part.len();
        }
        spool.len += len as u64;
        spool.index.insert(*cid, (offset, len));
        Ok(())
    }
}

fn poisoned() -> io::Error {
    io::Error::other("a hashing thread panicked while writing the CAR spool")
}

/// The DAG-CBOR header `{"roots": [root], "version": 1}` (keys in canonical order:
/// shorter first). A CID is CBOR tag 42 over the bytes `0x00 ‖ binary CID`.
pub fn header(root: &Cid) -> Vec<u8> {
    let cid = root.to_bytes();
    let mut h = vec![0xa2, 0x65];
    h.extend_from_slice(b"roots");
    h.extend_from_slice(&[0x81, 0xd8, 0x2a, 0x58, (cid.len() + 1) as u8, 0x00]);
    h.extend_from_slice(&cid);
    h.push(0x67);
    h.extend_from_slice(b"version");
    h.push(0x01);
    h
}

/// A CARv1 of exactly these blocks, in this order, with `root` as its root: nothing is
/// checked (not the hashes, not the links, not duplicates). For tests and tools that
/// build hostile or unusual CARs by hand; the hasher's own writer only writes trees it
/// made, and readers of this crate check every block against its CID.
pub fn assemble_unchecked(root: &Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let header = header(root);
    let mut out = Vec::new();
    crate::pb::put_varint(&mut out, header.len() as u64);
    out.extend_from_slice(&header);
    for (cid, block) in blocks {
        let c = cid.to_bytes();
        crate::pb::put_varint(&mut out, (c.len() + block.len()) as u64);
        out.extend_from_slice(&c);
        out.extend_from_slice(block);
    }
    out
}

/// Parse the binary CIDs this crate writes (sha2-256, v0 or v1).
fn parse_cid(bytes: &[u8]) -> io::Result<Cid> {
    Cid::from_bytes(bytes)
        .ok_or_else(|| io::Error::other("unexpected CID in a link (internal error)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{CidVersion, RAW};

    #[test]
    fn cids_parse_back() {
        for cid in [
            Cid::of_block(CidVersion::V0, DAG_PB, b"a"),
            Cid::of_block(CidVersion::V1, DAG_PB, b"a"),
            Cid::of_block(CidVersion::V1, RAW, b"a"),
        ] {
            assert_eq!(parse_cid(&cid.to_bytes()).unwrap(), cid);
        }
    }

    #[test]
    fn a_single_block_car_is_header_then_one_section() {
        let block = b"hello";
        let cid = Cid::of_block(CidVersion::V1, RAW, block);
        let car = CarBuilder::new().unwrap();
        car.put(&cid, &[block]).unwrap();
        car.put(&cid, &[block]).unwrap();
        let mut out = Vec::new();
        car.finish(&cid, &mut out).unwrap();
        let header = header(&cid);
        assert_eq!(out[0] as usize, header.len());
        assert_eq!(&out[1..1 + header.len()], &header[..]);
        let rest = &out[1 + header.len()..];
        assert_eq!(rest[0] as usize, 36 + 5);
        assert_eq!(&rest[1..37], &cid.to_bytes()[..]);
        assert_eq!(&rest[37..], block);
    }
}
