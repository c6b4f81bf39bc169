//! The optimiser against the greedy baseline on the example scenarios, over
//! one simulated day each: lower net cost, no more thermal violations, no
//! deadline misses. These run the real planner in the closed loop, so they
//! fail if the optimiser stops paying for itself.

use std::path::{Path, PathBuf};

use phoenix_simulator::{Scenario, Summary};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(file: &str, scheduler: &str, days: &str) -> Summary {
    let o: Vec<(String, String)> = vec![
        ("sim.scheduler".into(), scheduler.into()),
        ("sim.days".into(), days.into()),
        ("sim.plan_time_limit_ms".into(), "400".into()),
    ];
    let sc = Scenario::load(&root().join("scenarios").join(file), &o).unwrap();
    phoenix_simulator::run(&sc, None).unwrap().summary
}

fn optimizer_beats_greedy(file: &str, days: &str) {
    let g = run(file, "greedy", days);
    let o = run(file, "optimizer", days);
    eprintln!(
        "{file}: net cost optimizer {:.3} vs greedy {:.3}; thermal {} vs {}; misses {} vs {}; sla {} vs {}",
        o.net_cost,
        g.net_cost,
        o.thermal_violation_s,
        g.thermal_violation_s,
        o.batch_deadline_misses,
        g.batch_deadline_misses,
        o.sla_violation_s,
        g.sla_violation_s
    );
    assert!(
        o.net_cost < g.net_cost,
        "{file}: optimizer {} ≥ greedy {}",
        o.net_cost,
        g.net_cost
    );
    assert!(o.thermal_violation_s <= g.thermal_violation_s, "{file}");
    assert_eq!(o.batch_deadline_misses, 0, "{file}: {o:?}");
}

#[test]
fn optimizer_beats_greedy_on_the_small_scenario() {
    optimizer_beats_greedy("small.toml", "1");
}

#[test]
fn optimizer_beats_greedy_on_the_tomato_greenhouse() {
    optimizer_beats_greedy("tomato-greenhouse.toml", "1");
}

#[test]
fn optimizer_beats_greedy_on_the_swimming_pool() {
    optimizer_beats_greedy("swimming-pool.toml", "1");
}

#[test]
fn optimizer_beats_greedy_on_gpu_district_heating() {
    optimizer_beats_greedy("gpu-district-heating.toml", "1");
}
