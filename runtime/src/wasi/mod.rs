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
    let fuel = crate::meter::caller_fuel(caller);
    let (data, ctx) = memory.data_and_store_mut(&mut *caller);
    let (result, left) = host_call(&mut ctx.host, &ctx.meter, data, fuel.map(|(_, f)| f), f);
    if let Some(((global, _), left)) = fuel.zip(left) {
        global.set(&mut *caller, wasmtime::Val::I64(left))?;
    }
    result.map_err(wasmtime::Error::new)
}

/// The engine-independent part of a host call: `f` over the guest's memory `data`, its
/// work charged against the guest's fuel (`fuel`, read from its fuel global; see
/// `host::HOST_BYTES_PER_FUEL`), which the module stored there before calling
/// ([`crate::meter`]). A module without one (not metered: the benchmarks' baseline) is
/// charged nothing. Returns the errno (or what ends the run) and the fuel to write back.
/// Every engine that links this host calls it (the runtime's wasmtime, the self-fuzzer's
/// wasmi), so they charge alike.
pub fn host_call(
    host: &mut WasiHost,
    meter: &crate::meter::Meter,
    data: &mut [u8],
    fuel: Option<i64>,
    f: impl FnOnce(&mut WasiHost, &mut Mem) -> Result<(), HostError>,
) -> (Result<i32, host::Fatal>, Option<i64>) {
    host.fuel = match fuel {
        Some(f) => meter.remaining(f),
        None => u64::MAX,
    };
    let mut result = f(host, &mut Mem(data));
    if let Err(out_of_fuel) = host.settle_work() {
        if !matches!(result, Err(HostError::Fatal(_))) {
            result = Err(out_of_fuel);
        }
    }
    let left = fuel.map(|_| meter.fuel_for(host.fuel));
    let result = match result {
        Ok(()) => Ok(0),
        Err(HostError::Errno(Errno(e))) => Ok(e as i32),
        Err(HostError::Fatal(fatal)) => Err(fatal),
    };
    (result, left)
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
    detwasm_wasi::preview1_calls!(wasi, linker);
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
    Ok(())
}
