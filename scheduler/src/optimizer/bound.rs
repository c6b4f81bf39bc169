//! A proven lower bound on the optimal cost: an LP relaxation of DESIGN.md §2
//! over aggregated server classes, solved with clarabel.
//!
//! # The relaxation
//!
//! Servers are grouped into classes `g` of identical curve, cores, memory and
//! loop, and the same status (must stay off, must be on, free); within a
//! class the utilisation cap `u_g` and recovery `r_g` are the class maxima
//! and the off power lies between the class minimum and maximum. Per step `t`:
//!
//! - `y_g ∈ [lo_g, hi_g]` servers of the class are on (one value for the
//!   horizon, as in the model); `λ_{g,t,i} ≥ 0` over the curve points
//!   `(u_i, P_i)` with `u_i < u_g`, plus `(u_g, P(u_g))`, with
//!   `Σ_i λ_{g,t,i} = y_g` (the perspective of the convex hull of the curve);
//! - the class draws `Σ_i λ·P_i + O_g` W, where the off power
//!   `O_g ∈ [off_min·(n_g − y_g), off_max·(n_g − y_g)]`, and serves
//!   `C_g·Σ_i λ·u_i` cores;
//! - served cores equal the interactive load plus batch cores
//!   `Σ_k A_{k,t}`, batch VMs pooled by deadline window `k` with their
//!   summed vCPU caps and summed required/allowed work in the window;
//! - delivered heat `H_{ℓ,t} ≤ min(D, X)` and `≤ Σ_{g∈ℓ} r_g·P_{g,t}/1000`;
//! - on capacity covers all vCPUs (with overcommit) and all memory less the
//!   most that image sharing can save (`(n_i − 1)·b_i` per image);
//! - switches in a class are at least `|y_g − on_g|`;
//! - the VMs the servers host now bound the migrations: switching
//!   `n_g − y_g` servers of class `g` off migrates at least the sum `F_g` of
//!   the `n_g − y_g` smallest hosted counts of the class (convex and
//!   piecewise linear: the LP takes the maximum of its segment lines), and
//!   `Σ_g F_g` is at most the migration budget.
//!
//! The objective is energy cost − heat value + switch cost.
//!
//! # Why it is valid
//!
//! Take any feasible plan. Set `y_g` to its number of on servers in class
//! `g`; an on server at utilisation `u ≤ u_s ≤ u_g` has power `P(u)`, the
//! interpolation of its two neighbouring curve points (or of a point and
//! `(u_g, P(u_g))`, which lies on the same segment), so its `(u, P(u))` is a
//! combination of the class's points with weights summing to 1; summing over
//! the on servers gives `λ` with `Σ λ = y_g`. Off servers draw their own
//! `off_w`, within the class range. Served cores are exactly interactive plus
//! batch load; summing each batch VM's window constraints over its class
//! gives the pooled ones; recovered heat is at most `r_g` times power, and
//! delivered heat is the minimum of it, demand and intake. Capacity and
//! memory rules summed over on servers give the pooled ones (image sharing
//! saves at most `(n_i − 1)·b_i`). Each class's switches are at least the
//! change in its number of on servers. A server switched off migrates every
//! VM it hosts now, so `k` servers of a class switched off migrate at least
//! the `k` smallest hosted counts of the class, which every segment line of
//! `F_g` bounds from below at integer `k`; migrations are budgeted. Migration
//! costs are dropped (they are ≥ 0). So every feasible plan maps to an LP point of equal or lower
//! objective, and the LP optimum is ≤ the optimal cost.
//!
//! Numerically, the bound reported is the smaller of clarabel's primal and
//! dual objectives less a margin of `1e-6·(1 + |objective|)`, and only when
//! they agree to `1e-5` (a solved LP); otherwise no bound is reported.

use good_lp::solvers::clarabel::clarabel;
use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};

use crate::instance::Instance;
use crate::model::CURVE_POINTS;

/// A class of servers treated as one in the relaxation.
#[derive(Debug, Clone)]
struct Class {
    curve: [f64; CURVE_POINTS],
    cores: f64,
    mem_gib: f64,
    heat_loop: Option<usize>,
    /// 0 = must stay off, 1 = must be on, 2 = free.
    status: u8,
    u_max: f64,
    recovery: f64,
    off_min_w: f64,
    off_max_w: f64,
    n: f64,
    on_now: f64,
    /// VMs each server of the class hosts now, fewest first: switching `k`
    /// of them off migrates at least the `k` smallest counts.
    hosted: Vec<u32>,
}

fn classes(inst: &Instance<'_>) -> Vec<Class> {
    let snap = inst.snap;
    let mut pinned = vec![false; inst.n_servers()];
    let mut hosted = vec![0u32; inst.n_servers()];
    for (v, vm) in snap.vms.iter().enumerate() {
        if let Some(h) = inst.vm_host[v] {
            hosted[h] += 1;
            pinned[h] |= !vm.migratable;
        }
    }
    // Key: curve bits, cores, memory bits, loop, status, u_max bucket (tenths,
    // rounded up) — so hot servers do not share a class with cool ones — and
    // whether the server is on now (so switches are counted per server).
    type Key = (Vec<u64>, u32, u64, Option<usize>, u8, u32, bool);
    let mut keys: Vec<(Key, usize)> = Vec::with_capacity(inst.n_servers());
    for (s, srv) in snap.servers.iter().enumerate() {
        let status = match inst.u_max[s] {
            None => 0,
            Some(_) if !srv.can_switch && !srv.on => 0,
            Some(_) if (!srv.can_switch && srv.on) || pinned[s] => 1,
            Some(_) => 2,
        };
        let bucket = (inst.u_max[s].unwrap_or(0.0).min(1.0) * 10.0).ceil() as u32;
        let key = (
            srv.power_curve_w.iter().map(|p| p.to_bits()).collect(),
            srv.cores,
            srv.mem_gib.to_bits(),
            inst.server_loop[s],
            status,
            bucket,
            srv.on,
        );
        keys.push((key, s));
    }
    keys.sort();
    let mut out: Vec<Class> = Vec::new();
    let mut last: Option<&Key> = None;
    for (key, s) in &keys {
        let srv = &snap.servers[*s];
        let r = if inst.server_loop[*s].is_some() {
            srv.recovery
        } else {
            0.0
        };
        let u = inst.u_max[*s].unwrap_or(0.0).min(1.0);
        let on = if srv.on { 1.0 } else { 0.0 };
        match (last, out.last_mut()) {
            (Some(k), Some(c)) if k == key => {
                c.n += 1.0;
                c.on_now += on;
                c.u_max = c.u_max.max(u);
                c.recovery = c.recovery.max(r);
                c.off_min_w = c.off_min_w.min(srv.off_w);
                c.off_max_w = c.off_max_w.max(srv.off_w);
                c.hosted.push(hosted[*s]);
            }
            _ => out.push(Class {
                curve: *inst.curve[*s].points_w(),
                cores: f64::from(srv.cores),
                mem_gib: srv.mem_gib,
                heat_loop: inst.server_loop[*s],
                status: key.4,
                u_max: u,
                recovery: r,
                off_min_w: srv.off_w,
                off_max_w: srv.off_w,
                n: 1.0,
                on_now: on,
                hosted: vec![hosted[*s]],
            }),
        }
        last = Some(key);
    }
    for c in &mut out {
        c.hosted.sort_unstable();
    }
    out
}

/// Lines below the fewest migrations that switching `k` servers of a class
/// off forces, `F(k)` = the sum of the `k` smallest hosted counts
/// (`hosted`, ascending): `F` is convex, so the line through `(j, F(j))`
/// and `(j + 1, F(j + 1))` lies below it at every integer `k`. One line per
/// distinct count, as `(intercept, slope)`.
fn evacuation_lines(hosted: &[u32]) -> Vec<(f64, f64)> {
    let mut lines: Vec<(f64, f64)> = Vec::new();
    let mut sum = 0.0;
    for (j, &h) in hosted.iter().enumerate() {
        let slope = f64::from(h);
        if h > 0 && lines.last().is_none_or(|&(_, b)| b < slope) {
            lines.push((sum - slope * j as f64, slope));
        }
        sum += slope;
    }
    lines
}

/// The relaxation's optimum less a numerical margin, or `None` when the LP
/// could not be solved to agreement between its primal and dual.
pub fn lower_bound(inst: &Instance<'_>) -> Option<f64> {
    let snap = inst.snap;
    let nt = inst.steps();
    let step_h = inst.step_h();
    let classes = classes(inst);
    let mut vars = ProblemVariables::new();
    let mut objective = Expression::default();
    let mut constraints = Vec::new();

    // Pooled demand.
    let fixed_cores: f64 = inst.vm_fixed_cores.iter().sum();
    let vcpus: f64 = snap.vms.iter().map(|v| f64::from(v.vcpus)).sum();
    let mut mem: f64 = snap.vms.iter().map(|v| v.mem_gib).sum();
    let mut per_image = vec![0usize; snap.images.len()];
    for i in inst.vm_image.iter().flatten() {
        per_image[*i] += 1;
    }
    for (i, &n) in per_image.iter().enumerate() {
        if n > 0 {
            mem -= (n as f64 - 1.0) * snap.images[i].shared_mem_gib;
        }
    }

    // Servers.
    let mut served: Vec<Expression> = vec![Expression::default(); nt];
    let mut loop_power: Vec<Vec<Expression>> =
        vec![vec![Expression::default(); nt]; snap.loops.len()];
    let mut vcpu_cap = Expression::default();
    let mut mem_cap = Expression::default();
    let mut evacuations = Expression::default();
    for c in &classes {
        let (lo, hi) = match c.status {
            0 => (0.0, 0.0),
            1 => (c.n, c.n),
            _ => (0.0, c.n),
        };
        let y = vars.add(variable().min(lo).max(hi));
        let off = vars.add(variable().min(0.0));
        constraints.push((off - c.off_min_w * (c.n - y)).geq(0.0));
        constraints.push((off - c.off_max_w * (c.n - y)).leq(0.0));
        let sw = vars.add(variable().min(0.0));
        constraints.push((sw - (y - c.on_now)).geq(0.0));
        constraints.push((sw + (y - c.on_now)).geq(0.0));
        objective.add_mul(snap.policy.switch_cost, sw);
        vcpu_cap.add_mul(c.cores * snap.policy.cpu_overcommit, y);
        let lines = evacuation_lines(&c.hosted);
        if !lines.is_empty() {
            let evac = vars.add(variable().min(0.0));
            for (a, b) in lines {
                constraints.push((evac - b * (c.n - y)).geq(a));
            }
            evacuations.add_mul(1.0, evac);
        }
        mem_cap.add_mul(c.mem_gib, y);

        let mut points: Vec<(f64, f64)> = (0..CURVE_POINTS)
            .map(|i| (i as f64 / 10.0, c.curve[i]))
            .filter(|&(u, _)| u < c.u_max - 1e-12)
            .collect();
        let curve = crate::curve::PowerCurve::new(&c.curve)?;
        points.push((c.u_max, curve.power_w(c.u_max)));
        for t in 0..nt {
            let lambda: Vec<Variable> = points
                .iter()
                .map(|_| vars.add(variable().min(0.0)))
                .collect();
            let mut sum = Expression::default();
            let mut power = Expression::default();
            for (k, &(u, p)) in points.iter().enumerate() {
                sum.add_mul(1.0, lambda[k]);
                power.add_mul(p, lambda[k]);
                served[t].add_mul(c.cores * u, lambda[k]);
            }
            constraints.push((sum - y).eq(0.0));
            power.add_mul(1.0, off);
            let e_w = snap.electricity_price_per_kwh[t] * step_h / 1000.0;
            objective.add_mul(e_w, power.clone());
            if let Some(l) = c.heat_loop {
                loop_power[l][t].add_mul(c.recovery / 1000.0, power);
            }
        }
    }
    constraints.push(vcpu_cap.geq(vcpus));
    constraints.push(evacuations.leq(snap.policy.max_migrations as f64));
    constraints.push(mem_cap.geq(mem));

    // Batch work pooled by deadline window.
    for k in 0..=nt {
        let members: Vec<usize> = (0..inst.n_vms())
            .filter(|&v| inst.is_batch(v) && inst.batch_steps[v].min(nt) == k)
            .collect();
        if members.is_empty() {
            continue;
        }
        let cap: f64 = members.iter().map(|&v| f64::from(snap.vms[v].vcpus)).sum();
        let min: f64 = members.iter().map(|&v| inst.batch_min_core_h[v]).sum();
        let max: f64 = members.iter().map(|&v| inst.batch_max_core_h[v]).sum();
        let mut work = Expression::default();
        for (t, s) in served.iter_mut().enumerate() {
            let a = vars.add(variable().min(0.0).max(cap));
            *s -= a;
            if t < k {
                work.add_mul(step_h, a);
            }
        }
        if k > 0 {
            constraints.push(work.clone().geq(min));
            constraints.push(work.leq(max));
        }
    }
    for s in served {
        constraints.push(s.eq(fixed_cores));
    }

    // Heat.
    for (l, lp) in snap.loops.iter().enumerate() {
        for t in 0..nt {
            let cap = lp.demand_kw[t].min(lp.max_kw).max(0.0);
            let h = vars.add(variable().min(0.0).max(cap));
            constraints.push((h - loop_power[l][t].clone()).leq(0.0));
            objective.add_mul(-lp.heat_value_per_kwh * step_h, h);
        }
    }

    let mut problem = vars.minimise(objective).using(clarabel);
    for c in constraints {
        problem.add_constraint(c);
    }
    let sol = problem.solve().ok()?;
    let inner = sol.inner();
    let (p, d) = (inner.obj_val, inner.obj_val_dual);
    let scale = 1.0 + p.abs().max(d.abs());
    if !(p.is_finite() && d.is_finite()) || (p - d).abs() > 1e-5 * scale {
        return None;
    }
    Some(p.min(d) - 1e-6 * scale)
}

#[cfg(test)]
mod tests {
    use super::evacuation_lines;

    #[test]
    fn evacuation_lines_lie_below_the_fewest_migrations_and_touch_them() {
        let hosted = [0, 0, 1, 3, 3, 3, 7, 12];
        let lines = evacuation_lines(&hosted);
        assert_eq!(lines.len(), 4, "one line per distinct non-zero count");
        for k in 0..=hosted.len() {
            let fewest: u32 = hosted[..k].iter().sum();
            let most = lines
                .iter()
                .map(|&(a, b)| a + b * k as f64)
                .fold(0.0, f64::max);
            assert!(
                most <= f64::from(fewest) + 1e-12,
                "k = {k}: {most} > {fewest}"
            );
            assert!(
                (most - f64::from(fewest)).abs() < 1e-12,
                "k = {k}: the lines meet F({k}) = {fewest}, got {most}"
            );
        }
    }
}
