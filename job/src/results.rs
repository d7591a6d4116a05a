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

use detwasm_hasher::{HashError, Hasher, Node, Options};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    cid_of_dir_by(path, profile, include_hidden, None)
}

/// [`cid_of_dir`], given up at `deadline` (the instant, and the timeout it was set from
/// for the message) with [`RunError::InputTimeout`]: a job's inputs are hashed inside its
/// wall-clock timeout, and the hasher reads the clock at every entry and every window of
/// a file's bytes ([`detwasm_hasher::Hasher::deadline`]), so one huge file does not run
/// past it. Rejected: checking the deadline between inputs only (a review's 40 mounts of
/// a 1 GiB sparse file hashed 40 GiB after `--timeout 1`; one file of a terabyte would
/// still take minutes).
pub fn cid_of_dir_by(
    path: &Path,
    profile: Profile,
    include_hidden: bool,
    deadline: Option<(Instant, Duration)>,
) -> Result<String, RunError> {
    let opts = Options::profile(profile).with_hidden(include_hidden);
    let mut hasher = Hasher::new(opts);
    if let Some((at, _)) = deadline {
        hasher = hasher.deadline(at);
    }
    hasher
        .hash_path(path)
        .map(|h| h.root.to_string())
        .map_err(|e| match (e, deadline) {
            (HashError::Deadline, Some((_, timeout))) => RunError::InputTimeout {
                what: format!("hashing input {}", path.display()),
                secs: timeout.as_secs_f64(),
            },
            (e, _) => RunError::Hash {
                what: path.display().to_string(),
                reason: e.to_string(),
            },
        })
}

/// The CIDs of a job's input folders, each hashed once per job: inputs naming the same
/// folder (by canonical path) share its CID. Hidden files are included (the guest sees
/// them). Rejected: hashing every input (a review's 40 mounts of one folder of a 1 GiB
/// file hashed 40 GiB); keying by the path as the job gives it (`data`, `./data` and a
/// symlink to it are one folder).
#[derive(Default)]
pub struct InputCids {
    by_root: HashMap<PathBuf, String>,
}

impl InputCids {
    /// The CID of the input folder at canonical path `root`: hashed the first time
    /// ([`cid_of_dir_by`], given up at `deadline`), remembered after.
    pub fn of(
        &mut self,
        root: &Path,
        profile: Profile,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<String, RunError> {
        if let Some(cid) = self.by_root.get(root) {
            return Ok(cid.clone());
        }
        let cid = cid_of_dir_by(root, profile, true, deadline)?;
        self.by_root.insert(root.to_path_buf(), cid.clone());
        Ok(cid)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_by_a_deadline_is_the_same_cid_or_a_timeout_naming_the_input() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"f").unwrap();
        let profile = Profile::UnixfsV0_2015;
        let later = Some((
            Instant::now() + Duration::from_secs(3600),
            Duration::from_secs(1),
        ));
        assert_eq!(
            cid_of_dir_by(t.path(), profile, true, later).unwrap(),
            cid_of_dir(t.path(), profile, true).unwrap()
        );
        let past = Some((Instant::now(), Duration::from_millis(1500)));
        let err = cid_of_dir_by(t.path(), profile, true, past).unwrap_err();
        assert!(matches!(err, RunError::InputTimeout { .. }), "{err}");
        let shown = err.to_string();
        assert!(
            shown.contains(&t.path().display().to_string()) && shown.contains("1.5 s"),
            "{shown}"
        );
    }

    #[test]
    fn an_input_folder_is_hashed_once_per_job() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::write(root.join("f"), b"first").unwrap();
        let profile = Profile::UnixfsV0_2015;
        let mut cids = InputCids::default();
        let first = cids.of(&root, profile, None).unwrap();
        assert_eq!(first, cid_of_dir(&root, profile, true).unwrap());
        // Changed on disk: a folder named again is not hashed again (the run's scan
        // stamps, checked after the guest, catch an input that changed meanwhile).
        std::fs::write(root.join("f"), b"second").unwrap();
        assert_eq!(cids.of(&root, profile, None).unwrap(), first);
        // A past deadline is not even looked at for a folder already hashed.
        let past = Some((Instant::now(), Duration::from_secs(1)));
        assert_eq!(cids.of(&root, profile, past).unwrap(), first);
        // Another job (a fresh map) hashes it afresh.
        let again = InputCids::default().of(&root, profile, None).unwrap();
        assert_ne!(again, first);
        assert_eq!(again, cid_of_dir(&root, profile, true).unwrap());
    }
}
