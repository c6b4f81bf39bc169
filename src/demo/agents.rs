//! The demo servers' agents on MQTT: the cap commands they obey (server
//! caps and per-VM CPU quotas, under a lease and a sequence number, as
//! DESIGN.md §4.2 and §4.6 say), and the telemetry and retained status they
//! publish.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::payloads::{decode, CapCommand, Telemetry, VmTelemetry};
use protocol::topics::{TopicKind, Topics};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

use super::hypervisor::Guest;
use super::Clock;

/// The cap command in force on one server.
#[derive(Debug, Clone, PartialEq)]
pub struct CapState {
    /// Server cap, W (`None`: lifted).
    pub cap_w: Option<f64>,
    /// CPU quotas by VM id, cores; a VM left out has none.
    pub quotas: BTreeMap<String, f64>,
    /// When its lease ends (site time).
    pub until: DateTime<Utc>,
    /// Its sequence number.
    pub seq: u64,
    /// Its controller's epoch.
    pub epoch: u64,
}

impl CapState {
    /// The quota on `vm` in force at `now`, when there is one.
    pub fn quota(&self, vm: &str, now: DateTime<Utc>) -> Option<f64> {
        (self.until > now)
            .then(|| self.quotas.get(vm).copied())
            .flatten()
    }

    /// The server cap in force at `now`, when there is one.
    pub fn cap_at(&self, now: DateTime<Utc>) -> Option<f64> {
        (self.until > now).then_some(self.cap_w).flatten()
    }
}

/// Caps by node id, shared between the MQTT task and the twin's steps.
pub type Caps = Arc<Mutex<BTreeMap<String, CapState>>>;

/// Take a cap command for `node` received at `now`: applied unless its
/// `seq` was already applied under the same epoch, or it comes from an
/// older controller while the current lease runs. Returns whether it was
/// applied.
pub fn take_cap(caps: &Caps, node: &str, c: &CapCommand, now: DateTime<Utc>) -> bool {
    let mut map = caps.lock().unwrap_or_else(|e| e.into_inner());
    let epoch = c.epoch.unwrap_or(0);
    if let Some(cur) = map.get(node) {
        let live = cur.until > now;
        if (epoch == cur.epoch && c.seq <= cur.seq) || (epoch < cur.epoch && live) {
            return false;
        }
    }
    let until = now + chrono::Duration::milliseconds((c.lease_s * 1000.0) as i64);
    map.insert(
        node.to_string(),
        CapState {
            cap_w: c.cap_w,
            quotas: c.vm_cpu_cores.clone().unwrap_or_default(),
            until,
            seq: c.seq,
            epoch,
        },
    );
    true
}

/// Serve the agents' MQTT session: subscribe to every node's cap topic on
/// each connection, take the commands, refuse the malformed ones (logged).
pub async fn serve(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    caps: Caps,
    clock: Clock,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let filter = format!("{}/node/+/cap", topics.root());
                if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                    tracing::warn!(error = %e, "Demo agents could not subscribe to their caps.");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(TopicKind::NodeCap(node)) = topics.parse(&p.topic) {
                    match decode::<CapCommand>(&p.payload) {
                        Ok(c) => {
                            take_cap(&caps, node, &c, clock.now());
                        }
                        Err(e) => tracing::warn!(node, error = %e, "Demo agent refused a cap."),
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What one running server measured over a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Power drawn, W.
    pub power_w: f64,
    /// CPU use, 0–1.
    pub cpu_util: f64,
    /// Hottest component, °C.
    pub temp_c: f64,
    /// Cap in force, W.
    pub cap_w: Option<f64>,
    /// Memory of its VMs, GiB.
    pub mem_used_gib: f64,
    /// Its memory, GiB.
    pub mem_total_gib: f64,
    /// Whether its thermal guard holds its power down.
    pub thermal_guard: bool,
}

/// The telemetry of a server that measured `r`, listing the VMs running on
/// it (`guests`) with their cumulative CPU time and quotas.
pub fn telemetry(
    now: DateTime<Utc>,
    r: &Reading,
    guests: &[&Guest],
    cap: Option<&CapState>,
) -> Telemetry {
    let round = |x: f64, k: f64| (x * k).round() / k;
    let vms = guests
        .iter()
        .map(|g| VmTelemetry {
            id: g.vm.id.clone(),
            vcpus: Some(g.vm.vcpus),
            mem_gib: Some(g.vm.mem_gib),
            mem_used_gib: None,
            cpu_s: Some(round(g.cpu_s, 1000.0)),
            cpu_util: Some(round(g.cpu_util.clamp(0.0, 1.0), 1e4)),
            cpu_quota_cores: cap
                .and_then(|c| c.quota(&g.vm.id, now))
                .map(|q| q.clamp(0.0, f64::from(g.vm.vcpus))),
        })
        .collect();
    Telemetry {
        ts: now,
        cpu_util: r.cpu_util.clamp(0.0, 1.0),
        cpu_temp_c: Some(round(r.temp_c, 10.0)),
        power_w: Some(round(r.power_w, 10.0)),
        energy_j: None,
        cap_w: r.cap_w,
        mem_used_gib: Some(round(r.mem_used_gib, 100.0)),
        mem_total_gib: Some(r.mem_total_gib),
        thermal_guard: r.thermal_guard,
        gpus: vec![],
        vms: Some(vms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cmd(seq: u64, epoch: u64, cap_w: f64) -> CapCommand {
        CapCommand {
            ts: Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0).unwrap(),
            cap_w: Some(cap_w),
            gpu_caps_w: None,
            lease_s: 600.0,
            seq,
            epoch: Some(epoch),
            vm_cpu_cores: Some(BTreeMap::from([("r1".to_string(), 2.5)])),
        }
    }

    #[test]
    fn a_cap_is_applied_once_and_an_older_controller_cannot_override_it() {
        let caps = Caps::default();
        let now = Utc.with_ymd_and_hms(2026, 1, 15, 20, 0, 0).unwrap();
        assert!(take_cap(&caps, "n1", &cmd(5, 10, 100.0), now));
        assert!(
            !take_cap(&caps, "n1", &cmd(5, 10, 90.0), now),
            "a duplicate"
        );
        assert!(
            !take_cap(&caps, "n1", &cmd(9, 3, 80.0), now),
            "an older epoch"
        );
        assert!(
            take_cap(&caps, "n1", &cmd(1, 11, 70.0), now),
            "a newer epoch"
        );
        let st = caps.lock().unwrap()["n1"].clone();
        assert_eq!(st.cap_at(now), Some(70.0));
        assert_eq!(st.quota("r1", now), Some(2.5));
        let later = now + chrono::Duration::seconds(601);
        assert_eq!(st.cap_at(later), None, "the lease ran out");
        assert_eq!(st.quota("r1", later), None);
    }
}
