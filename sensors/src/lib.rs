//! Phoenix's node interface (issue #4): reading and capping a server's
//! power, and the agent that does it on the controller's behalf.
//!
//! - Read side: [`node::Node::read`] gathers CPU utilisation and memory
//!   (sysinfo), temperatures from [`hwmon`] (matched by chip name; sysinfo
//!   components as a fallback), CPU package energy and power from [`rapl`]
//!   (wrap-around handled by [`rapl::EnergyCounter`]) and GPU power,
//!   temperature and limits through [`gpu::GpuBackend`] (NVML).
//! - Act side: [`node::Node::apply`] caps the CPU through RAPL
//!   `constraint_0_power_limit_uw` where a zone exists, else through
//!   [`cpufreq`] `scaling_max_freq` with [`cpufreq::CpuPowerModel`], and GPUs
//!   through the NVML power limit; every value is clamped to the hardware,
//!   every original remembered ([`node::Originals`], [`state::StateFile`]) and
//!   restored by [`node::Node::restore`].
//! - Control: [`control::Controller`] is a pure state machine (lease, thermal
//!   guard with hysteresis, bounds) driven by time, commands and readings.
//! - VMs: [`cgroup`] reads the host's VMs from cgroup v2 (libvirt/QEMU and
//!   Proxmox scopes, patterns configurable) for telemetry, and
//!   [`node::Node::apply`] holds per-VM CPU quotas on their `cpu.max`
//!   under the same lease, originals and drift rules as the power caps.
//! - The loop: [`agent::run`] speaks MQTT protocol v1 through rumqttc.
//!
//! Everything lives under an injectable [`sysfs::Sysfs`] root; absent
//! interfaces are reported by [`node::Node::probe`], never fatal.
//! [`testing`] holds the fakes (a sysfs tree, a GPU pool) used by tests.

pub mod agent;
pub mod cgroup;
pub mod config;
pub mod control;
pub mod cpufreq;
pub mod gpu;
pub mod hwmon;
pub mod node;
pub mod rapl;
pub mod state;
pub mod sysfs;
pub mod testing;

pub use agent::{run, AgentError, AgentOptions, AgentStats};
pub use config::{AgentConfig, DEFAULT_AGENT_CONFIG};
pub use node::{Node, Probe};
