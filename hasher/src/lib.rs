//! # detwasm-hasher
//!
//! Computes the IPFS CID of a file or a directory tree **exactly as IPFS tools do**, so a
//! CID printed by detwasm can be compared with one printed by `ipfs add`, and exports
//! the DAG as a CARv1 that `ipfs dag import` accepts.
//!
//! What it is for:
//! - UnixFS import with the two IPIP-499 profiles ([`Profile::UnixfsV0_2015`], kubo's
//!   `ipfs add -r` defaults and the default here; [`Profile::UnixfsV1_2025`]) and the
//!   `ipfs add` knobs (CID version, raw leaves, `size-N` chunker, max links, HAMT
//!   threshold and its kubo < 0.40 `>=` comparison);
//! - trees on disk ([`Hasher::hash_path`]) and trees in memory ([`Hasher::hash_tree`] over
//!   a [`Node`]), streamed with bounded memory and hashed on all cores, with a
//!   deterministic result;
//! - CAR export in `ipfs dag export` order ([`Hasher::car`]), and reading such a CAR
//!   back into files and folders with every block checked ([`unpack`]).
//!
//! Large files are memory-mapped a window at a time: inputs must not be truncated while
//! they are hashed (a file that changes size is reported as an error where it can be
//! seen, but truncation under a live mapping raises SIGBUS, as for any mmap reader).
//!
//! What it is not: an IPFS node or blockstore (nothing is kept once hashed), a general
//! UnixFS exporter ([`unpack`] reads back only sha2-256 dag-pb/raw trees), or an implementation of other chunkers (rabin, buzhash), the trickle
//! layout, UnixFS mode/mtime metadata, or hashes other than sha2-256. It does not depend
//! on the WebAssembly runtime.
//!
//! ```
//! use detwasm_hasher::{Hasher, Node, Options, Profile};
//!
//! let tree = Node::dir_from([("hello.txt", Node::bytes("hello\n"))]);
//! let out = Hasher::new(Options::profile(Profile::UnixfsV0_2015)).hash_tree(&tree)?;
//! // The same CID `ipfs add -r` prints for a folder holding hello.txt.
//! assert_eq!(out.root.to_string(), "QmU5PLEGqjetW4RAmXgHpEFL7nVCL3vFnEyrCKUfRk4MSq");
//! # Ok::<(), detwasm_hasher::HashError>(())
//! ```
//!
//! Module map (one concern each): [`cid`], [`pb`] (protobuf primitives), [`dagpb`],
//! [`unixfs`], [`chunker`], [`balanced`] (file layout), [`file`](mod@file), [`murmur3`], [`hamt`],
//! [`dir`], [`car`], [`options`], [`tree`] (inputs), [`import`] (orchestration),
//! [`unpack`] (CAR to disk).
//!
//! The reference for every byte is the npm package `ipfs-unixfs-importer` 17 and kubo;
//! the differential suite lives in the workspace's `tests/hash_conformance.rs`.

pub mod balanced;
pub mod car;
pub mod chunker;
pub mod cid;
pub mod dagpb;
pub mod dir;
pub mod error;
pub mod file;
pub mod hamt;
pub mod import;
pub mod murmur3;
pub mod options;
pub mod pb;
pub mod tree;
pub mod unixfs;
pub mod unpack;

pub use crate::cid::{Cid, CidVersion};
pub use crate::error::{HashError, Result};
pub use crate::import::{
    hash_path, hash_tree, Entry, EntryKind, EntryPaths, Hashed, Hasher, Progress,
};
pub use crate::options::{parse_chunker, HamtCompare, HamtEstimate, Options, Profile};
pub use crate::tree::{FileContent, Node, OpenFn};
