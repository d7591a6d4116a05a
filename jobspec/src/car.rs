//! Reading a UnixFS file or folder out of a CARv1 (what `ipfs dag export` writes), so
//! that an entry module or an input named by CID can be shipped as a `.car` beside the
//! template or job file.
//!
//! The reading is the hasher's ([`detwasm_hasher::unpack`]): every block is checked
//! against its CID (sha2-256) when the CAR is parsed, so the bytes returned are exactly
//! what the CID names, whatever import settings made it; any file or folder among the
//! CAR's blocks can be taken, not only its root. What it takes: a CARv1 of one root as
//! `ipfs dag export` writes it, of dag-pb and raw blocks (CIDv0/v1). Rejected: a reader
//! of this module's own (there was one), which parsed varints and protobuf a second time
//! and disagreed with the hasher's on the edges (a varint's overflow).
//!
//! Sizes are known before anything is read out ([`Car::expanded`]): a UnixFS DAG may
//! link one block many times (a file of zeros legitimately does), so a CAR of a few
//! kilobytes can describe exabytes, and a tree of millions of entries; the size counts
//! every block each time it is reached, computed over the distinct blocks.
//!
//! [`Car::expanded`]: detwasm_hasher::unpack::Car::expanded

use std::path::Path;

use detwasm_hasher::unpack::{Car, Expanded};
use detwasm_hasher::{unixfs, Cid as HCid};

/// The largest file extracted from a CAR into memory (an entry module): the size of the
/// largest module file read ([`super::resolve::MAX_MODULE_FILE`]). The blocks visited
/// may add up to at most twice this size, so a DAG of empty blocks linked a million
/// times over is refused too.
pub const MAX_FILE: usize = super::resolve::MAX_MODULE_FILE as usize;

/// The most bytes of files a job's staging writes into its temporary folder (`TMPDIR`),
/// all its inputs together: 1 GiB. What its CAR inputs unpack to, and the files it
/// copies (a `local` file input, a `CID` file beside the job file, a copy where a hard
/// link inside the staging folder failed), share this one budget.
///
/// One budget per job, charged from each DAG's expanded size, and from each file's size,
/// before anything of the job's inputs is written: a limit per input would let a job
/// multiply it by naming inputs (four inputs of one 275 KB CAR of 500 MB of zeros wrote
/// 2 GB; sixteen `local` inputs naming one 64 MiB sparse file wrote 1.1 GB). An input
/// named twice (the same CID, the same canonical host file) is staged once and charged
/// once.
///
/// Shared rather than a second 1 GiB for copied files (rejected): what a review measured
/// was the disk a small job file can make the host fill, and one figure bounds that
/// whatever mix of CAR and file inputs a job uses; two budgets would let it write twice
/// the figure either states. A job that needs more mounts a folder, which is mounted
/// where it is and never copied. (The name is kept from when it bounded CAR content only.)
pub const MAX_JOB_CAR_BYTES: u64 = 1 << 30;

/// The most files, folders and symlinks all of a job's CAR inputs together unpack to:
/// 100,000. A few kilobytes of folders that each link the one below twice describe
/// millions (19 levels unpacked 524,288 files and as many folders in 90 s). A larger
/// tree is mounted from a folder named by its CID (`ipfs get CID -o CID`), which is
/// hashed where it is and never copied.
pub const MAX_JOB_CAR_ENTRIES: u64 = 100_000;

/// The most block visits all of a job's CAR inputs together cost, counted as the
/// unpacker counts them (bytes of each block visited, plus
/// [`detwasm_hasher::unpack::VISIT_CHARGE`] per visit): 2 GiB, so a DAG of empty
/// blocks linked over and over, which writes nothing, is bounded too.
pub const MAX_JOB_CAR_WORK: u64 = 2 << 30;

/// The most bytes of `.car` files a job reads to find its `ipfs` inputs, all its CARs
/// together: 1 GiB. Each CAR is read, checked (every block's SHA-256) and indexed at most
/// once per job, and its blocks are kept until the inputs are unpacked from them.
///
/// Reading every candidate CAR again for each CID (what staging did) cost the number of
/// distinct CIDs times the CARs' size: 200 inputs naming files of one 100 MB CAR ran
/// over 100 s, outside the run's deadline. With one read per CAR the cost is the CARs'
/// size once, and this limit bounds that (and the memory holding them) whatever the
/// number of inputs. Rejected: a limit per CAR only (1 GiB each, as before), which a
/// folder of many CARs multiplies; and re-reading from disk per input without keeping
/// the blocks, which keeps the memory low but not the time.
pub const MAX_JOB_CAR_READ: u64 = 1 << 30;

/// What a job's staging has spent of the limits above: its CAR inputs, and (bytes only,
/// [`MAX_JOB_CAR_BYTES`]) the files it copies.
#[derive(Debug, Default)]
pub struct InputBudget {
    spent: Expanded,
}

impl InputBudget {
    /// Charges one CAR input of this expanded size, or says which limit it would pass.
    pub fn charge(&mut self, size: Expanded) -> Result<(), String> {
        let bytes = self.spent.bytes.saturating_add(size.bytes);
        let entries = self.spent.entries.saturating_add(size.entries);
        let work = self.spent.work.saturating_add(size.work);
        let over = |what: String, limit: &str| {
            Err(format!(
                "the job's CAR inputs together would unpack to {what}, over the limit for all of a job's CAR inputs ({limit}); this input alone is {} bytes in {} entries",
                size.bytes, size.entries
            ))
        };
        if bytes > MAX_JOB_CAR_BYTES {
            return Err(format!(
                "the job's staged inputs (CAR content unpacked and files copied) would come to {bytes} bytes of files, over the limit for all of a job's staged inputs (1 GiB, MAX_JOB_CAR_BYTES); this input alone is {} bytes in {} entries",
                size.bytes, size.entries
            ));
        }
        if entries > MAX_JOB_CAR_ENTRIES {
            return over(
                format!("{entries} files and folders"),
                "100,000 entries, MAX_JOB_CAR_ENTRIES: for more, mount a folder named by the CID (`ipfs get CID -o CID`)",
            );
        }
        if work > MAX_JOB_CAR_WORK {
            return over(
                format!("{work} bytes of block visits (its blocks are linked over and over)"),
                "2 GiB of block visits, MAX_JOB_CAR_WORK",
            );
        }
        self.spent = Expanded {
            bytes,
            entries,
            work,
        };
        Ok(())
    }

    /// Charges a file of `size` bytes that staging copies into the job's temporary folder,
    /// or says that it would pass [`MAX_JOB_CAR_BYTES`]. Only bytes: the entries and
    /// block visits are the CAR inputs' (a job's files copied are at most one per input,
    /// `detwasm_job::job::MAX_INPUTS`).
    pub fn charge_copy(&mut self, size: u64) -> Result<(), String> {
        let bytes = self.spent.bytes.saturating_add(size);
        if bytes > MAX_JOB_CAR_BYTES {
            return Err(format!(
                "staging it ({size} bytes) in the job's temporary folder would bring the job's staged inputs (files copied or written and CAR content unpacked) to {bytes} bytes, over the limit for all of a job's staged inputs (1 GiB, MAX_JOB_CAR_BYTES); a host file is copied once however many inputs name it. For a larger file, put it in a folder of its own and name that folder: a folder is mounted where it is, never copied"
            ));
        }
        self.spent.bytes = bytes;
        Ok(())
    }
}

/// What a CID names in a CAR: its expanded size and whether it is a folder.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub size: Expanded,
    pub is_dir: bool,
}

/// The hasher's CID for a CID of a template or job file: only sha2-256 dag-pb or raw.
fn hasher_cid(want: &cid::Cid) -> Result<HCid, String> {
    HCid::from_bytes(&want.to_bytes()).ok_or_else(|| {
        format!("{want}: only sha2-256 CIDs of dag-pb or raw blocks are read from a CAR")
    })
}

/// The parsed CAR (every block checked against its CID), or why not.
pub fn parse(car: &[u8]) -> Result<Car<'_>, String> {
    Car::parse(car).map_err(|e| e.to_string())
}

/// What the CAR holds for `want` (its size, a folder or a file), without reading it out;
/// `None` when the CAR does not hold that CID. A symlink is an error: an input must be
/// a file or a folder.
pub fn held(car: &[u8], want: &cid::Cid) -> Result<Option<Held>, String> {
    held_in(&parse(car)?, want)
}

/// [`held`] in a CAR already parsed (its blocks checked once, whatever the number of CIDs
/// looked up in it).
pub fn held_in(car: &Car<'_>, want: &cid::Cid) -> Result<Option<Held>, String> {
    let want_h = hasher_cid(want)?;
    if !car.contains(&want_h) {
        return Ok(None);
    }
    let size = car.expanded(want_h).map_err(|e| e.to_string())?;
    let kind = car.kind(want_h).map_err(|e| e.to_string())?;
    if kind == unixfs::TYPE_SYMLINK {
        return Err(format!("{want} is a symlink, not a file or a folder"));
    }
    Ok(Some(Held {
        size,
        is_dir: matches!(kind, unixfs::TYPE_DIRECTORY | unixfs::TYPE_HAMT_SHARD),
    }))
}

/// Writes the file or folder `want` of this CAR at `dest` (which must not exist), with
/// at most `work` of block visits (its [`Held::size`], charged before): the content goes
/// from the CAR to the disk, never whole into memory.
pub fn unpack(car: &[u8], want: &cid::Cid, dest: &Path, work: u64) -> Result<(), String> {
    unpack_from(&parse(car)?, want, dest, work)
}

/// [`unpack`] from a CAR already parsed.
pub fn unpack_from(car: &Car<'_>, want: &cid::Cid, dest: &Path, work: u64) -> Result<(), String> {
    let want_h = hasher_cid(want)?;
    car.unpack_cid(want_h, dest, work)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The file named `want` in this CAR, every block verified, read into memory (an entry
/// module, which is compiled from memory); `None` when the CAR does not hold that CID.
/// Refused past [`MAX_FILE`], from its expanded size, before reading.
pub fn extract_file(car: &[u8], want: &cid::Cid) -> Result<Option<Vec<u8>>, String> {
    let want_h = hasher_cid(want)?;
    let car = parse(car)?;
    if !car.contains(&want_h) {
        return Ok(None);
    }
    module_file(&car, want_h).map(Some)
}

/// The file `cid` of `car` read into memory, refused past [`MAX_FILE`] from its expanded
/// size before reading.
fn module_file(car: &Car<'_>, cid: detwasm_hasher::Cid) -> Result<Vec<u8>, String> {
    let size = car.expanded(cid).map_err(|e| e.to_string())?;
    if size.bytes > MAX_FILE as u64 || size.work > 2 * MAX_FILE as u64 {
        return Err(format!(
            "the file is larger than {} MiB (or its blocks are linked over and over), detwasm's limit for a module",
            MAX_FILE >> 20
        ));
    }
    let mut out = Vec::new();
    car.write_file(cid, &mut out, size.work)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The file at the root of a CAR (a module packed as a CAR: `detwasm hash --car m.wasm`,
/// `ipfs dag export` of its CID), every block verified, read into memory; an error when
/// the root is not a file or is larger than [`MAX_FILE`] (from its expanded size, before
/// reading).
pub fn root_file(car: &[u8]) -> Result<Vec<u8>, String> {
    let car = parse(car)?;
    let root = car.root();
    match car.kind(root).map_err(|e| e.to_string())? {
        detwasm_hasher::unixfs::TYPE_FILE | detwasm_hasher::unixfs::TYPE_RAW => {}
        _ => {
            return Err(format!(
                "its root {root} is not a file (a module folder's CAR is run from the folder, \
                 its template beside the CAR)"
            ))
        }
    }
    module_file(&car, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use detwasm_hasher::{Hasher, Node, Options, Profile};

    fn car_of(bytes: &[u8], profile: Profile) -> (cid::Cid, Vec<u8>) {
        let mut car = Vec::new();
        let root = {
            let mut hasher = Hasher::new(Options::profile(profile));
            hasher = hasher.car(&mut car);
            hasher
                .hash_tree(&Node::bytes(bytes.to_vec()))
                .unwrap()
                .root
                .to_cid()
        };
        (root, car)
    }

    #[test]
    fn multi_block_files_come_back_whole_under_both_profiles() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let (root, car) = car_of(&data, profile);
            assert_eq!(
                extract_file(&car, &root).unwrap().as_deref(),
                Some(&data[..]),
                "{profile}"
            );
        }
    }

    #[test]
    fn folders_come_back_whole_with_sharded_folders_and_both_profiles() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), "ay").unwrap();
        std::fs::write(src.join("sub/deeper/big.bin"), vec![7u8; 600_000]).unwrap();
        std::fs::create_dir(src.join("many")).unwrap();
        for i in 0..3000 {
            // Enough names that the folder is a HAMT under both profiles.
            let name = format!(
                "file-{i:04}-long-enough-that-the-folder-shards-{}",
                "x".repeat(40)
            );
            std::fs::write(src.join("many").join(name), i.to_string()).unwrap();
        }
        for profile in [Profile::UnixfsV0_2015, Profile::UnixfsV1_2025] {
            let mut car = Vec::new();
            let root = {
                let hasher = Hasher::new(Options::profile(profile).with_hidden(true)).car(&mut car);
                hasher.hash_path(&src).unwrap().root.to_cid()
            };
            let out = t.path().join(format!("out-{profile}"));
            let tree = held(&car, &root).unwrap().unwrap();
            assert!(tree.is_dir);
            assert_eq!(tree.size.entries, 3000 + 6);
            unpack(&car, &root, &out, tree.size.work).unwrap();
            let again = detwasm_job::results::cid_of_dir(&out, profile, true).unwrap();
            assert_eq!(again, root.to_string(), "{profile}");
            let other = t.path().join(format!("other-{profile}"));
            let elsewhere =
                cid::Cid::try_from("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH").unwrap();
            assert!(held(&car, &elsewhere).unwrap().is_none());
            assert!(unpack(&car, &elsewhere, &other, u64::MAX).is_err());
            assert!(!other.exists());
            // One file of the folder, by its own CID.
            let hello =
                detwasm_job::results::cid_of_dir(&src.join("a.txt"), profile, true).unwrap();
            let hello = cid::Cid::try_from(hello.as_str()).unwrap();
            assert_eq!(extract_file(&car, &hello).unwrap().unwrap(), b"ay");
        }
    }

    #[test]
    fn a_corrupt_block_is_detected_and_an_absent_root_is_none() {
        let (root, mut car) = car_of(b"hello\n", Profile::UnixfsV0_2015);
        let other = cid::Cid::try_from("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH").unwrap();
        assert_eq!(extract_file(&car, &other).unwrap(), None);
        let last = car.len() - 2;
        car[last] ^= 0xff;
        let e = extract_file(&car, &root).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn a_jobs_car_inputs_share_one_budget() {
        let mut budget = InputBudget::default();
        let half = Expanded {
            bytes: MAX_JOB_CAR_BYTES / 2,
            entries: 1,
            work: MAX_JOB_CAR_BYTES / 2,
        };
        budget.charge(half).unwrap();
        budget.charge(half).unwrap();
        let e = budget
            .charge(Expanded {
                bytes: 1,
                entries: 1,
                work: 1,
            })
            .unwrap_err();
        assert!(e.contains("MAX_JOB_CAR_BYTES"), "{e}");
        let mut budget = InputBudget::default();
        let many = Expanded {
            bytes: 0,
            entries: MAX_JOB_CAR_ENTRIES + 1,
            work: 0,
        };
        let e = budget.charge(many).unwrap_err();
        assert!(
            e.contains("MAX_JOB_CAR_ENTRIES") && e.contains("ipfs get"),
            "{e}"
        );
        let e = budget
            .charge(Expanded {
                bytes: 0,
                entries: 1,
                work: u64::MAX,
            })
            .unwrap_err();
        assert!(e.contains("MAX_JOB_CAR_WORK"), "{e}");
    }

    /// Files copied into the staging folder and CAR content unpacked there share one
    /// budget of [`MAX_JOB_CAR_BYTES`].
    #[test]
    fn files_copied_and_car_content_share_the_jobs_staging_budget() {
        let mut budget = InputBudget::default();
        budget.charge_copy(MAX_JOB_CAR_BYTES / 2).unwrap();
        let half = Expanded {
            bytes: MAX_JOB_CAR_BYTES / 2,
            entries: 1,
            work: 1,
        };
        budget.charge(half).unwrap();
        let e = budget.charge_copy(1).unwrap_err();
        assert!(
            e.contains("MAX_JOB_CAR_BYTES") && e.contains("1 GiB"),
            "{e}"
        );
        let mut budget = InputBudget::default();
        budget.charge_copy(MAX_JOB_CAR_BYTES).unwrap();
        let e = budget.charge(half).unwrap_err();
        assert!(e.contains("MAX_JOB_CAR_BYTES"), "{e}");
        assert!(InputBudget::default().charge_copy(u64::MAX).is_err());
    }
}
