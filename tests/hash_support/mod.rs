//! Shared by the `hash_*` integration tests: tree generation and the differential peer
//! (`conformance/import.mjs`, ipfs-unixfs-importer 17 under node).
#![allow(dead_code)]

use detwasm_hasher::{CidVersion, EntryKind, HamtCompare, Hasher, Options, Profile};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const V0: Profile = Profile::UnixfsV0_2015;
pub const V1: Profile = Profile::UnixfsV1_2025;
pub const PROFILES: [Profile; 2] = [V0, V1];
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// The conformance folder; fails (never skips) when its node packages are missing.
pub fn conformance_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let marker = dir.join("node_modules/ipfs-unixfs-importer/package.json");
    assert!(
        marker.exists(),
        "the conformance peer is not installed ({} is missing): run scripts/setup.sh \
         (it runs `npm ci --prefix conformance`)",
        marker.display()
    );
    dir
}

/// Run a node script from the conformance folder; panics with its stderr on failure.
pub fn node(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let dir = conformance_dir();
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (install Node.js 20+): {e}"));
    assert!(
        out.status.success(),
        "node {script} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Write `content` to `root/rel`, creating parent folders.
pub fn file(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("has a parent")).unwrap();
    fs::write(p, content).unwrap();
}

/// Create folder `root/rel` (and parents).
pub fn dir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

/// Create symlink `root/rel` -> `target`.
pub fn symlink(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("has a parent")).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// One differential case: a path hashed with some options.
pub struct Case {
    pub id: String,
    pub path: PathBuf,
    pub opts: Options,
}

impl Case {
    pub fn new(id: impl Into<String>, path: impl Into<PathBuf>, opts: Options) -> Case {
        Case {
            id: id.into(),
            path: path.into(),
            opts,
        }
    }

    /// The importer options that express `opts`.
    fn js_json(&self) -> serde_json::Value {
        let o = &self.opts;
        let base = Options::profile(o.profile);
        let mut v = serde_json::json!({
            "id": self.id,
            "path": self.path,
            "profile": o.profile.name(),
            "hidden": o.hidden,
        });
        if o.cid_version != base.cid_version {
            v["cidVersion"] = (if o.cid_version == CidVersion::V0 {
                0
            } else {
                1
            })
            .into();
        }
        if o.raw_leaves != base.raw_leaves {
            v["rawLeaves"] = o.raw_leaves.into();
        }
        if o.chunk_size != base.chunk_size {
            v["chunkSize"] = o.chunk_size.into();
        }
        if o.max_links != base.max_links {
            v["maxLinks"] = o.max_links.into();
        }
        assert_eq!(
            o.hamt_estimate, base.hamt_estimate,
            "the peer ties the estimate to the profile"
        );
        // The importer always compares with `>`; for integers `>= T` is `> T - 1`.
        let threshold = match o.hamt_compare {
            HamtCompare::Greater => o.hamt_threshold,
            HamtCompare::GreaterOrEqual => o.hamt_threshold - 1,
        };
        if threshold != base.hamt_threshold {
            v["shardSplitThresholdBytes"] = threshold.into();
        }
        v
    }
}

/// What the peer computed for one case: the root and every entry's CID by path.
#[derive(Debug)]
pub struct JsOut {
    pub root: String,
    pub entries: BTreeMap<String, String>,
}

/// Import every case with ipfs-unixfs-importer (one node process).
pub fn js_import(cases: &[Case]) -> BTreeMap<String, JsOut> {
    let job = serde_json::json!({ "cases": cases.iter().map(Case::js_json).collect::<Vec<_>>() });
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), job.to_string()).unwrap();
    let out = node("import.mjs", &[tmp.path().as_os_str()]);
    let parsed: Vec<serde_json::Value> = serde_json::from_str(&out).expect("peer prints JSON");
    parsed
        .into_iter()
        .map(|v| {
            let entries = v["entries"]
                .as_object()
                .expect("entries")
                .iter()
                .map(|(k, c)| (k.clone(), c.as_str().expect("cid").to_string()))
                .collect();
            (
                v["id"].as_str().expect("id").to_string(),
                JsOut {
                    root: v["root"].as_str().expect("root").to_string(),
                    entries,
                },
            )
        })
        .collect()
}

/// Our root, and every entry's CID and kind by path.
#[allow(clippy::type_complexity)]
pub fn ours(
    case: &Case,
) -> (
    String,
    BTreeMap<String, String>,
    BTreeMap<String, EntryKind>,
) {
    let hashed = Hasher::new(case.opts.clone())
        .entries(true)
        .hash_path(&case.path)
        .unwrap_or_else(|e| panic!("case {}: {e}", case.id));
    let entries = detwasm_hasher::EntryPaths::of(&hashed.entries)
        .map(|(path, e)| (path, e.cid.to_string()))
        .collect();
    let kinds = detwasm_hasher::EntryPaths::of(&hashed.entries)
        .map(|(path, e)| (path, e.kind))
        .collect();
    (hashed.root.to_string(), entries, kinds)
}

/// Hash every case with detwasm-hasher and with the peer; every root and every entry's
/// CID must agree. Returns our roots by case id.
pub fn check(cases: &[Case]) -> BTreeMap<String, String> {
    assert!(!cases.is_empty());
    let js = js_import(cases);
    let mut failures = Vec::new();
    let mut roots = BTreeMap::new();
    for case in cases {
        let (root, mut entries, kinds) = ours(case);
        let theirs = &js[&case.id];
        // The importer does not report empty subfolders (it yields a folder only when it
        // flushes one that received entries); their CID is the well-known empty folder,
        // checked as a whole through the parent's CID.
        let empty = Hasher::new(case.opts.clone())
            .hash_tree(&detwasm_hasher::Node::dir())
            .unwrap()
            .root
            .to_string();
        // Nor, by path, a folder inside a HAMT-sharded folder: `DirSharded.flush` re-labels
        // everything it yields with the shard's own path. Both are covered by the root.
        let hamts: Vec<String> = kinds
            .iter()
            .filter(|(_, k)| **k == EntryKind::HamtDirectory)
            .map(|(p, _)| p.clone())
            .collect();
        let under_hamt = |path: &str| {
            hamts
                .iter()
                .any(|h| h != path && (h.is_empty() || path.starts_with(&format!("{h}/"))))
        };
        entries.retain(|path, cid| {
            theirs.entries.contains_key(path)
                || (*cid != empty && !(kinds[path] != EntryKind::File && under_hamt(path)))
        });
        if root != theirs.root || entries != theirs.entries {
            let diff: Vec<String> = entries
                .keys()
                .chain(theirs.entries.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| entries.get(*k) != theirs.entries.get(*k))
                .take(5)
                .map(|k| {
                    format!(
                        "  {k:?}: ours {:?}, importer {:?}",
                        entries.get(k),
                        theirs.entries.get(k)
                    )
                })
                .collect();
            failures.push(format!(
                "case {} ({}): root ours {root}, importer {}\n{}",
                case.id,
                case.opts.profile,
                theirs.root,
                diff.join("\n")
            ));
        }
        roots.insert(case.id.clone(), root);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    roots
}

/// The same tree under both profiles (hidden as given).
pub fn both_profiles(id: &str, path: &Path, hidden: bool) -> Vec<Case> {
    PROFILES
        .iter()
        .map(|&p| {
            Case::new(
                format!("{id}/{p}"),
                path,
                Options::profile(p).with_hidden(hidden),
            )
        })
        .collect()
}
