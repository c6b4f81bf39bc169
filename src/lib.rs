//! The `phoenix` package's library side: the controller's building blocks
//! that the binary's subcommands wire together, kept in a library so
//! integration tests can drive them.
//!
//! - [`influx`]: the time-series writer (InfluxDB `/api/v2/write`), batched,
//!   with a bounded buffer that never blocks the control loop.

pub mod controller;
pub mod demo;
pub mod influx;
