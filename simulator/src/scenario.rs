//! Scenario files (TOML, DESIGN.md §4.4): the types, parsing with errors that
//! name the key, `--set key=value` overrides, and validation.
//!
//! Every table refuses unknown keys, so a typo (`mem_gb`) is an error naming
//! the key rather than a silently defaulted value. Values carry their unit in
//! their name (`_s`, `_c`, `_kw`, `_w_per_m2k`). `docs/simulator.md` lists
//! every key with its unit and default.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ScenarioError;

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports and as the `site` tag of the time series.
    #[serde(default = "Scenario::default_name")]
    pub name: String,
    /// Free text shown at the top of the report.
    #[serde(default)]
    pub description: String,
    /// Clock, steps and scheduler.
    pub sim: SimSection,
    /// Electricity tariff and heat value.
    #[serde(default)]
    pub prices: Prices,
    /// Outdoor climate.
    #[serde(default)]
    pub weather: WeatherSection,
    /// Cooling plant for the heat that is not recovered.
    #[serde(default)]
    pub cooling: Cooling,
    /// Server groups.
    pub servers: Vec<ServerGroup>,
    /// Heat loops.
    #[serde(default)]
    pub loops: Vec<LoopSpec>,
    /// Heat consumers.
    #[serde(default)]
    pub consumers: Vec<ConsumerSpec>,
    /// Generated workload.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// Explicit VMs.
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// Base images whose memory VMs on one host share.
    #[serde(default)]
    pub images: Vec<scheduler::model::Image>,
    /// Operating policy handed to the planner.
    #[serde(default)]
    pub policy: scheduler::model::Policy,
    /// What to write.
    #[serde(default)]
    pub output: OutputSpec,
    /// Directory that relative paths (the EPW file) are resolved against;
    /// set by [`Scenario::load`], never read from the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Scenario {
    fn default_name() -> String {
        "sim".to_string()
    }
}

/// Which planner runs every control period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Phoenix's optimiser.
    #[default]
    Optimizer,
    /// The greedy baseline every period.
    Greedy,
    /// First fit once at the start, never changed; batch work as soon as possible.
    None,
}

impl SchedulerKind {
    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Optimizer => "optimizer",
            Self::Greedy => "greedy",
            Self::None => "none",
        }
    }
}

/// `[sim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSection {
    /// Start of the run (RFC 3339).
    pub start: DateTime<Utc>,
    /// Length of the run, days (fractions allowed).
    pub days: f64,
    /// Physics step, s.
    #[serde(default = "SimSection::default_physics_step_s")]
    pub physics_step_s: f64,
    /// Control period (the planner's step), s; a whole multiple of the physics step.
    #[serde(default = "SimSection::default_control_period_s")]
    pub control_period_s: f64,
    /// Planner horizon, control periods.
    #[serde(default = "SimSection::default_horizon_steps")]
    pub horizon_steps: usize,
    /// Random seed (weather noise, workload).
    #[serde(default = "SimSection::default_seed")]
    pub seed: u64,
    /// Planner.
    #[serde(default)]
    pub scheduler: SchedulerKind,
    /// Plan every this many control periods (1 = every period); in between,
    /// the last plan's later steps are applied (its placement and on/off
    /// hold for its whole horizon). At most `horizon_steps`.
    #[serde(default = "SimSection::default_replan_periods")]
    pub replan_periods: usize,
    /// Wall-clock time limit of one plan, ms (the optimiser returns its best
    /// plan by then). None (the default): the optimiser runs until no move
    /// improves its plan, which it decides without the clock, so a run is
    /// reproducible. A limit that binds makes the plans, and so the summary,
    /// depend on the machine's speed and load.
    #[serde(default)]
    pub plan_time_limit_ms: Option<u64>,
    /// Also run the greedy baseline on every snapshot and record its cost
    /// beside each plan (the dashboards' "gain over baseline"); costs one
    /// greedy solve per plan.
    #[serde(default)]
    pub compare_baseline: bool,
    /// Also compute the optimiser's proven lower bound on each plan's cost
    /// (`lower_bound` in the time series, on the scheduler dashboard); costs
    /// an LP solve per plan.
    #[serde(default)]
    pub lower_bound: bool,
    /// Whether each server's local guard caps its power at the steady-state
    /// temperature limit (as the Phoenix agent does).
    #[serde(default = "yes")]
    pub thermal_guard: bool,
}

impl SimSection {
    fn default_physics_step_s() -> f64 {
        60.0
    }
    fn default_control_period_s() -> f64 {
        900.0
    }
    fn default_horizon_steps() -> usize {
        8
    }
    fn default_seed() -> u64 {
        1
    }
    fn default_replan_periods() -> usize {
        1
    }
}

fn yes() -> bool {
    true
}

/// A number, or 24 values by hour of day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Hourly {
    /// The same value every hour.
    Flat(f64),
    /// One value per hour of day, 0–23.
    ByHour(Vec<f64>),
}

impl Hourly {
    /// The value at `hour` of day.
    pub fn at_hour(&self, hour: u32) -> f64 {
        match self {
            Self::Flat(v) => *v,
            Self::ByHour(v) => v[(hour % 24) as usize],
        }
    }

    fn check(&self, key: &str, min: f64) -> Result<(), ScenarioError> {
        let values: &[f64] = match self {
            Self::Flat(v) => std::slice::from_ref(v),
            Self::ByHour(v) => {
                if v.len() != 24 {
                    return Err(ScenarioError::invalid(
                        key,
                        format!("needs 1 number or 24 hourly values, got {} values", v.len()),
                    ));
                }
                v
            }
        };
        if let Some(bad) = values.iter().find(|x| !x.is_finite() || **x < min) {
            return Err(ScenarioError::invalid(
                key,
                format!("{bad} is not a finite number ≥ {min}"),
            ));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Hourly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Hourly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or an array of 24 numbers")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Hourly, E> {
                Ok(Hourly::Flat(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Hourly, E> {
                Ok(Hourly::Flat(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Hourly, E> {
                Ok(Hourly::Flat(v as f64))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Hourly, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = a.next_element::<f64>()? {
                    out.push(x);
                }
                Ok(Hourly::ByHour(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[prices]`.
///
/// The electricity price comes from `electricity_file` (a price series,
/// DESIGN.md §4.9) where it covers the time, else from
/// `electricity_per_kwh`. The grid carbon intensity comes from the file's
/// `carbon_g_per_kwh` column where it has one, else from `carbon_g_per_kwh`
/// here (0: not counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Electricity price per kWh (a number or 24 hourly values): the tariff
    /// where no `electricity_file` covers the time.
    #[serde(default = "Prices::default_electricity")]
    pub electricity_per_kwh: Hourly,
    /// A price series file (CSV or ENTSO-E XML, relative to the scenario file).
    #[serde(default)]
    pub electricity_file: Option<PathBuf>,
    /// Grid carbon intensity, g CO2/kWh (a number or 24 hourly values),
    /// where the file has none.
    #[serde(default = "Prices::default_carbon")]
    pub carbon_g_per_kwh: Hourly,
    /// Price of a tonne of CO2 added to the objective: the planner sees
    /// `price + carbon_price_per_t × intensity / 10⁶` per kWh. Costs in the
    /// summary stay the electricity bill alone.
    #[serde(default)]
    pub carbon_price_per_t: f64,
    /// CO2 of the fuel a backup boiler burns, kg per kWh of fuel (default
    /// 0.202: natural gas, IPCC 2006 Guidelines vol. 2 table 2.2, 56.1 t/TJ).
    #[serde(default = "Prices::default_gas")]
    pub gas_kg_co2_per_kwh: f64,
    /// Efficiency of the boiler whose heat the datacenter displaces (default
    /// 0.9, a condensing gas boiler).
    #[serde(default = "Prices::default_boiler_efficiency")]
    pub boiler_efficiency: f64,
    /// What the planner sees: the tariff (`dynamic`) or its mean over the
    /// run (`flat`), to measure what time shifting is worth.
    #[serde(default)]
    pub planning: PlanningPrices,
    /// Value of one kWh of heat delivered to a consumer.
    #[serde(default)]
    pub heat_value_per_kwh: f64,
}

/// `prices.planning`: the prices the planner sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlanningPrices {
    /// The tariff as it is (with the carbon price).
    #[default]
    Dynamic,
    /// The mean of the tariff over the run, every period.
    Flat,
}

impl Prices {
    fn default_electricity() -> Hourly {
        Hourly::Flat(0.15)
    }
    fn default_carbon() -> Hourly {
        Hourly::Flat(0.0)
    }
    fn default_gas() -> f64 {
        0.202
    }
    fn default_boiler_efficiency() -> f64 {
        0.9
    }
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            electricity_per_kwh: Self::default_electricity(),
            electricity_file: None,
            carbon_g_per_kwh: Self::default_carbon(),
            carbon_price_per_t: 0.0,
            gas_kg_co2_per_kwh: Self::default_gas(),
            boiler_efficiency: Self::default_boiler_efficiency(),
            planning: PlanningPrices::Dynamic,
            heat_value_per_kwh: 0.0,
        }
    }
}

/// Kind of weather.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeatherKind {
    /// A constant outdoor temperature, no sun.
    #[default]
    Constant,
    /// Seasonal + diurnal + seeded noise, with a clear-sky sun.
    Synthetic,
    /// An EnergyPlus weather file.
    Epw,
}

/// `[weather]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherSection {
    /// Kind.
    #[serde(default)]
    pub kind: WeatherKind,
    /// `constant`: outdoor temperature, °C.
    #[serde(default = "WeatherSection::default_outdoor_c")]
    pub outdoor_c: f64,
    /// `constant`: global horizontal irradiance, W/m².
    #[serde(default)]
    pub ghi_w_per_m2: f64,
    /// `synthetic`: annual mean, °C.
    #[serde(default = "WeatherSection::default_mean_c")]
    pub mean_c: f64,
    /// `synthetic`: seasonal amplitude (coldest mid-January), K.
    #[serde(default = "WeatherSection::default_seasonal")]
    pub seasonal_amplitude_c: f64,
    /// `synthetic`: diurnal amplitude (warmest at 15:00), K.
    #[serde(default = "WeatherSection::default_diurnal")]
    pub diurnal_amplitude_c: f64,
    /// `synthetic`: standard deviation of the hourly noise, K.
    #[serde(default = "WeatherSection::default_noise")]
    pub noise_c: f64,
    /// `synthetic`: latitude for the clear-sky sun, degrees north.
    #[serde(default = "WeatherSection::default_latitude")]
    pub latitude_deg: f64,
    /// `synthetic`: share of clear-sky irradiance that reaches the ground on average.
    #[serde(default = "WeatherSection::default_clearness")]
    pub clearness: f64,
    /// `epw`: path of the file (relative to the scenario file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl WeatherSection {
    fn default_outdoor_c() -> f64 {
        10.0
    }
    fn default_mean_c() -> f64 {
        10.0
    }
    fn default_seasonal() -> f64 {
        8.0
    }
    fn default_diurnal() -> f64 {
        5.0
    }
    fn default_noise() -> f64 {
        1.5
    }
    fn default_latitude() -> f64 {
        52.0
    }
    fn default_clearness() -> f64 {
        0.5
    }
}

impl Default for WeatherSection {
    fn default() -> Self {
        Self {
            kind: WeatherKind::Constant,
            outdoor_c: Self::default_outdoor_c(),
            ghi_w_per_m2: 0.0,
            mean_c: Self::default_mean_c(),
            seasonal_amplitude_c: Self::default_seasonal(),
            diurnal_amplitude_c: Self::default_diurnal(),
            noise_c: Self::default_noise(),
            latitude_deg: Self::default_latitude(),
            clearness: Self::default_clearness(),
            path: None,
        }
    }
}

/// `[cooling]`: the plant that rejects the heat not delivered to a consumer.
///
/// Without `cop`, a chiller whose COP follows the weather:
/// `COP = eta·T_cold/(T_hot − T_cold)` in kelvin (reference/physics.md), with
/// `T_cold` the chilled supply and `T_hot` the outdoor temperature plus the
/// approach, bounded by `max_cop` (free cooling on cold days).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cooling {
    /// A fixed COP instead of the chiller model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cop: Option<f64>,
    /// Chiller quality grade.
    #[serde(default = "Cooling::default_eta")]
    pub eta: f64,
    /// Chilled supply temperature, °C.
    #[serde(default = "Cooling::default_supply_c")]
    pub supply_c: f64,
    /// Condenser approach above outdoor air, K.
    #[serde(default = "Cooling::default_approach_k")]
    pub approach_k: f64,
    /// Upper bound of the COP (free cooling), also used when outdoor air is
    /// colder than the supply.
    #[serde(default = "Cooling::default_max_cop")]
    pub max_cop: f64,
}

impl Cooling {
    fn default_eta() -> f64 {
        0.45
    }
    fn default_supply_c() -> f64 {
        18.0
    }
    fn default_approach_k() -> f64 {
        10.0
    }
    fn default_max_cop() -> f64 {
        12.0
    }
}

impl Default for Cooling {
    fn default() -> Self {
        Self {
            cop: None,
            eta: Self::default_eta(),
            supply_c: Self::default_supply_c(),
            approach_k: Self::default_approach_k(),
            max_cop: Self::default_max_cop(),
        }
    }
}

/// `[[servers]]`: a group of identical servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerGroup {
    /// Group name; servers are named `<name>-0000`, `<name>-0001`, ….
    pub name: String,
    /// Number of servers.
    pub count: usize,
    /// A named SPECpower model (reference/physics.md), or …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// … a curve: power at utilisation 0, 0.1, …, 1.0, W (11 values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_curve_w: Option<Vec<f64>>,
    /// Cores (default: the model's tested configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory, GiB (default: the model's tested configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_gib: Option<f64>,
    /// Power when switched off, W.
    #[serde(default)]
    pub off_w: f64,
    /// Steady thermal resistance component → inlet, K/W.
    pub r_k_per_w: f64,
    /// Thermal capacity of the component and heat sink, J/K.
    pub thermal_capacity_j_per_k: f64,
    /// Component temperature limit, °C.
    pub temp_limit_c: f64,
    /// Inlet (air or coolant) temperature, °C.
    pub inlet_c: f64,
    /// Heat loop; omitted: air-cooled, nothing recovered.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub heat_loop: Option<String>,
    /// Share of electrical power the loop recovers, 0–1 (required with `loop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<f64>,
    /// A configured power cap, W.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_w: Option<f64>,
    /// Switched on at the start.
    #[serde(default = "yes")]
    pub on: bool,
    /// Whether the planner may switch these servers on and off.
    #[serde(default = "yes")]
    pub can_switch: bool,
}

/// `[consumers.screen]`: a greenhouse's energy screen. Defaults: the
/// thresholds of GreenLight's default climate controls (Katzin et al.,
/// 2021: closed below 10 °C outdoors at night, 5 °C by day), and a closed
/// screen leaving 60 % of the cover's U (energy screens save roughly 20–45 %
/// of the heat; docs/simulator.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenSpec {
    /// Closes below this outdoor temperature in the night setpoint's hours, °C.
    #[serde(default = "ScreenSpec::default_night_c")]
    pub close_below_night_c: f64,
    /// Closes below this outdoor temperature in the day setpoint's hours, °C.
    #[serde(default = "ScreenSpec::default_day_c")]
    pub close_below_day_c: f64,
    /// Share of the cover's U left while closed, 0–1.
    #[serde(default = "ScreenSpec::default_u_factor")]
    pub u_factor: f64,
}

impl ScreenSpec {
    fn default_night_c() -> f64 {
        10.0
    }
    fn default_day_c() -> f64 {
        5.0
    }
    fn default_u_factor() -> f64 {
        0.6
    }

    /// The physics' screen.
    pub fn build(self) -> crate::physics::greenhouse::Screen {
        crate::physics::greenhouse::Screen {
            close_below_night_c: self.close_below_night_c,
            close_below_day_c: self.close_below_day_c,
            u_factor: self.u_factor,
        }
    }
}

/// A heat pump lifting a loop to the consumer's supply temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatPumpSpec {
    /// Supply temperature to the consumer, °C.
    pub supply_c: f64,
    /// Quality grade η of `COP = η·T_cond/(T_cond − T_evap)` (default
    /// 0.45: with the default approaches, within 15 % of a published
    /// data-centre study, docs/simulator.md).
    #[serde(default = "HeatPumpSpec::default_eta")]
    pub eta: f64,
    /// Evaporator approach: the refrigerant evaporates this far below the
    /// loop's supply temperature, K.
    #[serde(default = "HeatPumpSpec::default_approach_k")]
    pub evaporator_approach_k: f64,
    /// Condenser approach: the refrigerant condenses this far above the
    /// consumer's supply temperature, K.
    #[serde(default = "HeatPumpSpec::default_approach_k")]
    pub condenser_approach_k: f64,
}

impl HeatPumpSpec {
    fn default_eta() -> f64 {
        0.45
    }
    fn default_approach_k() -> f64 {
        5.0
    }

    /// Heating COP lifting a loop at `source_c` to `supply_c`.
    pub fn cop(&self, source_c: f64) -> f64 {
        crate::physics::heat::heat_pump_cop_with_approach(
            self.eta,
            self.supply_c,
            source_c,
            self.evaporator_approach_k,
            self.condenser_approach_k,
        )
    }
}

/// `[[loops]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSpec {
    /// Loop id.
    pub id: String,
    /// Intake limit, kW of recovered heat.
    pub max_kw: f64,
    /// The consumer it feeds.
    pub consumer: String,
    /// Temperature of the recovered heat (loop supply), °C.
    #[serde(default = "LoopSpec::default_supply_c")]
    pub supply_c: f64,
    /// Heat pump between loop and consumer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heat_pump: Option<HeatPumpSpec>,
}

impl LoopSpec {
    fn default_supply_c() -> f64 {
        45.0
    }
}

/// Kind of heat consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerKind {
    /// A greenhouse: the physics of [`crate::physics::greenhouse`].
    Greenhouse,
    /// A fixed demand profile (pool, district heating).
    Profile,
}

/// `[[consumers]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Consumer id.
    pub id: String,
    /// Kind.
    pub kind: ConsumerKind,
    /// Value of its heat per kWh (default: `prices.heat_value_per_kwh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heat_value_per_kwh: Option<f64>,
    /// `profile`: demand, kW (a number or 24 hourly values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_kw: Option<Hourly>,
    /// `greenhouse`: cover area, m².
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area_m2: Option<f64>,
    /// `greenhouse`: heat transfer coefficient of the cover, W/(m²·K).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u_w_per_m2k: Option<f64>,
    /// `greenhouse`: day setpoint, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setpoint_day_c: Option<f64>,
    /// `greenhouse`: night setpoint, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setpoint_night_c: Option<f64>,
    /// `greenhouse`: first hour of the day setpoint (UTC).
    #[serde(default = "ConsumerSpec::default_day_start_h")]
    pub day_start_h: u32,
    /// `greenhouse`: first hour of the night setpoint (UTC).
    #[serde(default = "ConsumerSpec::default_day_end_h")]
    pub day_end_h: u32,
    /// `greenhouse`: thermal mass of air, plants, soil and structure, J/K.
    #[serde(default = "ConsumerSpec::default_mass")]
    pub thermal_mass_j_per_k: f64,
    /// `greenhouse`: share of global horizontal irradiance that heats it.
    #[serde(default = "ConsumerSpec::default_solar")]
    pub solar_gain_factor: f64,
    /// `greenhouse`: infiltration and ventilation loss, W/K.
    #[serde(default)]
    pub infiltration_w_per_k: f64,
    /// `greenhouse`: vents open when indoor air exceeds the setpoint by this, K.
    #[serde(default = "ConsumerSpec::default_vent")]
    pub vent_margin_k: f64,
    /// Greenhouse: an energy screen (`[consumers.screen]`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<ScreenSpec>,
}

impl ConsumerSpec {
    fn default_day_start_h() -> u32 {
        6
    }
    fn default_day_end_h() -> u32 {
        18
    }
    fn default_mass() -> f64 {
        1e8
    }
    fn default_solar() -> f64 {
        0.5
    }
    fn default_vent() -> f64 {
        5.0
    }
}

/// `[workload]`: the generated part of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Interactive VMs running from the start.
    #[serde(default)]
    pub interactive_vms: usize,
    /// Sizes interactive VMs are drawn from, vCPUs.
    #[serde(default = "WorkloadSpec::default_interactive_vcpus")]
    pub interactive_vcpus: Vec<u32>,
    /// Memory per vCPU, GiB.
    #[serde(default = "WorkloadSpec::default_mem_per_vcpu")]
    pub mem_gib_per_vcpu: f64,
    /// Mean load of an interactive VM (share of its vCPUs), 0–1.
    #[serde(default = "WorkloadSpec::default_load")]
    pub interactive_load: f64,
    /// Relative diurnal swing of interactive load (peak at 14:00 UTC), 0–1.
    #[serde(default = "WorkloadSpec::default_diurnal")]
    pub diurnal_amplitude: f64,
    /// Batch jobs arriving per hour (Poisson).
    #[serde(default)]
    pub batch_arrivals_per_hour: f64,
    /// Sizes batch VMs are drawn from, vCPUs.
    #[serde(default = "WorkloadSpec::default_batch_vcpus")]
    pub batch_vcpus: Vec<u32>,
    /// Work of a batch job, hours at full speed: drawn uniformly in [min, max].
    #[serde(default = "WorkloadSpec::default_batch_hours")]
    pub batch_hours: [f64; 2],
    /// Deadline = arrival + work hours × slack, slack drawn in [min, max].
    #[serde(default = "WorkloadSpec::default_batch_slack")]
    pub batch_slack: [f64; 2],
    /// Image of generated VMs (for memory sharing), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl WorkloadSpec {
    fn default_interactive_vcpus() -> Vec<u32> {
        vec![1, 2, 4]
    }
    fn default_mem_per_vcpu() -> f64 {
        2.0
    }
    fn default_load() -> f64 {
        0.3
    }
    fn default_diurnal() -> f64 {
        0.3
    }
    fn default_batch_vcpus() -> Vec<u32> {
        vec![2, 4, 8]
    }
    fn default_batch_hours() -> [f64; 2] {
        [1.0, 6.0]
    }
    fn default_batch_slack() -> [f64; 2] {
        [2.0, 6.0]
    }
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            interactive_vms: 0,
            interactive_vcpus: Self::default_interactive_vcpus(),
            mem_gib_per_vcpu: Self::default_mem_per_vcpu(),
            interactive_load: Self::default_load(),
            diurnal_amplitude: Self::default_diurnal(),
            batch_arrivals_per_hour: 0.0,
            batch_vcpus: Self::default_batch_vcpus(),
            batch_hours: Self::default_batch_hours(),
            batch_slack: Self::default_batch_slack(),
            image: None,
        }
    }
}

/// `[[vms]]`: an explicit VM (the snapshot's VM fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// VM id.
    pub id: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Interactive or batch.
    pub kind: scheduler::model::VmKind,
    /// Interactive: mean load, share of its vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// Batch: work, core-hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_core_h: Option<f64>,
    /// Batch: deadline (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// When the VM arrives (RFC 3339; default: the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<DateTime<Utc>>,
    /// Base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// May migrate.
    #[serde(default = "yes")]
    pub migratable: bool,
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Time-series resolution, s (default: the control period); a whole
    /// multiple of the physics step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_s: Option<f64>,
    /// Also write one `phoenix_server` point per server and output step.
    #[serde(default)]
    pub per_server: bool,
}

// ---------------------------------------------------------------- parsing

impl Scenario {
    /// Read, override (`--set` pairs) and validate a scenario file.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &base, overrides)
    }

    /// Parse TOML text, apply overrides, validate. Relative paths resolve
    /// against `base_dir`.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        overrides: &[(String, String)],
    ) -> Result<Self, ScenarioError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ScenarioError::Parse {
                    key: ".".into(),
                    message: e.message().to_string(),
                })?;
        for (k, v) in overrides {
            set_key(&mut table, k, v)?;
        }
        let mut sc = Self::from_table(table)?;
        sc.base_dir = base_dir.to_path_buf();
        sc.validate()?;
        Ok(sc)
    }

    /// Deserialize a TOML table, naming the key on error.
    pub fn from_table(table: toml::Table) -> Result<Self, ScenarioError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            ScenarioError::Parse {
                key: e.path().to_string(),
                message: e.inner().to_string(),
            }
        })
    }
}

/// Parse a `--set`/`--sweep` value as TOML (number, boolean, string, array,
/// inline table); anything that is not valid TOML is taken as a string.
pub fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Set `key` (dotted, array elements by index: `servers.0.count`) to the
/// TOML value `raw` in `table`.
pub fn set_key(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), ScenarioError> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ScenarioError::invalid(
            key,
            "--set needs a dotted key such as sim.days",
        ));
    }
    let value = parse_value(raw);
    let mut cur: &mut toml::Value = table_entry(table, parts[0], parts.len() == 1);
    for (i, part) in parts.iter().enumerate().skip(1) {
        let last = i + 1 == parts.len();
        let walked = parts[..i].join(".");
        cur = match cur {
            toml::Value::Table(t) => table_entry(t, part, last),
            toml::Value::Array(a) => {
                let idx: usize = part.parse().map_err(|_| {
                    ScenarioError::invalid(
                        key,
                        format!("`{walked}` is an array: `{part}` is not an index"),
                    )
                })?;
                let n = a.len();
                a.get_mut(idx).ok_or_else(|| {
                    ScenarioError::invalid(
                        key,
                        format!("`{walked}` has {n} elements, no index {idx}"),
                    )
                })?
            }
            _ => {
                return Err(ScenarioError::invalid(
                    key,
                    format!("`{walked}` is a value, not a table"),
                ))
            }
        };
    }
    *cur = value;
    Ok(())
}

fn table_entry<'a>(t: &'a mut toml::Table, k: &str, last: bool) -> &'a mut toml::Value {
    t.entry(k.to_string()).or_insert_with(|| {
        if last {
            toml::Value::Boolean(false)
        } else {
            toml::Value::Table(toml::Table::new())
        }
    })
}

// ------------------------------------------------------------- validation

fn positive(key: impl Into<String>, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ScenarioError::invalid(
            key,
            format!("{v} must be a finite number > 0"),
        ))
    }
}

fn non_negative(key: impl Into<String>, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ScenarioError::invalid(
            key,
            format!("{v} must be a finite number ≥ 0"),
        ))
    }
}

fn share(key: impl Into<String>, v: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ScenarioError::invalid(
            key,
            format!("{v} must lie in [0, 1]"),
        ))
    }
}

fn unique<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), ScenarioError> {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id) {
            return Err(ScenarioError::invalid(
                format!("{what}[{i}].id"),
                format!("`{id}` is used twice"),
            ));
        }
    }
    Ok(())
}

/// A server group with its model resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedGroup {
    /// Power curve, W (11 points).
    pub curve_w: [f64; 11],
    /// Cores.
    pub cores: u32,
    /// Memory, GiB.
    pub mem_gib: f64,
}

impl ServerGroup {
    /// Resolve the curve, cores and memory (from `model` or the explicit keys).
    pub fn resolve(&self, i: usize) -> Result<ResolvedGroup, ScenarioError> {
        let key = |k: &str| format!("servers[{i}].{k}");
        let model = match &self.model {
            Some(name) => Some(scheduler::generate::spec_model(name).ok_or_else(|| {
                let known: Vec<&str> = scheduler::generate::SPEC_MODELS
                    .iter()
                    .map(|m| m.name)
                    .collect();
                ScenarioError::invalid(
                    key("model"),
                    format!("unknown model `{name}` (known: {})", known.join(", ")),
                )
            })?),
            None => None,
        };
        let curve_w: [f64; 11] = match (&self.power_curve_w, model) {
            (Some(_), Some(_)) => {
                return Err(ScenarioError::invalid(
                    key("power_curve_w"),
                    "give either `model` or `power_curve_w`, not both",
                ))
            }
            (None, None) => {
                return Err(ScenarioError::invalid(
                    key("model"),
                    "missing: give a named `model` or an 11-point `power_curve_w`",
                ))
            }
            (None, Some(m)) => m.curve_w,
            (Some(c), None) => {
                let arr: [f64; 11] = c.as_slice().try_into().map_err(|_| {
                    ScenarioError::invalid(
                        key("power_curve_w"),
                        format!(
                            "needs 11 values (W at 0, 10, …, 100 % load), got {}",
                            c.len()
                        ),
                    )
                })?;
                if arr.iter().any(|p| !p.is_finite() || *p < 0.0) {
                    return Err(ScenarioError::invalid(
                        key("power_curve_w"),
                        "every value must be a finite number ≥ 0",
                    ));
                }
                if arr.windows(2).any(|w| w[1] < w[0]) {
                    return Err(ScenarioError::invalid(
                        key("power_curve_w"),
                        "must not decrease with load",
                    ));
                }
                arr
            }
        };
        let cores = self.cores.or(model.map(|m| m.cores)).ok_or_else(|| {
            ScenarioError::invalid(key("cores"), "missing (required without a named model)")
        })?;
        let mem_gib = self.mem_gib.or(model.map(|m| m.mem_gb)).ok_or_else(|| {
            ScenarioError::invalid(key("mem_gib"), "missing (required without a named model)")
        })?;
        Ok(ResolvedGroup {
            curve_w,
            cores,
            mem_gib,
        })
    }
}

impl Scenario {
    /// Check every value; the first problem is returned, naming its key.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let s = &self.sim;
        positive("sim.days", s.days)?;
        positive("sim.physics_step_s", s.physics_step_s)?;
        positive("sim.control_period_s", s.control_period_s)?;
        let ratio = s.control_period_s / s.physics_step_s;
        if (ratio - ratio.round()).abs() > 1e-9 || ratio < 1.0 {
            return Err(ScenarioError::invalid(
                "sim.control_period_s",
                format!(
                    "{} s is not a whole multiple of sim.physics_step_s ({} s)",
                    s.control_period_s, s.physics_step_s
                ),
            ));
        }
        if s.horizon_steps == 0 {
            return Err(ScenarioError::invalid("sim.horizon_steps", "must be ≥ 1"));
        }
        if s.replan_periods == 0 || s.replan_periods > s.horizon_steps {
            return Err(ScenarioError::invalid(
                "sim.replan_periods",
                format!(
                    "{} must lie in [1, horizon_steps = {}]",
                    s.replan_periods, s.horizon_steps
                ),
            ));
        }
        if s.plan_time_limit_ms == Some(0) {
            return Err(ScenarioError::invalid(
                "sim.plan_time_limit_ms",
                "must be ≥ 1 (leave it out for no limit)",
            ));
        }
        if let Some(step) = self.output.step_s {
            let r = step / s.physics_step_s;
            if !(step.is_finite() && r >= 1.0 && (r - r.round()).abs() < 1e-9) {
                return Err(ScenarioError::invalid(
                    "output.step_s",
                    format!("{step} s is not a whole multiple of sim.physics_step_s"),
                ));
            }
        }
        self.prices
            .electricity_per_kwh
            .check("prices.electricity_per_kwh", f64::NEG_INFINITY)?;
        non_negative("prices.heat_value_per_kwh", self.prices.heat_value_per_kwh)?;
        self.validate_carbon()?;
        self.validate_weather()?;
        self.validate_cooling()?;
        self.validate_heat()?;
        self.validate_servers_and_vms()
    }

    fn validate_weather(&self) -> Result<(), ScenarioError> {
        let w = &self.weather;
        match w.kind {
            WeatherKind::Constant => non_negative("weather.ghi_w_per_m2", w.ghi_w_per_m2),
            WeatherKind::Synthetic => {
                non_negative("weather.seasonal_amplitude_c", w.seasonal_amplitude_c)?;
                non_negative("weather.diurnal_amplitude_c", w.diurnal_amplitude_c)?;
                non_negative("weather.noise_c", w.noise_c)?;
                share("weather.clearness", w.clearness)?;
                if !(-90.0..=90.0).contains(&w.latitude_deg) {
                    return Err(ScenarioError::invalid(
                        "weather.latitude_deg",
                        format!("{} is not a latitude in [-90, 90]", w.latitude_deg),
                    ));
                }
                Ok(())
            }
            WeatherKind::Epw => {
                let p = self.epw_path().ok_or_else(|| {
                    ScenarioError::invalid("weather.path", "missing: kind = \"epw\" needs a file")
                })?;
                if !p.is_file() {
                    return Err(ScenarioError::invalid(
                        "weather.path",
                        format!("EPW file {} does not exist", p.display()),
                    ));
                }
                Ok(())
            }
        }
    }

    fn validate_carbon(&self) -> Result<(), ScenarioError> {
        let p = &self.prices;
        p.carbon_g_per_kwh.check("prices.carbon_g_per_kwh", 0.0)?;
        non_negative("prices.carbon_price_per_t", p.carbon_price_per_t)?;
        non_negative("prices.gas_kg_co2_per_kwh", p.gas_kg_co2_per_kwh)?;
        if !(p.boiler_efficiency.is_finite()
            && p.boiler_efficiency > 0.0
            && p.boiler_efficiency <= 1.2)
        {
            return Err(ScenarioError::invalid(
                "prices.boiler_efficiency",
                format!("{} is not in (0, 1.2]", p.boiler_efficiency),
            ));
        }
        self.price_series().map(|_| ())
    }

    /// The price series of `prices.electricity_file`, read and checked
    /// (`None` without a file).
    pub fn price_series(&self) -> Result<Option<protocol::series::PriceSeries>, ScenarioError> {
        let Some(f) = &self.prices.electricity_file else {
            return Ok(None);
        };
        let path = if f.is_absolute() {
            f.clone()
        } else {
            self.base_dir.join(f)
        };
        protocol::series::load(&path)
            .map(Some)
            .map_err(|e| ScenarioError::invalid("prices.electricity_file", e.to_string()))
    }

    /// The EPW file, resolved against the scenario's directory.
    pub fn epw_path(&self) -> Option<PathBuf> {
        self.weather.path.as_ref().map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                self.base_dir.join(p)
            }
        })
    }

    fn validate_cooling(&self) -> Result<(), ScenarioError> {
        let c = &self.cooling;
        if let Some(cop) = c.cop {
            positive("cooling.cop", cop)?;
        }
        positive("cooling.eta", c.eta)?;
        positive("cooling.approach_k", c.approach_k)?;
        positive("cooling.max_cop", c.max_cop)
    }

    fn validate_heat(&self) -> Result<(), ScenarioError> {
        unique("loops", self.loops.iter().map(|l| l.id.as_str()))?;
        unique("consumers", self.consumers.iter().map(|c| c.id.as_str()))?;
        let mut fed = HashSet::new();
        for (i, l) in self.loops.iter().enumerate() {
            positive(format!("loops[{i}].max_kw"), l.max_kw)?;
            if !self.consumers.iter().any(|c| c.id == l.consumer) {
                return Err(ScenarioError::invalid(
                    format!("loops[{i}].consumer"),
                    format!("no consumer with id `{}`", l.consumer),
                ));
            }
            if !fed.insert(l.consumer.as_str()) {
                return Err(ScenarioError::invalid(
                    format!("loops[{i}].consumer"),
                    format!("consumer `{}` is already fed by another loop", l.consumer),
                ));
            }
            if let Some(hp) = &l.heat_pump {
                positive(format!("loops[{i}].heat_pump.eta"), hp.eta)?;
                if hp.eta > 1.0 {
                    return Err(ScenarioError::invalid(
                        format!("loops[{i}].heat_pump.eta"),
                        format!("{} exceeds the Carnot limit (η ≤ 1)", hp.eta),
                    ));
                }
                if hp.supply_c <= l.supply_c + 1.0 {
                    return Err(ScenarioError::invalid(
                        format!("loops[{i}].heat_pump.supply_c"),
                        format!(
                            "{} °C must be above the loop's supply_c ({} °C) to need a heat pump",
                            hp.supply_c, l.supply_c
                        ),
                    ));
                }
                non_negative(
                    format!("loops[{i}].heat_pump.evaporator_approach_k"),
                    hp.evaporator_approach_k,
                )?;
                non_negative(
                    format!("loops[{i}].heat_pump.condenser_approach_k"),
                    hp.condenser_approach_k,
                )?;
                let cop = hp.cop(l.supply_c);
                if cop <= 1.0 {
                    return Err(ScenarioError::invalid(
                        format!("loops[{i}].heat_pump"),
                        format!("COP {cop:.2} ≤ 1: the heat pump would deliver no recovered heat"),
                    ));
                }
            }
        }
        for (i, c) in self.consumers.iter().enumerate() {
            let key = |k: &str| format!("consumers[{i}].{k}");
            if let Some(v) = c.heat_value_per_kwh {
                non_negative(key("heat_value_per_kwh"), v)?;
            }
            match c.kind {
                ConsumerKind::Profile => {
                    let d = c.demand_kw.as_ref().ok_or_else(|| {
                        ScenarioError::invalid(
                            key("demand_kw"),
                            "missing: kind = \"profile\" needs it",
                        )
                    })?;
                    d.check(&key("demand_kw"), 0.0)?;
                }
                ConsumerKind::Greenhouse => {
                    for (k, v) in [
                        ("area_m2", c.area_m2),
                        ("u_w_per_m2k", c.u_w_per_m2k),
                        ("setpoint_day_c", c.setpoint_day_c),
                        ("setpoint_night_c", c.setpoint_night_c),
                    ] {
                        let v = v.ok_or_else(|| {
                            ScenarioError::invalid(
                                key(k),
                                "missing: kind = \"greenhouse\" needs it",
                            )
                        })?;
                        if k.starts_with("setpoint") {
                            if !v.is_finite() {
                                return Err(ScenarioError::invalid(key(k), "must be finite"));
                            }
                        } else {
                            positive(key(k), v)?;
                        }
                    }
                    positive(key("thermal_mass_j_per_k"), c.thermal_mass_j_per_k)?;
                    share(key("solar_gain_factor"), c.solar_gain_factor)?;
                    if let Some(sc) = &c.screen {
                        share(key("screen.u_factor"), sc.u_factor)?;
                        for (k, v) in [
                            ("screen.close_below_night_c", sc.close_below_night_c),
                            ("screen.close_below_day_c", sc.close_below_day_c),
                        ] {
                            if !v.is_finite() {
                                return Err(ScenarioError::invalid(key(k), "must be finite"));
                            }
                        }
                    }
                    non_negative(key("infiltration_w_per_k"), c.infiltration_w_per_k)?;
                    non_negative(key("vent_margin_k"), c.vent_margin_k)?;
                    if c.day_start_h > 23 || c.day_end_h > 24 || c.day_start_h >= c.day_end_h {
                        return Err(ScenarioError::invalid(
                            key("day_start_h"),
                            "day_start_h < day_end_h ≤ 24 (hours UTC) required",
                        ));
                    }
                    if c.demand_kw.is_some() {
                        return Err(ScenarioError::invalid(
                            key("demand_kw"),
                            "a greenhouse's demand follows from its physics; demand_kw is for kind = \"profile\"",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_servers_and_vms(&self) -> Result<(), ScenarioError> {
        if self.servers.is_empty() {
            return Err(ScenarioError::invalid(
                "servers",
                "at least one [[servers]] group is needed",
            ));
        }
        let mut names = HashSet::new();
        let mut groups = Vec::with_capacity(self.servers.len());
        for (i, g) in self.servers.iter().enumerate() {
            let key = |k: &str| format!("servers[{i}].{k}");
            if g.name.is_empty() || !names.insert(g.name.as_str()) {
                return Err(ScenarioError::invalid(
                    key("name"),
                    format!("`{}` is empty or used twice", g.name),
                ));
            }
            if g.count == 0 {
                return Err(ScenarioError::invalid(key("count"), "must be ≥ 1"));
            }
            let r = g.resolve(i)?;
            if r.cores == 0 {
                return Err(ScenarioError::invalid(key("cores"), "must be ≥ 1"));
            }
            positive(key("mem_gib"), r.mem_gib)?;
            non_negative(key("off_w"), g.off_w)?;
            positive(key("r_k_per_w"), g.r_k_per_w)?;
            positive(key("thermal_capacity_j_per_k"), g.thermal_capacity_j_per_k)?;
            if !(g.inlet_c.is_finite() && g.temp_limit_c.is_finite()) {
                return Err(ScenarioError::invalid(key("inlet_c"), "must be finite"));
            }
            let idle_c = g.inlet_c + g.r_k_per_w * r.curve_w[0];
            if idle_c > g.temp_limit_c {
                return Err(ScenarioError::invalid(
                    key("temp_limit_c"),
                    format!(
                        "{} °C is below the idle temperature {idle_c:.1} °C (inlet {} °C + R × idle {} W): the server could never run",
                        g.temp_limit_c, g.inlet_c, r.curve_w[0]
                    ),
                ));
            }
            if let Some(cap) = g.cap_w {
                if !(cap.is_finite() && cap >= r.curve_w[0]) {
                    return Err(ScenarioError::invalid(
                        key("cap_w"),
                        format!("{cap} W is below the idle power {} W", r.curve_w[0]),
                    ));
                }
            }
            match (&g.heat_loop, g.recovery) {
                (Some(l), rec) => {
                    if !self.loops.iter().any(|x| &x.id == l) {
                        return Err(ScenarioError::invalid(
                            key("loop"),
                            format!("no loop with id `{l}`"),
                        ));
                    }
                    let rec = rec.ok_or_else(|| {
                        ScenarioError::invalid(
                            key("recovery"),
                            "missing: a server on a loop needs its recovered share",
                        )
                    })?;
                    share(key("recovery"), rec)?;
                }
                (None, Some(_)) => {
                    return Err(ScenarioError::invalid(
                        key("recovery"),
                        "set without a `loop`: an air-cooled server recovers nothing",
                    ))
                }
                (None, None) => {}
            }
            groups.push(r);
        }

        let p = &self.policy;
        positive("policy.cpu_overcommit", p.cpu_overcommit)?;
        non_negative("policy.migration_cost", p.migration_cost)?;
        non_negative("policy.switch_cost", p.switch_cost)?;

        let w = &self.workload;
        share("workload.interactive_load", w.interactive_load)?;
        share("workload.diurnal_amplitude", w.diurnal_amplitude)?;
        if w.interactive_load * (1.0 + w.diurnal_amplitude) > 1.0 + 1e-9 {
            return Err(ScenarioError::invalid(
                "workload.diurnal_amplitude",
                format!(
                    "interactive_load × (1 + diurnal_amplitude) = {:.2} exceeds 1 at the daily peak",
                    w.interactive_load * (1.0 + w.diurnal_amplitude)
                ),
            ));
        }
        non_negative(
            "workload.batch_arrivals_per_hour",
            w.batch_arrivals_per_hour,
        )?;
        positive("workload.mem_gib_per_vcpu", w.mem_gib_per_vcpu)?;
        for (k, r) in [
            ("batch_hours", w.batch_hours),
            ("batch_slack", w.batch_slack),
        ] {
            positive(format!("workload.{k}"), r[0])?;
            if r[1] < r[0] {
                return Err(ScenarioError::invalid(
                    format!("workload.{k}"),
                    "[min, max] with min ≤ max",
                ));
            }
        }
        if w.batch_slack[0] < 1.0 {
            return Err(ScenarioError::invalid(
                "workload.batch_slack",
                "slack below 1 gives deadlines no job can meet",
            ));
        }
        let mut sizes: Vec<(String, u32, f64)> = Vec::new();
        if w.interactive_vms > 0 {
            for (k, &c) in w.interactive_vcpus.iter().enumerate() {
                sizes.push((
                    format!("workload.interactive_vcpus[{k}]"),
                    c,
                    f64::from(c) * w.mem_gib_per_vcpu,
                ));
            }
            if w.interactive_vcpus.is_empty() {
                return Err(ScenarioError::invalid(
                    "workload.interactive_vcpus",
                    "empty",
                ));
            }
        }
        if w.batch_arrivals_per_hour > 0.0 {
            for (k, &c) in w.batch_vcpus.iter().enumerate() {
                sizes.push((
                    format!("workload.batch_vcpus[{k}]"),
                    c,
                    f64::from(c) * w.mem_gib_per_vcpu,
                ));
            }
            if w.batch_vcpus.is_empty() {
                return Err(ScenarioError::invalid("workload.batch_vcpus", "empty"));
            }
        }
        unique("vms", self.vms.iter().map(|v| v.id.as_str()))?;
        for (i, v) in self.vms.iter().enumerate() {
            let key = |k: &str| format!("vms[{i}].{k}");
            positive(key("mem_gib"), v.mem_gib)?;
            match v.kind {
                scheduler::model::VmKind::Interactive => {
                    let l = v.load.ok_or_else(|| {
                        ScenarioError::invalid(key("load"), "missing for an interactive VM")
                    })?;
                    share(key("load"), l)?;
                }
                scheduler::model::VmKind::Batch => {
                    let work = v.work_core_h.ok_or_else(|| {
                        ScenarioError::invalid(key("work_core_h"), "missing for a batch VM")
                    })?;
                    positive(key("work_core_h"), work)?;
                    let d = v.deadline.ok_or_else(|| {
                        ScenarioError::invalid(key("deadline"), "missing for a batch VM")
                    })?;
                    let arrival = v.arrival.unwrap_or(self.sim.start);
                    if d <= arrival {
                        return Err(ScenarioError::invalid(
                            key("deadline"),
                            "must be after the VM's arrival",
                        ));
                    }
                }
            }
            sizes.push((format!("vms[{i}]"), v.vcpus, v.mem_gib));
        }
        for (key, vcpus, _) in &sizes {
            if *vcpus == 0 {
                return Err(ScenarioError::invalid(
                    key.clone(),
                    "a VM needs at least 1 vCPU",
                ));
            }
        }
        // Every VM must fit some group, and every group must fit some VM.
        let fits = |g: &ResolvedGroup, vcpus: u32, mem: f64| {
            f64::from(vcpus) <= f64::from(g.cores) * p.cpu_overcommit + 1e-9
                && mem <= g.mem_gib + 1e-9
        };
        for (key, vcpus, mem) in &sizes {
            if !groups.iter().any(|g| fits(g, *vcpus, *mem)) {
                let largest = self
                    .servers
                    .iter()
                    .zip(&groups)
                    .map(|(s, g)| format!("{} has {} cores, {} GiB", s.name, g.cores, g.mem_gib))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(ScenarioError::invalid(
                    key.clone(),
                    format!("a VM of {vcpus} vCPUs and {mem} GiB fits no server group ({largest})"),
                ));
            }
        }
        if !sizes.is_empty() {
            for (i, g) in groups.iter().enumerate() {
                if !sizes.iter().any(|(_, c, m)| fits(g, *c, *m)) {
                    return Err(ScenarioError::invalid(
                        format!("servers[{i}].cores"),
                        format!(
                            "group `{}` ({} cores, {} GiB) is too small for any VM of the workload",
                            self.servers[i].name, g.cores, g.mem_gib
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Total number of servers.
    pub fn server_count(&self) -> usize {
        self.servers.iter().map(|g| g.count).sum()
    }
}
