//! The shape scan: refuses, before anything else reads a module's code, a module whose
//! shape predicts unbounded compile work, with the reason.
//!
//! # Why
//!
//! Validating, rewriting ([`super::fuel`], [`super::nan`], [`super::stack`]) and compiling
//! a module happen before the guest runs a single instruction, so neither fuel nor the
//! memory limit applies to them, and their cost is not linear in the module's bytes:
//! - a `br_table` makes wasmparser's validator (and the NaN pass's analysis) check every
//!   target against the label's types, so its cost is targets × label arity. A 2 MB
//!   module of 30 `br_table`s of 65,520 targets into a block of 999 results took 109 s
//!   and 3.9 GB of peak RSS before this scan (SECURITY.md);
//! - branches, returns and calls cost their label's or type's arity in the same way
//!   (`call` of a function of 1,000 results pushes 1,000 values for 3 bytes of code);
//! - deep nesting is superlinear in Cranelift: a 3 MB module of a million nested
//!   `block`s compiled for over 10 minutes (its egraph pass);
//! - Cranelift's memory grows with the size of the function it compiles, and wasmtime
//!   compiles several functions at once;
//! - Cranelift's SSA construction looks a local read in a block up through the blocks
//!   before it and records it in each: 4,000 locals read after 80,000 empty blocks (a
//!   256 KB module) took 22 s and 1.28 GB;
//! - wasmtime compiles a trampoline per function type and per escaping function, whose
//!   cost grows with the signature: 1,000 functions of 998 `v128` parameters and results
//!   (8.9 KB) took 40 s, 1,000 such types over 100 s.
//!
//! An attacker sends a new module every time, so the module cache does not help.
//!
//! # How
//!
//! One streaming pass with wasmparser over the type, import, function and code
//! sections, before validation: per function, its body bytes, its locals, its control
//! nesting depth and the values the types of its operators name ([`Shape::values`]);
//! per module, its code bytes, its functions and the values of all functions together;
//! per function too, its variables × its Cranelift blocks ([`Shape::ssa`]), summed per
//! module; per type, its parameters and results, and per module the types, the bytes of
//! the type section and the parameters and results of all types and defined functions
//! ([`Shape::module_signatures`]). The runtime scans the module again after the passes,
//! which grow it up to about 12 times, against [`REWRITTEN_LIMITS`].
//! The first measure over its limit ([`LIMITS`]) refuses the module, naming the function,
//! the measure, its value and the limit. It allocates only what the module's own bytes
//! already hold (two numbers per type and one per function, read from sections of at
//! least that many bytes) and a control stack of at most [`Limits::depth`] entries, and
//! it is linear in the module's bytes (a `br_table` is costed from its length, not
//! walked). Bytes the scan cannot parse end the scan without a refusal: the validator
//! that comes next reads the same bytes with the same wasmparser and refuses them with its
//! own message, having read no more code than the scan checked.
//!
//! The limits sit well above what real modules reach (measured on CPython 3.12, 26 MB,
//! and boolector, and the example modules: [`LIMITS`] lists the numbers, and the test
//! `real_programs::large_real_modules_pass_the_shape_scan` checks them), so they refuse
//! only modules made to be expensive. They change no accepted module's result, so they
//! are not part of the engine fingerprint (a module refused by one build and accepted by
//! another never gives two results); they are hashed into the module cache's key
//! ([`VERSION`]), so a change of limits re-scans cached modules.
//!
//! Rejected: limits inside the validator (wasmparser has fixed ones, far too high for
//! this: 7,654,321 bytes per function, `br_table`s of as many targets, no nesting limit);
//! bounding compilation only by the wall-clock deadline (the deadline bounds time but not
//! memory: 3.9 GB were reached in seconds, and wasmtime cannot stop Cranelift);
//! limiting the module's size alone (a 2 MB module was enough).

use wasmparser::{BlockType, Operator, Parser, Payload, TypeRef};

/// Names the limits below: hashed into the module cache's key, so that a cached module is
/// scanned again when they change.
pub const VERSION: &str = "detwasm-shape-3";

/// The limits of the scan. Each is a bound on work that is otherwise superlinear, or on
/// memory that is otherwise per function; see [`LIMITS`] for the values and their
/// margins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one function body (Cranelift's memory is proportional to it).
    pub function_bytes: u64,
    /// Locals one function declares (parameters not included).
    pub locals: u64,
    /// Control nesting depth inside one function (`block`, `loop`, `if`, `try_table`...).
    pub depth: u64,
    /// Values the types of one function's operators name ([`Shape::values`]).
    pub function_values: u64,
    /// Functions the module defines.
    pub functions: u64,
    /// Bytes of the code section.
    pub code_bytes: u64,
    /// Values of all functions together.
    pub module_values: u64,
    /// Variables (parameters and declared locals) × operators that start a Cranelift
    /// block (`block`, `loop`, `if`, `else`, `end`, the conditional branches and
    /// `br_table`s), per function: [`Shape::ssa`].
    pub ssa: u64,
    /// [`Limits::ssa`]'s product summed over the module's functions.
    pub module_ssa: u64,
    /// Operators that start a Cranelift block, per function: [`Shape::blocks`].
    pub blocks: u64,
    /// Their squares summed over the module's functions: [`Shape::module_block_pairs`].
    pub module_block_pairs: u64,
    /// Types the type section defines.
    pub types: u64,
    /// Bytes of the type section.
    pub type_bytes: u64,
    /// Parameters and results of one function type.
    pub signature_values: u64,
    /// Parameters and results of every type and of every defined function's type,
    /// together: [`Shape::module_signatures`].
    pub module_signatures: u64,
    /// Bytes of initialised memory images: [`Shape::memory_image`].
    pub memory_image: u64,
    /// Bytes of data segments and of custom sections: [`Shape::data_bytes`],
    /// [`Shape::custom_bytes`].
    pub data_bytes: u64,
    pub custom_bytes: u64,
    /// Element segments the module declares.
    pub element_segments: u64,
    /// Items of all element segments together.
    pub element_items: u64,
    /// Operators of all constant expressions together: [`Shape::const_operators`].
    pub const_operators: u64,
}

/// The limits in force, and the margin each leaves above the largest value measured on
/// real modules (`cargo nextest run --workspace -E
/// 'test(large_real_modules_pass_the_shape_scan)'` prints them; the example modules and
/// the probe reach less than boolector on every measure but depth, 70):
///
/// | measure | CPython 3.12 (26 MB) | boolector (1.2 MB) | limit | margin |
/// | --- | --- | --- | --- | --- |
/// | function bytes | 106,184 | 61,764 | 1 MiB | 9.9x |
/// | locals | 187 | 59 | 50,000 (wasmparser's own) | 267x |
/// | nesting depth | 283 | 69 | 2,048 | 7.2x |
/// | values per function | 4,203 | 3,117 | 1 Mi | 249x |
/// | functions | 11,448 | 1,035 | 50,000 | 4.4x |
/// | code bytes | 6,159,645 | 1,194,075 | 32 MiB | 5.4x |
/// | values per module | 255,114 | 60,702 | 16 Mi | 65x |
/// | variables × blocks per function | 271,848 | 133,041 | 2 Mi | 7.7x |
/// | variables × blocks per module | 2,074,057 | 1,599,291 | 16 Mi | 8.1x |
/// | blocks per function (rewritten: 6,846; 4,375) | 3,954 | 2,919 | 16 Ki | 2.4x rewritten |
/// | squares of blocks per module (rewritten: 263.4 M; 101.2 M) | 101.4 M | 46.7 M | 1 Gi | 4.1x rewritten |
/// | bytes of data segments | 6,962,446 | 63,460 | 64 MiB | 9.6x |
/// | bytes of custom sections (debug information) | 12,923,488 | 0 | 64 MiB | 5.2x |
/// | types | 122 | 46 | 4,096 | 33x |
/// | bytes of types | 993 | 370 | 64 KiB | 66x |
/// | parameters and results per type | 19 | 18 | 256 | 13x |
/// | parameters and results of types and functions | 37,608 | 3,637 | 256 Ki | 7x |
/// | memory image bytes | 10,485,709 | 64,484 | 64 MiB | 6.4x |
/// | element segments | 1 | 1 | 10,000 | 10,000x |
/// | element items | 5,902 | 330 | 256 Ki | 44x |
/// | constant-expression operators | 24,173 | 10 | 256 Ki | 10.8x |
///
/// Values get the widest margins because they are cheap (one type check each: 16 Mi of
/// them validate in well under a second), the others five to ten times, since compile
/// memory grows with them. Measured with `/usr/bin/time -v detwasm run --no-cache`
/// (2 cores, wasmtime compiling on both): CPython compiles in 39 s at 474 MiB peak RSS
/// (6.2 MB of code, about 75 bytes per byte of code, run included); one function of
/// 1 MiB of chained loads (the limit) in 7 s at 350 MiB; eight of them in 54 s at
/// 1,002 MiB. Hence SECURITY.md's compile term: 96 bytes per byte of code plus 384 MiB
/// per compile thread, at most 3 GiB + 384 MiB × threads at these limits. At the limits
/// outside code (same command): 10,000 element segments compile in 0.41 s at 70 MiB,
/// 256 Ki `ref.null` items in 2.9 s at 205 MiB, a global of 256 Ki operators in 1.6 s
/// at 115 MiB; 64 MiB of memory images cost their size once more in the compiler.
pub const LIMITS: Limits = Limits {
    function_bytes: 1 << 20,
    locals: 50_000,
    depth: 2_048,
    function_values: 1 << 20,
    functions: 50_000,
    code_bytes: 32 << 20,
    module_values: 16 << 20,
    ssa: SSA_LIMIT,
    module_ssa: MODULE_SSA_LIMIT,
    blocks: BLOCKS_LIMIT,
    module_block_pairs: MODULE_BLOCK_PAIRS_LIMIT,
    types: TYPES_LIMIT,
    type_bytes: TYPE_BYTES_LIMIT,
    signature_values: SIGNATURE_LIMIT,
    module_signatures: MODULE_SIGNATURES_LIMIT,
    memory_image: 64 << 20,
    data_bytes: 64 << 20,
    custom_bytes: 64 << 20,
    element_segments: 10_000,
    element_items: 256 << 10,
    const_operators: CONST_OPERATORS_LIMIT,
};
/// The limits the module the passes rewrote is scanned against before Cranelift compiles
/// it (`engine::compile_rewritten`): [`LIMITS`], with twice the room for types and
/// signatures, which the passes add to (stack metering gives functions a variant type
/// with its own parameter and result: CPython's 122 types become 250, its 37,608
/// parameters and results 61,384), so that a module accepted as sent is not refused
/// for what the passes added to its types. The measures of code (bytes, variables ×
/// blocks) keep their limits: those are what Cranelift's time and memory follow, and
/// SECURITY.md's compile term is stated in them. Constant-expression operators get
/// 1,024 more, for the globals the passes add (fuel and stack counters, one operator
/// each), so that a module at the limit is not refused after the passes; doubling them
/// like types was rejected, since their compile cost is not what the passes add.
pub const REWRITTEN_LIMITS: Limits = Limits {
    types: 2 * TYPES_LIMIT,
    type_bytes: 2 * TYPE_BYTES_LIMIT,
    signature_values: 2 * SIGNATURE_LIMIT,
    module_signatures: 2 * MODULE_SIGNATURES_LIMIT,
    const_operators: CONST_OPERATORS_LIMIT + 1_024,
    ..LIMITS
};
/// The limits a module rewritten by the unwind pass as well ([`crate::unwind`], for a
/// run that takes checkpoints) is scanned against: [`REWRITTEN_LIMITS`], with four
/// times the variables × blocks per module, three times the blocks per function and
/// eight times the squares of blocks per module. The pass gives every place a rewinding
/// function can jump to a block of its own, and keeps values in more locals: after the
/// other passes CPython has 4.6 M variables × blocks, 6,846 blocks in its largest
/// function and 0.26 G squares of blocks; with the unwind pass 45.9 M, 34,028 and 6.0 G
/// without plain copies of loops (boolector: 17,537 and 1.9 G), 66.3 M, 43,849 and 8.1 G
/// with the copies the pass makes within these limits ("Loops run plain" in
/// [`crate::unwind`]). The per-function variables × blocks keep their limit.
/// Only providers who take checkpoints accept that compile work; SECURITY.md states it.
/// Rejected: keeping the limits (no interpreter could take checkpoints).
pub const UNWIND_LIMITS: Limits = Limits {
    module_ssa: 4 * MODULE_SSA_LIMIT,
    blocks: 3 * BLOCKS_LIMIT,
    module_block_pairs: 8 * MODULE_BLOCK_PAIRS_LIMIT,
    ..REWRITTEN_LIMITS
};
const CONST_OPERATORS_LIMIT: u64 = 256 << 10;
const BLOCKS_LIMIT: u64 = 16 << 10;
const MODULE_BLOCK_PAIRS_LIMIT: u64 = 1 << 30;
const SSA_LIMIT: u64 = 2 << 20;
const MODULE_SSA_LIMIT: u64 = 16 << 20;
const TYPES_LIMIT: u64 = 4_096;
const TYPE_BYTES_LIMIT: u64 = 64 << 10;
const SIGNATURE_LIMIT: u64 = 256;
const MODULE_SIGNATURES_LIMIT: u64 = 256 << 10;

/// What the scan measured: the largest value of each per-function measure (with the
/// function's index) and the module's totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Largest body, in bytes, and its function.
    pub function_bytes: (u64, u32),
    /// Most locals, and its function.
    pub locals: (u64, u32),
    /// Deepest control nesting, and its function.
    pub depth: (u64, u32),
    /// Most operators, and its function (not limited: at most one per byte).
    pub operators: (u64, u32),
    /// Most values, and its function. The values of an operator are those its type
    /// names beyond its own: a branch's label arity (`br_table`: its targets plus the
    /// default, times that arity), a call's parameters and results, a block's parameters
    /// and results, a `return`'s results. The validator, the NaN pass and Cranelift's
    /// translator each do work in proportion to them.
    pub values: (u64, u32),
    /// Functions the module defines.
    pub functions: u64,
    /// Bytes of the code section.
    pub code_bytes: u64,
    /// Values of all functions together.
    pub module_values: u64,
    /// Largest (parameters + declared locals) × (operators that start a Cranelift
    /// block), and its function. Cranelift's SSA construction (cranelift-frontend's
    /// `use_var_nonlocal`) looks a variable read in a block up through the blocks before
    /// it and records it in each: a read of every local after a long chain of blocks
    /// costs time and memory in proportion to this product.
    pub ssa: (u64, u32),
    /// [`Shape::ssa`]'s product summed over the module's functions (the time of SSA
    /// construction adds up over functions, its memory does not).
    pub module_ssa: u64,
    /// Most operators that start a Cranelift block in one function, and its function.
    /// Cranelift's e-graph pass and regalloc2's dominance queries cost more than
    /// linearly in a function's blocks, whatever its variables: a function of 80,000
    /// `br_if`s in one `block` (3 variables, so under [`Limits::ssa`]) took 107 s to
    /// compile, 20,000 took 5.9 s (found by review).
    pub blocks: (u64, u32),
    /// [`Shape::blocks`] squared, summed over the module's functions: the compile time
    /// that grows with the square of a function's blocks adds up over functions.
    pub module_block_pairs: u64,
    /// Types the type section defines.
    pub types: u64,
    /// Bytes of the type section.
    pub type_bytes: u64,
    /// Most parameters and results of one function type.
    pub signature: u64,
    /// Parameters and results of every type, plus those of every defined function's
    /// type. wasmtime compiles a trampoline per function type and per escaping function,
    /// whose cost grows with the signature: 1,000 functions of 998 `v128` parameters and
    /// results took 40 s to compile for 8.9 KB of module.
    pub module_signatures: u64,
    /// Sum over memories of the highest end offset of the memory's active data segments.
    /// wasmtime builds each memory's initial image at compile time (allocated, then
    /// written to the module cache) as large as its highest initialised byte, whatever
    /// `--memory` says: 100 memories with one byte at 0 and one near 16 MiB made the
    /// compiler allocate 3.3 GB from 2 KB of module. A segment whose offset is not a
    /// lone `i32.const`/`i64.const` (a `global.get`, an extended constant expression)
    /// counts as its length plus the memory's initial size in bytes, the furthest the
    /// validator lets it land without trapping; counting only its length was rejected
    /// because the image would reach wherever the offset evaluates.
    pub memory_image: u64,
    /// Bytes of all data segments, active and passive. The module is held a few times
    /// over while it is compiled (the job's copy, the passes' outputs) and wasmtime
    /// keeps passive data: a module of one 1 GiB passive segment peaked at 7.2 GB
    /// (found by review), outside every other limit.
    pub data_bytes: u64,
    /// Bytes of custom sections (debug information, names): held like data until the
    /// fuel pass drops them (a 256 MiB custom section peaked at 1.3 GB).
    pub custom_bytes: u64,
    /// Element segments (passive, active and declared): wasmtime builds per-segment
    /// state at compile time (100,000 segments of one item: 9.2 s, 569 MB).
    pub element_segments: u64,
    /// Items of all element segments (one segment of 10 M `ref.null func`: over 60 s,
    /// 3.76 GB).
    pub element_items: u64,
    /// Operators (`end` excluded) of every constant expression: global initialisers,
    /// table initialisers, element offsets and items, data offsets. wasmtime translates
    /// them at compile time (a global initialised by 1 M chained `i32.add`s: 9.4 s,
    /// 804 MB).
    pub const_operators: u64,
}

/// Why a module was refused: the function (its index in the module's function index
/// space, imports first) when the measure is per function, and a sentence naming the
/// measure, its value and the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub function: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.function {
            Some(i) => write!(f, "function {i}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        write!(
            f,
            " (refused before validating or compiling: compile work beyond this limit is \
             not bounded by fuel, memory or time limits; see SECURITY.md)"
        )
    }
}

/// Scans `binary` (a core module) against `limits`; see the module docs.
pub fn check(binary: &[u8], limits: &Limits) -> Result<Shape, Refusal> {
    let mut scan = Scan {
        limits,
        shape: Shape::default(),
        types: Vec::new(),
        funcs: Vec::new(),
        imported: 0,
        defined: 0,
        control: Vec::new(),
        memories: Vec::new(),
        images: Vec::new(),
    };
    match scan.module(binary) {
        Ok(()) | Err(Stop::Malformed) => Ok(scan.shape),
        Err(Stop::Refused(r)) => Err(r),
    }
}

enum Stop {
    /// The bytes cannot be parsed: left to the validator.
    Malformed,
    Refused(Refusal),
}

impl From<wasmparser::BinaryReaderError> for Stop {
    fn from(_: wasmparser::BinaryReaderError) -> Self {
        Stop::Malformed
    }
}

/// Numbers in messages with thousands separators, as SECURITY.md writes them.
fn n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Scan<'l> {
    limits: &'l Limits,
    shape: Shape,
    /// (parameters, results) of each type; (0, 0) for a type that is not a function's.
    types: Vec<(u32, u32)>,
    /// The type of each function, imports first.
    funcs: Vec<u32>,
    imported: u32,
    defined: u32,
    /// The label arity of each open control frame of the current function, the
    /// function's own first. At most `limits.depth + 1` entries.
    control: Vec<u32>,
    /// The initial size in bytes of each memory, imports first.
    memories: Vec<u64>,
    /// The highest end offset of each memory's active data segments so far.
    images: Vec<u64>,
}

impl Scan<'_> {
    fn module(&mut self, binary: &[u8]) -> Result<(), Stop> {
        let mut parser = Parser::new(0);
        parser.set_features(wasmparser::WasmFeatures::all());
        for payload in parser.parse_all(binary) {
            match payload? {
                Payload::TypeSection(r) => {
                    let bytes = r.range().len() as u64;
                    self.shape.type_bytes = bytes;
                    self.module_limit("bytes of types", bytes, self.limits.type_bytes)?;
                    for group in r {
                        for sub in group?.into_types() {
                            let (p, q) = match &sub.composite_type.inner {
                                wasmparser::CompositeInnerType::Func(f) => {
                                    (f.params().len() as u32, f.results().len() as u32)
                                }
                                _ => (0, 0),
                            };
                            self.types.push((p, q));
                            self.shape.types = self.types.len() as u64;
                            self.module_limit("types", self.shape.types, self.limits.types)?;
                            let sig = u64::from(p) + u64::from(q);
                            self.shape.signature = self.shape.signature.max(sig);
                            if sig > self.limits.signature_values {
                                return Err(Stop::Refused(Refusal {
                                    function: None,
                                    message: format!(
                                        "type {} has {} parameters and results, over the \
                                         limit of {} per type",
                                        self.types.len() - 1,
                                        n(sig),
                                        n(self.limits.signature_values)
                                    ),
                                }));
                            }
                            self.signatures(sig)?;
                        }
                    }
                }
                Payload::ImportSection(r) => {
                    for import in r.into_imports() {
                        match import?.ty {
                            TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                                self.funcs.push(t);
                                self.imported += 1;
                            }
                            TypeRef::Memory(m) => {
                                let page = 1u64 << m.page_size_log2.unwrap_or(16).min(16);
                                self.memories.push(m.initial.saturating_mul(page));
                                self.images.push(0);
                            }
                            _ => {}
                        }
                    }
                }
                Payload::FunctionSection(r) => {
                    for t in r {
                        let t = t?;
                        self.funcs.push(t);
                        let (p, q) = self.types.get(t as usize).copied().unwrap_or((0, 0));
                        self.signatures(u64::from(p) + u64::from(q))?;
                    }
                }
                Payload::CodeSectionStart { count, size, .. } => {
                    self.shape.functions = u64::from(count);
                    self.shape.code_bytes = u64::from(size);
                    self.module_limit(
                        "functions defined",
                        u64::from(count),
                        self.limits.functions,
                    )?;
                    self.module_limit("bytes of code", u64::from(size), self.limits.code_bytes)?;
                }
                Payload::MemorySection(r) => {
                    for memory in r {
                        let m = memory?;
                        let page = 1u64 << m.page_size_log2.unwrap_or(16).min(16);
                        self.memories.push(m.initial.saturating_mul(page));
                        self.images.push(0);
                    }
                }
                Payload::GlobalSection(r) => {
                    for global in r {
                        self.const_expr(&global?.init_expr)?;
                    }
                }
                Payload::TableSection(r) => {
                    for table in r {
                        if let wasmparser::TableInit::Expr(e) = table?.init {
                            self.const_expr(&e)?;
                        }
                    }
                }
                Payload::ElementSection(r) => {
                    for element in r {
                        let element = element?;
                        self.shape.element_segments += 1;
                        self.module_limit(
                            "element segments",
                            self.shape.element_segments,
                            self.limits.element_segments,
                        )?;
                        if let wasmparser::ElementKind::Active { offset_expr, .. } = &element.kind {
                            self.const_expr(offset_expr)?;
                        }
                        match element.items {
                            wasmparser::ElementItems::Functions(items) => {
                                self.element_items(u64::from(items.count()))?;
                            }
                            wasmparser::ElementItems::Expressions(_, items) => {
                                self.element_items(u64::from(items.count()))?;
                                for e in items {
                                    self.const_expr(&e?)?;
                                }
                            }
                        }
                    }
                }
                Payload::CustomSection(c) => {
                    self.shape.custom_bytes = self
                        .shape
                        .custom_bytes
                        .saturating_add(c.range().len() as u64);
                    self.module_limit(
                        "bytes of custom sections",
                        self.shape.custom_bytes,
                        self.limits.custom_bytes,
                    )?;
                }
                Payload::DataSection(r) => {
                    for data in r {
                        let data = data?;
                        self.shape.data_bytes =
                            self.shape.data_bytes.saturating_add(data.data.len() as u64);
                        self.module_limit(
                            "bytes of data segments (active and passive)",
                            self.shape.data_bytes,
                            self.limits.data_bytes,
                        )?;
                        if let wasmparser::DataKind::Active {
                            memory_index,
                            offset_expr,
                        } = &data.kind
                        {
                            let offset = self.const_expr(offset_expr)?;
                            let i = *memory_index as usize;
                            let len = data.data.len() as u64;
                            let end = match offset {
                                Some(o) => o.saturating_add(len),
                                None => {
                                    len.saturating_add(self.memories.get(i).copied().unwrap_or(0))
                                }
                            };
                            if let Some(image) = self.images.get_mut(i) {
                                if end > *image {
                                    self.shape.memory_image =
                                        self.shape.memory_image.saturating_add(end - *image);
                                    *image = end;
                                }
                            }
                            self.module_limit(
                                "bytes of initialised memory images (the highest end \
                                 offset of data segments, summed over memories)",
                                self.shape.memory_image,
                                self.limits.memory_image,
                            )?;
                        }
                    }
                }
                Payload::CodeSectionEntry(body) => {
                    let index = self.imported.saturating_add(self.defined);
                    self.defined += 1;
                    self.function(index, &body)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds `values` to the module's parameters and results of types and functions.
    fn signatures(&mut self, values: u64) -> Result<(), Stop> {
        self.shape.module_signatures = self.shape.module_signatures.saturating_add(values);
        self.module_limit(
            "parameters and results in its types and its functions' types",
            self.shape.module_signatures,
            self.limits.module_signatures,
        )
    }

    fn element_items(&mut self, count: u64) -> Result<(), Stop> {
        self.shape.element_items = self.shape.element_items.saturating_add(count);
        self.module_limit(
            "element items",
            self.shape.element_items,
            self.limits.element_items,
        )
    }

    /// Counts `expr`'s operators into [`Shape::const_operators`], refusing past the
    /// limit before reading further; returns its value when it is a lone
    /// `i32.const`/`i64.const` (the offsets wasmtime places at compile time).
    fn const_expr(&mut self, expr: &wasmparser::ConstExpr) -> Result<Option<u64>, Stop> {
        let mut ops = expr.get_operators_reader();
        let mut count = 0u64;
        let mut value = None;
        while !ops.eof() {
            let op = ops.read()?;
            if matches!(op, Operator::End) {
                continue;
            }
            count += 1;
            value = match op {
                Operator::I32Const { value } if count == 1 => Some(u64::from(value as u32)),
                Operator::I64Const { value } if count == 1 => Some(value as u64),
                _ => None,
            };
            self.shape.const_operators = self.shape.const_operators.saturating_add(1);
            self.module_limit(
                "operators in constant expressions",
                self.shape.const_operators,
                self.limits.const_operators,
            )?;
        }
        Ok(value)
    }

    fn module_limit(&self, what: &str, value: u64, limit: u64) -> Result<(), Stop> {
        if value > limit {
            return Err(Stop::Refused(Refusal {
                function: None,
                message: format!(
                    "the module has {} {what}, over the limit of {}",
                    n(value),
                    n(limit)
                ),
            }));
        }
        Ok(())
    }

    fn function(&mut self, index: u32, body: &wasmparser::FunctionBody) -> Result<(), Stop> {
        let limits = *self.limits;
        let refuse = |message: String| {
            Stop::Refused(Refusal {
                function: Some(index),
                message,
            })
        };
        let bytes = body.range().len() as u64;
        note(&mut self.shape.function_bytes, bytes, index);
        if bytes > limits.function_bytes {
            return Err(refuse(format!(
                "its body is {} bytes, over the limit of {} bytes per function",
                n(bytes),
                n(limits.function_bytes)
            )));
        }
        let mut locals = 0u64;
        for group in body.get_locals_reader()? {
            locals = locals.saturating_add(u64::from(group?.0));
        }
        note(&mut self.shape.locals, locals, index);
        if locals > limits.locals {
            return Err(refuse(format!(
                "it declares {} locals, over the limit of {}",
                n(locals),
                n(limits.locals)
            )));
        }
        let (params, results) = self.func_type(index);
        let variables = locals + u64::from(params);
        let mut blocks = 0u64;
        let mut labels: Vec<u32> = Vec::new();
        self.control.clear();
        self.control.push(results);
        let mut depth = 0u64;
        let mut operators = 0u64;
        let mut values = 0u64;
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let offset = reader.original_position();
            let op = reader.read()?;
            operators += 1;
            let starts = block_starts(&op, &mut labels)?;
            if starts > 0 {
                blocks = blocks.saturating_add(starts);
                if blocks > limits.blocks {
                    return Err(refuse(format!(
                        "it has more than {} operators that start a Cranelift block (blocks, \
                         branches, `if`, `else`, `end`) up to offset {offset}, over the limit \
                         of {} per function (Cranelift's compile time grows faster than their \
                         number)",
                        n(limits.blocks),
                        n(limits.blocks)
                    )));
                }
                let ssa = variables.saturating_mul(blocks);
                if ssa > limits.ssa {
                    return Err(refuse(format!(
                        "its {} variables (parameters and locals) times its {} blocks up to \
                         offset {offset} make {}, over the limit of {} (Cranelift's SSA \
                         construction costs their product)",
                        n(variables),
                        n(blocks),
                        n(ssa),
                        n(limits.ssa)
                    )));
                }
            }
            let (cost, what): (u64, &str) = match op {
                Operator::Block { blockty }
                | Operator::Loop { blockty }
                | Operator::If { blockty }
                | Operator::Try { blockty } => {
                    let (params, results) = self.block_type(blockty);
                    if self.control.len() as u64 > limits.depth {
                        return Err(refuse(format!(
                            "its control nesting reaches depth {} at offset {offset}, over \
                             the limit of {}",
                            n(limits.depth + 1),
                            n(limits.depth)
                        )));
                    }
                    let label = if matches!(op, Operator::Loop { .. }) {
                        params
                    } else {
                        results
                    };
                    self.control.push(label);
                    depth = depth.max(self.control.len() as u64 - 1);
                    (u64::from(params) + u64::from(results), "a block type")
                }
                Operator::TryTable { try_table } => {
                    let (params, results) = self.block_type(try_table.ty);
                    if self.control.len() as u64 > limits.depth {
                        return Err(refuse(format!(
                            "its control nesting reaches depth {} at offset {offset}, over \
                             the limit of {}",
                            n(limits.depth + 1),
                            n(limits.depth)
                        )));
                    }
                    self.control.push(results);
                    depth = depth.max(self.control.len() as u64 - 1);
                    let catches = try_table.catches.len() as u64;
                    (
                        u64::from(params) + u64::from(results) + catches,
                        "a block type",
                    )
                }
                Operator::End | Operator::Delegate { .. } => {
                    self.control.pop();
                    (0, "")
                }
                Operator::Br { relative_depth }
                | Operator::BrIf { relative_depth }
                | Operator::BrOnNull { relative_depth }
                | Operator::BrOnNonNull { relative_depth }
                | Operator::BrOnCast { relative_depth, .. }
                | Operator::BrOnCastFail { relative_depth, .. } => {
                    (u64::from(self.label(relative_depth)), "a branch")
                }
                Operator::BrTable { targets } => {
                    let arity = u64::from(self.label(targets.default()));
                    let labels = u64::from(targets.len()) + 1;
                    let cost = labels.saturating_mul(arity);
                    if cost > limits.function_values {
                        return Err(refuse(format!(
                            "the br_table at offset {offset} has {} labels of {} values each \
                             ({} values), over the limit of {} values per function",
                            n(labels),
                            n(arity),
                            n(cost),
                            n(limits.function_values)
                        )));
                    }
                    (cost, "br_tables")
                }
                Operator::Return => (
                    u64::from(self.control.first().copied().unwrap_or(0)),
                    "returns",
                ),
                Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                    let (p, r) = self.func_type(function_index);
                    (u64::from(p) + u64::from(r), "calls")
                }
                Operator::CallIndirect { type_index, .. }
                | Operator::ReturnCallIndirect { type_index, .. }
                | Operator::CallRef { type_index }
                | Operator::ReturnCallRef { type_index } => {
                    let (p, r) = self
                        .types
                        .get(type_index as usize)
                        .copied()
                        .unwrap_or((0, 0));
                    (u64::from(p) + u64::from(r), "calls")
                }
                _ => (0, ""),
            };
            values = values.saturating_add(cost);
            if values > limits.function_values {
                return Err(refuse(format!(
                    "the types of its operators name more than {} values (at offset {offset}, \
                     counting {what}: each names its label's or its type's values), over the \
                     limit of {} values per function",
                    n(limits.function_values),
                    n(limits.function_values)
                )));
            }
        }
        note(&mut self.shape.depth, depth, index);
        note(&mut self.shape.ssa, variables.saturating_mul(blocks), index);
        note(&mut self.shape.blocks, blocks, index);
        self.shape.module_block_pairs = self
            .shape
            .module_block_pairs
            .saturating_add(blocks.saturating_mul(blocks));
        if self.shape.module_block_pairs > limits.module_block_pairs {
            return Err(refuse(format!(
                "the squares of its functions' blocks up to this one add up to {} (see the \
                 limit per function), over the limit of {} per module",
                n(self.shape.module_block_pairs),
                n(limits.module_block_pairs)
            )));
        }
        self.shape.module_ssa = self
            .shape
            .module_ssa
            .saturating_add(variables.saturating_mul(blocks));
        if self.shape.module_ssa > limits.module_ssa {
            return Err(refuse(format!(
                "the module's functions up to this one make {} variables x blocks (see the \
                 limit per function), over the limit of {} per module",
                n(self.shape.module_ssa),
                n(limits.module_ssa)
            )));
        }
        note(&mut self.shape.operators, operators, index);
        note(&mut self.shape.values, values, index);
        self.shape.module_values = self.shape.module_values.saturating_add(values);
        if self.shape.module_values > limits.module_values {
            return Err(refuse(format!(
                "the types of the module's operators, up to the end of this function, name {} \
                 values, over the limit of {} values per module",
                n(self.shape.module_values),
                n(limits.module_values)
            )));
        }
        Ok(())
    }

    /// (parameters, results) of function `index`; (0, 0) when out of range (the
    /// validator refuses it).
    fn func_type(&self, index: u32) -> (u32, u32) {
        self.funcs
            .get(index as usize)
            .and_then(|t| self.types.get(*t as usize))
            .copied()
            .unwrap_or((0, 0))
    }

    fn block_type(&self, ty: BlockType) -> (u32, u32) {
        match ty {
            BlockType::Empty => (0, 0),
            BlockType::Type(_) => (0, 1),
            BlockType::FuncType(t) => self.types.get(t as usize).copied().unwrap_or((0, 0)),
        }
    }

    /// The arity of the label `relative_depth` names; 0 when out of range.
    fn label(&self, relative_depth: u32) -> u32 {
        let len = self.control.len();
        (relative_depth as usize)
            .checked_add(1)
            .and_then(|d| len.checked_sub(d))
            .map_or(0, |i| self.control[i])
    }
}

/// How many Cranelift blocks `op` starts, as [`Shape::blocks`] counts them (`labels` is
/// room to count a `br_table`'s distinct labels in). The unwind pass counts its own
/// output with it, to keep what it adds within [`UNWIND_LIMITS`].
pub(crate) fn block_starts(
    op: &Operator,
    labels: &mut Vec<u32>,
) -> Result<u64, wasmparser::BinaryReaderError> {
    // A `br_table` starts a Cranelift block per distinct label: each edge out of it is a
    // critical edge, split into a block of its own (a review's function of 100 tables of
    // 2,001 labels, counted as 100 blocks, took 47 s of regalloc).
    Ok(match op {
        Operator::BrTable { targets } => {
            labels.clear();
            labels.push(targets.default());
            for t in targets.targets() {
                labels.push(t?);
            }
            labels.sort_unstable();
            labels.dedup();
            1 + labels.len() as u64
        }
        Operator::Block { .. }
        | Operator::Loop { .. }
        | Operator::If { .. }
        | Operator::Else
        | Operator::End
        | Operator::Try { .. }
        | Operator::TryTable { .. }
        | Operator::BrIf { .. }
        | Operator::BrOnNull { .. }
        | Operator::BrOnNonNull { .. }
        | Operator::BrOnCast { .. }
        | Operator::BrOnCastFail { .. } => 1,
        _ => 0,
    })
}

/// Records `value` of function `index` in `max` if it is the largest so far.
fn note(max: &mut (u64, u32), value: u64, index: u32) {
    if value > max.0 {
        *max = (value, index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    /// [`LIMITS`] without the limits on signatures, for the tests of other measures
    /// that use types of 999 or 1,000 values.
    const OPEN: Limits = Limits {
        signature_values: u64::MAX,
        module_signatures: u64::MAX,
        ..LIMITS
    };

    fn refusal(binary: &[u8], limits: &Limits) -> Refusal {
        match check(binary, limits) {
            Err(r) => r,
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    /// A module of `targets`-target `br_table`s into a block of `arity` results, as in
    /// the finding (30 of 65,520 into 999).
    fn br_table_module(tables: usize, targets: usize, arity: usize) -> Vec<u8> {
        let results = "i32 ".repeat(arity);
        let labels = "0 ".repeat(targets);
        let mut body = String::new();
        for _ in 0..tables {
            body += &format!(
                "(block (result {results}) unreachable (br_table {labels} 0 (i32.const 0))) \
                 {}",
                "drop ".repeat(arity)
            );
        }
        wat(&format!("(module (func {body}))"))
    }

    #[test]
    fn measures_each_shape_and_names_the_largest_function() {
        let m = wat(r#"(module
            (import "m" "f" (func (param i32 i32) (result i32)))
            (func)
            (func (local i32 i64) (local f32)
              (block (block (loop (br 2))))
              (drop (call 0 (i32.const 1) (i32.const 2)))
              (block (result i32 i32) unreachable (br_table 0 0 0 (i32.const 0)))
              drop drop))"#);
        let s = check(&m, &LIMITS).unwrap();
        assert_eq!(s.functions, 2);
        assert_eq!(
            s.locals,
            (3, 2),
            "three locals in function 2 (import first)"
        );
        assert_eq!(s.depth, (3, 2));
        // br 2 to a block of no results: 0; call: 2 + 1; block (result i32 i32): 2;
        // br_table of 3 labels of 2 values: 6.
        assert_eq!(s.values, (3 + 2 + 6, 2));
        assert_eq!(s.module_values, 11);
        assert!(s.code_bytes > 0 && s.function_bytes.1 == 2);
    }

    #[test]
    fn a_br_table_of_many_targets_into_a_block_of_many_results_is_refused() {
        let m = br_table_module(1, 2000, 999);
        let r = refusal(
            &m,
            &Limits {
                function_values: 1 << 20,
                ..OPEN
            },
        );
        assert_eq!(r.function, Some(0));
        let text = r.to_string();
        assert!(
            text.contains("function 0: the br_table at offset")
                && text.contains("has 2,001 labels of 999 values each (1,998,999 values), over the limit of 1,048,576 values per function"),
            "{text}"
        );
        // The finding's own module (30 tables of 65,520 targets into 999 results, 2 MB in
        // one function): over the limit of bytes per function, and of values.
        let m = br_table_module(30, 65_520, 999);
        assert!(refusal(&m, &OPEN).message.contains("bytes per function"));
        let wide = Limits {
            function_bytes: 4 << 20,
            ..OPEN
        };
        assert!(refusal(&m, &wide)
            .message
            .contains("65,521 labels of 999 values"));
        // Many small tables add up per function, and per module.
        let m = br_table_module(20, 100, 10);
        let r = refusal(
            &m,
            &Limits {
                function_values: 10_000,
                ..OPEN
            },
        );
        assert!(r.message.contains("more than 10,000 values"), "{r}");
    }

    #[test]
    fn deep_nesting_is_refused_at_the_limit_without_walking_further() {
        let depth = 5;
        let ok = wat(&format!(
            "(module (func {}{}))",
            "block ".repeat(depth),
            "end ".repeat(depth)
        ));
        let limits = Limits { depth: 5, ..LIMITS };
        assert_eq!(check(&ok, &limits).unwrap().depth, (5, 0));
        let deep = wat(&format!(
            "(module (func {}{}))",
            "block ".repeat(6),
            "end ".repeat(6)
        ));
        let r = refusal(&deep, &limits);
        assert!(
            r.message.contains("nesting reaches depth 6 at offset"),
            "{r}"
        );
        assert!(r.message.ends_with("over the limit of 5"), "{r}");
        // A million nested blocks (the finding) are refused after the limit's worth.
        let n = 1_000_000;
        let mut body = [0x02, 0x40].repeat(n);
        body.extend(std::iter::repeat_n(0x0b, n + 1));
        let m = module_of_body(&body);
        let start = std::time::Instant::now();
        assert!(refusal(&m, &LIMITS).message.contains("bytes per function"));
        let wide = Limits {
            function_bytes: 4 << 20,
            ..LIMITS
        };
        let r = refusal(&m, &wide);
        assert!(r.message.contains("depth 2,049"), "{r}");
        assert!(start.elapsed().as_secs() < 2);
    }

    /// A module of one function `() -> ()` with no locals and `code` (ending in `end`).
    fn module_of_body(code: &[u8]) -> Vec<u8> {
        let mut m = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = wasm_encoder::FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut body = vec![0u8]; // no locals
        body.extend_from_slice(code);
        let mut codes = wasm_encoder::CodeSection::new();
        codes.raw(&body);
        m.section(&codes);
        m.finish()
    }

    #[test]
    fn bodies_locals_calls_and_module_totals_are_limited() {
        let m = wat("(module (func (local i32 i32 i32) nop nop nop))");
        let r = refusal(&m, &Limits { locals: 2, ..OPEN });
        assert_eq!(r.message, "it declares 3 locals, over the limit of 2");
        let r = refusal(
            &m,
            &Limits {
                function_bytes: 4,
                ..OPEN
            },
        );
        assert!(
            r.message
                .contains("bytes, over the limit of 4 bytes per function"),
            "{r}"
        );
        let r = refusal(
            &m,
            &Limits {
                code_bytes: 4,
                ..OPEN
            },
        );
        assert_eq!(r.function, None);
        assert!(
            r.message.contains("bytes of code, over the limit of 4"),
            "{r}"
        );
        let two = wat("(module (func) (func))");
        let r = refusal(
            &two,
            &Limits {
                functions: 1,
                ..OPEN
            },
        );
        assert_eq!(
            r.message,
            "the module has 2 functions defined, over the limit of 1"
        );
        // A call of a function of 1,000 results names 1,000 values.
        let results = "i32 ".repeat(1000);
        let calls = "(call $f) ".repeat(20);
        let m = wat(&format!(
            "(module (func $f (result {results}) unreachable) (func {calls} unreachable))"
        ));
        let limits = Limits {
            function_values: 10_000,
            module_values: 30_000,
            ..OPEN
        };
        let r = refusal(&m, &limits);
        assert_eq!(r.function, Some(1));
        assert!(r.message.contains("counting calls"), "{r}");
        let m = wat(&format!(
            "(module (func $f (result {results}) unreachable) {})",
            "(func (call $f) unreachable)".repeat(40)
        ));
        let r = refusal(&m, &limits);
        assert!(r.message.contains("values per module"), "{r}");
    }

    /// Unsigned LEB128, as wasm-encoder writes it.
    fn leb(v: u64, out: &mut Vec<u8>) {
        wasm_encoder::Encode::encode(&v, out);
    }

    /// The finding's module: one function of `locals` i32 locals, `blocks` empty
    /// `block end`s, then a read of every local.
    pub(crate) fn ssa_module(locals: u64, blocks: usize) -> Vec<u8> {
        let mut body = vec![1u8];
        leb(locals, &mut body);
        body.push(0x7f);
        for _ in 0..blocks {
            body.extend_from_slice(&[0x02, 0x40, 0x0b]);
        }
        for i in 0..locals {
            body.push(0x20);
            leb(i, &mut body);
            body.push(0x1a);
        }
        body.push(0x0b);
        let mut m = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = wasm_encoder::FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut codes = wasm_encoder::CodeSection::new();
        codes.raw(&body);
        m.section(&codes);
        m.finish()
    }

    #[test]
    fn many_locals_read_after_many_blocks_are_refused() {
        // The finding: 4,000 locals after 80,000 blocks (256 KB) took 22 s and 1.28 GB.
        let m = ssa_module(4_000, 80_000);
        let r = refusal(&m, &LIMITS);
        assert_eq!(r.function, Some(0));
        assert!(
            r.message.contains(
                "its 4,000 variables (parameters and locals) times its 525 \
                 blocks"
            ) && r.message.contains("over the limit of 2,097,152"),
            "{r}"
        );
        // Parameters count as variables, and `end`s, `else`s and conditional branches as
        // blocks.
        let m = wat("(module (func (param i32 i32) (local i32) \
             (if (local.get 0) (then) (else)) (br_if 0 (local.get 1))))");
        let s = check(&m, &LIMITS).unwrap();
        // if, else, end, br_if, the function's end: 5 blocks of 3 variables.
        assert_eq!(s.ssa, (15, 0));
        assert_eq!(s.module_ssa, 15);
        let r = refusal(&m, &Limits { ssa: 14, ..LIMITS });
        assert!(r.message.contains("make 15, over the limit of 14"), "{r}");
        // Per module: functions each under the limit add up.
        let m = wat(&"(module (func (local i32) block end))".replace(
            "(func (local i32) block end)",
            &"(func (local i32) block end)".repeat(10),
        ));
        let r = refusal(
            &m,
            &Limits {
                module_ssa: 29,
                ..LIMITS
            },
        );
        assert!(r.message.contains("over the limit of 29 per module"), "{r}");
    }

    /// A module of `types` distinct types of `params` v128 parameters and as many
    /// results, and `functions` functions of type 0, each `unreachable`.
    fn signature_module(types: u32, params: u32, functions: u32) -> Vec<u8> {
        let mut m = wasm_encoder::Module::new();
        let mut ts = wasm_encoder::TypeSection::new();
        for t in 0..types {
            // Distinct types: type t has one i32 parameter more than the v128s.
            let mut ps = vec![wasm_encoder::ValType::V128; params as usize];
            ps.extend(std::iter::repeat_n(
                wasm_encoder::ValType::I32,
                t as usize % 2,
            ));
            ts.ty()
                .function(ps, vec![wasm_encoder::ValType::V128; params as usize]);
        }
        m.section(&ts);
        let mut funcs = wasm_encoder::FunctionSection::new();
        let mut codes = wasm_encoder::CodeSection::new();
        for _ in 0..functions {
            funcs.function(0);
            codes.raw(&[0, 0x00, 0x0b]);
        }
        m.section(&funcs);
        m.section(&codes);
        m.finish()
    }

    #[test]
    fn wide_signatures_and_many_types_are_refused() {
        // Findings: 1,000 functions of 998 v128 parameters and results (8.9 KB) took 40 s
        // to compile; 1,000 types of them, more than 100 s.
        let r = refusal(&signature_module(1, 998, 1_000), &LIMITS);
        assert_eq!(r.function, None);
        assert_eq!(
            r.message,
            "type 0 has 1,996 parameters and results, over the limit of 256 per type"
        );
        let r = refusal(&signature_module(1_000, 998, 0), &LIMITS);
        assert!(
            r.message
                .contains("bytes of types, over the limit of 65,536"),
            "{r}"
        );
        // Within the limit per type, the module's total counts types and functions.
        let m = signature_module(1, 128, 1_100);
        let s = check(
            &m,
            &Limits {
                module_signatures: u64::MAX,
                ..LIMITS
            },
        )
        .unwrap();
        assert_eq!(s.signature, 256);
        assert_eq!(s.module_signatures, 256 * 1_101);
        let r = refusal(&m, &LIMITS);
        assert!(
            r.message.contains(
                "parameters and results in its types and its functions' types, over the \
                 limit of 262,144"
            ),
            "{r}"
        );
        let m = signature_module(5, 0, 0);
        let r = refusal(&m, &Limits { types: 4, ..LIMITS });
        assert_eq!(r.message, "the module has 5 types, over the limit of 4");
    }

    #[test]
    fn malformed_bytes_are_left_to_the_validator() {
        for bytes in [
            &b"\0asm\x01\0\0\0\x0a\x05\x01"[..],
            b"\0asm\x01\0\0\0\x0a\xff\xff\xff\xff\x0f",
        ] {
            assert!(check(bytes, &LIMITS).is_ok());
        }
        // Out-of-range labels, types and functions cost nothing and never panic.
        let m = module_of_body(&[
            0x0c, 0x7f, 0x02, 0x7f, 0x10, 0xff, 0x01, 0x0e, 0x01, 0x05, 0x09, 0x0b, 0x0b,
        ]);
        assert!(check(&m, &LIMITS).is_ok());
    }

    /// The memory-image module of the review: memories with a byte at 0 and one near
    /// 16 MiB each; the measure sums the highest end over memories.
    fn image_module(memories: usize) -> Vec<u8> {
        let mut t = String::from("(module");
        for i in 0..memories {
            t += &format!(
                " (memory $m{i} 256) (data (memory $m{i}) (i32.const 0) \"\\01\")\
                 (data (memory $m{i}) (i32.const 16777214) \"\\01\")"
            );
        }
        t += ")";
        wat(&t)
    }

    #[test]
    fn memory_images_are_summed_over_memories_and_limited() {
        let s = check(&image_module(2), &LIMITS).unwrap();
        assert_eq!(s.memory_image, 2 * 16_777_215);
        let r = refusal(&image_module(5), &LIMITS);
        assert!(r.function.is_none());
        assert!(r.message.contains("initialised memory images"), "{r}");
        assert!(r.message.contains("over the limit of 67,108,864"), "{r}");
        // A non-constant offset counts the segment plus the memory's initial size.
        let m = wat("(module (global $g i32 (i32.const 0)) (memory 2) \
             (data (global.get $g) \"abc\"))");
        assert_eq!(check(&m, &LIMITS).unwrap().memory_image, 2 * 65_536 + 3);
    }

    #[test]
    fn element_segments_and_items_are_limited() {
        let segments = |n: usize| {
            let mut t = String::from("(module (table 1 funcref) (func $f)");
            for _ in 0..n {
                t += " (elem func $f)";
            }
            wat(&(t + ")"))
        };
        let s = check(&segments(3), &LIMITS).unwrap();
        assert_eq!((s.element_segments, s.element_items), (3, 3));
        let r = refusal(
            &segments(3),
            &Limits {
                element_segments: 2,
                ..LIMITS
            },
        );
        assert!(
            r.message
                .contains("3 element segments, over the limit of 2"),
            "{r}"
        );
        let nulls = format!("(module (elem funcref {}))", "(ref.null func) ".repeat(10));
        let r = refusal(
            &wat(&nulls),
            &Limits {
                element_items: 9,
                ..LIMITS
            },
        );
        assert!(
            r.message.contains("10 element items, over the limit of 9"),
            "{r}"
        );
    }

    #[test]
    fn operators_in_constant_expressions_are_limited() {
        let chain = |adds: usize| {
            let mut e = String::from("(i32.const 1)");
            for _ in 0..adds {
                e += " (i32.const 1) i32.add";
            }
            wat(&format!("(module (global i32 {e}))"))
        };
        assert_eq!(check(&chain(10), &LIMITS).unwrap().const_operators, 21);
        let r = refusal(&chain(LIMITS.const_operators as usize / 2), &LIMITS);
        assert!(
            r.message.contains("operators in constant expressions"),
            "{r}"
        );
        assert!(r.message.contains("over the limit of 262,144"), "{r}");
    }

    /// The review's chains: one function of `n` `br_if`s in one block (3 variables, so
    /// under the variables × blocks limit) compiled in 107 s for 80,000; over 16,384
    /// blocks a function is refused, and the squares of blocks add up per module.
    #[test]
    fn long_chains_of_branches_are_refused_per_function_and_per_module() {
        let chain = |n: usize, functions: usize| {
            let body = format!(
                "(func (param i32) block {} end)",
                "local.get 0 br_if 0 ".repeat(n)
            );
            wat(&format!("(module {})", body.repeat(functions)))
        };
        // `block`, the `br_if`s, `end` and the function's `end`.
        let s = check(&chain(16_381, 1), &LIMITS).unwrap();
        assert_eq!(s.blocks, (16_384, 0));
        assert_eq!(s.module_block_pairs, 16_384 * 16_384);
        let r = refusal(&chain(16_382, 1), &LIMITS);
        assert!(
            r.message
                .contains("more than 16,384 operators that start a Cranelift block"),
            "{r}"
        );
        // Four such functions are 2^30 squares: the fifth is refused.
        check(&chain(16_381, 4), &LIMITS).unwrap();
        let r = refusal(&chain(16_381, 5), &LIMITS);
        assert!(
            r.message.contains("squares of its functions' blocks"),
            "{r}"
        );
    }

    /// Data segments (passive ones too) and custom sections are held while a module is
    /// compiled: past 64 MiB each, refused (the review's 1 GiB passive segment peaked at
    /// 7.2 GB).
    #[test]
    fn data_segments_and_custom_sections_are_limited_in_bytes() {
        let limits = Limits {
            data_bytes: 1_000,
            custom_bytes: 1_000,
            ..LIMITS
        };
        let data = |n: usize| {
            wat(&format!(
                "(module (memory 1) (data \"{}\") (data (i32.const 0) \"{}\"))",
                "a".repeat(n),
                "b".repeat(n)
            ))
        };
        assert_eq!(check(&data(500), &limits).unwrap().data_bytes, 1_000);
        let r = refusal(&data(501), &limits);
        assert!(r.message.contains("bytes of data segments"), "{r}");
        let custom = |n: usize| {
            let mut m = wat("(module)");
            // A custom section: id 0, size, name "x", then `n` bytes.
            let mut s = vec![1u8, b'x'];
            s.extend(std::iter::repeat_n(0u8, n));
            m.push(0);
            wasm_encoder::Encode::encode(&(s.len() as u32), &mut m);
            m.extend_from_slice(&s);
            m
        };
        // The section's bytes count its name too.
        assert_eq!(check(&custom(998), &limits).unwrap().custom_bytes, 1_000);
        let r = refusal(&custom(999), &limits);
        assert!(r.message.contains("bytes of custom sections"), "{r}");
        assert_eq!(
            (LIMITS.data_bytes, LIMITS.custom_bytes),
            (64 << 20, 64 << 20)
        );
    }
}
