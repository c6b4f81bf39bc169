//! Desired-state writes against real peers (DESIGN.md §4.8): mosquitto, the
//! pymodbus device of `tests/peers/device.py` stopped and started again, and
//! the outcomes on `facility/<device>/set/result`, with the device's
//! register read back over Modbus.

mod common;

use std::time::Duration;

use common::{device_section_with, PyDevice, Rig};
use phoenix_hvac_bridge::modbus::{ModbusLink, Values};
use phoenix_hvac_bridge::registers::{ReadBlock, Table};
use phoenix_hvac_bridge::WriteAccepted;
use protocol::payloads::{decode, WriteResult, WriteStatus};
use protocol::units::Celsius;
use serde_json::Value;

const SOON: Duration = Duration::from_secs(10);
/// The device's reconnection backoff grows to 30 s: room for it.
const RECOVERY: Duration = Duration::from_secs(45);

/// A rig polling the (started) pymodbus device as heat pump `hp`, with the
/// device keys `keys`.
async fn rig(site: &str, keys: &str) -> (PyDevice, Rig) {
    let dev = PyDevice::started();
    let r = Rig::start(
        site,
        &device_section_with("hp", dev.port, "heat_pump", 300, keys),
    )
    .await;
    (dev, r)
}

/// Stop the device and wait until the bridge reports it down.
async fn take_down(dev: &mut PyDevice, r: &mut Rig) {
    r.state("hp", |v| v["online"] == true).await;
    dev.stop();
    r.state("hp", |v| v["online"] == false).await;
}

/// The supply setpoint register of the device, read over Modbus (°C).
async fn setpoint_on_device(port: u16) -> f64 {
    let mut link = ModbusLink::new(format!("127.0.0.1:{port}"), 1, SOON);
    let block = ReadBlock {
        table: Table::Holding,
        start: 0,
        count: 1,
    };
    match link.read(block).await {
        Ok(Ok(Values::Words(w))) => f64::from(w[0] as i16) / 10.0,
        other => panic!("setpoint not readable: {other:?}"),
    }
}

/// A result message checked against the protocol's own validation.
fn result(v: &Value) -> WriteResult {
    decode(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("invalid result {v}: {e}"))
}

fn is(v: &Value, status: &str, setpoint: f64) -> bool {
    v["status"] == status && v["request"]["supply_setpoint_c"] == setpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn a_write_to_a_down_device_is_pending_and_applied_when_it_returns() {
    let (mut dev, mut r) = rig("d1", "min_write_interval_s = 0").await;
    let results = r.topics.facility_set_result("hp");
    take_down(&mut dev, &mut r).await;
    let ts = "2026-03-01T12:00:00Z";
    r.w.publish(
        &r.topics.facility_set("hp"),
        &format!(r#"{{"supply_setpoint_c": 52.5, "ts": "{ts}"}}"#),
    )
    .await;
    let (v, retained) = r.w.wait_for(&results, SOON, |_| true).await;
    assert!(!retained, "results are not retained");
    let pending = result(&v);
    assert_eq!(pending.status, WriteStatus::Pending);
    assert_eq!(
        pending.request_ts.unwrap().to_rfc3339(),
        "2026-03-01T12:00:00+00:00"
    );
    assert!(pending.reason.unwrap().contains("`hp` is down"), "{v}");
    // The typed API takes the same path: pending is not an error.
    let typed = r.h.write("hp", "pump", 0.0).await.unwrap();
    assert!(matches!(typed, WriteAccepted::Pending { .. }), "{typed:?}");

    dev.start();
    let seen =
        r.w.collect_until(&results, RECOVERY, |v| is(v, "applied", 52.5))
            .await;
    let applied = result(seen.last().unwrap());
    assert_eq!(applied.reason, None);
    r.state("hp", |v| {
        v["supply_setpoint_c"] == 52.5 && v["pump"] == false
    })
    .await;
    assert_eq!(setpoint_on_device(dev.port).await, 52.5);
    let c = r.h.counters();
    assert_eq!((c.writes_pending, c.writes_applied), (2, 2), "{c:?}");
    assert_eq!((c.writes_expired, c.writes_ok), (0, 2), "{c:?}");
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn of_two_writes_while_down_the_first_expires_superseded_and_the_second_is_applied() {
    let (mut dev, mut r) = rig("d2", "min_write_interval_s = 0").await;
    let results = r.topics.facility_set_result("hp");
    take_down(&mut dev, &mut r).await;
    let set = r.topics.facility_set("hp");
    r.w.publish(&set, r#"{"supply_setpoint_c": 40}"#).await;
    r.w.wait_for(&results, SOON, |v| is(v, "pending", 40.0))
        .await;
    r.w.publish(&set, r#"{"supply_setpoint_c": 60}"#).await;
    let seen =
        r.w.collect_until(&results, SOON, |v| is(v, "pending", 60.0))
            .await;
    let first = result(&seen[0]);
    assert_eq!(first.status, WriteStatus::Expired, "{seen:?}");
    assert_eq!(first.request["supply_setpoint_c"], 40.0);
    assert_eq!(first.reason.as_deref(), Some("superseded by a newer write"));
    assert_eq!(seen.len(), 2, "{seen:?}");

    dev.start();
    let seen =
        r.w.collect_until(&results, RECOVERY, |v| v["status"] == "applied")
            .await;
    assert!(is(seen.last().unwrap(), "applied", 60.0), "{seen:?}");
    assert_eq!(
        seen.len(),
        1,
        "the superseded write is never answered again"
    );
    r.state("hp", |v| v["supply_setpoint_c"] == 60.0).await;
    assert_eq!(setpoint_on_device(dev.port).await, 60.0);
    let c = r.h.counters();
    assert_eq!((c.writes_expired, c.writes_superseded), (1, 1), "{c:?}");
    assert_eq!(c.writes_ok, 1, "40 never reached the device: {c:?}");
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn a_pending_write_past_write_expiry_s_is_expired_and_never_written() {
    let (mut dev, mut r) = rig("d3", "write_expiry_s = 1\nmin_write_interval_s = 0").await;
    let results = r.topics.facility_set_result("hp");
    take_down(&mut dev, &mut r).await;
    r.w.publish(&r.topics.facility_set("hp"), r#"{"supply_setpoint_c": 65}"#)
        .await;
    let seen =
        r.w.collect_until(&results, SOON, |v| v["status"] == "expired")
            .await;
    assert!(is(&seen[0], "pending", 65.0), "{seen:?}");
    let expired = result(&seen[1]);
    assert!(
        expired.reason.unwrap().contains("write_expiry_s = 1 s"),
        "{seen:?}"
    );

    dev.start();
    let topic = r.topics.facility_state("hp");
    r.w.wait_for(&topic, RECOVERY, |v| v["online"] == true)
        .await;
    // Two polls after its return: a flush, had there been one, is done.
    r.state("hp", |v| v["online"] == true).await;
    let s = r.state("hp", |v| v["online"] == true).await;
    assert_eq!(s["supply_setpoint_c"], 45.0);
    assert_eq!(setpoint_on_device(dev.port).await, 45.0);
    assert_eq!(r.h.counters().writes_ok, 0);
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn refused_writes_are_answered_refused_naming_the_point() {
    let (dev, mut r) = rig("d4", "").await;
    let results = r.topics.facility_set_result("hp");
    let set = r.topics.facility_set("hp");
    r.state("hp", |v| v["online"] == true).await;
    let cases = [
        (
            r#"{"supply_setpoint_c": 80}"#,
            "`supply_setpoint_c`: 80 is outside [30, 70]",
        ),
        (r#"{"power_kw": 1}"#, "point `power_kw` is read-only"),
        (r#"{"no_such_point": 1}"#, "has no point `no_such_point`"),
        (r#"{"pump": 2}"#, "point `pump`"),
        ("not json", "malformed set payload"),
    ];
    for (payload, needle) in cases {
        r.w.publish(&set, payload).await;
        let (v, _) = r.w.wait_for(&results, SOON, |_| true).await;
        let res = result(&v);
        assert_eq!(res.status, WriteStatus::Refused, "{payload}: {v}");
        assert!(res.reason.unwrap().contains(needle), "{payload}: {v}");
    }
    // A huge request is refused too, with a result that stays valid.
    let long = "x".repeat(5000);
    r.w.publish(&set, &format!(r#"{{"{long}": 1}}"#)).await;
    let (v, _) = r.w.wait_for(&results, SOON, |_| true).await;
    let res = result(&v);
    assert_eq!(res.status, WriteStatus::Refused);
    assert!(res.request.is_empty(), "too large to echo");
    assert!(res.reason.unwrap().ends_with('…'));
    let elsewhere = r.topics.facility_set_result("nope");
    r.w.publish(&r.topics.facility_set("nope"), r#"{"x": 1}"#)
        .await;
    let (v, _) = r.w.wait_for(&elsewhere, SOON, |_| true).await;
    assert_eq!(v["reason"], "no device `nope`");

    // A device exception is a refusal too, naming the point.
    dev.set_mode("exception");
    r.state("hp", |v| v.get("mode").is_none()).await;
    r.w.publish(&set, r#"{"supply_setpoint_c": 50}"#).await;
    let (v, _) = r.w.wait_for(&results, SOON, |_| true).await;
    let res = result(&v);
    assert_eq!(res.status, WriteStatus::Refused, "{v}");
    let why = res.reason.unwrap();
    assert!(
        why.contains("`supply_setpoint_c`") && why.contains("ServerDeviceFailure"),
        "{why}"
    );
    let c = r.h.counters();
    assert_eq!(
        (c.writes_refused, c.writes_refused_by_device),
        (7, 1),
        "{c:?}"
    );
    assert_eq!((c.writes_applied, c.writes_ok), (0, 0), "{c:?}");
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and pymodbus"]
async fn a_write_sooner_than_min_write_interval_s_is_held_and_the_latest_is_applied() {
    // Long enough that the two requests below arrive inside it on any machine.
    let (dev, mut r) = rig("d5", "min_write_interval_s = 8").await;
    let results = r.topics.facility_set_result("hp");
    r.state("hp", |v| v["online"] == true).await;
    let h = r.h.clone();
    assert_eq!(
        h.set_supply_temp_c(Celsius(50.0)).await.unwrap(),
        WriteAccepted::Applied
    );
    let held = h.set_supply_temp_c(Celsius(55.0)).await.unwrap();
    let WriteAccepted::Pending { reason } = held else {
        panic!("held: {held:?}");
    };
    assert!(reason.contains("min_write_interval_s = 8 s"), "{reason}");
    // Another point is not held up by it.
    assert_eq!(
        h.write("hp", "pump", 0.0).await.unwrap(),
        WriteAccepted::Applied
    );
    r.w.publish(&r.topics.facility_set("hp"), r#"{"supply_setpoint_c": 60}"#)
        .await;
    let seen =
        r.w.collect_until(&results, Duration::from_secs(30), |v| {
            v["status"] == "applied" && v["request"]["supply_setpoint_c"] == 60.0
        })
        .await;
    let statuses: Vec<(String, f64)> = seen
        .iter()
        .filter(|v| v["request"].get("supply_setpoint_c").is_some())
        .map(|v| {
            (
                v["status"].as_str().unwrap().to_string(),
                v["request"]["supply_setpoint_c"].as_f64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("applied", 50.0),
        ("pending", 55.0),
        ("expired", 55.0),
        ("pending", 60.0),
        ("applied", 60.0),
    ];
    let want: Vec<(String, f64)> = want.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    assert_eq!(statuses, want);
    r.state("hp", |v| v["supply_setpoint_c"] == 60.0).await;
    assert_eq!(setpoint_on_device(dev.port).await, 60.0);
    let c = h.counters();
    assert_eq!(
        (c.writes_rate_limited, c.writes_ok),
        (2, 3),
        "55 never written: {c:?}"
    );
    r.bridge.shutdown().await;
}
