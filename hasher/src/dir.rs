//! Directories: a plain UnixFS Directory node, or a HAMT when the directory is too big.
//!
//! The switch follows kubo/boxo: estimate the size of the plain node and shard when the
//! estimate is above `hamt_threshold` (or at/above it, for kubo before 0.40):
//! - `LinksBytes` (unixfs-v0-2015): Σ over links of (name bytes + binary CID bytes),
//!   boxo's `estimatedSize`;
//! - `BlockBytes` (unixfs-v1-2025): the exact length of the serialized plain node.
//!
//! The estimate is taken over the directory's final contents. (`ipfs-unixfs-importer`
//! re-checks as entries arrive and counts a subdirectory that has not been flushed yet as
//! zero bytes; kubo counts every link: we follow kubo.)

use crate::car::BlockSink;
use crate::cid::{Cid, CidVersion, DAG_PB};
use crate::dagpb::{self, LinkRef};
use crate::error::{HashError, Result};
use crate::hamt;
use crate::options::{HamtCompare, HamtEstimate, Options};
use crate::unixfs;
use std::path::Path;

/// A finished directory.
#[derive(Clone, Copy, Debug)]
pub struct DirNode {
    /// CID of the directory's root block (plain node or root shard).
    pub cid: Cid,
    /// Cumulative size.
    pub tsize: u64,
    /// Whether it became a HAMT.
    pub sharded: bool,
}

/// The estimate compared with the HAMT threshold, for links sorted by name.
pub fn estimate<'n>(links: impl Iterator<Item = LinkRef<'n>>, how: HamtEstimate) -> u64 {
    match how {
        HamtEstimate::LinksBytes => links
            .map(|l| (l.name.len() + l.cid.encoded_len()) as u64)
            .sum(),
        HamtEstimate::BlockBytes => {
            links
                .map(|l| dagpb::link_encoded_len(l.name.len(), l.cid.encoded_len(), l.tsize) as u64)
                .sum::<u64>()
                + dagpb::data_encoded_len(unixfs::directory().len()) as u64
        }
    }
}

/// Whether a directory with these links is sharded under `opts`.
pub fn should_shard<'n>(links: impl Iterator<Item = LinkRef<'n>>, opts: &Options) -> bool {
    let est = estimate(links, opts.hamt_estimate);
    match opts.hamt_compare {
        HamtCompare::Greater => est > opts.hamt_threshold,
        HamtCompare::GreaterOrEqual => est >= opts.hamt_threshold,
    }
}

/// Build directory `path` from its `count` links, `link(k)` the k-th in name-byte order.
///
/// The links are taken through `link` from the caller's tables (the importer's names and
/// CIDs), so building a directory holds nothing per entry but the block being written,
/// and a HAMT 16 bytes per entry ([`hamt::build`]). Rejected: a `Vec<PbLink>` per
/// directory (a copy of every name and 80 bytes more per entry, all at once for the one
/// folder of a job's many outputs: with the importer's old tables, 1.8 KB per entry of a
/// folder of 500,000 255-byte names, measured).
pub fn build<'n, F>(
    count: usize,
    link: &F,
    opts: &Options,
    sink: Option<&dyn BlockSink>,
    path: &Path,
) -> Result<DirNode>
where
    F: Fn(usize) -> LinkRef<'n>,
{
    let links = (0..count).map(link);
    debug_assert!((1..count).all(|k| link(k - 1).name.as_bytes() < link(k).name.as_bytes()));
    if should_shard(links.clone(), opts) {
        let shard = hamt::build(count, link, opts.cid_version, sink, path)?;
        return Ok(DirNode {
            cid: shard.cid,
            tsize: shard.tsize,
            sharded: true,
        });
    }
    let block = dagpb::encode_links(links.clone(), &unixfs::directory());
    let cid = Cid::of_block(opts.cid_version, DAG_PB, &block);
    if let Some(sink) = sink {
        sink.put(&cid, &[&block]).map_err(HashError::Car)?;
    }
    Ok(DirNode {
        cid,
        tsize: block.len() as u64 + links.map(|l| l.tsize).sum::<u64>(),
        sharded: false,
    })
}

/// CID of a symlink node pointing at `target` (never followed).
pub fn symlink(
    target: &[u8],
    cid_version: CidVersion,
    sink: Option<&dyn BlockSink>,
) -> Result<(Cid, u64)> {
    let block = dagpb::encode_node(&[], &unixfs::symlink(target));
    let cid = Cid::of_block(cid_version, DAG_PB, &block);
    if let Some(sink) = sink {
        sink.put(&cid, &[&block]).map_err(HashError::Car)?;
    }
    Ok((cid, block.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dagpb::PbLink;
    use crate::options::Profile;

    fn links(n: usize, name_len: usize, v: CidVersion) -> Vec<PbLink> {
        let cid = Cid::of_block(v, DAG_PB, b"x");
        let mut out: Vec<PbLink> = (0..n)
            .map(|i| PbLink {
                cid,
                name: format!("{i:0name_len$}"),
                tsize: 10,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    #[test]
    fn v0_threshold_is_strictly_greater_unless_legacy() {
        // 64 + 34 = 98 bytes per link; 2675 links = 262,150 > 262,144;
        // find a count that lands exactly on the threshold: 262,144 / 98 is not whole,
        // so use names of 94 bytes: 128 bytes per link, 2048 links = 262,144 exactly.
        let at = links(2048, 94, CidVersion::V0);
        let at = || at.iter().map(PbLink::borrowed);
        assert_eq!(estimate(at(), HamtEstimate::LinksBytes), 262_144);
        let mut opts = Options::profile(Profile::UnixfsV0_2015);
        assert!(!should_shard(at(), &opts));
        opts.hamt_compare = HamtCompare::GreaterOrEqual;
        assert!(should_shard(at(), &opts));
    }

    #[test]
    fn block_bytes_estimate_is_the_encoded_length() {
        let l = links(100, 8, CidVersion::V1);
        let block = dagpb::encode_node(&l, &unixfs::directory());
        let links = l.iter().map(PbLink::borrowed);
        assert_eq!(
            estimate(links, HamtEstimate::BlockBytes),
            block.len() as u64
        );
    }
}
