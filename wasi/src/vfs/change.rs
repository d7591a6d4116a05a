//! Changing the tree: creating, removing, linking and renaming entries of the output
//! volumes and writable folders, each placement checked against the depth, path and
//! entry bounds and charged to the output quota, and no symlink moved to where it would
//! lead out of its volume.

use super::*;

impl Vfs {
    /// Charges `delta` bytes (negative: returns them) to the quota, of which `quota_left`
    /// remain. Signed arithmetic in i128: no size a guest can name overflows it.
    pub(super) fn charge(&mut self, delta: i128, quota_left: u64) -> Result<(), QuotaExceeded> {
        if delta > i128::from(quota_left) {
            return Err(QuotaExceeded);
        }
        self.used = (i128::from(self.used) + delta) as u64;
        Ok(())
    }

    /// Whether an entry `name` may be placed in `parent` at all: a name the host can
    /// store (no NUL: `EINVAL`, as cap-std answers wasmtime), depth and path length
    /// within [`MAX_DEPTH`] and [`MAX_VOLUME_PATH`] (`ENAMETOOLONG`).
    pub(super) fn check_placement(
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
    pub(super) fn admit_entry(
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
        let c = self.node(child);
        if c.open == 0 && c.links == 0 {
            self.release(child);
        } else {
            // An open file, or one that hard links still name: kept, without this name.
            let c = self.node_mut(child);
            c.orphan = true;
            c.ctim = now;
        }
        Ok(())
    }

    /// Makes `name` in writable directory `parent` a hard link to file `file` (of the
    /// same writable mount: `EXDEV` otherwise, as across host filesystems). A writable
    /// folder's file still read from the host is first copied into memory. The new name
    /// is charged as an entry and as a full copy of the file's bytes, and every later
    /// growth of the file once more per link ([`Kind::Link`]).
    pub fn link(
        &mut self,
        file: NodeId,
        parent: NodeId,
        name: Vec<u8>,
        now: u64,
        quota_left: u64,
    ) -> Result<u64, HostOrWrite> {
        let file = self.inode(file);
        match &self.node(file).kind {
            Kind::File(_) => {}
            // A symlink linked elsewhere must still lead nowhere outside its volume.
            Kind::Symlink(target) => {
                if escapes(target, self.node(parent).depth) {
                    return Err(HostOrWrite::Write(Errno::PERM.into()));
                }
            }
            _ => return Err(HostOrWrite::Write(Errno::PERM.into())),
        }
        if self.node(file).mount != self.node(parent).mount {
            return Err(HostOrWrite::Write(Errno::XDEV.into()));
        }
        if !self.writable(parent) {
            return Err(HostOrWrite::Write(Errno::ROFS.into()));
        }
        let copied = self.materialize(file, quota_left)?;
        let quota_left = quota_left.saturating_sub(copied);
        let size = self.size(file);
        if size > quota_left {
            return Err(HostOrWrite::Write(WriteError::Quota(QuotaExceeded)));
        }
        let entry_charge = self
            .admit_entry(parent, &name, quota_left - size)
            .map_err(HostOrWrite::Write)?;
        self.used += size;
        let mount = self.node(parent).mount;
        let (depth, path_len) = self.child_place(parent, name.len());
        let ino = self.node(file).ino;
        let id = self.alloc(Kind::Link(file), Some(parent), mount, now);
        let n = self.node_mut(id);
        n.entry_charge = entry_charge;
        n.name_len = name.len() as u32;
        n.depth = depth;
        n.path_len = path_len;
        n.ino = ino;
        self.insert(parent, name, id);
        let f = self.node_mut(file);
        f.links += 1;
        f.ctim = now;
        let p = self.node_mut(parent);
        p.mtim = now;
        p.ctim = now;
        Ok(copied)
    }

    /// The deepest depth and longest path below `id`, relative to it, walking its subtree
    /// (each node visited is host work, [`Vfs::take_work`]).
    pub(super) fn subtree_extent(&self, id: NodeId) -> (u32, u32) {
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
    pub(super) fn subtree_links_escape(&self, id: NodeId, new_depth: u32) -> bool {
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
                Kind::Link(primary) => {
                    if let Kind::Symlink(target) = &self.node(*primary).kind {
                        let parent_depth = (i64::from(n.depth) + shift - 1).max(0) as u32;
                        if escapes(target, parent_depth) {
                            return true;
                        }
                    }
                }
                Kind::File(_) => {}
            }
        }
        false
    }

    /// Depth and path length of a child named with `name_len` bytes in `parent`.
    pub(super) fn child_place(&self, parent: NodeId, name_len: usize) -> (u32, u32) {
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

    /// Sets depth and path length of `id` (now named `name` in `parent`) and of its
    /// subtree.
    pub(super) fn place_subtree(&mut self, id: NodeId, parent: NodeId) {
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
            // Two names of one file: nothing to do (POSIX).
            if self.inode(existing) == self.inode(child) {
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
        let file = self.inode(child);
        self.node_mut(file).ctim = now;
        self.insert(to_dir, to, child);
        self.place_subtree(child, to_dir);
        for d in [from_dir, to_dir] {
            let n = self.node_mut(d);
            n.mtim = now;
            n.ctim = now;
        }
        Ok(())
    }
}
