//! `detwasm run JOB.yaml|JOB.json`: Bacalhau v1 job files, run end to end. Each job file
//! must give the same results CID (and job id and instruction count) as the same job
//! written as `detwasm run` flags, and each setting detwasm cannot honour must be refused
//! with the file, the line and what to write instead.

mod cli_support;
use cli_support::*;

use std::path::Path;

/// Runs `detwasm run ARGS --json` into a fresh results folder; the receipt.
fn run(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    // The options go first: everything after `--` in ARGS is the guest's.
    let out = detwasm()
        .arg("run")
        .arg("--json")
        .arg("-o")
        .arg(tmp.path().join("results"))
        .args(args)
        .output()
        .unwrap();
    receipt(&out)
}

fn same_run(a: &serde_json::Value, b: &serde_json::Value) {
    for key in ["cid", "instructions", "exit_code", "job_id"] {
        assert_eq!(a[key], b[key], "{key}: {a:#}\n{b:#}");
    }
}

/// The error of a job file detwasm must refuse (exit code 2, nothing run).
fn refused(dir: &Path, text: &str, extra: &[&str]) -> String {
    let file = dir.join("job.yaml");
    std::fs::write(&file, text).unwrap();
    let out = detwasm()
        .arg("run")
        .arg(&file)
        .args(extra)
        .arg("-o")
        .arg(dir.join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!dir.join("never").exists());
    err
}

/// Bacalhau's own wasm examples (testdata/jobs/wasm.yaml and wasm_legacy.yaml), rewritten
/// to local sources, give the results of cowsay run with the CLI's flags: /outputs as a
/// result path and `moo` as the parameter. The mounts of the entry module differ (the
/// guest sees /wasm.main, or /wasm/entry.wasm), so the job id and the instruction count
/// are those of the same flags with that folder mounted.
#[test]
fn bacalhaus_wasm_examples_give_the_cid_of_the_cli_run() {
    let cowsay = fixture("modules/cowsay.wasm");
    let by_flags = run(&[cowsay.as_os_str(), "--".as_ref(), "moo".as_ref()]);
    let modules = fixture("modules");
    for job in ["bacalhau-v1/wasm.yaml", "bacalhau-v1/wasm_legacy.yaml"] {
        let by_file = run(&[
            fixture(job).as_os_str(),
            "--allow-input".as_ref(),
            modules.as_os_str(),
        ]);
        assert_eq!(by_file["cid"], by_flags["cid"], "{job}");
        assert_eq!(by_file["exit_code"], 0, "{job}");
    }
    // The same job, with the entry module's folder mounted as the job file mounts it.
    let staged = tempfile::tempdir().unwrap();
    std::fs::copy(&cowsay, staged.path().join("entry.wasm")).unwrap();
    let mount = format!("{}:/wasm", staged.path().display());
    let by_flags = run(&[
        cowsay.as_os_str(),
        "--input".as_ref(),
        mount.as_ref(),
        "--".as_ref(),
        "moo".as_ref(),
    ]);
    let by_file = run(&[
        fixture("bacalhau-v1/wasm_legacy.yaml").as_os_str(),
        "--allow-input".as_ref(),
        modules.as_os_str(),
    ]);
    same_run(&by_file, &by_flags);
}

/// The YAML file and the JSON file ({"Job": …} as Bacalhau's API takes it) are one job,
/// and it is the job of these flags, job id included.
#[test]
fn yaml_and_json_job_files_are_the_job_of_the_equivalent_flags() {
    let modules = fixture("modules");
    let yaml = run(&[
        fixture("bacalhau-v1/wordstats.yaml").as_os_str(),
        "--allow-input".as_ref(),
        modules.as_os_str(),
    ]);
    let json = run(&[
        fixture("bacalhau-v1/wordstats.json").as_os_str(),
        "--allow-input".as_ref(),
        modules.as_os_str(),
    ]);
    same_run(&yaml, &json);
    let app = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("modules/wordstats.wasm"),
        app.path().join("wordstats.wasm"),
    )
    .unwrap();
    let app_mount = format!("{}:/app", app.path().display());
    let data_mount = format!("{}:/inputs", fixture("bacalhau-v1/data").display());
    // Resources.Memory 256MB = 256,000,000 bytes, rounded up to whole 64 KiB pages.
    let memory = (256_000_000u64.div_ceil(65536) * 65536).to_string();
    let by_flags = run(&[
        fixture("modules/wordstats.wasm").as_os_str(),
        "--input".as_ref(),
        app_mount.as_ref(),
        "--input".as_ref(),
        data_mount.as_ref(),
        "--env".as_ref(),
        "LANG_HINT=en".as_ref(),
        "--memory".as_ref(),
        memory.as_ref(),
        "--timeout".as_ref(),
        "600".as_ref(),
        "--".as_ref(),
        "--top".as_ref(),
        "5".as_ref(),
        "/inputs".as_ref(),
    ]);
    same_run(&yaml, &by_flags);
}

/// An `ipfs` source by CID: found as a CAR file beside the job file (every block checked)
/// or as a folder named by its CID; a folder whose content is not that CID is refused.
#[test]
fn ipfs_sources_come_from_a_local_car_or_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cowsay = fixture("modules/cowsay.wasm");
    let out = detwasm()
        .args(["hash", "--car"])
        .arg(dir.join("cowsay.car"))
        .arg(&cowsay)
        .output()
        .unwrap();
    assert!(out.status.success());
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let data_cid = {
        let out = detwasm()
            .args(["hash", "--hidden"])
            .arg(fixture("bacalhau-v1/data"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let data = dir.join(&data_cid);
    std::fs::create_dir(&data).unwrap();
    for f in ["dog.txt", "fox.txt"] {
        std::fs::copy(fixture("bacalhau-v1/data").join(f), data.join(f)).unwrap();
    }
    let job = format!(
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params: {{EntryModule: /m.wasm, Entrypoint: _start, Parameters: [moo]}}\n    InputSources:\n      - Target: /m.wasm\n        Source: {{Type: ipfs, Params: {{CID: {cid}}}}}\n      - Target: /inputs\n        Source: {{Type: ipfs, Params: {{CID: {data_cid}}}}}\n    ResultPaths: [{{Name: outputs, Path: /outputs}}]\n    Network: {{Type: None}}\n"
    );
    std::fs::write(dir.join("job.yaml"), &job).unwrap();
    let by_file = run(&[dir.join("job.yaml").as_os_str()]);
    let by_flags = run(&[cowsay.as_os_str(), "--".as_ref(), "moo".as_ref()]);
    assert_eq!(by_file["cid"], by_flags["cid"]);
    // A folder named by a CID it does not have.
    std::fs::write(data.join("extra.txt"), "not in the CID").unwrap();
    let err = refused(dir, &job, &[]);
    assert!(
        err.contains(&data_cid) && err.contains("its CID is not"),
        "{err}"
    );
    // Nothing local with that CID.
    std::fs::remove_dir_all(&data).unwrap();
    let err = refused(dir, &job, &[]);
    assert!(
        err.contains("job.yaml:11:") && err.contains("ipfs get") && err.contains("no network"),
        "{err}"
    );
    // The folder as a CAR (`ipfs dag export`): extracted, every block checked, and the
    // guest sees exactly the folder the CID names.
    let out = detwasm()
        .args(["hash", "--hidden", "--car"])
        .arg(dir.join("data.car"))
        .arg(fixture("bacalhau-v1/data"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let from_car = run(&[dir.join("job.yaml").as_os_str()]);
    assert_eq!(from_car["cid"], by_flags["cid"]);
    let inputs = from_car["job"]["inputs"].as_array().unwrap();
    let mounted = inputs.iter().find(|i| i["guest"] == "/inputs").unwrap();
    assert_eq!(mounted["cid"], data_cid.as_str(), "{from_car}");
}

/// A `ReadWrite` local folder is a writable folder: the guest's changes are delivered as
/// a results volume named after the target, the host folder is untouched; a host path
/// outside the job file's folder needs the operator's opt-in.
#[test]
fn read_write_folders_and_confinement() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    std::fs::write(dir.join("notes/notes.txt"), "first line\n").unwrap();
    std::fs::write(dir.join("notes/old.txt"), "bye\n").unwrap();
    let job = format!(
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params: {{EntryModule: /m.wasm, Entrypoint: _start}}\n    InputSources:\n      - Target: /data\n        Source: {{Type: local, Params: {{SourcePath: notes, ReadWrite: true}}}}\n      - Target: /m.wasm\n        Source: {{Type: local, Params: {{SourcePath: {}}}}}\n    Network: {{Type: None}}\n",
        fixture("probes/notes.wat").display()
    );
    // The module file lies outside the job's folder: refused until allowed. (The probe
    // writes through the first preopened folder, fd 3: /data is listed first.)
    let err = refused(&dir, &job, &[]);
    assert!(
        err.contains("job.yaml:11:") && err.contains("--allow-input"),
        "{err}"
    );
    let probes = fixture("probes");
    let r = run(&[
        dir.join("job.yaml").as_os_str(),
        "--allow-input".as_ref(),
        probes.as_os_str(),
    ]);
    // The README's writable-folder example: the same CID.
    let by_flags = run(&[
        fixture("probes/notes.wat").as_os_str(),
        "--dir".as_ref(),
        format!("{}::/data", dir.join("notes").display()).as_ref(),
        "--no-outputs".as_ref(),
    ]);
    assert_eq!(r["cid"], by_flags["cid"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes/notes.txt")).unwrap(),
        "first line\n"
    );
    assert!(dir.join("notes/old.txt").exists());
}

/// Unsupported settings, refused from the command line with the file, the line, the
/// cause and what to write instead.
#[test]
fn unsupported_settings_are_refused_with_file_line_and_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(fixture("modules/cowsay.wasm"), dir.join("m.wasm")).unwrap();
    let base = "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params: {EntryModule: /m.wasm, Entrypoint: _start}\n    InputSources:\n      - Target: /m.wasm\n        Source: {Type: local, Params: {SourcePath: m.wasm}}\n    Network: {Type: None}\n";
    // The base job runs.
    std::fs::write(dir.join("ok.yaml"), base).unwrap();
    run(&[dir.join("ok.yaml").as_os_str()]);
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        // Bacalhau's wasm default network is the host's: Network left out.
        (
            base.replace("    Network: {Type: None}\n", ""),
            "job.yaml:3:",
            vec!["Network: {Type: None}"],
        ),
        (
            base.replace("Type: None", "Type: Host"),
            "job.yaml:10:",
            vec!["no network", "\"None\""],
        ),
        (
            base.replace("Type: local", "Type: urlDownload"),
            "job.yaml:9:",
            vec!["urlDownload", "download the file", "local"],
        ),
        (
            base.replace("Type: local", "Type: s3"),
            "job.yaml:9:",
            vec!["S3", "copy the objects"],
        ),
        (
            base.replace("SourcePath: m.wasm", "SourcePath: /etc/hostname"),
            "job.yaml:9:",
            vec!["outside the folders", "--allow-input"],
        ),
        (
            format!("{base}    Env: {{HOME: \"env:HOME\"}}\n"),
            "job.yaml:11:",
            vec!["env:", "write the value itself"],
        ),
        (
            base.replace(
                "Entrypoint: _start}",
                "Entrypoint: _start, ImportModules: [/lib.wasm]}",
            ),
            "job.yaml:6:",
            vec!["ImportModules", "wasm-merge"],
        ),
        (
            base.replace("EntryModule: /m.wasm", "EntryModule: /other.wasm"),
            "job.yaml:6:",
            vec!["Target of one of the task's InputSources", "/m.wasm"],
        ),
        (
            base.replace("Type: wasm", "Type: docker"),
            "job.yaml:5:",
            vec!["Docker"],
        ),
    ];
    for (text, place, words) in cases {
        let err = refused(dir, &text, &[]);
        assert!(err.contains(place), "{place}: {err}");
        for w in words {
            assert!(err.contains(w), "{w}: {err}");
        }
    }
}

/// The README's job-file example is true: the YAML shown is the fixture (less its
/// comments), and the command prints the notes and the CID shown.
#[test]
fn the_readme_job_file_example_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("<!-- bacalhau-example:start -->").unwrap();
    let end = readme.find("<!-- bacalhau-example:end -->").unwrap();
    let block = &readme[start..end];
    let yaml = block
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let fixture_text: String = std::fs::read_to_string(fixture("bacalhau-v1/wordstats.yaml"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(yaml, fixture_text);
    let console = block.split("```console\n").nth(1).unwrap();
    let mut lines = console.lines();
    let command = lines.next().unwrap().strip_prefix("$ detwasm ").unwrap();
    let shown: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = detwasm()
        .current_dir(root())
        .args(command.split(' '))
        .arg("-o")
        .arg(tmp.path().join("results"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let (notes, cid) = shown.split_at(shown.len() - 1);
    assert_eq!(stdout.trim(), cid[0]);
    for note in notes {
        assert!(stderr.contains(note), "{note}\n{stderr}");
    }
}
