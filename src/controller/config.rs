//! The controller's section of the site file: `[controller]` and its
//! sub-tables. The rest of the file (`[mqtt]`, `[[devices]]`,
//! `[[consumers]]`, …) belongs to the facility bridge; the controller reads
//! the whole file as `hvac_bridge::config::SiteConfig<ControllerConfig>`.
//! Every table refuses unknown keys, so a typo is an error naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::influx::InfluxConfig;
use scheduler::model::{Policy, CURVE_POINTS};

/// Why a controller section was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("[controller] {place}: {problem}")]
pub struct ConfigError {
    /// Where (`servers[3].power_curve_w`, `prices.electricity_per_kwh`).
    pub place: String,
    /// What is wrong.
    pub problem: String,
}

fn bad(place: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        place: place.into(),
        problem: problem.into(),
    }
}

/// What the controller does with a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Apply every plan.
    #[default]
    Apply,
    /// Compute and show plans; apply nothing.
    DryRun,
    /// Plans wait for an operator's approval through the API.
    Approval,
}

/// `[controller]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Folder of the state database (VMs and hosts, servers' power states,
    /// plans and approvals, the action journal): required; it must exist
    /// and be writable when the controller starts (docs/controller.md).
    pub state_dir: PathBuf,
    /// Control period, s (one plan per period).
    #[serde(default = "d_period")]
    pub control_period_s: f64,
    /// Steps in the planning horizon (each one control period long).
    #[serde(default = "d_steps")]
    pub horizon_steps: usize,
    /// `optimizer` (default) or `greedy`.
    #[serde(default = "d_solver")]
    pub solver: String,
    /// Time limit of one solve, ms.
    #[serde(default = "d_time_limit")]
    pub time_limit_ms: u64,
    /// What to do with plans.
    #[serde(default)]
    pub mode: Mode,
    /// Lease of the caps sent to agents, s (default 3 control periods):
    /// an agent that hears nothing for this long returns to its safe cap.
    #[serde(default)]
    pub lease_s: Option<f64>,
    /// Headroom above the planned power in a cap, as a share (0.05 = 5 %).
    #[serde(default = "d_headroom")]
    pub cap_headroom: f64,
    /// A node whose telemetry is older than this is stale, s.
    #[serde(default = "d_stale")]
    pub node_stale_after_s: f64,
    /// Most servers switched on in one control period.
    #[serde(default = "d_power_ons")]
    pub max_power_ons_per_period: usize,
    /// Tariffs.
    pub prices: Prices,
    /// Planning policy (migration budget and costs, overcommit).
    #[serde(default)]
    pub policy: Policy,
    /// HTTP API and page.
    #[serde(default)]
    pub api: ApiConfig,
    /// Time-series database (optional).
    #[serde(default)]
    pub influx: Option<InfluxConfig>,
    /// How decisions reach the machines.
    #[serde(default)]
    pub actuator: ActuatorConfig,
    /// The servers.
    pub servers: Vec<ServerConfig>,
    /// The heat loops.
    #[serde(default)]
    pub loops: Vec<LoopConfig>,
    /// Base images whose memory VMs on one host share.
    #[serde(default)]
    pub images: Vec<scheduler::model::Image>,
    /// How the VM inventory follows the hosts' reports.
    #[serde(default)]
    pub inventory: super::inventory::InventoryConfig,
}

fn d_period() -> f64 {
    900.0
}
fn d_steps() -> usize {
    8
}
fn d_solver() -> String {
    "optimizer".into()
}
fn d_time_limit() -> u64 {
    2_000
}
fn d_headroom() -> f64 {
    0.05
}
fn d_stale() -> f64 {
    60.0
}
fn d_power_ons() -> usize {
    4
}

/// A price: one number, or 24 hourly values (UTC hours 0–23).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Tariff {
    /// The same price all day.
    Flat(f64),
    /// One price per UTC hour.
    Hourly(Vec<f64>),
}

impl Tariff {
    /// The price at UTC hour `hour`.
    pub fn at_hour(&self, hour: u32) -> f64 {
        match self {
            Tariff::Flat(p) => *p,
            Tariff::Hourly(v) => v[(hour as usize) % v.len()],
        }
    }
}

/// `[controller.prices]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Electricity, per kWh.
    pub electricity_per_kwh: Tariff,
    /// Value of delivered heat, per kWh (a consumer's own value overrides it).
    #[serde(default)]
    pub heat_value_per_kwh: f64,
}

/// `[controller.api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address.
    #[serde(default = "d_listen")]
    pub listen: SocketAddr,
    /// Bearer token for writes; taken from the environment variable named by
    /// `token_env` when that is set instead.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn d_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: d_listen(),
            token: None,
            token_env: None,
        }
    }
}

/// How decisions reach the machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActuatorKind {
    /// Decisions are recorded as done (for the demo and simulations).
    #[default]
    Simulated,
    /// A command template per action.
    Exec,
}

/// `[controller.actuator]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorConfig {
    /// `simulated` or `exec`.
    #[serde(default)]
    pub kind: ActuatorKind,
    /// Time limit of one command, s (default 600).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Retries after a failed command (default 1).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Live-migrate `{vm}` from `{from}` to `{to}`.
    #[serde(default)]
    pub migrate: Option<String>,
    /// Start pending `{vm}` on `{to}`.
    #[serde(default)]
    pub place: Option<String>,
    /// Switch on `{node}`.
    #[serde(default)]
    pub power_on: Option<String>,
    /// Switch off `{node}`.
    #[serde(default)]
    pub power_off: Option<String>,
    /// Most actions running at once (default 4).
    #[serde(default)]
    pub max_concurrent_actions: Option<usize>,
    /// How long a placement or migration onto a server just switched on
    /// waits for its agent to report online, s (default 300).
    #[serde(default)]
    pub online_wait_s: Option<f64>,
    /// How long a power-off waits for the host's agent to stop reporting
    /// VMs (when its telemetry lists them), s (default 60).
    #[serde(default)]
    pub vacate_wait_s: Option<f64>,
    /// Time limit of one migration attempt before the VM's memory counts, s
    /// (default 300).
    #[serde(default)]
    pub migrate_timeout_base_s: Option<f64>,
    /// Seconds added to a migration's time limit per GiB of the VM's memory
    /// (default 10).
    #[serde(default)]
    pub migrate_timeout_s_per_gib: Option<f64>,
}

impl ActuatorConfig {
    /// Check the time limits, the concurrency bound and each template's
    /// placeholders (a misspelt `{host}` would reach the tool as it is).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let place = |k: &str| format!("actuator.{k}");
        for (key, v) in [
            ("timeout_s", self.timeout_s),
            ("online_wait_s", self.online_wait_s),
            ("vacate_wait_s", self.vacate_wait_s),
            ("migrate_timeout_base_s", self.migrate_timeout_base_s),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(bad(place(key), "must be a positive number of seconds"));
            }
        }
        if self
            .migrate_timeout_s_per_gib
            .is_some_and(|v| !(v.is_finite() && v >= 0.0))
        {
            return Err(bad(place("migrate_timeout_s_per_gib"), "must be ≥ 0"));
        }
        if self.max_concurrent_actions == Some(0) {
            return Err(bad(place("max_concurrent_actions"), "must be at least 1"));
        }
        for (key, template, allowed) in [
            ("migrate", &self.migrate, &["vm", "from", "to"][..]),
            ("place", &self.place, &["vm", "to"][..]),
            ("power_on", &self.power_on, &["node"][..]),
            ("power_off", &self.power_off, &["node"][..]),
        ] {
            if let Some(t) = template {
                check_placeholders(t, allowed).map_err(|p| bad(place(key), p))?;
            }
        }
        Ok(())
    }
}

/// Every `{name}` in `template` must be one of `allowed`.
fn check_placeholders(template: &str, allowed: &[&str]) -> Result<(), String> {
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let tail = &rest[i + 1..];
        let Some(j) = tail.find('}') else {
            return Err("a `{` without its `}`".into());
        };
        let name = &tail[..j];
        if !allowed.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}` (this action fills {})",
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &tail[j + 1..];
    }
    Ok(())
}

/// `[[controller.servers]]`: static facts of one server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Node id (its agent's `--node`).
    pub id: String,
    /// A SPECpower model name (reference/physics.md), or give `power_curve_w`.
    #[serde(default)]
    pub model: Option<String>,
    /// 11 points at 0, 10, …, 100 % load, W.
    #[serde(default)]
    pub power_curve_w: Option<Vec<f64>>,
    /// Physical cores.
    pub cores: u32,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Power when off, W.
    #[serde(default)]
    pub off_w: f64,
    /// Inlet temperature, °C.
    pub inlet_c: f64,
    /// Thermal resistance component→inlet, K/W.
    pub r_k_per_w: f64,
    /// Component temperature limit, °C.
    pub temp_limit_c: f64,
    /// Heat loop, if any.
    #[serde(default, rename = "loop")]
    pub heat_loop: Option<String>,
    /// Share of its power recovered into the loop.
    #[serde(default)]
    pub recovery: f64,
    /// Whether the controller may switch it on and off.
    #[serde(default = "yes")]
    pub can_switch: bool,
}

fn yes() -> bool {
    true
}

impl ServerConfig {
    /// The power curve, from `power_curve_w` or the named model.
    pub fn curve_w(&self) -> Option<Vec<f64>> {
        self.power_curve_w.clone().or_else(|| {
            self.model
                .as_deref()
                .and_then(scheduler::generate::spec_model)
                .map(|m| m.curve_w.to_vec())
        })
    }
}

/// `[[controller.loops]]`: a heat loop and the consumer it feeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Loop id (servers' `loop`).
    pub id: String,
    /// Consumer id (the `<id>` of `consumer/<id>/…`).
    pub consumer: String,
    /// Intake limit, kW.
    pub max_kw: f64,
    /// Value of its heat, per kWh (default: `prices.heat_value_per_kwh`).
    #[serde(default)]
    pub heat_value_per_kwh: Option<f64>,
    /// Supply temperature the loop delivers at, °C (for offers).
    #[serde(default)]
    pub supply_temp_c: Option<f64>,
}

impl ControllerConfig {
    /// The lease of caps, s.
    pub fn lease_s(&self) -> f64 {
        self.lease_s.unwrap_or(3.0 * self.control_period_s)
    }

    /// Check what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite_pos = |place: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(place, format!("{v} must be a positive number")))
            }
        };
        self.inventory
            .validate()
            .map_err(|(key, problem)| bad(key, problem))?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(bad(
                "state_dir",
                "must name the folder of the state database",
            ));
        }
        finite_pos("control_period_s", self.control_period_s)?;
        if self.horizon_steps == 0 || self.horizon_steps > 2016 {
            return Err(bad("horizon_steps", "must be 1–2016"));
        }
        self.solver
            .parse::<scheduler::SolverKind>()
            .map_err(|e| bad("solver", e))?;
        if let Some(l) = self.lease_s {
            finite_pos("lease_s", l)?;
        }
        if !(self.cap_headroom.is_finite() && (0.0..=1.0).contains(&self.cap_headroom)) {
            return Err(bad("cap_headroom", "must be in [0, 1]"));
        }
        finite_pos("node_stale_after_s", self.node_stale_after_s)?;
        match &self.prices.electricity_per_kwh {
            Tariff::Flat(p) if !p.is_finite() => {
                return Err(bad("prices.electricity_per_kwh", "not a finite number"))
            }
            Tariff::Hourly(v) if v.len() != 24 || v.iter().any(|p| !p.is_finite()) => {
                return Err(bad(
                    "prices.electricity_per_kwh",
                    format!(
                        "needs one number or 24 finite hourly values, got {}",
                        v.len()
                    ),
                ))
            }
            _ => {}
        }
        if self.servers.is_empty() {
            return Err(bad("servers", "at least one server is needed"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let place = |k: &str| format!("servers[{i}] ({}).{k}", s.id);
            if !protocol::topics::valid_level(&s.id) {
                return Err(bad(place("id"), "must be a valid MQTT topic level"));
            }
            if !ids.insert(s.id.as_str()) {
                return Err(bad(place("id"), "duplicate server id"));
            }
            match (&s.model, &s.power_curve_w) {
                (Some(_), Some(_)) => {
                    return Err(bad(place("model"), "give model or power_curve_w, not both"))
                }
                (None, None) => {
                    return Err(bad(place("power_curve_w"), "give model or power_curve_w"))
                }
                (Some(m), None) if scheduler::generate::spec_model(m).is_none() => {
                    return Err(bad(
                        place("model"),
                        format!("unknown SPECpower model `{m}`"),
                    ))
                }
                (None, Some(c)) if c.len() != CURVE_POINTS => {
                    return Err(bad(
                        place("power_curve_w"),
                        format!("needs {CURVE_POINTS} points, got {}", c.len()),
                    ))
                }
                _ => {}
            }
            if let Some(l) = &s.heat_loop {
                if !self.loops.iter().any(|lp| &lp.id == l) {
                    return Err(bad(place("loop"), format!("unknown loop `{l}`")));
                }
            }
        }
        self.actuator.validate()?;
        for (i, l) in self.loops.iter().enumerate() {
            if !(l.max_kw.is_finite() && l.max_kw >= 0.0) {
                return Err(bad(format!("loops[{i}] ({}).max_kw", l.id), "must be ≥ 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// A small valid controller section: two servers, one loop.
    pub(crate) const TEST_CFG: &str = r#"
        state_dir = "/var/lib/phoenix"
        control_period_s = 900
        horizon_steps = 4
        node_stale_after_s = 60
        [prices]
        electricity_per_kwh = [0.12,0.12,0.12,0.12,0.12,0.12,0.12,0.21,0.21,0.21,0.21,0.21,
                               0.21,0.21,0.21,0.21,0.21,0.30,0.30,0.30,0.30,0.21,0.21,0.12]
        heat_value_per_kwh = 0.09
        [[servers]]
        id = "a"
        model = "hp-ml110-g5"
        cores = 8
        mem_gib = 32
        inlet_c = 24
        r_k_per_w = 0.2
        temp_limit_c = 80
        loop = "gh1"
        recovery = 0.85
        [[servers]]
        id = "b"
        power_curve_w = [41.6, 46.7, 52.3, 57.9, 65.4, 73, 80.7, 89.5, 99.6, 105, 113]
        cores = 4
        mem_gib = 16
        inlet_c = 24
        r_k_per_w = 0.2
        temp_limit_c = 80
        [[loops]]
        id = "gh1"
        consumer = "greenhouse"
        max_kw = 10
    "#;

    fn with_actuator(table: &str) -> Result<(), super::ConfigError> {
        let c: super::ControllerConfig =
            toml::from_str(&format!("{TEST_CFG}\n[actuator]\n{table}")).expect("parses");
        c.validate()
    }

    #[test]
    fn actuator_templates_and_bounds_are_checked() {
        with_actuator(
            r#"kind = "exec"
            migrate = "virsh migrate --live -- {vm} qemu+ssh://{to}/system"
            power_off = "ipmitool -H {node}-bmc chassis power soft"
            max_concurrent_actions = 2
            online_wait_s = 120
            migrate_timeout_s_per_gib = 0"#,
        )
        .expect("valid");
        for (table, needle) in [
            (
                r#"migrate = "virsh migrate {vm} {host}""#,
                "unknown placeholder `{host}`",
            ),
            (r#"power_on = "wake {vm}""#, "actuator.power_on"),
            (r#"place = "start {vm""#, "without its `}`"),
            (
                "max_concurrent_actions = 0",
                "actuator.max_concurrent_actions",
            ),
            ("online_wait_s = -1", "actuator.online_wait_s"),
            (
                "migrate_timeout_base_s = 0",
                "actuator.migrate_timeout_base_s",
            ),
        ] {
            let err = with_actuator(table).unwrap_err().to_string();
            assert!(err.contains(needle), "{table}: {err} should name {needle}");
        }
    }
}
