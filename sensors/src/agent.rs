//! The agent loop (DESIGN.md §4.2): telemetry out, caps in, a lease, the
//! thermal guard, drift re-application, retained `online`/`offline` status
//! with a last will, and a clean restore on shutdown.
//!
//! [`run`] wires a [`Node`] (blocking hardware calls, run in
//! `spawn_blocking`) and the pure [`Controller`] to an MQTT broker through
//! rumqttc. It returns when the `shutdown` future completes, after every
//! original value has been restored and `offline` published.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::payloads::{decode, CapCommand, Payload, Telemetry};
use protocol::topics::{valid_level, Topics, STATUS_OFFLINE, STATUS_ONLINE};
use rumqttc::{AsyncClient, Event, LastWill, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::AgentConfig;
use crate::control::{Arrival, CommandOutcome, ControlConfig, Controller, Event as ControlEvent};
use crate::node::{ApplyReport, Node, Readings};
use crate::state::{StateError, StateFile};

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest MQTT packet accepted or sent (a cap for 64 GPUs is ~2 KiB; one
/// naming 1024 VMs with 128-byte ids ~140 KiB; telemetry of 1024 VMs
/// ~180 KiB).
const MAX_PACKET_BYTES: usize = 256 * 1024;
/// How long shutdown waits for `offline` to reach the broker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The broker URL, the credentials or the TLS files cannot be used
    /// (the message names the file or variable, never the password).
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttSetupError),
    /// A site or node id that cannot be a topic level.
    #[error("invalid {what} id {id:?}: must be non-empty, ≤ 128 bytes, without / + # or NUL")]
    Id {
        /// `site` or `node`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The state file of a previous run could not be used; the originals
    /// it holds are unknown, so the agent refuses to touch anything.
    #[error("{0} (fix or remove it once the machine's limits are known to be right)")]
    State(#[from] StateError),
    /// A blocking hardware task panicked.
    #[error("hardware task failed: {0}")]
    Task(String),
}

/// What the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (TLS).
    pub mqtt_url: String,
    /// MQTT username, password source, CA and client certificate
    /// (DESIGN.md §4.7); the default is none (anonymous, system CAs).
    pub mqtt_security: mqtt::MqttSecurity,
    /// Site id.
    pub site: String,
    /// Node id.
    pub node: String,
    /// Configuration.
    pub config: AgentConfig,
    /// Log what would be written, write nothing (no state file either).
    pub dry_run: bool,
}

impl AgentOptions {
    /// The state file path (from the config).
    pub fn state_file(&self) -> PathBuf {
        self.config.agent.state_file.clone()
    }
}

/// Counters of what the agent did, shared with the caller.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Cap commands accepted.
    pub caps_accepted: AtomicU64,
    /// Cap commands refused as malformed or out of range.
    pub bad_payloads: AtomicU64,
    /// Cap commands ignored as repeated or older `seq`.
    pub duplicates: AtomicU64,
    /// Well-formed cap commands refused as not fresh or not bounded
    /// (retained, stale, from the future, lease too long, old epoch).
    pub caps_refused: AtomicU64,
    /// Odd cgroup entries skipped (each counted once).
    pub vm_entries_skipped: AtomicU64,
    /// Leases that ran out.
    pub lease_expiries: AtomicU64,
    /// Times the thermal guard engaged.
    pub guard_engagements: AtomicU64,
    /// Limits re-applied after another party changed them.
    pub drift_reapplied: AtomicU64,
    /// Telemetry messages queued.
    pub telemetry_sent: AtomicU64,
    /// MQTT connections established (ConnAck received).
    pub connections: AtomicU64,
}

impl AgentStats {
    /// Read one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// Split `mqtt://HOST[:PORT]` (port 1883) or `mqtts://HOST[:PORT]` (port
/// 8883); credentials in the URL are refused.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), AgentError> {
    let u = mqtt::parse_url(url)?;
    Ok((u.host, u.port))
}

async fn blocking<T: Send + 'static>(
    node: &Arc<Mutex<Node>>,
    f: impl FnOnce(&mut Node) -> T + Send + 'static,
) -> Result<T, AgentError> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = node.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(|e| AgentError::Task(e.to_string()))
}

/// Run the agent until `shutdown` completes; then restore every original
/// value, publish `offline` and return.
pub async fn run(
    opts: AgentOptions,
    node: Node,
    stats: Arc<AgentStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    for (what, id) in [("site", &opts.site), ("node", &opts.node)] {
        if !valid_level(id) {
            return Err(AgentError::Id {
                what,
                id: id.clone(),
            });
        }
    }
    // Built first: a bad URL or an unreadable password or CA file stops
    // the agent before it touches any limit.
    let mut mqtt = mqtt::MqttSettings {
        url: opts.mqtt_url.clone(),
        keep_alive_s: 5,
        security: opts.mqtt_security.clone(),
    }
    .options(format!("phoenix-agent-{}-{}", opts.site, opts.node))?;
    let node_id = opts.node.clone();
    let topics = Topics::new(opts.site.clone());
    let cap_topic = topics.node_cap(&node_id);
    let status_topic = topics.node_status(&node_id);
    let telemetry_topic = topics.node_telemetry(&node_id);
    let node = Arc::new(Mutex::new(node));

    // Originals first: a previous run's file wins, then ours is written
    // before any cap.
    let state = StateFile::new(opts.state_file());
    if !opts.dry_run {
        if let Some(previous) = state.load()? {
            let rep = blocking(&node, move |n| n.adopt_originals(&previous)).await?;
            warn!(
                state_file = %state.path().display(),
                writes = rep.writes,
                errors = rep.errors.len(),
                "A previous run did not restore its limits; restored them from its state file."
            );
        }
        let originals = blocking(&node, |n| n.originals().clone()).await?;
        state.save(&originals)?;
        let st = state.clone();
        blocking(&node, move |n| n.set_state_file(Some(st))).await?;
    }
    let caps = blocking(&node, |n| n.capabilities()).await?;
    info!(node = %node_id, cpu = ?caps.cpu, gpus = caps.gpus.len(), dry_run = opts.dry_run, "Agent started.");
    let mut controller = Controller::new(ControlConfig::from(&opts.config), caps);

    mqtt.set_clean_session(true);
    mqtt.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    mqtt.set_last_will(LastWill::new(
        &status_topic,
        STATUS_OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, eventloop) = AsyncClient::new(mqtt, 64);
    let (cap_tx, mut cap_rx) = mpsc::channel::<(Vec<u8>, bool)>(256);
    let poller = tokio::spawn(poll_loop(
        eventloop,
        client.clone(),
        cap_topic.clone(),
        status_topic.clone(),
        cap_tx,
        stats.clone(),
    ));

    let control_period = Duration::from_secs_f64(opts.config.agent.control_interval_s);
    let telemetry_period = Duration::from_secs_f64(opts.config.agent.telemetry_interval_s);
    let mut control_tick = tokio::time::interval(control_period);
    control_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut telemetry_tick = tokio::time::interval(telemetry_period);
    telemetry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A first sample, so utilisation and power have a baseline.
    let mut last: Readings = blocking(&node, |n| n.read(Instant::now())).await?;
    tokio::pin!(shutdown);

    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some((payload, retained)) = cap_rx.recv() => {
                if handle_cap(&payload, retained, &mut controller, &stats, &node_id) {
                    if let Err(e) = actuate(&node, &controller, &stats).await {
                        break Err(e);
                    }
                }
            }
            _ = control_tick.tick() => {
                match blocking(&node, |n| n.read(Instant::now())).await {
                    Ok(r) => last = r,
                    Err(e) => break Err(e),
                }
                stats
                    .vm_entries_skipped
                    .fetch_add(last.vm_skipped_new as u64, Ordering::Relaxed);
                let now = Instant::now();
                for ev in [controller.tick(now), controller.on_temperatures(&last.thermals)].into_iter().flatten() {
                    log_event(&ev, &node_id, &stats);
                }
                if let Err(e) = actuate(&node, &controller, &stats).await {
                    break Err(e);
                }
            }
            _ = telemetry_tick.tick() => {
                let t = telemetry(&last, &controller);
                match t.validate().map(|()| serde_json::to_vec(&t)) {
                    Ok(Ok(bytes)) => {
                        if client.try_publish(&telemetry_topic, QoS::AtMostOnce, false, bytes).is_ok() {
                            bump(&stats.telemetry_sent);
                        }
                    }
                    Ok(Err(e)) => warn!(error = %e, "Telemetry not encodable."),
                    Err(e) => warn!(error = %e, "Telemetry failed its own validation; not sent."),
                }
            }
        }
    };

    // Restore, whatever ended the loop.
    let rep = blocking(&node, |n| n.restore()).await;
    match &rep {
        Ok(r) if r.errors.is_empty() => {
            info!(node = %node_id, writes = r.writes, "Original limits restored.");
            if !opts.dry_run {
                if let Err(e) = state.remove() {
                    warn!(error = %e, "State file not removed.");
                }
            }
        }
        Ok(r) => {
            error!(node = %node_id, errors = ?r.errors, "Some original limits could not be restored; the state file is kept for the next start.")
        }
        Err(e) => {
            error!(node = %node_id, error = %e, "Restoring original limits failed; the state file is kept for the next start.")
        }
    }
    let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, STATUS_OFFLINE);
    let _ = client.try_disconnect();
    if tokio::time::timeout(FLUSH_TIMEOUT, poller).await.is_err() {
        warn!("Broker unreachable at shutdown; the last will reports offline.");
    }
    info!(node = %node_id, "Agent stopped.");
    result.and(rep.map(|_| ()))
}

/// Decode and judge one cap payload; `true` when the targets may have changed.
fn handle_cap(
    payload: &[u8],
    retained: bool,
    controller: &mut Controller,
    stats: &AgentStats,
    node: &str,
) -> bool {
    let cmd = match decode::<CapCommand>(payload) {
        Ok(c) => c,
        Err(e) => {
            let count = bump(&stats.bad_payloads);
            warn!(node, reason = %e, count, "Cap command refused; nothing changed.");
            return false;
        }
    };
    let now = Instant::now();
    if let Some(ev) = controller.tick(now) {
        log_event(&ev, node, stats);
    }
    let arrival = Arrival {
        at: now,
        wall: chrono::Utc::now(),
        retained,
    };
    match controller.on_command(arrival, &cmd) {
        CommandOutcome::Accepted {
            seq,
            cap_w,
            clamped,
        } => {
            bump(&stats.caps_accepted);
            info!(
                node,
                seq,
                cap_w,
                requested_w = cmd.cap_w,
                clamped,
                lease_s = cmd.lease_s,
                epoch = cmd.epoch,
                vm_quotas = cmd.vm_cpu_cores.as_ref().map_or(0, |v| v.len()),
                "Power cap accepted."
            );
            true
        }
        CommandOutcome::Refused { seq, reason } => {
            let count = bump(&stats.caps_refused);
            warn!(node, seq, reason = %reason, count, "Cap command refused; nothing changed.");
            false
        }
        CommandOutcome::Ignored { seq, last_seq } => {
            bump(&stats.duplicates);
            debug!(node, seq, last_seq, "Cap command with an old seq ignored.");
            false
        }
    }
}

fn log_event(ev: &ControlEvent, node: &str, stats: &AgentStats) {
    match ev {
        ControlEvent::LeaseExpired { seq } => {
            bump(&stats.lease_expiries);
            warn!(
                node,
                seq, "Lease expired without renewal; back to the safe default."
            );
        }
        ControlEvent::GuardEngaged {
            source,
            temp_c,
            limit_c,
        } => {
            bump(&stats.guard_engagements);
            warn!(node, source = %source, temp_c, limit_c, "Thermal guard engaged; capping harder.");
        }
        ControlEvent::GuardReleased { headroom_c } => {
            info!(node, headroom_c, "Thermal guard released.");
        }
    }
}

async fn actuate(
    node: &Arc<Mutex<Node>>,
    controller: &Controller,
    stats: &AgentStats,
) -> Result<(), AgentError> {
    let targets = controller.targets();
    let t = targets.clone();
    let rep: ApplyReport = blocking(node, move |n| n.apply(&t)).await?;
    if !rep.drifted.is_empty() {
        stats
            .drift_reapplied
            .fetch_add(rep.drifted.len() as u64, Ordering::Relaxed);
    }
    if rep.writes > 0 {
        info!(cpu_w = targets.cpu_w, gpu_w = ?targets.gpu_w, cap_w = targets.server_cap_w, guard = targets.guard, writes = rep.writes, "Power cap applied.");
    }
    Ok(())
}

fn telemetry(r: &Readings, controller: &Controller) -> Telemetry {
    let targets = controller.targets();
    Telemetry {
        ts: chrono::Utc::now(),
        cpu_util: r.cpu_util.unwrap_or(0.0),
        cpu_temp_c: r.cpu_temp_c,
        power_w: r.power_w,
        energy_j: r.power_w.map(|_| r.energy_j),
        cap_w: targets.server_cap_w,
        mem_used_gib: r.mem_used_gib,
        mem_total_gib: r.mem_total_gib,
        thermal_guard: targets.guard,
        gpus: r.gpus.clone(),
        vms: r.vms.clone(),
    }
}

/// Drive rumqttc's event loop: resubscribe and publish `online` on every
/// ConnAck, forward cap payloads, back off (growing, capped) on errors, end
/// after our Disconnect went out.
async fn poll_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    cap_topic: String,
    status_topic: String,
    caps: mpsc::Sender<(Vec<u8>, bool)>,
    stats: Arc<AgentStats>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                bump(&stats.connections);
                if let Err(e) = client.try_subscribe(&cap_topic, QoS::AtLeastOnce) {
                    warn!(error = %e, "Subscribing to caps failed.");
                }
                if let Err(e) =
                    client.try_publish(&status_topic, QoS::AtLeastOnce, true, STATUS_ONLINE)
                {
                    warn!(error = %e, "Publishing online failed.");
                }
                info!(topic = %cap_topic, "Connected to the broker; listening for caps.");
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cap_topic => {
                if caps.try_send((p.payload.to_vec(), p.retain)).is_err() {
                    let count = bump(&stats.bad_payloads);
                    warn!(count, "Cap command dropped: too many queued.");
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size_bytes),
            ))) => {
                // rumqttc drops the connection on an oversized packet; the
                // clean session discards it, so it is not redelivered.
                let count = bump(&stats.bad_payloads);
                warn!(
                    size_bytes,
                    max_bytes = MAX_PACKET_BYTES,
                    count,
                    "Oversized MQTT packet refused; nothing changed, reconnecting."
                );
            }
            Err(e) => {
                let error = mqtt::describe_connection_error(&e);
                warn!(%error, retry_in_ms = backoff.as_millis() as u64, "MQTT connection failed or lost; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_are_parsed_with_a_default_port() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1999").unwrap(),
            ("127.0.0.1".into(), 1999)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://broker").unwrap(),
            ("broker".into(), 1883)
        );
        assert_eq!(
            parse_mqtt_url("mqtts://broker").unwrap(),
            ("broker".into(), 8883)
        );
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:port",
            "broker:1883",
            "mqtt://u:p@h",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad}");
        }
    }
}
