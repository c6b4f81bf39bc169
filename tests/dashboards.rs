//! The Grafana dashboards in `dashboards/`: every file parses and follows the
//! conventions (uid, title, schemaVersion, a `${datasource}` variable, units
//! on every panel, raw InfluxQL using `$timeFilter` and `$__interval`), and —
//! against a real InfluxDB (Debian `influxdb`) — every query returns data
//! from points written with Phoenix's measurement names.

use std::collections::BTreeSet;
use std::path::PathBuf;

use protocol::measurements::{self, fields, Point};
use serde_json::Value;

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("readable");
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            out.push((path, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 4,
        "expected the four dashboards, found {}",
        out.len()
    );
    out
}

fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for t in panel["targets"].as_array().expect("targets") {
            out.push((
                title.clone(),
                t["query"].as_str().expect("query").to_string(),
            ));
        }
    }
    out
}

#[test]
fn every_dashboard_follows_the_conventions() {
    let known: BTreeSet<&str> = [
        measurements::SERVER,
        measurements::LOOP,
        measurements::CONSUMER,
        measurements::SITE,
        measurements::PLAN,
        measurements::FACILITY,
    ]
    .into_iter()
    .collect();
    let mut uids = BTreeSet::new();
    for (path, d) in dashboards() {
        let name = path.display();
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(uids.insert(uid.to_string()), "{name}: duplicate uid {uid}");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: no title"
        );
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{name}: old schemaVersion"
        );
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{name}: no datasource variable"
        );
        for panel in d["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().unwrap_or("?");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name} / {title}: datasource is not ${{datasource}}"
            );
            let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
            assert!(
                unit.is_some_and(|u| !u.is_empty()),
                "{name} / {title}: no unit"
            );
        }
        for (title, q) in queries(&d) {
            assert!(
                q.contains("$timeFilter"),
                "{name} / {title}: no $timeFilter in {q}"
            );
            assert!(
                q.contains("GROUP BY time($__interval)"),
                "{name} / {title}: {q}"
            );
            let from = q
                .split("FROM \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("{name} / {title}: no FROM \"…\" in {q}"));
            assert!(
                known.contains(from),
                "{name} / {title}: unknown measurement {from}"
            );
        }
    }
}

/// One day of points at 5-minute resolution for every measurement the
/// dashboards read, written with the shared encoder.
fn sample_lines(site: &str, start_ns: i64) -> String {
    let mut out = String::new();
    for k in 0..288i64 {
        let ts = start_ns + k * 300 * 1_000_000_000;
        let x = k as f64 / 288.0 * std::f64::consts::TAU;
        for (n, node) in ["n01", "n02", "n03"].iter().enumerate() {
            Point::new(measurements::SERVER, ts)
                .tag("site", site)
                .tag("node", *node)
                .tag("loop", "gh1")
                .float(fields::POWER_W, 100.0 + 20.0 * x.sin() + n as f64)
                .float(fields::CPU_UTIL, 0.5 + 0.3 * x.cos())
                .float(fields::TEMP_C, 55.0 + 5.0 * x.sin())
                .float(fields::INLET_C, 24.0)
                .float(fields::CAP_W, 140.0)
                .int(fields::ON, 1)
                .int(fields::VMS, 4)
                .write_line(&mut out);
        }
        Point::new(measurements::LOOP, ts)
            .tag("site", site)
            .tag("loop", "gh1")
            .float(fields::HEAT_RECOVERED_KW, 0.26)
            .float(fields::HEAT_DELIVERED_KW, 0.25)
            .float(fields::HEAT_DEMAND_KW, 0.3 + 0.1 * x.cos())
            .float(fields::HEAT_OFFERED_KW, 0.26)
            .write_line(&mut out);
        Point::new(measurements::CONSUMER, ts)
            .tag("site", site)
            .tag("consumer", "gh1")
            .float(fields::DEMAND_KW, 0.3 + 0.1 * x.cos())
            .float(fields::DELIVERED_KW, 0.25)
            .float(fields::BACKUP_KW, 0.05 + 0.1 * x.cos().max(0.0))
            .float(fields::INDOOR_C, 18.0)
            .float(fields::SETPOINT_C, 18.0)
            .float(fields::OUTDOOR_C, 5.0 + 3.0 * x.sin())
            .write_line(&mut out);
        Point::new(measurements::SITE, ts)
            .tag("site", site)
            .float(fields::IT_POWER_KW, 0.31)
            .float(fields::COOLING_POWER_KW, 0.02)
            .float(fields::HEAT_PUMP_POWER_KW, 0.0)
            .float(fields::FACILITY_POWER_KW, 0.33)
            .float(fields::PUE, 1.06)
            .float(fields::ERF, 0.75)
            .float(fields::ELECTRICITY_PRICE_PER_KWH, 0.12)
            .float(fields::OUTDOOR_C, 5.0 + 3.0 * x.sin())
            .int(fields::SERVERS_ON, 3)
            .int(fields::VMS, 12)
            .write_line(&mut out);
        if k % 3 == 0 {
            Point::new(measurements::PLAN, ts)
                .tag("site", site)
                .tag("solver", "optimizer")
                .float(fields::COST, 0.4)
                .float(fields::BASELINE_COST, 0.5)
                .float(fields::GAIN, 0.1)
                .float(fields::LOWER_BOUND, 0.38)
                .float(fields::SOLVE_MS, 12.0)
                .int(fields::MIGRATIONS, 1)
                .int(fields::SWITCHES, 0)
                .int(fields::SERVERS_ON, 3)
                .float(fields::ENERGY_KWH, 0.62)
                .float(fields::HEAT_DELIVERED_KWH, 0.5)
                .write_line(&mut out);
        }
    }
    out
}

#[test]
#[ignore = "needs influxdb (scripts/install-test-deps)"]
fn every_dashboard_query_returns_data_from_a_real_influxdb() {
    let db = testkit::Influxd::start().expect("influxd starts");
    let url = db.url();
    let (status, body) = testkit::http(
        "POST",
        &format!(
            "{url}/query?q={}",
            testkit::url_encode("CREATE DATABASE phoenix")
        ),
        None,
    )
    .expect("create database");
    assert_eq!(status, 200, "{body}");

    let site = "greenhouse-a";
    let start_ns = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
    let lines = sample_lines(site, start_ns);
    let (status, body) = testkit::http(
        "POST",
        &format!("{url}/write?db=phoenix&precision=ns"),
        Some(&lines),
    )
    .expect("write");
    assert_eq!(status, 204, "write refused: {body}");

    let mut checked = 0;
    for (path, d) in dashboards() {
        for (title, q) in queries(&d) {
            let q = q
                .replace(
                    "$timeFilter",
                    "time >= '2026-01-01T00:00:00Z' AND time < '2026-01-02T00:00:00Z'",
                )
                .replace("$__interval", "15m")
                .replace("$site", site);
            let (status, body) = testkit::http(
                "GET",
                &format!("{url}/query?db=phoenix&q={}", testkit::url_encode(&q)),
                None,
            )
            .expect("query");
            assert_eq!(status, 200, "{} / {title}: {body}", path.display());
            let json: Value = serde_json::from_str(&body).expect("InfluxDB answers JSON");
            let result = &json["results"][0];
            assert!(
                result.get("error").is_none(),
                "{} / {title}: {q}: {body}",
                path.display()
            );
            let has_value = result["series"].as_array().is_some_and(|series| {
                series.iter().any(|s| {
                    s["values"].as_array().is_some_and(|rows| {
                        rows.iter().any(|r| {
                            r.as_array()
                                .is_some_and(|c| c[1..].iter().any(|v| v.is_number()))
                        })
                    })
                })
            });
            assert!(
                has_value,
                "{} / {title}: no data for {q}: {body}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} queries checked");
}
