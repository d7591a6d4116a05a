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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::abi::{
    Errno, Filestat, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SYMBOLIC_LINK,
};

pub type NodeId = usize;

/// Symlink hops allowed in one path resolution (Linux's MAXSYMLINKS).
pub const MAX_SYMLINKS: u32 = 40;
/// `st_size` of every directory: a constant (hosts report 4096, or an entry count on
/// tmpfs and btrfs).
pub const DIR_SIZE: u64 = 4096;
/// `st_nlink` of every node: a constant (hosts count subdirectories, or not).
pub const NLINK: u64 = 1;

pub enum Kind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(Content),
    Symlink(Vec<u8>),
}

pub enum Content {
    /// A file of an input, read through the mount's `cap_std` handle.
    Host { rel: PathBuf, size: u64 },
    /// A file in an output volume.
    Mem(Vec<u8>),
}

pub struct Node {
    pub kind: Kind,
    pub parent: NodeId,
    pub mount: usize,
    pub ino: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

pub struct Mount {
    pub guest: String,
    pub root: NodeId,
    pub writable: bool,
    host: Option<cap_std::fs::Dir>,
}

/// Raised when a write would take the output volumes plus stdout/stderr over the quota.
#[derive(Debug)]
pub struct QuotaExceeded;

pub enum WriteError {
    Errno(Errno),
    Quota(QuotaExceeded),
}

impl From<Errno> for WriteError {
    fn from(e: Errno) -> Self {
        WriteError::Errno(e)
    }
}

pub struct Vfs {
    nodes: Vec<Option<Node>>,
    pub mounts: Vec<Mount>,
    next_ino: u64,
    /// Bytes charged to the output quota by the volumes: file contents plus entry names.
    pub used: u64,
    host_files: HashMap<NodeId, std::fs::File>,
}

fn file_name_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
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
            mounts: Vec::new(),
            next_ino: 1,
            used: 0,
            host_files: HashMap::new(),
        }
    }

    fn alloc(&mut self, kind: Kind, parent: Option<NodeId>, mount: usize, time: u64) -> NodeId {
        let id = self.nodes.len();
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.push(Some(Node {
            kind,
            parent: parent.unwrap_or(id),
            mount,
            ino,
            atim: time,
            mtim: time,
            ctim: time,
        }));
        id
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().expect("live node")
    }
    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().expect("live node")
    }

    /// Mounts a host directory read-only at `guest`: scans its names in sorted order.
    /// Every node's times are `time` (the job epoch).
    pub fn mount_input(&mut self, host: &Path, guest: &str, time: u64) -> Result<(), String> {
        let meta = std::fs::metadata(host).map_err(|e| e.to_string())?;
        if !meta.is_dir() {
            return Err("an input must be a directory".into());
        }
        let dir = cap_std::fs::Dir::open_ambient_dir(host, cap_std::ambient_authority())
            .map_err(|e| e.to_string())?;
        let mount = self.mounts.len();
        let root = self.alloc(Kind::Dir(BTreeMap::new()), None, mount, time);
        self.mounts.push(Mount {
            guest: guest.to_string(),
            root,
            writable: false,
            host: Some(dir),
        });
        self.scan(host, Path::new(""), root, mount, time)
    }

    fn scan(
        &mut self,
        base: &Path,
        rel: &Path,
        at: NodeId,
        mount: usize,
        time: u64,
    ) -> Result<(), String> {
        let here = base.join(rel);
        let mut entries: Vec<(Vec<u8>, std::fs::DirEntry)> = std::fs::read_dir(&here)
            .map_err(|e| format!("{}: {e}", here.display()))?
            .map(|e| {
                e.map(|e| (e.file_name().as_bytes().to_vec(), e))
                    .map_err(|e| format!("{}: {e}", here.display()))
            })
            .collect::<Result<_, _>>()?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, entry) in entries {
            let child_rel = rel.join(entry.file_name());
            let path = base.join(&child_rel);
            // DirEntry::file_type does not follow symlinks.
            let ft = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let id = if ft.is_dir() {
                let id = self.alloc(Kind::Dir(BTreeMap::new()), Some(at), mount, time);
                self.insert(at, name, id);
                self.scan(base, &child_rel, id, mount, time)?;
                continue;
            } else if ft.is_file() {
                let size = std::fs::symlink_metadata(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .len();
                self.alloc(
                    Kind::File(Content::Host {
                        rel: child_rel,
                        size,
                    }),
                    Some(at),
                    mount,
                    time,
                )
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                self.alloc(
                    Kind::Symlink(file_name_bytes(&target).to_vec()),
                    Some(at),
                    mount,
                    time,
                )
            } else {
                return Err(format!(
                    "{} is a special file (only files, directories and symlinks can be inputs)",
                    path.display()
                ));
            };
            self.insert(at, name, id);
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

    /// Resolves `path` relative to directory `start`. Absolute paths and `..` above the
    /// mount root are `ENOTCAPABLE`; symlinks are followed inside the tree (the last
    /// component only if `follow_last`).
    pub fn resolve(&self, start: NodeId, path: &[u8], follow_last: bool) -> Result<NodeId, Errno> {
        if path.is_empty() {
            return Err(Errno::NOENT);
        }
        if path[0] == b'/' {
            return Err(Errno::NOTCAPABLE);
        }
        let must_dir = path.ends_with(b"/");
        let mut pending: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut cur = start;
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            if !self.is_dir(cur) {
                return Err(Errno::NOTDIR);
            }
            if c == b"." {
                continue;
            }
            if c == b".." {
                if self.is_mount_root(cur) {
                    return Err(Errno::NOTCAPABLE);
                }
                cur = self.node(cur).parent;
                continue;
            }
            let Kind::Dir(entries) = &self.node(cur).kind else {
                return Err(Errno::NOTDIR);
            };
            let child = *entries.get(&c).ok_or(Errno::NOENT)?;
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
                    pending.extend(
                        target
                            .split(|&b| b == b'/')
                            .filter(|c| !c.is_empty())
                            .rev()
                            .map(<[u8]>::to_vec),
                    );
                    continue;
                }
            }
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
        if name.len() > 255 {
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
            Kind::File(Content::Host { size, .. }) => *size,
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

    /// Directory entries in listing order: `.`, `..`, then names sorted by bytes.
    /// Each is (name, inode, filetype).
    pub fn list(&self, dir: NodeId) -> Vec<(Vec<u8>, u64, u8)> {
        let n = self.node(dir);
        let parent = if self.is_mount_root(dir) {
            dir
        } else {
            n.parent
        };
        let mut out = vec![
            (b".".to_vec(), n.ino, FILETYPE_DIRECTORY),
            (b"..".to_vec(), self.node(parent).ino, FILETYPE_DIRECTORY),
        ];
        if let Kind::Dir(entries) = &n.kind {
            for (name, &child) in entries {
                out.push((name.clone(), self.node(child).ino, self.filetype(child)));
            }
        }
        out
    }

    pub fn readlink(&self, id: NodeId) -> Result<&[u8], Errno> {
        match &self.node(id).kind {
            Kind::Symlink(t) => Ok(t),
            _ => Err(Errno::INVAL),
        }
    }

    fn charge(&mut self, delta: i64, quota_left: u64) -> Result<(), QuotaExceeded> {
        if delta > 0 && delta as u64 > quota_left {
            return Err(QuotaExceeded);
        }
        self.used = (self.used as i64 + delta) as u64;
        Ok(())
    }

    /// Creates an entry in writable directory `parent`. `quota_left` is what remains of
    /// the output quota; the name's bytes are charged to it.
    pub fn create(
        &mut self,
        parent: NodeId,
        name: Vec<u8>,
        dir: bool,
        now: u64,
        quota_left: u64,
    ) -> Result<NodeId, WriteError> {
        if !self.writable(parent) {
            return Err(Errno::ROFS.into());
        }
        if self.lookup(parent, &name).is_some() {
            return Err(Errno::EXIST.into());
        }
        self.charge(name.len() as i64, quota_left)
            .map_err(WriteError::Quota)?;
        let mount = self.node(parent).mount;
        let kind = if dir {
            Kind::Dir(BTreeMap::new())
        } else {
            Kind::File(Content::Mem(Vec::new()))
        };
        let id = self.alloc(kind, Some(parent), mount, now);
        self.insert(parent, name, id);
        let p = self.node_mut(parent);
        p.mtim = now;
        p.ctim = now;
        Ok(id)
    }

    /// Removes `name` from `parent` (a file, or an empty directory if `dir`).
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
        let freed = self.size_charged(child) + name.len() as u64;
        if let Kind::Dir(entries) = &mut self.node_mut(parent).kind {
            entries.remove(name);
        }
        self.used -= freed;
        let p = self.node_mut(parent);
        p.mtim = now;
        p.ctim = now;
        // The node stays allocated while an fd may still refer to it; it is simply no
        // longer reachable (as an unlinked open file on POSIX).
        Ok(())
    }

    fn size_charged(&self, id: NodeId) -> u64 {
        match &self.node(id).kind {
            Kind::File(Content::Mem(d)) => d.len() as u64,
            _ => 0,
        }
    }

    /// Renames within one writable mount, POSIX semantics for replacing a target.
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
            let is_dir = self.is_dir(existing);
            self.remove(to_dir, &to, is_dir, now)?;
        }
        let delta = to.len() as i64 - from.len() as i64;
        self.charge(delta, quota_left).map_err(WriteError::Quota)?;
        if let Kind::Dir(entries) = &mut self.node_mut(from_dir).kind {
            entries.remove(from);
        }
        self.insert(to_dir, to, child);
        self.node_mut(child).parent = to_dir;
        self.node_mut(child).ctim = now;
        for d in [from_dir, to_dir] {
            let n = self.node_mut(d);
            n.mtim = now;
            n.ctim = now;
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of a file.
    pub fn read_at(&mut self, id: NodeId, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let size = self.size(id);
        if offset >= size {
            return Ok(Vec::new());
        }
        let n = (len as u64).min(size - offset) as usize;
        match &self.node(id).kind {
            Kind::File(Content::Mem(data)) => {
                Ok(data[offset as usize..offset as usize + n].to_vec())
            }
            Kind::File(Content::Host { rel, .. }) => {
                use std::os::unix::fs::FileExt;
                if !self.host_files.contains_key(&id) {
                    let mount = &self.mounts[self.node(id).mount];
                    let dir = mount.host.as_ref().ok_or(Errno::BADF)?;
                    let f = dir.open(rel).map_err(|_| Errno::ACCES)?.into_std();
                    self.host_files.insert(id, f);
                }
                let f = &self.host_files[&id];
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    match f.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(Errno(29)), // EIO
                    }
                }
                // The size the guest was told is the size it gets: a host file that shrank
                // during the run reads as zeros rather than as a short file.
                Ok(buf)
            }
            Kind::Dir(_) => Err(Errno::ISDIR),
            Kind::Symlink(_) => Err(Errno::INVAL),
        }
    }

    /// Writes `data` at `offset` of an in-memory file, zero-filling any gap.
    pub fn write_at(
        &mut self,
        id: NodeId,
        offset: u64,
        data: &[u8],
        now: u64,
        quota_left: u64,
    ) -> Result<(), WriteError> {
        if !self.writable(id) {
            return Err(Errno::ROFS.into());
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::FBIG)?;
        let old = self.size(id);
        if end > old {
            self.charge((end - old) as i64, quota_left)
                .map_err(WriteError::Quota)?;
        }
        let n = self.node_mut(id);
        let Kind::File(Content::Mem(buf)) = &mut n.kind else {
            return Err(Errno::BADF.into());
        };
        if end as usize > buf.len() {
            buf.resize(end as usize, 0);
        }
        buf[offset as usize..end as usize].copy_from_slice(data);
        n.mtim = now;
        n.ctim = now;
        Ok(())
    }

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
        let old = self.size(id);
        self.charge(size as i64 - old as i64, quota_left)
            .map_err(WriteError::Quota)?;
        let n = self.node_mut(id);
        let Kind::File(Content::Mem(buf)) = &mut n.kind else {
            return Err(Errno::BADF.into());
        };
        buf.resize(size as usize, 0);
        n.mtim = now;
        n.ctim = now;
        Ok(())
    }

    /// Writes mount `mount`'s tree under host directory `dest` (which exists and is
    /// empty).
    pub fn export(&self, mount: usize, dest: &Path) -> io::Result<()> {
        self.export_dir(self.mounts[mount].root, dest)
    }

    fn export_dir(&self, dir: NodeId, dest: &Path) -> io::Result<()> {
        let Kind::Dir(entries) = &self.node(dir).kind else {
            return Ok(());
        };
        for (name, &child) in entries {
            let path = dest.join(std::ffi::OsStr::from_bytes(name));
            match &self.node(child).kind {
                Kind::Dir(_) => {
                    std::fs::create_dir(&path)?;
                    self.export_dir(child, &path)?;
                }
                Kind::File(Content::Mem(data)) => std::fs::write(&path, data)?,
                Kind::File(Content::Host { .. }) | Kind::Symlink(_) => {
                    // Output volumes only ever hold in-memory files and directories.
                }
            }
        }
        Ok(())
    }
}

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
        let names: Vec<Vec<u8>> = vfs.list(root).into_iter().map(|e| e.0).collect();
        let want: Vec<&[u8]> = vec![b".", b"..", b"a", b"b", b"d", b"to_e"];
        assert_eq!(names, want);
        let d = vfs.resolve(root, b"d", true).unwrap();
        let st = vfs.filestat(d);
        assert_eq!((st.nlink, st.size, st.mtim), (NLINK, DIR_SIZE, 7));
        // Inodes in first-seen order of the sorted scan: root 1, a 2, b 3, d 4, d/e 5, ...
        assert_eq!(vfs.filestat(root).ino, 1);
        assert_eq!(st.ino, 4);
    }

    #[test]
    fn inputs_are_read_only_and_outputs_are_charged_to_the_quota() {
        let (_t, mut vfs) = input_tree();
        let (input, out) = (vfs.mounts[0].root, vfs.mounts[1].root);
        assert!(matches!(
            vfs.create(input, b"x".to_vec(), false, 9, 100),
            Err(WriteError::Errno(Errno::ROFS))
        ));
        let f = match vfs.create(out, b"file".to_vec(), false, 9, 100) {
            Ok(f) => f,
            Err(_) => panic!("create failed"),
        };
        assert_eq!(vfs.used, 4);
        assert!(vfs.write_at(f, 0, &[1; 50], 9, 96).is_ok());
        assert_eq!(vfs.used, 54);
        assert!(matches!(
            vfs.write_at(f, 50, &[1; 47], 9, 46),
            Err(WriteError::Quota(_))
        ));
        assert_eq!(vfs.size(f), 50);
        vfs.remove(out, b"file", false, 10).unwrap();
        assert_eq!(vfs.used, 0);
    }
}
