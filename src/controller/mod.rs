//! The controller: the site's state, its HTTP API and web page, and its
//! metrics. (The control loop that feeds them is built on these pieces.)

pub mod actuator;
pub mod api;
pub mod apply;
pub mod batch;
pub mod config;
pub mod cycle;
pub mod execute;
pub mod inventory;
pub mod metrics;
pub mod nodes;
pub mod run;
pub mod snapshot;
pub mod state;
pub mod store;
