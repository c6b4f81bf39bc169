//! One facility device: the poller and the write path.
//!
//! Each device runs as one task that owns its [`ModbusLink`], so requests to
//! a device never overlap. Every `poll_ms` it reads the coalesced blocks of
//! [`crate::config::read_plan`], decodes the points and publishes the state;
//! between polls it serves write requests from its queue. What may be
//! written is decided before anything reaches the device, by
//! [`plan_request`]: only points marked `writable`, only within `min`/`max`,
//! only values the register can hold — a request with any bad entry is
//! refused whole and nothing is written.
//!
//! A checked request becomes the point's wanted value
//! ([`crate::desired::DesiredState`]): written at once when the device
//! answers and the point's `min_write_interval_s` has passed, else kept
//! (`pending`) and written at the first poll that allows it — unless a
//! newer write to the point, or `write_expiry_s`, comes first. Every
//! outcome goes to the result callback, published on
//! `facility/<device>/set/result`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::payloads::{WriteResult, WriteStatus};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::{read_plan, DeviceConfig, PointConfig};
use crate::desired::{Answer, DesiredState, RequestId, Wait, WriteRequest};
use crate::modbus::{LinkError, ModbusLink, Values};
use crate::registers::{EncodeError, ReadBlock, Table};
use crate::Counters;

/// A polled point value: a number (scaled) for registers, a boolean for
/// coils and discrete inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PointValue {
    /// Register value, engineering units.
    Number(f64),
    /// Coil or discrete input.
    Bool(bool),
}

impl PointValue {
    /// The value as a number (booleans as 0/1).
    pub fn as_f64(self) -> f64 {
        match self {
            PointValue::Number(v) => v,
            PointValue::Bool(b) => f64::from(u8::from(b)),
        }
    }
}

/// The last known state of a device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    /// Whether the last poll got an answer (values or exceptions).
    pub online: bool,
    /// Points read by the last poll.
    pub values: BTreeMap<String, PointValue>,
    /// When the last poll finished.
    pub ts: Option<DateTime<Utc>>,
    /// What went wrong in the last poll, if anything.
    pub error: Option<String>,
}

impl DeviceState {
    /// The retained `facility/<device>/state` payload:
    /// `{point: value, …, "online": bool, "ts": RFC 3339}`; an offline device
    /// carries no point values (old values are not presented as current).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if self.online {
            for (k, v) in &self.values {
                map.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
            }
        }
        map.insert("online".into(), self.online.into());
        if let Some(ts) = self.ts {
            map.insert("ts".into(), ts.to_rfc3339().into());
        }
        if let Some(e) = &self.error {
            map.insert("error".into(), e.clone().into());
        }
        serde_json::Value::Object(map)
    }
}

/// Why a write was refused before reaching the device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteRefused {
    /// No such device in the config.
    #[error("no device `{0}`")]
    UnknownDevice(String),
    /// No such point on the device.
    #[error("device `{device}` has no point `{point}`")]
    UnknownPoint {
        /// Device.
        device: String,
        /// Point.
        point: String,
    },
    /// The point is not marked writable.
    #[error("point `{0}` is read-only")]
    ReadOnly(String),
    /// The value is outside the configured bounds.
    #[error("point `{point}`: {value} is outside [{min}, {max}]")]
    OutOfBounds {
        /// Point.
        point: String,
        /// Requested value.
        value: f64,
        /// Configured minimum.
        min: f64,
        /// Configured maximum.
        max: f64,
    },
    /// The value has the wrong JSON type.
    #[error("point `{point}`: {problem}")]
    BadValue {
        /// Point.
        point: String,
        /// What is wrong.
        problem: String,
    },
    /// The value does not fit the register.
    #[error("point `{point}`: {source}")]
    Encode {
        /// Point.
        point: String,
        /// Codec error.
        source: EncodeError,
    },
    /// The payload is not a JSON object of point values.
    #[error("malformed set payload: {0}")]
    Malformed(String),
}

/// One write, checked and encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    /// Point name.
    pub point: String,
    /// Engineering value requested.
    pub value: f64,
    /// What goes on the wire.
    pub op: WriteOp,
}

/// The Modbus operation of a [`PlannedWrite`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// FC 6 / FC 16 at this address.
    Registers(u16, Vec<u16>),
    /// FC 5 at this address.
    Coil(u16, bool),
}

/// Check and encode one write of `value` to `point` of `device`.
pub fn plan_write(
    device: &DeviceConfig,
    point: &str,
    value: &serde_json::Value,
) -> Result<PlannedWrite, WriteRefused> {
    let p: &PointConfig = device
        .points
        .iter()
        .find(|p| p.name == point)
        .ok_or_else(|| WriteRefused::UnknownPoint {
            device: device.name.clone(),
            point: point.to_string(),
        })?;
    if !p.writable {
        return Err(WriteRefused::ReadOnly(point.to_string()));
    }
    let bad = |problem: &str| WriteRefused::BadValue {
        point: point.to_string(),
        problem: problem.to_string(),
    };
    if p.table == Table::Coil {
        let on = match value {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) if n.as_f64() == Some(0.0) => false,
            serde_json::Value::Number(n) if n.as_f64() == Some(1.0) => true,
            _ => return Err(bad("a coil takes true/false or 0/1")),
        };
        return Ok(PlannedWrite {
            point: point.to_string(),
            value: f64::from(u8::from(on)),
            op: WriteOp::Coil(p.address, on),
        });
    }
    let v = value.as_f64().ok_or_else(|| bad("not a number"))?;
    let (min, max) = (p.min.unwrap_or(f64::NAN), p.max.unwrap_or(f64::NAN));
    if !(v >= min && v <= max) {
        return Err(WriteRefused::OutOfBounds {
            point: point.to_string(),
            value: v,
            min,
            max,
        });
    }
    let words = p
        .encoding()
        .expect("register point")
        .encode(v)
        .map_err(|source| WriteRefused::Encode {
            point: point.to_string(),
            source,
        })?;
    Ok(PlannedWrite {
        point: point.to_string(),
        value: v,
        op: WriteOp::Registers(p.address, words),
    })
}

/// A request's `{point: value, …}`, as received.
pub type PointValues = serde_json::Map<String, serde_json::Value>;

/// A `facility/<device>/set` payload (`{point: value, …}`, optionally with a
/// `ts`) split into the request (without `ts`) and the requester's `ts` (a
/// `ts` that is not RFC 3339 is ignored, as before).
pub fn split_request(payload: &[u8]) -> Result<(PointValues, Option<DateTime<Utc>>), WriteRefused> {
    let mut map: PointValues =
        serde_json::from_slice(payload).map_err(|e| WriteRefused::Malformed(e.to_string()))?;
    let ts = map
        .remove("ts")
        .and_then(|v| {
            v.as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        })
        .map(|t| t.with_timezone(&Utc));
    Ok((map, ts))
}

/// Check every entry of a request: all are valid or the request is refused.
pub fn plan_request(
    device: &DeviceConfig,
    request: &PointValues,
) -> Result<Vec<PlannedWrite>, WriteRefused> {
    if request.len() > protocol::payloads::MAX_WRITE_POINTS {
        return Err(WriteRefused::Malformed(format!(
            "more than {} points",
            protocol::payloads::MAX_WRITE_POINTS
        )));
    }
    let writes: Vec<PlannedWrite> = request
        .iter()
        .map(|(k, v)| plan_write(device, k, v))
        .collect::<Result<_, _>>()?;
    if writes.is_empty() {
        return Err(WriteRefused::Malformed("no point to write".into()));
    }
    Ok(writes)
}

/// Check a whole `facility/<device>/set` payload (`{point: value, …}`,
/// optionally with a `ts`): all entries are valid or the request is refused.
pub fn plan_writes(
    device: &DeviceConfig,
    payload: &[u8],
) -> Result<Vec<PlannedWrite>, WriteRefused> {
    plan_request(device, &split_request(payload)?.0)
}

/// Decode the values of one block into the points it covers.
pub fn decode_block(
    device: &DeviceConfig,
    block: &ReadBlock,
    values: &Values,
    out: &mut BTreeMap<String, PointValue>,
) {
    for p in device.points.iter().filter(|p| {
        p.table == block.table
            && p.address >= block.start
            && u32::from(p.address) + u32::from(p.width()) <= block.end()
    }) {
        let off = usize::from(p.address - block.start);
        let v = match values {
            Values::Bits(bits) => bits.get(off).map(|b| PointValue::Bool(*b)),
            Values::Words(words) => words
                .get(off..off + usize::from(p.width()))
                .zip(p.encoding())
                .map(|(w, e)| PointValue::Number(e.decode(w))),
        };
        if let Some(v) = v {
            out.insert(p.name.clone(), v);
        }
    }
}

/// Why a write that passed the checks did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Refused by the checks; nothing was sent.
    #[error("refused: {0}")]
    Refused(#[from] WriteRefused),
    /// The device could not be reached (inside the device task only: a
    /// request that meets this stays pending).
    #[error("device `{device}` unreachable: {source}")]
    Link {
        /// Device.
        device: String,
        /// Link error.
        source: LinkError,
    },
    /// The device answered with an exception.
    #[error("device `{device}` refused point `{point}`: {exception}")]
    Exception {
        /// Device.
        device: String,
        /// Point.
        point: String,
        /// The exception, as text.
        exception: String,
    },
    /// Dropped before it was written (superseded or past `write_expiry_s`).
    #[error("expired: {0}")]
    Expired(String),
    /// The bridge is shutting down.
    #[error("the bridge is stopped")]
    Stopped,
}

/// A write the device task took on: written, or kept as the wanted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteAccepted {
    /// Written to the device.
    Applied,
    /// Kept as the wanted value (the device is down, or the point was
    /// written less than `min_write_interval_s` ago); it is written later
    /// unless a newer write to the point or `write_expiry_s` comes first.
    /// The final outcome appears on `facility/<device>/set/result`.
    Pending {
        /// Why it waits.
        reason: String,
    },
}

/// The typed caller's answer channel.
pub(crate) type Reply = oneshot::Sender<Result<WriteAccepted, WriteError>>;

pub(crate) enum DeviceCommand {
    /// A checked request; `reply` (typed API) gets its first answer.
    Write {
        request: WriteRequest,
        reply: Option<Reply>,
    },
    /// Write back the values points had before the bridge first wrote them
    /// (points with `restore_on_exit`), answer how many were restored, and
    /// stop; open requests are answered `expired`.
    RestoreAndStop(oneshot::Sender<usize>),
}

/// What a device task reports after each poll.
pub(crate) type StateCallback = Arc<dyn Fn(&str, &DeviceState) + Send + Sync>;
/// Where a device task sends the outcome of each request (device name and
/// result), to be published on `facility/<device>/set/result`.
pub(crate) type ResultCallback = Arc<dyn Fn(&str, &WriteResult) + Send + Sync>;

/// The task behind one device.
pub(crate) struct DeviceTask {
    pub config: DeviceConfig,
    pub state: Arc<Mutex<DeviceState>>,
    pub commands: mpsc::Receiver<DeviceCommand>,
    pub counters: Arc<Counters>,
    pub on_state: StateCallback,
    pub on_result: ResultCallback,
}

/// The running device task: the link, the desired state and the callers
/// waiting for a first answer.
struct Runner {
    task: DeviceTask,
    link: ModbusLink,
    plan: Vec<ReadBlock>,
    desired: DesiredState,
    replies: BTreeMap<RequestId, Reply>,
    /// Values of restorable points before the bridge first wrote them.
    originals: BTreeMap<String, serde_json::Value>,
    /// Whether the last poll (or write) got an answer.
    reachable: bool,
}

impl DeviceTask {
    pub(crate) async fn run(self) {
        let d = &self.config;
        let mut tick = tokio::time::interval(Duration::from_millis(d.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut r = Runner {
            link: ModbusLink::new(&d.address, d.unit, Duration::from_millis(d.timeout_ms)),
            plan: read_plan(d),
            desired: DesiredState::new(
                d.name.clone(),
                Duration::from_secs_f64(d.write_expiry_s),
                Duration::from_secs_f64(d.min_write_interval_s),
            ),
            replies: BTreeMap::new(),
            originals: BTreeMap::new(),
            reachable: false,
            task: self,
        };
        let d = &r.task.config;
        info!(device = %d.name, address = %d.address, blocks = r.plan.len(), "Polling device.");
        loop {
            tokio::select! {
                _ = tick.tick() => r.on_tick().await,
                cmd = r.task.commands.recv() => match cmd {
                    Some(DeviceCommand::Write { request, reply }) => r.on_request(request, reply).await,
                    Some(DeviceCommand::RestoreAndStop(done)) => {
                        let n = r.stop().await;
                        let _ = done.send(n);
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

impl Runner {
    /// Poll; drop expired requests; write what is due.
    async fn on_tick(&mut self) {
        self.poll().await;
        for a in self.desired.expire(Instant::now()) {
            self.answer(a, None);
        }
        if self.flush().await {
            self.poll().await;
        }
        self.announce();
    }

    /// A checked request: it becomes the wanted value, and is written now
    /// if the device answers and the rate limit allows.
    async fn on_request(&mut self, request: WriteRequest, reply: Option<Reply>) {
        let (id, superseded) = self.desired.submit(request, Instant::now());
        if let Some(reply) = reply {
            self.replies.insert(id, reply);
        }
        for a in superseded {
            self.answer(a, None);
        }
        if self.flush().await {
            self.poll().await;
        }
        self.announce();
    }

    /// Restore the originals, answer the open requests, stop.
    async fn stop(&mut self) -> usize {
        let n = self.restore().await;
        for a in self
            .desired
            .drain("the bridge stopped before it was written")
        {
            self.answer(a, None);
        }
        n
    }

    /// Write the due requests in request order while the device answers;
    /// whether anything was written.
    async fn flush(&mut self) -> bool {
        let mut wrote = false;
        if !self.reachable {
            return wrote;
        }
        for id in self.desired.due(Instant::now()) {
            let writes = self.desired.writes(id);
            self.remember_originals(&writes);
            let mut finished = true;
            for w in writes {
                match self.write(&w).await {
                    Ok(()) => {
                        wrote = true;
                        self.desired.point_written(id, &w.point, Instant::now());
                    }
                    Err(e @ WriteError::Exception { .. }) => {
                        if let Some(a) = self.desired.finish_refused(id, &e.to_string()) {
                            self.answer(a, Some(Err(e)));
                        }
                        finished = false;
                        break;
                    }
                    Err(_) => {
                        // Unreachable: the request stays wanted.
                        self.reachable = false;
                        return wrote;
                    }
                }
            }
            if finished {
                if let Some(a) = self.desired.finish_applied(id) {
                    self.answer(a, None);
                }
            }
        }
        wrote
    }

    /// Answer `pending` to the requests that wait and have not heard so.
    fn announce(&mut self) {
        for (a, wait) in self.desired.announce(Instant::now(), !self.reachable) {
            if wait == Wait::RateLimit {
                self.task
                    .counters
                    .bump(&self.task.counters.writes_rate_limited);
            }
            self.answer(a, None);
        }
    }

    /// Publish `a`, count it, and give a waiting typed caller its first
    /// answer (`typed`, or one derived from `a`).
    fn answer(&mut self, a: Answer, typed: Option<Result<WriteAccepted, WriteError>>) {
        let t = &self.task;
        let c = &t.counters;
        let name = &t.config.name;
        let reason = a.reason.clone().unwrap_or_default();
        match a.status {
            WriteStatus::Applied => c.bump(&c.writes_applied),
            WriteStatus::Pending => {
                c.bump(&c.writes_pending);
                info!(device = %name, reason = %reason, "Write pending.");
            }
            WriteStatus::Refused => c.bump(&c.writes_refused_by_device),
            WriteStatus::Expired => {
                c.bump(&c.writes_expired);
                if a.superseded {
                    c.bump(&c.writes_superseded);
                }
                warn!(device = %name, reason = %reason, "Write expired; not written.");
            }
        }
        if let Some(reply) = self.replies.remove(&a.id) {
            let _ = reply.send(typed.unwrap_or_else(|| match a.status {
                WriteStatus::Applied => Ok(WriteAccepted::Applied),
                WriteStatus::Pending => Ok(WriteAccepted::Pending {
                    reason: reason.clone(),
                }),
                // The flush passes the device's own error; this is a fallback.
                WriteStatus::Refused => Err(WriteError::Exception {
                    device: name.clone(),
                    point: a.request.keys().cloned().collect::<Vec<_>>().join(", "),
                    exception: reason.clone(),
                }),
                WriteStatus::Expired => Err(WriteError::Expired(reason.clone())),
            }));
        }
        let result = WriteResult {
            ts: Utc::now(),
            request: a.request,
            request_ts: a.request_ts,
            status: a.status,
            reason: a.reason,
        };
        (t.on_result)(name, &result);
    }

    fn remember_originals(&mut self, writes: &[PlannedWrite]) {
        let d = &self.task.config;
        let state = self
            .task
            .state
            .lock()
            .map(|s| s.values.clone())
            .unwrap_or_default();
        for w in writes {
            let restorable = d
                .points
                .iter()
                .any(|p| p.name == w.point && p.restore_on_exit);
            if !restorable || self.originals.contains_key(&w.point) {
                continue;
            }
            match state.get(&w.point) {
                Some(v) => {
                    self.originals
                        .insert(w.point.clone(), serde_json::to_value(v).unwrap_or_default());
                }
                None => {
                    warn!(device = %d.name, point = %w.point, "Value before the first write unknown; it will not be restored on exit.");
                }
            }
        }
    }

    /// Write back the originals through the same checks as any write (an
    /// original outside `min`/`max` is not written).
    async fn restore(&mut self) -> usize {
        let mut restored = 0;
        for (point, value) in self.originals.clone() {
            let d = &self.task.config;
            match plan_write(d, &point, &value) {
                Ok(w) => {
                    if self.write(&w).await.is_ok() {
                        let d = &self.task.config;
                        info!(device = %d.name, point = %point, value = w.value, "Point restored on exit.");
                        restored += 1;
                    }
                }
                Err(e) => {
                    warn!(device = %d.name, point = %point, reason = %e, "Original value not restored.");
                }
            }
        }
        restored
    }

    async fn poll(&mut self) {
        let d = &self.task.config;
        let counters = &self.task.counters;
        let (was_online, last_error) = self
            .task
            .state
            .lock()
            .map(|s| (s.online, s.error.clone()))
            .unwrap_or_default();
        let mut values = BTreeMap::new();
        let mut error = None;
        let mut online = true;
        for block in &self.plan {
            match self.link.read(*block).await {
                Ok(Ok(v)) => decode_block(d, block, &v, &mut values),
                Ok(Err(exc)) => {
                    counters.bump(&counters.modbus_exceptions);
                    warn!(device = %d.name, table = block.table.as_str(), start = block.start, count = block.count, exception = ?exc, "Device answered a read with an exception.");
                    error = Some(format!(
                        "exception {exc:?} reading {} {}..{}",
                        block.table.as_str(),
                        block.start,
                        block.end()
                    ));
                }
                Err(LinkError::Backoff(wait)) => {
                    debug!(device = %d.name, ?wait, "Waiting before reconnecting.");
                    online = false;
                    // Keep the reason of the failed attempt, not just "waiting".
                    error = last_error.clone().or_else(|| {
                        Some(format!("not connected (retry in {} ms)", wait.as_millis()))
                    });
                    break;
                }
                Err(e) => {
                    counters.bump(&counters.modbus_errors);
                    if matches!(e, LinkError::Timeout(_)) {
                        counters.bump(&counters.modbus_timeouts);
                    }
                    if was_online {
                        warn!(device = %d.name, error = %e, "Device stopped answering.");
                    } else {
                        debug!(device = %d.name, error = %e, "Device still not answering.");
                    }
                    online = false;
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        if online && !was_online {
            info!(device = %d.name, points = values.len(), pending = self.desired.open_requests(), "Device answers.");
        }
        self.reachable = online;
        let state = DeviceState {
            online,
            values: if online { values } else { BTreeMap::new() },
            ts: Some(Utc::now()),
            error,
        };
        if let Ok(mut s) = self.task.state.lock() {
            *s = state.clone();
        }
        (self.task.on_state)(&d.name, &state);
    }

    /// One checked write (FC 6/16 or FC 5), counted.
    async fn write(&mut self, w: &PlannedWrite) -> Result<(), WriteError> {
        let d = &self.task.config;
        let c = &self.task.counters;
        let r = match &w.op {
            WriteOp::Registers(addr, words) => {
                self.link.write_registers(*addr, words.clone()).await
            }
            WriteOp::Coil(addr, on) => self.link.write_coil(*addr, *on).await,
        };
        match r {
            Ok(Ok(())) => {
                c.bump(&c.writes_ok);
                info!(device = %d.name, point = %w.point, value = w.value, "Point written.");
                Ok(())
            }
            Ok(Err(exc)) => {
                c.bump(&c.writes_failed);
                c.bump(&c.modbus_exceptions);
                warn!(device = %d.name, point = %w.point, exception = ?exc, "Device refused a write.");
                Err(WriteError::Exception {
                    device: d.name.clone(),
                    point: w.point.clone(),
                    exception: format!("{exc:?}"),
                })
            }
            Err(source) => {
                c.bump(&c.writes_failed);
                warn!(device = %d.name, point = %w.point, error = %source, "Write did not reach the device; it stays pending.");
                Err(WriteError::Link {
                    device: d.name.clone(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteConfig;

    fn device() -> DeviceConfig {
        let cfg = SiteConfig::<toml::Table>::from_toml(
            r#"
[mqtt]
url = "mqtt://127.0.0.1"
site = "s"
[[devices]]
name = "hp"
address = "127.0.0.1:502"
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
name = "flow_c"
table = "holding"
address = 1
type = "f32"
word_order = "CDAB"
[[devices.points]]
name = "pump"
table = "coil"
address = 0
writable = true
"#,
        )
        .unwrap();
        cfg.devices[0].clone()
    }

    #[test]
    fn a_write_within_bounds_is_encoded() {
        let w = plan_writes(
            &device(),
            br#"{"supply_setpoint_c": 45.5, "ts": "2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(w[0].op, WriteOp::Registers(0, vec![455]));
        let w = plan_writes(&device(), br#"{"pump": true}"#).unwrap();
        assert_eq!(w[0].op, WriteOp::Coil(0, true));
    }

    #[test]
    fn out_of_bounds_read_only_and_unknown_points_are_refused() {
        let d = device();
        assert!(matches!(
            plan_writes(&d, br#"{"supply_setpoint_c": 80}"#),
            Err(WriteRefused::OutOfBounds { .. })
        ));
        assert!(matches!(
            plan_writes(&d, br#"{"flow_c": 1}"#),
            Err(WriteRefused::ReadOnly(_))
        ));
        assert!(matches!(
            plan_writes(&d, br#"{"nope": 1}"#),
            Err(WriteRefused::UnknownPoint { .. })
        ));
        assert!(matches!(
            plan_writes(&d, br#"{"supply_setpoint_c": "45"}"#),
            Err(WriteRefused::BadValue { .. })
        ));
        assert!(matches!(
            plan_writes(&d, b"[1,2]"),
            Err(WriteRefused::Malformed(_))
        ));
        assert!(matches!(
            plan_writes(&d, b"{}"),
            Err(WriteRefused::Malformed(_))
        ));
        assert!(matches!(
            plan_writes(&d, br#"{"pump": 2}"#),
            Err(WriteRefused::BadValue { .. })
        ));
    }

    #[test]
    fn one_bad_entry_refuses_the_whole_request() {
        let r = plan_writes(&device(), br#"{"supply_setpoint_c": 40, "flow_c": 3}"#);
        assert!(matches!(r, Err(WriteRefused::ReadOnly(_))));
    }

    #[test]
    fn a_block_decodes_into_its_points() {
        let d = device();
        let mut out = BTreeMap::new();
        let block = ReadBlock {
            table: Table::Holding,
            start: 0,
            count: 3,
        };
        // 450 = 45.0 °C; 1.0f32 in CDAB = [0x0000, 0x3F80].
        decode_block(
            &d,
            &block,
            &Values::Words(vec![450, 0x0000, 0x3F80]),
            &mut out,
        );
        assert_eq!(out["supply_setpoint_c"], PointValue::Number(45.0));
        assert_eq!(out["flow_c"], PointValue::Number(1.0));
    }

    #[test]
    fn an_offline_state_carries_no_values() {
        let mut s = DeviceState {
            online: false,
            ..Default::default()
        };
        s.values.insert("x".into(), PointValue::Number(1.0));
        let j = s.to_json();
        assert_eq!(j["online"], false);
        assert!(j.get("x").is_none());
    }
}
