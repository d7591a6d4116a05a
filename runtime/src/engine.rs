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
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Module, OptLevel, Strategy, WasmFeatures};

use crate::error::RunError;
use crate::passes;

/// wasmtime's version, pinned exactly in Cargo.toml.
pub const WASMTIME_VERSION: &str = "48.0.8";

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

/// The settings that define the engine, as `key=value` lines. The fingerprint hashes
/// exactly this text.
///
/// Decisions, each closing a row of the determinism contract:
/// - `nan_pass`: every NaN a float operation produces is the canonical quiet NaN
///   (0x7ff8000000000000 / 0x7fc00000) wherever its bits can be observed, because hardware
///   NaN payloads differ (x86 produces a negative "default NaN", ARM a positive one). The
///   [`passes::nan`] pass canonicalizes, in the module, exactly the results that can reach
///   a store, a call, a global, a `reinterpret`, ...; the observable behaviour is that of
///   canonicalizing after every operation. `nan_canonicalization=false` is Cranelift's own
///   pass, which canonicalized after every operation and made float-heavy code about 3.5
///   times slower. Rejected: keeping Cranelift's pass (same behaviour, the cost above).
/// - `relaxed_simd_deterministic`: relaxed SIMD instructions take their deterministic
///   lowering instead of the host's fastest. Rejected: disabling relaxed SIMD (breaks
///   modules built with it for no gain).
/// - `threads=false`: no shared memory, no atomics wait/notify: a single thread of
///   control. wasmtime is built without its `threads` feature, so the proposal cannot be
///   switched on. Rejected: threads with a deterministic scheduler (not offered by
///   wasmtime).
/// - `fuel_pass`: fuel is the only deterministic limit on work and its consumption is the
///   instruction count a verifier compares. It is counted by code the
///   [`passes::fuel`] pass writes into the module, which carries the count from call to
///   call in a register; `wasmtime_fuel=false` is wasmtime's own fuel, which kept it in
///   memory and gave every function a full frame. The counts are the same (tested on
///   generated modules). Rejected: wasmtime's fuel (what detwasm used before: CPython
///   running an integer loop executed 1.66 times the instructions it does without fuel,
///   against 1.37 times with the pass; callgrind, see [`passes::fuel`]). `fuel_slice` is
///   the fuel the host hands out at a time ([`crate::meter::SLICE`]): the host writes the
///   guest's fuel back at each refuel, so the count a trap reports can depend on it.
/// - `epoch_interruption=false`: the wall-clock safety net (which never decides a
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
///   the metering code. `max_wasm_stack` (native bytes, see [`MAX_WASM_STACK`]) is large
///   enough never to be reached first; `wasm_backtrace_max_frames` is pinned because the
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
format=detwasm-engine-1
wasmtime=48.0.8
strategy=cranelift
cranelift_opt_level=speed
nan_canonicalization=false
nan_pass=detwasm-nan-2
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
wasmtime_fuel=false
fuel_pass=detwasm-fuel-2
fuel_slice=10000000
epoch_interruption=false
stack_metering=detwasm-stack-3
stack_frame_base=8
stack_limit=262144
stack_unmetered_max_cost=65536
max_wasm_stack=8388608
wasm_backtrace_max_frames=20
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

/// Magic at the start of every cache file (version 2: the key is inside the file).
const CACHE_MAGIC: &[u8; 8] = b"DTWCACH2";

/// Bytes of a cache key (a blake3 hash).
const KEY_LEN: usize = 32;

/// Compiled modules, serialized by wasmtime, keyed by
/// blake3(module bytes ‖ engine fingerprint ‖ wasmtime's compatibility hash of this
/// host's engine).
///
/// The key hashes the module's own bytes (for WebAssembly text, the binary it translates
/// to: `Runtime::load_by` translates once and hands the binary here), not the metered
/// bytes that are compiled ([`compile`]): the fingerprint names every pass and its version
/// (`stack_metering=...` in [`ENGINE_SETTINGS`]), so a change of a pass changes the key.
/// Rejected: keying on the metered bytes (a cache hit would then have to run the pass
/// first, on every run, to find its key).
///
/// `Module::deserialize` is unsafe on untrusted bytes (it maps them as executable code),
/// so a cache file is only handed to it when all of these hold:
/// - the file is `MAGIC ‖ key ‖ blake3(key ‖ payload) ‖ payload` and `key` is the key of
///   the module being loaded. The key is inside the checked content, not only in the file
///   name: a cache file of module A copied (or renamed) under module B's name is not
///   B's, and is ignored (B is compiled again and the file replaced). Rejected: trusting
///   the file name (anyone who can rename files in the folder could swap modules).
/// - the folder and the file belong to the current user (effective uid) and are not
///   writable by group or others. Someone else who can write there could plant a file
///   with a valid checksum (the checksum proves integrity, not origin), so such a folder
///   is ignored with a warning (see [`ModuleCache::warnings`]) and every module is
///   compiled. Rejected: `chmod`ing the folder back to private (files already planted
///   would stay, and silently changing a user's folder surprises them); failing the run
///   (the cache never changes a result, so a run need not depend on it).
///
/// The folder's ancestors are not checked: the default location is under the user's
/// home (`~/.cache`), and a folder in a sticky directory such as `/tmp` cannot be renamed
/// by others. Cache failures never fail a run: they fall back to compiling.
///
/// The folder is bounded: after each store, the least recently used files are removed
/// until the folder holds at most [`ModuleCache::max_bytes`] bytes of compiled modules
/// and [`CACHE_MAX_FILES`] files (a hit refreshes a file's modification time, which is
/// the order used), and a compiled module larger than the whole budget is not stored.
/// Found by review: every distinct module an attacker sent added its artifact for
/// good (one of 1.6 GB from a 2 KB module, before the memory-image limit). Rejected:
/// evicting by age alone (a provider's everyday modules would be dropped by a burst of
/// one-off ones just as well, but a busy folder could still grow without bound within
/// the age); access times (`noatime` mounts do not keep them).
pub struct ModuleCache {
    dir: PathBuf,
    /// Most bytes of `.cwasm` files the folder keeps.
    max_bytes: u64,
    /// Why the cache was not used, once per reason, for the caller to show.
    warnings: std::sync::Mutex<Vec<String>>,
}

/// The default of [`ModuleCache::max_bytes`]: 4 GiB, room for some 40 compiled CPythons
/// (about 100 MiB each with the unwind pass) or thousands of small modules. A provider
/// changes it with `DETWASM_CACHE_MAX_MB`.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 4 << 30;

/// Most `.cwasm` files the folder keeps, so that listing it to evict stays cheap.
pub const CACHE_MAX_FILES: usize = 4096;

/// A temporary file of a store that died before renaming it into place is removed when
/// older than this (a store in progress is never that old).
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// [`ModuleCache::max_bytes`] as the environment sets it: `DETWASM_CACHE_MAX_MB`
/// (mebibytes), else [`DEFAULT_CACHE_MAX_BYTES`]. A value that is not a number is ignored.
pub fn cache_max_bytes_from_env() -> u64 {
    std::env::var("DETWASM_CACHE_MAX_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|mb| mb.saturating_mul(1 << 20))
        .unwrap_or(DEFAULT_CACHE_MAX_BYTES)
}

impl ModuleCache {
    /// The cache in `dir`, bounded by [`cache_max_bytes_from_env`].
    pub fn new(dir: PathBuf) -> Self {
        Self::with_max_bytes(dir, cache_max_bytes_from_env())
    }

    /// The cache in `dir`, keeping at most `max_bytes` of compiled modules.
    pub fn with_max_bytes(dir: PathBuf, max_bytes: u64) -> Self {
        let cache = ModuleCache {
            dir,
            max_bytes,
            warnings: std::sync::Mutex::new(Vec::new()),
        };
        // Checked now too, so a caller can show the warning before the first run.
        let _ = cache.dir_is_trusted();
        cache
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Most bytes of compiled modules the folder keeps (see the type's docs).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Why the cache (or one of its files) was ignored so far, each reason once, e.g.
    /// `not using module cache DIR: it is writable by other users (mode 0777)`. The
    /// runtime never prints: the caller decides how to show these.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn warn(&self, message: String) {
        if let Ok(mut w) = self.warnings.lock() {
            if !w.contains(&message) {
                w.push(message);
            }
        }
    }

    /// Whether the folder may be used: it does not exist yet (it will be created private),
    /// or it is a folder of ours that nobody else can write.
    fn dir_is_trusted(&self) -> bool {
        match std::fs::metadata(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            Ok(m) if !m.is_dir() => {
                self.warn(format!(
                    "not using module cache {}: it is not a folder",
                    self.dir.display()
                ));
                false
            }
            Ok(m) => match untrusted_because(&m) {
                Some(why) => {
                    self.warn(format!(
                        "not using module cache {}: {why}",
                        self.dir.display()
                    ));
                    false
                }
                None => true,
            },
        }
    }

    fn key(engine: &Engine, bytes: &[u8], unwind: bool) -> [u8; KEY_LEN] {
        let mut h = Blake3Hasher(blake3::Hasher::new());
        h.0.update(blake3::hash(bytes).as_bytes());
        h.0.update(fingerprint().as_bytes());
        h.0.update(b"\0");
        // The same module compiled to take checkpoints is another artifact.
        if unwind {
            h.0.update(passes::unwind::PASS_VERSION.as_bytes());
            h.0.update(b"\0");
        }
        // The shape limits decide which modules compile without changing what they
        // compute (so they are not in the fingerprint); a change of them scans cached
        // modules again.
        h.0.update(passes::shape::VERSION.as_bytes());
        h.0.update(b"\0");
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        *h.0.finalize().as_bytes()
    }

    /// The module, from the cache or compiled (and then stored). Returns whether it was
    /// a cache hit. Cache failures never fail a run: they fall back to compiling.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Module, bool), RunError> {
        self.load_or_compile_by(engine, bytes, None, false)
    }

    /// [`Self::load_or_compile`], a compile ended at `deadline` ([`compile_by`]), with
    /// the unwind pass when `unwind`.
    pub fn load_or_compile_by(
        &self,
        engine: &Engine,
        bytes: &[u8],
        deadline: Option<Deadline>,
        unwind: bool,
    ) -> Result<(Module, bool), RunError> {
        if !self.dir_is_trusted() {
            return Ok((compile_by(engine, bytes, deadline, unwind)?, false));
        }
        let key = Self::key(engine, bytes, unwind);
        let path = self
            .dir
            .join(format!("{}.cwasm", blake3::Hash::from(key).to_hex()));
        if let Some(file) = self.read_trusted(&path) {
            if let Some(payload) = verify(&file, &key) {
                // SAFETY: the payload was written by `store` below for exactly this key
                // (module bytes and engine), in a folder and file only this user can
                // write, and its checksum over key and payload matches: it is the output
                // of `Module::serialize` for this module and this engine configuration.
                if let Ok(m) = unsafe { Module::deserialize(engine, payload) } {
                    return Ok((m, true));
                }
            }
        }
        let module = compile_by(engine, bytes, deadline, unwind)?;
        if let Ok(ser) = module.serialize() {
            let _ = self.store(&path, &key, &ser);
        }
        Ok((module, false))
    }

    /// The file's bytes if it is a regular file of ours that nobody else can write (opened
    /// without following a symlink, and checked on the open handle, so it cannot be
    /// swapped between the check and the read).
    fn read_trusted(&self, path: &Path) -> Option<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        let m = f.metadata().ok()?;
        if !m.is_file() {
            return None;
        }
        if let Some(why) = untrusted_because(&m) {
            self.warn(format!(
                "not using module cache file {}: {why}",
                path.display()
            ));
            return None;
        }
        let mut buf = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
        f.read_to_end(&mut buf).ok()?;
        // Used now: the last file eviction removes (our own file, so futimens is allowed
        // on the read-only handle).
        let _ = f.set_modified(std::time::SystemTime::now());
        Some(buf)
    }

    fn store(&self, path: &Path, key: &[u8; KEY_LEN], payload: &[u8]) -> std::io::Result<()> {
        let size = (CACHE_MAGIC.len() + 2 * KEY_LEN + payload.len()) as u64;
        if size > self.max_bytes {
            return Ok(());
        }
        create_private_dir(&self.dir)?;
        if !self.dir_is_trusted() {
            return Ok(());
        }
        // NamedTempFile creates the file with mode 0600, and persist renames it into place.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        use std::io::Write;
        tmp.write_all(&encode_header(key, payload))?;
        tmp.write_all(payload)?;
        tmp.persist(path).map_err(|e| e.error)?;
        self.evict(path);
        Ok(())
    }

    /// Removes the least recently used `.cwasm` files (never `keep`, the one just stored)
    /// until the folder is within [`Self::max_bytes`] and [`CACHE_MAX_FILES`], and
    /// temporary files older than [`STALE_TEMP_AGE`]. Only regular files named as this
    /// cache names them are touched. Failures are ignored: another detwasm may be
    /// evicting the same files.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut files = Vec::new();
        let mut total = 0u64;
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            let modified = m.modified().unwrap_or(now);
            if name.starts_with(".tmp") {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMP_AGE {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            if !name.ends_with(".cwasm") {
                continue;
            }
            total = total.saturating_add(m.len());
            files.push((modified, e.path(), m.len()));
        }
        files.sort();
        let mut count = files.len();
        for (_, path, len) in files {
            if total <= self.max_bytes && count <= CACHE_MAX_FILES {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
                count -= 1;
            }
        }
    }
}

/// Why a cache folder or file with this metadata must not be trusted, if it must not:
/// owned by someone other than the effective user, or writable by group or others.
fn untrusted_because(m: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mode = m.mode() & 0o7777;
    if m.uid() != euid {
        Some(format!(
            "it is owned by another user (uid {}, not {euid})",
            m.uid()
        ))
    } else if mode & 0o022 != 0 {
        Some(format!("it is writable by other users (mode {mode:04o})"))
    } else {
        None
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `MAGIC ‖ key ‖ blake3(key ‖ payload)`: what precedes the payload in a cache file.
fn encode_header(key: &[u8; KEY_LEN], payload: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(payload);
    let mut out = CACHE_MAGIC.to_vec();
    out.extend_from_slice(key);
    out.extend_from_slice(h.finalize().as_bytes());
    out
}

/// The payload of a cache file, if the file has our magic, carries `key` and its
/// checksum over key and payload matches.
fn verify<'a>(file: &'a [u8], key: &[u8; KEY_LEN]) -> Option<&'a [u8]> {
    let rest = file.strip_prefix(CACHE_MAGIC.as_slice())?;
    let rest = rest.strip_prefix(key.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, payload) = rest.split_at(32);
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(payload);
    (h.finalize().as_bytes() == sum).then_some(payload)
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
    passes::shape::check(&binary, &passes::shape::LIMITS)
        .map_err(|r| RunError::TooComplex(r.to_string()))?;
    let fueled = passes::fuel::meter(&binary).map_err(|e| {
        refused(
            engine,
            &binary,
            format!("fuel metering could not rewrite the module: {e}"),
        )
    })?;
    let canonical = passes::nan::canonicalize(&fueled).map_err(|e| {
        refused(
            engine,
            &binary,
            format!("NaN canonicalization could not rewrite the module: {e}"),
        )
    })?;
    compile_rewritten_as(engine, &binary, &canonical, unwind, export_depth)
}

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

/// Compiles `rewritten` (a module already through every pass but stack metering: fuel
/// metering first, so that only the module's own operators are counted) with
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
    let metered = passes::stack::meter(rewritten).map_err(|e| {
        refused(
            engine,
            original,
            format!("stack metering could not rewrite the module: {e}"),
        )
    })?;
    let metered = if unwind {
        passes::unwind::instrument(&metered).map_err(|e| {
            refused(
                engine,
                original,
                format!("the module cannot take checkpoints: {e}"),
            )
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
    // operator gains a canonicalization, a block gains its fuel), and Cranelift compiles
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
        RunError::TooComplex(format!(
            "after fuel metering, NaN canonicalization and stack metering: {r}"
        ))
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
            "blake3:ee4844480ce68d53910f19b2e321c34c955f2e48bbdf40e7600c61876ff1f64d"
        );
        assert!(ENGINE_SETTINGS.contains(&format!("wasmtime={WASMTIME_VERSION}\n")));
        assert!(ENGINE_SETTINGS.contains(&format!("max_wasm_stack={MAX_WASM_STACK}\n")));
        use crate::passes::stack;
        assert!(ENGINE_SETTINGS.contains(&format!("stack_metering={}\n", stack::PASS_VERSION)));
        let fuel = crate::passes::fuel::PASS_VERSION;
        assert!(ENGINE_SETTINGS.contains(&format!("fuel_pass={fuel}\n")));
        let slice = crate::meter::SLICE;
        assert!(ENGINE_SETTINGS.contains(&format!("fuel_slice={slice}\n")));
        assert!(
            ENGINE_SETTINGS.contains(&format!("nan_pass={}\n", crate::passes::nan::PASS_VERSION))
        );
        assert!(ENGINE_SETTINGS.contains(&format!("stack_frame_base={}\n", stack::FRAME_BASE)));
        assert!(ENGINE_SETTINGS.contains(&format!("stack_limit={}\n", stack::STACK_LIMIT)));
        let unmetered = stack::UNMETERED_MAX_COST;
        assert!(ENGINE_SETTINGS.contains(&format!("stack_unmetered_max_cost={unmetered}\n")));
        let frames = WASM_BACKTRACE_FRAMES;
        assert!(ENGINE_SETTINGS.contains(&format!("wasm_backtrace_max_frames={frames}\n")));
        use crate::{limiter::TABLE_ELEMENT_BYTES, wasi::host::HOST_BYTES_PER_FUEL};
        assert!(ENGINE_SETTINGS.contains(&format!("host_fuel_bytes={HOST_BYTES_PER_FUEL}\n")));
        assert!(ENGINE_SETTINGS.contains(&format!("table_element_bytes={TABLE_ELEMENT_BYTES}\n")));
        let overhead = crate::wasi::vfs::ENTRY_OVERHEAD;
        assert!(ENGINE_SETTINGS.contains(&format!("output_entry_overhead={overhead}\n")));
    }

    #[test]
    fn the_cache_only_loads_files_with_our_magic_key_and_checksum() {
        let payload = b"compiled";
        let key = [7u8; KEY_LEN];
        let mut file = encode_header(&key, payload);
        file.extend_from_slice(payload);
        assert_eq!(verify(&file, &key), Some(&payload[..]));
        assert_eq!(verify(&file, &[8u8; KEY_LEN]), None, "another module's key");
        let mut tampered = file.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(verify(&tampered, &key), None);
        let mut rekeyed = file.clone();
        rekeyed[CACHE_MAGIC.len()] ^= 1;
        assert_eq!(
            verify(&rekeyed, &[6u8; KEY_LEN]),
            None,
            "key edited in place"
        );
        assert_eq!(verify(b"\x7fELF...", &key), None);
    }

    fn engine() -> Engine {
        new_engine(&EngineOptions {
            cache_dir: None,
            parallel_compilation: false,
        })
        .unwrap()
    }

    /// A module whose export `f` returns `n`.
    fn returns(n: i32) -> Vec<u8> {
        format!("(module (func (export \"f\") (result i32) i32.const {n}))").into_bytes()
    }

    fn call_f(engine: &Engine, m: &Module) -> i32 {
        let (mut store, i) = crate::meter::instantiate(engine, m, 1_000);
        let i = i.unwrap();
        let f = i.get_typed_func::<(), i32>(&mut store, "f").unwrap();
        f.call(&mut store, ()).unwrap()
    }

    fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
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

    #[test]
    fn a_cache_file_copied_under_another_modules_key_is_not_loaded() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        let engine = engine();
        let cache = ModuleCache::new(dir.clone());
        let (a, b) = (returns(1), returns(2));
        assert!(!cache.load_or_compile(&engine, &a).unwrap().1);
        let a_file = cwasm_files(&dir).pop().unwrap();
        let (m, hit) = cache.load_or_compile(&engine, &a).unwrap();
        assert!(hit, "a file of our own is loaded");
        assert_eq!(call_f(&engine, &m), 1);
        assert!(!cache.load_or_compile(&engine, &b).unwrap().1);
        let b_file = cwasm_files(&dir)
            .into_iter()
            .find(|p| *p != a_file)
            .unwrap();
        // The attack: A's (valid, checksummed) artefact under B's name.
        std::fs::copy(&a_file, &b_file).unwrap();
        let (m, hit) = cache.load_or_compile(&engine, &b).unwrap();
        assert!(!hit, "A's artefact was loaded for B");
        assert_eq!(call_f(&engine, &m), 2, "B recompiled gives B's result");
        // ... and B's entry was written again, so the next load is a hit.
        let (m, hit) = cache.load_or_compile(&engine, &b).unwrap();
        assert!(hit);
        assert_eq!(call_f(&engine, &m), 2);
        assert!(cache.warnings().is_empty());
    }

    #[test]
    fn the_cache_keeps_its_budget_by_removing_the_least_recently_used_modules() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        let engine = engine();
        // The size of one compiled module, to set a budget of two and a half.
        let probe = ModuleCache::new(t.path().join("probe"));
        probe.load_or_compile(&engine, &returns(0)).unwrap();
        let one = std::fs::metadata(cwasm_files(probe.dir()).pop().unwrap())
            .unwrap()
            .len();
        let cache = ModuleCache::with_max_bytes(dir.clone(), one * 5 / 2);
        let file_of = |before: &[PathBuf]| {
            cwasm_files(&dir)
                .into_iter()
                .find(|p| !before.contains(p))
                .unwrap()
        };
        let hour_ago = |p: &Path, hours: u64| {
            let f = std::fs::File::open(p).unwrap();
            f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600 * hours))
                .unwrap();
        };
        cache.load_or_compile(&engine, &returns(1)).unwrap();
        let a = file_of(&[]);
        cache.load_or_compile(&engine, &returns(2)).unwrap();
        let b = file_of(std::slice::from_ref(&a));
        hour_ago(&a, 2);
        hour_ago(&b, 1);
        // A hit on A makes it the most recently used, so B is the one removed.
        assert!(cache.load_or_compile(&engine, &returns(1)).unwrap().1);
        // A stale temporary file of a store that died is removed; a fresh one is not.
        std::fs::write(dir.join(".tmpDEAD"), b"x").unwrap();
        hour_ago(&dir.join(".tmpDEAD"), 2);
        std::fs::write(dir.join(".tmpLIVE"), b"x").unwrap();
        // Not ours: never touched.
        std::fs::write(dir.join("notes.txt"), vec![0u8; one as usize * 3]).unwrap();
        cache.load_or_compile(&engine, &returns(3)).unwrap();
        let left = cwasm_files(&dir);
        assert!(left.contains(&a) && !left.contains(&b), "{left:?}");
        let compiled: Vec<_> = left
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        assert_eq!(compiled.len(), 2, "{left:?}");
        assert!(!dir.join(".tmpDEAD").exists() && dir.join(".tmpLIVE").exists());
        assert!(dir.join("notes.txt").exists());
        let held: u64 = compiled
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(held <= cache.max_bytes(), "{held} > {}", cache.max_bytes());
        // A module larger than the whole budget is compiled but not stored.
        let tiny = ModuleCache::with_max_bytes(t.path().join("tiny"), one / 2);
        let (m, hit) = tiny.load_or_compile(&engine, &returns(4)).unwrap();
        assert!(!hit);
        assert_eq!(call_f(&engine, &m), 4);
        assert!(cwasm_files(tiny.dir()).is_empty());
    }

    #[test]
    fn a_cache_folder_other_users_can_write_is_ignored_with_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let engine = engine();
        let cache = ModuleCache::new(dir.clone());
        let want = format!(
            "not using module cache {}: it is writable by other users (mode 0777)",
            dir.display()
        );
        assert_eq!(cache.warnings(), vec![want.clone()], "known before any run");
        for _ in 0..2 {
            let (m, hit) = cache.load_or_compile(&engine, &returns(3)).unwrap();
            assert!(!hit);
            assert_eq!(call_f(&engine, &m), 3);
        }
        assert!(cwasm_files(&dir).is_empty(), "nothing stored there");
        assert_eq!(cache.warnings(), vec![want], "each reason once");
    }

    #[test]
    fn a_cache_file_other_users_can_write_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        let engine = engine();
        let cache = ModuleCache::new(dir.clone());
        let m = returns(4);
        cache.load_or_compile(&engine, &m).unwrap();
        let file = cwasm_files(&dir).pop().unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!cache.load_or_compile(&engine, &m).unwrap().1);
        assert!(cache.warnings()[0].contains("writable by other users (mode 0666)"));
        // Replaced by a private file of ours: used again.
        assert!(cache.load_or_compile(&engine, &m).unwrap().1);
        // A symlink in place of a cache file is never followed.
        std::fs::rename(&file, t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), &file).unwrap();
        assert!(!cache.load_or_compile(&engine, &m).unwrap().1);
    }
}
