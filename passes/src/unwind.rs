//! Unwind and rewind: the guest's call stack saved as data, so that a running job can be
//! stopped at a fuel check, its whole state written down, and continued later, here or
//! on another machine, as if it had never stopped.
//!
//! # Why a rewrite of the module
//!
//! A job's call stack lives in native frames that Cranelift lays out, differently on
//! every CPU and engine version; wasmtime cannot save a guest with wasm frames on the
//! stack. So the module is rewritten, after every other pass (fuel, NaN, stack), so that
//! each function can *unwind* (save its locals and where it was into a buffer and
//! return) and *rewind* (restore them on entry and jump back to where it was), as
//! Binaryen's Asyncify does. The saved stack is then plain data in a memory of the
//! instance, with the same layout on every CPU. Rejected: saving native stacks (a
//! function of the CPU, the engine and its optimiser: no other host could resume them);
//! interpreting the module to take snapshots (wasmi's resumable calls cannot be saved,
//! and an interpreter is 10–100 times slower for the whole job); Asyncify itself
//! (Binaryen is a C++ toolchain, it does not know the fuel pass's `refuel` import is the
//! only place a checkpoint starts, and its output would not be checked by this crate's
//! tests against the spec suite and the engine).
//!
//! # When it unwinds
//!
//! Only at a call of `detwasm.refuel`, the fuel pass's import, which every check of the
//! fuel reaches when the fuel runs out ([`crate::fuel`]): the host decides there that a
//! checkpoint is due, sets the state global to [`UNWINDING`] and returns. A checkpoint is
//! therefore the state "about to refuel with this fuel", a point of the module's own
//! code, the same on every host. A function is *instrumented* when it can reach such a
//! call: it calls `refuel`, calls an instrumented function, or calls through a table
//! while some function in a table (or named by `ref.func`) is instrumented. The others
//! (leaves that neither loop nor call, the import wrappers) are left as they are.
//!
//! # How a function unwinds and rewinds
//!
//! Each call in an instrumented function that can unwind (a *site*, numbered in the
//! order of the code) is rewritten so that, at the call, the operand stack holds exactly
//! its arguments: every value below them, in this block and the blocks around it, is
//! moved into a local first, and moved back after the call. Locals that carry values
//! across blocks are keyed by the value's position on the original operand stack and its
//! type (a *slot*), so that nested blocks never overwrite a value an outer block still
//! holds. Every block of an instrumented function becomes `[] -> []`: its parameters and
//! results (and the values branches carry to it) go through slots too, so that the code
//! can be entered in the middle of a block.
//!
//! - **Unwind.** After a site's call, `global.get state; if` (not [`NORMAL`]): the site's
//!   number is kept and the function branches to its save code, which writes every
//!   local and the site number to the unwind memory at the buffer's end, then returns
//!   (with zeros as results; the caller is unwinding too). The frames are written
//!   innermost first.
//! - **Rewind.** The host sets the state to [`REWINDING`] and calls the entry again. On
//!   entry, an instrumented function checks the state; if rewinding, it reads its frame
//!   from the end of the buffer (checking that the frame is its own: a trap otherwise),
//!   restores its locals, takes its fuel local from the fuel global (which the host has
//!   set to the fuel the checkpoint's `refuel` was called with), and jumps to its site:
//!   every block (the body too) that holds a site starts with a `br_table` over the site
//!   number that jumps past the code before the block or site it must reach (but see
//!   "Dispatch down a chain"); an `if` on the way takes the branch that holds it. At the site, the call is made again, with the arguments restored from their
//!   slots, and the callee rewinds in turn, down to the call of `refuel`, which the host
//!   answers by setting the state back to [`NORMAL`] and refuelling as it would have.
//!
//! The fuel is not taken from the frame because a frame is untrusted when a snapshot
//! is resumed: a forged positive fuel in the innermost frame skipped the `refuel` the
//! rewind ends at, and with it every later check of the budget and the deadline (found
//! by review: a resumed job ran past its timeout for good). Taken from the global, the
//! innermost frame's fuel is the host's, negative, so the rewind always ends at a
//! `refuel` where the host checks it; an outer frame's fuel is dead until its call
//! returns the callee's. Rejected: checking the fuel at the rewind's `refuel` only (a
//! positive fuel never gets there); parsing frames in the host (it would have to know
//! every function's layout).
//!
//! Nothing the pass adds counts as an instruction (the fuel pass has run before it and
//! only counts the module's own operators), and unwinding leaves every global, memory
//! and table of the module as it was: the stack metering counter is not lowered by an
//! unwinding return nor raised by a rewinding entry (both skip the stack pass's code),
//! and the fuel the entry's wrapper writes into the fuel global while unwinding is put
//! back by the host. So a run with checkpoints has the same instruction count, stdout,
//! results and trap as one without, on every CPU (the tests compare them).
//!
//! Costs when no checkpoint is taken: a load of the state global and a branch after
//! every site's call and on entry to every instrumented function, a branch on a local at
//! the top of each block that holds a site (outside the plain copies of loops, below)
//! and on entry to each copied loop, and the moves into and out of slots, which
//! Cranelift mostly turns into register renames. The pass is only applied to jobs that
//! take checkpoints.
//!
//! # Loops run plain
//!
//! A dispatch in a loop ran at every iteration, and its branches into the middle of the
//! loop's blocks joined every local at every place a rewind can land, which Cranelift
//! compiles to worse code for the whole loop (folding the dispatch away made CPython's
//! guest time 22 % shorter). But a rewind enters a loop once, and the loop's next
//! iteration need not be entered in the middle. So a loop that holds sites is emitted
//! twice, inside `block $after`: first a *rewinding copy*, a `block` entered only while
//! rewinding into the loop (otherwise a branch to its end), with the dispatch, in
//! which every branch back to the loop goes to the end of that block, where the *plain
//! copy* starts: the loop as a `loop`, without dispatch or tests of rewinding, which runs
//! every iteration but the first after a rewind into the loop (and all of them when the
//! loop is entered normally). The rewinding copy's own end leaves `$after`. The
//! slots, sites and save code are the same in both (an unwind from either saves the same
//! frame), so a rewind into a plain copy's site lands in the rewinding copy and is back
//! in the plain one at the next iteration. Loops inside a rewinding copy get both
//! copies again, loops inside a plain copy only the plain one.
//!
//! Copies cost code: a loop nested in copied loops is emitted once more per level. So a
//! loop is copied only when no loop inside it is more than half its size (CPython's eval
//! loop is three loops that wrap the same code: only the innermost is copied), and only
//! where the function and the module stay within the limits the rewritten module is
//! scanned against ([`rewrite`]). Rejected: a copy of the whole body, plain or
//! rewinding, chosen on entry (built and measured: CPython no faster, its compile 12 to
//! 44 % longer; the calls' cost is not in their dispatch); leaving the rewinding copy at
//! the first site reached (a branch cannot enter the plain copy in the middle either).
//!
//! # Dispatch down a chain
//!
//! An interpreter's loop compiles to a `loop` around a switch: dozens of `block`s, each
//! opened as the first operator of the one around it, the innermost ending in a
//! `br_table`. Every one of them holds a site, so a dispatch per block meant dozens of
//! `local.get; if` per iteration of the loop: CPython ran 3.5 times slower with the
//! pass than without, though no checkpoint was taken (measured with `perf`: one
//! function, the eval loop, was 11 times slower). So a block that opens with a `block`
//! *defers* its dispatch to that child: the child's dispatch also holds the sites of the
//! blocks around it that deferred (every site numbered from the child's end up to
//! theirs), which it reaches by branching to its own end; there the parent's dispatch
//! is made, for the parent's sites after the child. A chain of N nested blocks then
//! costs one check per iteration instead of N. Rejected: one `br_table` at the top of the function over every site (a
//! branch cannot enter a block from outside it, so every block still needs its own);
//! hoisting the checks out of loops (a rewind enters the loop in the middle).
//!
//! # Tail calls
//!
//! A function that tail-calls (`return_call`, `return_call_indirect`) a function that
//! can unwind is gone from the stack when that one unwinds: its caller sees the
//! unwinding and saves a frame whose site calls the function that is gone. On rewind,
//! that function is entered again, finds the next frame is another's (every frame ends
//! with its function's number), and *forwards*: it tail-calls the function the frame is
//! for, through a table the pass adds that holds every instrumented function at its
//! number (ordered by type, so one `return_call_indirect` per type with the same
//! results covers them), with zeros for arguments, which that function's prologue
//! replaces with its saved ones. A chain of tail calls forwards straight to its last
//! function. Rejected: refusing tail calls (175 of 200 generated modules use them);
//! turning them into calls (the stack would grow where the module's does not).
//!
//! # What it does not do yet
//!
//! Modules whose instrumented functions keep references (`funcref`, `externref`) in
//! locals or across a site are refused with the reason: a reference cannot be written
//! to memory. C, C++, Rust and Go compile to none for `wasm32-wasip1` today, and the
//! self-fuzz generator (which leaves reference types out) made none.

use std::collections::HashMap;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType, Encode, Instruction, MemArg, Section, ValType};
use wasmparser::{
    FuncValidatorAllocations, Operator, Parser, Payload, TypeRef, ValidPayload, Validator,
    WasmFeatures,
};

use crate::fuel::{EXPORT_FUEL, IMPORT_MODULE, IMPORT_REFUEL};

/// The version of this pass. A snapshot names it: frames written by one version are read
/// only by the same. Bumped too when the passes before it change the locals a frame holds
/// (`tests/protocol.rs` pins a job's snapshots with it): `-5`, the stack pass's local of
/// the counter on entry ([`crate::stack`]).
pub const PASS_VERSION: &str = "detwasm-unwind-5";
/// The exported `(mut i32)` global that holds the state: [`NORMAL`], [`UNWINDING`] or
/// [`REWINDING`].
pub const EXPORT_STATE: &str = "detwasm:unwind_state";
/// The exported `(mut i32)` global that holds the end of the saved frames in the unwind
/// memory.
pub const EXPORT_PTR: &str = "detwasm:unwind_ptr";
/// The exported memory the frames are saved in (a memory of its own: the module's
/// memories are never touched).
pub const EXPORT_MEMORY: &str = "detwasm:unwind_memory";
/// The exported forwarding table ("Tail calls" above), when the module has one.
pub const EXPORT_TABLE: &str = "detwasm:unwind_table";
/// Every memory of the module is exported as this prefix and its index (`detwasm:memory:0`),
/// and every mutable global as [`EXPORT_GLOBAL_PREFIX`] and its index, so that the host
/// can save and restore the state a snapshot holds (wasmtime reaches an instance's
/// memories and globals only through exports). The unwind memory and the pass's two
/// globals are not among them. Rejected: reading them through wasmtime's internal
/// instance layout (unsupported, and it changes between versions).
pub const EXPORT_MEMORY_PREFIX: &str = "detwasm:memory:";
/// See [`EXPORT_MEMORY_PREFIX`].
pub const EXPORT_GLOBAL_PREFIX: &str = "detwasm:global:";
/// Running normally.
pub const NORMAL: i32 = 0;
/// Every instrumented function returns, saving its frame, up to the host.
pub const UNWINDING: i32 = 1;
/// Every instrumented function entered restores its frame and goes back to its site.
pub const REWINDING: i32 = 2;
/// The most the unwind memory may grow to, in 64 KiB pages (1 GiB). The frames on a
/// stack are bounded by the stack metering ([`crate::stack::STACK_LIMIT`] units, each
/// value of a frame at least one unit) well below it; past it, the save code traps.
pub const MAX_PAGES: u64 = 1 << 14;

/// A frame: the function's saved locals in the order of their indices (each at its
/// natural size, unaligned), then the site number (`u32`), then the function's index
/// among the module's defined functions (`u32`), the last four bytes, so that whoever
/// reads the buffer from its end knows whose frame comes next.
const TRAILER: u32 = 8;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn features() -> WasmFeatures {
    WasmFeatures::all()
        - WasmFeatures::EXCEPTIONS
        - WasmFeatures::LEGACY_EXCEPTIONS
        - WasmFeatures::GC
        - WasmFeatures::FUNCTION_REFERENCES
        - WasmFeatures::STACK_SWITCHING
}

/// The module, rewritten to unwind and rewind (see the module docs), or why not. `binary`
/// is a module after the fuel, NaN and stack passes. A module without the fuel pass's
/// import (it defines no function) is returned as it is.
pub fn instrument(binary: &[u8]) -> Result<Vec<u8>, Error> {
    instrument_within(binary, &crate::shape::UNWIND_LIMITS)
}

/// [`instrument`], with the plain copies of loops within `limits` ([`rewrite`]).
fn instrument_within(binary: &[u8], limits: &crate::shape::Limits) -> Result<Vec<u8>, Error> {
    let m = analyse(binary).map_err(Error::Cannot)?;
    if m.refuel.is_none() {
        return Ok(binary.to_vec());
    }
    let plans = plan(binary, &m).map_err(Error::Cannot)?;
    rewrite(binary, &m, &plans, limits).map_err(|e| match e.strip_prefix(TOO_LARGE) {
        Some(why) => Error::TooLarge(why.to_string()),
        None => Error::Cannot(e),
    })
}

/// Why [`instrument`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The module cannot take checkpoints (a construct the pass does not handle).
    Cannot(String),
    /// The rewritten module would be larger than a module that takes checkpoints may
    /// be ([`crate::shape::UNWIND_LIMITS`]): stopped as soon as it grew past it.
    TooLarge(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Cannot(why) | Error::TooLarge(why) => f.write_str(why),
        }
    }
}

/// Marks the pass's own growth errors on their way out of the rewrite.
const TOO_LARGE: &str = "too large: ";

/// What the pass knows of the module.
#[derive(Default)]
struct Module {
    types: Vec<(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>)>,
    /// Type of every function, imports first.
    funcs: Vec<u32>,
    imported: u32,
    refuel: Option<u32>,
    memories: u32,
    globals: u32,
    /// The mutable globals' indices, imports first.
    mutable_globals: Vec<u32>,
    has_memory_section: bool,
    has_global_section: bool,
    has_export_section: bool,
    /// The fuel pass's global (exported as [`EXPORT_FUEL`]): on rewind, every frame takes
    /// its fuel from it (see "Rewind" above).
    fuel_global: Option<u32>,
    /// Whether each defined function is instrumented.
    instrumented: Vec<bool>,
    /// Whether a call through a table can reach an instrumented function.
    indirect_unwinds: bool,
    /// Each instrumented function's number in frames (`None`: not instrumented): its
    /// place in the forwarding table, where instrumented functions are ordered by type.
    ids: Vec<Option<u32>>,
    /// The instrumented functions (function indices) in the order of their ids.
    by_id: Vec<u32>,
    /// Whether each defined function tail-calls a function that can unwind, and so must
    /// forward a rewind to the function whose frame comes next ("Tail calls" above).
    forwards: Vec<bool>,
    tables: u32,
    has_table_section: bool,
    has_element_section: bool,
}

impl Module {
    fn can_unwind(&self, f: u32) -> bool {
        if Some(f) == self.refuel {
            return true;
        }
        f >= self.imported && self.instrumented[(f - self.imported) as usize]
    }
    fn func_type(&self, f: u32) -> &(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>) {
        &self.types[self.funcs[f as usize] as usize]
    }
}

fn analyse(binary: &[u8]) -> Result<Module, String> {
    Validator::new_with_features(features())
        .validate_all(binary)
        .map_err(err)?;
    let mut m = Module::default();
    let mut taken: Vec<u32> = Vec::new();
    struct Calls {
        direct: Vec<u32>,
        indirect: bool,
        tail_direct: Vec<u32>,
        tail_indirect: bool,
    }
    let mut bodies: Vec<Calls> = Vec::new();
    for payload in Parser::new(0).parse_all(binary) {
        match payload.map_err(err)? {
            Payload::TypeSection(r) => {
                for group in r {
                    for sub in group.map_err(err)?.into_types() {
                        match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                m.types.push((f.params().to_vec(), f.results().to_vec()))
                            }
                            _ => return Err("a type that is not a function type".into()),
                        }
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    let import = import.map_err(err)?;
                    match import.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                            if import.module == IMPORT_MODULE && import.name == IMPORT_REFUEL {
                                m.refuel = Some(m.funcs.len() as u32);
                            }
                            m.funcs.push(t);
                            m.imported += 1;
                        }
                        TypeRef::Global(g) => {
                            if g.mutable {
                                m.mutable_globals.push(m.globals);
                            }
                            m.globals += 1
                        }
                        TypeRef::Memory(_) => m.memories += 1,
                        TypeRef::Table(_) => m.tables += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    m.funcs.push(t.map_err(err)?);
                }
            }
            Payload::MemorySection(r) => {
                m.has_memory_section = true;
                m.memories += r.count();
            }
            Payload::TableSection(r) => {
                m.has_table_section = true;
                for t in r {
                    m.tables += 1;
                    if let wasmparser::TableInit::Expr(e) = t.map_err(err)?.init {
                        crate::ref_funcs_in_expr(&e, &mut taken).map_err(err)?;
                    }
                }
            }
            Payload::GlobalSection(r) => {
                m.has_global_section = true;
                for g in r {
                    let g = g.map_err(err)?;
                    if g.ty.mutable {
                        m.mutable_globals.push(m.globals);
                    }
                    m.globals += 1;
                    crate::ref_funcs_in_expr(&g.init_expr, &mut taken).map_err(err)?;
                }
            }
            Payload::ExportSection(r) => {
                m.has_export_section = true;
                for e in r {
                    let e = e.map_err(err)?;
                    if e.name == EXPORT_FUEL && e.kind == wasmparser::ExternalKind::Global {
                        m.fuel_global = Some(e.index);
                    }
                    if [EXPORT_STATE, EXPORT_PTR, EXPORT_MEMORY, EXPORT_TABLE].contains(&e.name)
                        || e.name.starts_with(EXPORT_MEMORY_PREFIX)
                        || e.name.starts_with(EXPORT_GLOBAL_PREFIX)
                    {
                        return Err(format!(
                            "the module exports `{}`, a name detwasm reserves",
                            e.name
                        ));
                    }
                }
            }
            Payload::ElementSection(r) => {
                m.has_element_section = true;
                crate::ref_funcs_in_elements(r, &mut taken).map_err(err)?;
            }
            Payload::CodeSectionEntry(body) => {
                let mut c = Calls {
                    direct: Vec::new(),
                    indirect: false,
                    tail_direct: Vec::new(),
                    tail_indirect: false,
                };
                let mut r = body.get_operators_reader().map_err(err)?;
                while !r.eof() {
                    match r.read().map_err(err)? {
                        Operator::Call { function_index } => c.direct.push(function_index),
                        Operator::CallIndirect { .. } => c.indirect = true,
                        Operator::ReturnCall { function_index } => {
                            c.tail_direct.push(function_index)
                        }
                        Operator::ReturnCallIndirect { .. } => c.tail_indirect = true,
                        Operator::RefFunc { function_index } => taken.push(function_index),
                        _ => {}
                    }
                }
                bodies.push(c);
            }
            _ => {}
        }
    }
    let Some(refuel) = m.refuel else {
        return Ok(m);
    };
    // Which functions can reach a call of `refuel`: a worklist over the callers of each
    // function (every function is added once, so this is linear in the calls).
    let n = bodies.len();
    let imported = m.imported;
    let mut callers: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut indirect_callers = Vec::new();
    let mut work = Vec::new();
    m.instrumented = vec![false; n];
    for (i, c) in bodies.iter().enumerate() {
        // A tail call hands the frame over: the caller of the function that tail-calls
        // one that can unwind sees the unwinding, as if it had called that one itself.
        for &f in c.direct.iter().chain(&c.tail_direct) {
            if f == refuel {
                if !m.instrumented[i] {
                    m.instrumented[i] = true;
                    work.push(i as u32);
                }
            } else if f >= imported {
                callers[(f - imported) as usize].push(i as u32);
            }
        }
        if c.indirect || c.tail_indirect {
            indirect_callers.push(i as u32);
        }
    }
    let mut is_taken = vec![false; n];
    for f in taken {
        if f >= imported {
            is_taken[(f - imported) as usize] = true;
        }
    }
    while let Some(f) = work.pop() {
        let mut reached = std::mem::take(&mut callers[f as usize]);
        if is_taken[f as usize] && !m.indirect_unwinds {
            m.indirect_unwinds = true;
            reached.extend(indirect_callers.iter().copied());
        }
        for c in reached {
            if !m.instrumented[c as usize] {
                m.instrumented[c as usize] = true;
                work.push(c);
            }
        }
    }
    m.forwards = bodies
        .iter()
        .enumerate()
        .map(|(i, c)| {
            m.instrumented[i]
                && (c.tail_direct.iter().any(|&f| m.can_unwind(f))
                    || (c.tail_indirect && m.indirect_unwinds))
        })
        .collect();
    let mut by_id: Vec<u32> = (0..n as u32)
        .filter(|&i| m.instrumented[i as usize])
        .map(|i| i + imported)
        .collect();
    by_id.sort_by_key(|&f| (m.funcs[f as usize], f));
    m.ids = vec![None; n];
    for (id, &f) in by_id.iter().enumerate() {
        m.ids[(f - imported) as usize] = Some(id as u32);
    }
    m.by_id = by_id;
    Ok(m)
}

/// A place a rewinding function must reach, in the order of the code: a site, or a block
/// that holds sites.
#[derive(Clone, Copy, Debug)]
enum Target {
    Site(u32),
    /// The block's number (in the order blocks open) and its sites.
    Block(u32, u32, u32),
}

impl Target {
    fn range(&self) -> (u32, u32) {
        match *self {
            Target::Site(k) => (k, k + 1),
            Target::Block(_, lo, hi) => (lo, hi),
        }
    }
}

/// A block of an instrumented function (the body is block 0), as the plan sees it.
#[derive(Default, Debug)]
struct Block {
    /// Targets of the `then` part (of the whole block, if it is not an `if`).
    then: Vec<Target>,
    /// Targets of the `else` part.
    otherwise: Vec<Target>,
    /// The first site of the `else` part.
    mid: u32,
    has_else: bool,
    /// Its kind: a `block` (not a `loop`, an `if` or the body).
    is_block: bool,
    is_if: bool,
    /// The block opened as the very first operator of this one, if any.
    first_child: Option<u32>,
    /// The number of the first site after it.
    hi: u32,
    /// Its dispatch is left to its first child ("Dispatch down a chain" in the module
    /// docs).
    defers: bool,
    /// It holds the dispatch of the blocks around it that deferred theirs: sites from
    /// its `hi` up to this one belong to them, and are reached by leaving it.
    exit_hi: Option<u32>,
    /// Where it opens, in operators of the body.
    start: usize,
    /// The most operators of a loop inside it.
    inner_loop: usize,
    /// A loop that holds sites and gets a plain copy ("Loops run plain").
    copy: bool,
}

impl Block {
    fn hot(&self) -> bool {
        !self.then.is_empty() || !self.otherwise.is_empty()
    }
}

/// Decides which blocks defer their dispatch to their first child, top down (parents are
/// numbered before their children): a block that needs a dispatch (it holds sites, or
/// received its parent's), is not an `if`, and opens with a `block`.
fn plan_deferrals(blocks: &mut [Block]) {
    for b in 0..blocks.len() {
        let needs = blocks[b].hot() || blocks[b].exit_hi.is_some();
        let Some(c) = blocks[b].first_child else {
            continue;
        };
        let c = c as usize;
        if !needs || blocks[b].is_if || !blocks[c].is_block {
            continue;
        }
        blocks[b].defers = true;
        let above = blocks[b].hi.max(blocks[b].exit_hi.unwrap_or(0));
        if above > blocks[c].hi {
            blocks[c].exit_hi = Some(above);
        }
    }
}

/// The plan of an instrumented function: its blocks (those opened in reachable code, in
/// order) and its number of sites.
struct Plan {
    blocks: Vec<Block>,
    sites: u32,
}

/// Whether `op` is a site: a call, in reachable code, that can unwind.
fn is_site(m: &Module, op: &Operator) -> bool {
    match op {
        Operator::Call { function_index } => m.can_unwind(*function_index),
        Operator::CallIndirect { .. } => m.indirect_unwinds,
        _ => false,
    }
}

/// A body's operators, with their offsets and byte ranges, for looking ahead.
type Ops<'a> = Vec<(Operator<'a>, usize, std::ops::Range<usize>)>;

fn read_ops<'a>(body: &wasmparser::FunctionBody<'a>) -> Result<Ops<'a>, String> {
    let mut ops = body.get_operators_reader().map_err(err)?;
    let mut all = Vec::new();
    while !ops.eof() {
        let start = ops.original_position();
        let (op, offset) = ops.read_with_offset().map_err(err)?;
        all.push((op, offset, start..ops.original_position()));
    }
    Ok(all)
}

/// Whether the operators at `i` are the fuel pass's check, `local.get F; i64.const 0;
/// i64.lt_s; if; local.get F; call refuel; local.set F; end`. The check is one site
/// as a whole: rewinding jumps to before it, and since the fuel `F` is restored as it
/// was when `refuel` was called (negative), the `if` is taken again and `refuel` called
/// again. Rejected: treating the `if` as a block with a site inside (a dispatch in
/// every check: CPython's code grew 2.7 times, its compile work 15 times).
const FUEL_CHECK_LEN: usize = 8;
fn is_fuel_check(m: &Module, ops: &Ops, i: usize) -> bool {
    let Some(w) = ops.get(i..i + FUEL_CHECK_LEN) else {
        return false;
    };
    let Operator::LocalGet { local_index: f } = w[0].0 else {
        return false;
    };
    matches!(w[1].0, Operator::I64Const { value: 0 })
        && matches!(w[2].0, Operator::I64LtS)
        && matches!(
            w[3].0,
            Operator::If {
                blockty: wasmparser::BlockType::Empty
            }
        )
        && matches!(w[4].0, Operator::LocalGet { local_index } if local_index == f)
        && matches!(w[5].0, Operator::Call { function_index } if Some(function_index) == m.refuel)
        && matches!(w[6].0, Operator::LocalSet { local_index } if local_index == f)
        && matches!(w[7].0, Operator::End)
}

fn opens(op: &Operator) -> bool {
    matches!(
        op,
        Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. }
    )
}

/// Runs `each` on every operator of every defined function, with a validator that has
/// not yet seen the operator (so it answers questions about the stack before it).
fn walk<F>(binary: &[u8], mut each: F) -> Result<(), String>
where
    F: FnMut(
        u32,
        &wasmparser::FunctionBody,
        &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    ) -> Result<(), String>,
{
    let mut validator = Validator::new_with_features(features());
    let mut allocs = FuncValidatorAllocations::default();
    let mut index = 0u32;
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        if let ValidPayload::Func(to_validate, body) = validator.payload(&payload).map_err(err)? {
            let mut v = to_validate.into_validator(std::mem::take(&mut allocs));
            let mut locals = body.get_locals_reader().map_err(err)?;
            for _ in 0..locals.get_count() {
                let offset = locals.original_position();
                let (count, t) = locals.read().map_err(err)?;
                v.define_locals(offset, count, t).map_err(err)?;
            }
            each(index, &body, &mut v)?;
            allocs = v.into_allocations();
            index += 1;
        }
    }
    Ok(())
}

fn plan(binary: &[u8], m: &Module) -> Result<Vec<Option<Plan>>, String> {
    let mut plans = Vec::new();
    walk(binary, |i, body, v| {
        if !m.instrumented[i as usize] {
            plans.push(None);
            return Ok(());
        }
        let mut p = Plan {
            blocks: vec![Block::default()],
            sites: 0,
        };
        // Open blocks (indices into `p.blocks`), and whether each is in its `else` part.
        let mut open: Vec<(u32, bool)> = vec![(0, false)];
        // The block just opened, while no operator of it has been seen yet.
        let mut fresh: Option<u32> = Some(0);
        let mut dead = 0u32;
        let ops = read_ops(body)?;
        let mut at = 0;
        while at < ops.len() {
            let (op, offset) = (ops[at].0.clone(), ops[at].1);
            at += 1;
            let unreachable = v.get_control_frame(0).is_some_and(|f| f.unreachable);
            let opened = fresh.take();
            if dead == 0 && !unreachable && is_fuel_check(m, &ops, at - 1) {
                let (b, in_else) = *open.last().expect("a block");
                let b = &mut p.blocks[b as usize];
                let list = if in_else {
                    &mut b.otherwise
                } else {
                    &mut b.then
                };
                list.push(Target::Site(p.sites));
                p.sites += 1;
                for (op, offset, _) in &ops[at - 1..at - 1 + FUEL_CHECK_LEN] {
                    v.op(*offset, op).map_err(err)?;
                }
                at += FUEL_CHECK_LEN - 1;
                continue;
            }
            if dead > 0 {
                if opens(&op) {
                    dead += 1;
                } else if matches!(op, Operator::End) {
                    dead -= 1;
                }
            } else if unreachable && opens(&op) {
                dead = 1;
            } else if opens(&op) {
                let id = p.blocks.len() as u32;
                if let Some(parent) = opened {
                    p.blocks[parent as usize].first_child = Some(id);
                }
                fresh = Some(id);
                p.blocks.push(Block {
                    mid: p.sites,
                    is_block: matches!(op, Operator::Block { .. }),
                    is_if: matches!(op, Operator::If { .. }),
                    start: at - 1,
                    ..Block::default()
                });
                let (parent, in_else) = *open.last().expect("a block");
                let lo = p.sites;
                let b = &mut p.blocks[parent as usize];
                let list = if in_else {
                    &mut b.otherwise
                } else {
                    &mut b.then
                };
                list.push(Target::Block(id, lo, lo));
                open.push((id, false));
            } else if matches!(op, Operator::Else) {
                let top = open.last_mut().expect("a block");
                top.1 = true;
                let b = &mut p.blocks[top.0 as usize];
                b.has_else = true;
                b.mid = p.sites;
            } else if matches!(op, Operator::End) {
                let (id, _) = open.pop().expect("a block");
                let b = &mut p.blocks[id as usize];
                if !b.has_else {
                    b.mid = p.sites;
                }
                b.hi = p.sites;
                let hot = b.hot();
                let size = at - b.start;
                let is_loop = !b.is_block && !b.is_if && id != 0;
                b.copy = is_loop && hot && 2 * b.inner_loop <= size;
                let inner = if is_loop { size } else { b.inner_loop };
                if let Some(&(parent, in_else)) = open.last() {
                    let b = &mut p.blocks[parent as usize];
                    b.inner_loop = b.inner_loop.max(inner);
                    let list = if in_else {
                        &mut b.otherwise
                    } else {
                        &mut b.then
                    };
                    match list.last_mut() {
                        Some(Target::Block(c, _, hi)) if *c == id && hot => *hi = p.sites,
                        Some(Target::Block(c, _, _)) if *c == id => {
                            list.pop();
                        }
                        _ => return Err("the plan lost a block".into()),
                    }
                }
            } else if !unreachable && is_site(m, &op) {
                let (b, in_else) = *open.last().expect("a block");
                let b = &mut p.blocks[b as usize];
                let list = if in_else {
                    &mut b.otherwise
                } else {
                    &mut b.then
                };
                list.push(Target::Site(p.sites));
                p.sites += 1;
            }
            v.op(offset, &op).map_err(err)?;
        }
        plan_deferrals(&mut p.blocks);
        plans.push(Some(p));
        Ok(())
    })?;
    Ok(plans)
}

fn vt(t: wasmparser::ValType) -> Result<ValType, String> {
    RoundtripReencoder.val_type(t).map_err(err)
}

fn bytes_of(t: wasmparser::ValType) -> Result<u32, String> {
    Ok(match t {
        wasmparser::ValType::I32 | wasmparser::ValType::F32 => 4,
        wasmparser::ValType::I64 | wasmparser::ValType::F64 => 8,
        wasmparser::ValType::V128 => 16,
        wasmparser::ValType::Ref(_) => {
            return Err(
                "a reference kept in a local or across a call that can reach a \
                 checkpoint: checkpoints do not support it yet"
                    .into(),
            );
        }
    })
}

fn zero(t: wasmparser::ValType) -> Result<Instruction<'static>, String> {
    Ok(match t {
        wasmparser::ValType::I32 => Instruction::I32Const(0),
        wasmparser::ValType::I64 => Instruction::I64Const(0),
        wasmparser::ValType::F32 => Instruction::F32Const(0.0.into()),
        wasmparser::ValType::F64 => Instruction::F64Const(0.0.into()),
        wasmparser::ValType::V128 => Instruction::V128Const(0),
        wasmparser::ValType::Ref(r) => {
            Instruction::RefNull(RoundtripReencoder.heap_type(r.heap_type()).map_err(err)?)
        }
    })
}

fn memarg(offset: u32, memory: u32) -> MemArg {
    MemArg {
        offset: u64::from(offset),
        align: 0,
        memory_index: memory,
    }
}

fn store(t: wasmparser::ValType, a: MemArg) -> Instruction<'static> {
    match t {
        wasmparser::ValType::I32 => Instruction::I32Store(a),
        wasmparser::ValType::I64 => Instruction::I64Store(a),
        wasmparser::ValType::F32 => Instruction::F32Store(a),
        wasmparser::ValType::F64 => Instruction::F64Store(a),
        _ => Instruction::V128Store(a),
    }
}

fn load(t: wasmparser::ValType, a: MemArg) -> Instruction<'static> {
    match t {
        wasmparser::ValType::I32 => Instruction::I32Load(a),
        wasmparser::ValType::I64 => Instruction::I64Load(a),
        wasmparser::ValType::F32 => Instruction::F32Load(a),
        wasmparser::ValType::F64 => Instruction::F64Load(a),
        _ => Instruction::V128Load(a),
    }
}

/// The most locals a function may have (wasmparser's limit).
const MAX_LOCALS: usize = 50_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Func,
    Block,
    Loop,
    If,
}

/// An open block of the original code, while its function is rewritten.
#[derive(Clone)]
struct Frame {
    kind: Kind,
    /// Its number in the plan (`None`: a block that holds no site and is not planned,
    /// e.g. in a function that is not instrumented; never here).
    id: u32,
    /// The operand stack's height below its parameters.
    base: u32,
    params: Vec<wasmparser::ValType>,
    results: Vec<wasmparser::ValType>,
    /// Where its label sits in the emitted label stack.
    label: usize,
    /// Values of the enclosing block moved into slots when it was entered (positions and
    /// types), moved back after its end.
    spilled: Vec<(u32, wasmparser::ValType)>,
    /// Locals holding an `if`'s parameters, for its `else` part.
    if_params: Vec<u32>,
    /// Targets of the part being emitted that are still ahead (their dispatch blocks
    /// are open).
    ahead: std::collections::VecDeque<Target>,
    /// A loop's rewinding copy: a `block` whose back edges go to the plain copy, which a
    /// stream of its own is emitting ("Loops run plain" in the module docs).
    copy: bool,
    /// The loop a plain stream was started for: its end is the stream's end.
    root: bool,
}

impl Frame {
    /// The frame as a plain copy of a loop inside it sees it: what branches to it need.
    fn outer(&self) -> Frame {
        Frame {
            params: self.params.clone(),
            results: self.results.clone(),
            ..Frame::new(self.kind, self.id, self.base, self.label)
        }
    }

    fn new(kind: Kind, id: u32, base: u32, label: usize) -> Frame {
        Frame {
            kind,
            id,
            base,
            params: vec![],
            results: vec![],
            label,
            spilled: vec![],
            if_params: vec![],
            ahead: Default::default(),
            copy: false,
            root: false,
        }
    }
}

/// One copy of the code being emitted, while it is not the emitter's own: the code,
/// labels and blocks the emitter swaps in to emit an operator into it.
struct Stream {
    out: Vec<u8>,
    labels: Vec<Option<usize>>,
    frames: Vec<Frame>,
    plain: bool,
}

/// Whether a body is emitted with the plain copies of its loops, and the most bytes it
/// may grow to ([`check_growth`]).
#[derive(Clone, Copy)]
struct Copies {
    on: bool,
    grow_to: u64,
}

/// What emitting an operator into a stream asks of the driver.
enum Step {
    Go,
    /// A rewinding copy of a loop was opened: here is the stream of its plain copy.
    Fork(Stream),
    /// The plain stream's loop has ended: its code goes into the stream it came from.
    Done,
}

struct Emitter {
    /// Whether loops get plain copies (see [`rewrite`]).
    copies: bool,
    /// Whether the code being emitted is a plain copy: no dispatch (it is never entered
    /// in the middle), no test of `rw`.
    plain: bool,
    /// The code of the plain copy of the loop whose end is being emitted.
    merge: Vec<u8>,
    out: Vec<u8>,
    /// Emitted labels: `Some(i)` for the block `frames[i]`, `None` for one the pass added.
    labels: Vec<Option<usize>>,
    frames: Vec<Frame>,
    /// Every local's type: the function's, then the pass's.
    locals: Vec<wasmparser::ValType>,
    slots: HashMap<(u32, wasmparser::ValType), u32>,
    /// The locals of each `if`'s parameters (by block number), in the order they are set.
    if_locals: HashMap<u32, Vec<u32>>,
    rw: u32,
    site: u32,
    base: u32,
    state: u32,
}

impl Emitter {
    fn i(&mut self, ins: Instruction) {
        ins.encode(&mut self.out);
    }

    /// Makes `s` the stream being emitted (and the one that was, `s`).
    fn swap(&mut self, s: &mut Stream) {
        std::mem::swap(&mut self.out, &mut s.out);
        std::mem::swap(&mut self.labels, &mut s.labels);
        std::mem::swap(&mut self.frames, &mut s.frames);
        std::mem::swap(&mut self.plain, &mut s.plain);
    }

    fn new_local(&mut self, t: wasmparser::ValType) -> Result<u32, String> {
        if self.locals.len() >= MAX_LOCALS {
            return Err("checkpoints need more locals than a function may have".into());
        }
        self.locals.push(t);
        Ok(self.locals.len() as u32 - 1)
    }

    fn slot(&mut self, p: u32, t: wasmparser::ValType) -> Result<u32, String> {
        if let Some(&l) = self.slots.get(&(p, t)) {
            return Ok(l);
        }
        bytes_of(t)?;
        let l = self.new_local(t)?;
        self.slots.insert((p, t), l);
        Ok(l)
    }

    fn push_label(&mut self, l: Option<usize>) {
        self.labels.push(l);
    }

    /// The emitted depth of the label `depth` original blocks out.
    fn depth(&self, depth: u32) -> Result<u32, String> {
        let f = self
            .frames
            .len()
            .checked_sub(1 + depth as usize)
            .ok_or("a branch out of range")?;
        Ok((self.labels.len() - 1 - self.frames[f].label) as u32)
    }

    /// The label's values (a loop's parameters, another block's results) and where they
    /// go on the stack.
    fn label_of(&self, depth: u32) -> (u32, Vec<wasmparser::ValType>) {
        let f = &self.frames[self.frames.len() - 1 - depth as usize];
        match f.kind {
            Kind::Loop => (f.base, f.params.clone()),
            _ => (f.base, f.results.clone()),
        }
    }

    /// Pops the values at positions `from..to` (the top of the stack) into their slots.
    fn pop_to_slots(&mut self, types: &[(u32, wasmparser::ValType)]) -> Result<(), String> {
        for &(p, t) in types.iter().rev() {
            let l = self.slot(p, t)?;
            self.i(Instruction::LocalSet(l));
        }
        Ok(())
    }

    fn push_from_slots(&mut self, types: &[(u32, wasmparser::ValType)]) -> Result<(), String> {
        for &(p, t) in types {
            let l = self.slot(p, t)?;
            self.i(Instruction::LocalGet(l));
        }
        Ok(())
    }

    /// Opens the dispatch blocks of a part whose targets are `targets`, and, while
    /// rewinding, jumps to the one that holds the site. With `exit` `(from, label)`, a
    /// site numbered `from` or more belongs to the blocks around that deferred their
    /// dispatch here, and is reached by branching to the end of the block whose label is
    /// `label` (an index into the emitted labels).
    fn dispatch(&mut self, targets: &[Target], exit: Option<(u32, usize)>) -> Result<(), String> {
        if self.plain {
            return Ok(());
        }
        let leave = |e: &mut Emitter, from: u32, label: usize| {
            e.i(Instruction::LocalGet(e.site));
            e.i(Instruction::I32Const(from as i32));
            e.i(Instruction::I32GeU);
            e.i(Instruction::BrIf((e.labels.len() - 1 - label) as u32));
        };
        let Some(first) = targets.first() else {
            if let Some((from, label)) = exit {
                // Rewinding, every site is past this block (or forged: a trap).
                self.i(Instruction::LocalGet(self.rw));
                self.i(Instruction::If(BlockType::Empty));
                self.push_label(None);
                leave(self, from, label);
                self.i(Instruction::Unreachable);
                self.i(Instruction::End);
                self.labels.pop();
            }
            let f = self.frames.last_mut().expect("a frame");
            f.ahead = Default::default();
            return Ok(());
        };
        let lo = first.range().0;
        let hi = targets.last().expect("a target").range().1;
        // T_r outermost .. T_1 innermost: the end of T_j is right before target j.
        let t_base = self.labels.len();
        for _ in targets {
            self.i(Instruction::Block(BlockType::Empty));
            self.push_label(None);
        }
        let t_label = |j: usize| t_base + targets.len() - 1 - j;
        self.i(Instruction::LocalGet(self.rw));
        self.i(Instruction::If(BlockType::Empty));
        self.push_label(None);
        if let Some((from, label)) = exit {
            leave(self, from, label);
        }
        self.i(Instruction::Block(BlockType::Empty)); // trap
        self.push_label(None);
        let trap = self.labels.len() - 1;
        // Targets that are sites go through one trampoline: this frame has reached its
        // site and runs normally from there (`rw` off), then the same table again.
        let any_site = targets.iter().any(|t| matches!(t, Target::Site(_)));
        if any_site {
            self.i(Instruction::Block(BlockType::Empty));
            self.push_label(None);
        }
        let a_label = self.labels.len() - 1;
        let table = |e: &Emitter, via_a: bool| -> Vec<u32> {
            let top = e.labels.len() - 1;
            let mut table = Vec::with_capacity((hi - lo) as usize);
            for (j, t) in targets.iter().enumerate() {
                let (a, b) = t.range();
                let to = match t {
                    Target::Site(_) if via_a => a_label,
                    _ => t_label(j),
                };
                for _ in a..b {
                    table.push((top - to) as u32);
                }
            }
            table
        };
        let first = table(self, any_site);
        let top = self.labels.len() - 1;
        self.i(Instruction::LocalGet(self.site));
        self.i(Instruction::I32Const(lo as i32));
        self.i(Instruction::I32Sub);
        self.i(Instruction::BrTable(first.into(), (top - trap) as u32));
        if any_site {
            self.i(Instruction::End);
            self.labels.pop();
            self.i(Instruction::I32Const(0));
            self.i(Instruction::LocalSet(self.rw));
            let second = table(self, false);
            let top = self.labels.len() - 1;
            self.i(Instruction::LocalGet(self.site));
            self.i(Instruction::I32Const(lo as i32));
            self.i(Instruction::I32Sub);
            self.i(Instruction::BrTable(second.into(), (top - trap) as u32));
        }
        self.i(Instruction::End); // trap
        self.labels.pop();
        self.i(Instruction::Unreachable);
        self.i(Instruction::End); // if
        self.labels.pop();
        let f = self.frames.last_mut().expect("a frame");
        f.ahead = targets.iter().copied().collect();
        Ok(())
    }

    /// Closes the dispatch block of the next target (the stack is empty here), which must
    /// be the site `Ok(k)` or the block `Err(id)`. A plain copy has none.
    fn reach(&mut self, want: Result<u32, u32>) -> Result<(), String> {
        if self.plain {
            return Ok(());
        }
        let f = self.frames.last_mut().expect("a frame");
        let t = f
            .ahead
            .pop_front()
            .ok_or("a target the plan does not have")?;
        self.i(Instruction::End);
        if self.labels.pop() != Some(None) {
            return Err("a dispatch block out of place".into());
        }
        match (t, want) {
            (Target::Site(s), Ok(k)) if s == k => Ok(()),
            (Target::Block(b, _, _), Err(id)) if b == id => Ok(()),
            _ => Err("the plan and the code disagree".into()),
        }
    }
}

/// The positions and types of the values at the top of the validator's stack, from
/// height `from` up.
fn stack_types<R: wasmparser::WasmModuleResources>(
    v: &wasmparser::FuncValidator<R>,
    from: u32,
) -> Result<Vec<(u32, wasmparser::ValType)>, String> {
    let h = v.operand_stack_height();
    (from..h)
        .map(|p| match v.get_operand_type((h - 1 - p) as usize) {
            Some(Some(t)) => Ok((p, t)),
            _ => Err("a value of unknown type in reachable code".to_string()),
        })
        .collect()
}

fn block_sig(
    m: &Module,
    bt: wasmparser::BlockType,
) -> (Vec<wasmparser::ValType>, Vec<wasmparser::ValType>) {
    match bt {
        wasmparser::BlockType::Empty => (vec![], vec![]),
        wasmparser::BlockType::Type(t) => (vec![], vec![t]),
        wasmparser::BlockType::FuncType(i) => m.types[i as usize].clone(),
    }
}

fn with_pos(base: u32, ts: &[wasmparser::ValType]) -> Vec<(u32, wasmparser::ValType)> {
    ts.iter()
        .enumerate()
        .map(|(i, &t)| (base + i as u32, t))
        .collect()
}

/// Rewrites one instrumented function's body (locals and code).
fn rewrite_body<R: wasmparser::WasmModuleResources>(
    m: &Module,
    binary: &[u8],
    (index, body): (u32, &wasmparser::FunctionBody),
    v: &mut wasmparser::FuncValidator<R>,
    p: &Plan,
    (state, ptr, memory): (u32, u32, u32),
    copies: Copies,
) -> Result<(Vec<u8>, Cost), String> {
    let func = index + m.imported;
    let id = m.ids[index as usize].ok_or("an instrumented function without an id")?;
    let forward_table = m.forwards[index as usize].then_some(m.tables);
    let (params, results) = m.func_type(func).clone();
    let mut locals: Vec<wasmparser::ValType> = params.clone();
    let mut lr = body.get_locals_reader().map_err(err)?;
    for _ in 0..lr.get_count() {
        let (n, t) = lr.read().map_err(err)?;
        for _ in 0..n {
            locals.push(t);
        }
    }
    let mut e = Emitter {
        copies: copies.on,
        plain: false,
        merge: Vec::new(),
        out: Vec::new(),
        labels: Vec::new(),
        frames: Vec::new(),
        locals,
        slots: HashMap::new(),
        if_locals: HashMap::new(),
        rw: 0,
        site: 0,
        base: 0,
        state,
    };
    e.rw = e.new_local(wasmparser::ValType::I32)?;
    e.site = e.new_local(wasmparser::ValType::I32)?;
    e.base = e.new_local(wasmparser::ValType::I32)?;

    // `block $save` (carrying the site) then `block $body`: a branch to $save is an
    // unwind.
    e.i(Instruction::Block(BlockType::Result(ValType::I32)));
    e.push_label(None);
    e.i(Instruction::Block(BlockType::Empty));
    let mut whole = Frame::new(Kind::Func, 0, 0, e.labels.len());
    whole.results = results.clone();
    e.frames.push(whole);
    e.push_label(Some(0));
    if !p.blocks[0].defers {
        e.dispatch(&p.blocks[0].then, None)?;
    }

    let ops = read_ops(body)?;
    // The locals the fuel checks test (the fuel pass's parameter: one per function).
    let mut fuel_locals: Vec<u32> = (0..ops.len())
        .filter(|&i| is_fuel_check(m, &ops, i))
        .filter_map(|i| match ops[i].0 {
            Operator::LocalGet { local_index } => Some(local_index),
            _ => None,
        })
        .collect();
    fuel_locals.sort_unstable();
    fuel_locals.dedup();
    // The copies being emitted: the function's own code first, then the plain copy of
    // every loop whose rewinding copy is open, innermost last ("Loops run plain" in the
    // module docs). Each operator is emitted into each of them, innermost first, so that
    // a plain copy is complete when its loop's end is emitted in the stream it came from.
    let mut streams = vec![Stream {
        out: std::mem::take(&mut e.out),
        labels: std::mem::take(&mut e.labels),
        frames: std::mem::take(&mut e.frames),
        plain: false,
    }];
    let mut next_block = 1u32;
    let mut next_site = 0u32;
    let mut dead = 0u32;
    let mut at = 0;
    while at < ops.len() {
        // Refused as soon as the body outgrows what the module's scan would refuse
        // after the pass (`shape::UNWIND_LIMITS`), or, emitted with copies, what the
        // module's code budget has left for it ([`rewrite`]): each site saves every value below
        // its call, so a small module of many values left across many calls grows as
        // their product. Found by review: 200 KB took 80 s and 4.3 GB before the scan
        // refused it. Rejected: checking only after the whole module is rewritten.
        check_growth(streams.iter().map(|s| s.out.len()).sum(), copies.grow_to)?;
        let (op, offset) = (ops[at].0.clone(), ops[at].1);
        let fr = v.get_control_frame(0).ok_or("no frame")?;
        let unreachable = fr.unreachable;
        let fh = fr.height as u32;
        let fuel_check = dead == 0 && !unreachable && is_fuel_check(m, &ops, at);
        if !fuel_check {
            if dead > 0 {
                if opens(&op) {
                    dead += 1;
                } else if matches!(op, Operator::End) {
                    dead -= 1;
                }
                v.op(offset, &op).map_err(err)?;
                at += 1;
                continue;
            }
            if unreachable && !matches!(op, Operator::End | Operator::Else) {
                if opens(&op) {
                    dead = 1;
                }
                v.op(offset, &op).map_err(err)?;
                at += 1;
                continue;
            }
        }
        let here = At {
            ops: &ops,
            at,
            binary,
            h: v.operand_stack_height(),
            fh,
            fuel_check,
            block: next_block,
            site: next_site,
        };
        if opens(&op) {
            next_block += 1;
        }
        if fuel_check || is_site(m, &op) {
            next_site += 1;
        }
        for s in (0..streams.len()).rev() {
            e.swap(&mut streams[s]);
            let step = emit(&mut e, m, p, v, &here);
            e.swap(&mut streams[s]);
            match step? {
                Step::Go => {}
                Step::Fork(plain) => streams.push(plain),
                Step::Done => {
                    if s + 1 != streams.len() {
                        return Err("a plain copy ended out of order".into());
                    }
                    e.merge = streams.pop().expect("a stream").out;
                }
            }
        }
        let n = if fuel_check { FUEL_CHECK_LEN } else { 1 };
        for (op, offset, _) in &ops[at..at + n] {
            v.op(*offset, op).map_err(err)?;
        }
        at += n;
    }
    let mut own = streams.pop().ok_or("no stream")?;
    if !streams.is_empty() {
        return Err("a plain copy left open".into());
    }
    e.swap(&mut own);
    if next_site != p.sites || next_block as usize != p.blocks.len() {
        return Err("the plan and the code disagree".into());
    }

    // The save code (after `$save`), then zeros as results.
    let saved: Vec<(u32, wasmparser::ValType)> = e
        .locals
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let i = *i as u32;
            i != e.rw && i != e.site && i != e.base
        })
        .map(|(i, &t)| (i as u32, t))
        .collect();
    let mut offsets = Vec::with_capacity(saved.len());
    let mut size = 0u32;
    for &(_, t) in &saved {
        offsets.push(size);
        size = size.checked_add(bytes_of(t)?).ok_or("a frame too large")?;
    }
    let size = size.checked_add(TRAILER).ok_or("a frame too large")?;
    let mem = memory;
    let b = e.base;
    let mut code = std::mem::take(&mut e.out);
    let mut tail = Vec::new();
    {
        let mut t = |i: Instruction| i.encode(&mut tail);
        t(Instruction::LocalSet(e.site));
        t(Instruction::GlobalGet(ptr));
        t(Instruction::LocalSet(b));
        // Grow the unwind memory when the frame does not fit.
        t(Instruction::LocalGet(b));
        t(Instruction::I64ExtendI32U);
        t(Instruction::I64Const(i64::from(size)));
        t(Instruction::I64Add);
        t(Instruction::MemorySize(mem));
        t(Instruction::I64ExtendI32U);
        t(Instruction::I64Const(16));
        t(Instruction::I64Shl);
        t(Instruction::I64GtU);
        t(Instruction::If(BlockType::Empty));
        t(Instruction::I32Const(size.div_ceil(65536) as i32));
        t(Instruction::MemoryGrow(mem));
        t(Instruction::I32Const(-1));
        t(Instruction::I32Eq);
        t(Instruction::If(BlockType::Empty));
        t(Instruction::Unreachable);
        t(Instruction::End);
        t(Instruction::End);
        for (&(l, ty), &o) in saved.iter().zip(&offsets) {
            t(Instruction::LocalGet(b));
            t(Instruction::LocalGet(l));
            t(store(ty, memarg(o, mem)));
        }
        t(Instruction::LocalGet(b));
        t(Instruction::LocalGet(e.site));
        t(Instruction::I32Store(memarg(size - 8, mem)));
        t(Instruction::LocalGet(b));
        t(Instruction::I32Const(id as i32));
        t(Instruction::I32Store(memarg(size - 4, mem)));
        t(Instruction::LocalGet(b));
        t(Instruction::I32Const(size as i32));
        t(Instruction::I32Add);
        t(Instruction::GlobalSet(ptr));
        for &r in &results {
            t(zero(r)?);
        }
        t(Instruction::End);
    }
    // The prologue: rewinding, restore the frame.
    let mut head = Vec::new();
    let site = e.site;
    {
        let mut t = |i: Instruction| i.encode(&mut head);
        t(Instruction::GlobalGet(state));
        t(Instruction::I32Const(REWINDING));
        t(Instruction::I32Eq);
        t(Instruction::If(BlockType::Empty));
        // Whose frame comes next: the last four bytes before the buffer's end (read
        // before this function's own frame size is used: the frame may be another's, of
        // another size). A buffer of fewer bytes traps on the load (the address wraps
        // past the memory's end).
        t(Instruction::GlobalGet(ptr));
        t(Instruction::I32Const(4));
        t(Instruction::I32Sub);
        t(Instruction::I32Load(memarg(0, mem)));
        t(Instruction::LocalSet(site));
        t(Instruction::LocalGet(site));
        t(Instruction::I32Const(id as i32));
        t(Instruction::I32Ne);
        t(Instruction::If(BlockType::Empty));
        if let Some(table) = forward_table {
            // The frame is another function's: this one tail-called it (or a function
            // that did), so it is not on the stack any more. Tail-call the function the
            // frame is for, with zeros (its prologue restores its parameters).
            let mut lo = 0usize;
            while lo < m.by_id.len() {
                let ty = m.funcs[m.by_id[lo] as usize];
                let mut hi = lo;
                while hi < m.by_id.len() && m.funcs[m.by_id[hi] as usize] == ty {
                    hi += 1;
                }
                let (tp, tr) = &m.types[ty as usize];
                if *tr == results {
                    t(Instruction::LocalGet(site));
                    t(Instruction::I32Const(lo as i32));
                    t(Instruction::I32Sub);
                    t(Instruction::I32Const((hi - lo) as i32));
                    t(Instruction::I32LtU);
                    t(Instruction::If(BlockType::Empty));
                    for &p in tp {
                        t(zero(p)?);
                    }
                    t(Instruction::LocalGet(site));
                    t(Instruction::ReturnCallIndirect {
                        type_index: ty,
                        table_index: table,
                    });
                    t(Instruction::End);
                }
                lo = hi;
            }
        }
        t(Instruction::Unreachable);
        t(Instruction::End);
        t(Instruction::GlobalGet(ptr));
        t(Instruction::I32Const(size as i32));
        t(Instruction::I32Sub);
        t(Instruction::LocalSet(b));
        t(Instruction::LocalGet(b));
        t(Instruction::GlobalSet(ptr));
        for (&(l, ty), &o) in saved.iter().zip(&offsets) {
            t(Instruction::LocalGet(b));
            t(load(ty, memarg(o, mem)));
            t(Instruction::LocalSet(l));
        }
        t(Instruction::LocalGet(b));
        t(Instruction::I32Load(memarg(size - 8, mem)));
        t(Instruction::LocalSet(e.site));
        // The fuel is the host's, not the frame's (see "Rewind" in the module docs).
        for &f in &fuel_locals {
            let g = m.fuel_global.ok_or("fuel checks without the fuel global")?;
            t(Instruction::GlobalGet(g));
            t(Instruction::LocalSet(f));
        }
        t(Instruction::I32Const(1));
        t(Instruction::LocalSet(e.rw));
        t(Instruction::End);
    }
    let mut f = Vec::with_capacity(head.len() + code.len() + tail.len() + 16);
    let extra = &e.locals[params.len()..];
    let mut groups: Vec<(u32, ValType)> = Vec::new();
    for &t in extra {
        let t = vt(t)?;
        match groups.last_mut() {
            Some((n, g)) if *g == t => *n += 1,
            _ => groups.push((1, t)),
        }
    }
    (groups.len() as u32).encode(&mut f);
    for (n, t) in groups {
        n.encode(&mut f);
        t.encode(&mut f);
    }
    f.extend_from_slice(&head);
    f.append(&mut code);
    f.extend_from_slice(&tail);
    let cost = Cost::of(&f, params.len()).map_err(err)?;
    Ok((f, cost))
}

/// What a rewritten body adds to the measures of [`crate::shape::UNWIND_LIMITS`] that
/// plain copies of loops make grow, measured as the scan after the pass measures them
/// (depth counting the function's own frame, one more than the scan reports: the budget
/// is the stricter by one). The scan of the whole module checks the rest ([`rewrite`]).
#[derive(Clone, Copy, Default)]
struct Cost {
    bytes: u64,
    blocks: u64,
    /// Variables × blocks ([`crate::shape::Shape::ssa`]).
    ssa: u64,
    /// Blocks squared ([`crate::shape::Shape::module_block_pairs`]).
    pairs: u64,
    /// The deepest nesting of blocks ([`crate::shape::Shape::depth`]).
    depth: u64,
}

impl Cost {
    fn of(body: &[u8], params: usize) -> Result<Cost, wasmparser::BinaryReaderError> {
        let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(body, 0));
        let mut variables = params as u64;
        for group in body.get_locals_reader()? {
            variables += u64::from(group?.0);
        }
        let (mut blocks, mut open, mut depth) = (0u64, 1u64, 1u64);
        let mut labels = Vec::new();
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            let op = ops.read()?;
            blocks += crate::shape::block_starts(&op, &mut labels)?;
            match op {
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                    open += 1;
                    depth = depth.max(open);
                }
                Operator::End => open = open.saturating_sub(1),
                _ => {}
            }
        }
        Ok(Cost {
            bytes: body.range().len() as u64,
            blocks,
            ssa: variables.saturating_mul(blocks),
            pairs: blocks.saturating_mul(blocks),
            depth,
        })
    }
}

/// Where the rewrite of a body is: the operator `ops[at]` (the first of a fuel check's
/// when `fuel_check`), the stack's height `h` and its block's `fh`, and the numbers the
/// next block and site would take.
struct At<'a, 'b> {
    ops: &'b Ops<'a>,
    at: usize,
    binary: &'b [u8],
    h: u32,
    fh: u32,
    fuel_check: bool,
    block: u32,
    site: u32,
}

/// Emits the operator `here` names into the stream the emitter holds (see
/// [`rewrite_body`]); `v` has not seen it yet.
fn emit<R: wasmparser::WasmModuleResources>(
    e: &mut Emitter,
    m: &Module,
    p: &Plan,
    v: &wasmparser::FuncValidator<R>,
    here: &At,
) -> Result<Step, String> {
    let (h, fh) = (here.h, here.fh);
    if here.fuel_check {
        let k = here.site;
        let below = stack_types(v, fh)?;
        e.pop_to_slots(&below)?;
        e.reach(Ok(k))?;
        let window = &here.ops[here.at..here.at + FUEL_CHECK_LEN];
        for (i, (_, _, range)) in window.iter().enumerate() {
            e.out.extend_from_slice(&here.binary[range.clone()]);
            match i {
                3 => e.push_label(None),
                5 => {
                    // After `refuel`: unwinding, save the frame with this site.
                    e.i(Instruction::I32Const(k as i32));
                    e.i(Instruction::GlobalGet(e.state));
                    e.i(Instruction::BrIf((e.labels.len() - 1) as u32));
                    e.i(Instruction::Drop);
                }
                7 => {
                    e.labels.pop();
                }
                _ => {}
            }
        }
        e.push_from_slots(&below)?;
        return Ok(Step::Go);
    }
    let op = &here.ops[here.at].0;
    let raw = &here.binary[here.ops[here.at].2.clone()];
    match *op {
        Operator::Block { blockty } | Operator::Loop { blockty } => {
            let (ps, rs) = block_sig(m, blockty);
            let id = here.block;
            let block = &p.blocks[id as usize];
            // Its parent left its dispatch to it: no dispatch block of the parent's
            // ends here, and the parent's values go to slots as for a hot block (the
            // parent's dispatch is made again after this block's end).
            let received = e.frames.last().is_some_and(|f| {
                let parent = &p.blocks[f.id as usize];
                parent.defers && parent.first_child == Some(id)
            });
            let hot = block.hot() || received;
            let base = h - ps.len() as u32;
            let mut frame = Frame::new(Kind::Block, id, base, 0);
            if hot {
                let all = stack_types(v, fh)?;
                e.pop_to_slots(&all)?;
                frame.spilled = all[..(base - fh) as usize].to_vec();
                if !received {
                    e.reach(Err(id))?;
                }
            } else {
                e.pop_to_slots(&with_pos(base, &ps))?;
            }
            frame.params = ps.clone();
            frame.results = rs;
            let is_loop = matches!(op, Operator::Loop { .. });
            if is_loop && block.copy && e.copies && !e.plain {
                // `block $after`, around the two copies.
                e.i(Instruction::Block(BlockType::Empty));
                e.push_label(None);
                // The plain copy, emitted into a stream of its own until the loop's end.
                // The blocks around the loop as far as branches out of it need them
                // (the plain copy never reaches their ends or targets): cloned whole,
                // the values each holds in slots made forking cost their number per
                // loop (found by review).
                let mut plain = Stream {
                    out: Vec::new(),
                    labels: e.labels.clone(),
                    frames: e.frames.iter().map(Frame::outer).collect(),
                    plain: true,
                };
                e.swap(&mut plain);
                e.i(Instruction::Loop(BlockType::Empty));
                let mut f = frame.clone();
                f.kind = Kind::Loop;
                f.label = e.labels.len();
                f.root = true;
                e.frames.push(f);
                e.push_label(Some(e.frames.len() - 1));
                e.push_from_slots(&with_pos(base, &ps))?;
                e.swap(&mut plain);
                // The rewinding copy, a `block`: entered only while rewinding into the
                // loop (else straight to the plain copy); a back edge is a branch to its
                // end, where the plain copy starts.
                e.i(Instruction::Block(BlockType::Empty));
                frame.kind = Kind::Loop;
                frame.label = e.labels.len();
                frame.copy = true;
                e.frames.push(frame);
                e.push_label(Some(e.frames.len() - 1));
                e.i(Instruction::LocalGet(e.rw));
                e.i(Instruction::I32Eqz);
                e.i(Instruction::BrIf(0));
                if !block.defers {
                    // A loop is never a deferring block's child: no exit.
                    e.dispatch(&block.then, None)?;
                }
                e.push_from_slots(&with_pos(base, &ps))?;
                return Ok(Step::Fork(plain));
            }
            if is_loop {
                e.i(Instruction::Loop(BlockType::Empty));
                frame.kind = Kind::Loop;
            } else {
                e.i(Instruction::Block(BlockType::Empty));
            }
            frame.label = e.labels.len();
            e.frames.push(frame);
            e.push_label(Some(e.frames.len() - 1));
            if !block.defers {
                let label = e.labels.len() - 1;
                let exit = block.exit_hi.map(|_| (block.hi, label));
                e.dispatch(&block.then, exit)?;
            }
            e.push_from_slots(&with_pos(base, &ps))?;
        }
        Operator::If { blockty } => {
            let (ps, rs) = block_sig(m, blockty);
            let id = here.block;
            let b = &p.blocks[id as usize];
            let hot = b.hot();
            let cond = e.slot(h - 1, wasmparser::ValType::I32)?;
            e.i(Instruction::LocalSet(cond));
            let base = h - 1 - ps.len() as u32;
            // The same locals in every copy of the code (a frame saves them once).
            let mut if_params = match e.if_locals.get(&id) {
                Some(ls) => ls.clone(),
                None => {
                    let mut ls = Vec::new();
                    for &t in ps.iter().rev() {
                        bytes_of(t)?;
                        ls.push(e.new_local(t)?);
                    }
                    e.if_locals.insert(id, ls.clone());
                    ls
                }
            };
            for &l in &if_params {
                e.i(Instruction::LocalSet(l));
            }
            if_params.reverse();
            let mut frame = Frame::new(Kind::If, id, base, 0);
            if hot {
                let below: Vec<_> = stack_types(v, fh)?
                    .into_iter()
                    .filter(|(q, _)| *q < base)
                    .collect();
                e.pop_to_slots(&below)?;
                frame.spilled = below;
                e.reach(Err(id))?;
            }
            if hot && !e.plain {
                // Rewinding, the part that holds the site, whatever the condition:
                // `rw ? site < mid : cond`.
                e.i(Instruction::LocalGet(e.site));
                e.i(Instruction::I32Const(b.mid as i32));
                e.i(Instruction::I32LtU);
                e.i(Instruction::LocalGet(cond));
                e.i(Instruction::LocalGet(e.rw));
                e.i(Instruction::Select);
            } else {
                e.i(Instruction::LocalGet(cond));
            }
            e.i(Instruction::If(BlockType::Empty));
            frame.params = ps;
            frame.results = rs;
            frame.label = e.labels.len();
            frame.if_params = if_params.clone();
            e.frames.push(frame);
            e.push_label(Some(e.frames.len() - 1));
            e.dispatch(&b.then, None)?;
            for l in if_params {
                e.i(Instruction::LocalGet(l));
            }
        }
        Operator::Else => {
            let f = e.frames.last().ok_or("else outside a block")?;
            if !f.ahead.is_empty() {
                return Err("a target left behind".into());
            }
            let res = with_pos(f.base, &f.results);
            let id = f.id;
            e.pop_to_slots(&res)?;
            e.i(Instruction::Else);
            e.dispatch(&p.blocks[id as usize].otherwise, None)?;
            let f = e.frames.last().expect("a frame");
            for l in f.if_params.clone() {
                e.i(Instruction::LocalGet(l));
            }
        }
        Operator::End => {
            let f = e.frames.last().ok_or("end outside a block")?;
            if !f.ahead.is_empty() {
                return Err("a target left behind".into());
            }
            let res = with_pos(f.base, &f.results);
            e.pop_to_slots(&res)?;
            let f = e.frames.pop().expect("a frame");
            if f.kind == Kind::If && !p.blocks[f.id as usize].has_else {
                // The implicit `else` passes the parameters on as results.
                e.i(Instruction::Else);
                for (&l, q) in f.if_params.iter().zip(&res) {
                    e.i(Instruction::LocalGet(l));
                    let s = e.slot(q.0, q.1)?;
                    e.i(Instruction::LocalSet(s));
                }
            }
            if f.copy {
                // The end of a loop's rewinding copy: past the plain copy (`br $after`),
                // which follows.
                e.i(Instruction::Br(1));
                e.i(Instruction::End);
                e.labels.pop();
                let plain = std::mem::take(&mut e.merge);
                if plain.is_empty() {
                    return Err("a loop without its plain copy".into());
                }
                e.out.extend_from_slice(&plain);
            }
            e.i(Instruction::End);
            e.labels.pop();
            if f.root {
                return Ok(Step::Done);
            }
            // The parent left its dispatch to this block: it is made now, for the
            // parent's targets after this block (and those of the blocks around it
            // that left theirs to the parent).
            if let Some(parent) = e.frames.last() {
                let pb = &p.blocks[parent.id as usize];
                if pb.defers && pb.first_child == Some(f.id) {
                    let rest: Vec<Target> = pb
                        .then
                        .iter()
                        .copied()
                        .filter(|t| !matches!(t, Target::Block(b, _, _) if *b == f.id))
                        .collect();
                    let exit = pb.exit_hi.map(|_| (pb.hi, parent.label));
                    e.dispatch(&rest, exit)?;
                }
            }
            if f.kind == Kind::Func {
                e.push_from_slots(&res)?;
                e.i(Instruction::Return);
                e.i(Instruction::End); // $save
                e.labels.pop();
            } else {
                e.push_from_slots(&f.spilled)?;
                e.push_from_slots(&res)?;
            }
        }
        Operator::Br { relative_depth } => {
            let (base, ts) = e.label_of(relative_depth);
            e.pop_to_slots(&with_pos(base, &ts))?;
            let d = e.depth(relative_depth)?;
            e.i(Instruction::Br(d));
        }
        Operator::BrIf { relative_depth } => {
            let (base, ts) = e.label_of(relative_depth);
            if ts.is_empty() {
                let d = e.depth(relative_depth)?;
                e.i(Instruction::BrIf(d));
            } else {
                let c = e.slot(h - 1, wasmparser::ValType::I32)?;
                e.i(Instruction::LocalSet(c));
                let own = with_pos(h - 1 - ts.len() as u32, &ts);
                e.pop_to_slots(&own)?;
                e.push_from_slots(&own)?;
                e.i(Instruction::LocalGet(c));
                e.i(Instruction::If(BlockType::Empty));
                e.push_label(None);
                for (q, (i, t)) in own.iter().zip(with_pos(base, &ts)) {
                    if q.0 != i {
                        let from = e.slot(q.0, q.1)?;
                        let to = e.slot(i, t)?;
                        e.i(Instruction::LocalGet(from));
                        e.i(Instruction::LocalSet(to));
                    }
                }
                let d = e.depth(relative_depth)?;
                e.i(Instruction::Br(d));
                e.i(Instruction::End);
                e.labels.pop();
            }
        }
        Operator::BrTable { ref targets } => {
            let default = targets.default();
            let all: Vec<u32> = targets.targets().collect::<Result<_, _>>().map_err(err)?;
            let (_, ts) = e.label_of(default);
            if ts.is_empty() {
                let t: Vec<u32> = all.iter().map(|&d| e.depth(d)).collect::<Result<_, _>>()?;
                let d = e.depth(default)?;
                e.i(Instruction::BrTable(t.into(), d));
            } else {
                let c = e.slot(h - 1, wasmparser::ValType::I32)?;
                e.i(Instruction::LocalSet(c));
                let own = with_pos(h - 1 - ts.len() as u32, &ts);
                e.pop_to_slots(&own)?;
                // One trampoline per distinct base among the targets: it moves the
                // values to where that base's labels expect them, then branches.
                let mut bases: Vec<u32> = Vec::new();
                for &d in all.iter().chain([&default]) {
                    let b = e.label_of(d).0;
                    if !bases.contains(&b) {
                        bases.push(b);
                    }
                }
                let g_base = e.labels.len();
                for _ in &bases {
                    e.i(Instruction::Block(BlockType::Empty));
                    e.push_label(None);
                }
                let g_label = |i: usize| g_base + bases.len() - 1 - i;
                let top = e.labels.len() - 1;
                let to_group = |d: u32, e: &Emitter| -> u32 {
                    let b = e.label_of(d).0;
                    let i = bases.iter().position(|&x| x == b).expect("a base");
                    (top - g_label(i)) as u32
                };
                let t: Vec<u32> = all.iter().map(|&d| to_group(d, e)).collect();
                let dd = to_group(default, e);
                e.i(Instruction::LocalGet(c));
                e.i(Instruction::BrTable(t.into(), dd));
                for (i, &b) in bases.iter().enumerate() {
                    e.i(Instruction::End);
                    e.labels.pop();
                    debug_assert_eq!(e.labels.len(), g_label(i));
                    for (q, (to_pos, t)) in own.iter().zip(with_pos(b, &ts)) {
                        if q.0 != to_pos {
                            let from = e.slot(q.0, q.1)?;
                            let to = e.slot(to_pos, t)?;
                            e.i(Instruction::LocalGet(from));
                            e.i(Instruction::LocalSet(to));
                        }
                    }
                    // Targets of other bases never come here: any label of the
                    // right type does for them (the default's).
                    let fallback = if e.label_of(default).0 == b {
                        default
                    } else {
                        *all.iter()
                            .find(|&&d| e.label_of(d).0 == b)
                            .expect("a target of this base")
                    };
                    let t: Vec<u32> = all
                        .iter()
                        .map(|&d| e.depth(if e.label_of(d).0 == b { d } else { fallback }))
                        .collect::<Result<_, _>>()?;
                    let dd = e.depth(if e.label_of(default).0 == b {
                        default
                    } else {
                        fallback
                    })?;
                    e.i(Instruction::LocalGet(c));
                    e.i(Instruction::BrTable(t.into(), dd));
                }
            }
        }
        Operator::Call { .. } | Operator::CallIndirect { .. } if is_site(m, op) => {
            let (ps, rs) = match *op {
                Operator::Call { function_index } => m.func_type(function_index).clone(),
                Operator::CallIndirect { type_index, .. } => {
                    let (mut p, r) = m.types[type_index as usize].clone();
                    p.push(wasmparser::ValType::I32);
                    (p, r)
                }
                _ => unreachable!(),
            };
            let k = here.site;
            let all = stack_types(v, fh)?;
            e.pop_to_slots(&all)?;
            e.reach(Ok(k))?;
            let args_at = h - ps.len() as u32;
            let (below, args) = all.split_at((args_at - fh) as usize);
            let below = below.to_vec();
            e.push_from_slots(args)?;
            e.out.extend_from_slice(raw);
            // Unwinding: save the frame, with the site's number (what `$save`
            // carries); else drop the number.
            e.i(Instruction::I32Const(k as i32));
            e.i(Instruction::GlobalGet(e.state));
            e.i(Instruction::BrIf((e.labels.len() - 1) as u32));
            e.i(Instruction::Drop);
            if !below.is_empty() {
                let res = with_pos(args_at, &rs);
                e.pop_to_slots(&res)?;
                e.push_from_slots(&below)?;
                e.push_from_slots(&res)?;
            }
        }
        _ => e.out.extend_from_slice(raw),
    }
    Ok(Step::Go)
}

/// Whether a rewritten body has grown past `limit` bytes, the most it may be before the
/// pass gives up: what the scan of the rewritten module refuses anyway
/// ([`crate::shape::UNWIND_LIMITS`]), or, with plain copies, what the module's budget has
/// left for the body ([`rewrite`]).
fn check_growth(body_bytes: usize, limit: u64) -> Result<(), String> {
    if body_bytes as u64 > limit {
        return Err(format!(
            "{TOO_LARGE}a function grows past {limit} bytes with checkpoints (each call \
             saves every value left on the stack below it), more than a module that takes \
             checkpoints may have"
        ));
    }
    Ok(())
}

/// The module rewritten: every body through [`rewrite_body`], with the plain copies of
/// loops where they fit ("Loops run plain" in the module docs), assembled with what the
/// pass adds to the module.
///
/// Every body is emitted without copies first, and measured ([`Cost`]); then, function
/// by function in order, with them, kept where the function's and the module's measures
/// stay within the limits the module is scanned against after the pass
/// ([`crate::shape::UNWIND_LIMITS`]); and the module with the copies is validated and
/// scanned here: if it is refused (for a measure the budget does not follow, such as the
/// values of calls), the module without them is returned. So the copies make code faster and
/// never a module refused. Rejected: raising the limits for them (the compile work a
/// module that takes checkpoints may cost would grow for an optimisation); copies
/// without a budget (CPython's eval loop, three loops deep, grew three times, past the
/// limits).
fn rewrite(
    binary: &[u8],
    m: &Module,
    plans: &[Option<Plan>],
    limits: &crate::shape::Limits,
) -> Result<Vec<u8>, String> {
    let at = (m.globals, m.globals + 1, m.memories);
    let none = Copies {
        on: false,
        grow_to: limits.function_bytes,
    };
    let mut code = 0u64;
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(plans.len());
    let mut costs: Vec<Cost> = Vec::with_capacity(plans.len());
    walk(binary, |i, body, v| {
        let range = body.range();
        let (b, cost) = match &plans[i as usize] {
            None => {
                // Measured too: the limits of the module are on its totals.
                let params = m.func_type(i + m.imported).0.len();
                let cost = Cost::of(&binary[range.clone()], params).map_err(err)?;
                (binary[range].to_vec(), cost)
            }
            Some(p) => rewrite_body(m, binary, (i, body), v, p, at, none)?,
        };
        // Every body within the code section's limit as it grows.
        code += b.len() as u64;
        if code > limits.code_bytes {
            return Err(format!(
                "{TOO_LARGE}the code grows past {} bytes with checkpoints, more than a \
                 module that takes checkpoints may have",
                limits.code_bytes
            ));
        }
        bodies.push(b);
        costs.push(cost);
        Ok(())
    })?;
    if !plans
        .iter()
        .flatten()
        .any(|p| p.blocks.iter().any(|b| b.copy))
    {
        return assemble(binary, m, &bodies);
    }
    // The code section also holds each body's size and their count: at most five bytes
    // each.
    let code_limit = limits
        .code_bytes
        .saturating_sub(5 * (bodies.len() as u64 + 1));
    let sum = |f: fn(&Cost) -> u64| costs.iter().map(f).fold(0u64, u64::saturating_add);
    let (mut ssa, mut pairs) = (sum(|c| c.ssa), sum(|c| c.pairs));
    let mut copied = bodies.clone();
    let mut any = false;
    walk(binary, |i, body, v| {
        let Some(p) = &plans[i as usize] else {
            return Ok(());
        };
        if !p.blocks.iter().any(|b| b.copy) {
            return Ok(());
        }
        let was = costs[i as usize];
        let grow_to = limits
            .function_bytes
            .min((code_limit + was.bytes).saturating_sub(code));
        let copies = Copies { on: true, grow_to };
        let (b, cost) = match rewrite_body(m, binary, (i, body), v, p, at, copies) {
            Ok(rewritten) => rewritten,
            // Grown past its budget, or (a defect of the copies: the body without them
            // was emitted) any other error: the body stays without. Rejected: a panic
            // in debug builds (the binary the README's set-up builds is one, and a
            // module that runs without copies would end its job).
            Err(_) => return Ok(()),
        };
        let grown = |total: u64, old: u64, new: u64| total - old + new;
        let next = (
            grown(ssa, was.ssa, cost.ssa),
            grown(pairs, was.pairs, cost.pairs),
            grown(code, was.bytes, cost.bytes),
        );
        let fits = cost.bytes <= limits.function_bytes
            && cost.blocks <= limits.blocks
            && cost.ssa <= limits.ssa
            && cost.depth <= limits.depth
            && next.0 <= limits.module_ssa
            && next.1 <= limits.module_block_pairs
            && next.2 <= code_limit;
        if fits {
            (ssa, pairs, code) = next;
            costs[i as usize] = cost;
            copied[i as usize] = b;
            any = true;
        }
        Ok(())
    })?;
    if any {
        // Validated too: a defect of the copies that made invalid code without an error
        // would otherwise end the job at the engine.
        let module = assemble(binary, m, &copied)?;
        let valid = Validator::new_with_features(features())
            .validate_all(&module)
            .is_ok();
        if valid && crate::shape::check(&module, limits).is_ok() {
            return Ok(module);
        }
    }
    assemble(binary, m, &bodies)
}

/// The module with `bodies` for its functions' code and what the pass adds to it.
fn assemble(binary: &[u8], m: &Module, bodies: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let state = m.globals;
    let ptr = m.globals + 1;
    let memory = m.memories;
    let add_memory = |s: &mut wasm_encoder::MemorySection| {
        s.memory(wasm_encoder::MemoryType {
            minimum: 0,
            maximum: Some(MAX_PAGES),
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    };
    let add_globals = |s: &mut wasm_encoder::GlobalSection| {
        for _ in 0..2 {
            s.global(
                wasm_encoder::GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &wasm_encoder::ConstExpr::i32_const(0),
            );
        }
    };
    let forwarding = m.forwards.contains(&true);
    let add_exports = |s: &mut wasm_encoder::ExportSection| {
        s.export(EXPORT_STATE, wasm_encoder::ExportKind::Global, state);
        s.export(EXPORT_PTR, wasm_encoder::ExportKind::Global, ptr);
        s.export(EXPORT_MEMORY, wasm_encoder::ExportKind::Memory, memory);
        if forwarding {
            s.export(EXPORT_TABLE, wasm_encoder::ExportKind::Table, m.tables);
        }
        for i in 0..m.memories {
            let name = format!("{EXPORT_MEMORY_PREFIX}{i}");
            s.export(&name, wasm_encoder::ExportKind::Memory, i);
        }
        for &g in &m.mutable_globals {
            let name = format!("{EXPORT_GLOBAL_PREFIX}{g}");
            s.export(&name, wasm_encoder::ExportKind::Global, g);
        }
    };
    // The forwarding table: every instrumented function at its id, when some function
    // forwards a rewind.
    let n = m.by_id.len() as u64;
    let add_table = |s: &mut wasm_encoder::TableSection| {
        if forwarding {
            s.table(wasm_encoder::TableType {
                element_type: wasm_encoder::RefType::FUNCREF,
                table64: false,
                minimum: n,
                maximum: Some(n),
                shared: false,
            });
        }
    };
    let add_elements = |s: &mut wasm_encoder::ElementSection| {
        if forwarding {
            s.active(
                Some(m.tables),
                &wasm_encoder::ConstExpr::i32_const(0),
                wasm_encoder::Elements::Functions(std::borrow::Cow::Borrowed(&m.by_id)),
            );
        }
    };
    let mut out = Vec::with_capacity(binary.len() * 2);
    let mut table_written = m.has_table_section || !forwarding;
    let mut elements_written = m.has_element_section || !forwarding;
    let mut memory_written = m.has_memory_section;
    let mut globals_written = m.has_global_section;
    let mut exports_written = m.has_export_section;
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        let order = crate::section_order(&payload);
        if !table_written && order > 4 {
            let mut s = wasm_encoder::TableSection::new();
            add_table(&mut s);
            s.append_to(&mut out);
            table_written = true;
        }
        if !memory_written && order > 5 {
            let mut s = wasm_encoder::MemorySection::new();
            add_memory(&mut s);
            s.append_to(&mut out);
            memory_written = true;
        }
        if !globals_written && order > 6 {
            let mut s = wasm_encoder::GlobalSection::new();
            add_globals(&mut s);
            s.append_to(&mut out);
            globals_written = true;
        }
        if !exports_written && order > 7 {
            let mut s = wasm_encoder::ExportSection::new();
            add_exports(&mut s);
            s.append_to(&mut out);
            exports_written = true;
        }
        if !elements_written && order > 9 {
            let mut s = wasm_encoder::ElementSection::new();
            add_elements(&mut s);
            s.append_to(&mut out);
            elements_written = true;
        }
        match payload {
            Payload::Version { range, .. } => out.extend_from_slice(&binary[range]),
            Payload::TableSection(r) => {
                let mut s = wasm_encoder::TableSection::new();
                RoundtripReencoder
                    .parse_table_section(&mut s, r)
                    .map_err(err)?;
                add_table(&mut s);
                s.append_to(&mut out);
            }
            Payload::ElementSection(r) => {
                let mut s = wasm_encoder::ElementSection::new();
                RoundtripReencoder
                    .parse_element_section(&mut s, r)
                    .map_err(err)?;
                add_elements(&mut s);
                s.append_to(&mut out);
            }
            Payload::MemorySection(r) => {
                let mut s = wasm_encoder::MemorySection::new();
                RoundtripReencoder
                    .parse_memory_section(&mut s, r)
                    .map_err(err)?;
                add_memory(&mut s);
                s.append_to(&mut out);
            }
            Payload::GlobalSection(r) => {
                let mut s = wasm_encoder::GlobalSection::new();
                RoundtripReencoder
                    .parse_global_section(&mut s, r)
                    .map_err(err)?;
                add_globals(&mut s);
                s.append_to(&mut out);
            }
            Payload::ExportSection(r) => {
                let mut s = wasm_encoder::ExportSection::new();
                RoundtripReencoder
                    .parse_export_section(&mut s, r)
                    .map_err(err)?;
                add_exports(&mut s);
                s.append_to(&mut out);
            }
            Payload::CodeSectionStart { count, .. } => {
                let mut section = Vec::new();
                count.encode(&mut section);
                for b in bodies {
                    (b.len() as u32).encode(&mut section);
                    section.extend_from_slice(b);
                }
                out.push(10);
                section.encode(&mut out);
            }
            Payload::CodeSectionEntry(_) | Payload::End(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.push(id);
                    (range.len() as u32).encode(&mut out);
                    out.extend_from_slice(&binary[range]);
                }
            }
        }
    }
    Ok(out)
}

// Tests: `runtime/tests/pass_unwind.rs`. Every one there runs instrumented modules on
// the runtime's engine, with and without checkpoints, and this crate has no engine, not
// even for its tests. The one here checks the output's shape alone.

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop of `pairs` calls that name 256 values each (128 results passed on as 128
    /// parameters), after the fuel and stack passes.
    fn wide_calls(pairs: usize) -> Vec<u8> {
        let values = "i32 ".repeat(128);
        let zeros = "i32.const 0 ".repeat(128);
        let calls = "call $f call $g\n".repeat(pairs);
        let wat = format!(
            r#"(module
            (func $f (result {values}) {zeros})
            (func $g (param {values}))
            (func (export "f") (result i64)
              (local $i i32) (local $acc i64)
              loop $l
                {calls}
                local.get $acc i64.const 515151 i64.add local.set $acc
                local.get $i i32.const 1 i32.add local.tee $i
                i32.const 3 i32.lt_u br_if $l
              end
              local.get $acc))"#
        );
        let fueled = crate::fuel::meter(&wat::parse_str(wat).unwrap()).unwrap();
        crate::stack::meter(&fueled).unwrap()
    }

    fn markers(binary: &[u8]) -> usize {
        let mut n = 0;
        for p in Parser::new(0).parse_all(binary) {
            if let Payload::CodeSectionEntry(body) = p.unwrap() {
                let mut ops = body.get_operators_reader().unwrap();
                while !ops.eof() {
                    if matches!(ops.read().unwrap(), Operator::I64Const { value: 515_151 }) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// A measure the budget of copies does not follow (the values calls name) is still
    /// held: the module with copies is scanned, and when the scan refuses it, the module
    /// is returned without them, within the limits.
    #[test]
    fn a_module_its_copies_would_get_refused_is_returned_without_them() {
        let module = wide_calls(100);
        let copied = instrument(&module).unwrap();
        assert_eq!(markers(&copied), 2, "copied");
        let with = crate::shape::check(&copied, &crate::shape::UNWIND_LIMITS).unwrap();
        let limits = crate::shape::Limits {
            function_values: with.values.0 - 1,
            ..crate::shape::UNWIND_LIMITS
        };
        let within = instrument_within(&module, &limits).unwrap();
        assert_eq!(markers(&within), 1, "not copied");
        crate::shape::check(&within, &limits).expect("within the limits");
    }
}
