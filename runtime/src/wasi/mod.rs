//! detwasm's own `wasi_snapshot_preview1`, served from a virtual world.
//!
//! Decision: every preview1 function is implemented here, on a plain `wasmtime::Linker`,
//! over state that is a function of the job alone ([`host::WasiHost`]): a virtual
//! filesystem ([`vfs`]), virtual clocks, a seeded ChaCha20 stream, captured stdio with a
//! byte quota. Nothing here calls the host's clock, entropy, network or filesystem
//! (except reading input files through a `cap_std` handle).
//!
//! Rejected alternative: wasmtime-wasi's preview1 adapter with leaking imports shadowed.
//! In 48 its filesystem is not pluggable, so closing the directory-order, inode, stat-time
//! and output-quota channels would mean post-processing guest memory after the real
//! host calls — a deny-list where any missed field is a leak. An allow-list of ~45
//! functions we wrote is shorter to audit. It also keeps wasmtime-wasi (and the component
//! model) out of the build.
//!
//! Unsupported functions answer with an errno, the same on every host: sockets
//! (`sock_*`) `ENOTSOCK` (no fd is a socket) or `EBADF`, `proc_raise` `ENOSYS`.

// The host's state and calls are detwasm-wasi's (no engine there); this module links
// them into wasmtime and charges their work as fuel.
pub use detwasm_wasi::{abi, host, vfs};

use wasmtime::{Caller, Extern, Linker, Memory};

use crate::limiter::JobLimiter;

use abi::{Errno, Mem};
use host::{HostError, WasiHost};

/// The import module name of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// What a `Store` carries.
pub struct Ctx {
    pub host: WasiHost,
    pub limits: JobLimiter,
    pub memory: Option<Memory>,
    /// The run's fuel budget ([`crate::meter`]).
    pub meter: crate::meter::Meter,
}

impl crate::meter::Metered for Ctx {
    fn meter(&mut self) -> &mut crate::meter::Meter {
        &mut self.meter
    }
    fn unwinding(&mut self, on: bool) {
        self.limits.unwinding = on;
    }
}

fn dispatch(
    caller: &mut Caller<'_, Ctx>,
    f: impl FnOnce(&mut WasiHost, &mut Mem) -> Result<(), HostError>,
) -> wasmtime::Result<i32> {
    let memory = match caller.data().memory {
        Some(m) => m,
        None => match caller.get_export("memory") {
            Some(Extern::Memory(m)) => {
                caller.data_mut().memory = Some(m);
                m
            }
            _ => {
                return Err(wasmtime::Error::new(host::Fatal::Guest(
                    "the module calls WASI but exports no memory named `memory`".into(),
                )))
            }
        },
    };
    // Host work is charged against the guest's fuel (see `host::HOST_BYTES_PER_FUEL`),
    // which the module stored in its fuel global before calling ([`crate::meter`]). A
    // module without one (not metered: the benchmarks' baseline) is charged nothing.
    let fuel = crate::meter::caller_fuel(caller);
    let (data, ctx) = memory.data_and_store_mut(&mut *caller);
    ctx.host.fuel = match fuel {
        Some((_, f)) => ctx.meter.remaining(f),
        None => u64::MAX,
    };
    let mut result = f(&mut ctx.host, &mut Mem(data));
    if let Err(out_of_fuel) = ctx.host.settle_work() {
        if !matches!(result, Err(HostError::Fatal(_))) {
            result = Err(out_of_fuel);
        }
    }
    let left = ctx.host.fuel;
    if let Some((global, _)) = fuel {
        let f = ctx.meter.fuel_for(left);
        global.set(&mut *caller, wasmtime::Val::I64(f))?;
    }
    match result {
        Ok(()) => Ok(0),
        Err(HostError::Errno(Errno(e))) => Ok(e as i32),
        Err(HostError::Fatal(fatal)) => Err(wasmtime::Error::new(fatal)),
    }
}

macro_rules! wasi {
    ($linker:ident, $name:literal, $method:ident ( $($arg:ident : $ty:ty => $conv:ty),* )) => {
        $linker.func_wrap(
            MODULE,
            $name,
            |mut caller: Caller<'_, Ctx>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                dispatch(&mut caller, |h, m| h.$method(m, $($arg as $conv),*))
            },
        )?;
    };
}

macro_rules! unsupported {
    ($linker:ident, $name:literal, $errno:expr, ($($ty:ty),*)) => {
        $linker.func_wrap(MODULE, $name, |$(_: $ty),*| -> i32 { $errno.0 as i32 })?;
    };
}

/// Defines every `wasi_snapshot_preview1` function in `linker`.
pub fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    wasi!(linker, "args_get", args_get(a: i32 => u32, b: i32 => u32));
    wasi!(linker, "args_sizes_get", args_sizes_get(a: i32 => u32, b: i32 => u32));
    wasi!(linker, "environ_get", environ_get(a: i32 => u32, b: i32 => u32));
    wasi!(linker, "environ_sizes_get", environ_sizes_get(a: i32 => u32, b: i32 => u32));
    wasi!(linker, "clock_res_get", clock_res_get(id: i32 => u32, out: i32 => u32));
    wasi!(linker, "clock_time_get", clock_time_get(id: i32 => u32, p: i64 => u64, out: i32 => u32));
    wasi!(linker, "fd_advise", fd_advise(fd: i32 => u32, o: i64 => u64, l: i64 => u64, a: i32 => u32));
    wasi!(linker, "fd_allocate", fd_allocate(fd: i32 => u32, o: i64 => u64, l: i64 => u64));
    wasi!(linker, "fd_close", fd_close(fd: i32 => u32));
    wasi!(linker, "fd_datasync", fd_sync(fd: i32 => u32));
    wasi!(linker, "fd_fdstat_get", fd_fdstat_get(fd: i32 => u32, out: i32 => u32));
    wasi!(linker, "fd_fdstat_set_flags", fd_fdstat_set_flags(fd: i32 => u32, f: i32 => u32));
    wasi!(linker, "fd_fdstat_set_rights", fd_fdstat_set_rights(fd: i32 => u32, b: i64 => u64, i: i64 => u64));
    wasi!(linker, "fd_filestat_get", fd_filestat_get(fd: i32 => u32, out: i32 => u32));
    wasi!(linker, "fd_filestat_set_size", fd_filestat_set_size(fd: i32 => u32, s: i64 => u64));
    wasi!(linker, "fd_filestat_set_times", fd_filestat_set_times(fd: i32 => u32, a: i64 => u64, m: i64 => u64, f: i32 => u32));
    wasi!(linker, "fd_pread", fd_pread(fd: i32 => u32, i: i32 => u32, n: i32 => u32, o: i64 => u64, out: i32 => u32));
    wasi!(linker, "fd_prestat_get", fd_prestat_get(fd: i32 => u32, out: i32 => u32));
    wasi!(linker, "fd_prestat_dir_name", fd_prestat_dir_name(fd: i32 => u32, b: i32 => u32, l: i32 => u32));
    wasi!(linker, "fd_pwrite", fd_pwrite(fd: i32 => u32, i: i32 => u32, n: i32 => u32, o: i64 => u64, out: i32 => u32));
    wasi!(linker, "fd_read", fd_read(fd: i32 => u32, i: i32 => u32, n: i32 => u32, out: i32 => u32));
    wasi!(linker, "fd_readdir", fd_readdir(fd: i32 => u32, b: i32 => u32, l: i32 => u32, c: i64 => u64, out: i32 => u32));
    wasi!(linker, "fd_renumber", fd_renumber(a: i32 => u32, b: i32 => u32));
    wasi!(linker, "fd_seek", fd_seek(fd: i32 => u32, o: i64 => u64, w: i32 => u32, out: i32 => u32));
    wasi!(linker, "fd_sync", fd_sync(fd: i32 => u32));
    wasi!(linker, "fd_tell", fd_tell(fd: i32 => u32, out: i32 => u32));
    wasi!(linker, "fd_write", fd_write(fd: i32 => u32, i: i32 => u32, n: i32 => u32, out: i32 => u32));
    wasi!(linker, "path_create_directory", path_create_directory(fd: i32 => u32, p: i32 => u32, l: i32 => u32));
    wasi!(linker, "path_filestat_get", path_filestat_get(fd: i32 => u32, f: i32 => u32, p: i32 => u32, l: i32 => u32, out: i32 => u32));
    wasi!(linker, "path_filestat_set_times", path_filestat_set_times(fd: i32 => u32, f: i32 => u32, p: i32 => u32, l: i32 => u32, a: i64 => u64, m: i64 => u64, fl: i32 => u32));
    wasi!(linker, "path_link", path_link(fd: i32 => u32, f: i32 => u32, op: i32 => u32, ol: i32 => u32, nfd: i32 => u32, np: i32 => u32, nl: i32 => u32));
    wasi!(linker, "path_open", path_open(fd: i32 => u32, df: i32 => u32, p: i32 => u32, l: i32 => u32, of: i32 => u32, rb: i64 => u64, ri: i64 => u64, ff: i32 => u32, out: i32 => u32));
    wasi!(linker, "path_readlink", path_readlink(fd: i32 => u32, p: i32 => u32, l: i32 => u32, b: i32 => u32, bl: i32 => u32, out: i32 => u32));
    wasi!(linker, "path_remove_directory", path_remove_directory(fd: i32 => u32, p: i32 => u32, l: i32 => u32));
    wasi!(linker, "path_rename", path_rename(fd: i32 => u32, op: i32 => u32, ol: i32 => u32, nfd: i32 => u32, np: i32 => u32, nl: i32 => u32));
    wasi!(linker, "path_symlink", path_symlink(op: i32 => u32, ol: i32 => u32, fd: i32 => u32, np: i32 => u32, nl: i32 => u32));
    wasi!(linker, "path_unlink_file", path_unlink_file(fd: i32 => u32, p: i32 => u32, l: i32 => u32));
    wasi!(linker, "poll_oneoff", poll_oneoff(i: i32 => u32, o: i32 => u32, n: i32 => u32, out: i32 => u32));
    wasi!(linker, "random_get", random_get(b: i32 => u32, l: i32 => u32));
    wasi!(linker, "sched_yield", sched_yield());
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |mut caller: Caller<'_, Ctx>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(
                caller.data_mut().host.proc_exit(code as u32),
            ))
        },
    )?;
    unsupported!(linker, "proc_raise", Errno::NOSYS, (i32));
    // No network: no fd is a socket. As wasmtime answers: `EBADF` for an fd that is not
    // open, `ENOTSOCK` for one that is (a file, a directory, stdio).
    wasi!(linker, "sock_accept", sock_accept(fd: i32 => u32, f: i32 => u32, out: i32 => u32));
    wasi!(linker, "sock_recv", sock_recv(fd: i32 => u32, i: i32 => u32, n: i32 => u32, f: i32 => u32, a: i32 => u32, b: i32 => u32));
    wasi!(linker, "sock_send", sock_send(fd: i32 => u32, i: i32 => u32, n: i32 => u32, f: i32 => u32, a: i32 => u32));
    wasi!(linker, "sock_shutdown", sock_shutdown(fd: i32 => u32, how: i32 => u32));
    Ok(())
}
