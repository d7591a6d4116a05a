//! Finding a module and its entry module.
//!
//! A module reference is one of:
//! - a folder (any path that names an existing directory, or contains `/`, or starts
//!   with `.`) holding `lilypad_module.json.tmpl`;
//! - a bare name, `cowsay` or `cowsay:v0.1.0`, looked up on the module path: each entry
//!   of `DETWASM_MODULE_PATH` (a `:`-separated list, searched first), then this
//!   project's `modules/` folder. A folder `NAME` or `lilypad-module-NAME` matches. With
//!   a tag, a versioned sub-folder `NAME/TAG` is used when there is one; otherwise the
//!   folder's `VERSION` file must hold the tag, so that `cowsay:v9` never silently runs
//!   another version;
//! - a git repository (`github.com/owner/repo:tag`, `https://...`): detwasm has no
//!   network and never clones, so this is an error that says how to clone it first.
//!
//! The entry module (`Wasm.EntryModule`) is found by `Path` (a file inside the module
//! folder) or by `CID`: every `.wasm` file in the folder, and every file stored in a
//! `.car` file there, is hashed the way `ipfs add` would hash it for that CID — a CIDv0
//! can only come from the unixfs-v0-2015 profile; a CIDv1 is tried under
//! unixfs-v1-2025 and under `ipfs add --cid-version=1` (kubo's v0 layout with raw
//! leaves). With both, the file at `Path` must have that CID. A mismatch is refused.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use detwasm_hasher::{CidVersion, Hasher, Node, Options, Profile};

use super::{car, SpecError};

/// The template file every module folder holds.
pub const TEMPLATE_FILE: &str = "lilypad_module.json.tmpl";
/// Environment variable: extra folders to search for modules by name (`:`-separated).
pub const MODULE_PATH_ENV: &str = "DETWASM_MODULE_PATH";

/// A parsed module reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    Folder(PathBuf),
    Named { name: String, tag: Option<String> },
    Remote { repo: String, tag: Option<String> },
}

impl ModuleRef {
    pub fn parse(reference: &str) -> ModuleRef {
        let (base, tag) = match reference.rsplit_once(':') {
            // `https://host/...` has a colon that is not a tag separator.
            Some((b, t)) if !t.contains('/') && !t.is_empty() => (b, Some(t.to_string())),
            _ => (reference, None),
        };
        let lower = base.to_ascii_lowercase();
        let remote_prefixes = [
            "github.com/",
            "gitlab.com/",
            "http://",
            "https://",
            "git@",
            "ssh://",
        ];
        if remote_prefixes.iter().any(|p| lower.starts_with(p)) {
            return ModuleRef::Remote {
                repo: base.to_string(),
                tag,
            };
        }
        let path = Path::new(reference);
        if path.is_dir()
            || reference.contains('/')
            || reference.starts_with('.')
            || tag.is_none() && path.is_absolute()
        {
            return ModuleRef::Folder(path.to_path_buf());
        }
        ModuleRef::Named {
            name: base.to_string(),
            tag,
        }
    }
}

/// Is a `detwasm run` argument a module reference (a folder or a name) rather than a
/// `.wasm`/`.wat` file? A directory is; an existing file is not; otherwise anything not
/// ending in `.wasm` or `.wat` is taken as a module name.
pub fn is_module_reference(arg: &Path) -> bool {
    if arg.is_dir() {
        return true;
    }
    if arg.is_file() {
        return false;
    }
    let ext = arg
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    !(ext == "wasm" || ext == "wat")
}

/// The folders searched for modules by name: `DETWASM_MODULE_PATH`, then this project's
/// `modules/` folder (known at build time, used when it still exists).
pub fn module_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(MODULE_PATH_ENV)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let project_modules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("modules");
    if project_modules.is_dir() {
        dirs.push(project_modules.canonicalize().unwrap_or(project_modules));
    }
    dirs
}

/// Resolves a reference to a module folder holding a template.
pub fn find_module(reference: &str, search: &[PathBuf]) -> Result<PathBuf, SpecError> {
    match ModuleRef::parse(reference) {
        ModuleRef::Remote { repo, tag } => {
            let url = if repo.starts_with("http")
                || repo.starts_with("git@")
                || repo.starts_with("ssh://")
            {
                repo.clone()
            } else {
                format!("https://{repo}")
            };
            let folder = repo
                .trim_end_matches('/')
                .trim_end_matches(".git")
                .rsplit('/')
                .next()
                .unwrap_or("module")
                .to_string();
            let branch = tag
                .as_ref()
                .map(|t| format!(" --branch {t}"))
                .unwrap_or_default();
            Err(SpecError::NeedsClone {
                reference: reference.to_string(),
                hint: format!("git clone{branch} {url} && detwasm run ./{folder}"),
            })
        }
        ModuleRef::Folder(dir) => {
            if !dir.is_dir() {
                return Err(SpecError::NotFound {
                    reference: reference.to_string(),
                    searched: vec![dir],
                });
            }
            if !dir.join(TEMPLATE_FILE).is_file() {
                return Err(SpecError::NoTemplate { dir });
            }
            Ok(dir)
        }
        ModuleRef::Named { name, tag } => {
            let mut searched = Vec::new();
            for base in search {
                for candidate in [
                    base.join(&name),
                    base.join(format!("lilypad-module-{name}")),
                ] {
                    searched.push(candidate.clone());
                    if !candidate.join(TEMPLATE_FILE).is_file() && !candidate.is_dir() {
                        continue;
                    }
                    let Some(tag) = &tag else {
                        if candidate.join(TEMPLATE_FILE).is_file() {
                            return Ok(candidate);
                        }
                        continue;
                    };
                    let versioned = candidate.join(tag);
                    if versioned.join(TEMPLATE_FILE).is_file() {
                        return Ok(versioned);
                    }
                    if candidate.join(TEMPLATE_FILE).is_file() {
                        // A version is a line: read within 4 KiB and without blocking
                        // (found by review: a `VERSION` linked to /dev/zero took 2 GB, a
                        // FIFO hung `run NAME:TAG` for good).
                        let version = read_bounded(&candidate.join("VERSION"), MAX_VERSION_BYTES)
                            .ok()
                            .and_then(|v| String::from_utf8(v).ok())
                            .map(|v| v.trim().to_string());
                        if version.as_deref() == Some(tag.as_str()) {
                            return Ok(candidate);
                        }
                        return Err(SpecError::WrongVersion {
                            reference: reference.to_string(),
                            dir: candidate,
                            found: version,
                        });
                    }
                }
            }
            Err(SpecError::NotFound {
                reference: reference.to_string(),
                searched,
            })
        }
    }
}

/// How an entry module was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryModule {
    pub bytes: Vec<u8>,
    /// The file it was read from (a `.car` file for a module stored in one).
    pub file: PathBuf,
    /// The CID it was checked against and the import settings that gave it.
    pub matched: Option<(String, &'static str)>,
}

/// The import settings under which `ipfs add` could have produced a CID of this version.
pub(crate) fn candidate_options(version: cid::Version) -> Vec<(&'static str, Options)> {
    match version {
        cid::Version::V0 => vec![("unixfs-v0-2015", Options::profile(Profile::UnixfsV0_2015))],
        cid::Version::V1 => {
            let mut kubo_v1 = Options::profile(Profile::UnixfsV0_2015);
            kubo_v1.cid_version = CidVersion::V1;
            kubo_v1.raw_leaves = true;
            vec![
                ("unixfs-v1-2025", Options::profile(Profile::UnixfsV1_2025)),
                ("ipfs add --cid-version=1", kubo_v1),
            ]
        }
    }
}

/// Parses a CID as written in a template.
pub fn parse_cid(text: &str) -> Result<cid::Cid, SpecError> {
    parse_cid_at(text, "job.Spec.Wasm.EntryModule.CID")
}

/// Parses a CID found at spec path `path` (for messages).
pub fn parse_cid_at(text: &str, path: &str) -> Result<cid::Cid, SpecError> {
    cid::Cid::try_from(text.trim()).map_err(|e| SpecError::BadValue {
        path: path.into(),
        value: text.to_string(),
        hint: format!("a CID as `ipfs add` prints it ({e})"),
    })
}

/// The CIDs `bytes` gets as a file under each setting that could give `want`'s version.
pub fn file_cids(
    bytes: &[u8],
    want: &cid::Cid,
) -> Result<Vec<(&'static str, cid::Cid)>, SpecError> {
    let node = Node::bytes(bytes.to_vec());
    candidate_options(want.version())
        .into_iter()
        .map(|(label, opts)| {
            let hashed = Hasher::new(opts)
                .hash_tree(&node)
                .map_err(|e| SpecError::Hash(e.to_string()))?;
            Ok((label, hashed.root.to_cid()))
        })
        .collect()
}

/// The CIDs a host file or folder gets under each setting that could give `want`'s
/// version, hidden files included (the guest sees them, so the CID must cover them).
pub fn path_cids(path: &Path, want: &cid::Cid) -> Result<Vec<(&'static str, cid::Cid)>, SpecError> {
    candidate_options(want.version())
        .into_iter()
        .map(|(label, opts)| {
            let hashed = detwasm_hasher::hash_path(path, &opts.with_hidden(true))
                .map_err(|e| SpecError::Hash(format!("{}: {e}", path.display())))?;
            Ok((label, hashed.root.to_cid()))
        })
        .collect()
}

fn matches(
    bytes: &[u8],
    want: &cid::Cid,
) -> Result<(Option<&'static str>, Vec<String>), SpecError> {
    let cids = file_cids(bytes, want)?;
    let hit = cids.iter().find(|(_, c)| c == want).map(|(l, _)| *l);
    Ok((
        hit,
        cids.iter().map(|(l, c)| format!("{c} ({l})")).collect(),
    ))
}

/// Refuses paths that leave the module folder.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, SpecError> {
    let p = Path::new(rel);
    let escapes = p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)));
    if escapes || rel.is_empty() {
        return Err(SpecError::Refused {
            what: format!("job.Spec.Wasm.EntryModule.Path = \"{rel}\""),
            why: "the entry module's Path must name a file inside the module folder".into(),
        });
    }
    Ok(dir.join(p))
}

/// The largest `.wasm` or `.car` file read from a module folder: 256 MiB. A module the
/// shape limits accept is at most about 170 MiB (32 MiB of code, 64 MiB of data, 64 MiB
/// of custom sections, `detwasm_passes::shape::LIMITS`), and a file is held twice while
/// it is read and scanned, so this bounds that term of the memory formula (SECURITY.md)
/// at 512 MiB. Rejected: 1 GiB (a refused module still cost 2 GB to read: found by
/// review).
pub const MAX_MODULE_FILE: u64 = 256 << 20;

/// The most `.wasm` and `.car` files of a module folder searched for an entry module
/// named by CID alone.
pub const MAX_ENTRY_CANDIDATES: usize = 16;

/// The most bytes of them read in that search (two modules at their limit).
pub const MAX_ENTRY_BYTES_READ: u64 = 2 * MAX_MODULE_FILE;

/// The most bytes of a module folder's `VERSION` file read (a version is one line).
pub const MAX_VERSION_BYTES: u64 = 4 << 10;

/// Reads a module file. A module folder comes from whoever published the module, and
/// its files may be symlinks (the examples link their builds): following them is fine
/// for bytes that are only hashed and compiled, but a link to `/dev/zero` or a FIFO
/// would read forever, so only regular files are read, and at most
/// [`MAX_MODULE_FILE`] bytes of them.
fn read(path: &Path) -> Result<Vec<u8>, SpecError> {
    read_bounded(path, MAX_MODULE_FILE)
}

/// Reads a module file named directly (`detwasm run FILE.wasm`, `batch`, Python,
/// `verify`): at most [`MAX_MODULE_FILE`] bytes, as from a module folder, so a module
/// file costs at most that much memory before the shape scan refuses it (a 1 GiB file
/// peaked at 2 GB: found by review).
///
/// A path ending in `.car` is a CAR whose root is the module file (`detwasm hash --car
/// m.wasm`, `ipfs dag export`): every block is checked against its CID and the file
/// read out of it ([`crate::car::root_file`]), the CAR itself read within the module's
/// limit plus room for its block headers.
pub fn read_module_file(path: &Path) -> Result<Vec<u8>, SpecError> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("car"))
    {
        let car = read_bounded(path, MAX_MODULE_FILE + MAX_MODULE_FILE / 16)?;
        return crate::car::root_file(&car).map_err(|message| SpecError::Io {
            path: path.to_path_buf(),
            message,
        });
    }
    read_bounded(path, MAX_MODULE_FILE)
}

/// Reads a regular file of at most `limit` bytes (symlinks followed), or says why not.
/// The file is opened with `O_NONBLOCK`, so a FIFO at the path (a receipt, `job.json` or
/// job file naming one) is refused as "not a regular file" instead of holding the open
/// until some writer appears (found by review). Rejected: `stat` before the open (the
/// path could change between the two).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, SpecError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |message: String| SpecError::Io {
        path: path.to_path_buf(),
        message,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io(e.to_string()))?;
    let meta = file.metadata().map_err(|e| io(e.to_string()))?;
    if !meta.is_file() {
        return Err(io("not a regular file".into()));
    }
    // The size is checked on the open file first, so an oversized file is refused
    // without reading it (it cost its limit in memory and time before); the read below
    // still stops past the limit for a file that grows while read.
    let too_large = || {
        io(format!(
            "larger than {limit} bytes, the most detwasm reads here"
        ))
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Finds the entry module of a spec in `dir` (see the module docs).
pub fn entry_module(dir: &Path, cid_text: &str, path: &str) -> Result<EntryModule, SpecError> {
    let want = if cid_text.trim().is_empty() {
        None
    } else {
        Some(parse_cid(cid_text)?)
    };
    // A Path whose file is not there, beside a CID: the module is found by the CID, as
    // a published folder that ships the template and a CAR (no build) has it. Found by
    // use: the scaffold's template names both, and such a folder was refused.
    let named = if path.is_empty() {
        None
    } else {
        Some(inside(dir, path)?)
    };
    let missing = |f: &PathBuf| {
        want.is_some()
            && matches!(fs::symlink_metadata(f), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    };
    if let Some(file) = named.filter(|f| !missing(f)) {
        let bytes = read(&file)?;
        let Some(want) = want else {
            return Ok(EntryModule {
                bytes,
                file,
                matched: None,
            });
        };
        let (hit, got) = matches(&bytes, &want)?;
        return match hit {
            Some(label) => Ok(EntryModule {
                bytes,
                file,
                matched: Some((want.to_string(), label)),
            }),
            None => Err(SpecError::CidMismatch {
                file,
                expected: want.to_string(),
                got,
            }),
        };
    }
    let want = want.expect("the spec parser requires a CID or a Path");
    let io = |e: std::io::Error| SpecError::Io {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    // The candidates, `.wasm` and `.car` files, are counted while the folder is listed
    // and their reads summed: a module is found among a few, before any job deadline
    // exists. Found by review: a folder of 101 `.wasm` links to a 256 MiB file took 53 s
    // with `--timeout 1`, every one read and hashed. Rejected: a deadline here (none
    // exists until the job is built, and the limit is the same for every host).
    let mut entries: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext == "wasm" || ext == "car" {
            if entries.len() >= MAX_ENTRY_CANDIDATES {
                return Err(SpecError::Io {
                    path: dir.to_path_buf(),
                    message: format!(
                        "more than {MAX_ENTRY_CANDIDATES} .wasm and .car files to search for \
                         the entry module {want}: name it by Path in the template"
                    ),
                });
            }
            entries.push(path);
        }
    }
    entries.sort();
    let mut read_so_far = 0u64;
    let mut read = |file: &Path| -> Result<Vec<u8>, SpecError> {
        let bytes = read(file)?;
        read_so_far += bytes.len() as u64;
        if read_so_far > MAX_ENTRY_BYTES_READ {
            return Err(SpecError::Io {
                path: dir.to_path_buf(),
                message: format!(
                    "more than {MAX_ENTRY_BYTES_READ} bytes of .wasm and .car files read to \
                     find the entry module {want}: name it by Path in the template"
                ),
            });
        }
        Ok(bytes)
    };
    let mut tried = BTreeMap::new();
    for file in &entries {
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext == "wasm" && file.is_file() {
            let bytes = read(file)?;
            let (hit, got) = matches(&bytes, &want)?;
            if let Some(label) = hit {
                return Ok(EntryModule {
                    bytes,
                    file: file.clone(),
                    matched: Some((want.to_string(), label)),
                });
            }
            tried.insert(file.clone(), got.join(", "));
        } else if ext == "car" && file.is_file() {
            // A CAR is parsed, not only hashed: read only one that really lies in the
            // module folder (a `.wasm` link to a build elsewhere is fine, it is only
            // hashed and compiled; a `.car` link to `/etc/shadow` would be opened and
            // parsed). Rejected: following it because only blocks hashing to the CID are
            // used, which still reads a file the module has no right to.
            let inside = match (file.canonicalize(), dir.canonicalize()) {
                (Ok(f), Ok(d)) => f.starts_with(&d),
                _ => false,
            };
            if !inside {
                tried.insert(
                    file.clone(),
                    "leads outside the module folder, not read (copy the CAR into the folder)"
                        .into(),
                );
                continue;
            }
            let data = read(file)?;
            match car::extract_file(&data, &want) {
                Ok(Some(bytes)) => {
                    return Ok(EntryModule {
                        bytes,
                        file: file.clone(),
                        matched: Some((want.to_string(), "blocks verified in CAR")),
                    })
                }
                Ok(None) => {
                    tried.insert(file.clone(), "does not hold that CID".into());
                }
                Err(e) => {
                    tried.insert(file.clone(), format!("unreadable CAR: {e}"));
                }
            }
        }
    }
    Err(SpecError::EntryModuleNotFound {
        dir: dir.to_path_buf(),
        cid: want.to_string(),
        tried: tried
            .into_iter()
            .map(|(f, why)| format!("{}: {why}", f.display()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_named_as_a_module_is_refused_without_waiting_for_a_writer() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("module.wasm");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK the open would wait here for a writer that never comes.
        let e = read_module_file(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let link = t.path().join("link.wasm");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let e = read_module_file(&link).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("receipt.json");
        // A sparse file of 1 TiB: reading up to its limit of 1 TiB - 1 would take hours
        // and all memory; refused from its size, it takes nothing.
        let f = fs::File::create(&big).unwrap();
        f.set_len(1 << 40).unwrap();
        let e = read_bounded(&big, (1 << 40) - 1).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = read_bounded(&big, 2).unwrap_err().to_string();
        assert!(e.contains("larger than 2 bytes"), "{e}");
        f.set_len(3).unwrap();
        assert_eq!(read_bounded(&big, 3).unwrap(), vec![0; 3]);
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            ModuleRef::parse("cowsay"),
            ModuleRef::Named {
                name: "cowsay".into(),
                tag: None
            }
        );
        assert_eq!(
            ModuleRef::parse("cowsay:v0.1.0"),
            ModuleRef::Named {
                name: "cowsay".into(),
                tag: Some("v0.1.0".into())
            }
        );
        assert_eq!(
            ModuleRef::parse("github.com/lilypad-tech/lilypad-module-cowsay:v0.0.4"),
            ModuleRef::Remote {
                repo: "github.com/lilypad-tech/lilypad-module-cowsay".into(),
                tag: Some("v0.0.4".into())
            }
        );
        assert_eq!(
            ModuleRef::parse("https://github.com/o/r"),
            ModuleRef::Remote {
                repo: "https://github.com/o/r".into(),
                tag: None
            }
        );
        assert_eq!(
            ModuleRef::parse("./here"),
            ModuleRef::Folder("./here".into())
        );
        assert_eq!(ModuleRef::parse("a/b"), ModuleRef::Folder("a/b".into()));
    }

    #[test]
    fn run_arguments_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("m.bin");
        fs::write(&file, b"x").unwrap();
        assert!(is_module_reference(tmp.path()));
        assert!(!is_module_reference(&file));
        assert!(!is_module_reference(Path::new("missing.wasm")));
        assert!(!is_module_reference(Path::new("missing.WAT")));
        assert!(is_module_reference(Path::new("cowsay")));
        assert!(is_module_reference(Path::new("cowsay:v0.1.0")));
    }

    #[test]
    fn remote_modules_need_a_clone_first() {
        let e =
            find_module("github.com/lilypad-tech/lilypad-module-cowsay:v0.0.4", &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(
                "git clone --branch v0.0.4 https://github.com/lilypad-tech/lilypad-module-cowsay"
            ),
            "{text}"
        );
        assert!(text.contains("./lilypad-module-cowsay"), "{text}");
    }

    #[test]
    fn named_modules_are_found_on_the_path_with_versions_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path().join("hello");
        fs::create_dir_all(m.join("v2")).unwrap();
        fs::write(m.join(TEMPLATE_FILE), "{}").unwrap();
        fs::write(m.join("VERSION"), "v1\n").unwrap();
        fs::write(m.join("v2").join(TEMPLATE_FILE), "{}").unwrap();
        let search = vec![tmp.path().to_path_buf()];
        assert_eq!(find_module("hello", &search).unwrap(), m);
        assert_eq!(find_module("hello:v1", &search).unwrap(), m);
        assert_eq!(find_module("hello:v2", &search).unwrap(), m.join("v2"));
        let e = find_module("hello:v3", &search).unwrap_err();
        assert!(matches!(e, SpecError::WrongVersion { .. }), "{e}");
        let e = find_module("nope", &search).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        fs::create_dir_all(tmp.path().join("empty")).unwrap();
        let e = find_module(tmp.path().join("empty").to_str().unwrap(), &search).unwrap_err();
        assert!(matches!(e, SpecError::NoTemplate { .. }), "{e}");
    }

    /// Found by review: every `.wasm` of a folder was read and hashed to find a module by
    /// CID, with no cap (101 links to a 256 MiB file: 53 s past a 1 s timeout), and a
    /// `VERSION` linked to /dev/zero was read whole. Both are bounded now.
    #[test]
    fn the_search_for_an_entry_module_and_its_version_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..=MAX_ENTRY_CANDIDATES {
            fs::write(tmp.path().join(format!("m{i:02}.wasm")), b"x").unwrap();
        }
        let e = entry_module(
            tmp.path(),
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than 16 .wasm and .car files"), "{e}");
        let m = tempfile::tempdir().unwrap();
        let dir = m.path().join("mod");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(TEMPLATE_FILE), "{}").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("VERSION")).unwrap();
        let e = find_module("mod:v1", &[m.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("v1"), "{e}");
    }

    #[test]
    fn entry_modules_are_found_by_cid_and_checked_by_path() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.wasm"), b"not this one").unwrap();
        fs::write(tmp.path().join("b.wasm"), b"hello\n").unwrap();
        // "hello\n" as `ipfs add` prints it (CIDv0), and as raw-leaf CIDv1.
        let v0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
        let found = entry_module(tmp.path(), v0, "").unwrap();
        assert_eq!(found.file, tmp.path().join("b.wasm"));
        assert_eq!(found.matched.unwrap().1, "unixfs-v0-2015");
        let v1 = file_cids(
            b"hello\n",
            &parse_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").unwrap(),
        )
        .unwrap()[0]
            .1
            .to_string();
        let found = entry_module(tmp.path(), &v1, "").unwrap();
        assert_eq!(found.matched.unwrap().1, "unixfs-v1-2025");
        assert!(entry_module(tmp.path(), v0, "b.wasm").is_ok());
        let e = entry_module(tmp.path(), v0, "a.wasm").unwrap_err();
        assert!(matches!(e, SpecError::CidMismatch { .. }), "{e}");
        assert!(e.to_string().contains(v0), "{e}");
        let e = entry_module(
            tmp.path(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
            "",
        )
        .unwrap_err();
        assert!(matches!(e, SpecError::EntryModuleNotFound { .. }), "{e}");
        let e = entry_module(tmp.path(), "", "../etc/passwd").unwrap_err();
        assert!(matches!(e, SpecError::Refused { .. }), "{e}");
        assert!(entry_module(tmp.path(), "not-a-cid", "").is_err());
        // A Path whose file is not there, with a CID: found by the CID.
        let found = entry_module(tmp.path(), v0, "build/missing.wasm").unwrap();
        assert_eq!(found.file, tmp.path().join("b.wasm"));
        let e = entry_module(tmp.path(), "", "build/missing.wasm").unwrap_err();
        assert!(e.to_string().contains("missing.wasm"), "{e}");
    }

    /// A `.car` in a module folder leading out of it is not read (a CAR is parsed, where
    /// a `.wasm` is only hashed), even when it holds the CID; a copy inside is.
    #[test]
    fn a_car_leading_out_of_the_module_folder_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut car = Vec::new();
        let root = Hasher::new(Options::profile(Profile::UnixfsV0_2015))
            .car(&mut car)
            .hash_tree(&Node::bytes(b"car module".to_vec()))
            .unwrap()
            .root
            .to_string();
        fs::write(outside.path().join("m.car"), &car).unwrap();
        std::os::unix::fs::symlink(outside.path().join("m.car"), tmp.path().join("m.car")).unwrap();
        let e = entry_module(tmp.path(), &root, "").unwrap_err();
        assert!(
            e.to_string().contains("leads outside the module folder"),
            "{e}"
        );
        fs::remove_file(tmp.path().join("m.car")).unwrap();
        fs::copy(outside.path().join("m.car"), tmp.path().join("m.car")).unwrap();
        assert_eq!(
            entry_module(tmp.path(), &root, "").unwrap().bytes,
            b"car module"
        );
    }
}
