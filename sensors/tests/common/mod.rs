//! Fake machines shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use phoenix_sensors::gpu::GpuBackend;
use phoenix_sensors::testing::{FakeGpu, FakeGpuDevice, FakeSysfs};
use phoenix_sensors::AgentConfig;

/// RAPL limit file of package 0.
pub const RAPL0: &str = "sys/class/powercap/intel-rapl:0/constraint_0_power_limit_uw";
/// RAPL limit file of package 1.
pub const RAPL1: &str = "sys/class/powercap/intel-rapl:1/constraint_0_power_limit_uw";
/// Original RAPL limit of each package, µW.
pub const RAPL_ORIGINAL_UW: u64 = 125_000_000;

/// A two-socket server with RAPL limits and a coretemp chip at hwmon2
/// (hwmon0 and hwmon1 are other chips, so index-based code would fail).
pub fn rapl_server() -> FakeSysfs {
    let fake = FakeSysfs::new();
    for (id, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:1", "package-1")] {
        fake.rapl_zone(
            id,
            name,
            1_000_000,
            262_143_328_850,
            Some((RAPL_ORIGINAL_UW, 150_000_000)),
        );
    }
    fake.rapl_zone("intel-rapl:0:0", "core", 0, 262_143_328_850, Some((1, 2)));
    fake.hwmon(0, "acpitz", &[(1, "", 99_000, None, None)]);
    fake.hwmon(1, "nvme", &[(1, "Composite", 45_000, Some(81_850), None)]);
    fake.hwmon(
        2,
        "coretemp",
        &[
            (1, "Package id 0", 50_000, Some(90_000), Some(100_000)),
            (2, "Core 0", 48_000, Some(90_000), Some(100_000)),
        ],
    );
    for n in 0..2 {
        fake.cpufreq_policy(n, 800_000, 3_000_000);
    }
    fake
}

/// A server without RAPL: four cpufreq policies and a k10temp chip.
pub fn cpufreq_server() -> FakeSysfs {
    let fake = FakeSysfs::new();
    for n in 0..4 {
        fake.cpufreq_policy(n, 1_000_000, 3_000_000);
    }
    fake.hwmon(5, "k10temp", &[(1, "Tctl", 60_000, None, None)]);
    fake
}

/// `scaling_max_freq` of policy `n`.
pub fn scaling_max(n: u32) -> String {
    format!("{}/scaling_max_freq", FakeSysfs::policy_dir(n))
}

/// `scaling_min_freq` of policy `n`.
pub fn scaling_min(n: u32) -> String {
    format!("{}/scaling_min_freq", FakeSysfs::policy_dir(n))
}

/// One fake GPU: 150 W drawn at 60 °C, limit 300 W in [100, 300] W.
pub fn one_gpu() -> Arc<FakeGpu> {
    Arc::new(FakeGpu::new(vec![FakeGpuDevice::new(
        150, 60, 300, 100, 300,
    )]))
}

/// The GPU as the agent takes it.
pub fn backend(gpu: &Arc<FakeGpu>) -> Result<Arc<dyn GpuBackend>, String> {
    Ok(gpu.clone() as Arc<dyn GpuBackend>)
}

/// A config for tests: short periods, a state file in `dir`.
pub fn test_config(dir: &std::path::Path) -> AgentConfig {
    let mut cfg = AgentConfig::default();
    cfg.agent.telemetry_interval_s = 0.2;
    cfg.agent.control_interval_s = 0.1;
    cfg.agent.state_file = dir.join("agent-state.json");
    cfg.gpu.enabled = false;
    cfg
}

/// An MQTT peer for tests: a rumqttc client whose received messages land in
/// a channel.
pub struct Peer {
    pub client: rumqttc::AsyncClient,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
}

impl Peer {
    /// Connect to `port` on 127.0.0.1 and subscribe to `filters` (QoS 1);
    /// returns once the subscriptions are acknowledged.
    pub async fn connect(port: u16, filters: &[&str]) -> Peer {
        use rumqttc::{Event, MqttOptions, Packet, QoS};
        let id = format!("test-peer-{}", testkit::free_port());
        let (client, mut eventloop) =
            rumqttc::AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let mut pending = filters.len();
        for f in filters {
            client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        if pending == 0 {
            if let Some(t) = ready_tx.take() {
                let _ = t.send(());
            }
        }
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending = pending.saturating_sub(1);
                        if pending == 0 {
                            if let Some(t) = ready_tx.take() {
                                let _ = t.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if pending == 0 => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.retain));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), ready_rx)
            .await
            .expect("peer connected in time")
            .expect("peer ready");
        Peer { client, rx }
    }

    /// Publish a (non-retained, QoS 1) message.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }

    /// The next message on `topic` for which `pred` holds, within `timeout`.
    pub async fn next_matching(
        &mut self,
        topic: &str,
        timeout: std::time::Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, p, _))) if t == topic && pred(&p) => return Some(p),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub async fn eventually(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A cap command payload, issued now.
pub fn cap_json(seq: u64, cap_w: Option<f64>, lease_s: f64) -> String {
    cap_json_at(seq, cap_w, lease_s, chrono::Utc::now(), "")
}

/// A cap command payload issued at `ts`, with `extra` JSON members
/// (`,"epoch":1`) appended.
pub fn cap_json_at(
    seq: u64,
    cap_w: Option<f64>,
    lease_s: f64,
    ts: chrono::DateTime<chrono::Utc>,
    extra: &str,
) -> String {
    let cap = cap_w.map_or("null".to_owned(), |c| c.to_string());
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(r#"{{"ts":"{ts}","cap_w":{cap},"lease_s":{lease_s},"seq":{seq}{extra}}}"#)
}
