//! The results directory (Bacalhau layout) and its CID.
//!
//! ```text
//! RESULTS/stdout      what the guest wrote to fd 1
//! RESULTS/stderr      what it wrote to fd 2, then one `detwasm: ...` line if the run
//!                     did not end by exiting (trap, out of fuel, output quota, timeout)
//! RESULTS/exitCode    decimal text, no newline
//! RESULTS/<name>/     each output volume (default `outputs`, the guest's `/outputs`)
//! ```
//!
//! CIDs are computed by `detwasm-hasher` (never by code of this crate): the results
//! directory with hidden files included unless the job says `skip_hidden`, inputs with
//! hidden files included (the guest sees them), the module as a file.

use detwasm_hasher::{Node, Options};
use std::path::Path;

use crate::error::RunError;

pub use detwasm_hasher::Profile;

/// Parses a profile name as `hash` takes it (`unixfs-v0-2015`, `unixfs-v1-2025`).
pub fn parse_profile(s: &str) -> Option<Profile> {
    s.parse().ok()
}

/// serde for [`Profile`] as its IPIP-499 name (`#[serde(with = "crate::results::profile_serde")]`).
pub mod profile_serde {
    use super::Profile;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Profile, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Profile, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// CID of a directory tree under `profile`.
pub fn cid_of_dir(path: &Path, profile: Profile, include_hidden: bool) -> Result<String, RunError> {
    let opts = Options::profile(profile).with_hidden(include_hidden);
    detwasm_hasher::hash_path(path, &opts)
        .map(|h| h.root.to_string())
        .map_err(|e| RunError::Hash {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// CID of `bytes` as a UnixFS file under `profile`.
pub fn cid_of_bytes(bytes: &[u8], profile: Profile) -> Result<String, RunError> {
    detwasm_hasher::hash_tree(&Node::bytes(bytes.to_vec()), &Options::profile(profile))
        .map(|h| h.root.to_string())
        .map_err(|e| RunError::Hash {
            what: "the module".into(),
            reason: e.to_string(),
        })
}
