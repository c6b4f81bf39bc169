//! The agent library against a real mosquitto broker on a loopback port,
//! with a fake sysfs tree and a fake GPU. Run with `--include-ignored`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use phoenix_sensors::gpu::GpuBackend;
use phoenix_sensors::testing::FakeSysfs;
use phoenix_sensors::{AgentConfig, AgentError, AgentOptions, AgentStats, Node};
use protocol::payloads::{decode, Telemetry};
use protocol::topics::Topics;
use testkit::Mosquitto;

const SITE: &str = "site-a";
const NODE: &str = "n1";
const SECOND: Duration = Duration::from_secs(1);

struct Running {
    stats: Arc<AgentStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl Running {
    async fn stop(mut self) -> Result<(), AgentError> {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("agent stopped in time")
            .expect("agent task")
    }

    fn count(&self, f: impl Fn(&AgentStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        AgentStats::get(f(&self.stats))
    }
}

fn start(
    url: String,
    fake: &FakeSysfs,
    cfg: AgentConfig,
    gpu: Result<Arc<dyn GpuBackend>, String>,
) -> Running {
    let node = Node::open(fake.sysfs(), cfg.clone(), gpu, false);
    let opts = AgentOptions {
        mqtt_url: url,
        mqtt_security: Default::default(),
        site: SITE.into(),
        node: NODE.into(),
        config: cfg,
        dry_run: false,
    };
    let stats = Arc::new(AgentStats::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(phoenix_sensors::run(opts, node, stats.clone(), async {
        let _ = rx.await;
    }));
    Running {
        stats,
        stop: Some(tx),
        handle,
    }
}

/// Publish a cap and assert that package 0's RAPL limit becomes `uw`
/// within a second.
async fn cap_applied(peer: &Peer, fake: &FakeSysfs, seq: u64, cap_w: f64, lease_s: f64, uw: u64) {
    peer.publish(
        &topics().node_cap(NODE),
        cap_json(seq, Some(cap_w), lease_s),
    )
    .await;
    assert!(
        eventually(SECOND, || fake.read(RAPL0) == uw).await,
        "cap {cap_w} W (seq {seq}) not applied: {}",
        fake.read(RAPL0)
    );
}

fn topics() -> Topics {
    Topics::new(SITE)
}

/// Broker, fake RAPL server, the agent, and a peer that has seen `online`.
async fn setup(
    cfg_edit: impl FnOnce(&mut AgentConfig),
) -> (Mosquitto, FakeSysfs, tempfile::TempDir, Running, Peer) {
    let broker = Mosquitto::start().expect("mosquitto");
    let fake = rapl_server();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg_edit(&mut cfg);
    let agent = start(broker.url(), &fake, cfg, Err("no GPU in this test".into()));
    let mut peer = Peer::connect(
        broker.port(),
        &[&topics().node_status(NODE), &topics().node_telemetry(NODE)],
    )
    .await;
    assert!(
        peer.next_matching(&topics().node_status(NODE), 5 * SECOND, |p| p == b"online")
            .await
            .is_some(),
        "the agent reports online"
    );
    (broker, fake, dir, agent, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_cap_changes_the_files_within_a_second() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    // (200 − 40 W platform) / 2 packages = 80 W each.
    cap_applied(&peer, &fake, 1, 200.0, 10.0, 80_000_000).await;
    assert_eq!(fake.read(RAPL1), 80_000_000);
    assert_eq!(agent.count(|s| &s.caps_accepted), 1);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn telemetry_reports_hwmon_temperature_and_the_cap_in_force() {
    let (_broker, _fake, _dir, agent, mut peer) = setup(|_| {}).await;
    peer.publish(&topics().node_cap(NODE), cap_json(1, Some(200.0), 10.0))
        .await;
    let msg = peer
        .next_matching(&topics().node_telemetry(NODE), 3 * SECOND, |p| {
            decode::<Telemetry>(p).is_ok_and(|t| t.cap_w.is_some())
        })
        .await
        .expect("telemetry with the cap");
    let t: Telemetry = decode(&msg).unwrap();
    assert_eq!(t.cap_w, Some(200.0));
    assert_eq!(t.cpu_temp_c, Some(50.0), "coretemp, matched by name");
    assert!(!t.thermal_guard);
    assert!(t.mem_total_gib.is_some_and(|m| m > 0.0));
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn lease_expiry_restores_the_files() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    cap_applied(&peer, &fake, 1, 200.0, 1.0, 80_000_000).await;
    assert!(eventually(3 * SECOND, || fake.read(RAPL0) == RAPL_ORIGINAL_UW).await);
    assert_eq!(fake.read(RAPL1), RAPL_ORIGINAL_UW);
    assert_eq!(agent.count(|s| &s.lease_expiries), 1);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn lease_expiry_holds_the_configured_safe_cap() {
    let (_broker, fake, _dir, agent, peer) = setup(|c| c.caps.safe_cap_w = Some(100.0)).await;
    // From the start the safe cap holds: (100 − 40)/2 = 30 W per package.
    assert!(eventually(SECOND, || fake.read(RAPL0) == 30_000_000).await);
    cap_applied(&peer, &fake, 1, 300.0, 1.0, 130_000_000).await;
    assert!(eventually(3 * SECOND, || fake.read(RAPL0) == 30_000_000).await);
    agent.stop().await.unwrap();
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW, "originals on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn the_thermal_guard_acts_on_a_hot_reading() {
    // No stepping, to see the first guard level and the hysteresis.
    let (_broker, fake, _dir, agent, mut peer) = setup(|c| c.thermal.guard_step = 0.0).await;
    // The controller allows 300 W; the package nears its 90 °C max.
    cap_applied(&peer, &fake, 1, 300.0, 30.0, 130_000_000).await;
    fake.set_temp(2, 1, 86_000);
    // Guard level: 10 + 0.3 × (300 − 10) = 97 W → 48.5 W per package.
    assert!(eventually(SECOND, || fake.read(RAPL0) == 48_500_000).await);
    assert_eq!(agent.count(|s| &s.guard_engagements), 1);
    let msg = peer
        .next_matching(&topics().node_telemetry(NODE), 3 * SECOND, |p| {
            decode::<Telemetry>(p).is_ok_and(|t| t.thermal_guard)
        })
        .await;
    assert!(msg.is_some(), "telemetry says the guard holds");
    // Hysteresis: 82 °C (above 90 − 5 − 5) keeps the guard.
    fake.set_temp(2, 1, 82_000);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.read(RAPL0), 48_500_000);
    fake.set_temp(2, 1, 70_000);
    assert!(eventually(SECOND, || fake.read(RAPL0) == 130_000_000).await);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_drifted_value_is_reapplied() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    cap_applied(&peer, &fake, 1, 200.0, 30.0, 80_000_000).await;
    fake.write(RAPL1, 150_000_000); // another daemon raises the limit
    assert!(eventually(SECOND, || fake.read(RAPL1) == 80_000_000).await);
    assert!(eventually(SECOND, || agent.count(|s| &s.drift_reapplied) >= 1).await);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn bad_payloads_change_nothing_and_are_counted() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    let bad: [&str; 9] = [
        "not json",
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":-5,"lease_s":10,"seq":1}"#,
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":"200","lease_s":10,"seq":1}"#,
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":200,"lease_s":10,"seq":-1}"#,
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":200,"lease_s":10}"#,
        r#"{"cap_w":200,"lease_s":10,"seq":1}"#,
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":1e300,"lease_s":10,"seq":1}"#,
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":200,"lease_s":1e9,"seq":1}"#,
        r#"{"ts":"2026-01-15T06:00:00Z","cap_w":200,"lease_s":10,"seq":1,"cap_kw":1}"#,
    ];
    for p in bad {
        peer.publish(&topics().node_cap(NODE), p).await;
    }
    assert!(
        eventually(3 * SECOND, || agent.count(|s| &s.bad_payloads)
            == bad.len() as u64)
        .await,
        "counted {}",
        agent.count(|s| &s.bad_payloads)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(fake.read(RAPL1), RAPL_ORIGINAL_UW);
    assert_eq!(agent.count(|s| &s.caps_accepted), 0);
    // The agent still obeys a good command afterwards.
    cap_applied(&peer, &fake, 1, 200.0, 10.0, 80_000_000).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_repeated_seq_is_applied_once() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    cap_applied(&peer, &fake, 7, 200.0, 10.0, 80_000_000).await;
    // A redelivery of seq 7 (with a different body, to see it ignored).
    peer.publish(&topics().node_cap(NODE), cap_json(7, Some(300.0), 10.0))
        .await;
    assert!(eventually(SECOND, || agent.count(|s| &s.duplicates) == 1).await);
    assert_eq!(fake.read(RAPL0), 80_000_000);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn shutdown_restores_the_files_and_publishes_offline() {
    let (broker, fake, dir, agent, peer) = setup(|_| {}).await;
    let state = dir.path().join("agent-state.json");
    assert!(state.exists(), "originals persisted before any cap");
    cap_applied(&peer, &fake, 1, 200.0, 60.0, 80_000_000).await;
    agent.stop().await.unwrap();
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(fake.read(RAPL1), RAPL_ORIGINAL_UW);
    assert!(!state.exists(), "state file removed after a clean restore");
    // A new subscriber sees the retained status.
    let mut late = Peer::connect(broker.port(), &[&topics().node_status(NODE)]).await;
    let status = late
        .next_matching(&topics().node_status(NODE), 3 * SECOND, |_| true)
        .await;
    assert_eq!(status.as_deref(), Some(&b"offline"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn gpu_caps_reach_the_gpu_within_its_constraints() {
    let broker = Mosquitto::start().expect("mosquitto");
    let fake = rapl_server();
    let dir = tempfile::tempdir().unwrap();
    let gpu = one_gpu();
    let agent = start(broker.url(), &fake, test_config(dir.path()), backend(&gpu));
    let mut peer = Peer::connect(
        broker.port(),
        &[&topics().node_status(NODE), &topics().node_telemetry(NODE)],
    )
    .await;
    assert!(peer
        .next_matching(&topics().node_status(NODE), 5 * SECOND, |p| p == b"online")
        .await
        .is_some());
    let cmd = cap_json_at(
        1,
        Some(400.0),
        10.0,
        chrono::Utc::now(),
        r#","gpu_caps_w":[50]"#,
    );
    peer.publish(&topics().node_cap(NODE), cmd).await;
    assert!(eventually(SECOND, || gpu.device(0).limit_mw == 100_000).await);
    // CPU: 400 − 40 − 100 (the GPU's clamped cap) = 260 W → 130 W each.
    assert!(eventually(SECOND, || fake.read(RAPL0) == 130_000_000).await);
    let msg = peer
        .next_matching(&topics().node_telemetry(NODE), 3 * SECOND, |p| {
            decode::<Telemetry>(p).is_ok_and(|t| t.gpus.first().is_some_and(|g| g.limit_w == 100.0))
        })
        .await;
    assert!(msg.is_some(), "telemetry carries the GPU limit");
    agent.stop().await.unwrap();
    assert_eq!(gpu.device(0).limit_mw, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn caps_still_arrive_after_a_broker_restart() {
    let (broker, fake, _dir, agent, _peer) = setup(|_| {}).await;
    let port = broker.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let broker = Mosquitto::start_on(port).expect("mosquitto again");
    // The agent reconnects (with backoff) and resubscribes on ConnAck.
    assert!(eventually(10 * SECOND, || agent.count(|s| &s.connections) >= 2).await);
    let mut peer = Peer::connect(broker.port(), &[&topics().node_status(NODE)]).await;
    assert!(peer
        .next_matching(&topics().node_status(NODE), 5 * SECOND, |p| p == b"online")
        .await
        .is_some());
    cap_applied(&peer, &fake, 1, 200.0, 10.0, 80_000_000).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn an_oversized_payload_changes_nothing_and_the_agent_recovers() {
    let (broker, fake, dir, agent, peer) = setup(|_| {}).await;
    let huge = format!(
        r#"{{"ts":"2026-01-15T06:00:00Z","cap_w":1,"lease_s":10,"seq":1,"pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    // rumqttc would refuse to send it: mosquitto_pub does.
    let file = dir.path().join("huge.json");
    std::fs::write(&file, huge).unwrap();
    let st = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            "1",
        ])
        .args(["-t", &topics().node_cap(NODE), "-f"])
        .arg(&file)
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    // The client drops the oversized packet (and the connection); it
    // reconnects and obeys the next command.
    assert!(eventually(5 * SECOND, || agent.count(|s| &s.bad_payloads) == 1).await);
    assert!(eventually(10 * SECOND, || agent.count(|s| &s.connections) >= 2).await);
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    let mut applied = false;
    for seq in 2..20 {
        peer.publish(&topics().node_cap(NODE), cap_json(seq, Some(200.0), 10.0))
            .await;
        if eventually(SECOND, || fake.read(RAPL0) == 80_000_000).await {
            applied = true;
            break;
        }
    }
    assert!(applied, "the agent obeys again after the oversized payload");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_guard_that_does_not_cool_steps_down_to_the_floor() {
    let (_broker, fake, _dir, agent, _peer) = setup(|_| {}).await;
    fake.set_temp(2, 2, 89_000); // Core 0, limit 90 °C, stays hot
                                 // 0.3 of the range at once, then 0.05 less per 100 ms tick, down to
                                 // cpu.min_cap_w = 10 W → 5 W per package.
    assert!(eventually(SECOND, || fake.read(RAPL0) <= 48_500_000).await);
    assert!(eventually(3 * SECOND, || fake.read(RAPL0) == 5_000_000).await);
    fake.set_temp(2, 2, 60_000);
    assert!(eventually(SECOND, || fake.read(RAPL0) == RAPL_ORIGINAL_UW).await);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn without_rapl_a_cap_lowers_scaling_max_freq_and_shutdown_restores_it() {
    let broker = Mosquitto::start().expect("mosquitto");
    let fake = cpufreq_server();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    (cfg.cpu.idle_w, cfg.cpu.max_w) = (20.0, 120.0);
    let agent = start(broker.url(), &fake, cfg, Err("no GPU in this test".into()));
    let mut peer = Peer::connect(broker.port(), &[&topics().node_status(NODE)]).await;
    assert!(peer
        .next_matching(&topics().node_status(NODE), 5 * SECOND, |p| p == b"online")
        .await
        .is_some());
    // 111.2 − 40 W platform = 71.2 W for the CPU = 0.8 f_max by the f³ model.
    peer.publish(&topics().node_cap(NODE), cap_json(1, Some(111.2), 10.0))
        .await;
    assert!(
        eventually(SECOND, || (0..4)
            .all(|n| fake.read(&scaling_max(n)) == 2_400_000))
        .await
    );
    agent.stop().await.unwrap();
    assert!((0..4).all(|n| fake.read(&scaling_max(n)) == 3_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn vm_quotas_reach_cpu_max_until_the_lease_ends_and_telemetry_carries_the_vms() {
    let (_broker, fake, dir, agent, mut peer) = setup(|_| {}).await;
    let web = fake.libvirt_vm(3, "web1", 4, 8);
    let web_max = format!("{web}/cpu.max");
    fake.set_vm_usage(&web, 1_000_000);
    let msg = peer
        .next_matching(&topics().node_telemetry(NODE), 3 * SECOND, |p| {
            decode::<Telemetry>(p).is_ok_and(|t| t.vms.is_some_and(|v| !v.is_empty()))
        })
        .await
        .expect("telemetry with the VM");
    let vms = decode::<Telemetry>(&msg).unwrap().vms.unwrap();
    assert_eq!((vms[0].id.as_str(), vms[0].vcpus), ("web1", Some(4)));
    assert_eq!(vms[0].mem_gib, Some(8.0));
    assert!(vms[0].cpu_s.is_some_and(|s| s >= 1.0), "{vms:?}");
    let cmd = cap_json_at(
        1,
        None,
        1.5,
        chrono::Utc::now(),
        r#","vm_cpu_cores":{"web1":2.5}"#,
    );
    peer.publish(&topics().node_cap(NODE), cmd).await;
    assert!(
        eventually(SECOND, || fake.read_text(&web_max) == "250000 100000").await,
        "quota written: {}",
        fake.read_text(&web_max)
    );
    // The original is in the state file while the quota holds.
    let state = std::fs::read_to_string(dir.path().join("agent-state.json")).unwrap();
    assert!(
        state.contains("vm_cpu_max") && state.contains("web1"),
        "{state}"
    );
    assert!(
        eventually(3 * SECOND, || fake.read_text(&web_max) == "max 100000").await,
        "restored on lease expiry"
    );
    // Again, and this time the agent exits while it holds.
    let cmd = cap_json_at(
        2,
        None,
        30.0,
        chrono::Utc::now(),
        r#","vm_cpu_cores":{"web1":1}"#,
    );
    peer.publish(&topics().node_cap(NODE), cmd).await;
    assert!(eventually(SECOND, || fake.read_text(&web_max) == "100000 100000").await);
    agent.stop().await.unwrap();
    assert_eq!(fake.read_text(&web_max), "max 100000", "restored on exit");
    assert!(!dir.path().join("agent-state.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn stale_future_and_over_long_caps_are_refused_and_change_nothing() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    let now = chrono::Utc::now();
    let refused = [
        cap_json_at(
            1,
            Some(200.0),
            10.0,
            now - chrono::Duration::seconds(11),
            "",
        ),
        cap_json_at(
            2,
            Some(200.0),
            10.0,
            now + chrono::Duration::seconds(60),
            "",
        ),
        cap_json(3, Some(200.0), 86_400.0),
        cap_json_at(
            4,
            Some(200.0),
            10.0,
            now,
            &format!(r#","epoch":{}"#, now.timestamp_millis() + 3_600_000),
        ),
    ];
    for p in &refused {
        peer.publish(&topics().node_cap(NODE), p.clone()).await;
    }
    assert!(
        eventually(3 * SECOND, || agent.count(|s| &s.caps_refused) == 4).await,
        "refused {}",
        agent.count(|s| &s.caps_refused)
    );
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(agent.count(|s| &s.caps_accepted), 0);
    cap_applied(&peer, &fake, 5, 200.0, 10.0, 80_000_000).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_retained_cap_is_refused_when_the_agent_subscribes() {
    let broker = Mosquitto::start().expect("mosquitto");
    let peer = Peer::connect(broker.port(), &[]).await;
    peer.client
        .publish(
            topics().node_cap(NODE),
            rumqttc::QoS::AtLeastOnce,
            true,
            cap_json(1, Some(200.0), 600.0),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fake = rapl_server();
    let dir = tempfile::tempdir().unwrap();
    let agent = start(
        broker.url(),
        &fake,
        test_config(dir.path()),
        Err("no GPU".into()),
    );
    assert!(eventually(5 * SECOND, || agent.count(|s| &s.caps_refused) == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(agent.count(|s| &s.caps_accepted), 0);
    cap_applied(&peer, &fake, 2, 200.0, 10.0, 80_000_000).await;
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_new_controller_epoch_overrides_a_stranger_with_the_highest_seq() {
    let (_broker, fake, _dir, agent, peer) = setup(|_| {}).await;
    let now = chrono::Utc::now();
    let epoch = |e: i64| format!(r#","epoch":{e}"#);
    let started = now.timestamp_millis();
    // A stranger: the highest seq, a long lease, an older epoch.
    let stranger = cap_json_at(u64::MAX, Some(100.0), 3000.0, now, &epoch(started - 60_000));
    peer.publish(&topics().node_cap(NODE), stranger).await;
    // (100 − 40) / 2 = 30 W per package.
    assert!(eventually(SECOND, || fake.read(RAPL0) == 30_000_000).await);
    // The real controller, started now, counts from its start time.
    let real = cap_json_at(started as u64, Some(200.0), 60.0, now, &epoch(started));
    peer.publish(&topics().node_cap(NODE), real).await;
    assert!(eventually(SECOND, || fake.read(RAPL0) == 80_000_000).await);
    // The stranger's epoch is refused from now on.
    let again = cap_json_at(u64::MAX, Some(100.0), 3000.0, now, &epoch(started - 60_000));
    peer.publish(&topics().node_cap(NODE), again).await;
    assert!(eventually(SECOND, || agent.count(|s| &s.caps_refused) == 1).await);
    assert_eq!(fake.read(RAPL0), 80_000_000);
    agent.stop().await.unwrap();
}
