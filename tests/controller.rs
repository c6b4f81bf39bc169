//! The controller end to end against a real mosquitto broker: a fake agent
//! reports telemetry, a greenhouse publishes demand; the controller plans,
//! sends caps with leases, publishes retained offers, serves its API, marks a
//! silent node stale, survives a broker restart and says `offline` on stop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hvac_bridge::SiteConfig;
use phoenix::controller::config::ControllerConfig;
use phoenix::controller::run::{self, Clock};
use protocol::payloads::{decode, CapCommand, HeatOffer};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

type Seen = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

fn site_toml_with(port: u16, mode: &str) -> String {
    // A fresh state folder under target/tmp (left there for a look afterwards).
    let state_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("state folder")
        .keep();
    let state_dir = state_dir.display();
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
site = "t"

[[consumers]]
id = "gh1"
stale_after_s = 3600

[controller]
state_dir = "{state_dir}"
mode = "{mode}"
control_period_s = 900
horizon_steps = 4
node_stale_after_s = 600
time_limit_ms = 500

[controller.prices]
electricity_per_kwh = 0.12
heat_value_per_kwh = 0.09

[[controller.loops]]
id = "gh1"
consumer = "gh1"
max_kw = 50

[[controller.servers]]
id = "a"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.3
temp_limit_c = 80
loop = "gh1"
recovery = 0.85

[[controller.servers]]
id = "b"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.3
temp_limit_c = 80
loop = "gh1"
recovery = 0.85
"#
    )
}

/// A test client that records everything under the site and plays the
/// agent of node `a` and the greenhouse `gh1`.
async fn peers(port: u16, seen: Seen, stop: watch::Receiver<bool>) {
    let mut opts = MqttOptions::new("test-peers", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = AsyncClient::new(opts, 256);
    let c2 = client.clone();
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                return;
            }
            let now = chrono::Utc::now().to_rfc3339();
            let t = format!(r#"{{"ts":"{now}","cpu_util":0.3,"cpu_temp_c":55.0,"power_w":110.0}}"#);
            let _ = c2
                .publish("phoenix/v1/t/node/a/telemetry", QoS::AtMostOnce, false, t)
                .await;
            let _ = c2
                .publish(
                    "phoenix/v1/t/node/a/status",
                    QoS::AtLeastOnce,
                    true,
                    "online",
                )
                .await;
            let d = format!(r#"{{"ts":"{now}","demand_kw":0.15}}"#);
            let _ = c2
                .publish(
                    "phoenix/v1/t/consumer/gh1/demand",
                    QoS::AtLeastOnce,
                    false,
                    d,
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.subscribe("phoenix/v1/t/#", QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                seen.lock()
                    .unwrap()
                    .push((p.topic.clone(), p.payload.to_vec(), p.retain));
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn wait_for(
    seen: &Seen,
    what: &str,
    pred: impl Fn(&(String, Vec<u8>, bool)) -> bool,
) -> (String, Vec<u8>, bool) {
    // Generous: CI machines are shared; this is a deadline, not a timing claim.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = seen.lock().unwrap().iter().find(|m| pred(m)).cloned() {
            return m;
        }
        assert!(Instant::now() < until, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first message a new client subscribing to `topic` receives, with
/// its retain flag: for a topic already published to, the retained copy.
async fn first_message(port: u16, topic: &str) -> (Vec<u8>, bool) {
    let id = format!("late-{}", testkit::free_port());
    let (client, mut ev) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 16);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < until,
            "nothing on {topic} for a new subscriber"
        );
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                let _ = client.disconnect().await;
                return (p.payload.to_vec(), p.retain);
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {}
        }
    }
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let url = format!("http://{addr}{path}");
    let (status, body) = tokio::task::spawn_blocking(move || testkit::http("GET", &url, None))
        .await
        .unwrap()
        .expect("API answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A controller in `mode` on the broker at `port`, with the test peers
/// (agent of node `a`, greenhouse `gh1`) recording what they see.
struct Rig {
    seen: Seen,
    running: run::Running,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
    stop_peers: watch::Sender<bool>,
    peers_task: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn start(port: u16, mode: &str) -> Self {
        let cfg: SiteConfig<ControllerConfig> =
            SiteConfig::from_toml(&site_toml_with(port, mode)).expect("config");
        let seen: Seen = Arc::default();
        let (stop_peers, peers_stop) = watch::channel(false);
        let peers_task = tokio::spawn(peers(port, seen.clone(), peers_stop));
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // 900 s periods at 300× speed: one plan every 3 s.
        let clock = Clock::accelerated(chrono::Utc::now(), 300.0);
        let (running, join) = run::start(cfg, clock, Some(listener), stopped)
            .await
            .expect("starts");
        Self {
            seen,
            running,
            stop,
            join,
            stop_peers,
            peers_task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn the_controller_plans_caps_offers_and_recovers_from_a_broker_restart() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    let Rig {
        seen,
        running,
        stop,
        join,
        stop_peers,
        peers_task,
    } = Rig::start(port, "apply").await;
    // A service pinned to node a keeps it on (idle servers whose heat is
    // worth less than their power would be switched off, and get no cap).
    running.app.site.write().unwrap().vms.insert(
        "db".into(),
        scheduler::model::Vm {
            id: "db".into(),
            vcpus: 2,
            mem_gib: 4.0,
            image: None,
            host: Some("a".into()),
            kind: scheduler::model::VmKind::Interactive,
            load: Some(0.5),
            work_core_h: None,
            deadline: None,
            migratable: false,
        },
    );

    // The recorder subscribed before the controller published, so it may
    // get the live delivery, whose retain flag MQTT 3.1.1 clears: accept
    // either here, and check retention with a subscriber that joins after.
    wait_for(&seen, "controller online", |(t, p, _)| {
        t == "phoenix/v1/t/controller/status" && p == b"online"
    })
    .await;
    let (payload, retained) = first_message(port, "phoenix/v1/t/controller/status").await;
    assert_eq!(payload, b"online");
    assert!(retained, "status is retained");

    let (_, cap, retained) = wait_for(&seen, "a cap for node a", |(t, _, _)| {
        t == "phoenix/v1/t/node/a/cap"
    })
    .await;
    assert!(!retained, "commands are never retained");
    let cap: CapCommand = decode(&cap).expect("a valid cap command");
    assert_eq!(cap.lease_s, 2700.0, "lease = 3 control periods by default");
    let cap_w = cap.cap_w.expect("a cap in watts");
    assert!(
        (93.7..=135.0 * 1.06).contains(&cap_w),
        "cap {cap_w} W within the server's curve plus headroom"
    );

    let (_, offer, _) = wait_for(&seen, "an offer for gh1", |(t, _, _)| {
        t == "phoenix/v1/t/consumer/gh1/offer"
    })
    .await;
    let offer: HeatOffer = decode(&offer).expect("a valid offer");
    assert_eq!(offer.forecast_kw.len(), 4);
    assert!(
        offer.available_kw > 0.0 && offer.available_kw <= 0.15 + 1e-9,
        "{offer:?}"
    );

    let url = format!("http://{}/metrics", running.api_addr);
    let (_, metrics) = tokio::task::spawn_blocking(move || testkit::http("GET", &url, None))
        .await
        .unwrap()
        .expect("metrics answer");
    for needle in [
        "phoenix_plans_total",
        "phoenix_devices_online 0",
        "phoenix_bridge_events{source=\"modbus_error\"} 0",
        "phoenix_node_power_w{node=\"a\"} 110",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }

    let (code, plan) = get_json(running.api_addr, "/api/v1/plan").await;
    assert_eq!(code, 200);
    assert_eq!(plan["status"], "applied");
    let (_, site) = get_json(running.api_addr, "/api/v1/site").await;
    assert_eq!(site["nodes"]["a"]["stale"], false);
    assert_eq!(site["nodes"]["b"]["stale"], true, "b never reported");
    assert_eq!(site["consumers"]["gh1"]["demand"]["demand_kw"], 0.15);

    // Broker restart: the controller reconnects and keeps sending caps.
    let port = broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _broker = testkit::Mosquitto::start_on(port).expect("mosquitto back");
    let n_before = seen.lock().unwrap().len();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let fresh = seen.lock().unwrap()[n_before..]
            .iter()
            .any(|(t, _, _)| t == "phoenix/v1/t/node/a/cap");
        if fresh {
            break;
        }
        assert!(
            Instant::now() < until,
            "no cap within 20 s of the broker's restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let before_stop = seen.lock().unwrap().len();
    stop.send(true).unwrap();
    join.await.expect("clean stop");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let offline = seen.lock().unwrap()[before_stop..]
            .iter()
            .any(|(t, p, _)| t == "phoenix/v1/t/controller/status" && p == b"offline");
        if offline {
            break;
        }
        assert!(Instant::now() < until, "controller never said offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_peers.send(true);
    peers_task.abort();
}

#[test]
fn the_example_site_file_passes_the_check_and_a_typo_is_named() {
    let bin = env!("CARGO_BIN_EXE_phoenix");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/site.toml");
    let out = std::process::Command::new(bin)
        .args(["controller", "--config", example, "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (2 servers"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("site.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("cap_headroom = 0.05", "cap_hedroom = 0.05");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(bin)
        .args(["controller", "--config", bad.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cap_hedroom"), "{err}");
}

#[test]
fn the_deploy_stack_is_consistent() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let deploy = root.join("deploy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["controller", "--check", "--config"])
        .arg(deploy.join("site.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every local path the compose file mounts or builds from exists.
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let mut checked = 0;
    for line in compose.lines() {
        let t = line.trim().trim_start_matches("- ");
        let path = t
            .strip_prefix("dockerfile: ")
            .map(|p| root.join(p))
            .or_else(|| {
                (t.starts_with("./") || t.starts_with("../"))
                    .then(|| deploy.join(t.split(':').next().unwrap()))
            });
        if let Some(p) = path {
            assert!(
                p.exists(),
                "compose.yaml refers to {} which does not exist",
                p.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} paths checked");
    // The site file points at the compose services, not at loopback.
    let site = std::fs::read_to_string(deploy.join("site.toml")).unwrap();
    assert!(site.contains("mqtt://mosquitto:1883") && site.contains("http://influxdb:8086"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn in_approval_mode_nothing_is_applied_until_an_operator_approves() {
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    let Rig {
        seen,
        running,
        stop,
        join,
        stop_peers,
        peers_task,
    } = Rig::start(port, "approval").await;

    // Wait for a plan awaiting approval.
    let until = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let (code, plan) = get_json(running.api_addr, "/api/v1/plan").await;
        if code == 200 && plan["status"] == "awaiting_approval" {
            break plan["id"].as_u64().expect("plan id");
        }
        assert!(Instant::now() < until, "no plan awaiting approval");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _, _)| t.ends_with("/cap") || t.ends_with("/offer")),
        "nothing is applied before approval"
    );
    // Approve the latest plan (a newer one may supersede it meanwhile: retry).
    let mut id = id;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let url = format!("http://{}/api/v1/plan/{id}/approve", running.api_addr);
        let (code, _) = tokio::task::spawn_blocking(move || testkit::http("POST", &url, None))
            .await
            .unwrap()
            .expect("API answers");
        if code == 204 {
            break;
        }
        assert!(Instant::now() < until, "could not approve a plan");
        let (_, plan) = get_json(running.api_addr, "/api/v1/plan").await;
        id = plan["id"].as_u64().unwrap_or(id);
    }
    let (_, offer, _) = wait_for(&seen, "an offer after approval", |(t, _, _)| {
        t == "phoenix/v1/t/consumer/gh1/offer"
    })
    .await;
    decode::<HeatOffer>(&offer).expect("a valid offer");
    let (_, plan) = get_json(running.api_addr, "/api/v1/plan").await;
    assert!(
        plan["status"] == "applied" || plan["status"] == "awaiting_approval",
        "{plan}"
    );

    stop.send(true).unwrap();
    join.await.expect("clean stop");
    let _ = stop_peers.send(true);
    peers_task.abort();
}
