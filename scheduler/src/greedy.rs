//! The baseline: what a site does without Phoenix.
//!
//! - No VM migrates; no server is switched off.
//! - Pending VMs, largest first (vCPUs, then memory), go to the emptiest
//!   server that is on and fits them (most free vCPUs). Only when no server
//!   that is on fits one is an off server switched on for it — as an
//!   operator would.
//! - Batch work runs as soon as possible at full speed, earliest deadline
//!   first, slowed only where the server's temperature limit demands.

use crate::error::PlanError;
use crate::evaluate::Decisions;
use crate::instance::{Instance, EPS};

/// Name reported in plans.
pub const NAME: &str = "greedy";

/// Per-server bookkeeping while placing.
struct Fill {
    vcpus: f64,
    mem: f64,
    fixed_cores: f64,
    images: Vec<usize>,
}

fn mem_needed(inst: &Instance<'_>, f: &Fill, v: usize) -> f64 {
    let vm = &inst.snap.vms[v];
    match inst.vm_image[v] {
        Some(i) if f.images.contains(&i) => vm.mem_gib - inst.snap.images[i].shared_mem_gib,
        _ => vm.mem_gib,
    }
}

fn fits(inst: &Instance<'_>, s: usize, f: &Fill, v: usize) -> bool {
    let srv = &inst.snap.servers[s];
    let vm = &inst.snap.vms[v];
    let Some(u_max) = inst.u_max[s] else {
        return false;
    };
    let cores = f64::from(srv.cores);
    f.vcpus + f64::from(vm.vcpus) <= cores * inst.snap.policy.cpu_overcommit + EPS
        && f.mem + mem_needed(inst, f, v) <= srv.mem_gib + EPS
        && f.fixed_cores + inst.vm_fixed_cores[v] <= u_max * cores + EPS
}

fn add(inst: &Instance<'_>, f: &mut Fill, v: usize) {
    f.mem += mem_needed(inst, f, v);
    f.vcpus += f64::from(inst.snap.vms[v].vcpus);
    f.fixed_cores += inst.vm_fixed_cores[v];
    if let Some(i) = inst.vm_image[v] {
        if !f.images.contains(&i) {
            f.images.push(i);
        }
    }
}

/// Build the baseline decisions.
pub fn decide(inst: &Instance<'_>) -> Result<Decisions, PlanError> {
    let snap = inst.snap;
    let ns = inst.n_servers();
    let nv = inst.n_vms();
    let nt = inst.steps();
    let mut on: Vec<bool> = snap.servers.iter().map(|s| s.on).collect();
    let mut fill: Vec<Fill> = (0..ns)
        .map(|_| Fill {
            vcpus: 0.0,
            mem: 0.0,
            fixed_cores: 0.0,
            images: Vec::new(),
        })
        .collect();
    let mut host = vec![usize::MAX; nv];
    for v in 0..nv {
        if let Some(s) = inst.vm_host[v] {
            host[v] = s;
            add(inst, &mut fill[s], v);
            on[s] = true;
        }
    }

    let mut pending: Vec<usize> = (0..nv).filter(|&v| inst.vm_host[v].is_none()).collect();
    pending.sort_by(|&a, &b| {
        let (va, vb) = (&snap.vms[a], &snap.vms[b]);
        vb.vcpus
            .cmp(&va.vcpus)
            .then(vb.mem_gib.total_cmp(&va.mem_gib))
            .then(va.id.cmp(&vb.id))
    });
    for v in pending {
        let free = |s: usize| {
            f64::from(snap.servers[s].cores) * snap.policy.cpu_overcommit - fill[s].vcpus
        };
        let best_on = (0..ns)
            .filter(|&s| on[s] && fits(inst, s, &fill[s], v))
            .max_by(|&a, &b| free(a).total_cmp(&free(b)).then(b.cmp(&a)));
        let chosen = best_on.or_else(|| {
            (0..ns)
                .filter(|&s| !on[s] && snap.servers[s].can_switch && fits(inst, s, &fill[s], v))
                .max_by(|&a, &b| free(a).total_cmp(&free(b)).then(b.cmp(&a)))
        });
        let Some(s) = chosen else {
            let vm = &snap.vms[v];
            return Err(PlanError::infeasible(format!(
                "greedy: vm {} ({} vCPUs, {} GiB) fits no server",
                vm.id, vm.vcpus, vm.mem_gib
            )));
        };
        on[s] = true;
        add(inst, &mut fill[s], v);
        host[v] = s;
    }

    // Batch work: as soon as possible, earliest deadline first per server.
    let mut batch_cores: Vec<Vec<f64>> = (0..nv)
        .map(|v| {
            if inst.is_batch(v) {
                vec![0.0; nt]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut by_server: Vec<Vec<usize>> = vec![Vec::new(); ns];
    for v in (0..nv).filter(|&v| inst.is_batch(v)) {
        by_server[host[v]].push(v);
    }
    let step_h = inst.step_h();
    for (s, vms) in by_server.iter_mut().enumerate() {
        if vms.is_empty() {
            continue;
        }
        vms.sort_by(|&a, &b| {
            snap.vms[a]
                .deadline
                .cmp(&snap.vms[b].deadline)
                .then(snap.vms[a].id.cmp(&snap.vms[b].id))
        });
        let cores = f64::from(snap.servers[s].cores);
        let cap = inst.u_max[s].unwrap_or(0.0) * cores;
        let mut left: Vec<f64> = vms.iter().map(|&v| inst.batch_max_core_h[v]).collect();
        for t in 0..nt {
            let mut headroom = (cap - fill[s].fixed_cores).max(0.0);
            for (k, &v) in vms.iter().enumerate() {
                let want = (left[k] / step_h).min(f64::from(snap.vms[v].vcpus));
                let grant = want.min(headroom).max(0.0);
                batch_cores[v][t] = grant;
                headroom -= grant;
                left[k] -= grant * step_h;
            }
        }
    }
    Ok(Decisions {
        host,
        on,
        batch_cores,
    })
}
