//! Budgets end to end: a spec carries its fuel (a Lilypad annotation, a Bacalhau v1
//! `Meta` key), a spec's timeout gives its fuel when it states none, the receipt records
//! both, and flags combine with a spec the same way for every limit (the tighter wins,
//! with a note when a flag or default lowers what the spec asks).

mod cli_support;

use std::path::Path;

use cli_support::{detwasm, fixture, root};

/// A module folder: cowsay's module and template, the template's `Resources`,
/// `Timeout` and annotations replaced as given.
fn module(dir: &Path, memory: &str, timeout: &str, annotations: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixture("modules/cowsay.wasm"), dir.join("cowsay.wasm")).unwrap();
    let tmpl =
        std::fs::read_to_string(root().join("modules/cowsay/lilypad_module.json.tmpl")).unwrap();
    let tmpl = tmpl
        .replace(r#""Memory": "64Mb""#, &format!(r#""Memory": "{memory}""#))
        .replace(
            r#""Timeout": 600,"#,
            &format!(r#""Timeout": {timeout}, "Annotations": {annotations},"#),
        );
    assert!(tmpl.contains(annotations), "the template changed: {tmpl}");
    std::fs::write(dir.join("lilypad_module.json.tmpl"), tmpl).unwrap();
}

/// `detwasm run ARGS --json` in `cwd`: the receipt and stderr (exit 0, or 1 for a run
/// that ended out of fuel).
fn run(cwd: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let out = detwasm()
        .current_dir(cwd)
        .args(["run", "--json"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&err);
    (r, err)
}

fn limits(r: &serde_json::Value) -> (u64, u64, Option<f64>) {
    let l = &r["job"]["limits"];
    (
        l["fuel"].as_u64().unwrap(),
        l["memory"].as_u64().unwrap(),
        l["timeout"].as_f64(),
    )
}

#[test]
fn a_specs_timeout_gives_its_fuel_and_its_own_fuel_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    module(&m, "64Mb", "600", "[]");
    let (r, err) = run(t.path(), &["./m", "-o", "a"]);
    assert_eq!(
        limits(&r),
        (600_000_000_000, 64 << 20, Some(600.0)),
        "{err}"
    );
    assert_eq!(r["outcome"], "exited");
    assert!(!err.contains("note:"), "{err}");

    // A spec's own fuel: the run ends out of fuel, the same way everywhere.
    let f = t.path().join("f");
    module(&f, "64Mb", "600", r#"["team=x", "detwasm.fuel=5000"]"#);
    let (r, _) = run(t.path(), &["./f", "-o", "b"]);
    assert_eq!(limits(&r).0, 5000);
    assert_eq!(r["outcome"], "out_of_fuel");
    assert_eq!(r["instructions"], 5000);
    assert_eq!(r["verifiable"], true);

    // A bare module: the budget of its --timeout, else of the default hour.
    let wasm = fixture("modules/cowsay.wasm");
    let wasm = wasm.to_str().unwrap();
    let (r, _) = run(t.path(), &[wasm, "-o", "c"]);
    assert_eq!(limits(&r), (3_600_000_000_000, 1 << 30, None));
    let (r, _) = run(t.path(), &[wasm, "-o", "d", "--timeout", "2.5"]);
    assert_eq!(limits(&r), (2_500_000_000, 1 << 30, Some(2.5)));
}

#[test]
fn flags_lower_what_a_spec_asks_for_and_never_raise_it() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    module(&m, "64Mb", "600", r#"["detwasm.fuel=6e11"]"#);
    // Lower: every limit the same way, each with a note.
    let (r, err) = run(
        t.path(),
        &[
            "./m",
            "-o",
            "low",
            "--memory",
            "32MiB",
            "--timeout",
            "60",
            "--fuel",
            "1000000000",
        ],
    );
    assert_eq!(limits(&r), (1_000_000_000, 32 << 20, Some(60.0)));
    for want in [
        "note: the spec asks for memory of 64 MiB; --memory lowers it to 32 MiB",
        "note: the spec asks for a timeout of 600 s; --timeout lowers it to 60 s",
        "note: the spec asks for fuel of 600000000000; --fuel lowers it to 1000000000",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // Higher: the spec's values stand (a flag is a ceiling), silently.
    let (r, err) = run(
        t.path(),
        &[
            "./m",
            "-o",
            "high",
            "--memory",
            "2GiB",
            "--timeout",
            "6000",
            "--fuel",
            "1000000000000000",
        ],
    );
    assert_eq!(limits(&r), (600_000_000_000, 64 << 20, Some(600.0)));
    assert!(!err.contains("note:"), "{err}");
    // The defaults are ceilings too: a spec asking for more than them gets them, and
    // is told which flag allows more.
    let g = t.path().join("g");
    module(&g, "2Gb", "7200", "[]");
    let (r, err) = run(t.path(), &["./g", "-o", "greedy"]);
    assert_eq!(limits(&r), (3_600_000_000_000, 1 << 30, Some(3600.0)));
    assert!(
        err.contains("the spec asks for memory of 2048 MiB; the job gets 1024 MiB, the default most (give --memory to allow more)"),
        "{err}"
    );
    assert!(err.contains("a timeout of 7200 s"), "{err}");
}

#[test]
fn a_bacalhau_job_files_meta_carries_its_fuel() {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("modules/cowsay.wasm"), t.path().join("m.wasm")).unwrap();
    let job = "Name: t\nType: batch\nMeta:\n  detwasm.fuel: \"5e3\"\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params:\n        EntryModule: /app/m.wasm\n        Entrypoint: _start\n    InputSources:\n      - Target: /app/m.wasm\n        Source:\n          Type: local\n          Params:\n            SourcePath: m.wasm\n    Network:\n      Type: None\n    Timeouts:\n      ExecutionTimeout: 90\n";
    std::fs::write(t.path().join("job.yaml"), job).unwrap();
    let (r, _) = run(t.path(), &["job.yaml", "-o", "a"]);
    assert_eq!(limits(&r), (5_000, 1 << 30, Some(90.0)));
    assert_eq!(r["outcome"], "out_of_fuel");
    std::fs::write(
        t.path().join("job.yaml"),
        job.replace("Meta:\n  detwasm.fuel: \"5e3\"\n", ""),
    )
    .unwrap();
    let (r, _) = run(t.path(), &["job.yaml", "-o", "b"]);
    assert_eq!(limits(&r).0, 90_000_000_000);
    assert_eq!(r["outcome"], "exited");
}
