//! The node's VMs: inventory from cgroup v2 for telemetry, and per-VM CPU
//! quotas on each scope's `cpu.max`, held like the power limits — the
//! original remembered (and persisted in the state file) before the first
//! write, drift re-applied, the original written back when the quota is
//! lifted (lease expiry, a cap without the VM, exit) and then forgotten, and
//! a VM that vanished forgotten too.

use std::collections::BTreeMap;
use std::time::Instant;

use protocol::payloads::{VmTelemetry, MAX_VMS, MAX_VM_VCPUS};
use tracing::{info, warn};

use super::{step, ApplyReport, Node, Readings, Slot, VmOriginal, GIB};
use crate::cgroup::{self, CpuMax, Skipped, VmPattern, VmSample, VmScope};
use crate::state::StateFile;

/// Largest memory limit reported, GiB (the telemetry's bound).
const MAX_PLAUSIBLE_GIB: f64 = 1.0e6;

impl Node {
    /// Parse the VM patterns and take a first look (for `--probe`).
    pub(super) fn open_cgroup(&mut self) {
        if !self.cfg.vms.enabled {
            return;
        }
        self.cgroup_root = Some(self.sysfs.root().join(&self.cfg.vms.cgroup_root));
        self.vm_patterns = self
            .cfg
            .vms
            .patterns
            .iter()
            .filter_map(|p| match VmPattern::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(pattern = %p, error = %e, "VM pattern refused; ignored.");
                    None
                }
            })
            .collect();
        if let Some(root) = &self.cgroup_root {
            self.vm_scopes = cgroup::discover(root, &self.vm_patterns).scopes;
        }
    }

    /// Persist originals to `state` from now on, before each first VM quota
    /// (the agent sets it after saving the file once; none in a dry run).
    pub fn set_state_file(&mut self, state: Option<StateFile>) {
        self.state = state;
    }

    /// VM scopes found by the last read.
    pub fn vm_scopes(&self) -> &[VmScope] {
        &self.vm_scopes
    }

    /// Take a previous run's VM originals whose scopes still exist, so that
    /// the following restore writes them back.
    pub(super) fn adopt_vm_originals(&mut self, previous: &[VmOriginal]) {
        let Some(root) = self.cgroup_root.clone() else {
            return;
        };
        for vm in previous {
            if !root.join(&vm.cgroup).is_dir() {
                info!(vm = %vm.id, cgroup = %vm.cgroup, "A previous run's VM is gone; its quota is forgotten.");
                continue;
            }
            self.originals.vm_cpu_max.retain(|o| o.cgroup != vm.cgroup);
            self.originals.vm_cpu_max.push(vm.clone());
            // A slot that cannot equal any real value: restore() writes.
            let unknown = Slot {
                desired: CpuMax {
                    quota_us: Some(0),
                    period_us: 0,
                },
                readback: None,
            };
            self.applied_vm.insert(vm.cgroup.clone(), Some(unknown));
        }
    }

    /// Read every VM scope; odd entries are skipped, each logged once.
    pub(super) fn read_vms(&mut self, now: Instant, r: &mut Readings) {
        let Some(root) = self.cgroup_root.clone() else {
            return;
        };
        let found = cgroup::discover(&root, &self.vm_patterns);
        let mut skipped = found.skipped;
        let mut scopes = Vec::new();
        let mut vms = Vec::new();
        for scope in found.scopes {
            let vm = cgroup::sample(&scope.path)
                .map_err(|e| e.to_string())
                .map(|sample| self.vm_telemetry(&scope, &sample, now))
                .and_then(|vm| vm.validate().map(|()| vm).map_err(|e| e.to_string()));
            match vm {
                Ok(_) if vms.len() >= MAX_VMS => skipped.push(Skipped {
                    path: scope.path.clone(),
                    reason: format!("more than {MAX_VMS} VMs on this host; not reported"),
                }),
                Ok(vm) => {
                    vms.push(vm);
                    scopes.push(scope);
                }
                Err(reason) => skipped.push(Skipped {
                    path: scope.path.clone(),
                    reason,
                }),
            }
        }
        self.vm_usage
            .retain(|key, _| scopes.iter().any(|s| &s.key == key));
        self.vm_scopes = scopes;
        for s in skipped {
            if self.vm_skips_seen.insert(s.to_string()) {
                warn!(entry = %s.path.display(), reason = %s.reason, "Cgroup entry skipped.");
                r.vm_skipped_new += 1;
            }
        }
        r.vms = Some(vms);
    }

    /// The VM's vCPUs: its `libvirt/vcpu<K>` directories, else the quota of
    /// its `cpu.max` before the agent wrote one, else unknown.
    fn vm_vcpus(&self, scope: &VmScope, current: Option<CpuMax>) -> Option<u32> {
        let before = self.vm_original(&scope.key).map(|o| o.cpu_max).or(current);
        scope.vcpu_dirs.or_else(|| {
            before
                .and_then(|m| m.cores())
                .filter(|c| *c <= MAX_VM_VCPUS)
                .map(|c| c.ceil().max(1.0) as u32)
        })
    }

    fn vm_telemetry(&mut self, scope: &VmScope, s: &VmSample, now: Instant) -> VmTelemetry {
        let vcpus = self.vm_vcpus(scope, s.cpu_max);
        let previous = self.vm_usage.insert(scope.key.clone(), (now, s.usage_usec));
        let cpu_util = previous.and_then(|(then, usage)| {
            let dt_us = now.saturating_duration_since(then).as_secs_f64() * 1e6;
            let used_us = s.usage_usec.checked_sub(usage)? as f64;
            let vcpus = f64::from(vcpus.filter(|v| *v > 0)?);
            (dt_us > 0.0).then(|| (used_us / (dt_us * vcpus)).clamp(0.0, 1.0))
        });
        VmTelemetry {
            id: scope.id.clone(),
            vcpus,
            // A limit of exabytes (or thousands of cores) is no limit.
            mem_gib: s
                .mem_max_bytes
                .map(|b| b as f64 / GIB)
                .filter(|g| *g <= MAX_PLAUSIBLE_GIB),
            mem_used_gib: s.mem_current_bytes.map(|b| b as f64 / GIB),
            cpu_s: Some(s.usage_usec as f64 / 1e6),
            cpu_util,
            cpu_quota_cores: s
                .cpu_max
                .and_then(|m| m.cores())
                .filter(|c| *c <= MAX_VM_VCPUS),
        }
    }

    fn vm_original(&self, key: &str) -> Option<&VmOriginal> {
        self.originals.vm_cpu_max.iter().find(|o| o.cgroup == key)
    }

    fn save_state(&self) -> Result<(), String> {
        match &self.state {
            Some(st) => st.save(&self.originals).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Hold `cores` (by VM id) on the VMs found by the last read; lift the
    /// quota of every other VM the agent holds one on.
    pub(super) fn apply_vms(&mut self, cores: &BTreeMap<String, f64>, rep: &mut ApplyReport) {
        let Some(root) = self.cgroup_root.clone() else {
            return;
        };
        self.forget_vanished_vms(&root, rep);
        let scopes = self.vm_scopes.clone();
        let mut held = Vec::new();
        for scope in scopes.iter().filter(|s| cores.contains_key(&s.id)) {
            if let Err(e) = self.remember_vm_original(scope) {
                rep.errors.push(e);
                continue;
            }
            let Some(original) = self.vm_original(&scope.key).map(|o| o.cpu_max) else {
                continue;
            };
            let vcpus = self.vm_vcpus(scope, None);
            let desired = CpuMax::for_cores(
                cores[&scope.id],
                vcpus,
                original.period_us,
                self.cfg.vms.min_quota_cores,
            );
            self.step_vm(&root, &scope.key, Some(desired), rep);
            held.push(scope.key.clone());
        }
        let lifted: Vec<String> = self
            .applied_vm
            .keys()
            .filter(|k| !held.contains(k))
            .cloned()
            .collect();
        for key in lifted {
            self.step_vm(&root, &key, None, rep);
            if self.applied_vm.get(&key) == Some(&None) {
                self.applied_vm.remove(&key);
                self.originals.vm_cpu_max.retain(|o| o.cgroup != key);
                if let Err(e) = self.save_state() {
                    rep.errors.push(e);
                }
            }
        }
        for id in cores.keys() {
            if !scopes.iter().any(|s| &s.id == id)
                && self
                    .vm_skips_seen
                    .insert(format!("quota for absent VM {id}"))
            {
                warn!(vm = %id, "CPU quota for a VM that is not on this host; ignored.");
            }
        }
    }

    /// One VM's `cpu.max`: hold `desired`, or its original when `None`.
    fn step_vm(
        &mut self,
        root: &std::path::Path,
        key: &str,
        desired: Option<CpuMax>,
        rep: &mut ApplyReport,
    ) {
        let original = self.vm_original(key).map(|o| o.cpu_max);
        let path = root.join(key);
        let what = path.join("cpu.max").display().to_string();
        let dry = self.dry_run;
        let slot = self.applied_vm.entry(key.to_owned()).or_insert(None);
        step(
            slot,
            desired,
            original,
            dry,
            &what,
            || {
                cgroup::read_cpu_max(&path)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{what} is absent"))
            },
            |v| cgroup::write_cpu_max(&path, v).map_err(|e| e.to_string()),
            rep,
        );
    }

    /// Record a VM's `cpu.max` (and persist it) before its first quota.
    fn remember_vm_original(&mut self, scope: &VmScope) -> Result<(), String> {
        if self.vm_original(&scope.key).is_some() {
            return Ok(());
        }
        let cpu_max = cgroup::read_cpu_max(&scope.path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{}/cpu.max is absent (the cpu controller is not enabled there); VM {} cannot get a quota",
                    scope.path.display(),
                    scope.id
                )
            })?;
        self.originals.vm_cpu_max.push(VmOriginal {
            id: scope.id.clone(),
            cgroup: scope.key.clone(),
            cpu_max,
        });
        if let Err(e) = self.save_state() {
            self.originals.vm_cpu_max.retain(|o| o.cgroup != scope.key);
            return Err(format!(
                "{e}; no quota on VM {} until its original is saved",
                scope.id
            ));
        }
        Ok(())
    }

    /// Forget the quota and original of every VM whose scope is gone.
    fn forget_vanished_vms(&mut self, root: &std::path::Path, rep: &mut ApplyReport) {
        let gone: Vec<VmOriginal> = self
            .originals
            .vm_cpu_max
            .iter()
            .filter(|o| !root.join(&o.cgroup).is_dir())
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for vm in &gone {
            info!(vm = %vm.id, cgroup = %vm.cgroup, "VM gone; its quota is forgotten.");
            self.applied_vm.remove(&vm.cgroup);
        }
        self.originals
            .vm_cpu_max
            .retain(|o| !gone.iter().any(|g| g.cgroup == o.cgroup));
        if let Err(e) = self.save_state() {
            rep.errors.push(e);
        }
    }
}
