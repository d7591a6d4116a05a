//! The `fd_*` calls: descriptors, their flags and rights, reads and writes (charged as
//! fuel by the bytes they move), seeks, stats and directory listings.

use super::*;

impl WasiHost {
    pub fn fd_close(&mut self, _m: &mut Mem, fd: u32) -> R {
        let f = self.fds.remove(&fd).ok_or(Errno::BADF)?;
        self.release_fd(f);
        Ok(())
    }
    pub fn fd_renumber(&mut self, _m: &mut Mem, from: u32, to: u32) -> R {
        if !self.fds.contains_key(&from) || !self.fds.contains_key(&to) {
            return Err(Errno::BADF.into());
        }
        if from != to {
            let f = self.fds.remove(&from).ok_or(Errno::BADF)?;
            if let Some(old) = self.fds.insert(to, f) {
                self.release_fd(old);
            }
        }
        Ok(())
    }
    pub fn fd_sync(&mut self, _m: &mut Mem, fd: u32) -> R {
        self.fd(fd)?;
        Ok(())
    }
    pub fn fd_advise(&mut self, _m: &mut Mem, fd: u32, _off: u64, _len: u64, _advice: u32) -> R {
        self.fd(fd)?;
        Ok(())
    }
    /// `EBADF` on anything but a file (as Linux answers for a directory), and `ENOTSUP`
    /// on files, as wasmtime answers (preview1's `fd_allocate` is deprecated there).
    pub fn fd_allocate(&mut self, _m: &mut Mem, fd: u32, _off: u64, _len: u64) -> R {
        match self.fd(fd)? {
            Fd::File { .. } => Err(Errno::NOTSUP.into()),
            _ => Err(Errno::BADF.into()),
        }
    }

    pub fn fd_fdstat_get(&mut self, m: &mut Mem, fd: u32, out: u32) -> R {
        let mut b = [0u8; SIZE_FDSTAT];
        let (ft, flags, rights, inh) = match self.fd(fd)? {
            Fd::Stdin | Fd::Stdout | Fd::Stderr => (FILETYPE_UNKNOWN, 0u16, RIGHTS_STDIO, 0),
            Fd::Dir { node, .. } => {
                let r = if self.vfs.writable(*node) {
                    RIGHTS_DIRECTORY
                } else {
                    RIGHTS_DIRECTORY & !RIGHTS_WRITE
                };
                // Inheriting rights stay complete even on read-only mounts: wasi-libc masks
                // the rights it asks `path_open` for with them, and an open for writing
                // must reach `path_open` to fail there with EROFS (not later with EBADF).
                (FILETYPE_DIRECTORY, 0, r, RIGHTS_DIRECTORY_INHERITING)
            }
            Fd::File {
                append,
                sync,
                rights,
                ..
            } => (
                FILETYPE_REGULAR_FILE,
                if *append { FDFLAGS_APPEND } else { 0 } | *sync,
                *rights,
                0,
            ),
        };
        b[0] = ft;
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&rights.to_le_bytes());
        b[16..24].copy_from_slice(&inh.to_le_bytes());
        m.write(out, &b)?;
        Ok(())
    }
    pub fn fd_fdstat_set_flags(&mut self, _m: &mut Mem, fd: u32, flags: u32) -> R {
        match self.fds.get_mut(&fd).ok_or(Errno::BADF)? {
            Fd::File { append, .. } => {
                *append = flags as u16 & FDFLAGS_APPEND != 0;
                Ok(())
            }
            _ => Ok(()),
        }
    }
    pub fn fd_fdstat_set_rights(&mut self, _m: &mut Mem, fd: u32, base: u64, _inh: u64) -> R {
        match self.fds.get_mut(&fd).ok_or(Errno::BADF)? {
            Fd::File {
                rights,
                read,
                write,
                ..
            } => {
                if base & !*rights != 0 {
                    return Err(Errno::NOTCAPABLE.into());
                }
                *rights = base;
                *read &= base & RIGHT_FD_READ != 0;
                *write &= base & RIGHT_FD_WRITE != 0;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn fd_prestat_get(&mut self, m: &mut Mem, fd: u32, out: u32) -> R {
        match self.fd(fd)? {
            Fd::Dir {
                preopen: Some(i), ..
            } => {
                let len = self.vfs.mounts[*i].guest.len() as u32;
                m.write(out, &[0, 0, 0, 0])?;
                m.write_u32(offset(out, 4)?, len)?;
                Ok(())
            }
            _ => Err(Errno::BADF.into()),
        }
    }
    pub fn fd_prestat_dir_name(&mut self, m: &mut Mem, fd: u32, buf: u32, len: u32) -> R {
        match self.fd(fd)? {
            Fd::Dir {
                preopen: Some(i), ..
            } => {
                let name = self.vfs.mounts[*i].guest.as_bytes();
                if (len as usize) < name.len() {
                    return Err(Errno::NAMETOOLONG.into());
                }
                m.write(buf, name)?;
                Ok(())
            }
            _ => Err(Errno::BADF.into()),
        }
    }

    pub(super) fn stdio_filestat() -> Filestat {
        Filestat {
            dev: 0,
            ino: 0,
            filetype: FILETYPE_UNKNOWN,
            nlink: 1,
            size: 0,
            atim: 0,
            mtim: 0,
            ctim: 0,
        }
    }

    pub fn fd_filestat_get(&mut self, m: &mut Mem, fd: u32, out: u32) -> R {
        let st = match self.fd(fd)? {
            Fd::Stdin | Fd::Stdout | Fd::Stderr => Self::stdio_filestat(),
            Fd::Dir { node, .. } | Fd::File { node, .. } => self.vfs.filestat(*node),
        };
        m.write(out, &st.encode())?;
        Ok(())
    }
    pub fn fd_filestat_set_size(&mut self, _m: &mut Mem, fd: u32, size: u64) -> R {
        let (node, write) = match self.fd(fd)? {
            Fd::File { node, write, .. } => (*node, *write),
            Fd::Dir { .. } => return Err(Errno::ISDIR.into()),
            _ => return Err(Errno::INVAL.into()),
        };
        if !self.vfs.writable(node) {
            return Err(Errno::ROFS.into());
        }
        if !write {
            return Err(Errno::BADF.into());
        }
        if size > 0 && size <= i64::MAX as u64 {
            let copied = self.vfs.materialize(node, self.quota_left())?;
            self.charge_bytes(copied)?;
            // Growing zero-fills: host work in proportion to the growth, charged once the
            // quota has said the growth may be kept (the quota decides first, as for writes).
            let growth = size.saturating_sub(self.vfs.size(node));
            if growth > self.quota_left() {
                return Err(QuotaExceeded.into());
            }
            self.charge_bytes(growth)?;
        }
        let (now, left) = (self.now(), self.quota_left());
        self.vfs.set_size(node, size, now, left)?;
        Ok(())
    }

    pub(super) fn times(
        &self,
        atim: u64,
        mtim: u64,
        flags: u16,
    ) -> Result<(Option<u64>, Option<u64>), Errno> {
        if (flags & FSTFLAGS_ATIM != 0 && flags & FSTFLAGS_ATIM_NOW != 0)
            || (flags & FSTFLAGS_MTIM != 0 && flags & FSTFLAGS_MTIM_NOW != 0)
        {
            return Err(Errno::INVAL);
        }
        let now = self.now();
        let a = if flags & FSTFLAGS_ATIM_NOW != 0 {
            Some(now)
        } else if flags & FSTFLAGS_ATIM != 0 {
            Some(atim)
        } else {
            None
        };
        let mt = if flags & FSTFLAGS_MTIM_NOW != 0 {
            Some(now)
        } else if flags & FSTFLAGS_MTIM != 0 {
            Some(mtim)
        } else {
            None
        };
        Ok((a, mt))
    }

    pub(super) fn set_times(&mut self, node: NodeId, atim: u64, mtim: u64, flags: u32) -> R {
        let (a, mt) = self.times(atim, mtim, flags as u16)?;
        if !self.vfs.writable(node) {
            return Err(Errno::ROFS.into());
        }
        let now = self.now();
        self.vfs.set_times(node, a, mt, now);
        Ok(())
    }

    pub fn fd_filestat_set_times(
        &mut self,
        _m: &mut Mem,
        fd: u32,
        atim: u64,
        mtim: u64,
        flags: u32,
    ) -> R {
        let node = self.node_of(fd)?;
        self.set_times(node, atim, mtim, flags)
    }

    /// Reads into the guest's iovecs one after another, straight from the source into
    /// guest memory (no host buffer), stopping at the end of the data. `at` is the offset
    /// for `fd_pread`; `None` reads at (and advances) the fd's position. Each iovec costs
    /// a unit of fuel and each [`HOST_BYTES_PER_FUEL`] bytes read another.
    pub(super) fn read_iovecs(
        &mut self,
        m: &mut Mem,
        fd: u32,
        iovs: u32,
        n: u32,
        at: Option<u64>,
    ) -> Result<u64, HostError> {
        m.check_array(iovs, n, 8)?;
        self.charge(u64::from(n))?;
        let (node, start) = match self.fds.get(&fd).ok_or(Errno::BADF)? {
            Fd::Stdin => {
                if at.is_some() {
                    return Err(Errno::SPIPE.into());
                }
                (None, self.stdin_pos as u64)
            }
            Fd::Stdout | Fd::Stderr => return Err(Errno::BADF.into()),
            Fd::Dir { .. } => return Err(Errno::ISDIR.into()),
            &Fd::File {
                node, pos, read, ..
            } => {
                if !read {
                    return Err(Errno::BADF.into());
                }
                (Some(node), at.unwrap_or(pos))
            }
        };
        let mut done = 0u64;
        for i in 0..n {
            let (buf, len) = m.iovec(iovs, i)?;
            let dst = m.slice_mut(buf, len)?;
            let got = match node {
                None => {
                    let from = (start + done) as usize;
                    let k = dst.len().min(self.stdin.len() - from);
                    dst[..k].copy_from_slice(&self.stdin[from..from + k]);
                    k
                }
                Some(node) => self.vfs.read_at(node, start + done, dst)?,
            };
            done += got as u64;
            self.charge_bytes(got as u64)?;
            if got < len as usize {
                break;
            }
        }
        if at.is_none() {
            match self.fds.get_mut(&fd) {
                Some(Fd::File { pos, .. }) => *pos = start + done,
                _ => self.stdin_pos = (start + done) as usize,
            }
        }
        Ok(done)
    }

    pub fn fd_read(&mut self, m: &mut Mem, fd: u32, iovs: u32, n: u32, nread: u32) -> R {
        let k = self.read_iovecs(m, fd, iovs, n, None)?;
        m.write_u32(nread, k as u32)?;
        Ok(())
    }
    pub fn fd_pread(&mut self, m: &mut Mem, fd: u32, iovs: u32, n: u32, off: u64, nread: u32) -> R {
        let k = self.read_iovecs(m, fd, iovs, n, Some(off))?;
        m.write_u32(nread, k as u32)?;
        Ok(())
    }

    /// Writes the guest's ciovecs, in order, to `fd`. The total (iovecs may overlap, so
    /// it can exceed memory's size) is checked against the output quota before a byte is
    /// copied, and the copy goes straight from guest memory to its destination: host
    /// memory grows by what is kept, never by a gathered copy. Charged like reads.
    pub(super) fn write_iovecs(
        &mut self,
        m: &Mem,
        fd: u32,
        iovs: u32,
        n: u32,
        at: Option<u64>,
    ) -> Result<u64, HostError> {
        m.check_array(iovs, n, 8)?;
        self.charge(u64::from(n))?;
        let total = m.iovecs_total(iovs, n)?;
        let left = self.quota_left();
        let now = self.now();
        let parts = (0..n).map(|i| {
            let (buf, len) = m.iovec(iovs, i).expect("checked by iovecs_total");
            m.slice(buf, len).expect("checked by iovec")
        });
        match self.fds.get(&fd).ok_or(Errno::BADF)? {
            Fd::Stdout | Fd::Stderr if at.is_some() => Err(Errno::SPIPE.into()),
            f @ (Fd::Stdout | Fd::Stderr) => {
                if total > left {
                    return Err(QuotaExceeded.into());
                }
                let to_stdout = matches!(f, Fd::Stdout);
                self.charge_bytes(total)?;
                let out = if to_stdout {
                    &mut self.stdout
                } else {
                    &mut self.stderr
                };
                let start = out.len();
                vfs::grow(out, out.len() + total as usize);
                for part in parts {
                    out.extend_from_slice(part);
                }
                if let Some(echo) = &self.echo {
                    echo(!to_stdout, &out[start..]);
                }
                Ok(total)
            }
            Fd::Stdin => Err(Errno::BADF.into()),
            Fd::Dir { .. } => Err(Errno::ISDIR.into()),
            &Fd::File {
                node,
                pos,
                write,
                append,
                ..
            } => {
                if !self.vfs.writable(node) {
                    return Err(Errno::ROFS.into());
                }
                if !write {
                    return Err(Errno::BADF.into());
                }
                let offset = match at {
                    Some(o) => o,
                    None if append => self.vfs.size(node),
                    None => pos,
                };
                // The quota decides before the copy is charged: a write that would grow
                // the file past it ends the run whatever its cost.
                let end = offset.checked_add(total).ok_or(Errno::FBIG)?;
                if end > i64::MAX as u64 {
                    return Err(Errno::FBIG.into());
                }
                if end.saturating_sub(self.vfs.size(node)) > left {
                    return Err(QuotaExceeded.into());
                }
                // The copy, and the zero-filled gap before `offset` if it lies past the end.
                self.charge_bytes(total)?;
                self.charge_bytes(offset.saturating_sub(self.vfs.size(node)))?;
                let copied = self.vfs.materialize(node, left)?;
                self.charge_bytes(copied)?;
                let left = self.quota_left();
                self.vfs.write_at(node, offset, total, parts, now, left)?;
                if at.is_none() {
                    if let Some(Fd::File { pos, .. }) = self.fds.get_mut(&fd) {
                        *pos = offset + total;
                    }
                }
                Ok(total)
            }
        }
    }

    pub fn fd_write(&mut self, m: &mut Mem, fd: u32, iovs: u32, n: u32, nwritten: u32) -> R {
        let k = self.write_iovecs(m, fd, iovs, n, None)?;
        m.write_u32(nwritten, k as u32)?;
        Ok(())
    }
    pub fn fd_pwrite(
        &mut self,
        m: &mut Mem,
        fd: u32,
        iovs: u32,
        n: u32,
        off: u64,
        nwritten: u32,
    ) -> R {
        let k = self.write_iovecs(m, fd, iovs, n, Some(off))?;
        m.write_u32(nwritten, k as u32)?;
        Ok(())
    }

    pub fn fd_seek(&mut self, m: &mut Mem, fd: u32, offset: u64, whence: u32, out: u32) -> R {
        let size = match self.fd(fd)? {
            Fd::File { node, .. } => self.vfs.size(*node),
            Fd::Dir { .. } => return Err(Errno::BADF.into()),
            _ => return Err(Errno::SPIPE.into()),
        };
        let Some(Fd::File { pos, .. }) = self.fds.get_mut(&fd) else {
            return Err(Errno::BADF.into());
        };
        let base: i128 = match whence as u8 {
            WHENCE_SET => 0,
            WHENCE_CUR => *pos as i128,
            WHENCE_END => size as i128,
            _ => return Err(Errno::INVAL.into()),
        };
        let new = base + offset as i64 as i128;
        if new < 0 || new > i64::MAX as i128 {
            return Err(Errno::INVAL.into());
        }
        *pos = new as u64;
        m.write_u64(out, new as u64)?;
        Ok(())
    }
    pub fn fd_tell(&mut self, m: &mut Mem, fd: u32, out: u32) -> R {
        match self.fd(fd)? {
            Fd::File { pos, .. } => {
                let p = *pos;
                m.write_u64(out, p)?;
                Ok(())
            }
            Fd::Dir { .. } => Err(Errno::BADF.into()),
            _ => Err(Errno::SPIPE.into()),
        }
    }

    /// Entries in listing order (`.`, `..`, then by name bytes); the cookie of an entry is
    /// its position and `d_next` the position after it, so cookies are stable. Served
    /// incrementally: each call writes only what fits in the guest's buffer, resumes where
    /// the previous call stopped, and is charged per entry and per name byte.
    pub fn fd_readdir(
        &mut self,
        m: &mut Mem,
        fd: u32,
        buf: u32,
        len: u32,
        cookie: u64,
        used: u32,
    ) -> R {
        self.asked.dir_listings += 1;
        let (node, hint) = match self.fds.get_mut(&fd).ok_or(Errno::BADF)? {
            Fd::Dir { node, cursor, .. } => {
                let hint = cursor.take().filter(|c| c.0 == cookie).map(|c| c.1);
                (*node, hint)
            }
            _ => return Err(Errno::NOTDIR.into()),
        };
        m.slice(buf, len)?;
        let mut written = 0usize;
        let mut units = 0u64;
        let mut next: Option<(u64, Vec<u8>)> = None;
        // Without a resume point the listing steps over the entries before `cookie`:
        // charged as host work too.
        if hint.is_none() {
            units += cookie.saturating_sub(2);
        }
        {
            let out = m.slice_mut(buf, len)?;
            for (pos, name, ino, ty) in self.vfs.list_from(node, cookie, hint.as_deref()) {
                units += 1 + name.len() as u64 / HOST_BYTES_PER_FUEL;
                if written >= out.len() {
                    next = Some((pos, name.to_vec()));
                    break;
                }
                let mut d = [0u8; SIZE_DIRENT];
                // `list_from` yields positions below `u64::MAX`.
                d[0..8].copy_from_slice(&pos.saturating_add(1).to_le_bytes());
                d[8..16].copy_from_slice(&ino.to_le_bytes());
                d[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
                d[20] = ty;
                for chunk in [&d[..], name] {
                    let k = chunk.len().min(out.len() - written);
                    out[written..written + k].copy_from_slice(&chunk[..k]);
                    written += k;
                }
                if written >= out.len() {
                    // This entry may be cut short: the guest asks for it again by its
                    // cookie (its position), so resume there.
                    next = Some((pos, name.to_vec()));
                    break;
                }
            }
        }
        self.charge(units)?;
        if let Some(Fd::Dir { cursor, .. }) = self.fds.get_mut(&fd) {
            *cursor = next;
        }
        m.write_u32(used, written as u32)?;
        Ok(())
    }
}
