//! How a plan's decisions reach the machines.
//!
//! - `simulated`: every action succeeds at once (the demo, simulations,
//!   dry runs of the whole chain).
//! - `exec`: a command template per action, e.g.
//!   `virsh migrate --live -- {vm} qemu+ssh://{to}/system`. The template is
//!   split into words *before* the placeholders are filled, in one pass (a
//!   value is never expanded again), and run without a shell, so an id can
//!   never inject a command. Ids are checked first ([`check_id`]): one that
//!   could read as an option (`-…`), hold a placeholder (`{…}`), white space
//!   or control characters is refused and nothing runs. Each run has a time
//!   limit and retries; every result is logged.
//!
//! The order of actions, the waits between them and their concurrency are
//! the executor's (`execute.rs`); this module runs one action.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::config::{ActuatorConfig, ActuatorKind};

/// Longest id passed to a command, characters.
pub const MAX_ID_LEN: usize = 128;

/// One thing to do (JSON in the state database's journal:
/// `{"kind": "place", "vm": "web1", "to": "s01"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Why an action's command line could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    /// No template is configured for this kind of action.
    #[error("no command is configured for {0} actions")]
    NotConfigured(&'static str),
    /// An id cannot be passed to a command safely.
    #[error("{field} `{shown}` refused: {problem}")]
    BadId {
        /// Which placeholder (`vm`, `from`, `to`, `node`).
        field: &'static str,
        /// The id, with control characters escaped and cut to 40 characters.
        shown: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Check that `id` can be passed to a command as one argument: non-empty,
/// at most [`MAX_ID_LEN`] characters, not starting with `-` (it would read as
/// an option), without `{` or `}` (placeholders), white space or control
/// characters.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty");
    }
    if id.chars().count() > MAX_ID_LEN {
        return Err("longer than 128 characters");
    }
    if id.starts_with('-') {
        return Err("starts with `-` and would read as an option");
    }
    if id.contains(['{', '}']) {
        return Err("contains `{` or `}`");
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains white space or a control character");
    }
    Ok(())
}

/// Fill the placeholders of `word` in one pass: a value put in is never
/// scanned again, and an unknown `{…}` is left as it is.
fn fill(word: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match values.iter().find(|(key, _)| tail.starts_with(key)) {
            Some((key, value)) => {
                out.push_str(value);
                rest = &tail[key.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Action {
    /// The action's kind as metrics and logs name it (`migrate`, `place`,
    /// `power_on`, `power_off`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Migrate { .. } => "migrate",
            Action::Place { .. } => "place",
            Action::PowerOn { .. } => "power_on",
            Action::PowerOff { .. } => "power_off",
        }
    }

    fn template<'a>(&self, cfg: &'a ActuatorConfig) -> Option<&'a str> {
        match self {
            Action::Migrate { .. } => cfg.migrate.as_deref(),
            Action::Place { .. } => cfg.place.as_deref(),
            Action::PowerOn { .. } => cfg.power_on.as_deref(),
            Action::PowerOff { .. } => cfg.power_off.as_deref(),
        }
    }

    /// The placeholders this action fills, with their values.
    fn values(&self) -> Vec<(&'static str, &str)> {
        match self {
            Action::Migrate { vm, from, to } => vec![("vm", vm), ("from", from), ("to", to)],
            Action::Place { vm, to } => vec![("vm", vm), ("to", to)],
            Action::PowerOn { node } | Action::PowerOff { node } => vec![("node", node)],
        }
    }

    /// Check every id of the action ([`check_id`]).
    pub fn check_ids(&self) -> Result<(), ArgvError> {
        for (field, id) in self.values() {
            check_id(id).map_err(|problem| ArgvError::BadId {
                field,
                shown: id.escape_debug().take(40).collect(),
                problem,
            })?;
        }
        Ok(())
    }

    /// The command line this action runs under `cfg` (program and args):
    /// ids checked first, then the template split into words and each word
    /// filled in one pass.
    pub fn argv(&self, cfg: &ActuatorConfig) -> Result<Vec<String>, ArgvError> {
        let template = self
            .template(cfg)
            .filter(|t| !t.trim().is_empty())
            .ok_or(ArgvError::NotConfigured(self.kind()))?;
        self.check_ids()?;
        let keys: Vec<(String, &str)> = self
            .values()
            .into_iter()
            .map(|(k, v)| (format!("{{{k}}}"), v))
            .collect();
        let values: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        Ok(template
            .split_whitespace()
            .map(|w| fill(w, &values))
            .collect())
    }
}

/// What came of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Done,
    /// No command is configured for this kind of action: nothing was run.
    NotConfigured,
    /// Failed after every attempt.
    Failed(String),
    /// Refused before anything ran: an id that cannot be passed to a
    /// command safely.
    Refused(String),
    /// Not attempted: what it depends on did not happen, or running it
    /// could strand a VM (`VM v1 still on s02`).
    Skipped(String),
}

impl Outcome {
    /// The result as metrics name it (`done`, `not_configured`, `failed`,
    /// `refused`, `skipped`).
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::NotConfigured => "not_configured",
            Outcome::Failed(_) => "failed",
            Outcome::Refused(_) => "refused",
            Outcome::Skipped(_) => "skipped",
        }
    }

    /// Why it did not happen (none when done).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Done => None,
            Outcome::NotConfigured => Some("no command is configured for this action"),
            Outcome::Failed(r) | Outcome::Refused(r) | Outcome::Skipped(r) => Some(r),
        }
    }
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

    /// How many times a failed command is tried in all.
    pub fn attempts(&self) -> u32 {
        1 + self.cfg.retries.unwrap_or(1)
    }

    /// Carry out one action, each attempt limited to `timeout_s` (default
    /// 600 s).
    pub async fn execute(&self, action: &Action) -> Outcome {
        let limit = Duration::from_secs_f64(self.cfg.timeout_s.unwrap_or(600.0).max(0.001));
        self.execute_within(action, limit).await
    }

    /// Carry out one action, each attempt limited to `limit`.
    pub async fn execute_within(&self, action: &Action, limit: Duration) -> Outcome {
        match self.cfg.kind {
            ActuatorKind::Simulated => {
                tracing::info!(?action, "Action carried out (simulated actuator).");
                Outcome::Done
            }
            ActuatorKind::Exec => self.exec(action, limit).await,
        }
    }

    async fn exec(&self, action: &Action, limit: Duration) -> Outcome {
        let argv = match action.argv(&self.cfg) {
            Ok(argv) => argv,
            Err(ArgvError::NotConfigured(_)) => {
                tracing::warn!(
                    ?action,
                    "No command configured for this action; nothing run."
                );
                return Outcome::NotConfigured;
            }
            Err(e) => {
                tracing::warn!(?action, error = %e, "Action refused; nothing run.");
                return Outcome::Refused(e.to_string());
            }
        };
        let attempts = self.attempts();
        let mut last = String::new();
        for attempt in 1..=attempts {
            match run_once(&argv, limit).await {
                Ok(()) => {
                    tracing::info!(?action, attempt, "Action command succeeded.");
                    return Outcome::Done;
                }
                Err(e) => last = e,
            }
            tracing::warn!(?action, attempt, attempts, error = %last, "Action command failed.");
        }
        Outcome::Failed(last)
    }
}

/// Run `argv` once within `limit`; the child is killed when the limit
/// passes (or the future is dropped).
async fn run_once(argv: &[String], limit: Duration) -> Result<(), String> {
    let run = Command::new(&argv[0])
        .args(&argv[1..])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
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
            Err(format!(
                "{} exited with {}: {}",
                argv[0],
                out.status,
                tail.trim()
            ))
        }
        Ok(Err(e)) => Err(format!("{} could not start: {e}", argv[0])),
        Err(_) => Err(format!(
            "{} ran past {} s and was killed",
            argv[0],
            limit.as_secs_f64()
        )),
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

    fn migrate_vm(vm: &str) -> Action {
        Action::Migrate {
            vm: vm.into(),
            from: "s1".into(),
            to: "s2".into(),
        }
    }

    fn migrate() -> Action {
        migrate_vm("v1;reboot")
    }

    #[test]
    fn placeholders_are_filled_word_by_word_without_a_shell() {
        let argv = migrate()
            .argv(&exec_cfg(
                "virsh migrate --live -- {vm} qemu+ssh://{to}/system",
            ))
            .unwrap();
        assert_eq!(
            argv,
            [
                "virsh",
                "migrate",
                "--live",
                "--",
                "v1;reboot",
                "qemu+ssh://s2/system"
            ]
        );
    }

    #[test]
    fn a_filled_value_is_never_expanded_again() {
        let values = [("{vm}", "{to}"), ("{to}", "s2")];
        assert_eq!(
            fill("x={vm},y={to},z={other}", &values),
            "x={to},y=s2,z={other}"
        );
        assert_eq!(fill("{{vm}}", &values), "{{to}}");
    }

    #[test]
    fn ids_that_could_read_as_options_or_placeholders_are_refused() {
        let long = "v".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            "-rf",
            "--help",
            "a{to}",
            "b}",
            "two words",
            "tab\there",
            "nl\n",
            &long,
        ] {
            assert!(check_id(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "v1",
            "web-01",
            "s02.rack3",
            "vm_7;x",
            &"v".repeat(MAX_ID_LEN),
        ] {
            assert!(check_id(good).is_ok(), "{good:?} should pass");
        }
        let err = migrate_vm("-f").argv(&exec_cfg("true {vm}")).unwrap_err();
        assert!(matches!(err, ArgvError::BadId { field: "vm", .. }), "{err}");
        let node = Action::PowerOff { node: "a}".into() };
        let cfg = ActuatorConfig {
            power_off: Some("true {node}".into()),
            ..exec_cfg("true")
        };
        assert!(node
            .argv(&cfg)
            .unwrap_err()
            .to_string()
            .contains("node `a}`"));
    }

    #[tokio::test]
    async fn a_refused_id_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ran");
        let a = Actuator::new(exec_cfg(&format!("sh -c echo>>{}", log.display())));
        match a.execute(&migrate_vm("--help")).await {
            Outcome::Refused(msg) => assert!(msg.contains("option"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!log.exists(), "nothing ran");
        assert_eq!(a.execute(&migrate()).await, Outcome::Done);
        assert!(log.exists(), "the same template runs for a sound id");
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
        cfg.retries = Some(0);
        let a = Actuator::new(cfg);
        match a
            .execute_within(&migrate(), Duration::from_millis(200))
            .await
        {
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

    #[test]
    fn actions_and_outcomes_serialise_with_their_kind() {
        let v = serde_json::to_value(migrate()).unwrap();
        assert_eq!(v["kind"], "migrate");
        assert_eq!(v["to"], "s2");
        let o = serde_json::to_value(Outcome::Skipped("VM v1 still on s1".into())).unwrap();
        assert_eq!(
            o,
            serde_json::json!({"result": "skipped", "reason": "VM v1 still on s1"})
        );
        let back: Outcome = serde_json::from_value(o).unwrap();
        assert_eq!(back.result(), "skipped");
    }
}
