//! The balanced file layout (go-unixfs `balanced`, `ipfs-unixfs-importer` `balanced`),
//! built bottom-up while the leaves stream in, holding at most `max_links` children per
//! level in memory.
//!
//! Shape: the leaves are cut into consecutive groups of `max_links`, each group becomes
//! one node, and the nodes are grouped again until one remains. A file of a single
//! chunk is its own root (no parent node). A trailing group of one child still gets a
//! parent node with one link.

use crate::car::BlockSink;
use crate::cid::{Cid, CidVersion, DAG_PB};
use crate::dagpb::{self, PbLink};
use crate::unixfs;
use std::io;

/// A finished subtree of a file: a leaf or an inner node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subtree {
    /// CID of the subtree's root block.
    pub cid: Cid,
    /// Cumulative size (Tsize) of the subtree.
    pub tsize: u64,
    /// File bytes the subtree holds (its entry in the parent's `blocksizes`).
    pub filesize: u64,
}

/// Streaming balanced-layout builder.
pub struct Balanced<'s> {
    levels: Vec<Vec<Subtree>>,
    max_links: usize,
    cid_version: CidVersion,
    sink: Option<&'s dyn BlockSink>,
}

impl<'s> Balanced<'s> {
    /// A builder for one file.
    pub fn new(max_links: usize, cid_version: CidVersion, sink: Option<&'s dyn BlockSink>) -> Self {
        Balanced {
            levels: vec![Vec::new()],
            max_links,
            cid_version,
            sink,
        }
    }

    /// Add the next leaf (in file order).
    pub fn push_leaf(&mut self, leaf: Subtree) -> io::Result<()> {
        self.push(0, leaf)
    }

    fn push(&mut self, level: usize, item: Subtree) -> io::Result<()> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(item);
        if self.levels[level].len() == self.max_links {
            let group = std::mem::take(&mut self.levels[level]);
            let node = self.reduce(&group)?;
            self.push(level + 1, node)?;
        }
        Ok(())
    }

    /// The file's root, once every leaf is pushed (at least one leaf is required).
    pub fn finish(mut self) -> io::Result<Subtree> {
        let mut level = 0;
        loop {
            let top = self.levels[level + 1..].iter().all(Vec::is_empty);
            let items = std::mem::take(&mut self.levels[level]);
            if top && items.len() == 1 {
                return Ok(items[0]);
            }
            if !items.is_empty() {
                let node = self.reduce(&items)?;
                if self.levels.len() <= level + 1 {
                    self.levels.push(Vec::new());
                }
                self.levels[level + 1].push(node);
            }
            level += 1;
        }
    }

    fn reduce(&self, children: &[Subtree]) -> io::Result<Subtree> {
        let filesize = children.iter().map(|c| c.filesize).sum();
        let blocksizes: Vec<u64> = children.iter().map(|c| c.filesize).collect();
        let links: Vec<PbLink> = children
            .iter()
            .map(|c| PbLink {
                cid: c.cid,
                name: String::new(),
                tsize: c.tsize,
            })
            .collect();
        let block = dagpb::encode_node(&links, &unixfs::file_node(filesize, &blocksizes));
        let cid = Cid::of_block(self.cid_version, DAG_PB, &block);
        if let Some(sink) = self.sink {
            sink.put(&cid, &[&block])?;
        }
        Ok(Subtree {
            cid,
            tsize: block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
            filesize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::RAW;

    fn leaf(i: u64) -> Subtree {
        Subtree {
            cid: Cid::of_block(CidVersion::V1, RAW, &i.to_le_bytes()),
            tsize: 8,
            filesize: 8,
        }
    }

    /// Count the nodes the builder makes, through a sink.
    struct Count(std::sync::Mutex<Vec<usize>>);
    impl BlockSink for Count {
        fn put(&self, _cid: &Cid, parts: &[&[u8]]) -> io::Result<()> {
            let links = dagpb::decode_link_cids(parts[0]).len();
            self.0.lock().unwrap().push(links);
            Ok(())
        }
    }

    fn shape(n: u64, max: usize) -> (Subtree, Vec<usize>) {
        let count = Count(Default::default());
        let mut b = Balanced::new(max, CidVersion::V0, Some(&count));
        for i in 0..n {
            b.push_leaf(leaf(i)).unwrap();
        }
        let root = b.finish().unwrap();
        (root, count.0.into_inner().unwrap())
    }

    #[test]
    fn one_leaf_is_its_own_root() {
        let (root, nodes) = shape(1, 3);
        assert_eq!(root, leaf(0));
        assert!(nodes.is_empty());
    }

    #[test]
    fn groups_of_max_then_a_group_of_one() {
        assert_eq!(shape(3, 3).1, [3]);
        assert_eq!(shape(4, 3).1, [3, 1, 2]);
        assert_eq!(shape(9, 3).1, [3, 3, 3, 3]);
        assert_eq!(shape(10, 3).1, [3, 3, 3, 3, 1, 1, 2]);
        let (root, _) = shape(10, 3);
        assert_eq!(root.filesize, 80);
    }
}
