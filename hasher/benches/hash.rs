//! Criterion benchmarks of the hasher: SHA-256 leaf hashing of a large in-memory file
//! under both profiles, and a directory of many small files.
//! Run with `cargo bench -p detwasm-hasher`; the side-by-side comparison with openssl and
//! the JS importer is `benches/hash-vs-peers.sh` at the workspace root.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use detwasm_hasher::{Hasher, Node, Options, Profile};
use std::collections::BTreeMap;

fn big_file(c: &mut Criterion) {
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let tree = Node::bytes(data.clone());
    let mut g = c.benchmark_group("file-64MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for p in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
        g.bench_with_input(BenchmarkId::from_parameter(p), &p, |b, &p| {
            b.iter(|| {
                Hasher::new(Options::profile(p))
                    .hash_tree(&tree)
                    .unwrap()
                    .root
            })
        });
    }
    g.finish();
}

fn small_files(c: &mut Criterion) {
    let mut dir = BTreeMap::new();
    for i in 0..10_000u32 {
        dir.insert(format!("f{i:05}"), Node::bytes(i.to_le_bytes().repeat(256)));
    }
    let tree = Node::Dir(dir);
    let mut g = c.benchmark_group("10k-files-1KiB");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(10);
    g.bench_function("unixfs-v0-2015", |b| {
        b.iter(|| {
            Hasher::new(Options::default())
                .hash_tree(&tree)
                .unwrap()
                .root
        })
    });
    g.finish();
}

criterion_group!(benches, big_file, small_files);
criterion_main!(benches);
