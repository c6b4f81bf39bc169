//! The snapshot and plan contracts (`phoenix.snapshot/v1`, `phoenix.plan/v1`,
//! DESIGN.md §4.1) as Rust types.
//!
//! Field names carry their units (`_w`, `_c`, `_kw`, `_gib`, `_s`). The
//! snapshot refuses unknown fields so a typo (`mem_gb`) is an error rather
//! than a silently defaulted value; the plan may carry extra fields.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Schema tag of a snapshot.
pub const SNAPSHOT_SCHEMA: &str = "phoenix.snapshot/v1";
/// Schema tag of a plan.
pub const PLAN_SCHEMA: &str = "phoenix.plan/v1";
/// Number of points in a SPECpower curve: utilisation 0, 0.1, …, 1.0.
pub const CURVE_POINTS: usize = 11;

/// Everything the planner knows about a site at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Must be [`SNAPSHOT_SCHEMA`].
    pub schema: String,
    /// Site id.
    pub site: String,
    /// Start of the horizon.
    pub time: DateTime<Utc>,
    /// Length of one step, s.
    pub step_s: f64,
    /// Number of steps in the horizon.
    pub steps: usize,
    /// Electricity price per step (length `steps`), per kWh.
    pub electricity_price_per_kwh: Vec<f64>,
    /// The servers.
    pub servers: Vec<Server>,
    /// The VMs, placed or pending.
    #[serde(default)]
    pub vms: Vec<Vm>,
    /// Images whose memory VMs on one host share.
    #[serde(default)]
    pub images: Vec<Image>,
    /// Heat loops and their consumers' demand.
    #[serde(default)]
    pub loops: Vec<HeatLoop>,
    /// Operating policy.
    #[serde(default)]
    pub policy: Policy,
}

/// One physical server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Server id.
    pub id: String,
    /// Physical cores (capacity for utilisation).
    pub cores: u32,
    /// Installed memory, GiB.
    pub mem_gib: f64,
    /// Power at utilisation 0, 0.1, …, 1.0, W ([`CURVE_POINTS`] values,
    /// non-decreasing), linearly interpolated (SPECpower convention).
    pub power_curve_w: Vec<f64>,
    /// Power drawn when switched off (BMC, PSU standby), W.
    #[serde(default)]
    pub off_w: f64,
    /// Currently switched on.
    pub on: bool,
    /// Whether the planner may switch it on or off.
    #[serde(default = "yes")]
    pub can_switch: bool,
    /// Inlet (air or coolant) temperature, °C.
    pub inlet_c: f64,
    /// Steady-state thermal resistance component→inlet, K/W.
    pub r_k_per_w: f64,
    /// Component temperature limit, °C.
    pub temp_limit_c: f64,
    /// Heat loop the server's recovered heat goes to, if any.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub heat_loop: Option<String>,
    /// Fraction of electrical power recovered into the loop, 0–1.
    #[serde(default)]
    pub recovery: f64,
}

fn yes() -> bool {
    true
}

/// Whether a VM serves users now or works through a batch of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmKind {
    /// Fixed load `load` of its vCPUs at every step; never throttled.
    Interactive,
    /// Remaining work `work_core_h` to finish by `deadline`; deferrable.
    Batch,
}

/// One virtual machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// VM id.
    pub id: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Base image (for memory sharing between VMs of one image on a host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Current host; `None` = pending (not placed yet).
    #[serde(default)]
    pub host: Option<String>,
    /// Interactive or batch.
    pub kind: VmKind,
    /// Interactive: load as a share of its vCPUs, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// Batch: remaining work, core-hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_core_h: Option<f64>,
    /// Batch: when the work must be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Whether the VM may move to another host.
    #[serde(default = "yes")]
    pub migratable: bool,
}

/// A base image whose memory is shared between VMs on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Image id.
    pub id: String,
    /// Memory held once per host however many VMs of the image run there, GiB.
    pub shared_mem_gib: f64,
}

/// A heat loop feeding one consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatLoop {
    /// Loop id.
    pub id: String,
    /// Heat demand per step (length `steps`), kW.
    pub demand_kw: Vec<f64>,
    /// Value of one delivered kWh of heat.
    pub heat_value_per_kwh: f64,
    /// Intake limit of the loop, kW.
    pub max_kw: f64,
}

/// Operating policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Most migrations one plan may contain.
    #[serde(default = "Policy::default_max_migrations")]
    pub max_migrations: usize,
    /// Cost charged per migration.
    #[serde(default)]
    pub migration_cost: f64,
    /// Cost charged per server switched on or off.
    #[serde(default)]
    pub switch_cost: f64,
    /// vCPUs allowed per core (1.0 = no overcommit).
    #[serde(default = "Policy::default_overcommit")]
    pub cpu_overcommit: f64,
}

impl Policy {
    fn default_max_migrations() -> usize {
        20
    }
    fn default_overcommit() -> f64 {
        1.0
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_migrations: Self::default_max_migrations(),
            migration_cost: 0.0,
            switch_cost: 0.0,
            cpu_overcommit: Self::default_overcommit(),
        }
    }
}

/// A planned move of a VM between hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// VM id.
    pub vm: String,
    /// Current host.
    pub from: String,
    /// Planned host.
    pub to: String,
}

/// The exact cost breakdown of a plan under the reference model (DESIGN.md §2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// IT energy over the horizon (on and off servers), kWh.
    pub energy_kwh: f64,
    /// Electricity cost of that energy.
    pub energy_cost: f64,
    /// Heat delivered to the loops, kWh.
    pub heat_delivered_kwh: f64,
    /// Value of that heat.
    pub heat_value: f64,
    /// Number of migrations.
    pub migrations: usize,
    /// Number of on/off switches.
    pub switches: usize,
    /// `energy_cost - heat_value + migration_cost·migrations + switch_cost·switches`.
    pub cost: f64,
}

/// A plan: the decisions and what they mean (`phoenix.plan/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Must be [`PLAN_SCHEMA`].
    pub schema: String,
    /// Host of every VM.
    pub placements: BTreeMap<String, String>,
    /// On/off state of every server.
    pub servers_on: BTreeMap<String, bool>,
    /// Cores granted to each batch VM at each step.
    pub batch_cores: BTreeMap<String, Vec<f64>>,
    /// Power of every server at each step, W.
    pub power_w: BTreeMap<String, Vec<f64>>,
    /// Heat delivered by each loop at each step, kW.
    pub heat_kw: BTreeMap<String, Vec<f64>>,
    /// VMs whose planned host differs from their current one.
    pub migrations: Vec<Migration>,
    /// Exact cost of this plan.
    pub objective: Objective,
    /// A proven lower bound on the optimal cost, when the solver has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<f64>,
    /// Cost of the greedy baseline on the same snapshot, when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_cost: Option<f64>,
    /// Name of the solver that produced the plan.
    pub solver: String,
    /// Wall time of the solve, ms.
    pub solve_ms: f64,
}
