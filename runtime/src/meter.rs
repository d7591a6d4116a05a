//! The host side of fuel metering ([`crate::passes::fuel`]): the job's budget, handed to
//! the guest a slice at a time, the wall-clock deadline checked between slices, and the
//! instruction count read back from the module.
//!
//! The guest keeps the fuel of its current slice; the host keeps what it has handed out
//! (`handed`). The instructions run so far are `handed - fuel` whatever the fuel's sign:
//! a check that finds the fuel negative has overrun the slice by that much, and asks for
//! the next ([`Meter::refuel`]). Slices are [`SLICE`] units, so the deadline is read
//! about every [`SLICE`] instructions; the budget is never handed out beyond the job's
//! limit, so a guest that has run `limit` instructions is out of fuel at its next check.
//! Rejected: handing out the whole budget at once (the deadline would never be read).

use std::time::Instant;

use wasmtime::{AsContextMut, Caller, Extern, Instance, Linker, Trap};

use crate::passes::fuel::{EXPORT_FUEL, EXPORT_START, IMPORT_MODULE, IMPORT_REFUEL};

/// Fuel handed to the guest at a time. A refuel costs about 100 ns (a call into the
/// host and a clock read), and compiled code runs 1–10 G units a second, so ten million
/// units between refuels cost about 1e-4 of the run at most, and a timeout is noticed
/// 1–10 ms late at most. Work that grows with an operand is charged in proportion, so it
/// cannot stretch that: `memory.fill`/`memory.copy` cost one unit per byte and the fuel
/// is checked after the charge, before the work (a loop of 64 MiB fills is stopped on
/// time, see the tests), and the WASI host charges its work by bytes
/// ([`crate::wasi::host::HOST_BYTES_PER_FUEL`]).
pub const SLICE: u64 = 10_000_000;

/// The fuel budget of one run.
#[derive(Clone, Debug)]
pub struct Meter {
    limit: u64,
    handed: u64,
    deadline: Option<Instant>,
}

/// Why a run stopped at a refuel (the error the refuel import returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The budget is spent.
    OutOfFuel,
    /// The wall-clock deadline has passed.
    Timeout,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::OutOfFuel => write!(f, "{}", Trap::OutOfFuel),
            Stop::Timeout => write!(f, "{}", Trap::Interrupt),
        }
    }
}

impl std::error::Error for Stop {}

impl Meter {
    /// A budget of `limit` instructions, and an optional wall-clock deadline.
    pub fn new(limit: u64, deadline: Option<Instant>) -> Self {
        Meter {
            limit,
            handed: 0,
            deadline,
        }
    }

    /// Instructions run when the guest's fuel is `fuel`, at most the limit.
    pub fn consumed(&self, fuel: i64) -> u64 {
        let run = i128::from(self.handed) - i128::from(fuel);
        run.clamp(0, i128::from(self.limit)) as u64
    }

    /// Whether a run that ended with the guest's fuel at `fuel` ran more instructions
    /// than its limit (between two checks; the run is then out of fuel, not a success
    /// counted at the limit).
    pub fn overran(&self, fuel: i64) -> bool {
        i128::from(self.handed) - i128::from(fuel) > i128::from(self.limit)
    }

    /// Fuel left in the whole budget when the guest's fuel is `fuel`.
    pub fn remaining(&self, fuel: i64) -> u64 {
        self.limit - self.consumed(fuel)
    }

    /// The guest fuel that leaves `remaining` of the budget (host work charged).
    pub fn fuel_for(&self, remaining: u64) -> i64 {
        let consumed = self.limit.saturating_sub(remaining);
        i128::from(self.handed)
            .saturating_sub(i128::from(consumed))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Called by the guest with its fuel when a check found it negative: the fuel to go
    /// on with, or why the run stops.
    pub fn refuel(&mut self, fuel: i64) -> Result<i64, Stop> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Timeout);
        }
        let consumed = i128::from(self.handed) - i128::from(fuel);
        if consumed >= i128::from(self.limit) {
            return Err(Stop::OutOfFuel);
        }
        let left = self.limit - consumed.max(0) as u64;
        let give = left.min(SLICE);
        self.handed += give;
        Ok(fuel.saturating_add(give as i64))
    }
}

/// Store data that holds a [`Meter`].
pub trait Metered {
    /// The run's meter.
    fn meter(&mut self) -> &mut Meter;
}

impl Metered for Meter {
    fn meter(&mut self) -> &mut Meter {
        self
    }
}

/// Defines the refuel import in `linker`.
pub fn define<T: Metered + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        IMPORT_REFUEL,
        |mut caller: Caller<'_, T>, fuel: i64| -> wasmtime::Result<i64> {
            let r = caller.data_mut().meter().refuel(fuel);
            // The global follows: the count a later trap reports is this one at least
            // (the guest stores the fuel only at some points, see the pass).
            if let Some((global, _)) = caller_fuel(&mut caller) {
                global.set(
                    &mut caller,
                    wasmtime::Val::I64(*r.as_ref().unwrap_or(&fuel)),
                )?;
            }
            r.map_err(wasmtime::Error::new)
        },
    )?;
    Ok(())
}

/// The guest's fuel (its fuel global), or `None` for a module without one (it defines
/// no function: it runs no instruction).
pub fn fuel(mut store: impl AsContextMut, instance: &Instance) -> Option<i64> {
    match instance.get_export(&mut store, EXPORT_FUEL) {
        Some(Extern::Global(g)) => g.get(&mut store).i64(),
        _ => None,
    }
}

/// The same, from a host function's caller.
pub fn caller_fuel<T>(caller: &mut Caller<'_, T>) -> Option<(wasmtime::Global, i64)> {
    match caller.get_export(EXPORT_FUEL) {
        Some(Extern::Global(g)) => g.get(&mut *caller).i64().map(|v| (g, v)),
        _ => None,
    }
}

/// The module's start function (moved to an export by the pass), to call right after
/// instantiating.
pub fn start(mut store: impl AsContextMut, instance: &Instance) -> Option<wasmtime::Func> {
    instance.get_func(&mut store, EXPORT_START)
}

/// Whether `module.name` is the import the pass added (not the module's own).
pub fn is_pass_import(module: &str, name: &str) -> bool {
    module == IMPORT_MODULE && name == IMPORT_REFUEL
}

/// Whether `name` is an export the pass added (not the module's own).
pub fn is_pass_export(name: &str) -> bool {
    name == EXPORT_FUEL || name == EXPORT_START
}

/// Instantiates `module` (compiled by [`crate::engine::compile`]) in a store of its own
/// with a budget of `fuel` instructions and runs its start function: for tests and tools
/// that run a module outside a job. The instance is returned with the error of a start
/// function that failed.
#[allow(clippy::type_complexity)]
pub fn instantiate(
    engine: &wasmtime::Engine,
    module: &wasmtime::Module,
    fuel: u64,
) -> (wasmtime::Store<Meter>, wasmtime::Result<Instance>) {
    let mut store = wasmtime::Store::new(engine, Meter::new(fuel, None));
    let mut linker = Linker::new(engine);
    let instance = define(&mut linker).and_then(|()| linker.instantiate(&mut store, module));
    let instance = instance.and_then(|i| match start(&mut store, &i) {
        Some(s) => s.call(&mut store, &[], &mut []).map(|()| i),
        None => Ok(i),
    });
    (store, instance)
}

/// Instructions a store of [`instantiate`] has run.
pub fn consumed(store: &mut wasmtime::Store<Meter>, instance: Option<&Instance>) -> u64 {
    let f = instance.and_then(|i| fuel(&mut *store, i)).unwrap_or(0);
    store.data().consumed(f)
}
