//! Helpers shared by the bridge's peer tests: the pymodbus device, an MQTT
//! watcher, and site configs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use phoenix_hvac_bridge::SiteConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use testkit::{python_server, ChildGuard};
use tokio::sync::mpsc;

/// The pymodbus device of `tests/peers/device.py`, with its control file.
pub struct PyDevice {
    pub port: u16,
    pub control: PathBuf,
    pub guard: Option<ChildGuard>,
    _dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/device.py")
}

impl PyDevice {
    /// A device not started yet (for "down at start").
    pub fn unstarted() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            port: testkit::free_port(),
            control: dir.path().join("control"),
            guard: None,
            _dir: dir,
        }
    }

    pub fn started() -> Self {
        let mut d = Self::unstarted();
        d.start();
        d
    }

    pub fn start(&mut self) {
        let port = self.port.to_string();
        let control = self.control.display().to_string();
        self.guard = Some(
            python_server(
                &script(),
                &["--port", &port, "--control", &control],
                self.port,
            )
            .expect("pymodbus device starts (scripts/install-test-deps)"),
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }

    pub fn set_mode(&self, mode: &str) {
        std::fs::write(&self.control, mode).unwrap();
    }
}

/// The points of `device.py`, as a `[[devices]]` section named `name`.
pub fn device_section(name: &str, port: u16, role: &str, timeout_ms: u64) -> String {
    device_section_with(name, port, role, timeout_ms, "")
}

/// [`device_section`] with more device keys (`keys`, TOML lines such as
/// `write_expiry_s = 2`).
pub fn device_section_with(
    name: &str,
    port: u16,
    role: &str,
    timeout_ms: u64,
    keys: &str,
) -> String {
    format!(
        r#"
[[devices]]
name = "{name}"
address = "127.0.0.1:{port}"
unit = 1
poll_ms = 100
timeout_ms = {timeout_ms}
role = "{role}"
{keys}

[[devices.points]]
name = "supply_setpoint_c"
table = "holding"
address = 0
type = "i16"
scale = 0.1
writable = true
min = 30
max = 70

[[devices.points]]
name = "mode"
table = "holding"
address = 1

[[devices.points]]
name = "f_abcd"
table = "holding"
address = 2
type = "f32"
word_order = "ABCD"

[[devices.points]]
name = "f_cdab"
table = "holding"
address = 4
type = "f32"
word_order = "CDAB"

[[devices.points]]
name = "f_badc"
table = "holding"
address = 6
type = "f32"
word_order = "BADC"

[[devices.points]]
name = "f_dcba"
table = "holding"
address = 8
type = "f32"
word_order = "DCBA"

[[devices.points]]
name = "u_cdab"
table = "holding"
address = 10
type = "u32"
word_order = "CDAB"

[[devices.points]]
name = "outdoor_c"
table = "holding"
address = 12
type = "i16"
scale = 0.1

[[devices.points]]
name = "i_abcd"
table = "holding"
address = 20
type = "i32"
word_order = "ABCD"

[[devices.points]]
name = "power_kw"
table = "input"
address = 0
type = "f32"
word_order = "ABCD"

[[devices.points]]
name = "energy_kwh"
table = "input"
address = 2
type = "u32"
word_order = "ABCD"

[[devices.points]]
name = "supply_c"
table = "input"
address = 4
type = "i16"
scale = 0.1

[[devices.points]]
name = "return_c"
table = "input"
address = 5
type = "i16"
scale = 0.1

[[devices.points]]
name = "pump"
table = "coil"
address = 0
writable = true

[[devices.points]]
name = "boost"
table = "coil"
address = 1

[[devices.points]]
name = "alarm"
table = "discrete"
address = 0
"#
    )
}

pub fn site(mqtt_port: u16, site: &str, extra: &str) -> SiteConfig {
    let text =
        format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nsite = \"{site}\"\n{extra}");
    SiteConfig::from_toml(&text).expect("valid test config")
}

/// An MQTT subscriber collecting messages of one filter.
pub struct Watcher {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
}

impl Watcher {
    pub async fn new(port: u16, filter: &str) -> Self {
        let id = format!("watcher-{}", testkit::free_port());
        let opts = MqttOptions::new(id, "127.0.0.1", port);
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let c2 = client.clone();
        let filter = filter.to_string();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send((p.topic.clone(), p.payload.to_vec(), p.retain))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self { client, rx }
    }

    /// Wait for a message on `topic` whose payload (JSON, or a JSON string
    /// when not JSON) satisfies `pred`; returns it and its retain flag.
    pub async fn wait_for(
        &mut self,
        topic: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, payload, retain))) if t == topic => {
                    let v = serde_json::from_slice(&payload).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&payload).into_owned())
                    });
                    if pred(&v) {
                        return (v, retain);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("no matching message on {topic} within {within:?}"),
            }
        }
    }

    /// Every message on `topic` up to and including the first whose payload
    /// satisfies `pred`, in arrival order (others are skipped).
    pub async fn collect_until(
        &mut self,
        topic: &str,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, payload, _))) if t == topic => {
                    let v = serde_json::from_slice(&payload).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&payload).into_owned())
                    });
                    let done = pred(&v);
                    seen.push(v);
                    if done {
                        return seen;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    panic!("no matching message on {topic} within {within:?}; saw {seen:?}")
                }
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
    }
}

/// Wait until `cond` holds, polling every 50 ms.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broker, a bridge started on `site_id` with the `extra` config, and a
/// watcher on everything under the site's root; started once the bridge
/// has said `online`.
pub struct Rig {
    pub broker: testkit::Mosquitto,
    pub bridge: phoenix_hvac_bridge::Bridge,
    pub h: phoenix_hvac_bridge::BridgeHandle,
    pub topics: protocol::topics::Topics,
    pub w: Watcher,
}

impl Rig {
    pub async fn start(site_id: &str, extra: &str) -> Self {
        let broker = testkit::Mosquitto::start().expect("mosquitto (scripts/install-test-deps)");
        let topics = protocol::topics::Topics::new(site_id);
        let mut w = Watcher::new(broker.port(), &format!("{}/#", topics.root())).await;
        let bridge = phoenix_hvac_bridge::Bridge::start(&site(broker.port(), site_id, extra))
            .await
            .expect("bridge starts");
        let h = bridge.handle();
        w.wait_for(&topics.bridge_status(), Duration::from_secs(10), |v| {
            v == "online"
        })
        .await;
        Self {
            broker,
            bridge,
            h,
            topics,
            w,
        }
    }

    /// Wait for a state of `device` satisfying `pred`.
    pub async fn state(
        &mut self,
        device: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let topic = self.topics.facility_state(device);
        self.w
            .wait_for(&topic, Duration::from_secs(10), pred)
            .await
            .0
    }
}
