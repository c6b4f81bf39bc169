//! Prices and carbon in the closed loop (DESIGN.md §4.9): a price file read
//! by a scenario, its fallback, and the summary's CO2 figures checked by
//! hand.

use std::path::{Path, PathBuf};

use phoenix_simulator::Scenario;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn small(overrides: &[(&str, &str)]) -> Scenario {
    let mut o: Vec<(String, String)> = vec![
        ("sim.days".into(), "0.25".into()),
        ("sim.compare_baseline".into(), "false".into()),
        ("output.step_s".into(), "3600".into()),
    ];
    o.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Scenario::load(&root().join("scenarios/small.toml"), &o).unwrap()
}

#[test]
fn grid_avoided_and_net_co2_follow_the_energy_by_hand() {
    let sc = small(&[
        ("prices.carbon_g_per_kwh", "250"),
        ("prices.gas_kg_co2_per_kwh", "0.2"),
        ("prices.boiler_efficiency", "0.8"),
    ]);
    let s = phoenix_simulator::run(&sc, None).unwrap().summary;
    assert!(s.facility_energy_kwh > 0.0 && s.heat_delivered_kwh > 0.0);
    // 250 g/kWh = 0.25 kg per kWh of facility energy.
    assert!((s.grid_co2_kg - 0.25 * s.facility_energy_kwh).abs() < 1e-6);
    // Each kWh delivered spares 1 / 0.8 kWh of gas at 0.2 kg per kWh.
    assert!((s.avoided_co2_kg - s.heat_delivered_kwh / 0.8 * 0.2).abs() < 1e-6);
    assert!((s.net_co2_kg - (s.grid_co2_kg - s.avoided_co2_kg)).abs() < 1e-9);
}

#[test]
fn a_price_file_sets_each_hours_price_and_carbon_and_falls_back_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.csv");
    // Two hours known from 00:00 (one negative), then the run goes on to 06:00.
    std::fs::write(
        &file,
        "time,price_per_kwh,carbon_g_per_kwh\n\
         2026-01-15T00:00:00Z,0.40,100\n\
         2026-01-15T01:00:00Z,-0.05,500\n",
    )
    .unwrap();
    let sc = small(&[("prices.electricity_file", file.to_str().unwrap())]);
    let o = phoenix_simulator::run(&sc, None).unwrap();
    let rows = &o.series.rows;
    assert_eq!(rows.len(), 6);
    assert!((rows[0].price_per_kwh - 0.40).abs() < 1e-12);
    assert!((rows[1].price_per_kwh + 0.05).abs() < 1e-12);
    assert!((rows[1].carbon_g_per_kwh - 500.0).abs() < 1e-9);
    // Past the file (shorter than a day): the scenario's hourly tariff, 0.12
    // at night, and its carbon intensity (default 0).
    assert!((rows[3].price_per_kwh - 0.12).abs() < 1e-12);
    assert_eq!(rows[3].carbon_g_per_kwh, 0.0);
    let cost: f64 = rows.iter().map(|r| r.facility_kw() * r.price_per_kwh).sum();
    assert!((o.summary.electricity_cost - cost).abs() < 1e-6 * cost.abs().max(1.0));
    let co2: f64 = rows
        .iter()
        .map(|r| r.facility_kw() * r.carbon_g_per_kwh / 1000.0)
        .sum();
    assert!((o.summary.grid_co2_kg - co2).abs() < 1e-6);
    assert!(o.summary.grid_co2_kg > 0.0);
}

#[test]
fn a_bad_price_file_is_refused_naming_the_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, "time,price_per_kwh\n2026-01-15T00:00:00Z,cheap\n").unwrap();
    let o = [(
        "prices.electricity_file".to_string(),
        file.to_str().unwrap().to_string(),
    )];
    let e = Scenario::load(&root().join("scenarios/small.toml"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("prices.electricity_file") && e.contains("bad.csv") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn the_shipped_price_year_is_the_generators_output_and_a_valid_series() {
    let shipped = std::fs::read_to_string(root().join("scenarios/prices-2026.csv")).unwrap();
    let year = phoenix_simulator::price_year::generate(2026, phoenix_simulator::price_year::SEED);
    assert!(
        shipped == phoenix_simulator::price_year::csv(&year),
        "regenerate with `cargo run -p phoenix-simulator --example price_year`"
    );
    let s = protocol::series::parse_csv(&shipped).unwrap();
    assert_eq!(s.points().len(), 365 * 96);
    assert!(s.has_carbon());
    let negative = s.points().iter().filter(|p| p.price_per_kwh < 0.0).count();
    assert!(
        (100..2000).contains(&negative),
        "{negative} negative quarter hours"
    );
    // Evening peaks above midday in every month's mean.
    for month in 1..=12u32 {
        let mean_at = |hour: u32| {
            let v: Vec<f64> = s
                .points()
                .iter()
                .filter(|p| {
                    use chrono::{Datelike, Timelike};
                    p.start.month() == month && p.start.hour() == hour
                })
                .map(|p| p.price_per_kwh)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean_at(19) > mean_at(12), "month {month}");
    }
}
