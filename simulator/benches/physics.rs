//! The server physics alone: one control period (15 steps of 60 s) of the
//! year bench's 1,000 servers, repeated, with a seeded mix of on and off
//! servers, loads and batch grants (some servers capped). Prints the time
//! per server-step and a checksum of the results.
//!
//! `cargo bench -p phoenix-simulator --bench physics -- [--periods N]`

use std::path::Path;
use std::time::Instant;

use phoenix_simulator::physics::server::{PeriodInput, ServerBank};
use phoenix_simulator::site::Site;
use phoenix_simulator::workload::load_factor;
use phoenix_simulator::Scenario;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let periods: usize = args
        .iter()
        .position(|a| a == "--periods")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/year-1000.toml");
    let sc = Scenario::load(&path, &[]).expect("benchmark scenario");
    let site = Site::build(&sc).expect("site");
    let n = site.server_group.len();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut bank = ServerBank {
        group: site.server_group.clone(),
        on: (0..n).map(|_| rng.random_bool(0.8)).collect(),
        temp_c: site
            .server_group
            .iter()
            .map(|&g| site.groups[g].inlet_c)
            .collect(),
        interactive_cores: site
            .server_group
            .iter()
            .map(|&g| rng.random_range(0.0..0.7) * site.groups[g].cores)
            .collect(),
        batch_cores: site
            .server_group
            .iter()
            .map(|&g| {
                if rng.random_bool(0.3) {
                    rng.random_range(0.0..0.5) * site.groups[g].cores
                } else {
                    0.0
                }
            })
            .collect(),
        vms: vec![1; n],
        period: Vec::new(),
    };
    let dt_s = sc.sim.physics_step_s;
    let steps = (sc.sim.control_period_s / dt_s).round() as usize;
    let decay: Vec<f64> = site.groups.iter().map(|g| g.decay(dt_s)).collect();
    let factors: Vec<Vec<f64>> = (0..96)
        .map(|p| {
            (0..steps)
                .map(|k| load_factor(0.3, (p as f64 * 0.25 + k as f64 * dt_s / 3600.0) % 24.0))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut checksum = 0.0;
    for p in 0..periods {
        let totals = bank.run_period(
            &site.groups,
            PeriodInput {
                dt_s,
                load_factor: &factors[p % factors.len()],
                decay: &decay,
                loops: site.loops.len(),
            },
        );
        checksum += totals[0] + bank.period.iter().map(|s| s.max_temp_c).sum::<f64>();
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "physics: {n} servers, {periods} periods of {steps} steps: {wall:.2} s, {:.2} ns per server-step; checksum {checksum:?}",
        wall * 1e9 / (periods * steps * n) as f64
    );
}
