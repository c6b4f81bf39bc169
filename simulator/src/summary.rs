//! `summary.json`: the run's totals and facility metrics (DESIGN.md §4.4).
//!
//! Metric definitions (docs/simulator.md):
//! - `pue` = facility energy / IT energy (ISO/IEC 30134-2), facility energy
//!   = IT + cooling + heat pump electricity.
//! - `erf` = reused energy / facility energy (ISO/IEC 30134-6), reused
//!   energy = heat delivered to consumers.
//! - `ere` = (facility energy − reused energy) / IT energy (The Green Grid).
//! - `grid_co2_kg` = Σ facility energy × the step's grid carbon intensity;
//!   `avoided_co2_kg` = heat delivered / boiler efficiency × the fuel's
//!   emission factor; `net_co2_kg` = grid − avoided.

use serde::{Deserialize, Serialize};

/// Totals of a run. Every field but `wall_s` is a deterministic function of
/// the scenario (and seed) while no plan hits its time limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Planner (`optimizer`, `greedy`, `none`).
    pub scheduler: String,
    /// Seed.
    pub seed: u64,
    /// Servers.
    pub servers: usize,
    /// IT electricity, kWh.
    pub it_energy_kwh: f64,
    /// Cooling electricity, kWh.
    pub cooling_energy_kwh: f64,
    /// Heat pump electricity, kWh.
    pub heat_pump_energy_kwh: f64,
    /// IT + cooling + heat pumps, kWh.
    pub facility_energy_kwh: f64,
    /// Heat recovered into loops (recovery × IT energy of looped servers), kWh.
    pub heat_recovered_kwh: f64,
    /// Recovered heat taken by consumers (before any heat pump), kWh.
    pub heat_used_kwh: f64,
    /// Heat delivered to consumers (used + heat pump electricity), kWh.
    pub heat_delivered_kwh: f64,
    /// Consumers' heat demand, kWh.
    pub heat_demand_kwh: f64,
    /// delivered / demand.
    pub heat_coverage: f64,
    /// Heat from backup boilers (demand − delivered), kWh.
    pub backup_heat_kwh: f64,
    /// Cost of all electricity.
    pub electricity_cost: f64,
    /// Value of the heat delivered.
    pub heat_value: f64,
    /// electricity_cost − heat_value.
    pub net_cost: f64,
    /// Grid CO2 of the facility energy: each step's IT + cooling + heat pump
    /// energy × that step's grid carbon intensity, kg.
    #[serde(default)]
    pub grid_co2_kg: f64,
    /// CO2 of the boiler fuel not burnt for the heat delivered: heat
    /// delivered / `boiler_efficiency` × `gas_kg_co2_per_kwh`, kg.
    #[serde(default)]
    pub avoided_co2_kg: f64,
    /// grid_co2_kg − avoided_co2_kg.
    #[serde(default)]
    pub net_co2_kg: f64,
    /// Power usage effectiveness (ISO/IEC 30134-2).
    pub pue: f64,
    /// Energy reuse factor (ISO/IEC 30134-6).
    pub erf: f64,
    /// Energy reuse effectiveness (The Green Grid).
    pub ere: f64,
    /// Highest component temperature, °C.
    pub max_component_temp_c: f64,
    /// Server-seconds above the temperature limit.
    pub thermal_violation_s: f64,
    /// Seconds of unmet interactive demand (server-seconds capped or full,
    /// plus VM-seconds not placed).
    pub sla_violation_s: f64,
    /// VM migrations.
    pub migrations: usize,
    /// Server on/off switches.
    pub switches: usize,
    /// Batch jobs that arrived.
    pub batch_jobs: usize,
    /// Batch jobs finished.
    pub batch_jobs_completed: usize,
    /// Batch jobs that missed (or could no longer make) their deadline.
    pub batch_deadline_misses: usize,
    /// Plans computed.
    pub plans: usize,
    /// Plans the planner could not make for the full snapshot (pending VMs
    /// held back, or the previous plan kept).
    pub plan_failures: usize,
    /// Periods that kept the previous plan.
    pub plans_kept: usize,
    /// Simulated time, s.
    pub simulated_s: f64,
    /// Wall time of the run, s.
    pub wall_s: f64,
}

/// Where the wall time went (not part of the summary: it varies run to run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Timing {
    /// Physics (servers, loops, consumers), s.
    pub physics_s: f64,
    /// Building snapshots, planning and applying plans, s.
    pub planning_s: f64,
    /// Of which inside `scheduler::solve`, s.
    pub solver_s: f64,
    /// Of which building snapshots, s.
    pub snapshot_s: f64,
    /// Whole run, s.
    pub wall_s: f64,
    /// Physics steps × servers.
    pub server_steps: u64,
    /// Plans.
    pub plans: usize,
}
