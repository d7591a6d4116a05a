//! Compiling with a deadline: in the compile worker, a child process killed at the
//! deadline ([`crate::compile_worker`]), or without one on a thread of this process that
//! the caller stops waiting for. The job's wall-clock timeout covers compiling as it
//! covers running.

use std::time::Instant;

use wasmtime::{Engine, Module};

use crate::engine::{compile_with, Deadline};
use crate::error::RunError;

/// Compiles with a deadline on a thread of this process ([`compile_by`] when no compile
/// worker is named, [`crate::compile_worker`]) that may run at once, those abandoned at
/// their deadline included (they run on until their compile ends). Each holds the compile
/// term of SECURITY.md's memory formula, so such a process holds at most this many of
/// them, whatever its jobs send. A compile waits for a slot until its own deadline (then
/// it is [`RunError::CompileTimeout`]). Rejected: a thread pool per compile with no bound
/// (a review's jobs file of six hostile lines at `timeout: 1` held 4.5 GB, still growing,
/// and the honest lines after them timed out); one shared pool (the next jobs' compiles
/// queued behind abandoned ones and missed their deadlines, found by the review before).
/// `detwasm` and the Python bindings name a worker, so this is only the fallback of
/// other embedders.
pub const MAX_LIVE_COMPILES: usize = 2;

static LIVE_COMPILES: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static COMPILE_SLOT_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// One of the [`MAX_LIVE_COMPILES`] slots, given back when dropped.
struct CompileSlot;

impl CompileSlot {
    fn take(deadline: Deadline) -> Result<CompileSlot, RunError> {
        let mut live = LIVE_COMPILES.lock().unwrap_or_else(|p| p.into_inner());
        while *live >= MAX_LIVE_COMPILES {
            let Some(left) = deadline.at.checked_duration_since(Instant::now()) else {
                return Err(deadline.expired());
            };
            live = COMPILE_SLOT_FREED
                .wait_timeout(live, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *live += 1;
        Ok(CompileSlot)
    }
}

impl Drop for CompileSlot {
    fn drop(&mut self) {
        let mut live = LIVE_COMPILES.lock().unwrap_or_else(|p| p.into_inner());
        *live -= 1;
        COMPILE_SLOT_FREED.notify_one();
    }
}

/// Stack of the thread [`compile_by`] compiles on: the main thread's usual 8 MiB, which
/// the passes and Cranelift were always run on before.
const COMPILE_THREAD_STACK: usize = 8 << 20;

/// [`compile`], ended at `deadline`: the job's wall-clock safety net covers loading,
/// validating, rewriting and compiling the module as it covers running it. A compile
/// still running at the deadline is the error [`RunError::CompileTimeout`], never a
/// result.
///
/// wasmtime cannot cancel Cranelift, so the compile runs where it can be stopped: in the
/// compile worker, a child process killed at the deadline ([`crate::compile_worker`],
/// which `detwasm` and the Python bindings name). Without one, it runs on a thread of its
/// own that this call stops waiting for: the caller gets the error at the deadline, and
/// the thread runs on until its compile ends (at most [`MAX_LIVE_COMPILES`] of them).
/// Rejected: compiling on the caller's thread and checking the deadline afterwards (the
/// caller would wait for all of it); killing the thread (not possible in Rust, and it
/// would leak wasmtime's locks).
pub fn compile_by(
    engine: &Engine,
    bytes: &[u8],
    deadline: Option<Deadline>,
    unwind: bool,
) -> Result<Module, RunError> {
    let Some(deadline) = deadline else {
        return compile_with(engine, bytes, unwind);
    };
    let Some(left) = deadline.at.checked_duration_since(Instant::now()) else {
        return Err(deadline.expired());
    };
    if let Some(result) = crate::compile_worker::compile(engine, bytes, deadline, unwind) {
        return result;
    }
    // No worker: on a thread of this process. A slot first: at most MAX_LIVE_COMPILES compiles with a deadline run at once in a
    // process, abandoned ones included, each until its compile ends.
    let slot = CompileSlot::take(deadline)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (engine, bytes) = (engine.clone(), bytes.to_vec());
    std::thread::Builder::new()
        .name("detwasm-compile".into())
        .stack_size(COMPILE_THREAD_STACK)
        .spawn(move || {
            let _slot = slot;
            // Cranelift's functions are compiled on a thread pool of this compile's own,
            // so that a compile abandoned at its deadline keeps only its own threads
            // busy: on rayon's global pool, the compiles of the next jobs of a `batch`
            // queued behind it and missed their own deadlines (found by review: honest
            // jobs of 0.4 s failed after two hostile ones). Rejected: compiling on one
            // thread (every honest compile slower).
            let compile = || compile_with(&engine, &bytes, unwind);
            let result = match rayon::ThreadPoolBuilder::new()
                .thread_name(|i| format!("detwasm-compile-{i}"))
                .build()
            {
                Ok(pool) => pool.install(compile),
                Err(_) => compile(),
            };
            // The receiver is gone when the deadline passed first: nothing to do.
            let _ = tx.send(result);
        })
        .map_err(|e| RunError::io("starting the compile thread", e))?;
    match rx.recv_timeout(left) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(deadline.expired()),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(RunError::Engine("the compile thread panicked".into()))
        }
    }
}
