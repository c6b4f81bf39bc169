//! One module per subcommand.

pub mod bridge;
pub mod plan;
