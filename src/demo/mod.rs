//! `phoenix demo`: the whole system in one process on embedded defaults.
//!
//! - An embedded MQTT broker (rumqttd) on a free loopback port.
//! - A live twin of a small site: 24 recycled servers (SPECpower curves of
//!   reference/physics.md) playing their agents over MQTT (telemetry with
//!   each VM's CPU time out, caps and CPU quotas obeyed), their hypervisor
//!   and power switches (the controller's actuator backend), a greenhouse
//!   publishing its heat demand and forecast, a heat pump and a heat meter
//!   as Modbus TCP devices — physics from the `simulator` crate (RC
//!   temperature, greenhouse heat balance, weather). Its workload is
//!   admitted over the controller's HTTP API.
//! - The controller (`phoenix controller`) on an accelerated clock, with its
//!   bridge, API and web page.
//!
//! The twin and the controller share no memory: what the controller
//! decides reaches the twin over MQTT and through the actuator, as on a
//! real site; the figures printed come from the twin's own measurements and
//! the controller's HTTP API.
//!
//! Time runs `speed` times faster than the wall clock; the demo stops by
//! itself after `duration` real seconds, or on Ctrl-C.

mod agents;
pub mod device;
mod http;
pub mod hypervisor;
mod twin;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hvac_bridge::SiteConfig;
use tokio::sync::watch;

use crate::controller::config::ControllerConfig;
use crate::controller::execute::ActuateDyn;
pub use crate::controller::run::Clock;
use crate::controller::run::{self, ControllerError};

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the API and page listen.
    pub http: SocketAddr,
    /// Site seconds per real second.
    pub speed: f64,
    /// Real seconds to run; `None` until stopped.
    pub duration_s: Option<f64>,
    /// Seed of the weather and workload.
    pub seed: u64,
    /// Print the running summary to stdout.
    pub print: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The broker could not start.
    #[error("embedded MQTT broker: {0}")]
    Broker(String),
    /// A demo device could not be served.
    #[error("demo Modbus device: {0}")]
    Device(#[from] std::io::Error),
    /// The embedded site file is wrong (a bug).
    #[error("embedded site config: {0}")]
    Config(String),
    /// The controller could not start.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The twin failed.
    #[error("site twin: {0}")]
    Twin(String),
}

/// What the demo achieved, printed at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    /// Site time simulated, h.
    pub site_hours: f64,
    /// Plans made.
    pub plans: u64,
    /// Heat demand, kWh.
    pub heat_demand_kwh: f64,
    /// Heat delivered by the servers, kWh.
    pub heat_delivered_kwh: f64,
    /// Gain over the greedy baseline, summed over the plans' horizons.
    pub gain: f64,
    /// Migrations the hypervisor carried out.
    pub migrations: usize,
    /// Migrations that failed at the hypervisor.
    pub migrations_failed: usize,
    /// Servers the controller switched on.
    pub power_ons: usize,
    /// Servers the controller switched off.
    pub power_offs: usize,
    /// Actions that did not happen, as the controller's API lists them.
    pub failed_actions: usize,
    /// VMs the controller's API refused to admit.
    pub admissions_refused: usize,
    /// Hottest component seen, °C.
    pub max_temp_c: f64,
    /// Batch jobs the controller counted done and removed.
    pub jobs_done: usize,
}

/// Start of site time: a January evening at the end of the price peak, so a
/// short run shows both regimes — expensive power (consolidate, defer batch,
/// switch off) and cheap night power worth less than the heat it makes (run
/// harder for the greenhouse).
pub fn site_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0)
        .single()
        .expect("valid date")
}

/// The embedded site file (the same format as examples/site.toml), with the
/// broker's and devices' loopback addresses filled in.
pub fn site_toml(mqtt_port: u16, heatpump: SocketAddr, heatmeter: SocketAddr) -> String {
    let mut servers = String::new();
    for i in 0..twin::SERVERS {
        let (model, cores, mem, r, inlet) = twin::server_spec(i);
        servers.push_str(&format!(
            "\n[[controller.servers]]\nid = \"{}\"\nmodel = \"{model}\"\ncores = {cores}\nmem_gib = {mem}\noff_w = 5\ninlet_c = {inlet}\nr_k_per_w = {r}\ntemp_limit_c = 80\nloop = \"gh1\"\nrecovery = 0.85\n",
            twin::node_id(i)
        ));
    }
    format!(
        r#"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
site = "demo"

[[devices]]
name = "heatpump"
address = "{heatpump}"
unit = 1
poll_ms = 500
timeout_ms = 500
role = "heat_pump"

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
name = "supply_c"
table = "input"
address = 0
type = "i16"
scale = 0.1

[[devices]]
name = "heatmeter"
address = "{heatmeter}"
unit = 1
poll_ms = 500
timeout_ms = 500
role = "heat_meter"

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
type = "f32"
word_order = "ABCD"

[[consumers]]
id = "gh1"
stale_after_s = 30

[controller]
control_period_s = 900
horizon_steps = 8
time_limit_ms = 1000
node_stale_after_s = 300
max_power_ons_per_period = 4

[controller.prices]
electricity_per_kwh = [0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.21, 0.21, 0.21, 0.21, 0.21,
                       0.21, 0.21, 0.21, 0.21, 0.21, 0.30, 0.30, 0.30, 0.30, 0.21, 0.21, 0.12]
heat_value_per_kwh = 0.16

[controller.policy]
max_migrations = 6
migration_cost = 0.002
switch_cost = 0.01
cpu_overcommit = 2.0

[[controller.loops]]
id = "gh1"
consumer = "gh1"
max_kw = 8
supply_temp_c = 40

[[controller.images]]
id = "ubuntu-24.04"
shared_mem_gib = 0.5
{servers}"#
    )
}

/// Start rumqttd on `port` (127.0.0.1 only, no console or metrics) on its
/// own thread.
fn start_broker(port: u16) -> Result<(), DemoError> {
    use std::collections::HashMap;
    let conn = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "demo".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections: conn,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 1000,
        max_outgoing_packet_count: 2000,
        max_segment_size: 104_857_600,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("demo".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped.");
            }
        })
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    // Wait until it accepts connections.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > until {
            return Err(DemoError::Broker(format!(
                "nothing listens on 127.0.0.1:{port}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn free_port() -> Result<u16, DemoError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A demo that runs: its API's address, and what to stop it with.
#[derive(Debug)]
pub struct Running {
    /// Where the controller's API and page listen.
    pub api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    stop_twin: watch::Sender<bool>,
    twin: tokio::task::JoinHandle<DemoSummary>,
    controller: tokio::task::JoinHandle<()>,
    print: bool,
}

/// Start the demo: the broker, the devices, the twin's hypervisor, the
/// controller with it as actuator backend, and the twin (its starting
/// workload admitted over HTTP).
pub async fn start(opts: &DemoOptions) -> Result<Running, DemoError> {
    let mqtt_port = free_port()?;
    start_broker(mqtt_port)?;
    let heatpump: device::SharedBank = Arc::new(Mutex::new(device::Bank::new(16)));
    let heatmeter: device::SharedBank = Arc::new(Mutex::new(device::Bank::new(16)));
    // The heat pump starts at a 40 °C supply setpoint, as commissioned.
    heatpump.lock().unwrap_or_else(|e| e.into_inner()).holding[0] = 400;
    let hp_addr = device::serve(heatpump.clone()).await?;
    let hm_addr = device::serve(heatmeter.clone()).await?;

    let state_dir = tempfile::tempdir()
        .map_err(|e| DemoError::Config(format!("temporary state folder: {e}")))?;
    let text = site_toml(mqtt_port, hp_addr, hm_addr).replace(
        "[controller]\n",
        &format!(
            "[controller]\nstate_dir = {:?}\n",
            state_dir.path().display().to_string()
        ),
    );
    let site: SiteConfig<ControllerConfig> =
        SiteConfig::from_toml(&text).map_err(|e| DemoError::Config(e.to_string()))?;
    let ctl_cfg = site
        .controller
        .clone()
        .ok_or_else(|| DemoError::Config("no [controller]".into()))?;

    let clock = Clock::accelerated(site_start(), opts.speed);
    let bind = |source| {
        DemoError::Controller(ControllerError::Bind {
            addr: opts.http,
            source,
        })
    };
    let listener = tokio::net::TcpListener::bind(opts.http)
        .await
        .map_err(bind)?;
    let api_addr = listener.local_addr().map_err(bind)?;
    let links = twin::Links {
        site: site.mqtt.site.clone(),
        mqtt_port,
        api: api_addr,
        heatpump,
        heatmeter,
    };
    let mut twin = twin::Twin::new(&ctl_cfg, links, clock, opts.seed).map_err(DemoError::Twin)?;
    let backend: Arc<dyn ActuateDyn> = Arc::new(twin.hypervisor());
    let (stop, stop_rx) = watch::channel(false);
    let (stop_twin, twin_stop_rx) = watch::channel(false);
    let (_, controller) =
        run::start_with(site, clock, Some(listener), stop_rx, Some(backend)).await?;
    if opts.print {
        println!(
            "Phoenix demo: open http://{api_addr}/ (site time ×{})",
            opts.speed
        );
    }
    twin.admit_starting_workload().await;
    let twin = tokio::spawn(twin.run(twin_stop_rx, opts.print, ctl_cfg.control_period_s));
    Ok(Running {
        api_addr,
        stop,
        stop_twin,
        twin,
        controller,
        print: opts.print,
    })
}

impl Running {
    /// Stop the demo; returns what it achieved.
    pub async fn finish(self) -> Result<DemoSummary, DemoError> {
        // The twin first: its last read of the API needs the controller up.
        let _ = self.stop_twin.send(true);
        let summary = self.twin.await.map_err(|e| DemoError::Twin(e.to_string()));
        let _ = self.stop.send(true);
        let _ = self.controller.await;
        let summary = summary?;
        if self.print {
            print_summary(&summary);
        }
        Ok(summary)
    }
}

fn print_summary(summary: &DemoSummary) {
    println!(
        "Demo done: {:.1} site hours, {} plans, heat delivered {:.1} of {:.1} kWh demanded ({:.0} %), gain over greedy {:.3}, {} migrations ({} failed), {} servers switched off and {} on, {} batch jobs done, hottest component {:.1} °C.",
        summary.site_hours,
        summary.plans,
        summary.heat_delivered_kwh,
        summary.heat_demand_kwh,
        100.0 * summary.heat_delivered_kwh / summary.heat_demand_kwh.max(1e-9),
        summary.gain,
        summary.migrations,
        summary.migrations_failed,
        summary.power_offs,
        summary.power_ons,
        summary.jobs_done,
        summary.max_temp_c
    );
}

/// Run the demo until `duration_s` has passed or `shutdown` turns true.
pub async fn run(
    opts: DemoOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<DemoSummary, DemoError> {
    let running = start(&opts).await?;
    let deadline = opts.duration_s.map(Duration::from_secs_f64);
    tokio::select! {
        _ = async { match deadline { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
    running.finish().await
}
