//! One control period's planning, the same for every caller: the
//! simulator's closed loop, the live controller and the demo.
//!
//! A [`PeriodPlanner`] holds what lasts from one period to the next (the
//! solve options, the optimiser's [`Carry`], whether the site's snapshots
//! have been validated) and walks the *fallback ladder* when a plan fails:
//!
//! 1. the full snapshot;
//! 2. the same with every batch deadline relaxed for this plan only (at
//!    least [`RELAXED_HORIZONS`] horizons away) — a job the packing cannot
//!    serve in time must not stop the whole site from being planned;
//! 3. without the VMs that wait for a host (they wait a period), when any do;
//! 4. with the migration budget lifted (an operator's emergency moves when
//!    load has grown past what a packed server can hold).
//!
//! When every rung fails, the period is [`PeriodDecision::Kept`]: the caller
//! keeps the previous placement and on/off states.
//!
//! The caller builds each rung's snapshot through a [`SnapshotSource`],
//! which shows batch deadlines as [`planning_deadline`] gives them: a job
//! that can no longer make its own deadline is planned against
//! [`overdue_deadline`] (and counted as a miss by the caller), and a job
//! whose slack falls below one horizon is planned at pace, so that a
//! receding-horizon plan cannot keep deferring its work.
//!
//! Pure: time is the snapshot's, nothing here reads a clock but the
//! solver's own time limit.

use chrono::{DateTime, Utc};

use crate::model::{Plan, Snapshot};
use crate::optimizer::Carry;
use crate::{evaluate, validate, Instance, PlanError, Solution, SolveOptions};

/// How far a relaxed snapshot puts batch deadlines at least, in horizons.
pub const RELAXED_HORIZONS: f64 = 4.0;

const EPS: f64 = 1e-6;

/// One rung of the fallback ladder: how a period's snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Whether VMs without a host are in the snapshot.
    pub with_pending: bool,
    /// Whether batch deadlines are relaxed ([`planning_deadline`]).
    pub relax_deadlines: bool,
    /// Whether the migration budget is lifted to the number of VMs.
    pub lift_migration_budget: bool,
}

impl Rung {
    /// The first rung: the snapshot as it is.
    pub const FULL: Rung = Rung {
        with_pending: true,
        relax_deadlines: false,
        lift_migration_budget: false,
    };

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match (
            self.with_pending,
            self.relax_deadlines,
            self.lift_migration_budget,
        ) {
            (true, false, false) => "full",
            (true, true, false) => "relaxed_deadlines",
            (false, true, false) => "without_pending",
            (_, _, true) => "lifted_migration_budget",
            _ => "other",
        }
    }
}

/// The rungs tried in order; the one without pending VMs only when some
/// VM is pending.
pub fn ladder(has_pending: bool) -> Vec<Rung> {
    let mut rungs = vec![
        Rung::FULL,
        Rung {
            relax_deadlines: true,
            ..Rung::FULL
        },
    ];
    if has_pending {
        rungs.push(Rung {
            with_pending: false,
            relax_deadlines: true,
            lift_migration_budget: false,
        });
    }
    rungs.push(Rung {
        with_pending: has_pending,
        relax_deadlines: true,
        lift_migration_budget: true,
    });
    rungs
}

/// The deadline to plan a job against, when it can no longer make its own:
/// `now` plus the whole control periods it needs at full speed, plus one.
/// `None` while its remaining work still fits before `deadline` at full
/// speed (counted in whole periods, as the planner counts them).
pub fn overdue_deadline(
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    left_core_h: f64,
    vcpus: f64,
    period_s: f64,
) -> Option<DateTime<Utc>> {
    let period_h = period_s / 3600.0;
    let whole = (seconds(now, deadline) / period_s + EPS).floor().max(0.0);
    if left_core_h <= vcpus * whole * period_h + EPS {
        return None;
    }
    let need = (left_core_h / (vcpus * period_h) - EPS).ceil().max(1.0) + 1.0;
    Some(now + millis(need * period_s))
}

/// The deadline a snapshot shows for a batch job with `deadline` (its own,
/// or its [`overdue_deadline`] once missed). Relaxed: at least
/// [`RELAXED_HORIZONS`] horizons away. Otherwise, once the job's slack
/// (whole periods to its deadline less the periods it needs at full speed)
/// falls below one horizon: the time it needs at full speed plus one period.
pub fn planning_deadline(
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    left_core_h: f64,
    vcpus: f64,
    period_s: f64,
    steps: usize,
    relax: bool,
) -> DateTime<Utc> {
    if relax {
        return deadline.max(now + millis(RELAXED_HORIZONS * steps as f64 * period_s));
    }
    let whole = (seconds(now, deadline) / period_s + EPS).floor().max(0.0);
    let need = (left_core_h / (vcpus * period_s / 3600.0) - EPS)
        .ceil()
        .max(1.0);
    if whole >= need && whole - need < steps as f64 {
        let periods = (need + 1.0).min(whole);
        deadline.min(now + millis(periods * period_s))
    } else {
        deadline
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

fn millis(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0) as i64)
}

/// Where a period's snapshots come from.
pub trait SnapshotSource {
    /// Whether any VM waits for a host.
    fn has_pending(&self) -> bool;
    /// The snapshot for `rung`: pending VMs left out when
    /// `rung.with_pending` is false, batch deadlines as
    /// [`planning_deadline`] gives them with `rung.relax_deadlines`. The
    /// planner lifts the migration budget itself.
    fn snapshot(&mut self, rung: Rung) -> Snapshot;
    /// Takes a snapshot back once it has been solved (a source that lends
    /// its records to snapshots reclaims them here). Dropped by default.
    fn restore(&mut self, snap: Snapshot) {
        drop(snap);
    }
}

/// A rung's plan.
#[derive(Debug, Clone)]
pub struct PeriodPlan {
    /// The solution, by index into the rung's snapshot.
    pub solution: Solution,
    /// The rung that planned.
    pub rung: Rung,
    /// The errors of the rungs tried before it, in order.
    pub failures: Vec<(Rung, PlanError)>,
}

/// What a period decided.
#[derive(Debug, Clone)]
pub enum PeriodDecision {
    /// A rung planned.
    Planned(Box<PeriodPlan>),
    /// No rung planned: the previous placement and on/off states stay.
    Kept {
        /// The error of every rung, in order.
        failures: Vec<(Rung, PlanError)>,
    },
}

impl PeriodDecision {
    /// Whether the first rung (the snapshot as it is) failed.
    pub fn first_rung_failed(&self) -> bool {
        match self {
            PeriodDecision::Planned(p) => !p.failures.is_empty(),
            PeriodDecision::Kept { .. } => true,
        }
    }
}

/// Which snapshots a [`PeriodPlanner`] validates in full
/// ([`validate::validate`]) before solving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Every snapshot: for callers whose snapshots carry data from outside
    /// (the controller: telemetry, API requests).
    Every,
    /// The first snapshot only: for callers that build every snapshot from
    /// data they have checked once (the simulator's validated scenario).
    First,
}

/// Plans a site period after period (module docs).
#[derive(Debug)]
pub struct PeriodPlanner {
    opts: SolveOptions,
    validation: Validation,
    validated: bool,
    carry: Carry,
}

impl PeriodPlanner {
    /// A planner solving with `opts`, validating snapshots as `validation`
    /// says.
    pub fn new(opts: SolveOptions, validation: Validation) -> Self {
        Self {
            opts,
            validation,
            validated: false,
            carry: Carry::default(),
        }
    }

    /// The options it solves with.
    pub fn options(&self) -> &SolveOptions {
        &self.opts
    }

    /// Plan one period: each rung of the [`ladder`] in turn until one plans.
    /// `on_solved` sees every rung's snapshot with its result before the
    /// snapshot goes back to the source (the controller keeps a planned
    /// snapshot and its id-keyed plan; the simulator its timings).
    pub fn plan(
        &mut self,
        source: &mut dyn SnapshotSource,
        on_solved: &mut dyn FnMut(&Snapshot, &Result<Solution, PlanError>),
    ) -> PeriodDecision {
        let mut failures = Vec::new();
        for rung in ladder(source.has_pending()) {
            let mut snap = source.snapshot(rung);
            if rung.lift_migration_budget {
                snap.policy.max_migrations = snap.vms.len();
            }
            let solved = self.solve(&snap);
            on_solved(&snap, &solved);
            source.restore(snap);
            match solved {
                Ok(solution) => {
                    return PeriodDecision::Planned(Box::new(PeriodPlan {
                        solution,
                        rung,
                        failures,
                    }))
                }
                Err(e) => failures.push((rung, e)),
            }
        }
        PeriodDecision::Kept { failures }
    }

    fn solve(&mut self, snap: &Snapshot) -> Result<Solution, PlanError> {
        if self.validation == Validation::Every || !self.validated {
            validate::validate(snap)?;
            self.validated = true;
        }
        crate::solve_prepared_carried(snap, &self.opts, &mut self.carry)
    }
}

/// The id-keyed plan (`phoenix.plan/v1`) of a solution of `snap`.
pub fn to_plan(snap: &Snapshot, solution: &Solution) -> Result<Plan, PlanError> {
    let inst = Instance::new(snap)?;
    let mut plan = evaluate::to_plan(
        &inst,
        &solution.decisions,
        &solution.evaluation,
        solution.solver,
        solution.solve_ms,
    );
    plan.lower_bound = solution.lower_bound;
    plan.baseline_cost = solution.baseline_cost;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, SiteSpec};
    use crate::model::VmKind;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap()
    }

    fn hours(h: f64) -> DateTime<Utc> {
        t0() + millis(h * 3600.0)
    }

    #[test]
    fn the_ladder_tries_without_pending_vms_only_when_some_are_pending() {
        let names = |p| ladder(p).iter().map(|r| r.name()).collect::<Vec<_>>();
        assert_eq!(
            names(true),
            [
                "full",
                "relaxed_deadlines",
                "without_pending",
                "lifted_migration_budget"
            ]
        );
        assert_eq!(
            names(false),
            ["full", "relaxed_deadlines", "lifted_migration_budget"]
        );
        let last = |p| *ladder(p).last().unwrap();
        assert!(last(true).with_pending && !last(false).with_pending);
    }

    #[test]
    fn a_job_that_still_fits_keeps_its_deadline_and_a_late_one_gets_the_periods_it_needs_plus_one()
    {
        // 4 vCPUs, 15-minute periods: 1 core-hour per period at full speed.
        assert_eq!(overdue_deadline(t0(), hours(2.0), 8.0, 4.0, 900.0), None);
        // 9 core-hours in 8 periods: late; it needs 9 periods, gets 10.
        assert_eq!(
            overdue_deadline(t0(), hours(2.0), 9.0, 4.0, 900.0),
            Some(hours(2.5))
        );
        // Past its deadline with work left.
        assert_eq!(
            overdue_deadline(t0(), hours(-1.0), 0.5, 4.0, 900.0),
            Some(hours(0.5))
        );
    }

    #[test]
    fn a_job_near_its_deadline_is_planned_at_pace_and_a_relaxed_one_far_away() {
        // Needs 4 periods, has 6, horizon of 8 steps: slack 2 < 8 → 5 periods.
        assert_eq!(
            planning_deadline(t0(), hours(1.5), 4.0, 4.0, 900.0, 8, false),
            hours(1.25)
        );
        // Slack 20 periods ≥ the horizon: its own deadline.
        assert_eq!(
            planning_deadline(t0(), hours(6.0), 4.0, 4.0, 900.0, 8, false),
            hours(6.0)
        );
        // Relaxed: at least four horizons (8 h) away.
        assert_eq!(
            planning_deadline(t0(), hours(1.5), 4.0, 4.0, 900.0, 8, true),
            hours(8.0)
        );
    }

    /// A source over a generated site, with one batch job no plan can serve
    /// by its own deadline.
    struct Fixed {
        snap: Snapshot,
        asked: Vec<Rung>,
    }

    impl SnapshotSource for Fixed {
        fn has_pending(&self) -> bool {
            self.snap.vms.iter().any(|v| v.host.is_none())
        }
        fn snapshot(&mut self, rung: Rung) -> Snapshot {
            self.asked.push(rung);
            let mut s = self.snap.clone();
            let (now, step, steps) = (s.time, s.step_s, s.steps);
            s.vms.retain(|v| rung.with_pending || v.host.is_some());
            for v in s.vms.iter_mut().filter(|v| v.kind == VmKind::Batch) {
                if let (Some(d), Some(w)) = (v.deadline, v.work_core_h) {
                    v.deadline = Some(planning_deadline(
                        now,
                        d,
                        w,
                        f64::from(v.vcpus),
                        step,
                        steps,
                        rung.relax_deadlines,
                    ));
                }
            }
            s
        }
    }

    #[test]
    fn a_job_that_cannot_make_its_deadline_is_planned_on_the_relaxed_rung() {
        let mut snap = generate(&SiteSpec::small(2));
        let b = snap
            .vms
            .iter_mut()
            .find(|v| v.kind == VmKind::Batch)
            .expect("a batch VM");
        // Twice what its vCPUs can do before a deadline one period away.
        b.work_core_h = Some(2.0 * f64::from(b.vcpus) * snap.step_s / 3600.0);
        b.deadline = Some(snap.time + millis(snap.step_s));
        let mut src = Fixed {
            snap,
            asked: vec![],
        };
        let mut planner = PeriodPlanner::new(SolveOptions::default(), Validation::Every);
        let mut seen = 0;
        let decision = planner.plan(&mut src, &mut |_, _| seen += 1);
        let PeriodDecision::Planned(p) = &decision else {
            panic!("expected a plan, got {decision:?}");
        };
        assert_eq!(p.rung.name(), "relaxed_deadlines");
        assert_eq!(p.failures.len(), 1);
        assert!(matches!(p.failures[0].1, PlanError::Infeasible { .. }));
        assert!(decision.first_rung_failed());
        assert_eq!(seen, 2, "both rungs' results were shown");
        assert_eq!(src.asked.len(), 2);
        let plan = to_plan(&src.snapshot(p.rung), &p.solution).expect("a plan");
        assert_eq!(plan.placements.len(), src.snap.vms.len());
    }

    #[test]
    fn an_invalid_snapshot_fails_every_rung_and_the_period_is_kept() {
        let mut snap = generate(&SiteSpec::small(1));
        snap.servers[0].mem_gib = f64::NAN;
        let mut src = Fixed {
            snap,
            asked: vec![],
        };
        let mut planner = PeriodPlanner::new(SolveOptions::default(), Validation::Every);
        let PeriodDecision::Kept { failures } = planner.plan(&mut src, &mut |_, _| {}) else {
            panic!("an invalid snapshot cannot plan");
        };
        assert_eq!(failures.len(), ladder(src.has_pending()).len());
        assert!(failures
            .iter()
            .all(|(_, e)| matches!(e, PlanError::Invalid { .. })));
    }
}
