//! The consumer interface and the bridge's MQTT session against a real
//! mosquitto broker.

mod common;

use std::time::Duration;

use common::{eventually, site, Rig, Watcher};
use phoenix_hvac_bridge::consumer::DemandSource;
use phoenix_hvac_bridge::Bridge;
use protocol::payloads::HeatOffer;
use protocol::topics::Topics;
use testkit::Mosquitto;

const SOON: Duration = Duration::from_secs(10);

const CONSUMERS: &str = r#"
[[consumers]]
id = "gh1"
stale_after_s = 3
fallback_kw = 3.0

[[consumers]]
id = "gh2"
stale_after_s = 60
[consumers.estimator]
ua_kw_per_k = 2.0
kp_kw_per_k = 4.0
ti_s = 600
max_kw = 200
"#;

fn demand(kw: f64) -> String {
    format!(
        r#"{{"ts":"{}","demand_kw":{kw},"forecast_kw":[{kw},{kw}],"step_s":900,"heat_value_per_kwh":0.08}}"#,
        chrono::Utc::now().to_rfc3339()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn demand_flows_in_goes_stale_to_the_fallback_and_recovers() {
    let Rig {
        broker: _broker,
        bridge,
        h,
        topics: t,
        w,
    } = Rig::start("c1", CONSUMERS).await;
    w.publish(&t.consumer_demand("gh1"), &demand(120.0)).await;
    eventually("demand received", SOON, || {
        h.demand("gh1").is_some_and(|d| d.demand_kw == 120.0)
    })
    .await;
    let d = h.demand("gh1").unwrap();
    assert_eq!(d.source, DemandSource::Reported);
    assert_eq!(d.forecast_kw, Some(vec![120.0, 120.0]));
    eventually("demand stale", SOON, || {
        h.demand("gh1")
            .is_some_and(|d| d.source == DemandSource::Fallback)
    })
    .await;
    let d = h.demand("gh1").unwrap();
    assert_eq!((d.demand_kw, d.forecast_kw.clone()), (3.0, None));
    assert_eq!(h.counters().stale_events, 1);
    assert_eq!(
        h.figures().consumers_stale,
        2,
        "gh1 went stale; gh2, never heard from, is stale too"
    );
    w.publish(&t.consumer_demand("gh1"), &demand(80.0)).await;
    eventually("fresh again", SOON, || {
        h.demand("gh1")
            .is_some_and(|d| d.demand_kw == 80.0 && d.source == DemandSource::Reported)
    })
    .await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn malformed_payloads_are_counted_and_change_nothing() {
    let Rig {
        broker: _broker,
        bridge,
        h,
        topics: t,
        w,
    } = Rig::start("c2", CONSUMERS).await;
    w.publish(&t.consumer_demand("gh3"), &demand(50.0)).await;
    eventually("demand received", SOON, || h.demand("gh3").is_some()).await;
    let ts = chrono::Utc::now().to_rfc3339();
    for (topic, payload) in [
        (t.consumer_demand("gh3"), "not json".to_string()),
        (
            t.consumer_demand("gh3"),
            format!(r#"{{"ts":"{ts}","demand_kw":-5}}"#),
        ),
        (
            t.consumer_demand("gh3"),
            format!(r#"{{"ts":"{ts}","demand_kw":5,"forecast_kw":[1]}}"#),
        ),
        (
            t.consumer_climate("gh2"),
            format!(r#"{{"ts":"{ts}","indoor_c":500,"setpoint_c":20}}"#),
        ),
        (t.node_telemetry("n1"), r#"{"cpu_util": 3}"#.to_string()),
        (t.node_status("n1"), "maybe".to_string()),
    ] {
        w.publish(&topic, &payload).await;
    }
    eventually("malformed counted", SOON, || {
        h.counters().malformed_payloads == 6
    })
    .await;
    assert_eq!(h.demand("gh3").unwrap().demand_kw, 50.0);
    assert_eq!(h.demand("gh2").unwrap().source, DemandSource::Fallback);
    assert_eq!(h.figures().servers_on, 0.0);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_climate_only_greenhouse_gets_an_estimated_demand() {
    let Rig {
        broker: _broker,
        bridge,
        h,
        topics: t,
        w,
    } = Rig::start("c3", CONSUMERS).await;
    let ts = chrono::Utc::now().to_rfc3339();
    w.publish(
        &t.consumer_climate("gh2"),
        &format!(r#"{{"ts":"{ts}","indoor_c":18,"setpoint_c":20,"outdoor_c":5}}"#),
    )
    .await;
    eventually("estimate", SOON, || {
        h.demand("gh2")
            .is_some_and(|d| d.source == DemandSource::Estimated)
    })
    .await;
    // Feed-forward U·A·(20 − 5) = 30 kW plus Kp·e = 4·2 = 8 kW; no integral yet.
    assert_eq!(h.demand("gh2").unwrap().demand_kw, 38.0);
    assert_eq!(
        h.figures().heat_demand_kw,
        38.0 + 3.0,
        "gh1 contributes its fallback"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn offers_are_validated_and_published_retained() {
    let mut r = Rig::start("c4", CONSUMERS).await;
    let h = r.h.clone();
    let offer = HeatOffer {
        ts: chrono::Utc::now(),
        available_kw: 75.0,
        forecast_kw: vec![75.0, 60.0, 40.0],
        step_s: 900.0,
        supply_temp_c: Some(45.0),
    };
    h.publish_offer("gh1", &offer).await.unwrap();
    let bad = HeatOffer {
        available_kw: -1.0,
        ..offer.clone()
    };
    assert!(h.publish_offer("gh1", &bad).await.is_err());
    assert!(h.publish_offer("a/b", &offer).await.is_err());
    let topic = r.topics.consumer_offer("gh1");
    // Once the rig's watcher has it, the broker holds it: a late subscriber
    // gets it flagged retained.
    r.w.wait_for(&topic, SOON, |_| true).await;
    let mut late = Watcher::new(r.broker.port(), &topic).await;
    let (v, retained) = late.wait_for(&topic, SOON, |_| true).await;
    assert!(retained);
    assert_eq!(v["available_kw"], 75.0);
    assert_eq!(v["forecast_kw"][2], 40.0);
    assert_eq!(h.figures().heat_offered_kw, 75.0);
    r.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn home_assistant_discovery_is_retained_with_availability() {
    let extra = format!(
        "[home_assistant]\nprefix = \"ha\"\n{CONSUMERS}\n[[devices]]\nname = \"hm\"\naddress = \"127.0.0.1:{}\"\n[[devices.points]]\nname = \"power_kw\"\ntable = \"input\"\naddress = 0\ntype = \"f32\"\nword_order = \"ABCD\"\n[[devices.points]]\nname = \"pump\"\ntable = \"coil\"\naddress = 0\n",
        testkit::free_port()
    );
    let Rig {
        broker,
        bridge,
        topics: t,
        ..
    } = Rig::start("c5", &extra).await;
    let dev_topic = "ha/device/phoenix_c5_facility_hm/config";
    let mut w = Watcher::new(broker.port(), "ha/#").await;
    let (v, _) = w.wait_for(dev_topic, SOON, |_| true).await;
    let power = &v["cmps"]["hm_power_kw"];
    assert_eq!(power["p"], "sensor");
    assert_eq!(power["unit_of_meas"], "kW");
    assert_eq!(power["stat_t"], t.facility_state("hm"));
    assert_eq!(v["cmps"]["hm_pump"]["p"], "binary_sensor");
    assert_eq!(v["avty"][0]["t"], t.bridge_status());
    let (v, _) = w
        .wait_for("ha/device/phoenix_c5_consumer_gh2/config", SOON, |_| true)
        .await;
    assert_eq!(
        v["cmps"]["gh2_available_kw"]["stat_t"],
        t.consumer_offer("gh2")
    );
    // Retained: a late subscriber sees it too.
    let mut late = Watcher::new(broker.port(), "ha/#").await;
    let (_, retained) = late.wait_for(dev_topic, SOON, |_| true).await;
    assert!(retained);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn status_is_retained_offline_on_shutdown_and_the_will_fires_when_dropped() {
    let broker = Mosquitto::start().unwrap();
    let cfg = site(broker.port(), "c6", "");
    let t = Topics::new("c6");
    let mut w = Watcher::new(broker.port(), &t.bridge_status()).await;
    let bridge = Bridge::start(&cfg).await.unwrap();
    w.wait_for(&t.bridge_status(), SOON, |v| v == "online")
        .await;
    bridge.shutdown().await;
    w.wait_for(&t.bridge_status(), SOON, |v| v == "offline")
        .await;
    let bridge = Bridge::start(&cfg).await.unwrap();
    w.wait_for(&t.bridge_status(), SOON, |v| v == "online")
        .await;
    drop(bridge); // no clean disconnect: the broker publishes the last will
    let (_, _) = w
        .wait_for(&t.bridge_status(), SOON, |v| v == "offline")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn the_bridge_reconnects_and_resubscribes_after_a_broker_restart() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let bridge = Bridge::start(&site(port, "c7", CONSUMERS)).await.unwrap();
    let h = bridge.handle();
    let t = Topics::new("c7");
    {
        let mut w = Watcher::new(port, &t.bridge_status()).await;
        w.wait_for(&t.bridge_status(), SOON, |v| v == "online")
            .await;
    }
    let port = broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually("mqtt errors counted", SOON, || {
        h.counters().mqtt_errors >= 1
    })
    .await;
    let _broker = Mosquitto::start_on(port).unwrap();
    let mut w = Watcher::new(port, &t.bridge_status()).await;
    w.wait_for(&t.bridge_status(), Duration::from_secs(20), |v| {
        v == "online"
    })
    .await;
    w.publish(&t.consumer_demand("gh1"), &demand(42.0)).await;
    eventually("demand after restart", SOON, || {
        h.demand("gh1").is_some_and(|d| d.demand_kw == 42.0)
    })
    .await;
    w.publish(
        &t.node_telemetry("n1"),
        &format!(
            r#"{{"ts":"{}","cpu_util":0.5,"power_w":1500}}"#,
            chrono::Utc::now().to_rfc3339()
        ),
    )
    .await;
    eventually("it power", SOON, || h.figures().it_power_kw == 1.5).await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto"]
async fn a_supply_temperature_is_taken_only_from_a_configured_fresh_consumer() {
    let Rig {
        broker: _broker,
        bridge,
        h,
        topics: t,
        w,
    } = Rig::start("c8", CONSUMERS).await;
    let wants_55 = format!(
        r#"{{"ts":"{}","demand_kw":20,"supply_temp_c":55}}"#,
        chrono::Utc::now().to_rfc3339()
    );
    w.publish(&t.consumer_demand("gh1"), &wants_55).await;
    w.publish(&t.consumer_demand("stranger"), &wants_55).await;
    eventually("both demands received", SOON, || {
        h.demand("gh1").is_some_and(|d| d.demand_kw == 20.0)
            && h.demand("stranger").is_some_and(|d| d.demand_kw == 20.0)
    })
    .await;
    assert_eq!(h.demand("gh1").unwrap().supply_temp_c, Some(55.0));
    let stranger = h.demand("stranger").unwrap();
    assert_eq!(stranger.supply_temp_c, None, "not in [[consumers]]");
    assert_eq!(
        stranger.source,
        DemandSource::Reported,
        "its demand still counts"
    );
    assert_eq!(h.counters().supply_temps_ignored, 1);
    // gh1 goes stale after 3 s: its supply temperature no longer steers.
    eventually("gh1 stale", SOON, || {
        h.demand("gh1")
            .is_some_and(|d| d.source == DemandSource::Fallback)
    })
    .await;
    assert_eq!(h.demand("gh1").unwrap().supply_temp_c, None);
    eventually("the stale one counted", SOON, || {
        h.counters().supply_temps_ignored == 2
    })
    .await;
    bridge.shutdown().await;
}
