//! The shared vocabulary of Phoenix: what crosses a process boundary.
//!
//! - [`topics`]: the MQTT topic tree `phoenix/v1/<site>/…` (DESIGN.md §4.2).
//! - [`payloads`]: the JSON payloads on those topics, with their validation.
//! - [`measurements`]: the time-series measurement and field names shared by
//!   the live controller's InfluxDB writer and the simulator's `timeseries.lp`,
//!   so the Grafana dashboards work on both.
//! - [`series`]: price and carbon-intensity series (DESIGN.md §4.9): the
//!   CSV format, ENTSO-E day-ahead documents and the `tariff` topic payload.
//! - [`units`]: small unit newtypes (`Watts`, `Celsius`, …) for code that
//!   carries physical quantities between modules.
//!
//! This crate is deliberately small: serde, chrono, thiserror, and quick-xml
//! for ENTSO-E documents.

pub mod measurements;
pub mod payloads;
pub mod series;
pub mod topics;
pub mod units;

/// Version of the MQTT protocol implemented here (the `v1` in topics).
pub const PROTOCOL_VERSION: &str = "v1";
