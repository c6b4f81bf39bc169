//! The real `phoenix agent` and `phoenix bridge` binaries through TLS and
//! a password to a mosquitto with the shipped ACL (`deploy/mosquitto.acl`),
//! certificates made by the test (DESIGN.md §4.7).

extern crate sensors as phoenix_sensors;

#[path = "../sensors/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::rapl_server;
use testkit::{ChildGuard, Mosquitto, SecureBroker, TestPki};

const SITE: &str = "site-a";
const NODE: &str = "n1";
const USERS: &[(&str, &str)] = &[
    ("n1", "pw-n1-secret"),
    ("phoenix-viewer", "pw-viewer"),
    ("phoenix-bridge", "pw-bridge-secret"),
];

struct Setup {
    pki: TestPki,
    broker: Mosquitto,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        let pki = TestPki::new("Phoenix agent test CA").unwrap();
        let server = pki.server("server", &["127.0.0.1"]).unwrap();
        let ca = pki.ca_file();
        let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mosquitto.acl");
        let broker = Mosquitto::start_secure(&SecureBroker {
            users: USERS,
            acl_file: Some(&acl),
            tls: Some((&ca, &server)),
            require_certificate: false,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agent.toml"),
            "[agent]\ntelemetry_interval_s = 0.2\ncontrol_interval_s = 0.1\n[gpu]\nenabled = false\n",
        )
        .unwrap();
        Self { pki, broker, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `phoenix agent` as user n1 with `password`; stderr goes to `log`.
    fn spawn_agent(&self, fake_root: &Path, password: &str, log: &str) -> ChildGuard {
        std::fs::write(self.path("n1.pw"), format!("{password}\n")).unwrap();
        let log = std::fs::File::create(self.path(log)).unwrap();
        ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_phoenix"))
                .args(["agent", "--mqtt-url", &self.broker.tls_url()])
                .args(["--site", SITE, "--node", NODE, "--mqtt-username", "n1"])
                .arg("--mqtt-password-file")
                .arg(self.path("n1.pw"))
                .arg("--mqtt-ca-file")
                .arg(self.pki.ca_file())
                .arg("--sysfs-root")
                .arg(fake_root)
                .arg("--config")
                .arg(self.path("agent.toml"))
                .arg("--state-file")
                .arg(self.path("agent-state.json"))
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log)),
        )
        .expect("spawning phoenix agent")
    }

    /// One message on `topic`, read as phoenix-viewer over TLS with
    /// mosquitto_sub (waits up to 30 s).
    fn one_message(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.broker.port().to_string()])
            .arg("--cafile")
            .arg(self.pki.ca_file())
            .args(["-u", "phoenix-viewer", "-P", "pw-viewer"])
            .args(["-t", topic, "-C", "1", "-W", "30"])
            .output()
            .expect("mosquitto_sub");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

#[test]
fn the_agent_binary_publishes_telemetry_through_tls_with_its_password() {
    let s = Setup::start();
    let fake = rapl_server();
    let _agent = s.spawn_agent(fake.root(), "pw-n1-secret", "agent.log");
    let topic = format!("phoenix/v1/{SITE}/node/{NODE}/telemetry");
    let body = s.one_message(&topic).expect("telemetry over TLS");
    let json: serde_json::Value = serde_json::from_str(&body).expect("telemetry JSON");
    assert!(json.get("ts").is_some(), "{body}");
    let log = std::fs::read_to_string(s.path("agent.log")).unwrap();
    assert!(!log.contains("pw-n1-secret"), "{log}");
}

#[test]
fn the_agent_binary_says_the_broker_refused_its_password_and_never_logs_it() {
    let s = Setup::start();
    let fake = rapl_server();
    let mut agent = s.spawn_agent(fake.root(), "wrong-pw-5521", "refused.log");
    let log_path = s.path("refused.log");
    let until = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while Instant::now() < until && !log.contains("refused the username/password") {
        std::thread::sleep(Duration::from_millis(50));
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
    }
    agent.kill();
    assert!(log.contains("refused the username/password"), "{log}");
    assert!(!log.contains("wrong-pw-5521"), "{log}");
}

#[test]
fn the_bridge_binary_connects_with_the_site_files_credentials_and_ca() {
    let s = Setup::start();
    std::fs::write(s.path("bridge.pw"), "pw-bridge-secret\n").unwrap();
    let site = format!(
        "[mqtt]\nurl = \"{}\"\nsite = \"{SITE}\"\nusername = \"phoenix-bridge\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
        s.broker.tls_url(),
        s.path("bridge.pw").display(),
        s.pki.ca_file().display()
    );
    std::fs::write(s.path("site.toml"), site).unwrap();
    let log = std::fs::File::create(s.path("bridge.log")).unwrap();
    let _bridge = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .arg("bridge")
            .arg("--config")
            .arg(s.path("site.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log)),
    )
    .expect("spawning phoenix bridge");
    let status = s.one_message(&format!("phoenix/v1/{SITE}/bridge/status"));
    assert_eq!(status.as_deref(), Some("online"));
    let log = std::fs::read_to_string(s.path("bridge.log")).unwrap();
    assert!(!log.contains("pw-bridge-secret"), "{log}");
}
