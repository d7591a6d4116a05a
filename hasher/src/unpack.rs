//! Reading a CARv1 back into files and folders on disk: the inverse of [`Hasher::car`],
//! for trees that travel by content (the Python package's Ray runner ships a job's inputs
//! to a worker, and its results back to the driver, as CARs).
//!
//! What it guarantees: every block is checked against its CID before anything is
//! written; the CAR names exactly one root, which the caller compares with the CID it
//! expects ([`Car::root`]); and what is written is the tree that root names. No name can
//! leave the destination: a name is one path component (not empty, `.`, `..`, and without
//! `/` or NUL), every folder written into is one the unpacker created itself, and a
//! folder may not name an entry twice (so no symlink it wrote can be written through).
//! A CAR that links the same blocks over and over (a few kilobytes can describe
//! exabytes) cannot make it walk or write more than the caller's budget.
//!
//! What it is not: a general IPFS exporter. Only sha2-256 CIDs of dag-pb and raw blocks,
//! what this crate and `ipfs add` (either profile) write; UnixFS mode and mtime are
//! ignored (neither profile stores them); a HAMT's bitfield and hash function are not
//! checked against its names (the root CID already pins every block, and names are
//! checked for uniqueness). Rejected: recursion over the tree (a deep tree from another
//! machine would overflow the stack); the walk keeps its own stack.
//!
//! [`Hasher::car`]: crate::Hasher::car

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::cid::{Cid, DAG_PB, RAW};
use crate::{dagpb, pb, unixfs};

/// What each block visit costs against the budget, on top of its length: a visit that
/// writes nothing (an empty file, a folder, an inner node of a file) is not free. The
/// value is the runtime's charge per entry of a results folder against its output quota
/// (`ENTRY_OVERHEAD` in detwasm-runtime), so a budget derived from that quota fits a
/// results folder the quota allowed.
pub const VISIT_CHARGE: u64 = 256;

/// Why a CAR could not be read or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Not a CARv1 of one root as `ipfs dag export` writes it.
    #[error("not a CARv1 with one root: {0}")]
    Format(&'static str),
    /// A block whose bytes do not hash to its CID.
    #[error("block {0} does not match its CID (corrupt CAR)")]
    Corrupt(Cid),
    /// A CID the tree links to that the CAR does not hold.
    #[error("block {0} is missing from the CAR")]
    Missing(Cid),
    /// A block that is not valid UnixFS, or a name or link that is refused.
    #[error("block {cid}: {reason}")]
    Invalid {
        /// The block at fault.
        cid: Cid,
        /// What is wrong with it.
        reason: String,
    },
    /// The tree needs more than the caller's budget.
    #[error("the tree is larger than the {0} bytes allowed for it")]
    Budget(u64),
    /// Writing the tree failed.
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        /// The path being written.
        path: PathBuf,
        /// The cause (part of the message, deliberately not `source()`).
        cause: io::Error,
    },
}

/// A parsed CARv1 whose blocks have all been checked against their CIDs.
pub struct Car<'a> {
    root: Cid,
    blocks: HashMap<Cid, &'a [u8]>,
}

/// The size of a tree as unpacking it would write it: every block counted each time the
/// tree reaches it ([`Car::expanded`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expanded {
    /// Bytes of file content.
    pub bytes: u64,
    /// Files, folders and symlinks, the root included.
    pub entries: u64,
    /// What [`Car::unpack`] charges against its budget: the bytes of every block visit
    /// plus [`VISIT_CHARGE`] per visit. A budget of exactly this unpacks the tree.
    pub work: u64,
}

impl Expanded {
    fn add(self, other: Expanded) -> Expanded {
        Expanded {
            bytes: self.bytes.saturating_add(other.bytes),
            entries: self.entries.saturating_add(other.entries),
            work: self.work.saturating_add(other.work),
        }
    }
}

/// How a block is reached, which decides what it adds to an [`Expanded`] size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    /// An entry of a folder (or the root): a file, folder or symlink.
    Entry,
    /// A block of a file's DAG below its root.
    FilePart,
    /// A HAMT shard below a sharded folder's root.
    Shard,
}

/// What [`Car::unpack`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Bytes of file content.
    pub bytes: u64,
    /// Files, folders and symlinks, the root included.
    pub entries: u64,
}

/// A mapped CAR file ([`map_car_file`]).
pub use memmap2::Mmap;

/// A CAR file mapped into memory, for [`Car::parse`]: opened without blocking (a FIFO
/// is refused, not waited on) and checked to be a regular, non-empty file. The mapping
/// is read-only and private; another process truncating the file while it is mapped
/// raises SIGBUS, as for any reader that maps (the importer maps large files the same
/// way). Rejected: reading the whole file (a CAR can be gigabytes; mapped, only the
/// blocks used are paged in).
pub fn map_car_file(path: &Path) -> std::io::Result<memmap2::Mmap> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular, non-empty file",
        ));
    }
    // SAFETY: see above: read-only, private, not modified by this process.
    unsafe { memmap2::Mmap::map(&file) }
}

impl<'a> Car<'a> {
    /// Parses a CARv1 whose header names exactly one root, byte for byte as this crate and
    /// `ipfs dag export` write it (`{roots: [root], version: 1}` in canonical DAG-CBOR),
    /// and checks every block against its CID. Blocks may appear in any order; a block
    /// given twice must be the same bytes (it is checked twice).
    pub fn parse(bytes: &'a [u8]) -> Result<Car<'a>, UnpackError> {
        Self::parse_within(bytes, usize::MAX)
    }

    /// [`Car::parse`], refused at the `max_blocks + 1`st block: the index of blocks is
    /// what parsing holds (about 100 bytes a block), and a CAR of many tiny blocks holds
    /// up to about 4 times its size (found by review: a 205 MB snapshot CAR of tiny
    /// blocks took 954 MB before it was refused).
    pub fn parse_within(bytes: &'a [u8], max_blocks: usize) -> Result<Car<'a>, UnpackError> {
        let mut pos = 0;
        let header_len =
            pb::read_varint(bytes, &mut pos).ok_or(UnpackError::Format("truncated header"))?;
        let header = usize::try_from(header_len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .and_then(|end| bytes.get(pos..end))
            .ok_or(UnpackError::Format("truncated header"))?;
        pos += header.len();
        // {"roots": [tag 42 (bytes 0x00 ‖ CID)], "version": 1}: the CID starts after the
        // map, key and array heads, the tag, the byte string's head and the 0x00 prefix.
        const CID_AT: usize = 1 + 6 + 1 + 2 + 2 + 1;
        let root = header
            .get(CID_AT..)
            .and_then(|rest| rest.get(..rest.len().checked_sub(9)?))
            .and_then(Cid::from_bytes)
            .ok_or(UnpackError::Format(
                "the header does not name one sha2-256 root",
            ))?;
        if header != crate::car::header(&root) {
            return Err(UnpackError::Format(
                "the header does not name one sha2-256 root",
            ));
        }
        let mut blocks = HashMap::new();
        while pos < bytes.len() {
            let len =
                pb::read_varint(bytes, &mut pos).ok_or(UnpackError::Format("truncated section"))?;
            let section = usize::try_from(len)
                .ok()
                .and_then(|l| pos.checked_add(l))
                .and_then(|end| bytes.get(pos..end))
                .ok_or(UnpackError::Format("truncated section"))?;
            pos += section.len();
            let cid_len = match section {
                [0x12, 0x20, ..] => 34,
                [0x01, _, 0x12, 0x20, ..] => 36,
                _ => {
                    return Err(UnpackError::Format(
                        "a block whose CID is not sha2-256 dag-pb or raw",
                    ))
                }
            };
            let (cid, block) = section
                .split_at_checked(cid_len)
                .and_then(|(c, b)| Some((Cid::from_bytes(c)?, b)))
                .filter(|(c, _)| c.codec() == DAG_PB || c.codec() == RAW)
                .ok_or(UnpackError::Format(
                    "a block whose CID is not sha2-256 dag-pb or raw",
                ))?;
            if Cid::of_block(cid.version(), cid.codec(), block) != cid {
                return Err(UnpackError::Corrupt(cid));
            }
            if blocks.len() >= max_blocks && !blocks.contains_key(&cid) {
                return Err(UnpackError::Format(
                    "more blocks than a CAR of this kind may hold",
                ));
            }
            blocks.insert(cid, block);
        }
        Ok(Car { root, blocks })
    }

    /// The root the header names.
    pub fn root(&self) -> Cid {
        self.root
    }

    /// Distinct blocks held.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Writes the tree of the root at `dest`: a file, a symlink or a folder. `dest` must
    /// not exist, except that a folder may be unpacked into an existing empty folder (a
    /// staging folder). `budget` bounds the bytes of blocks visited plus
    /// [`VISIT_CHARGE`] per visit. On an error, what was written so far is left for the
    /// caller to remove (unpack into a staging folder).
    pub fn unpack(&self, dest: &Path, budget: u64) -> Result<Unpacked, UnpackError> {
        self.unpack_cid(self.root, dest, budget)
    }

    /// Does this CAR hold the block `cid`?
    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

    /// [`Car::unpack`] of the tree at `cid`, any block of this CAR (not only its root).
    pub fn unpack_cid(&self, cid: Cid, dest: &Path, budget: u64) -> Result<Unpacked, UnpackError> {
        let mut walk = self.walk(budget);
        walk.run(cid, dest)?;
        Ok(walk.done)
    }

    /// The UnixFS type of the block `cid`: one of the `unixfs::TYPE_*` constants,
    /// [`unixfs::TYPE_RAW`] for a raw block (a file's bytes).
    pub fn kind(&self, cid: Cid) -> Result<u64, UnpackError> {
        if cid.codec() == RAW {
            return Ok(unixfs::TYPE_RAW);
        }
        Ok(decode(cid, self.block(&cid)?)?.data.kind)
    }

    /// The entries of the plain (not sharded) UnixFS folder `cid`, in their order, each
    /// name and CID checked as unpacking checks them (one path component; a sha2-256
    /// dag-pb or raw CID). Anything but a plain folder is an error.
    pub fn entries(&self, cid: Cid) -> Result<Vec<(&'a [u8], Cid)>, UnpackError> {
        let block = self.block(&cid)?;
        let n = decode(cid, block)?;
        if n.data.kind != unixfs::TYPE_DIRECTORY {
            return Err(invalid(
                cid,
                format!("UnixFS type {} is not a plain folder", n.data.kind),
            ));
        }
        n.node
            .links
            .iter()
            .map(|l| {
                check_name(cid, l.name)?;
                Ok((l.name, link_cid(cid, l.hash)?))
            })
            .collect()
    }

    /// Writes the file at `cid` (a raw block or a UnixFS file DAG) to `out`, within
    /// `budget` as [`Car::unpack`] counts it; the bytes written. Anything but a file is
    /// an error.
    pub fn write_file(
        &self,
        cid: Cid,
        out: &mut impl Write,
        budget: u64,
    ) -> Result<u64, UnpackError> {
        if cid.codec() == DAG_PB {
            let kind = self.kind(cid)?;
            if !matches!(kind, unixfs::TYPE_FILE | unixfs::TYPE_RAW) {
                return Err(invalid(cid, format!("UnixFS type {kind} is not a file")));
            }
        }
        let mut walk = self.walk(budget);
        walk.copy_file(cid, out, Path::new("(memory)"))?;
        Ok(walk.done.bytes)
    }

    /// The size of the tree at `cid` as [`Car::unpack_cid`] would write it, a block
    /// linked many times counted every time, computed without writing or walking it:
    /// bottom-up over the distinct blocks, each block's size remembered once known, so
    /// the cost is linear in the CAR however large the tree it describes (19 levels of
    /// folders each linking the one below twice are 2^19 paths, and 20 blocks here).
    /// Errors are those a block the walk would reach would give it, and a block that is
    /// missing. Rejected: counting while unpacking, which writes (and spends time on)
    /// everything up to the limit before refusing, and whose limit can only be per tree.
    pub fn expanded(&self, cid: Cid) -> Result<Expanded, UnpackError> {
        let mut known: HashMap<(Cid, Role), Expanded> = HashMap::new();
        let mut stack = vec![(cid, Role::Entry, false)];
        while let Some((cid, role, children_known)) = stack.pop() {
            if known.contains_key(&(cid, role)) {
                continue;
            }
            let (own, children) = self.shape(cid, role)?;
            if !children_known {
                stack.push((cid, role, true));
                stack.extend(
                    children
                        .into_iter()
                        .filter(|c| !known.contains_key(c))
                        .map(|(c, r)| (c, r, false)),
                );
                continue;
            }
            let mut total = own;
            for child in &children {
                // Every child was sized before its parent came back (a DAG of hashes
                // cannot loop; a child missing here could only be a loop).
                let size = known
                    .get(child)
                    .ok_or_else(|| invalid(cid, "the DAG links back to itself"))?;
                total = total.add(*size);
            }
            known.insert((cid, role), total);
        }
        Ok(known[&(cid, Role::Entry)])
    }

    /// What a block adds by itself when reached as `role`, and the blocks it reaches.
    #[allow(clippy::type_complexity)]
    fn shape(&self, cid: Cid, role: Role) -> Result<(Expanded, Vec<(Cid, Role)>), UnpackError> {
        let block = self.block(&cid)?;
        let visit = (block.len() as u64).saturating_add(VISIT_CHARGE);
        let entry = u64::from(role == Role::Entry);
        if cid.codec() == RAW {
            if role == Role::Shard {
                return Err(invalid(
                    cid,
                    "a HAMT shard links to a sub-shard that is not one",
                ));
            }
            let own = Expanded {
                bytes: block.len() as u64,
                entries: entry,
                work: visit,
            };
            return Ok((own, Vec::new()));
        }
        let n = decode(cid, block)?;
        let mut own = Expanded {
            bytes: 0,
            entries: entry,
            work: visit,
        };
        let mut children = Vec::with_capacity(n.node.links.len());
        match (n.data.kind, role) {
            (unixfs::TYPE_FILE | unixfs::TYPE_RAW, Role::Entry | Role::FilePart) => {
                own.bytes = n.data.data.len() as u64;
                for link in &n.node.links {
                    children.push((link_cid(cid, link.hash)?, Role::FilePart));
                }
            }
            (_, Role::FilePart) => {
                return Err(invalid(
                    cid,
                    "a file links to a block that is not file data",
                ))
            }
            (unixfs::TYPE_DIRECTORY, Role::Entry) => {
                for link in &n.node.links {
                    children.push((link_cid(cid, link.hash)?, Role::Entry));
                }
            }
            (unixfs::TYPE_HAMT_SHARD, Role::Entry | Role::Shard) => {
                let prefix = hamt_prefix(cid, &n)?;
                for link in &n.node.links {
                    let target = link_cid(cid, link.hash)?;
                    if link.name.len() < prefix {
                        return Err(invalid(
                            cid,
                            "a HAMT link name shorter than its bucket index",
                        ));
                    }
                    let role = if link.name.len() == prefix {
                        Role::Shard
                    } else {
                        Role::Entry
                    };
                    children.push((target, role));
                }
            }
            (_, Role::Shard) => {
                return Err(invalid(
                    cid,
                    "a HAMT shard links to a sub-shard that is not one",
                ))
            }
            (unixfs::TYPE_SYMLINK, Role::Entry) => {}
            (other, Role::Entry) => {
                return Err(invalid(
                    cid,
                    format!("UnixFS type {other} is not a file, folder or symlink"),
                ))
            }
        }
        Ok((own, children))
    }

    fn walk(&self, budget: u64) -> Walk<'_, 'a> {
        Walk {
            car: self,
            spent: 0,
            budget,
            done: Unpacked::default(),
        }
    }

    /// The bytes of the block `cid` (checked against it when parsed).
    pub fn block(&self, cid: &Cid) -> Result<&'a [u8], UnpackError> {
        self.blocks
            .get(cid)
            .copied()
            .ok_or(UnpackError::Missing(*cid))
    }
}

/// One step of the walk. A queued task shares its folder's path (`Rc`) and borrows its
/// name from the CAR, so a queue of a folder's or a shard's links costs a few words
/// each, not a copy of the folder's path each. Found by review: a 22 MB CAR of a
/// sharded folder 14 folders deep whose one shard links 500,000 times to one sub-shard
/// queued 500,000 copies of a 4 KB path: 1.9 GB.
enum Task<'a> {
    /// The entry `cid` is written at `folder`/`name` (at `folder` itself for the root).
    Entry(Cid, Rc<PathBuf>, Option<&'a OsStr>),
    /// The HAMT shard `cid` adds its entries to this folder; the index names the set of
    /// names the folder's shards have given so far.
    Shard(Cid, Rc<PathBuf>, usize),
}

struct Walk<'c, 'a> {
    car: &'c Car<'a>,
    spent: u64,
    budget: u64,
    done: Unpacked,
}

fn invalid(cid: Cid, reason: impl Into<String>) -> UnpackError {
    UnpackError::Invalid {
        cid,
        reason: reason.into(),
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |cause| UnpackError::Write {
        path: path.to_path_buf(),
        cause,
    }
}

/// A dag-pb node and its UnixFS data.
struct UnixfsNode<'a> {
    node: dagpb::DecodedNode<'a>,
    data: unixfs::Decoded<'a>,
}

fn decode(cid: Cid, block: &[u8]) -> Result<UnixfsNode<'_>, UnpackError> {
    let node = dagpb::decode_node(block).map_err(|e| invalid(cid, e))?;
    let data = unixfs::decode(
        node.data
            .ok_or_else(|| invalid(cid, "a dag-pb node without UnixFS data"))?,
    )
    .map_err(|e| invalid(cid, e))?;
    Ok(UnixfsNode { node, data })
}

fn link_cid(parent: Cid, hash: &[u8]) -> Result<Cid, UnpackError> {
    Cid::from_bytes(hash)
        .filter(|c| c.codec() == DAG_PB || c.codec() == RAW)
        .ok_or_else(|| invalid(parent, "a link to a CID that is not sha2-256 dag-pb or raw"))
}

/// A name that is one path component: not empty, `.` or `..`, no `/` and no NUL.
fn check_name(parent: Cid, name: &[u8]) -> Result<&OsStr, UnpackError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(invalid(
            parent,
            format!(
                "the entry name {:?} is not one path component",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(OsStr::from_bytes(name))
}

impl<'a> Walk<'_, 'a> {
    fn charge(&mut self, block: &[u8]) -> Result<(), UnpackError> {
        self.spent = self
            .spent
            .saturating_add(block.len() as u64)
            .saturating_add(VISIT_CHARGE);
        if self.spent > self.budget {
            return Err(UnpackError::Budget(self.budget));
        }
        Ok(())
    }

    fn run(&mut self, root: Cid, dest: &Path) -> Result<(), UnpackError> {
        let mut names: Vec<HashSet<Vec<u8>>> = Vec::new();
        let mut tasks = vec![Task::Entry(root, Rc::new(dest.to_path_buf()), None)];
        let mut first = true;
        while let Some(task) = tasks.pop() {
            let is_root = std::mem::take(&mut first);
            match task {
                Task::Entry(cid, folder, name) => {
                    let path = match name {
                        Some(name) => folder.join(name),
                        None => folder.as_ref().clone(),
                    };
                    drop(folder);
                    self.entry(cid, path, is_root, &mut tasks, &mut names)?
                }
                Task::Shard(cid, path, set) => {
                    let block = self.car.block(&cid)?;
                    self.charge(block)?;
                    let n = decode(cid, block)?;
                    if n.data.kind != unixfs::TYPE_HAMT_SHARD {
                        return Err(invalid(
                            cid,
                            "a HAMT shard links to a sub-shard that is not one",
                        ));
                    }
                    self.shard_links(cid, &n, path, set, &mut tasks, &mut names)?;
                }
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        cid: Cid,
        path: PathBuf,
        is_root: bool,
        tasks: &mut Vec<Task<'a>>,
        names: &mut Vec<HashSet<Vec<u8>>>,
    ) -> Result<(), UnpackError> {
        self.done.entries += 1;
        if cid.codec() == RAW {
            return self.file(cid, &path);
        }
        let block = self.car.block(&cid)?;
        let n = decode(cid, block)?;
        match n.data.kind {
            unixfs::TYPE_FILE | unixfs::TYPE_RAW => self.file(cid, &path),
            unixfs::TYPE_DIRECTORY => {
                self.charge(block)?;
                self.folder(&path, is_root)?;
                let folder = Rc::new(path);
                let mut previous: Option<&[u8]> = None;
                let mut children = Vec::with_capacity(n.node.links.len());
                for link in &n.node.links {
                    let name = check_name(cid, link.name)?;
                    if previous.is_some_and(|p| p >= link.name) {
                        return Err(invalid(
                            cid,
                            "folder entries are not sorted by name, or a name appears twice",
                        ));
                    }
                    previous = Some(link.name);
                    children.push(Task::Entry(
                        link_cid(cid, link.hash)?,
                        folder.clone(),
                        Some(name),
                    ));
                }
                tasks.extend(children.into_iter().rev());
                Ok(())
            }
            unixfs::TYPE_HAMT_SHARD => {
                self.charge(block)?;
                self.folder(&path, is_root)?;
                names.push(HashSet::new());
                let set = names.len() - 1;
                self.shard_links(cid, &n, Rc::new(path), set, tasks, names)
            }
            unixfs::TYPE_SYMLINK => {
                self.charge(block)?;
                if n.data.data.is_empty() || n.data.data.contains(&0) {
                    return Err(invalid(
                        cid,
                        "a symlink with an empty target or a NUL in it",
                    ));
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(n.data.data), &path)
                    .map_err(write_err(&path))
            }
            other => Err(invalid(
                cid,
                format!("UnixFS type {other} is not a file, folder or symlink"),
            )),
        }
    }

    /// Creates a folder, or takes the existing empty folder `path` for the root.
    fn folder(&mut self, path: &Path, is_root: bool) -> Result<(), UnpackError> {
        if is_root && path.is_dir() {
            let mut entries = std::fs::read_dir(path).map_err(write_err(path))?;
            if entries.next().is_some() {
                return Err(UnpackError::Write {
                    path: path.to_path_buf(),
                    cause: io::Error::new(io::ErrorKind::AlreadyExists, "the folder is not empty"),
                });
            }
            return Ok(());
        }
        std::fs::create_dir(path).map_err(write_err(path))
    }

    /// A HAMT shard's links: `XX` alone is a sub-shard, `XXname` an entry (XX: the bucket
    /// index in upper-case hex, as many digits as `fanout - 1` has).
    fn shard_links(
        &mut self,
        cid: Cid,
        n: &UnixfsNode<'a>,
        path: Rc<PathBuf>,
        set: usize,
        tasks: &mut Vec<Task<'a>>,
        names: &mut [HashSet<Vec<u8>>],
    ) -> Result<(), UnpackError> {
        let prefix = hamt_prefix(cid, n)?;
        let mut children = Vec::with_capacity(n.node.links.len());
        for link in &n.node.links {
            let target = link_cid(cid, link.hash)?;
            if link.name.len() < prefix {
                return Err(invalid(
                    cid,
                    "a HAMT link name shorter than its bucket index",
                ));
            }
            let entry = &link.name[prefix..];
            if entry.is_empty() {
                children.push(Task::Shard(target, path.clone(), set));
                continue;
            }
            let name = check_name(cid, entry)?;
            if !names[set].insert(entry.to_vec()) {
                return Err(invalid(
                    cid,
                    format!("the name {:?} appears twice in one folder", name),
                ));
            }
            children.push(Task::Entry(target, path.clone(), Some(name)));
        }
        tasks.extend(children.into_iter().rev());
        Ok(())
    }

    /// Writes the file rooted at `root` (a raw leaf or a UnixFS file DAG), its blocks in
    /// order: each node's own data, then its links' content.
    fn file(&mut self, root: Cid, path: &Path) -> Result<(), UnpackError> {
        let file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(write_err(path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        self.copy_file(root, &mut out, path)?;
        out.flush().map_err(write_err(path))
    }

    /// The content of the file at `root` into `out` (`path` names it in errors).
    fn copy_file(
        &mut self,
        root: Cid,
        out: &mut impl Write,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let mut stack = vec![root];
        while let Some(cid) = stack.pop() {
            let block = self.car.block(&cid)?;
            self.charge(block)?;
            let content = if cid.codec() == RAW {
                block
            } else {
                let n = decode(cid, block)?;
                if !matches!(n.data.kind, unixfs::TYPE_FILE | unixfs::TYPE_RAW) {
                    return Err(invalid(
                        cid,
                        "a file links to a block that is not file data",
                    ));
                }
                for link in n.node.links.iter().rev() {
                    stack.push(link_cid(cid, link.hash)?);
                }
                n.data.data
            };
            out.write_all(content).map_err(write_err(path))?;
            self.done.bytes += content.len() as u64;
        }
        Ok(())
    }
}

/// The length of a HAMT shard's bucket index in its link names: as many upper-case hex
/// digits as `fanout - 1` has (the fanout a power of two, 2 to 65536).
fn hamt_prefix(cid: Cid, n: &UnixfsNode<'_>) -> Result<usize, UnpackError> {
    let fanout = n
        .data
        .fanout
        .filter(|f| f.is_power_of_two() && (2..=1 << 16).contains(f))
        .ok_or_else(|| invalid(cid, "a HAMT shard without a power-of-two fanout"))?;
    Ok(format!("{:X}", fanout - 1).len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::CidVersion;
    use crate::dagpb::PbLink;
    use crate::{Hasher, Options, Profile};

    fn car_of(dir: &Path, opts: &Options) -> (Cid, Vec<u8>) {
        let mut car = Vec::new();
        let root = Hasher::new(opts.clone())
            .car(&mut car)
            .hash_path(dir)
            .unwrap()
            .root;
        (root, car)
    }

    fn sample_tree(root: &Path) {
        std::fs::create_dir_all(root.join("a/b/empty")).unwrap();
        std::fs::write(
            root.join("a/b/big"),
            (0..1_500_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(root.join("a/zeros"), vec![0u8; 600_000]).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join(".hidden"), b"h\n").unwrap();
        std::fs::write(root.join("hello"), b"hello\n").unwrap();
        std::os::unix::fs::symlink("a/b/big", root.join("link")).unwrap();
    }

    /// A folder's entries are listed by name in their order with their CIDs, each
    /// entry's kind is its UnixFS type (a raw leaf a file's bytes), and listing anything
    /// but a plain folder is an error.
    #[test]
    fn a_folders_entries_and_their_kinds_are_read_without_unpacking() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let opts = Options::profile(profile).with_hidden(true);
            let (root, bytes) = car_of(&src, &opts);
            let car = Car::parse(&bytes).unwrap();
            let entries = car.entries(root).unwrap();
            let names: Vec<&[u8]> = entries.iter().map(|(n, _)| *n).collect();
            assert_eq!(
                names,
                [&b".hidden"[..], b"a", b"empty", b"hello", b"link"],
                "{profile:?}"
            );
            let kind = |name: &[u8]| {
                let c = entries.iter().find(|(n, _)| *n == name).unwrap().1;
                car.kind(c).unwrap()
            };
            assert_eq!(kind(b"a"), unixfs::TYPE_DIRECTORY);
            assert_eq!(kind(b"link"), unixfs::TYPE_SYMLINK);
            let hello = kind(b"hello");
            assert!(
                matches!(hello, unixfs::TYPE_FILE | unixfs::TYPE_RAW),
                "{hello}"
            );
            let file = entries.iter().find(|(n, _)| *n == b"hello").unwrap().1;
            assert!(car.entries(file).is_err());
        }
    }

    #[test]
    fn trees_come_back_with_the_same_cid_under_both_profiles() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let opts = Options::profile(profile).with_hidden(true);
            let (root, bytes) = car_of(&src, &opts);
            let car = Car::parse(&bytes).unwrap();
            assert_eq!(car.root(), root);
            let dest = t.path().join(format!("out-{profile}"));
            let done = car.unpack(&dest, u64::MAX).unwrap();
            assert_eq!(done.bytes, 1_500_000 + 600_000 + 2 + 6);
            assert_eq!(
                crate::hash_path(&dest, &opts).unwrap().root,
                root,
                "{profile}"
            );
            assert_eq!(
                std::fs::read_link(dest.join("link")).unwrap(),
                Path::new("a/b/big")
            );
            assert!(dest.join("a/b/empty").is_dir());
        }
    }

    #[test]
    fn sharded_folders_and_single_files_unpack() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("many");
        std::fs::create_dir(&src).unwrap();
        for i in 0..300 {
            std::fs::write(src.join(format!("file-{i}")), format!("{i}")).unwrap();
        }
        let mut opts = Options::profile(Profile::UnixfsV1_2025);
        opts.hamt_threshold = 1000;
        let (root, bytes) = car_of(&src, &opts);
        let into = t.path().join("into");
        std::fs::create_dir(&into).unwrap();
        let done = Car::parse(&bytes).unwrap().unpack(&into, u64::MAX).unwrap();
        assert_eq!(done.entries, 301);
        assert_eq!(crate::hash_path(&into, &opts).unwrap().root, root);

        let (_, bytes) = car_of(&src.join("file-7"), &opts);
        let file = t.path().join("file");
        Car::parse(&bytes).unwrap().unpack(&file, u64::MAX).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"7");
        // Not into a folder that holds something, and never over a file.
        let e = Car::parse(&bytes)
            .unwrap()
            .unpack(&file, u64::MAX)
            .unwrap_err();
        assert!(matches!(e, UnpackError::Write { .. }), "{e}");
    }

    #[test]
    fn corrupt_missing_and_over_budget_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        let (_, mut bytes) = car_of(&src, &Options::profile(Profile::UnixfsV0_2015));
        let e = Car::parse(&bytes)
            .unwrap()
            .unpack(&t.path().join("small"), 100_000)
            .unwrap_err();
        assert!(matches!(e, UnpackError::Budget(100_000)), "{e}");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(Car::parse(&bytes), Err(UnpackError::Corrupt(_))));
        bytes.truncate(last);
        assert!(matches!(Car::parse(&bytes), Err(UnpackError::Format(_))));
        assert!(matches!(Car::parse(b"\x01"), Err(UnpackError::Format(_))));

        // A CAR whose root links a block it does not hold.
        let absent = Cid::of_block(CidVersion::V1, RAW, b"absent");
        let dir = dir_block(&[("x", absent)]);
        let root = Cid::of_block(CidVersion::V0, DAG_PB, &dir);
        let bytes = crate::car::assemble_unchecked(&root, &[(root, dir)]);
        let e = Car::parse(&bytes)
            .unwrap()
            .unpack(&t.path().join("m"), u64::MAX)
            .unwrap_err();
        assert!(matches!(e, UnpackError::Missing(c) if c == absent), "{e}");
    }

    #[test]
    fn expanded_sizes_are_what_unpacking_writes_and_costs() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        sample_tree(&src);
        for i in 0..300 {
            std::fs::write(src.join(format!("many-{i}")), format!("{i}")).unwrap();
        }
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let mut opts = Options::profile(profile).with_hidden(true);
            opts.hamt_threshold = 1000;
            let (root, bytes) = car_of(&src, &opts);
            let car = Car::parse(&bytes).unwrap();
            let size = car.expanded(root).unwrap();
            let done = car
                .unpack(&t.path().join(format!("all-{profile}")), size.work)
                .unwrap();
            assert_eq!((size.bytes, size.entries), (done.bytes, done.entries));
            // The work is exactly the budget the walk needs: one byte less is refused.
            let e = car
                .unpack(&t.path().join(format!("less-{profile}")), size.work - 1)
                .unwrap_err();
            assert!(matches!(e, UnpackError::Budget(_)), "{e}");
        }
    }

    /// 40 levels of folders, each linking the one below twice: 2^40 paths described by
    /// 41 blocks. The size is known at once, and is what the walk would meet.
    #[test]
    fn a_car_of_more_blocks_than_allowed_is_refused_while_parsed() {
        let blocks: Vec<(Cid, Vec<u8>)> = (0..10u8)
            .map(|i| (Cid::of_block(CidVersion::V1, RAW, &[i]), vec![i]))
            .collect();
        let bytes = crate::car::assemble_unchecked(&blocks[0].0, &blocks);
        assert_eq!(Car::parse_within(&bytes, 10).unwrap().blocks(), 10);
        let e = Car::parse_within(&bytes, 9).err().unwrap().to_string();
        assert!(e.contains("more blocks than"), "{e}");
    }

    /// Found by review: a sharded folder whose one shard links 500,000 times to one
    /// sub-shard, 14 folders deep, queued a copy of its 4 KB path per link (1.9 GB from
    /// 22 MB). Queued links share their folder's path now; this one unpacks.
    #[test]
    fn a_shard_linking_one_sub_shard_many_times_unpacks() {
        let empty = dagpb::encode_node(&[], &unixfs::hamt_shard(&[0], 0x22, 256));
        let empty_cid = Cid::of_block(CidVersion::V1, DAG_PB, &empty);
        let links: Vec<PbLink> = (0..256)
            .map(|i| PbLink {
                cid: empty_cid,
                name: format!("{i:02X}"),
                tsize: 0,
            })
            .collect();
        let root = dagpb::encode_node(&links, &unixfs::hamt_shard(&[0xff; 32], 0x22, 256));
        let root_cid = Cid::of_block(CidVersion::V1, DAG_PB, &root);
        let bytes =
            crate::car::assemble_unchecked(&root_cid, &[(root_cid, root), (empty_cid, empty)]);
        let car = Car::parse(&bytes).unwrap();
        let t = tempfile::tempdir().unwrap();
        let done = car.unpack(&t.path().join("d"), u64::MAX).unwrap();
        assert_eq!(done.entries, 1);
        assert!(t.path().join("d").is_dir());
    }

    #[test]
    fn the_expanded_size_of_a_doubling_dag_costs_its_blocks_not_its_paths() {
        let leaf = b"x".to_vec();
        let mut below = Cid::of_block(CidVersion::V1, RAW, &leaf);
        let mut blocks = vec![(below, leaf)];
        for _ in 0..40 {
            let dir = dir_block(&[("a", below), ("b", below)]);
            below = Cid::of_block(CidVersion::V0, DAG_PB, &dir);
            blocks.push((below, dir));
        }
        blocks.reverse();
        let bytes = crate::car::assemble_unchecked(&below, &blocks);
        let car = Car::parse(&bytes).unwrap();
        let start = std::time::Instant::now();
        let size = car.expanded(below).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(size.bytes, 1 << 40);
        assert_eq!(size.entries, (1u64 << 41) - 1);
        // A file's DAG and a file written to memory.
        let part = vec![7u8; 1000];
        let part_cid = Cid::of_block(CidVersion::V1, RAW, &part);
        let links: Vec<PbLink> = (0..5)
            .map(|_| PbLink {
                cid: part_cid,
                name: String::new(),
                tsize: 1000,
            })
            .collect();
        let file = dagpb::encode_node(&links, &unixfs::file_node(5000, &[1000; 5]));
        let file_cid = Cid::of_block(CidVersion::V0, DAG_PB, &file);
        let bytes =
            crate::car::assemble_unchecked(&file_cid, &[(file_cid, file), (part_cid, part)]);
        let car = Car::parse(&bytes).unwrap();
        let size = car.expanded(file_cid).unwrap();
        assert_eq!((size.bytes, size.entries), (5000, 1));
        let mut out = Vec::new();
        assert_eq!(car.write_file(file_cid, &mut out, size.work).unwrap(), 5000);
        assert_eq!(out, vec![7u8; 5000]);
        assert!(car.contains(&part_cid));
        assert!(matches!(
            car.write_file(file_cid, &mut Vec::new(), size.work - 1),
            Err(UnpackError::Budget(_))
        ));
    }

    fn dir_block(entries: &[(&str, Cid)]) -> Vec<u8> {
        let links: Vec<PbLink> = entries
            .iter()
            .map(|(n, c)| PbLink {
                cid: *c,
                name: (*n).into(),
                tsize: 1,
            })
            .collect();
        dagpb::encode_node(&links, &unixfs::directory())
    }

    #[test]
    fn names_that_leave_the_folder_or_repeat_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let leaf = b"x".to_vec();
        let leaf_cid = Cid::of_block(CidVersion::V1, RAW, &leaf);
        let link = dagpb::encode_node(&[], &unixfs::symlink(b"/etc"));
        let link_cid = Cid::of_block(CidVersion::V0, DAG_PB, &link);
        let cases: Vec<(&str, Vec<(&str, Cid)>)> = vec![
            ("dotdot", vec![("..", leaf_cid)]),
            ("slash", vec![("a/b", leaf_cid)]),
            ("empty", vec![("", leaf_cid)]),
            // A symlink, then a folder entry of the same name written through it.
            ("twice", vec![("s", link_cid), ("s", leaf_cid)]),
            ("unsorted", vec![("b", leaf_cid), ("a", leaf_cid)]),
        ];
        for (what, entries) in cases {
            let dir = dir_block(&entries);
            let root = Cid::of_block(CidVersion::V0, DAG_PB, &dir);
            let bytes = crate::car::assemble_unchecked(
                &root,
                &[
                    (root, dir),
                    (leaf_cid, leaf.clone()),
                    (link_cid, link.clone()),
                ],
            );
            let e = Car::parse(&bytes)
                .unwrap()
                .unpack(&t.path().join(what), u64::MAX)
                .unwrap_err();
            assert!(matches!(e, UnpackError::Invalid { .. }), "{what}: {e}");
        }
        assert!(!t.path().join("x").exists() && !Path::new("/etc/x").exists());
    }
}
