//! From what the controller knows to what the planner needs: build a
//! `phoenix.snapshot/v1` from the configuration, the site state and the
//! consumers' demand.
//!
//! Stale nodes (no telemetry within `node_stale_after_s`, or an agent that
//! reported `offline`) are planned conservatively, never as if fresh: they
//! keep their on/off state (`can_switch = false`), the VMs on them stay put
//! (not migratable — nobody can coordinate a live migration with a host
//! that does not answer), and their memory is frozen at what those VMs use,
//! so no new VM is placed on them.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use scheduler::model::{HeatLoop, Server, Snapshot, Vm, SNAPSHOT_SCHEMA};
use scheduler::period::{self, Rung};

use super::config::ControllerConfig;
use super::state::SiteState;

/// A consumer's demand as the planner uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandView {
    /// Demand now, kW.
    pub now_kw: f64,
    /// Forecast, kW per `forecast_step_s`, starting now (may be empty).
    pub forecast_kw: Vec<f64>,
    /// Step of the forecast, s.
    pub forecast_step_s: f64,
    /// The consumer's own value of heat, per kWh, if it sent one.
    pub heat_value_per_kwh: Option<f64>,
}

impl DemandView {
    /// Demand at `offset_s` seconds from now: the forecast where it reaches,
    /// else the last known value.
    pub fn at(&self, offset_s: f64) -> f64 {
        if self.forecast_kw.is_empty() || self.forecast_step_s <= 0.0 {
            return self.now_kw;
        }
        let k = (offset_s / self.forecast_step_s).floor().max(0.0) as usize;
        self.forecast_kw
            .get(k)
            .or(self.forecast_kw.last())
            .copied()
            .unwrap_or(self.now_kw)
    }
}

/// Whether node `id` is stale at `now`.
pub fn is_stale(cfg: &ControllerConfig, site: &SiteState, id: &str, now: DateTime<Utc>) -> bool {
    let Some(n) = site.nodes.get(id) else {
        return true;
    };
    if !n.on {
        // An off node sends nothing; it is not stale for that.
        return false;
    }
    let fresh = n
        .last_seen
        .is_some_and(|t| (now - t).num_milliseconds() as f64 / 1000.0 <= cfg.node_stale_after_s);
    !(fresh && n.online)
}

/// The deadline a snapshot shows for `vm` (none for interactive VMs).
fn planned_deadline(
    cfg: &ControllerConfig,
    vm: &Vm,
    now: DateTime<Utc>,
    relax: bool,
) -> Option<DateTime<Utc>> {
    let (deadline, left) = (vm.deadline?, vm.work_core_h.unwrap_or(0.0));
    let (vcpus, period_s) = (f64::from(vm.vcpus), cfg.control_period_s);
    let own = period::overdue_deadline(now, deadline, left, vcpus, period_s).unwrap_or(deadline);
    Some(period::planning_deadline(
        now,
        own,
        left,
        vcpus,
        period_s,
        cfg.horizon_steps,
        relax,
    ))
}

/// Batch VMs that can no longer finish their work by their own deadline at
/// full speed (planned against [`period::overdue_deadline`]), in id order.
pub fn overdue(cfg: &ControllerConfig, site: &SiteState, now: DateTime<Utc>) -> Vec<String> {
    site.vms
        .values()
        .filter(|v| {
            v.deadline.is_some_and(|d| {
                period::overdue_deadline(
                    now,
                    d,
                    v.work_core_h.unwrap_or(0.0),
                    f64::from(v.vcpus),
                    cfg.control_period_s,
                )
                .is_some()
            })
        })
        .map(|v| v.id.clone())
        .collect()
}

/// Build the snapshot for the period starting at `now`, for one rung of
/// the period planner's fallback ladder: pending VMs left out when
/// `rung.with_pending` is false; batch deadlines as
/// [`period::planning_deadline`] shows them (a job that can no longer make
/// its own is planned against [`period::overdue_deadline`]).
pub fn build(
    cfg: &ControllerConfig,
    site: &SiteState,
    demand: &BTreeMap<String, DemandView>,
    now: DateTime<Utc>,
    rung: Rung,
) -> Snapshot {
    let step_s = cfg.control_period_s;
    let steps = cfg.horizon_steps;
    let electricity_price_per_kwh = (0..steps)
        .map(|t| {
            let at = now + Duration::milliseconds((t as f64 * step_s * 1000.0) as i64);
            cfg.prices.planning_price_at(at)
        })
        .collect();

    let mut servers = Vec::with_capacity(cfg.servers.len());
    for s in &cfg.servers {
        let stale = is_stale(cfg, site, &s.id, now);
        let on = site.nodes.get(&s.id).is_some_and(|n| n.on);
        let mut mem_gib = s.mem_gib;
        if stale {
            // Freeze capacity at current use: nothing new lands here.
            let used: f64 = site
                .vms
                .values()
                .filter(|v| v.host.as_deref() == Some(s.id.as_str()))
                .map(|v| v.mem_gib)
                .sum();
            mem_gib = used.min(s.mem_gib).max(f64::MIN_POSITIVE);
        }
        servers.push(Server {
            id: s.id.clone(),
            cores: s.cores,
            mem_gib,
            power_curve_w: s.curve_w().unwrap_or_default(),
            off_w: s.off_w,
            on,
            can_switch: s.can_switch && !stale,
            inlet_c: s.inlet_c,
            r_k_per_w: s.r_k_per_w,
            temp_limit_c: s.temp_limit_c,
            heat_loop: s.heat_loop.clone(),
            recovery: s.recovery,
        });
    }

    let stale_hosts: Vec<&str> = servers
        .iter()
        .filter(|s| is_stale(cfg, site, &s.id, now))
        .map(|s| s.id.as_str())
        .collect();
    let vms = site
        .vms
        .values()
        .filter(|v| rung.with_pending || v.host.is_some())
        .map(|v| {
            let mut v = v.clone();
            if v.host.as_deref().is_some_and(|h| stale_hosts.contains(&h)) {
                v.migratable = false;
            }
            v.deadline = planned_deadline(cfg, &v, now, rung.relax_deadlines);
            v
        })
        .collect();

    let loops = cfg
        .loops
        .iter()
        .map(|l| {
            let d = demand.get(&l.consumer);
            HeatLoop {
                id: l.id.clone(),
                demand_kw: (0..steps)
                    .map(|t| d.map_or(0.0, |d| d.at(t as f64 * step_s)).max(0.0))
                    .collect(),
                heat_value_per_kwh: d
                    .and_then(|d| d.heat_value_per_kwh)
                    .or(l.heat_value_per_kwh)
                    .unwrap_or(cfg.prices.heat_value_per_kwh),
                max_kw: l.max_kw,
            }
        })
        .collect();

    Snapshot {
        schema: SNAPSHOT_SCHEMA.to_string(),
        site: site.site.clone(),
        time: now,
        step_s,
        steps,
        electricity_price_per_kwh,
        servers,
        vms,
        images: cfg.images.clone(),
        loops,
        policy: cfg.policy.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::tests::node;
    use chrono::TimeZone;
    use scheduler::model::{Vm, VmKind};

    use crate::controller::config::tests::TEST_CFG as CFG;

    fn cfg() -> ControllerConfig {
        let c: ControllerConfig = toml::from_str(CFG).expect("parses");
        c.validate().expect("valid");
        c
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 16, 30, 0).unwrap()
    }

    fn site(b_last_seen: DateTime<Utc>) -> SiteState {
        let mut s = SiteState {
            site: "t".into(),
            ..Default::default()
        };
        for (id, seen) in [("a", now()), ("b", b_last_seen)] {
            s.nodes.insert(id.into(), node(id, Some(seen)));
        }
        s.vms.insert(
            "v1".into(),
            Vm {
                id: "v1".into(),
                vcpus: 2,
                mem_gib: 4.0,
                image: None,
                host: Some("b".into()),
                kind: VmKind::Interactive,
                load: Some(0.5),
                work_core_h: None,
                deadline: None,
                migratable: true,
            },
        );
        s
    }

    #[test]
    fn prices_follow_the_hourly_tariff_across_the_horizon() {
        let snap = build(&cfg(), &site(now()), &BTreeMap::new(), now(), Rung::FULL);
        // 16:30, 16:45 → 0.21; 17:00, 17:15 → 0.30.
        assert_eq!(snap.electricity_price_per_kwh, vec![0.21, 0.21, 0.30, 0.30]);
        assert_eq!(
            snap.servers[0].power_curve_w[0], 93.7,
            "model curve resolved"
        );
        scheduler::solve(&snap, &Default::default()).expect("the snapshot is plannable");
    }

    #[test]
    fn prices_follow_the_live_series_plus_the_carbon_price_and_fall_back_past_it() {
        let mut c = cfg();
        c.prices.carbon_price_per_t = 50.0;
        // Known for the first half hour from 16:30: 0.05 at 200 g/kWh (so
        // 0.06 planned), then the same time of day of its only day does not
        // exist: the hourly tariff.
        let series = protocol::series::parse_csv(&format!(
            "time,price_per_kwh,carbon_g_per_kwh\n{},0.05,200\n{},-0.01,100\n",
            now().to_rfc3339(),
            (now() + Duration::minutes(15)).to_rfc3339()
        ))
        .unwrap();
        c.prices.live.replace(series, "test", now());
        let snap = build(&c, &site(now()), &BTreeMap::new(), now(), Rung::FULL);
        let p = &snap.electricity_price_per_kwh;
        assert!(
            (p[0] - 0.06).abs() < 1e-12 && (p[1] - (-0.005)).abs() < 1e-12,
            "{p:?}"
        );
        assert_eq!(p[2], 0.30, "past the series: the configured tariff");
    }

    #[test]
    fn demand_follows_the_forecast_then_holds_its_last_value() {
        let mut d = BTreeMap::new();
        d.insert(
            "greenhouse".to_string(),
            DemandView {
                now_kw: 5.0,
                forecast_kw: vec![5.0, 6.0],
                forecast_step_s: 1800.0,
                heat_value_per_kwh: Some(0.11),
            },
        );
        let snap = build(&cfg(), &site(now()), &d, now(), Rung::FULL);
        assert_eq!(snap.loops[0].demand_kw, vec![5.0, 5.0, 6.0, 6.0]);
        assert_eq!(snap.loops[0].heat_value_per_kwh, 0.11);
        let none = build(&cfg(), &site(now()), &BTreeMap::new(), now(), Rung::FULL);
        assert_eq!(
            none.loops[0].demand_kw,
            vec![0.0; 4],
            "no demand known: none planned"
        );
        assert_eq!(none.loops[0].heat_value_per_kwh, 0.09);
    }

    #[test]
    fn a_stale_node_is_planned_conservatively() {
        let old = now() - Duration::seconds(300);
        let c = cfg();
        let s = site(old);
        assert!(is_stale(&c, &s, "b", now()));
        assert!(!is_stale(&c, &s, "a", now()));
        let snap = build(&c, &s, &BTreeMap::new(), now(), Rung::FULL);
        let b = &snap.servers[1];
        assert!(!b.can_switch, "a stale node keeps its state");
        assert_eq!(b.mem_gib, 4.0, "capacity frozen at what its VMs use");
        assert!(!snap.vms[0].migratable, "its VMs stay put");
        let fresh = build(&c, &site(now()), &BTreeMap::new(), now(), Rung::FULL);
        assert!(fresh.servers[1].can_switch && fresh.vms[0].migratable);
    }

    #[test]
    fn bad_controller_sections_name_the_key() {
        let cases = [
            (
                CFG.replace("model = \"hp-ml110-g5\"", "model = \"nope\""),
                "model",
            ),
            (CFG.replace("loop = \"gh1\"", "loop = \"gh9\""), "loop"),
            (
                CFG.replace("horizon_steps = 4", "horizon_steps = 0"),
                "horizon_steps",
            ),
            (
                CFG.replace("[0.12,0.12,0.12,0.12,", "[0.12,0.12,0.12,"),
                "electricity_per_kwh",
            ),
            (CFG.replace("id = \"b\"", "id = \"a\""), "duplicate"),
        ];
        for (text, needle) in cases {
            let c: ControllerConfig = toml::from_str(&text).expect("parses");
            let err = c.validate().expect_err(needle).to_string();
            assert!(err.contains(needle), "{err} should name {needle}");
        }
        let typo = CFG.replace("recovery = 0.85", "recovry = 0.85");
        let err = toml::from_str::<ControllerConfig>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovry"), "{err}");
    }
}
