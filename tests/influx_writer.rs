//! The time-series writer against a real server (Debian `victoria-metrics`,
//! which accepts InfluxDB line protocol on `/api/v2/write`): points land;
//! while the database is down they stay buffered and land once it is back.

use std::time::{Duration, Instant};

use phoenix::influx::{spawn, InfluxConfig};
use protocol::measurements::{fields, Point, SERVER};
use tokio::sync::watch;

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().expect("in range")
}

/// Number of samples VictoriaMetrics holds for `metric` with tag `node`.
fn samples(vm_url: &str, metric: &str, node: &str) -> usize {
    let sel = testkit::url_encode(&format!("{metric}{{node=\"{node}\"}}"));
    let Ok((200, body)) = testkit::http(
        "GET",
        &format!("{vm_url}/api/v1/export?match[]={sel}&start=0"),
        None,
    ) else {
        return 0;
    };
    body.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["values"].as_array().map_or(0, Vec::len))
        .sum()
}

fn wait_for_samples(vm_url: &str, node: &str, n: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        // Ask VictoriaMetrics to make fresh data searchable.
        let _ = testkit::http("GET", &format!("{vm_url}/internal/force_flush"), None);
        let got = samples(vm_url, "phoenix_server_power_w", node);
        if got >= n || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs victoria-metrics (scripts/install-test-deps)"]
async fn written_points_land_in_a_real_server() {
    let vm = testkit::VictoriaMetrics::start().expect("victoria-metrics starts");
    let mut cfg = InfluxConfig::new(vm.url(), "phoenix", "phoenix");
    cfg.flush_ms = 100;
    let (stop, rx) = watch::channel(false);
    let (sink, task) = spawn(cfg, rx);
    let t0 = now_ns() - 120 * 1_000_000_000; // in the past: exports end at "now"
    for i in 0..50 {
        sink.push(
            &Point::new(SERVER, t0 + i * 1_000_000_000)
                .tag("site", "test")
                .tag("node", "n1")
                .float(fields::POWER_W, 100.0 + i as f64),
        );
    }
    let url = vm.url();
    let got = tokio::task::spawn_blocking(move || wait_for_samples(&url, "n1", 50))
        .await
        .expect("join");
    assert_eq!(got, 50);
    assert_eq!(sink.stats().written, 50);
    stop.send(true).expect("writer alive");
    task.await.expect("writer ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs victoria-metrics (scripts/install-test-deps)"]
async fn points_survive_a_database_outage() {
    let vm = testkit::VictoriaMetrics::start().expect("victoria-metrics starts");
    let port = vm.stop();
    let mut cfg = InfluxConfig::new(format!("http://127.0.0.1:{port}"), "phoenix", "phoenix");
    cfg.flush_ms = 100;
    cfg.timeout_ms = 1_000;
    let (stop, rx) = watch::channel(false);
    let (sink, task) = spawn(cfg, rx);
    let t0 = now_ns() - 120 * 1_000_000_000; // in the past: exports end at "now"
    let started = Instant::now();
    for i in 0..20 {
        sink.push(
            &Point::new(SERVER, t0 + i * 1_000_000_000)
                .tag("site", "test")
                .tag("node", "n2")
                .float(fields::POWER_W, i as f64),
        );
    }
    // The push calls return at once while the database is down.
    assert!(started.elapsed() < Duration::from_secs(1));
    // Wait until at least one write has failed.
    let until = Instant::now() + Duration::from_secs(10);
    while sink.stats().failures == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = sink.stats();
    assert!(s.failures >= 1, "{s:?}");
    assert_eq!(s.buffered, 20);
    assert!(s.last_error.is_some());

    let vm = testkit::VictoriaMetrics::start_on(port).expect("victoria-metrics back");
    let url = vm.url();
    let got = tokio::task::spawn_blocking(move || wait_for_samples(&url, "n2", 20))
        .await
        .expect("join");
    assert_eq!(got, 20, "every buffered point lands after the outage");
    assert_eq!(sink.stats().buffered, 0);
    assert_eq!(sink.stats().dropped, 0);
    stop.send(true).expect("writer alive");
    task.await.expect("writer ends cleanly");
}
