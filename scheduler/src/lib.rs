//! Phoenix's planning core: a site [`Snapshot`] in, a [`Plan`] out.
//!
//! The crate is pure — no sockets, files or runtime: data in, data out. The
//! model it optimises is DESIGN.md §2 (the "reference planning model"):
//! placement and on/off for the horizon, batch cores step by step, power from
//! interpolated SPECpower curves, heat delivered to loops, the temperature
//! limit as a steady-state rule.
//!
//! Principal pieces:
//! - [`model`]: the JSON contracts (`phoenix.snapshot/v1`, `phoenix.plan/v1`).
//! - [`validate`]: field checks and the infeasibility diagnostics.
//! - [`instance::Instance`]: a snapshot resolved to indices and derived limits.
//! - [`evaluate::evaluate`]: the exact cost and the hard-rule check of any
//!   decisions — every solver's output passes through it.
//! - Solvers: [`greedy`] (the baseline), [`optimizer`] (the default),
//!   [`exact`] (the MILP reference, proven optimal; small sites only).
//! - [`solve`]: validate, solve, evaluate, and compare with the baseline.

pub mod curve;
pub mod error;
pub mod evaluate;
pub mod exact;
pub mod generate;
pub mod greedy;
pub mod instance;
pub mod model;
pub mod optimizer;
pub mod validate;

use std::time::{Duration, Instant};

pub use error::PlanError;
pub use evaluate::{evaluate, Decisions, Evaluation};
pub use instance::Instance;
pub use model::{Plan, Snapshot};

/// Which solver to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SolverKind {
    /// Phoenix's optimiser (the default).
    #[default]
    Optimizer,
    /// The baseline: what a site does without Phoenix.
    Greedy,
    /// The exact MILP (HiGHS with the `highs` feature, else microlp); small
    /// sites only.
    Exact,
}

impl std::str::FromStr for SolverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "optimizer" => Ok(Self::Optimizer),
            "greedy" => Ok(Self::Greedy),
            "exact" => Ok(Self::Exact),
            other => Err(format!(
                "unknown solver `{other}` (expected optimizer, greedy or exact)"
            )),
        }
    }
}

/// How to solve.
#[derive(Debug, Clone, Default)]
pub struct SolveOptions {
    /// The solver.
    pub solver: SolverKind,
    /// Return the best plan found within this time.
    pub time_limit: Option<Duration>,
    /// Also run the greedy baseline and report its cost in the plan.
    pub with_baseline: bool,
    /// Leave out the optimiser's lower bound (an LP solve): for callers that
    /// plan thousands of times and never show it, like the simulator.
    pub skip_lower_bound: bool,
}

/// Parse a snapshot from JSON, naming the offending field on error.
pub fn parse_snapshot(json: &str) -> Result<Snapshot, PlanError> {
    validate::parse(json)
}

/// Validate `snap`, solve it and return a plan whose objective is its exact
/// cost. Infeasible snapshots give [`PlanError::Infeasible`] naming the rule.
pub fn solve(snap: &Snapshot, opts: &SolveOptions) -> Result<Plan, PlanError> {
    let started = Instant::now();
    validate::validate(snap)?;
    let inst = Instance::new(snap)?;
    validate::check_feasible(&inst)?;
    let (decisions, name, lower_bound) = match opts.solver {
        SolverKind::Greedy => (greedy::decide(&inst)?, greedy::NAME, None),
        SolverKind::Optimizer => {
            let settings = optimizer::Settings {
                deadline: opts.time_limit.map(|d| started + d),
                lower_bound: !opts.skip_lower_bound,
            };
            let out = optimizer::decide_with(&inst, &settings)?;
            (out.decisions, optimizer::NAME, out.lower_bound)
        }
        SolverKind::Exact => {
            let limit = opts.time_limit.map(|d| d.saturating_sub(started.elapsed()));
            let out = exact::solve(&inst, exact::Backend::default(), limit)?;
            (out.decisions, exact::NAME, out.best_bound)
        }
    };
    let ev = evaluate(&inst, &decisions);
    if !ev.is_feasible() {
        return Err(PlanError::Solver(format!(
            "{name} produced a plan that breaks the model: {}",
            ev.violations.join("; ")
        )));
    }
    let mut plan = evaluate::to_plan(
        &inst,
        &decisions,
        &ev,
        name,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    plan.lower_bound = lower_bound;
    if opts.with_baseline {
        plan.baseline_cost = if opts.solver == SolverKind::Greedy {
            Some(plan.objective.cost)
        } else {
            greedy::decide(&inst).ok().and_then(|d| {
                let e = evaluate(&inst, &d);
                e.is_feasible().then_some(e.objective.cost)
            })
        };
    }
    Ok(plan)
}
