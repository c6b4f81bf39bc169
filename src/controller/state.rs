//! What the controller knows about its site, as the API and the web page
//! show it: nodes with their latest telemetry, VMs admitted, consumers with
//! their latest demand, the latest plan, and a short history for charts.
//!
//! The control loop is the single writer: agent messages, API requests and
//! action results reach it as events, and it applies them here and to the
//! state database (`store.rs`). The API reads a consistent copy under a read
//! lock and answers from it.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use protocol::payloads::{HeatDemand, Telemetry};
use scheduler::model::{Plan, Vm};

use super::actuator::{Action, Outcome};
use serde::Serialize;

/// How many history points the controller keeps for its page (one per
/// control period: a week of 15-minute periods).
pub const HISTORY_LEN: usize = 672;

/// How many failed actions the controller keeps for its page and API.
pub const FAILED_ACTIONS_LEN: usize = 50;

/// Static facts about one server (from the site configuration).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerInfo {
    /// Node id (as in MQTT topics and snapshots).
    pub id: String,
    /// Physical cores.
    pub cores: u32,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Component temperature limit, °C.
    pub temp_limit_c: f64,
    /// Heat loop, if any.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub heat_loop: Option<String>,
    /// What it draws while switched off (BMC, PSU standby), W.
    pub off_w: f64,
}

/// A node as the controller sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeState {
    /// Static facts.
    #[serde(flatten)]
    pub info: ServerInfo,
    /// Whether the plan in force keeps it on.
    pub on: bool,
    /// Agent status (`online` retained message seen, no last will since).
    pub online: bool,
    /// No telemetry within the staleness window: planned conservatively.
    pub stale: bool,
    /// When telemetry last arrived.
    pub last_seen: Option<DateTime<Utc>>,
    /// The latest telemetry.
    pub telemetry: Option<Telemetry>,
}

impl NodeState {
    /// What the node draws now as the controller knows it: its `off_w`
    /// when switched off (the last telemetry of an off server is history,
    /// not its draw), else its latest telemetry's power, when known.
    pub fn power_w(&self) -> Option<f64> {
        if self.on {
            self.telemetry.as_ref().and_then(|t| t.power_w)
        } else {
            Some(self.info.off_w)
        }
    }
}

/// A heat consumer as the controller sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerState {
    /// Consumer id.
    pub id: String,
    /// Loop that feeds it.
    #[serde(rename = "loop")]
    pub heat_loop: String,
    /// No demand within the staleness window: the fallback demand applies.
    pub stale: bool,
    /// When demand last arrived.
    pub last_seen: Option<DateTime<Utc>>,
    /// The latest demand message.
    pub demand: Option<HeatDemand>,
    /// Heat offered in the latest offer, kW.
    pub offered_kw: Option<f64>,
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Applied to the site.
    Applied,
    /// Computed in dry-run mode: shown, not applied.
    DryRun,
    /// Waiting for an operator's approval.
    AwaitingApproval,
    /// Refused by an operator, or superseded before approval.
    Rejected,
}

impl PlanStatus {
    /// The name used in the API and the state database.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Applied => "applied",
            PlanStatus::DryRun => "dry_run",
            PlanStatus::AwaitingApproval => "awaiting_approval",
            PlanStatus::Rejected => "rejected",
        }
    }

    /// The status named `s` (as [`PlanStatus::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        [
            PlanStatus::Applied,
            PlanStatus::DryRun,
            PlanStatus::AwaitingApproval,
            PlanStatus::Rejected,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A plan with its context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRecord {
    /// Sequence number of the plan (one per control period).
    pub id: u64,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Where it stands.
    pub status: PlanStatus,
    /// The plan itself (`phoenix.plan/v1`).
    pub plan: Plan,
}

/// One point of the page's history (one per control period).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Time.
    pub at: DateTime<Utc>,
    /// Heat demand of all consumers, kW.
    pub demand_kw: f64,
    /// Heat delivered (planned first step), kW.
    pub delivered_kw: f64,
    /// IT power (planned first step), kW.
    pub it_power_kw: f64,
    /// Plan cost over its horizon.
    pub cost: f64,
    /// Greedy baseline's cost over the same horizon.
    pub baseline_cost: Option<f64>,
}

/// An action that did not happen (failed, refused, skipped or not
/// configured): the state kept what was there, and the next period plans
/// from that.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedAction {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// The plan it belonged to.
    pub plan_id: u64,
    /// What was to be done.
    pub action: Action,
    /// `failed`, `refused`, `skipped` or `not_configured`.
    pub result: String,
    /// Why.
    pub reason: String,
}

/// Everything the controller knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SiteState {
    /// Site id.
    pub site: String,
    /// Nodes by id.
    pub nodes: BTreeMap<String, NodeState>,
    /// VMs by id (their `host` is where they run now).
    pub vms: BTreeMap<String, Vm>,
    /// Consumers by id.
    pub consumers: BTreeMap<String, ConsumerState>,
    /// The latest plan.
    pub latest_plan: Option<PlanRecord>,
    /// History for charts, oldest first.
    pub history: VecDeque<HistoryPoint>,
    /// The latest actions that did not happen, oldest first (at most
    /// [`FAILED_ACTIONS_LEN`]).
    pub failed_actions: VecDeque<FailedAction>,
    /// Batch jobs whose work was done, oldest first (at most
    /// [`super::batch::FINISHED_LEN`]); they left the plan.
    pub finished: VecDeque<super::batch::FinishedJob>,
    /// VMs that two hosts report at once: frozen in place, flagged.
    pub conflicting_vms: std::collections::BTreeSet<String>,
}

impl SiteState {
    /// Append a history point, keeping at most [`HISTORY_LEN`].
    pub fn record(&mut self, point: HistoryPoint) {
        self.history.push_back(point);
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
    }

    /// Keep an action that did not happen, dropping the oldest beyond
    /// [`FAILED_ACTIONS_LEN`]. A done action is not kept.
    pub fn record_failure(
        &mut self,
        at: DateTime<Utc>,
        plan_id: u64,
        action: &Action,
        outcome: &Outcome,
    ) {
        let Some(reason) = outcome.reason() else {
            return;
        };
        self.failed_actions.push_back(FailedAction {
            at,
            plan_id,
            action: action.clone(),
            result: outcome.result().to_string(),
            reason: reason.to_string(),
        });
        while self.failed_actions.len() > FAILED_ACTIONS_LEN {
            self.failed_actions.pop_front();
        }
    }

    /// Total gain over the baseline across the history.
    pub fn total_gain(&self) -> f64 {
        self.history
            .iter()
            .filter_map(|h| h.baseline_cost.map(|b| b - h.cost))
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reporting node of 8 cores / 32 GiB, on, last seen at `seen`.
    pub(crate) fn node(id: &str, seen: Option<DateTime<Utc>>) -> NodeState {
        NodeState {
            info: ServerInfo {
                id: id.into(),
                cores: 8,
                mem_gib: 32.0,
                temp_limit_c: 80.0,
                heat_loop: None,
                off_w: 5.0,
            },
            on: true,
            online: seen.is_some(),
            stale: seen.is_none(),
            last_seen: seen,
            telemetry: None,
        }
    }
}
