//! What time shifting is worth with a dynamic tariff: run one scenario with
//! the optimiser, with greedy, and with the optimiser planning on flat
//! prices (the tariff's mean; the bill still follows the tariff), and print
//! a Markdown table.
//!
//! `cargo run --release -p phoenix-simulator --example dynamic_tariff --
//! scenarios/dynamic-tariff.toml [KEY=VALUE ...]` (overrides as `--set`).

use std::path::Path;

use phoenix_simulator::Scenario;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "scenarios/dynamic-tariff.toml".to_string());
    let base: Vec<(String, String)> = args
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let variants: [(&str, &[(&str, &str)]); 3] = [
        ("optimiser", &[("sim.scheduler", "optimizer")]),
        ("greedy", &[("sim.scheduler", "greedy")]),
        (
            "optimiser on flat prices",
            &[("sim.scheduler", "optimizer"), ("prices.planning", "flat")],
        ),
    ];
    println!(
        "| planner | IT energy kWh | electricity cost | paid per kWh | heat value | net cost | grid CO2 kg | net CO2 kg | deadline misses | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, set) in variants {
        let mut o = base.clone();
        o.extend(set.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sc = Scenario::load(Path::new(&path), &o)?;
        let s = phoenix_simulator::run(&sc, None)?.summary;
        println!(
            "| {name} | {:.1} | {:.2} | {:.4} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {:.0} |",
            s.it_energy_kwh,
            s.electricity_cost,
            s.electricity_cost / s.facility_energy_kwh.max(1e-9),
            s.heat_value,
            s.net_cost,
            s.grid_co2_kg,
            s.net_co2_kg,
            s.batch_deadline_misses,
            s.wall_s
        );
    }
    Ok(())
}
