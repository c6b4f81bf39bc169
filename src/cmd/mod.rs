//! One module per subcommand.

pub mod agent;
pub mod bridge;
pub mod controller;
pub mod demo;
pub mod generate_config;
pub mod plan;
pub mod simulate;

/// The arguments `phoenix bridge` and `phoenix controller` share.
#[derive(Debug, clap::Args)]
pub struct SiteArgs {
    /// Site config file (TOML; see examples/site.toml).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Check the config and exit without connecting to anything.
    #[arg(long)]
    pub check: bool,
}

impl SiteArgs {
    /// Read and parse the site file, naming it on error.
    pub fn load<C: serde::de::DeserializeOwned>(
        &self,
    ) -> anyhow::Result<hvac_bridge::SiteConfig<C>> {
        use anyhow::Context;
        hvac_bridge::SiteConfig::load(&self.config)
            .with_context(|| format!("site config {}", self.config.display()))
    }
}
