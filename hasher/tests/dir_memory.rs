//! Memory of hashing one folder of many entries, the shape a job's results take when a
//! guest fills its output quota with empty files under 255-byte names (the sixth
//! review's 525,314 files at `--max-output 256MiB`, whose delivery peaked at 1,239 MiB
//! when the hasher held 1.8 KB per entry).
//!
//! SECURITY.md's Memory bullet charges delivery [`BYTES_PER_ENTRY`] per entry of the
//! results folder; this test checks it. The measurement is its own test binary, so that
//! no other test shares its peak (`VmHWM`). The default is 50,000 entries, quick enough
//! for the suite; the figure SECURITY.md quotes is
//! `DIR_MEMORY_N=500000 cargo test -p detwasm-hasher --release --test dir_memory -- --nocapture`
//! (399 bytes per entry; `DIR_MEMORY_NAME` sets the name length, `DIR_MEMORY_PROFILE`
//! the profile, `DIR_MEMORY_AT` an existing folder to hash instead of a fresh one).

use detwasm_hasher::{Hasher, Options, Profile};
use std::path::Path;

/// Bytes per entry SECURITY.md charges: 56 (the arena's item) + 72 (its CID and sizes)
/// + 16 (its place in a HAMT's order) + 255 (the longest name), rounded up.
const BYTES_PER_ENTRY: u64 = 400;
/// What the import holds whatever the number of entries (two hashing threads' malloc
/// arenas, the directory's path buffers), which SECURITY.md's 64 MiB for the process
/// covers.
const FIXED: u64 = 2 << 20;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` empty files named `%08x` + `a`… (`name_len` bytes) in `dir/outputs`.
fn make(dir: &Path, n: usize, name_len: usize) {
    let out = dir.join("outputs");
    std::fs::create_dir_all(&out).unwrap();
    let fill = "a".repeat(name_len.saturating_sub(8));
    for i in 0..n {
        std::fs::File::create(out.join(format!("{i:08x}{fill}"))).unwrap();
    }
}

#[test]
fn peak_memory_per_entry_of_a_large_folder() {
    let env = |k: &str, d: usize| std::env::var(k).map_or(d, |v| v.parse().unwrap());
    let n = env("DIR_MEMORY_N", 50_000);
    let name_len = env("DIR_MEMORY_NAME", 255);
    let tmp = tempfile::tempdir().unwrap();
    let at = match std::env::var("DIR_MEMORY_AT") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => {
            make(tmp.path(), n, name_len);
            tmp.path().to_path_buf()
        }
    };
    let profile = match std::env::var("DIR_MEMORY_PROFILE").as_deref() {
        Ok("unixfs-v1-2025") => Profile::UnixfsV1_2025,
        _ => Profile::UnixfsV0_2015,
    };
    // Two threads whatever the machine, so that the fixed part does not grow with cores.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let before = status_kib("VmRSS:") * 1024;
    let hashed = pool
        .install(|| Hasher::new(Options::profile(profile).with_hidden(true)).hash_path(&at))
        .unwrap();
    let peak = status_kib("VmHWM:") * 1024;
    let entries = n as u64 + 2; // and `outputs` and the root
    println!(
        "{profile}: {n} entries of {name_len} bytes: {} ; RSS before {} KiB, peak {} KiB: \
         {} bytes per entry",
        hashed.root,
        before / 1024,
        peak / 1024,
        (peak - before) / entries
    );
    assert!(
        peak - before <= BYTES_PER_ENTRY * entries + FIXED,
        "{} bytes for {entries} entries, over {BYTES_PER_ENTRY} per entry + {FIXED}",
        peak - before
    );
}
