//! Outputs: summary.json with every DESIGN.md §4.4 field, CSV and line
//! protocol that agree with the series, SVG charts, the report, sweeps.

use std::path::{Path, PathBuf};

use phoenix_simulator::{output, sweep, Scenario};
use protocol::measurements as m;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn small(overrides: &[(&str, &str)]) -> Scenario {
    let o: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Scenario::load(&root().join("scenarios/small.toml"), &o).unwrap()
}

const SUMMARY_FIELDS: [&str; 22] = [
    "it_energy_kwh",
    "cooling_energy_kwh",
    "heat_recovered_kwh",
    "heat_delivered_kwh",
    "heat_demand_kwh",
    "heat_coverage",
    "backup_heat_kwh",
    "electricity_cost",
    "heat_value",
    "net_cost",
    "pue",
    "erf",
    "max_component_temp_c",
    "thermal_violation_s",
    "sla_violation_s",
    "migrations",
    "batch_jobs_completed",
    "batch_deadline_misses",
    "simulated_s",
    "wall_s",
    "ere",
    "heat_pump_energy_kwh",
];

#[test]
fn a_run_writes_summary_series_charts_and_report() {
    let sc = small(&[
        ("sim.scheduler", "greedy"),
        ("sim.days", "0.5"),
        ("output.per_server", "true"),
    ]);
    let o = phoenix_simulator::run(&sc, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    output::write_all(dir.path(), &sc, &o).unwrap();

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    for f in SUMMARY_FIELDS {
        assert!(summary[f].is_number(), "summary.json lacks `{f}`");
    }
    assert_eq!(summary["simulated_s"].as_f64(), Some(43_200.0));

    let csv = std::fs::read_to_string(dir.path().join("timeseries.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 48, "a header and one row per 15 min");
    let width = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == width));
    assert!(lines[1].starts_with("2026-01-15T00:00:00Z,0,"));

    let lp = std::fs::read_to_string(dir.path().join("timeseries.lp")).unwrap();
    let known = [m::SITE, m::LOOP, m::CONSUMER, m::PLAN, m::SERVER];
    let mut counts = [0usize; 5];
    for line in lp.lines() {
        let meas = line.split([',', ' ']).next().unwrap();
        let i = known
            .iter()
            .position(|k| *k == meas)
            .unwrap_or_else(|| panic!("unknown measurement: {line}"));
        counts[i] += 1;
        assert!(line.contains("site=small"), "{line}");
        let ts: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(ts >= 1_768_435_200_000_000_000, "{line}");
    }
    assert_eq!(counts, [48, 48, 48, 48, 16 * 48]);
    assert!(lp.contains(" it_power_kw="));
    assert!(lp.contains("node=g5-0000"));

    for chart in ["heat.svg", "power.svg", "temperatures.svg", "cost.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{chart}"
        );
    }
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("heat coverage") && report.contains("ISO/IEC 30134-2"));
    assert!(report.contains("![heat.svg](heat.svg)"));
}

#[test]
fn line_protocol_and_csv_carry_the_same_numbers() {
    let sc = small(&[("sim.scheduler", "none"), ("sim.days", "0.25")]);
    let o = phoenix_simulator::run(&sc, None).unwrap();
    let lp = output::line_protocol(&sc, &o);
    let first_site = lp.lines().find(|l| l.starts_with("phoenix_site,")).unwrap();
    let it = o.series.rows[0].it_kw;
    assert!(
        first_site.contains(&format!("it_power_kw={it},")),
        "{first_site}"
    );
    let csv = output::csv(&sc, &o);
    assert!(csv.lines().nth(1).unwrap().contains(&format!(",{it},")));
}

#[test]
fn a_sweep_runs_variants_and_compares_them() {
    let text = std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap();
    let (key, values) = sweep::parse_sweep("servers.1.count=4,8").unwrap();
    let overrides = vec![
        ("sim.days".to_string(), "0.25".to_string()),
        ("sim.scheduler".into(), "greedy".into()),
    ];
    let vs = sweep::variants(&text, &root().join("scenarios"), &overrides, &key, &values).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outs = sweep::run(dir.path(), &key, &vs, None).unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].summary.servers, 12);
    assert_eq!(outs[1].summary.servers, 16);
    assert!(outs[1].summary.it_energy_kwh > outs[0].summary.it_energy_kwh);
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(dir.path().join("servers.1.count=4/summary.json").is_file());
    assert!(dir.path().join("sweep-net-cost.svg").is_file());
    assert!(std::fs::read_to_string(dir.path().join("sweep.md"))
        .unwrap()
        .contains("| 8 |"));
    // A bad value is refused before anything runs.
    let e = sweep::variants(
        &text,
        &root().join("scenarios"),
        &overrides,
        "sim.days",
        &["-1".into()],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("sim.days"));
}
