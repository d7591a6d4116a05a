//! End-to-end tests of Lilypad-style modules through the CLI, as a user runs them:
//! `detwasm module render`, `detwasm module check`, and `detwasm run MODULE -i K=V`
//! twice under host perturbation (other working folder, temp folder, cache folder, TZ,
//! locale and unrelated environment), which must give the same results CID.

mod cli_support;
use cli_support::*;

use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn render_cowsay_is_byte_for_byte_the_template_with_the_json_encoded_input() {
    let template =
        fs::read_to_string(root().join("modules/cowsay/lilypad_module.json.tmpl")).unwrap();
    let action = r#"{{if .Message}}{{.Message}}{{else}}"Hello, Lilypad!"{{end}}"#;
    assert!(
        template.contains(action),
        "the cowsay template changed: update this test"
    );

    let out = ok(&detwasm()
        .args(["module", "render", "cowsay", "-i", "Message=moo"])
        .output()
        .unwrap());
    assert_eq!(out, template.replace(action, r#""moo""#));

    // Go's json.Marshal: quotes and backslashes escaped, and <, >, & as \u003c, \u003e, \u0026.
    let out = ok(&detwasm()
        .args([
            "module",
            "render",
            "cowsay",
            "-i",
            r#"Message=say "hi" <b> & \o/"#,
        ])
        .output()
        .unwrap());
    assert_eq!(
        out,
        template.replace(action, r#""say \"hi\" \u003cb\u003e \u0026 \\o/""#)
    );

    // No input: the template's {{else}} default.
    let out = ok(&detwasm()
        .args(["module", "render", "cowsay"])
        .output()
        .unwrap());
    assert_eq!(out, template.replace(action, r#""Hello, Lilypad!""#));
}

#[test]
fn render_uses_subst_and_trimming_as_lilypad_does() {
    let out = ok(&detwasm()
        .args([
            "module",
            "render",
            "artgen",
            "-i",
            "Seed=7",
            "-i",
            "Prompt=a lake at dawn",
        ])
        .output()
        .unwrap());
    assert!(out.contains(r#""--seed=7","#), "{out}");
    assert!(out.contains(r#""--width=768","#), "{out}");
    assert!(out.contains(r#""a lake at dawn""#), "{out}");
    // digits starts with a trimmed comment: the output starts at the JSON.
    let out = ok(&detwasm()
        .args(["module", "render", "digits"])
        .output()
        .unwrap());
    assert!(out.starts_with("{\n"), "{out}");
    // `[{{- with .Images}}...{{- end}}` trims the text inside and before, not after.
    assert!(out.contains("\"Inputs\": [\n      ],"), "{out}");
    let out = ok(&detwasm()
        .args(["module", "render", "digits", "-i", "Images=pics"])
        .output()
        .unwrap());
    assert!(
        out.contains(
            r#""Inputs": [
        {"StorageSource": "localDirectory", "SourcePath": "pics", "Path": "/inputs"}
      ],"#
        ),
        "{out}"
    );
}

#[test]
fn names_tags_module_path_and_remote_references() {
    // A tag must match the module's VERSION.
    ok(&detwasm()
        .args(["module", "render", "cowsay:v0.1.0"])
        .output()
        .unwrap());
    let err = failed(
        &detwasm()
            .args(["module", "render", "cowsay:v9"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("v0.1.0") && err.contains("not the tag"),
        "{err}"
    );
    // A git repository is not fetched: the error says how to clone it.
    let err = failed(
        &detwasm()
            .args([
                "run",
                "github.com/lilypad-tech/lilypad-module-cowsay:v0.0.4",
                "-i",
                "Message=moo",
            ])
            .output()
            .unwrap(),
    );
    assert!(err.contains("clone it first"), "{err}");
    assert!(
        err.contains(
            "git clone --branch v0.0.4 https://github.com/lilypad-tech/lilypad-module-cowsay"
        ),
        "{err}"
    );
    let err = failed(
        &detwasm()
            .args(["module", "render", "no-such-module"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("no-such-module") && err.contains("not found"),
        "{err}"
    );

    // DETWASM_MODULE_PATH: a module folder elsewhere, found by name.
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("moo");
    fs::create_dir_all(&m).unwrap();
    fs::copy(
        root().join("modules/cowsay/lilypad_module.json.tmpl"),
        m.join("lilypad_module.json.tmpl"),
    )
    .unwrap();
    fs::copy(
        root().join("fixtures/modules/cowsay.wasm"),
        m.join("the-cow.wasm"),
    )
    .unwrap();
    let out = ok(&detwasm()
        .env("DETWASM_MODULE_PATH", tmp.path())
        .args(["module", "render", "moo", "-i", "Message=hi"])
        .output()
        .unwrap());
    assert!(out.contains(r#""Parameters": ["hi"]"#), "{out}");
}

fn check(module: &str) -> String {
    let out = detwasm()
        .args(["module", "check", module])
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.trim_end().ends_with("module ok"), "{text}");
    text
}

#[test]
fn module_check_passes_for_every_example_module() {
    for m in ["cowsay", "wordstats", "digits"] {
        let text = check(m);
        assert!(
            text.contains("imports, all from wasi_snapshot_preview1"),
            "{text}"
        );
        assert!(
            text.contains("test run is reproducible: twice Qm"),
            "{text}"
        );
    }
}

#[test]
fn module_check_of_artgen() {
    check("artgen");
}

#[test]
fn module_check_fails_on_a_cid_mismatch_and_on_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("bad");
    fs::create_dir_all(&m).unwrap();
    let template =
        fs::read_to_string(root().join("modules/cowsay/lilypad_module.json.tmpl")).unwrap();
    fs::write(m.join("lilypad_module.json.tmpl"), &template).unwrap();
    // Another module's bytes under the cowsay CID.
    fs::copy(
        root().join("fixtures/modules/digits.wasm"),
        m.join("cowsay.wasm"),
    )
    .unwrap();
    let out = detwasm()
        .args(["module", "check", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("FAIL entry module found and matches its CID: no entry module with CID Qm"),
        "{text}"
    );

    let docker = r#"{"machine":{"gpu":0},"job":{"APIVersion":"V1beta1","Spec":{"Engine":"Docker","Docker":{"Image":"grycap/cowsay:latest","Entrypoint":["/usr/games/cowsay",{{.Message}}]}}}}"#;
    fs::write(m.join("lilypad_module.json.tmpl"), docker).unwrap();
    let err = failed(
        &detwasm()
            .args(["run", m.to_str().unwrap(), "-i", "Message=moo"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("Docker job") && err.contains("only WebAssembly"),
        "{err}"
    );
    let network = template.replace(r#""Type": "None""#, r#""Type": "Full""#);
    fs::write(m.join("lilypad_module.json.tmpl"), network).unwrap();
    let err = failed(
        &detwasm()
            .args(["run", m.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("Network.Type = \"Full\"") && err.contains("no network"),
        "{err}"
    );
}

/// Runs `detwasm run ARGS... -o DIR` from `cwd` with a perturbed environment, returns
/// (CID, results dir).
fn run_perturbed(args: &[&str], variant: usize, scratch: &Path) -> (String, PathBuf) {
    let cwd = scratch.join(format!("cwd-{variant}/deeper/still"));
    let tmp = scratch.join(format!("tmp-{variant}"));
    let cache = scratch.join(format!("cache-{variant}"));
    for d in [&cwd, &tmp, &cache] {
        fs::create_dir_all(d).unwrap();
    }
    let results = scratch.join(format!("results-{variant}"));
    let mut cmd = detwasm();
    cmd.current_dir(&cwd)
        .env("TMPDIR", &tmp)
        .env("DETWASM_CACHE_DIR", &cache)
        .env(
            "TZ",
            ["UTC", "Asia/Kolkata", "America/St_Johns"][variant % 3],
        )
        .env("LANG", ["C", "de_DE.UTF-8", "ja_JP.UTF-8"][variant % 3])
        .env("HOME", &tmp)
        .env(format!("UNRELATED_{variant}"), "x".repeat(variant * 50 + 1))
        .args(args)
        .arg("-o")
        .arg(&results);
    let out = ok(&cmd.output().unwrap());
    let cid = out.lines().next().unwrap().trim().to_string();
    assert!(cid.starts_with("Qm"), "{out}");
    (cid, results)
}

fn run_twice(args: &[&str]) -> (String, PathBuf, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let (a, dir) = run_perturbed(args, 1, scratch.path());
    let (b, _) = run_perturbed(args, 2, scratch.path());
    assert_eq!(
        a, b,
        "the same module job gave two results CIDs under host perturbation: {args:?}"
    );
    (a, dir, scratch)
}

const COW_MOO: &str = r" _____
< moo >
 -----
        \   ^__^
         \  (oo)\_______
            (__)\       )\/\
                ||----w |
                ||     ||
";

#[test]
fn run_cowsay_twice_under_perturbation_gives_one_cid_and_the_cow() {
    let (cid, results, _scratch) = run_twice(&["run", "cowsay", "-i", "Message=moo"]);
    assert_eq!(fs::read_to_string(results.join("stdout")).unwrap(), COW_MOO);
    assert_eq!(
        fs::read_to_string(results.join("outputs/cowsay.txt")).unwrap(),
        COW_MOO
    );
    assert_eq!(fs::read_to_string(results.join("exitCode")).unwrap(), "0");
    // The folder form of the same module is the same job, so the same CID.
    let folder = root().join("modules/cowsay");
    let (cid2, _, _s) = run_twice(&["run", folder.to_str().unwrap(), "-i", "Message=moo"]);
    assert_eq!(cid, cid2);
    // Another message is another result.
    let (other, results, _s) = run_twice(&["run", "cowsay", "-i", "Message=baa"]);
    assert_ne!(cid, other);
    assert!(fs::read_to_string(results.join("stdout"))
        .unwrap()
        .contains("< baa >"));
}

#[test]
fn run_wordstats_over_an_input_tree() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("corpus");
    fs::create_dir_all(data.join("b/deeper")).unwrap();
    fs::create_dir_all(data.join("a")).unwrap();
    fs::write(data.join("b/deeper/z.txt"), "the cat sat on the mat\n").unwrap();
    fs::write(data.join("a/y.txt"), "The dog. The end.\n").unwrap();
    fs::write(data.join("cities.csv"), "city,pop\nParis,2.1\nOslo,0.7\n").unwrap();
    let input = format!("Input={}", data.display());
    // A folder outside the module: the operator opts it in.
    let (_, results, _s) = run_twice(&[
        "run",
        "wordstats",
        "-i",
        &input,
        "-i",
        "Top=3",
        "--allow-input",
        data.to_str().unwrap(),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(results.join("outputs/wordstats.json")).unwrap())
            .unwrap();
    let paths: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    // The guest walks the tree in listing order: detwasm lists sorted by name bytes.
    assert_eq!(paths, ["a/y.txt", "b/deeper/z.txt", "cities.csv"]);
    assert_eq!(json["top_words"][0], serde_json::json!(["the", 4]));
    assert_eq!(json["top_words"].as_array().unwrap().len(), 3);
    assert_eq!(json["csv"][0]["columns"][1]["mean"], serde_json::json!(1.4));
}

#[test]
fn run_digits_classifies_the_bundled_samples_and_input_images() {
    let (_, results, _s) = run_twice(&["run", "digits"]);
    let json: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(results.join("outputs/predictions.json")).unwrap(),
    )
    .unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(root().join("modules/digits/samples/expected.json")).unwrap(),
    )
    .unwrap();
    let predictions = json["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 10);
    for p in predictions {
        let name = p["file"].as_str().unwrap().trim_start_matches("samples/");
        assert_eq!(p["digit"], expected["samples"][name]["predicted"], "{name}");
    }
    // An input folder: one image, scaled up 4x (32x32) and as dark ink on white.
    let scratch = tempfile::tempdir().unwrap();
    let pics = scratch.path().join("pics");
    fs::create_dir_all(&pics).unwrap();
    let sample = fs::read_to_string(root().join("modules/digits/samples/digit-7.pgm")).unwrap();
    let values: Vec<u32> = sample
        .lines()
        .skip(4)
        .flat_map(|l| l.split_whitespace().map(|v| v.parse::<u32>().unwrap()))
        .collect();
    let mut big = String::from("P2\n32 32\n255\n");
    for y in 0..32 {
        let row: Vec<String> = (0..32)
            .map(|x| (values[(y / 4) * 8 + x / 4] * 255 / 16).to_string())
            .collect();
        big.push_str(&row.join(" "));
        big.push('\n');
    }
    fs::write(pics.join("mine.pgm"), big).unwrap();
    let input = format!("Images={}", pics.display());
    let err = failed(
        &detwasm()
            .args(["run", "digits", "-i", &input])
            .output()
            .unwrap(),
    );
    assert!(err.contains("--allow-input"), "{err}");
    let allow = scratch.path().to_str().unwrap();
    let (_, results, _s2) = run_twice(&["run", "digits", "-i", &input, "--allow-input", allow]);
    let json: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(results.join("outputs/predictions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["predictions"][0]["file"], "mine.pgm");
    assert_eq!(json["predictions"][0]["digit"], 7);
}

#[test]
fn run_artgen_makes_a_png_reproducibly() {
    let (cid, results, _s) = run_twice(&[
        "run",
        "artgen",
        "-i",
        "Prompt=a lake at night",
        "-i",
        "Seed=3",
        "-i",
        "Width=128",
        "-i",
        "Height=96",
    ]);
    let png = fs::read(results.join("outputs/image.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height as asked.
    assert_eq!(&png[16..24], &[0, 0, 0, 128, 0, 0, 0, 96]);
    let (other, _, _s2) = run_twice(&[
        "run",
        "artgen",
        "-i",
        "Prompt=a lake at night",
        "-i",
        "Seed=4",
        "-i",
        "Width=128",
        "-i",
        "Height=96",
    ]);
    assert_ne!(cid, other, "the seed must change the picture");
}

/// The results CIDs printed in modules/README.md are what these runs give: a regression
/// in any module, template or the runtime's determinism shows up here.
#[test]
fn readme_results_cids_are_reproduced() {
    let readme = fs::read_to_string(root().join("modules/README.md")).unwrap();
    let runs: [(&[&str], &str); 4] = [
        (
            &["run", "cowsay", "-i", "Message=moo"],
            "QmV6Z6fNowvJPuuiJ5yiG7wNW9M9vbSNrRkmkdatT7PmhT",
        ),
        (
            &[
                "run",
                "artgen",
                "-i",
                "Prompt=a quiet lake at sunset",
                "-i",
                "Seed=7",
            ],
            "QmY8YbkJeumxpmGaqb8DvNF5Kr5YLhSjNQhxd6GhbBMEar",
        ),
        (
            &["run", "wordstats", "-i", "Input=modules/wordstats/samples"],
            "QmQ8B53PMxFEmkgsco4W5tXgzoMrusH39WyJz3Q9ySTnUq",
        ),
        (
            &["run", "digits"],
            "QmPTvWYRYuz95wtj1CpbqhPmtx13gaiSD2wgxCNmMhpLJF",
        ),
    ];
    let scratch = tempfile::tempdir().unwrap();
    for (i, (args, want)) in runs.iter().enumerate() {
        assert!(
            readme.contains(want),
            "modules/README.md no longer shows {want}"
        );
        let out = ok(&detwasm()
            .current_dir(root())
            .env("DETWASM_CACHE_DIR", scratch.path().join("cache"))
            .args(*args)
            .arg("-o")
            .arg(scratch.path().join(format!("r{i}")))
            .output()
            .unwrap());
        assert_eq!(out.lines().next().unwrap().trim(), *want, "{args:?}");
    }
}

/// An entry module named by CID can be shipped as a CAR (what `ipfs dag export` or
/// `detwasm hash --car` writes) instead of a .wasm: it is found, its blocks verified,
/// and the job is the same job.
#[test]
fn an_entry_module_in_a_car_file_runs_as_the_same_job() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("cow-from-car");
    fs::create_dir_all(&m).unwrap();
    fs::copy(
        root().join("modules/cowsay/lilypad_module.json.tmpl"),
        m.join("lilypad_module.json.tmpl"),
    )
    .unwrap();
    let car = m.join("cowsay.car");
    let printed = ok(&detwasm()
        .args(["hash", "--car"])
        .arg(&car)
        .arg(root().join("fixtures/modules/cowsay.wasm"))
        .output()
        .unwrap());
    let template = fs::read_to_string(m.join("lilypad_module.json.tmpl")).unwrap();
    assert!(
        template.contains(printed.trim()),
        "the CAR's root is the template's CID"
    );
    let check = ok(&detwasm()
        .args(["module", "check", m.to_str().unwrap()])
        .output()
        .unwrap());
    assert!(
        check.contains("cowsay.car is Qm") && check.contains("blocks verified in CAR"),
        "{check}"
    );
    let (from_car, _, _s) = run_twice(&["run", m.to_str().unwrap(), "-i", "Message=moo"]);
    let (from_wasm, _, _s2) = run_twice(&["run", "cowsay", "-i", "Message=moo"]);
    assert_eq!(from_car, from_wasm);
}

#[test]
fn template_errors_name_the_file_line_and_construct_and_check_speaks_json() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("broken");
    fs::create_dir_all(&m).unwrap();
    fs::write(
        m.join("lilypad_module.json.tmpl"),
        "{\n  \"job\": {\n    {{range .Items}}x{{end}}\n  }\n}\n",
    )
    .unwrap();
    let err = failed(
        &detwasm()
            .args(["module", "render", m.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("lilypad_module.json.tmpl:3: unsupported construct `range`"),
        "{err}"
    );

    let out = detwasm()
        .args(["module", "check", "--json", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["steps"][0]["step"], "template renders");
    assert_eq!(report["steps"][0]["ok"], false);

    let out = ok(&detwasm()
        .args(["module", "check", "--json", "cowsay", "-i", "Message=moo"])
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["steps"].as_array().unwrap().len(), 5);
}

/// A hostile template: `Inputs` naming `/etc`, `../` (the folder around the module), or
/// whatever `-i` says. Each run fails with exit code 2 before anything runs, naming the
/// SourcePath, where it leads and how to allow it; `module check` fails the spec step.
#[test]
fn a_spec_cannot_mount_host_folders_outside_the_module_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("hostile");
    fs::create_dir_all(&m).unwrap();
    fs::copy(
        root().join("fixtures/modules/cowsay.wasm"),
        m.join("cowsay.wasm"),
    )
    .unwrap();
    let template = |source: &str| {
        format!(
            r#"{{"job":{{"Spec":{{"Engine":"Wasm","Wasm":{{"EntryModule":{{"Path":"cowsay.wasm"}}}},"Inputs":[{{"StorageSource":"localDirectory","SourcePath":{source},"Path":"/inputs"}}],"Outputs":[{{"Name":"outputs","Path":"/outputs"}}]}}}}}}"#
        )
    };
    let around = tmp.path().canonicalize().unwrap();
    for (source, resolved) in [
        ("\"/etc\"", PathBuf::from("/etc").canonicalize().unwrap()),
        ("\"../\"", around.clone()),
        ("{{.Dir}}", around.clone()),
    ] {
        fs::write(m.join("lilypad_module.json.tmpl"), template(source)).unwrap();
        let out = detwasm()
            .current_dir(&m)
            .args([
                "run",
                m.to_str().unwrap(),
                "-i",
                &format!("Dir={}", around.display()),
            ])
            .arg("-o")
            .arg(tmp.path().join("results"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{source}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!("resolves to {}", resolved.display()))
                && err.contains("--allow-input DIR")
                && err.contains("DETWASM_ALLOW_INPUTS"),
            "{source}: {err}"
        );
        assert!(!tmp.path().join("results").exists(), "nothing ran");

        let out = detwasm()
            .current_dir(&m)
            .args([
                "module",
                "check",
                m.to_str().unwrap(),
                "-i",
                &format!("Dir={}", around.display()),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("FAIL spec is a WASM job detwasm can honour: input SourcePath")
                && text.contains("--allow-input"),
            "{text}"
        );
    }

    // Opted in, by flag or by the environment, the same spec runs.
    fs::write(m.join("lilypad_module.json.tmpl"), template("\"../\"")).unwrap();
    let out = detwasm()
        .current_dir(&m)
        .args(["run", m.to_str().unwrap(), "--allow-input"])
        .arg(tmp.path())
        .arg("-o")
        .arg(tmp.path().join("r1"))
        .output()
        .unwrap();
    ok(&out);
    let out = detwasm()
        .current_dir(&m)
        .env(
            "DETWASM_ALLOW_INPUTS",
            format!(
                "/nowhere-else-{}:{}",
                std::process::id(),
                tmp.path().display()
            ),
        )
        .args(["run", m.to_str().unwrap()])
        .arg("-o")
        .arg(tmp.path().join("r2"))
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("nowhere-else") && err.contains("cannot be resolved"),
        "{err}"
    );
    let out = detwasm()
        .current_dir(&m)
        .env("DETWASM_ALLOW_INPUTS", tmp.path())
        .args(["run", m.to_str().unwrap()])
        .arg("-o")
        .arg(tmp.path().join("r3"))
        .output()
        .unwrap();
    ok(&out);
}

/// One meaning per flag: a template value is `-i`/`--input-value` in `module` as in
/// `run` (where `--input` is a host folder); `module ... --input` still works, with a
/// deprecation note.
#[test]
fn template_values_are_input_values_everywhere_and_the_old_spelling_warns() {
    let render = |flag: &str| {
        detwasm()
            .args(["module", "render", "cowsay", flag, "Message=moo"])
            .output()
            .unwrap()
    };
    let short = render("-i");
    let long = render("--input-value");
    let old = render("--input");
    assert_eq!(ok(&short), ok(&long));
    assert_eq!(ok(&old), ok(&short));
    assert!(String::from_utf8_lossy(&old.stderr).contains("--input KEY=VALUE` is deprecated"));
    assert!(short.stderr.is_empty() && long.stderr.is_empty());
}
