//! `phoenix demo` end to end, in-process: the embedded broker, the twin, the
//! bridge polling the twin's Modbus devices and the controller planning on
//! an accelerated clock — plans are made and carried out by the twin's
//! hypervisor, heat is delivered, the API answers, and the demo stops by
//! itself. Everything the test checks of the controller it reads over the
//! HTTP API, as an operator would.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use phoenix::demo::{self, DemoOptions, DemoSummary};
use serde_json::Value;

/// What the test saw of `/api/v1/site` while the demo ran.
#[derive(Debug, Default)]
struct Seen {
    reads: usize,
    /// Off nodes: their `last_seen` at the previous read.
    off_since: BTreeMap<String, Value>,
    /// Off nodes that were still off, not stale, offline, shown at their
    /// `off_w` and had sent nothing since a read one or more periods earlier.
    stopped_reporting: BTreeSet<String>,
    /// The latest off node read (for the failure message).
    last_off: Option<Value>,
    /// Off nodes shown at a power other than their `off_w`.
    wrong_power: Vec<String>,
    /// Batch VMs' `work_core_h` at their first read.
    work_first: BTreeMap<String, f64>,
    /// Batch VMs whose `work_core_h` went down since.
    work_went_down: Vec<String>,
}

fn site(addr: SocketAddr) -> Option<Value> {
    let (status, body) = testkit::http("GET", &format!("http://{addr}/api/v1/site"), None).ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn look(seen: &mut Seen, site: &Value) {
    seen.reads += 1;
    let empty = serde_json::Map::new();
    for (id, n) in site["nodes"].as_object().unwrap_or(&empty) {
        if n["on"] != false {
            seen.off_since.remove(id);
            continue;
        }
        let mut shown = n.clone();
        shown["telemetry"] = Value::Null;
        seen.last_off = Some(shown);
        if n["power_w"].as_f64() != n["off_w"].as_f64() {
            seen.wrong_power
                .push(format!("{id}: {} vs {}", n["power_w"], n["off_w"]));
        }
        // Quiet: nothing arrived since the previous read (a period ago).
        let before = seen.off_since.insert(id.clone(), n["last_seen"].clone());
        let quiet = before.is_some_and(|b| b == n["last_seen"]);
        if quiet && n["stale"] == false && n["online"] == false {
            seen.stopped_reporting.insert(id.clone());
        }
    }
    for (id, vm) in site["vms"].as_object().unwrap_or(&empty) {
        let Some(w) = vm["work_core_h"].as_f64().filter(|_| vm["kind"] == "batch") else {
            continue;
        };
        let first = *seen.work_first.entry(id.clone()).or_insert(w);
        if w < first - 1e-9 && !seen.work_went_down.contains(id) {
            seen.work_went_down.push(id.clone());
        }
    }
}

/// Run the demo at `speed` for `real_s` seconds, reading its API meanwhile.
async fn run_and_watch(speed: f64, real_s: f64) -> (DemoSummary, Seen) {
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        speed,
        duration_s: None,
        seed: 7,
        print: false,
    };
    let running = demo::start(&opts).await.expect("the demo starts");
    let addr = running.api_addr;
    let mut seen = Seen::default();
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(real_s);
    // Reads a control period apart (900 site seconds).
    let every = Duration::from_secs_f64(900.0 / speed);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(every).await;
        if let Ok(Some(s)) = tokio::task::spawn_blocking(move || site(addr)).await {
            look(&mut seen, &s);
        }
    }
    let summary = running.finish().await.expect("the demo stops cleanly");
    (summary, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plans_through_the_protocols_delivers_heat_and_stops_by_itself() {
    // 15-minute periods every 1.5 s; 30 s = 5 site hours, from the evening
    // price peak into cheaper night power.
    let (summary, seen) = run_and_watch(600.0, 30.0).await;
    assert!(summary.site_hours > 1.5, "{summary:?}");
    assert!(
        summary.plans >= 4,
        "a plan every control period: {summary:?}"
    );
    assert_eq!(summary.admissions_refused, 0, "{summary:?}");
    assert!(summary.heat_demand_kwh > 0.0, "{summary:?}");
    assert!(
        summary.heat_delivered_kwh > 0.0
            && summary.heat_delivered_kwh <= summary.heat_demand_kwh + 1e-9,
        "{summary:?}"
    );
    assert!(
        summary.max_temp_c > 24.0 && summary.max_temp_c <= 80.5,
        "{summary:?}"
    );
    // What the controller decided reached the twin through its actuator.
    assert!(
        summary.migrations + summary.migrations_failed > 0,
        "migrations went through the hypervisor: {summary:?}"
    );
    assert!(
        summary.power_offs > 0,
        "servers were switched off through the actuator: {summary:?}"
    );
    // A server switched off stops reporting and is shown off at its off_w.
    assert!(seen.reads >= 4, "{seen:?}");
    assert!(
        !seen.stopped_reporting.is_empty(),
        "an off server fell silent, neither stale nor online: {seen:?}"
    );
    assert!(seen.wrong_power.is_empty(), "{seen:?}");
    // Batch work went down by the CPU time the twin's agents measured.
    assert!(
        !seen.work_went_down.is_empty(),
        "a batch job's work_core_h went down: {seen:?}"
    );
}
