//! The speed target of issue #3: a year of 1,000 servers at 60 s physics
//! steps with a 15 min control period. Prints the split between physics and
//! planning.
//!
//! `cargo bench -p phoenix-simulator --bench year -- [--days N] [--scheduler none|greedy|optimizer]
//! [--time-limit-ms N] [--replan N] [--start RFC3339]`

use std::path::Path;
use std::time::Instant;

use phoenix_simulator::Scenario;

fn main() {
    let mut overrides: Vec<(String, String)> = Vec::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--days" => overrides.push(("sim.days".into(), value)),
            "--scheduler" => overrides.push(("sim.scheduler".into(), value)),
            "--time-limit-ms" => overrides.push(("sim.plan_time_limit_ms".into(), value)),
            "--replan" => overrides.push(("sim.replan_periods".into(), value)),
            "--start" => overrides.push(("sim.start".into(), value)),
            "--servers-scale" => {
                let f: f64 = value.parse().unwrap_or(1.0);
                overrides.push(("servers.0.count".into(), ((400.0 * f) as usize).to_string()));
                overrides.push(("servers.1.count".into(), ((600.0 * f) as usize).to_string()));
            }
            // `cargo bench` passes `--bench`; ignore anything else.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/year-1000.toml");
    let sc = Scenario::load(&path, &overrides).expect("benchmark scenario");
    let started = Instant::now();
    let o = phoenix_simulator::run(&sc, None).expect("run");
    let wall = started.elapsed().as_secs_f64();
    let t = o.timing;
    println!(
        "bench-1000: {} servers, {} days, scheduler {}, physics step {} s, control period {} s",
        o.summary.servers,
        sc.sim.days,
        o.summary.scheduler,
        sc.sim.physics_step_s,
        sc.sim.control_period_s
    );
    println!(
        "wall {wall:.2} s = physics {:.2} s + planning {:.2} s (+ setup); {} plans ({:.2} ms each); {:.1} ns per server-step",
        t.physics_s,
        t.planning_s,
        t.plans,
        t.planning_s * 1000.0 / t.plans.max(1) as f64,
        t.physics_s * 1e9 / t.server_steps.max(1) as f64
    );
    println!(
        "planning: solver {:.2} s, snapshots {:.2} s, applying and bookkeeping {:.2} s",
        t.solver_s,
        t.snapshot_s,
        t.planning_s - t.solver_s - t.snapshot_s
    );
    let mut ms: Vec<f64> = o.series.plans.iter().map(|p| p.solve_ms).collect();
    ms.sort_by(f64::total_cmp);
    if ms.iter().any(|&m| m > 0.0) {
        let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
        let total: f64 = ms.iter().sum();
        let top: f64 = ms[ms.len() - ms.len().div_ceil(10)..].iter().sum();
        println!(
            "solver ms per plan: median {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}; the slowest 10 % take {:.0} % of the solver time",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            100.0 * top / total.max(1e-9)
        );
    }
    println!(
        "extrapolated to 365 days: physics {:.1} s, planning {:.1} s",
        t.physics_s * 365.0 / sc.sim.days,
        t.planning_s * 365.0 / sc.sim.days
    );
    println!(
        "summary: IT {:.0} kWh, heat delivered {:.0} kWh, coverage {:.1} %, net cost {:.2}, plan failures {}, kept {}, batch {}/{} done, {} missed",
        o.summary.it_energy_kwh,
        o.summary.heat_delivered_kwh,
        o.summary.heat_coverage * 100.0,
        o.summary.net_cost,
        o.summary.plan_failures,
        o.summary.plans_kept,
        o.summary.batch_jobs_completed,
        o.summary.batch_jobs,
        o.summary.batch_deadline_misses
    );
}
