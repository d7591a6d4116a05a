//! NaN canonicalization where NaN bits can be observed, not after every operation.
//!
//! # Why
//!
//! WebAssembly lets a float operation that produces a NaN from non-NaN inputs, or from
//! NaN inputs, return any *arithmetic* NaN: x86 returns a negative "default NaN", ARM a
//! positive one, and both may pass an input's payload through. detwasm's contract is that
//! every such NaN is the canonical one (0x7fc00000 / 0x7ff8000000000000, lane by lane for
//! vectors), exactly as if the module canonicalized after every operation. Cranelift can
//! do that itself (`cranelift_nan_canonicalization`), and did until `detwasm-nan-1`: it
//! puts a compare and a select after *every* float operation, which made float-heavy code
//! about 3.5 times slower than plain wasmtime (n-body, `benches/run-vs-wasmtime.sh`).
//!
//! Most of those canonicalizations change nothing anyone can see. A NaN's bits matter only
//! where they leave the arithmetic: a NaN that is only added, compared, truncated or
//! dropped behaves the same whatever its payload (every arithmetic operation returns a NaN
//! for a NaN input, every comparison is false, `trunc` traps, `trunc_sat` gives 0). So
//! this pass canonicalizes, right after the operation, only the results that can reach a
//! place where their bits are observable; Cranelift's own canonicalization is off.
//!
//! # The rule
//!
//! *Producers* are the operations whose NaN result the engine used to canonicalize
//! ([`canon_kind`]: scalar and vector add, sub, mul, div, sqrt, min, max, ceil, floor,
//! trunc, nearest, promote, demote, relaxed madd/nmadd/min/max, the same list as
//! Cranelift's pass after wasmtime's translation). Each value a function holds (operand,
//! local, block result, loop parameter) is given a class; values that may hold the same
//! raw result share a class (a union-find over the whole function, so the analysis is
//! flow-insensitive and needs no fixpoint). A value flows without being observed through:
//!
//! - `local.set`/`local.get`/`local.tee`, `select`, block and `if` results, `br`/`br_if`/
//!   `br_table` values, loop parameters (the classes of every value that can arrive are
//!   joined);
//! - `abs`, `neg`, `pmin`/`pmax` (they return an operand's NaN, with another sign at most),
//!   `splat`, `extract_lane`, `replace_lane`, and the magnitude of `copysign`: each keeps
//!   "a NaN exactly where the canonical run has one" true;
//! - producers (a NaN in gives a NaN out, so their own inputs need no canonical bits),
//!   comparisons and (saturating, relaxed) truncations, which read only whether a lane is
//!   a NaN.
//!
//! Anything else that takes a float value observes its bits: stores, `reinterpret`, the
//! sign operand of `copysign`, arguments of calls, function results, `global.set`, every
//! integer or bitwise `v128` operation, and any operation this pass does not know. So
//! does a float operation whose lanes differ from the producer's (an `f64x2` result read
//! as `f32x4`: a payload bit becomes another lane's exponent). A producer whose class is
//! observed anywhere, or read with both lane widths, is canonicalized; the others are not.
//!
//! Why this equals canonicalizing everywhere, bit for bit: by induction over the run, a
//! value of a class with no unmarked producer has the same bits as in the canonicalizing
//! run (only producers and the operations above create float values, and each of them
//! keeps this), and a value of any other class is a NaN exactly where the canonicalizing
//! run's is (lane by lane) and equal to it everywhere else. Values of the second kind only
//! reach operations that cannot tell the difference. Proven on generated modules by the
//! self-fuzzer (`detwasm_fuzzing`, setup `eager`), against the engine with Cranelift's
//! canonicalization, bit for bit in results, globals and memories.
//!
//! Rejected: canonicalizing at the observation points instead of at the producers (a
//! class may mix raw results with values a load or `neg` made, whose non-canonical NaN
//! bits are the module's own and must be kept; canonicalizing there would change them);
//! a flow-sensitive analysis (more precise across reused locals, a fixpoint per function,
//! and compilers rarely reuse one local for a value that is stored and one that is not).
//!
//! # What it costs and changes
//!
//! Each canonicalization is the six instructions of [`emit_canonicalization`] and three
//! scratch locals (`f32`, `f64`, `v128`) are added to each function that needs one, so
//! instruction counts and frame costs ([`super::stack`]) include them, the same on every
//! host. NaN results of ceil/floor/trunc/nearest and relaxed madd on CPUs without
//! SSE4.1/FMA (where wasmtime calls a library function that Cranelift's pass did not
//! see) are now canonical too.
//!
//! Relaxed SIMD: on a job's path the [`super::relaxed`] pass runs just before this one and
//! replaces every relaxed operator with plain SIMD (`relaxed_madd` by `mul` and `add`,
//! `relaxed_min` by `min`, relaxed truncations by `trunc_sat`, ...), which this pass
//! treats like any other; the relaxed operators stay in its tables for modules given to
//! it directly.

use std::collections::HashMap;

use wasmparser::{
    BlockType, ModuleArity, Operator, Parser, Payload, ValidPayload, Validator, WasmFeatures,
    WasmModuleResources,
};

/// The version of this pass, named in `detwasm_runtime::engine::ENGINE_SETTINGS`: bumped whenever
/// which results are canonicalized, or the emitted code, changes.
pub const PASS_VERSION: &str = "detwasm-nan-2";

/// The canonical NaNs (positive, quiet, no payload).
pub const CANONICAL_F32_NAN: u32 = 0x7fc0_0000;
pub const CANONICAL_F64_NAN: u64 = 0x7ff8_0000_0000_0000;

/// The scratch locals of the self-fuzzer's rewritings: one `f32`, one `f64`, one `v128`.
pub const SCRATCH_LOCALS: &[u8] = &[0x7d, 0x7c, 0x7b];

/// The scratch local a function this pass rewrites gets: one `v128`
/// ([`emit_canonicalization`] takes scalars through a vector).
const PASS_LOCALS: &[u8] = &[0x7b];

/// The module with NaN results canonicalized where they can be observed (see the module
/// docs), or why it could not be rewritten (it is not a valid module of the engine's
/// feature set).
pub fn canonicalize(binary: &[u8]) -> Result<Vec<u8>, String> {
    let marked: Vec<Vec<usize>> = analyse(binary)?.into_iter().map(|f| f.marked).collect();
    if marked.iter().all(Vec::is_empty) {
        return Ok(binary.to_vec());
    }
    let locals = |body: usize| -> &'static [u8] {
        if marked.get(body).is_some_and(|m| !m.is_empty()) {
            PASS_LOCALS
        } else {
            &[]
        }
    };
    let edit_of = |body: usize| -> Box<Edit<'_>> {
        let m = marked.get(body).map_or(&[][..], Vec::as_slice);
        let mut next = 0;
        Box::new(move |site, op, _, out, scratch| {
            if m.get(next) == Some(&site.op) {
                next += 1;
                let kind = canon_kind(op).expect("only producers are marked");
                emit_canonicalization(out, kind, scratch);
            }
            false
        })
    };
    rewrite_code_par(binary, &locals, &edit_of)
}

/// Lane widths of float values: bit 0, 32-bit lanes (`f32`, `f32x4`); bit 1, 64-bit.
type Lanes = u8;
const L32: Lanes = 1;
const L64: Lanes = 2;

/// What an operator does to the classes of the values it takes.
enum Effect {
    /// A producer: its inputs are read as `input` lanes; it pushes a raw result.
    Produce { inputs: usize, input: Lanes },
    /// Reads only whether its inputs' lanes are NaNs; pushes untracked values.
    Inspect {
        inputs: usize,
        lanes: Lanes,
        outputs: usize,
    },
    /// Returns its inputs' NaNs as NaNs: the result joins the inputs' classes.
    Pass { inputs: usize, lanes: Lanes },
    /// `copysign`: the magnitude passes, the sign is observed.
    CopySign(Lanes),
    /// Anything else: [`analyse_body`] handles it by name or as an observer.
    Other,
}

fn effect(op: &Operator) -> Effect {
    use Operator as O;
    if let Some(kind) = canon_kind(op) {
        let (inputs, input) = match op {
            O::F64PromoteF32 | O::F64x2PromoteLowF32x4 => (1, L32),
            O::F32DemoteF64 | O::F32x4DemoteF64x2Zero => (1, L64),
            O::F32Sqrt
            | O::F32Ceil
            | O::F32Floor
            | O::F32Trunc
            | O::F32Nearest
            | O::F64Sqrt
            | O::F64Ceil
            | O::F64Floor
            | O::F64Trunc
            | O::F64Nearest
            | O::F32x4Sqrt
            | O::F32x4Ceil
            | O::F32x4Floor
            | O::F32x4Trunc
            | O::F32x4Nearest
            | O::F64x2Sqrt
            | O::F64x2Ceil
            | O::F64x2Floor
            | O::F64x2Trunc
            | O::F64x2Nearest => (1, kind.lanes()),
            O::F32x4RelaxedMadd
            | O::F32x4RelaxedNmadd
            | O::F64x2RelaxedMadd
            | O::F64x2RelaxedNmadd => (3, kind.lanes()),
            _ => (2, kind.lanes()),
        };
        return Effect::Produce { inputs, input };
    }
    match op {
        O::F32Eq | O::F32Ne | O::F32Lt | O::F32Gt | O::F32Le | O::F32Ge => Effect::Inspect {
            inputs: 2,
            lanes: L32,
            outputs: 1,
        },
        O::F64Eq | O::F64Ne | O::F64Lt | O::F64Gt | O::F64Le | O::F64Ge => Effect::Inspect {
            inputs: 2,
            lanes: L64,
            outputs: 1,
        },
        O::F32x4Eq | O::F32x4Ne | O::F32x4Lt | O::F32x4Gt | O::F32x4Le | O::F32x4Ge => {
            Effect::Inspect {
                inputs: 2,
                lanes: L32,
                outputs: 1,
            }
        }
        O::F64x2Eq | O::F64x2Ne | O::F64x2Lt | O::F64x2Gt | O::F64x2Le | O::F64x2Ge => {
            Effect::Inspect {
                inputs: 2,
                lanes: L64,
                outputs: 1,
            }
        }
        O::I32TruncF32S
        | O::I32TruncF32U
        | O::I64TruncF32S
        | O::I64TruncF32U
        | O::I32TruncSatF32S
        | O::I32TruncSatF32U
        | O::I64TruncSatF32S
        | O::I64TruncSatF32U
        | O::I32x4TruncSatF32x4S
        | O::I32x4TruncSatF32x4U
        // wasmtime's deterministic lowering is `trunc_sat` (NaN lanes give 0).
        | O::I32x4RelaxedTruncF32x4S
        | O::I32x4RelaxedTruncF32x4U => Effect::Inspect {
            inputs: 1,
            lanes: L32,
            outputs: 1,
        },
        O::I32TruncF64S
        | O::I32TruncF64U
        | O::I64TruncF64S
        | O::I64TruncF64U
        | O::I32TruncSatF64S
        | O::I32TruncSatF64U
        | O::I64TruncSatF64S
        | O::I64TruncSatF64U
        | O::I32x4TruncSatF64x2SZero
        | O::I32x4TruncSatF64x2UZero
        | O::I32x4RelaxedTruncF64x2SZero
        | O::I32x4RelaxedTruncF64x2UZero => Effect::Inspect {
            inputs: 1,
            lanes: L64,
            outputs: 1,
        },
        O::F32Abs
        | O::F32Neg
        | O::F32x4Abs
        | O::F32x4Neg
        | O::F32x4Splat
        | O::F32x4ExtractLane { .. } => Effect::Pass {
            inputs: 1,
            lanes: L32,
        },
        O::F64Abs
        | O::F64Neg
        | O::F64x2Abs
        | O::F64x2Neg
        | O::F64x2Splat
        | O::F64x2ExtractLane { .. } => Effect::Pass {
            inputs: 1,
            lanes: L64,
        },
        O::F32x4PMin | O::F32x4PMax | O::F32x4ReplaceLane { .. } => Effect::Pass {
            inputs: 2,
            lanes: L32,
        },
        O::F64x2PMin | O::F64x2PMax | O::F64x2ReplaceLane { .. } => Effect::Pass {
            inputs: 2,
            lanes: L64,
        },
        O::F32Copysign => Effect::CopySign(L32),
        O::F64Copysign => Effect::CopySign(L64),
        _ => Effect::Other,
    }
}

/// The classes of one function's values: a union-find whose roots know whether the class
/// is observed and which lane widths its producers have and its readers use.
#[derive(Default)]
struct Classes {
    parent: Vec<u32>,
    observed: Vec<bool>,
    lanes: Vec<Lanes>,
}

/// A tracked value: `None` for values that never hold a raw result (integers, constants,
/// loads, call results, ...).
type Val = Option<u32>;

impl Classes {
    fn add(&mut self, lanes: Lanes) -> u32 {
        let id = self.parent.len() as u32;
        self.parent.push(id);
        self.observed.push(false);
        self.lanes.push(lanes);
        id
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) -> u32 {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[b as usize] = a;
            self.observed[a as usize] |= self.observed[b as usize];
            self.lanes[a as usize] |= self.lanes[b as usize];
        }
        a
    }

    fn join(&mut self, a: Val, b: Val) -> Val {
        match (a, b) {
            (Some(a), Some(b)) => Some(self.union(a, b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    fn observe(&mut self, v: Val) {
        if let Some(v) = v {
            let r = self.find(v);
            self.observed[r as usize] = true;
        }
    }

    fn read_as(&mut self, v: Val, lanes: Lanes) {
        if let Some(v) = v {
            let r = self.find(v);
            self.lanes[r as usize] |= lanes;
        }
    }

    fn must_canonicalize(&mut self, v: u32) -> bool {
        let r = self.find(v) as usize;
        self.observed[r] || self.lanes[r] == L32 | L64
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Block,
    Loop,
    If,
    Else,
    Function,
}

struct Frame {
    kind: Kind,
    /// Operand stack height at the start of the frame (below its parameters).
    height: usize,
    unreachable: bool,
    /// What a branch to the frame's label carries (a loop's parameters, else its results).
    label: Vec<u32>,
    results: Vec<u32>,
    /// An `if`'s parameters, for its `else`.
    params: Vec<Val>,
}

/// One function's walk: the operand stack of classes and the control frames.
struct Walk {
    c: Classes,
    stack: Vec<Val>,
    frames: Vec<Frame>,
    locals: HashMap<u32, u32>,
    /// Index (in the body) and class of each producer.
    producers: Vec<(usize, u32)>,
}

impl Walk {
    fn frame(&self) -> &Frame {
        self.frames.last().expect("a frame")
    }

    fn pop(&mut self) -> Val {
        let f = self.frame();
        if self.stack.len() > f.height {
            self.stack.pop().flatten()
        } else {
            // Below the frame's values only in unreachable code (the validator has checked
            // the rest): a value of any type that never exists.
            None
        }
    }

    fn pop_n(&mut self, n: usize) -> Vec<Val> {
        let mut v: Vec<Val> = (0..n).map(|_| self.pop()).collect();
        v.reverse();
        v
    }

    /// The top `n` values, left on the stack (missing ones, in unreachable code, as
    /// `None`).
    fn top(&self, n: usize) -> Vec<Val> {
        let f = self.frame();
        let avail = self.stack.len().saturating_sub(f.height).min(n);
        let mut v = vec![None; n - avail];
        v.extend_from_slice(&self.stack[self.stack.len() - avail..]);
        v
    }

    fn nodes(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.c.add(0)).collect()
    }

    /// Values leaving through the label `depth` frames out: joined into its label, or
    /// observed if it is the function's (they are its results).
    fn branch(&mut self, depth: u32, values: &[Val]) -> Result<(), String> {
        let i = self
            .frames
            .len()
            .checked_sub(1 + depth as usize)
            .ok_or("a branch out of range")?;
        if self.frames[i].kind == Kind::Function {
            for v in values {
                self.c.observe(*v);
            }
        } else {
            let label = self.frames[i].label.clone();
            for (l, v) in label.iter().zip(values) {
                self.c.join(Some(*l), *v);
            }
        }
        Ok(())
    }

    fn label_arity(&self, depth: u32) -> Result<usize, String> {
        let i = self
            .frames
            .len()
            .checked_sub(1 + depth as usize)
            .ok_or("a branch out of range")?;
        Ok(self.frames[i].label.len())
    }

    fn set_unreachable(&mut self) {
        let h = self.frame().height;
        self.stack.truncate(h);
        self.frames.last_mut().expect("a frame").unreachable = true;
    }

    fn local(&mut self, i: u32) -> u32 {
        if let Some(n) = self.locals.get(&i) {
            return *n;
        }
        let n = self.c.add(0);
        self.locals.insert(i, n);
        n
    }

    fn push_frame(&mut self, kind: Kind, params: Vec<Val>, label: Vec<u32>, results: Vec<u32>) {
        let height = self.stack.len();
        self.frames.push(Frame {
            kind,
            height,
            unreachable: false,
            label,
            results,
            params: if kind == Kind::If {
                params.clone()
            } else {
                Vec::new()
            },
        });
        self.stack.extend(params);
    }
}

/// What the pass does to one function.
struct Plan {
    /// Producers in the body.
    producers: usize,
    /// The indices (in the body, sorted) of the producers to canonicalize.
    marked: Vec<usize>,
}

/// How many producers `binary`'s functions have, and how many of them the pass
/// canonicalizes (for the self-fuzzer's report: how lazy the pass was).
pub fn producers(binary: &[u8]) -> Result<(usize, usize), String> {
    Ok(analyse(binary)?
        .iter()
        .fold((0, 0), |(p, m), f| (p + f.producers, m + f.marked.len())))
}

/// The plan of each defined function. Validates the module on the way.
fn analyse(binary: &[u8]) -> Result<Vec<Plan>, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    // The proposals whose control flow this pass does not model are off in the engine
    // too (`detwasm_runtime::engine::deterministic_config`): a module using them is refused here
    // and then, with the engine's own message, by the engine.
    let features = WasmFeatures::all()
        - WasmFeatures::EXCEPTIONS
        - WasmFeatures::LEGACY_EXCEPTIONS
        - WasmFeatures::GC
        - WasmFeatures::FUNCTION_REFERENCES
        - WasmFeatures::STACK_SWITCHING;
    let mut validator = Validator::new_with_features(features);
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        if let ValidPayload::Func(to_validate, body) = validator.payload(&payload).map_err(err)? {
            bodies.push((to_validate, body));
        }
    }
    crate::par_validate(bodies, analyse_body)
        .into_iter()
        .collect()
}

fn analyse_body<R: WasmModuleResources>(
    v: &mut wasmparser::FuncValidator<R>,
    body: &wasmparser::FunctionBody,
) -> Result<Plan, String> {
    use Operator as O;
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let results = {
        let r = v.resources();
        let sub = r
            .type_id_of_function(v.index())
            .map(|id| r.sub_type_at_id(id))
            .ok_or("a function without a function type")?;
        match &sub.composite_type.inner {
            wasmparser::CompositeInnerType::Func(f) => f.results().len(),
            _ => return Err("a function without a function type".into()),
        }
    };
    let mut locals = body.get_locals_reader().map_err(err)?;
    for _ in 0..locals.get_count() {
        let offset = locals.original_position();
        let (count, t) = locals.read().map_err(err)?;
        v.define_locals(offset, count, t).map_err(err)?;
    }
    let mut w = Walk {
        c: Classes::default(),
        stack: Vec::new(),
        frames: Vec::new(),
        locals: HashMap::new(),
        producers: Vec::new(),
    };
    let results = w.nodes(results);
    w.push_frame(Kind::Function, Vec::new(), results.clone(), results);
    let mut ops = body.get_operators_reader().map_err(err)?;
    let mut index = 0usize;
    while !ops.eof() {
        let (op, offset) = ops.read_with_offset().map_err(err)?;
        let arity = op.operator_arity(&*v);
        match effect(&op) {
            Effect::Produce { inputs, input } => {
                for x in w.pop_n(inputs) {
                    w.c.read_as(x, input);
                }
                let lanes = canon_kind(&op).expect("a producer").lanes();
                let node = w.c.add(lanes);
                w.producers.push((index, node));
                w.stack.push(Some(node));
            }
            Effect::Inspect {
                inputs,
                lanes,
                outputs,
            } => {
                for x in w.pop_n(inputs) {
                    w.c.read_as(x, lanes);
                }
                w.stack.extend(std::iter::repeat_n(None, outputs));
            }
            Effect::Pass { inputs, lanes } => {
                let mut out = None;
                for x in w.pop_n(inputs) {
                    w.c.read_as(x, lanes);
                    out = w.c.join(out, x);
                }
                w.stack.push(out);
            }
            Effect::CopySign(lanes) => {
                let sign = w.pop();
                let magnitude = w.pop();
                w.c.observe(sign);
                w.c.read_as(magnitude, lanes);
                w.stack.push(magnitude);
            }
            Effect::Other => match &op {
                O::Nop => {}
                O::Drop => {
                    w.pop();
                }
                O::Unreachable => w.set_unreachable(),
                O::Block { blockty } | O::Loop { blockty } | O::If { blockty } => {
                    let (p, r) = block_arity(&*v, *blockty)?;
                    if matches!(op, O::If { .. }) {
                        w.pop();
                    }
                    let entry = w.pop_n(p);
                    let results = w.nodes(r);
                    match op {
                        O::Loop { .. } => {
                            let label = w.nodes(p);
                            let mut inside = Vec::with_capacity(p);
                            for (l, e) in label.iter().zip(&entry) {
                                inside.push(w.c.join(Some(*l), *e));
                            }
                            w.push_frame(Kind::Loop, inside, label, results);
                        }
                        O::If { .. } => w.push_frame(Kind::If, entry, results.clone(), results),
                        _ => w.push_frame(Kind::Block, entry, results.clone(), results),
                    }
                }
                O::Else => {
                    let n = w.frame().results.len();
                    let out = w.pop_n(n);
                    let f = w.frames.pop().ok_or("`else` outside a frame")?;
                    for (r, x) in f.results.iter().zip(&out) {
                        w.c.join(Some(*r), *x);
                    }
                    w.stack.truncate(f.height);
                    w.push_frame(Kind::Else, f.params, f.label, f.results);
                }
                O::End => {
                    let n = w.frame().results.len();
                    let out = w.pop_n(n);
                    let f = w.frames.pop().ok_or("`end` outside a frame")?;
                    if f.kind == Kind::Function {
                        for x in out {
                            w.c.observe(x);
                        }
                    } else {
                        for (r, x) in f.results.iter().zip(&out) {
                            w.c.join(Some(*r), *x);
                        }
                        // An `if` without `else` passes its parameters to its results.
                        for (r, x) in f.results.iter().zip(&f.params) {
                            w.c.join(Some(*r), *x);
                        }
                        w.stack.truncate(f.height);
                        w.stack.extend(f.results.iter().map(|r| Some(*r)));
                    }
                }
                O::Br { relative_depth } => {
                    let n = w.label_arity(*relative_depth)?;
                    let values = w.top(n);
                    w.branch(*relative_depth, &values)?;
                    w.set_unreachable();
                }
                O::BrIf { relative_depth } => {
                    w.pop();
                    let n = w.label_arity(*relative_depth)?;
                    let values = w.top(n);
                    w.branch(*relative_depth, &values)?;
                }
                O::BrTable { targets } => {
                    w.pop();
                    let n = w.label_arity(targets.default())?;
                    let values = w.top(n);
                    for t in targets.targets() {
                        w.branch(t.map_err(err)?, &values)?;
                    }
                    w.branch(targets.default(), &values)?;
                    w.set_unreachable();
                }
                O::Return => {
                    let depth = (w.frames.len() - 1) as u32;
                    let n = w.label_arity(depth)?;
                    let values = w.top(n);
                    w.branch(depth, &values)?;
                    w.set_unreachable();
                }
                O::LocalGet { local_index } => {
                    let l = w.local(*local_index);
                    w.stack.push(Some(l));
                }
                O::LocalSet { local_index } => {
                    let x = w.pop();
                    let l = w.local(*local_index);
                    w.c.join(Some(l), x);
                }
                O::LocalTee { local_index } => {
                    let x = w.pop();
                    let l = w.local(*local_index);
                    w.c.join(Some(l), x);
                    w.stack.push(x);
                }
                O::Select | O::TypedSelect { .. } => {
                    w.pop();
                    let b = w.pop();
                    let a = w.pop();
                    let x = w.c.join(a, b);
                    w.stack.push(x);
                }
                _ => {
                    // Calls, stores, `global.set`, integer and bitwise operations, anything
                    // unknown: every operand is observed, every result untracked.
                    let (pops, pushes) = arity
                        .ok_or_else(|| format!("an operator this pass cannot follow: {op:?}"))?;
                    for x in w.pop_n(pops as usize) {
                        w.c.observe(x);
                    }
                    w.stack.extend(std::iter::repeat_n(None, pushes as usize));
                    if matches!(
                        op,
                        O::ReturnCall { .. }
                            | O::ReturnCallIndirect { .. }
                            | O::ReturnCallRef { .. }
                    ) {
                        w.set_unreachable();
                    }
                }
            },
        }
        v.op(offset, &op).map_err(err)?;
        index += 1;
    }
    ops.finish().map_err(err)?;
    let producers = std::mem::take(&mut w.producers);
    let mut marked = Vec::new();
    for (i, node) in &producers {
        if w.c.must_canonicalize(*node) {
            marked.push(*i);
        }
    }
    Ok(Plan {
        producers: producers.len(),
        marked,
    })
}

fn block_arity(m: &impl ModuleArity, ty: BlockType) -> Result<(usize, usize), String> {
    m.block_type_arity(ty)
        .map(|(p, r)| (p as usize, r as usize))
        .ok_or_else(|| "a block of an unknown type".into())
}

/// The most locals (parameters included) and the longest function body wasmparser (and so
/// wasmtime) accepts. A rewriting that would pass either fails with a message that says
/// so, instead of producing a module the engine refuses with a message about bytes the
/// user never wrote. Both are reached only by functions at the edge of what WebAssembly
/// allows (50,000 locals; a body of over a megabyte that is mostly observed float
/// results), and such a module is refused, the same way on every host. Rejected (for
/// now): canonicalizing through calls of appended helper functions in such functions,
/// which needs no local and fewer bytes.
const MAX_LOCALS: u64 = 50_000;
const MAX_BODY_BYTES: usize = 7_654_321;

/// Where an operator is: the index of the function body (among the module's own) and of
/// the operator in it.
#[derive(Clone, Copy)]
pub struct Site {
    pub body: usize,
    pub op: usize,
}

/// A function body edit: sees each operator, where it is and its bytes, may append to
/// the body, and returns whether it wrote a replacement for the operator (otherwise the
/// operator's own bytes are written before whatever the edit appended). Its last argument
/// is the index of the first local added by [`rewrite_code`].
pub type Edit<'e> = dyn FnMut(Site, &wasmparser::Operator, &[u8], &mut Vec<u8>, u32) -> bool + 'e;

/// `binary` with every function body passed through `edit`, one local of each type in
/// `locals(body)` added to the function. Every other section is copied byte for byte, and
/// so is each operator: the edit only needs to recognise operators, never to re-encode
/// them.
pub fn rewrite_code(
    binary: &[u8],
    locals: &dyn Fn(usize) -> &'static [u8],
    edit: &mut Edit,
) -> Result<Vec<u8>, String> {
    rewrite_code_as(binary, &mut |bodies| {
        bodies
            .into_iter()
            .map(|(body, i, params)| rewrite_body(binary, &body, i, params, locals(i), edit))
            .collect()
    })
}

/// [`rewrite_code`] with the bodies rewritten in parallel ([`crate::par_map`]), each
/// through an edit of its own, `edit_of(body)`: the same output.
pub fn rewrite_code_par<'e>(
    binary: &[u8],
    locals: &(dyn Fn(usize) -> &'static [u8] + Sync),
    edit_of: &(dyn Fn(usize) -> Box<Edit<'e>> + Sync),
) -> Result<Vec<u8>, String> {
    rewrite_code_as(binary, &mut |bodies| {
        crate::par_map(bodies, |(body, i, params)| {
            rewrite_body(binary, &body, i, params, locals(i), &mut *edit_of(i))
        })
    })
}

/// A function body, its index among the module's own and its number of parameters.
type Body<'a> = (wasmparser::FunctionBody<'a>, usize, u32);

/// [`rewrite_code`]'s sections, with `rewrite` given every body of the code section at
/// once and answering with each one's bytes, in order.
fn rewrite_code_as<'a>(
    binary: &'a [u8],
    rewrite: &mut dyn FnMut(Vec<Body<'a>>) -> Vec<Result<Vec<u8>, String>>,
) -> Result<Vec<u8>, String> {
    use wasmparser::{CompositeInnerType, TypeRef};
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    // Parameter count per type index (`None`: not a function type).
    let mut type_params: Vec<Option<u32>> = Vec::new();
    // Type index per function index (imports first).
    let mut func_types: Vec<u32> = Vec::new();
    let mut imported_funcs = 0usize;
    let mut out = Vec::with_capacity(binary.len() + binary.len() / 2);
    let mut code: Option<(u32, Vec<Body>)> = None;
    let mut bodies = 0usize;
    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(err)?;
        match &payload {
            Payload::Version { range, .. } => out.extend_from_slice(&binary[range.clone()]),
            Payload::TypeSection(r) => {
                for group in r.clone() {
                    for sub in group.map_err(err)?.into_types() {
                        type_params.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(f.params().len() as u32),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    if let TypeRef::Func(t) | TypeRef::FuncExact(t) = import.map_err(err)?.ty {
                        func_types.push(t);
                        imported_funcs += 1;
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r.clone() {
                    func_types.push(t.map_err(err)?);
                }
            }
            _ => {}
        }
        match payload {
            Payload::CodeSectionStart { count, .. } => {
                code = Some((count, Vec::new()));
                if count == 0 {
                    finish_code(&mut out, &mut code, rewrite)?;
                }
            }
            Payload::CodeSectionEntry(body) => {
                let t = func_types
                    .get(imported_funcs + bodies)
                    .and_then(|t| type_params.get(*t as usize).copied().flatten())
                    .ok_or("a function body without a function type")?;
                let (count, pending) = code.as_mut().ok_or("a body outside the code section")?;
                pending.push((body, bodies, t));
                bodies += 1;
                if bodies == *count as usize {
                    finish_code(&mut out, &mut code, rewrite)?;
                }
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    copy_section(&mut out, binary, id, range);
                }
            }
        }
    }
    if code.is_some() {
        return Err("the code section ends early".into());
    }
    Ok(out)
}

pub fn copy_section(out: &mut Vec<u8>, binary: &[u8], id: u8, range: std::ops::Range<usize>) {
    out.push(id);
    write_u32(out, range.len() as u32);
    out.extend_from_slice(&binary[range]);
}

fn finish_code<'a>(
    out: &mut Vec<u8>,
    code: &mut Option<(u32, Vec<Body<'a>>)>,
    rewrite: &mut dyn FnMut(Vec<Body<'a>>) -> Vec<Result<Vec<u8>, String>>,
) -> Result<(), String> {
    if let Some((count, bodies)) = code.take() {
        let mut section = Vec::new();
        write_u32(&mut section, count);
        for new in rewrite(bodies) {
            let new = new?;
            write_u32(&mut section, new.len() as u32);
            section.extend_from_slice(&new);
        }
        out.push(10);
        write_u32(out, section.len() as u32);
        out.extend_from_slice(&section);
    }
    Ok(())
}

fn rewrite_body(
    binary: &[u8],
    body: &wasmparser::FunctionBody,
    index: usize,
    params: u32,
    add_locals: &[u8],
    edit: &mut Edit,
) -> Result<Vec<u8>, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let range = body.range();
    let mut declared: u64 = 0;
    let mut locals = body.get_locals_reader().map_err(err)?;
    let groups = locals.get_count();
    for _ in 0..groups {
        declared += u64::from(locals.read().map_err(err)?.0);
    }
    let mut ops = body.get_operators_reader().map_err(err)?;
    let ops_start = ops.original_position();
    // The local declarations after their count, copied; then the added locals.
    let (_, count_len) = read_u32(&binary[range.start..ops_start])?;
    let scratch = u32::try_from(u64::from(params) + declared).map_err(|_| "too many locals")?;
    if !add_locals.is_empty() && u64::from(scratch) + add_locals.len() as u64 > MAX_LOCALS {
        return Err(format!(
            "defined function {index} has {scratch} locals and parameters; the {} more this \
             rewriting needs would pass WebAssembly's limit of {MAX_LOCALS}",
            add_locals.len()
        ));
    }
    let mut out = Vec::new();
    write_u32(&mut out, groups + add_locals.len() as u32);
    out.extend_from_slice(&binary[range.start + count_len..ops_start]);
    for ty in add_locals {
        out.extend_from_slice(&[1, *ty]);
    }
    let mut op_index = 0;
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read().map_err(err)?;
        let bytes = &binary[start..ops.original_position()];
        let mut tail = Vec::new();
        let site = Site {
            body: index,
            op: op_index,
        };
        if !edit(site, &op, bytes, &mut tail, scratch) {
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&tail);
        op_index += 1;
    }
    if out.len() > MAX_BODY_BYTES {
        return Err(format!(
            "defined function {index} would grow from {} to {} bytes, past WebAssembly's \
             limit of {MAX_BODY_BYTES} bytes for a function body",
            range.len(),
            out.len()
        ));
    }
    Ok(out)
}

/// What follows an operation whose NaN result must be canonicalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Canon {
    F32,
    F64,
    F32x4,
    F64x2,
}

impl Canon {
    /// The scratch local (of the three starting at `scratch`: f32, f64, v128) that holds
    /// a value of this kind.
    pub fn scratch_local(self, scratch: u32) -> u32 {
        scratch
            + match self {
                Canon::F32 => 0,
                Canon::F64 => 1,
                Canon::F32x4 | Canon::F64x2 => 2,
            }
    }

    fn lanes(self) -> Lanes {
        match self {
            Canon::F32 | Canon::F32x4 => L32,
            Canon::F64 | Canon::F64x2 => L64,
        }
    }
}

/// The producers: operations whose NaN result wasm leaves nondeterministic and which
/// Cranelift's canonicalization covered after wasmtime 48's translation (`fadd`, `fsub`,
/// `fmul`, `fdiv`, `sqrt`, `fmin`, `fmax`, `ceil`, `floor`, `trunc`, `nearest`,
/// `fpromote`, `fdemote`, `fvpromote_low`, `fvdemote`, `fma`; relaxed min/max take the
/// `fmin`/`fmax` lowering under `relaxed_simd_deterministic`). `pmin`/`pmax` are not
/// among them: they select an operand.
pub fn canon_kind(op: &wasmparser::Operator) -> Option<Canon> {
    use wasmparser::Operator as O;
    Some(match op {
        O::F32Add
        | O::F32Sub
        | O::F32Mul
        | O::F32Div
        | O::F32Sqrt
        | O::F32Min
        | O::F32Max
        | O::F32Ceil
        | O::F32Floor
        | O::F32Trunc
        | O::F32Nearest
        | O::F32DemoteF64 => Canon::F32,
        O::F64Add
        | O::F64Sub
        | O::F64Mul
        | O::F64Div
        | O::F64Sqrt
        | O::F64Min
        | O::F64Max
        | O::F64Ceil
        | O::F64Floor
        | O::F64Trunc
        | O::F64Nearest
        | O::F64PromoteF32 => Canon::F64,
        O::F32x4Add
        | O::F32x4Sub
        | O::F32x4Mul
        | O::F32x4Div
        | O::F32x4Sqrt
        | O::F32x4Min
        | O::F32x4Max
        | O::F32x4Ceil
        | O::F32x4Floor
        | O::F32x4Trunc
        | O::F32x4Nearest
        | O::F32x4DemoteF64x2Zero
        | O::F32x4RelaxedMadd
        | O::F32x4RelaxedNmadd
        | O::F32x4RelaxedMin
        | O::F32x4RelaxedMax => Canon::F32x4,
        O::F64x2Add
        | O::F64x2Sub
        | O::F64x2Mul
        | O::F64x2Div
        | O::F64x2Sqrt
        | O::F64x2Min
        | O::F64x2Max
        | O::F64x2Ceil
        | O::F64x2Floor
        | O::F64x2Trunc
        | O::F64x2Nearest
        | O::F64x2PromoteLowF32x4
        | O::F64x2RelaxedMadd
        | O::F64x2RelaxedNmadd
        | O::F64x2RelaxedMin
        | O::F64x2RelaxedMax => Canon::F64x2,
        _ => return None,
    })
}

/// `[splat;] local.tee v; <canonical NaNs>; local.get v; local.get v; eq; bitselect[;
/// extract_lane 0]`: keeps each lane where it equals itself, the canonical NaN where it
/// does not (eight instructions for a scalar, six for a vector). Scalars go through a
/// vector because Cranelift makes three machine instructions of it and no branch, where a
/// compare-and-select of scalars became a constant load, a compare and two branches
/// (`wasmtime run` of the rewritten n-body, user time over three rounds: 0.67–0.74 s
/// against 0.75–0.90 s, plain 0.41–0.48 s). Rejected: a call to a helper function per kind
/// (a call costs more than the sequence, and Cranelift does not inline it); writing a
/// stored result as it is and overwriting it with the canonical NaN when it is one (built
/// and measured on n-body: no faster, 0.73–0.92 s, for a second kind of rewriting and an
/// analysis of which values may hold the module's own NaNs).
pub fn emit_canonicalization(out: &mut Vec<u8>, kind: Canon, v: u32) {
    const SIMD: u8 = 0xfd;
    match kind {
        Canon::F32 => out.extend_from_slice(&[SIMD, 19]), // f32x4.splat
        Canon::F64 => out.extend_from_slice(&[SIMD, 20]), // f64x2.splat
        Canon::F32x4 | Canon::F64x2 => {}
    }
    out.push(0x22); // local.tee
    write_u32(out, v);
    out.extend_from_slice(&[SIMD, 12]); // v128.const
    match kind.lanes() {
        L32 => (0..4).for_each(|_| out.extend_from_slice(&CANONICAL_F32_NAN.to_le_bytes())),
        _ => (0..2).for_each(|_| out.extend_from_slice(&CANONICAL_F64_NAN.to_le_bytes())),
    }
    for _ in 0..2 {
        out.push(0x20); // local.get
        write_u32(out, v);
    }
    match kind.lanes() {
        L32 => out.extend_from_slice(&[SIMD, 65, SIMD, 82]), // f32x4.eq; v128.bitselect
        _ => out.extend_from_slice(&[SIMD, 71, SIMD, 82]),   // f64x2.eq; v128.bitselect
    }
    match kind {
        Canon::F32 => out.extend_from_slice(&[SIMD, 31, 0]), // f32x4.extract_lane 0
        Canon::F64 => out.extend_from_slice(&[SIMD, 33, 0]), // f64x2.extract_lane 0
        Canon::F32x4 | Canon::F64x2 => {}
    }
}

/// `v` as an unsigned LEB128 number (wasm-encoder's encoding, as the stack pass writes).
pub fn write_u32(out: &mut Vec<u8>, v: u32) {
    wasm_encoder::Encode::encode(&v, out);
}

/// An unsigned LEB128 u32 and its length in bytes.
pub fn read_u32(bytes: &[u8]) -> Result<(u32, usize), String> {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(5) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(v)
                .map(|v| (v, i + 1))
                .map_err(|_| "a LEB128 u32 out of range".into());
        }
    }
    Err("a truncated LEB128 u32".into())
}

#[cfg(test)]
mod tests {
    // Pure rewriting checks. The tests that run rewritten modules are in
    // `runtime/tests/pass_nan.rs` (a module at the locals limit refused by the engine) and
    // `fuzzing/tests/pass_nan_eager.rs` (observable NaNs against eager canonicalization):
    // this crate has no engine, not even for its tests.
    use super::*;

    /// How many producers of each function the pass canonicalizes.
    fn marks(wat: &str) -> Vec<usize> {
        analyse(&wat::parse_str(wat).unwrap())
            .unwrap()
            .iter()
            .map(|f| f.marked.len())
            .collect()
    }

    #[test]
    fn results_that_stay_in_arithmetic_are_not_canonicalized() {
        let m = marks(
            r#"(module (memory 1)
            ;; an accumulator in a loop, then only compared: nothing observable
            (func (param f64) (result i32) (local $s f64) (local $i i32)
              (loop $l
                (local.set $s (f64.add (local.get $s) (f64.mul (local.get 0) (f64.const 0.5))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.const 10))))
              (f64.lt (local.get $s) (f64.sqrt (f64.abs (f64.neg (local.get $s))))))
            ;; truncated, dropped, compared lane-wise, selected then compared
            (func (param f32 v128) (result i32)
              (drop (f32.div (local.get 0) (local.get 0)))
              (drop (i32.trunc_sat_f32_s (f32.sub (local.get 0) (local.get 0))))
              (drop (f32x4.lt (f32x4.sqrt (local.get 1)) (local.get 1)))
              (f32.eq (select (f32.mul (local.get 0) (local.get 0)) (local.get 0) (i32.const 1))
                      (local.get 0)))
            ;; stored after an abs: one result observed (the other two feed it)
            (func (param f64)
              (f64.store (i32.const 0)
                (f64.abs (f64.add (f64.mul (local.get 0) (local.get 0)) (f64.div (local.get 0) (local.get 0)))))))"#,
        );
        assert_eq!(m, vec![0, 0, 1]);
    }

    #[test]
    fn every_way_out_is_observed() {
        let m = marks(
            r#"(module (memory 1) (global $g (mut f32) (f32.const 0))
            (func $id (param f32) (result f32) (local.get 0))
            (func (param f32) (result f32) (f32.add (local.get 0) (local.get 0)))
            (func (param f32) (result i32) (i32.reinterpret_f32 (f32.add (local.get 0) (local.get 0))))
            (func (param f32) (global.set $g (f32.add (local.get 0) (local.get 0))))
            (func (param f32) (result f32) (call $id (f32.add (local.get 0) (local.get 0))))
            (func (param f32) (result f32) (f32.copysign (local.get 0) (f32.add (local.get 0) (local.get 0))))
            (func (param f32) (result f32) (return (f32.add (local.get 0) (local.get 0))))
            (func (param f32) (result f32)
              (block (result f32) (br 1 (f32.add (local.get 0) (local.get 0)))))
            (func (param f32) (result f32) (local f32)
              (local.set 1 (f32.add (local.get 0) (local.get 0)))
              (local.get 1))
            (func (param v128) (result v128) (v128.not (f32x4.add (local.get 0) (local.get 0))))
            (func (param v128) (result i32) (i32x4.extract_lane 0 (f32x4.add (local.get 0) (local.get 0))))
            ;; f64x2 lanes read as f32x4: a payload bit becomes another lane's exponent
            (func (param v128) (result i32)
              (f32x4.extract_lane 0 (f64x2.add (local.get 0) (local.get 0))) (f32.const 0) (f32.eq))
            (func (param f32) (local f64)
              ;; a loop carrying the value to a store through its parameter
              (f64.promote_f32 (local.get 0))
              (loop (param f64)
                (local.set 1)
                (f64.store (i32.const 0) (local.get 1))))
            (func (param f32) (result i32)
              (if (result f32) (i32.const 1)
                (then (f32.sqrt (local.get 0)))
                (else (f32.const 0)))
              (local.set 0)
              (f32.store (i32.const 0) (local.get 0))
              (i32.const 0)))"#,
        );
        assert_eq!(m, [vec![0], vec![1; 13]].concat());
    }
}
