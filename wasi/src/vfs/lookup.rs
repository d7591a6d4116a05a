//! Looking up: resolving a guest's path inside its directory capability (symlinks
//! followed inside the tree only), and what a guest may observe of a node — its type,
//! size, stat, times, directory listing and link target — each a function of the job.

use super::*;

impl Vfs {
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
            // A hard link is the file or symlink it names.
            let child = self.inode(*entries.get(c).ok_or(Errno::NOENT)?);
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
        // A hard link resolves to its file: every fd and operation refers to the one.
        Ok(self.inode(cur))
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
            Kind::Link(primary) => self.filetype(primary),
        }
    }

    pub fn size(&self, id: NodeId) -> u64 {
        match &self.node(id).kind {
            Kind::Dir(_) => DIR_SIZE,
            Kind::File(Content::Host { size }) => *size,
            Kind::File(Content::Mem(data)) => data.len() as u64,
            Kind::Symlink(t) => t.len() as u64,
            Kind::Link(primary) => self.size(*primary),
        }
    }

    pub fn filestat(&self, id: NodeId) -> Filestat {
        let id = self.inode(id);
        let n = self.node(id);
        Filestat {
            dev: n.mount as u64 + 1,
            ino: n.ino,
            filetype: self.filetype(id),
            // Its names, once it has hard links (the constant otherwise, as before).
            nlink: if n.links == 0 {
                NLINK
            } else {
                u64::from(n.links) + u64::from(!n.orphan)
            },
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
}
