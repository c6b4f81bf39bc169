//! The baseline: what a site does without Phoenix.
//!
//! - No VM migrates; no server is switched off.
//! - Pending VMs, largest first (vCPUs, then memory), go to the emptiest
//!   server that is on and fits them (most free vCPUs; vCPUs, memory after
//!   image sharing, and interactive load under the temperature limit). Only
//!   when no server that is on fits one is an off server switched on for it
//!   — the emptiest switchable one that fits. That is what an operator does:
//!   use the machines that are running, and power one up only when a VM
//!   cannot be placed otherwise; nobody powers machines down or moves
//!   running VMs without a planner.
//! - Batch work runs as soon as possible at full speed (all its vCPUs),
//!   earliest deadline first on each server, slowed only where the server's
//!   temperature limit demands.
//!
//! The baseline does not repair what it never touches: when a rule cannot
//! be met by these habits (an interactive VM left on a server where it
//! breaks the temperature limit, a batch VM that misses its deadline at full
//! speed), [`decide`] returns [`PlanError::NoPlanFound`] saying that the
//! baseline cannot meet it (not a proof: the optimiser may still plan the
//! site; [`crate::solve`] asks the feasibility checks which it is) — the decisions it returns always pass
//! [`evaluate()`]. [`decide_evaluated`] returns that evaluation beside them,
//! for callers that need it (the baseline is evaluated once per plan).

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::error::PlanError;
use crate::evaluate::{self, evaluate, Decisions, Evaluation};
use crate::instance::{Instance, EPS};
use crate::model::Objective;

/// Name reported in plans.
pub const NAME: &str = "greedy";

/// Per-server bookkeeping while placing, with the server's limits beside
/// it (the placement scan reads nothing else).
struct Fill {
    /// vCPUs the server may host (cores × overcommit).
    vcpu_cap: f64,
    /// Installed memory, GiB.
    mem_gib: f64,
    vcpus: f64,
    mem: f64,
    fixed_cores: f64,
    /// Interactive load plus the average rate each batch VM needs to meet
    /// its deadline, cores: what the temperature limit must leave room for.
    reserved_cores: f64,
    /// Cores the server can run under its temperature limit; `None` if
    /// not even idle.
    cap_cores: Option<f64>,
    images: Vec<usize>,
}

/// Cores VM `v` needs on average: its interactive load, or for a batch VM
/// the rate that does its required work by its deadline.
fn cores_needed(inst: &Instance<'_>, v: usize) -> f64 {
    if inst.is_batch(v) {
        let steps = inst.batch_steps[v];
        if steps == 0 {
            0.0
        } else {
            inst.batch_min_core_h[v] / (steps as f64 * inst.step_h())
        }
    } else {
        inst.vm_fixed_cores[v]
    }
}

fn mem_needed(inst: &Instance<'_>, f: &Fill, v: usize) -> f64 {
    let vm = &inst.snap.vms[v];
    match inst.vm_image[v] {
        Some(i) if f.images.contains(&i) => vm.mem_gib - inst.snap.images[i].shared_mem_gib,
        _ => vm.mem_gib,
    }
}

/// An integer that orders like `x` under [`f64::total_cmp`].
fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// Cores server `s` can run without exceeding its temperature limit — the
/// exact limit, not the evaluator's tolerance; `None` if not even idle.
fn thermal_cap_cores(inst: &Instance<'_>, s: usize) -> Option<f64> {
    let u = inst.curve[s].max_util_within(inst.p_max_w[s])?;
    Some(u * f64::from(inst.snap.servers[s].cores))
}

/// What a pending VM asks of a server, worked out once for the scan over
/// the servers.
struct Need {
    vcpus: f64,
    mem_gib: f64,
    /// Its image and the memory a server that has it already holds, GiB.
    image: Option<(usize, f64)>,
    cores: f64,
}

impl Need {
    fn of(inst: &Instance<'_>, v: usize) -> Self {
        let vm = &inst.snap.vms[v];
        Self {
            vcpus: f64::from(vm.vcpus),
            mem_gib: vm.mem_gib,
            image: inst.vm_image[v].map(|i| (i, inst.snap.images[i].shared_mem_gib)),
            cores: cores_needed(inst, v),
        }
    }

    /// Memory on a server filled as `f` ([`mem_needed`]).
    fn mem(&self, f: &Fill) -> f64 {
        match self.image {
            Some((i, shared)) if f.images.contains(&i) => self.mem_gib - shared,
            _ => self.mem_gib,
        }
    }
}

fn fits(f: &Fill, need: &Need) -> bool {
    let Some(cap) = f.cap_cores else {
        return false;
    };
    f.vcpus + need.vcpus <= f.vcpu_cap + EPS
        && f.mem + need.mem(f) <= f.mem_gib + EPS
        && f.reserved_cores + need.cores <= cap + EPS
}

fn add(inst: &Instance<'_>, f: &mut Fill, v: usize) {
    f.mem += mem_needed(inst, f, v);
    f.vcpus += f64::from(inst.snap.vms[v].vcpus);
    f.fixed_cores += inst.vm_fixed_cores[v];
    f.reserved_cores += cores_needed(inst, v);
    if let Some(i) = inst.vm_image[v] {
        if !f.images.contains(&i) {
            f.images.push(i);
        }
    }
}

/// Build the baseline decisions.
pub fn decide(inst: &Instance<'_>) -> Result<Decisions, PlanError> {
    decide_costed(inst).map(|(d, _)| d)
}

/// The baseline decisions and their evaluation: [`decide`] without
/// evaluating them again.
pub fn decide_evaluated(inst: &Instance<'_>) -> Result<(Decisions, Evaluation), PlanError> {
    let d = build(inst)?;
    let ev = evaluate(inst, &d);
    refuse_broken(&ev.violations)?;
    Ok((d, ev))
}

/// The baseline decisions and their cost, checked as [`decide`] checks
/// them, without laying out their power and heat: for callers that only
/// compare costs (the optimiser's safeguard).
pub(crate) fn decide_costed(inst: &Instance<'_>) -> Result<(Decisions, Objective), PlanError> {
    let d = build(inst)?;
    let (objective, violations) = evaluate::check(inst, &d);
    refuse_broken(&violations)?;
    Ok((d, objective))
}

/// The baseline's habits cannot repair what they break: say which rules.
fn refuse_broken(violations: &[String]) -> Result<(), PlanError> {
    if violations.is_empty() {
        return Ok(());
    }
    Err(PlanError::no_plan(
        "the greedy baseline's plan",
        format!(
            "the greedy baseline (no migrations, no switching off, batch as soon as possible) \
             cannot meet: {}",
            violations.join("; ")
        ),
    ))
}

/// The baseline decisions, not yet checked against the model.
fn build(inst: &Instance<'_>) -> Result<Decisions, PlanError> {
    let snap = inst.snap;
    let ns = inst.n_servers();
    let nv = inst.n_vms();
    let nt = inst.steps();
    let mut on: Vec<bool> = snap.servers.iter().map(|s| s.on).collect();
    let mut fill: Vec<Fill> = (0..ns)
        .map(|s| Fill {
            vcpu_cap: f64::from(snap.servers[s].cores) * snap.policy.cpu_overcommit,
            mem_gib: snap.servers[s].mem_gib,
            vcpus: 0.0,
            mem: 0.0,
            fixed_cores: 0.0,
            reserved_cores: 0.0,
            cap_cores: thermal_cap_cores(inst, s),
            images: Vec::new(),
        })
        .collect();
    let mut host = vec![usize::MAX; nv];
    for v in 0..nv {
        if let Some(s) = inst.vm_host[v] {
            host[v] = s;
            add(inst, &mut fill[s], v);
        }
    }
    check_current_hosts(inst, &on, &fill)?;

    let mut pending: Vec<usize> = (0..nv).filter(|&v| inst.vm_host[v].is_none()).collect();
    pending.sort_by(|&a, &b| {
        let (va, vb) = (&snap.vms[a], &snap.vms[b]);
        vb.vcpus
            .cmp(&va.vcpus)
            .then(vb.mem_gib.total_cmp(&va.mem_gib))
            .then(va.id.cmp(&vb.id))
    });
    // Servers that are on, and off ones that may be switched on, each
    // ordered emptiest first (most free vCPUs, then lowest index).
    let free = |fill: &[Fill], s: usize| fill[s].vcpu_cap - fill[s].vcpus;
    let key = |fill: &[Fill], s: usize| (Reverse(total_order_key(free(fill, s))), s);
    let mut on_by_free: BTreeSet<(Reverse<i64>, usize)> =
        (0..ns).filter(|&s| on[s]).map(|s| key(&fill, s)).collect();
    let mut off_by_free: BTreeSet<(Reverse<i64>, usize)> = (0..ns)
        .filter(|&s| !on[s] && snap.servers[s].can_switch)
        .map(|s| key(&fill, s))
        .collect();
    for v in pending {
        let need = Need::of(inst, v);
        // The emptiest server that fits: the first that fits in order,
        // stopping where too few vCPUs are free.
        let first_fit = |set: &BTreeSet<(Reverse<i64>, usize)>| {
            set.iter()
                .map(|&(_, s)| s)
                .take_while(|&s| free(&fill, s) + EPS >= need.vcpus)
                .find(|&s| fits(&fill[s], &need))
        };
        let (s, was_off) = match first_fit(&on_by_free) {
            Some(s) => (s, false),
            None => match first_fit(&off_by_free) {
                Some(s) => (s, true),
                None => {
                    let vm = &snap.vms[v];
                    return Err(PlanError::no_plan(
                        format!("vm {}", vm.id),
                        format!(
                            "the greedy baseline cannot place pending vm {} ({} vCPUs, {} GiB): it fits no \
                             server beside the VMs already there, and the baseline never migrates",
                            vm.id, vm.vcpus, vm.mem_gib
                        ),
                    ));
                }
            },
        };
        let old = key(&fill, s);
        if was_off {
            off_by_free.remove(&old);
        } else {
            on_by_free.remove(&old);
        }
        on[s] = true;
        add(inst, &mut fill[s], v);
        host[v] = s;
        on_by_free.insert(key(&fill, s));
    }

    // Batch work: as soon as possible, at full speed, per server.
    let mut batch_cores: Vec<Vec<f64>> = (0..nv)
        .map(|v| {
            if inst.is_batch(v) {
                vec![0.0; nt]
            } else {
                Vec::new()
            }
        })
        .collect();
    // Batch VMs by server, each server's in the order `run_batch` serves
    // them (deadline, then id).
    let mut batch: Vec<usize> = (0..nv).filter(|&v| inst.is_batch(v)).collect();
    batch.sort_by(|&a, &b| {
        host[a]
            .cmp(&host[b])
            .then(snap.vms[a].deadline.cmp(&snap.vms[b].deadline))
            .then(snap.vms[a].id.cmp(&snap.vms[b].id))
    });
    let mut scratch = BatchScratch::default();
    for vms in batch.chunk_by(|&a, &b| host[a] == host[b]) {
        let s = host[vms[0]];
        let cap = fill[s].cap_cores.unwrap_or(0.0);
        run_batch(
            inst,
            vms,
            cap - fill[s].fixed_cores,
            &mut batch_cores,
            &mut scratch,
        );
    }
    Ok(Decisions {
        host,
        on,
        batch_cores,
    })
}

/// Per-VM work left while [`run_batch`] schedules one server, kept from
/// one server to the next.
#[derive(Default)]
struct BatchScratch {
    left: Vec<f64>,
    left_required: Vec<f64>,
    grant: Vec<f64>,
}

/// Schedule the batch VMs `vms` of one server, in order of deadline then
/// id, as soon as possible. Each
/// step, the cores the temperature limit leaves beside the interactive load
/// (`batch_room`) are shared as a batch system with guaranteed shares
/// does: first every VM gets the pace that finishes its required work by its
/// deadline (remaining work spread over its remaining steps), then what is
/// left goes earliest deadline first, each VM up to full speed (all its
/// vCPUs) until its remaining work is done. Nothing is held back: the only
/// slowing is the temperature limit's.
fn run_batch(
    inst: &Instance<'_>,
    vms: &[usize],
    batch_room: f64,
    batch_cores: &mut [Vec<f64>],
    scratch: &mut BatchScratch,
) {
    let snap = inst.snap;
    let step_h = inst.step_h();
    let BatchScratch {
        left,
        left_required,
        grant,
    } = scratch;
    left.clear();
    left.extend(vms.iter().map(|&v| inst.batch_max_core_h[v]));
    left_required.clear();
    left_required.extend(vms.iter().map(|&v| inst.batch_min_core_h[v]));
    grant.clear();
    grant.resize(vms.len(), 0.0);
    for t in 0..inst.steps() {
        let mut headroom = batch_room.max(0.0);
        let full_speed =
            |k: usize, v: usize, left: &[f64]| (left[k] / step_h).min(f64::from(snap.vms[v].vcpus));
        for (k, &v) in vms.iter().enumerate() {
            let steps_left = inst.batch_steps[v].saturating_sub(t);
            let pace = if steps_left == 0 {
                0.0
            } else {
                left_required[k] / (steps_left as f64 * step_h)
            };
            grant[k] = pace.min(full_speed(k, v, left)).min(headroom).max(0.0);
            headroom -= grant[k];
        }
        for (k, &v) in vms.iter().enumerate() {
            let more = (full_speed(k, v, left) - grant[k]).min(headroom).max(0.0);
            grant[k] += more;
            headroom -= more;
        }
        for (k, &v) in vms.iter().enumerate() {
            batch_cores[v][t] = grant[k];
            left[k] -= grant[k] * step_h;
            if t < inst.batch_steps[v] {
                left_required[k] = (left_required[k] - grant[k] * step_h).max(0.0);
            }
        }
    }
}

/// The baseline keeps every VM where it is: a server whose current VMs
/// break a rule stays broken. Say so, naming the server and the numbers.
fn check_current_hosts(inst: &Instance<'_>, on: &[bool], fill: &[Fill]) -> Result<(), PlanError> {
    let snap = inst.snap;
    for (s, f) in fill.iter().enumerate() {
        if f.vcpus == 0.0 {
            continue;
        }
        let srv = &snap.servers[s];
        let cores = f64::from(srv.cores);
        let why = if !on[s] {
            "it hosts VMs but is off".to_string()
        } else if f.vcpus > cores * snap.policy.cpu_overcommit + EPS {
            format!(
                "its VMs have {} vCPUs, more than {} cores × overcommit {}",
                f.vcpus, srv.cores, snap.policy.cpu_overcommit
            )
        } else if f.mem > srv.mem_gib + EPS {
            format!(
                "its VMs need {:.2} GiB (after image sharing), more than its {} GiB",
                f.mem, srv.mem_gib
            )
        } else {
            match inst.u_max[s] {
                None => format!(
                    "it hosts VMs but its idle power {} W already breaks its temperature limit {} °C",
                    inst.curve[s].idle_w(),
                    srv.temp_limit_c
                ),
                Some(u) if f.fixed_cores > u * cores + EPS => format!(
                    "its interactive VMs run {:.2} cores, more than the {:.2} it can run under its temperature limit {} °C",
                    f.fixed_cores,
                    u * cores,
                    srv.temp_limit_c
                ),
                Some(_) => continue,
            }
        };
        return Err(PlanError::no_plan(
            format!("server {}", srv.id),
            format!(
                "the greedy baseline cannot meet the rules on server {}: {why}, and the baseline never migrates",
                srv.id
            ),
        ));
    }
    Ok(())
}
