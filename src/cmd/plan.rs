//! `phoenix plan --snapshot FILE [--solver NAME] [--time-limit-ms N]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use scheduler::{SolveOptions, SolverKind};

/// Arguments of `phoenix plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot file (phoenix.snapshot/v1 JSON); `-` reads standard input.
    #[arg(long)]
    snapshot: PathBuf,
    /// Solver: optimizer (default) or greedy (the baseline).
    #[arg(long, default_value = "optimizer")]
    solver: SolverKind,
    /// Return the best plan found within this many milliseconds.
    #[arg(long)]
    time_limit_ms: Option<u64>,
    /// Skip computing the greedy baseline's cost for comparison.
    #[arg(long)]
    no_baseline: bool,
}

/// Run `phoenix plan`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.snapshot.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the snapshot from stdin")?
    } else {
        std::fs::read_to_string(&args.snapshot)
            .with_context(|| format!("reading snapshot {}", args.snapshot.display()))?
    };
    let snap = scheduler::parse_snapshot(&text)?;
    let opts = SolveOptions {
        solver: args.solver,
        time_limit: args.time_limit_ms.map(Duration::from_millis),
        with_baseline: !args.no_baseline,
    };
    let plan = scheduler::solve(&snap, &opts)?;
    println!("{}", serde_json::to_string_pretty(&plan)?);
    Ok(ExitCode::SUCCESS)
}
