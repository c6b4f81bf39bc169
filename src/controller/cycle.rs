//! One control period, without I/O: the shared period planner
//! (`scheduler::period`, the same one the simulator runs) over a snapshot
//! source built from the site state → the power-on rate limit → the plan
//! record, its status for the configured mode, and the history point. The
//! async loop around it (MQTT, actuator, offers, time series) only carries
//! out what this returns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use scheduler::model::{Plan, Snapshot};
use scheduler::period::{self, PeriodDecision, PeriodPlanner, Rung, SnapshotSource, Validation};
use scheduler::{PlanError, SolveOptions};

use super::apply;
use super::config::{ControllerConfig, Mode};
use super::snapshot::{self, DemandView};
use super::state::{HistoryPoint, PlanRecord, PlanStatus, SiteState};

/// What a period decided, to be committed to the site state.
#[derive(Debug, Clone)]
pub struct PeriodOutcome {
    /// The snapshot that was planned (the rung that planned).
    pub snapshot: Snapshot,
    /// The plan record.
    pub record: PlanRecord,
    /// Staleness of every node as of the period's start.
    pub stale: Vec<(String, bool)>,
    /// The history point of the period.
    pub history: HistoryPoint,
    /// The ladder's rung that planned (`full` unless a fallback was needed).
    pub rung: &'static str,
    /// The errors of the rungs that failed before it.
    pub fallbacks: Vec<(&'static str, PlanError)>,
    /// Batch VMs that can no longer make their own deadline (planned
    /// against an effective one).
    pub overdue: Vec<String>,
}

/// The controller's period planner: solver and time limit from the
/// configuration, every snapshot validated (it carries telemetry and API
/// data), the optimiser's carry kept from period to period.
pub fn planner(cfg: &ControllerConfig) -> PeriodPlanner {
    let opts = SolveOptions {
        solver: cfg.solver.parse().unwrap_or_default(),
        time_limit: Some(Duration::from_millis(cfg.time_limit_ms)),
        with_baseline: true,
        ..Default::default()
    };
    PeriodPlanner::new(opts, Validation::Every)
}

/// The site state as the period planner's snapshot source; `held` are
/// servers the power-on rate limit keeps as they are.
struct Source<'a> {
    cfg: &'a ControllerConfig,
    site: &'a SiteState,
    demand: &'a BTreeMap<String, DemandView>,
    now: DateTime<Utc>,
    held: &'a BTreeSet<String>,
}

impl SnapshotSource for Source<'_> {
    fn has_pending(&self) -> bool {
        self.site.vms.values().any(|v| v.host.is_none())
    }

    fn snapshot(&mut self, rung: Rung) -> Snapshot {
        let mut snap = snapshot::build(self.cfg, self.site, self.demand, self.now, rung);
        for s in snap
            .servers
            .iter_mut()
            .filter(|s| self.held.contains(&s.id))
        {
            s.can_switch = false;
        }
        snap
    }
}

/// A rung's plan with its snapshot.
struct Planned {
    snap: Snapshot,
    plan: Plan,
    rung: &'static str,
    fallbacks: Vec<(&'static str, PlanError)>,
}

/// One pass of the planner: the planned snapshot and its plan, or the
/// first rung's error when no rung planned.
fn plan_once(planner: &mut PeriodPlanner, src: &mut Source<'_>) -> Result<Planned, PlanError> {
    let mut last = None;
    let decision = planner.plan(src, &mut |snap, solved| {
        last = solved
            .as_ref()
            .ok()
            .map(|sol| (snap.clone(), period::to_plan(snap, sol)));
    });
    let named = |f: &[(Rung, PlanError)]| -> Vec<(&'static str, PlanError)> {
        f.iter().map(|(r, e)| (r.name(), e.clone())).collect()
    };
    match (decision, last) {
        (PeriodDecision::Planned(p), Some((snap, plan))) => Ok(Planned {
            snap,
            plan: plan?,
            rung: p.rung.name(),
            fallbacks: named(&p.failures),
        }),
        (PeriodDecision::Planned(_), None) => Err(PlanError::Solver(
            "the planned rung's snapshot was not seen".into(),
        )),
        (PeriodDecision::Kept { failures }, _) => Err(failures
            .into_iter()
            .next()
            .map(|(_, e)| e)
            .unwrap_or_else(|| PlanError::Solver("no rung of the ladder was tried".into()))),
    }
}

/// Plan the period starting at `now` from a read of the site state. Runs
/// the solver (CPU-bound: call it off the async runtime); changes nothing —
/// [`commit`] records the outcome. When no rung of the ladder plans, the
/// error is the first rung's, naming the rule that could not be met.
pub fn plan_period(
    cfg: &ControllerConfig,
    planner: &mut PeriodPlanner,
    site: &SiteState,
    demand: &BTreeMap<String, DemandView>,
    plan_id: u64,
    now: DateTime<Utc>,
) -> Result<PeriodOutcome, PlanError> {
    let stale: Vec<(String, bool)> = site
        .nodes
        .keys()
        .map(|id| (id.clone(), snapshot::is_stale(cfg, site, id, now)))
        .collect();
    let max_ons = cfg.max_power_ons_per_period;
    let mut held = BTreeSet::new();
    let planned = loop {
        let mut src = Source {
            cfg,
            site,
            demand,
            now,
            held: &held,
        };
        let p = plan_once(planner, &mut src)?;
        let extra = apply::held_off(&p.snap, &p.plan, max_ons);
        if !held.is_empty() || extra.is_empty() {
            break p;
        }
        tracing::info!(
            held_off = extra.len(),
            allowed = max_ons,
            "Power-ons above the rate limit; re-planning with the rest held off."
        );
        held.extend(extra);
    };
    Ok(outcome(cfg, planned, plan_id, now, stale, site))
}

fn outcome(
    cfg: &ControllerConfig,
    planned: Planned,
    plan_id: u64,
    now: DateTime<Utc>,
    stale: Vec<(String, bool)>,
    site: &SiteState,
) -> PeriodOutcome {
    let Planned {
        snap,
        plan,
        rung,
        fallbacks,
    } = planned;
    let status = match cfg.mode {
        Mode::Apply => PlanStatus::Applied,
        Mode::DryRun => PlanStatus::DryRun,
        Mode::Approval => PlanStatus::AwaitingApproval,
    };
    let first = |v: &Vec<f64>| v.first().copied().unwrap_or(0.0);
    let history = HistoryPoint {
        at: now,
        demand_kw: snap.loops.iter().map(|l| first(&l.demand_kw)).sum(),
        delivered_kw: plan.heat_kw.values().map(first).sum(),
        it_power_kw: plan.power_w.values().map(first).sum::<f64>() / 1000.0,
        cost: plan.objective.cost,
        baseline_cost: plan.baseline_cost,
    };
    PeriodOutcome {
        snapshot: snap,
        record: PlanRecord {
            id: plan_id,
            at: now,
            status,
            plan,
        },
        stale,
        history,
        rung,
        fallbacks,
        overdue: snapshot::overdue(cfg, site, now),
    }
}

/// Record a period's outcome: staleness, the history point, the new latest
/// plan (a plan still awaiting approval is superseded and marked rejected).
pub fn commit(site: &mut SiteState, outcome: &PeriodOutcome) {
    for (id, s) in &outcome.stale {
        if let Some(n) = site.nodes.get_mut(id) {
            n.stale = *s;
        }
    }
    if let Some(prev) = site.latest_plan.as_mut() {
        if prev.status == PlanStatus::AwaitingApproval {
            prev.status = PlanStatus::Rejected;
        }
    }
    site.record(outcome.history.clone());
    site.latest_plan = Some(outcome.record.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::config::tests::TEST_CFG;
    use crate::controller::state::tests::node;
    use chrono::TimeZone;
    use scheduler::model::{Vm, VmKind};

    /// Plan and commit in one go, as the control loop does.
    fn plan_and_commit(
        cfg: &ControllerConfig,
        site: &mut SiteState,
        demand: &BTreeMap<String, DemandView>,
        plan_id: u64,
        now: DateTime<Utc>,
    ) -> Result<PeriodOutcome, PlanError> {
        let out = plan_period(cfg, &mut planner(cfg), site, demand, plan_id, now)?;
        commit(site, &out);
        Ok(out)
    }

    fn cfg(mode: &str) -> ControllerConfig {
        let c: ControllerConfig =
            toml::from_str(&format!("mode = \"{mode}\"\n{TEST_CFG}")).expect("parses");
        c.validate().expect("valid");
        c
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 2, 0, 0).unwrap()
    }

    fn site() -> SiteState {
        let mut s = SiteState::default();
        for id in ["a", "b"] {
            s.nodes.insert(id.into(), node(id, Some(now())));
        }
        s.vms.insert(
            "web".into(),
            Vm {
                id: "web".into(),
                vcpus: 2,
                mem_gib: 4.0,
                image: None,
                host: None,
                kind: VmKind::Interactive,
                load: Some(0.5),
                work_core_h: None,
                deadline: None,
                migratable: true,
            },
        );
        s
    }

    fn demand() -> BTreeMap<String, DemandView> {
        BTreeMap::from([(
            "greenhouse".to_string(),
            DemandView {
                now_kw: 0.2,
                forecast_kw: vec![],
                forecast_step_s: 0.0,
                heat_value_per_kwh: None,
            },
        )])
    }

    #[test]
    fn an_applied_plan_places_pending_vms_and_records_history() {
        let c = cfg("apply");
        let mut s = site();
        let out = plan_and_commit(&c, &mut s, &demand(), 1, now()).expect("plans");
        assert_eq!(out.record.status, PlanStatus::Applied);
        assert!(out.record.plan.placements.contains_key("web"));
        assert!(out.record.plan.baseline_cost.is_some());
        assert_eq!(s.history.len(), 1);
        assert!((s.history[0].demand_kw - 0.2).abs() < 1e-12);
        assert_eq!(s.latest_plan.as_ref().map(|p| p.id), Some(1));
    }

    #[test]
    fn in_approval_mode_a_new_plan_supersedes_the_waiting_one() {
        let c = cfg("approval");
        let mut s = site();
        plan_and_commit(&c, &mut s, &demand(), 1, now()).unwrap();
        assert_eq!(
            s.latest_plan.as_ref().unwrap().status,
            PlanStatus::AwaitingApproval
        );
        let first = s.latest_plan.clone().unwrap();
        let out = plan_and_commit(&c, &mut s, &demand(), 2, now()).unwrap();
        assert_eq!(out.record.status, PlanStatus::AwaitingApproval);
        assert_eq!(first.id, 1);
        assert_eq!(s.latest_plan.as_ref().unwrap().id, 2);
    }

    #[test]
    fn a_silent_node_is_marked_stale_before_planning() {
        let c = cfg("apply");
        let mut s = site();
        s.nodes.get_mut("b").unwrap().last_seen = Some(now() - chrono::Duration::seconds(600));
        let out = plan_and_commit(&c, &mut s, &demand(), 1, now()).unwrap();
        assert!(s.nodes["b"].stale && !s.nodes["a"].stale);
        assert!(!out.snapshot.servers[1].can_switch);
        assert_ne!(
            out.record.plan.placements["web"], "b",
            "nothing new lands on a stale node"
        );
    }

    #[test]
    fn a_pending_vm_that_fits_nowhere_waits_and_the_rest_is_planned() {
        let c = cfg("apply");
        let mut s = site();
        let first = plan_and_commit(&c, &mut s, &demand(), 1, now()).unwrap();
        // The first plan's placement was carried out.
        s.vms.get_mut("web").unwrap().host = Some(first.record.plan.placements["web"].clone());
        let mut huge = s.vms["web"].clone();
        huge.id = "huge".into();
        huge.host = None;
        huge.mem_gib = 512.0;
        s.vms.insert("huge".into(), huge);
        let out = plan_and_commit(&c, &mut s, &demand(), 2, now()).expect("the rest plans");
        assert_eq!(out.rung, "without_pending");
        assert!(
            out.fallbacks[0].1.to_string().contains("huge"),
            "{:?}",
            out.fallbacks
        );
        assert!(!out.record.plan.placements.contains_key("huge"));
        assert!(out.record.plan.placements.contains_key("web"));
        assert_eq!(s.latest_plan.as_ref().unwrap().id, 2);
    }

    #[test]
    fn a_period_no_rung_can_plan_keeps_the_previous_plan() {
        let c = cfg("apply");
        let mut s = site();
        plan_and_commit(&c, &mut s, &demand(), 1, now()).unwrap();
        let mut stuck = s.vms["web"].clone();
        stuck.id = "stuck".into();
        stuck.host = Some("a".into());
        stuck.migratable = false;
        stuck.mem_gib = 512.0;
        s.vms.insert("stuck".into(), stuck);
        let err = plan_and_commit(&c, &mut s, &demand(), 2, now()).unwrap_err();
        assert!(matches!(err, PlanError::Infeasible { .. }), "{err}");
        assert_eq!(s.latest_plan.as_ref().unwrap().id, 1);
        assert_eq!(s.history.len(), 1);
    }

    #[test]
    fn a_batch_job_past_saving_is_planned_against_an_effective_deadline() {
        let c = cfg("apply");
        let mut s = site();
        s.vms.insert(
            "late".into(),
            Vm {
                id: "late".into(),
                vcpus: 2,
                mem_gib: 2.0,
                image: None,
                host: Some("a".into()),
                kind: VmKind::Batch,
                load: None,
                work_core_h: Some(10.0),
                deadline: Some(now() + chrono::Duration::minutes(15)),
                migratable: true,
            },
        );
        let out = plan_and_commit(&c, &mut s, &demand(), 1, now()).expect("plans");
        assert_eq!(out.rung, "full", "{:?}", out.fallbacks);
        assert_eq!(out.overdue, ["late"]);
        let cores = &out.record.plan.batch_cores["late"];
        assert!(cores.iter().sum::<f64>() > 0.0, "{cores:?}");
        let shown = out.snapshot.vms.iter().find(|v| v.id == "late").unwrap();
        assert!(shown.deadline.unwrap() > now() + chrono::Duration::hours(5));
    }
}
