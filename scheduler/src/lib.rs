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
//! - [`solve`]: validate, solve, evaluate, and compare with the baseline;
//!   [`solve_prepared`] the same for in-process callers, by index
//!   ([`Solution`]).
//! - [`period::PeriodPlanner`]: one control period's planning with the
//!   fallback ladder and the optimiser's carry — the one period planner of
//!   the simulator, the controller and the demo.

pub mod curve;
pub mod error;
pub mod evaluate;
pub mod exact;
pub mod generate;
pub mod greedy;
pub mod instance;
pub mod model;
pub mod optimizer;
pub mod period;
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
/// cost. [`PlanError::Infeasible`] means proven: a feasibility check of
/// [`validate::check_feasible`] names the rule no plan can meet, or the
/// exact MILP proved it. When the solver finds no plan and neither proves
/// that none exists, the error is [`PlanError::NoPlanFound`], saying where
/// the search stopped.
pub fn solve(snap: &Snapshot, opts: &SolveOptions) -> Result<Plan, PlanError> {
    let started = Instant::now();
    validate::validate(snap)?;
    let inst = Instance::new(snap)?;
    let s = solve_instance(&inst, opts, started, None)?;
    let mut plan = evaluate::to_plan(&inst, &s.decisions, &s.evaluation, s.solver, s.solve_ms);
    plan.lower_bound = s.lower_bound;
    plan.baseline_cost = s.baseline_cost;
    Ok(plan)
}

/// A solved snapshot by index: what [`solve`] writes out as an id-keyed
/// [`Plan`].
#[derive(Debug, Clone)]
pub struct Solution {
    /// Hosts, on/off states and batch cores, by index into the snapshot's
    /// lists.
    pub decisions: Decisions,
    /// Their exact cost, power and heat (feasible: no violations).
    pub evaluation: Evaluation,
    /// The solver that produced them (`optimizer`, `greedy`, `exact`).
    pub solver: &'static str,
    /// A proven lower bound on the optimal cost, when computed.
    pub lower_bound: Option<f64>,
    /// The greedy baseline's cost, with [`SolveOptions::with_baseline`].
    pub baseline_cost: Option<f64>,
    /// Time spent, ms.
    pub solve_ms: f64,
}

/// Solve a snapshot the caller built itself and keep the result by index,
/// for in-process callers that plan thousands of times (the simulator).
///
/// Unlike [`solve`], the snapshot's fields are not validated
/// ([`validate::validate`]: finite numbers, ranges, unique ids): that is the
/// caller's duty, for data it has checked already. Ids are still resolved
/// ([`Instance::new`]), infeasible snapshots still diagnosed, and the
/// decisions still pass [`evaluate()`]'s hard-rule check, exactly as in
/// [`solve`]; on a valid snapshot both return the same decisions.
pub fn solve_prepared(snap: &Snapshot, opts: &SolveOptions) -> Result<Solution, PlanError> {
    prepared(snap, opts, None)
}

/// [`solve_prepared`] for a caller that plans the same site period after
/// period: the optimiser keeps in `carry` what helps its next plan
/// ([`optimizer::Carry`]). Other solvers ignore it.
pub fn solve_prepared_carried(
    snap: &Snapshot,
    opts: &SolveOptions,
    carry: &mut optimizer::Carry,
) -> Result<Solution, PlanError> {
    prepared(snap, opts, Some(carry))
}

fn prepared(
    snap: &Snapshot,
    opts: &SolveOptions,
    carry: Option<&mut optimizer::Carry>,
) -> Result<Solution, PlanError> {
    let started = Instant::now();
    let inst = Instance::new(snap)?;
    solve_instance(&inst, opts, started, carry)
}

fn solve_instance(
    inst: &Instance<'_>,
    opts: &SolveOptions,
    started: Instant,
    carry: Option<&mut optimizer::Carry>,
) -> Result<Solution, PlanError> {
    // Rules no plan can meet are named before the exact solver starts
    // (proving infeasibility can take it long). Greedy and the optimiser
    // fail fast on such a snapshot, and a plan they find proves it feasible,
    // so for them the diagnosis runs only when they fail — not on each of
    // the simulator's 35,040 plans a year (12 % of a plan's time). Their own
    // failure is `NoPlanFound` (a search that gave up proves nothing), or
    // `Infeasible` only from the exact MILP the optimiser falls back to on
    // small sites; the diagnosis, when it proves infeasibility, wins.
    if opts.solver == SolverKind::Exact {
        validate::check_feasible(inst)?;
        return run_solver(inst, opts, started, carry);
    }
    run_solver(inst, opts, started, carry).map_err(|e| match validate::check_feasible(inst) {
        Err(diagnosis) => diagnosis,
        Ok(()) => e,
    })
}

fn run_solver(
    inst: &Instance<'_>,
    opts: &SolveOptions,
    started: Instant,
    carry: Option<&mut optimizer::Carry>,
) -> Result<Solution, PlanError> {
    // Greedy and the optimiser evaluate their decisions already (the
    // optimiser beside the baseline's cost): that evaluation is reused.
    let (decisions, ev, name, lower_bound, baseline) = match opts.solver {
        SolverKind::Greedy => {
            let (d, ev) = greedy::decide_evaluated(inst)?;
            let cost = ev.objective.cost;
            (d, ev, greedy::NAME, None, Some(cost))
        }
        SolverKind::Optimizer => {
            let settings = optimizer::Settings {
                deadline: opts.time_limit.map(|d| started + d),
                lower_bound: !opts.skip_lower_bound,
            };
            let out = match carry {
                Some(c) => optimizer::decide_carried(inst, &settings, c)?,
                None => optimizer::decide_with(inst, &settings)?,
            };
            let name = optimizer::NAME;
            (
                out.decisions,
                out.evaluation,
                name,
                out.lower_bound,
                out.baseline_cost,
            )
        }
        SolverKind::Exact => {
            let limit = opts.time_limit.map(|d| d.saturating_sub(started.elapsed()));
            let out = exact::solve(inst, exact::Backend::default(), limit)?;
            let ev = evaluate(inst, &out.decisions);
            (out.decisions, ev, exact::NAME, out.best_bound, None)
        }
    };
    if !ev.is_feasible() {
        return Err(PlanError::Solver(format!(
            "{name} produced a plan that breaks the model: {}",
            ev.violations.join("; ")
        )));
    }
    let solve_ms = started.elapsed().as_secs_f64() * 1000.0;
    let baseline_cost = if !opts.with_baseline {
        None
    } else if opts.solver == SolverKind::Exact {
        greedy::decide_costed(inst).ok().map(|(_, o)| o.cost)
    } else {
        baseline
    };
    Ok(Solution {
        decisions,
        evaluation: ev,
        solver: name,
        lower_bound,
        baseline_cost,
        solve_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, SiteSpec};

    #[test]
    fn a_solution_carries_the_evaluation_of_its_own_decisions() {
        for solver in [SolverKind::Greedy, SolverKind::Optimizer] {
            for seed in [1, 5] {
                let snap = generate(&SiteSpec::small(seed));
                let opts = SolveOptions {
                    solver,
                    skip_lower_bound: true,
                    ..SolveOptions::default()
                };
                let s = solve_prepared(&snap, &opts).unwrap();
                let inst = Instance::new(&snap).unwrap();
                assert_eq!(s.evaluation, evaluate(&inst, &s.decisions));
            }
        }
    }

    #[test]
    fn the_baseline_cost_is_the_cost_of_greedys_plan_whatever_the_solver() {
        for seed in [1, 2, 3] {
            let snap = generate(&SiteSpec::small(seed));
            let inst = Instance::new(&snap).unwrap();
            let greedy_cost = evaluate(&inst, &greedy::decide(&inst).unwrap())
                .objective
                .cost;
            for solver in [SolverKind::Greedy, SolverKind::Optimizer] {
                let opts = SolveOptions {
                    solver,
                    with_baseline: true,
                    skip_lower_bound: true,
                    ..SolveOptions::default()
                };
                let s = solve_prepared(&snap, &opts).unwrap();
                assert_eq!(
                    s.baseline_cost,
                    Some(greedy_cost),
                    "{solver:?}, seed {seed}"
                );
            }
        }
    }
}
