//! Scenario parsing and validation: every error names the key and the
//! problem, before any simulation starts; every shipped scenario parses.

use std::path::{Path, PathBuf};

use phoenix_simulator::scenario::{set_key, SchedulerKind};
use phoenix_simulator::{Scenario, ScenarioError};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn small_text() -> String {
    std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap()
}

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::from_toml(text, &root().join("scenarios"), &[])
}

fn with(overrides: &[(&str, &str)]) -> Result<Scenario, ScenarioError> {
    let o: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Scenario::from_toml(&small_text(), &root().join("scenarios"), &o)
}

fn err_of(r: Result<Scenario, ScenarioError>) -> (String, String) {
    let e = r.expect_err("the scenario should be refused");
    (e.key().unwrap_or("").to_string(), e.to_string())
}

#[test]
fn every_shipped_scenario_parses_and_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let sc = Scenario::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(sc.server_count() > 0);
            n += 1;
        }
    }
    assert!(n >= 4, "the three examples and the small test scenario");
}

#[test]
fn unknown_key_is_named() {
    let text = small_text().replace(
        "count = 8\nmodel = \"hp-ml110-g5\"",
        "count = 8\nmodle = \"hp-ml110-g5\"",
    );
    let (key, msg) = err_of(parse(&text));
    assert_eq!(key, "servers[0].modle", "{msg}");
    assert!(msg.contains("unknown field `modle`"), "{msg}");
}

#[test]
fn wrong_type_or_unit_is_named() {
    let (key, msg) = err_of(with(&[("sim.physics_step_s", "\"60s\"")]));
    assert_eq!(key, "sim.physics_step_s", "{msg}");
    let (key, msg) = err_of(with(&[("servers.1.cores", "12.5")]));
    assert_eq!(key, "servers[1].cores", "{msg}");
    let (key, msg) = err_of(with(&[("sim.scheduler", "\"fastest\"")]));
    assert_eq!(key, "sim.scheduler", "{msg}");
    assert!(msg.contains("optimizer"), "{msg}");
}

#[test]
fn missing_epw_file_is_named() {
    let (key, msg) = err_of(with(&[
        ("weather.kind", "\"epw\""),
        ("weather.path", "\"nowhere.epw\""),
    ]));
    assert_eq!(key, "weather.path");
    assert!(
        msg.contains("nowhere.epw") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn curve_of_wrong_length_is_named() {
    let text = small_text().replace(
        "model = \"hp-ml110-g5\"",
        "power_curve_w = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133]",
    );
    let (key, msg) = err_of(parse(&text));
    assert_eq!(key, "servers[0].power_curve_w");
    assert!(
        msg.contains("needs 11 values") && msg.contains("got 10"),
        "{msg}"
    );
}

#[test]
fn decreasing_curve_and_unknown_model_are_refused() {
    let text = small_text().replace(
        "model = \"hp-ml110-g5\"",
        "power_curve_w = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 100]",
    );
    let (key, msg) = err_of(parse(&text));
    assert_eq!(key, "servers[0].power_curve_w");
    assert!(msg.contains("decrease"), "{msg}");
    let (key, msg) = err_of(with(&[("servers.0.model", "\"hp-dl380-g9\"")]));
    assert_eq!(key, "servers[0].model");
    assert!(msg.contains("hp-ml110-g5"), "lists the known models: {msg}");
}

#[test]
fn server_too_small_for_any_vm_is_named() {
    let (key, msg) = err_of(with(&[
        ("servers.0.cores", "1"),
        ("servers.0.mem_gib", "1"),
    ]));
    assert_eq!(key, "servers[0].cores", "{msg}");
    assert!(msg.contains("too small for any VM"), "{msg}");
}

#[test]
fn vm_that_fits_no_server_is_named() {
    let text = format!(
        "{}\n[[vms]]\nid = \"huge\"\nvcpus = 64\nmem_gib = 512\nkind = \"interactive\"\nload = 0.5\n",
        small_text()
    );
    let (key, msg) = err_of(parse(&text));
    assert_eq!(key, "vms[0]");
    assert!(msg.contains("fits no server group"), "{msg}");
}

#[test]
fn references_and_ranges_are_checked() {
    let (key, _) = err_of(with(&[("servers.0.loop", "\"nope\"")]));
    assert_eq!(key, "servers[0].loop");
    let (key, _) = err_of(with(&[("servers.0.recovery", "1.5")]));
    assert_eq!(key, "servers[0].recovery");
    let (key, _) = err_of(with(&[("sim.control_period_s", "100")]));
    assert_eq!(key, "sim.control_period_s");
    let (key, _) = err_of(with(&[("prices.electricity_per_kwh", "[0.1, 0.2]")]));
    assert_eq!(key, "prices.electricity_per_kwh");
    let (key, _) = err_of(with(&[("consumers.0.u_w_per_m2k", "-1")]));
    assert_eq!(key, "consumers[0].u_w_per_m2k");
    let (key, msg) = err_of(with(&[("servers.0.temp_limit_c", "40")]));
    assert_eq!(key, "servers[0].temp_limit_c");
    assert!(msg.contains("idle"), "{msg}");
}

#[test]
fn set_overrides_any_key_including_array_elements() {
    let sc = with(&[
        ("sim.scheduler", "greedy"),
        ("servers.0.count", "200"),
        ("sim.days", "0.5"),
    ])
    .unwrap();
    assert_eq!(sc.sim.scheduler, SchedulerKind::Greedy);
    assert_eq!(sc.servers[0].count, 200);
    assert_eq!(sc.sim.days, 0.5);
    let mut t: toml::Table = small_text().parse().unwrap();
    let e = set_key(&mut t, "servers.7.count", "3").unwrap_err();
    assert!(e.to_string().contains("has 2 elements"), "{e}");
    let e = set_key(&mut t, "sim.days.x", "3").unwrap_err();
    assert!(e.to_string().contains("not a table"), "{e}");
}

#[test]
fn epw_weather_file_is_read() {
    let sc = with(&[
        ("weather.kind", "\"epw\""),
        ("weather.path", "\"../simulator/tests/data/two-weeks.epw\""),
    ])
    .unwrap();
    let w = phoenix_simulator::weather::Weather::new(
        &sc.weather,
        sc.epw_path().as_deref(),
        "2026-01-01T00:00:00Z".parse().unwrap(),
        86_400.0,
        1,
    )
    .unwrap();
    // Row 1 (hour ending 01:00, 1.3 °C) sits at 00:30; row 2 (1.1 °C) at 01:30.
    assert!((w.at(1800.0).outdoor_c - 1.3).abs() < 1e-9);
    assert!((w.at(3600.0).outdoor_c - 1.2).abs() < 1e-9);
    assert_eq!(w.at(0.5 * 3600.0 + 3600.0 * 3.0).ghi_w_per_m2, 0.0);
    assert!(w.at(12.5 * 3600.0).ghi_w_per_m2 > 100.0);
}

#[test]
fn malformed_epw_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.epw");
    let good = std::fs::read_to_string(root().join("simulator/tests/data/two-weeks.epw")).unwrap();
    let bad: Vec<String> = good
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 12 {
                let mut f: Vec<&str> = l.split(',').collect();
                f[6] = "warm";
                f.join(",")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&p, bad.join("\n")).unwrap();
    let e = phoenix_simulator::weather::parse_epw(&std::fs::read_to_string(&p).unwrap(), &p)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 13"), "{msg}");
}
