//! The desired state of one device's writable points (DESIGN.md §4.8): the
//! bookkeeping behind `facility/<device>/set/result`, without any I/O.
//!
//! Every checked request becomes the wanted value of its points, stamped
//! with the time it arrived. The device task asks [`DesiredState::due`]
//! which requests may be written now (the device answers and no point of
//! the request was written less than `min_write_interval_s` ago), writes
//! them in request order, and reports back ([`DesiredState::point_written`],
//! [`DesiredState::finish_applied`], [`DesiredState::finish_refused`]).
//! A request that has to wait is answered `pending` once
//! ([`DesiredState::announce`]); a newer request to the same point takes the
//! point over, and an older request left with no point is answered
//! `expired` ("superseded by a newer write"); a request still waiting
//! `write_expiry_s` after it arrived is dropped and answered `expired`
//! ([`DesiredState::expire`]). Each request gets exactly one final answer.
//!
//! Time is passed in (`now`), so the rules are tested with a fake clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::payloads::WriteStatus;

use crate::device::PlannedWrite;

/// The reason given to an older request whose every point a newer one
/// replaced.
pub const SUPERSEDED: &str = "superseded by a newer write";

/// A checked `set` request.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    /// The request as received, `{point: value}` without its `ts`.
    pub request: serde_json::Map<String, serde_json::Value>,
    /// The `ts` the requester sent, if any.
    pub request_ts: Option<DateTime<Utc>>,
    /// Its writes, checked and encoded, in the request's order.
    pub writes: Vec<PlannedWrite>,
}

/// Identifies a request within one device's [`DesiredState`].
pub type RequestId = u64;

/// An answer to publish on `facility/<device>/set/result`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Which request.
    pub id: RequestId,
    /// The request as received.
    pub request: serde_json::Map<String, serde_json::Value>,
    /// The requester's `ts`.
    pub request_ts: Option<DateTime<Utc>>,
    /// Outcome.
    pub status: WriteStatus,
    /// Why (names the point where one is to blame).
    pub reason: Option<String>,
    /// Whether an `expired` answer is a supersession (for the counters).
    pub superseded: bool,
}

#[derive(Debug)]
struct Entry {
    req: WriteRequest,
    received: Instant,
    /// Points a newer request took over.
    superseded: Vec<String>,
    /// Points already written (a request cut short by a lost connection).
    written: Vec<String>,
    /// Whether `pending` was answered.
    announced: bool,
}

/// Why a request that has not been written is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The device does not answer.
    DeviceDown,
    /// A point of it was written less than the interval ago.
    RateLimit,
}

/// The wanted values of one device (see the module docs). Bounded: every
/// open request holds the wanted value of at least one point (one left
/// with none is answered), so there are never more open requests than
/// writable points.
#[derive(Debug)]
pub struct DesiredState {
    device: String,
    expiry: Duration,
    min_interval: Duration,
    next_id: RequestId,
    /// Requests not answered finally, in arrival order.
    open: BTreeMap<RequestId, Entry>,
    /// Point → the request that holds its wanted value.
    wanted: BTreeMap<String, RequestId>,
    /// Point → when it was last written.
    last_written: BTreeMap<String, Instant>,
}

impl DesiredState {
    /// Desired state of `device`, dropping waits longer than `expiry` and
    /// spacing writes to a point by `min_interval`.
    pub fn new(device: impl Into<String>, expiry: Duration, min_interval: Duration) -> Self {
        Self {
            device: device.into(),
            expiry,
            min_interval,
            next_id: 0,
            open: BTreeMap::new(),
            wanted: BTreeMap::new(),
            last_written: BTreeMap::new(),
        }
    }

    /// Requests not yet answered finally.
    pub fn open_requests(&self) -> usize {
        self.open.len()
    }

    /// A checked request arrives at `now`: its values become the wanted
    /// ones. Older requests left with no point are answered here.
    pub fn submit(&mut self, req: WriteRequest, now: Instant) -> (RequestId, Vec<Answer>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut answers = Vec::new();
        for w in &req.writes {
            let Some(old) = self.wanted.insert(w.point.clone(), id) else {
                continue;
            };
            let Some(e) = self.open.get_mut(&old) else {
                continue;
            };
            e.req.writes.retain(|x| x.point != w.point);
            e.superseded.push(w.point.clone());
            if e.req.writes.is_empty() {
                answers.extend(self.close(old, WriteStatus::Expired, Some(SUPERSEDED.into())));
            }
        }
        self.open.insert(
            id,
            Entry {
                req,
                received: now,
                superseded: Vec::new(),
                written: Vec::new(),
                announced: false,
            },
        );
        (id, answers)
    }

    /// When the points of request `id` may next be written (`None` for a
    /// request that is not open).
    fn ready_at(&self, id: RequestId) -> Option<Instant> {
        let e = self.open.get(&id)?;
        Some(
            e.req
                .writes
                .iter()
                .filter_map(|w| self.last_written.get(&w.point))
                .map(|t| *t + self.min_interval)
                .fold(e.received, Instant::max),
        )
    }

    /// Requests that may be written at `now`, in request order (a request
    /// held by the rate limit does not hold up a later one to other points).
    pub fn due(&self, now: Instant) -> Vec<RequestId> {
        self.open
            .keys()
            .copied()
            .filter(|id| self.ready_at(*id).is_some_and(|t| t <= now))
            .collect()
    }

    /// The writes still to do for request `id`.
    pub fn writes(&self, id: RequestId) -> Vec<PlannedWrite> {
        self.open
            .get(&id)
            .map(|e| e.req.writes.clone())
            .unwrap_or_default()
    }

    /// `point` of request `id` was written at `now`.
    pub fn point_written(&mut self, id: RequestId, point: &str, now: Instant) {
        self.last_written.insert(point.to_string(), now);
        if let Some(e) = self.open.get_mut(&id) {
            e.req.writes.retain(|w| w.point != point);
            e.written.push(point.to_string());
        }
        if self.wanted.get(point) == Some(&id) {
            self.wanted.remove(point);
        }
    }

    /// Every write of request `id` is done: answer `applied`.
    pub fn finish_applied(&mut self, id: RequestId) -> Option<Answer> {
        let superseded = self.open.get(&id).map(|e| e.superseded.clone())?;
        let reason = (!superseded.is_empty())
            .then(|| format!("{} {SUPERSEDED}", points_phrase(&superseded)));
        self.close(id, WriteStatus::Applied, reason)
    }

    /// The device refused request `id` (`why` names the point and the
    /// exception): answer `refused`; its other points are dropped.
    pub fn finish_refused(&mut self, id: RequestId, why: &str) -> Option<Answer> {
        let written = self.open.get(&id).map(|e| e.written.clone())?;
        let reason = if written.is_empty() {
            why.to_string()
        } else {
            format!("{why} ({} already written)", points_phrase(&written))
        };
        self.close(id, WriteStatus::Refused, Some(reason))
    }

    /// Drop the requests that arrived more than `write_expiry_s` before
    /// `now` without being written: answered `expired`, nothing written.
    pub fn expire(&mut self, now: Instant) -> Vec<Answer> {
        let old: Vec<RequestId> = self
            .open
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.received) > self.expiry)
            .map(|(id, _)| *id)
            .collect();
        let reason = format!(
            "not written within write_expiry_s = {} s",
            self.expiry.as_secs_f64()
        );
        old.into_iter()
            .flat_map(|id| self.close(id, WriteStatus::Expired, Some(reason.clone())))
            .collect()
    }

    /// Answer `pending`, once, every open request not answered yet; with
    /// the device down when `device_down` holds, else held by the rate
    /// limit. Returns each answer with what it waits for.
    pub fn announce(&mut self, now: Instant, device_down: bool) -> Vec<(Answer, Wait)> {
        let ids: Vec<RequestId> = self
            .open
            .iter()
            .filter(|(_, e)| !e.announced)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let (wait, reason) = if device_down {
                (
                    Wait::DeviceDown,
                    format!(
                        "device `{}` is down; written when it answers (for up to {} s)",
                        self.device,
                        self.expiry.as_secs_f64()
                    ),
                )
            } else {
                let at = self.ready_at(id).unwrap_or(now);
                let held: Vec<String> = self
                    .writes(id)
                    .into_iter()
                    .map(|w| w.point)
                    .filter(|p| {
                        self.last_written
                            .get(p)
                            .is_some_and(|t| *t + self.min_interval > now)
                    })
                    .collect();
                (
                    Wait::RateLimit,
                    format!(
                        "{} written less than min_write_interval_s = {} s ago; held for {:.1} s",
                        points_phrase(&held),
                        self.min_interval.as_secs_f64(),
                        at.saturating_duration_since(now).as_secs_f64()
                    ),
                )
            };
            let Some(e) = self.open.get_mut(&id) else {
                continue;
            };
            e.announced = true;
            out.push((
                Answer {
                    id,
                    request: e.req.request.clone(),
                    request_ts: e.req.request_ts,
                    status: WriteStatus::Pending,
                    reason: Some(reason),
                    superseded: false,
                },
                wait,
            ));
        }
        out
    }

    /// Answer every open request `expired` with `reason` (shutdown).
    pub fn drain(&mut self, reason: &str) -> Vec<Answer> {
        let ids: Vec<RequestId> = self.open.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| self.close(id, WriteStatus::Expired, Some(reason.to_string())))
            .collect()
    }

    fn close(
        &mut self,
        id: RequestId,
        status: WriteStatus,
        reason: Option<String>,
    ) -> Option<Answer> {
        let e = self.open.remove(&id)?;
        for w in &e.req.writes {
            if self.wanted.get(&w.point) == Some(&id) {
                self.wanted.remove(&w.point);
            }
        }
        Some(Answer {
            id,
            superseded: reason.as_deref() == Some(SUPERSEDED),
            request: e.req.request,
            request_ts: e.req.request_ts,
            status,
            reason,
        })
    }
}

/// "point `a`" or "points `a`, `b`".
fn points_phrase(points: &[String]) -> String {
    let list: Vec<String> = points.iter().map(|p| format!("`{p}`")).collect();
    match list.len() {
        1 => format!("point {}", list[0]),
        _ => format!("points {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::WriteOp;

    const S: Duration = Duration::from_secs(1);

    fn req(points: &[(&str, f64)]) -> WriteRequest {
        WriteRequest {
            request: points
                .iter()
                .map(|(p, v)| (p.to_string(), serde_json::json!(v)))
                .collect(),
            request_ts: None,
            writes: points
                .iter()
                .map(|(p, v)| PlannedWrite {
                    point: p.to_string(),
                    value: *v,
                    op: WriteOp::Registers(0, vec![0]),
                })
                .collect(),
        }
    }

    fn state() -> DesiredState {
        DesiredState::new("hp", 300 * S, 5 * S)
    }

    /// Write every due request at `now`, as the device task does.
    fn write_due(d: &mut DesiredState, now: Instant) -> Vec<Answer> {
        let mut out = Vec::new();
        for id in d.due(now) {
            for w in d.writes(id) {
                d.point_written(id, &w.point, now);
            }
            out.extend(d.finish_applied(id));
        }
        out
    }

    #[test]
    fn a_request_to_an_answering_device_is_due_at_once_and_applied() {
        let (mut d, t0) = (state(), Instant::now());
        let (id, answers) = d.submit(req(&[("sp", 45.0)]), t0);
        assert!(answers.is_empty());
        assert_eq!(d.due(t0), vec![id]);
        let a = write_due(&mut d, t0);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].status, a[0].reason.as_deref()),
            (WriteStatus::Applied, None)
        );
        assert_eq!(d.open_requests(), 0);
        assert!(d.announce(t0, false).is_empty(), "nothing left to announce");
    }

    #[test]
    fn a_newer_write_to_a_point_expires_the_older_one_as_superseded() {
        let (mut d, t0) = (state(), Instant::now());
        let (first, _) = d.submit(req(&[("sp", 40.0)]), t0);
        let pending = d.announce(t0, true);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0.status, WriteStatus::Pending);
        assert_eq!(pending[0].1, Wait::DeviceDown);
        assert!(pending[0]
            .0
            .reason
            .as_ref()
            .unwrap()
            .contains("`hp` is down"));
        let (second, answers) = d.submit(req(&[("sp", 50.0)]), t0 + S);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].id, first);
        assert_eq!(answers[0].status, WriteStatus::Expired);
        assert_eq!(answers[0].reason.as_deref(), Some(SUPERSEDED));
        assert!(answers[0].superseded);
        assert_eq!(d.due(t0 + 2 * S), vec![second]);
        assert_eq!(d.writes(second)[0].value, 50.0);
    }

    #[test]
    fn a_request_partly_superseded_writes_the_rest_and_says_so() {
        let (mut d, t0) = (state(), Instant::now());
        let (first, _) = d.submit(req(&[("a", 1.0), ("b", 2.0)]), t0);
        d.announce(t0, true);
        let (_, answers) = d.submit(req(&[("a", 3.0)]), t0);
        assert!(answers.is_empty(), "the first request still has `b`");
        let a = write_due(&mut d, t0 + S);
        let first_answer = a.iter().find(|a| a.id == first).unwrap();
        assert_eq!(first_answer.status, WriteStatus::Applied);
        assert_eq!(
            first_answer.reason.as_deref(),
            Some("point `a` superseded by a newer write")
        );
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn a_pending_write_past_its_expiry_is_dropped_unwritten() {
        let (mut d, t0) = (state(), Instant::now());
        d.submit(req(&[("sp", 40.0)]), t0);
        d.announce(t0, true);
        assert!(d.expire(t0 + 300 * S).is_empty(), "not before the expiry");
        let a = d.expire(t0 + 301 * S);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].status, WriteStatus::Expired);
        assert!(a[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("write_expiry_s = 300 s"));
        assert!(!a[0].superseded);
        assert!(d.due(t0 + 302 * S).is_empty(), "nothing left to write");
    }

    #[test]
    fn a_write_sooner_than_the_interval_is_held_until_it_passes() {
        let (mut d, t0) = (state(), Instant::now());
        d.submit(req(&[("sp", 40.0)]), t0);
        write_due(&mut d, t0);
        let (held, _) = d.submit(req(&[("sp", 41.0)]), t0 + S);
        assert!(d.due(t0 + S).is_empty());
        let p = d.announce(t0 + S, false);
        assert_eq!(p[0].1, Wait::RateLimit);
        let why = p[0].0.reason.as_ref().unwrap();
        assert!(
            why.contains("point `sp`") && why.contains("held for 4.0 s"),
            "{why}"
        );
        // Another point is not held up by it.
        let (other, _) = d.submit(req(&[("pump", 1.0)]), t0 + 2 * S);
        assert_eq!(d.due(t0 + 2 * S), vec![other]);
        assert_eq!(d.due(t0 + 5 * S), vec![held, other]);
    }

    #[test]
    fn a_device_refusal_is_final_and_names_what_was_already_written() {
        let (mut d, t0) = (state(), Instant::now());
        let (id, _) = d.submit(req(&[("a", 1.0), ("b", 2.0)]), t0);
        d.point_written(id, "a", t0);
        let a = d
            .finish_refused(id, "device `hp` refused point `b`: IllegalDataValue")
            .unwrap();
        assert_eq!(a.status, WriteStatus::Refused);
        assert!(a.reason.unwrap().ends_with("(point `a` already written)"));
        assert_eq!(d.open_requests(), 0);
        assert!(d.finish_applied(id).is_none(), "one final answer only");
    }

    #[test]
    fn draining_answers_every_open_request_once() {
        let (mut d, t0) = (state(), Instant::now());
        d.submit(req(&[("a", 1.0)]), t0);
        d.submit(req(&[("b", 1.0)]), t0);
        let a = d.drain("the bridge stopped");
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|a| a.status == WriteStatus::Expired));
        assert!(d.drain("again").is_empty());
    }
}
