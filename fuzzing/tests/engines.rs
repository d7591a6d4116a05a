//! Whole jobs under wasmi, an interpreter nobody here wrote, through the same passes and
//! the same WASI host ([`detwasm_fuzzing::interpreter::job`]), against the runtime: the
//! same results CID, instruction count, exit code and trap for the probe (every channel
//! of the determinism contract), the NaN, relaxed SIMD, stack and memory fixtures, the
//! example modules with inputs, running out of fuel, and CPython. What a job computes is
//! detwasm's protocol, not the engine (issue 20).

use std::path::{Path, PathBuf};

use detwasm_fuzzing::interpreter::job::{run, Ran};
use detwasm_runtime::{Destination, EngineOptions, Job, Limits, Output, Runtime};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn module(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn runtime() -> Runtime {
    Runtime::new(EngineOptions {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("engines-cache")),
        parallel_compilation: true,
    })
    .unwrap()
}

/// The runtime's receipt and wasmi's run of `job`, which must agree.
fn agree(runtime: &Runtime, name: &str, job: &Job) -> Ran {
    let t = tempfile::tempdir().unwrap();
    let r = runtime
        .run(job, &Destination::At(t.path().join("wasmtime")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let ours = Ran {
        cid: r.cid.clone(),
        instructions: r.instructions,
        exit_code: r.exit_code,
        outcome: r.outcome.clone(),
        trap: r.trap.clone(),
    };
    let theirs = run(job, &t.path().join("wasmi")).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        ours, theirs,
        "{name}: wasmtime (left) and wasmi (right) disagree"
    );
    theirs
}

/// The output volume the example modules' templates name.
fn outputs() -> Vec<Output> {
    vec![Output {
        name: "outputs".into(),
        guest: "/outputs".into(),
    }]
}

#[test]
fn jobs_give_the_same_results_under_wasmi() {
    let runtime = runtime();
    let probe = module("fixtures/probes/probe.wasm");
    let with_args = |bytes: &[u8], args: &[&str]| {
        args.iter()
            .fold(Job::new(bytes.to_vec()), |j, a| j.push_arg(*a))
    };
    let mut ends = Vec::new();
    let jobs: Vec<(&str, Job)> = vec![
        ("probe report", with_args(&probe, &["report"])),
        ("probe int", with_args(&probe, &["int", "20000"])),
        ("probe float", with_args(&probe, &["float", "2000"])),
        ("nan", Job::new(module("fixtures/probes/nan.wat"))),
        ("nans", Job::new(module("fixtures/probes/nans.wat"))),
        ("relaxed", Job::new(module("fixtures/probes/relaxed.wat"))),
        ("stack", Job::new(module("fixtures/probes/stack.wat"))),
        (
            "stack v128 frames",
            Job::new(module("fixtures/probes/stack_frames.wat")).with_entry("v128"),
        ),
        (
            "memory growth",
            Job::new(module("fixtures/probes/grow.wat")).with_limits(Limits {
                memory: 8 << 20,
                ..Limits::default()
            }),
        ),
        (
            "out of fuel",
            with_args(&probe, &["int", "100000000"]).with_limits(Limits {
                fuel: 123_457,
                ..Limits::default()
            }),
        ),
        (
            "cowsay",
            with_args(&module("modules/cowsay/cowsay.wasm"), &["moo"]).with_outputs(outputs()),
        ),
        (
            "artgen",
            with_args(
                &module("modules/artgen/artgen.wasm"),
                &["--seed=7", "--width=96", "--height=64", "a quiet lake"],
            )
            .with_outputs(outputs()),
        ),
        (
            "wordstats",
            with_args(
                &module("fixtures/modules/wordstats.wasm"),
                &["--top", "5", "/inputs"],
            )
            .push_input(root().join("modules/wordstats/samples"), "/inputs"),
        ),
        (
            "digits",
            with_args(&module("fixtures/modules/digits.wasm"), &["/inputs"])
                .push_input(root().join("modules/digits/samples"), "/inputs"),
        ),
    ];
    for (name, job) in &jobs {
        let ran = agree(&runtime, name, job);
        ends.push((name.to_string(), ran.outcome, ran.instructions));
    }
    eprintln!("{ends:#?}");
    // What each job is meant to reach (agreeing on a failure would prove nothing).
    let outcome = |n: &str| ends.iter().find(|e| e.0 == n).unwrap().1.as_str();
    assert_eq!(outcome("stack"), "trap");
    assert_eq!(outcome("stack v128 frames"), "trap");
    assert_eq!(outcome("out of fuel"), "out_of_fuel");
    for (name, o, _) in &ends {
        if !name.starts_with("stack") && name != "out of fuel" {
            assert_eq!(o, "exited", "{name}");
        }
    }
}

/// CPython 3.12 (26 MB, fetched by the set-up) running a float script under wasmi: the
/// interpreter interpreted, with its startup's hundreds of WASI calls.
#[test]
fn cpython_gives_the_same_results_under_wasmi() {
    let python = root().join("target/workloads/python-3.12.0.wasm");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (or scripts/fetch-workloads.sh)",
        python.display()
    );
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("s.py"),
        "import math\ns = 0.0\nfor i in range(1, 20000):\n    s += math.sin(i) / i\nprint(round(s, 9), {'a': 1.5, 'b': float('nan')})\n",
    )
    .unwrap();
    let job = Job::new(std::fs::read(&python).unwrap())
        .push_arg("/w/s.py")
        .push_input(t.path(), "/w");
    let ran = agree(&runtime(), "cpython", &job);
    eprintln!("cpython: {ran:?}");
    assert_eq!((ran.outcome.as_str(), ran.exit_code), ("exited", 0));
    assert!(ran.instructions > 100_000_000, "{ran:?}");
}
