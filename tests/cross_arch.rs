//! Proven on two architectures: the same jobs, run by the host's detwasm (x86-64 here)
//! and by detwasm built for aarch64 and run under `qemu-aarch64`, give the same receipts:
//! results CID, instruction count, exit code, trap, job id and engine fingerprint.
//!
//! Under qemu-user, Cranelift compiles real aarch64 code and qemu executes it instruction
//! by instruction, with aarch64's NaN rules (positive default NaN, no x86 "indefinite")
//! and lane semantics; so a NaN bit, a relaxed-SIMD lane or a stack depth that depends on
//! the CPU shows here as a different CID or instruction count.
//!
//! The aarch64 binary is built by `scripts/cross-aarch64.sh` (run by `scripts/setup.sh`,
//! so CI builds it once before the tests); rerun it after changing the code.

use std::path::{Path, PathBuf};
use std::process::Command;

mod cli_support;
use cli_support::corpus::{jobs, Job};

const TARGET: &str = "aarch64-unknown-linux-gnu";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/aarch64-unknown-linux-gnu/<profile>/detwasm`, beside the host binary's profile.
fn aarch64_binary() -> PathBuf {
    let host = Path::new(env!("CARGO_BIN_EXE_detwasm"));
    let profile_dir = host.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let bin = target_dir
        .join(TARGET)
        .join(profile_dir.file_name().unwrap())
        .join("detwasm");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/cross-aarch64.sh (scripts/setup.sh runs it)",
        bin.display()
    );
    bin
}

/// The receipt of `job` run by `program` (the host binary, or qemu with the aarch64 one).
fn receipt(program: &[PathBuf], cache: &Path, job: &Job, out: &Path) -> serde_json::Value {
    let mut c = Command::new(&program[0]);
    c.args(&program[1..])
        .arg("run")
        .arg("--json")
        .arg("-o")
        .arg(out)
        .args(&job.args)
        .current_dir(root())
        .env("DETWASM_CACHE_DIR", cache);
    let o = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{} ({:?}): no receipt ({e}): exit {:?}\n{stdout}\n{}",
            job.name,
            program,
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

const COMPARED: [&str; 9] = [
    "cid",
    "exit_code",
    "outcome",
    "trap",
    "instructions",
    "verifiable",
    "job_id",
    "module_cid",
    "engine",
];

#[test]
fn jobs_give_the_same_receipts_on_x86_64_and_aarch64() {
    let aarch64 = aarch64_binary();
    let qemu = PathBuf::from("qemu-aarch64");
    let host = vec![PathBuf::from(env!("CARGO_BIN_EXE_detwasm"))];
    let emulated = vec![
        qemu,
        PathBuf::from("-L"),
        PathBuf::from("/usr/aarch64-linux-gnu"),
        aarch64,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let caches = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cross-arch-cache");
    let jobs = jobs();
    // qemu is the slow side: two jobs at a time, one per core.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<(serde_json::Value, serde_json::Value)>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let x = receipt(
                    &host,
                    &caches.join("host"),
                    job,
                    &tmp.path().join(format!("host-{i}")),
                );
                let a = receipt(
                    &emulated,
                    &caches.join(TARGET),
                    job,
                    &tmp.path().join(format!("aarch64-{i}")),
                );
                *results[i].lock().unwrap() = Some((x, a));
            });
        }
    });
    let mut differences = Vec::new();
    for (i, (job, r)) in jobs.iter().zip(results).enumerate() {
        let (x, a) = r.into_inner().unwrap().unwrap();
        check_reached(job, &x, &tmp.path().join(format!("host-{i}")));
        for key in COMPARED {
            if x[key] != a[key] {
                differences.push(format!(
                    "{}: {key} {} (x86-64) vs {} (aarch64)",
                    job.name, x[key], a[key]
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the architectures disagree (if `engine` differs, the aarch64 build is stale: run \
         scripts/cross-aarch64.sh):\n{}",
        differences.join("\n")
    );
}

/// What each job is meant to reach, checked on the host's receipt (the comparison alone
/// would pass if both sides failed the same way).
fn check_reached(job: &Job, r: &serde_json::Value, results: &Path) {
    let trap = r["trap"].as_str().unwrap_or("");
    if job.name.starts_with("stack") {
        assert_eq!(trap, "wasm trap: call stack exhausted", "{}", job.name);
    } else if job.name == "out of fuel" {
        assert_eq!(r["outcome"], "out_of_fuel");
        assert_eq!(r["instructions"], 123457);
    } else {
        assert_eq!(r["exit_code"], 0, "{}: {r}", job.name);
    }
    if job.name == "memory growth" {
        let pages = std::fs::read(results.join("stdout")).unwrap();
        assert_eq!(pages, 128u32.to_le_bytes(), "8 MiB is 128 pages");
    }
}

/// Runs `detwasm COMMAND --json ARGS…` with `program` and returns the receipt.
fn receipt_of(program: &[PathBuf], cache: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new(&program[0])
        .args(&program[1..])
        .arg(args[0])
        .arg("--json")
        .args(&args[1..])
        .current_dir(root())
        .env("DETWASM_CACHE_DIR", cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} ({program:?}): no receipt ({e}): exit {:?}\n{stdout}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Checkpoints are CPU-independent: a job with checkpoints run on x86-64 and under
/// qemu-aarch64 saves snapshots with the same CIDs (float work included: globals and
/// memories hold no CPU-dependent NaN bits), and a snapshot taken on x86-64, resumed on
/// aarch64, ends with the x86-64 run's receipt, trace included.
#[test]
fn snapshots_are_the_same_on_both_architectures_and_resume_across_them() {
    let emulated = vec![
        PathBuf::from("qemu-aarch64"),
        PathBuf::from("-L"),
        PathBuf::from("/usr/aarch64-linux-gnu"),
        aarch64_binary(),
    ];
    let host = vec![PathBuf::from(env!("CARGO_BIN_EXE_detwasm"))];
    let tmp = tempfile::tempdir().unwrap();
    let caches = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cross-arch-cache");
    let t = |p: &str| tmp.path().join(p).display().to_string();
    let run = |program: &[PathBuf], cache: &str, out: &str, cp: &str| {
        let (out, cp) = (t(out), t(cp));
        receipt_of(
            program,
            &caches.join(cache),
            &[
                "run",
                "-o",
                &out,
                "--checkpoints",
                &cp,
                "--checkpoint-every",
                "50000000",
                "fixtures/probes/probe.wasm",
                "--",
                "float",
                "200000",
            ],
        )
    };
    let x = run(&host, "host", "x", "x-cp");
    let a = run(&emulated, TARGET, "a", "a-cp");
    let snapshots = x["trace"]["snapshots"].as_array().unwrap();
    assert!(snapshots.len() >= 3, "{x}");
    for key in COMPARED.iter().chain(&["trace"]) {
        assert_eq!(x[key], a[key], "{key}: x86-64 vs aarch64");
    }
    let (snapshot, out, cp) = (t("x-cp/000002"), t("r"), t("r-cp"));
    let r = receipt_of(
        &emulated,
        &caches.join(TARGET),
        &["resume", &snapshot, "-o", &out, "--checkpoints", &cp],
    );
    for key in COMPARED.iter().chain(&["trace"]) {
        assert_eq!(x[key], r[key], "{key}: x86-64 run vs resumed on aarch64");
    }
}
