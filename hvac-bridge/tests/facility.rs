//! The bridge against real peers: mosquitto, a pymodbus device
//! (`tests/peers/device.py`), a raw TCP server answering junk, and mbpoll
//! reading the read-out server.

mod common;

use std::time::Duration;

use common::{device_section, eventually, PyDevice, Rig};
use phoenix_hvac_bridge::modbus::{ModbusLink, Values};
use phoenix_hvac_bridge::registers::{ReadBlock, Table};
use protocol::units::Celsius;
use serde_json::Value;

const SOON: Duration = Duration::from_secs(10);
const RECOVERY: Duration = Duration::from_secs(40);

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// A started pymodbus device and a rig polling it as `hp` with `role`.
async fn rig(site: &str, role: &str, timeout_ms: u64) -> (PyDevice, Rig) {
    let dev = PyDevice::started();
    let r = Rig::start(site, &device_section("hp", dev.port, role, timeout_ms)).await;
    (dev, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn polls_every_type_and_word_order_and_publishes_the_state_retained() {
    let (_dev, mut r) = rig("t1", "heat_pump", 500).await;
    let s = r.state("hp", |v| v["online"] == true).await;
    assert_eq!(num(&s, "supply_setpoint_c"), 45.0);
    assert_eq!(num(&s, "mode"), 2.0);
    for k in ["f_abcd", "f_cdab", "f_badc", "f_dcba"] {
        assert_eq!(num(&s, k), 21.5, "{k}");
    }
    assert_eq!(num(&s, "u_cdab"), 123456.0);
    assert!((num(&s, "outdoor_c") + 5.5).abs() < 1e-9);
    assert_eq!(num(&s, "i_abcd"), -100000.0);
    assert_eq!(num(&s, "power_kw"), 42.5);
    assert_eq!(num(&s, "energy_kwh"), 1234567.0);
    assert_eq!(s["pump"], true);
    assert_eq!(s["boost"], false);
    assert_eq!(s["alarm"], true);
    assert!(s["ts"].as_str().is_some());
    // A late subscriber gets the retained state.
    let topic = r.topics.facility_state("hp");
    let mut late = common::Watcher::new(r.broker.port(), &topic).await;
    let (_, retained) = late.wait_for(&topic, SOON, |v| v["online"] == true).await;
    assert!(retained, "state is retained");
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn writes_within_bounds_reach_the_device_everything_else_is_refused_and_exit_restores() {
    let (dev, mut r) = rig("t2", "heat_pump", 500).await;
    let set = r.topics.facility_set("hp");
    r.state("hp", |v| v["online"] == true).await;

    r.w.publish(&set, r#"{"supply_setpoint_c": 52.5}"#).await;
    r.state("hp", |v| v["supply_setpoint_c"] == 52.5).await;
    r.w.publish(&set, r#"{"pump": false}"#).await;
    r.state("hp", |v| v["pump"] == false).await;

    let refused = [
        r#"{"supply_setpoint_c": 80}"#,            // above max
        r#"{"supply_setpoint_c": 29.9}"#,          // below min
        r#"{"power_kw": 1}"#,                      // read-only
        r#"{"supply_setpoint_c": 40, "mode": 1}"#, // one read-only entry refuses all
        r#"{"no_such_point": 1}"#,
        r#"not json"#,
    ];
    for p in refused {
        r.w.publish(&set, p).await;
    }
    r.w.publish(&r.topics.facility_set("no_such_device"), r#"{"x": 1}"#)
        .await;
    let h = r.h.clone();
    eventually("refusals counted", SOON, || {
        h.counters().writes_refused >= 7
    })
    .await;
    // Nothing of it reached the device.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = r.state("hp", |v| v["online"] == true).await;
    assert_eq!(num(&s, "supply_setpoint_c"), 52.5);
    assert_eq!(num(&s, "mode"), 2.0);

    // The typed API goes through the same checks.
    h.set_supply_temp_c(Celsius(47.5)).await.unwrap();
    r.state("hp", |v| v["supply_setpoint_c"] == 47.5).await;
    assert!(h.set_supply_temp_c(Celsius(90.0)).await.is_err());
    assert_eq!(h.counters().writes_refused, 8);
    assert_eq!(h.counters().writes_ok, 3);
    assert!(
        h.read_heat_meter().is_err(),
        "no heat meter role in this site"
    );
    r.bridge.shutdown().await;

    // A clean shutdown put back what the device had before the bridge wrote.
    let mut link = ModbusLink::new(format!("127.0.0.1:{}", dev.port), 1, SOON);
    let sp = link
        .read(ReadBlock {
            table: Table::Holding,
            start: 0,
            count: 1,
        })
        .await;
    assert_eq!(sp, Ok(Ok(Values::Words(vec![450]))));
    let pump = link
        .read(ReadBlock {
            table: Table::Coil,
            start: 0,
            count: 1,
        })
        .await;
    assert_eq!(pump, Ok(Ok(Values::Bits(vec![true]))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn a_device_down_at_start_goes_online_when_it_appears() {
    let mut dev = PyDevice::unstarted();
    let mut r = Rig::start("t3", &device_section("hm", dev.port, "heat_meter", 300)).await;
    let s = r.state("hm", |v| v["online"] == false).await;
    assert!(s.get("power_kw").is_none(), "no values while offline");
    assert!(r.h.counters().modbus_errors >= 1);
    assert!(r.h.read_heat_meter().is_err());
    dev.start();
    let topic = r.topics.facility_state("hm");
    r.w.wait_for(&topic, RECOVERY, |v| v["online"] == true)
        .await;
    let m = r.h.read_heat_meter().unwrap();
    assert_eq!(m.power.get(), 42.5);
    assert_eq!(m.energy_kwh, 1234567.0);
    assert_eq!(m.supply_temp, Some(Celsius(55.2)));
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn a_device_gone_mid_run_is_reported_offline_and_recovers_on_its_own() {
    let (mut dev, mut r) = rig("t4", "other", 300).await;
    r.state("hp", |v| v["online"] == true).await;
    dev.stop();
    let s = r.state("hp", |v| v["online"] == false).await;
    assert!(s["error"].as_str().is_some());
    assert!(r.h.counters().modbus_errors >= 1);
    dev.start();
    let topic = r.topics.facility_state("hp");
    r.w.wait_for(&topic, RECOVERY, |v| v["online"] == true)
        .await;
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn a_slow_device_times_out_and_recovers_when_it_is_fast_again() {
    let (dev, mut r) = rig("t5", "other", 300).await;
    r.state("hp", |v| v["online"] == true).await;
    dev.set_mode("slow");
    let s = r.state("hp", |v| v["online"] == false).await;
    assert!(s["error"].as_str().unwrap().contains("no answer"), "{s}");
    assert!(r.h.counters().modbus_timeouts >= 1);
    dev.set_mode("ok");
    let topic = r.topics.facility_state("hp");
    let (s, _) =
        r.w.wait_for(&topic, RECOVERY, |v| v["online"] == true)
            .await;
    assert_eq!(
        num(&s, "f_abcd"),
        21.5,
        "values are not mixed up after the late replies"
    );
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn exception_responses_are_reported_and_polling_goes_on() {
    let (dev, mut r) = rig("t6", "heat_pump", 500).await;
    r.state("hp", |v| v["online"] == true && v.get("mode").is_some())
        .await;
    dev.set_mode("exception");
    let s = r.state("hp", |v| v.get("mode").is_none()).await;
    assert_eq!(s["online"], true, "a device that answers is online");
    assert!(
        s["error"].as_str().unwrap().contains("ServerDeviceFailure"),
        "{s}"
    );
    assert!(r.h.counters().modbus_exceptions >= 1);
    // A write answered with an exception is an error, not a crash.
    let e = r.h.set_supply_temp_c(Celsius(40.0)).await.unwrap_err();
    assert!(e.to_string().contains("ServerDeviceFailure"), "{e}");
    assert!(r.h.counters().writes_failed >= 1);
    dev.set_mode("ok");
    r.state("hp", |v| v["mode"] == 2.0).await;
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn garbage_on_the_socket_takes_down_only_that_device() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dev = PyDevice::started();
    let junk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let junk_port = junk.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = junk.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 260];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0
                        || s.write_all(b"\xde\xad\xbe\xef HTTP/1.1 400 junk\r\n\x00\x00\x00\x07")
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let extra = format!(
        "{}\n[[devices]]\nname = \"junk\"\naddress = \"127.0.0.1:{junk_port}\"\npoll_ms = 100\ntimeout_ms = 300\n[[devices.points]]\nname = \"x\"\ntable = \"holding\"\naddress = 0\n",
        device_section("hp", dev.port, "other", 500)
    );
    let mut r = Rig::start("t7", &extra).await;
    r.state("junk", |v| v["online"] == false).await;
    let h = r.h.clone();
    eventually("junk counted", SOON, || h.counters().modbus_errors >= 2).await;
    r.state("hp", |v| v["online"] == true).await;
    assert!(h.device_state("hp").unwrap().online);
    r.bridge.shutdown().await;
}

/// mbpoll (one poll, 0-based, big-endian floats) against the read-out
/// server on `port`: `options`, then the host, then the `values` to write.
async fn mbpoll(port: u16, options: &[&str], values: &[&str]) -> std::process::Output {
    let port = port.to_string();
    let args: Vec<String> = ["-m", "tcp", "-p", &port, "-0", "-B", "-1"]
        .iter()
        .chain(options)
        .chain(&["127.0.0.1"])
        .chain(values)
        .map(|s| s.to_string())
        .collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("mbpoll")
            .args(&args)
            .output()
            .expect("mbpoll installed (scripts/install-test-deps)")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto, pymodbus and mbpoll"]
async fn mbpoll_reads_phoenix_figures_from_the_read_out_server() {
    let dev = PyDevice::started();
    let mb = testkit::free_port();
    let extra = format!(
        "[modbus_server]\nlisten = \"127.0.0.1:{mb}\"\n{}",
        device_section("hm", dev.port, "heat_meter", 500)
    );
    let r = Rig::start("t8", &extra).await;
    let h = r.h.clone();
    h.publish_offer(
        "gh1",
        &protocol::payloads::HeatOffer {
            ts: chrono::Utc::now(),
            available_kw: 12.5,
            forecast_kw: vec![12.5, 10.0],
            step_s: 900.0,
            supply_temp_c: Some(55.0),
        },
    )
    .await
    .unwrap();
    eventually("heat meter read", SOON, || h.read_heat_meter().is_ok()).await;
    let out = mbpoll(mb, &["-r", "0", "-c", "6", "-t", "4:float"], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('[')?
                .split_once("]:")
                .map(|(_, v)| v.trim().parse().ok())?
        })
        .collect();
    assert_eq!(values.len(), 6, "{text}");
    assert_eq!(values[0], 12.5, "heat_offered_kw");
    assert_eq!(values[1], 42.5, "heat_delivered_kw");
    assert!(
        (values[4] - 55.2).abs() < 1e-4,
        "supply_temp_c {}",
        values[4]
    );
    assert!(
        (values[5] - 40.1).abs() < 1e-4,
        "return_temp_c {}",
        values[5]
    );
    // Writes are refused with IllegalFunction.
    let write = mbpoll(mb, &["-r", "0", "-t", "4"], &["7"]).await;
    assert!(!write.status.success());
    let err = String::from_utf8_lossy(&write.stderr);
    assert!(err.contains("Illegal function"), "{err}");
    // Reads past the map are refused with IllegalDataAddress.
    let past = mbpoll(mb, &["-r", "100", "-c", "2", "-t", "4"], &[]).await;
    let err = String::from_utf8_lossy(&past.stderr);
    assert!(err.contains("Illegal data address"), "{err}");
    r.bridge.shutdown().await;
}

#[test]
fn the_example_site_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site.toml");
    let cfg: phoenix_hvac_bridge::SiteConfig =
        phoenix_hvac_bridge::SiteConfig::load(&path).unwrap();
    assert_eq!(cfg.devices.len(), 2);
    assert_eq!(cfg.consumers.len(), 2);
    assert!(cfg.consumers[1].estimator.is_some());
    assert!(cfg.modbus_server.is_some());
}
