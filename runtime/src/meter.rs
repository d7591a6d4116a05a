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
use crate::passes::unwind;

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
    slice: u64,
    checkpoints: Checkpoints,
}

/// When a module compiled with the unwind pass ([`crate::passes::unwind`]) takes its
/// checkpoints: at the first refuel at or after each multiple of `every` instructions.
/// Refuels come every [`SLICE`] instructions at most, so checkpoints are at least that
/// far apart; they never move a refuel (the count a trap reports depends on where
/// refuels are, see [`crate::passes::fuel`], and must not depend on checkpoints).
#[derive(Clone, Debug, Default)]
struct Checkpoints {
    every: Option<u64>,
    /// The count at or after which the next one is due.
    next: u64,
    /// Checkpoints may only be taken while the entry runs (not the start function, not
    /// `_initialize`: the host could not call them again to rewind).
    allowed: bool,
    /// While unwinding: the fuel the checkpoint's `refuel` was called with. Before the
    /// guest rewinds, the fuel global is set to it: every rewinding frame takes its fuel
    /// from there, never from its saved locals ([`crate::passes::unwind`], "Rewind").
    unwinding: Option<i64>,
    /// Why the guest's rewind was refused (a forged snapshot: its fuel or frames are not
    /// the checkpoint's). The run is then no result ([`Meter::rewind_refused`]).
    refused: Option<String>,
    taken: u64,
    /// Take a checkpoint when the deadline strikes ([`Meter::with_timeout_checkpoint`]).
    at_timeout: bool,
    /// The deadline struck: the checkpoint being taken (or just taken) is the run's last,
    /// and the run ends as timed out after it is saved.
    timed_out: bool,
    /// The checkpoint being taken is the deadline's, not one of every `every`: it is not
    /// counted (a run resumed from it takes the same checkpoints as one never stopped).
    off_trace: bool,
    /// Instructions run when the last checkpoint began.
    at: u64,
    /// The deadline struck at the fuel check a checkpoint was just taken at, as the guest
    /// rewound to it: that checkpoint's snapshot is where to resume.
    rewind_timed_out: bool,
}

/// The meter as a snapshot saves it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MeterState {
    pub limit: u64,
    pub handed: u64,
    pub slice: u64,
    pub every: u64,
    pub next: u64,
    pub taken: u64,
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
            slice: SLICE,
            checkpoints: Checkpoints::default(),
        }
    }

    /// The same, handing out `slice` instructions at a time instead of [`SLICE`]: for
    /// tests that need many refuels in a short run. The slice decides where refuels
    /// happen, and so the count a trap reports: runs are only comparable at one slice.
    pub fn with_slice(mut self, slice: u64) -> Self {
        self.slice = slice.max(1);
        self
    }

    /// Takes a checkpoint at the first refuel at or after each multiple of `every`
    /// instructions (see [`Checkpoints`]), in a module compiled with the unwind pass.
    pub fn with_checkpoints(mut self, every: u64) -> Self {
        self.checkpoints.every = Some(every.max(1));
        self.checkpoints.next = every.max(1);
        self
    }

    /// When the wall-clock deadline strikes while the entry runs, takes a checkpoint
    /// there (to be saved, so the job can be resumed later) instead of ending the run
    /// at once; the run then ends as timed out ([`Meter::timed_out`]). If a checkpoint
    /// of every `every` is due at that fuel check, it is that one; otherwise one off the
    /// trace, which does not move the checkpoints that follow.
    pub fn with_timeout_checkpoint(mut self) -> Self {
        self.checkpoints.at_timeout = true;
        self
    }

    /// Whether the deadline struck and a checkpoint was taken for it: the run ends as
    /// timed out once it is saved.
    pub fn timed_out(&self) -> bool {
        self.checkpoints.timed_out
    }

    /// Instructions run when the last checkpoint began (the fuel check it was taken at).
    pub fn checkpoint_at(&self) -> u64 {
        self.checkpoints.at
    }

    /// Whether the deadline struck as the guest rewound from the last checkpoint (whose
    /// snapshot is then where to resume).
    pub fn rewind_timed_out(&self) -> bool {
        self.checkpoints.rewind_timed_out
    }

    /// Why the guest's rewind was refused, if it was: the snapshot it resumed from is
    /// forged, and the run is not a result of the job.
    pub fn rewind_refused(&self) -> Option<&str> {
        self.checkpoints.refused.as_deref()
    }

    /// Checks the guest's fuel at the `refuel` a rewind ends at (or the fuel global a
    /// resumed snapshot saves): it must be the fuel the checkpoint was taken with,
    /// negative (a check found it so) and `instructions run = handed - fuel`. The reason
    /// if not. Found by review: a forged positive fuel ran a resumed job with no budget
    /// and no deadline.
    pub fn check_rewind_fuel(&self, fuel: i64) -> Result<(), String> {
        if fuel >= 0 || self.consumed(fuel) != self.checkpoints.at {
            return Err(format!(
                "its fuel ({fuel}) is not that of a check after {} instructions",
                self.checkpoints.at
            ));
        }
        Ok(())
    }

    /// Whether the last checkpoint taken was the deadline's one off the trace.
    pub fn off_trace(&self) -> bool {
        self.checkpoints.off_trace
    }

    /// Whether the deadline has struck and a checkpoint may be taken for it.
    fn timeout_checkpoint_due(&self) -> bool {
        let c = &self.checkpoints;
        c.at_timeout
            && c.every.is_some()
            && c.allowed
            && c.unwinding.is_none()
            && self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether checkpoints may be taken now (only while the entry runs).
    pub fn allow_checkpoints(&mut self, allowed: bool) {
        self.checkpoints.allowed = allowed;
    }

    /// Checkpoints taken so far.
    pub fn checkpoints_taken(&self) -> u64 {
        self.checkpoints.taken
    }

    /// What a snapshot saves of the meter (at a checkpoint, after the guest unwound).
    pub fn save(&self) -> MeterState {
        MeterState {
            limit: self.limit,
            handed: self.handed,
            slice: self.slice,
            every: self.checkpoints.every.unwrap_or(0),
            next: self.checkpoints.next,
            taken: self.checkpoints.taken,
        }
    }

    /// Puts a saved meter back into this one, which must be a fresh meter of the same
    /// job and runtime (same limit, slice and checkpoint interval), with the checkpoint
    /// taken after `instructions`: the reason if not.
    pub fn restore(&mut self, s: &MeterState, instructions: u64) -> Result<(), String> {
        let here = self.save();
        if (s.limit, s.slice, s.every) != (here.limit, here.slice, here.every) {
            return Err(format!(
                "it was taken with a budget of {}, slices of {} and a checkpoint every {} \
                 instructions; this run has {}, {} and {}",
                s.limit, s.slice, s.every, here.limit, here.slice, here.every
            ));
        }
        // Handed out at most the budget; the next checkpoint past the last; taken at a
        // check that found the fuel negative (so past what was handed), within the budget.
        if s.handed > s.limit
            || instructions < s.handed
            || instructions > s.limit
            || s.next < s.every
            || !s.next.is_multiple_of(s.every.max(1))
        {
            return Err("its meter is not one a run can reach".into());
        }
        self.handed = s.handed;
        self.checkpoints.at = instructions;
        self.checkpoints.next = s.next;
        self.checkpoints.taken = s.taken;
        Ok(())
    }

    /// Whether a checkpoint is due at a refuel with the guest's fuel at `fuel`; if so,
    /// the next one is set.
    fn checkpoint_due(&mut self, fuel: i64) -> bool {
        let c = &mut self.checkpoints;
        let Some(every) = c.every else { return false };
        if !c.allowed || c.unwinding.is_some() {
            return false;
        }
        let run = (i128::from(self.handed) - i128::from(fuel)).max(0) as u64;
        if run < c.next {
            return false;
        }
        c.next = (run / every).saturating_add(1).saturating_mul(every);
        true
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
        let give = left.min(self.slice);
        self.handed += give;
        Ok(fuel.saturating_add(give as i64))
    }
}

/// Store data that holds a [`Meter`].
pub trait Metered {
    /// The run's meter.
    fn meter(&mut self) -> &mut Meter;

    /// Told when the guest starts unwinding for a checkpoint (`true`) and when it has
    /// (`false`): the unwind memory grows meanwhile, and a store with a memory limit must
    /// not charge that to the job ([`crate::limiter::JobLimiter`]).
    fn unwinding(&mut self, _on: bool) {}
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
            if let Some(state) = unwind_global(&mut caller, unwind::EXPORT_STATE) {
                if state.get(&mut caller).i32() == Some(unwind::REWINDING) {
                    // Rewound to the refuel the checkpoint was taken at: every frame
                    // must have been restored, and the refuel happens now, as it would
                    // have without the checkpoint.
                    state.set(&mut caller, wasmtime::Val::I32(unwind::NORMAL))?;
                    let ptr = unwind_global(&mut caller, unwind::EXPORT_PTR)
                        .and_then(|p| p.get(&mut caller).i32());
                    let meter = caller.data_mut().meter();
                    let why = match ptr {
                        Some(0) => meter.check_rewind_fuel(fuel).err(),
                        _ => Some("its rewind ended with frames left in the unwind memory".into()),
                    };
                    if let Some(why) = why {
                        meter.checkpoints.refused = Some(why.clone());
                        return Err(wasmtime::Error::msg(why));
                    }
                    // The deadline struck while the checkpoint was saved: the run stops
                    // here, in the very state that checkpoint saved.
                    let meter = caller.data_mut().meter();
                    if meter.checkpoints.at_timeout
                        && meter.deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        meter.checkpoints.rewind_timed_out = true;
                    }
                } else {
                    let meter = caller.data_mut().meter();
                    // The deadline is read once here: the checkpoint of every `every` due
                    // at this check, if any, is the one the deadline keeps.
                    let timeout = meter.timeout_checkpoint_due();
                    let due = meter.checkpoint_due(fuel);
                    if due || timeout {
                        meter.checkpoints.timed_out = timeout;
                        meter.checkpoints.off_trace = !due;
                        meter.checkpoints.at = meter.consumed(fuel);
                        meter.checkpoints.unwinding = Some(fuel);
                        caller.data_mut().unwinding(true);
                        state.set(&mut caller, wasmtime::Val::I32(unwind::UNWINDING))?;
                        // The guest ignores what a call returns while unwinding.
                        return Ok(fuel);
                    }
                }
            }
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

fn unwind_global<T>(caller: &mut Caller<'_, T>, name: &str) -> Option<wasmtime::Global> {
    match caller.get_export(name) {
        Some(Extern::Global(g)) => Some(g),
        _ => None,
    }
}

/// After a call of the entry returned: whether the guest had unwound for a checkpoint
/// rather than returned. If so, the guest is set to rewind (its fuel global set to the
/// fuel the checkpoint's `refuel` was called with, which every rewinding frame takes):
/// calling the entry again continues the run where it stopped. What the host does with
/// the checkpoint happens between the two.
pub fn rewind_if_unwound<T: Metered + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
) -> wasmtime::Result<bool> {
    let Some(Extern::Global(state)) = instance.get_export(&mut store, unwind::EXPORT_STATE) else {
        return Ok(false);
    };
    if state.get(&mut store).i32() != Some(unwind::UNWINDING) {
        return Ok(false);
    }
    let mut ctx = store.as_context_mut();
    let data = ctx.data_mut();
    let fuel = data.meter().checkpoints.unwinding.take();
    if !data.meter().checkpoints.off_trace {
        data.meter().checkpoints.taken += 1;
    }
    data.unwinding(false);
    if let (Some(v), Some(Extern::Global(g))) = (fuel, instance.get_export(&mut store, EXPORT_FUEL))
    {
        g.set(&mut store, wasmtime::Val::I64(v))?;
    }
    state.set(&mut store, wasmtime::Val::I32(unwind::REWINDING))?;
    Ok(true)
}

/// Calls `func`, an export of `instance`, and each time the call ends because the guest
/// unwound for a checkpoint, rewinds it and calls again, until it returns or fails: a
/// call as its caller sees it, checkpoints or not. For synchronous callers (tests, the
/// self-fuzzer); a job's run does the same around its asynchronous call.
pub fn call<T: Metered + 'static>(
    store: &mut wasmtime::Store<T>,
    instance: &Instance,
    func: &wasmtime::Func,
    params: &[wasmtime::Val],
    results: &mut [wasmtime::Val],
) -> wasmtime::Result<()> {
    loop {
        func.call(&mut *store, params, results)?;
        if !rewind_if_unwound(&mut *store, instance)? {
            return Ok(());
        }
    }
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

/// Whether `name` is an export a pass added (not the module's own).
pub fn is_pass_export(name: &str) -> bool {
    name == EXPORT_FUEL
        || name == EXPORT_START
        || name == crate::engine::EXPORT_STACK_DEPTH
        || name == unwind::EXPORT_STATE
        || name == unwind::EXPORT_PTR
        || name == unwind::EXPORT_MEMORY
        || name == unwind::EXPORT_TABLE
        || name.starts_with(unwind::EXPORT_MEMORY_PREFIX)
        || name.starts_with(unwind::EXPORT_GLOBAL_PREFIX)
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
