//! [`Node`]: the server's hardware as the agent sees it — discovery (with a
//! [`Probe`] report of what is absent), readings, and bounded actuation
//! that remembers every original value ([`Originals`]) and can restore it.
//!
//! All calls block (sysfs, NVML): async code runs them in `spawn_blocking`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use protocol::payloads::{GpuTelemetry, VmTelemetry};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::cgroup::{CpuMax, VmPattern, VmScope};
use crate::config::AgentConfig;
use crate::control::{Capabilities, GpuCapability, RangeW, Targets, Thermal};
use crate::cpufreq::{self, CpuPowerModel, Policy};
use crate::gpu::GpuBackend;
use crate::hwmon::{self, HwmonChip};
use crate::rapl::{self, EnergyCounter, RaplZone};
use crate::state::StateFile;
use crate::sysfs::{Sysfs, SysfsError};

mod vms;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// How the CPU is capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuActuatorKind {
    /// RAPL package `constraint_0_power_limit_uw`.
    Rapl,
    /// cpufreq `scaling_max_freq` through the power model.
    Cpufreq,
    /// Neither exists (VMs, containers).
    None,
}

/// What the agent found on this machine (`phoenix agent --probe`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The sysfs root searched.
    pub sysfs_root: String,
    /// How the CPU is capped.
    pub cpu_actuator: CpuActuatorKind,
    /// RAPL package zones (`intel-rapl:0 package-0`).
    pub rapl_zones: Vec<String>,
    /// cpufreq policies with their hardware range.
    pub cpufreq_policies: Vec<String>,
    /// Matched hwmon chips and their sensor count.
    pub hwmon_chips: Vec<String>,
    /// Whether sysinfo's components stand in for missing hwmon chips.
    pub sysinfo_components: bool,
    /// GPU backend and device count, or why there are none.
    pub gpus: String,
    /// VM scopes found in cgroup v2 (`id cgroup-path`).
    pub vms: Vec<String>,
    /// Interfaces that are absent, in words.
    pub absent: Vec<String>,
}

/// The original value of every limit the agent may change; persisted in the
/// state file before the first write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Originals {
    /// RAPL zone id → `constraint_0_power_limit_uw`.
    pub rapl_uw: Vec<(String, u64)>,
    /// cpufreq policy → (`scaling_min_freq`, `scaling_max_freq`), kHz.
    pub cpufreq_khz: Vec<(String, u64, u64)>,
    /// GPU index → power management limit, mW.
    pub gpu_mw: Vec<(u32, u32)>,
    /// `cpu.max` of each VM scope the agent has set a quota on, from before
    /// its first write until it is restored.
    #[serde(default)]
    pub vm_cpu_max: Vec<VmOriginal>,
}

/// A VM's `cpu.max` before the agent's first quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOriginal {
    /// The VM's id.
    pub id: String,
    /// Its scope, relative to the cgroup root.
    pub cgroup: String,
    /// The value found.
    pub cpu_max: CpuMax,
}

/// One round of readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    /// CPU utilisation, 0–1 (`None` until sysinfo has two samples).
    pub cpu_util: Option<f64>,
    /// Memory in use, GiB.
    pub mem_used_gib: Option<f64>,
    /// Memory installed, GiB.
    pub mem_total_gib: Option<f64>,
    /// Hottest CPU temperature, °C.
    pub cpu_temp_c: Option<f64>,
    /// CPU package power, W (RAPL, else the power model).
    pub cpu_power_w: Option<f64>,
    /// Server power: platform + CPU + GPUs, W.
    pub power_w: Option<f64>,
    /// Energy since the agent started, J.
    pub energy_j: f64,
    /// Per-GPU readings.
    pub gpus: Vec<GpuTelemetry>,
    /// Every temperature with its limit, for the thermal guard.
    pub thermals: Vec<Thermal>,
    /// The VMs on this host (`None` when VM inventory is off).
    pub vms: Option<Vec<VmTelemetry>>,
    /// Odd cgroup entries seen for the first time in this read (each is
    /// logged once with its reason).
    pub vm_skipped_new: usize,
}

/// What one actuation pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    /// Values written (or, in a dry run, that would have been).
    pub writes: usize,
    /// Limits found changed by someone else and re-applied.
    pub drifted: Vec<String>,
    /// Writes that failed.
    pub errors: Vec<String>,
}

#[derive(Debug)]
enum CpuActuator {
    Rapl(Vec<RaplZone>),
    Cpufreq(Vec<Policy>),
    None,
}

/// The machine: discovered interfaces, originals, and what was last applied.
#[derive(Debug)]
pub struct Node {
    sysfs: Sysfs,
    cfg: AgentConfig,
    dry_run: bool,
    cpu: CpuActuator,
    rapl: Vec<(RaplZone, EnergyCounter)>,
    hwmon: Vec<HwmonChip>,
    components: Option<sysinfo::Components>,
    sys: Option<sysinfo::System>,
    gpu: Option<Arc<dyn GpuBackend>>,
    gpu_status: String,
    gpu_ranges_mw: Vec<(u32, u32)>,
    originals: Originals,
    /// Last value applied (read back after writing) per actuator slot;
    /// `None` = untouched / at the original.
    applied_cpu: Vec<Option<Slot<u64>>>,
    applied_gpu: Vec<Option<Slot<u64>>>,
    /// VM quota slots by scope (relative to the cgroup root).
    applied_vm: BTreeMap<String, Option<Slot<CpuMax>>>,
    /// The cgroup v2 mount, when VM inventory is on.
    cgroup_root: Option<PathBuf>,
    vm_patterns: Vec<VmPattern>,
    /// VM scopes of the last read.
    vm_scopes: Vec<VmScope>,
    /// Last CPU usage per VM scope: (when, `usage_usec`).
    vm_usage: HashMap<String, (Instant, u64)>,
    /// Odd cgroup entries already logged.
    vm_skips_seen: HashSet<String>,
    /// Where VM originals are persisted before a first quota (none in a dry
    /// run or before the agent set it).
    state: Option<StateFile>,
    energy_j: f64,
    last_read: Option<Instant>,
    util_samples: u32,
    reported_errors: std::collections::HashSet<String>,
}

fn energy_counter_capable(zones: &[RaplZone]) -> Vec<(RaplZone, EnergyCounter)> {
    zones
        .iter()
        .filter(|z| z.energy_uj().is_ok())
        .map(|z| (z.clone(), EnergyCounter::default()))
        .collect()
}

impl Node {
    /// Discover the interfaces under `sysfs` and record the current value of
    /// every limit as its original. `gpu` is the GPU backend (or `Err` with
    /// why there is none). Absent interfaces are logged once, never fatal.
    pub fn open(
        sysfs: Sysfs,
        cfg: AgentConfig,
        gpu: Result<Arc<dyn GpuBackend>, String>,
        dry_run: bool,
    ) -> Self {
        let zones = rapl::discover(&sysfs);
        let cappable: Vec<RaplZone> = zones
            .iter()
            .filter(|z| z.cappable && z.power_limit_uw().is_ok())
            .cloned()
            .collect();
        let policies = cpufreq::discover(&sysfs);
        let cpu = if !cappable.is_empty() {
            CpuActuator::Rapl(cappable)
        } else if !policies.is_empty() {
            CpuActuator::Cpufreq(policies)
        } else {
            CpuActuator::None
        };
        let hwmon = hwmon::discover(&sysfs, &cfg.thermal.hwmon_names);
        // sysinfo reads the machine's own /sys: use it only there.
        let components = (hwmon.is_empty() && sysfs.is_real())
            .then(|| sysinfo::Components::new_with_refreshed_list().ok())
            .flatten()
            .filter(|c| !c.is_empty());
        let (gpu, gpu_status, gpu_ranges_mw) = match gpu {
            Ok(backend) => match backend.device_count() {
                Ok(n) => {
                    // A device whose constraints cannot be read is read but
                    // never capped: its range collapses to its current limit.
                    let ranges: Vec<(u32, u32)> = (0..n)
                        .map(|i| {
                            backend.power_limit_constraints_mw(i).unwrap_or_else(|e| {
                                warn!(gpu = i, error = %e, "GPU limit constraints unreadable; it will not be capped.");
                                let now = backend.power_limit_mw(i).unwrap_or(0);
                                (now, now)
                            })
                        })
                        .collect();
                    (
                        Some(backend.clone()),
                        format!("{}: {n} device(s)", backend.name()),
                        ranges,
                    )
                }
                Err(e) => (None, e.to_string(), Vec::new()),
            },
            Err(why) => (None, why, Vec::new()),
        };
        let mut node = Self {
            rapl: energy_counter_capable(&zones),
            sysfs,
            cfg,
            dry_run,
            cpu,
            hwmon,
            components,
            sys: sysinfo::System::new().ok(),
            gpu,
            gpu_status,
            gpu_ranges_mw,
            originals: Originals::default(),
            applied_cpu: Vec::new(),
            applied_gpu: Vec::new(),
            applied_vm: BTreeMap::new(),
            cgroup_root: None,
            vm_patterns: Vec::new(),
            vm_scopes: Vec::new(),
            vm_usage: HashMap::new(),
            vm_skips_seen: HashSet::new(),
            state: None,
            energy_j: 0.0,
            last_read: None,
            util_samples: 0,
            reported_errors: Default::default(),
        };
        node.open_cgroup();
        node.originals = node.current_values();
        node.applied_cpu = vec![None; node.cpu_slots()];
        node.applied_gpu = vec![None; node.gpu_ranges_mw.len()];
        for line in node.probe().absent {
            info!(sysfs_root = %node.sysfs.root().display(), interface = %line, "Interface absent.");
        }
        node
    }

    fn cpu_slots(&self) -> usize {
        match &self.cpu {
            CpuActuator::Rapl(z) => z.len(),
            CpuActuator::Cpufreq(p) => p.len(),
            CpuActuator::None => 0,
        }
    }

    /// The values in force now, in the shape of [`Originals`].
    fn current_values(&self) -> Originals {
        let mut o = Originals::default();
        match &self.cpu {
            CpuActuator::Rapl(zones) => {
                for z in zones {
                    if let Ok(uw) = z.power_limit_uw() {
                        o.rapl_uw.push((z.id.clone(), uw));
                    }
                }
            }
            CpuActuator::Cpufreq(policies) => {
                for p in policies {
                    if let (Ok(min), Ok(max)) = (p.scaling_min_khz(), p.scaling_max_khz()) {
                        o.cpufreq_khz.push((p.name.clone(), min, max));
                    }
                }
            }
            CpuActuator::None => {}
        }
        if let Some(gpu) = &self.gpu {
            for i in 0..self.gpu_ranges_mw.len() as u32 {
                if let Ok(mw) = gpu.power_limit_mw(i) {
                    o.gpu_mw.push((i, mw));
                }
            }
        }
        o
    }

    /// What was found, and what is absent.
    pub fn probe(&self) -> Probe {
        let mut absent = Vec::new();
        let zones: Vec<String> = self
            .rapl
            .iter()
            .map(|(z, _)| format!("{} {}", z.id, z.name))
            .collect();
        if zones.is_empty() {
            absent.push(
                "RAPL package energy (sys/class/powercap/intel-rapl:N, or not readable)".to_owned(),
            );
        }
        let cpu_actuator = match &self.cpu {
            CpuActuator::Rapl(_) => CpuActuatorKind::Rapl,
            CpuActuator::Cpufreq(_) => CpuActuatorKind::Cpufreq,
            CpuActuator::None => {
                absent.push("CPU capping (no writable RAPL limit, no cpufreq policy): CPU caps are not enforced".to_owned());
                CpuActuatorKind::None
            }
        };
        let policies = cpufreq::discover(&self.sysfs)
            .into_iter()
            .map(|p| format!("{} {}–{} kHz", p.name, p.cpuinfo_min_khz, p.cpuinfo_max_khz))
            .collect();
        let hwmon_chips: Vec<String> = self
            .hwmon
            .iter()
            .map(|c| format!("{} ({} sensors)", c.name, c.sensors.len()))
            .collect();
        if hwmon_chips.is_empty() && self.components.is_none() {
            absent.push(format!(
                "CPU temperature (no hwmon chip named {:?}): the thermal guard sees no CPU sensor",
                self.cfg.thermal.hwmon_names
            ));
        }
        if self.gpu.is_none() {
            absent.push(format!("GPUs ({})", self.gpu_status));
        }
        Probe {
            sysfs_root: self.sysfs.root().display().to_string(),
            cpu_actuator,
            rapl_zones: zones,
            cpufreq_policies: policies,
            hwmon_chips,
            sysinfo_components: self.components.is_some(),
            gpus: self.gpu_status.clone(),
            vms: self
                .vm_scopes
                .iter()
                .map(|v| format!("{} {}", v.id, v.key))
                .collect(),
            absent,
        }
    }

    /// The original values (captured at open, or adopted from a state file).
    pub fn originals(&self) -> &Originals {
        &self.originals
    }

    /// What the controller may cap, in watts.
    pub fn capabilities(&self) -> Capabilities {
        let cpu_cfg = &self.cfg.cpu;
        let cpu = match &self.cpu {
            CpuActuator::Rapl(zones) => {
                let hw_max_w: Option<f64> = zones
                    .iter()
                    .map(|z| z.max_power_uw.map(|uw| uw as f64 / 1e6))
                    .sum();
                let max_w = hw_max_w.unwrap_or(cpu_cfg.max_w);
                Some(RangeW {
                    min_w: cpu_cfg.min_cap_w.min(max_w),
                    max_w,
                })
            }
            CpuActuator::Cpufreq(policies) => {
                let model = self.power_model();
                let lowest = policies
                    .iter()
                    .map(|p| p.cpuinfo_min_khz as f64 / p.cpuinfo_max_khz as f64)
                    .fold(0.0, f64::max);
                Some(RangeW {
                    min_w: model.power_w(lowest),
                    max_w: model.max_w,
                })
            }
            CpuActuator::None => None,
        };
        let gpus = self
            .gpu_ranges_mw
            .iter()
            .enumerate()
            .map(|(i, &(min, max))| GpuCapability {
                range: RangeW {
                    min_w: min as f64 / 1000.0,
                    max_w: max as f64 / 1000.0,
                },
                original_w: self
                    .originals
                    .gpu_mw
                    .iter()
                    .find(|(idx, _)| *idx == i as u32)
                    .map_or(max as f64, |(_, mw)| *mw as f64)
                    / 1000.0,
            })
            .collect();
        Capabilities { cpu, gpus }
    }

    fn power_model(&self) -> CpuPowerModel {
        CpuPowerModel {
            idle_w: self.cfg.cpu.idle_w,
            max_w: self.cfg.cpu.max_w,
        }
    }

    /// Take originals from a previous run's state file: write them back now
    /// (the machine may still hold that run's caps) and keep them as this
    /// run's originals. Values for interfaces that are gone are skipped.
    pub fn adopt_originals(&mut self, previous: &Originals) -> ApplyReport {
        let mut merged = self.originals.clone();
        for (id, uw) in &previous.rapl_uw {
            if let Some(slot) = merged.rapl_uw.iter_mut().find(|(i, _)| i == id) {
                slot.1 = *uw;
            }
        }
        for (name, min, max) in &previous.cpufreq_khz {
            if let Some(slot) = merged.cpufreq_khz.iter_mut().find(|(n, _, _)| n == name) {
                (slot.1, slot.2) = (*min, *max);
            }
        }
        for (idx, mw) in &previous.gpu_mw {
            if let Some(slot) = merged.gpu_mw.iter_mut().find(|(i, _)| i == idx) {
                slot.1 = *mw;
            }
        }
        self.originals = merged;
        // Mark every slot as changed so restore() writes them all.
        let unknown = Some(Slot {
            desired: u64::MAX,
            readback: None,
        });
        self.applied_cpu = vec![unknown; self.cpu_slots()];
        self.applied_gpu = vec![unknown; self.gpu_ranges_mw.len()];
        self.adopt_vm_originals(&previous.vm_cpu_max);
        self.restore()
    }

    /// Read everything; failures leave fields empty and are logged at debug.
    pub fn read(&mut self, now: Instant) -> Readings {
        let dt_s = self
            .last_read
            .replace(now)
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .filter(|dt| *dt > 0.0);
        let mut r = Readings::default();
        if let Some(sys) = &mut self.sys {
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            self.util_samples += 1;
            if self.util_samples >= 2 {
                r.cpu_util = Some((f64::from(sys.global_cpu_usage()) / 100.0).clamp(0.0, 1.0));
            }
            if sys.total_memory() > 0 {
                r.mem_total_gib = Some(sys.total_memory() as f64 / GIB);
                r.mem_used_gib = Some(sys.used_memory() as f64 / GIB);
            }
        }
        self.read_temperatures(&mut r);
        // RAPL energy → CPU power.
        let mut delta_uj: Option<u64> = None;
        for (zone, counter) in &mut self.rapl {
            match zone.energy_uj() {
                Ok(raw) => {
                    if let Some(d) = counter.update(raw, zone.max_energy_range_uj) {
                        *delta_uj.get_or_insert(0) += d;
                    }
                }
                Err(e) => debug!(zone = %zone.id, error = %e, "RAPL energy unreadable."),
            }
        }
        r.cpu_power_w = match (delta_uj, dt_s) {
            (Some(uj), Some(dt)) => Some(uj as f64 / 1e6 / dt),
            _ if self.rapl.is_empty() => r.cpu_util.map(|u| self.modelled_cpu_w(u)),
            _ => None,
        };
        self.read_gpus(&mut r);
        let gpu_w: f64 = r.gpus.iter().map(|g| g.power_w).sum();
        r.power_w = r
            .cpu_power_w
            .map(|cpu| self.cfg.caps.platform_w + cpu + gpu_w);
        if let (Some(p), Some(dt)) = (r.power_w, dt_s) {
            self.energy_j += p * dt;
        }
        r.energy_j = self.energy_j;
        self.read_vms(now, &mut r);
        r
    }

    /// CPU power from the model at utilisation `u` and the frequency ceiling
    /// in force.
    fn modelled_cpu_w(&self, u: f64) -> f64 {
        let model = self.power_model();
        let fraction = match &self.cpu {
            CpuActuator::Cpufreq(policies) => policies
                .iter()
                .filter_map(|p| {
                    p.scaling_max_khz()
                        .ok()
                        .map(|f| f as f64 / p.cpuinfo_max_khz as f64)
                })
                .fold(None, |acc: Option<f64>, f| {
                    Some(acc.map_or(f, |a| a.max(f)))
                })
                .unwrap_or(1.0),
            _ => 1.0,
        };
        model.idle_w + (model.max_w - model.idle_w) * u * fraction.clamp(0.0, 1.0).powi(3)
    }

    fn read_temperatures(&mut self, r: &mut Readings) {
        let default_limit = self.cfg.thermal.default_limit_c;
        for chip in &self.hwmon {
            for reading in chip.read() {
                match reading {
                    Ok(t) => r.thermals.push(Thermal {
                        source: t.source,
                        temp_c: t.temp_c,
                        limit_c: t.limit_c.unwrap_or(default_limit),
                    }),
                    Err(e) => debug!(chip = %chip.name, error = %e, "Temperature unreadable."),
                }
            }
        }
        if let Some(components) = &mut self.components {
            components.refresh(false);
            for c in components.iter() {
                if let Some(t) = c.temperature().filter(|t| t.is_finite()) {
                    r.thermals.push(Thermal {
                        source: c.label().to_owned(),
                        temp_c: f64::from(t),
                        limit_c: c
                            .critical()
                            .filter(|c| c.is_finite() && *c > 0.0)
                            .map_or(default_limit, f64::from),
                    });
                }
            }
        }
        r.cpu_temp_c = r
            .thermals
            .iter()
            .map(|t| t.temp_c)
            .fold(None, |acc: Option<f64>, t| {
                Some(acc.map_or(t, |a| a.max(t)))
            });
    }

    fn read_gpus(&mut self, r: &mut Readings) {
        let Some(gpu) = &self.gpu else {
            return;
        };
        for i in 0..self.gpu_ranges_mw.len() as u32 {
            let reading = (|| {
                Ok::<_, crate::gpu::GpuError>(GpuTelemetry {
                    index: i,
                    power_w: f64::from(gpu.power_usage_mw(i)?) / 1000.0,
                    temp_c: f64::from(gpu.temperature_c(i)?),
                    limit_w: f64::from(gpu.power_limit_mw(i)?) / 1000.0,
                })
            })();
            match reading {
                Ok(g) => {
                    r.thermals.push(Thermal {
                        source: format!("gpu{i}"),
                        temp_c: g.temp_c,
                        limit_c: self.cfg.thermal.gpu_limit_c,
                    });
                    r.gpus.push(g);
                }
                Err(e) => debug!(gpu = i, error = %e, "GPU unreadable."),
            }
        }
    }

    /// Bring the hardware to `targets`: write what differs, re-apply values
    /// someone else changed since the last write, restore originals where a
    /// target is `None`. Every value is clamped to the hardware range.
    pub fn apply(&mut self, targets: &Targets) -> ApplyReport {
        let mut rep = ApplyReport::default();
        self.apply_cpu(targets.cpu_w, &mut rep);
        for i in 0..self.gpu_ranges_mw.len() {
            self.apply_gpu(i as u32, targets.gpu_w.get(i).copied().flatten(), &mut rep);
        }
        self.apply_vms(&targets.vm_cpu_cores, &mut rep);
        // A failing write (no root, a read-only attribute) fails every pass:
        // say so once per distinct error, then only at debug level.
        for e in &rep.errors {
            if self.reported_errors.insert(e.clone()) {
                warn!(error = %e, "Actuation failed; will keep trying.");
            } else {
                debug!(error = %e, "Actuation failed again.");
            }
        }
        rep
    }

    /// Write every original value back (clean exit, or a previous crash).
    pub fn restore(&mut self) -> ApplyReport {
        self.apply(&Targets::originals())
    }

    fn apply_cpu(&mut self, cpu_w: Option<f64>, rep: &mut ApplyReport) {
        let dry = self.dry_run;
        let model = self.power_model();
        let min_cap_w = self.cfg.cpu.min_cap_w;
        let max_w_cfg = self.cfg.cpu.max_w;
        match &self.cpu {
            CpuActuator::Rapl(zones) => {
                let n = zones.len() as f64;
                for (i, z) in zones.iter().enumerate() {
                    let original = self
                        .originals
                        .rapl_uw
                        .iter()
                        .find(|(id, _)| *id == z.id)
                        .map(|x| x.1);
                    let desired = cpu_w.map(|w| {
                        let hi = z.max_power_uw.unwrap_or((max_w_cfg / n * 1e6) as u64);
                        let lo = ((min_cap_w / n) * 1e6) as u64;
                        ((w / n * 1e6) as u64).clamp(lo.min(hi), hi)
                    });
                    let what = z.limit_path().display().to_string();
                    step(
                        &mut self.applied_cpu[i],
                        desired,
                        original,
                        dry,
                        &what,
                        || z.power_limit_uw(),
                        |v| z.set_power_limit_uw(v),
                        rep,
                    );
                }
            }
            CpuActuator::Cpufreq(policies) => {
                for (i, p) in policies.iter().enumerate() {
                    let orig = self
                        .originals
                        .cpufreq_khz
                        .iter()
                        .find(|(n, _, _)| *n == p.name);
                    let orig_min = orig.map_or(p.cpuinfo_min_khz, |o| o.1);
                    let desired = cpu_w.map(|w| model.max_khz_for(p, w));
                    let what = p.max_path().display().to_string();
                    step(
                        &mut self.applied_cpu[i],
                        desired,
                        orig.map(|o| o.2),
                        dry,
                        &what,
                        || p.scaling_max_khz(),
                        // Lower scaling_min_freq with the max when needed; back
                        // to the original min otherwise.
                        |max| p.set_limits(orig_min.min(max), max),
                        rep,
                    );
                }
            }
            CpuActuator::None => {}
        }
    }

    fn apply_gpu(&mut self, i: u32, w: Option<f64>, rep: &mut ApplyReport) {
        let Some(gpu) = self.gpu.clone() else {
            return;
        };
        let (min, max) = self.gpu_ranges_mw[i as usize];
        if max == 0 {
            return;
        }
        let original = self
            .originals
            .gpu_mw
            .iter()
            .find(|(idx, _)| *idx == i)
            .map(|x| u64::from(x.1));
        let desired = w.map(|w| ((w * 1000.0) as u64).clamp(u64::from(min), u64::from(max)));
        let what = format!("gpu{i} power limit");
        step(
            &mut self.applied_gpu[i as usize],
            desired,
            original,
            self.dry_run,
            &what,
            || {
                gpu.power_limit_mw(i)
                    .map(u64::from)
                    .map_err(|e| e.to_string())
            },
            |v| {
                gpu.set_power_limit_mw(i, v as u32)
                    .map_err(|e| e.to_string())
            },
            rep,
        );
    }
}

/// An error that can be shown in a report.
trait Shown {
    fn shown(self) -> String;
}
impl Shown for SysfsError {
    fn shown(self) -> String {
        self.to_string()
    }
}
impl Shown for String {
    fn shown(self) -> String {
        self
    }
}

/// What was last applied to one actuator: the value asked for and the value
/// read back (the driver may round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot<T> {
    desired: T,
    readback: Option<T>,
}

/// One actuator slot: hold `desired` (or go back to `original` when `None`),
/// re-applying when the value read differs from the one read back after the
/// last write (someone else changed it).
#[allow(clippy::too_many_arguments)]
fn step<T: Copy + PartialEq + fmt::Display + fmt::Debug, E: Shown>(
    applied: &mut Option<Slot<T>>,
    desired: Option<T>,
    original: Option<T>,
    dry_run: bool,
    what: &str,
    read: impl Fn() -> Result<T, E>,
    write: impl Fn(T) -> Result<(), E>,
    rep: &mut ApplyReport,
) {
    let target = match (desired, *applied) {
        (Some(d), _) => d,
        // Not capping and never touched: leave it alone.
        (None, None) => return,
        (None, Some(_)) => match original {
            Some(o) => o,
            None => {
                *applied = None;
                return;
            }
        },
    };
    if dry_run {
        if applied.map(|s| s.desired) != Some(target) {
            info!(file = what, value = %target, "Dry run: would write.");
            rep.writes += 1;
        }
        *applied = desired.map(|_| Slot {
            desired: target,
            readback: None,
        });
        return;
    }
    let current = match read() {
        Ok(v) => Some(v),
        Err(e) => {
            rep.errors.push(e.shown());
            None
        }
    };
    let same_target = applied.is_some_and(|s| s.desired == target);
    let last_readback = applied.and_then(|s| s.readback);
    let drifted = desired.is_some()
        && same_target
        && matches!((last_readback, current), (Some(rb), Some(cur)) if rb != cur);
    let settled = same_target && last_readback.is_some() && last_readback == current;
    if drifted {
        warn!(
            file = what,
            expected = ?last_readback,
            found = ?current,
            "Limit drifted; re-applying."
        );
        rep.drifted.push(what.to_owned());
    }
    if drifted || (!settled && current != Some(target)) {
        if let Err(e) = write(target) {
            rep.errors.push(e.shown());
            return;
        }
        rep.writes += 1;
        debug!(file = what, value = %target, "Limit written.");
    }
    *applied = desired.map(|_| Slot {
        desired: target,
        readback: read().ok(),
    });
}
