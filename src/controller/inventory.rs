//! Hosts as they are (issue #13): the VM inventory follows what the hosts'
//! agents report (`vms` in telemetry, DESIGN.md §4.6), not only what was
//! admitted over the API.
//!
//! - A VM reported by a host and unknown to the controller is *adopted*
//!   with that host (interactive: its load is what it measures; migratable
//!   unless configured otherwise) — but not a batch job that finished and
//!   still runs there.
//! - A VM the site places on a host whose agent reports VM lists, and that
//!   has been missing from them for `vanish_grace_s`, is dropped.
//! - A VM in the latest lists of two hosts (within the grace, no action of
//!   the controller moving it) is *conflicting*: frozen
//!   where the site records it (not migratable), flagged, and never planned
//!   twice — the site keeps one record per id.
//! - A VM that only another host than the one recorded lists (the recorded
//!   host's latest list lacks it), with no action of the controller in
//!   flight for it, has moved outside Phoenix — or an interrupted placement
//!   happened after all: the record follows the host.
//! - An interactive VM's load is a high percentile (`load_percentile`) of
//!   its measured `cpu_util` over `load_window_s`, and its memory at least
//!   what it uses: planning respects both what is allocated and what is
//!   measured.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use protocol::payloads::VmTelemetry;
use scheduler::model::{Vm, VmKind};
use serde::{Deserialize, Serialize};

use super::state::SiteState;

/// `[controller.inventory]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// Adopt VMs the hosts report that the controller does not know.
    #[serde(default = "d_true")]
    pub adopt: bool,
    /// Whether adopted VMs may be migrated.
    #[serde(default = "d_true")]
    pub adopted_migratable: bool,
    /// How long a VM may be missing from (or found on another) host's
    /// reports before the record follows, s.
    #[serde(default = "d_grace")]
    pub vanish_grace_s: f64,
    /// Share (0–1] of the measured utilisation samples below the load
    /// planned for an interactive VM.
    #[serde(default = "d_percentile")]
    pub load_percentile: f64,
    /// Window of the utilisation samples, s.
    #[serde(default = "d_window")]
    pub load_window_s: f64,
}

fn d_true() -> bool {
    true
}
fn d_grace() -> f64 {
    600.0
}
fn d_percentile() -> f64 {
    0.95
}
fn d_window() -> f64 {
    3600.0
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            adopt: true,
            adopted_migratable: true,
            vanish_grace_s: d_grace(),
            load_percentile: d_percentile(),
            load_window_s: d_window(),
        }
    }
}

impl InventoryConfig {
    /// Check the values; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, p: &str| Err((format!("inventory.{k}"), p.to_string()));
        if !(self.vanish_grace_s.is_finite() && self.vanish_grace_s > 0.0) {
            return bad("vanish_grace_s", "must be a positive number of seconds");
        }
        if !(self.load_window_s.is_finite() && self.load_window_s > 0.0) {
            return bad("load_window_s", "must be a positive number of seconds");
        }
        if !(self.load_percentile > 0.0 && self.load_percentile <= 1.0) {
            return bad("load_percentile", "must be in (0, 1]");
        }
        Ok(())
    }
}

/// What changed in the site after one report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// VMs adopted (new records to persist).
    pub adopted: Vec<String>,
    /// VMs whose host, load or memory changed (records to persist).
    pub updated: Vec<String>,
    /// VMs dropped (records to remove).
    pub dropped: Vec<String>,
    /// VMs newly found on two hosts.
    pub conflicts: Vec<String>,
}

/// The controller's memory of the hosts' reports.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Per VM, the hosts that listed it and when they last did.
    seen: BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
    /// Per host, its latest VM list and when it came.
    lists: BTreeMap<String, (DateTime<Utc>, BTreeSet<String>)>,
    /// Per host, when its first VM list came.
    first_lists: BTreeMap<String, DateTime<Utc>>,
    /// Per VM, when an action of the controller last put it on its host.
    moved_at: BTreeMap<String, DateTime<Utc>>,
    /// Per interactive VM, its utilisation samples, oldest first.
    samples: BTreeMap<String, VecDeque<(DateTime<Utc>, f64)>>,
    /// VMs reported by two hosts at once.
    conflicting: BTreeSet<String>,
}

impl Inventory {
    /// VMs reported by two hosts at once (frozen in place).
    pub fn conflicting(&self) -> &BTreeSet<String> {
        &self.conflicting
    }

    /// An action of the controller put `vm` on its host at `now`: its
    /// grace before it may count as vanished starts again (a report built
    /// before the move must not drop it).
    pub fn moved(&mut self, vm: &str, now: DateTime<Utc>) {
        self.moved_at.insert(vm.to_string(), now);
    }

    /// Take the VM list that `node` reported at `now`. `busy` says whether
    /// an action of the controller is in flight for a VM (its host must not
    /// be corrected under it).
    pub fn report(
        &mut self,
        cfg: &InventoryConfig,
        site: &mut SiteState,
        node: &str,
        vms: &[VmTelemetry],
        now: DateTime<Utc>,
        busy: &dyn Fn(&str) -> bool,
    ) -> Changes {
        let mut ch = Changes::default();
        let listed = vms.iter().map(|v| v.id.clone()).collect();
        self.lists.insert(node.to_string(), (now, listed));
        self.first_lists.entry(node.to_string()).or_insert(now);
        for r in vms {
            self.seen
                .entry(r.id.clone())
                .or_default()
                .insert(node.to_string(), now);
            if !site.vms.contains_key(&r.id) {
                // A finished batch job still running is not a new VM.
                let finished = site.finished.iter().any(|f| f.id == r.id);
                if cfg.adopt && !finished {
                    if let Some(mut vm) = adopted(cfg, node, r) {
                        self.measure_load(cfg, &mut vm, r, now);
                        site.vms.insert(vm.id.clone(), vm);
                        ch.adopted.push(r.id.clone());
                    }
                }
                continue;
            }
            if self.follow(cfg, site, node, r, now, busy, &mut ch) {
                ch.updated.push(r.id.clone());
            }
        }
        self.drop_vanished(cfg, site, node, vms, now, busy, &mut ch);
        ch
    }

    /// Update a known VM from `node`'s report; true when its record changed.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        cfg: &InventoryConfig,
        site: &mut SiteState,
        node: &str,
        r: &VmTelemetry,
        now: DateTime<Utc>,
        busy: &dyn Fn(&str) -> bool,
        ch: &mut Changes,
    ) -> bool {
        let grace = chrono::Duration::milliseconds((cfg.vanish_grace_s * 1000.0) as i64);
        // The hosts whose latest list (within the grace) holds it.
        let hosts: Vec<&str> = self
            .lists
            .iter()
            .filter(|(_, (t, l))| now - *t <= grace && l.contains(&r.id))
            .map(|(h, _)| h.as_str())
            .collect();
        let Some(vm) = site.vms.get_mut(&r.id) else {
            return false;
        };
        let moving = busy(&r.id);
        let mut changed = false;
        if hosts.len() > 1 && !moving {
            if self.conflicting.insert(r.id.clone()) {
                ch.conflicts.push(r.id.clone());
            }
            if vm.migratable {
                vm.migratable = false;
                changed = true;
            }
        } else if hosts.len() == 1 && self.conflicting.remove(&r.id) {
            // One host again: it may move once more (an adopted VM as
            // configured; an admitted one as admitted — not known here, so
            // as adopted VMs are).
            vm.migratable = cfg.adopted_migratable;
            changed = true;
        }
        if hosts == [node] && vm.host.as_deref() != Some(node) && !moving {
            tracing::warn!(vm = %r.id, recorded = ?vm.host, found = node, "VM found on another host than recorded; the record follows the host.");
            vm.host = Some(node.to_string());
            changed = true;
        }
        if vm.kind == VmKind::Interactive {
            changed |= self.measure_load(cfg, vm, r, now);
        }
        if let Some(used) = r.mem_used_gib.filter(|u| *u > vm.mem_gib) {
            vm.mem_gib = used;
            changed = true;
        }
        changed
    }

    /// Keep the utilisation sample and set the VM's load to the window's
    /// percentile; true when the load changed.
    fn measure_load(
        &mut self,
        cfg: &InventoryConfig,
        vm: &mut Vm,
        r: &VmTelemetry,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(u) = r.cpu_util else {
            return false;
        };
        let window = chrono::Duration::milliseconds((cfg.load_window_s * 1000.0) as i64);
        let s = self.samples.entry(r.id.clone()).or_default();
        s.push_back((now, u.clamp(0.0, 1.0)));
        while s.front().is_some_and(|(t, _)| now - *t > window) {
            s.pop_front();
        }
        let load = percentile(s.iter().map(|(_, u)| *u), cfg.load_percentile);
        let changed = vm.load.is_none_or(|l| (l - load).abs() > 1e-3);
        vm.load = Some(load);
        changed
    }

    /// Drop the VMs recorded on `node` that its reports have not listed for
    /// the grace (and that no action is moving).
    #[allow(clippy::too_many_arguments)]
    fn drop_vanished(
        &mut self,
        cfg: &InventoryConfig,
        site: &mut SiteState,
        node: &str,
        vms: &[VmTelemetry],
        now: DateTime<Utc>,
        busy: &dyn Fn(&str) -> bool,
        ch: &mut Changes,
    ) {
        let grace = chrono::Duration::milliseconds((cfg.vanish_grace_s * 1000.0) as i64);
        let listed: BTreeSet<&str> = vms.iter().map(|v| v.id.as_str()).collect();
        let gone: Vec<String> = site
            .vms
            .values()
            .filter(|v| v.host.as_deref() == Some(node) && !listed.contains(v.id.as_str()))
            .filter(|v| !busy(&v.id))
            .filter(|v| {
                // Missing for the grace: last seen on this host (or, never
                // seen, the first list of this host) longer ago than that.
                let last = self.seen.get(&v.id).and_then(|h| h.get(node)).copied();
                let moved = self.moved_at.get(&v.id).copied();
                let since = last
                    .max(moved)
                    .or_else(|| self.first_lists.get(node).copied());
                since.is_some_and(|t| now - t > grace)
            })
            .map(|v| v.id.clone())
            .collect();
        for id in gone {
            tracing::warn!(vm = %id, host = node, "VM no longer reported by its host; dropped.");
            site.vms.remove(&id);
            self.seen.remove(&id);
            self.samples.remove(&id);
            self.conflicting.remove(&id);
            self.moved_at.remove(&id);
            ch.dropped.push(id);
        }
    }
}

/// The record of a VM `node` reports that the controller does not know;
/// `None` when the report lacks its vCPUs or memory (nothing to plan with).
fn adopted(cfg: &InventoryConfig, node: &str, r: &VmTelemetry) -> Option<Vm> {
    let vcpus = r.vcpus.filter(|v| *v > 0)?;
    let mem_gib = r.mem_gib.or(r.mem_used_gib).filter(|m| *m > 0.0)?;
    tracing::info!(vm = %r.id, host = node, vcpus, mem_gib, "VM reported by its host adopted.");
    Some(Vm {
        id: r.id.clone(),
        vcpus,
        mem_gib: mem_gib.max(r.mem_used_gib.unwrap_or(0.0)),
        image: None,
        host: Some(node.to_string()),
        kind: VmKind::Interactive,
        load: Some(r.cpu_util.unwrap_or(0.0).clamp(0.0, 1.0)),
        work_core_h: None,
        deadline: None,
        migratable: cfg.adopted_migratable,
    })
}

/// The `p` quantile (nearest rank) of `values`; 0 when empty.
fn percentile(values: impl Iterator<Item = f64>, p: f64) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::tests::node;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 2, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn site() -> SiteState {
        let mut s = SiteState::default();
        for id in ["a", "b"] {
            s.nodes.insert(id.into(), node(id, Some(t(0))));
        }
        s
    }

    fn rep(id: &str, util: f64) -> VmTelemetry {
        VmTelemetry {
            id: id.into(),
            vcpus: Some(2),
            mem_gib: Some(4.0),
            mem_used_gib: Some(3.0),
            cpu_s: None,
            cpu_util: Some(util),
            cpu_quota_cores: None,
        }
    }

    fn idle(_: &str) -> bool {
        false
    }

    #[test]
    fn a_vm_a_host_reports_is_adopted_with_that_host_and_its_measured_load() {
        let (cfg, mut s, mut inv) = (InventoryConfig::default(), site(), Inventory::default());
        let ch = inv.report(&cfg, &mut s, "a", &[rep("web1", 0.4)], t(0), &idle);
        assert_eq!(ch.adopted, ["web1"]);
        let vm = &s.vms["web1"];
        assert_eq!(vm.host.as_deref(), Some("a"));
        assert_eq!((vm.vcpus, vm.mem_gib, vm.load), (2, 4.0, Some(0.4)));
        let mut no_vcpus = rep("x", 0.1);
        no_vcpus.vcpus = None;
        let ch = inv.report(&cfg, &mut s, "a", &[no_vcpus], t(1), &idle);
        assert!(ch.adopted.is_empty() && !s.vms.contains_key("x"));
    }

    #[test]
    fn the_planned_load_is_a_high_percentile_of_the_window() {
        let (cfg, mut s, mut inv) = (InventoryConfig::default(), site(), Inventory::default());
        inv.report(&cfg, &mut s, "a", &[rep("web1", 0.1)], t(0), &idle);
        for k in 1..20 {
            let u = if k == 10 { 0.9 } else { 0.2 };
            inv.report(&cfg, &mut s, "a", &[rep("web1", u)], t(k * 60), &idle);
        }
        // 20 samples: the 95th percentile is the 19th smallest: 0.2; the
        // peak of one minute does not drive the plan, a sustained one would.
        assert_eq!(s.vms["web1"].load, Some(0.2));
        for k in 20..24 {
            inv.report(&cfg, &mut s, "a", &[rep("web1", 0.8)], t(k * 60), &idle);
        }
        assert_eq!(s.vms["web1"].load, Some(0.8));
        // Samples older than the window are gone.
        inv.report(
            &cfg,
            &mut s,
            "a",
            &[rep("web1", 0.3)],
            t(24 * 60 + 3600),
            &idle,
        );
        assert_eq!(s.vms["web1"].load, Some(0.3));
    }

    #[test]
    fn a_vm_missing_from_its_hosts_reports_for_the_grace_is_dropped() {
        let (cfg, mut s, mut inv) = (InventoryConfig::default(), site(), Inventory::default());
        inv.report(&cfg, &mut s, "a", &[rep("web1", 0.1)], t(0), &idle);
        assert!(inv
            .report(&cfg, &mut s, "a", &[], t(300), &idle)
            .dropped
            .is_empty());
        let busy = |id: &str| id == "web1";
        assert!(
            inv.report(&cfg, &mut s, "a", &[], t(700), &busy)
                .dropped
                .is_empty(),
            "an action in flight for it keeps it"
        );
        let ch = inv.report(&cfg, &mut s, "a", &[], t(700), &idle);
        assert_eq!(ch.dropped, ["web1"]);
        assert!(!s.vms.contains_key("web1"));
    }

    #[test]
    fn a_vm_just_placed_is_not_dropped_by_a_report_older_than_its_move() {
        let (cfg, mut s, mut inv) = (InventoryConfig::default(), site(), Inventory::default());
        inv.report(&cfg, &mut s, "a", &[], t(0), &idle);
        s.vms.insert(
            "web1".into(),
            adopted(&cfg, "a", &rep("web1", 0.1)).unwrap(),
        );
        inv.moved("web1", t(900));
        // a's list, built before the VM arrived, comes in after the move.
        let ch = inv.report(&cfg, &mut s, "a", &[], t(901), &idle);
        assert!(ch.dropped.is_empty(), "the grace counts from the move");
        assert!(
            inv.report(&cfg, &mut s, "a", &[], t(1600), &idle)
                .dropped
                .len()
                == 1
        );
    }

    #[test]
    fn a_vm_on_two_hosts_is_frozen_and_flagged_and_kept_once() {
        let (cfg, mut s, mut inv) = (InventoryConfig::default(), site(), Inventory::default());
        inv.report(&cfg, &mut s, "a", &[rep("web1", 0.1)], t(0), &idle);
        let ch = inv.report(&cfg, &mut s, "b", &[rep("web1", 0.1)], t(10), &idle);
        assert_eq!(ch.conflicts, ["web1"]);
        assert!(inv.conflicting().contains("web1"));
        let vm = &s.vms["web1"];
        assert_eq!(
            vm.host.as_deref(),
            Some("a"),
            "frozen where it was recorded"
        );
        assert!(!vm.migratable);
        assert_eq!(s.vms.len(), 1);
    }

    #[test]
    fn a_vm_found_only_on_another_host_is_followed_unless_an_action_moves_it() {
        let (cfg, mut s, mut inv) = (InventoryConfig::default(), site(), Inventory::default());
        inv.report(&cfg, &mut s, "a", &[rep("web1", 0.1)], t(0), &idle);
        // a lists nothing any more; b reports it, past the grace since a saw it.
        inv.report(&cfg, &mut s, "a", &[], t(700), &|_| true);
        let busy = |id: &str| id == "web1";
        inv.report(&cfg, &mut s, "b", &[rep("web1", 0.1)], t(701), &busy);
        assert_eq!(
            s.vms["web1"].host.as_deref(),
            Some("a"),
            "a migration in flight owns it"
        );
        let ch = inv.report(&cfg, &mut s, "b", &[rep("web1", 0.1)], t(702), &idle);
        assert_eq!(ch.updated, ["web1"]);
        assert_eq!(s.vms["web1"].host.as_deref(), Some("b"));
    }

    #[test]
    fn bad_inventory_settings_name_the_key() {
        let c = InventoryConfig {
            load_percentile: 0.0,
            ..InventoryConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "inventory.load_percentile");
        let c = InventoryConfig {
            vanish_grace_s: f64::NAN,
            ..InventoryConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "inventory.vanish_grace_s");
    }
}
