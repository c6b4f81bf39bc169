//! Phoenix's optimiser: a plan for the reference model of DESIGN.md §2 with
//! a proven lower bound beside it.
//!
//! How it works (docs/scheduler.md, "Optimiser", says why):
//! 1. `state::State` starts from the current placement (warm start:
//!    migrations cost and are budgeted) and keeps the exact cost of the
//!    decisions as they change, with an undo journal.
//! 2. `batch` schedules each server's batch work exactly as a min-cost flow
//!    over the convex envelope of the step costs (electricity minus the heat
//!    it adds to the loop while the loop still needs heat).
//! 3. `search` repairs servers that break a rule, places pending VMs where
//!    they add least, then improves by switching servers off (after moving
//!    their VMs away) or on, relocating and swapping VMs — every move priced
//!    exactly and kept only if it lowers the cost; small sites then get a
//!    few rounds of iterated local search (seeded kicks, so deterministic).
//! 4. [`bound`] solves an LP relaxation over aggregated server classes whose
//!    optimum is provably no higher than the optimal cost.
//!
//! Deterministic: indices in fixed order, no hash-map iteration; the only
//! second thread solves the lower bound, which does not depend on the
//! search. With a deadline the search stops early and returns the best
//! feasible plan, with the bound beside it.

mod batch;
pub mod bound;
mod search;
mod state;

use std::time::Instant;

use crate::error::PlanError;
use crate::evaluate::{evaluate, Decisions, Evaluation};
use crate::instance::Instance;
use crate::model::Objective;

use state::{Ctx, State, UNPLACED};

/// Kicks of the iterated local search on small sites.
const ILS_ITERATIONS: usize = 20;

/// Name reported in plans.
pub const NAME: &str = "optimizer";

/// What the optimiser returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decisions (feasible under the model).
    pub decisions: Decisions,
    /// Their evaluation.
    pub evaluation: Evaluation,
    /// The greedy baseline's cost, which the optimiser compares its plan
    /// with; `None` where the baseline has no feasible plan.
    pub baseline_cost: Option<f64>,
    /// A proven lower bound on the optimal cost, when known.
    pub lower_bound: Option<f64>,
    /// How the first feasible plan was built.
    pub construction: Construction,
}

/// How the optimiser built its first feasible plan, before improving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Construction {
    /// Repair and placement as things stood (the usual case).
    Search,
    /// Some VM fitted no server until other VMs moved out of its way
    /// (ejection chains within the migration budget).
    MadeRoom,
    /// The search found no plan; the exact MILP's (small sites only,
    /// [`EXACT_FALLBACK_SERVERS`]) was the start.
    Exact,
}

/// How the optimiser runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Stop improving at this instant and return the best plan so far.
    pub deadline: Option<Instant>,
    /// Compute the lower bound.
    pub lower_bound: bool,
}

/// Decide a plan, stopping by `deadline` if given, with its lower bound.
pub fn decide(inst: &Instance<'_>, deadline: Option<Instant>) -> Result<Outcome, PlanError> {
    decide_with(
        inst,
        &Settings {
            deadline,
            lower_bound: true,
        },
    )
}

/// Most plans a server whose switch-off did not pay is left out of the
/// switch-off pass: it waits 1, 2, 4, then at most this many plans after
/// consecutive failures (two hours at a 15 min period).
pub const MAX_SWITCH_OFF_WAIT: u32 = 8;

/// What the optimiser carries from one plan of a site to the next, for a
/// caller that plans the same site period after period (the simulator's
/// closed loop; the live controller does not pass one yet). On large sites:
/// - which servers it tried and failed to switch off, so that it retries
///   them after a back-off ([`MAX_SWITCH_OFF_WAIT`]) instead of every plan;
/// - the batch schedules it chose, which a server keeps between its turns
///   to be solved afresh ([`BATCH_RESOLVE_PLANS`]);
/// - and plans with a carry skip the last refinement of the pending VMs'
///   placement (the few that arrived since the last plan keep the first of
///   their estimated targets that takes them).
///
/// Pass the same `Carry` to each plan with [`decide_carried`]; a change in
/// the site's servers starts it afresh. Plans stay deterministic for a
/// given sequence of snapshots.
#[derive(Debug, Clone, Default)]
pub struct Carry {
    server_ids: Vec<String>,
    /// Per server: switch-offs that failed in a row, and plans still to
    /// skip before the next try.
    backoff: Vec<(u32, u32)>,
    /// Plans recorded (staggers the batch re-solves between servers).
    plans: u64,
    /// The last plan's start, step length (s) and steps.
    batch_horizon: Option<(chrono::DateTime<chrono::Utc>, f64, usize)>,
    /// The last plan's batch cores per step, by VM id.
    batch: std::collections::HashMap<String, Vec<f64>>,
}

/// On large sites with a carry, a server's batch work is solved afresh at
/// least every this many plans (staggered by server; at a 15 min period
/// and the usual 8-step horizon, once per horizon); in between, the
/// schedule the last plan gave it is kept, shifted by the time passed and
/// topped up where the work now required exceeds it, whenever that still
/// meets every rule.
pub const BATCH_RESOLVE_PLANS: u64 = 8;

impl Carry {
    /// The last plan's batch schedule of each VM of `inst`, shifted to this
    /// plan's start (the steps past the old horizon empty); `None` for VMs
    /// it did not schedule or when the horizons do not line up.
    fn carried_batch(&self, inst: &Instance<'_>) -> Vec<Option<Vec<f64>>> {
        let snap = inst.snap;
        let shift = self.batch_horizon.and_then(|(t0, step_s, steps)| {
            let dt_s = (snap.time - t0).num_milliseconds() as f64 / 1000.0;
            let k = (dt_s / snap.step_s).round();
            let aligned = step_s == snap.step_s
                && steps == snap.steps
                && (dt_s / snap.step_s - k).abs() < 1e-6
                && k >= 1.0
                && (k as usize) < steps;
            aligned.then_some(k as usize)
        });
        snap.vms
            .iter()
            .enumerate()
            .map(|(v, vm)| {
                let k = shift?;
                if !inst.is_batch(v) {
                    return None;
                }
                let old = self.batch.get(&vm.id)?;
                let mut cores = vec![0.0; snap.steps];
                cores[..snap.steps - k].copy_from_slice(&old[k..]);
                Some(cores)
            })
            .collect()
    }

    /// Keep the batch schedules of the plan just made.
    fn record_batch(&mut self, inst: &Instance<'_>, decisions: &Decisions) {
        let snap = inst.snap;
        self.plans += 1;
        self.batch.clear();
        self.batch_horizon = Some((snap.time, snap.step_s, snap.steps));
        for (v, cores) in decisions.batch_cores.iter().enumerate() {
            if inst.is_batch(v) && cores.len() == snap.steps {
                self.batch.insert(snap.vms[v].id.clone(), cores.clone());
            }
        }
    }

    /// Whether server `s` has its batch work solved afresh in this plan.
    fn resolve_due(&self, s: usize) -> bool {
        (self.plans + s as u64) % BATCH_RESOLVE_PLANS == 0
    }

    /// Servers to leave out of this plan's switch-off pass (empty: none).
    fn skips(&mut self, servers: &[crate::model::Server], small: bool) -> Vec<bool> {
        let same = self.server_ids.len() == servers.len()
            && self.server_ids.iter().zip(servers).all(|(a, b)| *a == b.id);
        if !same {
            self.server_ids = servers.iter().map(|s| s.id.clone()).collect();
            self.backoff = vec![(0, 0); servers.len()];
        }
        if small {
            return Vec::new();
        }
        self.backoff.iter().map(|&(_, wait)| wait > 0).collect()
    }

    /// Record this plan's outcome: a skipped server's wait runs down; a
    /// failed try doubles it (up to the cap); any other outcome (switched
    /// off, or not tried because the server was off or could not switch)
    /// clears it.
    fn record(&mut self, skipped: &[bool], failed: &[bool]) {
        for (s, b) in self.backoff.iter_mut().enumerate() {
            if skipped.get(s).copied().unwrap_or(false) {
                b.1 -= 1;
            } else if failed[s] {
                b.0 += 1;
                b.1 = (1u32 << (b.0 - 1).min(8)).min(MAX_SWITCH_OFF_WAIT);
            } else {
                *b = (0, 0);
            }
        }
    }
}

/// Decide a plan under `settings`, carrying what helps the next plan of the
/// same site in `carry` (see [`Carry`]).
pub fn decide_carried(
    inst: &Instance<'_>,
    settings: &Settings,
    carry: &mut Carry,
) -> Result<Outcome, PlanError> {
    decide_inner(inst, settings, Some(carry))
}

/// Decide a plan under `settings`.
///
/// A feasible plan is built first (repair, then placement of pending VMs);
/// the improvement moves run until none helps or the deadline passes. The
/// lower bound, when asked for, is solved on a second thread beside the
/// search from the start, so a search that uses up its deadline still
/// reports it (the bound does not depend on the search, so the plan and the
/// bound are the same whatever the threads' timing).
pub fn decide_with(inst: &Instance<'_>, settings: &Settings) -> Result<Outcome, PlanError> {
    decide_inner(inst, settings, None)
}

fn decide_inner(
    inst: &Instance<'_>,
    settings: &Settings,
    carry: Option<&mut Carry>,
) -> Result<Outcome, PlanError> {
    std::thread::scope(|scope| {
        let bound = settings
            .lower_bound
            .then(|| scope.spawn(|| bound::lower_bound(inst)));
        // The greedy baseline does not depend on the search either: where
        // the machine has a second core it is built and costed on its own
        // thread meanwhile; on one core, in line after the search (a thread
        // would only add its start and cold caches). The plan is the same.
        let searched = if parallel() {
            let baseline = scope.spawn(|| crate::greedy::decide_costed(inst).ok());
            search_plan(inst, settings.deadline, carry, || {
                baseline.join().ok().flatten()
            })
        } else {
            search_plan(inst, settings.deadline, carry, || {
                crate::greedy::decide_costed(inst).ok()
            })
        };
        // The bound's thread only solves an LP; should it panic, report no bound.
        let lower_bound = bound.and_then(|h| h.join().ok().flatten());
        let searched = searched?;
        Ok(Outcome {
            decisions: searched.decisions,
            evaluation: searched.evaluation,
            baseline_cost: searched.baseline_cost,
            lower_bound,
            construction: searched.construction,
        })
    })
}

/// Whether the machine runs more than one thread at once (asked once).
fn parallel() -> bool {
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PARALLEL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// The search's plan, or the greedy baseline's where that costs less, with
/// its evaluation and the baseline's cost (`None` where the baseline has no
/// feasible plan).
fn search_plan(
    inst: &Instance<'_>,
    deadline: Option<Instant>,
    mut carry: Option<&mut Carry>,
    baseline: impl FnOnce() -> Option<(Decisions, Objective)>,
) -> Result<Searched, PlanError> {
    let ctx = Ctx::new(inst);
    let mut st = State::new(&ctx);
    let small = search::is_small(&ctx);
    let mut first = search::FirstPlans::default();
    if let Some(c) = carry.as_deref_mut() {
        st.skip_switch_off = c.skips(&inst.snap.servers, small);
        if !small {
            first.carried = c.carried_batch(inst);
            first.due = (0..ctx.ns).map(|s| c.resolve_due(s)).collect();
        }
    }
    let built =
        search::repair(&ctx, &mut st, &first).and_then(|()| search::place_pending(&ctx, &mut st));
    let mut how = if st.rooms_made > 0 {
        Construction::MadeRoom
    } else {
        Construction::Search
    };
    if let Err(stopped) = built {
        // A caller with a carry (the simulator's closed loop) plans again
        // next period and has its own fallbacks (deadlines relaxed, pending
        // VMs deferred): seconds of MILP there would stall it.
        if carry.is_some() {
            return Err(stopped);
        }
        st = exact_start(&ctx, deadline, stopped)?;
        how = Construction::Exact;
    }
    let budget = search::Budget {
        deadline,
        relocate_pending: carry.is_none(),
    };
    search::improve(&ctx, &mut st, &budget);
    search::iterated(&ctx, &mut st, &budget, ILS_ITERATIONS);
    if let Some(c) = carry.as_deref_mut() {
        c.record(&st.skip_switch_off, &st.switch_off_failed);
    }
    let decisions = to_decisions(&ctx, &st)?;
    let ev = evaluate(inst, &decisions);
    // Safeguard: never return more than the baseline would cost when the
    // baseline's plan is feasible (it almost never wins; see the tests). Its
    // cost is all the comparison needs; it is laid out in full only when it
    // wins.
    let baseline = baseline();
    let baseline_cost = baseline.as_ref().map(|(_, o)| o.cost);
    let (decisions, ev) = match baseline {
        Some((g, o)) if o.cost < ev.objective.cost => {
            let gev = evaluate(inst, &g);
            (g, gev)
        }
        _ => (decisions, ev),
    };
    if !ev.is_feasible() {
        return Err(PlanError::Solver(format!(
            "optimizer built a plan that breaks the model: {}",
            ev.violations.join("; ")
        )));
    }
    if let Some(c) = carry {
        c.record_batch(inst, &decisions);
    }
    Ok(Searched {
        decisions,
        evaluation: ev,
        baseline_cost,
        construction: how,
    })
}

/// What [`search_plan`] returns.
struct Searched {
    decisions: Decisions,
    evaluation: Evaluation,
    baseline_cost: Option<f64>,
    construction: Construction,
}

/// Sites up to this many servers and VMs fall back to the exact MILP
/// ([`crate::exact`]) when the search builds no plan.
pub const EXACT_FALLBACK_SERVERS: usize = 40;
/// See [`EXACT_FALLBACK_SERVERS`].
pub const EXACT_FALLBACK_VMS: usize = 400;
/// Longest the exact fallback runs (less when the deadline is nearer).
pub const EXACT_FALLBACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The search built no plan (`stopped` says where it stopped): on a small
/// site (and without a carry), solve the exact MILP within [`EXACT_FALLBACK_LIMIT`] and start the
/// search again from its plan. Its proof of infeasibility, when it finds
/// one, is returned as such; with no plan and no proof (a large site, or
/// the time limit), `stopped`.
fn exact_start<'c>(
    ctx: &Ctx<'c>,
    deadline: Option<Instant>,
    stopped: PlanError,
) -> Result<State, PlanError> {
    let inst = ctx.inst;
    if inst.n_servers() > EXACT_FALLBACK_SERVERS || inst.n_vms() > EXACT_FALLBACK_VMS {
        return Err(stopped);
    }
    let limit = match deadline {
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(EXACT_FALLBACK_LIMIT),
        None => EXACT_FALLBACK_LIMIT,
    };
    if limit.is_zero() {
        return Err(stopped);
    }
    let out = match crate::exact::solve(inst, crate::exact::Backend::default(), Some(limit)) {
        Ok(out) => out,
        Err(proof @ PlanError::Infeasible { .. }) => return Err(proof),
        Err(_) => return Err(stopped),
    };
    state_of(ctx, &out.decisions).ok_or(stopped)
}

/// The search's state for `d` (a feasible plan): VMs moved and servers
/// switched as it says, every server planned (its batch work as `d` has it
/// where a flow finds no schedule); `None` when some server's plan breaks a
/// rule even so.
fn state_of(ctx: &Ctx<'_>, d: &Decisions) -> Option<State> {
    let mut st = State::new(ctx);
    for s in 0..ctx.ns {
        if d.on[s] {
            st.set_on(ctx, s, true);
        }
    }
    for v in 0..ctx.nv {
        if st.host[v] != d.host[v] {
            st.move_vm(ctx, v, d.host[v]);
        }
    }
    for s in 0..ctx.ns {
        if !d.on[s] {
            st.set_on(ctx, s, false);
        }
    }
    for s in 0..ctx.ns {
        if st.replan(ctx, s) {
            continue;
        }
        for &v in &st.vms_on[s].clone() {
            if ctx.jobs[v].is_some() {
                st.cores[v].clone_from(&d.batch_cores[v]);
            }
        }
        let p = st.plan_kept(ctx, s)?;
        st.apply(ctx, s, p);
    }
    st.commit(state::Mark::start());
    Some(st)
}

fn to_decisions(ctx: &Ctx<'_>, st: &State) -> Result<Decisions, PlanError> {
    if let Some(v) = st.host.iter().position(|&h| h == UNPLACED) {
        return Err(PlanError::Solver(format!(
            "optimizer left vm {} unplaced",
            ctx.inst.snap.vms[v].id
        )));
    }
    Ok(Decisions {
        host: st.host.clone(),
        on: st.on.clone(),
        batch_cores: st.cores.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, SiteSpec};

    #[test]
    fn a_server_that_keeps_failing_to_switch_off_waits_longer_each_time_up_to_the_cap() {
        let snap = generate(&SiteSpec::small(1));
        let n = snap.servers.len();
        let mut carry = Carry::default();
        let mut waits = Vec::new();
        let mut tried = 0;
        for _ in 0..40 {
            let skip = carry.skips(&snap.servers, false);
            assert_eq!(skip.len(), n);
            // Server 0 fails whenever it is tried; the others succeed.
            let mut failed = vec![false; n];
            if !skip[0] {
                failed[0] = true;
                tried += 1;
            }
            carry.record(&skip, &failed);
            waits.push(carry.backoff[0].1);
            assert!(
                skip[1..].iter().all(|&s| !s),
                "a server that succeeds is never skipped"
            );
        }
        // Tried at plans 1, 3, 6, 11, then every 9th (8 skipped in between).
        assert_eq!(&waits[..12], &[1, 0, 2, 1, 0, 4, 3, 2, 1, 0, 8, 7]);
        assert_eq!(waits.iter().copied().max(), Some(MAX_SWITCH_OFF_WAIT));
        assert_eq!(tried, 7, "plans 1, 3, 6, 11, 20, 29 and 38");
        // A success resets it.
        loop {
            let skip = carry.skips(&snap.servers, false);
            carry.record(&skip, &vec![false; n]);
            if !skip[0] {
                break;
            }
        }
        assert_eq!(carry.backoff[0], (0, 0));
    }

    #[test]
    fn a_carried_batch_schedule_moves_by_the_steps_that_passed_and_only_when_they_line_up() {
        let snap = generate(&SiteSpec::small(3));
        let inst = Instance::new(&snap).unwrap();
        let out = decide_with(
            &inst,
            &Settings {
                deadline: None,
                lower_bound: false,
            },
        )
        .unwrap();
        let batch: Vec<usize> = (0..inst.n_vms()).filter(|&v| inst.is_batch(v)).collect();
        assert!(!batch.is_empty(), "the site has batch VMs");
        let mut carry = Carry::default();
        carry.record_batch(&inst, &out.decisions);
        let n = snap.steps;
        for (k, expect_some) in [(0, false), (1, true), (2, true), (n, false)] {
            let mut later = snap.clone();
            later.time += chrono::Duration::milliseconds((k as f64 * snap.step_s * 1000.0) as i64);
            let later_inst = Instance::new(&later).unwrap();
            let carried = carry.carried_batch(&later_inst);
            for v in 0..inst.n_vms() {
                match (&carried[v], expect_some && inst.is_batch(v)) {
                    (Some(c), true) => {
                        let old = &out.decisions.batch_cores[v];
                        assert_eq!(&c[..n - k], &old[k..], "vm {v} shifted by {k}");
                        assert!(c[n - k..].iter().all(|&x| x == 0.0));
                    }
                    (None, false) => {}
                    (c, e) => panic!("vm {v}, shift {k}: carried {c:?}, expected {e}"),
                }
            }
        }
        // Half a step later the horizons do not line up: nothing carried.
        let mut off = snap.clone();
        off.time += chrono::Duration::milliseconds((snap.step_s * 1500.0) as i64);
        let off_inst = Instance::new(&off).unwrap();
        assert!(carry.carried_batch(&off_inst).iter().all(Option::is_none));
    }

    /// The snapshot a step after `snap` once `d` ran its first step: VMs
    /// where `d` put them, servers on or off as it said, each batch VM's
    /// remaining work less what its first step did.
    fn next_snapshot(snap: &crate::model::Snapshot, d: &Decisions) -> crate::model::Snapshot {
        let mut next = snap.clone();
        next.time += chrono::Duration::milliseconds((snap.step_s * 1000.0) as i64);
        let step_h = snap.step_s / 3600.0;
        for (v, vm) in next.vms.iter_mut().enumerate() {
            vm.host = Some(snap.servers[d.host[v]].id.clone());
            if let (Some(w), Some(c)) = (vm.work_core_h.as_mut(), d.batch_cores[v].first()) {
                *w = (*w - c * step_h).max(0.0);
            }
        }
        for (s, srv) in next.servers.iter_mut().enumerate() {
            srv.on = d.on[s];
        }
        next
    }

    #[test]
    fn plans_that_carry_batch_schedules_stay_feasible_and_cost_what_fresh_plans_cost() {
        let settings = Settings {
            deadline: None,
            lower_bound: false,
        };
        for seed in [1, 2] {
            let mut snap = generate(&SiteSpec::medium(seed));
            let mut carry = Carry::default();
            let mut kept = 0;
            for period in 0..6 {
                let inst = Instance::new(&snap).unwrap();
                let carried = carry.carried_batch(&inst).iter().flatten().count();
                let with = decide_carried(&inst, &settings, &mut carry).unwrap();
                let fresh = decide_with(&inst, &settings).unwrap();
                assert!(
                    with.evaluation.is_feasible(),
                    "seed {seed}, period {period}"
                );
                let (a, b) = (
                    with.evaluation.objective.cost,
                    fresh.evaluation.objective.cost,
                );
                assert!(
                    a <= b + 0.01 * b.abs(),
                    "seed {seed}, period {period}: carried {a}, fresh {b}"
                );
                if period > 0 {
                    assert!(carried > 0, "seed {seed}, period {period}: nothing carried");
                }
                kept += carried;
                snap = next_snapshot(&snap, &with.decisions);
            }
            assert!(kept > 0);
        }
    }

    #[test]
    fn a_carry_starts_afresh_when_the_servers_change_and_skips_nothing_on_small_sites() {
        let mut snap = generate(&SiteSpec::small(1));
        let n = snap.servers.len();
        let mut carry = Carry::default();
        let skip = carry.skips(&snap.servers, false);
        let mut failed = vec![false; n];
        failed[2] = true;
        carry.record(&skip, &failed);
        assert!(carry.skips(&snap.servers, false)[2]);
        assert!(carry.skips(&snap.servers, true).is_empty());
        snap.servers[0].id.push_str("-renamed");
        assert!(carry.skips(&snap.servers, false).iter().all(|&s| !s));
    }
}
