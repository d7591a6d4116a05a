//! The compiled-module cache: modules compiled by wasmtime, kept on disk under a key of
//! the module's bytes and the engine, and loaded only when they are provably ours.
//! Nothing here can change a result: a run without the cache compiles the same module.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::{Engine, Module};

use crate::compile::compile_by;
use crate::engine::{fingerprint, Deadline};
use crate::error::RunError;
use crate::passes;

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

/// Magic at the end of every cache file (version 3: the key and checksum follow the
/// payload, wasmtime's image first).
const CACHE_MAGIC: &[u8; 8] = b"DTWCACH3";

/// Bytes of a cache key (a blake3 hash).
const KEY_LEN: usize = 32;

/// Compiled modules, serialized by wasmtime, keyed by
/// blake3(the cache file format ‖ blake3 of the module's binary ‖ engine fingerprint ‖
/// the unwind pass's version when compiled with it ‖ the shape scan's version and limits
/// ‖ [`passes::CODEGEN`] ‖ wasmtime's compatibility hash of this host's engine).
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
/// - the file is `payload ‖ key ‖ blake3(key ‖ payload) ‖ MAGIC` and `key` is the key of
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
    pub fn dir_is_trusted(&self) -> bool {
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

    fn key(engine: &Engine, module_hash: &[u8; 32], unwind: bool) -> [u8; KEY_LEN] {
        let mut h = Blake3Hasher(blake3::Hasher::new());
        // The file format too: a detwasm of another format sharing the folder then keeps
        // files of its own instead of replacing ours on every run (and we its).
        h.0.update(CACHE_MAGIC);
        h.0.update(module_hash);
        h.0.update(fingerprint().as_bytes());
        h.0.update(b"\0");
        // The same module compiled to take checkpoints is another artifact.
        if unwind {
            h.0.update(passes::unwind::PASS_VERSION.as_bytes());
            h.0.update(b"\0");
        }
        // The shape limits decide which modules compile without changing what they
        // compute (so they are not in the fingerprint); a change of them scans cached
        // modules again (a hit skips the scan: `Runtime::load_from`). The limits' values
        // themselves, not only the version's name, which changes of limits did not
        // always bump (found by review).
        h.0.update(shape_identity().as_bytes());
        h.0.update(b"\0");
        // So does the code the passes emit for the same results (`passes::CODEGEN`).
        h.0.update(passes::CODEGEN.as_bytes());
        h.0.update(b"\0");
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        *h.0.finalize().as_bytes()
    }

    fn path(&self, key: &[u8; KEY_LEN]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", blake3::Hash::from(*key).to_hex()))
    }

    /// The module, from the cache or compiled (and then stored). Returns whether it was
    /// a cache hit. Cache failures never fail a run: they fall back to compiling. (Runs
    /// go through `Runtime::load_from`, which also keeps loaded modules, skips the shape
    /// scan on a hit, and compiles with a deadline or the unwind pass.)
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Module, bool), RunError> {
        let hash = module_hash(bytes);
        if let Some(m) = self.load(engine, &hash, false) {
            return Ok((m, true));
        }
        Ok((
            self.compile_and_store(engine, bytes, &hash, None, false)?,
            false,
        ))
    }

    /// The compiled module whose binary hashes to `module_hash` ([`module_hash`]), if this
    /// cache holds it. A hit also says the binary passed the shape scan
    /// ([`passes::shape::check`], whose version and limits are in the key): it was
    /// compiled, and compiling scans first.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        module_hash: &[u8; 32],
        unwind: bool,
    ) -> Option<Module> {
        if !self.dir_is_trusted() {
            return None;
        }
        let key = Self::key(engine, module_hash, unwind);
        let bytes = self.read_trusted(&self.path(&key))?;
        let payload = verify(&bytes, &key)?;
        // SAFETY: the file was written by `compile_and_store` for exactly this key (module
        // bytes and engine), in a folder and file only this user can write, and its
        // checksum over key and payload matches: it is the output of `Module::serialize`
        // for this module and this engine configuration.
        //
        // Copied by wasmtime, not mapped from the file (`Module::deserialize_open_file`
        // was tried: 0.07 s less of a CPython spot check): wasmtime maps the file's pages
        // lazily, into the code and into every instance's memory images, for the
        // module's whole life, so a write to the file after the check (`cp` or `rsync
        // --inplace` over the cache, say) changed a running job's data, and a file on NFS
        // removed by another host ended the process with SIGBUS (found by review). The
        // checked bytes are private to this process once copied.
        unsafe { Module::deserialize(engine, payload) }.ok()
    }

    /// `bytes` compiled ([`compile_by`]) and stored under its hash, `module_hash`.
    pub(crate) fn compile_and_store(
        &self,
        engine: &Engine,
        bytes: &[u8],
        module_hash: &[u8; 32],
        deadline: Option<Deadline>,
        unwind: bool,
    ) -> Result<Module, RunError> {
        let module = compile_by(engine, bytes, deadline, unwind)?;
        if self.dir_is_trusted() {
            if let Ok(ser) = module.serialize() {
                let key = Self::key(engine, module_hash, unwind);
                let _ = self.store(&self.path(&key), &key, &ser);
            }
        }
        Ok(module)
    }

    /// The file's bytes if it is a regular file of ours that nobody else can write (opened
    /// without following a symlink, and checked on the open handle, so it cannot be
    /// swapped between the check and the read).
    ///
    /// Mapped, not read: a module compiled with the unwind pass is large (CPython's, 112
    /// MB), and reading it copied every byte into fresh pages before `Module::deserialize`
    /// copied them again. A file that cannot be mapped (some FUSE file systems) is read. The mapping lives only until wasmtime's
    /// copy is made (milliseconds): a write to the file in place within them would be
    /// copied unchecked, a truncation would end the process with SIGBUS. Only this user
    /// can do either, and `store` never writes a file in place.
    fn read_trusted(&self, path: &Path) -> Option<Bytes> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        let m = f.metadata().ok()?;
        // No larger than `store` ever writes: the mapping below reads it whole.
        if !m.is_file() || m.len() > self.max_bytes {
            return None;
        }
        if let Some(why) = untrusted_because(&m) {
            self.warn(format!(
                "not using module cache file {}: {why}",
                path.display()
            ));
            return None;
        }
        // SAFETY: see above: a regular file of this user's, in a folder only this user
        // can write, which this program replaces by rename and never modifies in place.
        // Populated: the kernel maps every page at once, rather than on the fault of
        // each page the checksum and the copy touch.
        let bytes = match unsafe {
            memmap2::MmapOptions::new()
                .populate()
                .map_copy_read_only(&f)
        } {
            Ok(map) => Bytes::Mapped(map),
            Err(_) => {
                let mut buf = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
                f.read_to_end(&mut buf).ok()?;
                Bytes::Read(buf)
            }
        };
        // Used now: the last file eviction removes (our own file, so futimens is allowed
        // on the read-only handle).
        let _ = f.set_modified(std::time::SystemTime::now());
        Some(bytes)
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
        tmp.write_all(payload)?;
        tmp.write_all(&encode_trailer(key, payload))?;
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
        self.evict_to(keep, self.max_bytes);
    }

    /// The compiled modules in the folder: how many, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        entries
            .flatten()
            .filter(|e| is_cache_file(&e.file_name().to_string_lossy()))
            .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
            .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
    }

    /// Removes the least recently used compiled modules until the folder holds at most
    /// `max_bytes` of them (0: all), and stale temporary files (`detwasm cache gc`).
    /// Returns what is left, as [`Self::usage`].
    pub fn gc(&self, max_bytes: u64) -> (usize, u64) {
        self.evict_to(Path::new(""), max_bytes);
        self.usage()
    }

    fn evict_to(&self, keep: &Path, max_bytes: u64) {
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
            if !is_cache_file(&name) {
                continue;
            }
            total = total.saturating_add(m.len());
            files.push((modified, e.path(), m.len()));
        }
        files.sort();
        let mut count = files.len();
        for (_, path, len) in files {
            if total <= max_bytes && count <= CACHE_MAX_FILES {
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

/// Whether `name` is a compiled module as this cache names them: 64 hex digits (the
/// key) and `.cwasm`. Nothing else in the folder is counted or removed (found by review:
/// `cache gc` removed any `*.cwasm`).
fn is_cache_file(name: &str) -> bool {
    name.strip_suffix(".cwasm")
        .is_some_and(|key| key.len() == 2 * KEY_LEN && key.bytes().all(|b| b.is_ascii_hexdigit()))
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

/// The shape scan as the cache key names it: its version and every limit's value.
fn shape_identity() -> String {
    use passes::shape::{LIMITS, REWRITTEN_LIMITS, UNWIND_LIMITS, VERSION};
    format!("{VERSION} {LIMITS:?} {REWRITTEN_LIMITS:?} {UNWIND_LIMITS:?}")
}

/// A cache file's bytes: mapped, or read where the file cannot be mapped.
enum Bytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        }
    }
}

/// A module's hash for the cache key and the runtime's loaded modules: blake3 of its
/// binary, computed once per load ([`hash_into`]).
pub fn module_hash(binary: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    hash_into(&mut h, binary);
    *h.finalize().as_bytes()
}

/// Bytes below which blake3 hashes on the calling thread: starting rayon's pool costs a
/// small job more than it saves (the hasher's CIDs keep the same rule).
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Feeds `bytes` to `h`: on rayon's global pool when they are many (as the hasher's CIDs
/// of inputs and results are), where a job's compile never runs (it has a pool of its
/// own, `compile::compile_by`). CPython's 138 MB compiled with the unwind pass took 35 ms
/// on one thread, on the path of every load of a spot check.
fn hash_into(h: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() < PARALLEL_MIN_BYTES {
        h.update(bytes);
    } else {
        h.update_rayon(bytes);
    }
}

/// `key ‖ blake3(key ‖ payload) ‖ MAGIC`: what follows the payload in a cache file.
fn encode_trailer(key: &[u8; KEY_LEN], payload: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(payload);
    let mut out = key.to_vec();
    out.extend_from_slice(h.finalize().as_bytes());
    out.extend_from_slice(CACHE_MAGIC);
    out
}

/// The payload of a cache file, if the file has our magic, carries `key` and its
/// checksum over key and payload matches.
fn verify<'a>(file: &'a [u8], key: &[u8; KEY_LEN]) -> Option<&'a [u8]> {
    let rest = file.strip_suffix(CACHE_MAGIC.as_slice())?;
    let (rest, sum) = rest.split_at_checked(rest.len().checked_sub(32)?)?;
    let payload = rest.strip_suffix(key.as_slice())?;
    let mut h = blake3::Hasher::new();
    h.update(key);
    hash_into(&mut h, payload);
    (h.finalize().as_bytes() == sum).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{new_engine, EngineOptions};

    #[test]
    fn the_cache_only_loads_files_with_our_magic_key_and_checksum() {
        let payload = b"compiled";
        let key = [7u8; KEY_LEN];
        let mut file = payload.to_vec();
        file.extend_from_slice(&encode_trailer(&key, payload));
        assert_eq!(verify(&file, &key), Some(&payload[..]));
        assert_eq!(verify(&file, &[8u8; KEY_LEN]), None, "another module's key");
        let mut tampered = file.clone();
        tampered[0] ^= 1;
        assert_eq!(verify(&tampered, &key), None);
        let mut rekeyed = file.clone();
        rekeyed[payload.len()] ^= 1;
        assert_eq!(
            verify(&rekeyed, &[6u8; KEY_LEN]),
            None,
            "key edited in place"
        );
        assert_eq!(verify(b"\x7fELF...", &key), None);
        assert_eq!(verify(CACHE_MAGIC, &key), None, "too short for a trailer");
        assert_eq!(verify(b"", &key), None);
    }

    #[test]
    fn the_key_names_the_shape_limits() {
        use passes::shape::{LIMITS, REWRITTEN_LIMITS, UNWIND_LIMITS, VERSION};
        let named = shape_identity();
        assert!(named.starts_with(VERSION), "{named}");
        for limits in [LIMITS, REWRITTEN_LIMITS, UNWIND_LIMITS] {
            let other = passes::shape::Limits {
                depth: limits.depth + 1,
                ..limits
            };
            assert!(named.contains(&format!("{limits:?}")), "{named}");
            assert!(!named.contains(&format!("{other:?}")), "{named}");
        }
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
