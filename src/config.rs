//! `natter config`: the server's config file.

use std::io::Write;

/// Arguments of `natter config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Write a config file that sets every key of `natter serve` to its
    /// default, each with its help text (`natter serve --config FILE`
    /// takes it as it is).
    #[arg(long, required = true)]
    print_defaults: bool,
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    if args.print_defaults {
        let text = crate::settings::defaults_file(&crate::serve::command());
        std::io::stdout().write_all(text.as_bytes())?;
    }
    Ok(())
}
