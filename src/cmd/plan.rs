//! `phoenix plan --snapshot FILE [--solver NAME] [--time-limit-ms N] [--no-baseline]`.
//!
//! Reads a `phoenix.snapshot/v1` snapshot (a file, or standard input with
//! `-`) and prints the `phoenix.plan/v1` plan to standard output — and
//! nothing else: every error goes to standard error, with an exit code that
//! says what kind of failure it was (see [`EXIT_INVALID`],
//! [`EXIT_INFEASIBLE`], [`EXIT_NO_PLAN`]; anything else is 1). The contract is documented in
//! `docs/snapshot.md`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use scheduler::{validate, Instance, PlanError, Snapshot, SolveOptions, SolverKind};
use tracing::{info, warn};

/// Exit code for a snapshot that is malformed (not JSON of the snapshot's
/// shape) or invalid (a field value the model cannot accept). Command-line
/// usage errors also exit with 2 (clap's convention).
pub const EXIT_INVALID: u8 = 2;
/// Exit code for a valid snapshot that no plan can satisfy (proven).
pub const EXIT_INFEASIBLE: u8 = 3;
/// Exit code for a valid snapshot on which the solver found no plan
/// without proving that none exists (the error says where it stopped).
pub const EXIT_NO_PLAN: u8 = 4;

const EXIT_CODES: &str = "\
Exit codes:
  0  the plan was printed to standard output
  1  other failure (the snapshot file cannot be read, a solver failure)
  2  the snapshot is malformed or invalid (the error names the field), or bad usage
  3  the snapshot is infeasible: no plan meets every rule (proven; the error names it)
  4  no plan found, but not proven infeasible (the error says where the search
     stopped; try a longer --time-limit-ms, --solver exact, or a larger migration budget)

Errors go to standard error; on failure nothing is printed to standard output.
The snapshot and plan formats: docs/snapshot.md.";

/// Arguments of `phoenix plan`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct Args {
    /// Snapshot file (phoenix.snapshot/v1 JSON); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    snapshot: PathBuf,
    /// Solver: optimizer (default) or greedy (the baseline: no migrations,
    /// no switching off).
    #[arg(long, value_name = "NAME", default_value = "optimizer")]
    solver: SolverKind,
    /// Return the best plan found within this many milliseconds.
    #[arg(long, value_name = "N")]
    time_limit_ms: Option<u64>,
    /// Skip computing the greedy baseline's cost for comparison.
    #[arg(long)]
    no_baseline: bool,
}

/// Run `phoenix plan`. Snapshot errors are reported here (with their exit
/// code); the `Err` case is left for failures of the program itself.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.snapshot.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the snapshot from stdin")?
    } else {
        std::fs::read_to_string(&args.snapshot)
            .with_context(|| format!("reading snapshot {}", args.snapshot.display()))?
    };
    let snap = match scheduler::parse_snapshot(&text) {
        Ok(snap) => snap,
        Err(e) => return Ok(report(&[e])),
    };
    let opts = SolveOptions {
        solver: args.solver,
        time_limit: args.time_limit_ms.map(Duration::from_millis),
        with_baseline: !args.no_baseline,
        ..Default::default()
    };
    let plan = match scheduler::solve(&snap, &opts) {
        Ok(plan) => plan,
        Err(e) => return Ok(report(&all_of(&snap, e))),
    };
    if opts.with_baseline && plan.baseline_cost.is_none() {
        warn!(
            site = %snap.site,
            "The greedy baseline cannot meet every rule on this snapshot; no gain over it is reported."
        );
    }
    info!(
        site = %snap.site,
        gain_over_baseline = ?plan.baseline_cost.map(|b| b - plan.objective.cost),
        solver = %plan.solver,
        cost = plan.objective.cost,
        baseline_cost = ?plan.baseline_cost,
        lower_bound = ?plan.lower_bound,
        solve_ms = plan.solve_ms,
        "Plan computed."
    );
    let json = serde_json::to_string_pretty(&plan).context("encoding the plan")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .context("writing the plan to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Every problem of the kind of `first`, so that one run shows them all:
/// all invalid fields, or all provable infeasibilities (`first` itself when
/// it came from the solver, e.g. the baseline's own limits).
fn all_of(snap: &Snapshot, first: PlanError) -> Vec<PlanError> {
    let all = match &first {
        PlanError::Invalid { .. } => validate::problems(snap),
        PlanError::Infeasible { .. } => Instance::new(snap)
            .map(|inst| validate::infeasibilities(&inst))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if all.contains(&first) {
        all
    } else {
        vec![first]
    }
}

/// Print `errors` to standard error and return the exit code of the first.
fn report(errors: &[PlanError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    if errors.len() > 1 {
        eprintln!("{} problems found; no plan was made.", errors.len());
    }
    ExitCode::from(errors.first().map_or(1, exit_code))
}

/// The exit code for a planning error.
fn exit_code(e: &PlanError) -> u8 {
    match e {
        PlanError::Parse { .. } | PlanError::Invalid { .. } => EXIT_INVALID,
        PlanError::Infeasible { .. } => EXIT_INFEASIBLE,
        PlanError::NoPlanFound { .. } => EXIT_NO_PLAN,
        PlanError::Solver(_) => 1,
    }
}
