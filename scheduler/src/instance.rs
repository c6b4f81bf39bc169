//! A snapshot resolved into indices and derived limits, the form every solver
//! and the evaluator work on.
//!
//! Derived here, once:
//! - the temperature rule `T_in + R·P(u) ≤ T_lim` turned into a power limit
//!   and a utilisation cap per server (`u_max`), since P is non-decreasing;
//! - for each batch VM, the steps that end at or before its deadline and the
//!   minimum work of the horizon, `W·min(1, horizon_s/(deadline − now))`.
//!
//! Ids are resolved through [`IdIndex`] maps keyed by the snapshot's own
//! strings (no id is copied) with FxHash, not SipHash: the simulator builds an
//! instance per plan, tens of thousands of times a year, and the ids are its
//! own, not an attacker's. The VM map, which no solver needs, is built only
//! when asked for ([`Instance::vm_index`]).

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use crate::curve::PowerCurve;
use crate::error::PlanError;
use crate::model::{Snapshot, VmKind};

/// Relative tolerance used by feasibility checks.
pub const EPS: f64 = 1e-6;

/// Index of each id in one of a snapshot's lists.
pub type IdIndex<'a> = HashMap<&'a str, usize, FxBuildHasher>;

/// `ids` (in list order) mapped to their indices; a repeated id keeps its
/// last index.
fn index_of<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> IdIndex<'a> {
    let mut map = IdIndex::with_capacity_and_hasher(ids.len(), FxBuildHasher);
    for (i, id) in ids.enumerate() {
        map.insert(id, i);
    }
    map
}

/// A snapshot with ids resolved to indices.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// The snapshot itself.
    pub snap: &'a Snapshot,
    /// Power curve of each server.
    pub curve: Vec<PowerCurve>,
    /// Loop index of each server.
    pub server_loop: Vec<Option<usize>>,
    /// Highest power each server may draw under its temperature limit, W.
    pub p_max_w: Vec<f64>,
    /// Highest utilisation each server may run at; `None` when even idle
    /// power breaks the temperature limit (the server can only be off).
    pub u_max: Vec<Option<f64>>,
    /// Image index of each VM.
    pub vm_image: Vec<Option<usize>>,
    /// Current host index of each VM (`None` = pending).
    pub vm_host: Vec<Option<usize>>,
    /// Interactive load of each VM in cores (`vcpus·load`); 0 for batch.
    pub vm_fixed_cores: Vec<f64>,
    /// For batch VMs: how many leading steps end at or before the deadline.
    pub batch_steps: Vec<usize>,
    /// For batch VMs: the least work the horizon must do, core-hours.
    pub batch_min_core_h: Vec<f64>,
    /// For batch VMs: the most work that counts (the remaining work), core-hours.
    pub batch_max_core_h: Vec<f64>,
    /// Index of each server id.
    pub server_index: IdIndex<'a>,
}

impl<'a> Instance<'a> {
    /// Resolve a (validated) snapshot.
    pub fn new(snap: &'a Snapshot) -> Result<Self, PlanError> {
        let server_index = index_of(snap.servers.iter().map(|s| s.id.as_str()));
        let loop_index = index_of(snap.loops.iter().map(|l| l.id.as_str()));
        let image_index = index_of(snap.images.iter().map(|im| im.id.as_str()));

        let mut curve = Vec::with_capacity(snap.servers.len());
        let mut server_loop = Vec::with_capacity(snap.servers.len());
        let mut p_max_w = Vec::with_capacity(snap.servers.len());
        let mut u_max = Vec::with_capacity(snap.servers.len());
        for (i, s) in snap.servers.iter().enumerate() {
            let c = PowerCurve::new(&s.power_curve_w).ok_or_else(|| {
                PlanError::invalid(
                    format!("servers[{i}].power_curve_w"),
                    format!(
                        "needs {} points, got {}",
                        crate::model::CURVE_POINTS,
                        s.power_curve_w.len()
                    ),
                )
            })?;
            let limit = if s.r_k_per_w > 0.0 {
                (s.temp_limit_c - s.inlet_c) / s.r_k_per_w
            } else {
                f64::INFINITY
            };
            curve.push(c);
            p_max_w.push(limit);
            u_max.push(c.max_util_within(limit * (1.0 + EPS)));
            server_loop.push(match &s.heat_loop {
                None => None,
                Some(l) => Some(*loop_index.get(l.as_str()).ok_or_else(|| {
                    PlanError::invalid(format!("servers[{i}].loop"), format!("unknown loop `{l}`"))
                })?),
            });
        }

        let horizon_s = snap.step_s * snap.steps as f64;
        let n = snap.vms.len();
        let mut vm_image = Vec::with_capacity(n);
        let mut vm_host = Vec::with_capacity(n);
        let mut vm_fixed_cores = Vec::with_capacity(n);
        let mut batch_steps = Vec::with_capacity(n);
        let mut batch_min_core_h = Vec::with_capacity(n);
        let mut batch_max_core_h = Vec::with_capacity(n);
        for (i, v) in snap.vms.iter().enumerate() {
            vm_image.push(match &v.image {
                None => None,
                // An image without a shared-memory entry shares nothing.
                Some(im) => image_index.get(im.as_str()).copied(),
            });
            vm_host.push(match &v.host {
                None => None,
                Some(h) => Some(*server_index.get(h.as_str()).ok_or_else(|| {
                    PlanError::invalid(format!("vms[{i}].host"), format!("unknown server `{h}`"))
                })?),
            });
            match v.kind {
                VmKind::Interactive => {
                    vm_fixed_cores.push(f64::from(v.vcpus) * v.load.unwrap_or(0.0));
                    batch_steps.push(0);
                    batch_min_core_h.push(0.0);
                    batch_max_core_h.push(0.0);
                }
                VmKind::Batch => {
                    vm_fixed_cores.push(0.0);
                    let work = v.work_core_h.unwrap_or(0.0);
                    let until_s = v
                        .deadline
                        .map(|d| (d - snap.time).num_milliseconds() as f64 / 1000.0)
                        .unwrap_or(f64::INFINITY);
                    let steps_in = if until_s.is_finite() {
                        ((until_s / snap.step_s + EPS).floor().max(0.0) as usize).min(snap.steps)
                    } else {
                        snap.steps
                    };
                    let share = if until_s <= horizon_s {
                        1.0
                    } else {
                        (horizon_s / until_s).min(1.0)
                    };
                    batch_steps.push(steps_in);
                    // A deadline already passed: no step counts, so nothing is
                    // required either (the miss is the caller's to report).
                    batch_min_core_h.push(if steps_in == 0 { 0.0 } else { work * share });
                    batch_max_core_h.push(work);
                }
            }
        }

        Ok(Self {
            snap,
            curve,
            server_loop,
            p_max_w,
            u_max,
            vm_image,
            vm_host,
            vm_fixed_cores,
            batch_steps,
            batch_min_core_h,
            batch_max_core_h,
            server_index,
        })
    }

    /// Index of each VM id, built on each call (keep it where it is used
    /// more than once): no solver needs it, so [`Instance::new`] does not
    /// pay for it.
    pub fn vm_index(&self) -> IdIndex<'a> {
        index_of(self.snap.vms.iter().map(|v| v.id.as_str()))
    }

    /// Number of servers.
    pub fn n_servers(&self) -> usize {
        self.snap.servers.len()
    }

    /// Number of VMs.
    pub fn n_vms(&self) -> usize {
        self.snap.vms.len()
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.snap.steps
    }

    /// Hours per step.
    pub fn step_h(&self) -> f64 {
        self.snap.step_s / 3600.0
    }

    /// Whether VM `v` is a batch VM.
    pub fn is_batch(&self, v: usize) -> bool {
        self.snap.vms[v].kind == VmKind::Batch
    }
}
