//! The controller's Prometheus metrics (`/metrics`, OpenMetrics text via
//! prometheus-client): plan cost and gain over the baseline, heat offered,
//! demanded and delivered, power and temperatures per node, solve time,
//! stale nodes, actions by kind and result, the state database's health,
//! and error counters of the MQTT, Modbus, time-series and state-database
//! paths.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::state::SiteState;

/// Label set naming a node.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node id.
    pub node: String,
}

/// Label set naming a consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    /// Consumer id.
    pub consumer: String,
}

/// Label set naming an error source.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// What failed: `mqtt`, `modbus`, `payload`, `timeseries`, `actuator`,
    /// `store` (the state database), `backlog` (agent messages dropped
    /// while the loop was busy).
    pub source: String,
}

/// Label set naming an action's kind and what came of it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `migrate`, `place`, `power_on`, `power_off`.
    pub kind: String,
    /// `done`, `failed`, `refused`, `skipped`, `not_configured`, or `held`
    /// (not started: the previous plan's actions were still running).
    pub result: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Cost of the latest plan over its horizon.
    pub plan_cost: GaugeF,
    /// Cost of the greedy baseline on the same snapshot.
    pub plan_baseline_cost: GaugeF,
    /// `baseline − cost` of the latest plan.
    pub plan_gain: GaugeF,
    /// Lower bound on the optimal cost of the latest snapshot.
    pub plan_lower_bound: GaugeF,
    /// Solve time of the latest plan, s.
    pub plan_solve_seconds: GaugeF,
    /// Plans made.
    pub plans: Counter,
    /// Control periods in which no plan could be made.
    pub plan_failures: Counter,
    /// Rungs of the planning ladder that failed before one planned.
    pub plan_fallbacks: Counter,
    /// Batch jobs whose work was done (they left the plan).
    pub batch_jobs_completed: Counter,
    /// Batch jobs planned against an effective deadline because they can no
    /// longer make their own (latest period).
    pub batch_jobs_overdue: Gauge,
    /// Batch work done, core-hours: measured by the hosts' CPU time, or
    /// estimated from the grants where a host reports no VM list.
    pub batch_work_core_h: Family<SourceLabel, Counter<f64, AtomicU64>>,
    /// Heat demand per consumer, kW.
    pub heat_demand_kw: Family<ConsumerLabel, GaugeF>,
    /// Heat offered per consumer, kW.
    pub heat_offered_kw: Family<ConsumerLabel, GaugeF>,
    /// Heat delivered (planned, first step) in total, kW.
    pub heat_delivered_kw: GaugeF,
    /// IT power (planned, first step), kW.
    pub it_power_kw: GaugeF,
    /// Latest measured power per node, W.
    pub node_power_w: Family<NodeLabel, GaugeF>,
    /// Latest CPU temperature per node, °C.
    pub node_temp_c: Family<NodeLabel, GaugeF>,
    /// Nodes whose telemetry is stale.
    pub stale_nodes: Gauge,
    /// Errors by source.
    pub errors: Family<SourceLabel, Counter>,
    /// Actions by kind and result.
    pub actions: Family<ActionLabel, Counter>,
    /// The facility bridge's counters since it started, by kind
    /// (`modbus_error`, `modbus_exception`, `malformed_payload`,
    /// `write_refused`, `consumer_stale`).
    pub bridge_events: Family<SourceLabel, GaugeF>,
    /// Modbus devices answering now.
    pub devices_online: Gauge,
    /// Consumers whose demand is stale now.
    pub consumers_stale: Gauge,
    /// 1 while the state database takes writes, 0 after a failed write
    /// (until one succeeds again).
    pub state_store_ok: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("phoenix");
        let m = Self {
            plan_cost: GaugeF::default(),
            plan_baseline_cost: GaugeF::default(),
            plan_gain: GaugeF::default(),
            plan_lower_bound: GaugeF::default(),
            plan_solve_seconds: GaugeF::default(),
            plans: Counter::default(),
            plan_failures: Counter::default(),
            plan_fallbacks: Counter::default(),
            batch_jobs_completed: Counter::default(),
            batch_jobs_overdue: Gauge::default(),
            batch_work_core_h: Family::default(),
            heat_demand_kw: Family::default(),
            heat_offered_kw: Family::default(),
            heat_delivered_kw: GaugeF::default(),
            it_power_kw: GaugeF::default(),
            node_power_w: Family::default(),
            node_temp_c: Family::default(),
            stale_nodes: Gauge::default(),
            errors: Family::default(),
            actions: Family::default(),
            bridge_events: Family::default(),
            devices_online: Gauge::default(),
            consumers_stale: Gauge::default(),
            state_store_ok: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "plan_cost",
            "Cost of the latest plan over its horizon",
            m.plan_cost.clone(),
        );
        registry.register(
            "plan_baseline_cost",
            "Cost of the greedy baseline plan on the same snapshot",
            m.plan_baseline_cost.clone(),
        );
        registry.register(
            "plan_gain",
            "Baseline cost minus plan cost",
            m.plan_gain.clone(),
        );
        registry.register(
            "plan_lower_bound",
            "Proven lower bound on the optimal cost of the latest snapshot",
            m.plan_lower_bound.clone(),
        );
        registry.register_with_unit(
            "plan_solve",
            "Solve time of the latest plan",
            Unit::Seconds,
            m.plan_solve_seconds.clone(),
        );
        registry.register("plans", "Plans made", m.plans.clone());
        registry.register(
            "plan_failures",
            "Control periods in which no plan could be made",
            m.plan_failures.clone(),
        );
        registry.register(
            "plan_fallbacks",
            "Rungs of the planning ladder (relaxed deadlines, pending VMs left waiting, migration budget lifted) that failed before one planned",
            m.plan_fallbacks.clone(),
        );
        registry.register(
            "batch_jobs_completed",
            "Batch jobs whose work was done (they left the plan)",
            m.batch_jobs_completed.clone(),
        );
        registry.register(
            "batch_jobs_overdue",
            "Batch jobs planned against an effective deadline because they can no longer make their own",
            m.batch_jobs_overdue.clone(),
        );
        registry.register(
            "batch_work_core_h",
            "Batch work done, core-hours, by source (measured: the hosts' CPU time; estimated: the grants, for hosts without a VM list)",
            m.batch_work_core_h.clone(),
        );
        registry.register(
            "heat_demand_kw",
            "Heat demand per consumer (kW)",
            m.heat_demand_kw.clone(),
        );
        registry.register(
            "heat_offered_kw",
            "Heat offered per consumer (kW)",
            m.heat_offered_kw.clone(),
        );
        registry.register(
            "heat_delivered_kw",
            "Heat delivered, planned first step (kW)",
            m.heat_delivered_kw.clone(),
        );
        registry.register(
            "it_power_kw",
            "IT power, planned first step (kW)",
            m.it_power_kw.clone(),
        );
        registry.register(
            "node_power_w",
            "Measured power per node (W)",
            m.node_power_w.clone(),
        );
        registry.register(
            "node_temperature_c",
            "Hottest CPU temperature per node (°C)",
            m.node_temp_c.clone(),
        );
        registry.register(
            "stale_nodes",
            "Nodes whose telemetry is stale",
            m.stale_nodes.clone(),
        );
        registry.register("errors", "Errors by source", m.errors.clone());
        registry.register(
            "actions",
            "Actions carried out, by kind and result (done, failed, refused, skipped, not_configured, held)",
            m.actions.clone(),
        );
        registry.register(
            "bridge_events",
            "Facility bridge counters since it started (Modbus errors and exceptions, malformed payloads, refused writes, stale consumers)",
            m.bridge_events.clone(),
        );
        registry.register(
            "devices_online",
            "Modbus devices answering now",
            m.devices_online.clone(),
        );
        registry.register(
            "consumers_stale",
            "Consumers whose demand is stale now",
            m.consumers_stale.clone(),
        );
        registry.register(
            "state_store_ok",
            "1 while the state database takes writes, 0 after a failed write",
            m.state_store_ok.clone(),
        );
        m.state_store_ok.set(1);
        Self { registry, ..m }
    }

    /// Count one error of `source`.
    pub fn error(&self, source: &str) {
        self.errors
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc();
    }

    /// Count one action of `kind` with `result`.
    pub fn action(&self, kind: &str, result: &str) {
        self.actions
            .get_or_create(&ActionLabel {
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Refresh the gauges that mirror the site state.
    pub fn observe(&self, site: &SiteState) {
        let mut stale = 0;
        for (id, n) in &site.nodes {
            if n.stale {
                stale += 1;
            }
            let label = NodeLabel { node: id.clone() };
            if let Some(t) = &n.telemetry {
                if let Some(p) = t.power_w {
                    self.node_power_w.get_or_create(&label).set(p);
                }
                if let Some(c) = t.cpu_temp_c {
                    self.node_temp_c.get_or_create(&label).set(c);
                }
            }
        }
        self.stale_nodes.set(stale);
        for (id, c) in &site.consumers {
            let label = ConsumerLabel {
                consumer: id.clone(),
            };
            if let Some(d) = &c.demand {
                self.heat_demand_kw.get_or_create(&label).set(d.demand_kw);
            }
            if let Some(o) = c.offered_kw {
                self.heat_offered_kw.get_or_create(&label).set(o);
            }
        }
        if let Some(rec) = &site.latest_plan {
            let p = &rec.plan;
            self.plan_cost.set(p.objective.cost);
            if let Some(b) = p.baseline_cost {
                self.plan_baseline_cost.set(b);
                self.plan_gain.set(b - p.objective.cost);
            }
            if let Some(lb) = p.lower_bound {
                self.plan_lower_bound.set(lb);
            }
            self.plan_solve_seconds.set(p.solve_ms / 1000.0);
            let first = |v: &Vec<f64>| v.first().copied().unwrap_or(0.0);
            self.heat_delivered_kw
                .set(p.heat_kw.values().map(first).sum());
            self.it_power_kw
                .set(p.power_w.values().map(first).sum::<f64>() / 1000.0);
        }
    }

    /// Mirror the facility bridge's counters.
    pub fn observe_bridge(&self, f: &hvac_bridge::server::Figures) {
        for (kind, v) in [
            ("modbus_error", f.modbus_errors),
            ("modbus_exception", f.modbus_exceptions),
            ("malformed_payload", f.malformed_payloads),
            ("write_refused", f.writes_refused),
            ("consumer_stale", f.stale_events),
            ("write_applied", f.writes_applied),
            ("write_pending", f.writes_pending),
            ("write_expired", f.writes_expired),
            ("write_refused_by_device", f.writes_refused_by_device),
            ("supply_temp_ignored", f.supply_temps_ignored),
        ] {
            self.bridge_events
                .get_or_create(&SourceLabel {
                    source: kind.to_string(),
                })
                .set(f64::from(v));
        }
        self.devices_online.set(i64::from(f.devices_online));
        self.consumers_stale.set(i64::from(f.consumers_stale));
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_counted_by_kind_and_result() {
        let m = Metrics::new();
        m.action("power_off", "skipped");
        m.action("power_off", "skipped");
        m.action("migrate", "failed");
        let text = m.encode();
        assert!(
            text.contains(r#"phoenix_actions_total{kind="power_off",result="skipped"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"phoenix_actions_total{kind="migrate",result="failed"} 1"#),
            "{text}"
        );
    }
}
