//! The controller daemon: the facility bridge in-process, an MQTT session
//! for the agents, the HTTP API, the optional time-series writer, and the
//! control loop that ties them together.
//!
//! The loop is the single owner of the site state: agent messages (from
//! the MQTT session), API requests (with a reply channel) and action results
//! are events it applies to the state and to the state database
//! (`store.rs`); everything else only reads.
//!
//! Every control period: read the consumers' demand from the bridge, plan
//! on a copy of the site state (off the async runtime), commit (database
//! first), and — in `apply` mode, or once an operator approves — carry out
//! the first step: actions through the executor (its own task, `execute.rs`;
//! each journalled before it starts and after it ends), caps with leases to the agents, heat offers to the consumers, the
//! supply setpoint to the heat pump. Nothing here blocks on a peer: a broker
//! restart, a silent node or consumer, a time-series database or Modbus
//! device that is down are logged, counted, and recovered from. A state
//! database that cannot be written stops all actuation (caps are not
//! renewed, so agents fall back to their safe caps when the lease ends)
//! until a write succeeds again; `/readyz` says why.
//!
//! On start the state is loaded from the database: VMs with their hosts,
//! servers' power states, the latest plan and the history; plan ids go on
//! from the last one. An action journalled as intended with no outcome is
//! marked `unknown` and not repeated: the next plan starts from what was
//! recorded (a VM whose placement was interrupted is pending again).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hvac_bridge::consumer::CurrentDemand;
use hvac_bridge::{Bridge, BridgeHandle, SiteConfig};
use protocol::measurements::{self as m, fields as f, Point};
use protocol::topics::{TopicKind, Topics, STATUS_OFFLINE, STATUS_ONLINE};
use protocol::units::Celsius;
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::actuator::{Action, Actuator, Outcome};
use super::api::{self, ApiEvent, ApiRequest, AppError, AppState};
use super::apply;
use super::batch::{self, Meters};
use super::config::{ControllerConfig, Mode};
use super::cycle::{self, PeriodOutcome};
use super::execute::{self, ActionEvent};
use super::inventory::Inventory;
use super::metrics::Metrics;
use super::nodes::{self, CapSequencer};
use super::snapshot::DemandView;
use super::state::{NodeState, PlanStatus, ServerInfo, SiteState};
use super::store::{Store, StoreError};
use super::tariff;
use crate::influx::{self, InfluxSink};

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The site file has no `[controller]` section.
    #[error("the site file has no [controller] section")]
    NoControllerSection,
    /// The `[controller]` section is invalid.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// The state database cannot be opened, read or migrated.
    #[error("controller state: {0}")]
    Store(#[from] StoreError),
    /// The bridge could not start.
    #[error("facility bridge: {0}")]
    Bridge(#[from] hvac_bridge::BridgeError),
    /// The API address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Site time: the wall clock, or an accelerated clock for the demo.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_real: Instant,
    origin: DateTime<Utc>,
    speed: f64,
}

impl Clock {
    /// The wall clock.
    pub fn wall() -> Self {
        Self::accelerated(Utc::now(), 1.0)
    }

    /// Site time starting at `start`, running `speed` times faster than the
    /// wall clock.
    pub fn accelerated(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            origin_real: Instant::now(),
            origin: start,
            speed: speed.max(1e-3),
        }
    }

    /// Site time now.
    pub fn now(&self) -> DateTime<Utc> {
        let sim_s = self.origin_real.elapsed().as_secs_f64() * self.speed;
        self.origin + chrono::Duration::milliseconds((sim_s * 1000.0) as i64)
    }

    /// Real time that `site_s` seconds of site time take.
    pub fn real(&self, site_s: f64) -> Duration {
        Duration::from_secs_f64((site_s / self.speed).max(0.0))
    }
}

/// Handles to a running controller (for the demo and tests).
#[derive(Debug, Clone)]
pub struct Running {
    /// The API's state: the site, metrics, readiness.
    pub app: AppState,
    /// The address the API listens on.
    pub api_addr: SocketAddr,
    /// The bridge's handle.
    pub bridge: BridgeHandle,
    /// The time-series writer, when configured.
    pub influx: Option<InfluxSink>,
}

fn initial_state(site_id: &str, cfg: &ControllerConfig) -> SiteState {
    let mut s = SiteState {
        site: site_id.to_string(),
        ..Default::default()
    };
    for srv in &cfg.servers {
        s.nodes.insert(
            srv.id.clone(),
            NodeState {
                info: ServerInfo {
                    id: srv.id.clone(),
                    cores: srv.cores,
                    mem_gib: srv.mem_gib,
                    temp_limit_c: srv.temp_limit_c,
                    heat_loop: srv.heat_loop.clone(),
                    off_w: srv.off_w,
                },
                // Servers are assumed on until a plan switches them off; one
                // that never reports is stale and planned conservatively.
                on: true,
                online: false,
                stale: false,
                last_seen: None,
                telemetry: None,
            },
        );
    }
    for l in &cfg.loops {
        s.consumers.insert(
            l.consumer.clone(),
            super::state::ConsumerState {
                id: l.consumer.clone(),
                heat_loop: l.id.clone(),
                stale: true,
                last_seen: None,
                demand: None,
                offered_kw: None,
            },
        );
    }
    s
}

/// Agent messages queued for the loop; beyond this they are dropped and
/// counted (`errors_total{source="backlog"}`) so the MQTT session never
/// blocks.
const AGENT_BACKLOG: usize = 16_384;

/// Why an interrupted action is not repeated (the journal's `error`).
const INTERRUPTED: &str = "the controller stopped before this action's outcome was recorded; \
     not repeated: the next plan starts from the recorded state";

/// Load the stored state into `site` (built from the configuration), mark
/// interrupted actions `unknown`, and supersede a plan that was awaiting
/// approval (its snapshot is gone). Returns the last plan id.
fn restore(store: &mut Store, site: &mut SiteState) -> Result<u64, StoreError> {
    let loaded = store.load(site)?;
    for id in &loaded.unknown_servers {
        tracing::warn!(server = %id, "The state database knows a server the configuration does not list; ignored.");
    }
    for (entry, plan, action) in store.unfinished_actions()? {
        store.abandon_action(entry, INTERRUPTED)?;
        tracing::warn!(entry, plan, ?action, "Action interrupted by a restart: its outcome is unknown and it is not repeated blindly.");
    }
    if let Some(rec) = site
        .latest_plan
        .as_mut()
        .filter(|r| r.status == PlanStatus::AwaitingApproval)
    {
        store.supersede_plan(rec.id, Utc::now(), "the controller restarted")?;
        rec.status = PlanStatus::Rejected;
    }
    tracing::info!(
        file = %store.file().display(),
        vms = site.vms.len(),
        placed = site.vms.values().filter(|v| v.host.is_some()).count(),
        servers_on = site.nodes.values().filter(|n| n.on).count(),
        history = site.history.len(),
        last_plan = loaded.last_plan_id,
        "State loaded from the database."
    );
    Ok(loaded.last_plan_id)
}

/// The VM an action moves, if any.
fn action_vm(a: &Action) -> Option<&str> {
    match a {
        Action::Migrate { vm, .. } | Action::Place { vm, .. } => Some(vm),
        Action::PowerOn { .. } | Action::PowerOff { .. } => None,
    }
}

fn demand_view(d: &CurrentDemand) -> DemandView {
    DemandView {
        now_kw: d.demand_kw,
        forecast_kw: d.forecast_kw.clone().unwrap_or_default(),
        forecast_step_s: d.step_s.unwrap_or(0.0),
        heat_value_per_kwh: d.heat_value_per_kwh,
    }
}

/// Start the controller: the bridge, the MQTT session, the API (on
/// `api_listener` when given, else `[controller.api] listen`), the writer and
/// the control loop. Returns once everything runs; the loop stops when
/// `shutdown` turns true, and the returned join handle ends after a clean
/// stop (status `offline`, bridge restored, writer flushed).
pub async fn start(
    site_cfg: SiteConfig<ControllerConfig>,
    clock: Clock,
    api_listener: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Running, tokio::task::JoinHandle<()>), ControllerError> {
    start_with(site_cfg, clock, api_listener, shutdown, None).await
}

/// [`start`], with the actions carried out by `backend` when given (the
/// demo's twin, which plays the hypervisor and the power switches) instead
/// of the `[controller.actuator]` configured.
pub async fn start_with(
    site_cfg: SiteConfig<ControllerConfig>,
    clock: Clock,
    api_listener: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
    backend: Option<Arc<dyn execute::ActuateDyn>>,
) -> Result<(Running, tokio::task::JoinHandle<()>), ControllerError> {
    let cfg = site_cfg
        .controller
        .clone()
        .ok_or(ControllerError::NoControllerSection)?;
    cfg.validate()?;
    let site_id = site_cfg.mqtt.site.clone();
    let mut store = Store::open(&cfg.state_dir)?;
    let mut site = initial_state(&site_id, &cfg);
    let last_plan_id = restore(&mut store, &mut site)?;
    let bridge = Bridge::start(&site_cfg).await?;
    let handle = bridge.handle();

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let token = match (&cfg.api.token, &cfg.api.token_env) {
        (_, Some(var)) => std::env::var(var).ok(),
        (t, None) => t.clone(),
    };
    let app = AppState {
        site: Arc::new(RwLock::new(site)),
        metrics: Arc::new(Metrics::new()),
        token,
        events: events_tx,
        ready: Arc::new(AtomicBool::new(false)),
        fault: Arc::new(RwLock::new(None)),
        tariff: Arc::new(RwLock::new(None)),
        bridge: Some(handle.clone()),
    };

    let listener = match api_listener {
        Some(l) => l,
        None => {
            TcpListener::bind(cfg.api.listen)
                .await
                .map_err(|source| ControllerError::Bind {
                    addr: cfg.api.listen,
                    source,
                })?
        }
    };
    let api_addr = listener
        .local_addr()
        .map_err(|source| ControllerError::Bind {
            addr: cfg.api.listen,
            source,
        })?;
    let router = api::app(app.clone());
    let mut api_shutdown = shutdown.clone();
    let api_task = tokio::spawn(async move {
        let stop = async move {
            let _ = api_shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP API stopped.");
        }
    });
    tracing::info!(addr = %api_addr, "HTTP API and web page listening.");

    let (influx_sink, influx_task) = match &cfg.influx {
        Some(ic) => {
            let (sink, task) = influx::spawn(ic.clone(), shutdown.clone());
            (Some(sink), Some(task))
        }
        None => (None, None),
    };

    let topics = Topics::new(site_id.clone());
    let mut opts = site_cfg
        .mqtt
        .options(format!("phoenix-controller-{site_id}"))
        .map_err(hvac_bridge::BridgeError::from)?;
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    opts.set_clean_session(true);
    opts.set_last_will(LastWill::new(
        topics.controller_status(),
        STATUS_OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, eventloop) = AsyncClient::new(opts, 4096);
    let (agents_tx, agents_rx) = mpsc::channel(AGENT_BACKLOG);
    let mqtt_task = tokio::spawn(mqtt_loop(
        eventloop,
        client.clone(),
        topics.clone(),
        app.clone(),
        agents_tx,
        shutdown.clone(),
    ));
    let horizon_s = cfg.control_period_s * cfg.horizon_steps as f64;
    let tariff_task = tariff::spawn(
        cfg.prices.clone(),
        horizon_s,
        app.tariff.clone(),
        app.metrics.clone(),
        clock,
        shutdown.clone(),
    );

    let running = Running {
        app: app.clone(),
        api_addr,
        bridge: handle.clone(),
        influx: influx_sink.clone(),
    };
    let backend = backend.unwrap_or_else(|| Arc::new(Actuator::new(cfg.actuator.clone())));
    let actuator = Arc::new(execute::Backend(backend));
    let limits = execute::Limits::from_config(&cfg.actuator);
    let (action_tx, action_rx) = mpsc::unbounded_channel();
    let planner = Some(cycle::planner(&cfg));
    let ctl = Loop {
        cfg,
        clock,
        app,
        bridge: handle,
        client,
        topics,
        actuator,
        limits,
        action_tx,
        executing: None,
        journal_open: HashMap::new(),
        settled: None,
        planner,
        meters: Meters::default(),
        inventory: Inventory::default(),
        last_progress: None,
        last_quotas: BTreeMap::new(),
        influx: influx_sink,
        caps: CapSequencer::new(Utc::now().timestamp_millis().max(0) as u64),
        last_caps: BTreeMap::new(),
        store,
        plan_id: last_plan_id,
        pending: None,
    };
    let join = tokio::spawn(async move {
        let mut ctl = ctl;
        ctl.run(events_rx, agents_rx, action_rx, shutdown).await;
        let _ = ctl
            .client
            .publish(
                ctl.topics.controller_status(),
                QoS::AtLeastOnce,
                true,
                STATUS_OFFLINE,
            )
            .await;
        // Give the session a moment to send `offline` before disconnecting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = ctl.client.disconnect().await;
        let _ = mqtt_task.await;
        let _ = tariff_task.await;
        bridge.shutdown().await;
        let _ = api_task.await;
        if let Some(t) = influx_task {
            let _ = t.await;
        }
        tracing::info!("Controller stopped.");
    });
    Ok((running, join))
}

/// The agents' side of MQTT: subscribe on every ConnAck, hand telemetry
/// and status to the loop, back off on errors.
async fn mqtt_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    topics: Topics,
    app: AppState,
    agents: mpsc::Sender<rumqttc::Publish>,
    shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut behind = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                tracing::info!("Controller connected to the MQTT broker.");
                for t in [
                    topics.all_node_telemetry(),
                    topics.all_node_status(),
                    tariff::topic(&topics),
                ] {
                    if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "Subscribing failed.");
                    }
                }
                let _ = client
                    .publish(
                        topics.controller_status(),
                        QoS::AtLeastOnce,
                        true,
                        STATUS_ONLINE,
                    )
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                match agents.try_send(p) {
                    Ok(()) => behind = false,
                    Err(mpsc::error::TrySendError::Full(p)) => {
                        app.metrics.error("backlog");
                        if !behind {
                            tracing::warn!(topic = %p.topic, "Agent messages dropped: the control loop is behind.");
                        }
                        behind = true;
                    }
                    // The loop has stopped: the session ends with it.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if *shutdown.borrow() {
                    return;
                }
                app.metrics.error("mqtt");
                tracing::warn!(error = %mqtt::describe_connection_error(&e), retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

struct Loop {
    cfg: ControllerConfig,
    clock: Clock,
    app: AppState,
    bridge: BridgeHandle,
    client: AsyncClient,
    topics: Topics,
    actuator: Arc<execute::Backend>,
    limits: execute::Limits,
    /// Where the executor reports its actions (received in `run`).
    action_tx: mpsc::UnboundedSender<ActionEvent>,
    /// The executor of the latest plan carried out, while it runs.
    executing: Option<tokio::task::JoinHandle<Vec<(Action, Outcome)>>>,
    /// Journal entries of the actions started and not finished yet.
    journal_open: HashMap<(u64, Action), u64>,
    /// The latest plan made from a settled state (no action in flight, all
    /// finished ones applied) and not carried out yet: only its actions may
    /// start.
    settled: Option<u64>,
    /// The period planner (the optimiser's carry lives in it); `None` only
    /// while a period is being planned.
    planner: Option<scheduler::period::PeriodPlanner>,
    /// The batch VMs' CPU counters, the baseline of the next measurement.
    meters: Meters,
    /// What the hosts reported of their VMs (adoption, vanishing, conflicts,
    /// measured load).
    inventory: Inventory,
    /// When batch progress was last brought up to date.
    last_progress: Option<DateTime<Utc>>,
    /// Per-VM CPU quotas of the plan in force, by host (`vm_cpu_cores`).
    last_quotas: BTreeMap<String, BTreeMap<String, f64>>,
    influx: Option<InfluxSink>,
    caps: CapSequencer,
    /// Caps of the plan in force, re-sent every period to renew the lease.
    last_caps: BTreeMap<String, f64>,
    /// The state database (the loop is its only writer).
    store: Store,
    /// Id of the latest plan made.
    plan_id: u64,
    /// The plan awaiting approval, with its snapshot.
    pending: Option<PeriodOutcome>,
}

impl Loop {
    async fn run(
        &mut self,
        mut api_events: mpsc::UnboundedReceiver<ApiEvent>,
        mut agents: mpsc::Receiver<rumqttc::Publish>,
        mut actions: mpsc::UnboundedReceiver<ActionEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Let agents report once before the first plan (a node that has not
        // reported is stale and frozen in place).
        let warmup = self
            .clock
            .real(self.cfg.node_stale_after_s)
            .min(Duration::from_secs(5));
        let mut next = tokio::time::Instant::now() + warmup;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => {}
                Some(p) = agents.recv() => {
                    self.ingest(&p);
                    continue;
                }
                Some(ev) = api_events.recv() => {
                    self.answer(ev).await;
                    continue;
                }
                Some(ev) = actions.recv() => {
                    self.on_action_event(&ev);
                    continue;
                }
            }
            if *shutdown.borrow() {
                self.stop_actions();
                return;
            }
            // Plan from what the actions finished so far achieved: an executor
            // seen finished has sent all its events, so the drain has them.
            let in_flight = self.executing.as_ref().is_some_and(|h| !h.is_finished());
            while let Ok(ev) = actions.try_recv() {
                self.on_action_event(&ev);
            }
            next += self.clock.real(self.cfg.control_period_s);
            self.settled = (!in_flight).then_some(self.plan_id + 1);
            self.period().await;
        }
    }

    /// Apply one message from the broker (agent telemetry and status, the
    /// retained tariff) to the site state; a
    /// host's VM list lowers its batch VMs' remaining work by the CPU time
    /// they ran.
    fn ingest(&mut self, p: &rumqttc::Publish) {
        if p.topic == tariff::topic(&self.topics) {
            let now = self.clock.now();
            tariff::on_message(&self.cfg.prices, &self.app.metrics, &p.payload, now);
            return;
        }
        let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = nodes::ingest(
            &mut site,
            &self.topics,
            &p.topic,
            &p.payload,
            self.clock.now(),
        ) {
            self.app.metrics.error("payload");
            tracing::warn!(topic = %p.topic, error = %e, "Agent message refused.");
            return;
        }
        let Some(TopicKind::NodeTelemetry(node)) = self.topics.parse(&p.topic) else {
            return;
        };
        let reported = site
            .nodes
            .get(node)
            .and_then(|n| n.telemetry.as_ref())
            .and_then(|t| t.vms.clone());
        let Some(vms) = reported else {
            return;
        };
        let done = self.meters.measure(&mut site, node, &vms);
        self.count_work("measured", &done);
        let open = &self.journal_open;
        let busy = |vm: &str| open.keys().any(|(_, a)| action_vm(a) == Some(vm));
        let now = self.clock.now();
        let ch = self
            .inventory
            .report(&self.cfg.inventory, &mut site, node, &vms, now, &busy);
        if !ch.conflicts.is_empty() {
            self.app.metrics.error("vm_conflict");
            tracing::warn!(vms = ?ch.conflicts, "VMs reported by two hosts at once: frozen in place.");
        }
        site.conflicting_vms = self.inventory.conflicting().clone();
        let mut recorded = Ok(());
        for id in ch.adopted.iter().chain(&ch.updated) {
            if let Some(vm) = site.vms.get(id) {
                recorded = recorded.and(self.store.put_vm(vm));
            }
        }
        for id in &ch.dropped {
            recorded = recorded.and(self.store.remove_vm(id));
        }
        drop(site);
        if let Err(e) = recorded {
            self.store_failed(&e);
        }
    }

    fn count_work(&self, source: &str, done: &[(String, f64)]) {
        let core_h: f64 = done.iter().map(|(_, w)| w).sum();
        if core_h > 0.0 {
            self.app
                .metrics
                .batch_work_core_h
                .get_or_create(&super::metrics::SourceLabel {
                    source: source.to_string(),
                })
                .inc_by(core_h);
        }
    }

    /// Bring batch progress up to date before a plan: estimate the work of
    /// hosts that report no VM list, and take the finished jobs out of the
    /// site (and the database).
    fn progress_batch(&mut self, now: DateTime<Utc>) {
        let elapsed_s = self
            .last_progress
            .map_or(0.0, |t| (now - t).num_milliseconds() as f64 / 1000.0);
        self.last_progress = Some(now);
        let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
        let applied = site
            .latest_plan
            .as_ref()
            .filter(|r| r.status == PlanStatus::Applied)
            .map(|r| r.plan.clone());
        if let Some(plan) = applied {
            let done = batch::estimate(&mut site, &plan, elapsed_s);
            self.count_work("estimated", &done);
        }
        let finished = batch::retire_finished(&mut site, now);
        self.meters.retain_known(&site);
        drop(site);
        for job in finished {
            self.app.metrics.batch_jobs_completed.inc();
            tracing::info!(vm = %job.id, host = ?job.host, on_time = job.on_time, "Batch job done; it leaves the plan.");
            if let Err(e) = self.store.remove_vm(&job.id) {
                self.store_failed(&e);
            }
        }
    }

    /// Answer an API request; an approved plan is carried out after the
    /// answer.
    async fn answer(&mut self, ev: ApiEvent) {
        let ApiEvent { request, reply } = ev;
        let result = self.make_change(&request);
        let ok = result.is_ok();
        let _ = reply.send(result);
        if let (true, ApiRequest::DecidePlan { id, approve }) = (ok, request) {
            if let Some(out) = self.pending.take().filter(|o| o.record.id == id) {
                if approve {
                    tracing::info!(plan = id, "Applying the approved plan.");
                    self.carry_out(&out).await;
                }
            }
        }
    }

    /// Check a request, record it in the database, then apply it to the
    /// state: nothing changes that is not recorded.
    fn make_change(&mut self, request: &ApiRequest) -> Result<(), AppError> {
        let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
        api::check_request(&site, request)?;
        let recorded = match request {
            ApiRequest::AdmitVm(vm) => self.store.put_vm(vm),
            ApiRequest::RemoveVm(id) => self.store.remove_vm(id),
            ApiRequest::DecidePlan { id, approve } => {
                self.store.decide_plan(*id, *approve, self.clock.now())
            }
        };
        if let Err(e) = recorded {
            drop(site);
            self.store_failed(&e);
            return Err(AppError::Unavailable(
                "the change cannot be recorded: the state database does not take writes (see /readyz and the controller's log)".into(),
            ));
        }
        api::apply_request(&mut site, request);
        drop(site);
        self.store_works();
        Ok(())
    }

    /// A write to the state database failed: log, count, mark not ready.
    fn store_failed(&self, e: &StoreError) {
        self.app.metrics.error("store");
        self.app.metrics.state_store_ok.set(0);
        tracing::error!(error = %e, "State database write failed; nothing is carried out and no cap renewed until it works again.");
        *self.app.fault.write().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("the state database cannot be written: {e}"));
    }

    /// A write to the state database succeeded: clear a past fault.
    fn store_works(&self) {
        let mut fault = self.app.fault.write().unwrap_or_else(|e| e.into_inner());
        if fault.take().is_some() {
            tracing::info!("State database takes writes again.");
        }
        self.app.metrics.state_store_ok.set(1);
    }

    /// Whether a state-database fault holds actuation back.
    fn faulted(&self) -> bool {
        self.app
            .fault
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// One control period: plan, commit, and act as the mode says.
    async fn period(&mut self) {
        self.plan_id += 1;
        let plan_id = self.plan_id;
        let now = self.clock.now();
        self.progress_batch(now);
        let demands = self.bridge.demands();
        self.observe_consumers(&demands, now);
        let views: BTreeMap<String, DemandView> = demands
            .iter()
            .map(|(k, d)| (k.clone(), demand_view(d)))
            .collect();
        let read = self
            .app
            .site
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cfg = self.cfg.clone();
        let mut planner = self
            .planner
            .take()
            .unwrap_or_else(|| cycle::planner(&self.cfg));
        let planned = tokio::task::spawn_blocking(move || {
            let out = cycle::plan_period(&cfg, &mut planner, &read, &views, plan_id, now);
            (planner, out)
        })
        .await
        .map(|(planner, out)| {
            self.planner = Some(planner);
            out
        });
        match planned {
            Ok(Ok(out)) => {
                self.report_fallbacks(&out);
                self.app
                    .metrics
                    .batch_jobs_overdue
                    .set(out.overdue.len() as i64);
                if !self.commit(&out) {
                    return;
                }
                self.app.metrics.plans.inc();
                self.app.ready.store(true, Ordering::Relaxed);
                let p = &out.record.plan;
                tracing::info!(
                    plan = plan_id,
                    cost = p.objective.cost,
                    baseline = p.baseline_cost.unwrap_or(f64::NAN),
                    migrations = p.migrations.len(),
                    heat_kw = out.history.delivered_kw,
                    solve_ms = p.solve_ms,
                    "Plan made."
                );
                match self.cfg.mode {
                    Mode::Apply => self.carry_out(&out).await,
                    Mode::Approval => {
                        self.renew_caps(now).await;
                        self.pending = Some(out.clone());
                    }
                    Mode::DryRun => {}
                }
                self.write_points(&out, now);
            }
            Ok(Err(e)) => {
                self.app.metrics.plan_failures.inc();
                tracing::warn!(error = %e, "No plan this period; the previous one stays in force.");
                self.renew_caps(now).await;
            }
            Err(e) => {
                self.app.metrics.plan_failures.inc();
                tracing::error!(error = %e, "Planner task failed.");
            }
        }
    }

    /// Record a period's outcome: in the database first (plan record, the
    /// plan it supersedes, history point, servers, VMs), then in the state.
    /// Returns false (and changes nothing) when the database refuses it.
    fn commit(&mut self, out: &PeriodOutcome) -> bool {
        // The loop is the only writer, so the state read here is the one the
        // commit below changes; readers are not held up by the disk.
        let recorded = {
            let site = self.app.site.read().unwrap_or_else(|e| e.into_inner());
            let superseded = site
                .latest_plan
                .as_ref()
                .filter(|p| p.status == PlanStatus::AwaitingApproval)
                .map(|p| p.id);
            self.store
                .commit_period(&out.record, superseded, &out.history, &site)
        };
        if let Err(e) = recorded {
            self.app.metrics.plan_failures.inc();
            self.store_failed(&e);
            return false;
        }
        {
            let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
            cycle::commit(&mut site, out);
        }
        self.store_works();
        true
    }

    fn observe_consumers(&self, demands: &BTreeMap<String, CurrentDemand>, now: DateTime<Utc>) {
        let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
        for (id, d) in demands {
            if let Some(c) = site.consumers.get_mut(id) {
                c.stale = d.source == hvac_bridge::consumer::DemandSource::Fallback;
                c.last_seen = d
                    .age_s
                    .map(|a| now - chrono::Duration::milliseconds((a * 1000.0) as i64));
                c.demand = Some(protocol::payloads::HeatDemand {
                    ts: now,
                    demand_kw: d.demand_kw,
                    forecast_kw: d.forecast_kw.clone(),
                    step_s: d.step_s,
                    heat_value_per_kwh: d.heat_value_per_kwh,
                    supply_temp_c: d.supply_temp_c,
                });
            }
        }
    }

    /// Log and count the ladder's failed rungs and the overdue batch jobs
    /// of a period that planned.
    fn report_fallbacks(&self, out: &PeriodOutcome) {
        for (rung, e) in &out.fallbacks {
            self.app.metrics.plan_fallbacks.inc();
            tracing::warn!(rung, error = %e, "Rung of the planning ladder failed; trying the next.");
        }
        if !out.overdue.is_empty() {
            tracing::warn!(vms = ?out.overdue, planned_on = out.rung, "Batch VMs can no longer make their deadline; planned against an effective one.");
        }
    }

    /// Apply an event of the executor: its outcome is journalled, and the
    /// state follows what finished (only what succeeded moves a VM or
    /// switches a node); what did not happen is counted and kept for the
    /// page.
    fn on_action_event(&mut self, ev: &ActionEvent) {
        if let ActionEvent::Finished {
            plan_id,
            action,
            outcome,
        } = ev
        {
            self.app.metrics.action(action.kind(), outcome.result());
            if matches!(outcome, Outcome::Failed(_) | Outcome::Refused(_)) {
                self.app.metrics.error("actuator");
            }
            if *outcome == Outcome::Done {
                if let Some(vm) = action_vm(action) {
                    self.inventory.moved(vm, self.clock.now());
                }
            }
            if let Some(entry) = self.journal_open.remove(&(*plan_id, action.clone())) {
                match self.store.journal_finished(entry, outcome) {
                    Ok(()) => self.store_works(),
                    Err(e) => self.store_failed(&e),
                }
            }
        }
        let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
        apply::record_event(&mut site, ev, self.clock.now());
    }

    /// Journal the step's actions as intended, then start the executor on
    /// them — unless the plan was made while earlier actions were in flight
    /// (or some started since): then these are held (counted) and the next
    /// period re-plans from what the earlier ones achieved. When an intent
    /// cannot be recorded, none of the step is carried out.
    fn start_actions(&mut self, out: &PeriodOutcome) {
        let job = execute::Job::new(out.record.id, &out.snapshot, &out.record.plan);
        if self.settled.take() != Some(out.record.id) {
            tracing::warn!(
                plan = out.record.id,
                held = job.actions.len(),
                "Earlier actions were in flight when this plan was made; its actions are held."
            );
            for a in &job.actions {
                self.app.metrics.action(a.kind(), "held");
            }
            return;
        }
        for action in &job.actions {
            match self.store.journal_intended(out.record.id, action) {
                Ok(entry) => {
                    self.journal_open
                        .insert((out.record.id, action.clone()), entry);
                }
                Err(e) => {
                    self.store_failed(&e);
                    self.abandon_journalled(out.record.id);
                    return;
                }
            }
        }
        self.executing = Some(execute::spawn(
            job,
            Arc::clone(&self.actuator),
            Arc::clone(&self.app.site),
            self.limits.clone(),
            self.action_tx.clone(),
        ));
    }

    /// The step could not be journalled in full: the entries it did get are
    /// marked as never started.
    fn abandon_journalled(&mut self, plan_id: u64) {
        let entries: Vec<u64> = self
            .journal_open
            .iter()
            .filter(|((p, _), _)| *p == plan_id)
            .map(|(_, e)| *e)
            .collect();
        self.journal_open.retain(|(p, _), _| *p != plan_id);
        for entry in entries {
            let _ = self.store.abandon_action(
                entry,
                "not started: the rest of its step could not be journalled",
            );
        }
    }

    /// On shutdown: stop actions still running (their commands are killed;
    /// what they did not finish stays `intended` in the journal and is
    /// marked `unknown` at the next start).
    fn stop_actions(&mut self) {
        if let Some(h) = self.executing.take().filter(|h| !h.is_finished()) {
            tracing::warn!("Stopping the actions still running.");
            h.abort();
        }
    }

    /// Carry out the first step of a plan: the actions in their own task,
    /// then caps, offers and the supply setpoint at once.
    async fn carry_out(&mut self, out: &PeriodOutcome) {
        if self.faulted() {
            tracing::warn!(
                plan = out.record.id,
                "Plan not carried out: the state database cannot be written."
            );
            return;
        }
        let now = self.clock.now();
        self.start_actions(out);
        {
            let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
            if let Some(rec) = site.latest_plan.as_mut().filter(|r| r.id == out.record.id) {
                rec.status = PlanStatus::Applied;
            }
        }
        if self.faulted() {
            // Caps and offers wait until the state can be recorded.
            return;
        }
        self.last_caps = apply::caps(&self.cfg, &out.record.plan);
        self.last_quotas = batch::quotas(&out.record.plan);
        self.renew_caps(now).await;
        for (consumer, offer) in apply::offers(&self.cfg, &out.record.plan, now) {
            match self.bridge.publish_offer(&consumer, &offer).await {
                Ok(()) => {
                    let mut site = self.app.site.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = site.consumers.get_mut(&consumer) {
                        c.offered_kw = Some(offer.available_kw);
                    }
                }
                Err(e) => {
                    self.app.metrics.error("mqtt");
                    tracing::warn!(consumer = %consumer, error = %e, "Offer not published.");
                }
            }
        }
        // The heat pump follows the supply temperature the consumers ask for.
        let wanted = self
            .bridge
            .demands()
            .values()
            .filter_map(|d| d.supply_temp_c)
            .fold(None, |acc: Option<f64>, t| {
                Some(acc.map_or(t, |a| a.max(t)))
            });
        if let Some(t) = wanted {
            match self.bridge.set_supply_temp_c(Celsius(t)).await {
                Ok(_) => tracing::info!(supply_c = t, "Heat pump supply setpoint sent."),
                Err(hvac_bridge::BridgeError::NoDeviceWithRole(_)) => {}
                Err(e) => {
                    self.app.metrics.error("modbus");
                    tracing::warn!(error = %e, "Supply setpoint not written.");
                }
            }
        }
    }

    /// Send the caps of the plan in force again, renewing their lease.
    async fn renew_caps(&mut self, now: DateTime<Utc>) {
        if self.faulted() {
            // Leases run out and the agents fall back to their safe caps.
            return;
        }
        let lease_s = self.cfg.lease_s();
        for (node, cap_w) in &self.last_caps {
            let mut cmd = self.caps.command(Some(*cap_w), lease_s, now);
            cmd.vm_cpu_cores = self.last_quotas.get(node).cloned();
            let body = match serde_json::to_string(&cmd) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "Cap command not encodable.");
                    continue;
                }
            };
            if let Err(e) = self
                .client
                .publish(self.topics.node_cap(node), QoS::AtLeastOnce, false, body)
                .await
            {
                self.app.metrics.error("mqtt");
                tracing::warn!(node = %node, error = %e, "Cap not sent.");
            }
        }
    }

    fn write_points(&self, out: &PeriodOutcome, now: DateTime<Utc>) {
        let Some(sink) = &self.influx else {
            return;
        };
        let ts = now.timestamp_nanos_opt().unwrap_or_default();
        let site_id = self.topics.site();
        let plan = &out.record.plan;
        let o = &plan.objective;
        let first = |v: Option<&Vec<f64>>| v.and_then(|v| v.first().copied()).unwrap_or(0.0);
        let on = plan.servers_on.values().filter(|b| **b).count() as i64;
        let mut points = vec![
            Point::new(m::PLAN, ts)
                .tag("site", site_id)
                .tag("solver", plan.solver.clone())
                .float(f::COST, o.cost)
                .float(f::BASELINE_COST, plan.baseline_cost.unwrap_or(f64::NAN))
                .float(f::GAIN, plan.baseline_cost.map_or(f64::NAN, |b| b - o.cost))
                .float(f::LOWER_BOUND, plan.lower_bound.unwrap_or(f64::NAN))
                .float(f::SOLVE_MS, plan.solve_ms)
                .int(f::MIGRATIONS, o.migrations as i64)
                .int(f::SWITCHES, o.switches as i64)
                .int(f::SERVERS_ON, on)
                .float(f::ENERGY_KWH, o.energy_kwh)
                .float(f::HEAT_DELIVERED_KWH, o.heat_delivered_kwh),
            Point::new(m::SITE, ts)
                .tag("site", site_id)
                .float(f::IT_POWER_KW, out.history.it_power_kw)
                .float(
                    f::ELECTRICITY_PRICE_PER_KWH,
                    out.snapshot
                        .electricity_price_per_kwh
                        .first()
                        .copied()
                        .unwrap_or(f64::NAN),
                )
                .int(f::SERVERS_ON, on)
                .int(f::VMS, out.snapshot.vms.len() as i64),
        ];
        for l in &out.snapshot.loops {
            points.push(
                Point::new(m::LOOP, ts)
                    .tag("site", site_id)
                    .tag("loop", l.id.clone())
                    .float(f::HEAT_DELIVERED_KW, first(plan.heat_kw.get(&l.id)))
                    .float(
                        f::HEAT_DEMAND_KW,
                        l.demand_kw.first().copied().unwrap_or(0.0),
                    )
                    .float(f::HEAT_OFFERED_KW, first(plan.heat_kw.get(&l.id))),
            );
        }
        let site = self.app.site.read().unwrap_or_else(|e| e.into_inner());
        for (id, c) in &site.consumers {
            points.push(
                Point::new(m::CONSUMER, ts)
                    .tag("site", site_id)
                    .tag("consumer", id.clone())
                    .float(
                        f::DEMAND_KW,
                        c.demand.as_ref().map_or(f64::NAN, |d| d.demand_kw),
                    )
                    .float(f::DELIVERED_KW, c.offered_kw.unwrap_or(f64::NAN)),
            );
        }
        for (id, n) in &site.nodes {
            let t = n.telemetry.as_ref();
            let vms = site
                .vms
                .values()
                .filter(|v| v.host.as_deref() == Some(id))
                .count() as i64;
            let mut p = Point::new(m::SERVER, ts)
                .tag("site", site_id)
                .tag("node", id.clone())
                .float(f::POWER_W, t.and_then(|t| t.power_w).unwrap_or(f64::NAN))
                .float(f::CPU_UTIL, t.map_or(f64::NAN, |t| t.cpu_util))
                .float(f::TEMP_C, t.and_then(|t| t.cpu_temp_c).unwrap_or(f64::NAN))
                .float(
                    f::CAP_W,
                    self.last_caps.get(id).copied().unwrap_or(f64::NAN),
                )
                .int(f::ON, i64::from(n.on))
                .int(f::VMS, vms);
            if let Some(l) = &n.info.heat_loop {
                p = p.tag("loop", l.clone());
            }
            points.push(p);
        }
        sink.push_all(&points);
    }
}
