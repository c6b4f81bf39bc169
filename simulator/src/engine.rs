//! The closed loop: every control period, build a snapshot of the simulated
//! site, plan it with the scheduler crate in-process, apply placements,
//! on/off and batch cores; run the physics at the physics step in between.
//!
//! Planning is `scheduler::period` — the same period planner the live
//! controller runs: the engine is its `SnapshotSource`, and the planner
//! walks the fallback ladder (the full snapshot; batch deadlines relaxed for
//! this plan only; without the pending VMs, which wait a period; the
//! migration budget lifted) with the optimiser's carry. When every rung
//! fails, the previous placement and on/off states are kept and batch work
//! runs as soon as possible where it is. Each case is counted
//! (`plan_failures`, `plans_kept`).
//!
//! Batch deadlines: before each plan, a job whose remaining work no longer
//! fits before its deadline at full speed is counted as a deadline miss at
//! once and re-planned with `period::overdue_deadline`; snapshots show
//! `period::planning_deadline`, which keeps a job whose slack falls below
//! one horizon on pace. A job still running when its deadline passes is
//! counted then.

use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use scheduler::model::{HeatLoop, Snapshot, Vm, VmKind, SNAPSHOT_SCHEMA};
use scheduler::period::{self, PeriodDecision, PeriodPlanner, Rung, SnapshotSource, Validation};
use scheduler::{Solution, SolveOptions, SolverKind};
use tracing::{debug, warn};

use crate::error::SimError;
use crate::physics::server::{PeriodInput, ServerBank};
use crate::scenario::{PlanningPrices, Scenario, SchedulerKind};
use crate::series::{ConsumerRow, LoopRow, PlanRow, Row, Series, ServerRow};
use crate::site::{Demand, Site};
use crate::summary::{Summary, Timing};
use crate::workload::{self, Job};

const EPS: f64 = 1e-6;

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Control periods done.
    pub done: u64,
    /// Control periods in the run.
    pub total: u64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Totals and metrics.
    pub summary: Summary,
    /// Time series.
    pub series: Series,
    /// Where the wall time went.
    pub timing: Timing,
    /// Server ids, by index (for per-server series).
    pub server_ids: Vec<String>,
    /// Group name of each server.
    pub server_groups: Vec<String>,
    /// Loop id of each server, if any.
    pub server_loops: Vec<Option<String>>,
    /// Loop ids.
    pub loop_ids: Vec<String>,
    /// Consumer ids.
    pub consumer_ids: Vec<String>,
    /// Description of the weather.
    pub weather: String,
}

/// A VM in the run (arrived, not finished).
#[derive(Debug, Clone)]
struct Active {
    job: usize,
    /// The job's kind, vCPUs, mean load and memory (copied: the per-period
    /// passes over every VM read them from here, in order).
    kind: VmKind,
    vcpus: f64,
    load: f64,
    mem_gib: f64,
    host: Option<usize>,
    /// The host its snapshot record names.
    shown_host: Option<usize>,
    left_core_h: f64,
    deadline: Option<DateTime<Utc>>,
    missed: bool,
    grant: f64,
    /// Batch cores per horizon step of the last plan.
    planned: Vec<f64>,
}

impl Active {
    /// An entry standing for no job: what `update_sorted` leaves in a slot
    /// whose entry it has moved out, until the slot is overwritten.
    fn vacant() -> Self {
        Self {
            job: 0,
            kind: VmKind::Batch,
            vcpus: 0.0,
            load: 0.0,
            mem_gib: 0.0,
            host: None,
            shown_host: None,
            left_core_h: 0.0,
            deadline: None,
            missed: false,
            grant: 0.0,
            planned: Vec::new(),
        }
    }
}

/// The snapshot record counterpart of [`Active::vacant`].
fn vacant_vm() -> Vm {
    Vm {
        id: String::new(),
        vcpus: 0,
        mem_gib: 0.0,
        image: None,
        host: None,
        kind: VmKind::Batch,
        load: None,
        work_core_h: None,
        deadline: None,
        migratable: false,
    }
}

/// Apply a period's changes to an id-ordered list: the elements at `gone`
/// (ascending indices) leave, and item `j` of `items` comes in before the
/// element at `at[j]` (non-decreasing; indices of the list as it was). Only
/// the stretch from the first change to the last is rebuilt; the elements
/// after it move once, in one block, by the change in length — not at all
/// when as many leave as arrive. Elements are moved out of the stretch
/// (not cloned), so `filler` makes the vacant values left in their slots
/// until the stretch is spliced back.
fn update_sorted<T>(
    list: &mut Vec<T>,
    gone: &[usize],
    items: impl Iterator<Item = T>,
    at: &[usize],
    filler: impl Fn() -> T,
) {
    let firsts = [gone.first().copied(), at.first().copied()];
    let Some(from) = firsts.into_iter().flatten().min() else {
        return;
    };
    let lasts = [gone.last().map(|&g| g + 1), at.last().copied()];
    let to = lasts.into_iter().flatten().max().unwrap_or(from);
    let mut stretch = Vec::with_capacity(to - from + at.len());
    let mut gone = gone.iter().peekable();
    let mut items = items.zip(at).peekable();
    for i in from..to {
        while let Some((item, _)) = items.next_if(|&(_, &p)| p <= i) {
            stretch.push(item);
        }
        if gone.next_if(|&&g| g == i).is_none() {
            stretch.push(std::mem::replace(&mut list[i], filler()));
        }
    }
    stretch.extend(items.map(|(item, _)| item));
    // The leaving elements and the vacant values are dropped here.
    list.splice(from..to, stretch);
}

/// Call `f(host, run)` for each run of adjacent hosted VMs of one host, in
/// order (VMs without a host are skipped). Sums per host taken run by run,
/// in a register, add in VM order as element-wise sums would.
fn for_each_run(active: &[Active], mut f: impl FnMut(usize, &[Active])) {
    let mut i = 0;
    while i < active.len() {
        let Some(s) = active[i].host else {
            i += 1;
            continue;
        };
        let len = active[i..]
            .iter()
            .position(|a| a.host != Some(s))
            .unwrap_or(active.len() - i);
        f(s, &active[i..i + len]);
        i += len;
    }
}

/// VMs in the lists, counted as they change (for the output rows and the
/// unserved interactive demand, without a pass over every VM).
#[derive(Debug, Default)]
struct Counts {
    /// Interactive VMs.
    interactive: usize,
    /// VMs with a host.
    hosted: usize,
    /// Interactive VMs with a host.
    hosted_interactive: usize,
}

/// Running totals.
#[derive(Debug, Default)]
struct Totals {
    it_kwh: f64,
    cooling_kwh: f64,
    hp_kwh: f64,
    recovered_kwh: f64,
    used_kwh: f64,
    delivered_kwh: f64,
    demand_kwh: f64,
    backup_kwh: f64,
    electricity_cost: f64,
    heat_value: f64,
    grid_co2_kg: f64,
    avoided_co2_kg: f64,
    max_temp_c: f64,
    thermal_s: f64,
    sla_s: f64,
    migrations: usize,
    switches: usize,
    batch_jobs: usize,
    completed: usize,
    misses: usize,
    plans: usize,
    plan_failures: usize,
    plans_kept: usize,
}

/// Accumulates physics steps into one output row.
#[derive(Debug, Default)]
struct Bucket {
    row: Row,
    steps: usize,
}

/// Run a scenario (already validated).
pub fn run(
    sc: &Scenario,
    progress: Option<&(dyn Fn(Progress) + Sync)>,
) -> Result<Outcome, SimError> {
    let started = Instant::now();
    let site = Site::build(sc)?;
    let jobs = workload::generate(sc);
    let mut e = Engine::new(sc, &site, &jobs);
    e.price_series = sc.price_series().map_err(SimError::from)?;
    if sc.prices.planning == PlanningPrices::Flat {
        e.flat_planning_price = Some(e.mean_planning_price());
    }
    e.run(progress);
    let wall_s = started.elapsed().as_secs_f64();
    let summary = e.summary(wall_s);
    let timing = Timing {
        physics_s: e.physics.as_secs_f64(),
        planning_s: e.planning.as_secs_f64(),
        solver_s: e.solver.as_secs_f64(),
        snapshot_s: e.snapshotting.as_secs_f64(),
        wall_s,
        server_steps: e.server_steps,
        plans: e.t.plans,
    };
    Ok(Outcome {
        summary,
        series: std::mem::take(&mut e.series),
        timing,
        server_ids: site.server_ids.clone(),
        server_groups: site
            .server_group
            .iter()
            .map(|&g| site.group_names[g].clone())
            .collect(),
        server_loops: site
            .snapshot_servers
            .iter()
            .map(|s| s.heat_loop.clone())
            .collect(),
        loop_ids: site.loops.iter().map(|l| l.id.clone()).collect(),
        consumer_ids: site.consumers.iter().map(|c| c.id.clone()).collect(),
        weather: site.weather.describe(),
    })
}

/// The engine as the period planner's snapshot source at `t_s`; `index`
/// maps the last snapshot's VMs to `active`.
struct Source<'e, 'a> {
    engine: &'e mut Engine<'a>,
    t_s: f64,
    index: Vec<usize>,
    building: Duration,
}

impl SnapshotSource for Source<'_, '_> {
    fn has_pending(&self) -> bool {
        self.engine.active.iter().any(|a| a.host.is_none())
    }

    fn snapshot(&mut self, rung: Rung) -> Snapshot {
        let began = Instant::now();
        let (snap, index) = self
            .engine
            .snapshot(self.t_s, rung.with_pending, rung.relax_deadlines);
        self.index = index;
        self.building += began.elapsed();
        snap
    }

    fn restore(&mut self, snap: Snapshot) {
        self.engine.restore(snap);
    }
}

struct Engine<'a> {
    sc: &'a Scenario,
    site: &'a Site,
    jobs: &'a [Job],
    bank: ServerBank,
    consumers: Vec<Demand>,
    active: Vec<Active>,
    next_job: usize,
    t: Totals,
    series: Series,
    bucket: Bucket,
    steps_per_bucket: usize,
    physics: Duration,
    planning: Duration,
    solver: Duration,
    snapshotting: Duration,
    server_steps: u64,
    periods: u64,
    /// Hour of day at the start.
    start_hour: f64,
    /// The snapshot's server records, kept between plans.
    snap_servers: Vec<scheduler::model::Server>,
    /// The snapshot record of each VM of `active`, in the same order, kept
    /// between plans and lent whole to a snapshot of every VM (no
    /// per-period allocation or move of records).
    records: Vec<Vm>,
    /// Indices in `active` of the jobs finished in the last period, to
    /// leave the lists at the next update.
    retired: Vec<usize>,
    /// Per server, the first-fit limits of hosted vCPUs, memory and
    /// fixed (peak interactive) cores, tolerance included.
    fit_limits: Vec<[f64; 3]>,
    /// VMs in the lists.
    counts: Counts,
    /// The period planner (with the optimiser's carry); `None` only while
    /// it plans.
    planner: Option<PeriodPlanner>,
    /// `prices.electricity_file`, read.
    price_series: Option<protocol::series::PriceSeries>,
    /// With `prices.planning = "flat"`: the price the planner sees.
    flat_planning_price: Option<f64>,
}

impl<'a> Engine<'a> {
    fn new(sc: &'a Scenario, site: &'a Site, jobs: &'a [Job]) -> Self {
        let n = site.server_ids.len();
        let bank = ServerBank {
            group: site.server_group.clone(),
            on: site.snapshot_servers.iter().map(|s| s.on).collect(),
            temp_c: site
                .server_group
                .iter()
                .map(|&g| site.groups[g].inlet_c)
                .collect(),
            interactive_cores: vec![0.0; n],
            batch_cores: vec![0.0; n],
            vms: vec![0; n],
            period: Vec::new(),
        };
        let out_step = sc.output.step_s.unwrap_or(sc.sim.control_period_s);
        Self {
            sc,
            site,
            jobs,
            bank,
            consumers: site.consumers.iter().map(|c| c.demand.clone()).collect(),
            active: Vec::new(),
            next_job: 0,
            t: Totals {
                max_temp_c: f64::NEG_INFINITY,
                ..Totals::default()
            },
            series: Series {
                step_s: out_step,
                ..Series::default()
            },
            bucket: Bucket::default(),
            steps_per_bucket: (out_step / sc.sim.physics_step_s).round() as usize,
            physics: Duration::ZERO,
            planning: Duration::ZERO,
            solver: Duration::ZERO,
            snapshotting: Duration::ZERO,
            server_steps: 0,
            periods: 0,
            snap_servers: site.snapshot_servers.clone(),
            records: Vec::new(),
            retired: Vec::new(),
            fit_limits: site
                .server_group
                .iter()
                .map(|&gi| {
                    let g = &site.groups[gi];
                    [
                        g.cores * sc.policy.cpu_overcommit + EPS,
                        site.group_mem_gib[gi] + EPS,
                        g.u_cap * g.cores + EPS,
                    ]
                })
                .collect(),
            counts: Counts::default(),
            planner: Some(PeriodPlanner::new(
                SolveOptions {
                    solver: match sc.sim.scheduler {
                        SchedulerKind::Greedy => SolverKind::Greedy,
                        _ => SolverKind::Optimizer,
                    },
                    time_limit: sc.sim.plan_time_limit_ms.map(Duration::from_millis),
                    with_baseline: sc.sim.compare_baseline,
                    skip_lower_bound: !sc.sim.lower_bound,
                },
                // Snapshots are built from a validated scenario; the first
                // one of a run is checked in full all the same.
                Validation::First,
            )),
            price_series: None,
            flat_planning_price: None,
            start_hour: {
                let s = sc.sim.start;
                f64::from(s.hour()) + f64::from(s.minute()) / 60.0 + f64::from(s.second()) / 3600.0
            },
        }
    }

    fn now(&self, t_s: f64) -> DateTime<Utc> {
        self.sc.sim.start + chrono::Duration::milliseconds((t_s * 1000.0).round() as i64)
    }

    fn hour_at(&self, t_s: f64) -> f64 {
        (self.start_hour + t_s / 3600.0).rem_euclid(24.0)
    }

    /// Price per kWh and grid carbon intensity (g CO2/kWh) at `t_s`: the
    /// price series where it has a value (past its end, the same time of day
    /// of its last day), else the scenario's tariff; the carbon intensity
    /// from the series where it has one, else `prices.carbon_g_per_kwh`.
    fn tariff_at(&self, t_s: f64) -> (f64, f64) {
        let hour = self.hour_at(t_s).floor() as u32;
        let p = &self.sc.prices;
        let carbon = || p.carbon_g_per_kwh.at_hour(hour);
        match self.price_series.as_ref().and_then(|s| s.at(self.now(t_s))) {
            Some(pt) => (pt.price_per_kwh, pt.carbon_g_per_kwh.unwrap_or_else(carbon)),
            None => (p.electricity_per_kwh.at_hour(hour), carbon()),
        }
    }

    /// The price per kWh the planner sees at `t_s`: the tariff plus the
    /// carbon price (`carbon_price_per_t × g/kWh / 10⁶`), or its mean over
    /// the run with `prices.planning = "flat"`.
    fn price_at(&self, t_s: f64) -> f64 {
        if let Some(mean) = self.flat_planning_price {
            return mean;
        }
        let (price, carbon) = self.tariff_at(t_s);
        price + self.sc.prices.carbon_price_per_t * carbon / 1e6
    }

    /// The mean planning price over the run, at control-period midpoints.
    fn mean_planning_price(&self) -> f64 {
        let period = self.sc.sim.control_period_s;
        let n = ((self.sc.sim.days * 86_400.0 / period).ceil() as u64).max(1);
        (0..n)
            .map(|k| self.price_at((k as f64 + 0.5) * period))
            .sum::<f64>()
            / n as f64
    }

    fn run(&mut self, progress: Option<&(dyn Fn(Progress) + Sync)>) {
        let sim = &self.sc.sim;
        let period = sim.control_period_s;
        let total = (sim.days * 86_400.0 / period).ceil() as u64;
        let substeps = (period / sim.physics_step_s).round() as usize;
        let decay: Vec<f64> = self
            .site
            .groups
            .iter()
            .map(|g| g.decay(sim.physics_step_s))
            .collect();
        for p in 0..total {
            let t0 = p as f64 * period;
            let began = Instant::now();
            self.admit(t0);
            self.check_deadlines(t0);
            let offset = (p % sim.replan_periods as u64) as usize;
            if offset == 0 || sim.scheduler == SchedulerKind::None {
                self.plan(t0);
            } else {
                self.follow_plan(offset);
            }
            self.planning += began.elapsed();

            let began = Instant::now();
            let factors: Vec<f64> = (0..substeps)
                .map(|k| {
                    let h = self.hour_at(t0 + (k as f64 + 0.5) * sim.physics_step_s);
                    workload::load_factor(self.sc.workload.diurnal_amplitude, h)
                })
                .collect();
            let totals = self.bank.run_period(
                &self.site.groups,
                PeriodInput {
                    dt_s: sim.physics_step_s,
                    load_factor: &factors,
                    decay: &decay,
                    loops: self.site.loops.len(),
                },
            );
            self.server_steps += (substeps * self.bank.len()) as u64;
            self.facility(t0, &totals, substeps);
            self.account_servers(t0);
            self.physics += began.elapsed();

            let began = Instant::now();
            self.progress_batch(t0 + period);
            self.planning += began.elapsed();
            self.periods = p + 1;
            if let Some(f) = progress {
                f(Progress { done: p + 1, total });
            }
        }
        self.update_lists(&[]);
        if self.bucket.steps > 0 {
            self.flush_bucket();
        }
    }

    /// Admit VMs that arrived by `t_s` and drop the jobs retired at the end
    /// of the last period, keeping `active` (and `records`) in VM-id order:
    /// the order of the snapshot's VMs, which the planners' tie-breaks follow.
    fn admit(&mut self, t_s: f64) {
        let first = self.next_job;
        while self.next_job < self.jobs.len() && self.jobs[self.next_job].arrival_s <= t_s + EPS {
            if self.jobs[self.next_job].kind == VmKind::Batch {
                self.t.batch_jobs += 1;
            }
            self.next_job += 1;
        }
        let jobs = self.jobs;
        let mut arrived: Vec<usize> = (first..self.next_job).collect();
        arrived.sort_by(|&a, &b| jobs[a].id.cmp(&jobs[b].id));
        self.update_lists(&arrived);
    }

    /// One update of the id-ordered lists: the jobs in `retired` leave, the
    /// jobs of `arrived` (sorted by id) come in.
    fn update_lists(&mut self, arrived: &[usize]) {
        let jobs = self.jobs;
        let gone = std::mem::take(&mut self.retired);
        let c = &mut self.counts;
        for a in gone.iter().map(|&i| &self.active[i]) {
            let interactive = a.kind == VmKind::Interactive;
            c.interactive -= usize::from(interactive);
            c.hosted -= usize::from(a.host.is_some());
            c.hosted_interactive -= usize::from(interactive && a.host.is_some());
        }
        c.interactive += arrived
            .iter()
            .filter(|&&job| jobs[job].kind == VmKind::Interactive)
            .count();
        // Where each arrival goes: before the first VM of a greater or equal id.
        let at: Vec<usize> = arrived
            .iter()
            .map(|&job| {
                self.active
                    .partition_point(|a| jobs[a.job].id < jobs[job].id)
            })
            .collect();
        update_sorted(
            &mut self.active,
            &gone,
            arrived.iter().map(|&job| Active {
                job,
                kind: jobs[job].kind,
                vcpus: f64::from(jobs[job].vcpus),
                load: jobs[job].load,
                mem_gib: jobs[job].mem_gib,
                host: None,
                shown_host: None,
                left_core_h: jobs[job].work_core_h,
                deadline: jobs[job].deadline,
                missed: false,
                grant: 0.0,
                planned: Vec::new(),
            }),
            &at,
            Active::vacant,
        );
        if self.sc.sim.scheduler != SchedulerKind::None {
            update_sorted(
                &mut self.records,
                &gone,
                arrived.iter().map(|&job| {
                    let j = &jobs[job];
                    Vm {
                        id: j.id.clone(),
                        vcpus: j.vcpus,
                        mem_gib: j.mem_gib,
                        image: j.image.clone(),
                        host: None,
                        kind: j.kind,
                        load: None,
                        work_core_h: None,
                        deadline: None,
                        migratable: j.migratable,
                    }
                }),
                &at,
                vacant_vm,
            );
        }
        self.retired = gone;
        self.retired.clear();
    }

    /// Count jobs that can no longer make their deadline and give them an
    /// effective deadline the planner can meet ([`period::overdue_deadline`]).
    fn check_deadlines(&mut self, t_s: f64) {
        let now = self.now(t_s);
        let period = self.sc.sim.control_period_s;
        for a in &mut self.active {
            let Some(d) = a.deadline else { continue };
            if let Some(late) = period::overdue_deadline(now, d, a.left_core_h, a.vcpus, period) {
                if !a.missed {
                    a.missed = true;
                    self.t.misses += 1;
                }
                a.deadline = Some(late);
            }
        }
    }

    fn plan(&mut self, t_s: f64) {
        match self.sc.sim.scheduler {
            SchedulerKind::None => self.first_fit(t_s),
            SchedulerKind::Greedy | SchedulerKind::Optimizer => self.solve(t_s),
        }
        self.apply_to_bank();
    }

    /// Between plans (`sim.replan_periods` > 1): apply the batch cores the
    /// last plan gave for this step of its horizon.
    fn follow_plan(&mut self, offset: usize) {
        for a in &mut self.active {
            a.grant = if a.host.is_some() {
                a.planned.get(offset).copied().unwrap_or(0.0)
            } else {
                0.0
            };
        }
        self.apply_to_bank();
    }

    /// Interactive load factor used in snapshots: the highest over the horizon.
    fn planning_factor(&self, t_s: f64) -> f64 {
        let sim = &self.sc.sim;
        let n = (sim.horizon_steps as f64 * sim.control_period_s / 900.0)
            .ceil()
            .max(1.0) as usize;
        (0..=n)
            .map(|k| {
                workload::load_factor(
                    self.sc.workload.diurnal_amplitude,
                    self.hour_at(t_s + k as f64 * 900.0),
                )
            })
            .fold(0.0, f64::max)
    }

    /// Build the snapshot of the site at `t_s`. The server records, and
    /// with `with_pending` the VM records, are lent to it: give them back
    /// with [`Engine::restore`]. The snapshot's VM `k` is `active[index[k]]`.
    fn snapshot(&mut self, t_s: f64, with_pending: bool, relax: bool) -> (Snapshot, Vec<usize>) {
        let sim = &self.sc.sim;
        let period = sim.control_period_s;
        let steps = sim.horizon_steps;
        let now = self.now(t_s);
        let factor = self.planning_factor(t_s);
        let mut servers = std::mem::take(&mut self.snap_servers);
        for (s, srv) in servers.iter_mut().enumerate() {
            srv.on = self.bank.on[s];
        }
        for (a, vm) in self.active.iter_mut().zip(&mut self.records) {
            let batch = a.kind == VmKind::Batch;
            if a.shown_host != a.host {
                vm.host = a.host.map(|h| self.site.server_ids[h].clone());
                a.shown_host = a.host;
            }
            vm.load = (!batch).then(|| (a.load * factor).min(1.0));
            vm.work_core_h = batch.then_some(a.left_core_h.max(0.0));
            vm.deadline = match (batch, a.deadline) {
                (true, Some(d)) => Some(period::planning_deadline(
                    now,
                    d,
                    a.left_core_h,
                    a.vcpus,
                    period,
                    steps,
                    relax,
                )),
                _ => None,
            };
        }
        let (vms, index) = if with_pending {
            (
                std::mem::take(&mut self.records),
                (0..self.active.len()).collect(),
            )
        } else {
            // A fallback plan without the pending VMs (rare): copies.
            let index: Vec<usize> = (0..self.active.len())
                .filter(|&i| self.active[i].host.is_some())
                .collect();
            (
                index.iter().map(|&i| self.records[i].clone()).collect(),
                index,
            )
        };
        let prices: Vec<f64> = (0..steps)
            .map(|k| self.price_at(t_s + (k as f64 + 0.5) * period))
            .collect();
        let mean_price = prices.iter().sum::<f64>() / steps as f64;
        let loops = self
            .site
            .loops
            .iter()
            .map(|l| {
                let c = &self.site.consumers[l.consumer];
                let gain = l.lift.gain();
                let demand_kw = (0..steps)
                    .map(|k| self.forecast_demand_kw(l.consumer, t_s, k) / gain)
                    .collect();
                HeatLoop {
                    id: l.id.clone(),
                    demand_kw,
                    // Value per kWh of recovered heat: what it is worth at the
                    // consumer, less the heat pump electricity it takes.
                    heat_value_per_kwh: (c.heat_value_per_kwh * gain - mean_price * (gain - 1.0))
                        .max(0.0),
                    max_kw: l.max_kw,
                }
            })
            .collect();
        let snap = Snapshot {
            schema: SNAPSHOT_SCHEMA.to_string(),
            site: self.sc.name.clone(),
            time: now,
            step_s: period,
            steps,
            electricity_price_per_kwh: prices,
            servers,
            vms,
            images: self.sc.images.clone(),
            loops,
            policy: self.sc.policy.clone(),
        };
        (snap, index)
    }

    /// Take back the records lent to a snapshot.
    fn restore(&mut self, snap: Snapshot) {
        self.snap_servers = snap.servers;
        if self.records.is_empty() {
            self.records = snap.vms;
        }
    }

    /// Forecast (perfect weather knowledge) of a consumer's demand in
    /// horizon step `k` from `t_s`, kW.
    fn forecast_demand_kw(&self, c: usize, t_s: f64, k: usize) -> f64 {
        let period = self.sc.sim.control_period_s;
        let mid = t_s + (k as f64 + 0.5) * period;
        match &self.consumers[c] {
            Demand::Profile(h) => h.at_hour(self.hour_at(mid).floor() as u32),
            Demand::Greenhouse(g) => {
                let w = self.site.weather.at(mid);
                let sp = g.setpoint_c(self.hour_at(mid));
                let w_ = if k == 0 {
                    g.demand_w(period, sp, w.outdoor_c, w.ghi_w_per_m2)
                } else {
                    g.steady_demand_w(sp, w.outdoor_c, w.ghi_w_per_m2)
                };
                w_ / 1000.0
            }
        }
    }

    /// Plan the period at `t_s` with the shared [`PeriodPlanner`] (its
    /// fallback ladder); when every rung fails, keep the previous placement
    /// and run batch work as soon as possible where it is.
    fn solve(&mut self, t_s: f64) {
        self.t.plans += 1;
        let mut planner = self.planner.take().expect("the planner is home");
        let began = Instant::now();
        let mut src = Source {
            engine: self,
            t_s,
            index: Vec::new(),
            building: Duration::ZERO,
        };
        let decision = planner.plan(&mut src, &mut |_, solved| {
            if let Err(e) = solved {
                debug!(t_s, error = %e, "Plan failed.");
            }
        });
        let (index, building) = (std::mem::take(&mut src.index), src.building);
        self.planner = Some(planner);
        self.snapshotting += building;
        self.solver += began.elapsed().saturating_sub(building);
        if decision.first_rung_failed() {
            self.t.plan_failures += 1;
        }
        match decision {
            PeriodDecision::Planned(p) => self.apply_solution(t_s, &p.solution, &index),
            PeriodDecision::Kept { .. } => self.keep(t_s),
        }
    }

    /// No plan this period: the previous placement stays.
    fn keep(&mut self, t_s: f64) {
        warn!(
            t_s,
            "No plan for this period; keeping the previous placement."
        );
        self.t.plans_kept += 1;
        self.grant_asap();
        self.series.plans.push(PlanRow {
            t_s,
            solver: "kept".into(),
            servers_on: self.bank.on.iter().filter(|&&o| o).count(),
            ..PlanRow::default()
        });
    }

    /// Apply a plan: the snapshot's VM `k` is `active[index[k]]`, its
    /// servers are the site's, in order.
    fn apply_solution(&mut self, t_s: f64, sol: &Solution, index: &[usize]) {
        let d = &sol.decisions;
        for (k, &i) in index.iter().enumerate() {
            let a = &mut self.active[i];
            a.host = Some(d.host[k]);
            if a.kind == VmKind::Batch {
                a.planned.clear();
                a.planned.extend_from_slice(&d.batch_cores[k]);
                a.grant = a.planned.first().copied().unwrap_or(0.0);
            } else {
                a.grant = 0.0;
            }
        }
        self.bank.on.copy_from_slice(&d.on);
        // Counted against the snapshot, whose hosts and on/off states were
        // the simulator's own.
        let o = &sol.evaluation.objective;
        self.t.switches += o.switches;
        self.t.migrations += o.migrations;
        self.series.plans.push(PlanRow {
            t_s,
            solver: sol.solver.to_string(),
            cost: o.cost,
            baseline_cost: sol.baseline_cost,
            lower_bound: sol.lower_bound,
            solve_ms: sol.solve_ms,
            migrations: o.migrations,
            switches: o.switches,
            servers_on: d.on.iter().filter(|&&v| v).count(),
            energy_kwh: o.energy_kwh,
            heat_delivered_kwh: o.heat_delivered_kwh,
        });
    }

    /// Batch grants when no plan is available: as fast as the work allows.
    fn grant_asap(&mut self) {
        let period_h = self.sc.sim.control_period_s / 3600.0;
        for a in &mut self.active {
            let j = &self.jobs[a.job];
            a.grant = if j.kind == VmKind::Batch && a.host.is_some() {
                f64::from(j.vcpus).min(a.left_core_h / period_h)
            } else {
                0.0
            };
            a.planned = vec![a.grant];
        }
    }

    /// `scheduler = "none"`: first fit of unplaced VMs (never moved after),
    /// servers never switched, batch work as soon as possible (earliest
    /// deadline first within each server's headroom).
    fn first_fit(&mut self, t_s: f64) {
        let sc = self.sc;
        let n = self.bank.len();
        let peak = 1.0 + sc.workload.diurnal_amplitude;
        let mut vcpus = vec![0.0; n];
        let mut mem = vec![0.0; n];
        let mut fixed = vec![0.0; n];
        for_each_run(&self.active, |s, run| {
            let (mut v, mut m, mut x) = (vcpus[s], mem[s], fixed[s]);
            for a in run {
                v += a.vcpus;
                m += a.mem_gib;
                x += a.vcpus * a.load * peak;
            }
            (vcpus[s], mem[s], fixed[s]) = (v, m, x);
        });
        for a in &mut self.active {
            if a.host.is_some() {
                continue;
            }
            let need_fixed = a.vcpus * a.load * peak;
            let found = (0..n).find(|&s| {
                let [max_vcpus, max_mem, max_fixed] = self.fit_limits[s];
                self.bank.on[s]
                    && vcpus[s] + a.vcpus <= max_vcpus
                    && mem[s] + a.mem_gib <= max_mem
                    && fixed[s] + need_fixed <= max_fixed
            });
            if let Some(s) = found {
                a.host = Some(s);
                vcpus[s] += a.vcpus;
                mem[s] += a.mem_gib;
                fixed[s] += need_fixed;
            }
        }
        // Batch: earliest deadline first per server, within the headroom left
        // by interactive load now.
        let period_h = sc.sim.control_period_s / 3600.0;
        let factor = self.planning_factor(t_s);
        let mut headroom: Vec<f64> = (0..n)
            .map(|s| {
                let g = &self.site.groups[self.site.server_group[s]];
                g.u_cap * g.cores
            })
            .collect();
        for_each_run(&self.active, |s, run| {
            let mut h = headroom[s];
            for a in run {
                if a.kind == VmKind::Interactive {
                    h -= a.vcpus * a.load * factor;
                }
            }
            headroom[s] = h;
        });
        // By deadline, then id: `active` is in id order, so by index.
        let mut order: Vec<(Option<DateTime<Utc>>, usize)> = (self.active.iter().enumerate())
            .filter(|(_, a)| a.kind == VmKind::Batch)
            .map(|(i, a)| (a.deadline, i))
            .collect();
        order.sort_unstable();
        for (_, i) in order {
            let a = &mut self.active[i];
            a.grant = match a.host {
                Some(s) => {
                    let g = a
                        .vcpus
                        .min(a.left_core_h / period_h)
                        .min(headroom[s].max(0.0));
                    headroom[s] -= g;
                    g
                }
                None => 0.0,
            };
        }
        self.t.plans += 1;
        self.series.plans.push(PlanRow {
            t_s,
            solver: "first-fit".into(),
            servers_on: self.bank.on.iter().filter(|&&o| o).count(),
            ..PlanRow::default()
        });
    }

    fn apply_to_bank(&mut self) {
        let b = &mut self.bank;
        b.interactive_cores.fill(0.0);
        b.batch_cores.fill(0.0);
        b.vms.fill(0);
        let counts = &mut self.counts;
        (counts.hosted, counts.hosted_interactive) = (0, 0);
        for_each_run(&self.active, |s, run| {
            // A plan never places VMs on an off server; be safe anyway.
            b.on[s] = true;
            let (mut inter, mut batch) = (b.interactive_cores[s], b.batch_cores[s]);
            for a in run {
                match a.kind {
                    VmKind::Interactive => {
                        inter += a.vcpus * a.load;
                        counts.hosted_interactive += 1;
                    }
                    VmKind::Batch => batch += a.grant,
                }
            }
            b.vms[s] += run.len() as u32;
            counts.hosted += run.len();
            (b.interactive_cores[s], b.batch_cores[s]) = (inter, batch);
        });
    }

    /// Loops, consumers, cooling, prices: one pass over the physics steps.
    fn facility(&mut self, t0: f64, totals: &[f64], substeps: usize) {
        let dt = self.sc.sim.physics_step_s;
        let dt_h = dt / 3600.0;
        let width = 1 + self.site.loops.len();
        let nc = self.site.consumers.len();
        let mut demand = vec![0.0; nc];
        let mut delivered = vec![0.0; nc];
        let mut setpoints = vec![f64::NAN; nc];
        for k in 0..substeps {
            let t = t0 + k as f64 * dt;
            let mid = t + 0.5 * dt;
            let w = self.site.weather.at(mid);
            let hour = self.hour_at(mid);
            let (price, carbon) = self.tariff_at(mid);
            let it_kw = totals[k * width] / 1000.0;
            setpoints.fill(f64::NAN);
            for (c, d) in self.consumers.iter_mut().enumerate() {
                demand[c] = match d {
                    Demand::Profile(h) => h.at_hour(hour.floor() as u32),
                    Demand::Greenhouse(g) => {
                        g.update_screen(hour, w.outdoor_c);
                        let sp = g.setpoint_c(hour);
                        setpoints[c] = sp;
                        g.demand_w(dt, sp, w.outdoor_c, w.ghi_w_per_m2) / 1000.0
                    }
                };
                delivered[c] = 0.0;
            }
            let mut used_total = 0.0;
            let mut hp_total = 0.0;
            if self.bucket.row.loops.len() != self.site.loops.len() {
                self.bucket.row.loops = vec![LoopRow::default(); self.site.loops.len()];
                self.bucket.row.consumers = vec![ConsumerRow::default(); nc];
            }
            for (l, lm) in self.site.loops.iter().enumerate() {
                let recovered = totals[k * width + 1 + l] / 1000.0;
                let c = lm.consumer;
                let f = lm.lift.flow(recovered, demand[c], lm.max_kw);
                delivered[c] += f.delivered_kw;
                used_total += f.used_kw;
                hp_total += f.heat_pump_kw;
                self.t.recovered_kwh += recovered * dt_h;
                self.t.used_kwh += f.used_kw * dt_h;
                let r = &mut self.bucket.row.loops[l];
                r.recovered_kw += recovered;
                r.used_kw += f.used_kw;
                r.delivered_kw += f.delivered_kw;
                r.demand_kw += demand[c];
                r.heat_pump_kw += f.heat_pump_kw;
                r.offered_kw += recovered.min(lm.max_kw) * lm.lift.gain();
                r.supply_c = lm.supply_c;
            }
            let mut heat_value = 0.0;
            for (c, d) in self.consumers.iter_mut().enumerate() {
                let backup = (demand[c] - delivered[c]).max(0.0);
                if let Demand::Greenhouse(g) = d {
                    g.step(
                        dt,
                        demand[c] * 1000.0,
                        setpoints[c],
                        w.outdoor_c,
                        w.ghi_w_per_m2,
                    );
                }
                self.t.demand_kwh += demand[c] * dt_h;
                self.t.delivered_kwh += delivered[c] * dt_h;
                self.t.backup_kwh += backup * dt_h;
                heat_value += self.site.consumers[c].heat_value_per_kwh * delivered[c] * dt_h;
                let r = &mut self.bucket.row.consumers[c];
                r.demand_kw += demand[c];
                r.delivered_kw += delivered[c];
                r.backup_kw += backup;
                r.setpoint_c += if setpoints[c].is_nan() {
                    0.0
                } else {
                    setpoints[c]
                };
                r.indoor_c = match d {
                    Demand::Greenhouse(g) => g.indoor_c,
                    Demand::Profile(_) => f64::NAN,
                };
                if setpoints[c].is_nan() {
                    r.setpoint_c = f64::NAN;
                }
            }
            // Heat not taken by a consumer is rejected by the cooling plant.
            let cooling_kw = (it_kw - used_total).max(0.0) / self.sc.cooling.cop_at(w.outdoor_c);
            let cost = price * (it_kw + cooling_kw + hp_total) * dt_h;
            self.t.grid_co2_kg += carbon / 1000.0 * (it_kw + cooling_kw + hp_total) * dt_h;
            let delivered_kwh: f64 = delivered.iter().sum::<f64>() * dt_h;
            let p = &self.sc.prices;
            self.t.avoided_co2_kg += delivered_kwh / p.boiler_efficiency * p.gas_kg_co2_per_kwh;
            self.t.it_kwh += it_kw * dt_h;
            self.t.cooling_kwh += cooling_kw * dt_h;
            self.t.hp_kwh += hp_total * dt_h;
            self.t.electricity_cost += cost;
            self.t.heat_value += heat_value;

            let b = &mut self.bucket;
            if b.steps == 0 {
                b.row.t_s = t;
            }
            b.steps += 1;
            b.row.outdoor_c += w.outdoor_c;
            b.row.ghi_w_per_m2 += w.ghi_w_per_m2;
            b.row.price_per_kwh += price;
            b.row.carbon_g_per_kwh += carbon;
            b.row.it_kw += it_kw;
            b.row.cooling_kw += cooling_kw;
            b.row.heat_pump_kw += hp_total;
            b.row.electricity_cost += cost;
            b.row.heat_value += heat_value;
            if b.steps == self.steps_per_bucket {
                self.flush_bucket();
            }
        }
    }

    fn flush_bucket(&mut self) {
        let mut b = std::mem::take(&mut self.bucket);
        let n = b.steps as f64;
        let r = &mut b.row;
        for v in [
            &mut r.outdoor_c,
            &mut r.ghi_w_per_m2,
            &mut r.price_per_kwh,
            &mut r.carbon_g_per_kwh,
            &mut r.it_kw,
            &mut r.cooling_kw,
            &mut r.heat_pump_kw,
        ] {
            *v /= n;
        }
        for l in &mut r.loops {
            for v in [
                &mut l.recovered_kw,
                &mut l.used_kw,
                &mut l.delivered_kw,
                &mut l.demand_kw,
                &mut l.heat_pump_kw,
                &mut l.offered_kw,
            ] {
                *v /= n;
            }
        }
        for c in &mut r.consumers {
            for v in [
                &mut c.demand_kw,
                &mut c.delivered_kw,
                &mut c.backup_kw,
                &mut c.setpoint_c,
            ] {
                *v /= n;
            }
        }
        let on = &self.bank.on;
        r.servers_on = on.iter().filter(|&&o| o).count();
        r.vms = self.counts.hosted;
        r.max_temp_c = self
            .bank
            .period
            .iter()
            .map(|p| p.max_temp_c)
            .fold(f64::NEG_INFINITY, f64::max);
        let period = self.sc.sim.control_period_s;
        r.mean_util = if r.servers_on == 0 {
            0.0
        } else {
            (self.bank.period.iter().zip(on))
                .filter(|&(_, &o)| o)
                .map(|(p, _)| p.util_s / period)
                .sum::<f64>()
                / r.servers_on as f64
        };
        r.cum_net_cost = self.t.electricity_cost - self.t.heat_value;
        self.series.rows.push(b.row);
    }

    /// Per-server results of the period: violations, temperatures, series.
    fn account_servers(&mut self, t0: f64) {
        let period = self.sc.sim.control_period_s;
        for (s, p) in self.bank.period.iter().enumerate() {
            self.t.thermal_s += p.thermal_s;
            self.t.sla_s += p.sla_s;
            self.t.max_temp_c = self.t.max_temp_c.max(p.max_temp_c);
            if self.sc.output.per_server {
                let g = &self.site.groups[self.bank.group[s]];
                self.series.servers.push(ServerRow {
                    t_s: t0,
                    server: s,
                    power_w: p.energy_j / period,
                    cpu_util: p.util_s / period,
                    temp_c: self.bank.temp_c[s],
                    cap_w: g.cap_w,
                    on: self.bank.on[s],
                    vms: self.bank.vms[s],
                });
            }
        }
        // Interactive VMs with no host are not served at all.
        let unplaced = self.counts.interactive - self.counts.hosted_interactive;
        self.t.sla_s += unplaced as f64 * period;
    }

    /// Credit batch work done in the period; retire finished jobs; count
    /// deadlines passed with work left.
    fn progress_batch(&mut self, t_end: f64) {
        let now = self.now(t_end);
        let bank = &self.bank;
        let jobs = self.jobs;
        let t = &mut self.t;
        // Finished jobs leave the lists at the next update (with the
        // arrivals, in one pass).
        for (i, a) in self.active.iter_mut().enumerate() {
            if a.kind != VmKind::Batch {
                continue;
            }
            let j = &jobs[a.job];
            if let Some(s) = a.host {
                a.left_core_h -= a.grant * bank.period[s].batch_served_s / 3600.0;
            }
            if a.left_core_h <= EPS * j.work_core_h.max(1.0) {
                t.completed += 1;
                self.retired.push(i);
            } else if !a.missed && j.deadline.is_some_and(|d| d <= now) {
                a.missed = true;
                t.misses += 1;
            }
        }
    }

    fn summary(&self, wall_s: f64) -> Summary {
        let t = &self.t;
        let facility = t.it_kwh + t.cooling_kwh + t.hp_kwh;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Summary {
            scenario: self.sc.name.clone(),
            scheduler: self.sc.sim.scheduler.name().to_string(),
            seed: self.sc.sim.seed,
            servers: self.bank.len(),
            it_energy_kwh: t.it_kwh,
            cooling_energy_kwh: t.cooling_kwh,
            heat_pump_energy_kwh: t.hp_kwh,
            facility_energy_kwh: facility,
            heat_recovered_kwh: t.recovered_kwh,
            heat_used_kwh: t.used_kwh,
            heat_delivered_kwh: t.delivered_kwh,
            heat_demand_kwh: t.demand_kwh,
            heat_coverage: ratio(t.delivered_kwh, t.demand_kwh),
            backup_heat_kwh: t.backup_kwh,
            electricity_cost: t.electricity_cost,
            heat_value: t.heat_value,
            net_cost: t.electricity_cost - t.heat_value,
            grid_co2_kg: t.grid_co2_kg,
            avoided_co2_kg: t.avoided_co2_kg,
            net_co2_kg: t.grid_co2_kg - t.avoided_co2_kg,
            pue: ratio(facility, t.it_kwh),
            erf: ratio(t.delivered_kwh, facility),
            ere: ratio(facility - t.delivered_kwh, t.it_kwh),
            max_component_temp_c: t.max_temp_c,
            thermal_violation_s: t.thermal_s,
            sla_violation_s: t.sla_s,
            migrations: t.migrations,
            switches: t.switches,
            batch_jobs: t.batch_jobs,
            batch_jobs_completed: t.completed,
            batch_deadline_misses: t.misses,
            plans: t.plans,
            plan_failures: t.plan_failures,
            plans_kept: t.plans_kept,
            simulated_s: self.periods as f64 * self.sc.sim.control_period_s,
            wall_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted(host: Option<usize>) -> Active {
        Active {
            host,
            ..Active::vacant()
        }
    }

    fn small(overrides: &[(&str, &str)]) -> Scenario {
        let o: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/small.toml");
        Scenario::load(&path, &o).unwrap()
    }

    #[test]
    fn the_planner_sees_the_price_plus_the_carbon_price_and_the_bill_does_not() {
        let sc = small(&[
            ("prices.carbon_g_per_kwh", "400"),
            ("prices.carbon_price_per_t", "100"),
        ]);
        let site = Site::build(&sc).unwrap();
        let e = Engine::new(&sc, &site, &[]);
        // 00:30 UTC: 0.12 per kWh; 100 per t × 400 g/kWh = 0.04 per kWh.
        assert_eq!(e.tariff_at(1800.0), (0.12, 400.0));
        assert!((e.price_at(1800.0) - 0.16).abs() < 1e-12);
    }

    #[test]
    fn flat_planning_prices_are_the_mean_of_the_tariff_over_the_run() {
        let sc = small(&[("prices.planning", "flat")]);
        let site = Site::build(&sc).unwrap();
        let mut e = Engine::new(&sc, &site, &[]);
        let hourly = [
            0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.21, 0.21, 0.21, 0.21, 0.21, 0.21, 0.21,
            0.21, 0.21, 0.21, 0.30, 0.30, 0.30, 0.30, 0.21, 0.21, 0.12,
        ];
        let mean = hourly.iter().sum::<f64>() / 24.0;
        e.flat_planning_price = Some(e.mean_planning_price());
        for t_s in [0.0, 18.5 * 3600.0] {
            assert!((e.price_at(t_s) - mean).abs() < 1e-9);
        }
        assert_eq!(
            e.tariff_at(18.5 * 3600.0).0,
            0.30,
            "the bill keeps the tariff"
        );
    }

    #[test]
    fn runs_are_adjacent_vms_of_one_host_in_order() {
        let active: Vec<Active> = [Some(0), Some(0), None, Some(0), Some(2), Some(1), Some(1)]
            .into_iter()
            .map(hosted)
            .collect();
        let mut runs = Vec::new();
        for_each_run(&active, |s, run| runs.push((s, run.len())));
        assert_eq!(runs, [(0, 2), (0, 1), (2, 1), (1, 2)]);
        for_each_run(&[], |_, _| panic!("no runs in an empty list"));
    }

    #[test]
    fn update_sorted_drops_and_inserts_in_order() {
        let filler = || -1;
        let mut list = vec![10, 20, 30, 40];
        update_sorted(
            &mut list,
            &[],
            [5, 20, 25, 26, 50].into_iter(),
            &[0, 1, 2, 2, 4],
            filler,
        );
        assert_eq!(list, [5, 10, 20, 20, 25, 26, 30, 40, 50]);
        let mut list = vec![10, 20, 30, 40, 50, 60];
        update_sorted(&mut list, &[1, 2], [25, 35].into_iter(), &[2, 3], filler);
        assert_eq!(list, [10, 25, 35, 40, 50, 60]);
        let mut list = vec![10, 20, 30];
        update_sorted(&mut list, &[0, 2], std::iter::empty(), &[], filler);
        assert_eq!(list, [20]);
        let mut empty: Vec<i32> = Vec::new();
        update_sorted(&mut empty, &[], [1, 2].into_iter(), &[0, 0], filler);
        assert_eq!(empty, [1, 2]);
        let mut list = vec![1, 2];
        update_sorted(&mut list, &[], std::iter::empty(), &[], filler);
        assert_eq!(list, [1, 2]);
    }
}
