//! The real `phoenix agent` binary against a fake sysfs root and a real
//! mosquitto broker: signals, crash recovery, dry run, probe and
//! `generate-config agent`. The fake trees are shared with the sensors
//! crate's tests.

extern crate sensors as phoenix_sensors;

#[path = "../sensors/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cap_json, rapl_server, RAPL0, RAPL1, RAPL_ORIGINAL_UW};
use phoenix_sensors::testing::FakeSysfs;
use protocol::topics::Topics;
use testkit::{ChildGuard, Mosquitto};

const SITE: &str = "site-a";
const NODE: &str = "n1";

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

struct Setup {
    fake: FakeSysfs,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agent.toml"),
            "[agent]\ntelemetry_interval_s = 0.2\ncontrol_interval_s = 0.1\n[gpu]\nenabled = false\n",
        )
        .unwrap();
        Self {
            fake: rapl_server(),
            dir,
        }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("agent-state.json")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&self, url: &str, log: &str, extra: &[&str]) -> ChildGuard {
        let log = std::fs::File::create(self.log(log)).unwrap();
        ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_phoenix"))
                .args(["agent", "--mqtt-url", url, "--site", SITE, "--node", NODE])
                .arg("--sysfs-root")
                .arg(self.fake.root())
                .arg("--config")
                .arg(self.dir.path().join("agent.toml"))
                .arg("--state-file")
                .arg(self.state_file())
                .args(extra)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log)),
        )
        .expect("spawning phoenix agent")
    }

    fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }
}

fn publish(port: u16, topic: &str, msg: &str) {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            msg,
        ])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
}

/// The retained message on `topic`, if one arrives within 2 s.
fn retained(port: u16, topic: &str) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "2",
        ])
        .output()
        .expect("mosquitto_sub");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn status_is(port: u16, want: &str) -> bool {
    let topic = Topics::new(SITE).node_status(NODE);
    wait_until(Duration::from_secs(8), || {
        retained(port, &topic).as_deref() == Some(want)
    })
}

fn signal(child: &ChildGuard, sig: &str) {
    let st = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(st.success());
}

fn exit_code(child: &mut ChildGuard) -> Option<i32> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Publish a cap and assert that package 0's RAPL limit becomes `uw`
/// within a second.
fn cap_applied(broker: &Mosquitto, s: &Setup, seq: u64, cap_w: f64, lease_s: f64, uw: u64) {
    publish(
        broker.port(),
        &cap_topic(),
        &cap_json(seq, Some(cap_w), lease_s),
    );
    assert!(
        wait_until(Duration::from_secs(1), || s.fake.read(RAPL0) == uw),
        "cap {cap_w} W (seq {seq}) not applied: {}",
        s.fake.read(RAPL0)
    );
}

fn cap_topic() -> String {
    Topics::new(SITE).node_cap(NODE)
}

#[test]
#[ignore = "needs mosquitto"]
fn sigterm_restores_the_files_publishes_offline_and_exits_zero() {
    let broker = Mosquitto::start().expect("mosquitto");
    let s = Setup::new();
    let mut agent = s.spawn(&broker.url(), "agent.log", &[]);
    assert!(
        status_is(broker.port(), "online"),
        "{}",
        s.log_text("agent.log")
    );
    assert!(s.state_file().exists());
    // A bad payload is logged with its reason and changes nothing.
    publish(broker.port(), &cap_topic(), "not json");
    assert!(wait_until(Duration::from_secs(3), || s
        .log_text("agent.log")
        .contains("Cap command refused")));
    assert!(s.log_text("agent.log").contains("malformed payload"));
    assert_eq!(s.fake.read(RAPL0), RAPL_ORIGINAL_UW);
    cap_applied(&broker, &s, 1, 200.0, 60.0, 80_000_000);
    signal(&agent, "-TERM");
    assert_eq!(
        exit_code(&mut agent),
        Some(0),
        "{}",
        s.log_text("agent.log")
    );
    assert_eq!(s.fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(s.fake.read(RAPL1), RAPL_ORIGINAL_UW);
    assert!(!s.state_file().exists());
    assert!(status_is(broker.port(), "offline"));
}

#[test]
#[ignore = "needs mosquitto"]
fn sigint_also_restores_and_exits_zero() {
    let broker = Mosquitto::start().expect("mosquitto");
    let s = Setup::new();
    let mut agent = s.spawn(&broker.url(), "agent.log", &[]);
    assert!(status_is(broker.port(), "online"));
    cap_applied(&broker, &s, 1, 120.0, 60.0, 40_000_000);
    signal(&agent, "-INT");
    assert_eq!(exit_code(&mut agent), Some(0));
    assert_eq!(s.fake.read(RAPL0), RAPL_ORIGINAL_UW);
}

#[test]
#[ignore = "needs mosquitto"]
fn a_restart_after_sigkill_restores_originals_from_the_state_file() {
    let broker = Mosquitto::start().expect("mosquitto");
    let s = Setup::new();
    let mut first = s.spawn(&broker.url(), "first.log", &[]);
    assert!(status_is(broker.port(), "online"));
    cap_applied(&broker, &s, 1, 200.0, 600.0, 80_000_000);
    signal(&first, "-KILL");
    exit_code(&mut first);
    // The crash left the cap in place, the state file behind, and the last
    // will says offline.
    assert_eq!(s.fake.read(RAPL0), 80_000_000);
    assert!(s.state_file().exists());
    assert!(status_is(broker.port(), "offline"));
    let mut second = s.spawn(&broker.url(), "second.log", &[]);
    assert!(wait_until(Duration::from_secs(3), || s.fake.read(RAPL0)
        == RAPL_ORIGINAL_UW));
    assert_eq!(s.fake.read(RAPL1), RAPL_ORIGINAL_UW);
    assert!(status_is(broker.port(), "online"));
    assert!(s
        .log_text("second.log")
        .contains("restored them from its state file"));
    // Its originals are the true ones: a cap and a clean stop come back to them.
    cap_applied(&broker, &s, 1, 200.0, 600.0, 80_000_000);
    signal(&second, "-TERM");
    assert_eq!(exit_code(&mut second), Some(0));
    assert_eq!(s.fake.read(RAPL0), RAPL_ORIGINAL_UW);
}

#[test]
#[ignore = "needs mosquitto"]
fn a_dry_run_logs_the_writes_and_changes_nothing() {
    let broker = Mosquitto::start().expect("mosquitto");
    let s = Setup::new();
    let mut agent = s.spawn(&broker.url(), "agent.log", &["--dry-run"]);
    assert!(status_is(broker.port(), "online"));
    publish(broker.port(), &cap_topic(), &cap_json(1, Some(200.0), 60.0));
    assert!(wait_until(Duration::from_secs(3), || s
        .log_text("agent.log")
        .contains("Dry run: would write")));
    assert_eq!(s.fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert!(!s.state_file().exists(), "a dry run writes no state file");
    signal(&agent, "-TERM");
    assert_eq!(exit_code(&mut agent), Some(0));
    assert_eq!(s.fake.read(RAPL0), RAPL_ORIGINAL_UW);
}

#[test]
fn probe_reports_the_fake_tree_and_what_is_absent() {
    let s = Setup::new();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["agent", "--probe", "--sysfs-root"])
        .arg(s.fake.root())
        .arg("--config")
        .arg(s.dir.path().join("agent.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["probe"]["cpu_actuator"], "rapl");
    assert_eq!(v["probe"]["rapl_zones"].as_array().unwrap().len(), 2);
    assert_eq!(v["probe"]["hwmon_chips"][0], "coretemp (2 sensors)");
    assert_eq!(v["capabilities"]["cpu_w"], serde_json::json!([10.0, 300.0]));
    let absent = v["probe"]["absent"].as_array().unwrap();
    assert_eq!(absent.len(), 1, "only the GPUs: {absent:?}");
    assert!(absent[0].as_str().unwrap().contains("disabled"));
}

#[test]
fn probe_on_an_empty_root_reports_every_interface_absent() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["agent", "--probe", "--sysfs-root"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "absence is not fatal");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["probe"]["cpu_actuator"], "none");
    // RAPL, CPU capping, temperature, GPUs (NVML absent here, or present on a GPU host).
    assert!(v["probe"]["absent"].as_array().unwrap().len() >= 3);
}

#[test]
fn generate_config_agent_prints_the_parseable_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["generate-config", "agent"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg = phoenix_sensors::AgentConfig::from_toml(&text).unwrap();
    assert_eq!(cfg, phoenix_sensors::AgentConfig::default());
}

#[test]
fn a_bad_config_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("bad.toml");
    std::fs::write(path, "[thermal]\nmargin_c = -3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["agent", "--probe", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("thermal.margin_c") && err.contains("bad.toml"),
        "{err}"
    );
}
