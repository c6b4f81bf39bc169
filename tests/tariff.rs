//! The controller's live tariff (DESIGN.md §4.9) against a real mosquitto:
//! a price file re-read when it changes on disk, the retained `tariff`
//! topic, bad input refused without changing the prices, and the status on
//! `/api/v1/site` and `/metrics`.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use hvac_bridge::SiteConfig;
use phoenix::controller::config::ControllerConfig;
use phoenix::controller::run::{self, Clock};
use phoenix::controller::tariff::TariffStatus;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

fn site_toml(port: u16, prices: &str) -> String {
    // The state database of each rig in a folder of its own (kept: the
    // controller may still write it as the test ends).
    let state_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a state folder")
        .keep();
    let state_dir = state_dir.display();
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
site = "t"

[controller]
state_dir = "{state_dir}"
mode = "dry_run"
control_period_s = 900
horizon_steps = 4
time_limit_ms = 500

[controller.prices]
electricity_per_kwh = 0.12
{prices}

[[controller.servers]]
id = "a"
model = "hp-ml110-g5"
cores = 8
mem_gib = 32
inlet_c = 24
r_k_per_w = 0.3
temp_limit_c = 80
"#
    )
}

/// A quarter-hour CSV from an hour ago for two days at `price`, 300 g/kWh.
fn csv(price: f64) -> String {
    let start =
        Utc::now().duration_trunc(ChronoDuration::hours(1)).unwrap() - ChronoDuration::hours(1);
    let mut s = String::from("time,price_per_kwh,carbon_g_per_kwh\n");
    for i in 0..192 {
        let t: DateTime<Utc> = start + ChronoDuration::minutes(15 * i);
        s.push_str(&format!("{},{price},300\n", t.to_rfc3339()));
    }
    s
}

struct Rig {
    running: run::Running,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn start(port: u16, prices: &str) -> Self {
        let cfg: SiteConfig<ControllerConfig> =
            SiteConfig::from_toml(&site_toml(port, prices)).expect("config");
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (running, join) = run::start(cfg, Clock::wall(), Some(listener), stopped)
            .await
            .expect("starts");
        Self {
            running,
            stop,
            join,
        }
    }

    /// Wait (a deadline, not a timing claim) for the tariff status to satisfy `pred`.
    async fn tariff_until(&self, what: &str, pred: impl Fn(&TariffStatus) -> bool) -> TariffStatus {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.running.app.tariff.read().unwrap().clone();
            if let Some(t) = t.filter(|t| pred(t)) {
                return t;
            }
            assert!(Instant::now() < until, "never saw {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.join.await;
    }

    fn get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.running.api_addr);
        testkit::http("GET", &url, None).expect("API answers").1
    }
}

fn write(path: &Path, text: &str) {
    // A new name renamed over the old: the reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn a_price_file_is_re_read_when_it_changes_and_a_bad_one_changes_nothing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.csv");
    write(&file, &csv(0.31));
    let prices = format!(
        "electricity_file = {:?}\ncarbon_price_per_t = 100",
        file.to_str().unwrap()
    );
    let rig = Rig::start(broker.port(), &prices).await;
    let t = rig
        .tariff_until("the file's price", |t| t.price_per_kwh == 0.31)
        .await;
    assert_eq!(t.carbon_g_per_kwh, 300.0);
    assert!(!t.stale, "two days of prices cover the horizon");
    assert!(t.source.as_deref().unwrap().contains("prices.csv"));

    // The file changes on disk (a later modification time).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(&file, &csv(-0.02));
    rig.tariff_until("the new price", |t| t.price_per_kwh == -0.02)
        .await;
    let cfg_prices = &rig.running.app.tariff.read().unwrap().clone().unwrap();
    assert_eq!(cfg_prices.price_per_kwh, -0.02);

    // A bad line: refused naming the file and the line; the prices stay.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(
        &file,
        "time,price_per_kwh\n2026-01-01T00:00:00Z,0.1\n2026-01-01T00:15:00Z,dear\n",
    );
    let t = rig
        .tariff_until("the refusal", |t| t.last_error.is_some())
        .await;
    let e = t.last_error.unwrap();
    assert!(e.contains("prices.csv") && e.contains("line 3"), "{e}");
    assert_eq!(t.price_per_kwh, -0.02);

    let site: serde_json::Value = serde_json::from_str(&rig.get("/api/v1/site")).unwrap();
    assert_eq!(site["tariff"]["stale"], false);
    assert_eq!(site["tariff"]["price_per_kwh"], -0.02);
    let metrics = rig.get("/metrics");
    assert!(metrics.contains("phoenix_tariff_stale 0"), "{metrics}");
    assert!(
        metrics.contains("phoenix_grid_carbon_g_per_kwh 300"),
        "{metrics}"
    );
    assert!(
        metrics.contains("phoenix_errors_total{source=\"tariff\"} 1"),
        "{metrics}"
    );
    rig.stop().await;
}

async fn publish_retained(port: u16, topic: &str, payload: &[u8]) {
    let id = format!("pub-{}", testkit::free_port());
    let (client, mut ev) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 16);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < until,
            "publish on {topic} never acknowledged"
        );
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), ev.poll()).await
        {
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
            return;
        }
    }
}

fn payload(price: f64, slots: usize) -> Vec<u8> {
    let start = Utc::now().duration_trunc(ChronoDuration::hours(1)).unwrap();
    serde_json::json!({
        "start": start,
        "step_s": 900,
        "prices_per_kwh": vec![price; slots],
        "carbon_g_per_kwh": vec![120.0; slots],
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (scripts/install-test-deps)"]
async fn the_retained_tariff_topic_sets_the_prices_and_a_short_one_is_stale() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let broker = testkit::Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    // Published before the controller starts: it gets the retained copy.
    publish_retained(port, "phoenix/v1/t/tariff", &payload(0.25, 96)).await;
    let rig = Rig::start(port, "").await;
    let t = rig
        .tariff_until("the retained tariff", |t| t.price_per_kwh == 0.25)
        .await;
    assert_eq!(t.source.as_deref(), Some("mqtt"));
    assert_eq!(t.carbon_g_per_kwh, 120.0);
    assert!(!t.stale);

    // A bad payload is refused, counted, and changes nothing.
    publish_retained(
        port,
        "phoenix/v1/t/tariff",
        br#"{"start":"x","step_s":900}"#,
    )
    .await;
    let t = rig
        .tariff_until("the refusal", |t| t.last_error.is_some())
        .await;
    assert_eq!(t.price_per_kwh, 0.25);

    // Four quarter hours do not reach the end of the hour-long horizon
    // for long: stale once now + 1 h passes the last one.
    publish_retained(port, "phoenix/v1/t/tariff", &payload(0.40, 4)).await;
    let t = rig.tariff_until("the stale flag", |t| t.stale).await;
    assert_eq!(t.price_per_kwh, 0.40);
    assert!(rig.get("/metrics").contains("phoenix_tariff_stale 1"));
    rig.stop().await;
}
