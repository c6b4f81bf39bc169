//! Planning benchmark: the optimiser against the greedy baseline and, on
//! small sites when built with `--features highs`, against the exact MILP
//! optimum; on medium and large sites against the optimiser's lower bound.
//!
//! ```text
//! cargo bench -p phoenix-scheduler --features highs --bench plan            # full
//! cargo bench -p phoenix-scheduler --features highs --bench plan -- --quick # fewer seeds
//! cargo bench -p phoenix-scheduler --bench plan -- --fixed                   # fixed costs only
//! cargo bench -p phoenix-scheduler --features highs --bench plan -- --classes # site classes
//! ```
//!
//! `--classes` runs the site classes of `generate::generate_class` side by
//! side (issue #12): per class, how many sweep sites HiGHS plans, how many
//! of those the optimiser fails on (the target is none), how often it had
//! to make room or start from the exact MILP, and its gap to HiGHS's
//! optimum on small seeds.
//!
//! Sites come from `scheduler::generate` (small 10 servers / 40 VMs, medium
//! 100 / 800, large 1,000 / 10,000; 8 steps of 15 min). Costs are §2's exact
//! cost of each plan. Shares are of an energy cost, as the acceptance
//! criterion measures them:
//! - gain over greedy = (cost_greedy − cost) / energy_cost_greedy;
//! - gap to exact = (cost − cost_exact) / energy_cost_exact;
//! - gap to bound = (cost − lower_bound) / energy_cost.
//!
//! Times are wall clock; medium and large rows also give the CPU time of
//! the process while it planned (all threads: the lower bound is solved on
//! a second thread), since the machine is shared.
//!
//! Last, the fixed cost of every plan on the large sites, whatever the
//! solver: resolving the snapshot (`Instance::new`), one `evaluate`, the
//! greedy baseline, and a whole greedy plan through `solve_prepared` (the
//! simulator's entry point) and `solve` (which also validates the snapshot
//! and writes the plan out by id). Each is the CPU time of the process over
//! repeated calls (at least a given amount of it) divided by their number:
//! on a shared machine, CPU time moves much less than wall time.
//!
//! Prints markdown tables (for BENCHMARKS.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use phoenix_scheduler as scheduler;

use scheduler::generate::{generate, generate_class, ClassSpec, SiteClass, SiteSpec};
use scheduler::model::{Objective, Snapshot};
use scheduler::optimizer::{self, Construction};
use scheduler::{greedy, Instance, Plan, SolveOptions, SolverKind};

fn plan(snap: &Snapshot, solver: SolverKind) -> Result<(Plan, Duration), String> {
    plan_within(snap, solver, None).map(|(p, wall, _)| (p, wall))
}

/// A plan, its wall time and the CPU time the process spent on it (all
/// threads; `None` where `/proc/self/stat` cannot be read).
fn plan_within(
    snap: &Snapshot,
    solver: SolverKind,
    time_limit: Option<Duration>,
) -> Result<(Plan, Duration, Option<Duration>), String> {
    let cpu0 = cpu_time();
    let started = Instant::now();
    let plan = scheduler::solve(
        snap,
        &SolveOptions {
            solver,
            time_limit,
            with_baseline: false,
            ..Default::default()
        },
    )
    .map_err(|e| format!("{solver:?}: {e}"))?;
    let wall = started.elapsed();
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    Ok((plan, wall, cpu))
}

/// User plus system CPU time of this process so far (Linux: utime and stime
/// of `/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The optimiser's plan and the greedy baseline's (`None` where the
/// baseline breaks a rule: it runs batch work as soon as possible and can
/// starve later deadlines), or a table row saying why there is no plan.
type Plans = ((Plan, Duration), Option<(Plan, Duration)>);

fn both(snap: &Snapshot, seed: u64, columns: usize) -> Option<Plans> {
    match plan(snap, SolverKind::Optimizer) {
        Ok(o) => Some((o, plan(snap, SolverKind::Greedy).ok())),
        Err(why) => {
            println!(
                "| {seed} | no plan: {why} |{}",
                " |".repeat(columns.saturating_sub(2))
            );
            None
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.3} %", 100.0 * x)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn gain(greedy: &Option<(Plan, Duration)>, ours: &Objective) -> Option<f64> {
    greedy
        .as_ref()
        .map(|(g, _)| (g.objective.cost - ours.cost) / g.objective.energy_cost)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "greedy infeasible".into(), pct)
}

fn greedy_cost(greedy: &Option<(Plan, Duration)>, digits: usize) -> String {
    greedy.as_ref().map_or_else(
        || "infeasible".into(),
        |(g, _)| format!("{:.digits$}", g.objective.cost),
    )
}

fn greedy_ms(greedy: &Option<(Plan, Duration)>) -> String {
    greedy.as_ref().map_or_else(|| "–".into(), |(_, t)| ms(*t))
}

#[cfg(feature = "highs")]
fn exact(snap: &Snapshot) -> (f64, Objective, bool, Duration) {
    use scheduler::exact::{self, Backend};
    let inst = scheduler::Instance::new(snap).expect("generated sites are valid");
    let started = Instant::now();
    let out = exact::solve(&inst, Backend::Highs, Some(Duration::from_secs(120)))
        .unwrap_or_else(|e| panic!("exact failed on {}: {e}", snap.site));
    let took = started.elapsed();
    let ev = scheduler::evaluate(&inst, &out.decisions);
    assert!(
        ev.is_feasible(),
        "exact plan breaks the model: {:?}",
        ev.violations
    );
    (out.objective, ev.objective, out.proven_optimal, took)
}

fn small(seeds: &[u64]) {
    println!("### Small sites (10 servers, 40 VMs, 8 steps)\n");
    if cfg!(feature = "highs") {
        println!(
            "| seed | greedy cost | optimiser cost | exact cost | gain over greedy | gap to exact | \
             optimiser ms | greedy ms | exact ms | exact proven |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|");
    } else {
        println!("(built without `--features highs`: no exact optimum)\n");
        println!(
            "| seed | greedy cost | optimiser cost | gain over greedy | optimiser ms | greedy ms |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
    }
    #[cfg_attr(not(feature = "highs"), allow(unused_mut))]
    let mut gaps: Vec<f64> = Vec::new();
    let mut gains = Vec::new();
    for &seed in seeds {
        let snap = generate(&SiteSpec::small(seed));
        let columns = if cfg!(feature = "highs") { 10 } else { 6 };
        let Some(((o, to), g)) = both(&snap, seed, columns) else {
            continue;
        };
        let gn = gain(&g, &o.objective);
        gains.extend(gn);
        #[cfg(feature = "highs")]
        {
            let (_, e, proven, te) = exact(&snap);
            let gap = (o.objective.cost - e.cost) / e.energy_cost;
            gaps.push(gap);
            println!(
                "| {seed} | {} | {:.4} | {:.4} | {} | {} | {} | {} | {} | {} |",
                greedy_cost(&g, 4),
                o.objective.cost,
                e.cost,
                opt_pct(gn),
                pct(gap),
                ms(to),
                greedy_ms(&g),
                ms(te),
                if proven { "yes" } else { "no" }
            );
        }
        #[cfg(not(feature = "highs"))]
        println!(
            "| {seed} | {} | {:.4} | {} | {} | {} |",
            greedy_cost(&g, 4),
            o.objective.cost,
            opt_pct(gn),
            ms(to),
            greedy_ms(&g)
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "\nMean gain over greedy {} (over the {} sites where greedy is feasible); \
         gap to exact: mean {}, worst {}.\n",
        if gains.is_empty() {
            "n/a".into()
        } else {
            pct(mean(&gains))
        },
        gains.len(),
        if gaps.is_empty() {
            "n/a".into()
        } else {
            pct(mean(&gaps))
        },
        if gaps.is_empty() {
            "n/a".into()
        } else {
            pct(max(&gaps))
        },
    );
}

fn scaled(title: &str, spec: fn(u64) -> SiteSpec, seeds: &[u64], time_limit: Option<Duration>) {
    println!("### {title}\n");
    if let Some(limit) = time_limit {
        println!("With `--time-limit-ms {}`.\n", limit.as_millis());
    }
    println!(
        "| seed | greedy cost | optimiser cost | lower bound | gap to bound | gain over greedy | \
         optimiser ms | optimiser CPU ms | greedy ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &seed in seeds {
        let snap = generate(&spec(seed));
        let (o, to, cpu) = match plan_within(&snap, SolverKind::Optimizer, time_limit) {
            Ok(p) => p,
            Err(why) => {
                println!("| {seed} | no plan: {why} |{}", " |".repeat(7));
                continue;
            }
        };
        let g = plan(&snap, SolverKind::Greedy).ok();
        let (lb, gap) = match o.lower_bound {
            Some(lb) => (
                format!("{lb:.3}"),
                pct((o.objective.cost - lb) / o.objective.energy_cost),
            ),
            None => ("none".into(), "n/a".into()),
        };
        println!(
            "| {seed} | {} | {:.3} | {lb} | {gap} | {} | {} | {} | {} |",
            greedy_cost(&g, 3),
            o.objective.cost,
            opt_pct(gain(&g, &o.objective)),
            ms(to),
            cpu.map_or_else(|| "–".into(), ms),
            greedy_ms(&g)
        );
    }
    println!();
}

/// CPU time of one call of `f`, µs: the process's CPU time over calls
/// repeated until they have used `min_cpu` (after one call to warm up),
/// divided by their number. `None` where the CPU time cannot be read.
fn cpu_us_per_call(min_cpu: Duration, mut f: impl FnMut()) -> Option<f64> {
    f();
    let before = cpu_time()?;
    let mut calls = 0u32;
    loop {
        f();
        calls += 1;
        let spent = cpu_time()?.saturating_sub(before);
        if spent >= min_cpu {
            return Some(spent.as_secs_f64() * 1e6 / f64::from(calls));
        }
    }
}

fn fixed_costs(seeds: &[u64], min_cpu: Duration) {
    println!(
        "### Fixed cost per plan (large sites, CPU µs per call, over {} ms of calls each)\n",
        min_cpu.as_millis()
    );
    println!(
        "| seed | Instance::new | evaluate | greedy::decide | greedy plan, solve_prepared | \
         greedy plan, solve |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let opts = SolveOptions {
        solver: SolverKind::Greedy,
        ..Default::default()
    };
    for &seed in seeds {
        let snap = generate(&SiteSpec::large(seed));
        let inst = Instance::new(&snap).expect("generated sites are valid");
        let Ok(d) = greedy::decide(&inst) else {
            println!("| {seed} | greedy infeasible | | | | |");
            continue;
        };
        let new = cpu_us_per_call(min_cpu, || {
            black_box(Instance::new(black_box(&snap)).ok());
        });
        let evaluate = cpu_us_per_call(min_cpu, || {
            black_box(scheduler::evaluate(&inst, black_box(&d)));
        });
        let decide = cpu_us_per_call(min_cpu, || {
            black_box(greedy::decide(black_box(&inst)).ok());
        });
        let prepared = cpu_us_per_call(min_cpu, || {
            black_box(scheduler::solve_prepared(black_box(&snap), &opts).ok());
        });
        let solve = cpu_us_per_call(min_cpu, || {
            black_box(scheduler::solve(black_box(&snap), &opts).ok());
        });
        let row: Vec<String> = [new, evaluate, decide, prepared, solve]
            .iter()
            .map(|x| x.map_or_else(|| "–".into(), |x| format!("{x:.0}")))
            .collect();
        println!("| {seed} | {} |", row.join(" | "));
    }
    println!();
}

/// One class site planned by the optimiser and, with `highs`, by HiGHS
/// within `highs_limit`.
struct ClassRun {
    /// Whether the optimiser returned a plan (always checked feasible).
    planned: bool,
    /// How it built its first plan.
    construction: Option<Construction>,
    /// The optimiser's time.
    wall: Duration,
    /// HiGHS: `Some(Some((cost, energy cost, proven)))` a plan,
    /// `Some(None)` proven infeasible, `None` nothing proven (or no HiGHS).
    highs: Option<Option<(f64, f64, bool)>>,
    cost: f64,
}

fn class_run(spec: &ClassSpec, highs_limit: Duration) -> ClassRun {
    let snap = generate_class(spec);
    let inst = Instance::new(&snap).expect("generated sites resolve");
    let started = Instant::now();
    let out = optimizer::decide_with(
        &inst,
        &optimizer::Settings {
            deadline: None,
            lower_bound: false,
        },
    );
    let wall = started.elapsed();
    if let Ok(o) = &out {
        assert!(o.evaluation.is_feasible(), "{}: infeasible plan", snap.site);
    }
    #[cfg(feature = "highs")]
    let highs =
        match scheduler::exact::solve(&inst, scheduler::exact::Backend::Highs, Some(highs_limit)) {
            Ok(x) => {
                let ev = scheduler::evaluate(&inst, &x.decisions);
                Some(Some((
                    if x.proven_optimal {
                        ev.objective.cost
                    } else {
                        x.best_bound.unwrap_or(ev.objective.cost)
                    },
                    ev.objective.energy_cost,
                    x.proven_optimal,
                )))
            }
            Err(scheduler::PlanError::Infeasible { .. }) => Some(None),
            Err(_) => None,
        };
    #[cfg(not(feature = "highs"))]
    let highs = {
        let _ = highs_limit;
        None
    };
    ClassRun {
        planned: out.is_ok(),
        construction: out.as_ref().ok().map(|o| o.construction),
        wall,
        highs,
        cost: out.map_or(f64::NAN, |o| o.evaluation.objective.cost),
    }
}

/// The site classes side by side: per class, a sweep of sites of 5–40
/// servers (HiGHS within 2 s decides which admit a plan; a failure is a
/// site HiGHS plans and the optimiser does not) and small seeds (4 servers,
/// 10 VMs, 4 steps) measured against HiGHS's optimum.
fn classes(sweep_per_class: u64, small_seeds: u64) {
    const SERVERS: [usize; 10] = [5, 6, 7, 8, 9, 10, 12, 16, 24, 40];
    println!(
        "### Site classes ({sweep_per_class} sweep sites and {small_seeds} small seeds per class{})\n",
        if cfg!(feature = "highs") {
            ", HiGHS"
        } else {
            ", no HiGHS: optimiser only"
        }
    );
    println!(
        "| class | sweep sites | HiGHS plans | proven infeasible | HiGHS proved nothing | \
         optimiser failures | room made | exact start | optimiser ms (mean / max) | \
         small seeds | gap mean | gap max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for class in SiteClass::ALL {
        let sweep: Vec<ClassRun> = (0..sweep_per_class)
            .map(|i| {
                let servers = SERVERS[i as usize % SERVERS.len()];
                let per = match class {
                    SiteClass::BigVms => 2,
                    _ => 2 + (i as usize / SERVERS.len()) % 4,
                };
                let spec = ClassSpec::new(class, servers, servers * per, 1000 + i);
                class_run(&spec, Duration::from_secs(2))
            })
            .collect();
        let plans = sweep.iter().filter(|r| matches!(r.highs, Some(Some(_))));
        let failures = plans.clone().filter(|r| !r.planned).count();
        let infeasible = sweep.iter().filter(|r| r.highs == Some(None)).count();
        let nothing = sweep.iter().filter(|r| r.highs.is_none()).count();
        let count = |c: Construction| sweep.iter().filter(|r| r.construction == Some(c)).count();
        let walls: Vec<f64> = sweep.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect();
        let mut gaps = Vec::new();
        let mut seed = 1;
        while (gaps.len() as u64) < small_seeds && seed <= small_seeds + 4 {
            let spec = ClassSpec {
                steps: 4,
                ..ClassSpec::new(class, 4, 10, seed)
            };
            seed += 1;
            let r = class_run(&spec, Duration::from_secs(120));
            if let Some(Some((opt, energy, _))) = r.highs {
                gaps.push((r.cost - opt) / energy.max(1e-9));
            }
        }
        let finite: Vec<f64> = gaps.iter().copied().filter(|g| g.is_finite()).collect();
        let mean_gap = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        let max_gap = gaps.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
            if b.is_nan() {
                f64::INFINITY
            } else {
                a.max(b)
            }
        });
        println!(
            "| {} | {} | {} | {infeasible} | {nothing} | {failures} | {} | {} | {:.0} / {:.0} | {} | {} | {} |",
            class.name(),
            sweep.len(),
            plans.count(),
            count(Construction::MadeRoom),
            count(Construction::Exact),
            walls.iter().sum::<f64>() / walls.len().max(1) as f64,
            walls.iter().copied().fold(0.0, f64::max),
            gaps.len(),
            if gaps.is_empty() { "–".into() } else { pct(mean_gap) },
            if gaps.is_empty() { "–".into() } else { pct(max_gap) },
        );
    }
    println!();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--fixed") {
        fixed_costs(&[1, 2, 3], Duration::from_millis(1000));
        return;
    }
    if std::env::args().any(|a| a == "--classes") {
        if quick {
            classes(10, 6);
        } else {
            classes(38, 24);
        }
        return;
    }
    let (small_seeds, big_seeds): (Vec<u64>, Vec<u64>) = if quick {
        ((1..=5).collect(), vec![1])
    } else {
        ((1..=10).collect(), vec![1, 2, 3])
    };
    println!(
        "## phoenix-scheduler plan benchmark ({}{})\n",
        if quick { "quick" } else { "full" },
        if cfg!(feature = "highs") {
            ", exact = HiGHS"
        } else {
            ", no exact solver"
        }
    );
    small(&small_seeds);
    scaled(
        "Medium sites (100 servers, 800 VMs, 8 steps)",
        SiteSpec::medium,
        &big_seeds,
        None,
    );
    scaled(
        "Large sites (1,000 servers, 10,000 VMs, 8 steps)",
        SiteSpec::large,
        &big_seeds,
        None,
    );
    // A time limit the search uses up still reports the bound beside the plan.
    scaled(
        "Large sites under a time limit",
        SiteSpec::large,
        &big_seeds[..1],
        Some(Duration::from_millis(300)),
    );
    fixed_costs(
        &big_seeds,
        Duration::from_millis(if quick { 300 } else { 1000 }),
    );
}
