//! The state behind `wasi_snapshot_preview1` and the semantics of each function.
//!
//! Every function returns `Result<(), HostError>`: an errno goes back to the guest, a
//! [`Fatal`] ends the run (proc_exit, output quota).

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::abi::*;
use crate::vfs::{self, NodeId, QuotaExceeded, ReadError, Vfs, WriteError};

/// Nanoseconds the virtual clocks advance on each read: 1 ms, so a guest that spins on
/// the clock until a deadline terminates, after a number of reads fixed by the job.
pub const CLOCK_TICK_NS: u64 = 1_000_000;

/// Host work inside WASI calls is charged as fuel, the guest's own instruction currency,
/// so that the instruction budget bounds wall time and the charge is part of the
/// instruction count a verifier compares: one unit per item of work a guest controls the
/// number of (an iovec, a directory entry, a poll subscription, a node walked), and one
/// unit per this many bytes copied or looked at (data, paths, names, random bytes).
/// Rejected: no charge (a single `fd_write` over a million aliased iovecs, or a listing
/// of a huge directory a byte at a time, would cost one instruction), and charging by
/// measured host time (not deterministic).
pub const HOST_BYTES_PER_FUEL: u64 = 64;

/// What ends a run from inside a host function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// `proc_exit(code)`.
    Exit(i32),
    /// A write would have taken stdout + stderr + output volumes over the job's quota.
    OutputQuota,
    /// The host work of a call was charged as fuel and the budget ran out.
    OutOfFuel,
    /// The guest broke a rule of the ABI that leaves no errno to return (it calls WASI
    /// but exports no memory): ends the run like a trap, deterministically.
    Guest(String),
    /// The host failed (an input could not be read, changed under the guest, …): the run
    /// is an error, never a verifiable guest outcome.
    Host(String),
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Exit(c) => write!(f, "exit with code {c}"),
            Fatal::OutputQuota => f.write_str("output quota exceeded"),
            Fatal::OutOfFuel => f.write_str("out of fuel"),
            Fatal::Guest(m) | Fatal::Host(m) => f.write_str(m),
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
impl From<ReadError> for HostError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Errno(e) => HostError::Errno(e),
            ReadError::Host(m) => HostError::Fatal(Fatal::Host(m)),
        }
    }
}
impl From<vfs::HostOrWrite> for HostError {
    fn from(e: vfs::HostOrWrite) -> Self {
        match e {
            vfs::HostOrWrite::Read(r) => r.into(),
            vfs::HostOrWrite::Write(w) => w.into(),
        }
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

/// Test-only: lets the host's real time through the wall clock, so that a test can prove
/// the determinism campaign (`detwasm_ops::campaign`) catches a leaked channel. Compiled
/// only with the feature `leak-host-time-for-tests`, which only that crate's
/// dev-dependency turns on; off, nothing reads the host's clock.
#[cfg(feature = "leak-host-time-for-tests")]
pub static LEAK_HOST_TIME: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

impl VirtualClock {
    fn read(&mut self, id: u32) -> Result<u64, Errno> {
        #[cfg(feature = "leak-host-time-for-tests")]
        if id == CLOCK_REALTIME && LEAK_HOST_TIME.load(std::sync::atomic::Ordering::SeqCst) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            return Ok(now.map(|d| d.as_nanos() as u64).unwrap_or(0));
        }
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
        /// Where the last `fd_readdir` stopped: the cookie of the next entry and its
        /// name, so that the next call resumes there without stepping over the entries
        /// before it.
        cursor: Option<(u64, Vec<u8>)>,
    },
    File {
        node: NodeId,
        pos: u64,
        read: bool,
        write: bool,
        append: bool,
        /// `FDFLAGS_DSYNC`/`RSYNC`/`SYNC` as asked at open: reported back by
        /// `fd_fdstat_get`. Honoured trivially: the guest's files live in memory and are
        /// written to disk (fsynced) once, when the results are delivered.
        sync: u16,
        rights: u64,
    },
}

/// Most fds a guest may have open at once (`EMFILE` beyond).
pub const MAX_FDS: u32 = 1 << 16;

/// Everything the guest can reach. Built only by `detwasm_runtime::capabilities`.
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
    /// Fuel left in the store, set by the dispatcher around every call; host work is
    /// charged against it ([`HOST_BYTES_PER_FUEL`]).
    pub fuel: u64,
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
    /// A host over `vfs`, serving exactly these args, env and stdin. Public because the
    /// one place that grants capabilities, `detwasm_runtime::capabilities::grant`, is in
    /// another crate; nothing else calls it (a job's host is never built any other way).
    pub fn new(
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
                    cursor: None,
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
            fuel: u64::MAX,
        }
    }

    /// Bytes still allowed by the output quota.
    pub fn quota_left(&self) -> u64 {
        let used = self.vfs.used + self.stdout.len() as u64 + self.stderr.len() as u64;
        self.max_output.saturating_sub(used)
    }

    /// Charges `units` of fuel for host work; running out ends the run as running out of
    /// fuel does in the guest's own code.
    pub fn charge(&mut self, units: u64) -> Result<(), HostError> {
        match self.fuel.checked_sub(units) {
            Some(left) => {
                self.fuel = left;
                Ok(())
            }
            None => {
                self.fuel = 0;
                Err(HostError::Fatal(Fatal::OutOfFuel))
            }
        }
    }

    /// Charges the host work the filesystem counted during a call (path steps, symlink
    /// expansions, subtree walks), whether the call succeeded or not. Called by the
    /// dispatcher after every call.
    pub fn settle_work(&mut self) -> Result<(), HostError> {
        let units = self.vfs.take_work();
        self.charge(units)
    }

    /// Charges the work of looking at or copying `bytes` bytes.
    pub fn charge_bytes(&mut self, bytes: u64) -> Result<(), HostError> {
        self.charge(bytes.div_ceil(HOST_BYTES_PER_FUEL))
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

    fn alloc_fd(&mut self, f: Fd) -> Result<u32, HostError> {
        // Lowest free number, as POSIX: the guest's fd numbers are a function of its calls.
        // The scan is host work in proportion to the open fds: charged.
        let mut n = 0u32;
        for &k in self.fds.keys() {
            if k != n {
                break;
            }
            n += 1;
        }
        self.charge(u64::from(n) / HOST_BYTES_PER_FUEL)?;
        if n >= MAX_FDS {
            return Err(Errno::MFILE.into());
        }
        if let Fd::Dir { node, .. } | Fd::File { node, .. } = &f {
            self.vfs.opened(*node);
        }
        self.fds.insert(n, f);
        Ok(n)
    }

    /// Forgets fd `fd`'s entry (closing it).
    fn release_fd(&mut self, f: Fd) {
        if let Fd::Dir { node, .. } | Fd::File { node, .. } = f {
            self.vfs.closed(node);
        }
    }

    /// The path at `ptr`: at most [`vfs::MAX_PATH`] bytes (`ENAMETOOLONG`, checked before
    /// it is read), UTF-8 (`EILSEQ`), no NUL (`EINVAL`, as wasmtime answers: no host can
    /// store such a name). Charged as host work by its length.
    fn path<'m>(&mut self, m: &'m Mem, ptr: u32, len: u32) -> Result<&'m [u8], HostError> {
        if len as usize > vfs::MAX_PATH {
            return Err(Errno::NAMETOOLONG.into());
        }
        let p = m.slice(ptr, len)?;
        self.charge_bytes(u64::from(len) + HOST_BYTES_PER_FUEL)?;
        if std::str::from_utf8(p).is_err() {
            return Err(Errno::ILSEQ.into());
        }
        if p.contains(&0) {
            return Err(Errno::INVAL.into());
        }
        Ok(p)
    }

    /// The directory `fd` names and the path at `ptr`, checked in that order.
    fn dir_and_path<'m>(
        &mut self,
        m: &'m Mem,
        fd: u32,
        ptr: u32,
        len: u32,
    ) -> Result<(NodeId, &'m [u8]), HostError> {
        let dir = self.dir_node(fd)?;
        let p = self.path(m, ptr, len)?;
        Ok((dir, p))
    }

    /// The node the path at `ptr` names, looked up from the directory `fd`.
    fn resolve_at(
        &mut self,
        m: &Mem,
        fd: u32,
        ptr: u32,
        len: u32,
        follow: bool,
    ) -> Result<NodeId, HostError> {
        let (dir, p) = self.dir_and_path(m, fd, ptr, len)?;
        Ok(self.vfs.resolve(dir, p, follow)?)
    }

    /// The parent directory of the path at `ptr`, looked up from the directory `fd`, and
    /// the path's last component.
    fn parent_at(
        &mut self,
        m: &Mem,
        fd: u32,
        ptr: u32,
        len: u32,
    ) -> Result<(NodeId, Vec<u8>), HostError> {
        let (dir, p) = self.dir_and_path(m, fd, ptr, len)?;
        Ok(self.vfs.resolve_parent(dir, p)?)
    }

    // ---- args, env ----

    fn sizes(list: &[Vec<u8>]) -> (u32, u32) {
        let bytes: usize = list.iter().map(|a| a.len() + 1).sum();
        (list.len() as u32, bytes as u32)
    }

    fn put_list(list: &[Vec<u8>], m: &mut Mem, ptrs: u32, buf: u32) -> R {
        let mut at = buf;
        for (i, a) in list.iter().enumerate() {
            let len = u32::try_from(a.len()).map_err(|_| Errno::FAULT)?;
            m.write_u32(
                offset(ptrs, 4u32.checked_mul(i as u32).ok_or(Errno::FAULT)?)?,
                at,
            )?;
            m.write(at, a)?;
            m.write_u8(offset(at, len)?, 0)?;
            at = offset(at, len)?;
            at = offset(at, 1)?;
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
        m.slice(buf, len)?;
        self.charge_bytes(u64::from(len))?;
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
        // Both arrays are checked to lie in memory before any work, so the loop and the
        // host's event list are bounded by the guest's memory; the work is charged.
        m.check_array(inp, n, SIZE_SUBSCRIPTION as u32)?;
        m.check_array(out, n, SIZE_EVENT as u32)?;
        self.charge(u64::from(n))?;
        let mut events: Vec<[u8; SIZE_EVENT]> = Vec::new();
        let mut clocks: Vec<(u64, u64, u16)> = Vec::new(); // (userdata, delta, error)
        for i in 0..n {
            let s = offset(inp, i * SIZE_SUBSCRIPTION as u32)?;
            let userdata = m.read_u64(s)?;
            let tag = m.slice(offset(s, 8)?, 1)?[0];
            let mut ev = [0u8; SIZE_EVENT];
            ev[0..8].copy_from_slice(&userdata.to_le_bytes());
            match tag {
                EVENTTYPE_CLOCK => {
                    let id = m.read_u32(offset(s, 16)?)?;
                    let timeout = m.read_u64(offset(s, 24)?)?;
                    let flags = m.read_u16(offset(s, 40)?)?;
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
                    let fd = m.read_u32(offset(s, 16)?)?;
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
            m.write(offset(out, (i * SIZE_EVENT) as u32)?, ev)?;
        }
        m.write_u32(nevents, events.len() as u32)?;
        Ok(())
    }

    pub fn proc_exit(&mut self, code: u32) -> Fatal {
        Fatal::Exit(code as i32)
    }

    // ---- fds ----

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

    /// Reads into the guest's iovecs one after another, straight from the source into
    /// guest memory (no host buffer), stopping at the end of the data. `at` is the offset
    /// for `fd_pread`; `None` reads at (and advances) the fd's position. Each iovec costs
    /// a unit of fuel and each [`HOST_BYTES_PER_FUEL`] bytes read another.
    fn read_iovecs(
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
    fn write_iovecs(
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
                vfs::grow(out, out.len() + total as usize);
                for part in parts {
                    out.extend_from_slice(part);
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
                d[0..8].copy_from_slice(&(pos + 1).to_le_bytes());
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
        let node = match self.vfs.resolve(dir, p, follow) {
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
                let (parent, name) = self.vfs.resolve_parent(dir, p)?;
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
            // Writing a directory as a file (the fd_write right, or O_TRUNC) is EISDIR; the
            // rights a directory fd reports ([`RIGHTS_DIRECTORY`]) hold no such right, so
            // reopening it with them works.
            if want_write {
                return Err(Errno::ISDIR.into());
            }
            let fd = self.alloc_fd(Fd::Dir {
                node,
                preopen: None,
                cursor: None,
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
            sync: fdflags as u16 & FDFLAGS_SYNCS,
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
        // `unlink("file/")`: a trailing slash names a directory, so a file is ENOTDIR (as
        // Linux and wasmtime answer), never removed.
        let trailing_slash = m.slice(path, len)?.ends_with(b"/");
        if !dir && trailing_slash {
            if let Some(child) = self.vfs.lookup(parent, &name) {
                return Err(if self.vfs.is_dir(child) {
                    Errno::ISDIR
                } else {
                    Errno::NOTDIR
                }
                .into());
            }
        }
        let now = self.now();
        self.vfs.remove(parent, &name, dir, now)?;
        Ok(())
    }

    // ---- sockets: there are none ----

    fn not_a_socket(&self, fd: u32) -> R {
        self.fd(fd)?;
        Err(Errno::NOTSOCK.into())
    }
    pub fn sock_accept(&mut self, _m: &mut Mem, fd: u32, _flags: u32, _out: u32) -> R {
        self.not_a_socket(fd)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn sock_recv(
        &mut self,
        _m: &mut Mem,
        fd: u32,
        _iovs: u32,
        _n: u32,
        _flags: u32,
        _len: u32,
        _oflags: u32,
    ) -> R {
        self.not_a_socket(fd)
    }
    pub fn sock_send(
        &mut self,
        _m: &mut Mem,
        fd: u32,
        _iovs: u32,
        _n: u32,
        _f: u32,
        _len: u32,
    ) -> R {
        self.not_a_socket(fd)
    }
    pub fn sock_shutdown(&mut self, _m: &mut Mem, fd: u32, _how: u32) -> R {
        self.not_a_socket(fd)
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
        let p1 = self.path(m, old, old_len)?;
        let p2 = self.path(m, new, new_len)?;
        let (from_dir, from) = self.vfs.resolve_parent(d1, p1)?;
        let (to_dir, to) = self.vfs.resolve_parent(d2, p2)?;
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

    /// Symlinks are created in writable folders and output volumes, stored as given and
    /// followed only inside the virtual tree ([`Vfs::symlink`] says which targets are
    /// refused and why).
    pub fn path_symlink(
        &mut self,
        m: &mut Mem,
        old: u32,
        old_len: u32,
        fd: u32,
        new: u32,
        new_len: u32,
    ) -> R {
        let target = self.path(m, old, old_len)?.to_vec();
        let (parent, name) = self.parent_at(m, fd, new, new_len)?;
        if self.path(m, new, new_len)?.ends_with(b"/") {
            // A link's name ending in `/` (as Linux answers): EEXIST for a directory there,
            // ENOTDIR for a file, ENOENT for nothing.
            return Err(match self.vfs.lookup(parent, &name) {
                Some(n) if self.vfs.is_dir(n) => Errno::EXIST,
                Some(_) => Errno::NOTDIR,
                None => Errno::NOENT,
            }
            .into());
        }
        if !self.vfs.writable(parent) {
            return Err(Errno::ROFS.into());
        }
        let (now, left) = (self.now(), self.quota_left());
        self.vfs.symlink(parent, name, target, now, left)?;
        Ok(())
    }
    #[allow(clippy::too_many_arguments)]
    pub fn path_link(
        &mut self,
        m: &mut Mem,
        fd: u32,
        flags: u32,
        old: u32,
        old_len: u32,
        new_fd: u32,
        new: u32,
        new_len: u32,
    ) -> R {
        let node = self.resolve_at(m, fd, old, old_len, flags & LOOKUP_SYMLINK_FOLLOW != 0)?;
        if self.vfs.is_dir(node) {
            // Directories are never linked (as Linux answers, before looking at the name).
            return Err(Errno::PERM.into());
        }
        if self.path(m, new, new_len)?.ends_with(b"/") {
            // A name ending in `/` names a directory, which a link never is.
            return Err(Errno::NOENT.into());
        }
        let (parent, name) = self.parent_at(m, new_fd, new, new_len)?;
        if self.vfs.lookup(parent, &name).is_some() {
            return Err(Errno::EXIST.into());
        }
        let _ = node;
        // Decision: no hard links (`ENOTSUP`, documented). Results are UnixFS trees, which
        // have no hard links: every name would be delivered as a full copy, so one file
        // linked a million times would write a million copies — delivered bytes no longer
        // bounded by the output quota. Rejected: charging each link the file's size (and
        // every later growth times the links), more state for a feature no deterministic
        // workload needs.
        Err(Errno::NOTSUP.into())
    }
}

/// The preview1 behaviours the official WASI test suite checks, each pinned here with
/// detwasm's own test (the suite itself is run by `scripts/wasi-testsuite.py`).
#[cfg(test)]
mod tests {
    use super::*;

    /// A host with a writable folder at `/w` (fd 3, holding `file`) and guest memory,
    /// made as `detwasm_runtime::capabilities::grant` makes the host of a job with that
    /// one folder (argv0 `module.wasm`, the default epoch, seed 0, a 256 MiB quota).
    fn host() -> (tempfile::TempDir, WasiHost, Vec<u8>) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), b"data").unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        let epoch = 1_640_995_200 * 1_000_000_000;
        let mut vfs = Vfs::new();
        vfs.mount_writable(t.path(), "/w", epoch).unwrap();
        let h = WasiHost::new(
            vec![b"module.wasm".to_vec()],
            Vec::new(),
            Vec::new(),
            vfs,
            epoch,
            0,
            256 << 20,
        );
        (t, h, vec![0u8; 1 << 16])
    }

    /// Puts `s` at 0x100 and returns (ptr, len).
    fn put(mem: &mut [u8], s: &[u8]) -> (u32, u32) {
        mem[0x100..0x100 + s.len()].copy_from_slice(s);
        (0x100, s.len() as u32)
    }
    fn put2(mem: &mut [u8], s: &[u8]) -> (u32, u32) {
        mem[0x200..0x200 + s.len()].copy_from_slice(s);
        (0x200, s.len() as u32)
    }
    fn errno(r: R) -> u16 {
        match r {
            Ok(()) => 0,
            Err(HostError::Errno(e)) => e.0,
            Err(HostError::Fatal(f)) => panic!("fatal {f}"),
        }
    }
    fn open(
        h: &mut WasiHost,
        mem: &mut [u8],
        dir: u32,
        path: &[u8],
        oflags: u16,
        rights: u64,
        fdflags: u16,
    ) -> Result<u32, u16> {
        let (p, l) = put(mem, path);
        let e = errno(h.path_open(
            &mut Mem(mem),
            dir,
            0,
            p,
            l,
            u32::from(oflags),
            rights,
            0,
            u32::from(fdflags),
            0x10,
        ));
        if e == 0 {
            Ok(u32::from_le_bytes(mem[0x10..0x14].try_into().unwrap()))
        } else {
            Err(e)
        }
    }
    fn fdstat(h: &mut WasiHost, mem: &mut [u8], fd: u32) -> (u16, u64, u64) {
        assert_eq!(errno(h.fd_fdstat_get(&mut Mem(mem), fd, 0x20)), 0);
        let flags = u16::from_le_bytes(mem[0x22..0x24].try_into().unwrap());
        let base = u64::from_le_bytes(mem[0x28..0x30].try_into().unwrap());
        let inh = u64::from_le_bytes(mem[0x30..0x38].try_into().unwrap());
        (flags, base, inh)
    }

    #[test]
    fn a_directory_reports_directory_rights_and_reopens_with_them() {
        let (_t, mut h, mut mem) = host();
        let (_, base, inh) = fdstat(&mut h, &mut mem, 3);
        assert_eq!(base, RIGHTS_DIRECTORY);
        assert_eq!(
            base & (RIGHT_FD_SEEK | RIGHT_FD_WRITE | (1 << 22) | (1 << 19)),
            0
        );
        assert_eq!(inh, RIGHTS_DIRECTORY_INHERITING);
        assert!(open(&mut h, &mut mem, 3, b".", OFLAGS_DIRECTORY, base, 0).is_ok());
        assert!(open(&mut h, &mut mem, 3, b".", 0, base, 0).is_ok());
        // Asking to write a directory is EISDIR.
        assert_eq!(
            open(
                &mut h,
                &mut mem,
                3,
                b".",
                OFLAGS_DIRECTORY,
                RIGHT_FD_READ | RIGHT_FD_WRITE,
                0
            ),
            Err(Errno::ISDIR.0)
        );
        assert_eq!(
            errno(h.fd_allocate(&mut Mem(&mut mem), 3, 0, 1)),
            Errno::BADF.0
        );
        assert_eq!(
            errno(h.fd_seek(&mut Mem(&mut mem), 3, 0, 1, 0x40)),
            Errno::BADF.0
        );
    }

    #[test]
    fn dot_dot_never_climbs_above_the_directory_fd() {
        let (_t, mut h, mut mem) = host();
        let sub = open(&mut h, &mut mem, 3, b"sub", OFLAGS_DIRECTORY, 0, 0).unwrap();
        assert_eq!(
            open(&mut h, &mut mem, sub, b"../file", 0, RIGHT_FD_READ, 0),
            Err(Errno::NOTCAPABLE.0)
        );
        assert_eq!(
            open(&mut h, &mut mem, sub, b"..", OFLAGS_DIRECTORY, 0, 0),
            Err(Errno::NOTCAPABLE.0)
        );
        // From the folder's own fd, `sub/../file` stays below it: fine.
        assert!(open(&mut h, &mut mem, 3, b"sub/../file", 0, RIGHT_FD_READ, 0).is_ok());
    }

    #[test]
    fn sync_flags_are_kept_and_reported() {
        let (_t, mut h, mut mem) = host();
        let fd = open(
            &mut h,
            &mut mem,
            3,
            b"new",
            OFLAGS_CREAT,
            RIGHT_FD_WRITE,
            FDFLAGS_APPEND | 16,
        )
        .unwrap();
        let (flags, _, _) = fdstat(&mut h, &mut mem, fd);
        assert_eq!(flags, FDFLAGS_APPEND | 16);
    }

    #[test]
    fn trailing_slashes_name_directories() {
        let (_t, mut h, mut mem) = host();
        let (p, l) = put(&mut mem, b"file/");
        assert_eq!(
            errno(h.path_unlink_file(&mut Mem(&mut mem), 3, p, l)),
            Errno::NOTDIR.0
        );
        let (p, l) = put(&mut mem, b"sub/");
        assert_eq!(
            errno(h.path_unlink_file(&mut Mem(&mut mem), 3, p, l)),
            Errno::ISDIR.0
        );
        // A symlink's name ending in `/`.
        let (t, tl) = put2(&mut mem, b"source");
        for (name, want) in [
            (&b"target/"[..], Errno::NOENT),
            (b"sub/", Errno::EXIST),
            (b"file/", Errno::NOTDIR),
        ] {
            let (p, l) = put(&mut mem, name);
            assert_eq!(
                errno(h.path_symlink(&mut Mem(&mut mem), t, tl, 3, p, l)),
                want.0,
                "{name:?}"
            );
        }
        let (p, l) = put(&mut mem, b"target");
        assert_eq!(errno(h.path_symlink(&mut Mem(&mut mem), t, tl, 3, p, l)), 0);
    }

    #[test]
    fn sockets_are_not_there() {
        let (_t, mut h, mut mem) = host();
        assert_eq!(
            errno(h.sock_shutdown(&mut Mem(&mut mem), 3, 1)),
            Errno::NOTSOCK.0
        );
        assert_eq!(
            errno(h.sock_shutdown(&mut Mem(&mut mem), 99, 1)),
            Errno::BADF.0
        );
        assert_eq!(
            errno(h.sock_accept(&mut Mem(&mut mem), 1, 0, 0)),
            Errno::NOTSOCK.0
        );
    }

    #[test]
    fn hard_links_are_refused_with_the_suites_errnos() {
        let (_t, mut h, mut mem) = host();
        let (o, ol) = put(&mut mem, b"file");
        let (n, nl) = put2(&mut mem, b"sub/link");
        assert_eq!(
            errno(h.path_link(&mut Mem(&mut mem), 3, 0, o, ol, 3, n, nl)),
            Errno::NOTSUP.0
        );
        assert_eq!(
            errno(h.path_link(&mut Mem(&mut mem), 3, 0, o, ol, 3, o, ol)),
            Errno::EXIST.0
        );
        let (d, dl) = put2(&mut mem, b"sub");
        let (x, xl) = (0x400, 2);
        mem[0x400..0x402].copy_from_slice(b"x/");
        assert_eq!(
            errno(h.path_link(&mut Mem(&mut mem), 3, 0, d, dl, 3, x, xl)),
            Errno::PERM.0
        );
        assert_eq!(
            errno(h.path_link(&mut Mem(&mut mem), 3, 0, o, ol, 3, x, xl)),
            Errno::NOENT.0
        );
    }
}
