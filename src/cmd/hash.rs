//! `detwasm hash`: the IPFS CID of a file or directory, exactly as `ipfs add` computes it.

use anyhow::Context;
use detwasm_hasher::{parse_chunker, CidVersion, HamtCompare, Hasher, Options, Profile, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Compute the IPFS CID of PATH (a file or a directory), as `ipfs add -Qr` prints it.
///
/// The default profile, unixfs-v0-2015, is kubo's `ipfs add -r` with its defaults (and
/// what Lilypad compares). Options below override single parameters of the profile.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// File or directory to hash. Symlinks inside are stored as symlinks, never followed.
    pub path: PathBuf,

    /// IPIP-499 CID profile: unixfs-v0-2015 (CIDv0, 256 KiB chunks, dag-pb leaves, 174
    /// links, HAMT sized by link bytes) or unixfs-v1-2025 (CIDv1, 1 MiB chunks, raw
    /// leaves, 1024 links, HAMT sized by block bytes).
    #[arg(long, default_value = "unixfs-v0-2015", value_parser = ["unixfs-v0-2015", "unixfs-v1-2025"])]
    pub profile: String,

    /// CID version of dag-pb nodes (0 or 1), like `ipfs add --cid-version`. As in kubo,
    /// `--cid-version 1` also turns raw leaves on unless --raw-leaves says otherwise.
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub cid_version: Option<u8>,

    /// Store file chunks as raw blocks (codec 0x55, CIDv1) instead of UnixFS dag-pb
    /// nodes. `--raw-leaves=false` turns them off.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub raw_leaves: Option<bool>,

    /// Chunker, like `ipfs add --chunker`: only fixed size, `size-N` (N bytes per chunk).
    #[arg(long, value_name = "size-N")]
    pub chunker: Option<String>,

    /// Maximum links per node of a file's balanced DAG.
    #[arg(long, value_name = "N")]
    pub max_links: Option<usize>,

    /// Directory size (as the profile estimates it) above which a directory is
    /// HAMT-sharded, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub hamt_threshold: Option<u64>,

    /// Compare the HAMT threshold with `>=` instead of `>`, as kubo before 0.40 did
    /// (networks pinned to an older kubo compute sharding this way).
    #[arg(long)]
    pub kubo_pre_0_40: bool,

    /// Include names starting with `.` (left out by default, as `ipfs add`).
    #[arg(long)]
    pub hidden: bool,

    /// Also write the whole DAG to FILE as a CARv1 (root first, `ipfs dag export` order).
    #[arg(long, value_name = "FILE")]
    pub car: Option<PathBuf>,

    /// Print one JSON object: {"cid", "profile", "options", "size"[, "entries"]}.
    #[arg(long)]
    pub json: bool,

    /// With --json: list the CID of every file, folder and symlink under "entries".
    #[arg(long, requires = "json")]
    pub entries: bool,

    /// Also publish the DAG to the IPFS node of --ipfs-api (or $DETWASM_IPFS_API), as
    /// `ipfs dag import` of its CAR (roots pinned); the node must report the same CID.
    #[arg(long)]
    pub publish: bool,

    #[command(flatten)]
    pub ipfs: super::fetch::IpfsArgs,
}

impl Args {
    /// The hasher options these arguments describe.
    pub fn options(&self) -> anyhow::Result<Options> {
        let profile: Profile = self.profile.parse()?;
        let mut opts = Options::profile(profile).with_hidden(self.hidden);
        if let Some(v) = self.cid_version {
            opts.cid_version = if v == 0 {
                CidVersion::V0
            } else {
                CidVersion::V1
            };
            // kubo's `ipfs add`: a CIDv1 import uses raw leaves unless told otherwise.
            if v == 1 && self.raw_leaves.is_none() {
                opts.raw_leaves = true;
            }
        }
        if let Some(raw) = self.raw_leaves {
            opts.raw_leaves = raw;
        }
        if let Some(spec) = &self.chunker {
            opts.chunk_size = parse_chunker(spec)?;
        }
        if let Some(n) = self.max_links {
            opts.max_links = n;
        }
        if let Some(t) = self.hamt_threshold {
            opts.hamt_threshold = t;
        }
        if self.kubo_pre_0_40 {
            opts.hamt_compare = HamtCompare::GreaterOrEqual;
        }
        opts.validate()?;
        Ok(opts)
    }
}

/// Shows a progress bar on stderr once hashing has taken more than a moment, and only
/// when stderr is a terminal.
struct Bar {
    bar: ProgressBar,
    start: Instant,
    tty: bool,
    shown: Mutex<bool>,
}

impl Bar {
    const DELAY: Duration = Duration::from_millis(500);

    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} hashing {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        Bar {
            bar,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            shown: Mutex::new(false),
        }
    }

    fn update(&self, p: Progress) {
        if !self.tty {
            return;
        }
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if !*shown {
            if self.start.elapsed() < Self::DELAY {
                return;
            }
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            *shown = true;
        }
        self.bar.set_length(p.total.max(p.done));
        self.bar.set_position(p.done);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = args.options()?;
    let bar = Bar::new();
    let progress = |p: Progress| bar.update(p);
    let mut hasher = Hasher::new(opts.clone())
        .entries(args.entries)
        .progress(&progress);
    // Publishing without --car: the CAR is written to a scratch folder first.
    let scratch = match (args.publish, &args.car) {
        (true, None) => Some(detwasm_ops::scratch::Scratch::new(
            "detwasm-publish-",
            "a CAR being published",
        )?),
        _ => None,
    };
    let car_path = args
        .car
        .clone()
        .or_else(|| scratch.as_ref().map(|s| s.path().join("publish.car")));
    let mut car_file = match &car_path {
        Some(path) => {
            Some(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create {}", path.display())
            })?))
        }
        None => None,
    };
    if let Some(w) = car_file.as_mut() {
        hasher = hasher.car(w);
    }
    let hashed = hasher.hash_path(&args.path);
    bar.finish();
    let hashed = hashed?;
    if let (Some(mut w), Some(path)) = (car_file, &car_path) {
        w.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let published = match (&car_path, args.publish) {
        (Some(car), true) => Some(
            args.ipfs
                .remote()
                .publish_car(car, &hashed.root.to_string())?,
        ),
        _ => None,
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let mut out = serde_json::json!({
            "cid": hashed.root.to_string(),
            "profile": hashed.profile.name(),
            "options": {
                "cid_version": match opts.cid_version { CidVersion::V0 => 0, CidVersion::V1 => 1 },
                "raw_leaves": opts.raw_leaves,
                "chunker": format!("size-{}", opts.chunk_size),
                "max_links": opts.max_links,
                "hamt_threshold": opts.hamt_threshold,
                "hamt_compare": match opts.hamt_compare { HamtCompare::Greater => ">", HamtCompare::GreaterOrEqual => ">=" },
                "hidden": opts.hidden,
            },
            "size": hashed.size,
        });
        if args.entries {
            out["entries"] = detwasm_hasher::EntryPaths::of(&hashed.entries)
                .map(|(path, e)| {
                    serde_json::json!({
                        "path": path,
                        "cid": e.cid.to_string(),
                        "type": e.kind.name(),
                        "size": e.size,
                    })
                })
                .collect();
        }
        if let Some(url) = &published {
            out["published"] = url.as_str().into();
        }
        // Names of the tree (`--entries`) are anyone's: DEL and C1 escaped too.
        writeln!(stdout, "{}", super::json(&out, false)?)?;
    } else {
        writeln!(stdout, "{}", hashed.root)?;
        if let Some(url) = &published {
            eprintln!("published to {url}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
