//! The single source of truth for what a plan means: given a snapshot and the
//! decisions (hosts, on/off, batch cores per step), compute power, heat and
//! the exact cost of DESIGN.md §2 with the exact interpolated curves, and list
//! every hard rule the decisions break.
//!
//! Every solver's output goes through [`evaluate`] before it is returned, so
//! the reported objective is always the true cost of the returned plan. It
//! runs at least once per plan (the simulator plans tens of thousands of
//! times), so its [`Evaluation`] keeps power, utilisation and heat in flat
//! [`Grid`]s, one allocation each.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Index, IndexMut};

use crate::instance::{Instance, EPS};
use crate::model::{Migration, Objective, Plan, PLAN_SCHEMA};

/// The decisions of a plan, by index.
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    /// Host (server index) of each VM.
    pub host: Vec<usize>,
    /// On/off state of each server.
    pub on: Vec<bool>,
    /// Cores granted to each VM at each step (batch VMs; interactive VMs
    /// have an empty vector).
    pub batch_cores: Vec<Vec<f64>>,
}

/// A value per row (a server, a loop) and step, kept in one row-major
/// vector: `grid[r]` is row `r` as a slice, `grid[r][t]` its value at step
/// `t`. Its `Debug` form is that of a vector of rows.
#[derive(Clone, PartialEq, Default)]
pub struct Grid {
    rows: usize,
    steps: usize,
    values: Vec<f64>,
}

impl Grid {
    /// `rows` rows of `steps` zeros.
    pub fn zeros(rows: usize, steps: usize) -> Self {
        Self {
            rows,
            steps,
            values: vec![0.0; rows * steps],
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of steps (the length of each row).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The rows in order.
    pub fn iter(&self) -> Rows<'_> {
        Rows {
            grid: self,
            next: 0,
        }
    }

    /// Every value, row after row.
    pub fn as_flat(&self) -> &[f64] {
        &self.values
    }
}

impl Index<usize> for Grid {
    type Output = [f64];
    fn index(&self, r: usize) -> &[f64] {
        assert!(r < self.rows, "row {r} of a grid of {} rows", self.rows);
        &self.values[r * self.steps..(r + 1) * self.steps]
    }
}

impl IndexMut<usize> for Grid {
    fn index_mut(&mut self, r: usize) -> &mut [f64] {
        assert!(r < self.rows, "row {r} of a grid of {} rows", self.rows);
        &mut self.values[r * self.steps..(r + 1) * self.steps]
    }
}

impl<'a> IntoIterator for &'a Grid {
    type Item = &'a [f64];
    type IntoIter = Rows<'a>;
    fn into_iter(self) -> Rows<'a> {
        self.iter()
    }
}

/// The rows of a [`Grid`], in order.
#[derive(Debug, Clone)]
pub struct Rows<'a> {
    grid: &'a Grid,
    next: usize,
}

impl<'a> Iterator for Rows<'a> {
    type Item = &'a [f64];
    fn next(&mut self) -> Option<&'a [f64]> {
        let r = self.next;
        (r < self.grid.rows).then(|| {
            self.next += 1;
            &self.grid[r]
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.grid.rows - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Rows<'_> {}

impl fmt::Debug for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What the decisions cost and which rules they break.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Power of each server (row) at each step, W.
    pub power_w: Grid,
    /// Utilisation of each server (row) at each step.
    pub util: Grid,
    /// Heat delivered by each loop (row) at each step, kW.
    pub heat_kw: Grid,
    /// Cost breakdown.
    pub objective: Objective,
    /// Hard rules broken, in words; empty for a feasible plan.
    pub violations: Vec<String>,
}

impl Evaluation {
    /// Whether every hard rule holds.
    pub fn is_feasible(&self) -> bool {
        self.violations.is_empty()
    }
}

fn le(a: f64, b: f64) -> bool {
    a <= b + EPS * (1.0 + b.abs())
}

/// Evaluate `d` on `inst`.
pub fn evaluate(inst: &Instance<'_>, d: &Decisions) -> Evaluation {
    if let Some(why) = wrong_shape(inst, d) {
        return Evaluation {
            power_w: Grid::default(),
            util: Grid::default(),
            heat_kw: Grid::default(),
            objective: Objective::default(),
            violations: vec![why],
        };
    }
    let (ns, nt, nl) = (inst.n_servers(), inst.steps(), inst.snap.loops.len());
    let mut power_w = Grid::zeros(ns, nt);
    let mut util = Grid::zeros(ns, nt);
    let mut heat_kw = Grid::zeros(nl, nt);
    let (objective, violations) = run(
        inst,
        d,
        &mut power_w.values,
        Some((&mut util.values, &mut heat_kw.values)),
    );
    Evaluation {
        power_w,
        util,
        heat_kw,
        objective,
        violations,
    }
}

/// The cost of `d` and the hard rules it breaks, exactly as [`evaluate`]
/// finds them (the same numbers, the same messages), without laying out
/// power, utilisation and heat per server and loop: for callers that only
/// compare plans or check one.
pub(crate) fn check(inst: &Instance<'_>, d: &Decisions) -> (Objective, Vec<String>) {
    if let Some(why) = wrong_shape(inst, d) {
        return (Objective::default(), vec![why]);
    }
    let mut power_w = vec![0.0_f64; inst.n_servers() * inst.steps()];
    run(inst, d, &mut power_w, None)
}

fn wrong_shape(inst: &Instance<'_>, d: &Decisions) -> Option<String> {
    let (ns, nv) = (inst.n_servers(), inst.n_vms());
    (d.host.len() != nv || d.on.len() != ns || d.batch_cores.len() != nv).then(|| {
        format!(
            "decision vectors have the wrong length ({} hosts for {nv} VMs, {} states for {ns} servers)",
            d.host.len(),
            d.on.len()
        )
    })
}

/// Take off each server's memory what its VMs of one image share: the
/// image's shared memory (`shared_gib(image)`) is held once per server, not
/// once per VM. `images` holds the (server, image) of each VM that has one.
/// Server by server, image by image in index order, as the sums are rounded
/// — the VMs bucketed by server first, so only each server's few are sorted.
fn share_images(mem: &mut [f64], images: &[(usize, usize)], shared_gib: impl Fn(usize) -> f64) {
    if images.is_empty() {
        return;
    }
    let ns = mem.len();
    // Where each server's images start in `by_server`.
    let mut start = vec![0usize; ns + 1];
    for &(s, _) in images {
        start[s + 1] += 1;
    }
    for s in 0..ns {
        start[s + 1] += start[s];
    }
    let mut next = start.clone();
    let mut by_server = vec![0usize; images.len()];
    for &(s, i) in images {
        by_server[next[s]] = i;
        next[s] += 1;
    }
    for (s, m) in mem.iter_mut().enumerate() {
        let on_server = &mut by_server[start[s]..start[s + 1]];
        on_server.sort_unstable();
        for run in on_server.chunk_by(|a, b| a == b) {
            *m -= (run.len() as f64 - 1.0) * shared_gib(run[0]);
        }
    }
}

/// The evaluation proper, on decisions of the right shape: power of each
/// server at each step into `power_w` (flat, server-major, zeroed),
/// utilisation and loop heat into `grids` when given (likewise), the cost
/// and the broken rules returned.
fn run(
    inst: &Instance<'_>,
    d: &Decisions,
    power_w: &mut [f64],
    mut grids: Option<(&mut [f64], &mut [f64])>,
) -> (Objective, Vec<String>) {
    let snap = inst.snap;
    let ns = inst.n_servers();
    let nv = inst.n_vms();
    let nt = inst.steps();
    let step_h = inst.step_h();
    let mut violations = Vec::new();

    // Load per server and step (flat, server-major: one allocation), vCPUs
    // and memory per server.
    let mut load = vec![0.0_f64; ns * nt];
    let mut vcpus = vec![0.0_f64; ns];
    let mut mem = vec![0.0_f64; ns];
    // (server, image) of each VM that has an image.
    let mut images: Vec<(usize, usize)> = Vec::new();
    let mut migrations = 0usize;

    for v in 0..nv {
        let vm = &snap.vms[v];
        let s = d.host[v];
        if s >= ns {
            violations.push(format!("vm {}: host index {s} does not exist", vm.id));
            continue;
        }
        if !d.on[s] {
            violations.push(format!(
                "vm {} placed on server {}, which is off",
                vm.id, snap.servers[s].id
            ));
        }
        if let Some(cur) = inst.vm_host[v] {
            if cur != s {
                migrations += 1;
                if !vm.migratable {
                    violations.push(format!(
                        "vm {} is not migratable but moves {} → {}",
                        vm.id, snap.servers[cur].id, snap.servers[s].id
                    ));
                }
            }
        }
        vcpus[s] += f64::from(vm.vcpus);
        mem[s] += vm.mem_gib;
        if let Some(i) = inst.vm_image[v] {
            images.push((s, i));
        }
        let server_load = &mut load[s * nt..(s + 1) * nt];
        if inst.is_batch(v) {
            let a = &d.batch_cores[v];
            if a.len() != nt {
                violations.push(format!(
                    "vm {}: batch_cores has {} steps, expected {nt}",
                    vm.id,
                    a.len()
                ));
                continue;
            }
            let mut done = 0.0;
            for (t, (&c, l)) in a.iter().zip(server_load).enumerate() {
                if !(c.is_finite() && c >= -EPS && le(c, f64::from(vm.vcpus))) {
                    violations.push(format!(
                        "vm {} step {t}: {c} cores outside [0, {}]",
                        vm.id, vm.vcpus
                    ));
                }
                let c = c.clamp(0.0, f64::from(vm.vcpus));
                *l += c;
                if t < inst.batch_steps[v] {
                    done += c * step_h;
                }
            }
            if !le(inst.batch_min_core_h[v], done) {
                violations.push(format!(
                    "batch vm {}: {done:.4} core-h done before its deadline, {:.4} required",
                    vm.id, inst.batch_min_core_h[v]
                ));
            }
            if !le(done, inst.batch_max_core_h[v]) {
                violations.push(format!(
                    "batch vm {}: {done:.4} core-h done, more than the {:.4} remaining",
                    vm.id, inst.batch_max_core_h[v]
                ));
            }
        } else {
            for l in server_load {
                *l += inst.vm_fixed_cores[v];
            }
        }
    }
    share_images(&mut mem, &images, |i| snap.images[i].shared_mem_gib);
    if migrations > snap.policy.max_migrations {
        violations.push(format!(
            "{migrations} migrations, more than the policy's {}",
            snap.policy.max_migrations
        ));
    }

    let mut switches = 0usize;
    let mut recovered = vec![0.0_f64; snap.loops.len() * nt];
    for s in 0..ns {
        let srv = &snap.servers[s];
        let power = &mut power_w[s * nt..(s + 1) * nt];
        if d.on[s] != srv.on {
            switches += 1;
            if !srv.can_switch {
                violations.push(format!(
                    "server {} cannot be switched but the plan turns it {}",
                    srv.id,
                    if d.on[s] { "on" } else { "off" }
                ));
            }
        }
        if d.on[s] {
            let cores = f64::from(srv.cores);
            if !le(vcpus[s], cores * snap.policy.cpu_overcommit) {
                violations.push(format!(
                    "server {}: {} vCPUs exceed {} cores × overcommit {}",
                    srv.id, vcpus[s], srv.cores, snap.policy.cpu_overcommit
                ));
            }
            if !le(mem[s], srv.mem_gib) {
                violations.push(format!(
                    "server {}: {:.3} GiB of memory needed (after image sharing), {} GiB installed",
                    srv.id, mem[s], srv.mem_gib
                ));
            }
            let curve = &inst.curve[s];
            for (t, (p, &l)) in power
                .iter_mut()
                .zip(&load[s * nt..(s + 1) * nt])
                .enumerate()
            {
                let u = l / cores;
                if !le(u, 1.0) {
                    violations.push(format!(
                        "server {} step {t}: utilisation {u:.4} above 1",
                        srv.id
                    ));
                }
                *p = curve.power_w(u);
                if !le(*p, inst.p_max_w[s]) {
                    violations.push(format!(
                        "server {} step {t}: {:.2} W gives {:.2} °C, above its limit {} °C",
                        srv.id,
                        *p,
                        srv.inlet_c + srv.r_k_per_w * *p,
                        srv.temp_limit_c
                    ));
                }
            }
            if let Some((util, _)) = grids.as_mut() {
                for (u, &l) in util[s * nt..(s + 1) * nt]
                    .iter_mut()
                    .zip(&load[s * nt..(s + 1) * nt])
                {
                    *u = l / cores;
                }
            }
        } else {
            power.fill(srv.off_w);
        }
        if let Some(l) = inst.server_loop[s] {
            for (r, &p) in recovered[l * nt..(l + 1) * nt].iter_mut().zip(&*power) {
                *r += srv.recovery * p / 1000.0;
            }
        }
    }

    let mut obj = Objective {
        migrations,
        switches,
        ..Objective::default()
    };
    for (l, lp) in snap.loops.iter().enumerate() {
        for t in 0..nt {
            let h = recovered[l * nt + t]
                .min(lp.demand_kw[t])
                .min(lp.max_kw)
                .max(0.0);
            if let Some((_, heat_kw)) = grids.as_mut() {
                heat_kw[l * nt + t] = h;
            }
            obj.heat_delivered_kwh += h * step_h;
            obj.heat_value += lp.heat_value_per_kwh * h * step_h;
        }
    }
    for t in 0..nt {
        let total_w: f64 = (0..ns).map(|s| power_w[s * nt + t]).sum();
        let kwh = total_w * snap.step_s / 3.6e6;
        obj.energy_kwh += kwh;
        obj.energy_cost += snap.electricity_price_per_kwh[t] * kwh;
    }
    obj.cost = obj.energy_cost - obj.heat_value
        + snap.policy.migration_cost * migrations as f64
        + snap.policy.switch_cost * switches as f64;
    (obj, violations)
}

/// Turn evaluated decisions into the plan contract.
pub fn to_plan(
    inst: &Instance<'_>,
    d: &Decisions,
    ev: &Evaluation,
    solver: &str,
    solve_ms: f64,
) -> Plan {
    let snap = inst.snap;
    let mut plan = Plan {
        schema: PLAN_SCHEMA.to_string(),
        placements: BTreeMap::new(),
        servers_on: BTreeMap::new(),
        batch_cores: BTreeMap::new(),
        power_w: BTreeMap::new(),
        heat_kw: BTreeMap::new(),
        migrations: Vec::new(),
        objective: ev.objective.clone(),
        lower_bound: None,
        baseline_cost: None,
        solver: solver.to_string(),
        solve_ms,
    };
    for (v, vm) in snap.vms.iter().enumerate() {
        let to = &snap.servers[d.host[v]].id;
        plan.placements.insert(vm.id.clone(), to.clone());
        if inst.is_batch(v) {
            plan.batch_cores
                .insert(vm.id.clone(), d.batch_cores[v].clone());
        }
        if let Some(cur) = inst.vm_host[v] {
            if cur != d.host[v] {
                plan.migrations.push(Migration {
                    vm: vm.id.clone(),
                    from: snap.servers[cur].id.clone(),
                    to: to.clone(),
                });
            }
        }
    }
    for (s, srv) in snap.servers.iter().enumerate() {
        plan.servers_on.insert(srv.id.clone(), d.on[s]);
        plan.power_w.insert(srv.id.clone(), ev.power_w[s].to_vec());
    }
    for (l, lp) in snap.loops.iter().enumerate() {
        plan.heat_kw.insert(lp.id.clone(), ev.heat_kw[l].to_vec());
    }
    plan
}

/// Resolve a plan's id-keyed decisions back into [`Decisions`], for checking
/// a plan produced elsewhere (a test, the API, a stored file).
pub fn decisions_of(inst: &Instance<'_>, plan: &Plan) -> Result<Decisions, String> {
    let snap = inst.snap;
    let mut host = Vec::with_capacity(inst.n_vms());
    let mut batch_cores = Vec::with_capacity(inst.n_vms());
    for (v, vm) in snap.vms.iter().enumerate() {
        let h = plan
            .placements
            .get(&vm.id)
            .ok_or_else(|| format!("plan places no host for vm {}", vm.id))?;
        let s = *inst
            .server_index
            .get(h.as_str())
            .ok_or_else(|| format!("plan places vm {} on unknown server {h}", vm.id))?;
        host.push(s);
        if inst.is_batch(v) {
            batch_cores.push(
                plan.batch_cores
                    .get(&vm.id)
                    .cloned()
                    .ok_or_else(|| format!("plan has no batch_cores for vm {}", vm.id))?,
            );
        } else {
            batch_cores.push(Vec::new());
        }
    }
    let mut on = Vec::with_capacity(inst.n_servers());
    for srv in &snap.servers {
        on.push(
            *plan
                .servers_on
                .get(&srv.id)
                .ok_or_else(|| format!("plan has no on/off state for server {}", srv.id))?,
        );
    }
    Ok(Decisions {
        host,
        on,
        batch_cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, SiteSpec};
    use crate::greedy;

    #[test]
    fn a_grid_reads_and_prints_as_its_rows() {
        let mut g = Grid::zeros(2, 3);
        g[1][2] = 5.0;
        g[0][0] = -1.0;
        assert_eq!((g.rows(), g.steps()), (2, 3));
        assert_eq!(&g[0], &[-1.0, 0.0, 0.0]);
        assert_eq!(g.iter().collect::<Vec<_>>(), vec![&g[0], &g[1]]);
        assert_eq!(g.iter().len(), 2);
        assert_eq!(g.as_flat(), &[-1.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
        let rows = vec![vec![-1.0, 0.0, 0.0], vec![0.0, 0.0, 5.0]];
        assert_eq!(format!("{g:?}"), format!("{rows:?}"));
        // Rows of no steps still count as rows.
        let empty = Grid::zeros(4, 0);
        assert_eq!((&empty).into_iter().filter(|r| r.is_empty()).count(), 4);
    }

    #[test]
    #[should_panic(expected = "row 2 of a grid of 2 rows")]
    fn a_grid_refuses_a_row_it_does_not_have() {
        let _ = &Grid::zeros(2, 0)[2];
    }

    #[test]
    fn shared_image_memory_comes_off_in_server_then_image_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let shared = |i: usize| 0.1 + 0.37 * i as f64;
        for _ in 0..50 {
            let ns = rng.random_range(1..12);
            let images: Vec<(usize, usize)> = (0..rng.random_range(0..80))
                .map(|_| (rng.random_range(0..ns), rng.random_range(0..6)))
                .collect();
            let start: Vec<f64> = (0..ns).map(|_| rng.random_range(10.0..100.0)).collect();
            let mut mem = start.clone();
            share_images(&mut mem, &images, shared);
            // The rule as a map of counts per (server, image), in its order.
            let mut counts = BTreeMap::<(usize, usize), usize>::new();
            for &k in &images {
                *counts.entry(k).or_default() += 1;
            }
            let mut want = start;
            for ((s, i), n) in counts {
                want[s] -= (n as f64 - 1.0) * shared(i);
            }
            assert_eq!(mem, want);
        }
    }

    /// Greedy's decisions on `inst`, and broken copies of them: servers
    /// switched, VMs moved off the map or onto others, cores out of range,
    /// a batch vector cut short, vectors of the wrong length.
    fn decisions_broken_every_way(inst: &Instance<'_>) -> Vec<Decisions> {
        let d = greedy::decide(inst).unwrap();
        let ns = d.on.len();
        let mut flipped = d.clone();
        flipped.on.iter_mut().for_each(|o| *o = !*o);
        let mut moved = d.clone();
        for v in (0..moved.host.len()).step_by(3) {
            moved.host[v] = (moved.host[v] + 1) % ns;
        }
        moved.host[0] = ns + 7;
        let mut cores = d.clone();
        for (v, a) in cores.batch_cores.iter_mut().enumerate() {
            for (t, c) in a.iter_mut().enumerate() {
                *c = if (v + t) % 4 == 0 {
                    -1.0
                } else {
                    *c * 3.0 + 2.0
                };
            }
        }
        if let Some(a) = cores.batch_cores.iter_mut().find(|a| !a.is_empty()) {
            a.pop();
        }
        let mut packed = d.clone();
        packed.host.iter_mut().for_each(|h| *h = 0);
        let mut short = d.clone();
        short.on.pop();
        vec![d, flipped, moved, cores, packed, short]
    }

    #[test]
    fn the_cost_only_check_finds_what_evaluate_finds() {
        for seed in 1..=4 {
            let snap = generate(&SiteSpec::small(seed));
            let inst = Instance::new(&snap).unwrap();
            for d in decisions_broken_every_way(&inst) {
                let ev = evaluate(&inst, &d);
                let (objective, violations) = check(&inst, &d);
                assert_eq!(objective, ev.objective);
                assert_eq!(violations, ev.violations);
            }
        }
    }

    #[test]
    fn an_evaluation_lays_out_a_row_per_server_and_loop() {
        let snap = generate(&SiteSpec::small(2));
        let inst = Instance::new(&snap).unwrap();
        let d = greedy::decide(&inst).unwrap();
        let ev = evaluate(&inst, &d);
        assert_eq!(
            (ev.power_w.rows(), ev.power_w.steps()),
            (snap.servers.len(), snap.steps)
        );
        assert_eq!(
            (ev.util.rows(), ev.util.steps()),
            (snap.servers.len(), snap.steps)
        );
        assert_eq!(
            (ev.heat_kw.rows(), ev.heat_kw.steps()),
            (snap.loops.len(), snap.steps)
        );
        for (s, srv) in snap.servers.iter().enumerate() {
            for t in 0..snap.steps {
                let want = if d.on[s] {
                    inst.curve[s].power_w(ev.util[s][t])
                } else {
                    srv.off_w
                };
                assert_eq!(ev.power_w[s][t], want);
            }
        }
        let energy_kwh: f64 = ev.power_w.as_flat().iter().sum::<f64>() * snap.step_s / 3.6e6;
        assert!((energy_kwh - ev.objective.energy_kwh).abs() < 1e-9 * energy_kwh.max(1.0));
    }
}
