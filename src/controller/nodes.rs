//! Agent messages into the site state: telemetry and retained status from
//! `node/<node>/…`, and the cap commands sent back (`node/<node>/cap`).
//!
//! Bad payloads are refused with the reason, counted by the caller, and
//! change nothing; telemetry from a node the site does not know is refused
//! too (a misconfigured agent must not appear as capacity).

use chrono::{DateTime, Utc};
use protocol::payloads::{decode, CapCommand, PayloadError, Telemetry};
use protocol::topics::{TopicKind, Topics, STATUS_OFFLINE, STATUS_ONLINE};

use super::state::SiteState;

/// Why an agent message was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload is malformed or out of range.
    #[error("node {node}: {source}")]
    Payload {
        /// Node id from the topic.
        node: String,
        /// What was wrong.
        source: PayloadError,
    },
    /// The node is not in the site configuration.
    #[error("node {0} is not in the site configuration")]
    UnknownNode(String),
    /// A status other than `online`/`offline`.
    #[error("node {node}: status `{status}` is neither online nor offline")]
    BadStatus {
        /// Node id.
        node: String,
        /// What was sent (truncated).
        status: String,
    },
}

/// Apply one MQTT message to `site`. Returns `Ok(false)` for topics that
/// are not agent messages.
pub fn ingest(
    site: &mut SiteState,
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, IngestError> {
    match topics.parse(topic) {
        Some(TopicKind::NodeTelemetry(id)) => {
            let node = site
                .nodes
                .get_mut(id)
                .ok_or_else(|| IngestError::UnknownNode(id.to_string()))?;
            let t: Telemetry = decode(payload).map_err(|source| IngestError::Payload {
                node: id.to_string(),
                source,
            })?;
            node.telemetry = Some(t);
            node.last_seen = Some(now);
            node.online = true;
            node.stale = false;
            Ok(true)
        }
        Some(TopicKind::NodeStatus(id)) => {
            let node = site
                .nodes
                .get_mut(id)
                .ok_or_else(|| IngestError::UnknownNode(id.to_string()))?;
            match std::str::from_utf8(payload).map(str::trim) {
                Ok(STATUS_ONLINE) => node.online = true,
                Ok(STATUS_OFFLINE) => node.online = false,
                other => {
                    let status: String = other.unwrap_or("<not UTF-8>").chars().take(40).collect();
                    return Err(IngestError::BadStatus {
                        node: id.to_string(),
                        status,
                    });
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Numbers cap commands so agents apply each once (QoS 1 may deliver twice).
#[derive(Debug, Clone)]
pub struct CapSequencer {
    next: u64,
    /// This controller's epoch (its start, ms): a restarted controller's
    /// higher epoch resets the agents' `seq` high-water mark.
    epoch: u64,
}

impl CapSequencer {
    /// Start from `start` — use the wall clock in ms so a restarted
    /// controller keeps counting upwards; `start` is also the epoch.
    pub fn new(start: u64) -> Self {
        Self {
            next: start,
            epoch: start,
        }
    }

    /// The next cap command.
    pub fn command(&mut self, cap_w: Option<f64>, lease_s: f64, now: DateTime<Utc>) -> CapCommand {
        let seq = self.next;
        self.next += 1;
        CapCommand {
            ts: now,
            cap_w,
            gpu_caps_w: None,
            lease_s,
            seq,
            epoch: Some(self.epoch),
            vm_cpu_cores: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::{NodeState, ServerInfo};
    use chrono::TimeZone;

    fn site() -> SiteState {
        let mut s = SiteState::default();
        s.nodes.insert(
            "n1".into(),
            NodeState {
                info: ServerInfo {
                    id: "n1".into(),
                    cores: 4,
                    mem_gib: 8.0,
                    temp_limit_c: 80.0,
                    heat_loop: None,
                    off_w: 5.0,
                },
                on: true,
                online: false,
                stale: true,
                last_seen: None,
                telemetry: None,
            },
        );
        s
    }

    #[test]
    fn telemetry_refreshes_the_node() {
        let t = Topics::new("s");
        let mut s = site();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let payload =
            br#"{"ts":"2026-01-01T00:00:00Z","cpu_util":0.5,"cpu_temp_c":61.5,"power_w":120}"#;
        assert!(ingest(&mut s, &t, &t.node_telemetry("n1"), payload, now).unwrap());
        let n = &s.nodes["n1"];
        assert_eq!(n.last_seen, Some(now));
        assert!(n.online && !n.stale);
        assert_eq!(n.telemetry.as_ref().unwrap().cpu_temp_c, Some(61.5));
    }

    #[test]
    fn bad_messages_change_nothing() {
        let t = Topics::new("s");
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let before = site();
        let cases: [(String, &[u8], &str); 4] = [
            (t.node_telemetry("n1"), b"{", "malformed"),
            (
                t.node_telemetry("n1"),
                br#"{"ts":"2026-01-01T00:00:00Z","cpu_util":7}"#,
                "cpu_util",
            ),
            (
                t.node_telemetry("ghost"),
                br#"{"ts":"2026-01-01T00:00:00Z","cpu_util":0.1}"#,
                "ghost",
            ),
            (t.node_status("n1"), b"sleepy", "sleepy"),
        ];
        for (topic, payload, needle) in cases {
            let mut s = before.clone();
            let err = ingest(&mut s, &t, &topic, payload, now)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
            assert_eq!(s, before, "a refused message changes nothing");
        }
        let mut s = before.clone();
        assert!(!ingest(&mut s, &t, "phoenix/v1/other/node/n1/telemetry", b"{}", now).unwrap());
    }

    #[test]
    fn status_follows_the_retained_message() {
        let t = Topics::new("s");
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut s = site();
        ingest(&mut s, &t, &t.node_status("n1"), b"online", now).unwrap();
        assert!(s.nodes["n1"].online);
        ingest(&mut s, &t, &t.node_status("n1"), b"offline", now).unwrap();
        assert!(!s.nodes["n1"].online);
    }

    #[test]
    fn cap_commands_count_upwards() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut seq = CapSequencer::new(100);
        let a = seq.command(Some(150.0), 2700.0, now);
        let b = seq.command(None, 2700.0, now);
        assert_eq!((a.seq, b.seq), (100, 101));
        assert_eq!((a.epoch, b.epoch), (Some(100), Some(100)));
        use protocol::payloads::Payload;
        a.validate().unwrap();
        b.validate().unwrap();
    }
}
