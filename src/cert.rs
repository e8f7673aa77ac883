//! `natter cert --self-signed --out DIR`: a certificate and key for trying
//! TLS out on this machine (localhost, 127.0.0.1, ::1). Clients trust it
//! with `--ca-file DIR/cert.pem`; for a server others reach, use a
//! certificate from a real CA instead.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use natter_server::certs::{self, LOCAL_NAMES};

/// Arguments of `natter cert`.
#[derive(clap::Args, Debug)]
pub struct CertArgs {
    /// Make a self-signed certificate (the only kind this command makes).
    #[arg(long, required = true)]
    self_signed: bool,
    /// Directory for cert.pem and key.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: CertArgs) -> anyhow::Result<()> {
    let pem = certs::self_signed(&LOCAL_NAMES).context("cannot make a certificate")?;
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cert = args.out.join("cert.pem");
    let key = args.out.join("key.pem");
    write_new(&cert, &pem.cert, 0o644)?;
    // Only the owner may read the key; created so, never widened later.
    write_new(&key, &pem.key, 0o600)?;
    println!(
        "wrote {} and {} (for {})",
        cert.display(),
        key.display(),
        LOCAL_NAMES.join(", ")
    );
    println!(
        "serve with: natter serve --tls-cert {} --tls-key {}",
        cert.display(),
        key.display()
    );
    Ok(())
}

/// Writes a file that must not exist yet, with `mode` from the start (an
/// existing key is never overwritten by accident).
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
