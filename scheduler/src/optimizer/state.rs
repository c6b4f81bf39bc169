//! The optimiser's working state: the decisions plus the aggregates that make
//! a change's exact cost cheap to compute (per-server load, memory after image
//! sharing, power per step, heat recovered per loop and step), and an undo
//! journal so a tentative move is tried, priced and rolled back in place.

use crate::curve::PowerCurve;
use crate::evaluate::Grid;
use crate::instance::{Instance, EPS};

use super::batch::{self, BatchJob};

/// Host of a VM that is not placed yet.
pub(crate) const UNPLACED: usize = usize::MAX;

/// What stays fixed while the optimiser works: prices per watt, loop limits,
/// server capacities, batch jobs.
#[derive(Debug)]
pub(crate) struct Ctx<'i> {
    pub inst: &'i Instance<'i>,
    pub ns: usize,
    pub nv: usize,
    pub nt: usize,
    /// Cost of drawing one watt during step t.
    pub energy_w: Vec<f64>,
    /// Per loop: value of one recovered watt delivered during one step.
    pub heat_w: Vec<f64>,
    /// Per loop and step: most heat the loop takes, W (min of demand and intake).
    pub heat_cap_w: Vec<Vec<f64>>,
    /// Cores of each server.
    pub cores: Vec<f64>,
    /// Most cores each server may use (temperature and `u ≤ 1`); negative
    /// when the server may not be on at all.
    pub cap_cores: Vec<f64>,
    /// vCPUs each server may host (cores × overcommit).
    pub vcpu_cap: Vec<f64>,
    /// `vcpu_cap` with the rounding tolerance of [`State::fits`].
    vcpu_limit: Vec<f64>,
    /// The distinct vCPU counts of the VMs, ascending.
    vcpu_sizes: Vec<f64>,
    /// Index in `vcpu_sizes` of each VM's vCPUs.
    vm_size: Vec<usize>,
    /// Recovery fraction of each server (0 without a loop).
    pub recovery: Vec<f64>,
    /// Batch job of each VM (core-steps), `None` for interactive VMs.
    pub jobs: Vec<Option<BatchJob>>,
    /// Whether each VM may leave its current host.
    pub movable: Vec<bool>,
    /// The least one core of load can add to the cost in one step anywhere:
    /// the cheapest step's price per watt (less the most heat value a watt
    /// can earn) times the least watts per core of any curve segment. `None`
    /// when a watt can earn more than it costs (no such floor).
    pub min_core_step_cost: Option<f64>,
}

impl<'i> Ctx<'i> {
    pub fn new(inst: &'i Instance<'i>) -> Self {
        let snap = inst.snap;
        let step_h = inst.step_h();
        let nt = inst.steps();
        let energy_w: Vec<f64> = snap
            .electricity_price_per_kwh
            .iter()
            .map(|p| p * step_h / 1000.0)
            .collect();
        let heat_w: Vec<f64> = snap
            .loops
            .iter()
            .map(|l| l.heat_value_per_kwh * step_h / 1000.0)
            .collect();
        let heat_cap_w = snap
            .loops
            .iter()
            .map(|l| {
                (0..nt)
                    .map(|t| l.demand_kw[t].min(l.max_kw).max(0.0) * 1000.0)
                    .collect()
            })
            .collect();
        let cores: Vec<f64> = snap.servers.iter().map(|s| f64::from(s.cores)).collect();
        let cap_cores = (0..inst.n_servers())
            .map(|s| inst.u_max[s].map_or(-1.0, |u| u.min(1.0) * cores[s]))
            .collect();
        let vcpu_cap: Vec<f64> = cores
            .iter()
            .map(|c| c * snap.policy.cpu_overcommit)
            .collect();
        let recovery = (0..inst.n_servers())
            .map(|s| {
                if inst.server_loop[s].is_some() {
                    snap.servers[s].recovery
                } else {
                    0.0
                }
            })
            .collect();
        let jobs = (0..inst.n_vms())
            .map(|v| {
                inst.is_batch(v).then(|| {
                    let window = inst.batch_steps[v];
                    let counted = |w: f64| if window == 0 { 0.0 } else { w / step_h };
                    BatchJob {
                        cap: f64::from(snap.vms[v].vcpus),
                        window,
                        min: counted(inst.batch_min_core_h[v]),
                        max: counted(inst.batch_max_core_h[v]),
                    }
                })
            })
            .collect();
        let movable = snap.vms.iter().map(|v| v.migratable).collect();
        let tol = |x: f64| EPS * (1.0 + x.abs());
        let vcpu_limit = vcpu_cap.iter().map(|&c: &f64| c + tol(c)).collect();
        let mut vcpu_sizes: Vec<f64> = snap.vms.iter().map(|v| f64::from(v.vcpus)).collect();
        vcpu_sizes.sort_by(f64::total_cmp);
        vcpu_sizes.dedup();
        let vm_size = snap
            .vms
            .iter()
            .map(|v| vcpu_sizes.partition_point(|&c| c < f64::from(v.vcpus)))
            .collect();
        let max_heat_w = (0..inst.n_servers())
            .filter_map(|s| inst.server_loop[s].map(|l| heat_w[l] * snap.servers[s].recovery))
            .fold(0.0, f64::max);
        let cheapest_w = energy_w
            .iter()
            .map(|e| e - max_heat_w)
            .fold(f64::INFINITY, f64::min);
        let least_w_per_core = (0..inst.n_servers())
            .flat_map(|s| {
                let p = inst.curve[s].points_w();
                let per_core = 10.0 / cores[s];
                p.windows(2).map(move |w| (w[1] - w[0]) * per_core)
            })
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        let min_core_step_cost = (cheapest_w >= 0.0 && least_w_per_core.is_finite())
            .then_some(cheapest_w * least_w_per_core);
        Self {
            inst,
            ns: inst.n_servers(),
            nv: inst.n_vms(),
            nt,
            energy_w,
            heat_w,
            heat_cap_w,
            cores,
            cap_cores,
            vcpu_cap,
            vcpu_limit,
            vcpu_sizes,
            vm_size,
            recovery,
            jobs,
            movable,
            min_core_step_cost,
        }
    }

    pub fn curve(&self, s: usize) -> &PowerCurve {
        &self.inst.curve[s]
    }

    pub fn vcpus(&self, v: usize) -> f64 {
        f64::from(self.inst.snap.vms[v].vcpus)
    }

    pub fn mem(&self, v: usize) -> f64 {
        self.inst.snap.vms[v].mem_gib
    }

    /// Work batch VM `v` must do in its window, core-steps (0 for others).
    pub fn job_need(&self, v: usize) -> f64 {
        self.jobs[v].as_ref().map_or(0.0, |j| j.min)
    }

    pub fn can_switch(&self, s: usize) -> bool {
        self.inst.snap.servers[s].can_switch
    }

    pub fn off_w(&self, s: usize) -> f64 {
        self.inst.snap.servers[s].off_w
    }

    /// Whether placing `v` on `to` (from wherever it is) would be a migration.
    pub fn is_migration(&self, v: usize, to: usize) -> bool {
        self.inst.vm_host[v].is_some_and(|h| h != to)
    }

    /// Whether `v` may be put on `to` under the migration rules (budget aside).
    pub fn may_host(&self, v: usize, to: usize) -> bool {
        self.movable[v] || self.inst.vm_host[v].is_none_or(|h| h == to)
    }
}

/// A server's new batch schedule and power.
#[derive(Debug, Clone)]
pub(crate) struct ServerPlan {
    pub power: Vec<f64>,
    pub batch: Vec<(usize, Vec<f64>)>,
}

#[derive(Debug, Clone)]
enum Undo {
    Move { v: usize, from: usize },
    Switch { s: usize },
    Server { s: usize, old: ServerPlan },
}

/// Where to roll back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    len: usize,
    pub cost: f64,
}

impl Mark {
    /// The start of the journal: committing it forgets the whole journal.
    pub fn start() -> Self {
        Self { len: 0, cost: 0.0 }
    }
}

/// The decisions being improved, with their exact cost.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub host: Vec<usize>,
    pub on: Vec<bool>,
    /// Batch cores per VM and step (empty for interactive VMs).
    pub cores: Vec<Vec<f64>>,
    pub vms_on: Vec<Vec<usize>>,
    pub fixed: Vec<f64>,
    pub vcpus: Vec<f64>,
    pub mem: Vec<f64>,
    /// Work the batch VMs on each server must do in their windows, core-steps.
    batch_need: Vec<f64>,
    /// Batch VMs on each server.
    n_batch: Vec<u32>,
    images: Vec<Vec<(usize, usize)>>,
    pub power: Grid,
    /// Recovered heat per loop and step, W.
    pub rec: Vec<Vec<f64>>,
    pub migrations: usize,
    /// Exact cost of the current decisions (DESIGN.md §2).
    pub cost: f64,
    /// Cheapest servers to try as targets on large sites (search's cache).
    pool: Vec<usize>,
    /// Position of each server in `pool` (`usize::MAX` when absent).
    pool_pos: Vec<usize>,
    /// Per VM size (`Ctx::vcpu_sizes`), a bit per position of `pool`: set
    /// when that server has the vCPUs left for a VM of that size. Kept
    /// current by `attach` and `detach`, so scanning the pool for targets
    /// skips the (many) servers whose vCPUs are taken without looking.
    room_bits: Vec<u64>,
    /// Whole vCPUs each server of the pool has left (0 outside it).
    free_vcpus: Vec<u64>,
    /// Per VM size: the vCPUs left on the pool's servers that have at least
    /// that many (a bound on what VMs of that size or larger can find).
    room_sum: Vec<u64>,
    /// Cost per core and step of the pool's cheapest server.
    pub pool_floor: f64,
    /// Servers the switch-off pass leaves alone this plan (a carried
    /// back-off; empty when nothing is carried).
    pub skip_switch_off: Vec<bool>,
    /// Servers whose switch-off the pass tried and could not make pay.
    pub switch_off_failed: Vec<bool>,
    /// VMs placed by making room for them (ejection chains).
    pub rooms_made: usize,
    journal: Vec<Undo>,
}

impl State {
    /// The current placement and on/off state, no batch work yet, pending
    /// VMs unplaced. Servers hosting VMs are on.
    pub fn new(ctx: &Ctx<'_>) -> Self {
        let inst = ctx.inst;
        let snap = inst.snap;
        let mut st = Self {
            host: vec![UNPLACED; ctx.nv],
            on: snap.servers.iter().map(|s| s.on).collect(),
            cores: (0..ctx.nv)
                .map(|v| {
                    if ctx.jobs[v].is_some() {
                        vec![0.0; ctx.nt]
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            vms_on: vec![Vec::new(); ctx.ns],
            fixed: vec![0.0; ctx.ns],
            vcpus: vec![0.0; ctx.ns],
            mem: vec![0.0; ctx.ns],
            batch_need: vec![0.0; ctx.ns],
            n_batch: vec![0; ctx.ns],
            images: vec![Vec::new(); ctx.ns],
            power: Grid::zeros(ctx.ns, ctx.nt),
            rec: vec![vec![0.0; ctx.nt]; snap.loops.len()],
            migrations: 0,
            cost: 0.0,
            pool: Vec::new(),
            pool_pos: vec![usize::MAX; ctx.ns],
            room_bits: Vec::new(),
            free_vcpus: vec![0; ctx.ns],
            room_sum: vec![0; ctx.vcpu_sizes.len()],
            pool_floor: 0.0,
            skip_switch_off: Vec::new(),
            switch_off_failed: vec![false; ctx.ns],
            rooms_made: 0,
            journal: Vec::new(),
        };
        for v in 0..ctx.nv {
            if let Some(s) = inst.vm_host[v] {
                st.attach(ctx, v, s);
                st.on[s] = true;
            }
        }
        for s in 0..ctx.ns {
            let p = if st.on[s] {
                ctx.curve(s).power_w(st.fixed[s] / ctx.cores[s])
            } else {
                ctx.off_w(s)
            };
            st.power[s].fill(p);
            if let Some(l) = inst.server_loop[s] {
                for t in 0..ctx.nt {
                    st.rec[l][t] += ctx.recovery[s] * p;
                }
            }
        }
        st.cost = st.full_cost(ctx);
        st
    }

    /// Cost recomputed from scratch.
    pub fn full_cost(&self, ctx: &Ctx<'_>) -> f64 {
        let snap = ctx.inst.snap;
        let mut cost = 0.0;
        for s in 0..ctx.ns {
            for t in 0..ctx.nt {
                cost += ctx.energy_w[t] * self.power[s][t];
            }
        }
        for (l, rec) in self.rec.iter().enumerate() {
            for t in 0..ctx.nt {
                cost -= ctx.heat_w[l] * rec[t].min(ctx.heat_cap_w[l][t]).max(0.0);
            }
        }
        let switches = (0..ctx.ns)
            .filter(|&s| self.on[s] != snap.servers[s].on)
            .count();
        cost + snap.policy.migration_cost * self.migrations as f64
            + snap.policy.switch_cost * switches as f64
    }

    fn mem_need(&self, ctx: &Ctx<'_>, s: usize, v: usize) -> f64 {
        let m = ctx.mem(v);
        match ctx.inst.vm_image[v] {
            Some(i) if self.images[s].iter().any(|&(im, n)| im == i && n > 0) => {
                m - ctx.inst.snap.images[i].shared_mem_gib
            }
            _ => m,
        }
    }

    /// Whether `v` fits on `s` as it is now (capacity, memory, temperature
    /// for its fixed load, migration rules, budget). `s` must be on.
    pub fn fits(&self, ctx: &Ctx<'_>, s: usize, v: usize) -> bool {
        if !self.on[s] || ctx.cap_cores[s] < 0.0 || !ctx.may_host(v, s) {
            return false;
        }
        let budget = ctx.inst.snap.policy.max_migrations;
        let mig_after = self.migrations - usize::from(self.is_displaced(ctx, v))
            + usize::from(ctx.is_migration(v, s));
        let tol = |x: f64| EPS * (1.0 + x.abs());
        mig_after <= budget
            && self.vcpus[s] + ctx.vcpus(v) <= ctx.vcpu_limit[s]
            && self.fixed[s] + ctx.inst.vm_fixed_cores[v] <= ctx.cap_cores[s] * (1.0 - 1e-9)
            && self.batch_room_ok(ctx, s, v)
            && self.mem[s] + self.mem_need(ctx, s, v)
                <= ctx.inst.snap.servers[s].mem_gib + tol(ctx.inst.snap.servers[s].mem_gib)
    }

    /// A necessary condition for `v` to fit on `s` once the VMs `out` (on
    /// `s`, other than `v`) have left it: vCPUs, memory (each leaving VM
    /// frees at most its own memory; `v` needs at least its own less its
    /// image's shared part), interactive load, batch room and the
    /// migration budget (a leaving VM on its current host spends one, a
    /// displaced one may give one back by going home). Cheap, so the
    /// ejection chains try only the moves that can help.
    pub fn may_fit_without(&self, ctx: &Ctx<'_>, s: usize, v: usize, out: &[usize]) -> bool {
        if !self.on[s] || ctx.cap_cores[s] < 0.0 || !ctx.may_host(v, s) {
            return false;
        }
        let sum = |f: &dyn Fn(usize) -> f64| out.iter().map(|&w| f(w)).sum::<f64>();
        let shared = ctx.inst.vm_image[v].map_or(0.0, |i| ctx.inst.snap.images[i].shared_mem_gib);
        let tol = |x: f64| EPS * (1.0 + x.abs());
        let mem_gib = ctx.inst.snap.servers[s].mem_gib;
        let fixed =
            self.fixed[s] - sum(&|w| ctx.inst.vm_fixed_cores[w]) + ctx.inst.vm_fixed_cores[v];
        let need = self.batch_need[s] - sum(&|w| ctx.job_need(w)) + ctx.job_need(v);
        let room = (ctx.cap_cores[s] - fixed).max(0.0) * ctx.nt as f64;
        let spent = out
            .iter()
            .filter(|&&w| ctx.inst.vm_host[w] == Some(s))
            .count();
        let back = out.iter().filter(|&&w| self.is_displaced(ctx, w)).count();
        let mig = (self.migrations + spent + usize::from(ctx.is_migration(v, s)))
            .saturating_sub(back + usize::from(self.is_displaced(ctx, v)));
        mig <= ctx.inst.snap.policy.max_migrations
            && self.vcpus[s] - sum(&|w| ctx.vcpus(w)) + ctx.vcpus(v) <= ctx.vcpu_limit[s]
            && self.mem[s] - sum(&|w| ctx.mem(w)) + ctx.mem(v) - shared <= mem_gib + tol(mem_gib)
            && fixed <= ctx.cap_cores[s] * (1.0 - 1e-9)
            && need <= room * (1.0 - 1e-9)
    }

    /// Necessary condition for the batch work on `s` plus `v`: the required
    /// core-steps fit in the room the interactive load leaves.
    fn batch_room_ok(&self, ctx: &Ctx<'_>, s: usize, v: usize) -> bool {
        let need = if self.host[v] == s {
            self.batch_need[s]
        } else {
            self.batch_need[s] + ctx.job_need(v)
        };
        let room = (ctx.cap_cores[s] - self.fixed[s] - ctx.inst.vm_fixed_cores[v]).max(0.0)
            * ctx.nt as f64;
        need <= room * (1.0 - 1e-9)
    }

    pub fn is_displaced(&self, ctx: &Ctx<'_>, v: usize) -> bool {
        self.host[v] != UNPLACED && ctx.is_migration(v, self.host[v])
    }

    fn attach(&mut self, ctx: &Ctx<'_>, v: usize, s: usize) {
        self.mem[s] += self.mem_need(ctx, s, v);
        self.vcpus[s] += ctx.vcpus(v);
        self.fixed[s] += ctx.inst.vm_fixed_cores[v];
        self.batch_need[s] += ctx.job_need(v);
        self.n_batch[s] += u32::from(ctx.jobs[v].is_some());
        if let Some(i) = ctx.inst.vm_image[v] {
            match self.images[s].iter_mut().find(|(im, _)| *im == i) {
                Some(e) => e.1 += 1,
                None => self.images[s].push((i, 1)),
            }
        }
        let pos = self.vms_on[s].partition_point(|&x| x < v);
        self.vms_on[s].insert(pos, v);
        self.host[v] = s;
        if ctx.is_migration(v, s) {
            self.migrations += 1;
        }
        self.update_room(ctx, s);
    }

    fn detach(&mut self, ctx: &Ctx<'_>, v: usize) {
        let s = self.host[v];
        if s == UNPLACED {
            return;
        }
        if ctx.is_migration(v, s) {
            self.migrations -= 1;
        }
        if let Some(i) = ctx.inst.vm_image[v] {
            if let Some(e) = self.images[s].iter_mut().find(|(im, _)| *im == i) {
                e.1 -= 1;
            }
            self.images[s].retain(|&(_, n)| n > 0);
        }
        self.mem[s] -= self.mem_need(ctx, s, v);
        self.vcpus[s] -= ctx.vcpus(v);
        self.fixed[s] -= ctx.inst.vm_fixed_cores[v];
        self.batch_need[s] -= ctx.job_need(v);
        self.n_batch[s] -= u32::from(ctx.jobs[v].is_some());
        if let Ok(pos) = self.vms_on[s].binary_search(&v) {
            self.vms_on[s].remove(pos);
        }
        self.host[v] = UNPLACED;
        if self.vms_on[s].is_empty() {
            // Clear rounding residue.
            self.mem[s] = 0.0;
            self.vcpus[s] = 0.0;
            self.fixed[s] = 0.0;
            self.batch_need[s] = 0.0;
        }
        self.update_room(ctx, s);
    }

    /// Install a new pool of targets.
    pub fn set_pool(&mut self, ctx: &Ctx<'_>, pool: Vec<usize>) {
        for &s in &self.pool {
            self.pool_pos[s] = usize::MAX;
            self.free_vcpus[s] = 0;
        }
        self.room_sum.fill(0);
        for (i, &s) in pool.iter().enumerate() {
            self.pool_pos[s] = i;
        }
        self.pool = pool;
        let words = self.pool.len().div_ceil(64);
        self.room_bits.clear();
        self.room_bits.resize(words * ctx.vcpu_sizes.len(), 0);
        for i in 0..self.pool.len() {
            self.update_room(ctx, self.pool[i]);
        }
    }

    /// Refresh the room bits of `s` (when it is in the pool).
    fn update_room(&mut self, ctx: &Ctx<'_>, s: usize) {
        let pos = self.pool_pos[s];
        if pos == usize::MAX {
            return;
        }
        // The most whole vCPUs `m` with `vcpus + m <= limit` as `fits`
        // computes it (VM sizes are whole, so a VM fits by vCPUs exactly
        // when its size is at most `m`).
        let (used, limit) = (self.vcpus[s], ctx.vcpu_limit[s]);
        let mut m = (limit - used).floor().max(0.0) as u64;
        while used + (m + 1) as f64 <= limit {
            m += 1;
        }
        while m > 0 && used + m as f64 > limit {
            m -= 1;
        }
        let old = std::mem::replace(&mut self.free_vcpus[s], m);
        let words = self.pool.len().div_ceil(64);
        let (w, bit) = (pos / 64, 1u64 << (pos % 64));
        for (k, &size) in ctx.vcpu_sizes.iter().enumerate() {
            let size = size as u64;
            if old >= size {
                self.room_sum[k] -= old;
            }
            let word = &mut self.room_bits[k * words + w];
            if m >= size {
                self.room_sum[k] += m;
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Whether the pool's servers other than `s` have the vCPUs for `vms`
    /// at all: for every size, the VMs at least that large need no more
    /// vCPUs than the servers with room for one of them have left. A
    /// necessary condition for moving them all into the pool (room only
    /// shrinks as they arrive), checked before trying.
    pub fn pool_may_take(&self, ctx: &Ctx<'_>, s: usize, vms: &[usize]) -> bool {
        ctx.vcpu_sizes.iter().enumerate().all(|(k, &size)| {
            let need: u64 = vms
                .iter()
                .filter(|&&v| ctx.vm_size[v] >= k)
                .map(|&v| u64::from(ctx.inst.snap.vms[v].vcpus))
                .sum();
            let own = if self.free_vcpus[s] >= size as u64 {
                self.free_vcpus[s]
            } else {
                0
            };
            need <= self.room_sum[k] - own
        })
    }

    /// The servers of the pool, in its order, that have the vCPUs left for
    /// `v` (a necessary condition of [`State::fits`]).
    pub fn pool_with_room<'a>(
        &'a self,
        ctx: &Ctx<'_>,
        v: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        let words = self.pool.len().div_ceil(64);
        let k = ctx.vm_size[v];
        let bits = &self.room_bits[k * words..(k + 1) * words];
        bits.iter().enumerate().flat_map(move |(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let b = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    self.pool[w * 64 + b]
                })
            })
        })
    }

    pub fn mark(&self) -> Mark {
        Mark {
            len: self.journal.len(),
            cost: self.cost,
        }
    }

    /// Undo everything since `m`.
    pub fn rollback(&mut self, ctx: &Ctx<'_>, m: Mark) {
        while self.journal.len() > m.len {
            match self.journal.pop() {
                Some(Undo::Move { v, from }) => {
                    self.detach(ctx, v);
                    if from != UNPLACED {
                        self.attach(ctx, v, from);
                    }
                }
                Some(Undo::Switch { s }) => self.on[s] = !self.on[s],
                Some(Undo::Server { s, old }) => {
                    self.write_server(ctx, s, old);
                }
                None => break,
            }
        }
        self.cost = m.cost;
    }

    /// Keep everything since `m`; forget the journal when nothing encloses it.
    pub fn commit(&mut self, m: Mark) {
        if m.len == 0 {
            self.journal.clear();
        }
    }

    /// Move `v` to `to` (aggregates and migration cost only; the servers'
    /// power is updated by [`State::apply`]).
    pub fn move_vm(&mut self, ctx: &Ctx<'_>, v: usize, to: usize) {
        let from = self.host[v];
        let before = self.migrations;
        self.detach(ctx, v);
        self.attach(ctx, v, to);
        self.cost += ctx.inst.snap.policy.migration_cost * (self.migrations as f64 - before as f64);
        self.journal.push(Undo::Move { v, from });
    }

    /// Switch `s` on or off (its power is updated by [`State::apply`]).
    pub fn set_on(&mut self, ctx: &Ctx<'_>, s: usize, on: bool) {
        if self.on[s] == on {
            return;
        }
        let was = ctx.inst.snap.servers[s].on;
        let sc = ctx.inst.snap.policy.switch_cost;
        self.cost += if on == was { -sc } else { sc };
        self.on[s] = on;
        self.journal.push(Undo::Switch { s });
    }

    /// Exact change of energy cost minus heat value if server `s` drew `power`.
    pub fn power_delta(&self, ctx: &Ctx<'_>, s: usize, power: &[f64]) -> f64 {
        let mut d = 0.0;
        for t in 0..ctx.nt {
            d += ctx.energy_w[t] * (power[t] - self.power[s][t]);
        }
        if let Some(l) = ctx.inst.server_loop[s] {
            let r = ctx.recovery[s];
            for t in 0..ctx.nt {
                let cap = ctx.heat_cap_w[l][t];
                let old = self.rec[l][t];
                let new = old + r * (power[t] - self.power[s][t]);
                d -= ctx.heat_w[l] * (new.min(cap).max(0.0) - old.min(cap).max(0.0));
            }
        }
        d
    }

    fn write_server(&mut self, ctx: &Ctx<'_>, s: usize, plan: ServerPlan) {
        self.cost += self.power_delta(ctx, s, &plan.power);
        if let Some(l) = ctx.inst.server_loop[s] {
            let r = ctx.recovery[s];
            for t in 0..ctx.nt {
                self.rec[l][t] += r * (plan.power[t] - self.power[s][t]);
            }
        }
        self.power[s].copy_from_slice(&plan.power);
        for (v, c) in plan.batch {
            self.cores[v] = c;
        }
    }

    /// Install a server plan (journaled).
    pub fn apply(&mut self, ctx: &Ctx<'_>, s: usize, plan: ServerPlan) {
        let old = ServerPlan {
            power: self.power[s].to_vec(),
            batch: plan
                .batch
                .iter()
                .map(|(v, _)| (*v, self.cores[*v].clone()))
                .collect(),
        };
        self.journal.push(Undo::Server { s, old });
        self.write_server(ctx, s, plan);
    }

    /// Plan server `s` as it is now: the best batch schedule for the VMs on
    /// it (given what the other servers of its loop recover) and its power.
    /// `None` when no schedule meets its rules.
    pub fn plan(&self, ctx: &Ctx<'_>, s: usize) -> Option<ServerPlan> {
        let nt = ctx.nt;
        if !self.on[s] {
            return self.vms_on[s].is_empty().then(|| ServerPlan {
                power: vec![ctx.off_w(s); nt],
                batch: Vec::new(),
            });
        }
        let cap = ctx.cap_cores[s];
        let fixed = self.fixed[s];
        if cap < 0.0 || fixed > cap * (1.0 + 1e-9) + 1e-12 {
            return None;
        }
        let c = ctx.cores[s];
        let curve = ctx.curve(s);
        if !self.vms_on[s].iter().any(|&v| ctx.jobs[v].is_some()) {
            return Some(ServerPlan {
                power: vec![curve.power_w(fixed / c); nt],
                batch: Vec::new(),
            });
        }
        batch::with_scratch(|scratch| {
            let batch::Scratch {
                vms,
                jobs,
                steps,
                flow,
            } = scratch;
            vms.clear();
            jobs.clear();
            for &v in &self.vms_on[s] {
                if let Some(job) = &ctx.jobs[v] {
                    vms.push(v);
                    jobs.push(job.clone());
                }
            }
            let room = (cap * (1.0 - 1e-9) - fixed).max(0.0);
            let top = room.min(jobs.iter().map(|j| j.cap).sum());
            let lp = ctx.inst.server_loop[s];
            let r = ctx.recovery[s];
            let power_at = |x: f64| curve.power_w((fixed + x) / c);
            // Extra cores where the cost may bend (none, the curve's
            // breakpoints, all the room) with the power there: the same at
            // every step.
            let mut grid = [(0.0, 0.0); 11];
            grid[0] = (0.0, power_at(0.0));
            grid[1] = (top, power_at(top));
            let mut n_grid = 2;
            for i in 1..10 {
                let x = c * i as f64 / 10.0 - fixed;
                if x > 0.0 && x < top {
                    grid[n_grid] = (x, power_at(x));
                    n_grid += 1;
                }
            }
            steps.clear();
            let mut last_key = None;
            for t in 0..nt {
                let e = ctx.energy_w[t];
                let (h, others, hcap) = match lp {
                    Some(l) if r > 0.0 => (
                        ctx.heat_w[l],
                        self.rec[l][t] - r * self.power[s][t],
                        ctx.heat_cap_w[l][t],
                    ),
                    _ => (0.0, 0.0, 0.0),
                };
                // A step priced like the one before costs the same.
                let key = [e, h, others, hcap].map(f64::to_bits);
                if last_key == Some(key) {
                    steps.push_repeat();
                    continue;
                }
                last_key = Some(key);
                let cost = |p: f64| e * p - h * (others + r * p).min(hcap).max(0.0);
                let mut xs = [(0.0, 0.0); 12];
                xs[..n_grid].copy_from_slice(&grid[..n_grid]);
                let mut n = n_grid;
                if h > 0.0 {
                    if let Some(u) = curve.max_util_within((hcap - others) / r) {
                        let x = u * c - fixed;
                        if x > 0.0 && x < top {
                            xs[n] = (x, power_at(x));
                            n += 1;
                        }
                    }
                }
                // Sort by extra cores (insertion sort: few, nearly sorted),
                // then drop points closer than 1e-12 to the one before.
                for i in 1..n {
                    let mut k = i;
                    while k > 0 && xs[k - 1].0.total_cmp(&xs[k].0).is_gt() {
                        xs.swap(k - 1, k);
                        k -= 1;
                    }
                }
                let base = cost(grid[0].1);
                let mut pts = [(0.0, 0.0); 12];
                let mut n_pts = 0;
                for &(x, p) in &xs[..n] {
                    if n_pts > 0 && (x - pts[n_pts - 1].0).abs() < 1e-12 {
                        continue;
                    }
                    pts[n_pts] = (x, cost(p) - base);
                    n_pts += 1;
                }
                steps.push_envelope(&pts[..n_pts]);
            }
            if !flow.schedule(jobs, steps) {
                return None;
            }
            let mut load = vec![fixed; nt];
            for j in 0..jobs.len() {
                for (l, x) in load.iter_mut().zip(flow.cores(j)) {
                    *l += x;
                }
            }
            Some(ServerPlan {
                power: load
                    .iter()
                    .map(|&l| curve.power_w(l.min(cap) / c))
                    .collect(),
                batch: vms
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| (v, flow.cores(j).to_vec()))
                    .collect(),
            })
        })
    }

    /// Server `s` with its batch VMs keeping their current cores (a VM that
    /// just arrived brings its schedule), when that still meets its rules:
    /// an exact price for a tentative move without solving a flow.
    pub fn plan_kept(&self, ctx: &Ctx<'_>, s: usize) -> Option<ServerPlan> {
        if !self.on[s] {
            return self.plan(ctx, s);
        }
        let cap = ctx.cap_cores[s];
        if cap < 0.0 {
            return None;
        }
        let mut load = vec![self.fixed[s]; ctx.nt];
        for &v in &self.vms_on[s] {
            if let Some(j) = &ctx.jobs[v] {
                // A VM placed just now has no schedule yet.
                let done: f64 = self.cores[v][..j.window.min(ctx.nt)].iter().sum();
                if done < j.min * (1.0 - 1e-9) {
                    return None;
                }
                for t in 0..ctx.nt {
                    load[t] += self.cores[v][t];
                }
            }
        }
        if load.iter().any(|&l| l > cap * (1.0 - 1e-9)) {
            return None;
        }
        let curve = ctx.curve(s);
        Some(ServerPlan {
            power: load
                .iter()
                .map(|&l| curve.power_w(l / ctx.cores[s]))
                .collect(),
            batch: Vec::new(),
        })
    }

    /// Re-plan server `s` keeping batch schedules where they still fit, else
    /// solving its flow; false (nothing changed) when no plan meets its rules.
    pub fn replan_kept(&mut self, ctx: &Ctx<'_>, s: usize) -> bool {
        match self.plan_kept(ctx, s) {
            Some(p) if p.power[..] == self.power[s] => true,
            Some(p) => {
                self.apply(ctx, s, p);
                true
            }
            None => self.replan(ctx, s),
        }
    }

    /// Re-plan server `s` and install the plan; false (nothing changed) when
    /// no plan meets its rules.
    pub fn replan(&mut self, ctx: &Ctx<'_>, s: usize) -> bool {
        match self.plan(ctx, s) {
            // The same power and no batch schedule: nothing to change (most
            // servers when repair plans them all).
            Some(p) if p.batch.is_empty() && p.power[..] == self.power[s] => true,
            Some(p) => {
                self.apply(ctx, s, p);
                true
            }
            None => false,
        }
    }

    /// Estimated cost of adding `v` to `s` without re-planning: the power its
    /// load adds at each step, at the step's effective price.
    pub fn add_estimate(&self, ctx: &Ctx<'_>, s: usize, v: usize) -> f64 {
        let c = ctx.cores[s];
        let curve = ctx.curve(s);
        let job = ctx.jobs[v].as_ref();
        // The power added at a step depends only on the load before and
        // after: reuse it while those repeat (always, on servers without
        // batch work and for an interactive VM).
        let mut last: Option<(f64, f64, f64)> = None;
        let mut d = 0.0;
        for t in 0..ctx.nt {
            let base = self.load_at(ctx, s, t);
            let extra = match job {
                None => ctx.inst.vm_fixed_cores[v],
                Some(j) if t < j.window => (j.min / j.window as f64).min(j.cap),
                Some(_) => 0.0,
            };
            if base + extra > ctx.cap_cores[s] {
                // Batch work must shift to make room: rank such servers last.
                d += 1e3;
            }
            let dp = match last {
                Some((b, e, dp)) if b == base && e == extra => dp,
                _ => {
                    let dp = curve.power_w((base + extra) / c) - curve.power_w(base / c);
                    last = Some((base, extra, dp));
                    dp
                }
            };
            let mut price = ctx.energy_w[t];
            if let Some(l) = ctx.inst.server_loop[s] {
                if self.rec[l][t] < ctx.heat_cap_w[l][t] {
                    price -= ctx.heat_w[l] * ctx.recovery[s];
                }
            }
            d += price * dp;
        }
        d
    }

    /// Load of server `s` at step `t`, cores: its interactive load plus the
    /// cores of its batch VMs, added in VM order.
    pub fn load_at(&self, ctx: &Ctx<'_>, s: usize, t: usize) -> f64 {
        let mut load = self.fixed[s];
        if self.n_batch[s] == 0 {
            return load;
        }
        for &v in &self.vms_on[s] {
            if ctx.jobs[v].is_some() {
                load += self.cores[v][t];
            }
        }
        load
    }

    /// Mean load of server `s` over the horizon, cores.
    pub fn mean_load(&self, ctx: &Ctx<'_>, s: usize) -> f64 {
        (0..ctx.nt).map(|t| self.load_at(ctx, s, t)).sum::<f64>() / ctx.nt as f64
    }

    /// Highest load of server `s` over the horizon, cores.
    pub fn peak_load(&self, ctx: &Ctx<'_>, s: usize) -> f64 {
        (0..ctx.nt)
            .map(|t| self.load_at(ctx, s, t))
            .fold(0.0, f64::max)
    }
}
