//! Phoenix's digital twin (issue #3): capacity-planning simulation of a
//! heat-reuse datacenter and its heat consumers.
//!
//! A [`Scenario`] (TOML, `docs/simulator.md`) describes servers, loops,
//! consumers, weather, workload and prices. [`run`] plays it in a closed
//! loop: every control period the scheduler crate plans a snapshot of the
//! simulated site (`optimizer`, `greedy`, or `none` = first fit once), and
//! the physics runs at the physics step in between. The [`Outcome`] holds a
//! [`Summary`] (`summary.json`, DESIGN.md §4.4) and a [`Series`]; [`output`]
//! writes them as JSON, CSV, InfluxDB line protocol, SVG charts and a
//! Markdown report; [`sweep`] runs what-if variants in parallel.
//!
//! Modules by capability:
//! - [`scenario`]: the file format, `--set` overrides, validation.
//! - [`weather`], [`workload`]: the inputs.
//! - [`physics`]: servers (power, caps, RC temperature), heat pumps and
//!   cooling, the greenhouse.
//! - [`site`], [`engine`]: the resolved site and the closed loop.
//! - [`summary`], [`series`], [`output`], [`charts`], [`report`]: results.
//! - [`sweep`]: variants of one scenario, compared.

pub mod charts;
pub mod engine;
pub mod error;
pub mod output;
pub mod physics;
pub mod price_year;
pub mod report;
pub mod scenario;
pub mod series;
pub mod site;
pub mod summary;
pub mod sweep;
pub mod weather;
pub mod workload;

pub use engine::{run, Outcome, Progress};
pub use error::{ScenarioError, SimError};
pub use scenario::Scenario;
pub use series::Series;
pub use summary::Summary;
