//! The library API as the runtime uses it: in-memory trees, mixed memory/disk trees,
//! CAR output to any writer, progress, and errors that name the path.

use detwasm_hasher::{
    hash_path, hash_tree, EntryKind, FileContent, HashError, Hasher, Node, Options, Profile,
};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn sample(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("outputs/sub")).unwrap();
    std::fs::write(root.join("stdout"), b"out\n").unwrap();
    std::fs::write(root.join("stderr"), b"").unwrap();
    std::fs::write(root.join("exitCode"), b"0").unwrap();
    std::fs::write(root.join("outputs/big"), vec![7u8; 700_000]).unwrap();
    std::fs::write(root.join("outputs/sub/.hidden"), b"h").unwrap();
    std::os::unix::fs::symlink("../stdout", root.join("outputs/link")).unwrap();
}

fn memory_twin(root: &std::path::Path) -> Node {
    let big = vec![7u8; 700_000];
    Node::dir_from([
        ("stdout", Node::bytes("out\n")),
        ("stderr", Node::bytes("")),
        ("exitCode", Node::path(root.join("exitCode"))),
        (
            "outputs",
            Node::dir_from([
                (
                    "big",
                    Node::File(FileContent::Open(Arc::new(move || {
                        Ok(Box::new(io::Cursor::new(big.clone())) as Box<dyn Read + Send>)
                    }))),
                ),
                ("sub", Node::dir_from([(".hidden", Node::bytes("h"))])),
                ("link", Node::Symlink("../stdout".into())),
            ]),
        ),
    ])
}

#[test]
fn memory_mixed_and_disk_trees_agree() {
    let t = tempfile::TempDir::new().unwrap();
    sample(t.path());
    for p in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
        for hidden in [false, true] {
            let opts = Options::profile(p).with_hidden(hidden);
            let disk = hash_path(t.path(), &opts).unwrap();
            let mem = hash_tree(&memory_twin(t.path()), &opts).unwrap();
            assert_eq!(disk.root, mem.root, "{p} hidden={hidden}");
            let mixed = Node::dir_from([
                ("stdout", Node::bytes("out\n")),
                ("stderr", Node::bytes("")),
                ("exitCode", Node::bytes("0")),
                ("outputs", Node::Disk(t.path().join("outputs"))),
            ]);
            assert_eq!(hash_tree(&mixed, &opts).unwrap().root, disk.root);
            assert_eq!(disk.size, 700_005 + u64::from(hidden));
        }
    }
}

#[test]
fn car_to_a_vec_progress_and_entries() {
    let t = tempfile::TempDir::new().unwrap();
    sample(t.path());
    let mut car = Vec::new();
    let seen = AtomicU64::new(0);
    let progress = |p: detwasm_hasher::Progress| {
        seen.fetch_max(p.done, Ordering::Relaxed);
        assert!(p.done <= p.total);
    };
    let out = Hasher::new(Options::profile(Profile::UnixfsV1_2025))
        .entries(true)
        .car(&mut car)
        .progress(&progress)
        .hash_path(t.path())
        .unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), out.size);
    let paths: Vec<(String, EntryKind)> = detwasm_hasher::EntryPaths::of(&out.entries)
        .map(|(path, e)| (path, e.kind))
        .collect();
    let paths: Vec<(&str, EntryKind)> = paths.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    assert_eq!(
        paths,
        [
            ("", EntryKind::Directory),
            ("exitCode", EntryKind::File),
            ("outputs", EntryKind::Directory),
            ("outputs/big", EntryKind::File),
            ("outputs/link", EntryKind::Symlink),
            ("outputs/sub", EntryKind::Directory),
            ("stderr", EntryKind::File),
            ("stdout", EntryKind::File),
        ]
    );
    // The CAR starts with a header naming the root, then the root block's section.
    let header_len = car[0] as usize;
    let root = out.root.to_bytes();
    let header = &car[1..1 + header_len];
    assert!(header.windows(root.len()).any(|w| w == root.as_slice()));
    let first = &car[1 + header_len..];
    assert_eq!(
        &first[2..2 + root.len()],
        root.as_slice(),
        "root block first"
    );
    // The same tree hashed again gives the same CAR, byte for byte.
    let mut again = Vec::new();
    Hasher::new(Options::profile(Profile::UnixfsV1_2025))
        .car(&mut again)
        .hash_path(t.path())
        .unwrap();
    assert_eq!(car, again);
}

#[test]
fn errors_name_the_path() {
    let t = tempfile::TempDir::new().unwrap();
    let missing = t.path().join("missing");
    let err = hash_path(&missing, &Options::default()).unwrap_err();
    assert!(matches!(err, HashError::Read { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let failing = Node::dir_from([(
        "f",
        Node::File(FileContent::Open(Arc::new(|| {
            Err(io::Error::other("boom"))
        }))),
    )]);
    let err = hash_tree(&failing, &Options::default()).unwrap_err();
    assert_eq!(err.to_string(), "cannot read f: boom");
    let bad = Options {
        chunk_size: 0,
        ..Options::default()
    };
    assert!(matches!(
        hash_tree(&Node::dir(), &bad),
        Err(HashError::Options(_))
    ));
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Random small trees: files of up to 3 chunks (chunk size forced small below), folders,
    /// symlinks; names from a small alphabet so that they collide and sort interestingly.
    fn tree() -> impl Strategy<Value = Node> {
        let name = "[a-cA-C0-9._é]{1,4}".prop_filter("not . or ..", |n| n != "." && n != "..");
        let leaf = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..700).prop_map(Node::bytes),
            "[a-z./]{1,8}".prop_map(Node::Symlink),
        ];
        leaf.prop_recursive(3, 24, 6, move |inner| {
            proptest::collection::btree_map(name.clone(), inner, 0..6).prop_map(Node::Dir)
        })
        .prop_map(|n| match n {
            Node::Dir(_) => n,
            other => Node::Dir(BTreeMap::from([("only".to_string(), other)])),
        })
    }

    fn write(node: &Node, path: &std::path::Path) {
        match node {
            Node::File(FileContent::Bytes(b)) => std::fs::write(path, b).unwrap(),
            Node::Symlink(t) => std::os::unix::fs::symlink(t, path).unwrap(),
            Node::Dir(entries) => {
                std::fs::create_dir(path).unwrap();
                for (name, child) in entries {
                    write(child, &path.join(name));
                }
            }
            other => unreachable!("not generated: {other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn a_tree_in_memory_and_on_disk_hash_the_same(t in tree(), hidden: bool, v1: bool) {
            let dir = tempfile::TempDir::new().unwrap();
            let root = dir.path().join("t");
            write(&t, &root);
            let profile = if v1 { Profile::UnixfsV1_2025 } else { Profile::UnixfsV0_2015 };
            let mut opts = Options::profile(profile).with_hidden(hidden);
            opts.chunk_size = 256;
            opts.max_links = 2;
            opts.hamt_threshold = 200;
            let disk = Hasher::new(opts.clone()).entries(true).hash_path(&root).unwrap();
            let mem = Hasher::new(opts).entries(true).hash_tree(&t).unwrap();
            prop_assert_eq!(disk.root, mem.root);
            prop_assert_eq!(disk.size, mem.size);
            prop_assert_eq!(disk.entries, mem.entries);
        }
    }
}
