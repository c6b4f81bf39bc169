//! `phoenix bridge --config FILE` end to end: a real mosquitto broker, the
//! pymodbus device of `hvac-bridge/tests/peers/device.py`, and
//! mosquitto_sub reading what the bridge publishes.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{free_port, python_server, ChildGuard, Mosquitto};

/// The retained message on `topic`, if any, within 2 s.
fn retained(port: u16, topic: &str) -> String {
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
        .expect("mosquitto_sub installed (scripts/install-test-deps)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_retained(port: u16, topic: &str, pred: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = retained(port, topic);
        if pred(&m) {
            return m;
        }
        assert!(
            Instant::now() < until,
            "no matching retained message on {topic}; last: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `mosquitto_sub -d` (through coreutils' `stdbuf`) on `topic` taking one message (it gives up after
/// 30 s), returned once the broker has acknowledged the subscription, with
/// the rest of its output.
fn subscribe_once(port: u16, topic: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
    // Line-buffered: piped, its output would wait for it to exit.
    let mut child = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-q", "1", "-d"])
        .args(["-t", topic, "-C", "1", "-W", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub installed (scripts/install-test-deps)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("SUBACK") => return (child, lines),
            Some(Ok(_)) => {}
            _ => panic!("mosquitto_sub never subscribed to {topic}"),
        }
    }
}

#[test]
#[ignore = "needs mosquitto, mosquitto-clients, pymodbus and mbpoll"]
fn phoenix_bridge_runs_alone_and_stops_cleanly_on_sigterm() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev_port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hvac-bridge/tests/peers/device.py");
    let control = dir.path().join("control").display().to_string();
    let _device = python_server(
        &script,
        &["--port", &dev_port.to_string(), "--control", &control],
        dev_port,
    )
    .expect("pymodbus device");
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            r#"[mqtt]
url = "mqtt://127.0.0.1:{}"
site = "cli"

[[devices]]
name = "hp"
address = "127.0.0.1:{dev_port}"
poll_ms = 200

[[devices.points]]
name = "supply_setpoint_c"
table = "holding"
address = 0
type = "i16"
scale = 0.1
writable = true
min = 30
max = 70

[controller]
anything = "the bridge carries the controller's section unread"
"#,
            broker.port()
        ),
    )
    .unwrap();
    let mut bridge = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(["bridge", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
    .unwrap();
    let state = wait_retained(broker.port(), "phoenix/v1/cli/facility/hp/state", |m| {
        m.contains(r#""online":true"#)
    });
    assert!(state.contains(r#""supply_setpoint_c":45.0"#), "{state}");
    wait_retained(broker.port(), "phoenix/v1/cli/bridge/status", |m| {
        m == "online"
    });
    let (mut sub, results) = subscribe_once(broker.port(), "phoenix/v1/cli/facility/hp/set/result");
    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            "1",
        ])
        .args([
            "-t",
            "phoenix/v1/cli/facility/hp/set",
            "-m",
            r#"{"supply_setpoint_c": 60}"#,
        ])
        .status()
        .unwrap();
    assert!(published.success());
    wait_retained(broker.port(), "phoenix/v1/cli/facility/hp/state", |m| {
        m.contains(r#""supply_setpoint_c":60.0"#)
    });
    // The request's outcome, on its result topic, not retained.
    let out: Vec<String> = results.map_while(Result::ok).collect();
    sub.wait().unwrap();
    let publish = out.iter().find(|l| l.contains("received PUBLISH"));
    assert!(publish.is_some_and(|l| l.contains("r0")), "{out:?}");
    let result = out.iter().find(|l| l.starts_with('{')).expect("a result");
    assert!(result.contains(r#""status":"applied""#), "{result}");
    assert!(
        result.contains(r#""request":{"supply_setpoint_c":60}"#),
        "{result}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = bridge.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "phoenix bridge did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        retained(broker.port(), "phoenix/v1/cli/bridge/status"),
        "offline"
    );
    // The setpoint is back to what the device had before the write.
    let read = Command::new("mbpoll")
        .args([
            "-m",
            "tcp",
            "-p",
            &dev_port.to_string(),
            "-0",
            "-r",
            "0",
            "-c",
            "1",
            "-t",
            "4",
            "-1",
            "127.0.0.1",
        ])
        .output()
        .expect("mbpoll installed (scripts/install-test-deps)");
    let text = String::from_utf8_lossy(&read.stdout);
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("[0]:"))
        .map(str::trim);
    assert_eq!(value, Some("450"), "{text}");
}

#[test]
fn phoenix_bridge_refuses_a_bad_config_naming_device_and_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        "[mqtt]\nurl = \"mqtt://127.0.0.1\"\nsite = \"s\"\n[[devices]]\nname = \"meter\"\naddress = \"127.0.0.1:502\"\n[[devices.points]]\nname = \"energy_kwh\"\ntable = \"input\"\naddress = 0\ntype = \"u32\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["bridge", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("meter") && err.contains("energy_kwh") && err.contains("word_order"),
        "{err}"
    );
}
