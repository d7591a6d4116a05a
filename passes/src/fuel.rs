//! Fuel metering in the module: the instruction count a verifier compares, counted by
//! code the pass writes into the module, with the count carried from call to call in a
//! parameter and a result rather than in memory.
//!
//! # Why
//!
//! The instruction count must be the same on every host, and the fuel limit must stop a
//! job at the same instruction everywhere. wasmtime's own fuel (`Config::consume_fuel`)
//! does both, but keeps the count in the store: every function loads it on entry, checks
//! it, and stores it on return, and every caller stores it before a call and loads it
//! after. The check on entry may call out of the function (when fuel runs out), so even
//! the smallest function gets a full frame, with callee-saved registers saved and
//! restored. On CPython running a loop of integer arithmetic that doubled the cost of
//! small functions: measured with callgrind (`wasmtime run` 48.0.8, 100,000 iterations
//! of `benches/workloads/py/intloop.py`), 1,406 M instructions without fuel, 2,338 M
//! with wasmtime's, 1,923 M with this pass (the module run by `wasmtime run` with a stub
//! refuel import). What is left is a subtraction per straight run of code and a check
//! per loop iteration, the price of counting every operator. Rejected: wasmtime's fuel
//! (that cost); counting in a global (the same loads and stores); checking on entry to
//! every function (the smallest ones then get full frames again: 2,295 M); counting
//! fewer things, e.g. only loop iterations and calls (the count would no longer be an
//! instruction count).
//!
//! # The rule
//!
//! Entering a function costs one unit, and every operator of the module one unit,
//! except `nop`, `drop`, `block`, `loop`, `else`, `end`, `unreachable` and `return`,
//! which cost none: wasmtime's own table, so that a run that returns has the count
//! wasmtime's fuel gives (`runtime/tests/pass_fuel.rs` compares them); `memory.fill`,
//! `memory.copy` and `memory.init` cost one more unit per byte, `table.fill`,
//! `table.copy`, `table.init` and `table.grow` one more per element. Only the module's own operators are counted: code the other passes
//! add (NaN canonicalization, stack metering) and this pass's own code are not.
//!
//! # How
//!
//! - Every function the module defines gets one more parameter and one more result, an
//!   `i64`: the fuel left when it is called and when it returns. A function keeps it in
//!   a local (a register, once compiled) and subtracts the cost of each straight run of
//!   operators at the run's end (before a branch, a call, `end`, `else`, `if`, `loop`).
//! - The fuel is *checked* (negative: out of fuel, or out of the slice the host handed
//!   out) at every loop header, on entry to every function that loops or calls a
//!   function of the module, directly or through a table, and after every call of a
//!   function that is not checked on entry (one that does neither, an import, or any
//!   function through a table). A function that neither loops nor calls runs a bounded
//!   number of operators, so it is not checked on entry: its caller checks right after
//!   the call, so that a function calling it many times is stopped too. After a call of
//!   a function that *is* checked on entry, and before some tail calls, a check too:
//!   see "Returns and tail calls". No loop, recursion or chain of calls escapes a
//!   check, and between two checks run at most the operators of two function bodies.
//! - A check that finds the fuel negative calls the host import `detwasm.refuel`, which
//!   hands out the next slice of the job's budget, checks the wall-clock deadline, or
//!   ends the run out of fuel (`detwasm_runtime::run`). Every other call of an import stores the
//!   fuel in the exported global `detwasm:fuel` first and loads it again after (the WASI
//!   host charges its own work there, `detwasm_runtime::wasi::host::HOST_BYTES_PER_FUEL`).
//! - The fuel is also stored in that global on entry to a checked function, before
//!   every call and before `unreachable`: a run that traps reports the count of the last
//!   of these, a point in the module's own code and so the same on every host. Rejected:
//!   storing before every operator that can trap (a store for most loads); storing at
//!   every loop header too (a store per iteration: the probe's integer loop 1.17x
//!   wasmtime's time with it); no store before a direct call of a function checked on
//!   entry, whose own store on entry (moved before the stack pass's prologue) gives every
//!   trap the same count (built and measured: `fib(30) - fib(20)` after all the passes
//!   1.5% fewer instructions, callgrind, but `fib(36)` 3% slower, 87 ms against 84 ms,
//!   medians of 15 interleaved `wasmtime run`s; CPython's integer loop 1.8% fewer
//!   instructions).
//! - Exported functions and the start function are called by the host with their
//!   original types: each gets a wrapper that reads the fuel from the global, calls the
//!   function and stores what is left. A function of the module reached through a table
//!   or `ref.func` is called with the fuel like any other; an import reached that way
//!   gets a wrapper that passes the fuel through the global.
//! - The import is added last among the imports, so every defined function's index
//!   moves up by one; every reference (calls, tables, elements, globals, exports, the
//!   start function) is rewritten. The `name` section, which would name the wrong
//!   functions, is dropped.
//!
//! # Returns and tail calls
//!
//! A check on entry bounds the way down a recursion, not the way back up: after a call
//! of a function checked on entry, the rest of the caller runs, returns, and the rest
//! of *its* caller runs, and so on. Without a check there, a recursion of depth D with
//! a straight tail of T operators after the recursive call ran D × T operators between
//! two checks (found by review: 15,000 frames of 5 M operators, 7.5e10 operators on a
//! budget of 2e5, deaf to `--timeout 0.5` for 20 s; the count was right, the bound was
//! not). So:
//!
//! - after a call of a function checked on entry, a check is *owed*. It is paid at the
//!   end of the straight run that follows the call, before the next branch, `if`,
//!   `else`, `end`, `return`, call or tail call, unless the run reaches a check first:
//!   a loop header, a bulk-memory operator's check, or the call of another function
//!   checked on entry (whose entry check comes before any of its operators). A branch
//!   to a loop header is checked there: `br` to a loop pays nothing more, `br_if` to a
//!   loop pays right after it, when not taken (paying before would check twice in a
//!   row on every iteration of a loop around a call: clang's `fib`, which turns one of
//!   its two recursive calls into a loop, ran 7.7% more instructions than without the
//!   rule that way, 5.3% this way).
//!   `unreachable` drops it (nothing runs after).
//! - before a tail call (`return_call`, `return_call_indirect`) of a function that is
//!   not checked on entry (one that neither loops nor calls, an import, any function
//!   through a table), a check. A tail call of a function checked on entry needs none.
//!
//! Why this makes "at most two function bodies between two checks" true. Between two
//! checks, no loop header is passed, so every activation runs a forward path through its
//! body: at most the body's operators. Take the operators run after a check X, made in
//! activation A:
//! - A calls a function checked on entry: its entry check ends the interval. A calls
//!   one that is not (no loop, no call: it returns at once): the check right after the
//!   call ends it, after A's part and that body: two.
//! - A returns to its caller C. If A is not checked on entry, C checks right after the
//!   call: A's part, one. If it is, C owes a check, paid before C's run leaves the
//!   straight line (before any call but one checked on entry, whose entry check pays
//!   it, before any branch, and before C itself returns): A's part and C's part, two.
//!   Before the rule C could return without a check, and so could its caller: the
//!   unbounded unwinding above.
//! - A tail-calls a function checked on entry: its entry check ends the interval. A
//!   tail-calls one that is not: A checks before, so the interval is that callee's body
//!   (or the host's call, whose work is charged) and then its return into A's caller C,
//!   which owes a check as above: two. Without the check before, A's part, the callee
//!   and C's part would make three; a chain of tail calls of functions checked on entry
//!   is checked at every link.
//! - An import checks after it returns; a call through a table checks after it returns
//!   (the callee may be one that is not checked on entry) and before, if owed.
//!
//! Cost: a compare and a branch on the fuel, which is in a register, per call of a
//! function checked on entry whose following run ends before another such call or a
//! branch to a loop: one per frame of clang's `fib` that recurses (on leaving its
//! loop). Measured with callgrind (instructions the CPU executes, minus a run that does
//! no work): `fib(30)` 85.1 M -> 89.6 M (+5.3%), CPython 3.12 running 100,000
//! iterations of `benches/workloads/py/intloop.py` 2,056 M -> 2,163 M (+5.2%): C code
//! tests a call's result right after it, so nearly every call of a function checked on
//! entry pays one. Rejected: a check right after every such call (the same
//! bound, one more check per call where calls follow each other, as in `fib`); a check
//! only where the caller's rest is long (a recursion with rests just under the threshold
//! unwinds depth × threshold operators unchecked: 262,144 frames of stack at most, so
//! not a bound of two bodies); a check at every function's exit (a check in every
//! frame, leaves included, where the rule needs one only in callers); counting the
//! caller's rest into the callee's entry check (a bound on the caller's rest only, the
//! caller's caller's rest still unchecked).
//!
//! A check never changes the count, only the point at which running out is noticed: the
//! counts of runs that return are the same as before the rule (and wasmtime's). A run
//! that goes past its budget is stopped earlier than before; a refuel can happen at an
//! owed check rather than at a later one, and the host writes the fuel global there
//! (`detwasm_runtime::meter`), so a trap that comes after it but before the module's next store
//! of the fuel reports the count at the refuel.

use std::collections::HashMap;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    BlockType, ConstExpr, Encode, EntityType, ExportKind, GlobalType, Instruction, Section, ValType,
};
use wasmparser::{Operator, Parser, Payload, TypeRef};

/// The version of this pass, named in `detwasm_runtime::engine::ENGINE_SETTINGS`. `-2`: checks
/// on the way back up from calls and before tail calls ("Returns and tail calls" above).
/// Runs that return keep their counts, but a run that traps or runs out between two of
/// the new checks can end otherwise than before (`out_of_fuel` where it trapped, another
/// count at a trap after a refuel), so the same job id must not name both. Rejected:
/// keeping `-1` and only salting the module cache (one job id, two possible receipts).
pub const PASS_VERSION: &str = "detwasm-fuel-2";

/// The import the pass adds: `(func (param i64) (result i64))`, called with the fuel
/// (negative) when a check finds it spent; returns the fuel to go on with.
pub const IMPORT_MODULE: &str = "detwasm";
/// See [`IMPORT_MODULE`].
pub const IMPORT_REFUEL: &str = "refuel";
/// The exported `(mut i64)` global that holds the fuel between the module and the host.
pub const EXPORT_FUEL: &str = "detwasm:fuel";
/// The module's start function, exported under this name instead of being the start
/// section's: the host instantiates, then calls it, so that the fuel global can be read
/// however it ends (an instance whose start function traps is never returned).
pub const EXPORT_START: &str = "detwasm:start";

/// What the pass needs to know of the module before rewriting it.
#[derive(Default)]
struct Module {
    /// Parameters and results of every type of the type section.
    types: Vec<(Vec<ValType>, Vec<ValType>)>,
    /// Type index of each imported function.
    imported: Vec<u32>,
    /// Type index of each defined function.
    defined: Vec<u32>,
    globals: u32,
    has_import_section: bool,
    has_global_section: bool,
    has_export_section: bool,
    /// Imported functions used as values (tables, elements, globals, `ref.func`): each
    /// gets a wrapper that takes and returns the fuel.
    imports_as_values: Vec<u32>,
    /// Defined functions called by the host (exports, start): each gets a wrapper with
    /// its original type.
    host_called: Vec<u32>,
    /// The start function.
    start: Option<u32>,
    /// Each defined function: whether it runs a bounded number of operators (no loop,
    /// no call of a function of the module, direct, indirect or tail), and so is not
    /// checked on entry (its callers check after calling it).
    bounded: Vec<bool>,
    /// Functions `ref.func` names in code: declared again under their new indices.
    code_refs: Vec<u32>,
    has_element_section: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The module with fuel metering (see the module docs), or why it could not be
/// rewritten. A module without functions of its own is returned as it is: it runs no
/// instruction (the host then finds no fuel global and counts none).
pub fn meter(binary: &[u8]) -> Result<Vec<u8>, String> {
    let m = analyse(binary)?;
    if m.defined.is_empty() {
        return Ok(binary.to_vec());
    }
    Rewriter::new(m).run(binary)
}

fn analyse(binary: &[u8]) -> Result<Module, String> {
    // The module must be valid before it is rewritten: an index out of range in the
    // original (a label, a global, a function) would name, after the rewrite, what the
    // pass added (the function's own label, the fuel global, a wrapper) and hand the
    // guest its own fuel. The engine validates the result again with its own features.
    // Sections are validated in order; function bodies after, in parallel
    // ([`crate::par_validate`]), each with what the walk below needs of it.
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    let mut bodies = Vec::new();
    let mut m = Module::default();
    let mut values: Vec<u32> = Vec::new();
    let mut host: Vec<u32> = Vec::new();
    let mut rt = RoundtripReencoder;
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        if let wasmparser::ValidPayload::Func(f, body) = validator.payload(&payload).map_err(err)? {
            bodies.push((f, body));
        }
        match payload {
            Payload::TypeSection(r) => {
                for group in r {
                    for sub in group.map_err(err)?.into_types() {
                        match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                let p = f.params().iter().map(|t| rt.val_type(*t));
                                let q = f.results().iter().map(|t| RoundtripReencoder.val_type(*t));
                                m.types.push((
                                    p.collect::<Result<_, _>>().map_err(err)?,
                                    q.collect::<Result<_, _>>().map_err(err)?,
                                ));
                            }
                            _ => return Err("a type that is not a function type".into()),
                        }
                    }
                }
            }
            Payload::ImportSection(r) => {
                m.has_import_section = true;
                for import in r.into_imports() {
                    match import.map_err(err)?.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => m.imported.push(t),
                        TypeRef::Global(_) => m.globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    m.defined.push(t.map_err(err)?);
                }
            }
            Payload::TableSection(r) => {
                for t in r {
                    if let wasmparser::TableInit::Expr(e) = t.map_err(err)?.init {
                        crate::ref_funcs_in_expr(&e, &mut values).map_err(err)?;
                    }
                }
            }
            Payload::GlobalSection(r) => {
                m.has_global_section = true;
                for g in r {
                    let g = g.map_err(err)?;
                    m.globals += 1;
                    crate::ref_funcs_in_expr(&g.init_expr, &mut values).map_err(err)?;
                }
            }
            Payload::ExportSection(r) => {
                m.has_export_section = true;
                for e in r {
                    let e = e.map_err(err)?;
                    if e.name == EXPORT_FUEL || e.name == EXPORT_START {
                        return Err(format!(
                            "the module exports `{}`, a name detwasm reserves",
                            e.name
                        ));
                    }
                    if e.kind == wasmparser::ExternalKind::Func {
                        host.push(e.index);
                    }
                }
            }
            Payload::StartSection { func, .. } => {
                m.start = Some(func);
                host.push(func);
            }
            Payload::ElementSection(r) => {
                m.has_element_section = true;
                crate::ref_funcs_in_elements(r, &mut values).map_err(err)?;
            }
            _ => {}
        }
    }
    let imported = m.imported.len() as u32;
    let walked = crate::par_validate(bodies, |v, body| walk_body(v, body, imported));
    for w in walked {
        let (bounded, refs) = w?;
        values.extend_from_slice(&refs);
        m.code_refs.extend(refs);
        m.bounded.push(bounded);
    }
    m.code_refs.sort_unstable();
    m.code_refs.dedup();
    values.retain(|&f| f < imported);
    values.sort_unstable();
    values.dedup();
    m.imports_as_values = values;
    host.retain(|&f| f >= imported);
    host.sort_unstable();
    host.dedup();
    m.host_called = host;
    for &t in m.defined.iter().chain(&m.imported) {
        if m.types.get(t as usize).is_none() {
            return Err("a function of an unknown type".into());
        }
    }
    for (p, r) in &m.types {
        if p.len() >= 1000 || r.len() >= 1000 {
            return Err(
                "a function type with 1,000 parameters or results leaves no room for the \
                 fuel (wasm allows at most 1,000)"
                    .into(),
            );
        }
    }
    Ok(m)
}

/// Validates one body and walks it: whether it runs a bounded number of operators (see
/// [`Module::bounded`]), and the functions its `ref.func`s name.
fn walk_body(
    v: &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    body: &wasmparser::FunctionBody,
    imported: u32,
) -> Result<(bool, Vec<u32>), String> {
    v.validate(body).map_err(err)?;
    let mut r = body.get_operators_reader().map_err(err)?;
    let mut bounded = true;
    let mut refs = Vec::new();
    while !r.eof() {
        match r.read().map_err(err)? {
            Operator::RefFunc { function_index } => refs.push(function_index),
            Operator::Call { function_index } if function_index >= imported => bounded = false,
            Operator::Loop { .. }
            | Operator::CallIndirect { .. }
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. } => bounded = false,
            Operator::CallRef { .. } | Operator::ReturnCallRef { .. } => {
                return Err("typed function references are not supported".into())
            }
            _ => {}
        }
    }
    Ok((bounded, refs))
}

/// Rewrites the module: index maps (a [`Reencode`]) and the sections.
struct Rewriter {
    m: Module,
    /// Index of the fuel global.
    fuel_global: u32,
    /// Index of the refuel import.
    refuel: u32,
    /// Wrapper index of each host-called defined function (by old index).
    host_wrapper: HashMap<u32, u32>,
    /// Wrapper index of each import used as a value.
    value_wrapper: HashMap<u32, u32>,
    /// `[] -> results` types added for multi-value body blocks, by results.
    multi: Vec<Vec<ValType>>,
}

impl Reencode for Rewriter {
    type Error = std::convert::Infallible;

    /// References to functions outside code (tables, elements, globals): defined
    /// functions move up by one, imports used as values become their wrappers.
    fn function_index(
        &mut self,
        f: u32,
    ) -> Result<u32, wasm_encoder::reencode::Error<Self::Error>> {
        Ok(self.value_index(f))
    }
}

impl Rewriter {
    fn new(m: Module) -> Self {
        let imported = m.imported.len() as u32;
        let refuel = imported;
        let mut next = imported + 1 + m.defined.len() as u32;
        let mut host_wrapper = HashMap::new();
        for &f in &m.host_called {
            host_wrapper.insert(f, next);
            next += 1;
        }
        let mut value_wrapper = HashMap::new();
        for &f in &m.imports_as_values {
            value_wrapper.insert(f, next);
            next += 1;
        }
        let mut multi: Vec<Vec<ValType>> = Vec::new();
        for &t in &m.defined {
            let results = &m.types[t as usize].1;
            if results.len() > 1 && !multi.contains(results) {
                multi.push(results.clone());
            }
        }
        Rewriter {
            fuel_global: m.globals,
            refuel,
            host_wrapper,
            value_wrapper,
            multi,
            m,
        }
    }

    fn imported(&self) -> u32 {
        self.m.imported.len() as u32
    }

    /// A defined function's new index.
    fn defined_index(&self, f: u32) -> u32 {
        if f < self.imported() {
            f
        } else {
            f + 1
        }
    }

    /// A function used as a value: imports through their wrappers.
    fn value_index(&self, f: u32) -> u32 {
        match self.value_wrapper.get(&f) {
            Some(&w) => w,
            None => self.defined_index(f),
        }
    }

    fn ntypes(&self) -> u32 {
        self.m.types.len() as u32
    }

    /// The type of a function that takes and returns the fuel, for original type `t`.
    fn fueled_type(&self, t: u32) -> u32 {
        self.ntypes() + t
    }

    fn refuel_type(&self) -> u32 {
        2 * self.ntypes()
    }

    fn multi_type(&self, results: &[ValType]) -> u32 {
        let i = self
            .multi
            .iter()
            .position(|r| r == results)
            .expect("collected");
        2 * self.ntypes() + 1 + i as u32
    }

    fn run(mut self, binary: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(binary.len() + binary.len() / 4 + 256);
        let mut imports_written = self.m.has_import_section;
        let mut globals_written = self.m.has_global_section;
        let mut exports_written = self.m.has_export_section;
        let mut elements_written = self.m.has_element_section || self.m.code_refs.is_empty();
        let mut code: Option<(u32, Vec<_>)> = None;
        let mut bodies = 0u32;
        for payload in Parser::new(0).parse_all(binary) {
            let payload = payload.map_err(err)?;
            let order = crate::section_order(&payload);
            // Sections the module lacks, written where they belong.
            if !imports_written && order > 2 {
                let mut s = wasm_encoder::ImportSection::new();
                self.add_refuel(&mut s);
                s.append_to(&mut out);
                imports_written = true;
            }
            if !globals_written && order > 6 {
                let mut s = wasm_encoder::GlobalSection::new();
                add_fuel_global(&mut s);
                s.append_to(&mut out);
                globals_written = true;
            }
            if !exports_written && order > 7 {
                let mut s = wasm_encoder::ExportSection::new();
                self.add_exports(&mut s);
                s.append_to(&mut out);
                exports_written = true;
            }
            if !elements_written && order > 9 {
                let mut s = wasm_encoder::ElementSection::new();
                self.declare_code_refs(&mut s);
                s.append_to(&mut out);
                elements_written = true;
            }
            match payload {
                Payload::Version { range, .. } => out.extend_from_slice(&binary[range]),
                Payload::TypeSection(_) => {
                    let mut s = wasm_encoder::TypeSection::new();
                    for (p, r) in &self.m.types {
                        s.ty().function(p.clone(), r.clone());
                    }
                    for (p, r) in &self.m.types {
                        let mut p = p.clone();
                        p.push(ValType::I64);
                        let mut r = r.clone();
                        r.push(ValType::I64);
                        s.ty().function(p, r);
                    }
                    s.ty().function([ValType::I64], [ValType::I64]);
                    for r in &self.multi {
                        s.ty().function([], r.clone());
                    }
                    s.append_to(&mut out);
                }
                Payload::ImportSection(r) => {
                    let mut s = wasm_encoder::ImportSection::new();
                    self.parse_import_section(&mut s, r).map_err(err)?;
                    self.add_refuel(&mut s);
                    s.append_to(&mut out);
                }
                Payload::FunctionSection(_) => {
                    let mut s = wasm_encoder::FunctionSection::new();
                    for &t in &self.m.defined {
                        s.function(self.fueled_type(t));
                    }
                    for &f in &self.m.host_called {
                        s.function(self.m.defined[(f - self.imported()) as usize]);
                    }
                    for &f in &self.m.imports_as_values {
                        s.function(self.fueled_type(self.m.imported[f as usize]));
                    }
                    s.append_to(&mut out);
                }
                Payload::TableSection(r) => {
                    let mut s = wasm_encoder::TableSection::new();
                    self.parse_table_section(&mut s, r).map_err(err)?;
                    s.append_to(&mut out);
                }
                Payload::GlobalSection(r) => {
                    let mut s = wasm_encoder::GlobalSection::new();
                    self.parse_global_section(&mut s, r).map_err(err)?;
                    add_fuel_global(&mut s);
                    s.append_to(&mut out);
                }
                Payload::ExportSection(r) => {
                    let mut s = wasm_encoder::ExportSection::new();
                    for e in r {
                        let e = e.map_err(err)?;
                        let kind = RoundtripReencoder.export_kind(e.kind).map_err(err)?;
                        let index = match e.kind {
                            wasmparser::ExternalKind::Func if e.index >= self.imported() => {
                                self.host_wrapper[&e.index]
                            }
                            _ => e.index,
                        };
                        s.export(e.name, kind, index);
                    }
                    self.add_exports(&mut s);
                    s.append_to(&mut out);
                }
                Payload::StartSection { .. } => {}
                Payload::ElementSection(r) => {
                    let mut s = wasm_encoder::ElementSection::new();
                    self.parse_element_section(&mut s, r).map_err(err)?;
                    self.declare_code_refs(&mut s);
                    s.append_to(&mut out);
                }
                Payload::CodeSectionStart { count, .. } => code = Some((count, Vec::new())),
                Payload::CodeSectionEntry(body) => {
                    let (count, pending) =
                        code.as_mut().ok_or("a body outside the code section")?;
                    let count = *count;
                    let t = *self
                        .m
                        .defined
                        .get(bodies as usize)
                        .ok_or("more bodies than functions")?;
                    pending.push((body, bodies as usize, t));
                    bodies += 1;
                    if bodies == count {
                        // Every body at once, in parallel, written in order.
                        let this = &self;
                        let rewritten = crate::par_map(std::mem::take(pending), |(body, i, t)| {
                            this.body(binary, &body, i, t)
                        });
                        let mut bytes = Vec::new();
                        for f in rewritten {
                            let f = f?;
                            (f.len() as u32).encode(&mut bytes);
                            bytes.extend_from_slice(&f);
                        }
                        self.wrappers(&mut bytes);
                        let total = count
                            + self.m.host_called.len() as u32
                            + self.m.imports_as_values.len() as u32;
                        out.push(10);
                        let mut section = Vec::with_capacity(bytes.len() + 5);
                        total.encode(&mut section);
                        section.extend_from_slice(&bytes);
                        section.encode(&mut out);
                        code = None;
                    }
                }
                // Custom sections (names, debug information) mean nothing to the engine
                // and would be held again by every later pass and by the compile: dropped
                // (the `name` section would also name the wrong functions).
                Payload::CustomSection(_) => {}
                Payload::End(_) => {}
                other => {
                    if let Some((id, range)) = other.as_section() {
                        out.push(id);
                        (range.len() as u32).encode(&mut out);
                        out.extend_from_slice(&binary[range]);
                    }
                }
            }
        }
        if code.is_some() || bodies as usize != self.m.defined.len() {
            return Err("the code section does not match the function section".into());
        }
        Ok(out)
    }

    /// Declares, under their new indices, the functions `ref.func` names in code: an
    /// exported function counts as declared in the original, but its export now names
    /// its wrapper.
    fn declare_code_refs(&self, s: &mut wasm_encoder::ElementSection) {
        if self.m.code_refs.is_empty() {
            return;
        }
        let funcs: Vec<u32> = self
            .m
            .code_refs
            .iter()
            .map(|&f| self.value_index(f))
            .collect();
        s.declared(wasm_encoder::Elements::Functions(funcs.into()));
    }

    fn add_refuel(&self, s: &mut wasm_encoder::ImportSection) {
        s.import(
            IMPORT_MODULE,
            IMPORT_REFUEL,
            EntityType::Function(self.refuel_type()),
        );
    }

    fn add_exports(&self, s: &mut wasm_encoder::ExportSection) {
        s.export(EXPORT_FUEL, ExportKind::Global, self.fuel_global);
        if let Some(f) = self.m.start {
            let f = self.host_wrapper.get(&f).copied().unwrap_or(f);
            s.export(EXPORT_START, ExportKind::Func, f);
        }
    }

    /// The wrappers: host-called functions with their original types, then imports
    /// used as values with the fuel.
    fn wrappers(&self, bytes: &mut Vec<u8>) {
        let g = self.fuel_global;
        for &f in &self.m.host_called {
            let t = self.m.defined[(f - self.imported()) as usize];
            let mut b = vec![0u8];
            for i in 0..self.m.types[t as usize].0.len() as u32 {
                Instruction::LocalGet(i).encode(&mut b);
            }
            Instruction::GlobalGet(g).encode(&mut b);
            Instruction::Call(self.defined_index(f)).encode(&mut b);
            Instruction::GlobalSet(g).encode(&mut b);
            Instruction::End.encode(&mut b);
            (b.len() as u32).encode(bytes);
            bytes.extend_from_slice(&b);
        }
        for &f in &self.m.imports_as_values {
            let t = self.m.imported[f as usize];
            let params = self.m.types[t as usize].0.len() as u32;
            let mut b = vec![0u8];
            for i in 0..params {
                Instruction::LocalGet(i).encode(&mut b);
            }
            Instruction::LocalGet(params).encode(&mut b);
            Instruction::GlobalSet(g).encode(&mut b);
            Instruction::Call(f).encode(&mut b);
            Instruction::GlobalGet(g).encode(&mut b);
            Instruction::End.encode(&mut b);
            (b.len() as u32).encode(bytes);
            bytes.extend_from_slice(&b);
        }
    }

    /// One function body, metered.
    fn body(
        &self,
        binary: &[u8],
        body: &wasmparser::FunctionBody,
        body_index: usize,
        t: u32,
    ) -> Result<Vec<u8>, String> {
        let (params, results) = self.m.types[t as usize].clone();
        let nparams = params.len() as u32;
        let fuel = nparams;
        let mut out = Vec::new();
        let mut locals = body.get_locals_reader().map_err(err)?;
        let mut decls: Vec<(u32, ValType)> = Vec::new();
        let mut nlocals = u64::from(nparams) + 1;
        for _ in 0..locals.get_count() {
            let (n, ty) = locals.read().map_err(err)?;
            decls.push((n, RoundtripReencoder.val_type(ty).map_err(err)?));
            nlocals += u64::from(n);
        }
        // wasmparser's (and so wasmtime's) limit on a function's locals, parameters
        // included: the fuel and the scratch local must fit under it.
        if nlocals + 1 > 50_000 {
            return Err(format!(
                "a function with {} locals leaves no room for the two the fuel metering \
                 needs (limit of 50000)",
                nlocals - 1
            ));
        }
        let scratch = nlocals as u32;
        decls.push((1, ValType::I32));
        (decls.len() as u32).encode(&mut out);
        for (n, ty) in &decls {
            n.encode(&mut out);
            ty.encode(&mut out);
        }
        let local = |l: u32| if l >= nparams { l + 1 } else { l };
        let g = self.fuel_global;
        let refuel = self.refuel;
        let flush = |out: &mut Vec<u8>, pending: &mut i64| {
            if *pending != 0 {
                Instruction::LocalGet(fuel).encode(out);
                Instruction::I64Const(*pending).encode(out);
                Instruction::I64Sub.encode(out);
                Instruction::LocalSet(fuel).encode(out);
                *pending = 0;
            }
        };
        let check = |out: &mut Vec<u8>| {
            for i in [
                Instruction::LocalGet(fuel),
                Instruction::I64Const(0),
                Instruction::I64LtS,
                Instruction::If(BlockType::Empty),
                Instruction::LocalGet(fuel),
                Instruction::Call(refuel),
                Instruction::LocalSet(fuel),
                Instruction::End,
            ] {
                i.encode(out);
            }
        };
        // Checked on entry unless it neither loops nor calls a function of the module.
        let imported = self.imported();
        let bounded = self.m.bounded[body_index];
        // The fuel is stored for the host (the count a trap reports) on entry to a
        // checked function, before every call and before `unreachable`.
        let store = |out: &mut Vec<u8>| {
            Instruction::LocalGet(fuel).encode(out);
            Instruction::GlobalSet(g).encode(out);
        };
        if !bounded {
            store(&mut out);
            check(&mut out);
        }
        // An indirect call's operands end with the table index: the fuel goes under it.
        let fuel_under_index = |out: &mut Vec<u8>| {
            Instruction::LocalSet(scratch).encode(out);
            Instruction::LocalGet(fuel).encode(out);
            Instruction::LocalGet(scratch).encode(out);
        };
        let wrapper = match results.as_slice() {
            [] => BlockType::Empty,
            [r] => BlockType::Result(*r),
            many => BlockType::FunctionType(self.multi_type(many)),
        };
        Instruction::Block(wrapper).encode(&mut out);
        let mut ops = body.get_operators_reader().map_err(err)?;
        // Entering a function costs one unit, as in wasmtime.
        let mut pending: i64 = 1;
        // Whether a call of a function checked on entry has returned since the last
        // check of this straight run: that check is owed, and paid at the run's end (see
        // the module docs, "Returns and tail calls").
        let mut owed = false;
        let pay = |out: &mut Vec<u8>, owed: &mut bool| {
            if std::mem::take(owed) {
                check(out);
            }
        };
        // Whether each enclosing label is a loop's (innermost last; the function's own
        // first): a branch to a loop header is checked there, and pays what is owed.
        let mut labels: Vec<bool> = vec![false];
        let to_loop = |labels: &[bool], depth: u32| {
            (depth as usize)
                .checked_add(1)
                .and_then(|d| labels.len().checked_sub(d))
                .is_some_and(|i| labels[i])
        };
        while !ops.eof() {
            let start = ops.original_position();
            let op = ops.read().map_err(err)?;
            let bytes = &binary[start..ops.original_position()];
            pending += cost(&op);
            match op {
                Operator::Block { .. }
                | Operator::If { .. }
                | Operator::Try { .. }
                | Operator::TryTable { .. } => labels.push(false),
                Operator::Loop { .. } => labels.push(true),
                Operator::End | Operator::Delegate { .. } => {
                    labels.pop();
                }
                _ => {}
            }
            match op {
                Operator::LocalGet { local_index } => {
                    Instruction::LocalGet(local(local_index)).encode(&mut out)
                }
                Operator::LocalSet { local_index } => {
                    Instruction::LocalSet(local(local_index)).encode(&mut out)
                }
                Operator::LocalTee { local_index } => {
                    Instruction::LocalTee(local(local_index)).encode(&mut out)
                }
                Operator::RefFunc { function_index } => {
                    Instruction::RefFunc(self.value_index(function_index)).encode(&mut out)
                }
                Operator::Call { function_index } if function_index < imported => {
                    flush(&mut out, &mut pending);
                    pay(&mut out, &mut owed);
                    Instruction::LocalGet(fuel).encode(&mut out);
                    Instruction::GlobalSet(g).encode(&mut out);
                    out.extend_from_slice(bytes);
                    Instruction::GlobalGet(g).encode(&mut out);
                    Instruction::LocalSet(fuel).encode(&mut out);
                    check(&mut out);
                }
                Operator::Call { function_index } => {
                    flush(&mut out, &mut pending);
                    let bounded = self.m.bounded[(function_index - imported) as usize];
                    if bounded {
                        pay(&mut out, &mut owed);
                    }
                    store(&mut out);
                    Instruction::LocalGet(fuel).encode(&mut out);
                    Instruction::Call(self.defined_index(function_index)).encode(&mut out);
                    Instruction::LocalSet(fuel).encode(&mut out);
                    if bounded {
                        check(&mut out);
                    } else {
                        // The callee checked on entry: what ran since is its own code,
                        // and this check, owed from its return, is paid at the end of
                        // the run that follows.
                        owed = true;
                    }
                }
                Operator::CallIndirect {
                    type_index,
                    table_index,
                } => {
                    flush(&mut out, &mut pending);
                    pay(&mut out, &mut owed);
                    store(&mut out);
                    fuel_under_index(&mut out);
                    Instruction::CallIndirect {
                        type_index: self.fueled_type(type_index),
                        table_index,
                    }
                    .encode(&mut out);
                    Instruction::LocalSet(fuel).encode(&mut out);
                    check(&mut out);
                }
                Operator::ReturnCall { function_index } if function_index < imported => {
                    flush(&mut out, &mut pending);
                    // A tail call of a function not checked on entry: checked before.
                    owed = false;
                    check(&mut out);
                    Instruction::LocalGet(fuel).encode(&mut out);
                    Instruction::GlobalSet(g).encode(&mut out);
                    Instruction::Call(function_index).encode(&mut out);
                    Instruction::GlobalGet(g).encode(&mut out);
                    Instruction::Return.encode(&mut out);
                }
                Operator::ReturnCall { function_index } => {
                    flush(&mut out, &mut pending);
                    // The callee's entry check pays what is owed; one that is not
                    // checked on entry is checked before.
                    owed = false;
                    if self.m.bounded[(function_index - imported) as usize] {
                        check(&mut out);
                    }
                    store(&mut out);
                    Instruction::LocalGet(fuel).encode(&mut out);
                    Instruction::ReturnCall(self.defined_index(function_index)).encode(&mut out);
                }
                Operator::ReturnCallIndirect {
                    type_index,
                    table_index,
                } => {
                    flush(&mut out, &mut pending);
                    // The callee may not be checked on entry: checked before.
                    owed = false;
                    check(&mut out);
                    store(&mut out);
                    fuel_under_index(&mut out);
                    Instruction::ReturnCallIndirect {
                        type_index: self.fueled_type(type_index),
                        table_index,
                    }
                    .encode(&mut out);
                }
                Operator::Return => {
                    flush(&mut out, &mut pending);
                    pay(&mut out, &mut owed);
                    Instruction::LocalGet(fuel).encode(&mut out);
                    out.extend_from_slice(bytes);
                }
                Operator::Unreachable => {
                    flush(&mut out, &mut pending);
                    // Nothing runs after it: what is owed is dropped.
                    owed = false;
                    Instruction::LocalGet(fuel).encode(&mut out);
                    Instruction::GlobalSet(g).encode(&mut out);
                    out.extend_from_slice(bytes);
                }
                Operator::Loop { .. } => {
                    flush(&mut out, &mut pending);
                    out.extend_from_slice(bytes);
                    // Paid by the header's check.
                    owed = false;
                    check(&mut out);
                }
                Operator::Br { relative_depth } if to_loop(&labels, relative_depth) => {
                    // Paid by the loop header's check.
                    flush(&mut out, &mut pending);
                    owed = false;
                    out.extend_from_slice(bytes);
                }
                Operator::BrIf { relative_depth } if to_loop(&labels, relative_depth) => {
                    // Taken, paid by the loop header's check; not taken, right after
                    // (before it, the two would be checked in a row: `fib`'s loop).
                    flush(&mut out, &mut pending);
                    out.extend_from_slice(bytes);
                    pay(&mut out, &mut owed);
                }
                Operator::If { .. }
                | Operator::Else
                | Operator::Br { .. }
                | Operator::BrIf { .. }
                | Operator::BrTable { .. } => {
                    flush(&mut out, &mut pending);
                    pay(&mut out, &mut owed);
                    out.extend_from_slice(bytes);
                }
                Operator::End => {
                    flush(&mut out, &mut pending);
                    pay(&mut out, &mut owed);
                    out.extend_from_slice(bytes);
                    if ops.eof() {
                        // The body's own `end` closed the wrapper block.
                        Instruction::LocalGet(fuel).encode(&mut out);
                        Instruction::End.encode(&mut out);
                    }
                }
                Operator::MemoryFill { .. }
                | Operator::MemoryCopy { .. }
                | Operator::MemoryInit { .. }
                | Operator::TableFill { .. }
                | Operator::TableCopy { .. }
                | Operator::TableInit { .. }
                | Operator::TableGrow { .. } => {
                    // The count (bytes or elements, an `i32`: no 64-bit memories or
                    // tables in the engine's feature set) is on top of the stack.
                    flush(&mut out, &mut pending);
                    Instruction::LocalSet(scratch).encode(&mut out);
                    Instruction::LocalGet(fuel).encode(&mut out);
                    Instruction::LocalGet(scratch).encode(&mut out);
                    Instruction::I64ExtendI32U.encode(&mut out);
                    Instruction::I64Sub.encode(&mut out);
                    Instruction::LocalSet(fuel).encode(&mut out);
                    // Also pays what is owed.
                    owed = false;
                    check(&mut out);
                    Instruction::LocalGet(scratch).encode(&mut out);
                    out.extend_from_slice(bytes);
                }
                _ => out.extend_from_slice(bytes),
            }
        }
        Ok(out)
    }
}

/// The fuel global: `(mut i64)`, 0 until the host sets it (a check that finds 0 spent
/// asks the host for the first slice).
fn add_fuel_global(s: &mut wasm_encoder::GlobalSection) {
    s.global(
        GlobalType {
            val_type: ValType::I64,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i64_const(0),
    );
}

/// Units an operator costs (see the module docs): wasmtime 48's default table.
fn cost(op: &Operator) -> i64 {
    match op {
        Operator::Nop
        | Operator::Drop
        | Operator::Block { .. }
        | Operator::Loop { .. }
        | Operator::Unreachable
        | Operator::Return
        | Operator::Else
        | Operator::End => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    // Pure rewriting checks. The tests that run metered modules (counts against
    // wasmtime's fuel, running out, traps) are in `runtime/tests/pass_fuel.rs`: this
    // crate has no engine, not even for its tests.
    use super::*;

    /// An invalid module is refused before it is rewritten: `br 1` out of range would
    /// otherwise leave through the function's own label and return the guest's `i64`
    /// as its fuel (found by review).
    #[test]
    fn an_invalid_module_is_refused_before_the_rewrite() {
        // `wat` refuses the label itself: the bytes are made from a valid `br 0`.
        let mut valid = wat::parse_str(
            r#"(module (func $give (i64.const 0x7fffffffffffffff) (br 0) (drop))
                (func (export "f") (call $give) (loop $l (br $l))))"#,
        )
        .unwrap();
        // The `br 0` (0x0c 0x00), made `br 1`.
        let at = valid.windows(2).position(|w| w == [0x0c, 0x00]).unwrap();
        valid[at + 1] = 1;
        let e = meter(&valid).unwrap_err();
        assert!(e.contains("depth"), "{e}");
    }

    #[test]
    fn reserved_names_and_full_signatures_are_refused_with_the_reason() {
        let e = meter(&wat::parse_str(r#"(module (func (export "detwasm:fuel")))"#).unwrap());
        assert!(e.unwrap_err().contains("reserves"));
        let params = "i32 ".repeat(1000);
        let e = meter(&wat::parse_str(format!("(module (func (param {params})))")).unwrap());
        assert!(e.unwrap_err().contains("1,000"));
    }
}
