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
/// `st_nlink` of every node: a constant (hosts count subdirectories, or not; guests
/// cannot make hard links).
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

    /// Input scans from now on give up at `deadline` (the job's wall-clock deadline):
    /// the clock is read at every entry, and a scan past it fails, with
    /// [`Vfs::scan_timed_out`] true. Rejected: relying on the entry caps alone (one
    /// folder of [`MAX_INPUT_ENTRIES`] files took 3.9 s to scan on a 2-core machine,
    /// past a `--timeout 1`).
    pub fn scan_until(&mut self, deadline: Option<std::time::Instant>) {
        self.scan_deadline = deadline;
    }

    /// Whether a scan stopped at [`Vfs::scan_until`]'s deadline (the failed mount's
    /// error is then that, not something wrong with the input).
    pub fn scan_timed_out(&self) -> bool {
        self.scan_timed_out
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
        };
        if id == self.nodes.len() {
            self.nodes.push(Some(node));
        } else {
            self.nodes[id] = Some(node);
        }
        id
    }

    /// Frees a node nothing refers to any more: its content's memory is released and its
    /// charge returned to the quota.
    fn release(&mut self, id: NodeId) {
        if let Some(n) = self.nodes[id].take() {
            let content = match &n.kind {
                Kind::File(Content::Mem(d)) => d.len() as u64,
                _ => 0,
            };
            self.used -= n.entry_charge + content;
            if n.entry_charge > 0 {
                self.entries -= 1;
            }
            self.free.push(id);
        }
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
        if n.open == 0 && n.orphan {
            self.release(id);
        }
    }

    /// Mounts a host directory read-only at `guest`: scans its names in sorted order.
    /// Every node's times are `time` (the job epoch). The host path is canonicalized
    /// first, so an input given as a symlink mounts (and is hashed as) the tree it
    /// points to.
    pub fn mount_input(&mut self, host: &Path, guest: &str, time: u64) -> Result<(), String> {
        self.mount_host(host, guest, time, false)
    }

    /// Mounts a host directory writable at `guest`, copy-on-write: the scan is an input's,
    /// files are read from the host until the guest changes them (then they are copied
    /// into memory, charged to the quota, [`Vfs::materialize`]); the host folder is never
    /// written. Delivered by [`Vfs::export`] like an output volume.
    pub fn mount_writable(&mut self, host: &Path, guest: &str, time: u64) -> Result<(), String> {
        self.mount_host(host, guest, time, true)
    }

    fn mount_host(
        &mut self,
        host: &Path,
        guest: &str,
        time: u64,
        writable: bool,
    ) -> Result<(), String> {
        let host = std::fs::canonicalize(host).map_err(|e| e.to_string())?;
        let meta = std::fs::symlink_metadata(&host).map_err(|e| e.to_string())?;
        if !meta.is_dir() {
            return Err("an input must be a directory".into());
        }
        let dir = cap_std::fs::Dir::open_ambient_dir(&host, cap_std::ambient_authority())
            .map_err(|e| e.to_string())?;
        let mount = self.mounts.len();
        let root = self.alloc(Kind::Dir(BTreeMap::new()), None, mount, time);
        self.node_mut(root).host = Some((PathBuf::new(), HostStamp::of(&meta)));
        self.mounts.push(Mount {
            guest: guest.to_string(),
            root,
            writable,
            host: Some((dir, host.clone())),
        });
        self.scan(&host, Path::new(""), root, mount, time)
    }

    /// Scans host directory `base/rel` into directory node `at`, recursively.
    ///
    /// Every entry is charged to the job's scan budget ([`MAX_INPUT_ENTRIES`],
    /// [`MAX_INPUT_BYTES`]) as the listing yields it, before anything of it is kept: a
    /// folder of ten million entries stops the scan at the entry over the cap, having
    /// held at most that many names. Rejected: collecting a directory's listing and
    /// counting it afterwards (what this did before: one huge directory is held whole
    /// before any check).
    ///
    /// The clock is read at every entry listed and every entry stepped through, so a
    /// scan past [`Vfs::scan_until`]'s deadline stops within one entry of it.
    ///
    /// The recursion is one frame per level, and its depth is bounded by the host: each
    /// level adds at least two bytes (`x/`) to the path every call here passes whole to
    /// the kernel, which refuses one over `PATH_MAX` (4,096 bytes), so a tree at most
    /// about 2,048 levels deep is scanned and a deeper one fails with `ENAMETOOLONG`
    /// (`a_tree_as_deep_as_the_host_allows_is_scanned_without_exhausting_the_stack`).
    fn scan(
        &mut self,
        base: &Path,
        rel: &Path,
        at: NodeId,
        mount: usize,
        time: u64,
    ) -> Result<(), String> {
        let here = base.join(rel);
        let rel_len = rel.as_os_str().len() as u64;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in std::fs::read_dir(&here).map_err(|e| format!("{}: {e}", here.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", here.display()))?;
            let name = e.file_name().as_bytes().to_vec();
            // The name is held twice (the directory's key, the end of the entry's host
            // path) and the host path's leading part once more.
            let bytes = 2 * name.len() as u64 + rel_len + u64::from(rel_len > 0);
            self.charge_scan(mount, 1, bytes, &here.join(e.file_name()))?;
            names.push(name);
        }
        names.sort();
        for name in names {
            let child_rel = rel.join(std::ffi::OsStr::from_bytes(&name));
            let path = base.join(&child_rel);
            // Listing was checked entry by entry; stepping through the entries (a
            // `stat` each) takes longer, and is checked the same way.
            self.check_scan_deadline(&path)?;
            // symlink_metadata does not follow symlinks.
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir(BTreeMap::new())
            } else if ft.is_file() {
                Kind::File(Content::Host { size: meta.len() })
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let target = file_name_bytes(&target).to_vec();
                self.charge_scan(mount, 0, target.len() as u64, &path)?;
                Kind::Symlink(target)
            } else {
                return Err(format!(
                    "{} is a special file (only files, directories and symlinks can be inputs)",
                    path.display()
                ));
            };
            let is_dir = ft.is_dir();
            if let (Kind::Symlink(target), true) = (&kind, self.mounts[mount].writable) {
                // A writable folder is delivered: a link in it leading out of it would point
                // out of the results folder.
                if escapes(target, self.node(at).depth) {
                    return Err(format!(
                        "{} is a symlink leading out of the writable folder (to {}): detwasm cannot deliver it",
                        path.display(),
                        String::from_utf8_lossy(target)
                    ));
                }
            }
            let (depth, path_len) = self.child_place(at, name.len());
            let id = self.alloc(kind, Some(at), mount, time);
            let n = self.node_mut(id);
            n.host = Some((child_rel.clone(), HostStamp::of(&meta)));
            n.name_len = name.len() as u32;
            n.depth = depth;
            n.path_len = path_len;
            self.insert(at, name, id);
            if is_dir {
                self.scan(base, &child_rel, id, mount, time)?;
            }
        }
        Ok(())
    }

    /// Charges `entries` entries and `bytes` bytes found at host path `at` by the scan of
    /// `mount` to the job's scan budget; over [`MAX_INPUT_ENTRIES`] or
    /// [`MAX_INPUT_BYTES`], an error naming the limit, the mount's guest path and where
    /// it was reached (the caller names the input's host folder, which several mounts
    /// may share). Past [`Vfs::scan_until`]'s deadline, an error too, and
    /// [`Vfs::scan_timed_out`] says so.
    fn charge_scan(
        &mut self,
        mount: usize,
        entries: u64,
        bytes: u64,
        at: &Path,
    ) -> Result<(), String> {
        self.check_scan_deadline(at)?;
        let guest = &self.mounts[mount].guest;
        let (e, b) = &mut self.scanned;
        *e = e.saturating_add(entries);
        *b = b.saturating_add(bytes);
        let (max_e, max_b) = self.scan_limit;
        if *e > max_e {
            return Err(format!(
                "the job's inputs hold more than {max_e} entries, the most detwasm scans for \
                 one job (MAX_INPUT_ENTRIES, counted over all input mounts together, a folder \
                 once per mount; reached mounting it at {guest}, at {}): mount fewer or \
                 smaller folders",
                at.display()
            ));
        }
        if *b > max_b {
            return Err(format!(
                "the job's inputs hold more than {max_b} bytes of names, paths and link \
                 targets, the most detwasm scans for one job (MAX_INPUT_BYTES, counted over \
                 all input mounts together, a folder once per mount; reached mounting it at \
                 {guest}, at {}): mount fewer or smaller folders, or shallower ones",
                at.display()
            ));
        }
        Ok(())
    }

    /// An error once [`Vfs::scan_until`]'s deadline has passed (read at host path `at`),
    /// and [`Vfs::scan_timed_out`] then says so.
    fn check_scan_deadline(&mut self, at: &Path) -> Result<(), String> {
        if self
            .scan_deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            self.scan_timed_out = true;
            return Err(format!(
                "the scan passed the job's deadline at {}",
                at.display()
            ));
        }
        Ok(())
    }

    /// Checks that no input changed since it was scanned (every entry's device, inode,
    /// size, mode and times as then). Called after the guest has run; an `Err` names the
    /// first changed path.
    pub fn inputs_unchanged(&self) -> Result<(), String> {
        for n in self.nodes.iter().flatten() {
            let (Some((rel, stamp)), Some((_, base))) = (&n.host, &self.mounts[n.mount].host)
            else {
                continue;
            };
            let path = base.join(rel);
            let now = std::fs::symlink_metadata(&path).map(|m| HostStamp::of(&m));
            if now.as_ref().ok() != Some(stamp) {
                return Err(format!(
                    "input {} changed while the job ran (inputs must not change during a run)",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    fn insert(&mut self, dir: NodeId, name: Vec<u8>, child: NodeId) {
        if let Kind::Dir(entries) = &mut self.node_mut(dir).kind {
            entries.insert(name, child);
        }
    }

    /// Mounts an empty, writable, in-memory volume at `guest`.
    pub fn mount_output(&mut self, guest: &str, time: u64) {
        let mount = self.mounts.len();
        let root = self.alloc(Kind::Dir(BTreeMap::new()), None, mount, time);
        self.mounts.push(Mount {
            guest: guest.to_string(),
            root,
            writable: true,
            host: None,
        });
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

    /// Resolves `path` relative to directory `start`. Absolute paths and `..` above
    /// `start` are `ENOTCAPABLE`: a directory fd is a capability for what is below it, as
    /// in wasmtime (cap-std), not for its mount (rejected: stopping only at the mount root,
    /// which let `open(subdir_fd, "../x")` reach a sibling). Symlinks are followed inside
    /// the tree, under the same rule (the last component only if `follow_last`). Paths longer than [`MAX_PATH`] are
    /// `ENAMETOOLONG` before anything is looked at; lookups inside a removed directory are
    /// `ENOENT`.
    pub fn resolve(&self, start: NodeId, path: &[u8], follow_last: bool) -> Result<NodeId, Errno> {
        if path.is_empty() {
            return Err(Errno::NOENT);
        }
        if path.len() > MAX_PATH {
            return Err(Errno::NAMETOOLONG);
        }
        if path[0] == b'/' {
            return Err(Errno::NOTCAPABLE);
        }
        let must_dir = path.ends_with(b"/");
        let mut pending: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .collect();
        let mut cur = start;
        // Directories entered below `start`: `..` goes back one, and never above `start`.
        let mut below: Vec<NodeId> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            self.work(1);
            if !self.is_dir(cur) {
                return Err(Errno::NOTDIR);
            }
            if self.node(cur).orphan {
                return Err(Errno::NOENT);
            }
            if c == b"." {
                continue;
            }
            if c == b".." {
                cur = below.pop().ok_or(Errno::NOTCAPABLE)?;
                continue;
            }
            let Kind::Dir(entries) = &self.node(cur).kind else {
                return Err(Errno::NOTDIR);
            };
            let child = *entries.get(c).ok_or(Errno::NOENT)?;
            if let Kind::Symlink(target) = &self.node(child).kind {
                if !pending.is_empty() || follow_last || must_dir {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(Errno::LOOP);
                    }
                    if target.first() == Some(&b'/') {
                        return Err(Errno::NOTCAPABLE);
                    }
                    if target.is_empty() {
                        return Err(Errno::NOENT);
                    }
                    self.work(target.len() as u64 / 64);
                    pending.extend(target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev());
                    continue;
                }
            }
            below.push(cur);
            cur = child;
        }
        if must_dir && !self.is_dir(cur) {
            return Err(Errno::NOTDIR);
        }
        Ok(cur)
    }

    /// Resolves all but the last component; returns the parent directory and the last
    /// name (never empty, `.` or `..`).
    pub fn resolve_parent(&self, start: NodeId, path: &[u8]) -> Result<(NodeId, Vec<u8>), Errno> {
        if path.len() > MAX_PATH {
            return Err(Errno::NAMETOOLONG);
        }
        let trimmed = {
            let mut p = path;
            while p.len() > 1 && p.ends_with(b"/") {
                p = &p[..p.len() - 1];
            }
            p
        };
        if trimmed.is_empty() {
            return Err(Errno::NOENT);
        }
        if trimmed[0] == b'/' {
            return Err(Errno::NOTCAPABLE);
        }
        let (dir_part, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        let parent = if dir_part.is_empty() {
            start
        } else {
            self.resolve(start, dir_part, true)?
        };
        if !self.is_dir(parent) {
            return Err(Errno::NOTDIR);
        }
        if name == b"." || name == b".." {
            return Err(Errno::INVAL);
        }
        if name.len() > MAX_NAME {
            return Err(Errno::NAMETOOLONG);
        }
        Ok((parent, name.to_vec()))
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.node(dir).kind {
            Kind::Dir(entries) => entries.get(name).copied(),
            _ => None,
        }
    }

    pub fn filetype(&self, id: NodeId) -> u8 {
        match self.node(id).kind {
            Kind::Dir(_) => FILETYPE_DIRECTORY,
            Kind::File(_) => FILETYPE_REGULAR_FILE,
            Kind::Symlink(_) => FILETYPE_SYMBOLIC_LINK,
        }
    }

    pub fn size(&self, id: NodeId) -> u64 {
        match &self.node(id).kind {
            Kind::Dir(_) => DIR_SIZE,
            Kind::File(Content::Host { size }) => *size,
            Kind::File(Content::Mem(data)) => data.len() as u64,
            Kind::Symlink(t) => t.len() as u64,
        }
    }

    pub fn filestat(&self, id: NodeId) -> Filestat {
        let n = self.node(id);
        Filestat {
            dev: n.mount as u64 + 1,
            ino: n.ino,
            filetype: self.filetype(id),
            nlink: NLINK,
            size: self.size(id),
            atim: n.atim,
            mtim: n.mtim,
            ctim: n.ctim,
        }
    }

    pub fn set_times(&mut self, id: NodeId, atim: Option<u64>, mtim: Option<u64>, now: u64) {
        let n = self.node_mut(id);
        if let Some(a) = atim {
            n.atim = a;
        }
        if let Some(m) = mtim {
            n.mtim = m;
        }
        n.ctim = now;
    }

    /// Entries of directory `dir` in listing order (`.`, `..`, then names sorted by bytes)
    /// from position `from` on, as (position, name, inode, filetype). `hint` is the name
    /// at position `from` if the caller knows it (from an earlier call): then the listing
    /// resumes there at once instead of stepping over the first entries, so a guest that
    /// reads a large directory in many calls costs the host work in proportion to what it
    /// reads. Lazy: nothing is collected.
    ///
    /// Positions are below `u64::MAX`, so the cookie after each (`position + 1`) is one:
    /// the listing ends at the position that would pass it. `from` is the guest's cookie
    /// (any `u64`), and with a hint it is where positions start whatever the directory
    /// holds, so a forged cursor (a snapshot's) of `u64::MAX - 1` would otherwise wrap
    /// the positions, or panic with overflow checks on. An honest listing never comes
    /// near (each position listed costs fuel).
    pub fn list_from<'a>(
        &'a self,
        dir: NodeId,
        from: u64,
        hint: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (u64, &'a [u8], u64, u8)> + 'a {
        let n = self.node(dir);
        let parent = if self.is_mount_root(dir) || n.orphan {
            dir
        } else {
            n.parent
        };
        let dots = [
            (0u64, &b"."[..], n.ino, FILETYPE_DIRECTORY),
            (1, &b".."[..], self.node(parent).ino, FILETYPE_DIRECTORY),
        ];
        let named: Box<dyn Iterator<Item = (&'a Vec<u8>, &'a NodeId)> + 'a> = match (&n.kind, hint)
        {
            (Kind::Dir(entries), Some(h)) if from >= 2 => {
                Box::new(entries.range::<[u8], _>((Bound::Included(h), Bound::Unbounded)))
            }
            (Kind::Dir(entries), _) => Box::new(
                entries
                    .iter()
                    .skip(usize::try_from(from.saturating_sub(2)).unwrap_or(usize::MAX)),
            ),
            _ => Box::new(std::iter::empty()),
        };
        let start = from.max(2);
        dots.into_iter()
            .filter(move |d| d.0 >= from)
            .chain(named.enumerate().map_while(move |(i, (name, &child))| {
                let pos = start.checked_add(i as u64).filter(|&p| p < u64::MAX)?;
                Some((
                    pos,
                    name.as_slice(),
                    self.node(child).ino,
                    self.filetype(child),
                ))
            }))
    }

    pub fn readlink(&self, id: NodeId) -> Result<&[u8], Errno> {
        match &self.node(id).kind {
            Kind::Symlink(t) => Ok(t),
            _ => Err(Errno::INVAL),
        }
    }

    /// Charges `delta` bytes (negative: returns them) to the quota, of which `quota_left`
    /// remain. Signed arithmetic in i128: no size a guest can name overflows it.
    fn charge(&mut self, delta: i128, quota_left: u64) -> Result<(), QuotaExceeded> {
        if delta > i128::from(quota_left) {
            return Err(QuotaExceeded);
        }
        self.used = (i128::from(self.used) + delta) as u64;
        Ok(())
    }

    /// Whether an entry `name` may be placed in `parent` at all: a name the host can
    /// store (no NUL: `EINVAL`, as cap-std answers wasmtime), depth and path length
    /// within [`MAX_DEPTH`] and [`MAX_VOLUME_PATH`] (`ENAMETOOLONG`).
    fn check_placement(
        &self,
        parent: NodeId,
        name: &[u8],
        subtree: (u32, u32),
    ) -> Result<(), Errno> {
        if name.contains(&0) {
            return Err(Errno::INVAL);
        }
        if name.len() > MAX_NAME {
            return Err(Errno::NAMETOOLONG);
        }
        let p = self.node(parent);
        let sep = u32::from(p.path_len > 0);
        let path_len = u64::from(p.path_len) + u64::from(sep) + name.len() as u64;
        if u64::from(p.depth) + 1 + u64::from(subtree.0) > u64::from(MAX_DEPTH)
            || path_len + u64::from(subtree.1) > MAX_VOLUME_PATH as u64
        {
            return Err(Errno::NAMETOOLONG);
        }
        Ok(())
    }

    /// Admits a new entry `name` into `parent` (writable, not removed, the name free and
    /// placeable, below [`MAX_ENTRIES`]) and charges it ([`ENTRY_OVERHEAD`] + the name).
    /// Returns the charge.
    fn admit_entry(
        &mut self,
        parent: NodeId,
        name: &[u8],
        quota_left: u64,
    ) -> Result<u64, WriteError> {
        if !self.writable(parent) {
            return Err(Errno::ROFS.into());
        }
        if self.node(parent).orphan {
            return Err(Errno::NOENT.into());
        }
        if self.lookup(parent, name).is_some() {
            return Err(Errno::EXIST.into());
        }
        self.check_placement(parent, name, (0, 0))?;
        if self.entries >= MAX_ENTRIES {
            return Err(Errno::NOSPC.into());
        }
        let charge = ENTRY_OVERHEAD + name.len() as u64;
        self.charge(i128::from(charge), quota_left)
            .map_err(WriteError::Quota)?;
        self.entries += 1;
        Ok(charge)
    }

    /// Creates an entry in writable directory `parent`. `quota_left` is what remains of
    /// the output quota; the entry costs [`ENTRY_OVERHEAD`] plus its name's bytes.
    pub fn create(
        &mut self,
        parent: NodeId,
        name: Vec<u8>,
        dir: bool,
        now: u64,
        quota_left: u64,
    ) -> Result<NodeId, WriteError> {
        let entry_charge = self.admit_entry(parent, &name, quota_left)?;
        let mount = self.node(parent).mount;
        let kind = if dir {
            Kind::Dir(BTreeMap::new())
        } else {
            Kind::File(Content::Mem(Vec::new()))
        };
        let (depth, path_len) = self.child_place(parent, name.len());
        let id = self.alloc(kind, Some(parent), mount, now);
        let n = self.node_mut(id);
        n.entry_charge = entry_charge;
        n.name_len = name.len() as u32;
        n.depth = depth;
        n.path_len = path_len;
        self.insert(parent, name, id);
        let p = self.node_mut(parent);
        p.mtim = now;
        p.ctim = now;
        Ok(id)
    }

    /// Removes `name` from `parent` (a file, or an empty directory if `dir`). The node is
    /// freed at once unless a guest fd still refers to it; then it stays alive, and
    /// charged to the quota, until the last such fd is closed (as an unlinked open file
    /// on POSIX keeps its blocks).
    pub fn remove(
        &mut self,
        parent: NodeId,
        name: &[u8],
        dir: bool,
        now: u64,
    ) -> Result<(), Errno> {
        if !self.writable(parent) {
            return Err(Errno::ROFS);
        }
        let child = self.lookup(parent, name).ok_or(Errno::NOENT)?;
        match (&self.node(child).kind, dir) {
            (Kind::Dir(entries), true) if !entries.is_empty() => return Err(Errno::NOTEMPTY),
            (Kind::Dir(_), true) => {}
            (Kind::Dir(_), false) => return Err(Errno::ISDIR),
            (_, true) => return Err(Errno::NOTDIR),
            _ => {}
        }
        if let Kind::Dir(entries) = &mut self.node_mut(parent).kind {
            entries.remove(name);
        }
        let p = self.node_mut(parent);
        p.mtim = now;
        p.ctim = now;
        if self.node(child).open == 0 {
            self.release(child);
        } else {
            self.node_mut(child).orphan = true;
        }
        Ok(())
    }

    /// The deepest depth and longest path below `id`, relative to it, walking its subtree
    /// (each node visited is host work, [`Vfs::take_work`]).
    fn subtree_extent(&self, id: NodeId) -> (u32, u32) {
        let base = self.node(id);
        let (mut depth, mut len) = (0u32, 0u32);
        let mut stack = vec![id];
        while let Some(d) = stack.pop() {
            self.work(1);
            let n = self.node(d);
            depth = depth.max(n.depth.saturating_sub(base.depth));
            len = len.max(n.path_len.saturating_sub(base.path_len));
            if let Kind::Dir(entries) = &n.kind {
                stack.extend(entries.values().copied());
            }
        }
        (depth, len)
    }

    /// Whether a symlink in the subtree of `id` would lead out of its volume if `id` were
    /// at depth `new_depth`.
    fn subtree_links_escape(&self, id: NodeId, new_depth: u32) -> bool {
        let shift = i64::from(new_depth) - i64::from(self.node(id).depth);
        let mut stack = vec![id];
        while let Some(d) = stack.pop() {
            self.work(1);
            let n = self.node(d);
            match &n.kind {
                Kind::Dir(entries) => stack.extend(entries.values().copied()),
                Kind::Symlink(target) => {
                    let parent_depth = (i64::from(n.depth) + shift - 1).max(0) as u32;
                    if escapes(target, parent_depth) {
                        return true;
                    }
                }
                Kind::File(_) => {}
            }
        }
        false
    }

    /// Depth and path length of a child named with `name_len` bytes in `parent`.
    fn child_place(&self, parent: NodeId, name_len: usize) -> (u32, u32) {
        let p = self.node(parent);
        let sep = u32::from(p.path_len > 0);
        (
            p.depth + 1,
            p.path_len.saturating_add(sep + name_len as u32),
        )
    }

    /// Creates symlink `name` → `target` in writable directory `parent`. The target is
    /// stored as given and resolved only inside the virtual tree, never by the host.
    /// Refused (`EPERM`) when it is absolute or leads out of its volume from where the
    /// link is (`..` above the volume's root): the volume is delivered as a results folder,
    /// and nothing in it may point outside it. Charged like any entry, plus the target.
    pub fn symlink(
        &mut self,
        parent: NodeId,
        name: Vec<u8>,
        target: Vec<u8>,
        now: u64,
        quota_left: u64,
    ) -> Result<NodeId, WriteError> {
        if target.is_empty() || target.contains(&0) {
            return Err(Errno::NOENT.into());
        }
        if target.len() > MAX_PATH {
            return Err(Errno::NAMETOOLONG.into());
        }
        if escapes(&target, self.node(parent).depth) {
            return Err(Errno::PERM.into());
        }
        let left = quota_left.saturating_sub(target.len() as u64);
        if target.len() as u64 > quota_left {
            return Err(WriteError::Quota(QuotaExceeded));
        }
        let id = self.create(parent, name, false, now, left)?;
        self.used += target.len() as u64;
        let n = self.node_mut(id);
        n.entry_charge += target.len() as u64;
        n.kind = Kind::Symlink(target);
        Ok(id)
    }

    /// Copies a writable folder's file that still reads from the host into memory, so it
    /// can be changed (copy-on-write). Charged to the quota like bytes written. Returns
    /// the bytes copied (host work the caller charges); 0 when already in memory.
    pub fn materialize(&mut self, id: NodeId, quota_left: u64) -> Result<u64, HostOrWrite> {
        let size = match self.node(id).kind {
            Kind::File(Content::Host { size }) => size,
            _ => return Ok(0),
        };
        if !self.writable(id) {
            return Err(HostOrWrite::Write(Errno::ROFS.into()));
        }
        if size > quota_left {
            return Err(HostOrWrite::Write(WriteError::Quota(QuotaExceeded)));
        }
        let mut data = Vec::new();
        grow(&mut data, size as usize);
        data.resize(size as usize, 0);
        let got = self.read_at(id, 0, &mut data).map_err(HostOrWrite::Read)?;
        data.truncate(got);
        self.used += data.len() as u64;
        self.node_mut(id).kind = Kind::File(Content::Mem(data));
        Ok(size)
    }

    /// Sets depth and path length of `id` (now named `name` in `parent`) and of its
    /// subtree.
    fn place_subtree(&mut self, id: NodeId, parent: NodeId) {
        let mut stack = vec![(id, parent)];
        while let Some((d, p)) = stack.pop() {
            self.work(1);
            let (pd, pl) = {
                let p = self.node(p);
                (p.depth, p.path_len)
            };
            let name_len = self.node(d).name_len;
            let sep = u32::from(pl > 0);
            let n = self.node_mut(d);
            n.depth = pd + 1;
            n.path_len = pl + sep + name_len;
            if let Kind::Dir(entries) = &n.kind {
                stack.extend(entries.values().map(|&c| (c, d)));
            }
        }
    }

    /// Renames within one writable mount, POSIX semantics for replacing a target. The walk
    /// that checks a moved directory's subtree is host work ([`Vfs::take_work`]), charged
    /// whether the rename succeeds or not.
    pub fn rename(
        &mut self,
        from_dir: NodeId,
        from: &[u8],
        to_dir: NodeId,
        to: Vec<u8>,
        now: u64,
        quota_left: u64,
    ) -> Result<(), WriteError> {
        if !self.writable(from_dir) || !self.writable(to_dir) {
            return Err(Errno::ROFS.into());
        }
        if self.node(from_dir).mount != self.node(to_dir).mount {
            return Err(Errno::XDEV.into());
        }
        let child = self.lookup(from_dir, from).ok_or(Errno::NOENT)?;
        if self.node(to_dir).orphan {
            return Err(Errno::NOENT.into());
        }
        // A directory may not be moved into itself.
        let mut p = to_dir;
        loop {
            if p == child {
                return Err(Errno::INVAL.into());
            }
            if self.is_mount_root(p) {
                break;
            }
            p = self.node(p).parent;
        }
        if let Some(existing) = self.lookup(to_dir, &to) {
            if existing == child {
                return Ok(());
            }
            match (self.is_dir(child), &self.node(existing).kind) {
                (true, Kind::Dir(e)) if !e.is_empty() => return Err(Errno::NOTEMPTY.into()),
                (true, Kind::Dir(_)) => {}
                (true, _) => return Err(Errno::NOTDIR.into()),
                (false, Kind::Dir(_)) => return Err(Errno::ISDIR.into()),
                _ => {}
            }
        }
        let extent = self.subtree_extent(child);
        self.check_placement(to_dir, &to, extent)?;
        // A link moved shallower could lead out of its volume.
        let new_depth = self.node(to_dir).depth + 1;
        if self.subtree_links_escape(child, new_depth) {
            return Err(Errno::PERM.into());
        }
        let delta = if self.node(child).entry_charge > 0 {
            to.len() as i128 - from.len() as i128
        } else {
            0
        };
        self.charge(delta, quota_left).map_err(WriteError::Quota)?;
        if let Some(existing) = self.lookup(to_dir, &to) {
            let is_dir = self.is_dir(existing);
            self.remove(to_dir, &to, is_dir, now)?;
        }
        if let Kind::Dir(entries) = &mut self.node_mut(from_dir).kind {
            entries.remove(from);
        }
        let n = self.node_mut(child);
        if n.entry_charge > 0 {
            n.entry_charge = (n.entry_charge as i128 + delta) as u64;
        }
        n.name_len = to.len() as u32;
        n.parent = to_dir;
        n.ctim = now;
        self.insert(to_dir, to, child);
        self.place_subtree(child, to_dir);
        for d in [from_dir, to_dir] {
            let n = self.node_mut(d);
            n.mtim = now;
            n.ctim = now;
        }
        Ok(())
    }

    /// Reads into `dst` from `offset` of a file; returns the bytes read (fewer than
    /// `dst.len()` only at the end of the file). Input files are read straight into
    /// `dst` (the guest's memory): the host allocates nothing in proportion to the read.
    pub fn read_at(&mut self, id: NodeId, offset: u64, dst: &mut [u8]) -> Result<usize, ReadError> {
        let size = self.size(id);
        if offset >= size || dst.is_empty() {
            return match self.node(id).kind {
                Kind::Dir(_) => Err(Errno::ISDIR.into()),
                _ => Ok(0),
            };
        }
        let n = (dst.len() as u64).min(size - offset) as usize;
        let dst = &mut dst[..n];
        match &self.node(id).kind {
            Kind::File(Content::Mem(data)) => {
                dst.copy_from_slice(&data[offset as usize..offset as usize + n]);
                Ok(n)
            }
            Kind::File(Content::Host { .. }) => {
                use std::os::unix::fs::FileExt;
                let f = self.host_file(id)?;
                let mut got = 0;
                while got < n {
                    match f.read_at(&mut dst[got..], offset + got as u64) {
                        Ok(0) => {
                            return Err(ReadError::Host(format!(
                                "input {} shrank while the job ran",
                                self.host_path(id).display()
                            )))
                        }
                        Ok(k) => got += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(ReadError::Host(format!(
                                "reading input {}: {e}",
                                self.host_path(id).display()
                            )))
                        }
                    }
                }
                Ok(n)
            }
            Kind::Dir(_) => Err(Errno::ISDIR.into()),
            Kind::Symlink(_) => Err(Errno::INVAL.into()),
        }
    }

    fn host_path(&self, id: NodeId) -> PathBuf {
        let n = self.node(id);
        match (&n.host, &self.mounts[n.mount].host) {
            (Some((rel, _)), Some((_, base))) => base.join(rel),
            _ => PathBuf::new(),
        }
    }

    /// The open host file of input node `id`: from the small set kept open, or opened
    /// through the mount's `cap_std` handle (which cannot leave the mount) and checked to
    /// be the very file that was scanned.
    fn host_file(&mut self, id: NodeId) -> Result<&std::fs::File, ReadError> {
        if !self.host_files.contains_key(&id) {
            let n = self.node(id);
            let (Some((rel, stamp)), Some((dir, _))) = (&n.host, &self.mounts[n.mount].host) else {
                return Err(Errno::BADF.into());
            };
            let f = dir
                .open(rel)
                .map_err(|e| {
                    ReadError::Host(format!(
                        "opening input {}: {e}",
                        self.host_path(id).display()
                    ))
                })?
                .into_std();
            let meta = f.metadata().map_err(|e| ReadError::Host(e.to_string()))?;
            if (meta.dev(), meta.ino()) != (stamp.dev, stamp.ino) {
                return Err(ReadError::Host(format!(
                    "input {} was replaced while the job ran",
                    self.host_path(id).display()
                )));
            }
            if self.host_files.len() >= HOST_FILES_OPEN {
                self.host_files.clear();
            }
            self.host_files.insert(id, f);
        }
        Ok(&self.host_files[&id])
    }

    /// Writes the concatenation of `parts` at `offset` of an in-memory file, zero-filling
    /// any gap. The quota is checked against the file's new end before any memory is
    /// touched; sizes past `i64::MAX` are `EFBIG`.
    pub fn write_at<'d>(
        &mut self,
        id: NodeId,
        offset: u64,
        total: u64,
        parts: impl Iterator<Item = &'d [u8]>,
        now: u64,
        quota_left: u64,
    ) -> Result<(), WriteError> {
        if !self.writable(id) {
            return Err(Errno::ROFS.into());
        }
        let end = offset.checked_add(total).ok_or(Errno::FBIG)?;
        if end > i64::MAX as u64 {
            return Err(Errno::FBIG.into());
        }
        let old = self.size(id);
        if end > old {
            self.charge(i128::from(end - old), quota_left)
                .map_err(WriteError::Quota)?;
        }
        let n = self.node_mut(id);
        let Kind::File(Content::Mem(buf)) = &mut n.kind else {
            return Err(Errno::BADF.into());
        };
        // `end` fits the quota, which is far below usize::MAX.
        let end = end as usize;
        if end > buf.len() {
            grow(buf, end);
            buf.resize(end, 0);
        }
        let mut at = offset as usize;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        n.mtim = now;
        n.ctim = now;
        Ok(())
    }

    /// Sets a file's size: growing zero-fills (charged to the quota first), shrinking
    /// returns the memory to the host at once (and the bytes to the quota).
    pub fn set_size(
        &mut self,
        id: NodeId,
        size: u64,
        now: u64,
        quota_left: u64,
    ) -> Result<(), WriteError> {
        if !self.writable(id) {
            return Err(Errno::ROFS.into());
        }
        if size > i64::MAX as u64 {
            return Err(Errno::FBIG.into());
        }
        if size == 0 {
            if let Kind::File(Content::Host { .. }) = self.node(id).kind {
                // Truncating a host file of a writable folder: nothing to copy.
                self.node_mut(id).kind = Kind::File(Content::Mem(Vec::new()));
            }
        }
        if !matches!(self.node(id).kind, Kind::File(Content::Mem(_))) {
            return Err(Errno::BADF.into());
        }
        let old = self.size(id);
        self.charge(i128::from(size) - i128::from(old), quota_left)
            .map_err(WriteError::Quota)?;
        let n = self.node_mut(id);
        let Kind::File(Content::Mem(buf)) = &mut n.kind else {
            return Err(Errno::BADF.into());
        };
        let size = size as usize;
        if size > buf.len() {
            grow(buf, size);
            buf.resize(size, 0);
        } else {
            buf.truncate(size);
            if buf.capacity() > size + size / 8 + 64 {
                buf.shrink_to(size);
            }
        }
        n.mtim = now;
        n.ctim = now;
        Ok(())
    }

    /// Writes mount `mount`'s tree under host directory `dest` (which exists and is
    /// empty). Entries are created with `create_new`/`create_dir`, never over an existing
    /// one: two names that one host filesystem takes for the same (`A` and `a` on a
    /// case-insensitive one) are an error, not a silent overwrite.
    pub fn export(&self, mount: usize, dest: &Path) -> io::Result<()> {
        self.export_dir(self.mounts[mount].root, dest)
    }

    fn export_dir(&self, dir: NodeId, dest: &Path) -> io::Result<()> {
        let Kind::Dir(entries) = &self.node(dir).kind else {
            return Ok(());
        };
        for (name, &child) in entries {
            let path = dest.join(std::ffi::OsStr::from_bytes(name));
            let exists = |e: io::Error| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} already exists: the results folder's filesystem takes two output names for one (case-insensitive?)",
                            path.display()
                        ),
                    )
                } else {
                    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                }
            };
            match &self.node(child).kind {
                Kind::Dir(_) => {
                    std::fs::create_dir(&path).map_err(exists)?;
                    self.export_dir(child, &path)?;
                }
                Kind::File(Content::Mem(data)) => {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(exists)?;
                    f.write_all(data)?;
                }
                Kind::File(Content::Host { .. }) => {
                    // A writable folder's file the guest left unchanged: copied from the
                    // host, through the mount's handle.
                    let n = self.node(child);
                    let (Some((rel, _)), Some((dir, _))) = (&n.host, &self.mounts[n.mount].host)
                    else {
                        continue;
                    };
                    let mut from = dir.open(rel)?.into_std();
                    let mut to = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(exists)?;
                    std::io::copy(&mut from, &mut to)?;
                }
                Kind::Symlink(target) => {
                    // Checked when created (or scanned) and when moved: it leads nowhere
                    // outside the volume.
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                        .map_err(exists)?;
                }
            }
        }
        Ok(())
    }
}

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
