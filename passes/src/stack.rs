//! Stack metering: the depth at which a guest's call stack is exhausted is counted in the
//! module itself, so it is a function of the module and the job, never of the CPU.
//!
//! # Why
//!
//! wasmtime traps with a stack overflow when the *native* stack of wasm frames passes
//! `max_wasm_stack` bytes. A frame's native size is Cranelift's choice: it depends on the
//! target, the Cranelift version and the optimisation level (measured by the tests below:
//! the same frame of hoisted values takes 8,128 bytes on x86-64 and 8,168 on aarch64, so
//! the native limit stops it at depth 1,034 on one and 1,027 on the other; the smallest
//! frame takes 48 bytes optimised and 32 without). A job that recursed until the native
//! limit could therefore trap at another depth on another CPU, after another number of
//! instructions: two honest hosts would disagree on the instruction count. Rejected:
//! pinning `max_wasm_stack` per architecture (frames differ per function, so no one
//! ratio fits every module); not metering and forbidding deep recursion (a module cannot
//! know where the native limit lies).
//!
//! # The rule (what a frame costs)
//!
//! Every function defined by the module that calls a function of the module (or calls
//! through a table, or tail-calls) is charged on entry, in *stack units*:
//!
//! ```text
//! cost(f) = FRAME_BASE + params(f) + declared locals(f) + max operand stack height(f)
//! ```
//!
//! with [`FRAME_BASE`] = 8 units; each value counts one unit whatever its type. A
//! function that can only start bounded chains of calls (no recursion, no call through
//! a table, reference or tail call anywhere below it) whose costliest chain is at most
//! [`UNMETERED_MAX_COST`] units is not metered: such frames only ever sit at the top of
//! the stack, one chain at a time, and the chain fits in the native stack reserved
//! beyond the metered limit (the reasoning is at [`UNMETERED_MAX_COST`]). The
//! operand stack height is the greatest number of values on the operand stack at any
//! point of `f`'s body (across all its blocks), as wasmparser's validator counts it
//! (unreachable code included: it only ever raises the cost). A global counter (a
//! mutable `i32` global appended to the module) adds `cost(f)` when `f` is entered and
//! is set back to what it was on entry when `f` returns (a `return`, the end of the
//! body, a branch to the function's label, and before a `return_call*`, which replaces
//! the frame). A call that
//! would take the counter past [`STACK_LIMIT`] units traps instead, before the callee
//! runs a single instruction of its own: the guest sees `call stack exhausted`, the same
//! trap message as wasmtime's own stack overflow, on every CPU.
//!
//! Imported functions (the WASI host) are not wasm frames and cost nothing; functions
//! called through tables (`call_indirect`), as exports, as the start function or by tail
//! calls are all charged, because the charge is made by the callee itself, in its own
//! prologue. Rejected: charging at call sites, as Parity's `wasm-instrument` does, which
//! needs thunks for every function reachable through a table or an export and misses
//! none only if every such path is found.
//!
//! # How the trap is recognised
//!
//! The pass appends one function, `[] -> []`, whose body is `unreachable`; the prologue
//! calls it when the limit is passed. An `unreachable` trap whose innermost frame is the
//! module's last defined function is therefore a metered stack exhaustion
//! (`detwasm_runtime::engine::is_stack_exhaustion`), reported as `call stack exhausted`. Nothing is renumbered: the
//! appended function, global and types come after every existing index, so the module's
//! own functions, globals, types, exports and names keep their indices. Rejected: an
//! imported host function that raises the trap (shifts every defined function's index,
//! so every call, element, export and name would have to be rewritten); an exported flag
//! global (not readable when the start function traps during instantiation).
//!
//! # Instruction counts
//!
//! The metering code is not counted: the fuel pass ([`crate::fuel`]) runs before
//! this one and counts the module's own operators only, so instruction counts are the
//! same with and without stack metering (tested), and the same on every host.
//!
//! # The native stack
//!
//! The native stack is sized so that the metered limit is reached first:
//! `detwasm_runtime::engine::MAX_WASM_STACK` is [`NATIVE_BYTES_PER_UNIT`] bytes per unit of
//! [`STACK_LIMIT`]. The tests of this module recurse to the deepest metered depth with
//! the frames whose native size per unit is largest (`v128` values kept live across the
//! call as locals, operands or parameters: 15.9–16.1 bytes per unit, 16.8 for 49,999
//! locals; the smallest frames: 3–5) and check that the metered trap comes first, at the
//! depth the rule gives. Run under qemu-aarch64 (built with `cargo test --target
//! aarch64-unknown-linux-gnu`), they measure the same sizes on aarch64 and pass.
//!
//! One kind of frame is not bounded by any rule on the module's values: Cranelift hoists
//! loop-invariant computations out of loops and merges equal ones, and keeps the results
//! live across calls, so a function can hold natively many values that the module never
//! holds at once (measured: 625 bytes per unit for 1,000 invariant products in a loop
//! around the recursive call). Such a module reaches the native limit first; the runtime
//! then reports a host failure (`detwasm_runtime::run::NATIVE_STACK_EXHAUSTED`), never a trap,
//! so no CPU ever records an outcome whose depth was decided by its own frame layout.
//! Rejected: charging every operator of a function as a unit (a sound bound, but it cuts
//! the depth of real recursive code, whose functions are large, by two orders of
//! magnitude, to defend against frames that only a hostile module builds).

use std::collections::HashMap;

use wasm_encoder::{BlockType, Encode, Instruction, RefType, ValType};
use wasmparser::{
    Operator, Parser, Payload, ValidPayload, Validator, WasmFeatures, WasmModuleResources,
};

/// The version of this pass, named in `detwasm_runtime::engine::ENGINE_SETTINGS`: bumped whenever
/// a cost or the limit changes, or its code changes where a guest could tell (each
/// changes instruction counts or the depth at which a guest traps). Code that changes
/// only how fast the same rule runs is named by [`crate::CODEGEN`].
pub const PASS_VERSION: &str = "detwasm-stack-3";

/// Units every frame costs besides its values: stands for the return address, the saved
/// frame pointer, callee-saved registers and wasmtime's per-frame bookkeeping, which
/// every native frame has whatever its values.
pub const FRAME_BASE: u32 = 8;

/// The most stack units a guest may hold at once. A call that would pass it traps.
/// With the smallest possible frame (no parameters, locals or operands: [`FRAME_BASE`]
/// units) a guest may nest 32,768 calls; a typical compiled-Rust function (a few
/// parameters, ten to twenty locals, an operand stack of five to ten) costs 25–40 units,
/// about 6,500–10,000 calls deep.
pub const STACK_LIMIT: u32 = 1 << 18;

/// The costliest chain of frames that is not metered. A function is not metered when
/// every chain of calls it can start is known and bounded: it and every function it
/// reaches call only defined functions directly (calls of imports, the WASI host, are
/// allowed; no call through a table or a reference, no tail call), none of them can
/// recurse, and the costliest chain (the sum of the frames along it) is at most this
/// many units. Such functions only ever call each other, so above the deepest metered
/// frame there is at most one such chain, and it fits in the native stack reserved
/// beyond the metered limit: [`NATIVE_BYTES_PER_UNIT`] is twice the 16.8 bytes per unit
/// of the largest measured frames, which leaves about 4 MiB (262,144 units × 15 bytes)
/// for it, against 65,536 × 16.8 bytes = 1.1 MiB. Why: calls are most frequent near the
/// top of the stack (the pair update of n-body, a getter, an interpreter's small
/// helpers), and metering a frame is a load, an add and a store of the counter on entry
/// and again on return (`wasmtime run` of n-body, wall time, best of three: 0.44 s
/// without the pass, 0.62 s with it; CPython running a loop, CPU time: 3.76 s
/// unmetered, 4.46 s with only leaves exempt). Rejected: metering every function (that
/// cost); exempting every leaf or every non-recursive function whatever its chain (a
/// chain with more values than the reserve holds would reach the native limit first);
/// exempting only leaves (`detwasm-stack-2`: CPython's helpers call helpers).
pub const UNMETERED_MAX_COST: u32 = 1 << 16;

/// WebAssembly's limit on a function's locals, parameters included (wasmparser's, and so
/// the engine's).
const MAX_LOCALS: u64 = 50_000;

/// Native stack bytes reserved per stack unit (see `detwasm_runtime::engine::MAX_WASM_STACK`).
/// A value held in a frame takes at most 16 bytes natively (a `v128` spill slot), and the
/// largest measured frames take 16.8 bytes per unit (x86-64, Cranelift 0.135); twice 16
/// leaves room for Cranelift's fixed frame overhead, for aarch64's larger frames and for
/// the temporaries a frame keeps beside the module's own values.
pub const NATIVE_BYTES_PER_UNIT: usize = 32;

/// What the analysis learns of a module before it is rewritten.
struct Analysis {
    /// Types in the module's type section.
    types: u32,
    /// Functions imported (they come first in the function index space).
    imported_funcs: u32,
    /// Globals, imported and defined.
    globals: u32,
    /// Whether there is a global section to append to.
    has_global_section: bool,
    /// Each defined function, in order.
    funcs: Vec<Frame>,
}

/// Public only for [`frames`].
#[doc(hidden)]
pub struct Frame {
    /// Units charged on entry.
    pub cost: u32,
    /// Not metered: it starts only bounded chains of calls ([`UNMETERED_MAX_COST`]).
    pub unmetered: bool,
    /// The function's result types (the type of the block that wraps its body).
    results: Vec<wasmparser::ValType>,
    /// Its number of parameters.
    params: u32,
}

/// The frame of every defined function as the pass sees it: its cost in units and whether
/// it is left unmetered. Not part of the API: public only for the test that checks the
/// native stack is never exhausted before the metered limit
/// (`runtime/tests/pass_stack.rs`, `native_bound`), which needs the rule's costs of a
/// module and runs it on the engine, which this crate does not depend on.
#[doc(hidden)]
pub fn frames(binary: &[u8]) -> Result<Vec<Frame>, String> {
    Ok(analyse(binary)?.funcs)
}

/// The frame cost of every defined function, read with wasmparser's validator (which also
/// proves the module valid before it is rewritten).
///
/// The validator accepts every proposal: the engine validates the rewritten module again
/// with its own feature set, and `detwasm_runtime::engine::compile` reports a module the engine
/// refuses with the engine's message about the original bytes.
fn analyse(binary: &[u8]) -> Result<Analysis, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut bodies = Vec::new();
    // Each defined function's defined callees, or `None` if it calls through a table or
    // a reference, or tail-calls.
    let mut calls: Vec<Option<Vec<u32>>> = Vec::new();
    let mut a = Analysis {
        types: 0,
        imported_funcs: 0,
        globals: 0,
        has_global_section: false,
        funcs: Vec::new(),
    };
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        match &payload {
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    if let wasmparser::TypeRef::Func(_) | wasmparser::TypeRef::FuncExact(_) =
                        import.map_err(err)?.ty
                    {
                        a.imported_funcs += 1;
                    }
                }
            }
            Payload::GlobalSection(_) => a.has_global_section = true,
            _ => {}
        }
        match validator.payload(&payload).map_err(err)? {
            ValidPayload::Func(to_validate, body) => bodies.push((to_validate, body)),
            ValidPayload::End(types) => {
                a.types = types.as_ref().core_type_count_in_module();
                a.globals = types.as_ref().global_count();
            }
            _ => {}
        }
    }
    // The bodies, validated and measured in parallel ([`crate::par_validate`]).
    let imported = a.imported_funcs;
    let framed = crate::par_validate(bodies, |v, body| frame_of(v, body, imported));
    for f in framed {
        let (frame, callees) = f?;
        a.funcs.push(frame);
        calls.push(callees);
    }
    for (f, chain) in top_chains(&a.funcs, &calls).into_iter().enumerate() {
        a.funcs[f].unmetered = chain.is_some();
    }
    Ok(a)
}

/// Validates one body and measures its frame: the frame, and its defined callees, or
/// `None` if it calls through a table or a reference, or tail-calls.
fn frame_of(
    v: &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    body: &wasmparser::FunctionBody,
    imported_funcs: u32,
) -> Result<(Frame, Option<Vec<u32>>), String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let r = v.resources();
    let ty = match r
        .type_id_of_function(v.index())
        .map(|id| r.sub_type_at_id(id))
    {
        Some(sub) => match &sub.composite_type.inner {
            wasmparser::CompositeInnerType::Func(f) => f.clone(),
            _ => return Err("a function without a function type".into()),
        },
        None => return Err("a function without a function type".into()),
    };
    let mut values = u64::try_from(ty.params().len()).unwrap_or(u64::MAX);
    let mut locals = body.get_locals_reader().map_err(err)?;
    for _ in 0..locals.get_count() {
        let offset = locals.original_position();
        let (count, t) = locals.read().map_err(err)?;
        v.define_locals(offset, count, t).map_err(err)?;
        values += u64::from(count);
    }
    let mut ops = body.get_operators_reader().map_err(err)?;
    let mut height = 0u32;
    let mut callees = Vec::new();
    let mut open = false;
    while !ops.eof() {
        let (op, offset) = ops.read_with_offset().map_err(err)?;
        v.op(offset, &op).map_err(err)?;
        height = height.max(v.operand_stack_height());
        match op {
            Operator::Call { function_index } if function_index >= imported_funcs => {
                callees.push(function_index - imported_funcs)
            }
            Operator::CallIndirect { .. }
            | Operator::CallRef { .. }
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. } => open = true,
            _ => {}
        }
    }
    callees.sort_unstable();
    callees.dedup();
    ops.finish().map_err(err)?;
    // At most 50,000 locals, 1,000 parameters and an operand stack no higher
    // than the body has bytes (wasmparser's limits): far below u32::MAX.
    let cost = u64::from(FRAME_BASE) + values + u64::from(height);
    let frame = Frame {
        cost: u32::try_from(cost).map_err(|_| "a frame too large to meter")?,
        unmetered: false,
        results: ty.results().to_vec(),
        params: ty.params().len() as u32,
    };
    Ok((frame, if open { None } else { Some(callees) }))
}

/// For each function, the units of the costliest chain of frames it can start (itself
/// and every nested call of a defined function), or `None` when that is unbounded or
/// unknown: it can recurse, reach a function that calls through a table or a reference
/// or tail-calls, or reach a function whose chain is over [`UNMETERED_MAX_COST`].
/// Iterative (a call graph can be deeper than the host's own stack).
fn top_chains(funcs: &[Frame], calls: &[Option<Vec<u32>>]) -> Vec<Option<u64>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        Open,
        Done(Option<u64>),
    }
    let mut state = vec![State::New; funcs.len()];
    for root in 0..funcs.len() {
        if state[root] != State::New {
            continue;
        }
        // (function, index of its next callee to look at)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = State::Open;
        while let Some(&mut (f, ref mut next)) = path.last_mut() {
            let Some(callees) = &calls[f] else {
                state[f] = State::Done(None);
                path.pop();
                continue;
            };
            if let Some(&c) = callees.get(*next) {
                *next += 1;
                let c = c as usize;
                match state[c] {
                    State::New => {
                        state[c] = State::Open;
                        path.push((c, 0));
                    }
                    // A call back into the path: recursion. Every function on the cycle
                    // sees a callee whose chain is unbounded, so all end `None`.
                    State::Open => {
                        state[f] = State::Done(None);
                        path.pop();
                    }
                    State::Done(_) => {}
                }
                continue;
            }
            let mut worst = 0u64;
            let mut bounded = true;
            for &c in callees {
                match state[c as usize] {
                    State::Done(Some(chain)) => worst = worst.max(chain),
                    _ => bounded = false,
                }
            }
            let units = u64::from(funcs[f].cost) + worst;
            state[f] =
                State::Done((bounded && units <= u64::from(UNMETERED_MAX_COST)).then_some(units));
            path.pop();
        }
    }
    state
        .into_iter()
        .map(|s| match s {
            State::Done(units) => units,
            _ => None,
        })
        .collect()
}

/// The module with stack metering (see the module docs), or why it could not be
/// rewritten (it is not a valid module). A module without functions of its own is
/// returned as it is: it has no frames to meter.
///
/// Everything the pass does not change is copied byte for byte (sections, operators,
/// custom sections such as `name`); only the counts of the sections it appends to are
/// written anew. Rejected: re-encoding the whole module through wasm-encoder's
/// `reencode` (more code on the path of every operator, for an output that can only
/// differ from the input where it must not).
pub fn meter(binary: &[u8]) -> Result<Vec<u8>, String> {
    let a = analyse(binary)?;
    if a.funcs.is_empty() {
        return Ok(binary.to_vec());
    }
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let defined = u32::try_from(a.funcs.len()).map_err(|_| "too many functions")?;
    let exhausted = a
        .imported_funcs
        .checked_add(defined)
        .ok_or("too many functions")?;
    let counter = a.globals;
    let unit_type = a.types;
    // `[] -> results` types for the blocks that wrap the bodies of functions with more
    // than one result, appended after the `[] -> []` type of the appended function.
    let mut multi: Vec<&[wasmparser::ValType]> = Vec::new();
    let mut multi_index: HashMap<&[wasmparser::ValType], u32> = HashMap::new();
    for f in &a.funcs {
        if f.results.len() > 1 && !multi_index.contains_key(f.results.as_slice()) {
            multi_index.insert(&f.results, unit_type + 1 + multi.len() as u32);
            multi.push(&f.results);
        }
    }
    let mut out = Vec::with_capacity(binary.len() + binary.len() / 8 + 64);
    let mut global_section_written = a.has_global_section;
    let mut code: Option<(u32, Vec<_>)> = None;
    let mut bodies = 0usize;
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        // A module without globals gets a global section (the counter only) before the
        // first section that must follow it.
        if !global_section_written {
            let after_globals = matches!(
                &payload,
                Payload::ExportSection(_)
                    | Payload::StartSection { .. }
                    | Payload::ElementSection(_)
                    | Payload::DataCountSection { .. }
                    | Payload::CodeSectionStart { .. }
                    | Payload::DataSection(_)
                    | Payload::End(_)
            );
            if after_globals {
                let mut entries = Vec::new();
                counter_global(&mut entries);
                section(&mut out, 6, 1, &[], &entries);
                global_section_written = true;
            }
        }
        match payload {
            Payload::Version { range, .. } => out.extend_from_slice(&binary[range]),
            Payload::TypeSection(r) => {
                let mut entries = Vec::new();
                func_type(&mut entries, &[])?;
                for results in &multi {
                    func_type(&mut entries, results)?;
                }
                let added = 1 + multi.len() as u32;
                append(&mut out, binary, 1, r.count(), r.range(), added, &entries)?;
            }
            Payload::FunctionSection(r) => {
                let mut entries = Vec::new();
                unit_type.encode(&mut entries);
                append(&mut out, binary, 3, r.count(), r.range(), 1, &entries)?;
            }
            Payload::GlobalSection(r) => {
                let mut entries = Vec::new();
                counter_global(&mut entries);
                append(&mut out, binary, 6, r.count(), r.range(), 1, &entries)?;
            }
            Payload::CodeSectionStart { count, .. } => code = Some((count, Vec::new())),
            Payload::CodeSectionEntry(body) => {
                let (count, pending) = code
                    .as_mut()
                    .ok_or("a function body outside the code section")?;
                let frame = a.funcs.get(bodies).ok_or("more bodies than functions")?;
                pending.push((body, frame));
                bodies += 1;
                if bodies == *count as usize {
                    // Every body at once, in parallel ([`crate::par_map`]), in order.
                    let rewritten = crate::par_map(std::mem::take(pending), |(body, frame)| {
                        let wrapper = match frame.results.as_slice() {
                            [] => BlockType::Empty,
                            [t] => BlockType::Result(val_type(*t)?),
                            many => BlockType::FunctionType(multi_index[many]),
                        };
                        if frame.unmetered {
                            Ok(binary[body.range()].to_vec())
                        } else {
                            rewrite_body(
                                binary,
                                &body,
                                frame.cost,
                                wrapper,
                                counter,
                                exhausted,
                                frame.params,
                            )
                        }
                    });
                    let mut section_bytes = Vec::new();
                    for new in rewritten {
                        let new = new?;
                        (new.len() as u32).encode(&mut section_bytes);
                        section_bytes.extend_from_slice(&new);
                    }
                    // The appended function: `unreachable`, no locals.
                    let trap = [0u8, 0x00, 0x0b];
                    (trap.len() as u32).encode(&mut section_bytes);
                    section_bytes.extend_from_slice(&trap);
                    section(&mut out, 10, *count + 1, &[], &section_bytes);
                    code = None;
                }
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.push(id);
                    (range.len() as u32).encode(&mut out);
                    out.extend_from_slice(&binary[range]);
                }
            }
        }
    }
    if code.is_some() || bodies != a.funcs.len() {
        return Err("the code section does not match the function section".into());
    }
    Ok(out)
}

/// `metered` (an output of [`meter`]) with its depth counter exported as a global named
/// `name`, so that a host that enters an instance again after a trap can set the counter
/// back to 0: a trap unwinds frames without running their epilogues, so the counter
/// keeps the units of every frame it unwound (all of them, at the limit, after an
/// exhaustion). A job never enters an instance again after a trap (the trap ends it);
/// the spec test suite does (`runtime/tests/spec_suite.rs`). Nothing else changes: the
/// export is appended to the export section (one is written, before the first section
/// that must follow it, when there is none). A module without functions of its own has
/// no counter and is returned as it is.
pub fn export_counter(metered: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut globals = 0u32;
    let mut defined = 0u32;
    for payload in Parser::new(0).parse_all(metered) {
        match payload.map_err(err)? {
            Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    if matches!(i.map_err(err)?.ty, wasmparser::TypeRef::Global(_)) {
                        globals += 1;
                    }
                }
            }
            Payload::GlobalSection(r) => globals += r.count(),
            Payload::FunctionSection(r) => defined += r.count(),
            _ => {}
        }
    }
    if defined == 0 {
        return Ok(metered.to_vec());
    }
    // The counter is the last global: `meter` appends it after every other.
    let counter = globals.checked_sub(1).ok_or("no stack counter")?;
    let mut entry = Vec::new();
    name.encode(&mut entry);
    entry.push(0x03); // a global
    counter.encode(&mut entry);
    let mut out = Vec::with_capacity(metered.len() + entry.len() + 8);
    let mut written = false;
    for payload in Parser::new(0).parse_all(metered) {
        let payload = payload.map_err(err)?;
        if !written
            && matches!(
                &payload,
                Payload::StartSection { .. }
                    | Payload::ElementSection(_)
                    | Payload::DataCountSection { .. }
                    | Payload::CodeSectionStart { .. }
                    | Payload::DataSection(_)
                    | Payload::End(_)
            )
        {
            section(&mut out, 7, 1, &[], &entry);
            written = true;
        }
        match payload {
            Payload::Version { range, .. } => out.extend_from_slice(&metered[range]),
            Payload::ExportSection(r) => {
                append(&mut out, metered, 7, r.count(), r.range(), 1, &entry)?;
                written = true;
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.push(id);
                    (range.len() as u32).encode(&mut out);
                    out.extend_from_slice(&metered[range]);
                }
            }
        }
    }
    Ok(out)
}

/// Writes section `id`: `count`, then `entries` (already encoded) and `more`.
fn section(out: &mut Vec<u8>, id: u8, count: u32, entries: &[u8], more: &[u8]) {
    let mut body = Vec::with_capacity(entries.len() + more.len() + 5);
    count.encode(&mut body);
    body.extend_from_slice(entries);
    body.extend_from_slice(more);
    out.push(id);
    body.encode(out);
}

/// Writes section `id` of the input (`count` entries in `range`) with `added` entries
/// (`entries`, encoded) after its own.
fn append(
    out: &mut Vec<u8>,
    binary: &[u8],
    id: u8,
    count: u32,
    range: std::ops::Range<usize>,
    added: u32,
    entries: &[u8],
) -> Result<(), String> {
    let own = &binary[range];
    let skip = leb_len(own)?;
    let count = count.checked_add(added).ok_or("too many entries")?;
    section(out, id, count, &own[skip..], entries);
    Ok(())
}

/// Bytes of the unsigned LEB128 number at the start of `bytes`.
fn leb_len(bytes: &[u8]) -> Result<usize, String> {
    bytes
        .iter()
        .take(5)
        .position(|b| b & 0x80 == 0)
        .map(|i| i + 1)
        .ok_or_else(|| "a malformed section count".into())
}

/// The counter: a mutable `i32` starting at 0.
fn counter_global(out: &mut Vec<u8>) {
    ValType::I32.encode(out);
    out.push(1); // mutable
    Instruction::I32Const(0).encode(out);
    Instruction::End.encode(out);
}

/// `[] -> results`.
fn func_type(out: &mut Vec<u8>, results: &[wasmparser::ValType]) -> Result<(), String> {
    out.push(0x60);
    0u32.encode(out);
    (results.len() as u32).encode(out);
    for t in results {
        val_type(*t)?.encode(out);
    }
    Ok(())
}

/// A result type of a function, for the block that wraps its body: numbers, vectors and
/// the two reference types of the engine's feature set (typed function references and
/// GC are off, so a module with any other type is refused by the engine anyway).
fn val_type(t: wasmparser::ValType) -> Result<ValType, String> {
    use wasmparser::ValType as P;
    Ok(match t {
        P::I32 => ValType::I32,
        P::I64 => ValType::I64,
        P::F32 => ValType::F32,
        P::F64 => ValType::F64,
        P::V128 => ValType::V128,
        P::Ref(r) if r == wasmparser::RefType::FUNCREF => ValType::Ref(RefType::FUNCREF),
        P::Ref(r) if r == wasmparser::RefType::EXTERNREF => ValType::Ref(RefType::EXTERNREF),
        P::Ref(r) => return Err(format!("stack metering: unsupported result type {r}")),
    })
}

/// The body between a prologue that charges the frame (and traps past the limit) and an
/// epilogue that releases it. The original body is wrapped in a block of the function's
/// result type, so that a branch to the function's label (which now names the block)
/// leaves through the epilogue; every `return` and tail call releases the frame first.
///
/// The prologue keeps the counter's value on entry in a local of its own, and releasing
/// the frame stores it back: the same value as subtracting the cost (every callee has
/// set the counter back before it returns, and a trap ends the run), without a load of
/// the counter on the way back. Why: a return that loaded the counter waited for the
/// store of the frame above it, a chain through memory as long as the calls; recursive
/// `fib(36)` under `wasmtime run` 48.0.8 with stack metering alone took 1.68 times the
/// unmetered run, 1.09 times with the local (fastest of 11 runs each, the module after
/// this pass and no other), and 1.67 against 1.45 times after all the passes. Rejected:
/// the depth carried in a parameter (no global at all; every signature, table type and
/// export changes, and the checkpoints' frames and the interpreter check read the
/// global).
fn rewrite_body(
    binary: &[u8],
    body: &wasmparser::FunctionBody,
    cost: u32,
    wrapper: BlockType,
    counter: u32,
    exhausted: u32,
    params: u32,
) -> Result<Vec<u8>, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut ops = body.get_operators_reader().map_err(err)?;
    // The local declarations, and one more `i32`: the counter as it was on entry.
    let mut lr = body.get_locals_reader().map_err(err)?;
    let mut decls = Vec::new();
    let mut declared = 0u64;
    for _ in 0..lr.get_count() {
        let (n, t) = lr.read().map_err(err)?;
        declared += u64::from(n);
        decls.push((n, t));
    }
    // A function with no room for one more local (WebAssembly's limit) releases its frame
    // by subtracting the cost from the counter, as before the local: the same value
    // (found by review: refusing such a function refused modules that ran before).
    let saved = u64::from(params) + declared;
    let room = saved < MAX_LOCALS;
    let saved = saved as u32;
    let mut out = Vec::new();
    ((decls.len() + usize::from(room)) as u32).encode(&mut out);
    for (n, t) in decls {
        n.encode(&mut out);
        val_type(t)?.encode(&mut out);
    }
    if room {
        1u32.encode(&mut out);
        ValType::I32.encode(&mut out);
    }
    let cost = i32::try_from(cost).map_err(|_| "a frame too large to meter")?;
    let release = |out: &mut Vec<u8>| {
        if room {
            Instruction::LocalGet(saved).encode(out);
        } else {
            Instruction::GlobalGet(counter).encode(out);
            Instruction::I32Const(cost).encode(out);
            Instruction::I32Sub.encode(out);
        }
        Instruction::GlobalSet(counter).encode(out);
    };
    Instruction::GlobalGet(counter).encode(&mut out);
    if room {
        Instruction::LocalTee(saved).encode(&mut out);
    }
    for i in [
        Instruction::I32Const(cost),
        Instruction::I32Add,
        Instruction::GlobalSet(counter),
        Instruction::GlobalGet(counter),
        Instruction::I32Const(STACK_LIMIT as i32),
        Instruction::I32GtU,
        Instruction::If(BlockType::Empty),
        Instruction::Call(exhausted),
        Instruction::End,
        Instruction::Block(wrapper),
    ] {
        i.encode(&mut out);
    }
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read().map_err(err)?;
        let bytes = &binary[start..ops.original_position()];
        match op {
            Operator::Return
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. } => {
                release(&mut out);
                out.extend_from_slice(bytes);
            }
            // The body's own last `end` closes the wrapper block; the epilogue and the
            // function's `end` follow.
            Operator::End if ops.eof() => {
                out.extend_from_slice(bytes);
                release(&mut out);
                Instruction::End.encode(&mut out);
            }
            _ => out.extend_from_slice(bytes),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    // Pure rewriting checks. The tests that run metered modules (stack exhaustion, tail
    // calls, fuel, and the bound of native frames by the metered limit) are in
    // `runtime/tests/pass_stack.rs`: this crate has no engine, not even for its tests.
    use super::*;

    fn meter_wat(wat: &str) -> Vec<u8> {
        let binary = wat::parse_str(wat).unwrap();
        let metered = meter(&binary).unwrap();
        wasmparser::Validator::new_with_features(WasmFeatures::all())
            .validate_all(&metered)
            .unwrap();
        metered
    }

    /// The locals each defined function declares (parameters not counted).
    fn declared_locals(binary: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        for p in Parser::new(0).parse_all(binary) {
            if let Payload::CodeSectionEntry(body) = p.unwrap() {
                let mut r = body.get_locals_reader().unwrap();
                let mut n = 0;
                for _ in 0..r.get_count() {
                    n += r.read().unwrap().0;
                }
                out.push(n);
            }
        }
        out
    }

    /// A metered function keeps the counter's entry value in one more local; one with no
    /// room for it under WebAssembly's limit of 50,000 releases its frame by
    /// subtraction instead, and is still accepted (found by review: it was refused).
    #[test]
    fn the_entry_depth_takes_a_local_where_there_is_room_for_one() {
        let recursive = |locals: usize| {
            format!(
                "(module (func $f (param i32) (local {}) (call $f (local.get 0))))",
                "i32 ".repeat(locals)
            )
        };
        let roomy = meter_wat(&recursive(10));
        assert_eq!(declared_locals(&roomy)[0], 11);
        for full in [49_998, 49_999] {
            let metered = meter_wat(&recursive(full));
            let n = declared_locals(&metered)[0] as usize;
            // One parameter: room while parameter, locals and the new one fit.
            let room = 1 + full < 50_000;
            assert_eq!(n, full + usize::from(room), "{full}");
            assert!(n < 50_000);
        }
    }

    /// The exported global of `binary` named `name`, and the module's number of globals.
    fn exported_global(binary: &[u8], name: &str) -> (Option<u32>, u32) {
        let (mut found, mut globals) = (None, 0);
        for p in Parser::new(0).parse_all(binary) {
            match p.unwrap() {
                Payload::ImportSection(r) => {
                    for i in r.into_imports() {
                        if matches!(i.unwrap().ty, wasmparser::TypeRef::Global(_)) {
                            globals += 1;
                        }
                    }
                }
                Payload::GlobalSection(r) => globals += r.count(),
                Payload::ExportSection(r) => {
                    for e in r {
                        let e = e.unwrap();
                        if e.name == name && e.kind == wasmparser::ExternalKind::Global {
                            found = Some(e.index);
                        }
                    }
                }
                _ => {}
            }
        }
        (found, globals)
    }

    #[test]
    fn the_counter_is_exported_as_the_last_global_with_or_without_an_export_section() {
        for wat in [
            // No export section, no global section of its own, an imported global.
            r#"(module (import "m" "g" (global i32)) (func $f (call $f)))"#,
            // Exports, globals, and a start section after the exports.
            r#"(module (global i64 (i64.const 1)) (func $f (export "f") (call $f))
                (memory (export "m") 1) (start $f))"#,
        ] {
            let metered = meter_wat(wat);
            let out = export_counter(&metered, "depth").unwrap();
            wasmparser::Validator::new_with_features(WasmFeatures::all())
                .validate_all(&out)
                .unwrap();
            let (index, globals) = exported_global(&out, "depth");
            assert_eq!(index, Some(globals - 1), "{wat}");
            // Nothing else changes: the other exports are still there.
            if wat.contains("export") {
                assert!(exported_global(&out, "m").1 == globals);
            }
        }
        // No functions of its own: no counter, nothing exported.
        let bare = meter_wat(r#"(module (memory 1))"#);
        assert_eq!(export_counter(&bare, "depth").unwrap(), bare);
    }

    #[test]
    fn frame_costs_follow_the_rule() {
        let binary = wat::parse_str(
            r#"(module
                (func (param i32 i64))
                (func (param f32) (result i32) (local v128 v128 i32)
                    i32.const 1 i32.const 2 i32.const 3 i32.add i32.add)
                (func (result i32 i64) i32.const 0 i64.const 0))"#,
        )
        .unwrap();
        let a = analyse(&binary).unwrap();
        let costs: Vec<u32> = a.funcs.iter().map(|f| f.cost).collect();
        assert_eq!(
            costs,
            vec![FRAME_BASE + 2, FRAME_BASE + 1 + 3 + 3, FRAME_BASE + 2]
        );
    }

    /// Which functions are left unmetered: those whose every chain of calls is known,
    /// finite and within [`UNMETERED_MAX_COST`].
    #[test]
    fn only_bounded_chains_of_calls_are_unmetered() {
        let unmetered = |wat: &str| -> Vec<bool> {
            let binary = wat::parse_str(wat).unwrap();
            analyse(&binary)
                .unwrap()
                .funcs
                .iter()
                .map(|f| f.unmetered)
                .collect()
        };
        // A leaf, a helper calling helpers (and the host), a function reaching recursion,
        // the recursion itself, a function calling through a table, one calling it.
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "sched_yield" (func $host (result i32)))
            (type $t (func)) (table 1 funcref)
            (func $leaf)
            (func $helper (call $leaf) (drop (call $host)) (call $leaf))
            (func $reaches (call $helper) (call $rec))
            (func $rec (call $helper) (call $rec))
            (func $table (call_indirect (type $t) (i32.const 0)))
            (func $calls_table (call $leaf) (call $table)))"#;
        assert_eq!(unmetered(wat), vec![true, true, false, false, false, false]);
        // Mutual recursion, and a tail call.
        let wat = r#"(module (func $a (call $b)) (func $b (call $a))
            (func $tail (return_call $c)) (func $c))"#;
        assert_eq!(unmetered(wat), vec![false, false, false, true]);
        // A chain of frames: each of 80 functions costs FRAME_BASE + 1,000 locals and
        // calls the next; the chain from the first is over the limit, from the last few not.
        let n = 80;
        let mut wat = String::from("(module");
        for i in 0..n {
            let call = if i + 1 < n {
                format!("(call {})", i + 1)
            } else {
                String::new()
            };
            wat += &format!("(func (local {}) {call})", "i32 ".repeat(1000));
        }
        wat += ")";
        let cost = u64::from(FRAME_BASE) + 1000;
        let expected: Vec<bool> = (0..n)
            .map(|i| (n - i) as u64 * cost <= u64::from(UNMETERED_MAX_COST))
            .collect();
        assert!(expected.contains(&true) && expected.contains(&false));
        assert_eq!(unmetered(&wat), expected);
    }

    #[test]
    fn the_rewritten_module_is_valid_and_keeps_its_indices() {
        // Multi-value results, returns from nested blocks, a branch to the function's
        // label, a table, a tail call, a start function, no global section.
        let metered = meter_wat(
            r#"(module
                (type $t (func (param i32) (result i32)))
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (table 2 funcref)
                (elem (i32.const 0) $a $b)
                (func $a (type $t) local.get 0 local.get 0 i32.eqz br_if 0 return)
                (func $b (type $t) (block (drop (br_if 1 (i32.const 7) (local.get 0))))
                    (return_call_indirect (type $t) (local.get 0) (i32.const 0)))
                (func $two (result i32 i64) (i32.const 1) (i64.const 2) return)
                (func $start)
                (start $start)
                (export "b" (func $b)))"#,
        );
        let mut names = Vec::new();
        for p in Parser::new(0).parse_all(&metered) {
            if let Payload::ExportSection(r) = p.unwrap() {
                for e in r {
                    let e = e.unwrap();
                    names.push((e.name.to_string(), e.index));
                }
            }
        }
        assert_eq!(
            names,
            vec![("b".to_string(), 2)],
            "export indices unchanged"
        );
    }
}
