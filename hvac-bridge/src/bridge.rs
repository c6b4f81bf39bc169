//! The running bridge: MQTT session, one task per device, the stale check
//! and the read-out server, behind a cloneable [`BridgeHandle`] that is the
//! controller's typed API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::payloads::{
    decode, Climate, HeatDemand, HeatOffer, Payload, Telemetry, WriteResult, WriteStatus,
    MAX_REASON_LEN, MAX_WRITE_POINTS,
};
use protocol::topics::{TopicKind, Topics, STATUS_OFFLINE, STATUS_ONLINE};
use protocol::units::{Celsius, KiloWatts};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{
    role_points, ConsumerConfig, DeviceConfig, DeviceRole, HomeAssistantConfig, SiteConfig,
};
use crate::consumer::{ConsumerTracker, CurrentDemand};
use crate::desired::WriteRequest;
use crate::device::{
    plan_request, split_request, DeviceCommand, DeviceState, DeviceTask, PointValues,
    ResultCallback, WriteAccepted, WriteError, WriteRefused,
};
use crate::server::{self, Figures};
use crate::{BridgeError, CounterSnapshot, Counters};

/// Most consumers tracked at once (ids are taken from topics, so bounded).
const MAX_CONSUMERS: usize = 1000;
/// Most nodes tracked at once for the read-out figures.
const MAX_NODES: usize = 100_000;
/// Most bytes of a refused request echoed in its result; a larger one (or
/// one with more than `MAX_WRITE_POINTS` entries) is answered with an empty
/// `request`, so a result always passes the protocol's validation and
/// never outgrows the MQTT packet limit.
const MAX_ECHO_BYTES: usize = 4096;
/// Telemetry older than this does not count into `it_power_kw`.
const TELEMETRY_FRESH: Duration = Duration::from_secs(120);

/// A heat meter's reading, from its last poll.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMeterReading {
    /// Thermal power, kW.
    pub power: KiloWatts,
    /// Energy counter, kWh.
    pub energy_kwh: f64,
    /// Supply temperature, if the meter has the point.
    pub supply_temp: Option<Celsius>,
    /// Return temperature, if the meter has the point.
    pub return_temp: Option<Celsius>,
    /// Volume flow, m³/h, if the meter has the point.
    pub flow_m3_h: Option<f64>,
    /// When it was polled.
    pub ts: DateTime<Utc>,
}

struct DeviceEntry {
    config: DeviceConfig,
    state: Arc<Mutex<DeviceState>>,
    commands: mpsc::Sender<DeviceCommand>,
}

struct NodeSeen {
    power_w: Option<f64>,
    at: Instant,
    online: bool,
}

struct Shared {
    topics: Topics,
    client: AsyncClient,
    devices: BTreeMap<String, DeviceEntry>,
    consumer_cfg: Vec<ConsumerConfig>,
    consumers: Mutex<BTreeMap<String, ConsumerTracker>>,
    nodes: Mutex<BTreeMap<String, NodeSeen>>,
    counters: Arc<Counters>,
    /// Publishes a request's outcome on `facility/<device>/set/result`.
    on_result: ResultCallback,
    home_assistant: Option<HomeAssistantConfig>,
    stopping: AtomicBool,
    /// Whether the broker has acknowledged the current connection; device
    /// states are not queued while it has not (the next poll after the
    /// reconnection publishes a fresh one).
    connected: Arc<AtomicBool>,
}

/// The cloneable handle to a running bridge: the controller's typed API.
#[derive(Clone)]
pub struct BridgeHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("site", &self.shared.topics.site())
            .finish_non_exhaustive()
    }
}

/// A running bridge. Stop it with [`Bridge::shutdown`] (publishes `offline`).
#[derive(Debug)]
pub struct Bridge {
    handle: BridgeHandle,
    tasks: Vec<JoinHandle<()>>,
    mqtt_task: Option<JoinHandle<()>>,
    modbus_server_addr: Option<SocketAddr>,
}

impl Bridge {
    /// Validate `config`, bind the read-out server (if configured), and start
    /// the MQTT session and the device pollers. Devices that do not answer
    /// at start are retried in the background; only a bad config or a port
    /// that cannot be bound is an error.
    pub async fn start<C>(config: &SiteConfig<C>) -> Result<Self, BridgeError> {
        config.validate()?;
        let topics = Topics::new(config.mqtt.site.clone());
        let mut opts = config.mqtt.options(config.mqtt.client_id())?;
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_clean_session(true);
        opts.set_last_will(LastWill::new(
            topics.bridge_status(),
            STATUS_OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
        let (client, eventloop) = AsyncClient::new(opts, 1024);
        let counters = Arc::new(Counters::default());

        let listener = match &config.modbus_server {
            Some(s) => Some(
                server::bind(s.listen)
                    .await
                    .map_err(|source| BridgeError::Bind {
                        addr: s.listen,
                        source,
                    })?,
            ),
            None => None,
        };
        let modbus_server_addr = listener.as_ref().and_then(|l| l.local_addr().ok());

        let connected = Arc::new(AtomicBool::new(false));
        let on_result = result_publisher(client.clone(), topics.clone());
        let mut device_tasks = Vec::new();
        let mut devices = BTreeMap::new();
        for d in &config.devices {
            let (tx, rx) = mpsc::channel(16);
            let state = Arc::new(Mutex::new(DeviceState::default()));
            devices.insert(
                d.name.clone(),
                DeviceEntry {
                    config: d.clone(),
                    state: state.clone(),
                    commands: tx,
                },
            );
            let client = client.clone();
            let topics = topics.clone();
            let connected = connected.clone();
            device_tasks.push(DeviceTask {
                config: d.clone(),
                state,
                commands: rx,
                counters: counters.clone(),
                on_result: on_result.clone(),
                on_state: Arc::new(move |name, state| {
                    if !connected.load(Ordering::SeqCst) {
                        return;
                    }
                    let body = state.to_json().to_string();
                    if let Err(e) = client.try_publish(
                        topics.facility_state(name),
                        QoS::AtLeastOnce,
                        true,
                        body,
                    ) {
                        debug!(device = %name, error = %e, "State not queued for MQTT.");
                    }
                }),
            });
        }
        let consumers = config
            .consumers
            .iter()
            .map(|c| (c.id.clone(), ConsumerTracker::new(Some(c))))
            .collect();
        let shared = Arc::new(Shared {
            topics,
            client,
            devices,
            consumer_cfg: config.consumers.clone(),
            consumers: Mutex::new(consumers),
            nodes: Mutex::new(BTreeMap::new()),
            counters,
            on_result,
            home_assistant: config.home_assistant.clone().filter(|h| h.enabled),
            stopping: AtomicBool::new(false),
            connected,
        });
        let handle = BridgeHandle { shared };
        let mut tasks: Vec<JoinHandle<()>> = device_tasks
            .into_iter()
            .map(|t| tokio::spawn(t.run()))
            .collect();
        tasks.push(tokio::spawn(stale_check(handle.clone())));
        if let Some(listener) = listener {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = server::serve(listener, Arc::new(move || h.figures())).await {
                    warn!(error = %e, "Modbus read-out server stopped.");
                }
            }));
        }
        let mqtt_task = Some(tokio::spawn(mqtt_loop(eventloop, handle.clone())));
        info!(site = %handle.shared.topics.site(), devices = config.devices.len(), consumers = config.consumers.len(), "Bridge started.");
        Ok(Self {
            handle,
            tasks,
            mqtt_task,
            modbus_server_addr,
        })
    }

    /// The handle (cheap to clone).
    pub fn handle(&self) -> BridgeHandle {
        self.handle.clone()
    }

    /// The address the read-out server is bound to (useful with port 0).
    pub fn modbus_server_addr(&self) -> Option<SocketAddr> {
        self.modbus_server_addr
    }

    /// Restore the points the bridge wrote (`restore_on_exit`), publish
    /// `offline` on `bridge/status`, disconnect, stop every task.
    pub async fn shutdown(mut self) {
        let s = &self.handle.shared;
        s.stopping.store(true, Ordering::SeqCst);
        let restores = s.devices.values().map(|d| async move {
            let (done, rx) = oneshot::channel();
            if d.commands
                .send(DeviceCommand::RestoreAndStop(done))
                .await
                .is_err()
            {
                return;
            }
            // Each restore is one call bounded by the device's timeout.
            let bound =
                Duration::from_millis(d.config.timeout_ms * (d.config.points.len() as u64 + 2));
            if tokio::time::timeout(bound, rx).await.is_err() {
                warn!(device = %d.config.name, "Restoring points took too long; stopping anyway.");
            }
        });
        futures::future::join_all(restores).await;
        let _ = s
            .client
            .publish(
                s.topics.bridge_status(),
                QoS::AtLeastOnce,
                true,
                STATUS_OFFLINE,
            )
            .await;
        let _ = s.client.disconnect().await;
        if let Some(t) = self.mqtt_task.take() {
            if tokio::time::timeout(Duration::from_secs(3), t)
                .await
                .is_err()
            {
                warn!("MQTT session did not close within 3 s.");
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        info!("Bridge stopped.");
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = &self.mqtt_task {
            t.abort();
        }
    }
}

async fn stale_check(handle: BridgeHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let s = &handle.shared;
        let Ok(mut consumers) = s.consumers.lock() else {
            return;
        };
        for (id, c) in consumers.iter_mut() {
            if c.check_stale(now) {
                s.counters.bump(&s.counters.stale_events);
                if c.is_configured() && c.reported_supply_temp_c().is_some() {
                    s.counters.bump(&s.counters.supply_temps_ignored);
                    info!(consumer = %id, "Stale consumer's supply temperature no longer used.");
                }
                warn!(consumer = %id, fallback_kw = c.current(now).demand_kw, "Consumer demand is stale; using the fallback.");
            }
        }
    }
}

/// Publish each write result on `facility/<device>/set/result` (QoS 1, not
/// retained). Queued even while the broker is away, so a result decided
/// then is delivered after the reconnection (within the client's queue).
fn result_publisher(client: AsyncClient, topics: Topics) -> ResultCallback {
    Arc::new(move |device, result| {
        let mut result = result.clone();
        result.reason = result.reason.map(clip_reason);
        let body = match serde_json::to_string(&result) {
            Ok(b) => b,
            Err(e) => {
                warn!(device = %device, error = %e, "Write result not encodable.");
                return;
            }
        };
        let topic = topics.facility_set_result(device);
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, body) {
            warn!(device = %device, error = %e, "Write result not queued for MQTT.");
        }
    })
}

/// `reason` cut to `MAX_REASON_LEN` bytes (on a character boundary), with
/// an ellipsis where cut.
fn clip_reason(reason: String) -> String {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN - '…'.len_utf8();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

/// The request as echoed in a refusal: itself, or empty when too large.
fn echo(request: PointValues) -> PointValues {
    let small = request.len() <= MAX_WRITE_POINTS
        && serde_json::to_string(&request).is_ok_and(|t| t.len() <= MAX_ECHO_BYTES);
    if small {
        request
    } else {
        PointValues::new()
    }
}

async fn mqtt_loop(mut eventloop: EventLoop, handle: BridgeHandle) {
    let s = &handle.shared;
    let mut delay = Duration::from_millis(250);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = Duration::from_millis(250);
                s.connected.store(true, Ordering::SeqCst);
                info!("MQTT connected.");
                handle.on_connect();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => handle.on_publish(&p.topic, &p.payload),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                s.connected.store(false, Ordering::SeqCst);
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
                s.counters.bump(&s.counters.mqtt_errors);
                warn!(error = %mqtt::describe_connection_error(&e), retry_ms = delay.as_millis() as u64, "MQTT connection failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl BridgeHandle {
    /// After every ConnAck: subscribe again (clean session), publish
    /// `online` and the discovery configs. Done in a task with the awaiting
    /// client calls, so a request queue filled while disconnected delays
    /// them instead of dropping them.
    fn on_connect(&self) {
        let handle = self.clone();
        tokio::spawn(async move {
            let s = &handle.shared;
            let t = &s.topics;
            let subscriptions = [
                t.all_facility_set(),
                t.all_consumer_demand(),
                t.all_consumer_climate(),
                t.all_consumer_offer(),
                t.all_node_telemetry(),
                t.all_node_status(),
            ];
            for topic in subscriptions {
                if let Err(e) = s.client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                    warn!(topic = %topic, error = %e, "Subscribe failed.");
                }
            }
            let mut retained = vec![(t.bridge_status(), STATUS_ONLINE.to_string())];
            if let Some(ha) = &s.home_assistant {
                retained.extend(
                    s.devices
                        .values()
                        .map(|d| crate::ha::device_discovery(ha, t, &d.config))
                        .chain(
                            s.consumer_cfg
                                .iter()
                                .map(|c| crate::ha::consumer_discovery(ha, t, &c.id)),
                        )
                        .map(|(topic, payload)| (topic, payload.to_string())),
                );
            }
            for (topic, payload) in retained {
                if let Err(e) = s
                    .client
                    .publish(topic.clone(), QoS::AtLeastOnce, true, payload)
                    .await
                {
                    warn!(topic = %topic, error = %e, "Retained publish failed.");
                }
            }
        });
    }

    fn malformed(&self, topic: &str, error: &dyn std::fmt::Display) {
        let c = &self.shared.counters;
        c.bump(&c.malformed_payloads);
        warn!(topic = %topic, error = %error, "Malformed payload ignored.");
    }

    fn on_publish(&self, topic: &str, payload: &[u8]) {
        let s = &self.shared;
        let now = Instant::now();
        match s.topics.parse(topic) {
            Some(TopicKind::FacilitySet(device)) => self.on_set(device, payload),
            Some(TopicKind::ConsumerDemand(id)) => match decode::<HeatDemand>(payload) {
                Ok(d) => {
                    debug!(consumer = %id, demand_kw = d.demand_kw, "Demand received.");
                    if self.with_tracker(id, |c| c.on_demand(d, now)) == Some(true) {
                        let c = &s.counters;
                        c.bump(&c.supply_temps_ignored);
                        debug!(consumer = %id, "Supply temperature ignored: consumer not in [[consumers]].");
                    }
                }
                Err(e) => self.malformed(topic, &e),
            },
            Some(TopicKind::ConsumerClimate(id)) => match decode::<Climate>(payload) {
                Ok(climate) => match self.with_tracker(id, |c| c.on_climate(&climate, now)) {
                    Some(Some(q)) => {
                        debug!(consumer = %id, demand_kw = q, "Demand estimated from climate.")
                    }
                    _ => debug!(consumer = %id, "Climate ignored: no estimator configured."),
                },
                Err(e) => self.malformed(topic, &e),
            },
            Some(TopicKind::ConsumerOffer(id)) => match decode::<HeatOffer>(payload) {
                Ok(offer) => {
                    self.with_tracker(id, |c| c.offer = Some(offer));
                }
                Err(e) => self.malformed(topic, &e),
            },
            Some(TopicKind::NodeTelemetry(node)) => match decode::<Telemetry>(payload) {
                Ok(t) => self.node_seen(node, Some(t.power_w), None, now),
                Err(e) => self.malformed(topic, &e),
            },
            Some(TopicKind::NodeStatus(node)) => match std::str::from_utf8(payload) {
                Ok(STATUS_ONLINE) => self.node_seen(node, None, Some(true), now),
                Ok(STATUS_OFFLINE) => self.node_seen(node, None, Some(false), now),
                _ => self.malformed(topic, &"status is neither `online` nor `offline`"),
            },
            _ => {}
        }
    }

    /// Run `f` on the tracker of consumer `id`, created with the defaults
    /// if new; `None` when the consumer table is full.
    fn with_tracker<R>(&self, id: &str, f: impl FnOnce(&mut ConsumerTracker) -> R) -> Option<R> {
        let mut m = self.shared.consumers.lock().ok()?;
        if !m.contains_key(id) && m.len() >= MAX_CONSUMERS {
            warn!(consumer = %id, "Too many consumers; message ignored.");
            return None;
        }
        Some(f(m
            .entry(id.to_string())
            .or_insert_with(|| ConsumerTracker::new(None))))
    }

    fn node_seen(
        &self,
        node: &str,
        power_w: Option<Option<f64>>,
        online: Option<bool>,
        now: Instant,
    ) {
        let Ok(mut nodes) = self.shared.nodes.lock() else {
            return;
        };
        if !nodes.contains_key(node) && nodes.len() >= MAX_NODES {
            return;
        }
        let n = nodes.entry(node.to_string()).or_insert(NodeSeen {
            power_w: None,
            at: now,
            online: false,
        });
        if let Some(p) = power_w {
            n.power_w = p;
            n.at = now;
            n.online = true;
        }
        if let Some(o) = online {
            n.online = o;
        }
    }

    /// Answer a request refused by the checks: counted, logged, and
    /// published `refused` with the reason (naming the point).
    fn refuse(
        &self,
        device: &str,
        request: PointValues,
        request_ts: Option<DateTime<Utc>>,
        reason: &WriteRefused,
    ) {
        let s = &self.shared;
        s.counters.bump(&s.counters.writes_refused);
        warn!(device = %device, reason = %reason, "Write refused; nothing written.");
        let result = WriteResult {
            ts: Utc::now(),
            request: echo(request),
            request_ts,
            status: WriteStatus::Refused,
            reason: Some(reason.to_string()),
        };
        (s.on_result)(device, &result);
    }

    /// Check a request for `device`; a refused one is answered here (and
    /// its reason returned).
    fn checked(
        &self,
        device: &str,
        request: PointValues,
        request_ts: Option<DateTime<Utc>>,
    ) -> Result<(&DeviceEntry, WriteRequest), WriteRefused> {
        let planned = match self.shared.devices.get(device) {
            None => Err(WriteRefused::UnknownDevice(device.to_string())),
            Some(entry) => plan_request(&entry.config, &request).map(|w| (entry, w)),
        };
        match planned {
            Ok((entry, writes)) => Ok((
                entry,
                WriteRequest {
                    request,
                    request_ts,
                    writes,
                },
            )),
            Err(e) => {
                self.refuse(device, request, request_ts, &e);
                Err(e)
            }
        }
    }

    fn on_set(&self, device: &str, payload: &[u8]) {
        let (request, request_ts) = match split_request(payload) {
            Ok(r) => r,
            Err(e) => return self.refuse(device, serde_json::Map::new(), None, &e),
        };
        let Ok((entry, request)) = self.checked(device, request, request_ts) else {
            return;
        };
        let tx = entry.commands.clone();
        let device = device.to_string();
        tokio::spawn(async move {
            let cmd = DeviceCommand::Write {
                request,
                reply: None,
            };
            if tx.send(cmd).await.is_err() {
                debug!(device = %device, "Write not queued: the device task has stopped.");
            }
        });
    }

    /// Write `value` to `point` of `device` through the same checks and the
    /// same desired-state path as `facility/<device>/set` (its outcome is
    /// published on `facility/<device>/set/result` too), and wait for the
    /// first answer: [`WriteAccepted::Applied`] once written, or
    /// [`WriteAccepted::Pending`] when the device is down or the point was
    /// written less than `min_write_interval_s` ago — the value is then
    /// written later, unless a newer write or `write_expiry_s` comes first.
    /// Refused requests (checks, or a device exception) are errors.
    pub async fn write(
        &self,
        device: &str,
        point: &str,
        value: f64,
    ) -> Result<WriteAccepted, WriteError> {
        let mut request = serde_json::Map::new();
        request.insert(point.to_string(), serde_json::json!(value));
        let (entry, request) = self.checked(device, request, None)?;
        let (reply, rx) = oneshot::channel();
        entry
            .commands
            .send(DeviceCommand::Write {
                request,
                reply: Some(reply),
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    fn device_with_role(&self, role: DeviceRole) -> Result<&DeviceEntry, BridgeError> {
        self.shared
            .devices
            .values()
            .find(|d| d.config.role == Some(role))
            .ok_or(BridgeError::NoDeviceWithRole(role))
    }

    /// Set the heat pump's supply temperature (point `supply_setpoint_c` of
    /// the device with `role = "heat_pump"`), within its configured bounds,
    /// through [`Self::write`]. While the heat pump is down (or the point
    /// was written less than `min_write_interval_s` ago) this is not an
    /// error: it returns `Ok(WriteAccepted::Pending { .. })` and the value
    /// is written when the device answers again, unless a newer setpoint
    /// or `write_expiry_s` comes first (the final outcome is published on
    /// `facility/<device>/set/result`).
    pub async fn set_supply_temp_c(&self, supply: Celsius) -> Result<WriteAccepted, BridgeError> {
        let name = self
            .device_with_role(DeviceRole::HeatPump)?
            .config
            .name
            .clone();
        self.write(&name, role_points::SUPPLY_SETPOINT_C, supply.get())
            .await
            .map_err(BridgeError::Write)
    }

    /// The heat meter's last reading (device with `role = "heat_meter"`).
    pub fn read_heat_meter(&self) -> Result<HeatMeterReading, BridgeError> {
        let entry = self.device_with_role(DeviceRole::HeatMeter)?;
        let state = entry.state.lock().map(|s| s.clone()).unwrap_or_default();
        let name = &entry.config.name;
        let get = |p: &str| state.values.get(p).map(|v| v.as_f64());
        match (
            state.online,
            get(role_points::POWER_KW),
            get(role_points::ENERGY_KWH),
            state.ts,
        ) {
            (true, Some(power), Some(energy), Some(ts)) => Ok(HeatMeterReading {
                power: KiloWatts(power),
                energy_kwh: energy,
                supply_temp: get(role_points::SUPPLY_C).map(Celsius),
                return_temp: get(role_points::RETURN_C).map(Celsius),
                flow_m3_h: get(role_points::FLOW_M3_H),
                ts,
            }),
            _ => Err(BridgeError::DeviceOffline(name.clone())),
        }
    }

    /// The last polled state of `device`.
    pub fn device_state(&self, device: &str) -> Option<DeviceState> {
        let e = self.shared.devices.get(device)?;
        e.state.lock().ok().map(|s| s.clone())
    }

    /// The demand of consumer `id` as it should be used now (see
    /// [`crate::consumer`] for the estimator and the stale fallback).
    pub fn demand(&self, id: &str) -> Option<CurrentDemand> {
        let m = self.shared.consumers.lock().ok()?;
        m.get(id).map(|c| c.current(Instant::now()))
    }

    /// Every known consumer's demand.
    pub fn demands(&self) -> BTreeMap<String, CurrentDemand> {
        let now = Instant::now();
        self.shared
            .consumers
            .lock()
            .map(|m| m.iter().map(|(k, c)| (k.clone(), c.current(now))).collect())
            .unwrap_or_default()
    }

    /// Validate and publish a heat offer on `consumer/<id>/offer`, retained.
    pub async fn publish_offer(
        &self,
        consumer: &str,
        offer: &HeatOffer,
    ) -> Result<(), BridgeError> {
        if !protocol::topics::valid_level(consumer) {
            return Err(BridgeError::InvalidId(consumer.to_string()));
        }
        offer.validate().map_err(BridgeError::InvalidOffer)?;
        let s = &self.shared;
        let body = serde_json::to_string(offer).map_err(|e| BridgeError::Mqtt(e.to_string()))?;
        s.client
            .publish(
                s.topics.consumer_offer(consumer),
                QoS::AtLeastOnce,
                true,
                body,
            )
            .await
            .map_err(|e| BridgeError::Mqtt(e.to_string()))?;
        self.with_tracker(consumer, |c| c.offer = Some(offer.clone()));
        Ok(())
    }

    /// The counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// The figures the read-out server serves: offers and demands of the
    /// consumers, the heat meter, node telemetry and status seen on the bus,
    /// and the counters.
    pub fn figures(&self) -> Figures {
        let s = &self.shared;
        let now = Instant::now();
        let mut f = Figures::default();
        if let Ok(m) = s.consumers.lock() {
            for c in m.values() {
                f.heat_demand_kw += c.current(now).demand_kw;
                f.heat_offered_kw += c.offer.as_ref().map_or(0.0, |o| o.available_kw);
                f.consumers_stale += u32::from(c.is_stale());
            }
        }
        if let Ok(r) = self.read_heat_meter() {
            f.heat_delivered_kw = r.power.get();
            f.supply_temp_c = r.supply_temp.map_or(0.0, |c| c.get());
            f.return_temp_c = r.return_temp.map_or(0.0, |c| c.get());
        }
        if let Ok(nodes) = s.nodes.lock() {
            for n in nodes.values() {
                if n.online && now.saturating_duration_since(n.at) <= TELEMETRY_FRESH {
                    f.it_power_kw += n.power_w.unwrap_or(0.0) / 1000.0;
                }
                f.servers_on += f64::from(u8::from(n.online));
            }
        }
        f.devices_online = s
            .devices
            .values()
            .filter(|d| d.state.lock().map(|s| s.online).unwrap_or(false))
            .count() as u32;
        let c = self.counters();
        let sat = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        f.modbus_errors = sat(c.modbus_errors);
        f.modbus_exceptions = sat(c.modbus_exceptions);
        f.malformed_payloads = sat(c.malformed_payloads);
        f.writes_refused = sat(c.writes_refused);
        f.writes_applied = sat(c.writes_applied);
        f.writes_pending = sat(c.writes_pending);
        f.writes_expired = sat(c.writes_expired);
        f.writes_refused_by_device = sat(c.writes_refused_by_device);
        f.supply_temps_ignored = sat(c.supply_temps_ignored);
        f.stale_events = sat(c.stale_events);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_clipped_on_a_character_boundary() {
        let long = format!("device `hp` has no point `{}`", "é".repeat(2000));
        let clipped = clip_reason(long);
        assert!(clipped.len() <= MAX_REASON_LEN, "{}", clipped.len());
        assert!(clipped.ends_with('…'));
        assert_eq!(clip_reason("short".into()), "short");
    }

    #[test]
    fn a_large_refused_request_is_echoed_empty() {
        let mut big = PointValues::new();
        big.insert("x".into(), serde_json::json!("y".repeat(MAX_ECHO_BYTES)));
        assert!(echo(big).is_empty());
        let mut small = PointValues::new();
        small.insert("supply_setpoint_c".into(), serde_json::json!(80));
        assert_eq!(echo(small.clone()), small);
    }
}
