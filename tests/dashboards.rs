//! The Grafana dashboards in `dashboards/`: every file parses and follows the
//! conventions (uid, title, schemaVersion, a `${datasource}` variable, units
//! on every panel, raw InfluxQL using `$timeFilter` and `$__interval`), and —
//! against a real InfluxDB (Debian `influxdb`) loaded with the simulator's
//! line protocol — every query returns data.

use std::collections::BTreeSet;
use std::path::PathBuf;

use protocol::measurements;
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

/// The simulator's line protocol for half a day of the small example
/// scenario — the same measurement names the live controller writes.
fn simulated_lines() -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/small.toml");
    let overrides = [
        ("sim.days".to_string(), "0.5".to_string()),
        ("output.per_server".to_string(), "true".to_string()),
        // The scheduler dashboard plots the optimiser's lower bound, which
        // the simulator computes only when asked.
        ("sim.lower_bound".to_string(), "true".to_string()),
    ];
    let sc = simulator::Scenario::load(&path, &overrides).expect("the small scenario loads");
    let out = simulator::run(&sc, None).expect("the small scenario runs");
    (sc.name.clone(), simulator::output::line_protocol(&sc, &out))
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

    let (site, lines) = simulated_lines();
    let site = site.as_str();
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
                    "time >= '2026-01-15T00:00:00Z' AND time < '2026-01-16T00:00:00Z'",
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
