//! The engine configuration (pinned, fingerprinted) and compiling a module with it (the
//! passes, then Cranelift). The compiled-module cache is [`crate::cache`]'s; compiling
//! with a deadline, in the compile worker or on a thread, is [`crate::compile`]'s.
//!
//! Every setting that can change what a module computes, how far it recurses or how
//! much fuel an instruction costs is listed in [`ENGINE_SETTINGS`], under a protocol
//! version ([`PROTOCOL`]); the fingerprint is a hash of that list, so two hosts running
//! the same job agree on it, and a job id changes when the rules do.
//!
//! What decides a result is detwasm's own: the passes rewrite the module (fuel, relaxed
//! SIMD, NaNs, stack depth), the WASI host is detwasm's, and the engine only runs
//! standard WebAssembly. So the engine is not named: not wasmtime's version, nor its
//! compiler's settings. The proofs: wasmi, an interpreter, runs whole jobs through the
//! same passes and WASI host to the same receipts (`detwasm_fuzzing/tests/engines.rs`:
//! the examples, the probe, the fixtures, CPython) and generated modules to the same
//! values, counts and stack depths (`detwasm_fuzzing`'s interpreter setup); Cranelift
//! unoptimised agrees with optimised (the `opt-none` setup); a build against another
//! wasmtime release gives the same receipts (`scripts/engine-diff.sh`);
//! `tests/protocol.rs` pins the receipts of a corpus of jobs, so any change to a pass,
//! the host or the engine that would change one fails there unless [`PROTOCOL`] is
//! bumped. wasmtime is still pinned exactly (Cargo.toml) and
//! configured explicitly in [`deterministic_config`]: a build is one engine, tested as
//! one.
//!
//! Settings that cannot change a result are left out of the fingerprint on purpose: the
//! module cache, parallel compilation. The tests run jobs both ways and compare.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Module, OptLevel, Strategy, WasmFeatures};

use crate::error::RunError;
use crate::passes;

/// The version of detwasm's rules for a result: what [`ENGINE_SETTINGS`] lists (the
/// passes' versions, the host's rules, the limits, the WebAssembly features). It leads
/// every fingerprint (`detwasm-protocol-1:blake3:…`), so that a verifier holding a
/// receipt of another version says which. Bumped whenever a change would change any
/// receipt: `tests/protocol.rs` fails until it is (and its pins are renewed).
/// Receipts made before there was a protocol (fingerprints `blake3:…` without it) named
/// wasmtime's build; they are verified with the detwasm that made them.
pub const PROTOCOL: &str = "detwasm-protocol-1";

/// Maximum native stack for wasm frames: [`passes::stack::NATIVE_BYTES_PER_UNIT`] bytes
/// for each unit of the metered limit ([`passes::stack::STACK_LIMIT`]), so that the
/// metered limit, which is the same on every CPU, is always reached before this one,
/// which is not (Cranelift's frames differ by target). Rejected: keeping the native limit
/// as the only one (1 MiB before: a frame whose native size differs between x86-64 and
/// aarch64 overflowed at another depth, after another number of instructions; measured
/// in [`passes::stack`]). The tests of [`passes::stack`]
/// recurse to the deepest metered depth with the largest frames per unit and check that
/// the metered trap comes first.
pub const MAX_WASM_STACK: usize =
    passes::stack::STACK_LIMIT as usize * passes::stack::NATIVE_BYTES_PER_UNIT;

/// Native stack a guest runs on: the pinned wasm stack plus ample room for host frames
/// (WASI calls run on top of the deepest wasm frame). A job's guest runs on a wasmtime
/// fiber of this size (`async_stack_size` in [`deterministic_config`]);
/// the self-fuzzer and the stack tests, which call guests synchronously, run them on a
/// thread of this size.
pub const GUEST_THREAD_STACK: usize = MAX_WASM_STACK + (8 << 20);

/// Frames of a trap's wasm backtrace that wasmtime records: only the innermost is read
/// (to tell a metered stack exhaustion, [`is_stack_exhaustion`]); pinned because
/// that reading depends on it.
pub const WASM_BACKTRACE_FRAMES: usize = 20;

/// The rules that decide a result ([`PROTOCOL`]), as `key=value` lines. The fingerprint
/// hashes exactly this text. The engine's own settings ([`deterministic_config`]) are
/// not in it: they cannot change a result (see the module docs), and a wasmtime upgrade
/// that did would fail `tests/protocol.rs`. Rejected: naming wasmtime's version and its
/// settings here, as detwasm did before protocols (every wasmtime upgrade, a security
/// fix included, orphaned every receipt ever made).
///
/// Decisions, each closing a row of the determinism contract:
/// - `nan_pass`: every NaN a float operation produces is the canonical quiet NaN
///   (0x7ff8000000000000 / 0x7fc00000) wherever its bits can be observed, because hardware
///   NaN payloads differ (x86 produces a negative "default NaN", ARM a positive one). The
///   [`passes::nan`] pass canonicalizes, in the module, exactly the results that can reach
///   a store, a call, a global, a `reinterpret`, ...; the observable behaviour is that of
///   canonicalizing after every operation. Cranelift's own pass (off in
///   [`deterministic_config`]) canonicalized after every operation and made float-heavy
///   code about 3.5 times slower. Rejected: keeping Cranelift's pass (same behaviour, the cost above).
/// - `relaxed_pass`: every relaxed SIMD operator gives the result of the WebAssembly 3.0
///   specification's deterministic profile, computed by plain SIMD that the
///   [`passes::relaxed`] pass writes in its place, so no engine setting decides it (the
///   profile's `relaxed_madd` is unfused and its relaxed dot products saturate, where
///   wasmtime's `relaxed_simd_deterministic` fuses and wraps). No relaxed operator
///   reaches the engine; wasmtime's `relaxed_simd_deterministic` stays set so that one that
///   did would still not take the host's fastest lowering. Rejected: relying on that
///   setting alone (what detwasm did before `detwasm-relaxed-1`: wasmtime's choices, not
///   the standard's, and they could change with a wasmtime release); disabling relaxed
///   SIMD (breaks modules built with it for no gain).
/// - `threads=false`: no shared memory, no atomics wait/notify: a single thread of
///   control. wasmtime is built without its `threads` feature, so the proposal cannot be
///   switched on. Rejected: threads with a deterministic scheduler (not offered by
///   wasmtime).
/// - `fuel_pass`: fuel is the only deterministic limit on work and its consumption is the
///   instruction count a verifier compares. It is counted by code the
///   [`passes::fuel`] pass writes into the module, which carries the count from call to
///   call in a register; wasmtime's own fuel (off), which kept it in
///   memory and gave every function a full frame. The counts are the same (tested on
///   generated modules). Rejected: wasmtime's fuel (what detwasm used before: CPython
///   running an integer loop executed 1.66 times the instructions it does without fuel,
///   against 1.37 times with the pass; callgrind, see [`passes::fuel`]). `fuel_slice` is
///   the fuel the host hands out at a time ([`crate::meter::SLICE`]): the host writes the
///   guest's fuel back at each refuel, so the count a trap reports can depend on it.
/// - wasmtime's epoch interruption is off: the wall-clock safety net (which never decides a
///   verifiable result) costs nothing in the guest's code: the host reads the clock
///   each time the guest asks for the next slice of its fuel ([`crate::meter::SLICE`]),
///   at the fuel checks the module already has (see [`crate::meter`]). Rejected: epoch
///   interruption (what detwasm used before), which
///   compiles a check of the engine's epoch counter (a load, a compare, a branch, and the
///   values it makes Cranelift spill) into every loop header and function entry; measured
///   with the wasmtime 48 CLI against plain wasmtime, CPU time +7% on an integer loop,
///   +95% on a float loop, +17% on n-body, +29% on recursive fib.
/// - `stack_metering`: the depth at which a guest exhausts its call stack is counted in
///   the module by the [`passes::stack`] pass (version, units a frame costs beyond its
///   values, limit in units, the costliest chain of frames left unmetered), so it is the same on
///   every CPU. Instruction counts include
///   the metering code. wasmtime's `max_wasm_stack` (native bytes, see
///   [`MAX_WASM_STACK`]) is large enough never to be reached first; its
///   `wasm_backtrace_max_frames` is pinned because the
///   metered trap is recognised by its innermost frame.
/// - The architecture is not named: the cross-architecture test (`tests/cross_arch.rs`,
///   x86-64 against aarch64 under qemu) shows that jobs give the same results, instruction
///   counts and traps on both, and nothing in this configuration depends on the target.
/// - wasm features pinned one by one, so a wasmtime default changing cannot change which
///   modules validate.
/// - the rules of the runtime's own host that decide outcomes and instruction counts:
///   `wasi_host` names the version of detwasm's preview1 semantics (bumped when an errno
///   or a limit a guest can observe changes), `host_fuel_bytes` the fuel charged for host
///   work ([`crate::wasi::host::HOST_BYTES_PER_FUEL`]), `table_element_bytes` what a table
///   element costs against the memory limit ([`crate::limiter::TABLE_ELEMENT_BYTES`]),
///   `output_entry_overhead` what an output entry costs against the output quota
///   ([`crate::wasi::vfs::ENTRY_OVERHEAD`]). Two detwasm builds that disagree on any of
///   them disagree on the job id, never silently on the instruction count.
pub const ENGINE_SETTINGS: &str = "\
protocol=detwasm-protocol-1
nan_pass=detwasm-nan-2
relaxed_pass=detwasm-relaxed-1
threads=false
simd=true
relaxed_simd=true
bulk_memory=true
multi_value=true
reference_types=true
multi_memory=true
memory64=false
tail_call=true
extended_const=true
gc=false
function_references=false
exceptions=false
wide_arithmetic=false
custom_page_sizes=false
component_model=false
fuel_pass=detwasm-fuel-2
fuel_slice=10000000
stack_metering=detwasm-stack-3
stack_frame_base=8
stack_limit=262144
stack_unmetered_max_cost=65536
wasi_host=detwasm-preview1-3
host_fuel_bytes=64
table_element_bytes=8
output_entry_overhead=256
";

/// Options that do not change results (and so are not in the fingerprint).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where compiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Compile functions on several threads.
    pub parallel_compilation: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: default_cache_dir(),
            parallel_compilation: true,
        }
    }
}

/// The cache directory: `$DETWASM_CACHE_DIR`, else `$XDG_CACHE_HOME/detwasm`, else
/// `~/.cache/detwasm`. `detwasm cache gc --max-size 0` empties it (or run with
/// `--no-cache`): it only ever holds `<key>.cwasm` files detwasm wrote.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DETWASM_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("detwasm"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("detwasm"))
}

/// The engine configuration named by [`ENGINE_SETTINGS`].
pub fn deterministic_config(parallel_compilation: bool) -> Config {
    let mut c = Config::new();
    c.strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(false)
        .relaxed_simd_deterministic(true)
        .wasm_simd(true)
        .wasm_relaxed_simd(true)
        .wasm_bulk_memory(true)
        .wasm_multi_value(true)
        .wasm_multi_memory(true)
        .wasm_memory64(false)
        .wasm_tail_call(true)
        .wasm_extended_const(true)
        .wasm_wide_arithmetic(false)
        .wasm_custom_page_sizes(false)
        .consume_fuel(false)
        .epoch_interruption(false)
        .max_wasm_stack(MAX_WASM_STACK)
        // The fiber a job's guest runs on (see [`GUEST_THREAD_STACK`]): the
        // wasm stack plus room for the host frames above the deepest wasm frame. wasmtime
        // refuses a `max_wasm_stack` above it.
        .async_stack_size(GUEST_THREAD_STACK)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(WASM_BACKTRACE_FRAMES))
        .parallel_compilation(parallel_compilation);
    // Features whose setters are compiled only with wasmtime's `gc`/`threads` features
    // (which detwasm leaves out) are pinned through the raw feature set.
    c.wasm_features(WasmFeatures::REFERENCE_TYPES, true)
        .wasm_features(WasmFeatures::THREADS, false)
        .wasm_features(WasmFeatures::GC, false)
        .wasm_features(WasmFeatures::FUNCTION_REFERENCES, false)
        .wasm_features(WasmFeatures::EXCEPTIONS, false);
    c
}

/// `<protocol>:blake3:<hex>` of [`ENGINE_SETTINGS`].
pub fn fingerprint() -> String {
    format!(
        "{PROTOCOL}:blake3:{}",
        blake3::hash(ENGINE_SETTINGS.as_bytes()).to_hex()
    )
}

/// The protocol a fingerprint names ([`PROTOCOL`]), or `None` for anything that is not
/// `detwasm-protocol-N:blake3:` and 64 hex digits (one made before protocols, a bare
/// `blake3:…` that named a wasmtime build, or not a fingerprint at all). Strict, because
/// the name is shown to a verifier as the protocol to look for (found by review: any
/// text up to the first colon was taken as a protocol's name).
pub fn protocol_of(fingerprint: &str) -> Option<&str> {
    let (protocol, rest) = fingerprint.split_once(':')?;
    let n = protocol.strip_prefix("detwasm-protocol-")?;
    let hex = rest.strip_prefix("blake3:")?;
    let number = !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit());
    let hash = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (number && hash).then_some(protocol)
}

pub fn new_engine(opts: &EngineOptions) -> Result<Engine, RunError> {
    Engine::new(&deterministic_config(opts.parallel_compilation))
        .map_err(|e| RunError::Engine(e.to_string()))
}

/// Largest WebAssembly text module [`to_binary`] translates: 4 MiB.
///
/// Translating text (the `wat` crate) runs before the shape scan and is not linear in
/// memory: about 52 bytes of RSS per byte of text (40 MB of nested `(block` took 2 GB and
/// 9 s). Text is for tests and small hand-written modules (the largest in this repository
/// is a few KB); real programs are binaries. Just under 4 MiB of nested `(block` the translation
/// peaks at 220 MiB and takes 0.5 s (measured with `/usr/bin/time`), within the compile
/// term SECURITY.md allows, and then the shape scan refuses the module (`hostile_guest::a_huge_text_module_is_refused_before_translating`).
/// Rejected: translating inside the compile deadline only (bounds time, not memory);
/// no text at all (the tests, examples and users' hand-written modules use it).
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// The WebAssembly binary of `bytes`: the bytes themselves for a core module, the
/// translation of WebAssembly text, or an error that says what the bytes are instead (not
/// WebAssembly, a component).
pub fn to_binary(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, RunError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.starts_with(MAGIC) {
        if bytes.len() < 8 {
            return Err(RunError::InvalidModule(format!(
                "the file is truncated: {} bytes, shorter than the 8-byte header",
                bytes.len()
            )));
        }
        if bytes[4..8] != [1, 0, 0, 0] {
            return Err(RunError::NotWasm(
                "this is a WebAssembly component (or an unknown version); detwasm runs core \
                 modules built for wasm32-wasip1"
                    .into(),
            ));
        }
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let text = std::str::from_utf8(bytes).ok().filter(|t| {
        let t = t.trim_start();
        t.starts_with('(') || t.starts_with(";;")
    });
    match text {
        Some(_) if bytes.len() > MAX_TEXT_BYTES => Err(RunError::TooComplex(format!(
            "the module is WebAssembly text of {} bytes, over the limit of {} bytes for text \
             (translating text takes about 52 bytes of memory per byte, before any other \
             limit applies); translate it to a binary module (`wasm-tools parse`) to run it",
            bytes.len(),
            MAX_TEXT_BYTES
        ))),
        Some(_) => wat::parse_bytes(bytes).map_err(|e| RunError::InvalidModule(format!("{e}"))),
        None => Err(RunError::NotWasm(
            "the file does not start with the WebAssembly magic bytes `\\0asm` (nor is it \
             WebAssembly text)"
                .into(),
        )),
    }
}

/// A function signature read from a module's sections.
#[derive(Clone, Debug)]
pub struct Signature {
    /// Parameter and result types, or `None` when one of them is not a number type (a
    /// reference: never what a WASI import or a `() -> ()` entry has).
    pub numeric: Option<(Vec<wasmtime::ValType>, Vec<wasmtime::ValType>)>,
    /// The module's own text of the type, for error messages.
    pub text: String,
}

/// What a module imports, and the signature of one of its exports.
#[derive(Debug)]
pub struct Interface {
    /// (module, name, the function's signature or `None` for a non-function import).
    pub imports: Vec<(String, String, Option<Signature>)>,
    /// The entry export asked for: `None` when there is no such export; `Some(None)`
    /// when it is not a function.
    pub entry: Option<Option<Signature>>,
}

/// Reads the import and export sections of a core module without compiling it, so that
/// a module that cannot run (an unknown import, a missing entry point) is refused in
/// milliseconds even when compiling it would take minutes. Parsing stops at the code
/// section: everything needed comes before it. `binary` is the output of [`to_binary`].
///
/// Only the sections' structure is read here, not validated: compiling validates the
/// whole module afterwards, with wasmtime's own wasmparser (the same version).
pub fn read_interface(binary: &[u8], entry: &str) -> Result<Interface, RunError> {
    use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, TypeRef};
    let invalid = |e: wasmparser::BinaryReaderError| {
        let msg = e.to_string();
        RunError::InvalidModule(if msg.contains("unexpected end") {
            format!("the file is truncated: {msg}")
        } else {
            msg
        })
    };
    // Type index -> signature (`None`: not a function type).
    let mut types: Vec<Option<Signature>> = Vec::new();
    // Function index -> type index (imports first, then the function section).
    let mut funcs: Vec<u32> = Vec::new();
    let mut imports = Vec::new();
    let mut export = None;
    for payload in Parser::new(0).parse_all(binary) {
        match payload.map_err(invalid)? {
            Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => {
                return Err(RunError::NotWasm(
                    "this is a WebAssembly component; detwasm runs core modules built for \
                     wasm32-wasip1"
                        .into(),
                ))
            }
            Payload::TypeSection(r) => {
                for group in r {
                    for sub in group.map_err(invalid)?.into_types() {
                        types.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => signature(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    let import = import.map_err(invalid)?;
                    let sig = match import.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                            funcs.push(t);
                            types.get(t as usize).cloned().flatten()
                        }
                        _ => None,
                    };
                    imports.push((import.module.to_string(), import.name.to_string(), sig));
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    funcs.push(t.map_err(invalid)?);
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(invalid)?;
                    if e.name == entry {
                        export = Some((e.kind, e.index));
                    }
                }
            }
            // Everything needed has been read; compiling reads (and checks) the rest.
            Payload::CodeSectionStart { .. } | Payload::End(_) => break,
            _ => {}
        }
    }
    let entry = export.map(|(kind, index)| match kind {
        ExternalKind::Func | ExternalKind::FuncExact => funcs
            .get(index as usize)
            .and_then(|t| types.get(*t as usize).cloned().flatten()),
        _ => None,
    });
    Ok(Interface { imports, entry })
}

fn signature(f: &wasmparser::FuncType) -> Option<Signature> {
    let conv = |v: &wasmparser::ValType| match v {
        wasmparser::ValType::I32 => Some(wasmtime::ValType::I32),
        wasmparser::ValType::I64 => Some(wasmtime::ValType::I64),
        wasmparser::ValType::F32 => Some(wasmtime::ValType::F32),
        wasmparser::ValType::F64 => Some(wasmtime::ValType::F64),
        wasmparser::ValType::V128 => Some(wasmtime::ValType::V128),
        wasmparser::ValType::Ref(_) => None,
    };
    let params: Option<Vec<_>> = f.params().iter().map(conv).collect();
    let results: Option<Vec<_>> = f.results().iter().map(conv).collect();
    Some(Signature {
        numeric: params.zip(results),
        text: f.to_string(),
    })
}

/// Compiles a module, with errors that say what is wrong with it: the one place where
/// modules are prepared for the engine. The wasm-to-wasm passes ([`passes`]) run here,
/// on every path (a job, the module cache, `batch`, self-fuzzing), before Cranelift sees
/// the module; a module is never compiled without them.
///
/// A module the passes cannot rewrite (it is invalid) or the engine refuses after them
/// is compiled once more as it is, only to report the engine's own message about the
/// module's own bytes (offsets and all), then refused.
///
/// The module's shape is scanned first ([`passes::shape`]): a module whose shape
/// predicts unbounded compile work is refused with the reason before it is validated,
/// rewritten or compiled, and before [`refused`] would compile it again.
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, RunError> {
    compile_with(engine, bytes, false)
}

/// [`compile`], and, when `unwind`, rewritten last by the unwind pass
/// ([`passes::unwind`]) so that the run can take checkpoints. Only runs that take
/// checkpoints pay for it; its results are the same either way.
pub fn compile_with(engine: &Engine, bytes: &[u8], unwind: bool) -> Result<Module, RunError> {
    compile_as(engine, bytes, unwind, false)
}

/// The name under which [`compile_reentrant`] exports the stack pass's depth counter.
pub const EXPORT_STACK_DEPTH: &str = "detwasm:stack-depth";

/// [`compile`], with the stack pass's depth counter exported as [`EXPORT_STACK_DEPTH`]
/// (a mutable `i32` global), for a host that calls into an instance again after a trap.
///
/// Why: a trap unwinds the guest's frames without their epilogues, so the counter keeps
/// the units of every frame the trap unwound, and the next call would start that deep
/// (at the limit, after a metered exhaustion). A job never calls an instance again after
/// a trap (the trap ends the run), so [`compile`] leaves the counter unexported. The
/// official spec test suite does, since its assertions go on with an instance after it
/// trapped: `runtime/tests/spec_suite.rs` compiles with this and sets the counter back to
/// 0 after every trap, when no frame is left. The module's code is [`compile`]'s; only the
/// export is added ([`passes::stack::export_counter`]).
pub fn compile_reentrant(engine: &Engine, bytes: &[u8]) -> Result<Module, RunError> {
    compile_as(engine, bytes, false, true)
}

fn compile_as(
    engine: &Engine,
    bytes: &[u8],
    unwind: bool,
    export_depth: bool,
) -> Result<Module, RunError> {
    let binary = to_binary(bytes)?;
    let canonical = before_stack(&binary, |why| refused(engine, &binary, why))?;
    compile_rewritten_as(engine, &binary, &canonical, unwind, export_depth)
}

/// The scan and the passes before stack metering, in a job's order: fuel metering first
/// (so that only the module's own operators are counted), the relaxed SIMD lowering, NaN
/// canonicalization. `refuse` makes a pass's complaint the error.
fn before_stack(binary: &[u8], refuse: impl Fn(String) -> RunError) -> Result<Vec<u8>, RunError> {
    passes::shape::check(binary, &passes::shape::LIMITS)
        .map_err(|r| RunError::TooComplex(r.to_string()))?;
    let fueled = passes::fuel::meter(binary)
        .map_err(|e| refuse(format!("fuel metering could not rewrite the module: {e}")))?;
    let lowered = passes::relaxed::lower(&fueled).map_err(|e| {
        refuse(format!(
            "relaxed SIMD lowering could not rewrite the module: {e}"
        ))
    })?;
    passes::nan::canonicalize(&lowered).map_err(|e| {
        refuse(format!(
            "NaN canonicalization could not rewrite the module: {e}"
        ))
    })
}

/// The module as [`compile_reentrant`] hands it to the engine: through every pass of a
/// job (the scan, fuel metering, the relaxed SIMD lowering, NaN canonicalization, stack
/// metering), with the stack pass's counter exported as [`EXPORT_STACK_DEPTH`]. What a
/// job computes is decided here, not by the engine: another engine that runs these bytes
/// must compute the same, count for count and bit for bit (`detwasm_fuzzing`'s
/// interpreter setup checks it with wasmi). Errors carry the pass's own message (no engine
/// validates the original to word them).
pub fn rewrite(bytes: &[u8]) -> Result<Vec<u8>, RunError> {
    let binary = to_binary(bytes)?;
    let canonical = before_stack(&binary, RunError::InvalidModule)?;
    let metered = stack_metered(&canonical, RunError::InvalidModule)?;
    passes::stack::export_counter(&metered, EXPORT_STACK_DEPTH).map_err(|e| {
        RunError::InvalidModule(format!("the stack counter could not be exported: {e}"))
    })
}

fn stack_metered(
    rewritten: &[u8],
    refuse: impl Fn(String) -> RunError,
) -> Result<Vec<u8>, RunError> {
    passes::stack::meter(rewritten)
        .map_err(|e| refuse(format!("stack metering could not rewrite the module: {e}")))
}

/// A wall-clock deadline and the timeout it was set from (for the message).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    /// `timeout` from now; `None` when that is past the end of the clock (no deadline).
    pub fn after(timeout: Duration) -> Option<Deadline> {
        Instant::now()
            .checked_add(timeout)
            .map(|at| Deadline { at, timeout })
    }

    pub(crate) fn expired(&self) -> RunError {
        RunError::CompileTimeout {
            secs: self.timeout.as_secs_f64(),
        }
    }
}

/// Compiles `rewritten` (a module already through every pass but stack metering: fuel
/// metering first, so that only the module's own operators are counted, then the
/// relaxed SIMD lowering, then NaN canonicalization) with
/// stack metering, reporting problems with `original`'s bytes. [`compile`] is the one
/// path of jobs; this is also the self-fuzzer's, for its setups that compare the engine
/// with other ways of canonicalizing NaNs (`detwasm_fuzzing`).
pub fn compile_rewritten(
    engine: &Engine,
    original: &[u8],
    rewritten: &[u8],
) -> Result<Module, RunError> {
    compile_rewritten_with(engine, original, rewritten, false)
}

/// [`compile_rewritten`], with the unwind pass last when `unwind` ([`compile_with`]).
pub fn compile_rewritten_with(
    engine: &Engine,
    original: &[u8],
    rewritten: &[u8],
    unwind: bool,
) -> Result<Module, RunError> {
    compile_rewritten_as(engine, original, rewritten, unwind, false)
}

fn compile_rewritten_as(
    engine: &Engine,
    original: &[u8],
    rewritten: &[u8],
    unwind: bool,
    export_depth: bool,
) -> Result<Module, RunError> {
    let metered = stack_metered(rewritten, |why| refused(engine, original, why))?;
    let metered = if unwind {
        passes::unwind::instrument(&metered).map_err(|e| match e {
            passes::unwind::Error::TooLarge(why) => RunError::TooComplex(why),
            passes::unwind::Error::Cannot(why) => refused(
                engine,
                original,
                format!("the module cannot take checkpoints: {why}"),
            ),
        })?
    } else {
        metered
    };
    let metered = if export_depth {
        passes::stack::export_counter(&metered, EXPORT_STACK_DEPTH).map_err(|e| {
            refused(
                engine,
                original,
                format!("the stack counter could not be exported: {e}"),
            )
        })?
    } else {
        metered
    };
    // The passes grow a module up to about 12 times (a `local.tee` fed to a NaN-producing
    // operator gains a canonicalization, a block gains its fuel, a relaxed dot product
    // becomes twelve operators), and Cranelift compiles
    // the grown module: the bytes it sees are scanned against the same limits (with more
    // room for the types the passes add: `REWRITTEN_LIMITS`), so that
    // SECURITY.md's compile term (in bytes of code Cranelift compiles) holds. Rejected:
    // scanning only the module as sent (615 KB grew to 7.6 MB, and one compile thread used
    // 760 MB, twice the documented term); limits on the sent bytes divided by the worst
    // growth (12 times tighter for every real module, for a rare shape).
    let limits = if unwind {
        &passes::shape::UNWIND_LIMITS
    } else {
        &passes::shape::REWRITTEN_LIMITS
    };
    passes::shape::check(&metered, limits).map_err(|r| {
        let passes = if unwind {
            "fuel metering, relaxed SIMD lowering, NaN canonicalization, stack metering and \
             the unwind pass (checkpoints)"
        } else {
            "fuel metering, relaxed SIMD lowering, NaN canonicalization and stack metering"
        };
        RunError::TooComplex(format!("after {passes}: {r}"))
    })?;
    Module::from_binary(engine, &metered).map_err(|e| refused(engine, original, format!("{e:#}")))
}

/// The error for a module that could not be prepared or compiled: the engine's own
/// message about `original` if the engine refuses it, else `why`.
///
/// The module is only validated ([`Module::validate`], with the engine's features), not
/// compiled: the message is all that is wanted. Rejected: compiling it
/// (`Module::from_binary`, what this did before: 40 s for a module the fuel pass had
/// already refused, outside every limit but the shape scan's).
fn refused(engine: &Engine, original: &[u8], why: String) -> RunError {
    match Module::validate(engine, original) {
        Err(e) => {
            let msg = format!("{e:#}");
            RunError::InvalidModule(if msg.contains("unexpected end") {
                format!("the file is truncated: {msg}")
            } else {
                msg
            })
        }
        Ok(_) => RunError::InvalidModule(why),
    }
}

/// Whether `error` is the trap of a metered stack exhaustion: `unreachable` executed in
/// the function the stack pass appends (`detwasm_passes::stack::meter`) (the module's last defined function, which nothing
/// but the prologues calls). The runtime reports it as wasmtime's
/// [`wasmtime::Trap::StackOverflow`] (`call stack exhausted`). Needs wasm backtraces,
/// pinned on in [`deterministic_config`].
pub fn is_stack_exhaustion(error: &wasmtime::Error) -> bool {
    if error.downcast_ref::<wasmtime::Trap>() != Some(&wasmtime::Trap::UnreachableCodeReached) {
        return false;
    }
    let Some(frame) = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first())
    else {
        return false;
    };
    frame
        .module()
        .functions()
        .last()
        .is_some_and(|last| last.index.as_u32() == frame.func_index())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint is part of every job id: changing the engine settings must be a
    /// deliberate act that updates this value (and so every job id).
    #[test]
    fn fingerprint_is_pinned() {
        assert_eq!(
            fingerprint(),
            "detwasm-protocol-1:blake3:1a489e2f10bdf263d011ddbc307143971d81604a6279d2c6cbf474dcf9b00e4e"
        );
        assert_eq!(protocol_of(&fingerprint()), Some(PROTOCOL));
        assert_eq!(
            protocol_of("blake3:042147de930ef663fd24acb0d00547754ecda938569308bdbfc4efebbc57fdba"),
            None
        );
        // Only the exact shape names a protocol: not a name with words in it, a short or
        // non-hex hash, or a missing number.
        let hash = "1a489e2f10bdf263d011ddbc307143971d81604a6279d2c6cbf474dcf9b00e4e";
        assert_eq!(
            protocol_of(&format!("detwasm-protocol-27:blake3:{hash}")),
            Some("detwasm-protocol-27")
        );
        for forged in [
            format!("detwasm-protocol-2 (upgrade at https://x):blake3:{hash}"),
            format!("detwasm-protocol-1 :blake3:{hash}"),
            format!("detwasm-protocol-:blake3:{hash}"),
            "detwasm-protocol-1:blake3:00".to_string(),
            format!("detwasm-protocol-1:blake3:{}", hash.replace('a', "z")),
            "hello".to_string(),
            String::new(),
        ] {
            assert_eq!(protocol_of(&forged), None, "{forged}");
        }
        assert!(ENGINE_SETTINGS.starts_with(&format!("protocol={PROTOCOL}\n")));
        // The engine is not named: neither its version nor its compiler's settings.
        for engine in [
            "wasmtime",
            "cranelift",
            "epoch",
            "max_wasm_stack",
            "backtrace",
        ] {
            assert!(!ENGINE_SETTINGS.contains(engine), "{engine}");
        }
        use crate::passes::stack;
        assert!(ENGINE_SETTINGS.contains(&format!("stack_metering={}\n", stack::PASS_VERSION)));
        let fuel = crate::passes::fuel::PASS_VERSION;
        assert!(ENGINE_SETTINGS.contains(&format!("fuel_pass={fuel}\n")));
        let slice = crate::meter::SLICE;
        assert!(ENGINE_SETTINGS.contains(&format!("fuel_slice={slice}\n")));
        assert!(
            ENGINE_SETTINGS.contains(&format!("nan_pass={}\n", crate::passes::nan::PASS_VERSION))
        );
        let relaxed = crate::passes::relaxed::PASS_VERSION;
        assert!(ENGINE_SETTINGS.contains(&format!("relaxed_pass={relaxed}\n")));
        assert!(ENGINE_SETTINGS.contains(&format!("stack_frame_base={}\n", stack::FRAME_BASE)));
        assert!(ENGINE_SETTINGS.contains(&format!("stack_limit={}\n", stack::STACK_LIMIT)));
        let unmetered = stack::UNMETERED_MAX_COST;
        assert!(ENGINE_SETTINGS.contains(&format!("stack_unmetered_max_cost={unmetered}\n")));
        use crate::{limiter::TABLE_ELEMENT_BYTES, wasi::host::HOST_BYTES_PER_FUEL};
        assert!(ENGINE_SETTINGS.contains(&format!("host_fuel_bytes={HOST_BYTES_PER_FUEL}\n")));
        assert!(ENGINE_SETTINGS.contains(&format!("table_element_bytes={TABLE_ELEMENT_BYTES}\n")));
        let overhead = crate::wasi::vfs::ENTRY_OVERHEAD;
        assert!(ENGINE_SETTINGS.contains(&format!("output_entry_overhead={overhead}\n")));
    }

    /// The engine's own settings that the fingerprint no longer names are still pinned,
    /// one by one, in the configuration (a wasmtime default changing cannot change them).
    #[test]
    fn the_engine_is_pinned_in_its_configuration() {
        let c = format!("{:?}", deterministic_config(false));
        for setting in [
            "strategy: Some(Cranelift)",
            "\"opt_level\": (\"speed\"",
            "\"enable_nan_canonicalization\": (\"false\"",
            "relaxed_simd_deterministic: true",
            "consume_fuel: false",
            "epoch_interruption: false",
        ] {
            assert!(c.contains(setting), "{setting} in {c}");
        }
    }

    fn interface(text: &str, entry: &str) -> Result<Interface, RunError> {
        read_interface(&to_binary(text.as_bytes())?, entry)
    }

    #[test]
    fn imports_and_the_entry_are_read_without_compiling() {
        let i = interface(
            r#"(module
              (type (func (param i32) (result i32)))
              (import "wasi_snapshot_preview1" "fd_close" (func (type 0)))
              (import "env" "mem" (memory 1))
              (import "env" "r" (func (param externref)))
              (func (export "_start"))
              (func (export "f") (param i64))
              (memory (export "memory") 1))"#,
            "_start",
        )
        .unwrap();
        assert_eq!(i.imports.len(), 3);
        let (m, n, sig) = &i.imports[0];
        assert_eq!(
            (m.as_str(), n.as_str()),
            ("wasi_snapshot_preview1", "fd_close")
        );
        let sig = sig.as_ref().unwrap();
        assert_eq!(sig.text, "(func (param i32) (result i32))");
        let (p, r) = sig.numeric.as_ref().unwrap();
        assert!(p[0].is_i32() && r[0].is_i32() && p.len() == 1 && r.len() == 1);
        assert!(i.imports[1].2.is_none(), "a memory import has no signature");
        assert!(
            i.imports[2].2.as_ref().unwrap().numeric.is_none(),
            "externref"
        );
        // Function indices count the imported function first.
        let entry = i.entry.unwrap().unwrap().numeric.unwrap();
        assert!(entry.0.is_empty() && entry.1.is_empty());
        let f = interface(r#"(module (func (export "f") (param i64)))"#, "f").unwrap();
        assert_eq!(f.entry.unwrap().unwrap().numeric.unwrap().0.len(), 1);
        let mem = interface(r#"(module (memory (export "m") 1))"#, "m").unwrap();
        assert!(matches!(mem.entry, Some(None)), "not a function");
        let none = interface("(module)", "_start").unwrap();
        assert!(none.entry.is_none());
    }

    #[test]
    fn bytes_that_are_not_a_core_module_say_what_they_are() {
        let not = |b: &[u8]| match to_binary(b).and_then(|b| read_interface(&b, "_start")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {b:?}"),
        };
        assert!(not(b"\x7fELF\x02").contains("does not start with the WebAssembly magic"));
        assert!(not(b"").contains("not a WebAssembly module"));
        assert!(not(b"\0asm\x0d\0\x01\0").contains("component"));
        assert!(not(b"\0asm\x01\0").contains("truncated: 6 bytes"));
        // A type section that claims more bytes than the file has.
        assert!(not(b"\0asm\x01\0\0\0\x01\x10\x01").contains("truncated"));
        assert!(not(b"(module (func").contains("invalid WebAssembly module"));
    }
}
