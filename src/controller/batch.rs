//! Batch work as the hosts measure it (DESIGN.md §4.6).
//!
//! The plan grants each batch VM cores step by step; the first step reaches
//! the VM's host as a CPU quota (`vm_cpu_cores` in the cap), which the agent
//! enforces on the VM's cgroup. The agent reports each VM's cumulative CPU
//! time (`cpu_s`); the work a batch VM still owes (`work_core_h`) goes down
//! by the CPU time measured between two reports from the host it runs on. A
//! counter that goes backwards (the VM restarted, or was moved and the new
//! host's counter started afresh) is a new baseline, never negative work.
//!
//! A host whose agent reports no VM list (an agent without a cgroup tree
//! to read) gets an estimate instead: the cores granted by the plan in
//! force times the time that passed — so the work of such a host is shown
//! as estimated, never silently as measured.
//!
//! A batch VM whose work is done leaves the plan: it is taken out of the
//! site's VMs and kept in the short list of finished jobs that the API
//! shows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use protocol::payloads::VmTelemetry;
use scheduler::model::{Plan, VmKind};
use serde::Serialize;

use super::state::SiteState;

/// Work left below this, core-hours, counts as done.
pub const DONE_CORE_H: f64 = 1e-6;

/// How many finished batch jobs the site state keeps for the API.
pub const FINISHED_LEN: usize = 256;

/// A batch job that finished, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedJob {
    /// VM id.
    pub id: String,
    /// Its last host.
    pub host: Option<String>,
    /// When its work was seen done.
    pub at: DateTime<Utc>,
    /// Whether it finished by its deadline.
    pub on_time: bool,
}

/// The last CPU counter seen for each batch VM, with the host it was read
/// on: the baseline of the next measurement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meters {
    last: BTreeMap<String, (String, f64)>,
}

impl Meters {
    /// Take the VM list of a report from `node`: each batch VM the site
    /// places on `node` and whose `cpu_s` is known has its remaining work
    /// lowered by the CPU time since the last reading on the same host.
    /// Returns the core-hours credited per VM (none past the work owed).
    pub fn measure(
        &mut self,
        site: &mut SiteState,
        node: &str,
        vms: &[VmTelemetry],
    ) -> Vec<(String, f64)> {
        let mut done = Vec::new();
        for r in vms {
            let Some(cpu_s) = r.cpu_s else { continue };
            let Some(vm) = site.vms.get_mut(&r.id) else {
                continue;
            };
            if vm.kind != VmKind::Batch || vm.host.as_deref() != Some(node) {
                continue;
            }
            let prev = self.last.insert(r.id.clone(), (node.to_string(), cpu_s));
            let delta_s = match prev {
                Some((host, before)) if host == node && cpu_s >= before => cpu_s - before,
                _ => continue,
            };
            if let Some(w) = vm.work_core_h.as_mut() {
                done.push((r.id.clone(), credit(w, delta_s / 3600.0)));
            }
        }
        done
    }

    /// Forget the VMs that are no longer in the site.
    pub fn retain_known(&mut self, site: &SiteState) {
        self.last.retain(|id, _| site.vms.contains_key(id));
    }
}

/// Lower the work left `w` by `core_h` (never below zero); returns the
/// work credited.
fn credit(w: &mut f64, core_h: f64) -> f64 {
    let credited = core_h.clamp(0.0, *w);
    *w -= credited;
    credited
}

/// Estimated work for batch VMs on hosts whose agent reports no VM list:
/// the first-step cores of `plan` times `elapsed_s`. Returns the
/// core-hours credited per VM.
pub fn estimate(site: &mut SiteState, plan: &Plan, elapsed_s: f64) -> Vec<(String, f64)> {
    let unmeasured = |host: &str| {
        site.nodes
            .get(host)
            .and_then(|n| n.telemetry.as_ref())
            .is_none_or(|t| t.vms.is_none())
    };
    let hosts: Vec<(String, String)> = site
        .vms
        .values()
        .filter(|v| v.kind == VmKind::Batch)
        .filter_map(|v| Some((v.id.clone(), v.host.clone()?)))
        .filter(|(_, h)| unmeasured(h) && site.nodes.get(h).is_some_and(|n| n.on))
        .collect();
    let mut done = Vec::new();
    for (id, _) in hosts {
        let cores = plan
            .batch_cores
            .get(&id)
            .and_then(|c| c.first().copied())
            .unwrap_or(0.0);
        let core_h = cores * elapsed_s.max(0.0) / 3600.0;
        if let Some(w) = site.vms.get_mut(&id).and_then(|v| v.work_core_h.as_mut()) {
            let credited = credit(w, core_h);
            done.push((id, credited));
        }
    }
    done
}

/// Take the batch VMs whose work is done out of the site, into its list
/// of finished jobs; returns them.
pub fn retire_finished(site: &mut SiteState, now: DateTime<Utc>) -> Vec<FinishedJob> {
    let ids: Vec<String> = site
        .vms
        .values()
        .filter(|v| v.kind == VmKind::Batch && v.work_core_h.is_some_and(|w| w <= DONE_CORE_H))
        .map(|v| v.id.clone())
        .collect();
    let mut out = Vec::new();
    for id in ids {
        let Some(vm) = site.vms.remove(&id) else {
            continue;
        };
        let job = FinishedJob {
            id,
            host: vm.host,
            at: now,
            on_time: vm.deadline.is_none_or(|d| now <= d),
        };
        site.finished.push_back(job.clone());
        while site.finished.len() > FINISHED_LEN {
            site.finished.pop_front();
        }
        out.push(job);
    }
    out
}

/// The first step's batch cores of `plan`, per host: the `vm_cpu_cores` of
/// each host's cap.
pub fn quotas(plan: &Plan) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut by_host: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (vm, cores) in &plan.batch_cores {
        let (Some(host), Some(first)) = (plan.placements.get(vm), cores.first()) else {
            continue;
        };
        by_host
            .entry(host.clone())
            .or_default()
            .insert(vm.clone(), *first);
    }
    by_host
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::tests::node;
    use chrono::TimeZone;
    use scheduler::model::Vm;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 2, 0, 0).unwrap()
    }

    fn site() -> SiteState {
        let mut s = SiteState::default();
        for id in ["a", "b"] {
            s.nodes.insert(id.into(), node(id, Some(now())));
        }
        s.vms.insert(
            "job".into(),
            Vm {
                id: "job".into(),
                vcpus: 4,
                mem_gib: 4.0,
                image: None,
                host: Some("a".into()),
                kind: VmKind::Batch,
                load: None,
                work_core_h: Some(2.0),
                deadline: Some(now() + chrono::Duration::hours(4)),
                migratable: true,
            },
        );
        s
    }

    fn report(id: &str, cpu_s: f64) -> VmTelemetry {
        VmTelemetry {
            id: id.into(),
            vcpus: Some(4),
            mem_gib: None,
            mem_used_gib: None,
            cpu_s: Some(cpu_s),
            cpu_util: None,
            cpu_quota_cores: None,
        }
    }

    fn left(s: &SiteState) -> f64 {
        s.vms["job"].work_core_h.unwrap()
    }

    #[test]
    fn remaining_work_follows_the_cpu_time_measured_on_the_vms_host() {
        let (mut s, mut m) = (site(), Meters::default());
        assert!(m.measure(&mut s, "a", &[report("job", 1000.0)]).is_empty());
        assert_eq!(left(&s), 2.0, "the first reading is a baseline");
        let done = m.measure(&mut s, "a", &[report("job", 1000.0 + 1800.0)]);
        assert_eq!(done, [("job".to_string(), 0.5)]);
        assert!((left(&s) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn a_counter_that_restarts_or_a_report_from_another_host_is_a_new_baseline() {
        let (mut s, mut m) = (site(), Meters::default());
        m.measure(&mut s, "a", &[report("job", 5000.0)]);
        assert!(m.measure(&mut s, "a", &[report("job", 10.0)]).is_empty());
        assert!(
            m.measure(&mut s, "b", &[report("job", 9000.0)]).is_empty(),
            "b does not host it"
        );
        s.vms.get_mut("job").unwrap().host = Some("b".into());
        assert!(m.measure(&mut s, "b", &[report("job", 9000.0)]).is_empty());
        m.measure(&mut s, "b", &[report("job", 9000.0 + 3600.0)]);
        assert!((left(&s) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn hosts_without_a_vm_list_are_estimated_from_the_grant() {
        let mut s = site();
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "schema": "phoenix.plan/v1", "placements": {"job": "a"}, "servers_on": {"a": true},
            "batch_cores": {"job": [2.0, 0.0]}, "power_w": {}, "heat_kw": {}, "migrations": [],
            "objective": {"energy_kwh": 0, "energy_cost": 0, "heat_delivered_kwh": 0,
                          "heat_value": 0, "migrations": 0, "switches": 0, "cost": 0},
            "solver": "test", "solve_ms": 0}))
        .expect("a plan");
        let done = estimate(&mut s, &plan, 900.0);
        assert_eq!(done, [("job".to_string(), 0.5)]);
        assert!((left(&s) - 1.5).abs() < 1e-12);
        assert_eq!(quotas(&plan)["a"]["job"], 2.0);
    }

    #[test]
    fn a_finished_job_leaves_the_site_and_is_listed() {
        let mut s = site();
        s.vms.get_mut("job").unwrap().work_core_h = Some(0.0);
        let done = retire_finished(&mut s, now());
        assert_eq!(done.len(), 1);
        assert!(done[0].on_time && done[0].host.as_deref() == Some("a"));
        assert!(!s.vms.contains_key("job"));
        assert_eq!(s.finished.len(), 1);
        assert!(retire_finished(&mut s, now()).is_empty());
    }
}
