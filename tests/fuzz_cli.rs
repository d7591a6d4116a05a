//! `detwasm fuzz` end to end, as a module author runs it before publishing: every
//! perturbation (including another detwasm process) agrees on a deterministic module, and
//! `--vary` says what the output depends on. That a campaign catches a leak is proven in
//! `detwasm_ops::campaign`'s tests, with a test-only leaked host clock.

mod cli_support;
use cli_support::*;

use std::path::Path;

fn json(args: &[&str], cwd: &Path) -> serde_json::Value {
    let out = detwasm().current_dir(cwd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_probe_agrees_under_every_perturbation_and_depends_on_what_it_reads() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("in")).unwrap();
    std::fs::write(t.path().join("in/x.txt"), "x").unwrap();
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probes/probe.wasm");
    let r = json(
        &[
            "fuzz",
            probe.to_str().unwrap(),
            "--input",
            "in",
            "--vary",
            "seed,epoch,env,args,inputs",
            "--json",
            "--",
            "report",
        ],
        t.path(),
    );
    assert_eq!(r["runs"], 9);
    assert_eq!(r["divergent"], false, "{r}");
    let runs = r["all_runs"].as_array().unwrap();
    assert!(runs[8]["perturbation"]
        .as_str()
        .unwrap()
        .starts_with("another process"));
    assert!(runs.iter().all(|x| x["cid"] == r["baseline"]["cid"]));
    assert_eq!(
        r["sensitive_to"],
        serde_json::json!(["seed", "epoch", "env", "args", "inputs"])
    );
    // The host calls behind the dependences, counted in the baseline run (the probe's
    // `report` reads 32 random bytes in 2 calls, the clocks, and lists its inputs).
    let asked = &r["asked"];
    assert_eq!(
        (
            asked["random_calls"].as_u64(),
            asked["random_bytes"].as_u64()
        ),
        (Some(2), Some(32))
    );
    assert!(asked["wall_clock"].as_u64().unwrap() > 0, "{asked}");
    assert!(asked["dir_listings"].as_u64().unwrap() > 0, "{asked}");
}

/// The text report names the calls behind each dependence, and says even without
/// `--vary` that the module reads the clock and random bytes (so its results depend on
/// the job's epoch and seed), with the `--vary` that would show it.
#[test]
fn the_report_names_the_host_calls_behind_a_dependence() {
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probes/probe.wasm");
    let fuzz = |vary: &[&str]| {
        let out = detwasm()
            .args(["fuzz", probe.to_str().unwrap(), "--runs", "1"])
            .args(vary)
            .args(["--", "report"])
            .output()
            .unwrap();
        ok(&out)
    };
    let text = fuzz(&["--vary", "seed"]);
    assert!(
        text.contains("depends on seed: seed 0 -> 1")
            && text.contains("\n    the module read 32 random bytes (2 calls)\n"),
        "{text}"
    );
    // The first line that changed, as `verify` shows a file that differs.
    assert!(
        text.contains("\n    stdout: line 8: -random.errno=0 random.bytes="),
        "{text}"
    );
    assert!(
        text.contains("(its results may depend on the job's epoch: try --vary epoch)"),
        "{text}"
    );
    let text = fuzz(&[]);
    assert!(
        text.contains("note: the module read the wall clock")
            && text.contains("try --vary seed,epoch)"),
        "{text}"
    );
}

#[test]
fn a_module_folder_that_reads_nothing_but_its_message_depends_on_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let r = json(
        &[
            "fuzz",
            "cowsay",
            "-i",
            "Message=moo",
            "--runs",
            "3",
            "--vary",
            "seed,epoch,env",
            "--json",
        ],
        t.path(),
    );
    assert_eq!(r["runs"], 3);
    assert_eq!(r["divergent"], false);
    assert_eq!(r["sensitive_to"], serde_json::json!([]));
    // The human report says it in words, and exits 0.
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "fuzz",
            "cowsay",
            "-i",
            "Message=moo",
            "--runs",
            "2",
            "--vary",
            "seed",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deterministic: every run gave the same"),
        "{text}"
    );
    assert!(text.contains("does not depend on seed"), "{text}");
}

/// `--checkpoint-every` reaches every run: a seed that changes the output is located
/// (here in the only segment, since the probe ends before its first checkpoint; the
/// campaign's tests locate one among many), in the JSON and in the text.
#[test]
fn checkpoint_every_locates_where_a_varied_parameter_changes_the_run() {
    let t = tempfile::tempdir().unwrap();
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probes/probe.wasm");
    let probe = probe.to_str().unwrap();
    let args = [
        "fuzz",
        probe,
        "--runs",
        "2",
        "--vary",
        "seed",
        "--checkpoint-every",
        "1000000000",
        "--",
        "report",
    ];
    let mut with_json = args.to_vec();
    with_json.insert(1, "--json");
    let r = json(&with_json, t.path());
    let seed = &r["sensitivity"][0];
    assert_eq!(seed["sensitive"], true, "{r:#}");
    assert_eq!(seed["diverged_at"]["segment"], 1, "{r:#}");
    assert_eq!(seed["diverged_at"]["from_instruction"], 0);
    assert!(seed["diverged_at"]["to_instruction"].is_null());
    assert!(r["all_runs"][1].get("diverged_at").is_none(), "{r:#}");

    let out = detwasm().current_dir(t.path()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("depends on seed: seed 0 -> 1")
            && text.contains("first differs in segment 1 (instruction 0 to the end)"),
        "{text}"
    );

    let out = detwasm()
        .current_dir(t.path())
        .args(["fuzz", probe, "--checkpoint-every", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--vary` tries several values of a parameter before it says the output does not depend
/// on it (four seeds, two epochs), and says precisely what a change changed: here the
/// probe reads its arguments (which costs instructions) but its float work writes
/// nothing of them, so appending one changes only the count.
#[test]
fn vary_tries_several_values_and_says_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/probes/probe.wasm");
    let args = [
        "fuzz",
        probe.to_str().unwrap(),
        "--runs",
        "1",
        "--vary",
        "seed,epoch,args",
        "--",
        "float",
        "1000",
    ];
    let out = detwasm().current_dir(t.path()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "does not depend on seed: seed 0 -> 1; seed 0 -> 2; seed 0 -> 3; seed 0 -> 18446744073709551615"
        ) && text.contains("does not depend on epoch: epoch + 365 days; epoch + 1 s"),
        "{text}"
    );
    assert!(
        text.contains("depends on args: argument `detwasm-fuzz-extra` appended (changes only the instructions ")
            && text.contains("; the results are the same)"),
        "{text}"
    );
    let mut with_json = args.to_vec();
    with_json.insert(1, "--json");
    let r = json(&with_json, t.path());
    let by_args = &r["sensitivity"][2];
    assert_eq!(by_args["sensitive"], true);
    let changed = by_args["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{by_args}");
    assert!(changed[0].as_str().unwrap().starts_with("instructions "));
}
