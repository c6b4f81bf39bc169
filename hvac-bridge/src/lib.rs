//! Phoenix's facility I/O (issue #5): greenhouses over MQTT, heat pumps,
//! heat meters and dry coolers over Modbus TCP, and Phoenix's own figures
//! over Modbus TCP for a building management system.
//!
//! - [`config::SiteConfig`]: the site config file (TOML) shared with the
//!   controller, validated at start ([`config::ConfigError`] names the
//!   device and point).
//! - [`registers`]: the pure codec ([`registers::Encoding`], word orders
//!   `ABCD`/`CDAB`/`BADC`/`DCBA`) and read coalescing
//!   ([`registers::coalesce`]).
//! - [`modbus::ModbusLink`]: one device connection with a timeout on every
//!   call and reconnection with backoff.
//! - [`device`]: the poller and the checked write path ([`device::plan_request`]).
//! - [`desired`]: the desired state of a device's points: pending writes,
//!   supersession, expiry and the per-point rate limit, answered on
//!   `facility/<device>/set/result`.
//! - [`consumer`]: demand in, the [`consumer::DemandEstimator`] for
//!   climate-only greenhouses, the stale fallback.
//! - [`server`]: the read-out Modbus server and its [`server::REGISTER_MAP`].
//! - [`ha`]: Home Assistant MQTT discovery.
//! - [`Bridge`] runs it all; [`BridgeHandle`] is the controller's typed API
//!   (`set_supply_temp_c`, `read_heat_meter`, `demand`, `publish_offer`, …).
//!
//! User documentation: `docs/bridge.md`.

use std::sync::atomic::{AtomicU64, Ordering};

pub mod bridge;
pub mod config;
pub mod consumer;
pub mod desired;
pub mod device;
pub mod ha;
pub mod modbus;
pub mod registers;
pub mod server;

pub use bridge::{Bridge, BridgeHandle, HeatMeterReading};
pub use config::{ConfigError, SiteConfig};
pub use device::WriteAccepted;

/// Errors of the running bridge and its typed API.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The site config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The read-out server's address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No device has the role the call needs.
    #[error("no device with role {0:?} in the site config")]
    NoDeviceWithRole(config::DeviceRole),
    /// The device has no current reading.
    #[error("device `{0}` is offline or not read yet")]
    DeviceOffline(String),
    /// A write was refused or failed.
    #[error(transparent)]
    Write(#[from] device::WriteError),
    /// An offer failed validation.
    #[error("invalid offer: {0}")]
    InvalidOffer(protocol::payloads::PayloadError),
    /// An id is not a valid topic level.
    #[error("`{0}` is not a valid topic level")]
    InvalidId(String),
    /// The MQTT client refused the request.
    #[error("mqtt: {0}")]
    Mqtt(String),
}

/// Event counters of a running bridge.
#[derive(Debug, Default)]
pub struct Counters {
    /// Failed Modbus calls: connects, timeouts, transport errors.
    pub modbus_errors: AtomicU64,
    /// Of which timeouts.
    pub modbus_timeouts: AtomicU64,
    /// Exception answers from devices.
    pub modbus_exceptions: AtomicU64,
    /// Malformed MQTT payloads.
    pub malformed_payloads: AtomicU64,
    /// Points written (one request may write several).
    pub writes_ok: AtomicU64,
    /// Writes refused by the checks (nothing sent).
    pub writes_refused: AtomicU64,
    /// Write attempts that passed the checks but failed at the device
    /// (an exception, or no answer: such a write stays pending).
    pub writes_failed: AtomicU64,
    /// Consumers that went stale.
    pub stale_events: AtomicU64,
    /// MQTT connection errors.
    pub mqtt_errors: AtomicU64,
    /// Requests answered `applied`.
    pub writes_applied: AtomicU64,
    /// Requests answered `pending` (the device was down or the rate limit held them).
    pub writes_pending: AtomicU64,
    /// Of the pending ones, those held by `min_write_interval_s`.
    pub writes_rate_limited: AtomicU64,
    /// Requests answered `expired` (superseded or past `write_expiry_s`).
    pub writes_expired: AtomicU64,
    /// Of the expired ones, those superseded by a newer write to the point.
    pub writes_superseded: AtomicU64,
    /// Requests answered `refused` because the device raised an exception.
    pub writes_refused_by_device: AtomicU64,
    /// Consumer `supply_temp_c` values ignored: from a consumer not listed in `[[consumers]]`, or dropped when its demand went stale.
    pub supply_temps_ignored: AtomicU64,
}

/// A copy of [`Counters`] (same fields, same meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// Failed Modbus calls: connects, timeouts, transport errors.
    pub modbus_errors: u64,
    /// Of which timeouts.
    pub modbus_timeouts: u64,
    /// Exception answers from devices.
    pub modbus_exceptions: u64,
    /// Malformed MQTT payloads.
    pub malformed_payloads: u64,
    /// Points written (one request may write several).
    pub writes_ok: u64,
    /// Writes refused by the checks (nothing sent).
    pub writes_refused: u64,
    /// Write attempts that passed the checks but failed at the device
    /// (an exception, or no answer: such a write stays pending).
    pub writes_failed: u64,
    /// Consumers that went stale.
    pub stale_events: u64,
    /// MQTT connection errors.
    pub mqtt_errors: u64,
    /// Requests answered `applied`.
    pub writes_applied: u64,
    /// Requests answered `pending` (the device was down or the rate limit held them).
    pub writes_pending: u64,
    /// Of the pending ones, those held by `min_write_interval_s`.
    pub writes_rate_limited: u64,
    /// Requests answered `expired` (superseded or past `write_expiry_s`).
    pub writes_expired: u64,
    /// Of the expired ones, those superseded by a newer write to the point.
    pub writes_superseded: u64,
    /// Requests answered `refused` because the device raised an exception.
    pub writes_refused_by_device: u64,
    /// Consumer `supply_temp_c` values ignored: from a consumer not listed in `[[consumers]]`, or dropped when its demand went stale.
    pub supply_temps_ignored: u64,
}

impl Counters {
    pub(crate) fn bump(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Read every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            modbus_errors: g(&self.modbus_errors),
            modbus_timeouts: g(&self.modbus_timeouts),
            modbus_exceptions: g(&self.modbus_exceptions),
            malformed_payloads: g(&self.malformed_payloads),
            writes_ok: g(&self.writes_ok),
            writes_refused: g(&self.writes_refused),
            writes_failed: g(&self.writes_failed),
            stale_events: g(&self.stale_events),
            mqtt_errors: g(&self.mqtt_errors),
            writes_applied: g(&self.writes_applied),
            writes_pending: g(&self.writes_pending),
            writes_rate_limited: g(&self.writes_rate_limited),
            writes_expired: g(&self.writes_expired),
            writes_superseded: g(&self.writes_superseded),
            writes_refused_by_device: g(&self.writes_refused_by_device),
            supply_temps_ignored: g(&self.supply_temps_ignored),
        }
    }
}
