//! Time-series measurement and field names, and an InfluxDB line-protocol
//! encoder.
//!
//! The live controller's InfluxDB writer and the simulator's `timeseries.lp`
//! both use these names, so the Grafana dashboards in `dashboards/` work on
//! live and simulated data alike. Naming follows Telegraf: snake_case
//! measurements, identity as tags (`site`, `node`, `loop`, `consumer`),
//! values as fields with the unit in the name. `docs/timeseries.md` lists
//! them for dashboard authors.

use std::fmt::Write as _;

/// One server: tags `site`, `node`, optional `loop`, optional `group`.
/// Fields: [`fields::POWER_W`], [`fields::CPU_UTIL`], [`fields::TEMP_C`],
/// [`fields::INLET_C`], [`fields::CAP_W`], [`fields::ON`], [`fields::VMS`].
pub const SERVER: &str = "phoenix_server";
/// One heat loop: tags `site`, `loop`. Fields: `heat_recovered_kw`,
/// `heat_delivered_kw`, `heat_demand_kw`, `heat_offered_kw`, `supply_temp_c`.
pub const LOOP: &str = "phoenix_loop";
/// One heat consumer: tags `site`, `consumer`. Fields: `demand_kw`,
/// `delivered_kw`, `backup_kw`, `indoor_c`, `setpoint_c`, `outdoor_c`.
pub const CONSUMER: &str = "phoenix_consumer";
/// The whole site: tag `site`. Fields: `it_power_kw`, `cooling_power_kw`,
/// `heat_pump_power_kw`, `facility_power_kw`, `pue`, `erf`,
/// `electricity_price_per_kwh`, `outdoor_c`, `servers_on`, `vms`.
pub const SITE: &str = "phoenix_site";
/// One plan of the scheduler: tags `site`, `solver`. Fields: `cost`,
/// `baseline_cost`, `gain`, `lower_bound`, `solve_ms`, `migrations`,
/// `switches`, `servers_on`, `energy_kwh`, `heat_delivered_kwh`.
pub const PLAN: &str = "phoenix_plan";
/// One facility device polled over Modbus: tags `site`, `device`. Fields:
/// the device's point names (scaled values), plus `online` (0/1).
pub const FACILITY: &str = "phoenix_facility";

/// Field names (units in the names).
pub mod fields {
    /// Electrical power, W.
    pub const POWER_W: &str = "power_w";
    /// CPU utilisation, 0–1.
    pub const CPU_UTIL: &str = "cpu_util";
    /// Component (CPU) temperature, °C.
    pub const TEMP_C: &str = "temp_c";
    /// Inlet air or coolant temperature, °C.
    pub const INLET_C: &str = "inlet_c";
    /// Power cap in force, W.
    pub const CAP_W: &str = "cap_w";
    /// Switched on (1) or off (0).
    pub const ON: &str = "on";
    /// Number of VMs hosted.
    pub const VMS: &str = "vms";
    /// Heat recovered into a loop, kW.
    pub const HEAT_RECOVERED_KW: &str = "heat_recovered_kw";
    /// Heat delivered to the consumer, kW.
    pub const HEAT_DELIVERED_KW: &str = "heat_delivered_kw";
    /// Heat demand of the consumer, kW.
    pub const HEAT_DEMAND_KW: &str = "heat_demand_kw";
    /// Heat offered to the consumer, kW.
    pub const HEAT_OFFERED_KW: &str = "heat_offered_kw";
    /// Loop supply temperature, °C.
    pub const SUPPLY_TEMP_C: &str = "supply_temp_c";
    /// Consumer heat demand, kW.
    pub const DEMAND_KW: &str = "demand_kw";
    /// Heat delivered to the consumer, kW.
    pub const DELIVERED_KW: &str = "delivered_kw";
    /// Heat from the consumer's backup boiler, kW.
    pub const BACKUP_KW: &str = "backup_kw";
    /// Indoor temperature, °C.
    pub const INDOOR_C: &str = "indoor_c";
    /// Heating setpoint, °C.
    pub const SETPOINT_C: &str = "setpoint_c";
    /// Outdoor temperature, °C.
    pub const OUTDOOR_C: &str = "outdoor_c";
    /// IT power of the site, kW.
    pub const IT_POWER_KW: &str = "it_power_kw";
    /// Cooling power of the site, kW.
    pub const COOLING_POWER_KW: &str = "cooling_power_kw";
    /// Heat pump electrical power, kW.
    pub const HEAT_PUMP_POWER_KW: &str = "heat_pump_power_kw";
    /// Total facility power, kW.
    pub const FACILITY_POWER_KW: &str = "facility_power_kw";
    /// Power usage effectiveness (ISO/IEC 30134-2).
    pub const PUE: &str = "pue";
    /// Energy reuse factor (ISO/IEC 30134-6).
    pub const ERF: &str = "erf";
    /// Electricity price, per kWh.
    pub const ELECTRICITY_PRICE_PER_KWH: &str = "electricity_price_per_kwh";
    /// Grid carbon intensity, g CO2/kWh.
    pub const CARBON_G_PER_KWH: &str = "carbon_g_per_kwh";
    /// Servers switched on.
    pub const SERVERS_ON: &str = "servers_on";
    /// Plan cost over the horizon.
    pub const COST: &str = "cost";
    /// Cost of the greedy baseline plan over the same horizon.
    pub const BASELINE_COST: &str = "baseline_cost";
    /// `baseline_cost - cost`.
    pub const GAIN: &str = "gain";
    /// Lower bound on the optimal cost.
    pub const LOWER_BOUND: &str = "lower_bound";
    /// Solver wall time, ms.
    pub const SOLVE_MS: &str = "solve_ms";
    /// Migrations in the plan.
    pub const MIGRATIONS: &str = "migrations";
    /// On/off switches in the plan.
    pub const SWITCHES: &str = "switches";
    /// IT energy over the horizon, kWh.
    pub const ENERGY_KWH: &str = "energy_kwh";
    /// Heat delivered over the horizon, kWh.
    pub const HEAT_DELIVERED_KWH: &str = "heat_delivered_kwh";
    /// Device answers (1) or not (0).
    pub const ONLINE: &str = "online";
}

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A float (written as is).
    Float(f64),
    /// An integer (written with the `i` suffix).
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string (quoted).
    Str(String),
}

/// One point of line protocol: `measurement,tags fields timestamp_ns`.
///
/// Non-finite floats are skipped (line protocol cannot carry them); a point
/// left with no field encodes to nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    measurement: &'static str,
    tags: Vec<(&'static str, String)>,
    fields: Vec<(String, FieldValue)>,
    timestamp_ns: i64,
}

impl Point {
    /// A point of `measurement` at `timestamp_ns` (Unix epoch, ns).
    pub fn new(measurement: &'static str, timestamp_ns: i64) -> Self {
        Self {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp_ns,
        }
    }

    /// Add a tag (identity).
    pub fn tag(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.tags.push((key, value.into()));
        self
    }

    /// Add a float field; NaN and infinities are dropped.
    pub fn float(mut self, key: impl Into<String>, value: f64) -> Self {
        if value.is_finite() {
            self.fields.push((key.into(), FieldValue::Float(value)));
        }
        self
    }

    /// Add an integer field.
    pub fn int(mut self, key: impl Into<String>, value: i64) -> Self {
        self.fields.push((key.into(), FieldValue::Int(value)));
        self
    }

    /// Add a boolean field.
    pub fn boolean(mut self, key: impl Into<String>, value: bool) -> Self {
        self.fields.push((key.into(), FieldValue::Bool(value)));
        self
    }

    /// Add a string field.
    pub fn string(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields
            .push((key.into(), FieldValue::Str(value.into())));
        self
    }

    /// The measurement name.
    pub fn measurement(&self) -> &'static str {
        self.measurement
    }

    /// Whether the point has at least one field.
    pub fn has_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Append this point as one line (with a trailing newline) to `out`.
    pub fn write_line(&self, out: &mut String) {
        if self.fields.is_empty() {
            return;
        }
        out.push_str(&escape(self.measurement, &[',', ' ']));
        for (k, v) in &self.tags {
            if v.is_empty() {
                continue; // line protocol forbids empty tag values
            }
            let _ = write!(
                out,
                ",{}={}",
                escape(k, &[',', '=', ' ']),
                escape(v, &[',', '=', ' '])
            );
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            out.push_str(&escape(k, &[',', '=', ' ']));
            out.push('=');
            match v {
                FieldValue::Float(f) => {
                    let _ = write!(out, "{f}");
                }
                FieldValue::Int(n) => {
                    let _ = write!(out, "{n}i");
                }
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                FieldValue::Str(s) => {
                    out.push('"');
                    out.push_str(&s.replace('\\', "\\\\").replace('"', "\\\""));
                    out.push('"');
                }
            }
        }
        let _ = writeln!(out, " {}", self.timestamp_ns);
    }

    /// This point as one line of line protocol (with a trailing newline), or
    /// an empty string when it has no field.
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        self.write_line(&mut s);
        s
    }
}

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) || c == '\\' {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_protocol_escapes_tags_and_types_fields() {
        let p = Point::new(SERVER, 1_700_000_000_000_000_000)
            .tag("site", "gh a")
            .tag("node", "n=1,x")
            .float(fields::POWER_W, 110.5)
            .int(fields::VMS, 3)
            .boolean(fields::ON, true)
            .string("note", "say \"hi\"");
        assert_eq!(
            p.to_line(),
            "phoenix_server,site=gh\\ a,node=n\\=1\\,x power_w=110.5,vms=3i,on=true,note=\"say \\\"hi\\\"\" 1700000000000000000\n"
        );
    }

    #[test]
    fn non_finite_fields_are_dropped_and_empty_points_vanish() {
        let p = Point::new(LOOP, 0)
            .tag("site", "s")
            .float(fields::HEAT_DELIVERED_KW, f64::NAN);
        assert!(!p.has_fields());
        assert_eq!(p.to_line(), "");
    }
}
