//! `detwasm hash` end to end, as a user runs it: output formats, knobs, errors, and CAR
//! export read back by @ipld/car + ipfs-unixfs-exporter (`conformance/car-check.mjs`).

mod cli_support;
mod hash_support;

use detwasm_hasher::{CidVersion, HamtCompare, Options};
use hash_support::*;
use std::path::Path;
use std::process::Output;
use tempfile::TempDir;

fn detwasm(args: &[&std::ffi::OsStr]) -> Output {
    cli_support::detwasm()
        .arg("hash")
        .args(args)
        .output()
        .expect("run detwasm")
}

fn ok_stdout(args: &[&std::ffi::OsStr]) -> String {
    let out = detwasm(args);
    let stdout = cli_support::ok(&out);
    assert!(
        out.stderr.is_empty(),
        "no progress bar or noise when stderr is not a terminal"
    );
    stdout
}

/// A tree with a bit of everything: nested folders, a multi-chunk file, the same file
/// twice (its blocks must appear once in a CAR), empty file and folder, symlinks, hidden
/// entries and a HAMT-sharded folder with sub-shards.
fn rich_tree(root: &Path) {
    file(root, "big.bin", &bytes(1, 3 * MIB + 17));
    file(root, "copy-of-big.bin", &bytes(1, 3 * MIB + 17));
    file(root, "hello.txt", b"hello\n");
    file(root, "empty", b"");
    dir(root, "emptydir");
    file(root, "a/b/c/deep.txt", b"deep");
    file(root, ".hidden/secret", b"s");
    symlink(root, "a/link", "../hello.txt");
    symlink(root, "dangling", "nowhere");
    for i in 0..1100 {
        file(
            root,
            &format!("shard/{i:04}-{}", "p".repeat(230)),
            &bytes(i, i as usize % 50),
        );
    }
}

#[test]
fn prints_the_root_cid_like_ipfs_add_q() {
    let t = TempDir::new().unwrap();
    let root = t.path().join("tree");
    file(&root, "hello.txt", b"hello\n");
    let out = ok_stdout(&[root.as_os_str()]);
    assert_eq!(out, "QmU5PLEGqjetW4RAmXgHpEFL7nVCL3vFnEyrCKUfRk4MSq\n");
    let hello = root.join("hello.txt");
    assert_eq!(
        ok_stdout(&[hello.as_os_str()]),
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN\n"
    );
    let js = js_import(&both_profiles("t", &root, false));
    assert_eq!(out.trim(), js["t/unixfs-v0-2015"].root);
    let v1 = ok_stdout(&[
        "--profile".as_ref(),
        "unixfs-v1-2025".as_ref(),
        root.as_os_str(),
    ]);
    assert_eq!(v1.trim(), js["t/unixfs-v1-2025"].root);
}

#[test]
fn json_output_has_cid_profile_size_and_entries() {
    let t = TempDir::new().unwrap();
    let root = t.path();
    file(root, "a.txt", b"12345");
    file(root, "sub/b.txt", b"678");
    symlink(root, "l", "a.txt");
    let out = ok_stdout(&[
        "--json".as_ref(),
        "--entries".as_ref(),
        "--profile".as_ref(),
        "unixfs-v1-2025".as_ref(),
        root.as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["profile"], "unixfs-v1-2025");
    assert_eq!(v["size"], 8);
    assert!(v["cid"].as_str().unwrap().starts_with("bafybei"));
    let entries = v["entries"].as_array().unwrap();
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["", "a.txt", "l", "sub", "sub/b.txt"]);
    assert_eq!(entries[0]["cid"], v["cid"]);
    assert_eq!(entries[1]["type"], "file");
    assert_eq!(entries[2]["type"], "symlink");
    assert_eq!(entries[3]["type"], "directory");
    assert_eq!(entries[3]["size"], 3);
    let js = js_import(&[Case::new("j", root, Options::profile(V1))]);
    for e in entries {
        assert_eq!(e["cid"], js["j"].entries[e["path"].as_str().unwrap()]);
    }
    // Without --entries there is no list; --entries alone is refused.
    let plain: serde_json::Value =
        serde_json::from_str(&ok_stdout(&["--json".as_ref(), root.as_os_str()])).unwrap();
    assert!(plain.get("entries").is_none());
    assert_eq!(plain["profile"], "unixfs-v0-2015");
    assert!(!detwasm(&["--entries".as_ref(), root.as_os_str()])
        .status
        .success());
}

#[test]
fn car_export_round_trips_through_ipld_car_and_the_exporter() {
    let t = TempDir::new().unwrap();
    let root = t.path().join("tree");
    rich_tree(&root);
    for (profile, hidden) in [
        ("unixfs-v0-2015", false),
        ("unixfs-v1-2025", false),
        ("unixfs-v0-2015", true),
    ] {
        let car = t.path().join(format!("{profile}-{hidden}.car"));
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--profile".as_ref(),
            profile.as_ref(),
            "--car".as_ref(),
            car.as_os_str(),
            root.as_os_str(),
        ];
        if hidden {
            args.push("--hidden".as_ref());
        }
        let cid = ok_stdout(&args);
        let mut check_args = vec![car.as_os_str(), root.as_os_str()];
        if hidden {
            check_args.push("--hidden".as_ref());
        }
        let report: serde_json::Value =
            serde_json::from_str(&node("car-check.mjs", &check_args)).unwrap();
        assert_eq!(report["root"].as_str().unwrap(), cid.trim(), "{profile}");
        assert_eq!(
            report["files"],
            if hidden { 1106 } else { 1105 },
            "{profile}"
        );
        // And the importer agrees on the root.
        let p = profile.parse().unwrap();
        let js = js_import(&[Case::new(
            "r",
            &root,
            Options::profile(p).with_hidden(hidden),
        )]);
        assert_eq!(js["r"].root, cid.trim(), "{profile}");
    }
}

#[test]
fn car_of_a_single_file_root() {
    let t = TempDir::new().unwrap();
    for (profile, len) in [
        ("unixfs-v1-2025", 10usize),
        ("unixfs-v1-2025", 0),
        ("unixfs-v0-2015", 600 * KIB),
    ] {
        let f = t.path().join(format!("f{len}"));
        std::fs::write(&f, bytes(3, len)).unwrap();
        let car = t.path().join(format!("{profile}-{len}.car"));
        let cid = ok_stdout(&[
            "--profile".as_ref(),
            profile.as_ref(),
            "--car".as_ref(),
            car.as_os_str(),
            f.as_os_str(),
        ]);
        let report: serde_json::Value =
            serde_json::from_str(&node("car-check.mjs", &[car.as_os_str(), f.as_os_str()]))
                .unwrap();
        assert_eq!(report["root"].as_str().unwrap(), cid.trim());
        assert_eq!(report["bytes"], len);
    }
}

#[test]
fn every_knob_matches_the_importer_with_the_same_settings() {
    let t = TempDir::new().unwrap();
    let root = t.path();
    file(root, "f", &bytes(9, 50_000));
    for i in 0..30 {
        file(root, &format!("d/{i:02}-{}", "k".repeat(10)), &bytes(i, 5));
    }
    let out = ok_stdout(&[
        "--cid-version".as_ref(),
        "1".as_ref(),
        "--raw-leaves=false".as_ref(),
        "--chunker".as_ref(),
        "size-1000".as_ref(),
        "--max-links".as_ref(),
        "3".as_ref(),
        "--hamt-threshold".as_ref(),
        "300".as_ref(),
        "--kubo-pre-0-40".as_ref(),
        root.as_os_str(),
    ]);
    let mut o = Options::profile(V0);
    o.cid_version = CidVersion::V1;
    o.chunk_size = 1000;
    o.max_links = 3;
    o.hamt_threshold = 300;
    o.hamt_compare = HamtCompare::GreaterOrEqual;
    let js = js_import(&[Case::new("k", root, o)]);
    assert_eq!(out.trim(), js["k"].root);
    // As in kubo, --cid-version 1 alone brings raw leaves.
    let v1 = ok_stdout(&["--cid-version".as_ref(), "1".as_ref(), root.as_os_str()]);
    let mut o = Options::profile(V0);
    o.cid_version = CidVersion::V1;
    o.raw_leaves = true;
    let js = js_import(&[Case::new("v1", root, o)]);
    assert_eq!(v1.trim(), js["v1"].root);
    let raw = ok_stdout(&[
        "--raw-leaves".as_ref(),
        "--chunker".as_ref(),
        "size-1000".as_ref(),
        root.as_os_str(),
    ]);
    let mut o = Options::profile(V0);
    o.raw_leaves = true;
    o.chunk_size = 1000;
    let js = js_import(&[Case::new("r", root, o)]);
    assert_eq!(raw.trim(), js["r"].root);
}

#[test]
fn fifos_and_bad_options_give_clear_errors() {
    let t = TempDir::new().unwrap();
    let root = t.path().join("tree");
    file(&root, "ok", b"ok");
    let fifo = root.join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let out = detwasm(&[root.as_os_str()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&fifo.display().to_string()) && err.contains("FIFO"),
        "{err}"
    );

    let missing = t.path().join("nope");
    let err = String::from_utf8_lossy(&detwasm(&[missing.as_os_str()]).stderr).to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let ok = root.join("ok");
    for (flag, value, says) in [
        ("--chunker", "rabin", "size-N"),
        ("--chunker", "size-0", "between"),
        ("--max-links", "1", "at least 2"),
        ("--profile", "unixfs-v9", "unixfs-v0-2015"),
        ("--cid-version", "2", "0..=1"),
    ] {
        let out = detwasm(&[flag.as_ref(), value.as_ref(), ok.as_os_str()]);
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

/// Names of a tree are anyone's: `--json --entries` escapes DEL and C1 controls too, not
/// only what JSON must (found by review: U+009B, a terminal's one-byte CSI, was printed
/// raw).
#[test]
fn json_entries_escape_every_control_character() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("d").join("a\u{9b}2J\u{7f}b"), "x").unwrap();
    let out = cli_support::detwasm()
        .current_dir(t.path())
        .args(["hash", "--json", "--entries", "--hidden", "d"])
        .output()
        .unwrap();
    let text = cli_support::ok(&out);
    assert!(!text.trim_end().chars().any(|c| c.is_control()), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(text.contains("a\\u009b2J\\u007fb"), "{text}");
    assert!(
        v["entries"].to_string().contains("2J"),
        "the same names: {v}"
    );
}

#[test]
fn help_explains_every_option() {
    let out = detwasm(&["--help".as_ref()]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--profile",
        "--cid-version",
        "--raw-leaves",
        "--chunker",
        "--max-links",
        "--hamt-threshold",
        "--kubo-pre-0-40",
        "--hidden",
        "--car",
        "--json",
        "--entries",
        "unixfs-v1-2025",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
}

/// `detwasm unpack` writes back the tree a CAR holds: the rich tree through
/// `hash --car` and back hashes to the same CID under both profiles, hidden files,
/// symlinks, empty files and folders and a HAMT-sharded folder included; a second unpack
/// at the same place is refused and changes nothing.
#[test]
fn unpack_writes_back_the_tree_a_car_holds() {
    let t = TempDir::new().unwrap();
    let root = t.path().join("tree");
    rich_tree(&root);
    for profile in ["unixfs-v0-2015", "unixfs-v1-2025"] {
        let car = t.path().join(format!("{profile}.car"));
        let args: Vec<&std::ffi::OsStr> = vec![
            "--profile".as_ref(),
            profile.as_ref(),
            "--hidden".as_ref(),
            "--car".as_ref(),
            car.as_os_str(),
            root.as_os_str(),
        ];
        let cid = ok_stdout(&args);
        let out = t.path().join(format!("out-{profile}"));
        let unpack = || {
            cli_support::detwasm()
                .arg("unpack")
                .arg(&car)
                .arg(&out)
                .output()
                .unwrap()
        };
        assert_eq!(cli_support::ok(&unpack()), cid);
        let again: Vec<&std::ffi::OsStr> = vec![
            "--profile".as_ref(),
            profile.as_ref(),
            "--hidden".as_ref(),
            out.as_os_str(),
        ];
        assert_eq!(ok_stdout(&again), cid, "{profile}");
        assert!(cli_support::failed(&unpack()).contains("already there"));
        assert_eq!(ok_stdout(&again), cid, "{profile}: untouched");
    }
}
