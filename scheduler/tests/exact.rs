//! Evidence that the exact MILP (`scheduler::exact`) is the §2 model and that
//! it is optimal:
//! - on tiny random sites, its optimum equals a brute-force enumeration of
//!   every placement and on/off state (batch cores by an exact breakpoint
//!   search), with microlp and, when built with `highs`, with HiGHS;
//! - on generated small sites (10 servers / 40 VMs / 8 steps) its objective
//!   equals `evaluate`'s cost of the decoded plan, which breaks no rule
//!   (HiGHS only);
//! - the default optimiser is within 1 % (of the optimal plan's energy cost)
//!   of the HiGHS optimum on every one of 24 such sites (issue #2), and its
//!   lower bound is never above the optimum.

use chrono::{Duration, TimeZone, Utc};
use phoenix_scheduler as scheduler;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::exact::{self, Backend};
use scheduler::generate::SPEC_MODELS;
use scheduler::model::{HeatLoop, Image, Policy, Server, Snapshot, Vm, VmKind, SNAPSHOT_SCHEMA};
use scheduler::{evaluate, Decisions, Instance, PlanError};

/// A random tiny site: 2–3 servers, 3–4 VMs (at most one batch VM, whose
/// deadline is the end of the horizon), 2 steps of 15 min. Memory, the
/// temperature limit, image sharing, the migration budget, non-migratable
/// VMs, servers that cannot switch and heat worth more than electricity all
/// occur across seeds, and a negative price now and then.
fn tiny_site(seed: u64) -> Snapshot {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Utc.with_ymd_and_hms(2026, 1, 15, 22, 0, 0).unwrap();
    let ns = rng.random_range(2..=3);
    let nv = rng.random_range(3..=4);
    let servers: Vec<Server> = (0..ns)
        .map(|i| {
            let m = &SPEC_MODELS[rng.random_range(0..SPEC_MODELS.len())];
            let inlet_c: f64 = rng.random_range(20.0..32.0);
            let hot = rng.random_bool(0.4);
            let share = if hot {
                rng.random_range(0.6..0.95)
            } else {
                1.3
            };
            Server {
                id: format!("s{i}"),
                cores: m.cores.max(2),
                mem_gib: f64::from(rng.random_range(3..=8_u32)),
                power_curve_w: m.curve_w.to_vec(),
                off_w: f64::from(rng.random_range(2..=8_u32)),
                on: rng.random_bool(0.7),
                can_switch: rng.random_bool(0.85),
                inlet_c,
                r_k_per_w: (80.0 - inlet_c) / (m.curve_w[10] * share),
                temp_limit_c: 80.0,
                heat_loop: rng.random_bool(0.7).then(|| "gh".to_string()),
                recovery: rng.random_range(0.8..0.9),
            }
        })
        .collect();
    let batch_at = rng.random_bool(0.7).then(|| rng.random_range(0..nv));
    let vms: Vec<Vm> = (0..nv)
        .map(|j| {
            let batch = batch_at == Some(j);
            let vcpus = rng.random_range(1..=2_u32);
            let host = rng
                .random_bool(0.7)
                .then(|| format!("s{}", rng.random_range(0..ns)));
            let image = ["ubuntu", "debian"][rng.random_range(0..2)].to_string();
            Vm {
                id: format!("v{j}"),
                vcpus,
                mem_gib: f64::from(rng.random_range(1..=3_u32)),
                image: Some(image),
                migratable: host.is_none() || rng.random_bool(0.8),
                host,
                kind: if batch {
                    VmKind::Batch
                } else {
                    VmKind::Interactive
                },
                load: (!batch).then(|| (rng.random_range(0.1..0.9_f64) * 100.0).round() / 100.0),
                // All of it by the end of the horizon (0.5 h).
                work_core_h: batch.then(|| {
                    (rng.random_range(0.1..0.5) * f64::from(vcpus) * 100.0).round() / 100.0
                }),
                deadline: batch.then(|| start + Duration::minutes(30)),
            }
        })
        .collect();
    let heat_value_per_kwh = [0.05, 0.09, 0.3][rng.random_range(0..3)];
    Snapshot {
        schema: SNAPSHOT_SCHEMA.to_string(),
        site: format!("tiny-{seed}"),
        time: start,
        step_s: 900.0,
        steps: 2,
        electricity_price_per_kwh: vec![0.12, rng.random_range(-0.05..0.3)],
        servers,
        vms,
        images: vec![
            Image {
                id: "ubuntu".into(),
                shared_mem_gib: 0.5,
            },
            Image {
                id: "debian".into(),
                shared_mem_gib: 1.0,
            },
        ],
        loops: vec![HeatLoop {
            id: "gh".into(),
            demand_kw: vec![rng.random_range(0.02..0.3), rng.random_range(0.02..0.3)],
            heat_value_per_kwh,
            max_kw: rng.random_range(0.1..0.4),
        }],
        policy: Policy {
            max_migrations: rng.random_range(0..=2),
            migration_cost: 0.002,
            switch_cost: 0.01,
            cpu_overcommit: [1.0, 2.0][rng.random_range(0..2)],
        },
    }
}

/// Brute force: every on/off vector, every host vector; for the (single)
/// batch VM, every breakpoint of the piecewise-linear cost in its step-0
/// cores. Returns the least feasible cost, `None` when nothing is feasible.
fn brute_force(inst: &Instance<'_>) -> Option<f64> {
    let ns = inst.n_servers();
    let nv = inst.n_vms();
    assert_eq!(inst.steps(), 2, "the enumerator handles two steps");
    let batch: Vec<usize> = (0..nv).filter(|&v| inst.is_batch(v)).collect();
    assert!(batch.len() <= 1, "the enumerator handles one batch VM");
    let mut best: Option<f64> = None;
    let mut host = vec![0usize; nv];
    for on_bits in 0..(1usize << ns) {
        let on: Vec<bool> = (0..ns).map(|s| on_bits >> s & 1 == 1).collect();
        for code in 0..ns.pow(nv as u32) {
            let mut c = code;
            for h in host.iter_mut() {
                *h = c % ns;
                c /= ns;
            }
            if host.iter().any(|&s| !on[s]) {
                continue;
            }
            let mut d = Decisions {
                host: host.clone(),
                on: on.clone(),
                batch_cores: (0..nv)
                    .map(|v| {
                        if inst.is_batch(v) {
                            vec![0.0; 2]
                        } else {
                            vec![]
                        }
                    })
                    .collect(),
            };
            let candidates = match batch.first() {
                None => vec![None],
                Some(&b) => batch_candidates(inst, &mut d, b)
                    .into_iter()
                    .map(Some)
                    .collect(),
            };
            for a0 in candidates {
                if let (Some(a0), Some(&b)) = (a0, batch.first()) {
                    let total = inst.batch_max_core_h[b] / inst.step_h();
                    d.batch_cores[b] = vec![a0, total - a0];
                }
                let ev = evaluate(inst, &d);
                if ev.is_feasible() && best.is_none_or(|c| ev.objective.cost < c) {
                    best = Some(ev.objective.cost);
                }
            }
        }
    }
    best
}

/// Candidate step-0 cores of batch VM `b` (all its work falls in the two
/// steps: a0 + a1 = total): the interval's ends, every a0 at which a curve
/// kink or the temperature cap is reached at either step, and every a0 at
/// which the loop's recovered heat crosses what it can deliver.
fn batch_candidates(inst: &Instance<'_>, d: &mut Decisions, b: usize) -> Vec<f64> {
    let snap = inst.snap;
    let c_v = f64::from(snap.vms[b].vcpus);
    let total = inst.batch_max_core_h[b] / inst.step_h();
    let (lo, hi) = ((total - c_v).max(0.0), c_v.min(total));
    if lo > hi + 1e-12 {
        return Vec::new();
    }
    let s = d.host[b];
    let cores = f64::from(snap.servers[s].cores);
    let fixed: f64 = (0..inst.n_vms())
        .filter(|&v| d.host[v] == s && !inst.is_batch(v))
        .map(|v| inst.vm_fixed_cores[v])
        .sum();
    let mut cand = vec![lo, hi];
    let mut levels: Vec<f64> = (0..=10).map(|k| f64::from(k) / 10.0 * cores).collect();
    if let Some(u) = inst.u_max[s] {
        levels.push(u * cores);
    }
    for l in levels {
        cand.push(l - fixed); // step 0 reaches the level
        cand.push(total - (l - fixed)); // step 1 reaches it
    }
    // Heat: recovered at step t is monotone in a0 (up at t = 0, down at 1).
    for (l, lp) in snap.loops.iter().enumerate() {
        for t in 0..2 {
            let cap = lp.demand_kw[t].min(lp.max_kw);
            let mut g = |a0: f64| {
                d.batch_cores[b] = vec![a0, total - a0];
                let ev = evaluate(inst, d);
                let rec: f64 = (0..inst.n_servers())
                    .filter(|&s| inst.server_loop[s] == Some(l))
                    .map(|s| snap.servers[s].recovery * ev.power_w[s][t] / 1000.0)
                    .sum();
                rec - cap
            };
            let (glo, ghi) = (g(lo), g(hi));
            if glo.signum() == ghi.signum() {
                continue;
            }
            let (mut x0, mut x1) = (lo, hi);
            for _ in 0..200 {
                let mid = 0.5 * (x0 + x1);
                if g(mid).signum() == glo.signum() {
                    x0 = mid;
                } else {
                    x1 = mid;
                }
            }
            cand.push(x0);
            cand.push(x1);
        }
    }
    cand.retain(|&a| a >= lo - 1e-12 && a <= hi + 1e-12);
    cand.iter().map(|a| a.clamp(lo, hi)).collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

/// Solves tiny sites with `backend` and compares with the brute force.
fn matches_brute_force(backend: Backend) {
    let (mut feasible, mut infeasible) = (0, 0);
    for seed in 0..32 {
        let snap = tiny_site(seed);
        let inst = Instance::new(&snap).unwrap();
        let brute = brute_force(&inst);
        let out = exact::solve(&inst, backend, None);
        match (brute, out) {
            (Some(best), Ok(out)) => {
                feasible += 1;
                assert!(out.proven_optimal, "seed {seed}: not proven optimal");
                assert!(
                    close(out.objective, best, 1e-6),
                    "seed {seed}: {} MILP {} vs brute force {best}",
                    backend.name(),
                    out.objective
                );
                let ev = evaluate(&inst, &out.decisions);
                assert!(ev.is_feasible(), "seed {seed}: {:?}", ev.violations);
                assert!(close(ev.objective.cost, best, 1e-6), "seed {seed}");
            }
            (None, Err(PlanError::Infeasible { .. })) => infeasible += 1,
            (brute, out) => panic!("seed {seed}: brute force {brute:?}, MILP {out:?}"),
        }
    }
    // The sample must exercise both outcomes, mostly feasible ones.
    assert!(feasible >= 16, "only {feasible} feasible tiny sites");
    assert!(infeasible >= 1, "no infeasible tiny site in the sample");
}

#[test]
fn microlp_milp_matches_brute_force_on_tiny_sites() {
    matches_brute_force(Backend::Microlp);
}

#[test]
fn exact_solver_kind_plans_with_a_valid_lower_bound() {
    let snap = tiny_site(3);
    let plan = scheduler::solve(
        &snap,
        &scheduler::SolveOptions {
            solver: scheduler::SolverKind::Exact,
            time_limit: None,
            with_baseline: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(plan.solver, exact::NAME);
    let bound = plan.lower_bound.expect("the exact solver reports a bound");
    assert!(bound <= plan.objective.cost + 1e-6 * plan.objective.cost.abs().max(1.0));
    if let Some(baseline) = plan.baseline_cost {
        assert!(plan.objective.cost <= baseline + 1e-9);
    }
    assert_eq!("exact".parse(), Ok(scheduler::SolverKind::Exact));
}

#[test]
fn vm_that_fits_no_server_is_reported_by_name() {
    let mut snap = tiny_site(1);
    snap.vms[0].mem_gib = 1000.0;
    let inst = Instance::new(&snap).unwrap();
    match exact::solve(&inst, Backend::Microlp, None) {
        Err(PlanError::Infeasible { reason }) => assert!(reason.contains("vm v0"), "{reason}"),
        other => panic!("expected infeasible, got {other:?}"),
    }
}

/// Generated small sites where the optimiser once missed the 1 % criterion
/// (4.21 %, 2.11 %, 1.06 %, 1.34 %, 4.95 %), with their optimum as HiGHS
/// proved it on 2026-11-22: (seed, cost, energy cost of the optimal plan).
/// With `--features highs` the test below checks these records against fresh
/// solves; without it they keep the default build guarding the moves that
/// closed those gaps (restarts, exchange, drain).
const RECORDED_OPTIMA: [(u64, f64, f64); 5] = [
    (9, 0.358_708_345_228_424_5, 0.381_433_345_228_424_5),
    (11, 0.387_961_924_482_764_8, 0.440_684_128_673_693_1),
    (15, 0.477_438_437_228_275_8, 0.524_363_437_228_275_7),
    (20, 0.424_003_712_174_355_45, 0.461_578_712_174_355_4),
    (23, 0.378_759_441_266_446_73, 0.469_076_281_574_588_3),
];

#[test]
fn optimizer_is_within_one_percent_of_the_recorded_optima_where_it_once_missed() {
    use scheduler::generate::{generate, SiteSpec};
    for (seed, optimum, energy) in RECORDED_OPTIMA {
        let snap = generate(&SiteSpec::small(seed));
        let plan = scheduler::solve(&snap, &scheduler::SolveOptions::default()).unwrap();
        let gap = (plan.objective.cost - optimum) / energy;
        eprintln!("seed {seed}: gap {:.4} %", 100.0 * gap);
        // Below the optimum would mean a stale record or a broken evaluator.
        assert!(
            gap >= -1e-6,
            "seed {seed}: cost {} below the optimum {optimum}",
            plan.objective.cost
        );
        assert!(
            gap <= 0.01,
            "seed {seed}: gap {:.3} % above 1 %",
            100.0 * gap
        );
    }
}

#[cfg(feature = "highs")]
mod highs {
    use super::*;
    use scheduler::generate::{generate, SiteSpec};
    use scheduler::SolveOptions;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// How many generated small sites the optimiser is measured on (seeds
    /// 1–24 on 2026-11-22: all admit a plan; HiGHS needs 2 s to 5 min each).
    const SITES: usize = 24;

    /// One generated small site and its exact solution.
    struct Solved {
        seed: u64,
        snap: Snapshot,
        out: exact::ExactOutcome,
    }

    /// The first [`SITES`] generated small sites (seeds 1, 2, …) that admit a
    /// plan, solved once by HiGHS and shared by the tests. Sites the MILP
    /// proves infeasible (the generator can put a non-migratable VM on a
    /// server whose idle power breaks its temperature limit) are skipped,
    /// after checking the default solver refuses them too.
    fn solved() -> &'static [Solved] {
        static SOLVED: OnceLock<Vec<Solved>> = OnceLock::new();
        SOLVED.get_or_init(|| {
            let mut found = Vec::new();
            let mut seed = 1;
            while found.len() < SITES {
                // Two at a time: the machine has two cores.
                let batch: Vec<u64> = (seed..seed + 2).collect();
                seed += 2;
                let results: Vec<_> = std::thread::scope(|scope| {
                    let handles: Vec<_> = batch
                        .iter()
                        .map(|&seed| {
                            scope.spawn(move || {
                                let snap = generate(&SiteSpec::small(seed));
                                let inst = Instance::new(&snap).unwrap();
                                // Seed 8 took 78–287 s on the loaded
                                // 2-core machine: room for a slower CI.
                                let out = exact::solve(
                                    &inst,
                                    Backend::Highs,
                                    Some(Duration::from_secs(900)),
                                );
                                (seed, snap, out)
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                for (seed, snap, out) in results {
                    match out {
                        Ok(out) if found.len() < SITES => found.push(Solved { seed, snap, out }),
                        Ok(_) => {}
                        Err(PlanError::Infeasible { .. }) => assert!(
                            scheduler::solve(&snap, &SolveOptions::default()).is_err(),
                            "seed {seed}: the MILP finds no plan but the optimiser does"
                        ),
                        Err(e) => panic!("seed {seed}: {e}"),
                    }
                }
            }
            found
        })
    }

    #[test]
    fn highs_milp_matches_brute_force_on_tiny_sites() {
        matches_brute_force(Backend::Highs);
    }

    #[test]
    fn recorded_optima_are_the_milp_optima() {
        for (seed, optimum, _) in RECORDED_OPTIMA {
            let Some(Solved { snap, out, .. }) = solved().iter().find(|s| s.seed == seed) else {
                panic!("seed {seed} is not among the solved sites");
            };
            assert!(out.proven_optimal, "seed {seed}");
            let ev = evaluate(&Instance::new(snap).unwrap(), &out.decisions);
            assert!(
                close(ev.objective.cost, optimum, 1e-6),
                "seed {seed}: {}",
                ev.objective.cost
            );
        }
    }

    #[test]
    fn milp_objective_is_the_evaluated_cost_on_small_sites() {
        for Solved { seed, snap, out } in solved() {
            let inst = Instance::new(snap).unwrap();
            let ev = evaluate(&inst, &out.decisions);
            assert!(ev.is_feasible(), "seed {seed}: {:?}", ev.violations);
            assert!(
                close(out.objective, ev.objective.cost, 1e-6),
                "seed {seed}: MILP {} vs evaluated {}",
                out.objective,
                ev.objective.cost
            );
            let bound = out.best_bound.unwrap();
            assert!(
                bound <= out.objective + 1e-6 * out.objective.abs(),
                "seed {seed}"
            );
        }
    }

    /// Issue #2: on every small site the optimiser is within 1 % of the
    /// optimum (gap as a share of the optimal plan's energy cost), and its
    /// lower bound is never above the optimum. Measured on 2026-11-22: worst
    /// gap 0.52 % (seed 14), 20 of 24 within 0.12 %. Prints every gap.
    #[test]
    fn optimizer_is_within_one_percent_of_the_optimum_on_small_sites() {
        let mut report = Vec::new();
        let mut worst: f64 = 0.0;
        let mut sites = 0;
        for Solved { seed, snap, out } in solved() {
            let inst = Instance::new(snap).unwrap();
            let exact_ev = evaluate(&inst, &out.decisions);
            // Where HiGHS stopped short of a proof, measure against its
            // bound: the true gap is no larger.
            let reference = if out.proven_optimal {
                exact_ev.objective.cost
            } else {
                out.best_bound.unwrap()
            };
            let plan = match scheduler::solve(snap, &SolveOptions::default()) {
                Ok(plan) => plan,
                Err(e) => {
                    report.push(format!("seed {seed}: the optimiser found no plan: {e}"));
                    worst = f64::INFINITY;
                    continue;
                }
            };
            let gap = (plan.objective.cost - reference) / exact_ev.objective.energy_cost;
            report.push(format!(
                "seed {seed}: optimiser {:.6}, exact {:.6}{}, gap {:.4} %",
                plan.objective.cost,
                reference,
                if out.proven_optimal { "" } else { " (bound)" },
                100.0 * gap
            ));
            worst = worst.max(gap);
            sites += 1;
            if let Some(lb) = plan.lower_bound {
                let best = out.objective;
                assert!(
                    lb <= best + 1e-6 * best.abs().max(1.0),
                    "seed {seed}: optimiser's lower bound {lb} exceeds the optimum {best}",
                );
            }
        }
        eprintln!("{}", report.join("\n"));
        assert_eq!(
            sites,
            SITES,
            "not every site was planned:\n{}",
            report.join("\n")
        );
        assert!(
            worst <= 0.01,
            "optimiser gap above 1 % of the optimal energy cost:\n{}",
            report.join("\n")
        );
    }
}
