//! IPFS in and out, end to end, against a real IPFS implementation: Helia (its file
//! blockstore, UnixFS importer and exporter, CAR import and export), started from
//! `conformance/ipfs-node` (installed by `scripts/setup.sh`) behind a trustless gateway and
//! Kubo's RPC. Content is added with Helia's own importer, so what detwasm fetches was
//! made by code nobody here wrote; what detwasm publishes is read back with Helia's
//! exporter.

mod cli_support;
use cli_support::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A Helia node serving a repository folder; stopped when dropped.
struct Node {
    child: Child,
    repo: PathBuf,
    url: String,
}

fn node_dir() -> PathBuf {
    root().join("conformance/ipfs-node")
}

fn node_cmd(args: &[&str]) -> Command {
    assert!(
        node_dir().join("node_modules/@helia/http").is_dir(),
        "conformance/ipfs-node is not installed: run scripts/setup.sh (npm ci --prefix conformance/ipfs-node)"
    );
    let mut c = Command::new("node");
    c.arg(node_dir().join("node.mjs")).args(args);
    c
}

impl Node {
    fn start(repo: &Path) -> Node {
        let mut child = node_cmd(&["serve", repo.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the node said {line:?}"));
        Node {
            child,
            repo: repo.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A node in `t/repo` serving [`sample`] (made in `t/src`, added with Helia's
    /// importer): the node, the folder and its CID.
    fn serving_sample(t: &Path) -> (Node, PathBuf, String) {
        let node = Node::start(&t.join("repo"));
        let src = t.join("src");
        sample(&src);
        let cid = node.add(&src);
        (node, src, cid)
    }

    /// Adds a file or folder with Helia's importer; its CID.
    fn add(&self, path: &Path) -> String {
        let out = node_cmd(&["add", self.repo.to_str().unwrap(), path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A file's bytes as Helia's exporter reads them (`CID/path`).
    fn cat(&self, path: &str) -> Vec<u8> {
        let out = node_cmd(&["cat", self.repo.to_str().unwrap(), path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new folder `dir` (parents too) holding the probe module, for a job file beside it.
fn probe_folder(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixture("probes/probe.wasm"), dir.join("probe.wasm")).unwrap();
    dir.to_path_buf()
}

/// A Bacalhau job file running the probe (`report`) beside it, with `/inputs` named by
/// the CID text `cid` (as written in YAML) and the default output volume.
fn probe_job(cid: &str) -> String {
    format!(
        "Type: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params: {{EntryModule: /probe.wasm, Entrypoint: _start, Parameters: [report]}}\n    InputSources:\n      - Target: /probe.wasm\n        Source: {{Type: local, Params: {{SourcePath: probe.wasm}}}}\n      - Target: /inputs\n        Source: {{Type: ipfs, Params: {{CID: {cid}}}}}\n    ResultPaths: [{{Name: outputs, Path: /outputs}}]\n    Network: {{Type: None}}\n"
    )
}

fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.push((rel + "/", Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn sample(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/empty")).unwrap();
    std::fs::write(dir.join("a.txt"), "ay\n").unwrap();
    std::fs::write(dir.join(".hidden"), "seen\n").unwrap();
    // Several chunks under any profile (Helia: 1 MiB chunks, raw leaves, CIDv1).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("sub/big.bin"), big).unwrap();
}

/// Content Helia added is fetched by CID from its trustless gateway and from its RPC,
/// written out as the same tree, or kept as a checked CAR; a CID the node lacks is an
/// error that writes nothing.
#[test]
fn fetch_writes_what_a_real_ipfs_node_holds() {
    let t = tempfile::tempdir().unwrap();
    let (node, src, cid) = Node::serving_sample(t.path());
    for (flag, dest) in [("--gateway", "by-gateway"), ("--ipfs-api", "by-api")] {
        let out = detwasm()
            .current_dir(t.path())
            .args(["fetch", &cid, dest, flag, &node.url])
            .output()
            .unwrap();
        assert_eq!(ok(&out).trim(), cid);
        assert_eq!(tree(&t.path().join(dest)), tree(&src), "{flag}");
    }
    // The CAR itself, checked, then unpacked by detwasm as any CAR.
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "fetch",
            &cid,
            "--car",
            "x.car",
            "--json",
            "--gateway",
            &node.url,
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["car"], "x.car");
    ok(&detwasm()
        .current_dir(t.path())
        .args(["unpack", "x.car", "from-car"])
        .output()
        .unwrap());
    assert_eq!(tree(&t.path().join("from-car")), tree(&src));
    // One file of the folder, by its own CID (as `ipfs get CID/path` would give it).
    let e = failed(
        &detwasm()
            .current_dir(t.path())
            .args([
                "fetch",
                "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                "missing",
                "--gateway",
                &node.url,
            ])
            .output()
            .unwrap(),
    );
    assert!(e.contains("HTTP 404"), "{e}");
    assert!(!t.path().join("missing").exists());
    // Without a node named, nothing is fetched and the flags are named.
    let e = failed(
        &detwasm()
            .current_dir(t.path())
            .env_remove("DETWASM_IPFS_API")
            .env_remove("DETWASM_IPFS_GATEWAY")
            .args(["fetch", &cid])
            .output()
            .unwrap(),
    );
    assert!(e.contains("--ipfs-api") && e.contains("--gateway"), "{e}");
}

/// A gateway that lies (a block changed, a block left out, a redirect) gives an error,
/// never content: every block is checked against its CID and the DAG must be whole.
#[test]
fn a_lying_gateway_gives_an_error_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample(&src);
    let out = detwasm()
        .current_dir(t.path())
        .args(["hash", "--hidden", "--car", "good.car", "src"])
        .output()
        .unwrap();
    let cid = ok(&out).trim().to_string();
    let good = std::fs::read(t.path().join("good.car")).unwrap();
    // A changed byte near the end (inside the last block's data).
    let mut changed = good.clone();
    let at = changed.len() - 10;
    changed[at] ^= 1;
    // The CAR cut short by its last 1,000 bytes: blocks of the DAG missing.
    let cut = good[..good.len() - 1000].to_vec();
    let car = |body: Vec<u8>| {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.car; version=1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend(body);
        answer
    };
    // A redirect is not followed (it could point anywhere, the provider's own network
    // included): the good CAR waits at the other end, unused.
    // A server's words are shown without their control characters (a terminal's escape
    // sequences), and at most 512 bytes of them.
    let mut said = b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n\x1b[2J\x1b[31mPWNED ".to_vec();
    said.extend(vec![b'x'; 100_000]);
    let redirect = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/ipfs/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    for (answer, want) in [
        (car(changed), "not a valid CAR"),
        (car(cut), "not a valid CAR"),
        (redirect, "HTTP 302"),
        (said, "HTTP 500 Internal Server Error: ?[2J?[31mPWNED xxx"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&answer);
        });
        let e = failed(
            &detwasm()
                .current_dir(t.path())
                .args(["fetch", &cid, "out", "--gateway", &url])
                .output()
                .unwrap(),
        );
        server.join().unwrap();
        assert!(e.contains(want) && e.contains(&cid), "{e}");
        assert!(!e.contains('\x1b') && e.len() < 2000, "{e}");
        assert!(!t.path().join("out").exists());
    }
}

/// A Bacalhau job file whose input is named by a CID found nowhere here runs with the
/// content fetched from the node; its results are published to the node, which then
/// serves them under the receipt's CID; and a verifier with none of the content gets the
/// module and input from the node and reproduces the result.
#[test]
fn a_job_fetches_its_inputs_publishes_its_results_and_verifies_from_ipfs() {
    let t = tempfile::tempdir().unwrap();
    let (node, src, cid) = Node::serving_sample(t.path());
    let job = probe_folder(&t.path().join("job"));
    std::fs::write(job.join("job.yaml"), probe_job(&cid)).unwrap();
    // Not here, no node named: refused, saying where it looked.
    let e = failed(
        &detwasm()
            .current_dir(t.path())
            .args(["run", "job/job.yaml", "-o", "never"])
            .output()
            .unwrap(),
    );
    assert!(e.contains(&cid), "{e}");
    // Fetched from the node's gateway; published to its RPC.
    let out = detwasm()
        .current_dir(t.path())
        .args([
            "run",
            "job/job.yaml",
            "--json",
            "--receipt",
            "receipt.json",
            "-o",
            "results",
            "--gateway",
            &node.url,
            "--publish",
            "--ipfs-api",
            &node.url,
        ])
        .output()
        .unwrap();
    let r = receipt(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("published:    {}", r["cid"].as_str().unwrap())),
        "{err}"
    );
    let stdout = std::fs::read(t.path().join("results/stdout")).unwrap();
    assert!(
        String::from_utf8_lossy(&stdout).contains("sub"),
        "the input was mounted"
    );
    // The receipt names the input by its CID under the job's profile (detwasm's own
    // hash of what was mounted), whatever CID the job file fetched it by.
    let ours = ok(&detwasm()
        .args(["hash", "--hidden"])
        .arg(&src)
        .output()
        .unwrap());
    assert_eq!(
        r["job"]["inputs"][1]["cid"].as_str(),
        Some(ours.trim()),
        "{r}"
    );
    assert_eq!(
        node.cat(&format!("{}/stdout", r["cid"].as_str().unwrap())),
        stdout
    );
    // The same run with the CAR beside the job file gives the same receipt.
    let car = job.join(format!("{cid}.car"));
    ok(&detwasm()
        .args([
            "fetch",
            &cid,
            "--car",
            car.to_str().unwrap(),
            "--ipfs-api",
            &node.url,
        ])
        .output()
        .unwrap());
    let local = receipt(
        &detwasm()
            .current_dir(t.path())
            .args(["run", "job/job.yaml", "--json", "-o", "results-local"])
            .output()
            .unwrap(),
    );
    assert_eq!((&local["cid"], &local["job_id"]), (&r["cid"], &r["job_id"]));
    // A verifier with nothing but the receipt: the module and the input from the node,
    // where the provider published them under the receipt's CIDs.
    let module = ok(&detwasm()
        .args(["hash", "--publish", "--ipfs-api", &node.url])
        .arg(job.join("probe.wasm"))
        .output()
        .unwrap());
    assert_eq!(module.trim(), r["module_cid"].as_str().unwrap());
    // The job file's inputs: /inputs, and the folder its local file input was staged in
    // (mounted at /, holding probe.wasm).
    let staged = t.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    std::fs::copy(job.join("probe.wasm"), staged.join("probe.wasm")).unwrap();
    for (dir, input) in [(&src, 1), (&staged, 0)] {
        let cid = ok(&detwasm()
            .args(["hash", "--hidden", "--publish", "--ipfs-api", &node.url])
            .arg(dir)
            .output()
            .unwrap());
        assert_eq!(
            cid.trim(),
            r["job"]["inputs"][input]["cid"].as_str().unwrap()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_dir_all(&job).unwrap();
    let e = failed(
        &detwasm()
            .current_dir(t.path())
            .args(["verify", "receipt.json"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("--find"), "{e}");
    let out = detwasm()
        .current_dir(t.path())
        .args(["verify", "receipt.json", "--json", "--ipfs-api", &node.url])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["verified"], true, "{report}");
}

/// A module folder that ships only its template (the entry module named by CID) runs with
/// the module fetched from the node, as the same job as with the module beside it.
#[test]
fn a_module_folder_without_its_wasm_fetches_it_by_cid() {
    let t = tempfile::tempdir().unwrap();
    let node = Node::start(&t.path().join("repo"));
    let src = root().join("modules/cowsay");
    let bare = t.path().join("cowsay");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(
        src.join("lilypad_module.json.tmpl"),
        bare.join("lilypad_module.json.tmpl"),
    )
    .unwrap();
    let run = |dir: &Path, out: &str, extra: &[&str]| {
        detwasm()
            .current_dir(t.path())
            .arg("run")
            .arg(dir)
            .args(["-i", "Message=moo", "--json", "-o", out])
            .args(extra)
            .output()
            .unwrap()
    };
    let e = failed(&run(&bare, "never", &[]));
    assert!(
        e.contains("Qmf4QYeAyxmai1ksbWp4D7opTa6hVSosjbubMwiv4yax7c"),
        "{e}"
    );
    // The module's bytes (modules/cowsay/cowsay.wasm is a link to its build).
    std::fs::copy(src.join("cowsay.wasm"), t.path().join("cowsay.wasm")).unwrap();
    let cid = ok(&detwasm()
        .args(["hash", "--publish", "--ipfs-api", &node.url])
        .arg(t.path().join("cowsay.wasm"))
        .output()
        .unwrap());
    assert_eq!(cid.trim(), "Qmf4QYeAyxmai1ksbWp4D7opTa6hVSosjbubMwiv4yax7c");
    let fetched = receipt(&run(&bare, "a", &["--gateway", &node.url]));
    let beside = receipt(&run(&src, "b", &[]));
    assert_eq!(
        (
            &fetched["cid"],
            &fetched["job_id"],
            &fetched["instructions"]
        ),
        (&beside["cid"], &beside["job_id"], &beside["instructions"])
    );
}

/// A job file's CID text never names a file outside the scratch folder the CARs are
/// fetched into: the CID parser skips what comes before `/ipfs/`, so
/// `../../victim/ipfs/CID` parsed, and its CAR was written there, or a file there
/// removed (found by review). Such a text is not fetched; the job is refused naming it,
/// and the operator's file stays as it was.
#[test]
fn a_job_files_cid_text_names_no_file_outside_the_scratch_folder() {
    let t = tempfile::tempdir().unwrap();
    let (node, _, cid) = Node::serving_sample(t.path());
    // A file of the operator's in a folder named `ipfs` (to be removed), and an empty one
    // (to be written in).
    let victim = t.path().join("victim/ipfs");
    let empty = t.path().join("empty/ipfs");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(victim.join(format!("{cid}.car")), "the operator's own").unwrap();
    let job = probe_folder(&t.path().join("a/b/job"));
    // From the scratch folder (a folder of the temporary folder) up to the root, then
    // down to the victim: from the job file's folder, deeper, it names nothing.
    let up = "../".repeat(std::env::temp_dir().components().count());
    let below_root = |p: &Path| p.strip_prefix("/").unwrap().display().to_string();
    for text in [
        format!("{up}{}/{cid}", below_root(&victim)),
        format!("{}/{cid}", empty.display()),
    ] {
        std::fs::write(job.join("job.yaml"), probe_job(&format!("\"{text}\""))).unwrap();
        let e = failed(
            &detwasm()
                .current_dir(t.path())
                .args([
                    "run",
                    "a/b/job/job.yaml",
                    "-o",
                    "never",
                    "--gateway",
                    &node.url,
                ])
                .output()
                .unwrap(),
        );
        assert!(e.contains("job.yaml"), "{e}");
        assert_eq!(
            std::fs::read_to_string(victim.join(format!("{cid}.car"))).unwrap(),
            "the operator's own",
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1, "{e}");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{e}");
    }
}

/// A node whose `dag/import` answer says the import was not pinned, in 200 KB of text
/// with escape sequences: publishing fails, showing at most 512 bytes of it, control
/// characters replaced (found by review: the text was printed whole, escapes and all).
#[test]
fn a_nodes_pin_error_is_shown_short_and_without_control_characters() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f.txt"), "published\n").unwrap();
    let cid = ok(&detwasm()
        .current_dir(t.path())
        .args(["hash", "f.txt"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = format!(
        "{{\"Root\":{{\"Cid\":{{\"/\":\"{cid}\"}},\"PinErrorMsg\":\"\\u001b[2J\\u001b]0;PWNED\\u0007{}\"}}}}\n",
        "A".repeat(200_000)
    );
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // The whole upload first (chunked: it ends with an empty chunk).
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            answer.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(answer.as_bytes());
        // Closed only once the client has read it all and closed its side (closing
        // with unread bytes would reset the connection under the answer).
        let _ = s.shutdown(std::net::Shutdown::Write);
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let e = failed(
        &detwasm()
            .current_dir(t.path())
            .args(["hash", "f.txt", "--publish", "--ipfs-api", &url])
            .output()
            .unwrap(),
    );
    server.join().unwrap();
    assert!(
        e.contains("imported but not pinned: ?[2J?]0;PWNED?AAA"),
        "{e}"
    );
    assert!(!e.contains('\x1b') && e.len() < 2000, "{} bytes", e.len());
}
