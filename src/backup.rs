//! `natter backup`: a consistent copy of a data dir, taken while the server
//! runs (it does not need the server's lock, and the server does not wait
//! for it). Restoring is stopping the server and putting the copy in place
//! of its data dir; docs/STORAGE.md says more.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

/// Arguments of `natter backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The server's data directory.
    #[arg(long, default_value = "natter-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Directory to write the copy into (created; must not hold a natter.db yet).
    #[arg(value_name = "OUT")]
    out: PathBuf,
}

pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    natter_store::backup(&args.data_dir, &args.out).with_context(|| {
        format!(
            "backup of {} to {} failed",
            args.data_dir.display(),
            args.out.display()
        )
    })?;
    let copy = args.out.join(natter_store::DB_FILE);
    let bytes = std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of {} written to {} ({:.1} MB in {:.2} s)",
        args.data_dir.display(),
        copy.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
