//! The state behind `wasi_snapshot_preview1` and the semantics of each function.
//!
//! Every function returns `Result<(), HostError>`: an errno goes back to the guest, a
//! [`Fatal`] ends the run (proc_exit, output quota).

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::abi::*;
use super::vfs::{NodeId, QuotaExceeded, Vfs, WriteError};

/// Nanoseconds the virtual clocks advance on each read: 1 ms, so a guest that spins on
/// the clock until a deadline terminates, after a number of reads fixed by the job.
pub const CLOCK_TICK_NS: u64 = 1_000_000;

/// What ends a run from inside a host function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// `proc_exit(code)`.
    Exit(i32),
    /// A write would have taken stdout + stderr + output volumes over the job's quota.
    OutputQuota,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Exit(c) => write!(f, "exit with code {c}"),
            Fatal::OutputQuota => f.write_str("output quota exceeded"),
        }
    }
}
impl std::error::Error for Fatal {}

pub enum HostError {
    Errno(Errno),
    Fatal(Fatal),
}

impl From<Errno> for HostError {
    fn from(e: Errno) -> Self {
        HostError::Errno(e)
    }
}
impl From<QuotaExceeded> for HostError {
    fn from(_: QuotaExceeded) -> Self {
        HostError::Fatal(Fatal::OutputQuota)
    }
}
impl From<WriteError> for HostError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Errno(e) => HostError::Errno(e),
            WriteError::Quota(q) => q.into(),
        }
    }
}

type R = Result<(), HostError>;

/// The guest's two clocks. Decision: virtual, never the host's. Wall time starts at the
/// job epoch and monotonic time at 0; each read returns the current value and then
/// advances that clock by [`CLOCK_TICK_NS`]; a sleep advances both clocks to its deadline
/// at once. Rejected alternative: host time scaled or offset (still varies with load).
/// The CPU-time clocks are served from the monotonic clock.
pub struct VirtualClock {
    pub wall: u64,
    pub mono: u64,
}

impl VirtualClock {
    fn read(&mut self, id: u32) -> Result<u64, Errno> {
        let c = match id {
            CLOCK_REALTIME => &mut self.wall,
            CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => &mut self.mono,
            _ => return Err(Errno::INVAL),
        };
        let v = *c;
        *c = c.saturating_add(CLOCK_TICK_NS);
        Ok(v)
    }
    fn peek(&self, id: u32) -> Result<u64, Errno> {
        match id {
            CLOCK_REALTIME => Ok(self.wall),
            CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => Ok(self.mono),
            _ => Err(Errno::INVAL),
        }
    }
    fn advance(&mut self, ns: u64) {
        self.wall = self.wall.saturating_add(ns);
        self.mono = self.mono.saturating_add(ns);
    }
}

enum Fd {
    Stdin,
    Stdout,
    Stderr,
    Dir {
        node: NodeId,
        preopen: Option<usize>,
    },
    File {
        node: NodeId,
        pos: u64,
        read: bool,
        write: bool,
        append: bool,
        rights: u64,
    },
}

/// Everything the guest can reach. Built only by [`crate::capabilities`].
pub struct WasiHost {
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
    pub(crate) stdin: Vec<u8>,
    stdin_pos: usize,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub vfs: Vfs,
    fds: BTreeMap<u32, Fd>,
    pub clock: VirtualClock,
    rng: ChaCha20Rng,
    max_output: u64,
}

/// The ChaCha20 key for seed `seed`: the seed's 8 little-endian bytes, then zeros.
/// Decision: rand_chacha's `ChaCha20Rng` (the ChaCha20 block function with a 64-bit
/// counter, output value-stable by that crate's documented policy), keyed explicitly
/// rather than through `seed_from_u64` (whose expansion is a convenience) or `StdRng`
/// (which may change algorithm between rand versions).
pub fn chacha_key(seed: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key
}

impl WasiHost {
    pub(crate) fn new(
        argv: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
        stdin: Vec<u8>,
        vfs: Vfs,
        epoch_ns: u64,
        seed: u64,
        max_output: u64,
    ) -> Self {
        let mut fds = BTreeMap::new();
        fds.insert(0, Fd::Stdin);
        fds.insert(1, Fd::Stdout);
        fds.insert(2, Fd::Stderr);
        for (i, m) in vfs.mounts.iter().enumerate() {
            fds.insert(
                3 + i as u32,
                Fd::Dir {
                    node: m.root,
                    preopen: Some(i),
                },
            );
        }
        WasiHost {
            argv,
            env,
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            vfs,
            fds,
            clock: VirtualClock {
                wall: epoch_ns,
                mono: 0,
            },
            rng: ChaCha20Rng::from_seed(chacha_key(seed)),
            max_output,
        }
    }

    /// Bytes still allowed by the output quota.
    pub fn quota_left(&self) -> u64 {
        let used = self.vfs.used + self.stdout.len() as u64 + self.stderr.len() as u64;
        self.max_output.saturating_sub(used)
    }

    fn now(&self) -> u64 {
        self.clock.wall
    }

    fn fd(&self, fd: u32) -> Result<&Fd, Errno> {
        self.fds.get(&fd).ok_or(Errno::BADF)
    }

    fn dir_node(&self, fd: u32) -> Result<NodeId, Errno> {
        match self.fd(fd)? {
            Fd::Dir { node, .. } => Ok(*node),
            Fd::File { .. } => Err(Errno::NOTDIR),
            _ => Err(Errno::NOTDIR),
        }
    }

    fn node_of(&self, fd: u32) -> Result<NodeId, Errno> {
        match self.fd(fd)? {
            Fd::Dir { node, .. } | Fd::File { node, .. } => Ok(*node),
            _ => Err(Errno::BADF),
        }
    }

    fn alloc_fd(&mut self, f: Fd) -> Result<u32, Errno> {
        // Lowest free number, as POSIX: the guest's fd numbers are a function of its calls.
        let mut n = 0u32;
        for &k in self.fds.keys() {
            if k != n {
                break;
            }
            n += 1;
        }
        if n >= 1 << 16 {
            return Err(Errno::MFILE);
        }
        self.fds.insert(n, f);
        Ok(n)
    }

    fn path<'m>(m: &'m Mem, ptr: u32, len: u32) -> Result<&'m [u8], Errno> {
        let p = m.slice(ptr, len)?;
        if std::str::from_utf8(p).is_err() {
            return Err(Errno::ILSEQ);
        }
        Ok(p)
    }

    /// The directory `fd` names and the path at `ptr`, checked in that order.
    fn dir_and_path(
        &self,
        m: &Mem,
        fd: u32,
        ptr: u32,
        len: u32,
    ) -> Result<(NodeId, Vec<u8>), Errno> {
        let dir = self.dir_node(fd)?;
        let p = Self::path(m, ptr, len)?.to_vec();
        Ok((dir, p))
    }

    /// The node the path at `ptr` names, looked up from the directory `fd`.
    fn resolve_at(
        &self,
        m: &Mem,
        fd: u32,
        ptr: u32,
        len: u32,
        follow: bool,
    ) -> Result<NodeId, Errno> {
        let (dir, p) = self.dir_and_path(m, fd, ptr, len)?;
        self.vfs.resolve(dir, &p, follow)
    }

    /// The parent directory of the path at `ptr`, looked up from the directory `fd`, and
    /// the path's last component.
    fn parent_at(&self, m: &Mem, fd: u32, ptr: u32, len: u32) -> Result<(NodeId, Vec<u8>), Errno> {
        let (dir, p) = self.dir_and_path(m, fd, ptr, len)?;
        self.vfs.resolve_parent(dir, &p)
    }

    // ---- args, env ----

    fn sizes(list: &[Vec<u8>]) -> (u32, u32) {
        let bytes: usize = list.iter().map(|a| a.len() + 1).sum();
        (list.len() as u32, bytes as u32)
    }

    fn put_list(list: &[Vec<u8>], m: &mut Mem, ptrs: u32, buf: u32) -> R {
        let mut at = buf;
        for (i, a) in list.iter().enumerate() {
            m.write_u32(ptrs + 4 * i as u32, at)?;
            m.write(at, a)?;
            m.write_u8(at + a.len() as u32, 0)?;
            at += a.len() as u32 + 1;
        }
        Ok(())
    }

    pub fn args_sizes_get(&mut self, m: &mut Mem, argc: u32, size: u32) -> R {
        let (n, b) = Self::sizes(&self.argv);
        m.write_u32(argc, n)?;
        m.write_u32(size, b)?;
        Ok(())
    }
    pub fn args_get(&mut self, m: &mut Mem, argv: u32, buf: u32) -> R {
        Self::put_list(&self.argv, m, argv, buf)
    }
    pub fn environ_sizes_get(&mut self, m: &mut Mem, count: u32, size: u32) -> R {
        let (n, b) = Self::sizes(&self.env);
        m.write_u32(count, n)?;
        m.write_u32(size, b)?;
        Ok(())
    }
    pub fn environ_get(&mut self, m: &mut Mem, env: u32, buf: u32) -> R {
        Self::put_list(&self.env, m, env, buf)
    }

    // ---- clocks, random, scheduling ----

    pub fn clock_res_get(&mut self, m: &mut Mem, id: u32, out: u32) -> R {
        self.clock.peek(id)?;
        m.write_u64(out, CLOCK_TICK_NS)?;
        Ok(())
    }
    pub fn clock_time_get(&mut self, m: &mut Mem, id: u32, _precision: u64, out: u32) -> R {
        let v = self.clock.read(id)?;
        m.write_u64(out, v)?;
        Ok(())
    }
    pub fn random_get(&mut self, m: &mut Mem, buf: u32, len: u32) -> R {
        let out = m.slice_mut(buf, len)?;
        self.rng.fill_bytes(out);
        Ok(())
    }
    pub fn sched_yield(&mut self, _m: &mut Mem) -> R {
        Ok(())
    }

    /// Decision: file and stdio subscriptions are always ready (everything is in memory
    /// or a regular file), so they are reported at once without touching the clock; when
    /// only clock subscriptions are given, both clocks jump to the earliest deadline and
    /// the subscriptions due then fire, in subscription order. No real waiting, ever.
    pub fn poll_oneoff(&mut self, m: &mut Mem, inp: u32, out: u32, n: u32, nevents: u32) -> R {
        if n == 0 {
            return Err(Errno::INVAL.into());
        }
        let mut events: Vec<[u8; SIZE_EVENT]> = Vec::new();
        let mut clocks: Vec<(u64, u64, u16)> = Vec::new(); // (userdata, delta, error)
        for i in 0..n {
            let s = inp
                .checked_add(
                    i.checked_mul(SIZE_SUBSCRIPTION as u32)
                        .ok_or(Errno::FAULT)?,
                )
                .ok_or(Errno::FAULT)?;
            let userdata = m.read_u64(s)?;
            let tag = m.slice(s + 8, 1)?[0];
            let mut ev = [0u8; SIZE_EVENT];
            ev[0..8].copy_from_slice(&userdata.to_le_bytes());
            match tag {
                EVENTTYPE_CLOCK => {
                    let id = m.read_u32(s + 16)?;
                    let timeout = m.read_u64(s + 24)?;
                    let flags = m.read_u16(s + 40)?;
                    match self.clock.peek(id) {
                        Ok(now) => {
                            let delta = if flags & SUBCLOCKFLAGS_ABSTIME != 0 {
                                timeout.saturating_sub(now)
                            } else {
                                timeout
                            };
                            clocks.push((userdata, delta, 0));
                        }
                        Err(e) => clocks.push((userdata, 0, e.0)),
                    }
                }
                EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                    let fd = m.read_u32(s + 16)?;
                    ev[10] = tag;
                    let nbytes: Result<u64, Errno> = match (self.fds.get(&fd), tag) {
                        (None, _) => Err(Errno::BADF),
                        (Some(Fd::Stdin), EVENTTYPE_FD_READ) => {
                            Ok((self.stdin.len() - self.stdin_pos) as u64)
                        }
                        (Some(Fd::File { node, pos, .. }), EVENTTYPE_FD_READ) => {
                            Ok(self.vfs.size(*node).saturating_sub(*pos))
                        }
                        (Some(Fd::Stdout | Fd::Stderr | Fd::File { .. }), EVENTTYPE_FD_WRITE) => {
                            Ok(self.quota_left())
                        }
                        _ => Err(Errno::BADF),
                    };
                    match nbytes {
                        Ok(nb) => ev[16..24].copy_from_slice(&nb.to_le_bytes()),
                        Err(e) => ev[8..10].copy_from_slice(&e.0.to_le_bytes()),
                    }
                    events.push(ev);
                }
                _ => return Err(Errno::INVAL.into()),
            }
        }
        if events.is_empty() {
            let min = clocks.iter().map(|c| c.1).min().unwrap_or(0);
            self.clock.advance(min);
            for (userdata, delta, err) in clocks {
                if delta == min {
                    let mut ev = [0u8; SIZE_EVENT];
                    ev[0..8].copy_from_slice(&userdata.to_le_bytes());
                    ev[8..10].copy_from_slice(&err.to_le_bytes());
                    ev[10] = EVENTTYPE_CLOCK;
                    events.push(ev);
                }
            }
        }
        for (i, ev) in events.iter().enumerate() {
            m.write(out + (i * SIZE_EVENT) as u32, ev)?;
        }
        m.write_u32(nevents, events.len() as u32)?;
        Ok(())
    }

    pub fn proc_exit(&mut self, code: u32) -> Fatal {
        Fatal::Exit(code as i32)
    }

    // ---- fds ----

    pub fn fd_close(&mut self, _m: &mut Mem, fd: u32) -> R {
        self.fds.remove(&fd).ok_or(Errno::BADF)?;
        Ok(())
    }
    pub fn fd_renumber(&mut self, _m: &mut Mem, from: u32, to: u32) -> R {
        if !self.fds.contains_key(&from) || !self.fds.contains_key(&to) {
            return Err(Errno::BADF.into());
        }
        if from != to {
            let f = self.fds.remove(&from).expect("checked");
            self.fds.insert(to, f);
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
    pub fn fd_allocate(&mut self, _m: &mut Mem, fd: u32, _off: u64, _len: u64) -> R {
        self.fd(fd)?;
        Err(Errno::NOTSUP.into())
    }

    pub fn fd_fdstat_get(&mut self, m: &mut Mem, fd: u32, out: u32) -> R {
        let mut b = [0u8; SIZE_FDSTAT];
        let (ft, flags, rights, inh) = match self.fd(fd)? {
            Fd::Stdin | Fd::Stdout | Fd::Stderr => (FILETYPE_UNKNOWN, 0u16, RIGHTS_STDIO, 0),
            Fd::Dir { node, .. } => {
                let r = if self.vfs.writable(*node) {
                    RIGHTS_ALL
                } else {
                    RIGHTS_ALL & !RIGHTS_WRITE
                };
                // Inheriting rights stay complete even on read-only mounts: wasi-libc masks
                // the rights it asks `path_open` for with them, and an open for writing
                // must reach `path_open` to fail there with EROFS (not later with EBADF).
                (FILETYPE_DIRECTORY, 0, r, RIGHTS_ALL)
            }
            Fd::File { append, rights, .. } => (
                FILETYPE_REGULAR_FILE,
                if *append { FDFLAGS_APPEND } else { 0 },
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
                m.write_u32(out + 4, len)?;
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

    fn stdio_filestat() -> Filestat {
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
        let (now, left) = (self.now(), self.quota_left());
        self.vfs.set_size(node, size, now, left)?;
        Ok(())
    }

    fn times(&self, atim: u64, mtim: u64, flags: u16) -> Result<(Option<u64>, Option<u64>), Errno> {
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

    fn set_times(&mut self, node: NodeId, atim: u64, mtim: u64, flags: u32) -> R {
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

    fn read_into(
        &mut self,
        fd: u32,
        iovs: &[(u32, u32)],
        at: Option<u64>,
    ) -> Result<Vec<u8>, Errno> {
        let want: usize = iovs.iter().map(|v| v.1 as usize).sum();
        match self.fds.get(&fd).ok_or(Errno::BADF)? {
            Fd::Stdin => {
                if at.is_some() {
                    return Err(Errno::SPIPE);
                }
                let n = want.min(self.stdin.len() - self.stdin_pos);
                let data = self.stdin[self.stdin_pos..self.stdin_pos + n].to_vec();
                self.stdin_pos += n;
                Ok(data)
            }
            Fd::Stdout | Fd::Stderr => Err(Errno::BADF),
            Fd::Dir { .. } => Err(Errno::ISDIR),
            &Fd::File {
                node, pos, read, ..
            } => {
                if !read {
                    return Err(Errno::BADF);
                }
                let data = self.vfs.read_at(node, at.unwrap_or(pos), want)?;
                if at.is_none() {
                    if let Some(Fd::File { pos, .. }) = self.fds.get_mut(&fd) {
                        *pos += data.len() as u64;
                    }
                }
                Ok(data)
            }
        }
    }

    pub fn fd_read(&mut self, m: &mut Mem, fd: u32, iovs: u32, n: u32, nread: u32) -> R {
        let vecs = m.iovecs(iovs, n)?;
        let data = self.read_into(fd, &vecs, None)?;
        let k = m.scatter(&vecs, &data)?;
        m.write_u32(nread, k as u32)?;
        Ok(())
    }
    pub fn fd_pread(&mut self, m: &mut Mem, fd: u32, iovs: u32, n: u32, off: u64, nread: u32) -> R {
        let vecs = m.iovecs(iovs, n)?;
        let data = self.read_into(fd, &vecs, Some(off))?;
        let k = m.scatter(&vecs, &data)?;
        m.write_u32(nread, k as u32)?;
        Ok(())
    }

    fn write_from(&mut self, fd: u32, data: &[u8], at: Option<u64>) -> R {
        let left = self.quota_left();
        let now = self.now();
        match self.fds.get(&fd).ok_or(Errno::BADF)? {
            Fd::Stdout | Fd::Stderr if at.is_some() => Err(Errno::SPIPE.into()),
            Fd::Stdout => {
                if data.len() as u64 > left {
                    return Err(QuotaExceeded.into());
                }
                self.stdout.extend_from_slice(data);
                Ok(())
            }
            Fd::Stderr => {
                if data.len() as u64 > left {
                    return Err(QuotaExceeded.into());
                }
                self.stderr.extend_from_slice(data);
                Ok(())
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
                self.vfs.write_at(node, offset, data, now, left)?;
                if at.is_none() {
                    if let Some(Fd::File { pos, .. }) = self.fds.get_mut(&fd) {
                        *pos = offset + data.len() as u64;
                    }
                }
                Ok(())
            }
        }
    }

    pub fn fd_write(&mut self, m: &mut Mem, fd: u32, iovs: u32, n: u32, nwritten: u32) -> R {
        let data = m.gather(iovs, n)?;
        self.write_from(fd, &data, None)?;
        m.write_u32(nwritten, data.len() as u32)?;
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
        let data = m.gather(iovs, n)?;
        self.write_from(fd, &data, Some(off))?;
        m.write_u32(nwritten, data.len() as u32)?;
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
    /// its index and `d_next` is the index of the one after it, so cookies are stable.
    pub fn fd_readdir(
        &mut self,
        m: &mut Mem,
        fd: u32,
        buf: u32,
        len: u32,
        cookie: u64,
        used: u32,
    ) -> R {
        let node = match self.fd(fd)? {
            Fd::Dir { node, .. } => *node,
            _ => return Err(Errno::NOTDIR.into()),
        };
        let mut out: Vec<u8> = Vec::new();
        for (i, (name, ino, ty)) in self.vfs.list(node).into_iter().enumerate() {
            if (i as u64) < cookie {
                continue;
            }
            if out.len() >= len as usize {
                break;
            }
            let mut d = [0u8; SIZE_DIRENT];
            d[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            d[8..16].copy_from_slice(&ino.to_le_bytes());
            d[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
            d[20] = ty;
            out.extend_from_slice(&d);
            out.extend_from_slice(&name);
        }
        out.truncate(len as usize);
        m.write(buf, &out)?;
        m.write_u32(used, out.len() as u32)?;
        Ok(())
    }

    // ---- paths ----

    #[allow(clippy::too_many_arguments)]
    pub fn path_open(
        &mut self,
        m: &mut Mem,
        dirfd: u32,
        dirflags: u32,
        path: u32,
        path_len: u32,
        oflags: u32,
        rights_base: u64,
        _rights_inh: u64,
        fdflags: u32,
        out: u32,
    ) -> R {
        let (dir, p) = self.dir_and_path(m, dirfd, path, path_len)?;
        let oflags = oflags as u16;
        let follow = dirflags & LOOKUP_SYMLINK_FOLLOW != 0;
        let node = match self.vfs.resolve(dir, &p, follow) {
            Ok(n) => {
                if oflags & OFLAGS_CREAT != 0 && oflags & OFLAGS_EXCL != 0 {
                    return Err(Errno::EXIST.into());
                }
                n
            }
            Err(Errno::NOENT) if oflags & OFLAGS_CREAT != 0 => {
                if oflags & OFLAGS_DIRECTORY != 0 {
                    return Err(Errno::INVAL.into());
                }
                let (parent, name) = self.vfs.resolve_parent(dir, &p)?;
                let (now, left) = (self.now(), self.quota_left());
                self.vfs.create(parent, name, false, now, left)?
            }
            Err(e) => return Err(e.into()),
        };
        if self.vfs.readlink(node).is_ok() {
            return Err(Errno::LOOP.into());
        }
        let is_dir = self.vfs.is_dir(node);
        if oflags & OFLAGS_DIRECTORY != 0 && !is_dir {
            return Err(Errno::NOTDIR.into());
        }
        let want_write = rights_base & RIGHT_FD_WRITE != 0 || oflags & OFLAGS_TRUNC != 0;
        if is_dir {
            if want_write && rights_base & RIGHT_FD_WRITE != 0 {
                return Err(Errno::ISDIR.into());
            }
            let fd = self.alloc_fd(Fd::Dir {
                node,
                preopen: None,
            })?;
            m.write_u32(out, fd)?;
            return Ok(());
        }
        let writable = self.vfs.writable(node);
        if want_write && !writable {
            return Err(Errno::ROFS.into());
        }
        if oflags & OFLAGS_TRUNC != 0 {
            let (now, left) = (self.now(), self.quota_left());
            self.vfs.set_size(node, 0, now, left)?;
        }
        let rights = if writable {
            rights_base
        } else {
            rights_base & !RIGHTS_WRITE
        };
        let fd = self.alloc_fd(Fd::File {
            node,
            pos: 0,
            read: rights_base & RIGHT_FD_READ != 0,
            write: rights_base & RIGHT_FD_WRITE != 0,
            append: fdflags as u16 & FDFLAGS_APPEND != 0,
            rights,
        })?;
        m.write_u32(out, fd)?;
        Ok(())
    }

    pub fn path_filestat_get(
        &mut self,
        m: &mut Mem,
        fd: u32,
        flags: u32,
        path: u32,
        len: u32,
        out: u32,
    ) -> R {
        let node = self.resolve_at(m, fd, path, len, flags & LOOKUP_SYMLINK_FOLLOW != 0)?;
        m.write(out, &self.vfs.filestat(node).encode())?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_filestat_set_times(
        &mut self,
        m: &mut Mem,
        fd: u32,
        flags: u32,
        path: u32,
        len: u32,
        atim: u64,
        mtim: u64,
        fst: u32,
    ) -> R {
        let node = self.resolve_at(m, fd, path, len, flags & LOOKUP_SYMLINK_FOLLOW != 0)?;
        self.set_times(node, atim, mtim, fst)
    }

    pub fn path_create_directory(&mut self, m: &mut Mem, fd: u32, path: u32, len: u32) -> R {
        let (parent, name) = self.parent_at(m, fd, path, len)?;
        let (now, left) = (self.now(), self.quota_left());
        self.vfs.create(parent, name, true, now, left)?;
        Ok(())
    }
    pub fn path_remove_directory(&mut self, m: &mut Mem, fd: u32, path: u32, len: u32) -> R {
        self.remove(m, fd, path, len, true)
    }
    pub fn path_unlink_file(&mut self, m: &mut Mem, fd: u32, path: u32, len: u32) -> R {
        self.remove(m, fd, path, len, false)
    }
    fn remove(&mut self, m: &mut Mem, fd: u32, path: u32, len: u32, dir: bool) -> R {
        let (parent, name) = self.parent_at(m, fd, path, len)?;
        let now = self.now();
        self.vfs.remove(parent, &name, dir, now)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_rename(
        &mut self,
        m: &mut Mem,
        fd: u32,
        old: u32,
        old_len: u32,
        new_fd: u32,
        new: u32,
        new_len: u32,
    ) -> R {
        let d1 = self.dir_node(fd)?;
        let d2 = self.dir_node(new_fd)?;
        let p1 = Self::path(m, old, old_len)?.to_vec();
        let p2 = Self::path(m, new, new_len)?.to_vec();
        let (from_dir, from) = self.vfs.resolve_parent(d1, &p1)?;
        let (to_dir, to) = self.vfs.resolve_parent(d2, &p2)?;
        let (now, left) = (self.now(), self.quota_left());
        self.vfs.rename(from_dir, &from, to_dir, to, now, left)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_readlink(
        &mut self,
        m: &mut Mem,
        fd: u32,
        path: u32,
        len: u32,
        buf: u32,
        buf_len: u32,
        used: u32,
    ) -> R {
        let node = self.resolve_at(m, fd, path, len, false)?;
        let target = self.vfs.readlink(node)?.to_vec();
        let n = target.len().min(buf_len as usize);
        m.write(buf, &target[..n])?;
        m.write_u32(used, n as u32)?;
        Ok(())
    }

    /// Hard links and symlinks cannot be created: output volumes hold plain files and
    /// directories only, so a results directory never carries a link to somewhere else.
    pub fn path_symlink(
        &mut self,
        m: &mut Mem,
        _old: u32,
        _old_len: u32,
        fd: u32,
        _new: u32,
        _new_len: u32,
    ) -> R {
        let _ = m;
        let d = self.dir_node(fd)?;
        if !self.vfs.writable(d) {
            return Err(Errno::ROFS.into());
        }
        Err(Errno::NOTSUP.into())
    }
    #[allow(clippy::too_many_arguments)]
    pub fn path_link(
        &mut self,
        m: &mut Mem,
        fd: u32,
        _f: u32,
        _old: u32,
        _ol: u32,
        new_fd: u32,
        _new: u32,
        _nl: u32,
    ) -> R {
        let _ = m;
        self.dir_node(fd)?;
        let d = self.dir_node(new_fd)?;
        if !self.vfs.writable(d) {
            return Err(Errno::ROFS.into());
        }
        Err(Errno::NOTSUP.into())
    }
}
