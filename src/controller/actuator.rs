//! How a plan's decisions reach the machines.
//!
//! - `simulated`: every action succeeds at once (the demo, simulations,
//!   dry runs of the whole chain).
//! - `exec`: a command template per action, e.g.
//!   `virsh migrate --live {vm} qemu+ssh://{to}/system`. The template is
//!   split into words *before* the placeholders are filled, and run without a
//!   shell, so an id can never inject a command. Each run has a time limit
//!   and retries; every result is logged.

use std::time::Duration;

use tokio::process::Command;

use super::config::{ActuatorConfig, ActuatorKind};

/// One thing to do (JSON in the state database's journal:
/// `{"kind": "place", "vm": "web1", "to": "s01"}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Live-migrate a VM.
    Migrate {
        /// VM id.
        vm: String,
        /// Current host.
        from: String,
        /// New host.
        to: String,
    },
    /// Start a pending VM on a host.
    Place {
        /// VM id.
        vm: String,
        /// Host.
        to: String,
    },
    /// Switch a server on.
    PowerOn {
        /// Node id.
        node: String,
    },
    /// Switch a server off.
    PowerOff {
        /// Node id.
        node: String,
    },
}

impl Action {
    fn template<'a>(&self, cfg: &'a ActuatorConfig) -> Option<&'a str> {
        match self {
            Action::Migrate { .. } => cfg.migrate.as_deref(),
            Action::Place { .. } => cfg.place.as_deref(),
            Action::PowerOn { .. } => cfg.power_on.as_deref(),
            Action::PowerOff { .. } => cfg.power_off.as_deref(),
        }
    }

    fn fill(&self, word: &str) -> String {
        let (vm, from, to, node) = match self {
            Action::Migrate { vm, from, to } => (vm.as_str(), from.as_str(), to.as_str(), ""),
            Action::Place { vm, to } => (vm.as_str(), "", to.as_str(), ""),
            Action::PowerOn { node } | Action::PowerOff { node } => ("", "", "", node.as_str()),
        };
        word.replace("{vm}", vm)
            .replace("{from}", from)
            .replace("{to}", to)
            .replace("{node}", node)
    }

    /// The command line this action runs under `cfg` (program and args).
    pub fn argv(&self, cfg: &ActuatorConfig) -> Option<Vec<String>> {
        let t = self.template(cfg)?;
        let argv: Vec<String> = t.split_whitespace().map(|w| self.fill(w)).collect();
        (!argv.is_empty()).then_some(argv)
    }
}

/// What came of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// No command is configured for this kind of action: nothing was run.
    NotConfigured,
    /// Failed after every attempt.
    Failed(String),
}

/// Carries out actions.
#[derive(Debug, Clone)]
pub struct Actuator {
    cfg: ActuatorConfig,
}

impl Actuator {
    /// An actuator of the configured kind.
    pub fn new(cfg: ActuatorConfig) -> Self {
        Self { cfg }
    }

    /// Carry out one action.
    pub async fn execute(&self, action: &Action) -> Outcome {
        match self.cfg.kind {
            ActuatorKind::Simulated => {
                tracing::info!(?action, "Action carried out (simulated actuator).");
                Outcome::Done
            }
            ActuatorKind::Exec => self.exec(action).await,
        }
    }

    async fn exec(&self, action: &Action) -> Outcome {
        let Some(argv) = action.argv(&self.cfg) else {
            tracing::warn!(
                ?action,
                "No command configured for this action; nothing run."
            );
            return Outcome::NotConfigured;
        };
        let timeout = Duration::from_secs_f64(self.cfg.timeout_s.unwrap_or(600.0).max(0.001));
        let attempts = 1 + self.cfg.retries.unwrap_or(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let run = Command::new(&argv[0])
                .args(&argv[1..])
                .kill_on_drop(true)
                .output();
            match tokio::time::timeout(timeout, run).await {
                Ok(Ok(out)) if out.status.success() => {
                    tracing::info!(?action, attempt, "Action command succeeded.");
                    return Outcome::Done;
                }
                Ok(Ok(out)) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let tail: String = stderr
                        .chars()
                        .rev()
                        .take(400)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    last = format!("{} exited with {}: {}", argv[0], out.status, tail.trim());
                }
                Ok(Err(e)) => last = format!("{} could not start: {e}", argv[0]),
                Err(_) => {
                    last = format!(
                        "{} ran past {} s and was killed",
                        argv[0],
                        timeout.as_secs_f64()
                    )
                }
            }
            tracing::warn!(?action, attempt, attempts, error = %last, "Action command failed.");
        }
        Outcome::Failed(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_cfg(migrate: &str) -> ActuatorConfig {
        ActuatorConfig {
            kind: ActuatorKind::Exec,
            timeout_s: Some(2.0),
            retries: Some(1),
            migrate: Some(migrate.into()),
            ..Default::default()
        }
    }

    fn migrate() -> Action {
        Action::Migrate {
            vm: "v1; rm -rf /".into(),
            from: "s1".into(),
            to: "s2".into(),
        }
    }

    #[test]
    fn placeholders_are_filled_word_by_word_without_a_shell() {
        let argv = migrate()
            .argv(&exec_cfg(
                "virsh migrate --live {vm} qemu+ssh://{to}/system",
            ))
            .unwrap();
        assert_eq!(
            argv,
            [
                "virsh",
                "migrate",
                "--live",
                "v1; rm -rf /",
                "qemu+ssh://s2/system"
            ]
        );
    }

    #[tokio::test]
    async fn a_succeeding_command_is_done() {
        let a = Actuator::new(exec_cfg("true {vm}"));
        assert_eq!(a.execute(&migrate()).await, Outcome::Done);
    }

    #[tokio::test]
    async fn a_failing_command_is_retried_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("attempts");
        let script = format!("sh -c echo>>{}&&false", log.display());
        // `sh -c` gets one word: the script (no spaces in it).
        let a = Actuator::new(exec_cfg(&script));
        match a.execute(&migrate()).await {
            Outcome::Failed(msg) => assert!(msg.contains("exited"), "{msg}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let attempts = std::fs::read_to_string(&log).unwrap().lines().count();
        assert_eq!(attempts, 2, "one try and one retry");
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_at_its_time_limit() {
        let mut cfg = exec_cfg("sleep 30");
        cfg.timeout_s = Some(0.2);
        cfg.retries = Some(0);
        match Actuator::new(cfg).execute(&migrate()).await {
            Outcome::Failed(msg) => assert!(msg.contains("ran past"), "{msg}"),
            other => panic!("expected a time-out, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_action_without_a_template_runs_nothing() {
        let a = Actuator::new(exec_cfg("true"));
        assert_eq!(
            a.execute(&Action::PowerOff { node: "s1".into() }).await,
            Outcome::NotConfigured
        );
    }
}
