//! Batch work for real, end to end against a real mosquitto: a batch VM
//! admitted over the API is placed, its first step's cores reach its host
//! as a per-VM CPU quota (`vm_cpu_cores` in the cap), the host's agent
//! reports the CPU time the VM ran (`vms[].cpu_s`), the controller's
//! remaining work follows it, and the finished job leaves the plan and is
//! reported — on `/api/v1/site` and in `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hvac_bridge::SiteConfig;
use phoenix::controller::config::ControllerConfig;
use phoenix::controller::run::{self, Clock};
use protocol::payloads::{decode, CapCommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

/// Site seconds per real second.
const SPEED: f64 = 300.0;

fn site_toml(port: u16, state_dir: &std::path::Path) -> String {
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
site = "bt"

[controller]
state_dir = "{}"
control_period_s = 900
horizon_steps = 4
node_stale_after_s = 600
time_limit_ms = 500

[controller.prices]
electricity_per_kwh = 0.12
heat_value_per_kwh = 0.09

[[controller.servers]]
id = "a"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.3
temp_limit_c = 80
"#,
        state_dir.display()
    )
}

/// What the fake agent of node `a` knows: the quotas of the latest cap,
/// the CPU seconds each VM has run, and every cap seen.
#[derive(Debug, Default)]
struct Host {
    quotas: BTreeMap<String, f64>,
    cpu_s: BTreeMap<String, f64>,
    caps: Vec<CapCommand>,
}

/// The agent of node `a`: runs the service VM `db` and each VM of its
/// latest cap at its quota (site time), and reports them all in telemetry
/// with their CPU time (a VM its host does not list is dropped).
async fn agent(port: u16, host: Arc<Mutex<Host>>, stop: watch::Receiver<bool>) {
    let (client, mut ev) =
        AsyncClient::new(MqttOptions::new("fake-agent-a", "127.0.0.1", port), 64);
    let publisher = client.clone();
    let h = host.clone();
    tokio::spawn(async move {
        let dt_real = Duration::from_millis(200);
        while !*stop.borrow() {
            let body = {
                let mut h = h.lock().unwrap();
                // The service VM runs here too, at 0.3 of its one vCPU.
                let mut running = h.quotas.clone();
                running.insert("db".into(), 0.3);
                for (vm, cores) in &running {
                    *h.cpu_s.entry(vm.clone()).or_default() +=
                        cores * dt_real.as_secs_f64() * SPEED;
                }
                let vms: Vec<Value> = h
                    .cpu_s
                    .iter()
                    .map(|(id, s)| serde_json::json!({"id": id, "vcpus": 2, "cpu_s": s}))
                    .collect();
                serde_json::json!({"ts": chrono::Utc::now(), "cpu_util": 0.2, "power_w": 90.0, "vms": vms})
                    .to_string()
            };
            let _ = publisher
                .publish(
                    "phoenix/v1/bt/node/a/telemetry",
                    QoS::AtMostOnce,
                    false,
                    body,
                )
                .await;
            let _ = publisher
                .publish(
                    "phoenix/v1/bt/node/a/status",
                    QoS::AtLeastOnce,
                    true,
                    "online",
                )
                .await;
            tokio::time::sleep(dt_real).await;
        }
    });
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client
                    .subscribe("phoenix/v1/bt/node/a/cap", QoS::AtLeastOnce)
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Ok(cap) = decode::<CapCommand>(&p.payload) {
                    let mut h = host.lock().unwrap();
                    h.quotas = cap.vm_cpu_cores.clone().unwrap_or_default();
                    h.caps.push(cap);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    let (_, body) = tokio::task::spawn_blocking(move || testkit::http("GET", &url, None))
        .await
        .unwrap()
        .expect("API answers");
    body
}

/// Wait (a deadline, not a timing claim) until `pred` holds of the site.
async fn until_site(
    addr: std::net::SocketAddr,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let site: Value =
            serde_json::from_str(&get(addr, "/api/v1/site").await).unwrap_or(Value::Null);
        if pred(&site) {
            return site;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {site}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn a_batch_job_runs_at_its_quota_progresses_by_measured_cpu_time_and_leaves_when_done() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let cfg: SiteConfig<ControllerConfig> =
        SiteConfig::from_toml(&site_toml(broker.port(), dir.path())).expect("config");
    let host = Arc::new(Mutex::new(Host::default()));
    let (stop_agent, agent_stop) = watch::channel(false);
    let agent_task = tokio::spawn(agent(broker.port(), host.clone(), agent_stop));
    let (stop, stopped) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = Clock::accelerated(chrono::Utc::now(), SPEED);
    let (running, join) = run::start(cfg, clock, Some(listener), stopped)
        .await
        .expect("starts");
    let addr = running.api_addr;

    let deadline = (clock.now() + chrono::Duration::hours(3)).to_rfc3339();
    let job = format!(
        r#"{{"id":"job","vcpus":2,"mem_gib":2,"kind":"batch","work_core_h":1.5,"deadline":"{deadline}"}}"#
    );
    let url = format!("http://{addr}/api/v1/vms");
    let (status, body) =
        tokio::task::spawn_blocking(move || testkit::http("POST", &url, Some(&job)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 201, "{body}");
    // A service that keeps its host on once the job is done.
    let db =
        r#"{"id":"db","vcpus":1,"mem_gib":1,"kind":"interactive","load":0.3,"migratable":false}"#;
    let url = format!("http://{addr}/api/v1/vms");
    let (status, body) = tokio::task::spawn_blocking(move || testkit::http("POST", &url, Some(db)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 201, "{body}");

    // Placed on a, and its host gets a CPU quota for it.
    until_site(addr, "the job placed on a", |s| {
        s["vms"]["job"]["host"] == "a"
    })
    .await;
    let quota_until = Instant::now() + Duration::from_secs(60);
    let quota = loop {
        let q = host.lock().unwrap().quotas.get("job").copied();
        if let Some(q) = q.filter(|q| *q > 0.0) {
            break q;
        }
        assert!(Instant::now() < quota_until, "no quota for the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        quota <= 2.0 + 1e-9,
        "a quota never exceeds the vCPUs: {quota}"
    );

    // Its remaining work follows the CPU time the host reports.
    let site = until_site(addr, "work going down", |s| {
        s["vms"]["job"]["work_core_h"]
            .as_f64()
            .is_some_and(|w| w < 1.4)
    })
    .await;
    let left = site["vms"]["job"]["work_core_h"].as_f64().unwrap();
    let ran_core_h = host.lock().unwrap().cpu_s["job"] / 3600.0;
    assert!(
        left >= 1.5 - ran_core_h - 1e-9,
        "no more work counted than the host ran: left {left}, ran {ran_core_h}"
    );

    // Done: it leaves the site's VMs and is listed as finished, on time.
    let site = until_site(addr, "the job finished", |s| s["vms"].get("job").is_none()).await;
    let finished = site["finished"].as_array().expect("a finished list");
    assert_eq!(finished.len(), 1, "{site}");
    assert_eq!(finished[0]["id"], "job");
    assert_eq!(finished[0]["on_time"], true);
    let metrics = get(addr, "/metrics").await;
    assert!(
        metrics.contains("phoenix_batch_jobs_completed_total 1"),
        "{metrics}"
    );
    let measured = metrics
        .lines()
        .find(|l| l.starts_with("phoenix_batch_work_core_h_total{source=\"measured\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("measured work in /metrics");
    assert!(
        (measured - 1.5).abs() < 0.01,
        "all of it measured: {measured}"
    );
    // Caps after it finished carry no quota for it.
    let later = host.lock().unwrap().caps.len();
    let until = Instant::now() + Duration::from_secs(30);
    while host.lock().unwrap().caps.len() <= later {
        assert!(Instant::now() < until, "no cap after the job finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = host.lock().unwrap().caps.last().cloned().unwrap();
    assert!(last
        .vm_cpu_cores
        .as_ref()
        .is_none_or(|q| !q.contains_key("job")));

    let _ = stop.send(true);
    join.await.unwrap();
    let _ = stop_agent.send(true);
    agent_task.abort();
}
