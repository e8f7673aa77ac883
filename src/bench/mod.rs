//! `natter bench` (work in progress).

/// Arguments of `natter bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("natter bench is not built yet")
}
