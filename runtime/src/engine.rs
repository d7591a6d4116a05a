//! The engine configuration (pinned, fingerprinted) and the compiled-module cache.
//!
//! Every setting that can change what a module computes, how far it recurses or how
//! much fuel an instruction costs is set explicitly in [`deterministic_config`] and
//! listed in [`ENGINE_SETTINGS`]; the fingerprint is a hash of that list and of the
//! wasmtime version, so two hosts running the same job agree on it, and a job id changes
//! when the configuration does.
//!
//! Settings that cannot change a result are left out of the fingerprint on purpose: the
//! module cache, parallel compilation. The tests run jobs both ways and compare.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use wasmtime::{Config, Engine, Module, OptLevel, Strategy, WasmFeatures};

use crate::error::RunError;

/// wasmtime's version, pinned exactly in Cargo.toml.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Maximum native stack for wasm frames. Pinned: the recursion depth at which a guest
/// traps with a stack overflow depends on it (and on Cranelift's frame layout, fixed by
/// the wasmtime version and the target architecture).
pub const MAX_WASM_STACK: usize = 1 << 20;

/// The settings that define the engine, as `key=value` lines. The fingerprint hashes
/// exactly this text.
///
/// Decisions, each closing a row of the determinism contract:
/// - `nan_canonicalization`: Cranelift rewrites every NaN a float operation produces to
///   the canonical quiet NaN (0x7ff8000000000000 / 0x7fc00000), because hardware NaN
///   payloads differ (x86 produces a negative "default NaN", ARM a positive one).
///   Rejected: a wasm-to-wasm rewriting pass (slower to build, same effect).
/// - `relaxed_simd_deterministic`: relaxed SIMD instructions take their deterministic
///   lowering instead of the host's fastest. Rejected: disabling relaxed SIMD (breaks
///   modules built with it for no gain).
/// - `threads=false`: no shared memory, no atomics wait/notify: a single thread of
///   control. wasmtime is built without its `threads` feature, so the proposal cannot be
///   switched on. Rejected: threads with a deterministic scheduler (not offered by
///   wasmtime).
/// - `fuel=true`: fuel is the only deterministic limit on work and its consumption is the
///   instruction count a verifier compares. `epoch_interruption` is on only as the
///   wall-clock safety net; it never decides a verifiable result.
/// - `max_wasm_stack`: pinned (see [`MAX_WASM_STACK`]).
/// - wasm features pinned one by one, so a wasmtime default changing cannot change which
///   modules validate.
pub const ENGINE_SETTINGS: &str = "\
format=detwasm-engine-1
wasmtime=48.0.8
strategy=cranelift
cranelift_opt_level=speed
nan_canonicalization=true
relaxed_simd_deterministic=true
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
fuel=true
epoch_interruption=true
max_wasm_stack=1048576
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
/// `~/.cache/detwasm`. Clear it with `rm -rf` of that directory (or run with
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
        .cranelift_nan_canonicalization(true)
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
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
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

/// `blake3:<hex>` of [`ENGINE_SETTINGS`].
pub fn fingerprint() -> String {
    format!(
        "blake3:{}",
        blake3::hash(ENGINE_SETTINGS.as_bytes()).to_hex()
    )
}

pub fn new_engine(opts: &EngineOptions) -> Result<Engine, RunError> {
    Engine::new(&deterministic_config(opts.parallel_compilation))
        .map_err(|e| RunError::Engine(e.to_string()))
}

/// A std `Hasher` that feeds blake3, to absorb wasmtime's compatibility hash.
struct Blake3Hasher(blake3::Hasher);
impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        u64::from_le_bytes(self.0.finalize().as_bytes()[..8].try_into().unwrap())
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Magic at the start of every cache file.
const CACHE_MAGIC: &[u8; 8] = b"DTWCACH1";

/// Compiled modules, serialized by wasmtime, keyed by
/// blake3(module bytes ‖ engine fingerprint ‖ wasmtime's compatibility hash of this
/// host's engine). Only files whose name is such a key and whose content carries our
/// magic and a matching blake3 checksum are handed to `Module::deserialize` (which is
/// unsafe on untrusted bytes): the cache only loads artefacts detwasm wrote.
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    pub fn new(dir: PathBuf) -> Self {
        ModuleCache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(engine: &Engine, bytes: &[u8]) -> String {
        let mut h = Blake3Hasher(blake3::Hasher::new());
        h.0.update(b"detwasm-module-cache-1\0");
        h.0.update(blake3::hash(bytes).as_bytes());
        h.0.update(fingerprint().as_bytes());
        h.0.update(b"\0");
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        h.0.finalize().to_hex().to_string()
    }

    /// The module, from the cache or compiled (and then stored). Returns whether it was
    /// a cache hit. Cache failures never fail a run: they fall back to compiling.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Module, bool), RunError> {
        let path = self.dir.join(format!("{}.cwasm", Self::key(engine, bytes)));
        if let Ok(file) = std::fs::read(&path) {
            if let Some(payload) = verify(&file) {
                // SAFETY: the payload was written by `store` below (our magic, checksum and
                // a file name derived from this module and this engine), i.e. it is the
                // output of `Module::serialize` for this engine configuration.
                if let Ok(m) = unsafe { Module::deserialize(engine, payload) } {
                    return Ok((m, true));
                }
            }
        }
        let module = compile(engine, bytes)?;
        if let Ok(ser) = module.serialize() {
            let _ = self.store(&path, &ser);
        }
        Ok((module, false))
    }

    fn store(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        use std::io::Write;
        tmp.write_all(CACHE_MAGIC)?;
        tmp.write_all(blake3::hash(payload).as_bytes())?;
        tmp.write_all(payload)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn verify(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(CACHE_MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, payload) = rest.split_at(32);
    (blake3::hash(payload).as_bytes() == sum).then_some(payload)
}

/// Compiles a module, with errors that say what is wrong with it.
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, RunError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.starts_with(MAGIC) {
        if bytes.len() >= 8 && bytes[4..8] != [1, 0, 0, 0] {
            return Err(RunError::NotWasm(
                "this is a WebAssembly component (or an unknown version); detwasm runs core \
                 modules built for wasm32-wasip1"
                    .into(),
            ));
        }
        return Module::from_binary(engine, bytes)
            .map_err(|e| RunError::InvalidModule(format!("{e:#}")));
    }
    let text = std::str::from_utf8(bytes).ok().filter(|t| {
        let t = t.trim_start();
        t.starts_with('(') || t.starts_with(";;")
    });
    match text {
        Some(_) => {
            Module::new(engine, bytes).map_err(|e| RunError::InvalidModule(format!("{e:#}")))
        }
        None => Err(RunError::NotWasm(
            "the file does not start with the WebAssembly magic bytes `\\0asm` (nor is it \
             WebAssembly text)"
                .into(),
        )),
    }
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
            "blake3:bc154b81215eaf11020f1174ed7d6f0648ff509347a5c92cee81e5309e0fba31"
        );
        assert!(ENGINE_SETTINGS.contains(&format!("wasmtime={WASMTIME_VERSION}\n")));
        assert!(ENGINE_SETTINGS.contains(&format!("max_wasm_stack={MAX_WASM_STACK}\n")));
    }

    #[test]
    fn the_cache_only_loads_files_with_our_magic_and_checksum() {
        let payload = b"compiled";
        let mut file = CACHE_MAGIC.to_vec();
        file.extend_from_slice(blake3::hash(payload).as_bytes());
        file.extend_from_slice(payload);
        assert_eq!(verify(&file), Some(&payload[..]));
        let mut tampered = file.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(verify(&tampered), None);
        assert_eq!(verify(b"\x7fELF..."), None);
    }
}
