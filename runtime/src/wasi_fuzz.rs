//! Fuzz target for the preview1 host: arbitrary call sequences against a [`WasiHost`].
//!
//! What it is for: `cargo fuzz run wasi` (fuzz/fuzz_targets/wasi.rs) and the short runs
//! in this crate's tests. Each input is decoded into a sequence of calls with
//! guest-chosen arguments (fds, pointers near the ends of memory, sizes near
//! `u32::MAX`/`u64::MAX`, paths with `..`, NUL and long components) made directly on the
//! host, without wasmtime, over a small guest memory. The contract checked after every
//! call: no panic (the tests run with overflow checks on), an errno or a clean end, and
//! the output volumes never holding more than the quota. What it is not: a test of
//! WASI semantics (the contract tests and the WASI test suite do that).

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::job::Job;
use crate::wasi::abi::Mem;
use crate::wasi::host::{HostError, WasiHost};

/// Bytes of guest memory the calls work on.
pub const MEMORY: usize = 1 << 16;
/// Output quota of the fuzzed job: small, so that the quota is reached often.
pub const QUOTA: u64 = 1 << 20;

/// Paths placed in guest memory at known offsets (see [`PATHS_AT`]), so that decoded
/// calls name real entries often.
const PATHS: &[&[u8]] = &[
    b"a",
    b"d/e",
    b"d/e/f",
    b"..",
    b"../x",
    b"d/../..",
    b"link",
    b"new",
    b"new/deeper",
    b"n\0ul",
    b".",
    b"d/",
    b"/etc/passwd",
    b"loop",
];
/// Where [`PATHS`] start in guest memory: 64 bytes apart from here.
pub const PATHS_AT: u32 = 0x1000;

/// A read-only input tree shared by every run of the target (made once per process).
fn input_tree() -> &'static PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("detwasm-fuzz-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("d/e")).expect("temp dir");
        std::fs::write(root.join("a"), b"alpha").expect("temp file");
        std::fs::write(root.join("d/e/f"), vec![7u8; 3000]).expect("temp file");
        let _ = std::os::unix::fs::symlink("d/e", root.join("link"));
        let _ = std::os::unix::fs::symlink("loop", root.join("loop"));
        root
    })
}

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u32_raw(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    /// A value biased toward the interesting: small numbers, fds, the ends of memory,
    /// values near the top of the type.
    fn u32(&mut self) -> u32 {
        match self.byte() % 8 {
            0 => u32::from(self.byte() % 8),
            1 => MEMORY as u32 - u32::from(self.byte()),
            2 => u32::MAX - u32::from(self.byte()),
            3 => PATHS_AT + 64 * u32::from(self.byte() % PATHS.len() as u8),
            4 => u32::from(self.byte()) * 16,
            5 => 1 << (self.byte() % 32),
            _ => self.u32_raw(),
        }
    }
    fn u64(&mut self) -> u64 {
        match self.byte() % 4 {
            0 => u64::from(self.u32()),
            1 => u64::MAX - u64::from(self.byte()),
            2 => i64::MAX as u64 - u64::from(self.byte()) + 1,
            _ => (u64::from(self.u32_raw()) << 32) | u64::from(self.u32_raw()),
        }
    }
    /// A path argument: one of [`PATHS`] with its length (sometimes a wrong one).
    fn path(&mut self) -> (u32, u32) {
        let i = self.byte() as usize % PATHS.len();
        let len = match self.byte() % 8 {
            0 => self.u32(),
            _ => PATHS[i].len() as u32,
        };
        (PATHS_AT + 64 * i as u32, len)
    }
}

/// The host of the fuzzed job: one input at `/in`, the same tree writable at `/rw`, the
/// default output volume, some args and env.
fn host() -> WasiHost {
    let job = Job::new(Vec::new())
        .push_input(input_tree().clone(), "/in")
        .push_dir(input_tree().clone(), "/rw")
        .push_arg("arg")
        .push_env("K", "V")
        .with_limits(crate::Limits {
            max_output: QUOTA,
            ..Default::default()
        });
    crate::capabilities::grant(&job).expect("the fuzz job is valid")
}

/// Runs the calls `data` decodes to. Panics only if the host breaks its contract.
pub fn fuzz_wasi_calls(data: &[u8]) {
    let mut h = host();
    let mut memory = vec![0u8; MEMORY];
    for (i, p) in PATHS.iter().enumerate() {
        let at = PATHS_AT as usize + 64 * i;
        memory[at..at + p.len()].copy_from_slice(p);
    }
    // Two iovec arrays: eight iovecs over one 256-byte buffer, and one over a page.
    for i in 0..8u32 {
        let at = 0x2000 + 8 * i as usize;
        memory[at..at + 4].copy_from_slice(&0x3000u32.to_le_bytes());
        memory[at + 4..at + 8].copy_from_slice(&256u32.to_le_bytes());
    }
    memory[0x2100..0x2104].copy_from_slice(&0x4000u32.to_le_bytes());
    memory[0x2104..0x2108].copy_from_slice(&4096u32.to_le_bytes());
    let mut input = Input { data };
    let mut calls = 0;
    while !input.data.is_empty() && calls < 256 {
        calls += 1;
        h.fuel = 1 << 40;
        let m = &mut Mem(&mut memory);
        let op = input.byte() % 32;
        let (a, b, c) = (input.u32(), input.u32(), input.u32());
        let r: Result<(), HostError> = match op {
            0 => h.args_get(m, a, b),
            1 => h.environ_get(m, a, b),
            2 => h.clock_time_get(m, a % 5, input.u64(), b),
            3 => h.random_get(m, a, b),
            4 => h.poll_oneoff(m, a, b, c, input.u32()),
            5 => h.fd_close(m, a % 12),
            6 => h.fd_renumber(m, a % 12, b % 12),
            7 => h.fd_fdstat_get(m, a % 12, b),
            8 => h.fd_fdstat_set_rights(m, a % 12, input.u64(), input.u64()),
            9 => h.fd_prestat_dir_name(m, a % 12, b, c),
            10 => h.fd_filestat_get(m, a % 12, b),
            11 => h.fd_filestat_set_size(m, a % 12, input.u64()),
            12 => {
                let iovs = if b % 2 == 0 { 0x2000 } else { 0x2100 };
                h.fd_read(m, a % 12, iovs, c % 10, input.u32())
            }
            13 => h.fd_pread(m, a % 12, 0x2000, b % 10, input.u64(), c),
            14 => {
                let iovs = if b % 2 == 0 { 0x2000 } else { 0x2100 };
                h.fd_write(m, a % 12, iovs, c % 10, input.u32())
            }
            15 => h.fd_pwrite(m, a % 12, 0x2000, b % 10, input.u64(), c),
            16 => h.fd_seek(m, a % 12, input.u64(), b % 4, c),
            17 => h.fd_readdir(m, a % 12, b, c % 4096, input.u64(), input.u32()),
            18 => {
                let (p, l) = input.path();
                h.path_open(
                    m,
                    a % 6,
                    b % 2,
                    p,
                    l,
                    c % 16,
                    input.u64(),
                    input.u64(),
                    input.u32() % 32,
                    input.u32(),
                )
            }
            19 => {
                let (p, l) = input.path();
                h.path_filestat_get(m, a % 6, b % 2, p, l, c)
            }
            20 => {
                let (p, l) = input.path();
                h.path_create_directory(m, a % 6, p, l)
            }
            21 => {
                let (p, l) = input.path();
                h.path_remove_directory(m, a % 6, p, l)
            }
            22 => {
                let (p, l) = input.path();
                h.path_unlink_file(m, a % 6, p, l)
            }
            23 => {
                let (p1, l1) = input.path();
                let (p2, l2) = input.path();
                h.path_rename(m, a % 6, p1, l1, b % 6, p2, l2)
            }
            24 => {
                let (p, l) = input.path();
                h.path_readlink(m, a % 6, p, l, b, c, input.u32())
            }
            25 => {
                let (p, l) = input.path();
                h.path_filestat_set_times(m, a % 6, b % 2, p, l, input.u64(), input.u64(), c % 16)
            }
            26 => h.fd_filestat_set_times(m, a % 12, input.u64(), input.u64(), b % 16),
            27 => h.fd_tell(m, a % 12, b),
            28 => h.args_sizes_get(m, a, b),
            29 => {
                let (p1, l1) = input.path();
                let (p2, l2) = input.path();
                h.path_symlink(m, p1, l1, a % 6, p2, l2)
            }
            30 => {
                let (p1, l1) = input.path();
                let (p2, l2) = input.path();
                h.path_link(m, a % 6, b % 2, p1, l1, c % 6, p2, l2)
            }
            _ => h.fd_prestat_get(m, a % 12, b),
        };
        let r = r.and_then(|()| h.settle_work());
        assert!(
            h.vfs.used <= QUOTA,
            "the output volumes hold {} bytes, over the quota",
            h.vfs.used
        );
        // The quota's account is what the nodes hold (every name of a hard-linked file
        // a copy), however it got there.
        assert_eq!(
            h.vfs.used,
            h.vfs.used_recounted(),
            "the quota's account drifted"
        );
        if let Err(HostError::Fatal(_)) = r {
            // The run would end here (quota, fuel, a host failure).
            return;
        }
    }
    // Every state the calls reach can be a checkpoint's: saved, it is restored into a
    // fresh host of the same job as it was (hard links, removed files still open or
    // linked, and all).
    let (saved, bytes) = h.save();
    let files: std::collections::HashMap<_, _> =
        bytes.files.iter().map(|(n, b)| (*n, b.to_vec())).collect();
    let mut fresh = host();
    fresh
        .restore(
            &saved,
            bytes.stdout.to_vec(),
            bytes.stderr.to_vec(),
            |n, len| {
                files
                    .get(&n)
                    .filter(|b| b.len() as u64 == len)
                    .cloned()
                    .ok_or_else(|| format!("no bytes of node {n}"))
            },
        )
        .unwrap_or_else(|e| panic!("a state the guest reached is refused: {e}"));
    assert!(fresh.save().0 == saved, "restored otherwise than saved");
    assert_eq!(fresh.vfs.used, h.vfs.used);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    /// A short run of the target in the test suite: 3000 pseudo-random call sequences
    /// from a fixed seed (the same inputs every time).
    #[test]
    fn random_call_sequences_never_panic_or_exceed_the_quota() {
        // DETWASM_WASI_FUZZ_RUNS / _SEED run a longer campaign of the same kind.
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(env("DETWASM_WASI_FUZZ_SEED", 8));
        for _ in 0..env("DETWASM_WASI_FUZZ_RUNS", 3000) {
            let len = (rng.next_u32() % 600) as usize;
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            fuzz_wasi_calls(&data);
        }
    }
}
