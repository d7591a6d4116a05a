//! CIDs pinned before the importer's tables were made compact (commit ec015ed, checked
//! against ipfs-unixfs-importer by the workspace's `tests/hash_conformance.rs`): large
//! folders of long names (HAMT shards with sub-shards) and a mixed tree, in memory, on
//! disk, and mixed, with every entry's CID, kind, size and pre-order position.
//! The CIDs are the contract: a change in how the tree is held must not move one.

use detwasm_hasher::{FileContent, Hashed, Hasher, Node, Options, Profile};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// `n` empty files named `%08x` followed by `a`s, `name_len` bytes in all: the names a
/// guest filling its output quota uses.
fn flat(n: usize, name_len: usize) -> Node {
    let fill = "a".repeat(name_len - 8);
    Node::dir_from((0..n).map(|i| (format!("{i:08x}{fill}"), Node::bytes(""))))
}

/// Files with content, nested folders, symlinks, hidden names, an empty folder and a
/// sharded folder beside a plain one.
fn mixed() -> Node {
    let sized = |i: usize| Node::bytes(vec![i as u8; i * 37]);
    Node::dir_from([
        ("stdout", Node::bytes("out\n")),
        ("exitCode", Node::bytes("0")),
        (".hidden", Node::bytes("h")),
        (
            "outputs",
            Node::dir_from([
                ("sharded", flat(3_000, 100)),
                (
                    "plain",
                    Node::dir_from((0..300).map(|i| (format!("f{i:03}"), sized(i)))),
                ),
                ("empty", Node::dir()),
                ("link", Node::Symlink("../stdout".into())),
                (
                    "deep",
                    Node::dir_from([(
                        "a",
                        Node::dir_from([
                            ("b", Node::dir_from([("c", Node::bytes(vec![1; 300_000]))])),
                            (".dot", Node::dir_from([("x", Node::bytes("x"))])),
                            ("z", Node::Symlink("b/c".into())),
                        ]),
                    )]),
                ),
            ]),
        ),
    ])
}

/// Write an in-memory tree to disk.
fn write(node: &Node, path: &Path) {
    match node {
        Node::File(FileContent::Bytes(b)) => std::fs::write(path, b).unwrap(),
        Node::Dir(entries) => {
            std::fs::create_dir(path).unwrap();
            for (name, child) in entries {
                write(child, &path.join(name));
            }
        }
        Node::Symlink(target) => std::os::unix::fs::symlink(target, path).unwrap(),
        _ => unreachable!("only bytes, folders and symlinks here"),
    }
}

/// The root, and a digest of every entry (path, CID, kind, size, in order): the CID of
/// the listing hashed as one file.
fn summary(h: &Hashed) -> (String, String) {
    let listing: String = detwasm_hasher::EntryPaths::of(&h.entries)
        .map(|(path, e)| format!("{path}\t{}\t{}\t{}\n", e.cid, e.kind.name(), e.size))
        .collect();
    let digest = Hasher::new(Options::default())
        .hash_tree(&Node::bytes(listing))
        .unwrap()
        .root;
    (h.root.to_string(), digest.to_string())
}

fn opts(p: Profile, hidden: bool) -> Options {
    Options::profile(p).with_hidden(hidden)
}

/// Hash `tree` in memory and from disk under each of `cases` (options, then root and
/// entries digest), which must both give the case's CIDs, and as a disk folder inside a
/// memory folder, which must link the same CID. The tree is written to disk once.
fn check(tree: &Node, cases: &[(Options, (&str, &str))]) {
    let t = tempfile::tempdir().unwrap();
    let on_disk = t.path().join("tree");
    write(tree, &on_disk);
    for (o, want) in cases {
        let name = format!("{} hidden={}", o.profile, o.hidden);
        let mem = Hasher::new(o.clone())
            .entries(true)
            .hash_tree(tree)
            .unwrap();
        let disk = Hasher::new(o.clone())
            .entries(true)
            .hash_path(&on_disk)
            .unwrap();
        let want = (want.0.to_string(), want.1.to_string());
        assert_eq!(summary(&mem), want, "{name} in memory");
        assert_eq!(summary(&disk), want, "{name} on disk");
        let wrapped = Hasher::new(o.clone())
            .entries(true)
            .hash_tree(&Node::dir_from([("w", Node::Disk(on_disk.clone()))]))
            .unwrap();
        assert_eq!(wrapped.entries.len(), mem.entries.len() + 1, "{name}");
        assert_eq!(
            (wrapped.entries[1].depth, wrapped.entries[1].name.as_str()),
            (1, "w")
        );
        assert_eq!(
            wrapped.entries[1].cid, mem.root,
            "{name} inside a memory folder"
        );
    }
}

#[test]
fn a_large_folder_of_long_names_keeps_its_cids() {
    check(
        &flat(20_000, 255),
        &[
            (
                opts(Profile::UnixfsV0_2015, false),
                (
                    "QmajLYktEzAovDiwcnpi2caMBAUeBSphY2jFwytvAbJDQr",
                    "QmUGYH5MwKt3tJC4xEPEV5JJNFKgE3UuCpvVkdUByY8w9h",
                ),
            ),
            (
                opts(Profile::UnixfsV1_2025, false),
                (
                    "bafybeihigbf4ty4xza7lzm7uy6spfdf26wsutcnuxkfgg3c3ld3szqd65u",
                    "QmZpg4f8cuJ9MVoSKygfzL4LtCTMutJfX5A9qyEP18nrfv",
                ),
            ),
        ],
    );
}

#[test]
fn a_mixed_tree_keeps_its_cids() {
    let cases: Vec<(Options, (&str, &str))> = [
        (
            Profile::UnixfsV0_2015,
            false,
            (
                "QmYiJewh1MrLZtBKVq1DS41G1JosJgjh12DGyEXEaZPeyA",
                "QmYC6opB1tuZ1nqGycnC3gzbi4YMmLTyMA6QUjHuWPY1TE",
            ),
        ),
        (
            Profile::UnixfsV0_2015,
            true,
            (
                "QmUUiUDVSmekY65hBn4twCgiECBLXrc3K2YKqfCikvFPbS",
                "QmbhHYZouSHZEhH1gdXyT9Vb36133CYhhrrUpMNerXnLcG",
            ),
        ),
        (
            Profile::UnixfsV1_2025,
            false,
            (
                "bafybeifivj2kkmxqcco4lwqpc6khjatgubah27g4nwxbv3go7lxf7e7vl4",
                "QmXtuT2zY6BLUaCoDy9nTDFhY3b36LZaaxfDE5K5sjdG5e",
            ),
        ),
        (
            Profile::UnixfsV1_2025,
            true,
            (
                "bafybeifh4hirwxbioeuzoefqxinuhgyx6rfy5p4a4fqouxj6lpz2wkjswi",
                "Qmb9mKwj1FjkZ9P3UHJyEmTo2Ljtt9PaitjDRTgvnnjuik",
            ),
        ),
    ]
    .into_iter()
    .map(|(p, hidden, want)| (opts(p, hidden), want))
    .collect();
    check(&mixed(), &cases);
}

/// Readers and disk files inside a memory tree, as the runtime's results trees hold them.
#[test]
fn memory_readers_and_disk_files_keep_their_cids() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), vec![9u8; 1 << 20]).unwrap();
    let data = vec![3u8; 600_000];
    let tree = Node::dir_from([
        ("file", Node::path(t.path().join("f"))),
        (
            "reader",
            Node::File(FileContent::Open(Arc::new(move || {
                Ok(Box::new(io::Cursor::new(data.clone())) as Box<dyn Read + Send>)
            }))),
        ),
        ("sub", Node::Disk(t.path().to_path_buf())),
    ]);
    for (p, want) in [
        (
            Profile::UnixfsV0_2015,
            (
                "QmbtLqcjkKVX4GVMQL5kTLApBd8dwRV9aBMEcC7pFopppT",
                "QmYHsuBM5tYg9ov3zpXj7eW12tsp4K2aJ8kffzuEu185cm",
            ),
        ),
        (
            Profile::UnixfsV1_2025,
            (
                "bafybeiecq64uf7ycwm2jvsfcc5lccklircetm2rz3req4xkmdxr64eldg4",
                "QmbgMFXvJmQZgFLcJ34wV1eE9VTgaAXFA1SE3WwYbDGa2Y",
            ),
        ),
    ] {
        let h = Hasher::new(Options::profile(p))
            .entries(true)
            .hash_tree(&tree)
            .unwrap();
        let (root, digest) = summary(&h);
        assert_eq!((root.as_str(), digest.as_str()), want, "{p}");
    }
}
