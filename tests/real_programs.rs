//! Real WASI programs nobody here wrote, fetched by `scripts/fetch-workloads.sh` (run by
//! the set-up; never committed): detwasm runs them, fuzzes them for non-determinism, and
//! verifies their receipts.

mod cli_support;
use cli_support::*;

use std::path::{Path, PathBuf};

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

/// `detwasm run MODULE --input in -o results --receipt receipt.json -- ARG` in `dir`.
fn run_with_receipt(dir: &Path, module: &Path, arg: &str) -> std::process::Output {
    detwasm()
        .current_dir(dir)
        .arg("run")
        .arg(module)
        .args([
            "--input",
            "in",
            "-o",
            "results",
            "--receipt",
            "receipt.json",
        ])
        .args(["--", arg])
        .output()
        .unwrap()
}

/// `detwasm verify receipt.json --results results` in `dir` says the result is
/// reproduced.
fn assert_verifies(dir: &Path) {
    let verified = detwasm()
        .current_dir(dir)
        .args(["verify", "receipt.json", "--results", "results"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
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

    let run = run_with_receipt(t.path(), &solver, "/inputs/problem.smt2");
    assert_eq!(
        run.status.code(),
        Some(1),
        "a non-zero exit (10, sat) is reported as 1"
    );
    let stdout = std::fs::read_to_string(t.path().join("results/stdout")).unwrap();
    assert!(stdout.starts_with("sat\n"), "{stdout}");
    assert_verifies(t.path());
}

/// A Python data script: summary statistics of a CSV, written to an output volume, and a
/// line that prints a set of strings (whose order follows Python's string hashes).
const STATS_PY: &str = r#"import csv, json, statistics
rows = list(csv.DictReader(open("/inputs/data.csv")))
by = {}
for r in rows:
    by.setdefault(r["city"], []).append(float(r["temp"]))
summary = {c: {"n": len(v), "mean": statistics.mean(v), "stdev": statistics.pstdev(v)}
           for c, v in sorted(by.items())}
with open("/outputs/summary.json", "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
print("cities:", " ".join(sorted(by)))
print("as a set:", " ".join({c for c in by}))
"#;

/// 2,000 CSV rows from a fixed LCG, so the data is the same on every machine.
fn temperatures_csv() -> String {
    let cities = ["Oslo", "Lima", "Pune", "Kyiv", "Baku", "Suva"];
    let mut s = String::from("city,temp\n");
    let mut x: u64 = 42;
    for _ in 0..2000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let city = cities[(x >> 33) as usize % cities.len()];
        let temp = ((x >> 11) % 6000) as f64 / 100.0 - 20.0;
        s.push_str(&format!("{city},{temp:.2}\n"));
    }
    s
}

/// CPython 3.12 (a 26 MB interpreter, standard library inside) running a data script:
/// the whole determinism campaign passes; `--vary seed` finds what a verifier would
/// otherwise find later, that the printed set's order depends on the seed (Python seeds
/// its string hashes from random_get), and pinning `PYTHONHASHSEED` removes that; the
/// receipt verifies. The compiled module is reused across runs (a warm run takes well
/// under a second), so the campaign's time is mostly its three deliberate recompilations.
#[test]
fn python_interpreter_is_fuzzable_and_its_seed_dependence_is_found() {
    let python = workload("python-3.12.0.wasm");
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("in")).unwrap();
    std::fs::write(t.path().join("in/stats.py"), STATS_PY).unwrap();
    std::fs::write(t.path().join("in/data.csv"), temperatures_csv()).unwrap();
    let fuzz = |extra: &[&str]| -> serde_json::Value {
        let out = detwasm()
            .current_dir(t.path())
            .arg("fuzz")
            .arg(&python)
            .args(["--input", "in", "--json"])
            .args(extra)
            .args(["--", "/inputs/stats.py"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let r = fuzz(&["--vary", "seed,epoch"]);
    assert_eq!(r["runs"], 9);
    assert_eq!(r["divergent"], false, "{r}");
    assert_eq!(r["baseline"]["exit_code"], 0, "{r}");
    assert_eq!(r["sensitive_to"], serde_json::json!(["seed"]), "{r}");
    let seed = &r["sensitivity"][0];
    assert_eq!(seed["param"], "seed");
    assert_eq!(
        seed["files"],
        serde_json::json!(["stdout"]),
        "only the set's order changes, not the statistics: {r}"
    );

    let pinned = fuzz(&["--runs", "1", "--vary", "seed", "-e", "PYTHONHASHSEED=0"]);
    assert_eq!(pinned["sensitive_to"], serde_json::json!([]), "{pinned}");

    let run = run_with_receipt(t.path(), &python, "/inputs/stats.py");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.path().join("results/outputs/summary.json")).unwrap(),
    )
    .unwrap();
    let rows: u64 = summary
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["n"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 2000, "{summary}");
    assert_verifies(t.path());
}

/// The shape scan (`passes::shape`) refuses modules whose shape predicts unbounded
/// compile work; its limits must leave every real module alone, with a margin. This
/// prints what each module reaches (the numbers `passes::shape::LIMITS` documents) and
/// checks it is at most a quarter of each limit (locals: at most the limit, which is
/// wasmparser's own).
#[test]
fn large_real_modules_pass_the_shape_scan() {
    use detwasm_runtime::passes::shape::{check, LIMITS, REWRITTEN_LIMITS};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut modules: Vec<PathBuf> = ["python-3.12.0.wasm", "boolector.wasm"]
        .iter()
        .map(|m| root.join("target/workloads").join(m))
        .collect();
    for dir in ["fixtures/modules", "fixtures/probes"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        found.sort();
        modules.extend(found);
    }
    for path in modules {
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "SKIPPED {}: missing, run scripts/setup.sh (or scripts/fetch-workloads.sh)",
                path.display()
            );
            continue;
        };
        let start = std::time::Instant::now();
        let shape = check(&bytes, &LIMITS).unwrap_or_else(|r| panic!("{}: {r}", path.display()));
        eprintln!(
            "{}: scanned in {:.2} s: {shape:?}",
            path.file_name().unwrap().to_string_lossy(),
            start.elapsed().as_secs_f64()
        );
        let margin = [
            (
                shape.function_bytes.0,
                LIMITS.function_bytes,
                "function bytes",
            ),
            (shape.depth.0, LIMITS.depth, "nesting depth"),
            (
                shape.values.0,
                LIMITS.function_values,
                "values per function",
            ),
            (shape.functions, LIMITS.functions, "functions"),
            (shape.code_bytes, LIMITS.code_bytes, "code bytes"),
            (
                shape.module_values,
                LIMITS.module_values,
                "values per module",
            ),
            (shape.ssa.0, LIMITS.ssa, "variables x blocks per function"),
            (
                shape.module_ssa,
                LIMITS.module_ssa,
                "variables x blocks per module",
            ),
            (shape.types, LIMITS.types, "types"),
            (shape.type_bytes, LIMITS.type_bytes, "type bytes"),
            (
                shape.signature,
                LIMITS.signature_values,
                "parameters and results per type",
            ),
            (
                shape.module_signatures,
                LIMITS.module_signatures,
                "parameters and results per module",
            ),
            (
                shape.memory_image,
                LIMITS.memory_image,
                "memory image bytes",
            ),
            (
                shape.element_segments,
                LIMITS.element_segments,
                "element segments",
            ),
            (shape.element_items, LIMITS.element_items, "element items"),
            (
                shape.const_operators,
                LIMITS.const_operators,
                "constant expression operators",
            ),
        ];
        for (value, limit, what) in margin {
            assert!(
                value <= limit / 4,
                "{}: {what} {value} is within 4x of the limit {limit}",
                path.display()
            );
        }
        assert!(shape.locals.0 <= LIMITS.locals);
        // Cranelift compiles the module the passes rewrote, which `engine::compile` scans
        // against the same limits: it must pass too (CPython's grows to 10.9 MB of code,
        // a third of the limit).
        let passes = detwasm_runtime::passes::fuel::meter(&bytes)
            .and_then(|f| detwasm_runtime::passes::relaxed::lower(&f))
            .and_then(|l| detwasm_runtime::passes::nan::canonicalize(&l))
            .and_then(|c| detwasm_runtime::passes::stack::meter(&c));
        if let Ok(rewritten) = passes {
            let shape = check(&rewritten, &REWRITTEN_LIMITS)
                .unwrap_or_else(|r| panic!("{} rewritten: {r}", path.display()));
            eprintln!("  rewritten: {shape:?}");
        }
    }
}
