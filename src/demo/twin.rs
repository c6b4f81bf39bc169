//! The demo's live site: servers that play their agents over MQTT, a
//! greenhouse that publishes its heat demand, and the heat pump and heat
//! meter registers — stepped on the controller's accelerated clock.
//!
//! The world learns what the controller decided the way a real site does:
//! caps arrive over MQTT; placements and on/off come from the simulated
//! actuator (the controller's state); batch VMs run at the cores the plan in
//! force grants them, slowed by caps, and leave when their work is done.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use protocol::payloads::{decode, CapCommand, HeatDemand, Telemetry};
use protocol::topics::{TopicKind, Topics, STATUS_ONLINE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use scheduler::curve::PowerCurve;
use scheduler::model::{Vm, VmKind};
use simulator::physics::greenhouse::Greenhouse;
use simulator::physics::server::{rc_decay, rc_step};
use simulator::scenario::WeatherSection;
use simulator::weather::Weather;
use tokio::sync::watch;

use super::device::SharedBank;
use super::DemoSummary;
use crate::controller::api::AppState;
use crate::controller::config::ControllerConfig;

/// Servers in the demo site.
pub const SERVERS: usize = 24;
/// Site seconds per twin step.
const STEP_S: f64 = 60.0;
/// Thermal capacitance of a server's hottest component and heat sink, J/K.
const THERMAL_CAPACITY_J_PER_K: f64 = 400.0;

/// Node id of server `i`.
pub fn node_id(i: usize) -> String {
    format!("node{:02}", i + 1)
}

/// Model, cores, memory (GiB), R (K/W) and inlet (°C) of server `i`: two in
/// three are old HP ML110 G5 (idle at 70 % of peak), one in three IBM x3550
/// (x5670); the first four sit in a hot aisle where the limit binds.
pub fn server_spec(i: usize) -> (&'static str, u32, u32, f64, f64) {
    let hot = i < 4;
    if i % 3 == 2 {
        (
            "ibm-x3550-x5670",
            12,
            48,
            if hot { 0.24 } else { 0.2 },
            if hot { 31.0 } else { 24.0 },
        )
    } else {
        (
            "hp-ml110-g5",
            8,
            32,
            if hot { 0.38 } else { 0.3 },
            if hot { 31.0 } else { 24.0 },
        )
    }
}

struct Server {
    id: String,
    curve: PowerCurve,
    cores: f64,
    r_k_per_w: f64,
    inlet_c: f64,
    recovery: f64,
    off_w: f64,
    temp_c: f64,
    announced: bool,
}

/// A cap in force: watts and the site time its lease ends.
type Caps = Arc<Mutex<BTreeMap<String, (f64, DateTime<Utc>)>>>;

/// The live twin.
pub struct Twin {
    servers: Vec<Server>,
    greenhouse: Greenhouse,
    weather: Weather,
    loop_max_kw: f64,
    clock: super::Clock,
    app: AppState,
    client: AsyncClient,
    eventloop: Option<rumqttc::EventLoop>,
    topics: Topics,
    caps: Caps,
    heatpump: SharedBank,
    heatmeter: SharedBank,
    meter_kwh: f64,
    rng: ChaCha8Rng,
    next_job: u32,
    summary: DemoSummary,
}

impl std::fmt::Debug for Twin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twin")
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

impl Twin {
    /// Build the twin for the controller section `cfg`, talking to the broker
    /// on `mqtt_port`, and admit its starting workload into `app`.
    pub fn new(
        cfg: &ControllerConfig,
        mqtt_port: u16,
        clock: super::Clock,
        seed: u64,
        app: AppState,
        heatpump: SharedBank,
        heatmeter: SharedBank,
    ) -> Result<Self, String> {
        let mut servers = Vec::new();
        for s in &cfg.servers {
            let curve = s
                .curve_w()
                .and_then(|c| PowerCurve::new(&c))
                .ok_or_else(|| format!("server {}: no power curve", s.id))?;
            servers.push(Server {
                id: s.id.clone(),
                curve,
                cores: f64::from(s.cores),
                r_k_per_w: s.r_k_per_w,
                inlet_c: s.inlet_c,
                recovery: s.recovery,
                off_w: s.off_w,
                temp_c: s.inlet_c,
                announced: false,
            });
        }
        // A 40 m² double-layer research greenhouse (U = 3.8 W/m²K,
        // reference/physics.md), tomatoes: 17 °C night, 21 °C day — sized so
        // that two dozen old servers can cover most of a winter night.
        let greenhouse = Greenhouse {
            area_m2: 40.0,
            u_w_per_m2k: 3.8,
            infiltration_w_per_k: 15.0,
            thermal_mass_j_per_k: 1.5e6,
            solar_gain_factor: 0.5,
            setpoint_day_c: 21.0,
            setpoint_night_c: 17.0,
            day_start_h: 6,
            day_end_h: 18,
            vent_margin_k: 5.0,
            indoor_c: 19.0,
            screen: None,
            screen_closed: false,
        };
        let section: WeatherSection =
            toml::from_str("kind = \"synthetic\"\nmean_c = 9.0\nseasonal_amplitude_c = 8.0\ndiurnal_amplitude_c = 4.0\nnoise_c = 1.0\nlatitude_deg = 52.0")
                .map_err(|e| e.to_string())?;
        let weather = Weather::new(&section, None, super::site_start(), 30.0 * 86_400.0, seed)
            .map_err(|e| e.to_string())?;
        let site_id = app
            .site
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .site
            .clone();
        let mut opts = mqtt::MqttSettings {
            keep_alive_s: 10,
            ..mqtt::MqttSettings::new(format!("mqtt://127.0.0.1:{mqtt_port}"))
        }
        .options("phoenix-demo-site")
        .map_err(|e| e.to_string())?;
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, eventloop) = AsyncClient::new(opts, 4096);
        let mut twin = Self {
            servers,
            greenhouse,
            weather,
            loop_max_kw: cfg.loops.first().map_or(0.0, |l| l.max_kw),
            clock,
            app,
            client,
            eventloop: Some(eventloop),
            topics: Topics::new(site_id),
            caps: Arc::default(),
            heatpump,
            heatmeter,
            meter_kwh: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_job: 1,
            summary: DemoSummary::default(),
        };
        twin.admit_starting_workload();
        Ok(twin)
    }

    fn admit_starting_workload(&mut self) {
        let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
        // 56 interactive VMs already running, spread over the servers.
        for k in 0..56 {
            let vcpus = [1u32, 2, 2, 4][k % 4];
            let host = node_id((k * 7) % SERVERS);
            let id = format!("web{k:02}");
            site.vms.insert(
                id.clone(),
                Vm {
                    id,
                    vcpus,
                    mem_gib: f64::from(vcpus) * 2.0,
                    image: Some("ubuntu-24.04".into()),
                    host: Some(host),
                    kind: VmKind::Interactive,
                    load: Some((self.rng.random_range(0.1..0.5_f64) * 100.0).round() / 100.0),
                    work_core_h: None,
                    deadline: None,
                    migratable: k % 10 != 0,
                },
            );
        }
        drop(site);
        for _ in 0..6 {
            self.admit_job();
        }
    }

    /// A render job arrives (as `POST /api/v1/vms` would admit it).
    fn admit_job(&mut self) {
        let now = self.clock.now();
        let id = format!("render{:03}", self.next_job);
        self.next_job += 1;
        let vcpus = [4u32, 8][self.rng.random_range(0..2)];
        let hours = self.rng.random_range(4.0..16.0_f64).round();
        let work =
            (f64::from(vcpus) * hours * self.rng.random_range(0.2..0.5) * 10.0).round() / 10.0;
        let vm = Vm {
            id: id.clone(),
            vcpus,
            mem_gib: f64::from(vcpus) * 2.0,
            image: Some("ubuntu-24.04".into()),
            host: None,
            kind: VmKind::Batch,
            load: None,
            work_core_h: Some(work),
            deadline: Some(now + chrono::Duration::hours(hours as i64)),
            migratable: true,
        };
        self.app
            .site
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .vms
            .insert(id, vm);
    }

    /// Run until `stop`; returns what was achieved.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        print: bool,
        period_s: f64,
    ) -> DemoSummary {
        let mut eventloop = self.eventloop.take().expect("event loop present");
        let caps = self.caps.clone();
        let topics = self.topics.clone();
        let client = self.client.clone();
        let clock = self.clock;
        let mqtt = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe(format!("{}/node/+/cap", topics.root()), QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(TopicKind::NodeCap(node)) = topics.parse(&p.topic) {
                            match decode::<CapCommand>(&p.payload) {
                                Ok(c) => {
                                    let until = clock.now()
                                        + chrono::Duration::milliseconds(
                                            (c.lease_s * 1000.0) as i64,
                                        );
                                    let mut m = caps.lock().unwrap_or_else(|e| e.into_inner());
                                    match c.cap_w {
                                        Some(w) => m.insert(node.to_string(), (w, until)),
                                        None => m.remove(node),
                                    };
                                }
                                Err(e) => {
                                    tracing::warn!(node, error = %e, "Demo agent refused a cap.")
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });

        let started = self.clock.now();
        let mut next = tokio::time::Instant::now();
        let mut last_print = started;
        let mut last_job = started;
        let mut hosts: BTreeMap<String, Option<String>> = BTreeMap::new();
        loop {
            next += self.clock.real(STEP_S);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let now = self.clock.now();
            self.step(now, &mut hosts).await;
            if (now - last_job).num_seconds() >= 7200 {
                last_job = now;
                self.admit_job();
            }
            if print && (now - last_print).num_milliseconds() as f64 / 1000.0 >= period_s {
                last_print = now;
                let site = self.app.site.read().unwrap_or_else(|e| e.into_inner());
                let on = site.nodes.values().filter(|n| n.on).count();
                println!(
                    "{}  heat {:>5.2}/{:>5.2} kWh covered ({:>3.0} %)  servers on {on:>2}/{}  gain vs greedy {:>7.3}  migrations {:>3}  jobs done {:>2}  hottest {:>5.1} °C",
                    now.format("%a %H:%M"),
                    self.summary.heat_delivered_kwh,
                    self.summary.heat_demand_kwh,
                    100.0 * self.summary.heat_delivered_kwh / self.summary.heat_demand_kwh.max(1e-9),
                    site.nodes.len(),
                    site.total_gain(),
                    self.summary.migrations,
                    self.summary.jobs_done,
                    self.summary.max_temp_c,
                );
            }
        }
        mqtt.abort();
        let site = self.app.site.read().unwrap_or_else(|e| e.into_inner());
        self.summary.site_hours = (self.clock.now() - started).num_seconds() as f64 / 3600.0;
        self.summary.plans = site.history.len() as u64;
        self.summary.gain = site.total_gain();
        self.summary
    }

    async fn step(&mut self, now: DateTime<Utc>, hosts: &mut BTreeMap<String, Option<String>>) {
        let dt = STEP_S;
        let (on, vms, grants) = {
            let site = self.app.site.read().unwrap_or_else(|e| e.into_inner());
            let on: BTreeMap<String, bool> =
                site.nodes.iter().map(|(k, n)| (k.clone(), n.on)).collect();
            let grants: BTreeMap<String, f64> = site
                .latest_plan
                .as_ref()
                .map(|p| {
                    p.plan
                        .batch_cores
                        .iter()
                        .map(|(vm, c)| (vm.clone(), c.first().copied().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default();
            (on, site.vms.clone(), grants)
        };
        // Count migrations as the actuator carries them out.
        for (id, vm) in &vms {
            if let Some(Some(prev)) = hosts.get(id) {
                if vm.host.as_deref().is_some_and(|h| h != prev) {
                    self.summary.migrations += 1;
                }
            }
            hosts.insert(id.clone(), vm.host.clone());
        }
        let caps: BTreeMap<String, (f64, DateTime<Utc>)> =
            self.caps.lock().unwrap_or_else(|e| e.into_inner()).clone();

        let mut recovered_kw = 0.0;
        let mut done_jobs = Vec::new();
        let mut work_done: BTreeMap<String, f64> = BTreeMap::new();
        for s in &mut self.servers {
            if !on.get(&s.id).copied().unwrap_or(false) {
                s.temp_c = rc_step(
                    s.temp_c,
                    s.inlet_c,
                    rc_decay(dt, s.r_k_per_w, THERMAL_CAPACITY_J_PER_K),
                );
                recovered_kw += s.recovery * s.off_w / 1000.0;
                s.announced = false;
                continue;
            }
            let mut fixed = 0.0;
            let mut batch: Vec<(&str, f64)> = Vec::new();
            for vm in vms
                .values()
                .filter(|v| v.host.as_deref() == Some(s.id.as_str()))
            {
                match vm.kind {
                    VmKind::Interactive => fixed += f64::from(vm.vcpus) * vm.load.unwrap_or(0.0),
                    VmKind::Batch => {
                        batch.push((&vm.id, grants.get(&vm.id).copied().unwrap_or(0.0)))
                    }
                }
            }
            let batch_cores: f64 = batch.iter().map(|(_, c)| c).sum();
            let demand_u = ((fixed + batch_cores) / s.cores).min(1.0);
            let mut power_w = s.curve.power_w(demand_u);
            let cap = caps
                .get(&s.id)
                .filter(|(_, until)| *until > now)
                .map(|(w, _)| *w);
            // A cap slows batch work first (interactive load is never throttled
            // by the controller's plan; the cap has headroom above it).
            let mut batch_speed = 1.0;
            if let Some(cap_w) = cap {
                if power_w > cap_w {
                    let fixed_w = s.curve.power_w((fixed / s.cores).min(1.0));
                    batch_speed =
                        ((cap_w - fixed_w) / (power_w - fixed_w).max(1e-9)).clamp(0.0, 1.0);
                    power_w = cap_w.max(fixed_w);
                }
            }
            let u = ((fixed + batch_cores * batch_speed) / s.cores).min(1.0);
            s.temp_c = rc_step(
                s.temp_c,
                s.inlet_c + s.r_k_per_w * power_w,
                rc_decay(dt, s.r_k_per_w, THERMAL_CAPACITY_J_PER_K),
            );
            self.summary.max_temp_c = self.summary.max_temp_c.max(s.temp_c);
            recovered_kw += s.recovery * power_w / 1000.0;
            for (vm, cores) in batch {
                *work_done.entry(vm.to_string()).or_default() += cores * batch_speed * dt / 3600.0;
            }
            if !s.announced {
                let _ = self
                    .client
                    .publish(
                        self.topics.node_status(&s.id),
                        QoS::AtLeastOnce,
                        true,
                        STATUS_ONLINE,
                    )
                    .await;
                s.announced = true;
            }
            let t = Telemetry {
                ts: now,
                cpu_util: u,
                cpu_temp_c: Some((s.temp_c * 10.0).round() / 10.0),
                power_w: Some((power_w * 10.0).round() / 10.0),
                energy_j: None,
                cap_w: cap,
                mem_used_gib: None,
                mem_total_gib: None,
                thermal_guard: false,
                gpus: vec![],
                vms: None,
            };
            if let Ok(body) = serde_json::to_string(&t) {
                let _ = self
                    .client
                    .publish(
                        self.topics.node_telemetry(&s.id),
                        QoS::AtMostOnce,
                        false,
                        body,
                    )
                    .await;
            }
        }
        // Batch work advances; finished jobs leave.
        {
            let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
            for (id, done) in work_done {
                if let Some(v) = site.vms.get_mut(&id) {
                    let left = v.work_core_h.unwrap_or(0.0) - done;
                    if left <= 1e-6 {
                        done_jobs.push(id.clone());
                    } else {
                        v.work_core_h = Some(left);
                    }
                }
            }
            for id in &done_jobs {
                site.vms.remove(id);
            }
        }
        self.summary.jobs_done += done_jobs.len();

        // The greenhouse: what it needs, what the servers give, the boiler
        // the rest; its demand and forecast go out over MQTT.
        let t_s = (now - super::site_start()).num_milliseconds() as f64 / 1000.0;
        let w = self.weather.at(t_s);
        let hour = f64::from(now.hour()) + f64::from(now.minute()) / 60.0;
        let setpoint = self.greenhouse.setpoint_c(hour);
        let demand_kw = self
            .greenhouse
            .demand_w(dt, setpoint, w.outdoor_c, w.ghi_w_per_m2)
            / 1000.0;
        let delivered_kw = recovered_kw.min(demand_kw).min(self.loop_max_kw);
        self.greenhouse.step(
            dt,
            demand_kw * 1000.0,
            setpoint,
            w.outdoor_c,
            w.ghi_w_per_m2,
        );
        self.summary.heat_demand_kwh += demand_kw * dt / 3600.0;
        self.summary.heat_delivered_kwh += delivered_kw * dt / 3600.0;
        self.meter_kwh += delivered_kw * dt / 3600.0;

        let forecast: Vec<f64> = (0..8)
            .map(|k| {
                let ts = t_s + f64::from(k) * 900.0;
                let wk = self.weather.at(ts);
                let h = (hour + f64::from(k) * 0.25).rem_euclid(24.0);
                let kw = self.greenhouse.steady_demand_w(
                    self.greenhouse.setpoint_c(h),
                    wk.outdoor_c,
                    wk.ghi_w_per_m2,
                ) / 1000.0;
                (kw * 1000.0).round() / 1000.0
            })
            .collect();
        let demand = HeatDemand {
            ts: now,
            demand_kw: (demand_kw * 1000.0).round() / 1000.0,
            forecast_kw: Some(forecast),
            step_s: Some(900.0),
            heat_value_per_kwh: None,
            supply_temp_c: Some(40.0),
        };
        if let Ok(body) = serde_json::to_string(&demand) {
            let _ = self
                .client
                .publish(
                    self.topics.consumer_demand("gh1"),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await;
        }

        // Facility registers the bridge polls.
        {
            let mut m = self.heatmeter.lock().unwrap_or_else(|e| e.into_inner());
            m.set_input_f32(0, delivered_kw as f32);
            m.set_input_f32(2, self.meter_kwh as f32);
        }
        {
            let mut hp = self.heatpump.lock().unwrap_or_else(|e| e.into_inner());
            let sp = hp.holding_i16_x10(0);
            let supply = if sp > 0.0 { sp } else { 40.0 };
            hp.set_input_i16_x10(0, supply);
        }
    }
}
