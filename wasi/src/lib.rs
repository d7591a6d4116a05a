//! detwasm-wasi: the state and the calls of detwasm's `wasi_snapshot_preview1`, as plain
//! Rust over guest memory given as bytes.
//!
//! What it owns: the preview1 ABI (errnos, layouts, checked reads and writes of guest
//! memory: [`abi`]), every preview1 call over a state that is a function of the job
//! alone ([`host::WasiHost`]: virtual clocks, a seeded ChaCha20 stream, captured stdio
//! with a byte quota), and the virtual filesystem ([`vfs`]: input trees read through
//! `cap_std` handles, copy-on-write writable folders, output volumes in memory, quota
//! accounting). Every determinism decision of the host is recorded here, beside the code
//! that makes it.
//!
//! What it does not: depend on an engine, or decide what a job may reach. Linking these
//! calls into wasmtime, charging their work as fuel and building a host from a job (the
//! one place capabilities are granted) are `detwasm-runtime`'s; this crate has no notion
//! of a job, so it can be tested, fuzzed and audited alone.

pub mod abi;
pub mod host;
pub mod vfs;

/// Calls `$each!($linker, "name", method(arg: wasm type => host type, ...))` for every
/// `wasi_snapshot_preview1` function that [`host::WasiHost`] answers with an errno (all
/// but `proc_exit`, which ends the run, and `proc_raise`, unsupported), with the guest's
/// wasm types and what the host method takes. The one list of the calls and their
/// signatures: the runtime links it into wasmtime, and the self-fuzzer into wasmi (the
/// same host under another engine, `detwasm_fuzzing::interpreter`). Rejected: a list per
/// engine (two lists of 44 signatures to keep in step).
#[macro_export]
macro_rules! preview1_calls {
    ($each:ident, $linker:ident) => {
        $each!($linker, "args_get", args_get(a: i32 => u32, b: i32 => u32));
        $each!($linker, "args_sizes_get", args_sizes_get(a: i32 => u32, b: i32 => u32));
        $each!($linker, "environ_get", environ_get(a: i32 => u32, b: i32 => u32));
        $each!($linker, "environ_sizes_get", environ_sizes_get(a: i32 => u32, b: i32 => u32));
        $each!($linker, "clock_res_get", clock_res_get(id: i32 => u32, out: i32 => u32));
        $each!($linker, "clock_time_get", clock_time_get(id: i32 => u32, p: i64 => u64, out: i32 => u32));
        $each!($linker, "fd_advise", fd_advise(fd: i32 => u32, o: i64 => u64, l: i64 => u64, a: i32 => u32));
        $each!($linker, "fd_allocate", fd_allocate(fd: i32 => u32, o: i64 => u64, l: i64 => u64));
        $each!($linker, "fd_close", fd_close(fd: i32 => u32));
        $each!($linker, "fd_datasync", fd_sync(fd: i32 => u32));
        $each!($linker, "fd_fdstat_get", fd_fdstat_get(fd: i32 => u32, out: i32 => u32));
        $each!($linker, "fd_fdstat_set_flags", fd_fdstat_set_flags(fd: i32 => u32, f: i32 => u32));
        $each!($linker, "fd_fdstat_set_rights", fd_fdstat_set_rights(fd: i32 => u32, b: i64 => u64, i: i64 => u64));
        $each!($linker, "fd_filestat_get", fd_filestat_get(fd: i32 => u32, out: i32 => u32));
        $each!($linker, "fd_filestat_set_size", fd_filestat_set_size(fd: i32 => u32, s: i64 => u64));
        $each!($linker, "fd_filestat_set_times", fd_filestat_set_times(fd: i32 => u32, a: i64 => u64, m: i64 => u64, f: i32 => u32));
        $each!($linker, "fd_pread", fd_pread(fd: i32 => u32, i: i32 => u32, n: i32 => u32, o: i64 => u64, out: i32 => u32));
        $each!($linker, "fd_prestat_get", fd_prestat_get(fd: i32 => u32, out: i32 => u32));
        $each!($linker, "fd_prestat_dir_name", fd_prestat_dir_name(fd: i32 => u32, b: i32 => u32, l: i32 => u32));
        $each!($linker, "fd_pwrite", fd_pwrite(fd: i32 => u32, i: i32 => u32, n: i32 => u32, o: i64 => u64, out: i32 => u32));
        $each!($linker, "fd_read", fd_read(fd: i32 => u32, i: i32 => u32, n: i32 => u32, out: i32 => u32));
        $each!($linker, "fd_readdir", fd_readdir(fd: i32 => u32, b: i32 => u32, l: i32 => u32, c: i64 => u64, out: i32 => u32));
        $each!($linker, "fd_renumber", fd_renumber(a: i32 => u32, b: i32 => u32));
        $each!($linker, "fd_seek", fd_seek(fd: i32 => u32, o: i64 => u64, w: i32 => u32, out: i32 => u32));
        $each!($linker, "fd_sync", fd_sync(fd: i32 => u32));
        $each!($linker, "fd_tell", fd_tell(fd: i32 => u32, out: i32 => u32));
        $each!($linker, "fd_write", fd_write(fd: i32 => u32, i: i32 => u32, n: i32 => u32, out: i32 => u32));
        $each!($linker, "path_create_directory", path_create_directory(fd: i32 => u32, p: i32 => u32, l: i32 => u32));
        $each!($linker, "path_filestat_get", path_filestat_get(fd: i32 => u32, f: i32 => u32, p: i32 => u32, l: i32 => u32, out: i32 => u32));
        $each!($linker, "path_filestat_set_times", path_filestat_set_times(fd: i32 => u32, f: i32 => u32, p: i32 => u32, l: i32 => u32, a: i64 => u64, m: i64 => u64, fl: i32 => u32));
        $each!($linker, "path_link", path_link(fd: i32 => u32, f: i32 => u32, op: i32 => u32, ol: i32 => u32, nfd: i32 => u32, np: i32 => u32, nl: i32 => u32));
        $each!($linker, "path_open", path_open(fd: i32 => u32, df: i32 => u32, p: i32 => u32, l: i32 => u32, of: i32 => u32, rb: i64 => u64, ri: i64 => u64, ff: i32 => u32, out: i32 => u32));
        $each!($linker, "path_readlink", path_readlink(fd: i32 => u32, p: i32 => u32, l: i32 => u32, b: i32 => u32, bl: i32 => u32, out: i32 => u32));
        $each!($linker, "path_remove_directory", path_remove_directory(fd: i32 => u32, p: i32 => u32, l: i32 => u32));
        $each!($linker, "path_rename", path_rename(fd: i32 => u32, op: i32 => u32, ol: i32 => u32, nfd: i32 => u32, np: i32 => u32, nl: i32 => u32));
        $each!($linker, "path_symlink", path_symlink(op: i32 => u32, ol: i32 => u32, fd: i32 => u32, np: i32 => u32, nl: i32 => u32));
        $each!($linker, "path_unlink_file", path_unlink_file(fd: i32 => u32, p: i32 => u32, l: i32 => u32));
        $each!($linker, "poll_oneoff", poll_oneoff(i: i32 => u32, o: i32 => u32, n: i32 => u32, out: i32 => u32));
        $each!($linker, "random_get", random_get(b: i32 => u32, l: i32 => u32));
        $each!($linker, "sched_yield", sched_yield());
        // No network: no fd is a socket. As wasmtime answers: `EBADF` for an fd that is
        // not open, `ENOTSOCK` for one that is (a file, a directory, stdio).
        $each!($linker, "sock_accept", sock_accept(fd: i32 => u32, f: i32 => u32, out: i32 => u32));
        $each!($linker, "sock_recv", sock_recv(fd: i32 => u32, i: i32 => u32, n: i32 => u32, f: i32 => u32, a: i32 => u32, b: i32 => u32));
        $each!($linker, "sock_send", sock_send(fd: i32 => u32, i: i32 => u32, n: i32 => u32, f: i32 => u32, a: i32 => u32));
        $each!($linker, "sock_shutdown", sock_shutdown(fd: i32 => u32, how: i32 => u32));
    };
}
