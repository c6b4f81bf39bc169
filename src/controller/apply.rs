//! From a plan to what is done in this control period (model-predictive
//! control applies the first step): actions in a safe order, power caps
//! with headroom, heat offers, and the rate limit on power-ons.
//!
//! Order: servers are switched on first (a VM needs its host up), then VMs
//! are placed and migrated, then emptied servers are switched off. The
//! executor (`execute.rs`) runs them as a graph with these dependencies. An
//! action that does not happen leaves the state as it was for that VM or
//! node ([`record_event`]); the next plan starts from what is really there.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use protocol::payloads::HeatOffer;
use scheduler::model::{Plan, Snapshot};

use super::actuator::{Action, Outcome};
use super::config::ControllerConfig;
use super::execute::ActionEvent;
use super::state::SiteState;

/// The actions that take the site from `snap` to `plan`.
pub fn actions(snap: &Snapshot, plan: &Plan) -> Vec<Action> {
    let mut ons = Vec::new();
    let mut offs = Vec::new();
    for s in &snap.servers {
        match plan.servers_on.get(&s.id) {
            Some(true) if !s.on => ons.push(Action::PowerOn { node: s.id.clone() }),
            Some(false) if s.on => offs.push(Action::PowerOff { node: s.id.clone() }),
            _ => {}
        }
    }
    let mut moves = Vec::new();
    for vm in &snap.vms {
        let Some(to) = plan.placements.get(&vm.id) else {
            continue;
        };
        match &vm.host {
            None => moves.push(Action::Place {
                vm: vm.id.clone(),
                to: to.clone(),
            }),
            Some(from) if from != to => moves.push(Action::Migrate {
                vm: vm.id.clone(),
                from: from.clone(),
                to: to.clone(),
            }),
            Some(_) => {}
        }
    }
    ons.into_iter().chain(moves).chain(offs).collect()
}

/// Servers the plan switches on, in id order.
pub fn power_ons(snap: &Snapshot, plan: &Plan) -> Vec<String> {
    snap.servers
        .iter()
        .filter(|s| !s.on && plan.servers_on.get(&s.id) == Some(&true))
        .map(|s| s.id.clone())
        .collect()
}

/// The power-on rate limit: when `plan` switches on more than `max`
/// servers, the first `max` (id order, deterministic) may switch and the
/// others returned are held off for a re-plan; none when within the limit.
pub fn held_off(snap: &Snapshot, plan: &Plan, max: usize) -> Vec<String> {
    let mut ons = power_ons(snap, plan);
    ons.drain(..max.min(ons.len()));
    ons
}

/// Caps for the first step: planned power × (1 + headroom), per server on.
pub fn caps(cfg: &ControllerConfig, plan: &Plan) -> BTreeMap<String, f64> {
    plan.power_w
        .iter()
        .filter(|(id, _)| plan.servers_on.get(*id) == Some(&true))
        .filter_map(|(id, p)| {
            p.first().map(|w| {
                (
                    id.clone(),
                    (w * (1.0 + cfg.cap_headroom) * 10.0).ceil() / 10.0,
                )
            })
        })
        .collect()
}

/// Heat offers per consumer: the plan's delivery on the consumer's loop.
pub fn offers(
    cfg: &ControllerConfig,
    plan: &Plan,
    now: DateTime<Utc>,
) -> BTreeMap<String, HeatOffer> {
    cfg.loops
        .iter()
        .filter_map(|l| {
            let kw = plan.heat_kw.get(&l.id)?;
            Some((
                l.consumer.clone(),
                HeatOffer {
                    ts: now,
                    available_kw: kw.first().copied().unwrap_or(0.0),
                    forecast_kw: kw.clone(),
                    step_s: cfg.control_period_s,
                    supply_temp_c: l.supply_temp_c,
                },
            ))
        })
        .collect()
}

/// Record in `site` what the actions achieved: VMs move and nodes switch only
/// where the action succeeded.
pub fn record(site: &mut SiteState, results: &[(Action, Outcome)]) {
    for (action, outcome) in results {
        if *outcome != Outcome::Done {
            continue;
        }
        match action {
            Action::Migrate { vm, to, .. } | Action::Place { vm, to } => {
                if let Some(v) = site.vms.get_mut(vm) {
                    v.host = Some(to.clone());
                }
            }
            Action::PowerOn { node } => {
                if let Some(n) = site.nodes.get_mut(node) {
                    n.on = true;
                }
            }
            Action::PowerOff { node } => {
                if let Some(n) = site.nodes.get_mut(node) {
                    n.on = false;
                }
            }
        }
    }
}

/// Apply one event of the executor to `site`: a finished action moves its
/// VM or switches its node only when done; one that did not happen is kept
/// in `site.failed_actions` with its reason, and changes nothing else.
pub fn record_event(site: &mut SiteState, event: &ActionEvent, now: DateTime<Utc>) {
    if let ActionEvent::Finished {
        plan_id,
        action,
        outcome,
    } = event
    {
        record(site, &[(action.clone(), outcome.clone())]);
        site.record_failure(now, *plan_id, action, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler::generate::{generate, SiteSpec};
    use scheduler::SolveOptions;

    fn solved() -> (Snapshot, Plan) {
        let snap = generate(&SiteSpec::small(3));
        let plan = scheduler::solve(&snap, &SolveOptions::default()).expect("plannable");
        (snap, plan)
    }

    #[test]
    fn actions_switch_on_first_and_off_last() {
        let (snap, plan) = solved();
        let acts = actions(&snap, &plan);
        let pos = |f: &dyn Fn(&Action) -> bool| acts.iter().position(f);
        let last_on = acts
            .iter()
            .rposition(|a| matches!(a, Action::PowerOn { .. }));
        let first_move = pos(&|a| matches!(a, Action::Place { .. } | Action::Migrate { .. }));
        let first_off = pos(&|a| matches!(a, Action::PowerOff { .. }));
        if let (Some(on), Some(mv)) = (last_on, first_move) {
            assert!(on < mv);
        }
        if let (Some(mv), Some(off)) = (first_move, first_off) {
            assert!(mv < off);
        }
        let pending = snap.vms.iter().filter(|v| v.host.is_none()).count();
        let places = acts
            .iter()
            .filter(|a| matches!(a, Action::Place { .. }))
            .count();
        assert_eq!(places, pending, "every pending VM is placed");
        let migrations = acts
            .iter()
            .filter(|a| matches!(a, Action::Migrate { .. }))
            .count();
        assert_eq!(migrations, plan.migrations.len());
    }

    #[test]
    fn the_power_on_limit_forbids_the_extra_switches() {
        let (mut snap, mut plan) = solved();
        // Three servers are off and the plan switches every server on.
        for s in snap.servers.iter_mut() {
            s.on = true;
        }
        for s in snap.servers.iter_mut().rev().take(3) {
            s.on = false;
        }
        for s in &snap.servers {
            plan.servers_on.insert(s.id.clone(), true);
        }
        let off: Vec<String> = snap
            .servers
            .iter()
            .filter(|s| !s.on)
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(off.len(), 3);
        let frozen = held_off(&snap, &plan, 1);
        assert_eq!(
            frozen,
            [off[1].as_str(), off[2].as_str()],
            "the first in id order may switch"
        );
        assert!(held_off(&snap, &plan, off.len()).is_empty());
    }

    #[test]
    fn failed_actions_change_nothing_in_the_state() {
        let mut site = SiteState::default();
        site.vms.insert(
            "v".into(),
            scheduler::model::Vm {
                id: "v".into(),
                vcpus: 1,
                mem_gib: 1.0,
                image: None,
                host: Some("a".into()),
                kind: scheduler::model::VmKind::Interactive,
                load: Some(0.1),
                work_core_h: None,
                deadline: None,
                migratable: true,
            },
        );
        let mv = Action::Migrate {
            vm: "v".into(),
            from: "a".into(),
            to: "b".into(),
        };
        record(&mut site, &[(mv.clone(), Outcome::Failed("boom".into()))]);
        assert_eq!(site.vms["v"].host.as_deref(), Some("a"));
        record(&mut site, &[(mv, Outcome::Done)]);
        assert_eq!(site.vms["v"].host.as_deref(), Some("b"));
    }

    #[test]
    fn a_finished_event_that_did_not_happen_is_kept_with_its_reason() {
        let mut site = SiteState::default();
        let now = Utc::now();
        let off = Action::PowerOff { node: "a".into() };
        let finished = |outcome| ActionEvent::Finished {
            plan_id: 7,
            action: off.clone(),
            outcome,
        };
        let intended = ActionEvent::Intended {
            plan_id: 7,
            action: off.clone(),
        };
        record_event(&mut site, &intended, now);
        record_event(&mut site, &finished(Outcome::Done), now);
        assert!(
            site.failed_actions.is_empty(),
            "done actions are not failures"
        );
        let skipped = Outcome::Skipped("VM v still on a".into());
        for _ in 0..crate::controller::state::FAILED_ACTIONS_LEN + 3 {
            record_event(&mut site, &finished(skipped.clone()), now);
        }
        assert_eq!(
            site.failed_actions.len(),
            crate::controller::state::FAILED_ACTIONS_LEN,
            "the list is bounded"
        );
        let last = site.failed_actions.back().unwrap();
        assert_eq!((last.plan_id, last.result.as_str()), (7, "skipped"));
        assert_eq!(last.reason, "VM v still on a");
        let json = serde_json::to_value(&site).unwrap();
        assert_eq!(json["failed_actions"][0]["action"]["kind"], "power_off");
    }
}
