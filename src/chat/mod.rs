//! `natter chat` (work in progress).

/// Arguments of `natter chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {}

pub fn run(_args: ChatArgs) -> anyhow::Result<()> {
    anyhow::bail!("natter chat is not built yet")
}
