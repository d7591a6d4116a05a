//! Checkpoints leave every receipt as it was: jobs of the example modules, the probes,
//! CPython and boolector, run by a runtime that unwinds the guest's whole stack and
//! rewinds it at every refuel, give the same results CID, instruction count, exit and
//! trap as runs that never stop.

use std::path::{Path, PathBuf};

use detwasm_runtime::{Destination, EngineOptions, Job, Receipt, Runtime};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runtime() -> Runtime {
    Runtime::new(EngineOptions {
        cache_dir: None,
        parallel_compilation: true,
    })
    .unwrap()
}

/// What a verifier compares.
fn outcome(r: &Receipt) -> (String, u64, i32, String, Option<String>) {
    (
        r.cid.clone(),
        r.instructions,
        r.exit_code,
        r.outcome.clone(),
        r.trap.clone(),
    )
}

/// Runs `job` three ways (plain with the usual fuel slice, plain with `slice`, and with
/// a checkpoint at every refuel of `slice`), checks they agree and returns the
/// checkpoints taken.
fn agree(name: &str, job: &Job, slice: u64) -> u64 {
    let t = tempfile::tempdir().unwrap();
    let usual = runtime();
    let plain = runtime().with_fuel_slice(slice);
    let checked = runtime().with_fuel_slice(slice).with_checkpoints(1);
    let run = |rt: &Runtime, d: &str| {
        rt.run(job, &Destination::At(t.path().join(d)))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let a = run(&plain, "plain");
    let b = run(&checked, "checked");
    assert_eq!(outcome(&a), outcome(&b), "{name}");
    assert_eq!(a.job_id, b.job_id, "{name}");
    // A run that returns or exits counts the same whatever the slice.
    if a.outcome == "exited" {
        let u = run(&usual, "usual");
        assert_eq!(outcome(&u), outcome(&a), "{name}");
    }
    let n = checked.checkpoints_taken();
    assert!(n > 0, "{name}: no checkpoint taken");
    eprintln!("{name}: {} instructions, {n} checkpoints", a.instructions);
    n
}

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn example_modules_and_probes_give_the_same_receipts_with_checkpoints() {
    let samples = root().join("modules/wordstats/samples");
    let digits = root().join("modules/digits/samples");
    let jobs = [
        (
            "cowsay",
            Job::new(wasm("fixtures/modules/cowsay.wasm")).push_arg("moo"),
            2_000,
        ),
        (
            "artgen",
            Job::new(wasm("fixtures/modules/artgen.wasm"))
                .push_arg("--seed=7")
                .push_arg("--width=64")
                .push_arg("--height=48"),
            50_000,
        ),
        (
            "wordstats",
            Job::new(wasm("fixtures/modules/wordstats.wasm"))
                .push_input(&samples, "/inputs")
                .push_arg("--top")
                .push_arg("5")
                .push_arg("/inputs"),
            20_000,
        ),
        (
            "digits",
            Job::new(wasm("fixtures/modules/digits.wasm"))
                .push_input(&digits, "/inputs")
                .push_arg("/inputs"),
            200_000,
        ),
        (
            "probe report",
            Job::new(wasm("fixtures/probes/probe.wasm"))
                .push_input(&samples, "/inputs")
                .push_arg("report")
                .push_env("FOO", "bar")
                .with_stdin(b"to stdin\n".to_vec()),
            5_000,
        ),
    ];
    for (name, job, slice) in jobs {
        agree(name, &job, slice);
    }
    // Probes that trap (deep recursion: its frames fill the unwind memory), compute
    // with NaNs and relaxed SIMD, and grow memory.
    for probe in [
        "stack.wat",
        "nan.wat",
        "nans.wat",
        "relaxed.wat",
        "grow.wat",
    ] {
        let job = Job::new(wasm(&format!("fixtures/probes/{probe}")));
        agree(probe, &job, 3_000);
    }
}

/// CPython 3.12 running a script that imports modules, formats floats and raises and
/// catches exceptions, its interpreter loop unwound and rewound thousands of times.
#[test]
fn cpython_gives_the_same_receipt_with_checkpoints() {
    let python = root().join("target/workloads/python-3.12.0.wasm");
    let Ok(bytes) = std::fs::read(&python) else {
        panic!(
            "{} is missing: run scripts/setup.sh (or scripts/fetch-workloads.sh)",
            python.display()
        );
    };
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("script.py"),
        "import json, math\n\
         def f(n):\n    return 1 if n < 2 else n * f(n - 1)\n\
         xs = [math.sin(i) / (i + 1) for i in range(2000)]\n\
         try:\n    {}['missing']\nexcept KeyError as e:\n    print('caught', e)\n\
         print(json.dumps({'sum': sum(xs), 'f': f(200) % 1000003}))\n",
    )
    .unwrap();
    let job = Job::new(bytes)
        .push_input(t.path(), "/inputs")
        .push_arg("/inputs/script.py");
    assert!(agree("cpython", &job, 1_000_000) > 50);
}

/// What the unwind pass adds to a module (its memory, and the table it forwards tail
/// calls through) is not charged to the job (found by review): a job that grows its
/// memory to the limit, and one with 99 memories (one less than the most a module may
/// have: the pass adds the hundredth), end the
/// same way with checkpoints as without.
#[test]
fn what_the_pass_adds_is_not_charged_to_the_job() {
    let grow = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 0)
        (func $spin (param i32) (result i32)
          loop $l local.get 0 i32.const 1 i32.sub local.tee 0 br_if $l end
          local.get 0)
        (func $tail (param i32) (result i32) local.get 0 return_call $spin)
        (func (export "_start") (local $n i32)
          i32.const 5000 call $tail drop
          block $done
            loop $l
              i32.const 1 memory.grow i32.const -1 i32.eq br_if $done
              local.get $n i32.const 1 i32.add local.set $n
              br $l
            end
          end
          local.get $n call $exit))"#;
    let mut job = Job::new(grow.as_bytes().to_vec());
    job.limits.memory = 4 * 65536;
    agree("memory grown to the limit", &job, 1_000);
    let memories = format!(
        r#"(module
        (memory (export "memory") 1)
        {}
        (func $spin (param i32) (result i32)
          loop $l local.get 0 i32.const 1 i32.sub local.tee 0 br_if $l end
          local.get 0)
        (func (export "_start") i32.const 5000 call $spin drop))"#,
        "(memory 0)\n".repeat(98)
    );
    agree("99 memories", &Job::new(memories.into_bytes()), 1_000);
}

/// Runs `job` saving a snapshot at each checkpoint (every `every` instructions, fuel
/// handed out `slice` at a time), then resumes it from each snapshot in a fresh runtime:
/// every resumed run ends with the uninterrupted run's receipt, its trace included (the
/// snapshots after the one resumed are made again, CID for CID), and each snapshot's
/// folder hashes to the CID the trace names. Returns the snapshots taken.
fn resumes_everywhere(name: &str, job: &Job, slice: u64, every: u64) -> usize {
    use detwasm_runtime::checkpoint::Snapshot;
    use detwasm_runtime::deliver::Durability;
    use detwasm_runtime::run::Checkpointing;
    let t = tempfile::tempdir().unwrap();
    // One module cache for the run and its resumes: each resume is a fresh runtime (a
    // process of its own would be), and compiling once is enough.
    let cache = t.path().join("cache");
    let rt = || {
        Runtime::new(EngineOptions {
            cache_dir: Some(cache.clone()),
            parallel_compilation: true,
        })
        .unwrap()
        .with_fuel_slice(slice)
        .with_checkpoints(every)
    };
    let saved = t.path().join("checkpoints");
    let full = rt()
        .run_staged_with(
            job,
            &Destination::At(t.path().join("full")),
            &Checkpointing {
                save: Some(&saved),
                resume: None,
                only_last: false,
                on_saved: None,
            },
        )
        .and_then(|s| s.publish(Durability::PerFile))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let plain = runtime()
        .with_fuel_slice(slice)
        .run(job, &Destination::At(t.path().join("plain")))
        .unwrap();
    assert_eq!(outcome(&plain), outcome(&full), "{name}");
    assert!(plain.trace.is_none());
    let trace = full.trace.clone().expect("a trace").snapshots;
    assert!(!trace.is_empty(), "{name}: no snapshot");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), trace.len(), "{name}");
    for (i, entry) in entries.iter().enumerate() {
        let cid = detwasm_runtime::results::cid_of_dir(entry, full.profile, true).unwrap();
        assert_eq!(cid, trace[i], "{name}: snapshot {}", i + 1);
        let snapshot = Snapshot::open(entry).unwrap();
        assert_eq!(snapshot.state.index, i as u64 + 1);
        let resumed = rt()
            .run_staged_with(
                job,
                &Destination::At(t.path().join(format!("resumed{i}"))),
                &Checkpointing {
                    save: Some(&t.path().join(format!("checkpoints{i}"))),
                    resume: Some(&snapshot),
                    only_last: false,
                    on_saved: None,
                },
            )
            .and_then(|s| s.publish(Durability::PerFile))
            .unwrap_or_else(|e| panic!("{name}: resuming snapshot {}: {e}", i + 1));
        assert_eq!(outcome(&resumed), outcome(&full), "{name}: from {}", i + 1);
        assert_eq!(resumed.trace, full.trace, "{name}: from {}", i + 1);
        assert_eq!(resumed.job_id, full.job_id);
    }
    eprintln!("{name}: {} snapshots, each resumed", trace.len());
    trace.len()
}

#[test]
fn jobs_resumed_from_any_snapshot_end_as_the_uninterrupted_run() {
    let samples = root().join("modules/wordstats/samples");
    let writable = tempfile::tempdir().unwrap();
    std::fs::write(writable.path().join("seed.txt"), "start\n").unwrap();
    let jobs = [
        (
            "probe report (inputs, env, stdin, an output file)",
            Job::new(wasm("fixtures/probes/probe.wasm"))
                .push_input(&samples, "/inputs")
                .push_arg("report")
                .push_env("FOO", "bar")
                .with_stdin(b"to stdin\n".to_vec()),
            5_000,
            40_000,
        ),
        (
            "probe write (a file written across checkpoints)",
            Job::new(wasm("fixtures/probes/probe.wasm"))
                .push_arg("write")
                .push_arg("300000"),
            2_000,
            6_000,
        ),
        (
            "wordstats (a writable folder)",
            Job::new(wasm("fixtures/modules/wordstats.wasm"))
                .push_input(&samples, "/inputs")
                .push_dir(writable.path(), "/rw")
                .push_arg("--top")
                .push_arg("5")
                .push_arg("/inputs"),
            20_000,
            100_000,
        ),
        (
            "artgen (random stream)",
            Job::new(wasm("fixtures/modules/artgen.wasm"))
                .push_arg("--seed=7")
                .push_arg("--width=64")
                .push_arg("--height=48"),
            50_000,
            4_000_000,
        ),
        (
            "grow.wat (memory grown between checkpoints, up to a limit of 4 MiB)",
            Job::new(wasm("fixtures/probes/grow.wat")).with_limits(detwasm_runtime::Limits {
                memory: 4 << 20,
                ..Default::default()
            }),
            100,
            100,
        ),
    ];
    for (name, job, slice, every) in jobs {
        resumes_everywhere(name, &job, slice, every);
    }
}
