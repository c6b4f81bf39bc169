//! The demo site's hypervisor and power switches: where the VMs run, which
//! servers are on, and the CPU time each VM has used.
//!
//! The controller reaches it only through its actuator boundary
//! ([`Actuate`], as libvirt and IPMI would be on a real site): a placement
//! starts a VM (its cgroup is on the host from the start), a migration
//! moves it (the target holds the incoming VM's cgroup while it runs) (it takes site time, and fails when
//! the target is off, booting or short of memory, or when a busy VM's live
//! migration does not converge), a power-on boots a server (its agent
//! reports online after [`BOOT_S`]), a power-off switches one off (refused
//! while VMs still run on it). The twin steps the same world: it runs the
//! VMs and publishes what its agents measure.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::{Vm, VmKind};

use super::Clock;
use crate::controller::actuator::{Action, Outcome};
use crate::controller::execute::Actuate;

/// Site seconds from power-on until the server's agent reports online.
pub const BOOT_S: f64 = 120.0;
/// Site seconds a VM takes to start.
pub const START_S: f64 = 20.0;
/// Site seconds a live migration takes per GiB of the VM's memory (a
/// 1 Gbit/s migration link), on top of [`MIGRATE_BASE_S`].
pub const MIGRATE_S_PER_GIB: f64 = 9.0;
/// Site seconds of a live migration's set-up and switch-over.
pub const MIGRATE_BASE_S: f64 = 10.0;
/// Chance that the live migration of a VM using all its vCPUs fails to
/// converge (it dirties memory faster than the link copies it); it grows
/// linearly with the VM's CPU use.
pub const MIGRATE_FAIL_AT_FULL_CPU: f64 = 0.15;

/// Power state of a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Power {
    /// Running; its agent reports.
    On,
    /// Switched on, booting until the given site time.
    Booting(DateTime<Utc>),
    /// Switched off.
    Off,
}

/// One server as the hypervisor sees it.
#[derive(Debug, Clone)]
pub struct Host {
    /// Power state.
    pub power: Power,
    /// Memory, GiB.
    pub mem_gib: f64,
}

/// One VM: its definition (as admitted) and where it runs.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The VM as admitted (its `host` is not used; see `host`).
    pub vm: Vm,
    /// Where it runs; `None` while defined but not started.
    pub host: Option<String>,
    /// Where it is being migrated to.
    pub migrating_to: Option<String>,
    /// CPU seconds its cgroup on `host` has used (a new host starts a new
    /// cgroup at zero).
    pub cpu_s: f64,
    /// CPU used over the last step as a share of its vCPUs.
    pub cpu_util: f64,
}

/// Actions the hypervisor carried out or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// VMs started.
    pub places: usize,
    /// Migrations completed.
    pub migrations: usize,
    /// Migrations that failed.
    pub migrations_failed: usize,
    /// Servers switched on.
    pub power_ons: usize,
    /// Servers switched off.
    pub power_offs: usize,
    /// Actions refused (the VM or server was not in the state asked).
    pub refused: usize,
}

/// The hypervisor's world.
#[derive(Debug, Default)]
pub struct World {
    /// Servers by id.
    pub hosts: BTreeMap<String, Host>,
    /// VMs by id.
    pub guests: BTreeMap<String, Guest>,
    /// What was carried out.
    pub counts: Counts,
    /// Memory VMs of one image share on a host (page sharing), GiB by
    /// image id.
    pub shared_mem_gib: BTreeMap<String, f64>,
}

impl World {
    /// Memory of the VMs on `host` and of those migrating to it, GiB.
    /// Every VM of an image after the first on a host needs its memory less
    /// what the image shares.
    fn mem_used_gib(&self, host: &str) -> f64 {
        let mut images = std::collections::BTreeSet::new();
        self.guests_on(host)
            .iter()
            .map(|g| {
                let shared =
                    g.vm.image
                        .as_ref()
                        .filter(|i| !images.insert(i.as_str()))
                        .and_then(|i| self.shared_mem_gib.get(i))
                        .copied()
                        .unwrap_or(0.0);
                (g.vm.mem_gib - shared).max(0.0)
            })
            .sum()
    }

    /// Why `vm` cannot start on `host` now, or `Ok`.
    fn can_take(&self, host: &str, vm: &Vm) -> Result<(), String> {
        let mem_gib = vm.mem_gib;
        // Its image's shared pages are there already when a VM of it is.
        let image_shared = vm
            .image
            .as_ref()
            .filter(|i| {
                self.guests_on(host)
                    .iter()
                    .any(|g| g.vm.image.as_ref() == Some(*i))
            })
            .and_then(|i| self.shared_mem_gib.get(i))
            .copied()
            .unwrap_or(0.0);
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| format!("no server {host}"))?;
        match h.power {
            Power::On => {}
            Power::Booting(_) => return Err(format!("{host} is still booting")),
            Power::Off => return Err(format!("{host} is switched off")),
        }
        let free = h.mem_gib - self.mem_used_gib(host);
        if mem_gib - image_shared > free + 1e-9 {
            return Err(format!(
                "{host} lacks memory: {mem_gib:.1} GiB asked, {free:.1} GiB free"
            ));
        }
        Ok(())
    }

    /// The VMs running on or moving to `host`.
    pub fn guests_on(&self, host: &str) -> Vec<&Guest> {
        self.guests
            .values()
            .filter(|g| g.host.as_deref() == Some(host) || g.migrating_to.as_deref() == Some(host))
            .collect()
    }
}

/// A handle on the hypervisor, shared by the twin and the controller's
/// executor.
#[derive(Debug, Clone)]
pub struct Hypervisor {
    world: Arc<Mutex<World>>,
    clock: Clock,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl Hypervisor {
    /// A hypervisor over `hosts`, whose VMs share `shared_mem_gib` of each
    /// image on a host, with no VM defined.
    pub fn new(
        hosts: BTreeMap<String, Host>,
        shared_mem_gib: BTreeMap<String, f64>,
        clock: Clock,
        seed: u64,
    ) -> Self {
        let world = World {
            hosts,
            shared_mem_gib,
            ..Default::default()
        };
        Self {
            world: Arc::new(Mutex::new(world)),
            clock,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_6772))),
        }
    }

    /// The world, locked (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Define `vm` (admitted, not started).
    pub fn define(&self, vm: Vm) {
        self.lock().guests.insert(
            vm.id.clone(),
            Guest {
                vm,
                host: None,
                migrating_to: None,
                cpu_s: 0.0,
                cpu_util: 0.0,
            },
        );
    }

    /// `vm` already runs on `host` (it did before the controller came).
    pub fn running(&self, vm: Vm, host: &str) {
        self.define(vm.clone());
        if let Some(g) = self.lock().guests.get_mut(&vm.id) {
            g.host = Some(host.to_string());
        }
    }

    /// Whether `vm` is defined.
    pub fn has(&self, vm: &str) -> bool {
        self.lock().guests.contains_key(vm)
    }

    /// Start `vm` on `to`: its process (and cgroup) is there at once, and
    /// the start is done after [`START_S`].
    async fn place(&self, vm: &str, to: &str, limit: Duration) -> Outcome {
        let outcome = self.start_on(vm, to);
        if outcome == Outcome::Done {
            tokio::time::sleep(self.clock.real(START_S).min(limit)).await;
        }
        outcome
    }

    fn start_on(&self, vm: &str, to: &str) -> Outcome {
        let mut w = self.lock();
        let Some(g) = w.guests.get(vm) else {
            return refused(&mut w, format!("no VM {vm} is defined"));
        };
        let spec = g.vm.clone();
        match g.host.clone() {
            Some(h) if h == to => return Outcome::Done,
            Some(h) => return refused(&mut w, format!("{vm} already runs on {h}")),
            None => {}
        }
        if let Err(why) = w.can_take(to, &spec) {
            return failed(&mut w, format!("{vm} not started: {why}"));
        }
        if let Some(g) = w.guests.get_mut(vm) {
            g.host = Some(to.to_string());
            g.cpu_s = 0.0;
        }
        w.counts.places += 1;
        Outcome::Done
    }

    /// Start a live migration: reserve the target; returns its site
    /// duration, s.
    fn begin_migration(&self, vm: &str, from: &str, to: &str) -> Result<f64, Outcome> {
        let mut w = self.lock();
        let Some(g) = w.guests.get(vm) else {
            return Err(refused(&mut w, format!("no VM {vm} is defined")));
        };
        if g.host.as_deref() != Some(from) || g.migrating_to.is_some() {
            let at = g.host.clone().unwrap_or_else(|| "no host".into());
            return Err(refused(
                &mut w,
                format!("{vm} is not running on {from} (it is on {at})"),
            ));
        }
        let (mem, spec) = (g.vm.mem_gib, g.vm.clone());
        if let Err(why) = w.can_take(to, &spec) {
            return Err(failed(&mut w, format!("migration of {vm} failed: {why}")));
        }
        if let Some(g) = w.guests.get_mut(vm) {
            g.migrating_to = Some(to.to_string());
        }
        Ok(MIGRATE_BASE_S + MIGRATE_S_PER_GIB * mem)
    }

    /// End a live migration: it converges (the VM moves, a new cgroup on
    /// the target counts from zero) or not (it stays where it was).
    fn end_migration(&self, vm: &str, to: &str) -> Outcome {
        let mut w = self.lock();
        let Some(g) = w.guests.get(vm) else {
            return failed(&mut w, format!("{vm} vanished during its migration"));
        };
        let target_up = w.hosts.get(to).is_some_and(|h| h.power == Power::On);
        let p_fail = MIGRATE_FAIL_AT_FULL_CPU * g.cpu_util.clamp(0.0, 1.0);
        let diverged = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<f64>()
            < p_fail;
        let util = g.cpu_util;
        let Some(g) = w.guests.get_mut(vm) else {
            return Outcome::Failed(format!("{vm} vanished during its migration"));
        };
        g.migrating_to = None;
        if !target_up {
            return failed(&mut w, format!("migration of {vm} failed: {to} went down"));
        }
        if diverged {
            return failed(
                &mut w,
                format!(
                    "live migration of {vm} did not converge ({:.0} % CPU dirtied memory faster than the link copied it); it stays where it was",
                    util * 100.0
                ),
            );
        }
        g.host = Some(to.to_string());
        g.cpu_s = 0.0;
        w.counts.migrations += 1;
        Outcome::Done
    }

    async fn migrate(&self, vm: &str, from: &str, to: &str, limit: Duration) -> Outcome {
        let site_s = match self.begin_migration(vm, from, to) {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        // Should the executor stop this migration, it is cancelled.
        let cancel = Cancel {
            hv: self,
            vm,
            armed: true,
        };
        let took = self.clock.real(site_s);
        if took > limit {
            tokio::time::sleep(limit).await;
            drop(cancel);
            let mut w = self.lock();
            return failed(
                &mut w,
                format!("migration of {vm} ran past its time limit and was cancelled"),
            );
        }
        tokio::time::sleep(took).await;
        cancel.disarm();
        self.end_migration(vm, to)
    }

    fn power_on(&self, node: &str) -> Outcome {
        let boot_until =
            self.clock.now() + chrono::Duration::milliseconds((BOOT_S * 1000.0) as i64);
        let mut w = self.lock();
        let Some(h) = w.hosts.get_mut(node) else {
            return refused(&mut w, format!("no server {node}"));
        };
        if h.power == Power::Off {
            h.power = Power::Booting(boot_until);
            w.counts.power_ons += 1;
        }
        Outcome::Done
    }

    fn power_off(&self, node: &str) -> Outcome {
        let mut w = self.lock();
        if !w.hosts.contains_key(node) {
            return refused(&mut w, format!("no server {node}"));
        }
        let running: Vec<String> = w.guests_on(node).iter().map(|g| g.vm.id.clone()).collect();
        if !running.is_empty() {
            return failed(
                &mut w,
                format!("{node} still runs {}; not switched off", running.join(", ")),
            );
        }
        if let Some(h) = w.hosts.get_mut(node) {
            if h.power != Power::Off {
                h.power = Power::Off;
                w.counts.power_offs += 1;
            }
        }
        Outcome::Done
    }

    /// Servers whose boot is over by `now` come up.
    pub fn finish_boots(&self, now: DateTime<Utc>) {
        for h in self.lock().hosts.values_mut() {
            if matches!(h.power, Power::Booting(until) if until <= now) {
                h.power = Power::On;
            }
        }
    }

    /// Destroy the VMs the controller no longer has (finished or removed);
    /// returns how many batch VMs went.
    pub fn destroy(&self, ids: &[String]) -> usize {
        let mut w = self.lock();
        ids.iter()
            .filter_map(|id| w.guests.remove(id))
            .filter(|g| g.vm.kind == VmKind::Batch)
            .count()
    }
}

fn refused(w: &mut World, why: String) -> Outcome {
    w.counts.refused += 1;
    Outcome::Failed(why)
}

fn failed(w: &mut World, why: String) -> Outcome {
    if why.contains("migration") {
        w.counts.migrations_failed += 1;
    }
    Outcome::Failed(why)
}

/// Undoes a migration's reservation unless disarmed.
struct Cancel<'a> {
    hv: &'a Hypervisor,
    vm: &'a str,
    armed: bool,
}

impl Cancel<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(g) = self.hv.lock().guests.get_mut(self.vm) {
                g.migrating_to = None;
            }
        }
    }
}

impl Actuate for Hypervisor {
    fn run(&self, action: &Action, limit: Duration) -> impl Future<Output = Outcome> + Send {
        let action = action.clone();
        async move {
            let outcome = match &action {
                Action::Place { vm, to } => self.place(vm, to, limit).await,
                Action::Migrate { vm, from, to } => self.migrate(vm, from, to, limit).await,
                Action::PowerOn { node } => self.power_on(node),
                Action::PowerOff { node } => self.power_off(node),
            };
            tracing::debug!(?action, ?outcome, "Demo hypervisor carried out an action.");
            outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hv() -> Hypervisor {
        let start = Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0).unwrap();
        let hosts = ["a", "b"]
            .iter()
            .map(|id| {
                (
                    id.to_string(),
                    Host {
                        power: Power::On,
                        mem_gib: 16.0,
                    },
                )
            })
            .collect();
        Hypervisor::new(
            hosts,
            BTreeMap::new(),
            Clock::accelerated(start, 10_000.0),
            1,
        )
    }

    fn vm(id: &str, mem_gib: f64) -> Vm {
        Vm {
            id: id.into(),
            vcpus: 2,
            mem_gib,
            image: None,
            host: None,
            kind: VmKind::Batch,
            load: None,
            work_core_h: Some(1.0),
            deadline: None,
            migratable: true,
        }
    }

    async fn act(hv: &Hypervisor, a: Action) -> Outcome {
        hv.run(&a, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn a_migration_to_a_server_without_room_fails_and_leaves_the_vm_in_place() {
        let hv = hv();
        hv.define(vm("v1", 12.0));
        hv.define(vm("v2", 8.0));
        let place = |vm: &str, to: &str| Action::Place {
            vm: vm.into(),
            to: to.into(),
        };
        assert_eq!(act(&hv, place("v1", "a")).await, Outcome::Done);
        assert_eq!(act(&hv, place("v2", "b")).await, Outcome::Done);
        let out = act(
            &hv,
            Action::Migrate {
                vm: "v1".into(),
                from: "a".into(),
                to: "b".into(),
            },
        )
        .await;
        assert!(
            matches!(&out, Outcome::Failed(r) if r.contains("lacks memory")),
            "{out:?}"
        );
        assert_eq!(hv.lock().guests["v1"].host.as_deref(), Some("a"));
        assert_eq!(hv.lock().counts.migrations_failed, 1);
    }

    #[tokio::test]
    async fn a_server_still_running_vms_is_not_switched_off_and_an_empty_one_is() {
        let hv = hv();
        hv.define(vm("v1", 4.0));
        let place = Action::Place {
            vm: "v1".into(),
            to: "a".into(),
        };
        assert_eq!(act(&hv, place).await, Outcome::Done);
        let off = |n: &str| Action::PowerOff { node: n.into() };
        assert!(matches!(act(&hv, off("a")).await, Outcome::Failed(r) if r.contains("v1")));
        assert_eq!(act(&hv, off("b")).await, Outcome::Done);
        assert_eq!(hv.lock().hosts["b"].power, Power::Off);
        let to_b = Action::Migrate {
            vm: "v1".into(),
            from: "a".into(),
            to: "b".into(),
        };
        assert!(matches!(act(&hv, to_b).await, Outcome::Failed(r) if r.contains("switched off")));
        assert_eq!(
            act(&hv, Action::PowerOn { node: "b".into() }).await,
            Outcome::Done
        );
        assert!(matches!(hv.lock().hosts["b"].power, Power::Booting(_)));
        hv.finish_boots(hv.clock.now() + chrono::Duration::seconds(BOOT_S as i64 + 1));
        assert_eq!(hv.lock().hosts["b"].power, Power::On);
    }
}
