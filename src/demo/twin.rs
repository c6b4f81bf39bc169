//! The demo's live site: servers that play their agents over MQTT, a
//! greenhouse that publishes its heat demand, and the heat pump and heat
//! meter registers — stepped on the controller's accelerated clock.
//!
//! The twin learns what the controller decided the way a real site does:
//! caps and per-VM CPU quotas arrive over MQTT (`node/<id>/cap`); VM
//! placements, migrations and power on/off arrive at its hypervisor
//! ([`Hypervisor`], the controller's actuator backend); its workload is
//! admitted with `POST /api/v1/vms`. Each VM runs at what its quota, the
//! server's cores and its power cap allow, and the agents report the CPU
//! time it used. A batch VM runs until the controller, having counted its
//! work done, removes it. The twin never sees the controller's state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use chrono::{DateTime, Timelike, Utc};
use protocol::payloads::HeatDemand;
use protocol::topics::{Topics, STATUS_OFFLINE, STATUS_ONLINE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, QoS};
use scheduler::curve::PowerCurve;
use scheduler::model::{Vm, VmKind};
use simulator::physics::greenhouse::Greenhouse;
use simulator::physics::server::{rc_decay, rc_step};
use simulator::scenario::WeatherSection;
use simulator::weather::Weather;
use tokio::sync::watch;

use super::agents::{self, CapState, Caps, Reading};
use super::device::SharedBank;
use super::http::{Api, SiteView};
use super::hypervisor::{Guest, Host, Hypervisor, Power};
use super::DemoSummary;
use crate::controller::config::ControllerConfig;

/// Servers in the demo site.
pub const SERVERS: usize = 24;
/// Site seconds per twin step.
const STEP_S: f64 = 60.0;
/// Twin steps between two reads of the controller's API.
const API_EVERY_STEPS: u32 = 5;
/// Site seconds between two batch job arrivals.
const JOB_EVERY_S: i64 = 7200;
/// The agents' thermal guard (the real agent's defaults): it engages at the
/// limit less this margin, °C…
const GUARD_MARGIN_C: f64 = 5.0;
/// …releases this much further below, °C…
const GUARD_HYSTERESIS_C: f64 = 5.0;
/// …and meanwhile holds the server at this share of its idle-to-peak range.
const GUARD_FRACTION: f64 = 0.3;
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

/// The physics of one server (its VMs and power state are the
/// hypervisor's).
struct Server {
    id: String,
    curve: PowerCurve,
    cores: f64,
    mem_gib: f64,
    r_k_per_w: f64,
    inlet_c: f64,
    recovery: f64,
    off_w: f64,
    temp_limit_c: f64,
    temp_c: f64,
    /// Whether its agent's thermal guard holds its power down.
    guard: bool,
    /// Whether its agent's retained status is `online`.
    announced: bool,
}

/// The live twin.
pub struct Twin {
    servers: Vec<Server>,
    hypervisor: Hypervisor,
    api: Api,
    greenhouse: Greenhouse,
    weather: Weather,
    loop_max_kw: f64,
    clock: super::Clock,
    client: AsyncClient,
    eventloop: Option<rumqttc::EventLoop>,
    topics: Topics,
    caps: Caps,
    heatpump: SharedBank,
    heatmeter: SharedBank,
    meter_kwh: f64,
    rng: ChaCha8Rng,
    next_job: u32,
    /// VMs admitted by the controller and defined in the hypervisor.
    admitted: BTreeSet<String>,
    /// Admitted VMs the controller's API did not list at the last read.
    missing: BTreeSet<String>,
    /// The controller's API as last read.
    view: SiteView,
    summary: DemoSummary,
}

impl std::fmt::Debug for Twin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twin")
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

/// Where the twin meets the rest of the demo.
#[derive(Debug, Clone)]
pub struct Links {
    /// Site id (MQTT topics).
    pub site: String,
    /// The broker's port on 127.0.0.1.
    pub mqtt_port: u16,
    /// The controller's API.
    pub api: SocketAddr,
    /// The heat pump's registers.
    pub heatpump: SharedBank,
    /// The heat meter's registers.
    pub heatmeter: SharedBank,
}

impl Twin {
    /// Build the twin of the servers in `cfg` (all on, no VM yet), meeting
    /// the rest of the demo at `links`. It has no handle on the
    /// controller: it learns what it decides over MQTT, through its
    /// hypervisor ([`Twin::hypervisor`]) and the HTTP API.
    pub fn new(
        cfg: &ControllerConfig,
        links: Links,
        clock: super::Clock,
        seed: u64,
    ) -> Result<Self, String> {
        let mut servers = Vec::new();
        let mut hosts = BTreeMap::new();
        for s in &cfg.servers {
            let curve = s
                .curve_w()
                .and_then(|c| PowerCurve::new(&c))
                .ok_or_else(|| format!("server {}: no power curve", s.id))?;
            hosts.insert(
                s.id.clone(),
                Host {
                    power: Power::On,
                    mem_gib: s.mem_gib,
                },
            );
            servers.push(Server {
                id: s.id.clone(),
                curve,
                cores: f64::from(s.cores),
                mem_gib: s.mem_gib,
                r_k_per_w: s.r_k_per_w,
                inlet_c: s.inlet_c,
                recovery: s.recovery,
                off_w: s.off_w,
                temp_limit_c: s.temp_limit_c,
                temp_c: s.inlet_c,
                guard: false,
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
        let mut opts = mqtt::MqttSettings {
            keep_alive_s: 10,
            ..mqtt::MqttSettings::new(format!("mqtt://127.0.0.1:{}", links.mqtt_port))
        }
        .options("phoenix-demo-site")
        .map_err(|e| e.to_string())?;
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, eventloop) = AsyncClient::new(opts, 4096);
        Ok(Self {
            servers,
            hypervisor: Hypervisor::new(
                hosts,
                cfg.images
                    .iter()
                    .map(|i| (i.id.clone(), i.shared_mem_gib))
                    .collect(),
                clock,
                seed,
            ),
            api: Api::new(links.api),
            greenhouse,
            weather,
            loop_max_kw: cfg.loops.first().map_or(0.0, |l| l.max_kw),
            clock,
            client,
            eventloop: Some(eventloop),
            topics: Topics::new(links.site),
            caps: Caps::default(),
            heatpump: links.heatpump,
            heatmeter: links.heatmeter,
            meter_kwh: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_job: 1,
            admitted: BTreeSet::new(),
            missing: BTreeSet::new(),
            view: SiteView::default(),
            summary: DemoSummary::default(),
        })
    }

    /// The twin's hypervisor and power switches: the controller's actuator
    /// backend.
    pub fn hypervisor(&self) -> Hypervisor {
        self.hypervisor.clone()
    }

    /// Admit `vm` through the controller's API and define it in the
    /// hypervisor once admitted.
    async fn admit(&mut self, vm: Vm) {
        match self.api.admit(&vm).await {
            Ok(()) => {
                self.admitted.insert(vm.id.clone());
                self.hypervisor.define(vm);
            }
            Err(e) => {
                self.summary.admissions_refused += 1;
                tracing::warn!(vm = %vm.id, error = %e, "Demo workload not admitted.");
            }
        }
    }

    /// The starting workload: 56 interactive VMs and 6 render jobs. The
    /// first 24 interactive VMs already run, one per server, as they did
    /// before Phoenix came: the controller adopts them from its hosts'
    /// reports (and consolidates them). The others are admitted with
    /// `POST /api/v1/vms`, and the controller places them.
    pub async fn admit_starting_workload(&mut self) {
        for k in 0..56 {
            let vcpus = [1u32, 2, 2, 4][k % 4];
            let vm = Vm {
                id: format!("web{k:02}"),
                vcpus,
                mem_gib: f64::from(vcpus) * 2.0,
                image: Some("ubuntu-24.04".into()),
                host: None,
                kind: VmKind::Interactive,
                load: Some((self.rng.random_range(0.1..0.5_f64) * 100.0).round() / 100.0),
                work_core_h: None,
                deadline: None,
                migratable: k % 10 != 0,
            };
            if k < SERVERS {
                self.hypervisor.running(vm, &node_id(k));
            } else {
                self.admit(vm).await;
            }
        }
        for _ in 0..6 {
            self.admit_job().await;
        }
    }

    /// A render job arrives.
    async fn admit_job(&mut self) {
        let now = self.clock.now();
        let id = format!("render{:03}", self.next_job);
        self.next_job += 1;
        let vcpus = [4u32, 8][self.rng.random_range(0..2)];
        let hours = self.rng.random_range(4.0..16.0_f64).round();
        let work =
            (f64::from(vcpus) * hours * self.rng.random_range(0.2..0.5) * 10.0).round() / 10.0;
        let vm = Vm {
            id,
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
        self.admit(vm).await;
    }

    /// Read the controller's API: its figures for the summary, and the VMs
    /// it no longer has (counted done, or removed) — missing from two reads
    /// in a row, so a record the controller drops and at once takes back
    /// from its host's report is not lost — which the hypervisor destroys.
    async fn read_api(&mut self) {
        match self.api.site().await {
            Ok(view) => {
                // VMs the controller adopted from its hosts' reports.
                for id in &view.vms {
                    if !self.admitted.contains(id) && self.hypervisor.has(id) {
                        self.admitted.insert(id.clone());
                    }
                }
                let missing: BTreeSet<String> = self
                    .admitted
                    .iter()
                    .filter(|id| !view.vms.contains(*id))
                    .cloned()
                    .collect();
                let gone: Vec<String> = missing.intersection(&self.missing).cloned().collect();
                for id in &gone {
                    self.admitted.remove(id);
                }
                let done = gone.iter().filter(|id| view.finished.contains(*id)).count();
                self.hypervisor.destroy(&gone);
                self.summary.jobs_done += done;
                self.missing = missing;
                self.view = view;
            }
            Err(e) => tracing::warn!(error = %e, "Demo could not read the controller's API."),
        }
    }

    /// Run until `stop`; returns what was achieved.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        print: bool,
        period_s: f64,
    ) -> DemoSummary {
        let eventloop = self.eventloop.take().expect("event loop present");
        let mqtt = tokio::spawn(agents::serve(
            eventloop,
            self.client.clone(),
            self.topics.clone(),
            self.caps.clone(),
            self.clock,
        ));
        let started = self.clock.now();
        let mut next = tokio::time::Instant::now();
        let mut last_print = started;
        let mut last_job = started;
        let mut steps = 0u32;
        loop {
            next += self.clock.real(STEP_S);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let now = self.clock.now();
            self.step(now).await;
            steps += 1;
            if steps % API_EVERY_STEPS == 0 {
                self.read_api().await;
            }
            if (now - last_job).num_seconds() >= JOB_EVERY_S {
                last_job = now;
                self.admit_job().await;
            }
            if print && (now - last_print).num_milliseconds() as f64 / 1000.0 >= period_s {
                last_print = now;
                self.print_line(now);
            }
        }
        mqtt.abort();
        self.read_api().await;
        self.summary.site_hours = (self.clock.now() - started).num_seconds() as f64 / 3600.0;
        self.close_summary();
        self.summary
    }

    /// Fill the summary from the hypervisor's counts and the API's figures.
    fn close_summary(&mut self) {
        let counts = self.hypervisor.lock().counts;
        self.summary.migrations = counts.migrations;
        self.summary.migrations_failed = counts.migrations_failed;
        self.summary.power_ons = counts.power_ons;
        self.summary.power_offs = counts.power_offs;
        self.summary.plans = self.view.plans;
        self.summary.gain = self.view.gain;
        self.summary.failed_actions = self.view.failed_actions;
    }

    fn print_line(&mut self, now: DateTime<Utc>) {
        self.close_summary();
        let on = {
            let w = self.hypervisor.lock();
            w.hosts.values().filter(|h| h.power != Power::Off).count()
        };
        let s = &self.summary;
        println!(
            "{}  heat {:>5.2}/{:>5.2} kWh covered ({:>3.0} %)  servers on {on:>2}/{}  gain vs greedy {:>7.3}  migrations {:>3} ({} failed)  jobs done {:>2}  hottest {:>5.1} °C",
            now.format("%a %H:%M"),
            s.heat_delivered_kwh,
            s.heat_demand_kwh,
            100.0 * s.heat_delivered_kwh / s.heat_demand_kwh.max(1e-9),
            self.servers.len(),
            s.gain,
            s.migrations,
            s.migrations_failed,
            s.jobs_done,
            s.max_temp_c,
        );
    }

    /// One step of the servers: each runs its VMs and reports (or, off or
    /// booting, does not); returns the heat recovered, kW.
    async fn step_servers(&mut self, now: DateTime<Utc>) -> f64 {
        let dt = STEP_S;
        self.hypervisor.finish_boots(now);
        let caps: BTreeMap<String, CapState> =
            self.caps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out: Vec<(String, bool, String)> = Vec::new();
        let mut recovered_kw = 0.0;
        {
            let mut world = self.hypervisor.lock();
            for s in &mut self.servers {
                let power = world.hosts.get(&s.id).map_or(Power::Off, |h| h.power);
                let cap = caps.get(&s.id);
                let power_w = match power {
                    Power::Off => s.off_w,
                    Power::Booting(_) => s.curve.power_w(0.0),
                    Power::On => {
                        // A VM migrating in already has its (idle) cgroup here.
                        let incoming: Vec<Guest> = world
                            .guests
                            .values()
                            .filter(|g| g.migrating_to.as_deref() == Some(s.id.as_str()))
                            .map(|g| Guest {
                                cpu_s: 0.0,
                                cpu_util: 0.0,
                                ..g.clone()
                            })
                            .collect();
                        let mut guests: Vec<&mut Guest> = world
                            .guests
                            .values_mut()
                            .filter(|g| g.host.as_deref() == Some(s.id.as_str()))
                            .collect();
                        let guard_w = s.thermal_guard();
                        let (power_w, util) = run_vms(s, &mut guests, cap, guard_w, now, dt);
                        let reading = Reading {
                            power_w,
                            cpu_util: util,
                            temp_c: s.temp_c,
                            cap_w: effective_cap(cap.and_then(|c| c.cap_at(now)), guard_w),
                            thermal_guard: s.guard,
                            mem_used_gib: guests.iter().map(|g| g.vm.mem_gib).sum(),
                            mem_total_gib: s.mem_gib,
                        };
                        let shown: Vec<&Guest> =
                            guests.iter().map(|g| &**g).chain(&incoming).collect();
                        let t = agents::telemetry(now, &reading, &shown, cap);
                        if let Ok(body) = serde_json::to_string(&t) {
                            out.push((self.topics.node_telemetry(&s.id), false, body));
                        }
                        power_w
                    }
                };
                let target_c =
                    s.inlet_c + s.r_k_per_w * if power == Power::Off { 0.0 } else { power_w };
                s.temp_c = rc_step(
                    s.temp_c,
                    target_c,
                    rc_decay(dt, s.r_k_per_w, THERMAL_CAPACITY_J_PER_K),
                );
                if power != Power::Off {
                    self.summary.max_temp_c = self.summary.max_temp_c.max(s.temp_c);
                }
                recovered_kw += s.recovery * power_w / 1000.0;
                // Status first: `online` before the first telemetry after a
                // boot, `offline` once switched off (as its last will).
                let up = power == Power::On;
                if up != s.announced {
                    let status = if up { STATUS_ONLINE } else { STATUS_OFFLINE };
                    out.insert(
                        0,
                        (self.topics.node_status(&s.id), true, status.to_string()),
                    );
                    s.announced = up;
                }
            }
        }
        for (topic, retain, body) in out {
            let qos = if retain {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            if let Err(e) = self.client.publish(topic, qos, retain, body).await {
                tracing::warn!(error = %e, "Demo agent message not sent.");
            }
        }
        recovered_kw
    }

    async fn step(&mut self, now: DateTime<Utc>) {
        let dt = STEP_S;
        let recovered_kw = self.step_servers(now).await;

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

/// The tighter of the controller's cap and the thermal guard's.
fn effective_cap(cap_w: Option<f64>, guard_w: Option<f64>) -> Option<f64> {
    match (cap_w, guard_w) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Server {
    /// The agent's thermal guard, as the real agent's: engaged at the limit
    /// less a margin, released below it less a hysteresis; while engaged,
    /// the power it holds the server to, W.
    fn thermal_guard(&mut self) -> Option<f64> {
        if self.temp_c >= self.temp_limit_c - GUARD_MARGIN_C {
            self.guard = true;
        } else if self.temp_c < self.temp_limit_c - GUARD_MARGIN_C - GUARD_HYSTERESIS_C {
            self.guard = false;
        }
        let (idle_w, peak_w) = (self.curve.power_w(0.0), self.curve.power_w(1.0));
        self.guard
            .then_some(idle_w + GUARD_FRACTION * (peak_w - idle_w))
    }
}

/// Run the VMs on a server that is on for `dt` site seconds: each asks for
/// its cores (an interactive VM its vCPUs × load, a batch VM all its vCPUs),
/// no more than its CPU quota; the server shares out its cores when asked
/// for more; a power cap slows batch work first (the plan's cap has
/// headroom above the interactive load). Their CPU counters advance by what
/// they ran. Returns the server's power (W) and CPU use (0–1).
fn run_vms(
    s: &Server,
    guests: &mut [&mut Guest],
    cap: Option<&CapState>,
    guard_w: Option<f64>,
    now: DateTime<Utc>,
    dt: f64,
) -> (f64, f64) {
    let asked: Vec<f64> = guests
        .iter()
        .map(|g| {
            let vcpus = f64::from(g.vm.vcpus);
            let want = match g.vm.kind {
                VmKind::Interactive => vcpus * g.vm.load.unwrap_or(0.0).clamp(0.0, 1.0),
                VmKind::Batch => vcpus,
            };
            match cap.and_then(|c| c.quota(&g.vm.id, now)) {
                Some(q) => want.min(q.clamp(0.0, vcpus)),
                None => want,
            }
        })
        .collect();
    let total: f64 = asked.iter().sum();
    let share = if total > s.cores {
        s.cores / total
    } else {
        1.0
    };
    let is_batch: Vec<bool> = guests.iter().map(|g| g.vm.kind == VmKind::Batch).collect();
    let sum = |batch: bool| -> f64 {
        asked
            .iter()
            .zip(&is_batch)
            .filter(|(_, b)| **b == batch)
            .map(|(a, _)| a * share)
            .sum()
    };
    let (fixed, batch) = (sum(false), sum(true));
    let mut power_w = s.curve.power_w(((fixed + batch) / s.cores).min(1.0));
    let mut batch_speed = 1.0;
    if let Some(cap_w) = effective_cap(cap.and_then(|c| c.cap_at(now)), guard_w) {
        if power_w > cap_w {
            let fixed_w = s.curve.power_w((fixed / s.cores).min(1.0));
            batch_speed = ((cap_w - fixed_w) / (power_w - fixed_w).max(1e-9)).clamp(0.0, 1.0);
            power_w = cap_w.max(fixed_w);
        }
    }
    for ((g, a), b) in guests.iter_mut().zip(&asked).zip(&is_batch) {
        let ran = a * share * if *b { batch_speed } else { 1.0 };
        g.cpu_s += ran * dt;
        g.cpu_util = ran / f64::from(g.vm.vcpus.max(1));
    }
    let util = ((fixed + batch * batch_speed) / s.cores).min(1.0);
    (power_w, util)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn guest(id: &str, vcpus: u32, kind: VmKind, load: Option<f64>) -> Guest {
        Guest {
            vm: Vm {
                id: id.into(),
                vcpus,
                mem_gib: 2.0,
                image: None,
                host: Some("n1".into()),
                kind,
                load,
                work_core_h: (kind == VmKind::Batch).then_some(10.0),
                deadline: None,
                migratable: true,
            },
            host: Some("n1".into()),
            migrating_to: None,
            cpu_s: 0.0,
            cpu_util: 0.0,
        }
    }

    fn server() -> Server {
        Server {
            id: "n1".into(),
            curve: PowerCurve::new(&[
                100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0, 170.0, 180.0, 190.0, 200.0,
            ])
            .expect("a curve"),
            cores: 8.0,
            mem_gib: 32.0,
            r_k_per_w: 0.3,
            inlet_c: 24.0,
            recovery: 0.85,
            off_w: 5.0,
            temp_limit_c: 80.0,
            temp_c: 24.0,
            guard: false,
            announced: true,
        }
    }

    #[test]
    fn a_batch_vm_runs_at_its_quota_and_without_one_at_its_vcpus() {
        let now = Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0).unwrap();
        let s = server();
        let mut a = guest("a", 4, VmKind::Batch, None);
        let mut b = guest("b", 2, VmKind::Batch, None);
        let mut web = guest("w", 2, VmKind::Interactive, Some(0.5));
        let cap = CapState {
            cap_w: None,
            quotas: BTreeMap::from([("a".to_string(), 1.5)]),
            until: now + chrono::Duration::seconds(600),
            seq: 1,
            epoch: 1,
        };
        let (_, util) = run_vms(
            &s,
            &mut [&mut a, &mut b, &mut web],
            Some(&cap),
            None,
            now,
            60.0,
        );
        assert!((a.cpu_s - 1.5 * 60.0).abs() < 1e-9, "{}", a.cpu_s);
        assert!((b.cpu_s - 2.0 * 60.0).abs() < 1e-9, "{}", b.cpu_s);
        assert!((web.cpu_s - 1.0 * 60.0).abs() < 1e-9, "{}", web.cpu_s);
        assert!((util - 4.5 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn a_power_cap_slows_batch_work_and_not_the_interactive_load() {
        let now = Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0).unwrap();
        let s = server();
        let mut a = guest("a", 6, VmKind::Batch, None);
        let mut web = guest("w", 2, VmKind::Interactive, Some(1.0));
        let cap = CapState {
            cap_w: Some(150.0),
            quotas: BTreeMap::new(),
            until: now + chrono::Duration::seconds(600),
            seq: 1,
            epoch: 1,
        };
        let (power_w, _) = run_vms(&s, &mut [&mut a, &mut web], Some(&cap), None, now, 60.0);
        assert!(power_w <= 150.0 + 1e-9);
        assert!((web.cpu_s - 120.0).abs() < 1e-9);
        assert!(a.cpu_s > 0.0 && a.cpu_s < 6.0 * 60.0, "{}", a.cpu_s);
    }

    #[test]
    fn the_thermal_guard_holds_a_hot_server_down_until_it_has_cooled() {
        let now = Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0).unwrap();
        let mut s = server();
        s.temp_c = 76.0;
        let guard_w = s.thermal_guard().expect("engaged at 75 °C and above");
        assert!((guard_w - (100.0 + 0.3 * 100.0)).abs() < 1e-9);
        let mut a = guest("a", 8, VmKind::Batch, None);
        let (power_w, _) = run_vms(&s, &mut [&mut a], None, Some(guard_w), now, 60.0);
        assert!(power_w <= guard_w + 1e-9, "{power_w}");
        s.temp_c = 72.0;
        assert!(s.thermal_guard().is_some(), "held within the hysteresis");
        s.temp_c = 69.0;
        assert!(s.thermal_guard().is_none(), "released below 70 °C");
    }
}
