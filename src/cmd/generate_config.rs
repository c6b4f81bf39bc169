//! `phoenix generate-config KIND`: print a documented default configuration
//! (every key with its unit and default) to start from. Another kind is one
//! more variant of [`Kind`] and one more match arm.

use std::process::ExitCode;

/// Which configuration to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The node agent (`phoenix agent --config`).
    Agent,
}

/// Arguments of `phoenix generate-config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration to print.
    kind: Kind,
}

/// The default configuration text of `kind`.
pub fn default_config(kind: Kind) -> &'static str {
    match kind {
        Kind::Agent => sensors::DEFAULT_AGENT_CONFIG,
    }
}

/// Run `phoenix generate-config`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    print!("{}", default_config(args.kind));
    Ok(ExitCode::SUCCESS)
}
