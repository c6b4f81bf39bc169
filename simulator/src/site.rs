//! A scenario resolved into the run's fixed parts: server groups with their
//! physics, server ids, loops, consumers, weather and tariff.

use std::collections::HashMap;

use scheduler::curve::PowerCurve;
use scheduler::model::Server;

use crate::error::ScenarioError;
use crate::physics::greenhouse::Greenhouse;
use crate::physics::heat::Lift;
use crate::physics::server::GroupPhysics;
use crate::scenario::{ConsumerKind, Hourly, Scenario};
use crate::weather::Weather;

/// A heat loop of the run.
#[derive(Debug, Clone)]
pub struct LoopModel {
    /// Loop id.
    pub id: String,
    /// Intake limit, kW.
    pub max_kw: f64,
    /// Index of the consumer it feeds.
    pub consumer: usize,
    /// Heat pump, if any.
    pub lift: Lift,
    /// Temperature the consumer receives, °C.
    pub supply_c: f64,
}

/// How a consumer's demand arises.
#[derive(Debug, Clone)]
pub enum Demand {
    /// Greenhouse physics.
    Greenhouse(Box<Greenhouse>),
    /// A fixed profile, kW.
    Profile(Hourly),
}

/// A heat consumer of the run.
#[derive(Debug, Clone)]
pub struct ConsumerModel {
    /// Consumer id.
    pub id: String,
    /// Its demand.
    pub demand: Demand,
    /// Value of its heat, per kWh.
    pub heat_value_per_kwh: f64,
    /// Index of the loop feeding it, if any.
    pub heat_loop: Option<usize>,
}

/// The fixed parts of a run.
#[derive(Debug, Clone)]
pub struct Site {
    /// Group physics, in scenario order.
    pub groups: Vec<GroupPhysics>,
    /// Group names.
    pub group_names: Vec<String>,
    /// Memory per group, GiB.
    pub group_mem_gib: Vec<f64>,
    /// Group of each server.
    pub server_group: Vec<usize>,
    /// Server ids.
    pub server_ids: Vec<String>,
    /// The snapshot's server records (with `on` to be filled in).
    pub snapshot_servers: Vec<Server>,
    /// Loops.
    pub loops: Vec<LoopModel>,
    /// Consumers.
    pub consumers: Vec<ConsumerModel>,
    /// Weather.
    pub weather: Weather,
}

impl Site {
    /// Resolve `sc` (already validated).
    pub fn build(sc: &Scenario) -> Result<Self, ScenarioError> {
        let loop_index: HashMap<&str, usize> = sc
            .loops
            .iter()
            .enumerate()
            .map(|(i, l)| (l.id.as_str(), i))
            .collect();
        let mut groups = Vec::new();
        let mut group_names = Vec::new();
        let mut group_mem_gib = Vec::new();
        let mut server_group = Vec::new();
        let mut server_ids = Vec::new();
        let mut snapshot_servers = Vec::new();
        for (gi, g) in sc.servers.iter().enumerate() {
            let r = g.resolve(gi)?;
            let curve = PowerCurve::new(&r.curve_w).ok_or_else(|| {
                ScenarioError::invalid(format!("servers[{gi}].power_curve_w"), "needs 11 values")
            })?;
            let thermal_w = (g.temp_limit_c - g.inlet_c) / g.r_k_per_w;
            let mut cap_w = g.cap_w.unwrap_or(f64::INFINITY);
            if sc.sim.thermal_guard {
                cap_w = cap_w.min(thermal_w);
            }
            let u_cap = curve.max_util_within(cap_w).unwrap_or(0.0);
            let heat_loop = g
                .heat_loop
                .as_deref()
                .and_then(|l| loop_index.get(l).copied());
            groups.push(GroupPhysics {
                curve,
                cores: f64::from(r.cores),
                off_w: g.off_w,
                cap_w,
                u_cap,
                r_k_per_w: g.r_k_per_w,
                c_j_per_k: g.thermal_capacity_j_per_k,
                inlet_c: g.inlet_c,
                temp_limit_c: g.temp_limit_c,
                recovery: g.recovery.unwrap_or(0.0),
                heat_loop,
            });
            group_names.push(g.name.clone());
            group_mem_gib.push(r.mem_gib);
            // The planner knows a configured cap as the steady-state temperature
            // limit it implies: T_in + R·min(cap, thermal limit).
            let limit_c = match g.cap_w {
                Some(cap) if cap < thermal_w => g.inlet_c + g.r_k_per_w * cap,
                _ => g.temp_limit_c,
            };
            let planner_limit_c = planner_limit_c(g.inlet_c, limit_c);
            for k in 0..g.count {
                let id = format!("{}-{k:04}", g.name);
                server_group.push(gi);
                server_ids.push(id.clone());
                snapshot_servers.push(Server {
                    id,
                    cores: r.cores,
                    mem_gib: r.mem_gib,
                    power_curve_w: r.curve_w.to_vec(),
                    off_w: g.off_w,
                    on: g.on,
                    can_switch: g.can_switch,
                    inlet_c: g.inlet_c,
                    r_k_per_w: g.r_k_per_w,
                    temp_limit_c: planner_limit_c,
                    heat_loop: g.heat_loop.clone(),
                    recovery: g.recovery.unwrap_or(0.0),
                });
            }
        }

        let consumer_index: HashMap<&str, usize> = sc
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let loops: Vec<LoopModel> = sc
            .loops
            .iter()
            .map(|l| LoopModel {
                id: l.id.clone(),
                max_kw: l.max_kw,
                consumer: consumer_index[l.consumer.as_str()],
                lift: Lift {
                    cop: l.heat_pump.as_ref().map(|hp| hp.cop(l.supply_c)),
                },
                supply_c: l.heat_pump.as_ref().map_or(l.supply_c, |hp| hp.supply_c),
            })
            .collect();
        let consumers = sc
            .consumers
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let demand = match c.kind {
                    ConsumerKind::Profile => {
                        Demand::Profile(c.demand_kw.clone().unwrap_or(Hourly::Flat(0.0)))
                    }
                    ConsumerKind::Greenhouse => {
                        let night = c.setpoint_night_c.unwrap_or(17.0);
                        Demand::Greenhouse(Box::new(Greenhouse {
                            area_m2: c.area_m2.unwrap_or(0.0),
                            u_w_per_m2k: c.u_w_per_m2k.unwrap_or(0.0),
                            infiltration_w_per_k: c.infiltration_w_per_k,
                            thermal_mass_j_per_k: c.thermal_mass_j_per_k,
                            solar_gain_factor: c.solar_gain_factor,
                            setpoint_day_c: c.setpoint_day_c.unwrap_or(night),
                            setpoint_night_c: night,
                            day_start_h: c.day_start_h,
                            day_end_h: c.day_end_h,
                            vent_margin_k: c.vent_margin_k,
                            indoor_c: night,
                            screen: c.screen.map(|s| s.build()),
                            screen_closed: false,
                        }))
                    }
                };
                ConsumerModel {
                    id: c.id.clone(),
                    demand,
                    heat_value_per_kwh: c
                        .heat_value_per_kwh
                        .unwrap_or(sc.prices.heat_value_per_kwh),
                    heat_loop: loops.iter().position(|l| l.consumer == ci),
                }
            })
            .collect();
        let span_s =
            sc.sim.days * 86_400.0 + sc.sim.control_period_s * (sc.sim.horizon_steps as f64 + 1.0);
        let epw = sc.epw_path();
        let weather = Weather::new(
            &sc.weather,
            epw.as_deref(),
            sc.sim.start,
            span_s,
            sc.sim.seed,
        )?;
        Ok(Self {
            groups,
            group_names,
            group_mem_gib,
            server_group,
            server_ids,
            snapshot_servers,
            loops,
            consumers,
            weather,
        })
    }
}

/// The temperature limit shown to the planner for a server whose physical
/// limit is `limit_c`. The planner accepts each rule to a relative tolerance
/// of [`scheduler::instance::EPS`], so it may load a server to
/// `(limit − T_in)/R · (1 + EPS)` watts; the physics caps it at the limit
/// itself, and batch work planned at a server's limit would then fall short
/// by that tolerance, period after period, until a job misses its deadline by
/// a few millionths of a core-hour (and the planner, shown that residue, finds
/// no plan). The limit it is shown is shrunk by twice the tolerance (once
/// more than it allows, so that rounding cannot put it back above the cap),
/// so that a plan at its limit is within the physical cap.
pub fn planner_limit_c(inlet_c: f64, limit_c: f64) -> f64 {
    inlet_c + (limit_c - inlet_c) / (1.0 + 2.0 * scheduler::instance::EPS)
}
