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
/// number of (an iovec, a directory entry, a poll subscription, a node walked, an
/// argument or environment variable copied), and one unit per this many bytes copied or
/// looked at (data, paths, names, random bytes, args and env).
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
    /// The job's wall-clock deadline passed inside a call ([`ReadError::Timeout`]): the
    /// run ends as a timeout, as at a refuel past the deadline.
    Timeout,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Exit(c) => write!(f, "exit with code {c}"),
            Fatal::OutputQuota => f.write_str("output quota exceeded"),
            Fatal::OutOfFuel => f.write_str("out of fuel"),
            Fatal::Guest(m) | Fatal::Host(m) => f.write_str(m),
            Fatal::Timeout => f.write_str("wall-clock timeout"),
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
            ReadError::Timeout => HostError::Fatal(Fatal::Timeout),
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

/// Where a host shows what the guest writes to stdout (`false`) and stderr (`true`) as it
/// writes it ([`WasiHost::echo_to`]), besides capturing it.
pub type Echo = std::sync::Arc<dyn Fn(bool, &[u8]) + Send + Sync>;

/// Everything the guest can reach. Built only by `detwasm_runtime::capabilities`.
pub struct WasiHost {
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
    /// Entries and bytes (NULs included) of `argv` and of `env`, computed once, here
    /// rather than at each call: see [`WasiHost::args_sizes_get`].
    argv_sizes: (u32, u32),
    env_sizes: (u32, u32),
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
    /// Who is shown stdout and stderr live ([`WasiHost::echo_to`]).
    echo: Option<Echo>,
    /// What the guest asked for that its results may depend on ([`Asked`]).
    pub asked: Asked,
}

/// How often a guest asked the host for what its results may depend on besides its
/// inputs: the clocks (the job's `--epoch`), random bytes (its `--seed`), and directory
/// listings (their order). `detwasm fuzz` names these beside a dependence it finds, so an
/// author knows which call to look for. A tally for people, never part of a result or of
/// a snapshot (a resumed run counts from its snapshot on). Rejected: saving it in
/// snapshots (their format, and so every snapshot CID, would change for a message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Asked {
    /// `clock_time_get` of the wall clock.
    pub wall_clock: u64,
    /// `clock_time_get` of the monotonic or a CPU-time clock.
    pub monotonic_clock: u64,
    /// `poll_oneoff` calls that waited on a clock.
    pub clock_waits: u64,
    /// `random_get` calls, and the bytes they asked for.
    pub random_calls: u64,
    pub random_bytes: u64,
    /// `fd_readdir` calls.
    pub dir_listings: u64,
}

impl Asked {
    /// The calls in words, e.g. `the wall clock 3 times, 64 random bytes (2 calls)`;
    /// empty when there were none.
    pub fn describe(&self) -> Vec<String> {
        let times = |n: u64| {
            if n == 1 {
                "once".to_string()
            } else {
                format!("{n} times")
            }
        };
        let mut out = Vec::new();
        if self.wall_clock > 0 {
            out.push(format!("read the wall clock {}", times(self.wall_clock)));
        }
        if self.monotonic_clock > 0 {
            out.push(format!(
                "read the monotonic or CPU clock {}",
                times(self.monotonic_clock)
            ));
        }
        if self.clock_waits > 0 {
            out.push(format!("waited on a clock {}", times(self.clock_waits)));
        }
        if self.random_calls > 0 {
            out.push(format!(
                "read {} random bytes ({} {})",
                self.random_bytes,
                self.random_calls,
                if self.random_calls == 1 {
                    "call"
                } else {
                    "calls"
                }
            ));
        }
        if self.dir_listings > 0 {
            out.push(format!("listed a directory {}", times(self.dir_listings)));
        }
        out
    }
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
            argv_sizes: Self::sizes(&argv),
            env_sizes: Self::sizes(&env),
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
            echo: None,
            asked: Asked::default(),
        }
    }

    /// Shows every write to stdout and stderr to `echo` as it is captured (what `detwasm
    /// run` prints live, as `wasmtime run` does). Only after a write is captured and
    /// charged, and whatever `echo` does, the guest sees the same: it cannot tell whether
    /// anyone watches, so a result does not depend on it. Rejected: writing to the
    /// host's own stdout here (a library's host must not print; the CLI decides where).
    pub fn echo_to(&mut self, echo: Echo) {
        self.echo = Some(echo);
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
}

mod args_env;
mod clock_random_poll;
mod fd;
mod path;
pub mod snapshot;
mod sock;

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

    /// A host serving `argv` and `env` and no folder, with `fuel` to spend.
    fn host_with(argv: Vec<Vec<u8>>, env: Vec<Vec<u8>>, fuel: u64) -> WasiHost {
        let mut h = WasiHost::new(argv, env, Vec::new(), Vfs::new(), 0, 0, 256 << 20);
        h.fuel = fuel;
        h
    }

    /// What copying a list of `entries` strings of `len` bytes costs: one unit per entry,
    /// one per [`HOST_BYTES_PER_FUEL`] bytes with their NULs.
    fn list_cost(entries: usize, len: usize) -> u64 {
        entries as u64 + ((entries * (len + 1)) as u64).div_ceil(HOST_BYTES_PER_FUEL)
    }

    /// `args_get` and `environ_get` are charged by the entries and bytes they copy, before
    /// a byte is written and also when the copy then fails; the sizes calls are constant
    /// work and charge nothing.
    #[test]
    fn args_and_env_are_charged_by_their_entries_and_bytes() {
        for (entries, len) in [(1, 0), (3, 100), (10, 6400), (1000, 63)] {
            let list = vec![vec![b'a'; len]; entries];
            let cost = list_cost(entries, len);
            let mut h = host_with(list.clone(), list, 1 << 40);
            let mut mem = vec![0u8; 1 << 18];
            let (ptrs, buf) = (0x100, 0x10000);
            for get in [WasiHost::args_get, WasiHost::environ_get] {
                let before = h.fuel;
                assert_eq!(errno(get(&mut h, &mut Mem(&mut mem), ptrs, buf)), 0);
                assert_eq!(before - h.fuel, cost, "{entries} x {len}");
                let last =
                    u32::from_le_bytes(mem[0x100 + 4 * (entries - 1)..][..4].try_into().unwrap());
                assert_eq!(last as usize, buf as usize + (entries - 1) * (len + 1));
                assert_eq!(mem[last as usize + len], 0);
                // Pointers past the end of memory: EFAULT, charged all the same.
                let before = h.fuel;
                assert_eq!(
                    errno(get(&mut h, &mut Mem(&mut mem), u32::MAX - 2, buf)),
                    Errno::FAULT.0
                );
                assert_eq!(before - h.fuel, cost);
            }
            for sizes in [WasiHost::args_sizes_get, WasiHost::environ_sizes_get] {
                let before = h.fuel;
                assert_eq!(errno(sizes(&mut h, &mut Mem(&mut mem), 0x10, 0x14)), 0);
                assert_eq!(h.fuel, before);
                assert_eq!(mem[0x10..0x14], (entries as u32).to_le_bytes());
                assert_eq!(
                    mem[0x14..0x18],
                    ((entries * (len + 1)) as u32).to_le_bytes()
                );
            }
        }
        // Twice the bytes, about twice the charge; an empty environment costs nothing.
        assert_eq!(list_cost(1, (1 << 20) - 1), 1 + (1 << 14));
        assert_eq!(list_cost(1, (2 << 20) - 1), 1 + (2 << 14));
        let mut h = host_with(vec![b"module.wasm".to_vec()], Vec::new(), 5);
        assert_eq!(errno(h.environ_get(&mut Mem(&mut [0u8; 64]), 0, 8)), 0);
        assert_eq!(h.fuel, 5);
    }

    /// The review's loop of `args_get` (and of `environ_get`) over a 1 MiB string ends out
    /// of fuel after the calls the budget pays for, and the call that finds the budget
    /// short writes nothing.
    #[test]
    fn a_loop_of_args_get_or_environ_get_runs_out_of_fuel() {
        let big = vec![b'x'; 1 << 20];
        let mut env = b"K=".to_vec();
        env.extend_from_slice(&big);
        let argv = vec![b"module.wasm".to_vec(), big];
        let cost = 2 + ((12 + (1 << 20) + 1) as u64).div_ceil(HOST_BYTES_PER_FUEL);
        let env_cost = list_cost(1, env.len());
        type Get = fn(&mut WasiHost, &mut Mem, u32, u32) -> R;
        for (get, cost) in [
            (WasiHost::args_get as Get, cost),
            (WasiHost::environ_get, env_cost),
        ] {
            let mut h = host_with(argv.clone(), vec![env.clone()], 10 * cost + cost / 2);
            let mut mem = vec![0u8; 2 << 20];
            let mut calls = 0;
            let fatal = loop {
                match get(&mut h, &mut Mem(&mut mem), 0, 64) {
                    Ok(()) => calls += 1,
                    Err(HostError::Fatal(f)) => break f,
                    Err(HostError::Errno(e)) => panic!("errno {}", e.0),
                }
                assert!(calls <= 10, "not charged");
            };
            assert_eq!(fatal, Fatal::OutOfFuel);
            assert_eq!(calls, 10);
            assert_eq!(h.fuel, 0);
            mem.fill(0);
            h.fuel = cost - 1;
            assert!(matches!(
                get(&mut h, &mut Mem(&mut mem), 0, 64),
                Err(HostError::Fatal(Fatal::OutOfFuel))
            ));
            assert!(mem.iter().all(|&b| b == 0), "written before it was charged");
        }
    }

    #[test]
    fn hard_links_are_made_with_the_suites_errnos() {
        let (_t, mut h, mut mem) = host();
        let (o, ol) = put(&mut mem, b"file");
        let (n, nl) = put2(&mut mem, b"sub/link");
        assert_eq!(
            errno(h.path_link(&mut Mem(&mut mem), 3, 0, o, ol, 3, n, nl)),
            0
        );
        assert_eq!(
            errno(h.path_link(&mut Mem(&mut mem), 3, 0, o, ol, 3, n, nl)),
            Errno::EXIST.0
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
