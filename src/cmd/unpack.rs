//! `detwasm unpack`: argument parsing and output only; the work is
//! `detwasm_ops::unpack`.

use std::path::PathBuf;
use std::process::ExitCode;

use detwasm_ops::unpack::{self, Limits};

/// Write out the content of a CAR file: the results of a run (`detwasm hash --car`), a
/// module packed by `module pack`, a snapshot, or what `ipfs dag export` wrote.
///
/// Every block is checked against its CID, and the size the tree would have is checked
/// against --max-size and --max-entries before anything is written (a small CAR can
/// describe a huge tree), as are the CAR's own size (at most --max-size plus 1/16 and
/// 16 MiB; its blocks are indexed in memory, up to about four times its size) and the
/// work of writing it (block visits: twice --max-size plus 1 KiB per entry). The tree is written beside DEST and renamed into place when
/// complete; DEST must not exist. Prints the CID written (stdout) and what it holds.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CAR file (CARv1 with one root).
    pub car: PathBuf,

    /// Where to write the tree: a new file or folder [default: its CID, in the current
    /// folder, as `ipfs get` names it].
    pub dest: Option<PathBuf>,

    /// Write the block CID of the CAR (a file or folder inside it) instead of its root.
    #[arg(long, value_name = "CID")]
    pub cid: Option<String>,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Print what was written as one JSON object (`cid`, `kind`, `bytes`, `entries`,
    /// `dest`).
    #[arg(long)]
    pub json: bool,
}

/// How much a CAR's tree may write (`unpack`, `fetch`).
#[derive(clap::Args, Debug)]
pub struct LimitArgs {
    /// The most bytes of files to write [default: 16GiB].
    #[arg(long, value_name = "SIZE", value_parser = detwasm_ops::request::parse_size)]
    pub max_size: Option<u64>,

    /// The most files, folders and symlinks to write [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_entries: Option<u64>,
}

impl LimitArgs {
    /// The limits the flags give (see [`Limits::of`]).
    pub fn limits(&self) -> Limits {
        Limits::of(
            self.max_size.unwrap_or(unpack::DEFAULT_MAX_BYTES),
            self.max_entries.unwrap_or(unpack::DEFAULT_MAX_ENTRIES),
        )
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limits = args.limits.limits();
    let u = unpack::unpack(&args.car, args.cid.as_deref(), args.dest.as_deref(), limits)
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", super::json(&u, false)?);
    } else {
        println!("{}", u.cid);
        eprintln!(
            "unpacked: a {} of {} bytes in {} {} at {}",
            u.kind,
            u.bytes,
            u.entries,
            if u.entries == 1 { "entry" } else { "entries" },
            u.dest.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
