//! The exact reference: DESIGN.md §2 written as one mixed-integer linear
//! program and solved to proven optimality (HiGHS behind the `highs` cargo
//! feature, or the pure-Rust microlp for tiny sites).
//!
//! [`solve`] returns an [`ExactOutcome`]: the optimal [`Decisions`], the
//! MILP's objective, whether optimality was proven, and the solver's best
//! bound. It is the yardstick the optimiser is measured against (tests and
//! benchmarks) and `--solver exact` on the command line. It is not meant for
//! large sites: the model has one binary per (VM, server that could host it).
//!
//! # Formulation
//!
//! Sets: servers s, VMs v, steps t, loops ℓ, images i; `S(v)` the servers v
//! could fit on alone (cores × overcommit, memory, interactive load under the
//! temperature cap), only its current host when it is not migratable.
//!
//! - `x[v,s] ∈ {0,1}` (s ∈ S(v)), `Σ_s x[v,s] = 1`, `x[v,s] ≤ on[s]`;
//!   `on[s] ∈ {0,1}`, fixed when the server cannot switch, 0 when even its
//!   idle power breaks the temperature limit.
//! - vCPUs: `Σ_v c_v·x[v,s] ≤ C_s·overcommit·on[s]`.
//! - memory with image sharing: `Σ_v m_v·x[v,s] − Σ_i b_i·(n[i,s] − y[i,s]) ≤
//!   M_s`, `n[i,s] = Σ_{v of i} x[v,s]`, `y[i,s] ≥ x[v,s]`. `y ∈ [0,1]` can be
//!   continuous: it only appears on the left of a `≤`, so the smallest value
//!   the bounds allow — `max_v x[v,s]`, 0 or 1 — is always the best.
//! - batch cores `a[v,s,t] ∈ [0, c_v]`, `a[v,s,t] ≤ c_v·x[v,s]`; work
//!   `Σ_s Σ_{t < deadline step} a·step_h ∈ [min work, remaining work]`.
//! - utilisation by increments: `load[s,t] = C_s·Σ_k d[s,t,k]`, `d[s,t,k] ∈
//!   [0, 0.1]` the share of curve segment k (capped at `min(1, u_max_s)`, the
//!   temperature rule), `Σ_k d ≤ min(1, u_max_s)·on[s]`; power
//!   `p[s,t] = off_w·(1 − on) + P_0·on + Σ_k slope_k·d[s,t,k]`.
//!   Segments must fill in order. Where that is what minimising power does
//!   anyway (convex runs of the curve) no binary is needed; at each kink where
//!   it is not, one binary `z[s,t,b]` forces every segment ≤ b full before any
//!   segment > b is used. That is every concave kink (two SPECpower curves
//!   jump from 0 to 10 %), and — only for a server whose recovered heat is
//!   worth more than its electricity at some step (`π_t < V_ℓ·r_s`), where
//!   the solver would otherwise like to overstate power — every kink where
//!   the slope changes at all (also where the price is negative).
//! - heat: `h[ℓ,t] ∈ [0, min(D, X)]`, `h ≤ Σ_{s∈ℓ} r_s·p[s,t]/1000`;
//!   maximising heat value makes `h` the minimum, as §2 defines it. Off
//!   servers' `off_w` is recovered too, as the evaluator counts it.
//! - migrations `Σ_{placed v} (1 − x[v,host])` ≤ the policy's budget;
//!   switches `Σ_s |on[s] − on_now[s]|` (linear: the current state is known).
//!
//! Objective: §2's cost exactly. Every solution is decoded and passed through
//! [`crate::evaluate::evaluate`] by the callers; tests assert the MILP's
//! objective equals the evaluated cost, which is what validates the model.

use std::collections::HashMap;
use std::time::Duration;

use good_lp::{
    variable, Constraint, Expression, ProblemVariables, Solution, SolutionStatus, SolverModel,
    Variable, WithTimeLimit,
};

use crate::error::PlanError;
use crate::evaluate::Decisions;
use crate::instance::{Instance, EPS};
use crate::model::CURVE_POINTS;

/// Name reported in plans.
pub const NAME: &str = "exact";

/// Relative optimality gap HiGHS is asked to close.
pub const HIGHS_REL_GAP: f64 = 1e-7;

/// Segments of a power curve.
const SEGMENTS: usize = CURVE_POINTS - 1;
/// Width of one curve segment in utilisation.
const SEG_U: f64 = 0.1;
/// Slopes closer than this (W per unit of utilisation) count as equal.
const SLOPE_TOL: f64 = 1e-9;

/// Which MILP solver runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// HiGHS (C++, branch and cut; single thread, relative gap
    /// [`HIGHS_REL_GAP`]). Only with the `highs` cargo feature.
    #[cfg(feature = "highs")]
    Highs,
    /// microlp (pure Rust, plain branch and bound): only practical for tiny
    /// sites (a few servers and VMs).
    Microlp,
}

impl Default for Backend {
    /// HiGHS when built with the `highs` feature, microlp otherwise.
    fn default() -> Self {
        #[cfg(feature = "highs")]
        {
            Self::Highs
        }
        #[cfg(not(feature = "highs"))]
        {
            Self::Microlp
        }
    }
}

impl Backend {
    /// Lower-case name of the backend.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "highs")]
            Self::Highs => "highs",
            Self::Microlp => "microlp",
        }
    }
}

/// What the exact solver found.
#[derive(Debug, Clone)]
pub struct ExactOutcome {
    /// The best decisions found (optimal when `proven_optimal`).
    pub decisions: Decisions,
    /// The MILP's objective for them: §2's cost.
    pub objective: f64,
    /// Whether the solver proved optimality (HiGHS: within a relative gap of
    /// [`HIGHS_REL_GAP`]); `false` when the time limit stopped it first.
    pub proven_optimal: bool,
    /// The solver's best lower bound on the optimal cost, when it has one.
    pub best_bound: Option<f64>,
    /// Size of the model: (binary columns, all columns, rows).
    pub size: ModelSize,
}

/// Size of the MILP that was solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelSize {
    /// Binary columns.
    pub binaries: usize,
    /// All columns.
    pub columns: usize,
    /// Constraints.
    pub rows: usize,
}

/// Columns of the model, in creation order (which is the solvers' column
/// order).
struct Columns {
    vars: ProblemVariables,
    all: Vec<Variable>,
    binaries: usize,
}

impl Columns {
    fn continuous(&mut self, lo: f64, hi: f64) -> Variable {
        let v = self.vars.add(variable().min(lo).max(hi));
        self.all.push(v);
        v
    }

    fn binary(&mut self, lo: f64, hi: f64) -> Variable {
        let v = self.vars.add(variable().binary().min(lo).max(hi));
        self.all.push(v);
        self.binaries += 1;
        v
    }
}

/// Column values by variable.
struct Values {
    index: HashMap<Variable, usize>,
    values: Vec<f64>,
}

impl Solution for Values {
    fn status(&self) -> SolutionStatus {
        SolutionStatus::Optimal
    }

    fn value(&self, variable: Variable) -> f64 {
        self.index
            .get(&variable)
            .map_or(0.0, |&i| self.values.get(i).copied().unwrap_or(0.0))
    }
}

/// The model before it is handed to a solver.
struct Model {
    cols: Columns,
    rows: Vec<Constraint>,
    objective: Expression,
    /// `x[v]`: (server, column) for every server v may go to.
    x: Vec<Vec<(usize, Variable)>>,
    on: Vec<Variable>,
    /// `a[v]`: per allowed server (same order as `x[v]`), one column per step;
    /// empty for interactive VMs.
    a: Vec<Vec<Vec<Variable>>>,
}

/// Solve `inst` exactly with `backend`, stopping after `time_limit` if given
/// (then the best plan found so far is returned, `proven_optimal = false`).
///
/// Errors: [`PlanError::Infeasible`] when no plan meets every hard rule (with
/// the first obstacle found when it is a single VM or server),
/// [`PlanError::Solver`] when the solver fails or finds no plan in time.
pub fn solve(
    inst: &Instance<'_>,
    backend: Backend,
    time_limit: Option<Duration>,
) -> Result<ExactOutcome, PlanError> {
    let model = build(inst)?;
    let size = ModelSize {
        binaries: model.cols.binaries,
        columns: model.cols.all.len(),
        rows: model.rows.len(),
    };
    let index: HashMap<Variable, usize> = model
        .cols
        .all
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, i))
        .collect();

    let raw = match backend {
        #[cfg(feature = "highs")]
        Backend::Highs => {
            // The objective's constant term (off servers, switches,
            // migrations), which the solver's bound leaves out.
            let constant = Values {
                index: HashMap::new(),
                values: Vec::new(),
            }
            .eval(&model.objective);
            run_highs(&model, time_limit, constant)?
        }
        Backend::Microlp => run_microlp(&model, time_limit)?,
    };
    let values = Values {
        index,
        values: raw.values,
    };
    let objective = values.eval(&model.objective);
    let best_bound = match raw.bound {
        Some(b) if b.is_finite() => Some(b),
        _ if raw.proven_optimal => Some(objective),
        _ => None,
    };
    Ok(ExactOutcome {
        decisions: decode(inst, &model, &values),
        objective,
        proven_optimal: raw.proven_optimal,
        best_bound,
        size,
    })
}

/// What a backend returns.
struct RawSolution {
    values: Vec<f64>,
    proven_optimal: bool,
    /// Best bound including the objective's constant.
    bound: Option<f64>,
}

fn run_microlp(model: &Model, time_limit: Option<Duration>) -> Result<RawSolution, PlanError> {
    let mut problem = model
        .cols
        .vars
        .clone()
        .minimise(model.objective.clone())
        .using(good_lp::microlp);
    if let Some(limit) = time_limit {
        problem = problem.with_time_limit(limit.as_secs_f64());
    }
    for c in &model.rows {
        problem.add_constraint(c.clone());
    }
    let sol = problem.solve().map_err(resolution_error)?;
    let proven_optimal = matches!(sol.status(), SolutionStatus::Optimal);
    Ok(RawSolution {
        values: model.cols.all.iter().map(|v| sol.value(*v)).collect(),
        proven_optimal,
        bound: None,
    })
}

#[cfg(feature = "highs")]
fn run_highs(
    model: &Model,
    time_limit: Option<Duration>,
    constant: f64,
) -> Result<RawSolution, PlanError> {
    use highs::{HighsModelStatus, HighsSolutionStatus};

    let mut problem = good_lp::highs(model.cols.vars.clone().minimise(model.objective.clone()));
    for c in &model.rows {
        problem.add_constraint(c.clone());
    }
    // Solved through the highs crate directly: good_lp does not report the
    // dual bound.
    let mut m = problem
        .try_into_inner()
        .map_err(|e| PlanError::Solver(format!("HiGHS: {e}")))?;
    set_option(&mut m, "mip_rel_gap", HIGHS_REL_GAP)?;
    set_option(&mut m, "threads", 1_i32)?;
    set_option(&mut m, "parallel", "off")?;
    set_option(&mut m, "random_seed", 0_i32)?;
    if let Some(limit) = time_limit {
        set_option(&mut m, "time_limit", limit.as_secs_f64().max(1e-3))?;
    }
    let solved = m
        .try_solve()
        .map_err(|e| PlanError::Solver(format!("HiGHS failed: {e:?}")))?;
    let status = solved.status();
    match status {
        HighsModelStatus::Infeasible | HighsModelStatus::UnboundedOrInfeasible => {
            return Err(PlanError::infeasible(
                "exact MILP: no plan meets every hard rule together (capacity, memory, \
                 temperature, batch work, migration budget)",
            ))
        }
        HighsModelStatus::Optimal
        | HighsModelStatus::ReachedTimeLimit
        | HighsModelStatus::ReachedSolutionLimit
        | HighsModelStatus::ReachedInterrupt
        | HighsModelStatus::ReachedIterationLimit
        | HighsModelStatus::ReachedMemoryLimit => {}
        other => {
            return Err(PlanError::Solver(format!(
                "HiGHS stopped with status {other:?}"
            )))
        }
    }
    if solved.primal_solution_status() != HighsSolutionStatus::Feasible {
        return Err(PlanError::Solver(format!(
            "HiGHS found no feasible plan ({status:?})"
        )));
    }
    let bound = solved
        .double_info_value(c"mip_dual_bound")
        .ok()
        .map(|b| b + constant);
    Ok(RawSolution {
        values: solved.get_solution().columns().to_vec(),
        proven_optimal: status == HighsModelStatus::Optimal,
        bound,
    })
}

#[cfg(feature = "highs")]
fn set_option<V: highs::HighsOptionValue>(
    m: &mut highs::Model,
    key: &str,
    value: V,
) -> Result<(), PlanError> {
    m.try_set_option(key, value)
        .map_err(|e| PlanError::Solver(format!("HiGHS option {key}: {e:?}")))
}

fn resolution_error(e: good_lp::ResolutionError) -> PlanError {
    match e {
        good_lp::ResolutionError::Infeasible => PlanError::infeasible(
            "exact MILP: no plan meets every hard rule together (capacity, memory, \
             temperature, batch work, migration budget)",
        ),
        other => PlanError::Solver(format!("exact MILP: {other}")),
    }
}

/// Servers VM `v` could be placed on, judged alone.
fn candidate_servers(inst: &Instance<'_>, v: usize, on_max: &[f64]) -> Vec<usize> {
    let snap = inst.snap;
    let vm = &snap.vms[v];
    let fits = |s: usize| {
        let srv = &snap.servers[s];
        let cores = f64::from(srv.cores);
        on_max[s] > 0.5
            && inst.u_max[s].is_some_and(|u| inst.vm_fixed_cores[v] <= u.min(1.0) * cores + EPS)
            && f64::from(vm.vcpus) <= cores * snap.policy.cpu_overcommit + EPS
            && vm.mem_gib <= srv.mem_gib + EPS
    };
    match inst.vm_host[v] {
        Some(h) if !vm.migratable => {
            if fits(h) {
                vec![h]
            } else {
                Vec::new()
            }
        }
        _ => (0..inst.n_servers()).filter(|&s| fits(s)).collect(),
    }
}

fn build(inst: &Instance<'_>) -> Result<Model, PlanError> {
    let snap = inst.snap;
    let ns = inst.n_servers();
    let nv = inst.n_vms();
    let nt = inst.steps();
    let step_h = inst.step_h();
    let kwh_per_w = snap.step_s / 3.6e6;
    let mut cols = Columns {
        vars: ProblemVariables::new(),
        all: Vec::new(),
        binaries: 0,
    };
    let mut rows: Vec<Constraint> = Vec::new();
    let mut objective = Expression::from(0.0);

    for (l, lp) in snap.loops.iter().enumerate() {
        if lp.heat_value_per_kwh.is_nan() || lp.heat_value_per_kwh < 0.0 {
            return Err(PlanError::invalid(
                format!("loops[{l}].heat_value_per_kwh"),
                "the exact MILP needs a non-negative heat value",
            ));
        }
    }

    // Servers: on/off.
    let mut on_max = vec![1.0; ns];
    let mut on = Vec::with_capacity(ns);
    let mut switches = Expression::from(0.0);
    for (s, srv) in snap.servers.iter().enumerate() {
        let now = if srv.on { 1.0 } else { 0.0 };
        let (mut lo, mut hi): (f64, f64) = if srv.can_switch {
            (0.0, 1.0)
        } else {
            (now, now)
        };
        if inst.u_max[s].is_none() {
            if lo > 0.5 {
                return Err(PlanError::infeasible(format!(
                    "server {}: cannot be switched off and its idle power already exceeds its \
                     temperature limit",
                    srv.id
                )));
            }
            hi = 0.0;
        }
        lo = lo.min(hi);
        on_max[s] = hi;
        let o = cols.binary(lo, hi);
        switches += if srv.on { 1.0 - o } else { Expression::from(o) };
        on.push(o);
    }

    // Placement.
    let mut x: Vec<Vec<(usize, Variable)>> = Vec::with_capacity(nv);
    let mut migrations = Expression::from(0.0);
    for v in 0..nv {
        let servers = candidate_servers(inst, v, &on_max);
        if servers.is_empty() {
            let vm = &snap.vms[v];
            return Err(PlanError::infeasible(format!(
                "vm {} ({} vCPUs, {} GiB{}) fits no server that may be on",
                vm.id,
                vm.vcpus,
                vm.mem_gib,
                if vm.migratable {
                    ""
                } else {
                    ", not migratable"
                }
            )));
        }
        let fixed = servers.len() == 1;
        let xv: Vec<(usize, Variable)> = servers
            .iter()
            .map(|&s| (s, cols.binary(if fixed { 1.0 } else { 0.0 }, 1.0)))
            .collect();
        rows.push(xv.iter().map(|(_, x)| *x).sum::<Expression>().eq(1.0));
        for &(s, xs) in &xv {
            rows.push(Expression::from(xs).leq(on[s]));
        }
        if let Some(h) = inst.vm_host[v] {
            migrations += 1.0;
            if let Some(&(_, xh)) = xv.iter().find(|(s, _)| *s == h) {
                migrations -= xh;
            }
        }
        x.push(xv);
    }
    rows.push(migrations.clone().leq(snap.policy.max_migrations as f64));

    // Per-server sums of placement terms.
    let mut vcpus: Vec<Expression> = vec![Expression::from(0.0); ns];
    let mut mem: Vec<Expression> = vec![Expression::from(0.0); ns];
    let mut load: Vec<Vec<Expression>> = vec![vec![Expression::from(0.0); nt]; ns];
    // (server, image) → y column.
    let mut image_present: HashMap<(usize, usize), Variable> = HashMap::new();
    let mut a: Vec<Vec<Vec<Variable>>> = Vec::with_capacity(nv);
    for v in 0..nv {
        let vm = &snap.vms[v];
        let c_v = f64::from(vm.vcpus);
        let shared = inst.vm_image[v]
            .map(|i| (i, snap.images[i].shared_mem_gib))
            .filter(|&(_, b)| b > 0.0);
        let mut av = Vec::new();
        let mut work = Expression::from(0.0);
        for &(s, xs) in &x[v] {
            vcpus[s] += c_v * xs;
            match shared {
                Some((i, b)) => {
                    mem[s] += (vm.mem_gib - b) * xs;
                    let y = *image_present.entry((s, i)).or_insert_with(|| {
                        let y = cols.continuous(0.0, 1.0);
                        mem[s] += b * y;
                        rows.push(Expression::from(y).leq(on[s]));
                        y
                    });
                    rows.push(Expression::from(xs).leq(y));
                }
                None => mem[s] += vm.mem_gib * xs,
            }
            if inst.is_batch(v) {
                let mut ast = Vec::with_capacity(nt);
                for t in 0..nt {
                    let c = cols.continuous(0.0, c_v);
                    rows.push(Expression::from(c).leq(c_v * xs));
                    load[s][t] += c;
                    if t < inst.batch_steps[v] {
                        work += step_h * c;
                    }
                    ast.push(c);
                }
                av.push(ast);
            } else {
                let f = inst.vm_fixed_cores[v];
                for l in &mut load[s] {
                    *l += f * xs;
                }
            }
        }
        if inst.is_batch(v) && inst.batch_steps[v] > 0 {
            rows.push(work.clone().geq(inst.batch_min_core_h[v]));
            rows.push(work.leq(inst.batch_max_core_h[v]));
        }
        a.push(av);
    }

    // Capacity, memory, utilisation and power per server and step.
    let mut recovered: Vec<Vec<Expression>> =
        vec![vec![Expression::from(0.0); nt]; snap.loops.len()];
    for (s, srv) in snap.servers.iter().enumerate() {
        let cores = f64::from(srv.cores);
        rows.push(std::mem::take(&mut vcpus[s]).leq(cores * snap.policy.cpu_overcommit * on[s]));
        rows.push(std::mem::take(&mut mem[s]).leq(srv.mem_gib * on[s]));
        let curve = inst.curve[s].points_w();
        let off = srv.off_w * (1.0 - on[s]);
        let loop_of = inst.server_loop[s];
        let u_cap = inst.u_max[s].map_or(0.0, |u| u.min(1.0));
        let seg_ub: Vec<f64> = (0..SEGMENTS)
            .map(|k| (u_cap - k as f64 * SEG_U).clamp(0.0, SEG_U))
            .collect();
        let slopes: Vec<f64> = (0..SEGMENTS)
            .map(|k| inst.curve[s].segment_slope(k))
            .collect();
        for t in 0..nt {
            // Whether more power could pay at step t: its recovered heat is
            // worth more than its electricity (or the price is negative).
            let heat_per_kwh =
                loop_of.map_or(0.0, |l| snap.loops[l].heat_value_per_kwh * srv.recovery);
            let heat_pays = snap.electricity_price_per_kwh[t] < heat_per_kwh;
            let mut power = off.clone() + curve[0] * on[s];
            if on_max[s] > 0.5 {
                let d: Vec<Variable> = seg_ub.iter().map(|&ub| cols.continuous(0.0, ub)).collect();
                let u: Expression = d.iter().copied().sum();
                rows.push((cores * u.clone()).eq(std::mem::take(&mut load[s][t])));
                rows.push(u.leq(u_cap * on[s]));
                for k in 0..SEGMENTS {
                    power += slopes[k] * d[k];
                }
                // Kinks where segments must be forced to fill in order.
                let mut prev: Option<Variable> = None;
                for b in 0..SEGMENTS - 1 {
                    if seg_ub[b + 1] <= 0.0 {
                        break;
                    }
                    let concave = slopes[b] > slopes[b + 1] + SLOPE_TOL;
                    let changes = (slopes[b] - slopes[b + 1]).abs() > SLOPE_TOL;
                    if !(concave || (heat_pays && changes)) {
                        continue;
                    }
                    let z = cols.binary(0.0, 1.0);
                    for k in 0..=b {
                        rows.push(Expression::from(d[k]).geq(SEG_U * z));
                    }
                    for k in b + 1..SEGMENTS {
                        rows.push(Expression::from(d[k]).leq(seg_ub[k] * z));
                    }
                    if let Some(p) = prev {
                        rows.push(Expression::from(z).leq(p));
                    }
                    prev = Some(z);
                }
            }
            if let Some(l) = loop_of {
                recovered[l][t] += (srv.recovery / 1000.0) * power.clone();
            }
            objective += snap.electricity_price_per_kwh[t] * kwh_per_w * power;
        }
    }

    // Heat delivered.
    for (l, lp) in snap.loops.iter().enumerate() {
        for t in 0..nt {
            let cap = lp.demand_kw[t].min(lp.max_kw).max(0.0);
            let h = cols.continuous(0.0, cap);
            rows.push(Expression::from(h).leq(std::mem::take(&mut recovered[l][t])));
            objective -= lp.heat_value_per_kwh * step_h * h;
        }
    }

    objective += snap.policy.migration_cost * migrations;
    objective += snap.policy.switch_cost * switches;

    Ok(Model {
        cols,
        rows,
        objective,
        x,
        on,
        a,
    })
}

fn decode(inst: &Instance<'_>, model: &Model, values: &Values) -> Decisions {
    let nt = inst.steps();
    let on: Vec<bool> = model.on.iter().map(|&o| values.value(o) > 0.5).collect();
    let mut host = Vec::with_capacity(inst.n_vms());
    let mut batch_cores = Vec::with_capacity(inst.n_vms());
    for (v, xv) in model.x.iter().enumerate() {
        let (k, &(s, _)) = xv
            .iter()
            .enumerate()
            .max_by(|(_, (_, a)), (_, (_, b))| values.value(*a).total_cmp(&values.value(*b)))
            .expect("every VM has a candidate server");
        host.push(s);
        if inst.is_batch(v) {
            let c_v = f64::from(inst.snap.vms[v].vcpus);
            batch_cores.push(
                (0..nt)
                    .map(|t| {
                        let c = values.value(model.a[v][k][t]);
                        if c < 1e-9 {
                            0.0
                        } else {
                            c.min(c_v)
                        }
                    })
                    .collect(),
            );
        } else {
            batch_cores.push(Vec::new());
        }
    }
    Decisions {
        host,
        on,
        batch_cores,
    }
}
