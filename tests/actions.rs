//! Carrying out plans with the real `exec` actuator: a migration that fails
//! never lets its source host be switched off (issue #11: with a real
//! power-off template the VM would die), a hanging migration is killed at
//! its time limit, and — end to end against a real mosquitto broker — the
//! controller keeps such a host on, counts and shows the failure, and
//! re-plans it next period.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hvac_bridge::SiteConfig;
use phoenix::controller::actuator::{Action, Actuator, Outcome};
use phoenix::controller::apply;
use phoenix::controller::config::{ActuatorConfig, ActuatorKind, ControllerConfig};
use phoenix::controller::execute::{self, ActionEvent, Job, Limits};
use phoenix::controller::run::{self, Clock};
use phoenix::controller::state::{NodeState, ServerInfo, SiteState};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use scheduler::model::{Vm, VmKind};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// A script that appends its arguments to `ran` beside it: the power-off
/// "tool" whose every run the test can read back.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("record.sh");
    let ran = dir.join("ran");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", ran.display()),
    )
    .unwrap();
    (script, ran)
}

/// The nodes `power_off` ran for, from the recorder's file (`-- <node>`).
fn powered_off(ran: &Path) -> Vec<String> {
    std::fs::read_to_string(ran)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

fn node(id: &str) -> NodeState {
    NodeState {
        info: ServerInfo {
            id: id.into(),
            cores: 8,
            mem_gib: 32.0,
            temp_limit_c: 80.0,
            heat_loop: None,
            off_w: 5.0,
        },
        on: true,
        online: true,
        stale: false,
        last_seen: Some(chrono::Utc::now()),
        telemetry: None,
    }
}

fn vm(id: &str, host: &str, migratable: bool) -> Vm {
    Vm {
        id: id.into(),
        vcpus: 2,
        mem_gib: 4.0,
        image: None,
        host: Some(host.into()),
        kind: VmKind::Interactive,
        load: Some(0.5),
        work_core_h: None,
        deadline: None,
        migratable,
    }
}

/// Nodes a, b, c, d; VM v1 on a.
fn site() -> Arc<RwLock<SiteState>> {
    let mut s = SiteState::default();
    for id in ["a", "b", "c", "d"] {
        s.nodes.insert(id.into(), node(id));
    }
    s.vms.insert("v1".into(), vm("v1", "a", true));
    Arc::new(RwLock::new(s))
}

/// Run `actions` through the executor as the control loop does: events
/// applied to the site state as they arrive.
async fn carry_out(
    cfg: ActuatorConfig,
    site: &Arc<RwLock<SiteState>>,
    actions: Vec<Action>,
) -> Vec<(Action, Outcome)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let applier = tokio::spawn({
        let site = Arc::clone(site);
        async move {
            let mut events = Vec::new();
            while let Some(ev) = rx.recv().await {
                apply::record_event(&mut site.write().unwrap(), &ev, chrono::Utc::now());
                events.push(ev);
            }
            events
        }
    });
    let job = Job {
        plan_id: 1,
        actions,
        vm_mem_gib: [("v1".to_string(), 4.0)].into(),
    };
    let limits = Limits::from_config(&cfg);
    let actuator = Arc::new(Actuator::new(cfg));
    let results = execute::spawn(job, actuator, Arc::clone(site), limits, tx)
        .await
        .expect("the executor ends");
    let events = applier.await.unwrap();
    let finished = events
        .iter()
        .filter(|e| matches!(e, ActionEvent::Finished { .. }))
        .count();
    assert_eq!(finished, results.len(), "every action is reported once");
    results
}

fn exec_cfg(migrate: &str, power_off: &Path) -> ActuatorConfig {
    ActuatorConfig {
        kind: ActuatorKind::Exec,
        retries: Some(0),
        migrate: Some(migrate.into()),
        power_off: Some(format!("sh {} -- {{node}}", power_off.display())),
        ..Default::default()
    }
}

fn outcome<'a>(results: &'a [(Action, Outcome)], action: &Action) -> &'a Outcome {
    &results.iter().find(|(a, _)| a == action).expect("ran").1
}

#[tokio::test]
async fn a_failed_exec_migration_never_powers_off_the_host_its_vm_stayed_on() {
    let dir = tempfile::tempdir().unwrap();
    let (script, ran) = recorder(dir.path());
    let site = site();
    let mv = Action::Migrate {
        vm: "v1".into(),
        from: "a".into(),
        to: "b".into(),
    };
    let off_a = Action::PowerOff { node: "a".into() };
    let off_d = Action::PowerOff { node: "d".into() };
    let results = carry_out(
        exec_cfg("false", &script),
        &site,
        vec![mv.clone(), off_a.clone(), off_d.clone()],
    )
    .await;

    assert_eq!(outcome(&results, &mv).result(), "failed");
    let skipped = outcome(&results, &off_a);
    assert_eq!(skipped.result(), "skipped");
    assert!(
        skipped.reason().unwrap().starts_with("VM v1 still on a"),
        "{skipped:?}"
    );
    assert_eq!(outcome(&results, &off_d), &Outcome::Done);
    assert_eq!(
        powered_off(&ran),
        ["d"],
        "power_off ran for the empty host only"
    );

    let s = site.read().unwrap();
    assert_eq!(s.vms["v1"].host.as_deref(), Some("a"), "v1 stayed");
    assert!(s.nodes["a"].on && !s.nodes["d"].on);
    let failed: Vec<(&str, &str)> = s
        .failed_actions
        .iter()
        .map(|f| (f.action.kind(), f.result.as_str()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.contains(&("migrate", "failed")) && failed.contains(&("power_off", "skipped")));
}

#[tokio::test]
async fn a_hanging_exec_migration_is_killed_and_its_source_stays_on() {
    let dir = tempfile::tempdir().unwrap();
    let (script, ran) = recorder(dir.path());
    let site = site();
    let mut cfg = exec_cfg("sleep 30", &script);
    cfg.migrate_timeout_base_s = Some(0.3);
    cfg.migrate_timeout_s_per_gib = Some(0.0);
    let mv = Action::Migrate {
        vm: "v1".into(),
        from: "a".into(),
        to: "b".into(),
    };
    let off_a = Action::PowerOff { node: "a".into() };
    let results = carry_out(cfg, &site, vec![mv.clone(), off_a.clone()]).await;
    let failed = outcome(&results, &mv);
    assert!(
        failed.reason().unwrap().contains("ran past 0.3 s"),
        "{failed:?}"
    );
    assert_eq!(outcome(&results, &off_a).result(), "skipped");
    assert!(powered_off(&ran).is_empty());
}

fn site_toml(port: u16, migrate: &str, script: &Path) -> String {
    // The state database of each test lives beside its script.
    let state_dir = script.parent().expect("the script's folder").display();
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
site = "t"

[controller]
state_dir = "{state_dir}"
control_period_s = 900
horizon_steps = 4
node_stale_after_s = 3600
time_limit_ms = 500

[controller.prices]
electricity_per_kwh = 0.30

[controller.policy]
migration_cost = 0.0
switch_cost = 0.0

[controller.actuator]
kind = "exec"
retries = 0
migrate = "{migrate}"
power_off = "sh {script} -- {{node}}"

[[controller.servers]]
id = "a"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.3
temp_limit_c = 80

[[controller.servers]]
id = "b"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.3
temp_limit_c = 80
"#,
        script = script.display()
    )
}

/// Agents of nodes a and b: telemetry and retained status, every 200 ms.
async fn agents(port: u16) {
    let mut opts = MqttOptions::new("test-agents", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = AsyncClient::new(opts, 256);
    tokio::spawn(async move {
        loop {
            let now = chrono::Utc::now().to_rfc3339();
            for n in ["a", "b"] {
                let t =
                    format!(r#"{{"ts":"{now}","cpu_util":0.2,"cpu_temp_c":50.0,"power_w":100.0}}"#);
                let topic = format!("phoenix/v1/t/node/{n}");
                let sent = client
                    .publish(format!("{topic}/telemetry"), QoS::AtMostOnce, false, t)
                    .await
                    .and(
                        client
                            .publish(format!("{topic}/status"), QoS::AtLeastOnce, true, "online")
                            .await,
                    );
                if sent.is_err() {
                    return; // the session below has ended
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    loop {
        if ev.poll().await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn the_controller_keeps_a_host_on_while_its_vm_cannot_leave() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let (script, ran) = recorder(dir.path());
    let cfg: SiteConfig<ControllerConfig> =
        SiteConfig::from_toml(&site_toml(broker.port(), "false -- {vm} {to}", &script))
            .expect("config");
    let agents_task = tokio::spawn(agents(broker.port()));
    let (stop, stopped) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // 900 s periods at 300× speed: one plan every 3 s.
    let clock = Clock::accelerated(chrono::Utc::now(), 300.0);
    let (running, join) = run::start(cfg, clock, Some(listener), stopped)
        .await
        .expect("starts");
    // db pins a on; web alone on b: with power dear and switching free, the
    // plan moves web to a and switches b off — but every migration fails.
    {
        let mut site = running.app.site.write().unwrap();
        site.vms.insert("db".into(), vm("db", "a", false));
        site.vms.insert("web".into(), vm("web", "b", true));
    }

    // Two periods' worth of failures: the plan is re-made from what is there.
    let until = Instant::now() + Duration::from_secs(90);
    let site = loop {
        let site: Value =
            serde_json::from_str(&get(running.api_addr, "/api/v1/site").await).expect("site JSON");
        let failures = site["failed_actions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let plans: std::collections::BTreeSet<u64> = failures
            .iter()
            .filter(|f| f["action"]["kind"] == "power_off")
            .filter_map(|f| f["plan_id"].as_u64())
            .collect();
        if plans.len() >= 2 {
            break site;
        }
        assert!(
            Instant::now() < until,
            "never saw two periods skip b's power-off: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failures = site["failed_actions"].as_array().unwrap();
    let off = failures
        .iter()
        .find(|f| f["action"]["kind"] == "power_off")
        .unwrap();
    assert_eq!(off["action"]["node"], "b");
    assert_eq!(off["result"], "skipped");
    assert!(
        off["reason"]
            .as_str()
            .unwrap()
            .starts_with("VM web still on b"),
        "{off}"
    );
    assert!(failures
        .iter()
        .any(|f| f["action"]["kind"] == "migrate" && f["result"] == "failed"));
    assert_eq!(site["vms"]["web"]["host"], "b", "web stayed where it runs");
    assert_eq!(site["nodes"]["b"]["on"], true, "b is still on");
    assert!(powered_off(&ran).is_empty(), "power_off never ran");

    let metrics = get(running.api_addr, "/metrics").await;
    for needle in [
        r#"phoenix_actions_total{kind="migrate",result="failed"}"#,
        r#"phoenix_actions_total{kind="power_off",result="skipped"}"#,
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }

    stop.send(true).unwrap();
    join.await.expect("clean stop");
    agents_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium (scripts/install-test-deps)"]
async fn the_page_lists_the_failed_actions_with_their_reasons() {
    use phoenix::controller::api::{app, AppState};
    let site = site();
    {
        let mut s = site.write().unwrap();
        s.site = "failing-site".into();
        let off = Action::PowerOff { node: "a".into() };
        s.record_failure(
            chrono::Utc::now(),
            4,
            &off,
            &Outcome::Skipped("VM v1 still on a".into()),
        );
    }
    let (events, _rx) = mpsc::unbounded_channel();
    let state = AppState {
        site,
        metrics: Arc::new(phoenix::controller::metrics::Metrics::new()),
        token: None,
        events,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        fault: Arc::new(std::sync::RwLock::new(None)),
        tariff: Arc::new(std::sync::RwLock::new(None)),
        bridge: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", dir.path().join("profile").display()),
        "--virtual-time-budget=5000".into(),
        "--dump-dom".into(),
        format!("http://127.0.0.1:{port}/"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("chromium").args(args).output()
    })
    .await
    .unwrap()
    .expect("chromium runs");
    let html = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "failing-site",
        "<td>power off a</td>",
        "<td>skipped</td>",
        "<td>VM v1 still on a</td>",
    ] {
        assert!(html.contains(needle), "page lacks {needle}:\n{html}");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn a_slow_migration_is_followed_to_completion_and_the_next_plan_waits_for_it() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let (script, ran) = recorder(dir.path());
    // A migration takes 4 s: longer than a control period (3 s here).
    let cfg: SiteConfig<ControllerConfig> =
        SiteConfig::from_toml(&site_toml(broker.port(), "sleep 4", &script)).expect("config");
    let agents_task = tokio::spawn(agents(broker.port()));
    let (stop, stopped) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = Clock::accelerated(chrono::Utc::now(), 300.0);
    let (running, join) = run::start(cfg, clock, Some(listener), stopped)
        .await
        .expect("starts");
    {
        let mut site = running.app.site.write().unwrap();
        site.vms.insert("db".into(), vm("db", "a", false));
        site.vms.insert("web".into(), vm("web", "b", true));
    }
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let metrics = get(running.api_addr, "/metrics").await;
        let held = metrics.contains(r#"phoenix_actions_total{kind="migrate",result="held"}"#);
        let off = metrics.contains(r#"phoenix_actions_total{kind="power_off",result="done"}"#);
        if held && off {
            break;
        }
        assert!(
            Instant::now() < until,
            "never saw a held plan and b switched off:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two more periods: nothing is done twice.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let site: Value =
        serde_json::from_str(&get(running.api_addr, "/api/v1/site").await).expect("site JSON");
    assert_eq!(
        site["vms"]["web"]["host"], "a",
        "web moved once its migration ended"
    );
    assert_eq!(site["nodes"]["b"]["on"], false);
    assert_eq!(powered_off(&ran), ["b"], "b was switched off once");
    assert!(
        site["failed_actions"].as_array().unwrap().is_empty(),
        "{}",
        site["failed_actions"]
    );
    stop.send(true).unwrap();
    join.await.expect("clean stop");
    agents_task.abort();
}
