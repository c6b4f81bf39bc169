//! The agent's control logic as a pure state machine, in rumqtt's style: it
//! changes its state from inputs (the time, cap commands, temperatures) and
//! says what the hardware should hold ([`Targets`]); it never touches a file,
//! a socket or a clock, so tests drive it with a fake clock.
//!
//! Rules, in order of precedence:
//! 1. the **thermal guard**: when a temperature reaches its limit − margin,
//!    every actuator is held at once at or below its guard level
//!    (min + `guard_fraction` × range), whatever the controller said; while a
//!    temperature stays at or above that point the level steps down by
//!    `guard_step` of the range per control tick, to the hardware minimum;
//!    the guard releases when every temperature is below
//!    limit − margin − hysteresis;
//! 2. the controller's **lease**: a cap holds for `lease_s` after it arrives;
//!    with no renewal the configured safe cap (or the originals) come back;
//! 3. **bounds**: the server cap is clamped to the configured
//!    `[min_cap_w, max_cap_w]`, each actuator's share to its hardware range.
//!
//! A command must also be **fresh and bounded** to be taken at all
//! ([`Refusal`]): not delivered retained, a lease no longer than
//! `max_lease_s`, a `ts` no older than its own lease and no more than
//! `max_skew_s` ahead of this clock, an `epoch` not ahead of it either, and,
//! while a lease runs, an `epoch` no lower than the one in force. A higher
//! epoch (a restarted controller) resets the `seq` high-water mark; once a
//! lease has lapsed any command is taken, so no command can lock the agent
//! out for longer than `max_lease_s`.
//!
//! Per-VM CPU quotas (`vm_cpu_cores`) ride on the same lease: they hold
//! while it runs and are lifted (the VMs' own `cpu.max` restored) when it
//! ends. The thermal guard does not touch them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::payloads::CapCommand;

use crate::config::AgentConfig;

/// A power range, W.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeW {
    /// Lowest, W.
    pub min_w: f64,
    /// Highest, W.
    pub max_w: f64,
}

impl RangeW {
    fn clamp(&self, w: f64) -> f64 {
        w.clamp(self.min_w, self.max_w)
    }

    fn at(&self, fraction: f64) -> f64 {
        self.min_w + fraction * (self.max_w - self.min_w)
    }
}

/// One GPU as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuCapability {
    /// Limit constraints, W.
    pub range: RangeW,
    /// Limit before the agent touched it, W.
    pub original_w: f64,
}

/// What the hardware lets the agent cap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capabilities {
    /// The CPU's cappable range (RAPL or cpufreq through the power model),
    /// W; `None` when the CPU cannot be capped.
    pub cpu: Option<RangeW>,
    /// GPUs by NVML index.
    pub gpus: Vec<GpuCapability>,
}

/// A temperature with the limit it is judged against.
#[derive(Debug, Clone, PartialEq)]
pub struct Thermal {
    /// Where it was read (`coretemp/Package id 0`, `gpu0`).
    pub source: String,
    /// Temperature, °C.
    pub temp_c: f64,
    /// Limit, °C.
    pub limit_c: f64,
}

/// The settings of [`AgentConfig`] the control logic uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// Server cap bounds, W.
    pub min_cap_w: f64,
    /// Server cap bounds, W.
    pub max_cap_w: f64,
    /// Server cap after a lease expires, W; `None` = originals.
    pub safe_cap_w: Option<f64>,
    /// Power outside CPU and GPUs, W.
    pub platform_w: f64,
    /// Guard engages at limit − margin, °C.
    pub margin_c: f64,
    /// Guard releases at limit − margin − hysteresis, °C.
    pub hysteresis_c: f64,
    /// Guard level within each range, 0–1.
    pub guard_fraction: f64,
    /// Guard level step down per control tick while still hot, 0–1.
    pub guard_step: f64,
    /// Longest lease accepted, s.
    pub max_lease_s: f64,
    /// How far `ts` or `epoch` may be ahead of this clock, s.
    pub max_skew_s: f64,
}

impl From<&AgentConfig> for ControlConfig {
    fn from(c: &AgentConfig) -> Self {
        Self {
            min_cap_w: c.caps.min_cap_w,
            max_cap_w: c.caps.max_cap_w,
            safe_cap_w: c.caps.safe_cap_w,
            platform_w: c.caps.platform_w,
            margin_c: c.thermal.margin_c,
            hysteresis_c: c.thermal.hysteresis_c,
            guard_fraction: c.thermal.guard_fraction,
            guard_step: c.thermal.guard_step,
            max_lease_s: c.caps.max_lease_s,
            max_skew_s: c.caps.max_skew_s,
        }
    }
}

/// What became of a cap command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandOutcome {
    /// Accepted; the lease runs from now. `cap_w` is the server cap after
    /// clamping to the configured bounds.
    Accepted {
        /// Sequence number.
        seq: u64,
        /// Clamped server cap, W.
        cap_w: Option<f64>,
        /// Whether the requested cap was outside the bounds.
        clamped: bool,
    },
    /// A `seq` at or below the last one applied while its lease runs (a QoS 1
    /// redelivery or a reordered message): ignored.
    Ignored {
        /// The command's `seq`.
        seq: u64,
        /// The last applied `seq`.
        last_seq: u64,
    },
    /// Not fresh or not bounded: refused, nothing changed.
    Refused {
        /// The command's `seq`.
        seq: u64,
        /// Why.
        reason: Refusal,
    },
}

/// Why a well-formed cap command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// It came with the MQTT retain flag: commands are never retained, and a
    /// retained one would come back on every reconnect.
    #[error("delivered retained; commands are never retained")]
    Retained,
    /// Its lease is longer than this agent accepts.
    #[error("lease {lease_s} s is above this agent's maximum {max_lease_s} s")]
    LeaseTooLong {
        /// Asked, s.
        lease_s: f64,
        /// `caps.max_lease_s`, s.
        max_lease_s: f64,
    },
    /// Its `ts` is older than its own lease.
    #[error("ts is {age_s:.1} s old, beyond its lease of {lease_s} s")]
    Stale {
        /// Age at arrival, s.
        age_s: f64,
        /// Its lease, s.
        lease_s: f64,
    },
    /// Its `ts` is ahead of this clock by more than the allowed skew.
    #[error("ts is {ahead_s:.1} s in the future (allowed skew {max_skew_s} s)")]
    FromTheFuture {
        /// Ahead by, s.
        ahead_s: f64,
        /// `caps.max_skew_s`, s.
        max_skew_s: f64,
    },
    /// Its `epoch` (a start time, ms) is ahead of this clock by more than
    /// the allowed skew.
    #[error("epoch {epoch} is {ahead_s:.1} s in the future (allowed skew {max_skew_s} s)")]
    EpochFromTheFuture {
        /// The command's epoch, ms.
        epoch: u64,
        /// Ahead by, s.
        ahead_s: f64,
        /// `caps.max_skew_s`, s.
        max_skew_s: f64,
    },
    /// Its `epoch` is below the one whose lease runs.
    #[error("epoch {epoch} is older than epoch {current} in force")]
    OldEpoch {
        /// The command's epoch (0 when absent).
        epoch: u64,
        /// The epoch in force.
        current: u64,
    },
}

/// How a command reached the agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// When, on the monotonic clock.
    pub at: Instant,
    /// When, on the wall clock (to judge `ts` and `epoch`).
    pub wall: DateTime<Utc>,
    /// Whether the broker delivered it with the retain flag.
    pub retained: bool,
}

/// A change of regime worth logging.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The lease ran out without renewal.
    LeaseExpired {
        /// `seq` of the command whose lease ended.
        seq: u64,
    },
    /// The thermal guard engaged.
    GuardEngaged {
        /// The sensor that tripped it.
        source: String,
        /// Its temperature, °C.
        temp_c: f64,
        /// Its limit, °C.
        limit_c: f64,
    },
    /// The thermal guard released.
    GuardReleased {
        /// Hottest margin to a limit at release (limit − temperature), K.
        headroom_c: f64,
    },
}

/// What the hardware should hold. `None` means "the original setting".
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// CPU cap (all packages), W.
    pub cpu_w: Option<f64>,
    /// Per-GPU caps by index, W.
    pub gpu_w: Vec<Option<f64>>,
    /// Server total in force (platform + CPU + GPUs), W; `None` when nothing
    /// is capped.
    pub server_cap_w: Option<f64>,
    /// Whether the thermal guard holds the caps.
    pub guard: bool,
    /// Per-VM CPU quotas, cores by VM id (clamped to each VM's vCPUs where
    /// they are applied); a VM not named keeps its own `cpu.max`.
    pub vm_cpu_cores: BTreeMap<String, f64>,
}

impl Targets {
    /// Nothing capped: every original value.
    pub fn originals() -> Self {
        Self {
            cpu_w: None,
            gpu_w: Vec::new(),
            server_cap_w: None,
            guard: false,
            vm_cpu_cores: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Lease {
    seq: u64,
    until: Instant,
    cap_w: Option<f64>,
    gpu_caps_w: Option<Vec<f64>>,
    vm_cpu_cores: BTreeMap<String, f64>,
}

/// The control state machine. See the module docs for its rules.
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: ControlConfig,
    caps: Capabilities,
    lease: Option<Lease>,
    /// The last applied (epoch, seq).
    last: Option<(u64, u64)>,
    /// The guard's level as a fraction of each range, when engaged.
    guard: Option<f64>,
}

impl Controller {
    /// A controller for hardware with `caps`.
    pub fn new(cfg: ControlConfig, caps: Capabilities) -> Self {
        Self {
            cfg,
            caps,
            lease: None,
            last: None,
            guard: None,
        }
    }

    /// The hardware capabilities it plans for.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the thermal guard is engaged.
    pub fn guard_engaged(&self) -> bool {
        self.guard.is_some()
    }

    /// Time left on the lease at `now`, if one runs.
    pub fn lease_remaining(&self, now: Instant) -> Option<Duration> {
        self.lease
            .as_ref()
            .map(|l| l.until.saturating_duration_since(now))
    }

    /// Take a (validated) cap command (call [`Controller::tick`] first to
    /// hear of a lease that just ended).
    ///
    /// It is refused unless fresh and bounded (see the module docs). While a
    /// lease runs, a lower `epoch` is refused and, within the same epoch, a
    /// `seq` at or below the last applied one is ignored; once it has lapsed
    /// any `seq` is accepted, so a restarted controller that counts from 0
    /// again is obeyed. The lease ends `lease_s` after `ts` (by this clock),
    /// and never later than `lease_s` after arrival.
    pub fn on_command(&mut self, arrival: Arrival, cmd: &CapCommand) -> CommandOutcome {
        let age_s = match self.freshness(&arrival, cmd) {
            Ok(age_s) => age_s,
            Err(reason) => {
                return CommandOutcome::Refused {
                    seq: cmd.seq,
                    reason,
                }
            }
        };
        let epoch = cmd.epoch.unwrap_or(0);
        let lease_runs = self.lease.as_ref().is_some_and(|l| arrival.at < l.until);
        if let (Some((last_epoch, last_seq)), true) = (self.last, lease_runs) {
            if epoch < last_epoch {
                return CommandOutcome::Refused {
                    seq: cmd.seq,
                    reason: Refusal::OldEpoch {
                        epoch,
                        current: last_epoch,
                    },
                };
            }
            if epoch == last_epoch && cmd.seq <= last_seq {
                return CommandOutcome::Ignored {
                    seq: cmd.seq,
                    last_seq,
                };
            }
        }
        let requested = cmd.cap_w;
        let cap_w = requested.map(|c| c.clamp(self.cfg.min_cap_w, self.cfg.max_cap_w));
        self.last = Some((epoch, cmd.seq));
        let remaining_s = cmd.lease_s - age_s.max(0.0);
        self.lease = Some(Lease {
            seq: cmd.seq,
            until: arrival.at + Duration::from_secs_f64(remaining_s),
            cap_w,
            gpu_caps_w: cmd.gpu_caps_w.clone(),
            vm_cpu_cores: cmd.vm_cpu_cores.clone().unwrap_or_default(),
        });
        CommandOutcome::Accepted {
            seq: cmd.seq,
            cap_w,
            clamped: cap_w != requested,
        }
    }

    /// The command's age at arrival, s (negative when its `ts` is ahead), or
    /// why it is not fresh and bounded.
    fn freshness(&self, arrival: &Arrival, cmd: &CapCommand) -> Result<f64, Refusal> {
        if arrival.retained {
            return Err(Refusal::Retained);
        }
        if cmd.lease_s > self.cfg.max_lease_s {
            return Err(Refusal::LeaseTooLong {
                lease_s: cmd.lease_s,
                max_lease_s: self.cfg.max_lease_s,
            });
        }
        let age_s = (arrival.wall - cmd.ts).num_milliseconds() as f64 / 1000.0;
        if age_s >= cmd.lease_s {
            return Err(Refusal::Stale {
                age_s,
                lease_s: cmd.lease_s,
            });
        }
        if -age_s > self.cfg.max_skew_s {
            return Err(Refusal::FromTheFuture {
                ahead_s: -age_s,
                max_skew_s: self.cfg.max_skew_s,
            });
        }
        if let Some(epoch) = cmd.epoch {
            let now_ms = arrival.wall.timestamp_millis() as f64;
            let ahead_s = (epoch as f64 - now_ms) / 1000.0;
            if ahead_s > self.cfg.max_skew_s {
                return Err(Refusal::EpochFromTheFuture {
                    epoch,
                    ahead_s,
                    max_skew_s: self.cfg.max_skew_s,
                });
            }
        }
        Ok(age_s)
    }

    /// Advance the clock: end the lease when it has run out.
    pub fn tick(&mut self, now: Instant) -> Option<Event> {
        match &self.lease {
            Some(l) if now >= l.until => {
                let seq = l.seq;
                self.lease = None;
                Some(Event::LeaseExpired { seq })
            }
            _ => None,
        }
    }

    /// Feed the latest temperatures (once per control tick): engages the
    /// guard, steps it down while still hot, or releases it.
    pub fn on_temperatures(&mut self, temps: &[Thermal]) -> Option<Event> {
        let hot = temps
            .iter()
            .find(|t| t.temp_c >= t.limit_c - self.cfg.margin_c);
        let Some(level) = self.guard else {
            let hot = hot?;
            self.guard = Some(self.cfg.guard_fraction);
            return Some(Event::GuardEngaged {
                source: hot.source.clone(),
                temp_c: hot.temp_c,
                limit_c: hot.limit_c,
            });
        };
        if hot.is_some() {
            self.guard = Some((level - self.cfg.guard_step).max(0.0));
            return None;
        }
        let release = self.cfg.margin_c + self.cfg.hysteresis_c;
        let headroom_c = temps
            .iter()
            .map(|t| t.limit_c - t.temp_c)
            .fold(f64::INFINITY, f64::min);
        // With no readings at all the guard holds: silence is not coolness.
        if !temps.is_empty() && headroom_c > release {
            self.guard = None;
            return Some(Event::GuardReleased { headroom_c });
        }
        None
    }

    /// What the hardware should hold now (call [`Controller::tick`] first).
    pub fn targets(&self) -> Targets {
        let (server, gpu_caps) = match &self.lease {
            Some(l) => (l.cap_w, l.gpu_caps_w.as_deref()),
            None => (self.cfg.safe_cap_w, None),
        };
        let vm_cpu_cores = self
            .lease
            .as_ref()
            .map(|l| l.vm_cpu_cores.clone())
            .unwrap_or_default();
        let server = server.map(|c| c.clamp(self.cfg.min_cap_w, self.cfg.max_cap_w));
        let mut gpu_w: Vec<Option<f64>> = self
            .caps
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| gpu_caps.and_then(|c| c.get(i)).map(|w| g.range.clamp(*w)))
            .collect();
        let gpu_budget_w: f64 = self
            .caps
            .gpus
            .iter()
            .zip(&gpu_w)
            .map(|(g, w)| w.unwrap_or(g.original_w))
            .sum();
        let mut cpu_w = self
            .caps
            .cpu
            .and_then(|range| server.map(|s| range.clamp(s - self.cfg.platform_w - gpu_budget_w)));
        if let Some(fraction) = self.guard {
            if let Some(range) = self.caps.cpu {
                let level = range.at(fraction);
                cpu_w = Some(cpu_w.map_or(level, |w| w.min(level)));
            }
            for (g, w) in self.caps.gpus.iter().zip(gpu_w.iter_mut()) {
                let level = g.range.at(fraction);
                *w = Some(w.map_or(level, |v| v.min(level)));
            }
        }
        let capped = cpu_w.is_some() || gpu_w.iter().any(Option::is_some);
        let server_cap_w = capped.then(|| {
            let cpu = cpu_w.or(self.caps.cpu.map(|r| r.max_w)).unwrap_or(0.0);
            let gpus: f64 = self
                .caps
                .gpus
                .iter()
                .zip(&gpu_w)
                .map(|(g, w)| w.unwrap_or(g.original_w))
                .sum();
            self.cfg.platform_w + cpu + gpus
        });
        Targets {
            cpu_w,
            gpu_w,
            server_cap_w,
            guard: self.guard.is_some(),
            vm_cpu_cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ControlConfig {
        ControlConfig {
            min_cap_w: 50.0,
            max_cap_w: 1000.0,
            safe_cap_w: None,
            platform_w: 40.0,
            margin_c: 5.0,
            hysteresis_c: 5.0,
            guard_fraction: 0.5,
            guard_step: 0.25,
            max_lease_s: 3600.0,
            max_skew_s: 30.0,
        }
    }

    fn caps() -> Capabilities {
        Capabilities {
            cpu: Some(RangeW {
                min_w: 20.0,
                max_w: 200.0,
            }),
            gpus: vec![GpuCapability {
                range: RangeW {
                    min_w: 100.0,
                    max_w: 300.0,
                },
                original_w: 300.0,
            }],
        }
    }

    fn cmd(seq: u64, cap_w: Option<f64>, lease_s: f64) -> CapCommand {
        CapCommand {
            ts: chrono::Utc::now(),
            cap_w,
            gpu_caps_w: None,
            lease_s,
            seq,
            epoch: None,
            vm_cpu_cores: None,
        }
    }

    /// The wall clock at the test's `t0`.
    fn wall0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-15T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn wall_at(t0: Instant, at: Instant) -> DateTime<Utc> {
        wall0() + chrono::Duration::from_std(at - t0).unwrap()
    }

    /// Deliver `cmd` at `at`, stamped with the wall time of sending.
    fn fresh(c: &mut Controller, t0: Instant, at: Instant, mut cmd: CapCommand) -> CommandOutcome {
        cmd.ts = wall_at(t0, at);
        deliver(c, t0, at, &cmd, false)
    }

    /// Deliver `cmd` as it is at `at`.
    fn deliver(
        c: &mut Controller,
        t0: Instant,
        at: Instant,
        cmd: &CapCommand,
        retained: bool,
    ) -> CommandOutcome {
        let arrival = Arrival {
            at,
            wall: wall_at(t0, at),
            retained,
        };
        c.on_command(arrival, cmd)
    }

    fn hot(temp_c: f64) -> Vec<Thermal> {
        vec![Thermal {
            source: "coretemp/Package id 0".into(),
            temp_c,
            limit_c: 90.0,
        }]
    }

    #[test]
    fn a_cap_is_split_after_platform_and_gpu_power() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        assert_eq!(c.targets().cpu_w, None, "uncapped at start");
        fresh(&mut c, t0, t0, cmd(1, Some(440.0), 10.0));
        let t = c.targets();
        // 440 − 40 platform − 300 GPU (original limit) = 100 W for the CPU.
        assert_eq!(t.cpu_w, Some(100.0));
        assert_eq!(t.gpu_w, vec![None]);
        assert_eq!(t.server_cap_w, Some(440.0));
    }

    #[test]
    fn per_gpu_caps_are_clamped_to_the_device_range() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        let mut m = cmd(1, Some(400.0), 10.0);
        m.gpu_caps_w = Some(vec![50.0]);
        fresh(&mut c, t0, t0, m);
        let t = c.targets();
        assert_eq!(t.gpu_w, vec![Some(100.0)]);
        assert_eq!(t.cpu_w, Some(200.0), "400 − 40 − 100, within the CPU range");
    }

    #[test]
    fn caps_outside_configured_bounds_are_clamped() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        let out = fresh(&mut c, t0, t0, cmd(1, Some(5.0), 10.0));
        assert_eq!(
            out,
            CommandOutcome::Accepted {
                seq: 1,
                cap_w: Some(50.0),
                clamped: true
            }
        );
        // 50 − 40 − 300 is below the CPU's floor: the CPU sits at 20 W.
        assert_eq!(c.targets().cpu_w, Some(20.0));
    }

    #[test]
    fn a_repeated_or_older_seq_is_ignored_while_its_lease_runs() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        fresh(&mut c, t0, t0, cmd(5, Some(400.0), 10.0));
        let again = fresh(
            &mut c,
            t0,
            t0 + Duration::from_secs(1),
            cmd(5, Some(200.0), 10.0),
        );
        assert_eq!(
            again,
            CommandOutcome::Ignored {
                seq: 5,
                last_seq: 5
            }
        );
        let older = fresh(
            &mut c,
            t0,
            t0 + Duration::from_secs(1),
            cmd(4, Some(200.0), 10.0),
        );
        assert!(matches!(older, CommandOutcome::Ignored { seq: 4, .. }));
        assert_eq!(c.targets().server_cap_w, Some(400.0));
        // The duplicate did not renew the lease either.
        assert_eq!(
            c.lease_remaining(t0 + Duration::from_secs(1)),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn lease_expiry_restores_original_limits() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        fresh(&mut c, t0, t0, cmd(1, Some(300.0), 2.0));
        assert_eq!(c.tick(t0 + Duration::from_millis(1999)), None);
        assert!(c.targets().cpu_w.is_some());
        assert_eq!(
            c.tick(t0 + Duration::from_secs(2)),
            Some(Event::LeaseExpired { seq: 1 })
        );
        let t = c.targets();
        assert_eq!((t.cpu_w, t.server_cap_w), (None, None));
        // After the lease lapsed, a controller restarted at seq 0 is obeyed.
        let out = fresh(
            &mut c,
            t0,
            t0 + Duration::from_secs(3),
            cmd(0, Some(300.0), 2.0),
        );
        assert!(matches!(out, CommandOutcome::Accepted { seq: 0, .. }));
    }

    #[test]
    fn lease_expiry_falls_back_to_the_safe_cap_when_configured() {
        let t0 = Instant::now();
        let mut c = Controller::new(
            ControlConfig {
                safe_cap_w: Some(390.0),
                ..cfg()
            },
            caps(),
        );
        assert_eq!(
            c.targets().cpu_w,
            Some(50.0),
            "safe cap holds from the start"
        );
        fresh(&mut c, t0, t0, cmd(1, Some(600.0), 1.0));
        assert_eq!(c.targets().cpu_w, Some(200.0));
        c.tick(t0 + Duration::from_secs(1));
        assert_eq!(c.targets().cpu_w, Some(50.0));
    }

    #[test]
    fn renewal_extends_the_lease() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        fresh(&mut c, t0, t0, cmd(1, Some(300.0), 2.0));
        fresh(
            &mut c,
            t0,
            t0 + Duration::from_millis(1500),
            cmd(2, Some(300.0), 2.0),
        );
        assert_eq!(c.tick(t0 + Duration::from_millis(3000)), None);
        assert!(c.tick(t0 + Duration::from_millis(3500)).is_some());
    }

    #[test]
    fn the_thermal_guard_caps_harder_at_once_with_hysteresis() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        fresh(&mut c, t0, t0, cmd(1, None, 60.0));
        assert_eq!(c.on_temperatures(&hot(84.9)), None);
        assert_eq!(c.targets().cpu_w, None);
        let ev = c.on_temperatures(&hot(85.0));
        assert!(matches!(ev, Some(Event::GuardEngaged { .. })), "{ev:?}");
        let t = c.targets();
        // Guard level: min + 0.5 × (max − min).
        assert_eq!(t.cpu_w, Some(110.0));
        assert_eq!(t.gpu_w, vec![Some(200.0)]);
        assert!(t.guard);
        // Cooling a little is not enough (hysteresis), nor is silence.
        assert_eq!(c.on_temperatures(&hot(81.0)), None);
        assert_eq!(c.on_temperatures(&[]), None);
        assert_eq!(c.targets().cpu_w, Some(110.0), "held, not stepped");
        // Below limit − margin − hysteresis = 80 °C it lets go.
        assert!(matches!(
            c.on_temperatures(&hot(79.5)),
            Some(Event::GuardReleased { .. })
        ));
        assert_eq!(c.targets().cpu_w, None);
    }

    #[test]
    fn a_guard_that_does_not_cool_steps_down_to_the_hardware_minimum() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        fresh(&mut c, t0, t0, cmd(1, Some(400.0), 60.0)); // CPU 60 W, below the 110 W guard level
        c.on_temperatures(&hot(88.0));
        assert_eq!(c.targets().cpu_w, Some(60.0));
        c.on_temperatures(&hot(88.0)); // 0.25 → 65 W: the 60 W cap still rules
        assert_eq!(c.targets().cpu_w, Some(60.0));
        c.on_temperatures(&hot(88.0)); // 0.0 → the minimum
        assert_eq!(c.targets().cpu_w, Some(20.0));
        assert_eq!(c.targets().gpu_w, vec![Some(100.0)]);
        c.on_temperatures(&hot(88.0));
        assert_eq!(c.targets().cpu_w, Some(20.0), "never below the minimum");
        c.on_temperatures(&hot(60.0));
        assert_eq!(c.targets().cpu_w, Some(60.0), "the controller's cap again");
    }

    #[test]
    fn the_guard_never_raises_a_lower_controller_cap() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        fresh(&mut c, t0, t0, cmd(1, Some(400.0), 60.0)); // CPU 60 W
        c.on_temperatures(&hot(95.0));
        assert_eq!(c.targets().cpu_w, Some(60.0));
    }

    #[test]
    fn a_node_without_actuators_reports_no_cap() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), Capabilities::default());
        fresh(&mut c, t0, t0, cmd(1, Some(400.0), 60.0));
        let t = c.targets();
        assert_eq!((t.cpu_w, t.server_cap_w), (None, None));
    }

    fn refused(out: CommandOutcome) -> Refusal {
        match out {
            CommandOutcome::Refused { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn stale_future_retained_and_over_long_caps_are_refused_and_change_nothing() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        let mut old = cmd(1, Some(300.0), 10.0);
        old.ts = wall0() - chrono::Duration::seconds(10);
        assert!(matches!(
            refused(deliver(&mut c, t0, t0, &old, false)),
            Refusal::Stale { .. }
        ));
        let mut ahead = cmd(2, Some(300.0), 10.0);
        ahead.ts = wall0() + chrono::Duration::seconds(31);
        let why = refused(deliver(&mut c, t0, t0, &ahead, false));
        assert!(why.to_string().contains("future"), "{why}");
        let mut retained = cmd(3, Some(300.0), 10.0);
        retained.ts = wall0();
        assert_eq!(
            refused(deliver(&mut c, t0, t0, &retained, true)),
            Refusal::Retained
        );
        let long = refused(fresh(&mut c, t0, t0, cmd(4, Some(300.0), 86_400.0)));
        assert!(long.to_string().contains("maximum 3600"), "{long}");
        assert_eq!(c.targets().cpu_w, None, "nothing changed");
        assert_eq!(c.lease_remaining(t0), None);
        // Within the skew, and a little late, is fine.
        ahead.ts = wall0() + chrono::Duration::seconds(29);
        assert!(matches!(
            deliver(&mut c, t0, t0, &ahead, false),
            CommandOutcome::Accepted { seq: 2, .. }
        ));
    }

    #[test]
    fn a_late_cap_holds_only_until_its_ts_plus_its_lease() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        let mut late = cmd(1, Some(300.0), 10.0);
        late.ts = wall0() - chrono::Duration::seconds(4);
        deliver(&mut c, t0, t0, &late, false);
        assert_eq!(c.lease_remaining(t0), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_new_epoch_resets_seq_and_an_old_epoch_is_refused_while_its_lease_runs() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        let now_ms = wall0().timestamp_millis() as u64;
        let with = |seq, epoch, cap_w| CapCommand {
            epoch: Some(epoch),
            ..cmd(seq, Some(cap_w), 600.0)
        };
        // A stranger with the highest seq and a lease as long as allowed.
        assert!(matches!(
            fresh(&mut c, t0, t0, with(u64::MAX, now_ms - 60_000, 500.0)),
            CommandOutcome::Accepted { .. }
        ));
        // The real controller restarts: its epoch is its start time.
        let t1 = t0 + Duration::from_secs(1);
        let out = fresh(&mut c, t0, t1, with(now_ms, now_ms, 450.0));
        assert!(matches!(out, CommandOutcome::Accepted { .. }), "{out:?}");
        // 450 − 40 platform − 300 GPU.
        assert_eq!(c.targets().cpu_w, Some(110.0));
        // The old epoch is refused now, whatever its seq.
        let back = refused(fresh(
            &mut c,
            t0,
            t1,
            with(u64::MAX, now_ms - 60_000, 500.0),
        ));
        assert!(matches!(back, Refusal::OldEpoch { .. }), "{back}");
        // Without an epoch counts as epoch 0.
        let none = refused(fresh(&mut c, t0, t1, cmd(u64::MAX, Some(100.0), 600.0)));
        assert!(matches!(none, Refusal::OldEpoch { epoch: 0, .. }), "{none}");
        // An epoch from the future cannot be used to lock the agent.
        let future = refused(fresh(&mut c, t0, t1, with(1, now_ms + 3_600_000, 100.0)));
        assert!(
            matches!(future, Refusal::EpochFromTheFuture { .. }),
            "{future}"
        );
        assert_eq!(
            c.targets().cpu_w,
            Some(110.0),
            "still the real controller's"
        );
        // Within the epoch, seq still orders.
        let dup = fresh(&mut c, t0, t1, with(now_ms, now_ms, 200.0));
        assert!(matches!(dup, CommandOutcome::Ignored { .. }), "{dup:?}");
    }

    #[test]
    fn vm_quotas_ride_on_the_lease_and_lift_when_it_ends() {
        let t0 = Instant::now();
        let mut c = Controller::new(cfg(), caps());
        let m = CapCommand {
            vm_cpu_cores: Some(BTreeMap::from([("web1".to_owned(), 2.0)])),
            ..cmd(1, None, 2.0)
        };
        fresh(&mut c, t0, t0, m);
        assert_eq!(c.targets().vm_cpu_cores.get("web1"), Some(&2.0));
        c.on_temperatures(&hot(95.0));
        assert_eq!(
            c.targets().vm_cpu_cores.get("web1"),
            Some(&2.0),
            "the guard leaves VM quotas alone"
        );
        // A renewal without the VM removes its quota.
        fresh(&mut c, t0, t0 + Duration::from_secs(1), cmd(2, None, 2.0));
        assert!(c.targets().vm_cpu_cores.is_empty());
        let m = CapCommand {
            vm_cpu_cores: Some(BTreeMap::from([("web1".to_owned(), 1.0)])),
            ..cmd(3, None, 2.0)
        };
        fresh(&mut c, t0, t0 + Duration::from_secs(2), m);
        assert!(c.tick(t0 + Duration::from_secs(4)).is_some());
        assert!(c.targets().vm_cpu_cores.is_empty(), "expiry lifts quotas");
    }
}
