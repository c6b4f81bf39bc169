//! The run's time series: one [`Row`] per output step (site, loops,
//! consumers), one [`PlanRow`] per plan, and optionally one [`ServerRow`]
//! per server and control period.

/// One loop at one output step (means over the step).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoopRow {
    /// Heat recovered from the servers, kW.
    pub recovered_kw: f64,
    /// Recovered heat taken by the consumer side, kW.
    pub used_kw: f64,
    /// Heat delivered to the consumer, kW.
    pub delivered_kw: f64,
    /// Consumer's demand, kW.
    pub demand_kw: f64,
    /// Heat pump electricity, kW.
    pub heat_pump_kw: f64,
    /// Heat the loop could deliver (recovered, bounded by the intake, lifted), kW.
    pub offered_kw: f64,
    /// Supply temperature to the consumer, °C.
    pub supply_c: f64,
}

/// One consumer at one output step (means over the step).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConsumerRow {
    /// Demand, kW.
    pub demand_kw: f64,
    /// Heat delivered from the datacenter, kW.
    pub delivered_kw: f64,
    /// Backup boiler heat, kW.
    pub backup_kw: f64,
    /// Indoor temperature at the end of the step (greenhouse), °C.
    pub indoor_c: f64,
    /// Setpoint, °C.
    pub setpoint_c: f64,
}

/// The site at one output step (means over the step unless said otherwise).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    /// Start of the step, seconds after the run's start.
    pub t_s: f64,
    /// Outdoor temperature, °C.
    pub outdoor_c: f64,
    /// Global horizontal irradiance, W/m².
    pub ghi_w_per_m2: f64,
    /// Electricity price, per kWh.
    pub price_per_kwh: f64,
    /// Grid carbon intensity, g CO2/kWh.
    pub carbon_g_per_kwh: f64,
    /// IT power, kW.
    pub it_kw: f64,
    /// Cooling power, kW.
    pub cooling_kw: f64,
    /// Heat pump power, kW.
    pub heat_pump_kw: f64,
    /// Servers on (at the end of the step).
    pub servers_on: usize,
    /// VMs placed (at the end of the step).
    pub vms: usize,
    /// Highest component temperature during the step, °C.
    pub max_temp_c: f64,
    /// Mean CPU utilisation of servers that are on.
    pub mean_util: f64,
    /// Electricity cost during the step.
    pub electricity_cost: f64,
    /// Heat value during the step.
    pub heat_value: f64,
    /// Cumulative net cost at the end of the step.
    pub cum_net_cost: f64,
    /// Per loop.
    pub loops: Vec<LoopRow>,
    /// Per consumer.
    pub consumers: Vec<ConsumerRow>,
}

impl Row {
    /// Facility power (IT + cooling + heat pumps), kW.
    pub fn facility_kw(&self) -> f64 {
        self.it_kw + self.cooling_kw + self.heat_pump_kw
    }
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanRow {
    /// Time, seconds after the start.
    pub t_s: f64,
    /// Solver name (`optimizer`, `greedy`, `first-fit`, `kept`).
    pub solver: String,
    /// Plan cost over its horizon.
    pub cost: f64,
    /// Greedy cost on the same snapshot, when computed.
    pub baseline_cost: Option<f64>,
    /// Lower bound, when the solver gives one.
    pub lower_bound: Option<f64>,
    /// Solver wall time, ms.
    pub solve_ms: f64,
    /// Migrations.
    pub migrations: usize,
    /// Switches.
    pub switches: usize,
    /// Servers on in the plan.
    pub servers_on: usize,
    /// Planned IT energy over the horizon, kWh.
    pub energy_kwh: f64,
    /// Planned heat delivered over the horizon, kWh.
    pub heat_delivered_kwh: f64,
}

/// One server over one control period.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServerRow {
    /// Start of the period, seconds after the start.
    pub t_s: f64,
    /// Server index.
    pub server: usize,
    /// Mean power, W.
    pub power_w: f64,
    /// Mean utilisation.
    pub cpu_util: f64,
    /// Temperature at the end of the period, °C.
    pub temp_c: f64,
    /// Cap in force, W (infinite: none).
    pub cap_w: f64,
    /// Switched on.
    pub on: bool,
    /// VMs hosted.
    pub vms: u32,
}

/// Everything recorded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Output step, s.
    pub step_s: f64,
    /// Site rows.
    pub rows: Vec<Row>,
    /// Plans.
    pub plans: Vec<PlanRow>,
    /// Per-server rows (when `output.per_server`).
    pub servers: Vec<ServerRow>,
}
