//! The site config file (TOML), the part of it the bridge reads.
//!
//! One file serves `phoenix bridge` and `phoenix controller`. The bridge owns
//! the top-level sections `[mqtt]`, `[modbus_server]`, `[home_assistant]`,
//! `[[devices]]` and `[[consumers]]`; everything the controller needs lives
//! under one `[controller]` table (with sub-tables such as
//! `[controller.scheduler]`), which the bridge carries unparsed
//! ([`SiteConfig<toml::Table>`]) and the controller parses with its own type
//! (`SiteConfig<ControllerConfig>`). Any other top-level key is an error, as
//! is any unknown key inside a section (`deny_unknown_fields`), so a typo
//! never passes silently. [`SiteConfig::validate`] then checks what serde
//! cannot: overlapping points, 32-bit types without a word order, points
//! outside the 16-bit address space, limits the type cannot hold, min > max,
//! bad addresses — each error names the device and point.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::registers::{coalesce, Encoding, ReadBlock, Table, ValueType, WordOrder};

/// Why a site config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a missing key, or a wrong type; `place`
    /// names the device and point the error lies in, when it lies in one.
    #[error("{}{}", place.as_ref().map(|p| format!("{p}: ")).unwrap_or_default(), message)]
    Toml {
        /// `device `hp`, point `sp``, or `device `hp``.
        place: Option<String>,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The `[mqtt]` URL, credentials or TLS files cannot be used (the
    /// message names the file or variable, never the password).
    #[error("[mqtt]: {0}")]
    Mqtt(#[from] mqtt::MqttSetupError),
    /// Well-formed but inconsistent.
    #[error("{place}: {problem}")]
    Invalid {
        /// Where: `device `hp`, point `sp``, `[mqtt]`, `consumer `gh1``.
        place: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(place: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        place: place.into(),
        problem: problem.into(),
    }
}

/// The whole site file. `C` is the type of the `[controller]` section: the
/// bridge keeps it as a raw [`toml::Table`]; the controller supplies its own
/// typed config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig<C = toml::Table> {
    /// MQTT broker and site id.
    pub mqtt: MqttConfig,
    /// Phoenix's figures over Modbus TCP for a BMS (optional).
    #[serde(default)]
    pub modbus_server: Option<ModbusServerConfig>,
    /// Home Assistant MQTT discovery (optional, off unless present and
    /// enabled).
    #[serde(default)]
    pub home_assistant: Option<HomeAssistantConfig>,
    /// Modbus devices polled by the bridge.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Heat consumers (greenhouses) with per-consumer settings; consumers not
    /// listed are still served with the defaults.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// The controller's section, not read by the bridge (an `Option`, so
    /// absent means `None`).
    pub controller: Option<C>,
}

/// `[mqtt]`: the broker, the site id, and (flattened into the same table)
/// the credentials and TLS files of DESIGN.md §4.7 — `username`,
/// `password_file` or `password_env`, `ca_file`, `client_cert_file`,
/// `client_key_file`. The bridge and the controller both connect with
/// these; [`MqttConfig::options`] turns them into client options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]`
    /// (TLS, port 8883); never with credentials in it.
    pub url: String,
    /// Site id: the `<site>` of `phoenix/v1/<site>/…`.
    pub site: String,
    /// Client id; default `phoenix-bridge-<site>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive, s (default 30).
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Username, password source, CA and client certificate files.
    #[serde(flatten)]
    pub security: mqtt::MqttSecurity,
}

fn default_keep_alive_s() -> u64 {
    30
}

impl MqttConfig {
    /// Host and port parsed from [`MqttConfig::url`].
    pub fn host_port(&self) -> Result<(String, u16), ConfigError> {
        let u = mqtt::parse_url(&self.url)?;
        Ok((u.host, u.port))
    }

    /// Client options for `client_id`: address, keep-alive, credentials
    /// and TLS (reads the password, CA and certificate files now). The
    /// caller adds its last will, packet sizes and session kind.
    pub fn options(
        &self,
        client_id: impl Into<String>,
    ) -> Result<rumqttc::MqttOptions, ConfigError> {
        Ok(self.settings().options(client_id)?)
    }

    /// The shared connection settings of this section.
    pub fn settings(&self) -> mqtt::MqttSettings {
        mqtt::MqttSettings {
            url: self.url.clone(),
            keep_alive_s: self.keep_alive_s,
            security: self.security.clone(),
        }
    }

    /// The client id to use.
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("phoenix-bridge-{}", self.site))
    }
}

/// `[modbus_server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusServerConfig {
    /// Listen address, e.g. `127.0.0.1:1502`.
    pub listen: SocketAddr,
}

/// `[home_assistant]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish discovery configs (default true when the section is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Discovery prefix (default `homeassistant`).
    #[serde(default = "default_ha_prefix")]
    pub prefix: String,
}

fn yes() -> bool {
    true
}

fn default_ha_prefix() -> String {
    "homeassistant".to_string()
}

/// What a device is, for the controller's typed API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRole {
    /// A heat pump; must have a writable point `supply_setpoint_c`.
    HeatPump,
    /// A heat meter; must have `power_kw` and `energy_kwh`; may have
    /// `supply_c`, `return_c`, `flow_m3_h`.
    HeatMeter,
    /// A dry cooler (no required points).
    DryCooler,
    /// Anything else.
    Other,
}

/// Point names the roles rely on (see [`DeviceRole`]).
pub mod role_points {
    /// Heat pump: supply temperature setpoint, °C, writable.
    pub const SUPPLY_SETPOINT_C: &str = "supply_setpoint_c";
    /// Heat meter: thermal power, kW.
    pub const POWER_KW: &str = "power_kw";
    /// Heat meter: energy counter, kWh.
    pub const ENERGY_KWH: &str = "energy_kwh";
    /// Heat meter: supply (flow) temperature, °C.
    pub const SUPPLY_C: &str = "supply_c";
    /// Heat meter: return temperature, °C.
    pub const RETURN_C: &str = "return_c";
    /// Heat meter: volume flow, m³/h.
    pub const FLOW_M3_H: &str = "flow_m3_h";
}

/// `[[devices]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device name (a topic level: `facility/<name>/…`).
    pub name: String,
    /// `host:port` of the Modbus TCP device or gateway.
    pub address: String,
    /// Unit (slave) id, default 1.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Poll period, ms (default 1000).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Timeout of every Modbus call (and of connecting), ms (default 500).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Role for the controller's typed API (default `other`).
    #[serde(default)]
    pub role: Option<DeviceRole>,
    /// How long a write may wait as the wanted value (device down, or held
    /// by the rate limit) before it is dropped and answered `expired`, s
    /// (default 300).
    #[serde(default = "default_write_expiry_s")]
    pub write_expiry_s: f64,
    /// Least time between two writes to the same point, s (default 5; 0
    /// turns the limit off). A write arriving sooner is held as the wanted
    /// value and written once the interval has passed.
    #[serde(default = "default_min_write_interval_s")]
    pub min_write_interval_s: f64,
    /// The device's points.
    #[serde(default)]
    pub points: Vec<PointConfig>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
/// Default of [`DeviceConfig::write_expiry_s`].
pub const DEFAULT_WRITE_EXPIRY_S: f64 = 300.0;
/// Default of [`DeviceConfig::min_write_interval_s`].
pub const DEFAULT_MIN_WRITE_INTERVAL_S: f64 = 5.0;
fn default_write_expiry_s() -> f64 {
    DEFAULT_WRITE_EXPIRY_S
}
fn default_min_write_interval_s() -> f64 {
    DEFAULT_MIN_WRITE_INTERVAL_S
}

/// `[[devices.points]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Point name (a JSON key in the state; units in the name: `_c`, `_kw`).
    pub name: String,
    /// Table.
    pub table: Table,
    /// 0-based PDU address.
    pub address: u16,
    /// Type of register points (default `u16`); not allowed for coils and
    /// discrete inputs.
    #[serde(default, rename = "type")]
    pub value_type: Option<ValueType>,
    /// Engineering value = raw × scale (default 1).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Word order, required for 32-bit types, refused for 16-bit ones.
    #[serde(default)]
    pub word_order: Option<WordOrder>,
    /// Whether `facility/<device>/set` may write it (default false).
    #[serde(default)]
    pub writable: bool,
    /// Lowest value a write may set (engineering units); required for
    /// writable registers.
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest value a write may set; required for writable registers.
    #[serde(default)]
    pub max: Option<f64>,
    /// Write back, on a clean shutdown, the value the point had before the
    /// bridge first wrote it (default true; writable points only).
    #[serde(default = "yes")]
    pub restore_on_exit: bool,
}

fn default_scale() -> f64 {
    1.0
}

impl PointConfig {
    /// Registers or bits the point spans.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.value_type.unwrap_or(ValueType::U16).width()
        }
    }

    /// The register encoding, or `None` for coils and discrete inputs.
    pub fn encoding(&self) -> Option<Encoding> {
        if self.table.is_bits() {
            return None;
        }
        Some(Encoding {
            value_type: self.value_type.unwrap_or(ValueType::U16),
            word_order: self.word_order.unwrap_or(WordOrder::ABCD),
            scale: self.scale,
        })
    }
}

/// `[[consumers]]`: settings for one heat consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Consumer id (the `<id>` of `consumer/<id>/…`).
    pub id: String,
    /// Demand older than this is stale, s (default 300).
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: f64,
    /// Demand assumed while stale, kW (default 0: no heat is promised on
    /// the strength of a silent consumer).
    #[serde(default)]
    pub fallback_kw: f64,
    /// Demand estimator for a consumer that publishes only its climate.
    #[serde(default)]
    pub estimator: Option<EstimatorConfig>,
}

fn default_stale_after_s() -> f64 {
    300.0
}

/// `[consumers.estimator]`: PI on the indoor temperature error with the
/// greenhouse's heat loss U·A·(T_set − T_out) as feed-forward.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimatorConfig {
    /// Heat loss coefficient U·A of the greenhouse, kW/K.
    pub ua_kw_per_k: f64,
    /// Proportional gain, kW per K of error (default 2·U·A).
    #[serde(default)]
    pub kp_kw_per_k: Option<f64>,
    /// Integral time, s (default 1800).
    #[serde(default = "default_ti_s")]
    pub ti_s: f64,
    /// Upper clamp of the estimate, kW.
    pub max_kw: f64,
    /// Outdoor temperature assumed when the climate message has none, °C;
    /// without it the feed-forward is off until an outdoor reading arrives.
    #[serde(default)]
    pub outdoor_c: Option<f64>,
}

fn default_ti_s() -> f64 {
    1800.0
}

fn device_place(d: &str) -> String {
    format!("device `{d}`")
}

fn point_place(d: &str, p: &str) -> String {
    format!("device `{d}`, point `{p}`")
}

impl<C: DeserializeOwned> SiteConfig<C> {
    /// Parse and validate a site config from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Toml {
            place: e.span().and_then(|span| enclosing_place(text, span.start)),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a site config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }
}

impl<C> SiteConfig<C> {
    /// Check everything serde cannot; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.mqtt.settings().validate()?;
        if !protocol::topics::valid_level(&self.mqtt.site) {
            return Err(invalid(
                "[mqtt] site",
                format!("`{}` is not a valid topic level", self.mqtt.site),
            ));
        }
        if let Some(ha) = &self.home_assistant {
            if ha.prefix.is_empty() || ha.prefix.contains(['+', '#']) {
                return Err(invalid(
                    "[home_assistant] prefix",
                    "must be a topic without wildcards",
                ));
            }
        }
        let mut names = HashSet::new();
        for d in &self.devices {
            if !names.insert(d.name.as_str()) {
                return Err(invalid(device_place(&d.name), "device name used twice"));
            }
            validate_device(d)?;
        }
        let mut ids = HashSet::new();
        for c in &self.consumers {
            let place = format!("consumer `{}`", c.id);
            if !protocol::topics::valid_level(&c.id) {
                return Err(invalid(place, "id is not a valid topic level"));
            }
            if !ids.insert(c.id.as_str()) {
                return Err(invalid(place, "consumer listed twice"));
            }
            if !(c.stale_after_s.is_finite() && c.stale_after_s > 0.0) {
                return Err(invalid(place, "stale_after_s must be > 0"));
            }
            if !(c.fallback_kw.is_finite() && c.fallback_kw >= 0.0) {
                return Err(invalid(place, "fallback_kw must be ≥ 0"));
            }
            if let Some(e) = &c.estimator {
                let ok = |v: f64| v.is_finite() && v > 0.0;
                if !ok(e.ua_kw_per_k) {
                    return Err(invalid(place, "estimator.ua_kw_per_k must be > 0"));
                }
                if !ok(e.ti_s) {
                    return Err(invalid(place, "estimator.ti_s must be > 0"));
                }
                if !ok(e.max_kw) {
                    return Err(invalid(place, "estimator.max_kw must be > 0"));
                }
                if e.kp_kw_per_k.is_some_and(|k| !(k.is_finite() && k >= 0.0)) {
                    return Err(invalid(place, "estimator.kp_kw_per_k must be ≥ 0"));
                }
            }
        }
        Ok(())
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Settings of consumer `id`, if listed.
    pub fn consumer(&self, id: &str) -> Option<&ConsumerConfig> {
        self.consumers.iter().find(|c| c.id == id)
    }
}

/// The `name = "…"` of the table whose header starts at line `from`.
fn table_name(lines: &[&str], from: usize) -> Option<String> {
    lines[from + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
}

/// The device (and point) whose table holds byte `offset` of `text`, for
/// errors the TOML parser reports by position.
fn enclosing_place(text: &str, offset: usize) -> Option<String> {
    let line_of_error = text.get(..offset)?.matches('\n').count();
    let lines: Vec<&str> = text.lines().collect();
    let header = |i: usize| lines[i].trim();
    let table = (0..=line_of_error.min(lines.len().saturating_sub(1)))
        .rev()
        .find(|&i| header(i).starts_with('['))?;
    let device_at = (0..=table).rev().find(|&i| header(i) == "[[devices]]")?;
    if (device_at + 1..table)
        .any(|i| header(i).starts_with('[') && !header(i).starts_with("[[devices."))
    {
        return None; // a later top-level section sits between them
    }
    let device = table_name(&lines, device_at)?;
    match header(table) {
        "[[devices]]" => Some(device_place(&device)),
        "[[devices.points]]" => Some(match table_name(&lines, table) {
            Some(point) => point_place(&device, &point),
            None => device_place(&device),
        }),
        _ => None,
    }
}

/// Whether `address` is `host:port` with a non-empty host and a port > 0.
fn valid_device_address(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn validate_device(d: &DeviceConfig) -> Result<(), ConfigError> {
    let place = device_place(&d.name);
    if !protocol::topics::valid_level(&d.name) {
        return Err(invalid(place, "name is not a valid topic level"));
    }
    if !valid_device_address(&d.address) {
        return Err(invalid(
            place,
            format!("address `{}` is not host:port", d.address),
        ));
    }
    if d.poll_ms < 10 {
        return Err(invalid(place, "poll_ms must be ≥ 10"));
    }
    if d.timeout_ms == 0 {
        return Err(invalid(place, "timeout_ms must be > 0"));
    }
    if !(d.write_expiry_s.is_finite() && d.write_expiry_s > 0.0 && d.write_expiry_s <= 86_400.0) {
        return Err(invalid(place, "write_expiry_s must be in (0, 86400]"));
    }
    if !(d.min_write_interval_s.is_finite()
        && d.min_write_interval_s >= 0.0
        && d.min_write_interval_s < d.write_expiry_s)
    {
        return Err(invalid(
            place,
            "min_write_interval_s must be ≥ 0 and below write_expiry_s",
        ));
    }
    if d.points.is_empty() {
        return Err(invalid(place, "has no points"));
    }
    let mut names = HashSet::new();
    for p in &d.points {
        if !names.insert(p.name.as_str()) {
            return Err(invalid(
                point_place(&d.name, &p.name),
                "point name used twice",
            ));
        }
        validate_point(&d.name, p)?;
    }
    // Overlaps, per table: sort spans by start and compare neighbours.
    let mut by_table: BTreeMap<Table, Vec<&PointConfig>> = BTreeMap::new();
    for p in &d.points {
        by_table.entry(p.table).or_default().push(p);
    }
    for points in by_table.values_mut() {
        points.sort_by_key(|p| p.address);
        for pair in points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if u32::from(a.address) + u32::from(a.width()) > u32::from(b.address) {
                return Err(invalid(
                    point_place(&d.name, &b.name),
                    format!(
                        "{} address {} overlaps point `{}` ({} registers from {})",
                        b.table.as_str(),
                        b.address,
                        a.name,
                        a.width(),
                        a.address
                    ),
                ));
            }
        }
    }
    if let Some(role) = d.role {
        let needs: &[&str] = match role {
            DeviceRole::HeatPump => &[role_points::SUPPLY_SETPOINT_C],
            DeviceRole::HeatMeter => &[role_points::POWER_KW, role_points::ENERGY_KWH],
            DeviceRole::DryCooler | DeviceRole::Other => &[],
        };
        for n in needs {
            if !d.points.iter().any(|p| p.name == *n) {
                return Err(invalid(
                    place,
                    format!("role {role:?} needs a point named `{n}`"),
                ));
            }
        }
        if role == DeviceRole::HeatPump
            && !d
                .points
                .iter()
                .any(|p| p.name == role_points::SUPPLY_SETPOINT_C && p.writable)
        {
            return Err(invalid(
                point_place(&d.name, role_points::SUPPLY_SETPOINT_C),
                "a heat pump's supply setpoint must be writable",
            ));
        }
    }
    Ok(())
}

fn validate_point(device: &str, p: &PointConfig) -> Result<(), ConfigError> {
    let place = point_place(device, &p.name);
    if !protocol::topics::valid_level(&p.name) || p.name == "online" || p.name == "ts" {
        return Err(invalid(
            place,
            "name must be a topic level other than `online` and `ts`",
        ));
    }
    if p.table.is_bits() {
        if p.value_type.is_some() || p.word_order.is_some() || p.scale != 1.0 {
            return Err(invalid(
                place,
                format!(
                    "a {} point takes no type, word_order or scale",
                    p.table.as_str()
                ),
            ));
        }
        if p.min.is_some() || p.max.is_some() {
            return Err(invalid(
                place,
                format!("a {} point takes no min/max", p.table.as_str()),
            ));
        }
    } else {
        let ty = p.value_type.unwrap_or(ValueType::U16);
        match (ty.width(), p.word_order) {
            (2, None) => {
                return Err(invalid(
                    place,
                    format!(
                        "type {} needs a word_order (ABCD, CDAB, BADC or DCBA)",
                        ty.as_str()
                    ),
                ))
            }
            (1, Some(_)) => {
                return Err(invalid(
                    place,
                    format!(
                        "type {} spans one register: word_order has no meaning",
                        ty.as_str()
                    ),
                ))
            }
            _ => {}
        }
        if !(p.scale.is_finite() && p.scale != 0.0) {
            return Err(invalid(place, "scale must be a finite non-zero number"));
        }
    }
    if u32::from(p.address) + u32::from(p.width()) > 65_536 {
        return Err(invalid(
            place,
            format!(
                "address {} + {} registers runs past 65535",
                p.address,
                p.width()
            ),
        ));
    }
    if p.writable && !p.table.is_writable() {
        return Err(invalid(
            place,
            format!("{} points are read-only in Modbus", p.table.as_str()),
        ));
    }
    if let (Some(min), Some(max)) = (p.min, p.max) {
        if !(min.is_finite() && max.is_finite()) {
            return Err(invalid(place, "min and max must be finite"));
        }
        if min > max {
            return Err(invalid(place, format!("min {min} > max {max}")));
        }
    }
    if p.writable && !p.table.is_bits() {
        let (Some(min), Some(max)) = (p.min, p.max) else {
            return Err(invalid(place, "a writable register needs both min and max"));
        };
        let enc = p.encoding().expect("register point");
        for (which, v) in [("min", min), ("max", max)] {
            if let Err(e) = enc.encode(v) {
                return Err(invalid(
                    place,
                    format!("{which} {v} is outside what the register holds: {e}"),
                ));
            }
        }
    }
    Ok(())
}

/// The reads that cover `device`'s points (coalesced, ≤ 125 registers each).
pub fn read_plan(device: &DeviceConfig) -> Vec<ReadBlock> {
    let spans: Vec<(Table, u16, u16)> = device
        .points
        .iter()
        .map(|p| (p.table, p.address, p.width()))
        .collect();
    coalesce(&spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[mqtt]
url = "mqtt://127.0.0.1:1883"
site = "greenhouse-a"
"#;

    fn with_device(points: &str) -> String {
        format!("{BASE}\n[[devices]]\nname = \"heatpump\"\naddress = \"10.0.0.20:502\"\n{points}")
    }

    fn err(text: &str) -> String {
        SiteConfig::<toml::Table>::from_toml(text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let text = with_device(
            r#"unit = 1
poll_ms = 1000
timeout_ms = 500
[[devices.points]]
name = "supply_setpoint_c"
table = "holding"
address = 10
type = "i16"
scale = 0.1
writable = true
min = 30
max = 70
"#,
        );
        let cfg = SiteConfig::<toml::Table>::from_toml(&text).unwrap();
        assert_eq!(cfg.devices[0].points[0].value_type, Some(ValueType::I16));
        assert_eq!(
            cfg.mqtt.host_port().unwrap(),
            ("127.0.0.1".to_string(), 1883)
        );
    }

    #[test]
    fn the_mqtt_section_takes_credentials_and_tls_files_and_refuses_a_misspelled_one() {
        let text = BASE.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtts://broker.example\"\nusername = \"phoenix-controller\"\npassword_env = \"PW\"\nca_file = \"/etc/phoenix/ca.pem\"",
        );
        let cfg = SiteConfig::<toml::Table>::from_toml(&text).unwrap();
        assert_eq!(
            cfg.mqtt.security.username.as_deref(),
            Some("phoenix-controller")
        );
        assert_eq!(
            cfg.mqtt.host_port().unwrap(),
            ("broker.example".into(), 8883)
        );
        let e = err(&format!("{BASE}pasword_file = \"/x\"\n"));
        assert!(e.contains("pasword_file"), "{e}");
        let e = err(&format!("{BASE}ca_file = \"/ca.pem\"\n"));
        assert!(
            e.contains("[mqtt]: ") && e.contains("need an mqtts:// URL"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\nwritabel = true\n",
        ));
        assert!(e.contains("writabel"), "{e}");
        assert!(e.starts_with("device `heatpump`, point `a`: "), "{e}");
        let e = err(&format!("{BASE}\n[schedular]\nx = 1\n"));
        assert!(e.contains("schedular"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_device_they_lie_in() {
        let e = err(&with_device("poll_ms = \"fast\"\n[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n"));
        assert!(e.starts_with("device `heatpump`: "), "{e}");
        let e = err(&with_device(
            "[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n[[consumers]]\nid = \"gh1\"\nstale_after = 5\n",
        ));
        assert!(
            !e.contains("device `"),
            "an error in [[consumers]] names no device: {e}"
        );
        assert!(e.contains("stale_after"), "{e}");
        let e = err(&format!("{BASE}\n[modbus_server]\nlisten = \"nowhere\"\n"));
        assert!(!e.contains("device"), "{e}");
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn the_controller_section_is_carried_unparsed() {
        let cfg = SiteConfig::<toml::Table>::from_toml(&format!(
            "{BASE}\n[controller]\nperiod_s = 900\n[controller.scheduler]\nsolver = \"optimizer\"\n"
        ))
        .unwrap();
        let c = cfg.controller.unwrap();
        assert_eq!(c["period_s"].as_integer(), Some(900));
    }

    #[test]
    fn overlapping_points_name_device_and_both_points() {
        let e = err(&with_device(
            r#"[[devices.points]]
name = "temp_c"
table = "holding"
address = 10
type = "f32"
word_order = "ABCD"
[[devices.points]]
name = "mode"
table = "holding"
address = 11
"#,
        ));
        assert!(
            e.contains("heatpump") && e.contains("mode") && e.contains("temp_c"),
            "{e}"
        );
    }

    #[test]
    fn same_address_in_different_tables_is_fine() {
        let text = with_device(
            "[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n[[devices.points]]\nname = \"b\"\ntable = \"input\"\naddress = 0\n",
        );
        SiteConfig::<toml::Table>::from_toml(&text).unwrap();
    }

    #[test]
    fn a_32_bit_type_needs_a_word_order() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"energy_kwh\"\ntable = \"input\"\naddress = 0\ntype = \"u32\"\n",
        ));
        assert!(
            e.contains("energy_kwh") && e.contains("word_order") && e.contains("heatpump"),
            "{e}"
        );
    }

    #[test]
    fn a_point_past_the_address_space_is_refused() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"x\"\ntable = \"input\"\naddress = 65535\ntype = \"f32\"\nword_order = \"ABCD\"\n",
        ));
        assert!(e.contains("`x`") && e.contains("65535"), "{e}");
    }

    #[test]
    fn limits_the_register_cannot_hold_are_refused() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"sp_c\"\ntable = \"holding\"\naddress = 0\ntype = \"i16\"\nscale = 0.1\nwritable = true\nmin = 0\nmax = 5000\n",
        ));
        assert!(e.contains("sp_c") && e.contains("max 5000"), "{e}");
    }

    #[test]
    fn min_above_max_is_refused() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"sp_c\"\ntable = \"holding\"\naddress = 0\nwritable = true\nmin = 70\nmax = 30\n",
        ));
        assert!(e.contains("sp_c") && e.contains("min 70 > max 30"), "{e}");
    }

    #[test]
    fn writable_registers_need_bounds_and_read_only_tables_cannot_be_writable() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"sp_c\"\ntable = \"holding\"\naddress = 0\nwritable = true\n",
        ));
        assert!(e.contains("needs both min and max"), "{e}");
        let e = err(&with_device(
            "[[devices.points]]\nname = \"t_c\"\ntable = \"input\"\naddress = 0\nwritable = true\nmin = 0\nmax = 1\n",
        ));
        assert!(e.contains("t_c") && e.contains("read-only"), "{e}");
    }

    #[test]
    fn bad_device_addresses_are_refused() {
        for bad in ["10.0.0.20", "10.0.0.20:http", ":502", "10.0.0.20:0"] {
            let text = format!(
                "{BASE}\n[[devices]]\nname = \"hp\"\naddress = \"{bad}\"\n[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n"
            );
            let e = err(&text);
            assert!(
                e.contains("device `hp`") && e.contains("address"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn coils_take_no_type_and_reserved_names_are_refused() {
        let e = err(&with_device(
            "[[devices.points]]\nname = \"pump\"\ntable = \"coil\"\naddress = 0\ntype = \"u16\"\n",
        ));
        assert!(e.contains("pump"), "{e}");
        let e = err(&with_device(
            "[[devices.points]]\nname = \"online\"\ntable = \"coil\"\naddress = 0\n",
        ));
        assert!(e.contains("online"), "{e}");
    }

    #[test]
    fn a_heat_pump_role_needs_a_writable_setpoint() {
        let e = err(&with_device(
            "role = \"heat_pump\"\n[[devices.points]]\nname = \"supply_setpoint_c\"\ntable = \"holding\"\naddress = 0\n",
        ));
        assert!(
            e.contains("supply_setpoint_c") && e.contains("writable"),
            "{e}"
        );
    }

    #[test]
    fn write_expiry_and_rate_limit_have_defaults_and_bounds() {
        let point = "[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n";
        let cfg = SiteConfig::<toml::Table>::from_toml(&with_device(point)).unwrap();
        assert_eq!(cfg.devices[0].write_expiry_s, DEFAULT_WRITE_EXPIRY_S);
        assert_eq!(
            cfg.devices[0].min_write_interval_s,
            DEFAULT_MIN_WRITE_INTERVAL_S
        );
        let e = err(&with_device(&format!("write_expiry_s = 0\n{point}")));
        assert!(
            e.contains("heatpump") && e.contains("write_expiry_s"),
            "{e}"
        );
        let e = err(&with_device(&format!(
            "write_expiry_s = 10\nmin_write_interval_s = 10\n{point}"
        )));
        assert!(e.contains("min_write_interval_s"), "{e}");
        let e = err(&with_device(&format!("min_write_interval_s = -1\n{point}")));
        assert!(e.contains("min_write_interval_s"), "{e}");
    }

    #[test]
    fn read_plan_coalesces_a_devices_points() {
        let text = with_device(
            "[[devices.points]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n[[devices.points]]\nname = \"b\"\ntable = \"holding\"\naddress = 1\ntype = \"f32\"\nword_order = \"CDAB\"\n",
        );
        let cfg = SiteConfig::<toml::Table>::from_toml(&text).unwrap();
        let plan = read_plan(&cfg.devices[0]);
        assert_eq!(
            plan,
            vec![ReadBlock {
                table: Table::Holding,
                start: 0,
                count: 3
            }]
        );
    }
}
