//! HAMT-sharded directories (UnixFS `HAMTShard`), byte-exact with go-unixfs/boxo `hamt`
//! and `ipfs-unixfs-importer`:
//!
//! - fanout 256: each level consumes 8 bits of the name's hash;
//! - the hash is murmur3-x64-64 (`h1` of MurmurHash3_x64_128, seed 0, multicodec 0x22),
//!   read from its most significant bit: level `d` uses byte `d` of `h1` big-endian;
//! - a slot holding one entry links to it as `XX` + name (`XX` = slot index in two
//!   upper-case hex digits); a slot holding several entries links to a sub-shard as
//!   `XX` alone;
//! - the shard's Data is `{Type: HAMTShard, Data: bitfield, hashType: 0x22, fanout: 256}`,
//!   the bitfield having bit `i` set for each used slot `i`, as a big-endian integer
//!   with leading zero bytes stripped.
//!
//! The tree only depends on the set of names (no deletions happen during an import), so
//! it is built directly from the sorted hashes.

use crate::car::BlockSink;
use crate::cid::{Cid, CidVersion, DAG_PB};
use crate::dagpb::{self, LinkRef, PbLink};
use crate::error::{HashError, Result};
use crate::murmur3::hamt_hash;
use crate::unixfs;
use std::path::Path;

/// Multicodec code of murmur3-x64-64, the `hashType` of a UnixFS HAMT.
pub const HASH_TYPE_MURMUR3_X64_64: u64 = 0x22;
/// Slots per shard (`fanout`): 2^8.
pub const FANOUT: u64 = 256;
/// Hash bits consumed per level: log2(FANOUT).
const BITS_PER_LEVEL: u32 = 8;
/// Levels available in a 64-bit hash.
const MAX_DEPTH: u32 = 64 / BITS_PER_LEVEL;

/// The root of a built shard tree.
#[derive(Clone, Copy, Debug)]
pub struct Shard {
    /// CID of the root shard block.
    pub cid: Cid,
    /// Cumulative size of the whole shard tree.
    pub tsize: u64,
}

/// Slot of `hash` at `depth`.
fn slot(hash: u64, depth: u32) -> usize {
    ((hash >> (64 - BITS_PER_LEVEL * (depth + 1))) & (FANOUT - 1)) as usize
}

/// Build the shard tree of a directory `dir` of `count` entries (unique names, any
/// order), `entry(k)` giving the k-th entry's name, CID and Tsize.
///
/// The entries are taken through `entry`, and only `(hash, k)` is held per entry, 16
/// bytes: a folder is sharded because it is large (a folder of 500,000 entries is one
/// HAMT). Rejected: a vector of the entries themselves (a copy of every name, 88 bytes
/// more per entry, beside the importer's own table of the same names and CIDs).
pub fn build<'n, F>(
    count: usize,
    entry: &F,
    cid_version: CidVersion,
    sink: Option<&dyn BlockSink>,
    dir: &Path,
) -> Result<Shard>
where
    F: Fn(usize) -> LinkRef<'n>,
{
    let mut hashed: Vec<(u64, usize)> = (0..count)
        .map(|k| (hamt_hash(entry(k).name.as_bytes()), k))
        .collect();
    // Sorting by the hash groups the entries of every slot at every depth, in slot order.
    // The names break ties (equal 64-bit hashes), so the order, and the pair an error
    // names, do not depend on `k`: unique names make the order total, so an unstable
    // sort (no buffer) gives the same order as a stable one.
    hashed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| entry(a.1).name.cmp(entry(b.1).name))
    });
    build_level(&hashed, entry, 0, cid_version, sink, dir)
}

fn build_level<'n, F>(
    entries: &[(u64, usize)],
    entry: &F,
    depth: u32,
    cid_version: CidVersion,
    sink: Option<&dyn BlockSink>,
    dir: &Path,
) -> Result<Shard>
where
    F: Fn(usize) -> LinkRef<'n>,
{
    let mut links = Vec::new();
    let mut bitfield = [0u8; (FANOUT / 8) as usize];
    let mut children_tsize = 0u64;
    let mut rest = entries;
    while let Some(&(hash, _)) = rest.first() {
        let idx = slot(hash, depth);
        let n = rest
            .iter()
            .take_while(|(h, _)| slot(*h, depth) == idx)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        bitfield[bitfield.len() - 1 - idx / 8] |= 1 << (idx % 8);
        let link = if let [(_, k)] = group {
            let e = entry(*k);
            PbLink {
                cid: e.cid,
                name: format!("{idx:02X}{}", e.name),
                tsize: e.tsize,
            }
        } else {
            if depth + 1 >= MAX_DEPTH {
                return Err(HashError::HamtExhausted {
                    dir: dir.to_path_buf(),
                    a: entry(group[0].1).name.to_string(),
                    b: entry(group[1].1).name.to_string(),
                });
            }
            let sub = build_level(group, entry, depth + 1, cid_version, sink, dir)?;
            PbLink {
                cid: sub.cid,
                name: format!("{idx:02X}"),
                tsize: sub.tsize,
            }
        };
        children_tsize += link.tsize;
        links.push(link);
    }
    let first_used = bitfield
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bitfield.len());
    let data = unixfs::hamt_shard(&bitfield[first_used..], HASH_TYPE_MURMUR3_X64_64, FANOUT);
    let block = dagpb::encode_node(&links, &data);
    let cid = Cid::of_block(cid_version, DAG_PB, &block);
    if let Some(sink) = sink {
        sink.put(&cid, &[&block]).map_err(HashError::Car)?;
    }
    Ok(Shard {
        cid,
        tsize: block.len() as u64 + children_tsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::RAW;

    #[test]
    fn slots_read_the_hash_from_its_most_significant_byte() {
        let h = 0xcbd8_a7b3_41bd_9b02u64; // h1 of "hello"
        assert_eq!(slot(h, 0), 0xcb);
        assert_eq!(slot(h, 1), 0xd8);
        assert_eq!(slot(h, 7), 0x02);
    }

    #[test]
    fn a_single_entry_shard_links_by_prefix_and_name() {
        let cid = Cid::of_block(CidVersion::V1, RAW, b"");
        let entry = |_| LinkRef {
            name: "hello",
            cid,
            tsize: 0,
        };
        let shard = build(1, &entry, CidVersion::V0, None, Path::new("d")).unwrap();
        // Rebuild the expected block by hand: slot 0xcb => bitfield bit 203 set, which is
        // byte 31 - 25 = 6 of 32, so 26 bytes remain after stripping: 0x08 then 25 zeros.
        let mut bitfield = vec![0x08u8];
        bitfield.extend([0u8; 25]);
        let block = dagpb::encode_node(
            &[PbLink {
                cid,
                name: "CBhello".into(),
                tsize: 0,
            }],
            &unixfs::hamt_shard(&bitfield, 0x22, 256),
        );
        assert_eq!(shard.cid, Cid::of_block(CidVersion::V0, DAG_PB, &block));
        assert_eq!(shard.tsize, block.len() as u64);
    }

    #[test]
    fn colliding_slots_make_sub_shards() {
        // Find two names sharing the first hash byte.
        let names: Vec<String> = (0..600).map(|i| format!("f{i}")).collect();
        let by_slot = |n: &String| slot(hamt_hash(n.as_bytes()), 0);
        let a = &names[0];
        let b = names[1..]
            .iter()
            .find(|n| by_slot(n) == by_slot(a))
            .unwrap();
        let cid = Cid::of_block(CidVersion::V1, RAW, b"");
        let pair = [a, b];
        let entry = |k: usize| LinkRef {
            name: pair[k],
            cid,
            tsize: 0,
        };
        struct Blocks(std::sync::Mutex<usize>);
        impl BlockSink for Blocks {
            fn put(&self, _: &Cid, _: &[&[u8]]) -> std::io::Result<()> {
                *self.0.lock().unwrap() += 1;
                Ok(())
            }
        }
        let blocks = Blocks(Default::default());
        build(2, &entry, CidVersion::V1, Some(&blocks), Path::new("d")).unwrap();
        assert_eq!(
            *blocks.0.lock().unwrap(),
            2,
            "root shard plus one sub-shard"
        );
    }
}
