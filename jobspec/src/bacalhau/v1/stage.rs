//! Staging a Bacalhau v1 job's inputs: finding each source where the job file's folder
//! and the operator's allowed folders hold it (`local` paths, `inline` data, `ipfs`
//! CIDs as a folder, a file or blocks of a CAR), charging everything the job writes into
//! its temporary folder (CAR content, files copied, inline data) to one budget before
//! anything is written ([`car::MAX_JOB_CAR_BYTES`]), and laying the inputs out as the
//! guest sees them. Parsing the file is the parent module's; this one touches the host.

use super::*;

use std::cell::{Cell, OnceCell};

use detwasm_hasher::unpack::Car;

/// A file to put into the staging folder: bytes, or a hard link to a file already in the
/// job's scratch folder (content named by CID, or the one copy of a `local` host file,
/// shared by every input that names it).
pub(super) enum Staged {
    Bytes(Vec<u8>),
    Link(PathBuf),
}

/// One file of a staging folder: its name, its content, and the input it is for (its
/// target and line, for messages).
struct StagedFile {
    name: String,
    content: Staged,
    target: String,
    line: Option<usize>,
}

/// Where an `ipfs` input was found.
pub(super) enum Found {
    /// A file or folder named by the CID in an allowed folder (its canonical path), and
    /// the import settings that gave the CID.
    Path(PathBuf, &'static str),
    /// The CID's file or folder among the blocks of a CAR file (its canonical path,
    /// inside an allowed folder, and its place in [`CarFiles`]), not read out yet.
    Car {
        file: PathBuf,
        index: usize,
        held: car::Held,
    },
}

/// The `.car` files directly in a job's allowed folders, listed once per job, each read
/// at most once and within [`car::MAX_JOB_CAR_READ`] for all of them (see there for why).
/// Their bytes are kept for the job's staging: [`Cars`] parses them.
pub(super) struct CarFiles {
    /// Each `.car` listed (allowed folders in order, names sorted in each), and the place
    /// of its canonical file in `canonical`, or `None` when it leads out of the allowed
    /// folders.
    listed: Vec<(PathBuf, Option<usize>)>,
    /// The distinct CAR files, by canonical path (a CAR reached by two names is read once).
    canonical: Vec<PathBuf>,
    data: Vec<OnceCell<Vec<u8>>>,
    /// Bytes read so far, all CARs together.
    read: Cell<u64>,
    /// The folder in which listing stopped at [`MAX_JOB_CAR_FILES`] `.car` files: a
    /// lookup among them is then refused.
    overflow: Option<PathBuf>,
}

/// The most `.car` files listed for a job, all allowed folders together. Found by
/// review: 100,000 empty `.car` files beside a job file took more than 275 s of CPU to
/// list (before the job's deadline exists) and an 8 MB error. Rejected: no limit (the
/// listing and the message grow with whatever the folder holds).
pub const MAX_JOB_CAR_FILES: usize = 1024;

impl CarFiles {
    /// Lists the `.car` regular files directly in `roots` (canonical allowed folders).
    pub(super) fn list(roots: &[PathBuf]) -> CarFiles {
        let mut listed = Vec::new();
        let mut canonical: Vec<PathBuf> = Vec::new();
        let mut places: std::collections::HashMap<PathBuf, usize> = Default::default();
        let mut overflow = None;
        for root in roots {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            let mut cars: Vec<PathBuf> = Vec::new();
            for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if p.extension().and_then(|e| e.to_str()) != Some("car") || !p.is_file() {
                    continue;
                }
                if listed.len() + cars.len() >= MAX_JOB_CAR_FILES {
                    overflow = Some(root.clone());
                    break;
                }
                cars.push(p);
            }
            cars.sort();
            for named in cars {
                let place = named
                    .canonicalize()
                    .ok()
                    .filter(|c| roots.iter().any(|r| c.starts_with(r)))
                    .map(|c| {
                        *places.entry(c.clone()).or_insert_with(|| {
                            canonical.push(c);
                            canonical.len() - 1
                        })
                    });
                listed.push((named, place));
            }
            if overflow.is_some() {
                break;
            }
        }
        let data = canonical.iter().map(|_| OnceCell::new()).collect();
        CarFiles {
            listed,
            canonical,
            data,
            read: Cell::new(0),
            overflow,
        }
    }

    /// The bytes of CAR `i`, read at its first use, or why not (over the job's limit).
    fn bytes(&self, i: usize) -> Result<&[u8], SpecError> {
        if let Some(data) = self.data[i].get() {
            return Ok(data);
        }
        let path = &self.canonical[i];
        let left = car::MAX_JOB_CAR_READ - self.read.get();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > left {
            return Err(refuse(
                format!("reading {}", path.display()),
                format!(
                    "the job's .car files would pass {} GiB read together (MAX_JOB_CAR_READ; {} bytes read already, this one is {size}); put fewer or smaller CARs in the folders inputs come from, or name the content by a folder (`ipfs get CID -o CID`)",
                    car::MAX_JOB_CAR_READ >> 30,
                    self.read.get()
                ),
            ));
        }
        let data = resolve::read_bounded(path, left)?;
        self.read.set(self.read.get() + data.len() as u64);
        Ok(self.data[i].get_or_init(|| data))
    }
}

/// The [`CarFiles`] of a job, each parsed (every block checked against its hash) at most
/// once, at its first use, and kept: looking a CID up is then a map lookup, and unpacking
/// reads the very blocks that were sized.
pub(super) struct Cars<'f> {
    files: &'f CarFiles,
    parsed: Vec<OnceCell<Result<Car<'f>, String>>>,
}

impl<'f> Cars<'f> {
    pub(super) fn new(files: &'f CarFiles) -> Cars<'f> {
        Cars {
            files,
            parsed: files.canonical.iter().map(|_| OnceCell::new()).collect(),
        }
    }

    /// CAR `i` parsed, or why it does not parse; an error when it cannot be read.
    fn car(&self, i: usize) -> Result<&Result<Car<'f>, String>, SpecError> {
        if let Some(parsed) = self.parsed[i].get() {
            return Ok(parsed);
        }
        let data = self.files.bytes(i)?;
        Ok(self.parsed[i].get_or_init(|| car::parse(data)))
    }
}

/// Finds an `ipfs` input locally: in each allowed folder (the job file's first), a file
/// or folder named by the CID, or `CID.car`; then every other `.car` file directly in
/// those folders. A file or folder must hash to the CID, hidden files included (the guest
/// sees them); a CAR must hold the CID's blocks, each checked against its hash. A CAR is
/// only sized here ([`car::held_in`]); [`prepare`] charges it to the job's budget and
/// unpacks it once every input has been charged. Each CAR is read and parsed once per
/// job, in `cars`, however many CIDs are looked up in it ([`car::MAX_JOB_CAR_READ`]).
///
/// A CAR is read only where it really is inside an allowed folder: `CID.car` leading
/// out of them (a symlink to `/etc/shadow`) is refused as a `CID` folder leading out is,
/// and any other `.car` leading out is passed over and named in the error. Rejected:
/// following the link because only blocks that hash to the CID are used, which still
/// opens and parses a file the job file has no right to.
///
/// Rejected alternative: hashing every folder in reach to find one with the CID; it
/// could take minutes over a home folder and would pick a folder the user never named.
pub(super) fn find_cid(
    roots: &[PathBuf],
    cars: &Cars<'_>,
    cid_text: &str,
) -> Result<Found, SpecError> {
    let want = resolve::parse_cid_at(cid_text, "Source.Params.CID")?;
    let mut tried = Vec::new();
    let canonical_inside = |named: &Path| -> Result<PathBuf, SpecError> {
        let canonical = named.canonicalize().map_err(|e| SpecError::Io {
            path: named.to_path_buf(),
            message: e.to_string(),
        })?;
        if !roots.iter().any(|r| canonical.starts_with(r)) {
            return Err(SpecError::InputNotAllowed {
                source_path: named.display().to_string(),
                resolved: canonical,
                allowed: roots.to_vec(),
            });
        }
        Ok(canonical)
    };
    if let Some(folder) = &cars.files.overflow {
        return Err(refuse(
            format!("ipfs CID {cid_text}"),
            format!(
                "{} holds more than {MAX_JOB_CAR_FILES} .car files (MAX_JOB_CAR_FILES), more than detwasm looks through for a job; keep the job's CARs in a folder of their own, or name the content by a folder (`ipfs get {cid_text} -o {cid_text}`)",
                folder.display()
            ),
        ));
    }
    // The listed CARs in the order they are tried: those named `CID.car` first.
    let listed = &cars.files.listed;
    let mut first: Vec<usize> = Vec::new();
    for root in roots {
        let named = root.join(cid_text);
        if named.exists() {
            let canonical = canonical_inside(&named)?;
            let got = resolve::path_cids(&canonical, &want)?;
            if let Some((label, _)) = got.iter().find(|(_, c)| *c == want) {
                return Ok(Found::Path(canonical, label));
            }
            return Err(SpecError::CidMismatch {
                file: canonical,
                expected: want.to_string(),
                got: got.iter().map(|(l, c)| format!("{c} ({l})")).collect(),
            });
        }
        let named = root.join(format!("{cid_text}.car"));
        if named.exists() {
            // Named for this CID: one leading out of the allowed folders is refused.
            canonical_inside(&named)?;
        }
        first.extend(listed.iter().position(|(p, _)| *p == named));
    }
    let rest = (0..listed.len()).filter(|i| !first.contains(i));
    let order: Vec<usize> = first.iter().copied().chain(rest).collect();
    for (file, place) in order.into_iter().map(|i| &listed[i]) {
        let Some(index) = *place else {
            tried.push(format!(
                "{}: leads outside the folders inputs may come from, not read",
                file.display()
            ));
            continue;
        };
        let held = match cars.car(index)? {
            Ok(car) => car::held_in(car, &want),
            Err(e) => Err(e.clone()),
        };
        match held {
            Ok(Some(held)) => {
                return Ok(Found::Car {
                    file: cars.files.canonical[index].clone(),
                    index,
                    held,
                })
            }
            Ok(None) => tried.push(format!("{}: does not hold it", file.display())),
            Err(e) => tried.push(format!("{}: {e}", file.display())),
        }
    }
    Err(refuse(
        format!("ipfs CID {cid_text}"),
        format!(
            "detwasm has no network and found no local copy of it (looked for {cid_text} and {cid_text}.car in {}{}); put the content beside the job file, as a file or folder named {cid_text} (`ipfs get {cid_text} -o {cid_text}`) or as a CAR file (`ipfs dag export {cid_text} > {cid_text}.car`)",
            roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
            if tried.is_empty() { String::new() } else { format!("; tried {}", tried.join("; ")) }
        ),
    ))
}

/// Content named by CID, resolved once per job however many inputs name it.
#[derive(Clone)]
pub(super) struct Shared {
    /// The folder to mount, or the file to link into a staging folder.
    host: PathBuf,
    is_dir: bool,
    /// Where it came from, for the receipt: the `CID` file or folder, or the CAR.
    origin: String,
    how: &'static str,
}

/// Content written into the job's scratch folder once every input has been charged.
pub(super) enum Produce {
    /// A host file copied once for the job, `size` bytes charged for it: a `local` file
    /// input (by its canonical path) or a `CID` file beside the job file (by CID),
    /// however many inputs name it ([`copy_charged`]).
    Copy {
        from: PathBuf,
        to: PathBuf,
        size: u64,
    },
    /// A CID's tree out of a CAR, within the work it was charged.
    Unpack {
        car: PathBuf,
        /// Its place in the job's [`CarFiles`], parsed already.
        index: usize,
        want: cid::Cid,
        to: PathBuf,
        work: u64,
        line: Option<usize>,
    },
}

/// The job's private scratch folder (created in `tmp` at the first need), by its
/// canonical path. It is removed when dropped, so a job refused while staging leaves
/// nothing behind.
pub(super) fn scratch_dir(
    scratch: &mut Option<(detwasm_job::scratch::Scratch, PathBuf)>,
    tmp: &Path,
) -> Result<PathBuf, SpecError> {
    if let Some((_, path)) = scratch {
        return Ok(path.clone());
    }
    let io = |e: std::io::Error| SpecError::Io {
        path: tmp.to_path_buf(),
        message: format!("creating a folder for the job's inputs: {e}"),
    };
    // A locked scratch folder: what a killed run staged is removed by the next (found
    // by review: 573 MB per killed run were left for good).
    let tmp = detwasm_job::scratch::Scratch::new_in(tmp, "detwasm-job-inputs-", "the job's inputs")
        .map_err(|e| SpecError::Io {
            path: tmp.to_path_buf(),
            message: e.to_string(),
        })?;
    let path = tmp.path().canonicalize().map_err(io)?;
    *scratch = Some((tmp, path.clone()));
    Ok(path)
}

/// The parent folder and the name of a cleaned guest path (`/a/b` → `/a`, `b`).
pub(super) fn split_guest(path: &str) -> (String, String) {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if parent.is_empty() { "/" } else { parent };
    (parent.to_string(), name.to_string())
}

/// Reads a job file and builds its job: host paths confined by `policy`, with the job
/// file's folder allowed by default (as a module's folder is for a module spec), and
/// relative `SourcePath`s taken from that folder, so that a job file means the same from
/// any working folder. The folders `policy` adds (`--allow-input`) are taken relative to
/// `cwd`, where the operator named them.
pub fn load(file: &Path, cwd: &Path, policy: &InputPolicy) -> Result<V1Job, SpecError> {
    let bytes = resolve::read_bounded(file, MAX_JOB_FILE)?;
    let text = String::from_utf8(bytes).map_err(|e| SpecError::Io {
        path: file.to_path_buf(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    let spec = parse(&text).map_err(|(line, e)| e.at(file, line))?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.canonicalize().map_err(|e| SpecError::Io {
        path: parent.clone(),
        message: e.to_string(),
    })?;
    prepare(file, &dir, cwd, spec, policy)
}

/// Copies host file `from` to `to` (which must not exist) for a job's staging: at most
/// `size` bytes, what was charged for it to the job's budget, so a file that grew since
/// it was charged is an error rather than a larger copy. The copy is made by the kernel
/// where it can (`copy_file_range`, a shared extent on a filesystem that has them), with
/// the source's permissions, as `std::fs::copy` makes it.
///
/// A host file is copied once per job, into the job's own scratch folder, and every
/// input naming it gets a hard link to that copy (one copy on disk, as content named by
/// CID is shared). Rejected: hard-linking the host file itself, which would cost no disk
/// at all. A link adds to the host file's link count, which moves its change time
/// (`ctime`), and so does removing the link when the job ends; detwasm stamps every
/// input entry it mounts with its change time and refuses the run's result when it has
/// moved (`HostStamp` in the wasi crate). Any other job running at the same time with
/// the file in a folder it mounts, or linking it too (`detwasm batch` runs jobs in
/// parallel, and the jobs of one data set share files), would then fail with "input
/// changed while the job ran". The links to the copy are safe: the copy is the job's
/// own, and they are made before its inputs are scanned and removed after the run.
pub(super) fn copy_charged(from: &Path, to: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Without blocking, and checked on the handle: a file swapped for a FIFO since it
    // was charged would otherwise block the job before its deadline exists.
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(from)?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (it was replaced since it was listed)",
        ));
    }
    let permissions = meta.permissions();
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let copied = std::io::copy(&mut src.take(size.saturating_add(1)), &mut dst)?;
    if copied > size {
        return Err(std::io::Error::other(format!(
            "it grew while it was staged, past the {size} bytes charged for it"
        )));
    }
    dst.set_permissions(permissions)?;
    Ok(())
}

/// Builds the job of a parsed job file whose folder is `dir` (see [`load`]). Files the
/// job needs staged are written under `TMPDIR` (`std::env::temp_dir`).
pub fn prepare(
    file: &Path,
    dir: &Path,
    cwd: &Path,
    spec: JobSpec,
    policy: &InputPolicy,
) -> Result<V1Job, SpecError> {
    prepare_in(file, dir, cwd, spec, policy, &std::env::temp_dir())
}

/// [`prepare`], staging under `tmp`.
///
/// Everything the job writes there is charged to one budget of
/// [`car::MAX_JOB_CAR_BYTES`] before it is written: CAR content by its expanded size, a
/// host file by its size, inline data by its length, once per distinct source (a CID, a
/// canonical host path) however many inputs name it. A refusal names the job file, the
/// input's line and target, and the limit; the scratch folder is removed with whatever
/// it held.
pub(super) fn prepare_in(
    file: &Path,
    dir: &Path,
    cwd: &Path,
    spec: JobSpec,
    policy: &InputPolicy,
    tmp: &Path,
) -> Result<V1Job, SpecError> {
    let roots = policy.canonical_roots(dir, cwd)?;
    // Mounts in input order; files are gathered per guest folder and staged.
    enum Plan {
        Folder(Mount),
        Staged(String),
    }
    let mut plans: Vec<Plan> = Vec::new();
    let mut staged: BTreeMap<String, Vec<StagedFile>> = BTreeMap::new();
    // Inputs' content and staging folders, kept until the run has ended.
    let mut scratch: Option<(detwasm_job::scratch::Scratch, PathBuf)> = None;
    // The CARs in the allowed folders, each read and parsed at most once for the whole
    // job (listed only when an input is named by CID), dropped when staging ends.
    let car_files = if spec
        .inputs
        .iter()
        .any(|i| matches!(i.source, Source::Ipfs { .. }))
    {
        CarFiles::list(&roots)
    } else {
        CarFiles::list(&[])
    };
    let cars = Cars::new(&car_files);
    // Content named by CID, by CID: several inputs naming one CID share it.
    let mut by_cid: std::collections::HashMap<String, Shared> = Default::default();
    // The one copy of each `local` host file in the scratch folder, by canonical path:
    // several inputs naming one file share it.
    let mut by_file: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
    // What the job writes into its scratch folder, all of its inputs together.
    let mut budget = car::InputBudget::default();
    let mut produce: Vec<Produce> = Vec::new();
    // Per input: the entry module's origin (for the receipt) and CID match.
    let mut origins: Vec<(String, Option<(String, &'static str)>)> = Vec::new();
    for input in &spec.inputs {
        let located = |e: SpecError| e.at(file, input.line);
        let (content, origin, matched) = match &input.source {
            Source::Local {
                source_path,
                read_write,
                create_as,
            } => {
                if !dir.join(source_path).exists()
                    && ["dir", "file"].contains(&create_as.to_ascii_lowercase().as_str())
                {
                    return Err(located(refuse(
                        format!("SourcePath \"{source_path}\" with CreateAs: {create_as}"),
                        "the path does not exist, and detwasm never creates host paths: create it first",
                    )));
                }
                let host = policy
                    .resolve_in(&roots, dir, source_path)
                    .map_err(located)?;
                let meta = std::fs::metadata(&host).map_err(|e| {
                    located(SpecError::Io {
                        path: host.clone(),
                        message: e.to_string(),
                    })
                })?;
                let origin = host.display().to_string();
                if meta.is_dir() {
                    plans.push(Plan::Folder(Mount {
                        host,
                        guest: input.target.clone(),
                        writable: *read_write,
                    }));
                    (None, origin, None)
                } else if meta.is_file() {
                    if *read_write {
                        return Err(located(refuse(
                            format!("SourcePath \"{source_path}\" with ReadWrite: true"),
                            "writable inputs are folders (copy-on-write, delivered as a results volume); a single file cannot be one: mount its folder instead, or drop ReadWrite",
                        )));
                    }
                    let copy = match by_file.get(&host) {
                        Some(copy) => copy.clone(),
                        None => {
                            let size = meta.len();
                            budget.charge_copy(size).map_err(|why| {
                                located(refuse(
                                    format!(
                                        "the input at {} (local file {})",
                                        input.target,
                                        host.display()
                                    ),
                                    why,
                                ))
                            })?;
                            let to = scratch_dir(&mut scratch, tmp)
                                .map_err(located)?
                                .join(format!("file-{}", produce.len()));
                            produce.push(Produce::Copy {
                                from: host.clone(),
                                to: to.clone(),
                                size,
                            });
                            by_file.insert(host, to.clone());
                            to
                        }
                    };
                    (Some(Staged::Link(copy)), origin, None)
                } else {
                    return Err(located(refuse(
                        format!("SourcePath \"{source_path}\""),
                        "not a regular file or folder",
                    )));
                }
            }
            Source::Inline { bytes } => {
                budget.charge_copy(bytes.len() as u64).map_err(|why| {
                    located(refuse(
                        format!("the input at {} (inline data)", input.target),
                        why,
                    ))
                })?;
                (
                    Some(Staged::Bytes(bytes.clone())),
                    format!("{}: inline data for {}", file.display(), input.target),
                    None,
                )
            }
            Source::Ipfs { cid } => {
                let want = resolve::parse_cid_at(cid, "Source.Params.CID").map_err(located)?;
                let shared = match by_cid.get(&want.to_string()) {
                    Some(shared) => shared.clone(),
                    None => {
                        let shared = match find_cid(&roots, &cars, cid).map_err(located)? {
                            Found::Path(path, how) => {
                                let is_dir = path.is_dir();
                                let origin = path.display().to_string();
                                let host = if is_dir {
                                    path
                                } else {
                                    let size = std::fs::metadata(&path)
                                        .map_err(|e| {
                                            located(SpecError::Io {
                                                path: path.clone(),
                                                message: e.to_string(),
                                            })
                                        })?
                                        .len();
                                    budget.charge_copy(size).map_err(|why| {
                                        located(refuse(
                                            format!(
                                                "the input at {} (ipfs CID {cid} in {})",
                                                input.target,
                                                path.display()
                                            ),
                                            why,
                                        ))
                                    })?;
                                    let to = scratch_dir(&mut scratch, tmp)
                                        .map_err(located)?
                                        .join(format!("cid-{}", produce.len()));
                                    produce.push(Produce::Copy {
                                        from: path,
                                        to: to.clone(),
                                        size,
                                    });
                                    to
                                };
                                Shared {
                                    host,
                                    is_dir,
                                    origin,
                                    how,
                                }
                            }
                            Found::Car {
                                file: car_file,
                                index,
                                held,
                            } => {
                                budget.charge(held.size).map_err(|why| {
                                    located(refuse(
                                        format!(
                                            "the input at {} (ipfs CID {cid} in {})",
                                            input.target,
                                            car_file.display()
                                        ),
                                        why,
                                    ))
                                })?;
                                let to = scratch_dir(&mut scratch, tmp)
                                    .map_err(located)?
                                    .join(format!("cid-{}", produce.len()));
                                produce.push(Produce::Unpack {
                                    car: car_file.clone(),
                                    index,
                                    want,
                                    to: to.clone(),
                                    work: held.size.work,
                                    line: input.line,
                                });
                                Shared {
                                    host: to,
                                    is_dir: held.is_dir,
                                    origin: car_file.display().to_string(),
                                    how: "blocks verified in CAR",
                                }
                            }
                        };
                        by_cid.insert(want.to_string(), shared.clone());
                        shared
                    }
                };
                let matched = Some((cid.clone(), shared.how));
                if shared.is_dir {
                    plans.push(Plan::Folder(Mount {
                        host: shared.host,
                        guest: input.target.clone(),
                        writable: false,
                    }));
                    (None, shared.origin, matched)
                } else {
                    (Some(Staged::Link(shared.host)), shared.origin, matched)
                }
            }
        };
        if let Some(content) = content {
            let (parent, name) = split_guest(&input.target);
            if !staged.contains_key(&parent) {
                plans.push(Plan::Staged(parent.clone()));
            }
            staged.entry(parent).or_default().push(StagedFile {
                name,
                content,
                target: input.target.clone(),
                line: input.line,
            });
        }
        origins.push((origin, matched));
    }

    // Every input is charged: write the content named by CID, once per CID, and copy
    // each host file once.
    for p in produce {
        match p {
            Produce::Copy { from, to, size } => {
                copy_charged(&from, &to, size).map_err(|e| SpecError::Io {
                    path: from.clone(),
                    message: format!("staging a file input: {e}"),
                })?;
            }
            Produce::Unpack {
                car: car_file,
                index,
                want,
                to,
                work,
                line,
            } => {
                let parsed = cars.car(index).map_err(|e| e.at(file, line))?;
                let unpacked = match parsed {
                    Ok(car) => car::unpack_from(car, &want, &to, work),
                    Err(e) => Err(e.clone()),
                };
                unpacked.map_err(|e| {
                    SpecError::Io {
                        path: car_file.clone(),
                        message: format!("unpacking {want}: {e}"),
                    }
                    .at(file, line)
                })?;
            }
        }
    }

    // Write the staged files.
    let mut staged_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (i, (parent, files)) in staged.into_iter().enumerate() {
        let folder = scratch_dir(&mut scratch, tmp)?.join(i.to_string());
        let io = |path: &Path, e: std::io::Error| SpecError::Io {
            path: path.to_path_buf(),
            message: format!("staging a file input: {e}"),
        };
        std::fs::create_dir(&folder).map_err(|e| io(&folder, e))?;
        for f in files {
            let to = folder.join(&f.name);
            match f.content {
                Staged::Bytes(bytes) => std::fs::write(&to, bytes).map_err(|e| io(&to, e))?,
                // One copy on disk for every input naming the CID or the host file (the
                // guest sees inputs read-only, link counts are not visible to it, and
                // the file is the job's own). Where the scratch folder's filesystem has
                // no hard links, each input gets a copy, charged as the first was.
                Staged::Link(from) => {
                    if std::fs::hard_link(&from, &to).is_err() {
                        let size = std::fs::metadata(&from).map_err(|e| io(&from, e))?.len();
                        budget.charge_copy(size).map_err(|why| {
                            refuse(format!("the input at {}", f.target), why).at(file, f.line)
                        })?;
                        copy_charged(&from, &to, size).map_err(|e| io(&from, e))?;
                    }
                }
            }
        }
        staged_dirs.insert(parent, folder);
    }
    let staging = scratch.map(|(tmp, _)| Staging { _dirs: vec![tmp] });
    let mounts: Vec<Mount> = plans
        .into_iter()
        .map(|p| match p {
            Plan::Folder(m) => m,
            Plan::Staged(parent) => Mount {
                host: staged_dirs[&parent].clone(),
                guest: parent,
                writable: false,
            },
        })
        .collect();

    let entry = entry_module(file, &spec, &mounts, &origins)?;
    let job = assemble(
        &entry,
        entry.file.display().to_string(),
        &spec.parts,
        &mounts,
    );
    let notes = spec
        .notes
        .iter()
        .map(|n| match n.line {
            Some(l) => format!("{}:{l}: {}", file.display(), n.text),
            None => format!("{}: {}", file.display(), n.text),
        })
        .collect();
    Ok(V1Job {
        job,
        spec,
        entry,
        notes,
        staging,
    })
}

/// Finds the entry module: the input whose target `EntryModule` names (or a file inside a
/// folder input), read through the mounts the guest sees; a folder gives its single
/// `.wasm` file, as Bacalhau's module loader takes it.
pub(super) fn entry_module(
    file: &Path,
    spec: &JobSpec,
    mounts: &[Mount],
    origins: &[(String, Option<(String, &'static str)>)],
) -> Result<EntryModule, SpecError> {
    let want = &spec.entry_module;
    let located = |e: SpecError| e.at(file, spec.entry_line);
    let Some(index) = spec
        .inputs
        .iter()
        .position(|i| *want == i.target || want.starts_with(&format!("{}/", i.target)))
    else {
        let targets: Vec<&str> = spec.inputs.iter().map(|i| i.target.as_str()).collect();
        return Err(located(refuse(
            format!("EntryModule = \"{want}\""),
            format!(
                "it must be the Target of one of the task's InputSources (as Bacalhau 1.7+ requires); the targets are: {}. Add an input source for the .wasm, e.g. {{Target: {want}, Source: {{Type: local, Params: {{SourcePath: main.wasm}}}}}}",
                if targets.is_empty() { "none".to_string() } else { targets.join(", ") }
            ),
        )));
    };
    // The mount serving `want`: the longest guest prefix.
    let mount = mounts
        .iter()
        .filter(|m| {
            *want == m.guest || m.guest == "/" || want.starts_with(&format!("{}/", m.guest))
        })
        .max_by_key(|m| m.guest.len())
        .expect("every input is mounted");
    let rest = want[mount.guest.len()..].trim_start_matches('/');
    let mut path = if rest.is_empty() {
        mount.host.clone()
    } else {
        mount.host.join(rest)
    };
    let canonical = path.canonicalize().map_err(|e| {
        located(SpecError::Io {
            path: path.clone(),
            message: format!("the entry module {want}: {e}"),
        })
    })?;
    if !canonical.starts_with(&mount.host) {
        return Err(located(refuse(
            format!("EntryModule = \"{want}\""),
            "it is a symlink leading out of its input",
        )));
    }
    path = canonical;
    if path.is_dir() {
        let mut wasm: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| {
                located(SpecError::Io {
                    path: path.clone(),
                    message: e.to_string(),
                })
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.is_dir() && p.extension().and_then(|e| e.to_str()) == Some("wasm"))
            .collect();
        wasm.sort();
        if wasm.len() != 1 {
            return Err(located(refuse(
                format!("EntryModule = \"{want}\""),
                format!("it is a folder with {} .wasm files; Bacalhau's loader takes a folder only when it holds exactly one: name the file instead", wasm.len()),
            )));
        }
        path = wasm.remove(0);
    }
    let bytes = resolve::read_bounded(&path, MAX_MODULE_FILE).map_err(located)?;
    let (origin, matched) = &origins[index];
    let file = if spec.inputs[index].target == *want && !Path::new(origin).is_dir() {
        PathBuf::from(origin)
    } else {
        path
    };
    Ok(EntryModule {
        bytes,
        file,
        matched: matched.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use detwasm_hasher::cid::{Cid as HCid, CidVersion, RAW};

    /// A folder of more `.car` files than [`MAX_JOB_CAR_FILES`] is listed up to the limit
    /// and a lookup among them refused, naming the folder (found by review: 100,000
    /// empty `.car` files took more than 275 s of CPU to list, before any deadline).
    #[test]
    fn a_folder_of_too_many_cars_is_refused_after_listing_the_limit() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        for i in 0..=MAX_JOB_CAR_FILES {
            std::fs::write(root.join(format!("c{i:05}.car")), b"").unwrap();
        }
        let roots = vec![root.clone()];
        let files = CarFiles::list(&roots);
        assert_eq!(files.listed.len(), MAX_JOB_CAR_FILES);
        let cars = Cars::new(&files);
        let cid = HCid::of_block(CidVersion::V1, RAW, b"x").to_string();
        let Err(e) = find_cid(&roots, &cars, &cid) else {
            panic!("found")
        };
        let e = e.to_string();
        assert!(
            e.contains("more than 1024 .car files") && e.contains(&*root.to_string_lossy()),
            "{e}"
        );
        // One fewer: listed whole, and looked through.
        std::fs::remove_file(root.join("c00000.car")).unwrap();
        let files = CarFiles::list(&roots);
        assert!(files.overflow.is_none());
        assert_eq!(files.listed.len(), MAX_JOB_CAR_FILES);
    }

    /// Looking up many CIDs in a folder's CARs reads each CAR once (every lookup read and
    /// hashed every CAR again: CIDs times CAR bytes), and the CARs a job reads together are
    /// bounded by [`car::MAX_JOB_CAR_READ`], checked from the file's size before reading.
    #[test]
    fn each_car_is_read_once_per_job_within_the_jobs_read_limit() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let blocks: Vec<(HCid, Vec<u8>)> = (0..50u32)
            .map(|i| {
                let data = format!("file {i}").into_bytes();
                (HCid::of_block(CidVersion::V1, RAW, &data), data)
            })
            .collect();
        let bytes = detwasm_hasher::car::assemble_unchecked(&blocks[0].0, &blocks);
        std::fs::write(root.join("a.car"), &bytes).unwrap();
        let roots = vec![root.clone()];
        let files = CarFiles::list(&roots);
        let cars = Cars::new(&files);
        for (cid, _) in &blocks {
            match find_cid(&roots, &cars, &cid.to_string()).unwrap() {
                Found::Car { index, held, .. } => {
                    assert_eq!(index, 0);
                    assert!(!held.is_dir);
                }
                Found::Path(..) => panic!("found as a path"),
            }
        }
        assert_eq!(files.read.get(), bytes.len() as u64, "read once");

        // A CAR that would pass the job's limit is refused before it is read (a sparse
        // file: nothing of it is on disk).
        let big = std::fs::File::create(root.join("b.car")).unwrap();
        big.set_len(car::MAX_JOB_CAR_READ).unwrap();
        let files = CarFiles::list(&roots);
        let cars = Cars::new(&files);
        find_cid(&roots, &cars, &blocks[3].0.to_string()).unwrap();
        let absent = HCid::of_block(CidVersion::V1, RAW, b"absent").to_string();
        let Err(e) = find_cid(&roots, &cars, &absent) else {
            panic!("found a CID no CAR holds")
        };
        let e = e.to_string();
        assert!(e.contains("b.car") && e.contains("MAX_JOB_CAR_READ"), "{e}");
        assert_eq!(files.read.get(), bytes.len() as u64);
    }

    /// A job folder with an empty module `m.wasm` and a job file whose inputs are the
    /// module and, for each `(target, source path)`, a `local` input; returns the job
    /// file and an empty folder to stage in.
    fn job_folder(root: &Path, inputs: &[(String, &str)]) -> (PathBuf, PathBuf) {
        std::fs::write(root.join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let mut text = String::from(
            "Name: t\nType: batch\nTasks:\n  - Name: main\n    Engine:\n      Type: wasm\n      Params:\n        EntryModule: /app/m.wasm\n        Entrypoint: _start\n    InputSources:\n      - Target: /app/m.wasm\n        Source:\n          Type: local\n          Params:\n            SourcePath: m.wasm\n",
        );
        for (target, source) in inputs {
            text.push_str(&format!("      - Target: {target}\n        Source:\n          Type: local\n          Params:\n            SourcePath: {source}\n"));
        }
        text.push_str("    Network:\n      Type: None\n");
        let file = root.join("job.yaml");
        std::fs::write(&file, text).unwrap();
        let tmp = root.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        (file, tmp)
    }

    fn stage(file: &Path, tmp: &Path) -> Result<V1Job, SpecError> {
        let text = std::fs::read_to_string(file).unwrap();
        let spec = parse(&text).map_err(|(line, e)| e.at(file, line))?;
        let dir = file.parent().unwrap();
        prepare_in(file, dir, dir, spec, &InputPolicy::default(), tmp)
    }

    /// Every regular file under `dir`, by (device, inode): how many names each has there,
    /// its size and the bytes it takes on disk.
    #[cfg(unix)]
    fn files_under(dir: &Path) -> BTreeMap<(u64, u64), (usize, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut out: BTreeMap<(u64, u64), (usize, u64, u64)> = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                let m = std::fs::symlink_metadata(&path).unwrap();
                if m.is_dir() {
                    stack.push(path);
                } else {
                    let f = out
                        .entry((m.dev(), m.ino()))
                        .or_insert((0, m.len(), m.blocks() * 512));
                    f.0 += 1;
                }
            }
        }
        out
    }

    /// A `local` file named by many inputs is copied once per job, by its canonical
    /// path, into the job's scratch folder, and each input gets a hard link to that copy
    /// (sixteen inputs naming one 64 MiB file wrote 1.1 GB, a copy each): the disk used
    /// is one copy. The host file itself is never linked (its link count and change
    /// time stay as they were: see [`copy_charged`]). The folder goes with the job.
    #[cfg(unix)]
    #[test]
    fn a_local_file_named_by_many_inputs_is_staged_once() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8 + 1).collect();
        std::fs::write(root.join("data.bin"), &data).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        // Sixteen folders, so sixteen mounts, two names in the first, and one by another
        // path to the same file.
        let mut inputs: Vec<(String, &str)> = (0..16)
            .map(|k| (format!("/in{k}/data.bin"), "data.bin"))
            .collect();
        inputs.push(("/in0/again.bin".into(), "sub/../data.bin"));
        let (file, tmp) = job_folder(&root, &inputs);
        let before = std::fs::metadata(root.join("data.bin")).unwrap();
        let job = stage(&file, &tmp).unwrap();

        let staged: Vec<PathBuf> = inputs
            .iter()
            .map(|(target, _)| {
                let (parent, name) = split_guest(target);
                let mount = job.job.inputs.iter().find(|m| m.guest == parent).unwrap();
                mount.host.join(name)
            })
            .collect();
        assert_eq!(job.job.inputs.len(), 17, "the module's folder and sixteen");
        let inode = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let first = inode(&staged[0]);
        for p in &staged {
            assert_eq!(inode(p), first, "{} is a link to the one copy", p.display());
        }
        assert_eq!(std::fs::read(&staged[5]).unwrap(), data);
        assert_ne!(
            first,
            (before.dev(), before.ino()),
            "a copy, not the host file"
        );
        let after = std::fs::metadata(root.join("data.bin")).unwrap();
        assert_eq!(
            (after.nlink(), after.ctime(), after.ctime_nsec()),
            (1, before.ctime(), before.ctime_nsec()),
            "the host file is not linked"
        );

        let files = files_under(&tmp);
        let (names, size, disk) = files[&first];
        assert_eq!(names, 1 + inputs.len(), "the copy and a link per input");
        assert_eq!(size, data.len() as u64);
        let all: u64 = files.values().map(|f| f.2).sum();
        assert!(
            all >= disk && all < disk + (64 << 10),
            "{all} bytes on disk for a {} byte file (and the module)",
            data.len()
        );
        drop(job);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    /// What a job copies into its temporary folder is charged to the one budget CAR
    /// content shares ([`car::MAX_JOB_CAR_BYTES`], 1 GiB), before anything is copied, and
    /// a file named twice is charged once: two sparse files of 600 MiB, the first named
    /// eight times, are refused at the second, naming the job file, the input and the
    /// limit, and nothing is left in the temporary folder.
    #[test]
    fn local_files_over_the_staging_budget_are_refused_before_anything_is_copied() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        for name in ["a.bin", "b.bin"] {
            let f = std::fs::File::create(root.join(name)).unwrap();
            f.set_len(600 << 20).unwrap();
        }
        let mut inputs: Vec<(String, &str)> =
            (0..8).map(|k| (format!("/a{k}/a.bin"), "a.bin")).collect();
        inputs.push(("/b/b.bin".into(), "b.bin"));
        let (file, tmp) = job_folder(&root, &inputs);
        let Err(e) = stage(&file, &tmp) else {
            panic!("1.2 GB of files staged")
        };
        let e = e.to_string();
        assert!(
            e.contains(&format!("{}:", file.display()))
                && e.contains("/b/b.bin")
                && e.contains(&root.join("b.bin").display().to_string())
                && e.contains("1 GiB")
                && e.contains("MAX_JOB_CAR_BYTES"),
            "{e}"
        );
        assert!(!e.contains("/a1/"), "the first file is charged once: {e}");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing is left in the temporary folder"
        );

        // One file alone over the budget.
        std::fs::File::create(root.join("big.bin"))
            .unwrap()
            .set_len(car::MAX_JOB_CAR_BYTES + 1)
            .unwrap();
        let (file, tmp) = {
            let t2 = root.join("two");
            std::fs::create_dir(&t2).unwrap();
            std::fs::rename(root.join("big.bin"), t2.join("big.bin")).unwrap();
            job_folder(&t2, &[("/big/big.bin".into(), "big.bin")])
        };
        let e = stage(&file, &tmp).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("/big/big.bin") && e.contains("MAX_JOB_CAR_BYTES"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
