//! The agent's TOML configuration ([`AgentConfig`]) and its documented
//! default ([`DEFAULT_AGENT_CONFIG`], printed by `phoenix generate-config
//! agent`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The default configuration, with a comment on every key.
pub const DEFAULT_AGENT_CONFIG: &str = include_str!("../default-agent.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, an unknown key or a wrong type.
    #[error("malformed agent config: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value out of range.
    #[error("invalid agent config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// `[agent]`: periods and the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Telemetry period, s.
    pub telemetry_interval_s: f64,
    /// Control period (lease, guard, drift), s.
    pub control_interval_s: f64,
    /// State file holding the original limits.
    pub state_file: PathBuf,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            telemetry_interval_s: 5.0,
            control_interval_s: 1.0,
            state_file: PathBuf::from("/var/lib/phoenix/agent-state.json"),
        }
    }
}

/// `[caps]`: bounds on the controller's server cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapsConfig {
    /// Lowest server cap accepted, W.
    pub min_cap_w: f64,
    /// Highest server cap accepted, W.
    pub max_cap_w: f64,
    /// Server cap held after a lease expires, W; `None` restores originals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_cap_w: Option<f64>,
    /// Power outside CPU packages and GPUs, W.
    pub platform_w: f64,
    /// Longest lease accepted, s; a cap asking for more is refused.
    pub max_lease_s: f64,
    /// How far a cap's `ts` or `epoch` may be ahead of this clock, s.
    pub max_skew_s: f64,
}

impl Default for CapsConfig {
    fn default() -> Self {
        Self {
            min_cap_w: 50.0,
            max_cap_w: 5000.0,
            safe_cap_w: None,
            platform_w: 40.0,
            max_lease_s: 3600.0,
            max_skew_s: 30.0,
        }
    }
}

/// `[vms]`: host inventory and per-VM CPU quotas from cgroup v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmsConfig {
    /// Read VMs and enforce their quotas.
    pub enabled: bool,
    /// The cgroup v2 mount, relative to the sysfs root.
    pub cgroup_root: PathBuf,
    /// Where VM scopes are found (see [`crate::cgroup::VmPattern`]).
    pub patterns: Vec<String>,
    /// Lowest quota written, cores.
    pub min_quota_cores: f64,
}

impl Default for VmsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cgroup_root: PathBuf::from("sys/fs/cgroup"),
            patterns: crate::cgroup::DEFAULT_PATTERNS.map(String::from).to_vec(),
            min_quota_cores: 0.01,
        }
    }
}

/// `[cpu]`: the CPU power model and RAPL floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuConfig {
    /// Package power at idle, W.
    pub idle_w: f64,
    /// Package power at full load and maximum frequency, W.
    pub max_w: f64,
    /// Lowest RAPL limit written, W.
    pub min_cap_w: f64,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            idle_w: 20.0,
            max_w: 150.0,
            min_cap_w: 10.0,
        }
    }
}

/// `[thermal]`: the local guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThermalConfig {
    /// hwmon chip names to guard.
    pub hwmon_names: Vec<String>,
    /// Limit for sensors without max/crit, °C.
    pub default_limit_c: f64,
    /// Engage at limit − margin, °C.
    pub margin_c: f64,
    /// Release below limit − margin − hysteresis, °C.
    pub hysteresis_c: f64,
    /// Guard level within each actuator's range, 0–1.
    pub guard_fraction: f64,
    /// Step down of the guard level per control tick while still hot, 0–1.
    pub guard_step: f64,
    /// GPU temperature limit, °C.
    pub gpu_limit_c: f64,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        Self {
            hwmon_names: ["coretemp", "k10temp", "zenpower", "cpu_thermal"]
                .map(String::from)
                .to_vec(),
            default_limit_c: 95.0,
            margin_c: 5.0,
            hysteresis_c: 5.0,
            guard_fraction: 0.3,
            guard_step: 0.05,
            gpu_limit_c: 87.0,
        }
    }
}

/// `[gpu]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    /// Use NVML when present.
    pub enabled: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The whole agent configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// `[agent]`
    pub agent: AgentSection,
    /// `[caps]`
    pub caps: CapsConfig,
    /// `[cpu]`
    pub cpu: CpuConfig,
    /// `[thermal]`
    pub thermal: ThermalConfig,
    /// `[gpu]`
    pub gpu: GpuConfig,
    /// `[vms]`
    pub vms: VmsConfig,
}

fn positive(key: &'static str, v: f64, max: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 && v <= max {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            problem: format!("{v} is not in (0, {max}]"),
        })
    }
}

fn non_negative(key: &'static str, v: f64, max: f64) -> Result<(), ConfigError> {
    if v.is_finite() && (0.0..=max).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            problem: format!("{v} is not in [0, {max}]"),
        })
    }
}

impl AgentConfig {
    /// Parse and validate a TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max_w = protocol::payloads::MAX_PLAUSIBLE_W;
        positive(
            "agent.telemetry_interval_s",
            self.agent.telemetry_interval_s,
            86_400.0,
        )?;
        positive(
            "agent.control_interval_s",
            self.agent.control_interval_s,
            60.0,
        )?;
        positive("caps.min_cap_w", self.caps.min_cap_w, max_w)?;
        positive("caps.max_cap_w", self.caps.max_cap_w, max_w)?;
        if self.caps.min_cap_w > self.caps.max_cap_w {
            return Err(ConfigError::Invalid {
                key: "caps.min_cap_w",
                problem: format!(
                    "{} exceeds caps.max_cap_w {}",
                    self.caps.min_cap_w, self.caps.max_cap_w
                ),
            });
        }
        if let Some(safe) = self.caps.safe_cap_w {
            positive("caps.safe_cap_w", safe, max_w)?;
        }
        non_negative("caps.platform_w", self.caps.platform_w, max_w)?;
        positive(
            "caps.max_lease_s",
            self.caps.max_lease_s,
            protocol::payloads::MAX_LEASE_S,
        )?;
        non_negative("caps.max_skew_s", self.caps.max_skew_s, 3600.0)?;
        positive("vms.min_quota_cores", self.vms.min_quota_cores, 1.0)?;
        if self.vms.cgroup_root.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "vms.cgroup_root",
                problem: "must be relative to the sysfs root".into(),
            });
        }
        for p in &self.vms.patterns {
            crate::cgroup::VmPattern::parse(p).map_err(|problem| ConfigError::Invalid {
                key: "vms.patterns",
                problem,
            })?;
        }
        non_negative("cpu.idle_w", self.cpu.idle_w, max_w)?;
        positive("cpu.max_w", self.cpu.max_w, max_w)?;
        if self.cpu.idle_w >= self.cpu.max_w {
            return Err(ConfigError::Invalid {
                key: "cpu.idle_w",
                problem: format!(
                    "{} is not below cpu.max_w {}",
                    self.cpu.idle_w, self.cpu.max_w
                ),
            });
        }
        positive("cpu.min_cap_w", self.cpu.min_cap_w, max_w)?;
        positive(
            "thermal.default_limit_c",
            self.thermal.default_limit_c,
            200.0,
        )?;
        non_negative("thermal.margin_c", self.thermal.margin_c, 100.0)?;
        non_negative("thermal.hysteresis_c", self.thermal.hysteresis_c, 100.0)?;
        non_negative("thermal.guard_fraction", self.thermal.guard_fraction, 1.0)?;
        non_negative("thermal.guard_step", self.thermal.guard_step, 1.0)?;
        positive("thermal.gpu_limit_c", self.thermal.gpu_limit_c, 200.0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_is_the_default() {
        let parsed = AgentConfig::from_toml(DEFAULT_AGENT_CONFIG).unwrap();
        assert_eq!(parsed, AgentConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let err = AgentConfig::from_toml("[caps]\nmax_cap_watts = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_cap_watts"), "{err}");
        let err = AgentConfig::from_toml("[thermal]\nguard_fraction = 1.5\n").unwrap_err();
        assert!(err.to_string().contains("thermal.guard_fraction"), "{err}");
        let err = AgentConfig::from_toml("[caps]\nmin_cap_w = 900\nmax_cap_w = 800\n").unwrap_err();
        assert!(err.to_string().contains("caps.min_cap_w"), "{err}");
        let err = AgentConfig::from_toml("[caps]\nmax_lease_s = 1e9\n").unwrap_err();
        assert!(err.to_string().contains("caps.max_lease_s"), "{err}");
        let err =
            AgentConfig::from_toml("[vms]\npatterns = [\"qemu.slice/*.scope\"]\n").unwrap_err();
        assert!(err.to_string().contains("vms.patterns"), "{err}");
        let ok = AgentConfig::from_toml("[caps]\nsafe_cap_w = 250\n").unwrap();
        assert_eq!(ok.caps.safe_cap_w, Some(250.0));
    }
}
