//! One module per subcommand.

pub mod agent;
pub mod generate_config;
pub mod plan;
