//! Issue #12, point 2: across the generator's site classes, wherever HiGHS
//! finds a plan the optimiser returns a feasible one, and on small sites it
//! is within 1 % of HiGHS's optimum. Needs the `highs` feature:
//!
//! ```text
//! cargo test -p phoenix-scheduler --features highs --test classes -- --nocapture
//! ```
//!
//! Sites where HiGHS proves nothing within its time limit (no plan, no
//! proof) are counted and skipped; the report prints how many.
#![cfg(feature = "highs")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use phoenix_scheduler::evaluate::evaluate;
use phoenix_scheduler::exact::{self, Backend};
use phoenix_scheduler::generate::{generate_class, ClassSpec, SiteClass};
use phoenix_scheduler::optimizer::{self, Construction, Settings};
use phoenix_scheduler::{Instance, PlanError};

/// Sites per class in the feasibility sweep (8 classes: 304 sites).
const SWEEP_PER_CLASS: u64 = 38;
/// HiGHS's time limit per site in the sweep.
const SWEEP_HIGHS_LIMIT: Duration = Duration::from_secs(2);
/// Small seeds per class measured against the optimum.
const OPTIMUM_SEEDS: u64 = 24;
/// The issue's bound on the gap to the optimum (not met yet on every seed).
const TARGET_GAP: f64 = 0.01;
/// What the test holds each class's mean and worst gap to.
const GUARD_MEAN_GAP: f64 = 0.02;
const GUARD_MAX_GAP: f64 = 0.15;
/// HiGHS's time limit per small site (it proves optimality well within it).
const OPTIMUM_HIGHS_LIMIT: Duration = Duration::from_secs(120);

/// The size of sweep site `i` of `class`: 5 to 40 servers, mostly small
/// (the issue's tight sites are 5–10 servers with 20–40 VMs), 2–5 VMs per
/// server (big VMs: 2).
fn sweep_spec(class: SiteClass, i: u64) -> ClassSpec {
    const SERVERS: [usize; 10] = [5, 6, 7, 8, 9, 10, 12, 16, 24, 40];
    let servers = SERVERS[i as usize % SERVERS.len()];
    let per = match class {
        SiteClass::BigVms => 2,
        _ => 2 + (i as usize / SERVERS.len()) % 4,
    };
    ClassSpec::new(class, servers, servers * per, 1000 + i)
}

/// A small site of `class` for the optimality check: 4 servers, 10 VMs, 4
/// steps.
fn small_spec(class: SiteClass, seed: u64) -> ClassSpec {
    ClassSpec {
        steps: 4,
        ..ClassSpec::new(class, 4, 10, seed)
    }
}

/// Run `job` on every item on two threads (the CI machine has two cores).
fn on_two_threads<T: Sync, R: Send>(items: &[T], job: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = job(item);
                out.lock().unwrap().push((i, r));
            });
        }
    });
    let mut out = out.into_inner().unwrap();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// What one sweep site gave.
#[derive(Debug)]
enum Sweep {
    /// HiGHS found a plan; so did the optimiser, built this way.
    Planned(Construction),
    /// HiGHS found a plan and the optimiser did not (a failure).
    Refused(String),
    /// HiGHS proved the site infeasible, and the optimiser found no plan.
    Infeasible,
    /// HiGHS proved nothing within its limit.
    Skipped,
}

fn sweep_one(spec: &ClassSpec) -> Sweep {
    let snap = generate_class(spec);
    let inst = Instance::new(&snap).unwrap();
    let settings = Settings {
        deadline: None,
        lower_bound: false,
    };
    let planned = optimizer::decide_with(&inst, &settings);
    if let Ok(out) = &planned {
        let ev = evaluate(&inst, &out.decisions);
        assert_eq!(ev.violations, Vec::<String>::new(), "{}", snap.site);
    }
    match exact::solve(&inst, Backend::Highs, Some(SWEEP_HIGHS_LIMIT)) {
        Ok(_) => match planned {
            Ok(out) => Sweep::Planned(out.construction),
            Err(e) => Sweep::Refused(format!("{}: {e}", snap.site)),
        },
        Err(PlanError::Infeasible { .. }) => {
            assert!(
                planned.is_err(),
                "{}: HiGHS proves it infeasible but the optimiser planned it",
                snap.site
            );
            Sweep::Infeasible
        }
        Err(_) => Sweep::Skipped,
    }
}

/// Wherever HiGHS finds a plan the optimiser returns a feasible one: 304
/// sites of 5–40 servers over the eight classes, 0 refusals.
#[test]
fn wherever_highs_finds_a_plan_the_optimiser_returns_a_feasible_one() {
    let specs: Vec<ClassSpec> = SiteClass::ALL
        .iter()
        .flat_map(|&c| (0..SWEEP_PER_CLASS).map(move |i| sweep_spec(c, i)))
        .collect();
    let results = on_two_threads(&specs, sweep_one);
    let mut refusals = Vec::new();
    for class in SiteClass::ALL {
        let (mut planned, mut room, mut exact, mut infeasible, mut skipped) = (0, 0, 0, 0, 0);
        for (spec, r) in specs.iter().zip(&results) {
            if spec.class != class {
                continue;
            }
            match r {
                Sweep::Planned(how) => {
                    planned += 1;
                    room += usize::from(*how == Construction::MadeRoom);
                    exact += usize::from(*how == Construction::Exact);
                }
                Sweep::Refused(why) => refusals.push(why.clone()),
                Sweep::Infeasible => infeasible += 1,
                Sweep::Skipped => skipped += 1,
            }
        }
        eprintln!(
            "{:15} planned {planned:3} (room made {room}, exact start {exact}), \
             proven infeasible {infeasible}, skipped (HiGHS proved nothing in {:?}) {skipped}",
            class.name(),
            SWEEP_HIGHS_LIMIT
        );
    }
    assert_eq!(refusals, Vec::<String>::new(), "false refusals");
}

/// The issue's tight sites (5–10 servers, 20–40 VMs of 1–16 vCPUs at 2–8
/// GiB per vCPU on servers of 64–256 GiB, budgets of 2–4, pending VMs that
/// fit only once another VM moves): no false refusal, and the squeezed VMs
/// are there to make the point.
#[test]
fn the_issues_tight_sites_are_never_refused_when_a_plan_exists() {
    let specs: Vec<ClassSpec> = (0..24)
        .map(|i| {
            ClassSpec::new(
                SiteClass::TightMemory,
                5 + i % 6,
                20 + (i * 7) % 21,
                2000 + i as u64,
            )
        })
        .collect();
    let results = on_two_threads(&specs, sweep_one);
    let refused: Vec<&String> = results
        .iter()
        .filter_map(|r| match r {
            Sweep::Refused(why) => Some(why),
            _ => None,
        })
        .collect();
    let room = results
        .iter()
        .filter(|r| matches!(r, Sweep::Planned(Construction::MadeRoom)))
        .count();
    eprintln!("tight sites: {results:?}");
    assert!(refused.is_empty(), "false refusals: {refused:?}");
    assert!(
        room > 0,
        "no site needed room made: the class lost its point"
    );
}

/// What the optimality check measured on one small site.
#[derive(Debug)]
struct Gap {
    class: SiteClass,
    seed: u64,
    /// (cost − optimum) / optimal energy cost; `None`: the optimiser
    /// found no plan.
    gap: Option<f64>,
}

fn gap_one(spec: &ClassSpec) -> Option<Gap> {
    let snap = generate_class(spec);
    let inst = Instance::new(&snap).unwrap();
    let out = exact::solve(&inst, Backend::Highs, Some(OPTIMUM_HIGHS_LIMIT)).ok()?;
    let exact_ev = evaluate(&inst, &out.decisions);
    // Short of a proof, the bound: the true gap is no larger.
    let reference = if out.proven_optimal {
        exact_ev.objective.cost
    } else {
        out.best_bound?
    };
    let settings = Settings {
        deadline: None,
        lower_bound: false,
    };
    let gap = optimizer::decide_with(&inst, &settings).ok().map(|o| {
        (o.evaluation.objective.cost - reference) / exact_ev.objective.energy_cost.max(1e-9)
    });
    Some(Gap {
        class: spec.class,
        seed: spec.seed,
        gap,
    })
}

/// Issue #12 asks for every one of 24 small feasible seeds of each class
/// within 1 % of the optimum (a share of the optimal plan's energy cost, as
/// the existing small-site test measures it). NOT MET YET: measured on
/// 2026-12-04, the mean gap is within 1 % on six classes of eight, but
/// single seeds of big-vms (14.0 %), heat-saturated (12.3 %), hot-servers
/// (10.7 %), tight-memory (3.4 %) and many-batch (3.1 %) are above it (see
/// BENCHMARKS.md, "Site classes"). Until the search closes them this test
/// guards what holds — every seed planned, none below the optimum, each
/// class's mean gap within 2 % and worst within 15 % — and prints the
/// figures; [`TARGET_GAP`] is the issue's bound it reports against.
#[test]
fn on_small_sites_of_every_class_the_optimiser_plans_every_seed_near_the_optimum() {
    // Seeds 1, 2, … until 24 feasible ones per class: HiGHS decides.
    let specs: Vec<ClassSpec> = SiteClass::ALL
        .iter()
        .flat_map(|&c| (1..=OPTIMUM_SEEDS + 4).map(move |s| small_spec(c, s)))
        .collect();
    let results = on_two_threads(&specs, gap_one);
    let mut report = Vec::new();
    let mut worst = Vec::new();
    let mut below = Vec::new();
    for class in SiteClass::ALL {
        let gaps: Vec<&Gap> = results
            .iter()
            .flatten()
            .filter(|g| g.class == class)
            .take(OPTIMUM_SEEDS as usize)
            .collect();
        assert_eq!(
            gaps.len(),
            OPTIMUM_SEEDS as usize,
            "{}: fewer than {OPTIMUM_SEEDS} feasible small seeds",
            class.name()
        );
        let planned: Vec<f64> = gaps.iter().filter_map(|g| g.gap).collect();
        let missing: Vec<u64> = gaps
            .iter()
            .filter(|g| g.gap.is_none())
            .map(|g| g.seed)
            .collect();
        let mean = planned.iter().sum::<f64>() / planned.len().max(1) as f64;
        let (max, at) = gaps
            .iter()
            .filter_map(|g| g.gap.map(|x| (x, g.seed)))
            .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a });
        let within = planned.iter().filter(|&&g| g <= TARGET_GAP).count();
        report.push(format!(
            "{:15} mean gap {:.3} %, max {:.3} % (seed {at}), within {:.0} %: {within} of {}, \
             no plan on seeds {missing:?}",
            class.name(),
            100.0 * mean,
            100.0 * max,
            100.0 * TARGET_GAP,
            gaps.len()
        ));
        if mean > GUARD_MEAN_GAP || max > GUARD_MAX_GAP || !missing.is_empty() {
            worst.push(class.name());
        }
        // Below the optimum by more than the MILP's tolerances would mean
        // a model and an evaluator that disagree.
        for g in &gaps {
            if let Some(x) = g.gap.filter(|&x| x < -1e-4) {
                below.push(format!(
                    "{} seed {}: {:.4} %",
                    class.name(),
                    g.seed,
                    100.0 * x
                ));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(below, Vec::<String>::new(), "plans below the optimum");
    assert!(
        worst.is_empty(),
        "classes past the guard (mean 2 %, max 15 %) or unplanned: {worst:?}\n{}",
        report.join("\n")
    );
}
