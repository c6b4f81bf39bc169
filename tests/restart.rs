//! The controller survives a SIGKILL: the real `phoenix controller` binary
//! against a real mosquitto, VMs admitted over HTTP and placed through the
//! `exec` actuator (each action appends a line to a log file), then
//! `kill -9` and a restart on the same `state_dir`. Every VM keeps its
//! host, a server switched off stays off, plan ids and history go on, and no
//! action is carried out a second time. Then a database that refuses writes
//! (another process holds its lock) makes the controller not ready, refuses
//! API writes, and it recovers once the lock is released.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;
use testkit::{free_port, ChildGuard, Mosquitto};

const DB_FILE: &str = phoenix::controller::store::DB_FILE;

/// A site of two servers: `a` takes the VMs; `b` is too small for any and,
/// with power dear and heat worth nothing, is switched off.
fn site_toml(mqtt_port: u16, api_port: u16, state_dir: &Path, log: &Path) -> String {
    let script = log.with_extension("sh");
    let script = script.display();
    let act = |what: &str| format!("sh {script} {what}");
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
site = "rs"

[controller]
state_dir = "{state_dir}"
control_period_s = 2
horizon_steps = 4
node_stale_after_s = 30
time_limit_ms = 300

[controller.prices]
electricity_per_kwh = 0.30
heat_value_per_kwh = 0.0

[controller.policy]
max_migrations = 0
migration_cost = 0.0
switch_cost = 0.0
cpu_overcommit = 1.0

[controller.api]
listen = "127.0.0.1:{api_port}"

[controller.actuator]
kind = "exec"
timeout_s = 10
retries = 0
place = "{place}"
migrate = "{migrate}"
power_on = "{power_on}"
power_off = "{power_off}"

[[controller.servers]]
id = "a"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.2
temp_limit_c = 80

[[controller.servers]]
id = "b"
model = "hp-ml110-g5"
cores = 8
mem_gib = 1
inlet_c = 24
r_k_per_w = 0.2
temp_limit_c = 80
"#,
        state_dir = state_dir.display(),
        place = act("place:{vm}:{to}"),
        migrate = act("migrate:{vm}:{from}:{to}"),
        power_on = act("on:{node}"),
        power_off = act("off:{node}"),
    )
}

/// Agents for nodes `a` and `b`: retained `online` and telemetry every
/// 300 ms, until `stop`.
fn agents(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut opts = rumqttc::MqttOptions::new("restart-agents", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = rumqttc::Client::new(opts, 64);
        std::thread::spawn(move || for _ in connection.iter() {});
        while !stop.load(Ordering::Relaxed) {
            let now = chrono::Utc::now().to_rfc3339();
            for node in ["a", "b"] {
                let t = format!(r#"{{"ts":"{now}","cpu_util":0.2,"power_w":100.0}}"#);
                let base = format!("phoenix/v1/rs/node/{node}");
                let _ = client.try_publish(
                    format!("{base}/telemetry"),
                    rumqttc::QoS::AtMostOnce,
                    false,
                    t,
                );
                let _ = client.try_publish(
                    format!("{base}/status"),
                    rumqttc::QoS::AtLeastOnce,
                    true,
                    "online",
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// A running `phoenix controller` (SIGKILLed when dropped).
struct Controller {
    child: ChildGuard,
    api: String,
}

impl Controller {
    fn start(config: &Path, api_port: u16) -> Self {
        let child = ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_phoenix"))
                .args(["controller", "--config"])
                .arg(config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("the controller starts");
        let c = Self {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
        };
        c.wait_until("the API answers", |c| c.get("/healthz").0 == 200);
        c
    }

    fn get(&self, path: &str) -> (u16, String) {
        testkit::http("GET", &format!("{}{path}", self.api), None).unwrap_or((0, String::new()))
    }

    fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).1).unwrap_or(Value::Null)
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        testkit::http("POST", &format!("{}{path}", self.api), Some(body)).expect("API answers")
    }

    /// Wait for `what` (a deadline against a stuck test, not a timing claim).
    fn wait_until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(90);
        while !done(self) {
            assert!(Instant::now() < until, "never saw {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL (`Child::kill`) and reap.
    fn kill_9(mut self) {
        self.child.kill();
    }
}

fn vm(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","vcpus":2,"mem_gib":2,"kind":"interactive","load":0.3,"migratable":false}}"#
    )
}

fn hosts(site: &Value) -> BTreeMap<String, Option<String>> {
    site["vms"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, v)| (id.clone(), v["host"].as_str().map(str::to_string)))
                .collect()
        })
        .unwrap_or_default()
}

/// What the database holds: VM hosts, servers on, plan ids, history times.
#[derive(Debug, PartialEq)]
struct Stored {
    hosts: BTreeMap<String, Option<String>>,
    on: BTreeMap<String, bool>,
    plan_ids: Vec<u64>,
    history: Vec<String>,
    unfinished: usize,
}

fn stored(state_dir: &Path) -> Stored {
    let db = Connection::open(state_dir.join(DB_FILE)).expect("the database opens");
    let pairs = |sql: &str| -> Vec<(String, Value)> {
        let mut st = db.prepare(sql).unwrap();
        st.query_map([], |r| {
            let v: rusqlite::types::Value = r.get(1)?;
            let v = match v {
                rusqlite::types::Value::Text(s) => Value::String(s),
                rusqlite::types::Value::Integer(i) => Value::from(i),
                _ => Value::Null,
            };
            Ok((r.get::<_, String>(0)?, v))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let hosts = pairs("SELECT id, host FROM vms")
        .into_iter()
        .map(|(id, h)| (id, h.as_str().map(str::to_string)))
        .collect();
    let on = pairs("SELECT id, is_on FROM servers")
        .into_iter()
        .map(|(id, v)| (id, v.as_i64() == Some(1)))
        .collect();
    let mut st = db.prepare("SELECT id FROM plans ORDER BY id").unwrap();
    let plan_ids = st
        .query_map([], |r| r.get::<_, i64>(0).map(|i| i as u64))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut st = db.prepare("SELECT at FROM history ORDER BY seq").unwrap();
    let history = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let unfinished: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE state = 'intended'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    Stored {
        hosts,
        on,
        plan_ids,
        history,
        unfinished: unfinished as usize,
    }
}

/// Lines of the action log, counted.
fn actions(log: &Path) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *n.entry(line.to_string()).or_default() += 1;
    }
    n
}

fn write_config(dir: &Path, mqtt: u16, api: u16, state: &Path, log: &Path) -> PathBuf {
    let path = dir.join(format!("site-{api}.toml"));
    std::fs::write(&path, site_toml(mqtt, api, state, log)).unwrap();
    // Each action appends its one argument to the log.
    let script = format!("echo \"$1\" >> '{}'\n", log.display());
    std::fs::write(log.with_extension("sh"), script).unwrap();
    path
}

#[test]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
fn after_a_sigkill_the_controller_resumes_without_forgetting_or_repeating_anything() {
    let broker = Mosquitto::start().expect("mosquitto");
    let stop = Arc::new(AtomicBool::new(false));
    let agents = agents(broker.port(), stop.clone());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let log = dir.path().join("actions.log");
    let vms = ["web1", "web2", "web3"];

    // First life: admit, wait for the placements and b switched off.
    let api1 = free_port();
    let ctl = Controller::start(
        &write_config(dir.path(), broker.port(), api1, &state, &log),
        api1,
    );
    for id in vms {
        let (code, body) = ctl.post("/api/v1/vms", &vm(id));
        assert_eq!(code, 201, "{body}");
    }
    assert_eq!(
        ctl.post("/api/v1/vms", &vm("web1")).0,
        409,
        "a duplicate is refused"
    );
    ctl.wait_until("every VM placed and b off", |c| {
        let site = c.json("/api/v1/site");
        hosts(&site).values().filter(|h| h.is_some()).count() == vms.len()
            && site["nodes"]["b"]["on"] == false
    });
    let before = hosts(&ctl.json("/api/v1/site"));
    assert!(
        before.values().all(|h| h.as_deref() == Some("a")),
        "{before:?}"
    );
    ctl.kill_9();

    let at_kill = stored(&state);
    assert_eq!(at_kill.hosts, before, "what the API showed was recorded");
    assert_eq!(at_kill.on.get("b"), Some(&false));
    assert_eq!(at_kill.on.get("a"), Some(&true));
    let last_id = *at_kill.plan_ids.last().expect("plans recorded");
    assert_eq!(at_kill.history.len(), at_kill.plan_ids.len());
    let acted = actions(&log);
    for id in vms {
        assert_eq!(acted.get(&format!("place:{id}:a")), Some(&1), "{acted:?}");
    }
    assert_eq!(acted.get("off:b"), Some(&1), "{acted:?}");

    // As if the process had died while switching b on: intended, no outcome.
    let db = Connection::open(state.join(DB_FILE)).unwrap();
    db.execute(
        "INSERT INTO journal (plan_id, kind, action, state, intended_at)
         VALUES (?1, 'power_on', '{\"kind\":\"power_on\",\"node\":\"b\"}', 'intended', '2026-01-01T00:00:00Z')",
        [last_id as i64],
    )
    .unwrap();
    drop(db);

    // Second life on the same state_dir.
    let api2 = free_port();
    let ctl = Controller::start(
        &write_config(dir.path(), broker.port(), api2, &state, &log),
        api2,
    );
    let site = ctl.json("/api/v1/site");
    assert_eq!(
        hosts(&site),
        before,
        "every VM with its host, before any plan"
    );
    assert_eq!(site["nodes"]["b"]["on"], false, "b is not assumed on");
    ctl.wait_until("a plan after the restart", |c| {
        c.json("/api/v1/plan")["id"]
            .as_u64()
            .is_some_and(|id| id > last_id)
    });
    let site = ctl.json("/api/v1/site");
    assert_eq!(hosts(&site), before, "no VM moved or forgotten");
    assert_eq!(site["nodes"]["b"]["on"], false);
    let history: Vec<&str> = site["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["at"].as_str())
        .collect();
    assert!(history.len() > at_kill.history.len(), "history goes on");
    let now = stored(&state);
    assert_eq!(
        &now.plan_ids[..at_kill.plan_ids.len()],
        at_kill.plan_ids.as_slice(),
        "old plans kept"
    );
    assert!(
        now.plan_ids.windows(2).all(|w| w[1] == w[0] + 1),
        "plan ids continue without a restart from 1: {:?}",
        now.plan_ids
    );
    assert_eq!(
        &now.history[..at_kill.history.len()],
        at_kill.history.as_slice()
    );
    assert_eq!(actions(&log), acted, "nothing carried out a second time");
    assert_eq!(now.unfinished, 0, "the interrupted power-on is settled");
    let db = Connection::open(state.join(DB_FILE)).unwrap();
    let (st, why): (String, String) = db
        .query_row(
            "SELECT state, error FROM journal WHERE kind = 'power_on'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(st, "unknown");
    assert!(why.contains("not repeated"), "{why}");
    drop(db);

    // A database that refuses writes: not ready, writes refused, nothing
    // carried out; ready again once the lock is gone.
    let db = Connection::open(state.join(DB_FILE)).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    ctl.wait_until("/readyz naming the state database", |c| {
        let (code, body) = c.get("/readyz");
        code == 503 && body.contains("state database")
    });
    let (code, body) = ctl.post("/api/v1/vms", &vm("web4"));
    assert_eq!(code, 503, "{body}");
    let metrics = ctl.get("/metrics").1;
    assert!(metrics.contains("phoenix_state_store_ok 0"), "{metrics}");
    assert!(
        metrics.contains("phoenix_errors_total{source=\"store\"}"),
        "{metrics}"
    );
    db.execute_batch("ROLLBACK").unwrap();
    ctl.wait_until("ready again", |c| c.get("/readyz").0 == 200);
    assert!(!hosts(&ctl.json("/api/v1/site")).contains_key("web4"));
    assert_eq!(
        actions(&log),
        acted,
        "nothing carried out while the database was locked"
    );
    ctl.kill_9();
    assert_eq!(stored(&state).unfinished, 0);

    stop.store(true, Ordering::Relaxed);
    let _ = agents.join();
}

#[test]
fn a_missing_state_dir_is_an_error_at_start_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-state");
    // Nothing listens on the broker's port: the folder is checked first.
    let config = write_config(
        dir.path(),
        free_port(),
        free_port(),
        &missing,
        &dir.path().join("log"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["controller", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&*missing.to_string_lossy()) && err.contains("no such folder"),
        "{err}"
    );
}
