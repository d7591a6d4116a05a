//! The protocol's receipts, pinned. A job id names detwasm's rules by their protocol
//! version (`runtime/src/engine.rs`, `PROTOCOL`), not the engine's build; so whatever
//! could change a result without changing the protocol must be caught here. This test
//! runs the corpus of `tests/cli_support/corpus.rs` (every example module, the probe,
//! NaNs, relaxed SIMD, the metered stack limit, memory growth, out of fuel) and CPython,
//! and requires
//! the receipts pinned below: results CID, instruction count, outcome, exit code and
//! trap. A change to a pass, to the WASI host, to a limit or to wasmtime (an upgrade)
//! that changes any of them fails until `PROTOCOL` is bumped and the pins renewed (the
//! failure prints the new table); a new protocol with the old pins fails too.
//!
//! The corpus also runs under detwasm built against another wasmtime release
//! (`scripts/engine-diff.sh`, run by `scripts/setup.sh`; or `DETWASM_OTHER_ENGINE`), and
//! every receipt must be the same, job id and fingerprint included.

use std::path::Path;

mod cli_support;
use cli_support::corpus::{jobs, Job};

use cli_support::detwasm;

/// The corpus, and CPython 3.12 (a 26 MB interpreter nobody here wrote, fetched by the
/// set-up) running a float loop: too slow under qemu for `tests/cross_arch.rs`, so here
/// only.
fn protocol_jobs() -> Vec<Job> {
    let mut all = jobs();
    all.push(Job {
        name: "cpython float",
        args: vec![
            "target/workloads/python-3.12.0.wasm",
            "--input",
            "benches/workloads/py:/w",
            "--",
            "/w/floatloop.py",
        ],
    });
    all
}

/// The protocol the pins are of.
const PINNED_PROTOCOL: &str = "detwasm-protocol-1";

/// (job, results CID, instructions, outcome, exit code, trap).
type Pin = (
    &'static str,
    &'static str,
    u64,
    &'static str,
    Option<i64>,
    &'static str,
);

#[rustfmt::skip]
const PINS: &[Pin] = &[
    ("cowsay", "QmV6Z6fNowvJPuuiJ5yiG7wNW9M9vbSNrRkmkdatT7PmhT", 15151, "exited", Some(0), ""),
    ("artgen", "QmXaEmBx7g4KpNVyQskoU5xP9ZGTbQRtyyv5ZaxBwqy54i", 8531984320, "exited", Some(0), ""),
    ("wordstats", "QmeXW8Chf8s8LyePyySiaqTFrk21vZRnmpeoZQMU6M3T1a", 304382, "exited", Some(0), ""),
    ("digits", "QmULMgxqhN1RafdxprpCiygw6g6xJRygPpuTJcvwCFkeYM", 1526326, "exited", Some(0), ""),
    ("probe report", "QmWhUweF2TjgazMnJVqz182HNWMnXj7c8cwS4NeKpkpyy8", 154343, "exited", Some(0), ""),
    ("probe int", "QmfLUeG8jrASAQAsztLCbN4eSfMQfw4CKBna31F7GAosfW", 645931, "exited", Some(0), ""),
    ("probe float", "QmXGwRhUXgLQJM9tVKRwF4ydpBUh6WoawtRcpPR8oab62d", 2392145, "exited", Some(0), ""),
    ("nan", "QmPUynpbWXVWPcpDyYB9yjSeVq7BPExBd7sBMQ8kr4vquJ", 131, "exited", Some(0), ""),
    ("nans", "Qmdhj5sC9hTx6vwq5DVeBDhSYjmCWexGwga8mmt7BWvfdy", 4273, "exited", Some(0), ""),
    ("relaxed", "QmR5FqAniZieZuLd7Ev8Si9y2fT6iCxHrreiuVSSgNfm72", 52, "exited", Some(0), ""),
    ("stack", "QmeisHB3yfmf3ysYf9X4eioYCjrs7zLUnF3AtLhdbU1Qau", 93618, "trap", Some(134), "wasm trap: call stack exhausted"),
    ("stack small frames", "QmeisHB3yfmf3ysYf9X4eioYCjrs7zLUnF3AtLhdbU1Qau", 43688, "trap", Some(134), "wasm trap: call stack exhausted"),
    ("stack v128 frames", "QmeisHB3yfmf3ysYf9X4eioYCjrs7zLUnF3AtLhdbU1Qau", 251186, "trap", Some(134), "wasm trap: call stack exhausted"),
    ("stack v128 parameters", "QmeisHB3yfmf3ysYf9X4eioYCjrs7zLUnF3AtLhdbU1Qau", 119660, "trap", Some(134), "wasm trap: call stack exhausted"),
    ("memory growth", "QmcPuggnm5PWNyqDqYBsJVbrqo6w3xj5ZmNYJuvNbLfNMH", 784, "exited", Some(0), ""),
    ("out of fuel", "QmbrFzeS9AJi7h9gYebd8gZDwPtBheNQxWt87Z6htXdyku", 123457, "out_of_fuel", Some(134), "out of fuel: the instruction budget of 123457 was used up"),
    ("cpython float", "QmQEYUtN9dGvQ9oSXjwVpd26p3yaveP26CJkRDxKBS6jnz", 19137531386, "exited", Some(0), ""),
];

fn pin_line(name: &str, r: &serde_json::Value) -> String {
    format!(
        "    ({name:?}, {}, {}, {}, {}, {}),",
        r["cid"],
        r["instructions"],
        r["outcome"],
        match r["exit_code"].as_i64() {
            Some(c) => format!("Some({c})"),
            None => "None".into(),
        },
        match r["trap"].as_str() {
            Some(t) => format!("{t:?}"),
            None => "\"\"".into(),
        }
    )
}

/// The receipt of `job` run by `program` (a `detwasm` command) into `out`.
fn receipt(mut program: std::process::Command, job: &Job, out: &Path) -> serde_json::Value {
    let out = program
        .current_dir(cli_support::root())
        .arg("run")
        .arg("--json")
        .arg("-o")
        .arg(out)
        .args(&job.args)
        .output()
        .unwrap();
    // A trap or running out of fuel exits non-zero with a receipt all the same.
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: no receipt ({e}): {}",
            job.name,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The wasmtime release `scripts/engine-diff.sh` builds detwasm against by default.
const OTHER_WASMTIME: &str = "50.0.2";

/// Panics unless `scripts/engine-diff.sh`'s build is of the tree this test is built from:
/// the stamp it wrote beside the build (a hash of the tracked files it copied) must be
/// the tree's now. Fingerprints name only the protocol, so a build of older sources
/// gives the same job ids and would be compared without a word (found by review).
fn other_build_is_current() {
    let root = cli_support::root();
    let stamp_file = root.join(format!("target/engine-diff/{OTHER_WASMTIME}/stamp"));
    let built = std::fs::read_to_string(&stamp_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/engine-diff.sh (scripts/setup.sh runs it)",
            stamp_file.display()
        )
    });
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/engine-diff.sh"))
        .arg("--stamp")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        built.trim(),
        now.trim(),
        "the build in target/engine-diff/{OTHER_WASMTIME} is of other sources than this \
         tree's: run scripts/engine-diff.sh"
    );
}

/// The same receipts from a detwasm built against another wasmtime: `DETWASM_OTHER_ENGINE`,
/// else the one `scripts/engine-diff.sh` builds (`scripts/setup.sh` runs it) from this
/// tree.
#[test]
fn another_engine_build_gives_the_same_receipts() {
    let other = match std::env::var_os("DETWASM_OTHER_ENGINE") {
        Some(other) => std::path::PathBuf::from(other),
        None => {
            other_build_is_current();
            cli_support::root().join(format!("target/engine-diff/{OTHER_WASMTIME}/bin/detwasm"))
        }
    };
    assert!(
        other.is_file(),
        "{} is missing: run scripts/engine-diff.sh (scripts/setup.sh runs it)",
        other.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut differences = Vec::new();
    for (i, job) in protocol_jobs().iter().enumerate() {
        let ours = receipt(detwasm(), job, &tmp.path().join(format!("ours-{i}")));
        let mut theirs = std::process::Command::new(&other);
        theirs.env(
            "DETWASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("other-engine-cache"),
        );
        let theirs = receipt(theirs, job, &tmp.path().join(format!("theirs-{i}")));
        for key in [
            "cid",
            "instructions",
            "outcome",
            "exit_code",
            "trap",
            "verifiable",
            "job_id",
            "engine",
        ] {
            if ours[key] != theirs[key] {
                differences.push(format!(
                    "{}: {key} {} (this build) vs {} ({})",
                    job.name,
                    ours[key],
                    theirs[key],
                    other.to_string_lossy()
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the builds disagree:\n{}",
        differences.join("\n")
    );
    eprintln!(
        "{} jobs: the same receipts from {}",
        protocol_jobs().len(),
        other.to_string_lossy()
    );
}

/// Generated modules (the self-fuzz corpus of `fuzzing/tests/self_fuzz.rs`) after the
/// passes: under the other wasmtime they compute what wasmi computes, fuel and stack
/// depths included, as under this build's wasmtime (`self_fuzz` runs that here). The
/// other build's test binary is `target/engine-diff/<version>/bin/self_fuzz`
/// (`scripts/engine-diff.sh` puts it there).
#[test]
fn another_engine_build_agrees_with_the_interpreter_on_generated_modules() {
    other_build_is_current();
    let binary =
        cli_support::root().join(format!("target/engine-diff/{OTHER_WASMTIME}/bin/self_fuzz"));
    assert!(
        binary.is_file(),
        "{} is missing: run scripts/engine-diff.sh (scripts/setup.sh runs it)",
        binary.display()
    );
    let out = std::process::Command::new(&binary)
        .args([
            "--exact",
            "generated_modules_agree_under_another_engine",
            "--nocapture",
        ])
        .env("DETWASM_SELFFUZZ_ENGINE_MODULES", "200")
        .env_remove("DETWASM_SELFFUZZ_SEED")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("wasmi: seed 3000: 200 modules") && text.contains("1 passed"),
        "{text}"
    );
}

#[test]
fn the_corpus_gives_the_pinned_receipts_under_this_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut differences = Vec::new();
    let mut protocols = std::collections::BTreeSet::new();
    for (i, job) in protocol_jobs().iter().enumerate() {
        let r = receipt(detwasm(), job, &tmp.path().join(i.to_string()));
        let engine = r["engine"].as_str().unwrap_or_default();
        protocols.insert(engine.split(':').next().unwrap_or_default().to_string());
        lines.push(pin_line(job.name, &r));
        let pinned = PINS.iter().find(|p| p.0 == job.name);
        let actual = (
            r["cid"].as_str().unwrap_or_default(),
            r["instructions"].as_u64().unwrap_or_default(),
            r["outcome"].as_str().unwrap_or_default(),
            r["exit_code"].as_i64(),
            r["trap"].as_str().unwrap_or_default(),
        );
        match pinned {
            Some(&(_, cid, n, outcome, exit, trap)) if (cid, n, outcome, exit, trap) == actual => {}
            Some(p) => differences.push(format!("{}: pinned {p:?}, now {actual:?}", job.name)),
            None => differences.push(format!("{}: not pinned", job.name)),
        }
    }
    let table = lines.join("\n");
    assert_eq!(
        protocols.into_iter().collect::<Vec<_>>(),
        vec![PINNED_PROTOCOL.to_string()],
        "the receipts name another protocol than the pins: renew the pins for it:\n{table}"
    );
    assert!(
        differences.is_empty(),
        "receipts of the pinned corpus changed under {PINNED_PROTOCOL}:\n{}\nA change that \
         changes a result needs a new protocol: bump PROTOCOL in runtime/src/engine.rs (and \
         say what changed in the README), then pin these here:\n{table}",
        differences.join("\n")
    );
}

/// A checkpointed job's snapshots, pinned: a snapshot holds the frames the unwind pass
/// saves (every local of every instrumented function on the stack), so a change of any
/// pass's emitted code can change them without changing any other part of a receipt, and
/// a verifier of one build would find an honest trace of another not reproduced. Such a
/// change must come with a new unwind pass version (a snapshot names it, and a verifier
/// leaves the verdict open on another's) or a new protocol. The job is the README's.
#[test]
fn snapshots_are_pinned_with_the_unwind_pass_version() {
    assert_eq!(
        detwasm_runtime::passes::unwind::PASS_VERSION,
        "detwasm-unwind-5",
        "a new unwind pass version: renew the pins below"
    );
    let t = tempfile::tempdir().unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .arg("run")
        .arg(cli_support::root().join("fixtures/probes/probe.wasm"))
        .args([
            "--checkpoints",
            "cp",
            "--checkpoint-every",
            "50000000",
            "--json",
        ])
        .args(["-o", "results", "--", "float", "200000"])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        r["trace"]["snapshots"],
        serde_json::json!([
            "Qmbz1BcKM7MWujJar3zQqCpJ5bYRPwqGoG9uG1mwt1D1dd",
            "QmSSrg8dx56qmDBPyRGnudT3DE8NgKYVJXxQoMvsUYS8yb",
            "QmRR8ymkYjBhccz4YVStbZFpY9uz3xfkqeNcArDanu2aPV",
            "QmdZyE3upsUSvTn8cp8Pkt1vP2YaE2jWF6LSZKDVE7CWdD"
        ]),
        "the snapshots changed under {}: a new unwind pass version (or protocol) is needed",
        detwasm_runtime::passes::unwind::PASS_VERSION
    );
}
