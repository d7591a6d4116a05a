//! The guest's filesystem: a virtual tree owned by the runtime.
//!
//! Decision: the guest never sees a host filesystem. Each input is scanned once at the
//! start of the job into a tree of names (sorted by name bytes), sizes and symlink
//! targets; file contents are read on demand through a `cap_std::fs::Dir` opened on the
//! input root, so a read can never leave the mount even if the host tree changes under
//! us. Output volumes live in memory and are written to the results directory when the
//! run ends. Everything the guest can observe about a node — its inode (creation order),
//! link count (1), directory size (a constant), times (the virtual clock), listing order
//! (name bytes, `.` and `..` first) — is a function of the job.
//!
//! Rejected alternative: wrapping wasmtime-wasi's preview1 host and rewriting what it
//! writes into guest memory (listing order, inodes, times). wasmtime-wasi 48 has no
//! pluggable filesystem, so that means shadowing ~12 imports and parsing their outputs
//! back out of guest memory; a missed field (e.g. `d_ino` inside a readdir buffer, or an
//! mtime reached through `fd_filestat_get` on a freshly opened fd) silently leaks the
//! host, and outputs would be written straight to a host directory without a quota.
//! A tree of our own has no host path to leak.
//!
//! Guest symlinks are resolved by the runtime inside the mount (relative targets only,
//! at most [`MAX_SYMLINKS`] hops, `..` never above the mount root): a link pointing out of
//! the mount fails with `ENOTCAPABLE`, and its target is never followed on the host.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::abi::{
    Errno, Filestat, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SYMBOLIC_LINK,
};

pub type NodeId = usize;

/// Symlink hops allowed in one path resolution (Linux's MAXSYMLINKS).
pub const MAX_SYMLINKS: u32 = 40;
/// `st_size` of every directory: a constant (hosts report 4096, or an entry count on
/// tmpfs and btrfs).
pub const DIR_SIZE: u64 = 4096;
/// `st_nlink` of every node that has no hard link (`path_link`): a constant (hosts
/// count subdirectories, or not). A file with hard links reports its names.
pub const NLINK: u64 = 1;
/// Longest name of one entry, in bytes (`ENAMETOOLONG` beyond): every host filesystem
/// the results are written to accepts it.
pub const MAX_NAME: usize = 255;
/// Longest path a guest may pass to a path function, in bytes (`ENAMETOOLONG` beyond):
/// Linux's `PATH_MAX`. Resolution work and memory are proportional to the path, so the
/// cap bounds both before anything is looked at.
pub const MAX_PATH: usize = 4096;
/// Longest path of an entry inside an output volume, from the volume's root (`a/b` is 3
/// bytes). Results are written to and hashed on the host by path; with this cap a results
/// folder whose own host path is shorter than `PATH_MAX - MAX_VOLUME_PATH - 64` (about
/// 2000 bytes) can always be written, so a deep tree is a deterministic `ENAMETOOLONG` in
/// the guest, never a host failure at delivery. Rejected: no cap (a guest could make its
/// own results undeliverable, and whether it did would depend on the operator's folder).
pub const MAX_VOLUME_PATH: usize = 2048;
/// Deepest entry inside an output volume (`ENAMETOOLONG` beyond, as Linux answers for a
/// path it cannot hold): keeps every recursive walk of a results tree (export, hashing)
/// far from the host's stack limit.
pub const MAX_DEPTH: u32 = 256;
/// Entries the guest may create and keep at once across all output volumes (`ENOSPC`
/// beyond).
pub const MAX_ENTRIES: u64 = 1 << 20;
/// Bytes of output quota every entry of an output volume costs on top of its name and
/// content: the host memory behind it (its node, its slot in the directory's map, the
/// name's allocation) rounded up, so that a million empty files are charged, not free.
pub const ENTRY_OVERHEAD: u64 = 256;
/// Entries the scans of a job's inputs may find, over all its input mounts together
/// (the mount roots not counted): the output volumes' [`MAX_ENTRIES`], so the scanned
/// trees cost the host at most what a guest's own outputs may. Counted as each
/// directory is listed, so a scan over it stops at the entry that passes it, without
/// listing the rest; a mount of a folder named by several inputs counts each time (each
/// mount has a tree of its own). Rejected: a cap per mount (256 inputs would multiply
/// it by 256: a review's 250 mounts of one 20,000-file folder took 3.4 GiB); sharing
/// one read-only tree between the mounts of one folder (bounds the repeat, not one
/// large folder, and nodes carry their mount).
pub const MAX_INPUT_ENTRIES: u64 = 1 << 20;
/// Bytes of names, host paths below the mount (each entry keeps its own, to reopen
/// it) and symlink targets the scans of a job's inputs may hold, over all its input
/// mounts together. [`MAX_INPUT_ENTRIES`] alone does not bound their memory: the host
/// lets a path be 4,095 bytes and a link target as long, so a million deep entries
/// would hold about 8 GiB of paths. 256 MiB is 256 bytes per entry at the entry cap,
/// far above real trees (`data/train/000123.jpg` is 20). Rejected: rebuilding each
/// path from the parent chain (a writable folder's entry keeps its host path when the
/// guest moves it).
pub const MAX_INPUT_BYTES: u64 = 256 << 20;
/// Input files kept open at once (on the host). Reads reopen a file through the mount's
/// handle when it is not among them: a job may read thousands of input files under the
/// usual `ulimit -n 1024`, and the host's fd table does not grow with the guest's calls.
pub const HOST_FILES_OPEN: usize = 64;

pub enum Kind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(Content),
    Symlink(Vec<u8>),
    /// A hard link: another name of the file (or symlink) at this node (its *primary*: a
    /// file in memory or a symlink, never a link), made by `path_link` in an output
    /// volume or writable folder. Resolving a path that ends at a link gives the primary, so every guest fd
    /// and every read, write, stat and time refers to the one file; removing or renaming
    /// the name moves only the link. Each name is delivered as a full copy (results are
    /// UnixFS trees, which have no hard links), so each is charged to the output quota
    /// as a copy: the file's bytes count once per link besides its own. Rejected: a node
    /// per inode with a list of names (every node's place in the tree, its depth and
    /// path, would become one per name, throughout the filesystem and its snapshots);
    /// refusing `path_link` (`ENOTSUP`: the one test of the official WASI suite detwasm
    /// failed).
    Link(NodeId),
}

pub enum Content {
    /// A file of an input, read through the mount's `cap_std` handle.
    Host { size: u64 },
    /// A file in an output volume.
    Mem(Vec<u8>),
}

/// What identifies an input entry on the host at the time it was scanned. Compared again
/// at the end of the run: an input that changed under the guest (content, size, or the
/// entry replaced) is detected, so a receipt never names input CIDs the guest did not
/// read. The change time moves with every write and cannot be set by a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl HostStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        HostStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

pub struct Node {
    pub kind: Kind,
    pub parent: NodeId,
    pub mount: usize,
    pub ino: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
    /// Components below the mount root (the root is 0).
    depth: u32,
    /// Bytes of the path from the mount root (`a/b` is 3; the root 0).
    path_len: u32,
    /// Guest fds that refer to this node.
    open: u32,
    /// Removed from its directory while still open: alive (and charged) until closed.
    orphan: bool,
    /// Quota bytes this node's entry holds ([`ENTRY_OVERHEAD`] + name); 0 for entries
    /// that came from the host (inputs, the initial content of writable folders) and
    /// mount roots.
    entry_charge: u64,
    /// Bytes of its name in its directory.
    name_len: u32,
    /// For input nodes: the path below the mount's host root and the stamp seen at scan.
    host: Option<(PathBuf, HostStamp)>,
    /// For a file: the hard links to it ([`Kind::Link`] nodes naming it). A file with
    /// links whose own name is removed stays ([`Node::orphan`]) while any is left.
    links: u32,
}

pub struct Mount {
    pub guest: String,
    pub root: NodeId,
    pub writable: bool,
    host: Option<(cap_std::fs::Dir, PathBuf)>,
}

/// Raised when a write would take the output volumes plus stdout/stderr over the quota.
#[derive(Debug)]
pub struct QuotaExceeded;

/// Why a write did not happen: an errno for the guest, the quota (ends the run), or a
/// failure of the host (ends the run, never a verifiable result).
pub enum WriteError {
    Errno(Errno),
    Quota(QuotaExceeded),
}

impl From<Errno> for WriteError {
    fn from(e: Errno) -> Self {
        WriteError::Errno(e)
    }
}

/// Why copying a host file into memory failed: reading it, or placing it.
pub enum HostOrWrite {
    Read(ReadError),
    Write(WriteError),
}

/// Whether symlink `target`, in a directory `depth` levels below its volume's root, may
/// lead out of the volume: absolute, a leading run of `..` that climbs above the root, or
/// a `..` after a name. Why the last: a name in the target may itself be a symlink, and
/// the host resolves `name/..` physically (through that link), not lexically, so
/// `u/../x` with `u -> ..` would leave the folder though it reads as staying inside
/// (rejected: counting `..` lexically through the whole target). With `..` only leading,
/// the climb goes through real directories and every later name is a link checked the
/// same way from where it sits, so no chain of links leads out.
pub fn escapes(target: &[u8], depth: u32) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut d = i64::from(depth);
    let mut named = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                d -= 1;
                if d < 0 || named {
                    return true;
                }
            }
            _ => named = true,
        }
    }
    false
}

/// Why a read did not happen: an errno for the guest, or a failure of the host (I/O
/// error, no file descriptor left, an input changed under us), which ends the run as a
/// run error: it must never reach the guest as an errno it could act on.
pub enum ReadError {
    Errno(Errno),
    Host(String),
    /// The job's wall-clock deadline passed during host work the fuel does not pay for
    /// in full ([`Vfs::host_file`]'s reopens): the run ends as a timeout.
    Timeout,
}

impl From<Errno> for ReadError {
    fn from(e: Errno) -> Self {
        ReadError::Errno(e)
    }
}

pub struct Vfs {
    nodes: Vec<Option<Node>>,
    /// Slots of freed nodes, reused first, so a create/remove loop does not grow the
    /// table.
    free: Vec<NodeId>,
    pub mounts: Vec<Mount>,
    next_ino: u64,
    /// Bytes charged to the output quota by the volumes: entries and file contents.
    pub used: u64,
    /// Entries created by the guest and still alive.
    entries: u64,
    host_files: HashMap<NodeId, std::fs::File>,
    /// Host work done since [`Vfs::take_work`] was last called (path components stepped,
    /// symlink targets expanded, nodes walked), for the host to charge as fuel.
    work: std::cell::Cell<u64>,
    /// Entries and bytes the input scans have found so far ([`MAX_INPUT_ENTRIES`],
    /// [`MAX_INPUT_BYTES`]).
    scanned: (u64, u64),
    /// The most they may reach: those two constants (smaller in tests).
    scan_limit: (u64, u64),
    /// When input scans give up ([`Vfs::scan_until`]), and whether one did.
    scan_deadline: Option<std::time::Instant>,
    scan_timed_out: bool,
}

fn file_name_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Grows `buf` to hold `needed` bytes with bounded slack: exactly for small buffers,
/// then by at most an eighth (and at most 1 MiB) more than needed. Host memory behind a
/// buffer is then at most 9/8 of its length + 64 bytes, where `Vec`'s doubling could
/// hold twice the length. The slack is invisible to the guest (the quota charges the
/// length only), so results do not depend on this policy.
pub fn grow(buf: &mut Vec<u8>, needed: usize) {
    if needed > buf.capacity() {
        let slack = (buf.len() / 8).clamp(64, 1 << 20);
        buf.reserve_exact(needed - buf.len() + slack);
    }
}

impl Default for Vfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Vfs {
    pub fn new() -> Self {
        Vfs {
            nodes: Vec::new(),
            free: Vec::new(),
            mounts: Vec::new(),
            next_ino: 1,
            used: 0,
            entries: 0,
            host_files: HashMap::new(),
            work: std::cell::Cell::new(0),
            scanned: (0, 0),
            scan_limit: (MAX_INPUT_ENTRIES, MAX_INPUT_BYTES),
            scan_deadline: None,
            scan_timed_out: false,
        }
    }

    fn alloc(&mut self, kind: Kind, parent: Option<NodeId>, mount: usize, time: u64) -> NodeId {
        let id = self.free.pop().unwrap_or(self.nodes.len());
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node {
            kind,
            parent: parent.unwrap_or(id),
            mount,
            ino,
            atim: time,
            mtim: time,
            ctim: time,
            depth: 0,
            path_len: 0,
            open: 0,
            orphan: false,
            entry_charge: 0,
            name_len: 0,
            host: None,
            links: 0,
        };
        if id == self.nodes.len() {
            self.nodes.push(Some(node));
        } else {
            self.nodes[id] = Some(node);
        }
        id
    }

    /// Frees a node nothing refers to any more: its content's memory is released and its
    /// charge returned to the quota. A hard link returns its name and its copy of the
    /// file's bytes, and frees the file too when that was its last name and no fd refers
    /// to it.
    fn release(&mut self, id: NodeId) {
        if let Some(n) = self.nodes[id].take() {
            let content = match &n.kind {
                Kind::File(Content::Mem(d)) => d.len() as u64,
                Kind::Link(primary) => self.size(*primary),
                _ => 0,
            };
            self.used -= n.entry_charge + content;
            if n.entry_charge > 0 {
                self.entries -= 1;
            }
            self.free.push(id);
            if let Kind::Link(primary) = n.kind {
                let p = self.node_mut(primary);
                p.links -= 1;
                if p.links == 0 && p.open == 0 && p.orphan {
                    self.release(primary);
                }
            }
        }
    }

    /// The output quota used, counted again from every node (each entry's charge, each
    /// file in memory once per name): what [`Vfs::used`] must equal after every call.
    /// For the fuzz target (`detwasm_runtime::wasi_fuzz`), which checks it.
    pub fn used_recounted(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(|n| match &n.kind {
                Kind::File(Content::Mem(d)) => {
                    n.entry_charge + d.len() as u64 * (1 + u64::from(n.links))
                }
                // A symlink's target is in its own entry's charge, and in each link's.
                Kind::Link(p) => match self.nodes[*p].as_ref().map(|p| &p.kind) {
                    Some(Kind::Symlink(t)) => n.entry_charge + t.len() as u64,
                    _ => n.entry_charge,
                },
                _ => n.entry_charge,
            })
            .sum()
    }

    /// The file a node names: itself, or the primary of a hard link.
    pub fn inode(&self, id: NodeId) -> NodeId {
        match self.node(id).kind {
            Kind::Link(primary) => primary,
            _ => id,
        }
    }

    /// How many copies of a file's bytes its names are charged (its own and one per
    /// hard link).
    fn copies(&self, id: NodeId) -> u64 {
        1 + u64::from(self.node(id).links)
    }

    /// Whether `id` is a node now (not a free slot, not past the table).
    pub fn live(&self, id: NodeId) -> bool {
        self.nodes.get(id).is_some_and(|n| n.is_some())
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().expect("live node")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().expect("live node")
    }

    fn work(&self, units: u64) {
        self.work.set(self.work.get().saturating_add(units));
    }

    /// The host work done since the last call (in fuel units), and starts counting anew.
    pub fn take_work(&self) -> u64 {
        self.work.replace(0)
    }

    /// A guest fd now refers to `id`.
    pub fn opened(&mut self, id: NodeId) {
        self.node_mut(id).open += 1;
    }

    /// A guest fd referring to `id` was closed: an unlinked node with no fd left is freed.
    pub fn closed(&mut self, id: NodeId) {
        let n = self.node_mut(id);
        n.open = n.open.saturating_sub(1);
        if n.open == 0 && n.orphan && n.links == 0 {
            self.release(id);
        }
    }

    fn insert(&mut self, dir: NodeId, name: Vec<u8>, child: NodeId) {
        if let Kind::Dir(entries) = &mut self.node_mut(dir).kind {
            entries.insert(name, child);
        }
    }

    pub fn is_dir(&self, id: NodeId) -> bool {
        matches!(self.node(id).kind, Kind::Dir(_))
    }

    pub fn writable(&self, id: NodeId) -> bool {
        self.mounts[self.node(id).mount].writable
    }

    fn is_mount_root(&self, id: NodeId) -> bool {
        self.mounts[self.node(id).mount].root == id
    }
}

mod change;
mod content;
mod export;
mod lookup;
mod mount;
pub mod snapshot;

#[cfg(test)]
mod tests {
    use super::*;

    fn input_tree() -> (tempfile::TempDir, Vfs) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("d/e")).unwrap();
        std::fs::write(r.join("d/e/f"), b"f").unwrap();
        std::os::unix::fs::symlink("b", r.join("a")).unwrap();
        std::os::unix::fs::symlink("a", r.join("b")).unwrap();
        std::os::unix::fs::symlink("d/e", r.join("to_e")).unwrap();
        std::os::unix::fs::symlink("../..", r.join("d/up2")).unwrap();
        let mut vfs = Vfs::new();
        vfs.mount_input(r, "/in", 7).unwrap();
        vfs.mount_output("/out", 7);
        (t, vfs)
    }

    #[test]
    fn resolution_stays_inside_the_mount() {
        let (_t, vfs) = input_tree();
        let root = vfs.mounts[0].root;
        let f = vfs.resolve(root, b"d/e/f", true).unwrap();
        assert_eq!(vfs.size(f), 1);
        assert_eq!(vfs.resolve(root, b"to_e/f", true).unwrap(), f);
        assert_eq!(vfs.resolve(root, b"d/./e/../e/f", true).unwrap(), f);
        assert_eq!(vfs.resolve(root, b"..", true), Err(Errno::NOTCAPABLE));
        assert_eq!(vfs.resolve(root, b"d/../..", true), Err(Errno::NOTCAPABLE));
        assert_eq!(vfs.resolve(root, b"d/up2/x", true), Err(Errno::NOTCAPABLE));
        assert_eq!(vfs.resolve(root, b"/etc", true), Err(Errno::NOTCAPABLE));
        assert_eq!(vfs.resolve(root, b"a", true), Err(Errno::LOOP));
        assert!(vfs.resolve(root, b"a", false).is_ok());
        assert_eq!(vfs.resolve(root, b"d/e/f/", true), Err(Errno::NOTDIR));
        assert_eq!(vfs.resolve(root, b"nope", true), Err(Errno::NOENT));
    }

    #[test]
    fn listing_is_sorted_with_dot_entries_first_and_constant_metadata() {
        let (_t, vfs) = input_tree();
        let root = vfs.mounts[0].root;
        let names: Vec<Vec<u8>> = vfs.list_from(root, 0, None).map(|e| e.1.to_vec()).collect();
        let want: Vec<&[u8]> = vec![b".", b"..", b"a", b"b", b"d", b"to_e"];
        assert_eq!(names, want);
        let d = vfs.resolve(root, b"d", true).unwrap();
        let st = vfs.filestat(d);
        assert_eq!((st.nlink, st.size, st.mtim), (NLINK, DIR_SIZE, 7));
        // Inodes in first-seen order of the sorted scan: root 1, a 2, b 3, d 4, d/e 5, ...
        assert_eq!(vfs.filestat(root).ino, 1);
        assert_eq!(st.ino, 4);
    }

    fn write(vfs: &mut Vfs, f: NodeId, at: u64, data: &[u8], left: u64) -> Result<(), WriteError> {
        vfs.write_at(f, at, data.len() as u64, std::iter::once(data), 9, left)
    }

    fn create(vfs: &mut Vfs, dir: NodeId, name: &[u8], is_dir: bool) -> NodeId {
        match vfs.create(dir, name.to_vec(), is_dir, 9, u64::MAX) {
            Ok(id) => id,
            Err(_) => panic!("create {:?} failed", String::from_utf8_lossy(name)),
        }
    }

    #[test]
    fn inputs_are_read_only_and_outputs_are_charged_to_the_quota() {
        let (_t, mut vfs) = input_tree();
        let (input, out) = (vfs.mounts[0].root, vfs.mounts[1].root);
        assert!(matches!(
            vfs.create(input, b"x".to_vec(), false, 9, 1000),
            Err(WriteError::Errno(Errno::ROFS))
        ));
        let f = match vfs.create(out, b"file".to_vec(), false, 9, 1000) {
            Ok(f) => f,
            Err(_) => panic!("create failed"),
        };
        assert_eq!(vfs.used, ENTRY_OVERHEAD + 4);
        assert!(write(&mut vfs, f, 0, &[1; 50], 500).is_ok());
        assert_eq!(vfs.used, ENTRY_OVERHEAD + 54);
        assert!(matches!(
            write(&mut vfs, f, 50, &[1; 47], 46),
            Err(WriteError::Quota(_))
        ));
        assert_eq!(vfs.size(f), 50);
        vfs.remove(out, b"file", false, 10).unwrap();
        assert_eq!(vfs.used, 0);
    }

    #[test]
    fn removed_files_free_their_memory_unless_open_and_slots_are_reused() {
        let (_t, mut vfs) = input_tree();
        let out = vfs.mounts[1].root;
        let before = vfs.nodes.len();
        for _ in 0..1000 {
            let f = create(&mut vfs, out, b"f", false);
            assert!(write(&mut vfs, f, 0, &[7; 4096], u64::MAX).is_ok());
            vfs.remove(out, b"f", false, 10).unwrap();
        }
        assert_eq!(vfs.used, 0);
        assert_eq!(vfs.nodes.len(), before + 1, "one slot, reused 1000 times");
        // An unlinked file that is still open stays alive and charged until closed.
        let f = create(&mut vfs, out, b"g", false);
        assert!(write(&mut vfs, f, 0, &[7; 100], u64::MAX).is_ok());
        vfs.opened(f);
        vfs.remove(out, b"g", false, 10).unwrap();
        assert_eq!(vfs.used, ENTRY_OVERHEAD + 1 + 100);
        let mut back = [0u8; 100];
        assert!(matches!(vfs.read_at(f, 0, &mut back), Ok(100)));
        vfs.closed(f);
        assert_eq!(vfs.used, 0);
        // Truncation returns the bytes to the quota and the memory to the host.
        let h = create(&mut vfs, out, b"h", false);
        assert!(write(&mut vfs, h, 0, &vec![1; 1 << 20], u64::MAX).is_ok());
        assert!(vfs.set_size(h, 10, 11, u64::MAX).is_ok());
        assert_eq!(vfs.used, ENTRY_OVERHEAD + 1 + 10);
        match &vfs.node(h).kind {
            Kind::File(Content::Mem(d)) => assert!(d.capacity() < 4096),
            _ => unreachable!(),
        }
    }

    /// Hard links: one file under two names (one inode, `nlink` 2, a write through one
    /// seen through the other), each name charged a copy of the file's bytes and every
    /// growth once per name, the file kept while any name (or fd) is left, and both names
    /// delivered as full copies.
    #[test]
    fn hard_links_name_one_file_each_charged_as_a_copy() {
        let (_t, mut vfs) = input_tree();
        let (input, out) = (vfs.mounts[0].root, vfs.mounts[1].root);
        let f = create(&mut vfs, out, b"f", false);
        assert!(write(&mut vfs, f, 0, &[1; 100], u64::MAX).is_ok());
        let sub = create(&mut vfs, out, b"sub", true);
        let charged = vfs.used;
        // Over the quota: refused, nothing changed.
        assert!(matches!(
            vfs.link(f, sub, b"g".to_vec(), 20, 100),
            Err(HostOrWrite::Write(WriteError::Quota(_)))
        ));
        assert_eq!(vfs.used, charged);
        vfs.link(f, sub, b"g".to_vec(), 20, u64::MAX).ok().unwrap();
        assert_eq!(vfs.used, charged + ENTRY_OVERHEAD + 1 + 100);
        let g = vfs.resolve(out, b"sub/g", true).unwrap();
        assert_eq!(g, f, "a path through the link reaches the file");
        let (a, b) = (
            vfs.filestat(f),
            vfs.filestat(vfs.lookup(sub, b"g").unwrap()),
        );
        assert_eq!((a.ino, a.nlink, a.ctim), (b.ino, 2, 20));
        // Growth is charged once per name; a write through one name is the other's.
        assert!(write(&mut vfs, g, 100, &[2; 10], u64::MAX).is_ok());
        assert_eq!(vfs.used, charged + ENTRY_OVERHEAD + 1 + 100 + 20);
        // Not across mounts, not to a directory, never over a name.
        let input_file = vfs.resolve(input, b"d/e/f", true).unwrap();
        assert!(matches!(
            vfs.link(input_file, out, b"x".to_vec(), 20, u64::MAX),
            Err(HostOrWrite::Write(WriteError::Errno(Errno::XDEV)))
        ));
        assert!(matches!(
            vfs.link(sub, out, b"x".to_vec(), 20, u64::MAX),
            Err(HostOrWrite::Write(WriteError::Errno(Errno::PERM)))
        ));
        assert!(matches!(
            vfs.link(f, out, b"sub".to_vec(), 20, u64::MAX),
            Err(HostOrWrite::Write(WriteError::Errno(Errno::EXIST)))
        ));
        // Both delivered, as full copies.
        let dest = tempfile::tempdir().unwrap();
        vfs.export(1, dest.path()).unwrap();
        assert_eq!(std::fs::read(dest.path().join("f")).unwrap().len(), 110);
        assert_eq!(
            std::fs::read(dest.path().join("f")).unwrap(),
            std::fs::read(dest.path().join("sub/g")).unwrap()
        );
        // The first name removed: the file stays under the other, charged once.
        vfs.remove(out, b"f", false, 30).unwrap();
        assert_eq!(vfs.resolve(out, b"sub/g", true), Ok(f));
        assert_eq!(vfs.filestat(f).nlink, 1);
        let mut back = [0u8; 110];
        assert!(matches!(vfs.read_at(f, 0, &mut back), Ok(110)));
        // A rename onto another name of the same file changes nothing.
        vfs.link(f, out, b"h".to_vec(), 40, u64::MAX).ok().unwrap();
        vfs.rename(out, b"h", sub, b"g".to_vec(), 41, u64::MAX)
            .ok()
            .unwrap();
        assert!(vfs.lookup(out, b"h").is_some());
        // The last names removed: everything returned.
        vfs.remove(out, b"h", false, 50).unwrap();
        vfs.remove(sub, b"g", false, 50).unwrap();
        // A symlink is linked as it is (a dangling one too), and followed through its
        // link; never where it would lead out of the volume.
        vfs.symlink(sub, b"s".to_vec(), b"../t".to_vec(), 60, u64::MAX)
            .ok()
            .unwrap();
        let s = vfs.lookup(sub, b"s").unwrap();
        vfs.link(s, sub, b"s2".to_vec(), 61, u64::MAX).ok().unwrap();
        assert_eq!(vfs.resolve(sub, b"s2", false), Ok(s));
        assert_eq!(vfs.resolve(out, b"sub/s2", true), Err(Errno::NOENT));
        let t = create(&mut vfs, out, b"t", false);
        assert_eq!(vfs.resolve(out, b"sub/s2", true), Ok(t));
        assert!(matches!(
            vfs.link(s, out, b"s3".to_vec(), 62, u64::MAX),
            Err(HostOrWrite::Write(WriteError::Errno(Errno::PERM)))
        ));
        let dest = tempfile::tempdir().unwrap();
        vfs.export(1, dest.path()).unwrap();
        assert_eq!(
            std::fs::read_link(dest.path().join("sub/s2")).unwrap(),
            Path::new("../t")
        );
        for (dir, name) in [(sub, &b"s"[..]), (sub, b"s2"), (out, b"t")] {
            vfs.remove(dir, name, false, 70).unwrap();
        }
        vfs.remove(out, b"sub", true, 70).unwrap();
        assert_eq!(vfs.used, 0);
        assert!(!vfs.live(f));
    }

    #[test]
    fn names_depth_and_sizes_are_bounded() {
        let (_t, mut vfs) = input_tree();
        let out = vfs.mounts[1].root;
        assert!(matches!(
            vfs.create(out, b"a\0b".to_vec(), false, 9, u64::MAX),
            Err(WriteError::Errno(Errno::INVAL))
        ));
        assert!(matches!(
            vfs.create(out, vec![b'n'; MAX_NAME + 1], false, 9, u64::MAX),
            Err(WriteError::Errno(Errno::NAMETOOLONG))
        ));
        let mut d = out;
        for _ in 0..MAX_DEPTH {
            d = create(&mut vfs, d, b"d", true);
        }
        assert!(matches!(
            vfs.create(d, b"d".to_vec(), true, 9, u64::MAX),
            Err(WriteError::Errno(Errno::NAMETOOLONG))
        ));
        // Long names reach the volume path cap before the depth cap.
        let mut d = out;
        let name = vec![b'x'; MAX_NAME];
        let mut made = 0;
        while let Ok(next) = vfs.create(d, name.clone(), true, 9, u64::MAX) {
            d = next;
            made += 1;
        }
        assert_eq!(made, (MAX_VOLUME_PATH + 1) / (MAX_NAME + 1));
        // Moving a deep tree under another deep one is refused the same way.
        let top = vfs.lookup(out, b"d").unwrap();
        assert!(matches!(
            vfs.rename(out, b"d", d, b"d".to_vec(), 9, u64::MAX),
            Err(WriteError::Errno(Errno::NAMETOOLONG))
        ));
        assert_eq!(vfs.lookup(out, b"d"), Some(top));
        let f = create(&mut vfs, out, b"big", false);
        assert!(matches!(
            vfs.set_size(f, u64::MAX, 9, u64::MAX),
            Err(WriteError::Errno(Errno::FBIG))
        ));
        assert!(matches!(
            vfs.set_size(f, i64::MAX as u64, 9, 1 << 20),
            Err(WriteError::Quota(_))
        ));
        assert!(matches!(
            write(&mut vfs, f, u64::MAX - 1, b"xy", u64::MAX),
            Err(WriteError::Errno(Errno::FBIG))
        ));
        assert!(matches!(
            write(&mut vfs, f, i64::MAX as u64, b"x", u64::MAX),
            Err(WriteError::Errno(Errno::FBIG))
        ));
        assert_eq!(vfs.size(f), 0);
    }

    #[test]
    fn listing_resumes_from_a_hint_with_the_same_positions() {
        let (_t, mut vfs) = input_tree();
        let out = vfs.mounts[1].root;
        for i in 0..50u32 {
            create(&mut vfs, out, format!("e{i:03}").as_bytes(), false);
        }
        let all: Vec<(u64, Vec<u8>)> = vfs
            .list_from(out, 0, None)
            .map(|e| (e.0, e.1.to_vec()))
            .collect();
        assert_eq!(all.len(), 52);
        assert_eq!(all[2].1, b"e000");
        let (pos, name) = all[30].clone();
        let resumed: Vec<(u64, Vec<u8>)> = vfs
            .list_from(out, pos, Some(&name))
            .map(|e| (e.0, e.1.to_vec()))
            .collect();
        assert_eq!(resumed, all[30..].to_vec());
        let skipped: Vec<(u64, Vec<u8>)> = vfs
            .list_from(out, pos, None)
            .map(|e| (e.0, e.1.to_vec()))
            .collect();
        assert_eq!(skipped, resumed);
    }

    /// A cookie (or a restored cursor) near `u64::MAX` ends the listing: positions stay
    /// below `u64::MAX`, so `position + 1` never wraps (before, a hint at `u64::MAX - 1`
    /// panicked with overflow checks on at the second entry, and wrapped to 0 without).
    #[test]
    fn readdir_positions_near_u64_max_end_the_listing_without_overflow() {
        let (_t, mut vfs) = input_tree();
        let out = vfs.mounts[1].root;
        for i in 0..5u32 {
            create(&mut vfs, out, format!("e{i}").as_bytes(), false);
        }
        let at = |from: u64, hint: Option<&[u8]>| -> Vec<u64> {
            vfs.list_from(out, from, hint).map(|e| e.0).collect()
        };
        assert_eq!(at(u64::MAX - 2, Some(b"e0")), [u64::MAX - 2, u64::MAX - 1]);
        assert_eq!(at(u64::MAX - 1, Some(b"e0")), [u64::MAX - 1]);
        assert!(at(u64::MAX, Some(b"e0")).is_empty());
        assert!(at(u64::MAX, None).is_empty());
        assert!(at(u64::MAX - 1, None).is_empty());
        assert_eq!(at(5, None), [5, 6]);
    }

    #[test]
    fn symlinks_stay_inside_their_volume_even_when_moved() {
        // `..` only as a leading run: `a/../b` could climb through a link named `a`.
        assert!(escapes(b"a/../b", 0));
        assert!(!escapes(b"./b/c", 0));
        assert!(escapes(b"../x", 0));
        assert!(!escapes(b"../x", 1));
        assert!(escapes(b"a/../../x", 1));
        assert!(!escapes(b"../x/y", 1));
        assert!(escapes(b"/etc", 3));
        let (_t, mut vfs) = input_tree();
        let out = vfs.mounts[1].root;
        let d = create(&mut vfs, out, b"d", true);
        let ok = vfs.symlink(d, b"up".to_vec(), b"../f".to_vec(), 9, u64::MAX);
        assert!(ok.is_ok());
        assert!(matches!(
            vfs.symlink(out, b"bad".to_vec(), b"../f".to_vec(), 9, u64::MAX),
            Err(WriteError::Errno(Errno::PERM))
        ));
        assert!(matches!(
            vfs.symlink(out, b"abs".to_vec(), b"/etc".to_vec(), 9, u64::MAX),
            Err(WriteError::Errno(Errno::PERM))
        ));
        // `d/up -> ../f` moved to the volume root would lead out of it: refused.
        assert!(matches!(
            vfs.rename(d, b"up", out, b"up".to_vec(), 9, u64::MAX),
            Err(WriteError::Errno(Errno::PERM))
        ));
        // Moving `d` (with the link inside) deeper is fine.
        let e = create(&mut vfs, out, b"e", true);
        assert!(vfs.rename(out, b"d", e, b"d".to_vec(), 9, u64::MAX).is_ok());
        // Links resolve inside the tree: e/d/up -> e/f.
        let f = create(&mut vfs, e, b"f", false);
        assert_eq!(vfs.resolve(out, b"e/d/up", true), Ok(f));
        // The target counts against the quota.
        // Names d, up, e, f (5 bytes) and the target "../f" (4).
        assert_eq!(vfs.used, 4 * ENTRY_OVERHEAD + 5 + 4);
    }

    /// A folder of `files` empty files named `f0`, `f1`, ….
    fn flat_folder(files: usize) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for i in 0..files {
            std::fs::write(t.path().join(format!("f{i}")), b"").unwrap();
        }
        t
    }

    #[test]
    fn input_scans_share_one_entry_budget_and_stop_at_it() {
        assert_eq!(
            Vfs::new().scan_limit,
            (MAX_INPUT_ENTRIES, MAX_INPUT_BYTES),
            "the real limits by default"
        );
        assert_eq!(MAX_INPUT_ENTRIES, MAX_ENTRIES);
        let small = flat_folder(4);
        let mut vfs = Vfs::new();
        vfs.scan_limit = (10, u64::MAX);
        // One folder mounted twice counts twice; read-only and writable mounts alike.
        vfs.mount_input(small.path(), "/a", 7).unwrap();
        vfs.mount_writable(small.path(), "/b", 7).unwrap();
        assert_eq!(vfs.scanned.0, 8);
        let err = vfs.mount_input(small.path(), "/c", 7).unwrap_err();
        assert!(
            err.contains("more than 10 entries")
                && err.contains("MAX_INPUT_ENTRIES")
                && err.contains("mounting it at /c,"),
            "{err}"
        );
        // A large folder: the listing stops at the entry over the cap, the rest of the
        // folder is never listed, and nothing of it is kept.
        let large = flat_folder(1000);
        let mut vfs = Vfs::new();
        vfs.scan_limit = (10, u64::MAX);
        let err = vfs.mount_input(large.path(), "/in", 7).unwrap_err();
        assert!(err.contains("MAX_INPUT_ENTRIES"), "{err}");
        assert_eq!(vfs.scanned.0, 11);
        assert_eq!(vfs.nodes.len(), 1, "only the mount root was made");
        // Below the cap the same folder mounts.
        let mut vfs = Vfs::new();
        vfs.scan_limit = (1000, u64::MAX);
        vfs.mount_input(large.path(), "/in", 7).unwrap();
        assert_eq!(vfs.scanned.0, 1000);
    }

    /// A read that must reopen its input file (not among the files kept open) past the
    /// job's deadline ends the run as a timeout; a read of a file kept open does not look
    /// at the clock.
    #[test]
    fn an_input_file_reopened_past_the_deadline_is_a_timeout() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"alpha").unwrap();
        std::fs::write(t.path().join("b"), b"beta").unwrap();
        let mut vfs = Vfs::new();
        vfs.mount_input(t.path(), "/in", 7).unwrap();
        let root = vfs.mounts[0].root;
        let (a, b) = (
            vfs.lookup(root, b"a").unwrap(),
            vfs.lookup(root, b"b").unwrap(),
        );
        let mut buf = [0u8; 8];
        assert!(matches!(vfs.read_at(a, 0, &mut buf), Ok(5)));
        vfs.scan_until(Some(std::time::Instant::now()));
        assert!(matches!(vfs.read_at(a, 1, &mut buf), Ok(4)));
        assert!(matches!(
            vfs.read_at(b, 0, &mut buf),
            Err(ReadError::Timeout)
        ));
    }

    /// Found by review: an input file swapped for a FIFO after the scan blocked the
    /// open for good, past every deadline. It is now refused at once.
    #[test]
    fn an_input_file_swapped_for_a_fifo_is_refused_not_waited_on() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"alpha").unwrap();
        let mut vfs = Vfs::new();
        vfs.mount_input(t.path(), "/in", 7).unwrap();
        let a = vfs.lookup(vfs.mounts[0].root, b"a").unwrap();
        std::fs::remove_file(t.path().join("a")).unwrap();
        let fifo = std::ffi::CString::new(t.path().join("a").into_os_string().into_encoded_bytes())
            .unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mut buf = [0u8; 8];
        match vfs.read_at(a, 0, &mut buf) {
            Err(ReadError::Host(m)) => assert!(m.contains("replaced"), "{m}"),
            Ok(n) => panic!("read {n} bytes of a FIFO"),
            Err(_) => panic!("expected a host error"),
        }
    }

    /// Found by review: a writable folder's unchanged file swapped after the end-of-run
    /// check was copied into the results with no check: a FIFO blocked delivery for
    /// good, a larger file was delivered past the quota. Now it is refused.
    #[test]
    fn a_writable_folders_file_swapped_before_delivery_is_refused() {
        for swap in ["fifo", "bigger"] {
            let t = tempfile::tempdir().unwrap();
            let host = t.path().join("rw");
            std::fs::create_dir(&host).unwrap();
            std::fs::write(host.join("a"), b"alpha").unwrap();
            let mut vfs = Vfs::new();
            vfs.mount_writable(&host, "/rw", 7).unwrap();
            std::fs::remove_file(host.join("a")).unwrap();
            if swap == "fifo" {
                let c =
                    std::ffi::CString::new(host.join("a").into_os_string().into_encoded_bytes())
                        .unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            } else {
                std::fs::write(host.join("a"), vec![1u8; 1 << 20]).unwrap();
            }
            let out = t.path().join("out");
            std::fs::create_dir(&out).unwrap();
            let e = vfs.export(0, &out).unwrap_err().to_string();
            assert!(e.contains("changed before it was delivered"), "{swap}: {e}");
        }
    }

    #[test]
    fn an_input_scan_gives_up_at_its_deadline() {
        let t = flat_folder(3);
        let mut vfs = Vfs::new();
        vfs.scan_until(Some(
            std::time::Instant::now() + std::time::Duration::from_secs(3600),
        ));
        vfs.mount_input(t.path(), "/a", 7).unwrap();
        assert!(!vfs.scan_timed_out());
        vfs.scan_until(Some(std::time::Instant::now()));
        let err = vfs.mount_input(t.path(), "/b", 7).unwrap_err();
        assert!(vfs.scan_timed_out(), "{err}");
        assert!(err.contains("deadline"), "{err}");
        // Stopped at its first entry.
        assert_eq!(vfs.scanned.0, 3);
    }

    #[test]
    fn input_scans_share_one_byte_budget_for_names_paths_and_link_targets() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("dd")).unwrap();
        std::fs::write(t.path().join("dd/fff"), b"").unwrap();
        std::os::unix::fs::symlink("x".repeat(100), t.path().join("l")).unwrap();
        let mut vfs = Vfs::new();
        vfs.mount_input(t.path(), "/in", 7).unwrap();
        // dd: 2 × 2; dd/fff: 2 × 3 + "dd/"; l: 2 × 1 + its 100-byte target.
        let one = 4 + (6 + 3) + (2 + 100);
        assert_eq!(vfs.scanned, (3, one));
        let mut vfs = Vfs::new();
        vfs.scan_limit = (u64::MAX, 2 * one);
        vfs.mount_input(t.path(), "/a", 7).unwrap();
        vfs.mount_input(t.path(), "/b", 7).unwrap();
        // The third mount passes the budget at its link's target.
        let err = vfs.mount_input(t.path(), "/c", 7).unwrap_err();
        assert!(
            err.contains(&format!("more than {} bytes", 2 * one))
                && err.contains("MAX_INPUT_BYTES")
                && err.contains("mounting it at /c,")
                && err.ends_with(&format!(
                    "at {}): mount fewer or smaller folders, or shallower ones",
                    std::fs::canonicalize(t.path()).unwrap().join("l").display()
                )),
            "{err}"
        );
    }

    #[test]
    fn a_tree_as_deep_as_the_host_allows_is_scanned_without_exhausting_the_stack() {
        // Made through directory handles, which (unlike a path) no PATH_MAX limits.
        let t = tempfile::tempdir().unwrap();
        let base_len = std::fs::canonicalize(t.path()).unwrap().as_os_str().len();
        // The most levels of `d` whose deepest entry the host can still name whole.
        let fits = (4095 - base_len - 2) / 2;
        let mut dir =
            cap_std::fs::Dir::open_ambient_dir(t.path(), cap_std::ambient_authority()).unwrap();
        for _ in 0..fits {
            dir.create_dir("d").unwrap();
            dir = dir.open_dir("d").unwrap();
        }
        dir.write("f", b"deep").unwrap();
        // Scanned on a thread of Rust's default 2 MiB stack, as a batch worker's.
        let scan = |root: PathBuf| {
            std::thread::spawn(move || {
                let mut vfs = Vfs::new();
                let r = vfs.mount_input(&root, "/in", 7);
                (r, vfs.nodes.iter().flatten().map(|n| n.depth).max())
            })
            .join()
            .unwrap()
        };
        let (r, deepest) = scan(t.path().to_path_buf());
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(deepest, Some(fits as u32 + 1), "scanned to the bottom");
        // Deeper than the host can name: ENAMETOOLONG, not a stack overflow.
        for _ in 0..8 {
            dir.create_dir("d").unwrap();
            dir = dir.open_dir("d").unwrap();
        }
        let (r, deepest) = scan(t.path().to_path_buf());
        assert!(
            r.as_ref().unwrap_err().contains("File name too long"),
            "{r:?}"
        );
        assert!(deepest.unwrap() >= fits as u32, "{deepest:?}");
    }

    #[test]
    fn writable_folders_copy_host_files_on_write_and_never_touch_the_host() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"host bytes").unwrap();
        let mut vfs = Vfs::new();
        vfs.mount_writable(t.path(), "/w", 7).unwrap();
        let root = vfs.mounts[0].root;
        let f = vfs.resolve(root, b"f", true).unwrap();
        assert_eq!(vfs.used, 0, "the seed is not charged");
        assert!(matches!(
            vfs.materialize(f, 5),
            Err(HostOrWrite::Write(WriteError::Quota(_)))
        ));
        assert!(matches!(vfs.materialize(f, 100), Ok(10)));
        assert_eq!(vfs.used, 10);
        assert!(write(&mut vfs, f, 0, b"HOST", u64::MAX).is_ok());
        let mut back = [0u8; 10];
        assert!(matches!(vfs.read_at(f, 0, &mut back), Ok(10)));
        assert_eq!(&back, b"HOST bytes");
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"host bytes");
        // Removing a seeded entry frees nothing it was not charged for.
        vfs.remove(root, b"f", false, 8).unwrap();
        assert_eq!(vfs.used, 0);
        assert!(vfs.inputs_unchanged().is_ok());
    }
}
