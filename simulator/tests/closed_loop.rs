//! The closed loop: energy balance, determinism, agreement with the
//! planner's steady state, and robustness to snapshots no plan can meet.

use std::path::{Path, PathBuf};

use phoenix_simulator::{Outcome, Scenario, Summary};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(file: &str, overrides: &[(&str, &str)]) -> Scenario {
    let o: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Scenario::load(&root().join("scenarios").join(file), &o).unwrap()
}

fn run(sc: &Scenario) -> Outcome {
    phoenix_simulator::run(sc, None).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()))
}

fn check_balance(s: &Summary) {
    assert!(s.heat_used_kwh <= s.heat_recovered_kwh + 1e-9, "{s:?}");
    assert!(s.heat_delivered_kwh <= s.heat_demand_kwh + 1e-9, "{s:?}");
    assert!(
        close(s.backup_heat_kwh, s.heat_demand_kwh - s.heat_delivered_kwh),
        "{s:?}"
    );
    assert!(
        close(
            s.heat_delivered_kwh,
            s.heat_used_kwh + s.heat_pump_energy_kwh
        ),
        "{s:?}"
    );
    assert!(close(
        s.facility_energy_kwh,
        s.it_energy_kwh + s.cooling_energy_kwh + s.heat_pump_energy_kwh
    ));
    assert!(close(s.net_cost, s.electricity_cost - s.heat_value));
    assert!(close(s.pue, s.facility_energy_kwh / s.it_energy_kwh));
    assert!(close(s.erf, s.heat_delivered_kwh / s.facility_energy_kwh));
    assert!(s.pue >= 1.0 && (0.0..=1.0).contains(&s.erf));
}

#[test]
fn energy_balance_closes_on_every_example() {
    for file in [
        "small.toml",
        "swimming-pool.toml",
        "gpu-district-heating.toml",
        "tomato-greenhouse.toml",
    ] {
        let sc = load(file, &[("sim.days", "0.25"), ("sim.scheduler", "greedy")]);
        let o = run(&sc);
        check_balance(&o.summary);
        assert!(
            o.summary.heat_delivered_kwh > 0.0,
            "{file}: some heat is delivered"
        );
    }
}

#[test]
fn recovered_heat_is_recovery_times_it_energy() {
    // Every server on the loop with the same recovery: recovered = r × IT.
    let sc = load(
        "small.toml",
        &[("servers.0.recovery", "0.85"), ("sim.scheduler", "greedy")],
    );
    let s = run(&sc).summary;
    assert!(
        close(s.heat_recovered_kwh, 0.85 * s.it_energy_kwh),
        "{} vs {}",
        s.heat_recovered_kwh,
        s.it_energy_kwh
    );
    // And the series agrees with the totals.
}

#[test]
fn series_sums_to_the_summary() {
    let sc = load("small.toml", &[("sim.scheduler", "greedy")]);
    let o = run(&sc);
    let h = o.series.step_s / 3600.0;
    let it: f64 = o.series.rows.iter().map(|r| r.it_kw * h).sum();
    let delivered: f64 = o
        .series
        .rows
        .iter()
        .map(|r| r.consumers[0].delivered_kw * h)
        .sum();
    let cost: f64 = o.series.rows.iter().map(|r| r.electricity_cost).sum();
    assert!(close(it, o.summary.it_energy_kwh));
    assert!(close(delivered, o.summary.heat_delivered_kwh));
    assert!(close(cost, o.summary.electricity_cost));
    assert_eq!(o.series.rows.len(), 96);
}

#[test]
fn same_seed_gives_the_same_summary_but_wall_time() {
    let sc = load("small.toml", &[("sim.scheduler", "greedy")]);
    let mut a = run(&sc).summary;
    let mut b = run(&sc).summary;
    a.wall_s = 0.0;
    b.wall_s = 0.0;
    assert_eq!(a, b);
    let other = load(
        "small.toml",
        &[("sim.scheduler", "greedy"), ("sim.seed", "2")],
    );
    let mut c = run(&other).summary;
    c.wall_s = 0.0;
    assert_ne!(a, c, "another seed gives another weather and workload");
}

#[test]
fn the_optimiser_gives_the_same_summary_for_a_seed_however_busy_the_machine() {
    // The optimiser's plans of this site take about 0.4 s each in a release
    // build and seconds in a test build: the 500 ms limit it used to run
    // under bound, and how far each plan got depended on the machine's load.
    // Without a limit (the default) the optimiser stops on its own.
    let sc = load("small.toml", &[("sim.days", "0.125")]);
    assert_eq!(sc.sim.plan_time_limit_ms, None);
    let mut a = run(&sc).summary;
    let mut b = run(&sc).summary;
    a.wall_s = 0.0;
    b.wall_s = 0.0;
    assert_eq!(a.plans, 12);
    assert_eq!(a, b);
}

#[test]
fn simulated_power_and_temperature_match_the_planners_steady_state() {
    // Constant load, constant weather, no batch: the power the plan predicts
    // for its first step is the power the physics draws, and temperatures
    // settle at T_in + R·P.
    let sc = load(
        "small.toml",
        &[
            ("sim.scheduler", "greedy"),
            ("sim.days", "0.125"),
            ("workload.diurnal_amplitude", "0"),
            ("workload.batch_arrivals_per_hour", "0"),
            ("weather.kind", "\"constant\""),
        ],
    );
    let o = run(&sc);
    for (row, plan) in o.series.rows.iter().zip(&o.series.plans).skip(1) {
        let planned_kw = plan.energy_kwh / (8.0 * 0.25);
        assert!(
            close(row.it_kw, planned_kw),
            "simulated {} kW, planned {planned_kw} kW",
            row.it_kw
        );
    }
    let sc = load(
        "small.toml",
        &[
            ("sim.scheduler", "none"),
            ("sim.days", "0.125"),
            ("workload.diurnal_amplitude", "0"),
            ("workload.batch_arrivals_per_hour", "0"),
            ("output.per_server", "true"),
        ],
    );
    let o = run(&sc);
    let last = o.series.servers.iter().rev().take(16);
    for r in last {
        let g = &sc.servers[if r.server < 8 { 0 } else { 1 }];
        // τ = R·C ≤ 70 s: after 15 min the RC state equals its steady state.
        assert!(
            (r.temp_c - (g.inlet_c + g.r_k_per_w * r.power_w)).abs() < 1e-6,
            "{r:?}"
        );
    }
}

#[test]
fn thermal_guard_prevents_violations_that_occur_without_it() {
    let hot = [
        ("sim.scheduler", "none"),
        ("servers.0.inlet_c", "45"),
        ("sim.days", "0.25"),
    ];
    let guarded = run(&load("small.toml", &hot)).summary;
    assert_eq!(guarded.thermal_violation_s, 0.0);
    assert!(guarded.max_component_temp_c <= 80.0 + 1e-9);
    let mut unguarded = hot.to_vec();
    unguarded.push(("sim.thermal_guard", "false"));
    let s = run(&load("small.toml", &unguarded)).summary;
    assert!(s.thermal_violation_s > 0.0, "{s:?}");
    assert!(s.max_component_temp_c > 80.0);
}

#[test]
fn impossible_deadlines_are_counted_and_the_run_goes_on() {
    let text = format!(
        "{}\n[[vms]]\nid = \"late\"\nvcpus = 2\nmem_gib = 4\nkind = \"batch\"\nwork_core_h = 40\ndeadline = \"2026-01-15T02:00:00Z\"\n",
        std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap()
    );
    for scheduler in ["greedy", "optimizer", "none"] {
        let sc = Scenario::from_toml(
            &text,
            &root(),
            &[
                ("sim.scheduler".into(), scheduler.into()),
                // A day of the optimiser without a limit is slow in a test
                // build; this test compares no summaries.
                ("sim.plan_time_limit_ms".into(), "400".into()),
            ],
        )
        .unwrap();
        let s = run(&sc).summary;
        assert!(s.batch_deadline_misses >= 1, "{scheduler}: {s:?}");
        check_balance(&s);
        // The late job still finishes: 40 core-hours on 2 vCPUs take 20 h.
        assert!(s.batch_jobs_completed >= 1);
    }
}

#[test]
fn replanning_every_few_periods_follows_the_plans_later_steps() {
    let every = run(&load("small.toml", &[("sim.scheduler", "greedy")])).summary;
    let sc = load(
        "small.toml",
        &[("sim.scheduler", "greedy"), ("sim.replan_periods", "4")],
    );
    let s = run(&sc).summary;
    assert_eq!(every.plans, 96);
    assert_eq!(s.plans, 24);
    check_balance(&s);
    // Between plans the batch work of the plan's later steps runs: nearly as
    // much work gets done as when planning every period.
    assert!(
        s.batch_jobs_completed as f64 >= 0.8 * every.batch_jobs_completed as f64,
        "{} vs {}",
        s.batch_jobs_completed,
        every.batch_jobs_completed
    );
    let e = Scenario::from_toml(
        &std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap(),
        &root(),
        &[("sim.replan_periods".into(), "9".into())],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("sim.replan_periods"));
}

#[test]
fn a_job_the_planner_cannot_serve_in_time_is_replanned_with_a_relaxed_deadline() {
    // Hot inlets cap every server well below full load, so an 8-vCPU job due
    // in exactly its run time at full speed cannot be met by any plan; the
    // simulator must not stop, hold back every later arrival, or lose the job.
    let text = format!(
        "{}\n[[vms]]\nid = \"tight\"\nvcpus = 8\nmem_gib = 8\nkind = \"batch\"\nwork_core_h = 16\n\
         arrival = \"2026-01-15T03:00:00Z\"\ndeadline = \"2026-01-15T05:00:00Z\"\n",
        std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap()
    );
    let o: Vec<(String, String)> = [
        ("sim.scheduler", "greedy"),
        ("servers.0.inlet_c", "45"),
        ("servers.1.inlet_c", "50"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sc = Scenario::from_toml(&text, &root(), &o).unwrap();
    let s = run(&sc).summary;
    assert!(s.plan_failures >= 1, "{s:?}");
    assert_eq!(s.plans_kept, 0, "a relaxed plan is always found: {s:?}");
    assert!(s.batch_deadline_misses >= 1);
    assert!(
        s.batch_jobs_completed + 3 >= s.batch_jobs,
        "later jobs are not held back: {s:?}"
    );
    check_balance(&s);
}
