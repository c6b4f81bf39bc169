//! Carrying out a plan's first step without stranding a VM.
//!
//! The actions of a step ([`apply::actions`]) run as a dependency graph, not
//! a list:
//!
//! - power-ons depend on nothing and start at once;
//! - a placement or migration onto a server being switched on runs after
//!   that power-on succeeded *and* the server's agent reports online
//!   (bounded by `online_wait_s`; past it the action fails with that
//!   reason); one onto a server already on starts at once;
//! - a power-off of host H runs only after every migration away from H
//!   succeeded and no VM is known on H any more (the site's inventory, less
//!   the VMs that just left; and, when the agent's telemetry lists VMs, its
//!   list empty within `vacate_wait_s`). Otherwise it is skipped with the
//!   reason (`VM v1 still on s02`) and nothing is switched off.
//!
//! Actions run concurrently up to `max_concurrent_actions`; each has a time
//! limit (a migration's grows with the VM's memory) and is stopped when it
//! passes. The executor runs in its own task ([`spawn`]) so the control loop
//! is never held by an action: it reports each action on an
//! [`ActionEvent`] channel — `Intended` just before it runs, `Finished` with
//! its [`Outcome`] after — and the loop applies the finished ones to the
//! site state ([`apply::record_event`]). Since the state follows only what
//! succeeded, a step carried out in part leaves the site in a state the next
//! period plans from, never worse than before.
//!
//! What the executor reads of the site is behind [`HostView`], and what it
//! runs behind [`Actuate`], so tests drive it with fakes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protocol::payloads::Telemetry;
use scheduler::model::{Plan, Snapshot};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::actuator::{Action, Actuator, Outcome};
use super::apply;
use super::config::ActuatorConfig;
use super::state::SiteState;

/// What the executor reports to the control loop (and the action journal).
/// Every action of a job gets one `Intended`, then one `Finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionEvent {
    /// The action is about to run (or, when its outcome is `Skipped` or the
    /// online wait failed, is about to be reported as not run).
    Intended {
        /// The plan it belongs to.
        plan_id: u64,
        /// What is to be done.
        action: Action,
    },
    /// The action is over.
    Finished {
        /// The plan it belongs to.
        plan_id: u64,
        /// What was to be done.
        action: Action,
        /// What came of it.
        outcome: Outcome,
    },
}

/// What the executor reads of the site while it works.
pub trait HostView: Send + Sync + 'static {
    /// Whether the node's agent reports online now.
    fn agent_online(&self, node: &str) -> bool;
    /// The VMs the controller's inventory has on `node` now.
    fn vms_on(&self, node: &str) -> Vec<String>;
    /// The VMs the node's agent last reported running, when its telemetry
    /// lists them (`None`: not known).
    fn reported_vms(&self, _node: &str) -> Option<Vec<String>> {
        None
    }
}

impl HostView for Arc<RwLock<SiteState>> {
    fn agent_online(&self, node: &str) -> bool {
        let site = self.read().unwrap_or_else(|e| e.into_inner());
        site.nodes.get(node).is_some_and(|n| n.online)
    }

    fn vms_on(&self, node: &str) -> Vec<String> {
        let site = self.read().unwrap_or_else(|e| e.into_inner());
        site.vms
            .values()
            .filter(|v| v.host.as_deref() == Some(node))
            .map(|v| v.id.clone())
            .collect()
    }

    fn reported_vms(&self, node: &str) -> Option<Vec<String>> {
        let site = self.read().unwrap_or_else(|e| e.into_inner());
        reported_vm_ids(site.nodes.get(node)?.telemetry.as_ref()?)
    }
}

/// The ids in a telemetry message's optional `vms` list (DESIGN §4.6),
/// read through its JSON form so this holds whether or not the field is
/// known to this build.
fn reported_vm_ids(t: &Telemetry) -> Option<Vec<String>> {
    vm_ids_in(&serde_json::to_value(t).ok()?)
}

/// The ids of a telemetry JSON's `vms` list, when it has one.
fn vm_ids_in(telemetry: &serde_json::Value) -> Option<Vec<String>> {
    let list = telemetry.get("vms")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|vm| vm.get("id")?.as_str().map(str::to_string))
            .collect(),
    )
}

/// Runs one action within a time limit per attempt.
pub trait Actuate: Send + Sync + 'static {
    /// Carry out `action`, each attempt limited to `limit`.
    fn run(&self, action: &Action, limit: Duration) -> impl Future<Output = Outcome> + Send;
}

impl Actuate for Actuator {
    fn run(&self, action: &Action, limit: Duration) -> impl Future<Output = Outcome> + Send {
        self.execute_within(action, limit)
    }
}

/// [`Actuate`] in a form that can sit behind a trait object, so the
/// controller can be given its backend at run time (the demo's twin plays
/// the hypervisor and the power switches through it). Every `Actuate` is
/// one.
pub trait ActuateDyn: Send + Sync + 'static {
    /// [`Actuate::run`], boxed.
    fn run_boxed<'a>(
        &'a self,
        action: &'a Action,
        limit: Duration,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;
}

impl<T: Actuate> ActuateDyn for T {
    fn run_boxed<'a>(
        &'a self,
        action: &'a Action,
        limit: Duration,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(self.run(action, limit))
    }
}

/// The backend the control loop's executor runs actions on: the configured
/// [`Actuator`], or one given to [`crate::controller::run::start_with`].
#[derive(Clone)]
pub struct Backend(pub Arc<dyn ActuateDyn>);

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Actuate for Backend {
    fn run(&self, action: &Action, limit: Duration) -> impl Future<Output = Outcome> + Send {
        let (backend, action) = (Arc::clone(&self.0), action.clone());
        async move { backend.run_boxed(&action, limit).await }
    }
}

/// Bounds of the executor (from `[controller.actuator]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most actions running at once.
    pub max_concurrent: usize,
    /// Time limit of one attempt of a placement or power action.
    pub action_timeout: Duration,
    /// Attempts per action (1 + retries).
    pub attempts: u32,
    /// Time limit of one migration attempt before memory counts.
    pub migrate_base: Duration,
    /// Seconds added to a migration's limit per GiB of the VM's memory.
    pub migrate_s_per_gib: f64,
    /// Longest wait for a server just switched on to report online.
    pub online_wait: Duration,
    /// Longest wait for a host's agent to stop reporting VMs.
    pub vacate_wait: Duration,
    /// How often a wait looks again.
    pub poll: Duration,
}

/// Time an action gets beyond its attempts before the executor stops it.
const GRACE: Duration = Duration::from_secs(1);

impl Limits {
    /// The limits `cfg` sets, with their documented defaults.
    pub fn from_config(cfg: &ActuatorConfig) -> Self {
        let secs = |v: Option<f64>, d: f64| Duration::from_secs_f64(v.unwrap_or(d).max(0.001));
        Self {
            max_concurrent: cfg.max_concurrent_actions.unwrap_or(4).max(1),
            action_timeout: secs(cfg.timeout_s, 600.0),
            attempts: 1 + cfg.retries.unwrap_or(1),
            migrate_base: secs(cfg.migrate_timeout_base_s, 300.0),
            migrate_s_per_gib: cfg.migrate_timeout_s_per_gib.unwrap_or(10.0).max(0.0),
            online_wait: secs(cfg.online_wait_s, 300.0),
            vacate_wait: secs(cfg.vacate_wait_s, 60.0),
            poll: Duration::from_millis(250),
        }
    }

    /// The time limit of one attempt of `action`; a migration's grows with
    /// the VM's memory (`mem_gib`, when known).
    pub fn limit_for(&self, action: &Action, mem_gib: Option<f64>) -> Duration {
        match action {
            Action::Migrate { .. } => {
                let extra_s = self.migrate_s_per_gib * mem_gib.unwrap_or(0.0).max(0.0);
                self.migrate_base + Duration::from_secs_f64(extra_s.min(1e6))
            }
            _ => self.action_timeout,
        }
    }
}

/// One step's actions, with what the executor needs to know of the VMs.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The plan the actions come from.
    pub plan_id: u64,
    /// The actions ([`apply::actions`]).
    pub actions: Vec<Action>,
    /// Memory of the VMs, GiB (migration time limits grow with it).
    pub vm_mem_gib: BTreeMap<String, f64>,
}

impl Job {
    /// The first step of `plan`, made on `snap`.
    pub fn new(plan_id: u64, snap: &Snapshot, plan: &Plan) -> Self {
        Self {
            plan_id,
            actions: apply::actions(snap, plan),
            vm_mem_gib: snap.vms.iter().map(|v| (v.id.clone(), v.mem_gib)).collect(),
        }
    }
}

/// For each action, the indices of the actions it waits for.
fn dependencies(actions: &[Action]) -> Vec<Vec<usize>> {
    let indices = |pred: &dyn Fn(&Action) -> bool| -> Vec<usize> {
        (0..actions.len()).filter(|&j| pred(&actions[j])).collect()
    };
    actions
        .iter()
        .map(|a| match a {
            Action::PowerOn { .. } => Vec::new(),
            Action::Place { to, .. } | Action::Migrate { to, .. } => {
                indices(&|b| matches!(b, Action::PowerOn { node } if node == to))
            }
            Action::PowerOff { node: host } => indices(&|b| match b {
                Action::Migrate { from, to, .. } => from == host || to == host,
                Action::Place { to, .. } => to == host,
                _ => false,
            }),
        })
        .collect()
}

/// What every action's task shares.
struct Shared<A, V> {
    plan_id: u64,
    actuator: Arc<A>,
    view: V,
    limits: Limits,
    vm_mem_gib: BTreeMap<String, f64>,
    permits: Semaphore,
    events: mpsc::UnboundedSender<ActionEvent>,
}

/// Carry out `job` and return each action with its outcome (in the job's
/// order), reporting every action on `events` as it goes.
pub async fn execute<A: Actuate, V: HostView>(
    job: Job,
    actuator: Arc<A>,
    view: V,
    limits: Limits,
    events: mpsc::UnboundedSender<ActionEvent>,
) -> Vec<(Action, Outcome)> {
    let deps = dependencies(&job.actions);
    let shared = Arc::new(Shared {
        plan_id: job.plan_id,
        actuator,
        view,
        permits: Semaphore::new(limits.max_concurrent),
        limits,
        vm_mem_gib: job.vm_mem_gib,
        events,
    });
    let (senders, receivers): (Vec<_>, Vec<_>) =
        job.actions.iter().map(|_| watch::channel(None)).unzip();
    let mut tasks = JoinSet::new();
    for (i, (action, tx)) in job.actions.iter().cloned().zip(senders).enumerate() {
        let waits: Vec<(Action, watch::Receiver<Option<Outcome>>)> = deps[i]
            .iter()
            .map(|&j| (job.actions[j].clone(), receivers[j].clone()))
            .collect();
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let done = outcomes_of(waits).await;
            let outcome = run_step(&shared, &action, &done).await;
            tx.send_replace(Some(outcome.clone()));
            (i, outcome)
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; job.actions.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, outcome)) => outcomes[i] = Some(outcome),
            Err(e) => tracing::error!(error = %e, "An action task failed."),
        }
    }
    job.actions
        .into_iter()
        .zip(outcomes)
        .map(|(a, o)| {
            let o = o.unwrap_or_else(|| Outcome::Failed("the action's task failed".into()));
            (a, o)
        })
        .collect()
}

/// Start [`execute`] in its own task.
pub fn spawn<A: Actuate, V: HostView>(
    job: Job,
    actuator: Arc<A>,
    view: V,
    limits: Limits,
    events: mpsc::UnboundedSender<ActionEvent>,
) -> JoinHandle<Vec<(Action, Outcome)>> {
    tokio::spawn(execute(job, actuator, view, limits, events))
}

/// Wait for the outcome of every action in `waits`.
async fn outcomes_of(
    waits: Vec<(Action, watch::Receiver<Option<Outcome>>)>,
) -> Vec<(Action, Outcome)> {
    let mut done = Vec::with_capacity(waits.len());
    for (action, mut rx) in waits {
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(o) => o.clone().unwrap_or(Outcome::Failed("no outcome".into())),
            Err(_) => Outcome::Failed("its task ended without an outcome".into()),
        };
        done.push((action, outcome));
    }
    done
}

/// Gate, wait, run and report one action.
async fn run_step<A: Actuate, V: HostView>(
    shared: &Shared<A, V>,
    action: &Action,
    done: &[(Action, Outcome)],
) -> Outcome {
    let ready = match action {
        Action::PowerOn { .. } => Ok(()),
        Action::Place { to, .. } | Action::Migrate { to, .. } => host_ready(shared, to, done).await,
        Action::PowerOff { node } => host_empty(shared, node, done).await,
    };
    let _ = shared.events.send(ActionEvent::Intended {
        plan_id: shared.plan_id,
        action: action.clone(),
    });
    let outcome = match ready {
        Ok(()) => run_bounded(shared, action).await,
        Err(outcome) => outcome,
    };
    if outcome != Outcome::Done {
        tracing::warn!(
            plan = shared.plan_id,
            ?action,
            ?outcome,
            "Action did not happen."
        );
    }
    let _ = shared.events.send(ActionEvent::Finished {
        plan_id: shared.plan_id,
        action: action.clone(),
        outcome: outcome.clone(),
    });
    outcome
}

/// Run `action` under the concurrency bound and its time limit.
async fn run_bounded<A: Actuate, V: HostView>(shared: &Shared<A, V>, action: &Action) -> Outcome {
    let Ok(_permit) = shared.permits.acquire().await else {
        return Outcome::Failed("the executor was closed".into());
    };
    let mem = match action {
        Action::Migrate { vm, .. } => shared.vm_mem_gib.get(vm).copied(),
        _ => None,
    };
    let limit = shared.limits.limit_for(action, mem);
    let bound = limit * shared.limits.attempts.max(1) + GRACE;
    match tokio::time::timeout(bound, shared.actuator.run(action, limit)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(format!(
            "no result within {:.1} s; stopped",
            bound.as_secs_f64()
        )),
    }
}

/// A placement or migration onto `to`: when `to` is being switched on in
/// this step, that must have succeeded and its agent must report online.
async fn host_ready<A: Actuate, V: HostView>(
    shared: &Shared<A, V>,
    to: &str,
    done: &[(Action, Outcome)],
) -> Result<(), Outcome> {
    let Some((_, power_on)) = done.first() else {
        return Ok(());
    };
    if *power_on != Outcome::Done {
        let why = power_on.reason().unwrap_or("not done");
        return Err(Outcome::Skipped(format!(
            "host {to} was not switched on: {why}"
        )));
    }
    let wait = shared.limits.online_wait;
    if poll_until(wait, shared.limits.poll, || shared.view.agent_online(to)).await {
        Ok(())
    } else {
        Err(Outcome::Failed(format!(
            "host {to} was switched on but its agent did not report online within {:.0} s",
            wait.as_secs_f64()
        )))
    }
}

/// A power-off of `host`: every migration away must have succeeded, nothing
/// may have been moved onto it, and no VM may be known on it.
async fn host_empty<A: Actuate, V: HostView>(
    shared: &Shared<A, V>,
    host: &str,
    done: &[(Action, Outcome)],
) -> Result<(), Outcome> {
    let still =
        |vm: &str, why: String| Err(Outcome::Skipped(format!("VM {vm} still on {host}{why}")));
    let mut left = BTreeSet::new();
    for (action, outcome) in done {
        match (action, outcome) {
            (Action::Migrate { vm, from, .. }, Outcome::Done) if from == host => {
                left.insert(vm.as_str());
            }
            (Action::Migrate { vm, from, .. }, o) if from == host => {
                let why = o.reason().unwrap_or("not done");
                return still(vm, format!(": its migration did not happen ({why})"));
            }
            (Action::Migrate { vm, .. } | Action::Place { vm, .. }, Outcome::Done) => {
                return still(vm, ": it was just moved there".into());
            }
            _ => {}
        }
    }
    if let Some(vm) = shared
        .view
        .vms_on(host)
        .iter()
        .find(|v| !left.contains(v.as_str()))
    {
        return still(vm, String::new());
    }
    let reported = || shared.view.reported_vms(host).filter(|l| !l.is_empty());
    let wait = shared.limits.vacate_wait;
    if !poll_until(wait, shared.limits.poll, || reported().is_none()).await {
        if let Some(vm) = reported().and_then(|l| l.into_iter().next()) {
            return still(&vm, " (its agent still reports it)".into());
        }
    }
    Ok(())
}

/// Look at `ready` every `poll` until it holds (true) or `wait` passes
/// (false).
async fn poll_until(wait: Duration, poll: Duration, ready: impl Fn() -> bool) -> bool {
    let until = Instant::now() + wait;
    loop {
        if ready() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep(poll.min(until - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// A site whose agents and inventory a test sets by hand.
    #[derive(Debug, Clone, Default)]
    struct FakeSite(Arc<Mutex<FakeInner>>);

    #[derive(Debug, Default)]
    struct FakeInner {
        online: BTreeSet<String>,
        vms: BTreeMap<String, Vec<String>>,
        reported: BTreeMap<String, Vec<String>>,
        reported_polls: usize,
    }

    impl FakeSite {
        fn with_vm(self, host: &str, vm: &str) -> Self {
            self.0
                .lock()
                .unwrap()
                .vms
                .entry(host.into())
                .or_default()
                .push(vm.into());
            self
        }
        fn set_online(&self, node: &str) {
            self.0.lock().unwrap().online.insert(node.into());
        }
        fn report(&self, node: &str, vms: &[&str]) {
            let list = vms.iter().map(|v| v.to_string()).collect();
            self.0.lock().unwrap().reported.insert(node.into(), list);
        }
    }

    impl HostView for FakeSite {
        fn agent_online(&self, node: &str) -> bool {
            self.0.lock().unwrap().online.contains(node)
        }
        fn vms_on(&self, node: &str) -> Vec<String> {
            let inner = self.0.lock().unwrap();
            inner.vms.get(node).cloned().unwrap_or_default()
        }
        fn reported_vms(&self, node: &str) -> Option<Vec<String>> {
            let mut inner = self.0.lock().unwrap();
            inner.reported_polls += 1;
            inner.reported.get(node).cloned()
        }
    }

    /// What the fake actuator does with one action (default: done at once).
    #[derive(Debug, Clone)]
    enum Script {
        Fail(&'static str),
        /// Never finishes; sets the flag when it is stopped.
        Hang(Arc<AtomicBool>),
        Sleep(Duration),
        /// Finishes once the notify fires.
        After(Arc<Notify>),
        /// Fires the notify, then finishes.
        Release(Arc<Notify>),
        /// Sets the node online in the view, then finishes.
        BringOnline(FakeSite, &'static str),
    }

    #[derive(Debug, Default)]
    struct FakeActuator {
        scripts: HashMap<Action, Script>,
        view: Option<FakeSite>,
        log: Mutex<Vec<String>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn describe(a: &Action) -> String {
        match a {
            Action::Migrate { vm, .. } | Action::Place { vm, .. } => format!("{} {vm}", a.kind()),
            Action::PowerOn { node } | Action::PowerOff { node } => format!("{} {node}", a.kind()),
        }
    }

    impl FakeActuator {
        fn script(mut self, a: Action, s: Script) -> Self {
            self.scripts.insert(a, s);
            self
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
        fn started(&self, a: &Action) -> bool {
            let start = format!("start {}", describe(a));
            self.log().iter().any(|l| l.starts_with(&start))
        }
        fn position(&self, line: &str) -> usize {
            self.log()
                .iter()
                .position(|l| l.starts_with(line))
                .unwrap_or_else(|| panic!("{line} not in {:?}", self.log()))
        }
        async fn play(&self, action: &Action) -> Outcome {
            match self.scripts.get(action).cloned() {
                None => Outcome::Done,
                Some(Script::Fail(why)) => Outcome::Failed(why.into()),
                Some(Script::Hang(flag)) => {
                    let _guard = SetOnDrop(flag);
                    std::future::pending::<Outcome>().await
                }
                Some(Script::Sleep(d)) => {
                    tokio::time::sleep(d).await;
                    Outcome::Done
                }
                Some(Script::After(n)) => {
                    n.notified().await;
                    Outcome::Done
                }
                Some(Script::Release(n)) => {
                    n.notify_one();
                    Outcome::Done
                }
                Some(Script::BringOnline(site, node)) => {
                    site.set_online(node);
                    Outcome::Done
                }
            }
        }
    }

    impl Actuate for FakeActuator {
        fn run(&self, action: &Action, _limit: Duration) -> impl Future<Output = Outcome> + Send {
            let action = action.clone();
            async move {
                let online = match (&action, &self.view) {
                    (Action::Place { to, .. } | Action::Migrate { to, .. }, Some(v)) => {
                        format!(" online={}", v.agent_online(to))
                    }
                    _ => String::new(),
                };
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("start {}{online}", describe(&action)));
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let outcome = self.play(&action).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("end {}", describe(&action)));
                outcome
            }
        }
    }

    fn limits() -> Limits {
        Limits {
            max_concurrent: 4,
            action_timeout: Duration::from_secs(5),
            attempts: 1,
            migrate_base: Duration::from_secs(5),
            migrate_s_per_gib: 0.0,
            online_wait: Duration::from_secs(5),
            vacate_wait: Duration::from_secs(5),
            poll: Duration::from_millis(10),
        }
    }

    fn migrate(vm: &str, from: &str, to: &str) -> Action {
        Action::Migrate {
            vm: vm.into(),
            from: from.into(),
            to: to.into(),
        }
    }
    fn place(vm: &str, to: &str) -> Action {
        Action::Place {
            vm: vm.into(),
            to: to.into(),
        }
    }
    fn on(node: &str) -> Action {
        Action::PowerOn { node: node.into() }
    }
    fn off(node: &str) -> Action {
        Action::PowerOff { node: node.into() }
    }

    async fn run_job(
        actions: Vec<Action>,
        act: &Arc<FakeActuator>,
        view: FakeSite,
        limits: Limits,
    ) -> (HashMap<Action, Outcome>, Vec<ActionEvent>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let job = Job {
            plan_id: 3,
            actions,
            vm_mem_gib: BTreeMap::new(),
        };
        let results = spawn(job, Arc::clone(act), view, limits, tx)
            .await
            .expect("the executor ends");
        let mut events = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        (results.into_iter().collect(), events)
    }

    fn reason(o: &Outcome) -> &str {
        o.reason().unwrap_or("")
    }

    #[tokio::test]
    async fn a_failed_migration_blocks_the_power_off_of_its_source() {
        let view = FakeSite::default().with_vm("a", "v1");
        let act =
            Arc::new(FakeActuator::default().script(migrate("v1", "a", "b"), Script::Fail("boom")));
        let (out, events) = run_job(
            vec![migrate("v1", "a", "b"), off("a")],
            &act,
            view,
            limits(),
        )
        .await;
        assert_eq!(
            out[&migrate("v1", "a", "b")],
            Outcome::Failed("boom".into())
        );
        let o = &out[&off("a")];
        assert_eq!(o.result(), "skipped");
        assert!(reason(o).starts_with("VM v1 still on a"), "{o:?}");
        assert!(!act.started(&off("a")), "the power-off never ran");
        // Each action: Intended, then Finished.
        for a in [migrate("v1", "a", "b"), off("a")] {
            let at = |want: &dyn Fn(&ActionEvent) -> bool| events.iter().position(want);
            let i =
                at(&|e| matches!(e, ActionEvent::Intended { action, plan_id: 3 } if *action == a));
            let f = at(&|e| matches!(e, ActionEvent::Finished { action, .. } if *action == a));
            assert!(i.is_some() && i < f, "{a:?}: {events:?}");
        }
    }

    #[tokio::test]
    async fn a_power_off_runs_after_its_host_is_emptied() {
        // The inventory still lists v1 on a: the loop has not applied the
        // migration's event yet. The executor knows it left.
        let view = FakeSite::default().with_vm("a", "v1");
        let act = Arc::new(FakeActuator::default().script(
            migrate("v1", "a", "b"),
            Script::Sleep(Duration::from_millis(20)),
        ));
        let (out, _) = run_job(
            vec![off("a"), migrate("v1", "a", "b")],
            &act,
            view,
            limits(),
        )
        .await;
        assert_eq!(out[&off("a")], Outcome::Done);
        assert!(act.position("end migrate v1") < act.position("start power_off a"));
    }

    #[tokio::test]
    async fn a_power_off_with_a_vm_still_on_the_host_is_skipped() {
        let view = FakeSite::default().with_vm("a", "v1").with_vm("a", "v2");
        let act = Arc::new(FakeActuator::default());
        let (out, _) = run_job(
            vec![migrate("v1", "a", "b"), off("a")],
            &act,
            view,
            limits(),
        )
        .await;
        assert_eq!(out[&migrate("v1", "a", "b")], Outcome::Done);
        assert_eq!(out[&off("a")], Outcome::Skipped("VM v2 still on a".into()));
        assert!(!act.started(&off("a")));
    }

    #[tokio::test]
    async fn a_power_off_waits_until_the_agent_stops_reporting_vms() {
        let view = FakeSite::default();
        view.report("a", &["v1"]);
        let act = Arc::new(FakeActuator::default());
        let mut short = limits();
        short.vacate_wait = Duration::from_millis(100);
        let (out, _) = run_job(vec![off("a")], &act, view.clone(), short.clone()).await;
        assert_eq!(
            out[&off("a")],
            Outcome::Skipped("VM v1 still on a (its agent still reports it)".into())
        );
        assert!(!act.started(&off("a")));

        // The agent stops reporting it while the power-off waits.
        let view = FakeSite::default();
        view.report("a", &["v1"]);
        let act = Arc::new(FakeActuator::default());
        let waiting = tokio::spawn({
            let (view, act) = (view.clone(), Arc::clone(&act));
            async move { run_job(vec![off("a")], &act, view, limits()).await }
        });
        while view.0.lock().unwrap().reported_polls < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!act.started(&off("a")), "still waiting");
        view.report("a", &[]);
        let (out, _) = waiting.await.unwrap();
        assert_eq!(out[&off("a")], Outcome::Done);
    }

    #[tokio::test]
    async fn a_place_onto_a_host_just_switched_on_waits_for_its_agent() {
        let view = FakeSite::default();
        let act = FakeActuator {
            view: Some(view.clone()),
            ..Default::default()
        }
        .script(on("c"), Script::BringOnline(view.clone(), "c"));
        let act = Arc::new(act);
        let (out, _) = run_job(vec![on("c"), place("w", "c")], &act, view, limits()).await;
        assert_eq!(out[&place("w", "c")], Outcome::Done);
        assert!(act.position("end power_on c") < act.position("start place w"));
        assert!(
            act.log().contains(&"start place w online=true".to_string()),
            "{:?}",
            act.log()
        );
    }

    #[tokio::test]
    async fn a_place_fails_when_the_host_never_reports_online() {
        let view = FakeSite::default();
        let act = Arc::new(FakeActuator::default());
        let mut short = limits();
        short.online_wait = Duration::from_millis(100);
        let (out, _) = run_job(
            vec![on("c"), place("w", "c"), migrate("v", "a", "c")],
            &act,
            view,
            short,
        )
        .await;
        assert_eq!(out[&on("c")], Outcome::Done);
        for a in [place("w", "c"), migrate("v", "a", "c")] {
            assert_eq!(out[&a].result(), "failed");
            assert!(
                reason(&out[&a]).contains("did not report online"),
                "{:?}",
                out[&a]
            );
            assert!(!act.started(&a), "{a:?} never ran");
        }
    }

    #[tokio::test]
    async fn a_failed_power_on_skips_the_moves_onto_it() {
        let view = FakeSite::default();
        let act = Arc::new(FakeActuator::default().script(on("c"), Script::Fail("no BMC")));
        let (out, _) = run_job(vec![on("c"), place("w", "c")], &act, view, limits()).await;
        assert_eq!(
            out[&place("w", "c")],
            Outcome::Skipped("host c was not switched on: no BMC".into())
        );
    }

    #[tokio::test]
    async fn a_move_onto_a_host_already_on_does_not_wait_for_other_power_ons() {
        // The power-on of c finishes only once the migration onto b has
        // started: were the migration waiting for it, neither would finish
        // and the power-on would hit its time limit.
        let gate = Arc::new(Notify::new());
        let act = Arc::new(
            FakeActuator::default()
                .script(on("c"), Script::After(Arc::clone(&gate)))
                .script(migrate("v", "a", "b"), Script::Release(gate)),
        );
        let mut short = limits();
        short.action_timeout = Duration::from_secs(2);
        let (out, _) = run_job(
            vec![on("c"), migrate("v", "a", "b")],
            &act,
            FakeSite::default(),
            short,
        )
        .await;
        assert_eq!(out[&on("c")], Outcome::Done);
        assert_eq!(out[&migrate("v", "a", "b")], Outcome::Done);
    }

    #[tokio::test]
    async fn no_more_actions_run_at_once_than_the_bound() {
        let nodes: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
        let mut act = FakeActuator::default();
        for n in &nodes {
            act = act.script(on(n), Script::Sleep(Duration::from_millis(30)));
        }
        let act = Arc::new(act);
        let mut two = limits();
        two.max_concurrent = 2;
        let actions = nodes.iter().map(|n| on(n)).collect();
        let (out, _) = run_job(actions, &act, FakeSite::default(), two).await;
        assert!(out.values().all(|o| *o == Outcome::Done));
        assert_eq!(act.max_in_flight.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_hanging_action_is_stopped_at_its_time_limit() {
        let stopped = Arc::new(AtomicBool::new(false));
        let act =
            Arc::new(FakeActuator::default().script(on("c"), Script::Hang(Arc::clone(&stopped))));
        let mut short = limits();
        short.action_timeout = Duration::from_millis(50);
        let (out, _) = run_job(
            vec![on("c"), place("w", "c")],
            &act,
            FakeSite::default(),
            short,
        )
        .await;
        assert_eq!(out[&on("c")].result(), "failed");
        assert!(
            reason(&out[&on("c")]).contains("no result within"),
            "{:?}",
            out[&on("c")]
        );
        assert!(
            stopped.load(Ordering::SeqCst),
            "the hanging action was dropped"
        );
        assert_eq!(out[&place("w", "c")].result(), "skipped");
    }

    #[test]
    fn a_migration_gets_more_time_for_more_memory() {
        let mut l = limits();
        l.migrate_base = Duration::from_secs(300);
        l.migrate_s_per_gib = 10.0;
        let mv = migrate("v", "a", "b");
        assert_eq!(l.limit_for(&mv, Some(64.0)), Duration::from_secs(940));
        assert_eq!(l.limit_for(&mv, None), Duration::from_secs(300));
        assert_eq!(l.limit_for(&on("a"), Some(64.0)), l.action_timeout);
        let defaults = Limits::from_config(&ActuatorConfig::default());
        assert_eq!(defaults.max_concurrent, 4);
        assert_eq!(defaults.online_wait, Duration::from_secs(300));
    }

    #[test]
    fn the_site_state_view_reads_hosts_agents_and_reported_vms() {
        use crate::controller::state::tests::node;
        let mut site = SiteState::default();
        site.nodes
            .insert("a".into(), node("a", Some(chrono::Utc::now())));
        site.nodes.insert("b".into(), node("b", None));
        let vm = |id: &str, host: Option<&str>| scheduler::model::Vm {
            id: id.into(),
            vcpus: 1,
            mem_gib: 1.0,
            image: None,
            host: host.map(str::to_string),
            kind: scheduler::model::VmKind::Interactive,
            load: Some(0.1),
            work_core_h: None,
            deadline: None,
            migratable: true,
        };
        site.vms.insert("v1".into(), vm("v1", Some("a")));
        site.vms.insert("v2".into(), vm("v2", None));
        let view = Arc::new(RwLock::new(site));
        assert!(view.agent_online("a") && !view.agent_online("b") && !view.agent_online("zz"));
        assert_eq!(view.vms_on("a"), ["v1"]);
        assert!(view.vms_on("b").is_empty());
        assert_eq!(view.reported_vms("a"), None, "no telemetry: not known");
        let t: Telemetry =
            serde_json::from_str(r#"{"ts":"2026-01-01T00:00:00Z","cpu_util":0.1}"#).unwrap();
        view.write().unwrap().nodes.get_mut("a").unwrap().telemetry = Some(t);
        // Without a `vms` list in telemetry the agent's view is not known.
        assert_eq!(view.reported_vms("a"), None);
        let with_list = serde_json::json!({"vms": [{"id": "web1", "vcpus": 4}, {"id": "db"}]});
        assert_eq!(
            vm_ids_in(&with_list),
            Some(vec!["web1".into(), "db".into()])
        );
        assert_eq!(vm_ids_in(&serde_json::json!({"vms": []})), Some(vec![]));
    }
}
