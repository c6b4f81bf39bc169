//! One control period, without I/O: snapshot → plan (with the baseline's
//! cost beside it) → power-on rate limit → the plan record, its status for
//! the configured mode, and the history point. The async loop around it
//! (MQTT, actuator, offers, time series) only carries out what this returns.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use scheduler::model::{Plan, Snapshot};
use scheduler::{PlanError, SolveOptions};

use super::apply;
use super::config::{ControllerConfig, Mode};
use super::snapshot::{self, DemandView};
use super::state::{HistoryPoint, PlanRecord, PlanStatus, SiteState};

/// What a period decided, to be committed to the site state.
#[derive(Debug, Clone)]
pub struct PeriodOutcome {
    /// The snapshot that was planned.
    pub snapshot: Snapshot,
    /// The plan record.
    pub record: PlanRecord,
    /// Staleness of every node as of the period's start.
    pub stale: Vec<(String, bool)>,
    /// The history point of the period.
    pub history: HistoryPoint,
}

fn solve_once(cfg: &ControllerConfig, snap: &Snapshot) -> Result<Plan, PlanError> {
    let opts = SolveOptions {
        solver: cfg.solver.parse().unwrap_or_default(),
        time_limit: Some(Duration::from_millis(cfg.time_limit_ms)),
        with_baseline: true,
        ..Default::default()
    };
    scheduler::solve(snap, &opts)
}

/// Plan the period starting at `now` from a read of the site state. Runs
/// the solver (CPU-bound: call it off the async runtime); changes nothing —
/// [`commit`] records the outcome. On failure the error names the rule that
/// could not be met.
pub fn plan_period(
    cfg: &ControllerConfig,
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
    let mut snap = snapshot::build(cfg, site, demand, now);
    let mut plan = solve_once(cfg, &snap)?;
    if apply::limit_power_ons(&mut snap, &plan, cfg.max_power_ons_per_period) {
        plan = solve_once(cfg, &snap)?;
    }
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
    Ok(PeriodOutcome {
        snapshot: snap,
        record: PlanRecord {
            id: plan_id,
            at: now,
            status,
            plan,
        },
        stale,
        history,
    })
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
        let out = plan_period(cfg, site, demand, plan_id, now)?;
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
    fn an_infeasible_period_keeps_the_previous_plan() {
        let c = cfg("apply");
        let mut s = site();
        plan_and_commit(&c, &mut s, &demand(), 1, now()).unwrap();
        let mut huge = s.vms["web"].clone();
        huge.id = "huge".into();
        huge.mem_gib = 512.0;
        s.vms.insert("huge".into(), huge);
        let err = plan_and_commit(&c, &mut s, &demand(), 2, now()).unwrap_err();
        assert!(err.to_string().contains("huge"), "{err}");
        assert_eq!(s.latest_plan.as_ref().unwrap().id, 1);
        assert_eq!(s.history.len(), 1);
    }
}
