//! `natter serve` (work in progress).

/// Arguments of `natter serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("natter serve is not built yet")
}
