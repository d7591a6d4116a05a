//! Real WASI programs nobody here wrote, fetched by `scripts/fetch-workloads.sh` (run by
//! the set-up; never committed): detwasm runs them, fuzzes them for non-determinism, and
//! verifies their receipts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workload(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/workloads")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh (or scripts/fetch-workloads.sh)",
        p.display()
    );
    p
}

fn detwasm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_detwasm"));
    c.env(
        "DETWASM_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("detwasm-real-cache"),
    );
    c
}

/// A bit-vector problem with one solution family: boolector has to search.
const SMT: &str = "(set-logic QF_BV)
(set-option :produce-models true)
(declare-fun x () (_ BitVec 32))
(declare-fun y () (_ BitVec 32))
(assert (= (bvmul x y) #x0000beef))
(assert (bvugt x #x00000001))
(assert (bvugt y #x00000001))
(check-sat)
(get-value (x y))
";

/// boolector (an SMT solver, C and C++ built by YoWASP) solving an SMT-LIB script: every
/// host perturbation of `detwasm fuzz` gives the same answer, CID and instruction count;
/// the seed and the clock do not matter to it; and `detwasm verify` reproduces its
/// receipt.
#[test]
fn boolector_is_deterministic_under_fuzzing_and_verifies() {
    let solver = workload("boolector.wasm");
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("in")).unwrap();
    std::fs::write(t.path().join("in/problem.smt2"), SMT).unwrap();
    let out = detwasm()
        .current_dir(t.path())
        .arg("fuzz")
        .arg(&solver)
        .args(["--input", "in", "--vary", "seed,epoch", "--json", "--"])
        .arg("/inputs/problem.smt2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["runs"], 9);
    assert_eq!(r["divergent"], false, "{r}");
    assert_eq!(r["sensitive_to"], serde_json::json!([]), "{r}");
    assert_eq!(
        r["baseline"]["exit_code"], 10,
        "boolector answers sat with 10: {r}"
    );

    let run = detwasm()
        .current_dir(t.path())
        .arg("run")
        .arg(&solver)
        .args([
            "--input",
            "in",
            "-o",
            "results",
            "--receipt",
            "receipt.json",
            "--",
        ])
        .arg("/inputs/problem.smt2")
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "a non-zero exit (10, sat) is reported as 1"
    );
    let stdout = std::fs::read_to_string(t.path().join("results/stdout")).unwrap();
    assert!(stdout.starts_with("sat\n"), "{stdout}");
    let verified = detwasm()
        .current_dir(t.path())
        .args(["verify", "receipt.json", "--results", "results"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}
