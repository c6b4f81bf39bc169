//! One module per subcommand.

pub mod agent;
pub mod bridge;
pub mod controller;
pub mod demo;
pub mod generate_config;
pub mod plan;
pub mod simulate;
