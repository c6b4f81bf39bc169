//! The controller's durable state (DESIGN.md §4.5): an SQLite database in
//! `[controller] state_dir` holding what a restart must not lose.
//!
//! Tables (inspect them with `sqlite3 STATE_DIR/phoenix-state.sqlite3`):
//!
//! | table | what |
//! |---|---|
//! | `vms` | every admitted VM: `id`, `host` (NULL = pending), `vm` (the VM as JSON, batch progress `work_core_h` included) |
//! | `servers` | each server's power state `is_on` and the power action in flight (`in_flight`, `journal_id`) |
//! | `plans` | plan records: `id`, `at`, `status`, `plan` (`phoenix.plan/v1` JSON) |
//! | `plan_decisions` | approvals, rejections and supersessions: `plan_id`, `at`, `decision`, `reason` |
//! | `history` | the page's history points, the newest [`HISTORY_LEN`] |
//! | `journal` | actions: `plan_id`, `action` (JSON), `state` (`intended` → `done` / `failed` / `refused` (an id unsafe to pass) / `skipped` (it could strand a VM, or what it waits for did not happen), or `unknown` after a crash), times, `error`; the newest [`JOURNAL_KEPT`] finished entries and every unfinished one |
//!
//! One writer (the control loop); WAL so readers (a `sqlite3` shell) never
//! block it, `synchronous=FULL` so a change the loop acted on survives a
//! power cut. The schema is versioned with `PRAGMA user_version`; the
//! migrations are in [`MIGRATIONS`], applied in order at [`Store::open`].
//!
//! An action is journalled `intended` before it is carried out and its
//! outcome after ([`Store::journal_intended`], [`Store::journal_finished`]).
//! A done placement, migration or power change updates the VM's host or the
//! server's state in the same transaction, so the journal and the inventory
//! never disagree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction};
use scheduler::model::{Plan, Vm};

use super::actuator::{Action, Outcome};
use super::state::{HistoryPoint, NodeState, PlanRecord, PlanStatus, SiteState, HISTORY_LEN};

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "phoenix-state.sqlite3";

/// Plan records kept: one week of 15-minute periods, as the history.
pub const PLANS_KEPT: usize = HISTORY_LEN;

/// Finished journal entries kept (the audit trail outlives plan records);
/// unfinished ones are never pruned.
pub const JOURNAL_KEPT: usize = 100_000;

/// How long a write waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);

/// Schema migrations: entry `k` takes `user_version` from `k` to `k + 1`.
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE vms (
    id         TEXT PRIMARY KEY,
    host       TEXT,
    vm         TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE servers (
    id         TEXT PRIMARY KEY,
    is_on      INTEGER NOT NULL,
    in_flight  TEXT CHECK (in_flight IN ('power_on', 'power_off')),
    journal_id INTEGER,
    updated_at TEXT NOT NULL
);
CREATE TABLE plans (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    status TEXT NOT NULL,
    plan   TEXT NOT NULL
);
CREATE TABLE plan_decisions (
    plan_id  INTEGER NOT NULL,
    at       TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected', 'superseded')),
    reason   TEXT
);
CREATE TABLE history (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    demand_kw     REAL NOT NULL,
    delivered_kw  REAL NOT NULL,
    it_power_kw   REAL NOT NULL,
    cost          REAL NOT NULL,
    baseline_cost REAL
);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    action      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('intended', 'done', 'failed', 'refused', 'skipped', 'unknown')),
    intended_at TEXT NOT NULL,
    finished_at TEXT,
    error       TEXT
);
CREATE INDEX journal_unfinished ON journal (state) WHERE state = 'intended';
"#];

/// Why the state database cannot be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `state_dir` does not exist.
    #[error("state_dir {}: no such folder (create it, writable by the controller's user)", dir.display())]
    Missing {
        /// The folder.
        dir: PathBuf,
    },
    /// `state_dir` is not a folder.
    #[error("state_dir {}: not a folder", dir.display())]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// `state_dir` cannot be written.
    #[error("state_dir {}: not writable: {source}", dir.display())]
    NotWritable {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another connection holds a lock past the busy timeout.
    #[error("state database {}: locked by another process", file.display())]
    Locked {
        /// The database file.
        file: PathBuf,
    },
    /// The file is not an SQLite database, or is damaged.
    #[error("state database {}: not a database or corrupt: {detail}", file.display())]
    Corrupt {
        /// The database file.
        file: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The schema is newer than this controller knows.
    #[error("state database {}: schema version {found} is newer than this controller's {supported}", file.display())]
    TooNew {
        /// The database file.
        file: PathBuf,
        /// `user_version` found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored record cannot be read back.
    #[error("state database {}: {what} is not valid: {detail}", file.display())]
    Decode {
        /// The database file.
        file: PathBuf,
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
    /// Any other SQLite failure (disk full, I/O error…).
    #[error("state database {}: {source}", file.display())]
    Sqlite {
        /// The database file.
        file: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// What a restart found in the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The highest plan id recorded (the next plan is one more).
    pub last_plan_id: u64,
    /// Stored servers that the configuration no longer lists (ignored).
    pub unknown_servers: Vec<String>,
}

/// One action of the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Entry id.
    pub id: u64,
    /// The action.
    pub action: Action,
    /// `intended`, `done`, `failed`, `refused`, `skipped` or `unknown`.
    pub state: String,
    /// Why it failed, or why its outcome is unknown.
    pub error: Option<String>,
}

/// The controller's database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    file: PathBuf,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn action_kind(a: &Action) -> &'static str {
    match a {
        Action::Migrate { .. } => "migrate",
        Action::Place { .. } => "place",
        Action::PowerOn { .. } => "power_on",
        Action::PowerOff { .. } => "power_off",
    }
}

/// Check that `dir` is a writable folder, naming it when it is not.
fn check_dir(dir: &Path) -> Result<(), StoreError> {
    let meta = std::fs::metadata(dir).map_err(|_| StoreError::Missing {
        dir: dir.to_path_buf(),
    })?;
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let probe = dir.join(".phoenix-write-probe");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|source| StoreError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        })
}

impl Store {
    /// Open (or create) the database in `state_dir`: check the folder,
    /// switch to WAL with `synchronous=FULL`, check the file's integrity,
    /// and migrate the schema to the newest version.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        check_dir(state_dir)?;
        let file = state_dir.join(DB_FILE);
        let conn = Connection::open(&file).map_err(|e| classify(&file, e))?;
        let mut store = Store { conn, file };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.file, e)
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err(e))?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                file: self.file.clone(),
                detail: format!("journal mode stays `{mode}`, WAL refused"),
            });
        }
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| self.err(e))?;
        let check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                file: self.file.clone(),
                detail: check,
            });
        }
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(StoreError::TooNew {
                file: self.file.clone(),
                found,
                supported,
            });
        }
        for (k, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            let file = self.file.clone();
            let tx = self.conn.transaction().map_err(|e| classify(&file, e))?;
            tx.execute_batch(sql).map_err(|e| classify(&file, e))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", k + 1))
                .map_err(|e| classify(&file, e))?;
            tx.commit().map_err(|e| classify(&file, e))?;
            tracing::info!(file = %file.display(), version = k + 1, "State database migrated.");
        }
        Ok(())
    }

    fn tx(&mut self) -> Result<(Transaction<'_>, PathBuf), StoreError> {
        let file = self.file.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&file, e))?;
        Ok((tx, file))
    }

    /// Record a VM (admitted, moved, or with new batch progress).
    pub fn put_vm(&mut self, vm: &Vm) -> Result<(), StoreError> {
        let (tx, file) = self.tx()?;
        upsert_vm(&tx, vm).map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))
    }

    /// Forget a VM.
    pub fn remove_vm(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM vms WHERE id = ?1", [id])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Record one period's commit in one transaction: the plan record (a plan
    /// it supersedes marked rejected), the history point, every server's
    /// power state and every VM as the site holds them now (batch progress
    /// included; VMs no longer in the site are removed). Old plans, their
    /// finished journal entries and old history are pruned.
    pub fn commit_period(
        &mut self,
        record: &PlanRecord,
        superseded: Option<u64>,
        history: &HistoryPoint,
        site: &SiteState,
    ) -> Result<(), StoreError> {
        let plan = serde_json::to_string(&record.plan).map_err(|e| StoreError::Decode {
            file: self.file.clone(),
            what: format!("plan {}", record.id),
            detail: e.to_string(),
        })?;
        let (tx, file) = self.tx()?;
        let run = || -> rusqlite::Result<()> {
            if let Some(prev) = superseded {
                set_status(&tx, prev, PlanStatus::Rejected)?;
                insert_decision(
                    &tx,
                    prev,
                    record.at,
                    "superseded",
                    Some("a newer plan was made"),
                )?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO plans (id, at, status, plan) VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.id as i64,
                    ts(record.at),
                    record.status.as_str(),
                    plan
                ],
            )?;
            insert_history(&tx, history)?;
            sync_servers(&tx, &site.nodes)?;
            sync_vms(&tx, &site.vms)?;
            prune(&tx)
        };
        run().map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))
    }

    /// Set the status of plan `id` (e.g. `applied` once carried out).
    pub fn set_plan_status(&mut self, id: u64, status: PlanStatus) -> Result<(), StoreError> {
        set_status(&self.conn, id, status).map_err(|e| self.err(e))
    }

    /// Mark plan `id` rejected because it can no longer be approved (a newer
    /// plan, a restart), with `reason`.
    pub fn supersede_plan(
        &mut self,
        id: u64,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (tx, file) = self.tx()?;
        let run = || -> rusqlite::Result<()> {
            set_status(&tx, id, PlanStatus::Rejected)?;
            insert_decision(&tx, id, at, "superseded", Some(reason))
        };
        run().map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))
    }

    /// Record an operator's approval or rejection of plan `id`.
    pub fn decide_plan(
        &mut self,
        id: u64,
        approve: bool,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (status, decision) = if approve {
            (PlanStatus::Applied, "approved")
        } else {
            (PlanStatus::Rejected, "rejected")
        };
        let (tx, file) = self.tx()?;
        let run = || -> rusqlite::Result<()> {
            set_status(&tx, id, status)?;
            insert_decision(&tx, id, at, decision, Some("operator"))
        };
        run().map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))
    }

    /// The decisions recorded on plan `id`, oldest first: (decision, reason).
    pub fn decisions(&self, id: u64) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT decision, reason FROM plan_decisions WHERE plan_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([id as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.file, e));
        rows
    }

    /// Journal `action` of plan `plan_id` as intended, before it is carried
    /// out. A power action marks its server's power action in flight.
    /// Returns the journal entry's id.
    pub fn journal_intended(&mut self, plan_id: u64, action: &Action) -> Result<u64, StoreError> {
        let json = serde_json::to_string(action).map_err(|e| StoreError::Decode {
            file: self.file.clone(),
            what: "action".into(),
            detail: e.to_string(),
        })?;
        let (tx, file) = self.tx()?;
        let run = || -> rusqlite::Result<u64> {
            tx.execute(
                "INSERT INTO journal (plan_id, kind, action, state, intended_at)
                 VALUES (?1, ?2, ?3, 'intended', ?4)",
                params![plan_id as i64, action_kind(action), json, ts(Utc::now())],
            )?;
            let id = tx.last_insert_rowid();
            if let Action::PowerOn { node } | Action::PowerOff { node } = action {
                tx.execute(
                    "UPDATE servers SET in_flight = ?2, journal_id = ?3, updated_at = ?4 WHERE id = ?1",
                    params![node, action_kind(action), id, ts(Utc::now())],
                )?;
            }
            Ok(id as u64)
        };
        let id = run().map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))?;
        Ok(id)
    }

    /// Record the outcome of journal entry `entry_id`. A done action updates
    /// the inventory in the same transaction (the VM's host, the server's
    /// power state); any outcome ends the server's power action in flight.
    pub fn journal_finished(&mut self, entry_id: u64, outcome: &Outcome) -> Result<(), StoreError> {
        let (state, error) = match outcome {
            Outcome::Done => ("done", None),
            Outcome::NotConfigured => (
                "failed",
                Some("no command is configured for this action; nothing was run".to_string()),
            ),
            Outcome::Failed(e) => ("failed", Some(e.clone())),
            Outcome::Refused(e) => ("refused", Some(e.clone())),
            Outcome::Skipped(e) => ("skipped", Some(e.clone())),
        };
        let action = self.journal_action(entry_id)?;
        let (tx, file) = self.tx()?;
        let run = || -> rusqlite::Result<()> {
            finish(&tx, entry_id, state, error.as_deref())?;
            if *outcome == Outcome::Done {
                apply_done(&tx, &action)?;
            }
            Ok(())
        };
        run().map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))
    }

    fn journal_action(&self, entry_id: u64) -> Result<Action, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT action FROM journal WHERE id = ?1",
                [entry_id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let json = json.ok_or_else(|| StoreError::Decode {
            file: self.file.clone(),
            what: format!("journal entry {entry_id}"),
            detail: "no such entry".into(),
        })?;
        self.decode(&json, &format!("journal entry {entry_id}"))
    }

    /// Actions journalled as intended with no outcome (a crash came between):
    /// (entry id, plan id, action), oldest first.
    pub fn unfinished_actions(&self) -> Result<Vec<(u64, u64, Action)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, plan_id, action FROM journal WHERE state = 'intended' ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(i64, i64, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.file, e))?;
        rows.into_iter()
            .map(|(id, plan, json)| {
                let a = self.decode(&json, &format!("journal entry {id}"))?;
                Ok((id as u64, plan as u64, a))
            })
            .collect()
    }

    /// Mark journal entry `entry_id` as `unknown` with `reason`: its outcome
    /// was never recorded, and it is not repeated blindly. Its server's power
    /// action in flight ends; the inventory keeps what was last recorded.
    pub fn abandon_action(&mut self, entry_id: u64, reason: &str) -> Result<(), StoreError> {
        let (tx, file) = self.tx()?;
        finish(&tx, entry_id, "unknown", Some(reason)).map_err(|e| classify(&file, e))?;
        tx.commit().map_err(|e| classify(&file, e))
    }

    /// Journal entries of plan `plan_id`, oldest first.
    pub fn journal_of(&self, plan_id: u64) -> Result<Vec<JournalEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, action, state, error FROM journal WHERE plan_id = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(i64, String, String, Option<String>)> = st
            .query_map([plan_id as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.file, e))?;
        rows.into_iter()
            .map(|(id, json, state, error)| {
                let action = self.decode(&json, &format!("journal entry {id}"))?;
                Ok(JournalEntry {
                    id: id as u64,
                    action,
                    state,
                    error,
                })
            })
            .collect()
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        json: &str,
        what: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Decode {
            file: self.file.clone(),
            what: what.to_string(),
            detail: e.to_string(),
        })
    }

    /// Load what the store holds into `site` (built from the configuration):
    /// every VM with its host, each configured server's power state, the
    /// latest plan and the history. Returns the highest plan id recorded.
    pub fn load(&self, site: &mut SiteState) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        site.vms = self.load_vms()?;
        for (id, on) in self.load_servers()? {
            match site.nodes.get_mut(&id) {
                Some(n) => n.on = on,
                None => loaded.unknown_servers.push(id),
            }
        }
        site.history = self.load_history()?.into();
        site.latest_plan = self.latest_plan()?;
        loaded.last_plan_id = self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM plans", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| self.err(e))? as u64;
        Ok(loaded)
    }

    fn load_vms(&self) -> Result<BTreeMap<String, Vm>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, host, vm FROM vms ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, Option<String>, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.file, e))?;
        rows.into_iter()
            .map(|(id, host, json)| {
                let mut vm: Vm = self.decode(&json, &format!("vm {id}"))?;
                // The `host` column is the truth (a done action updates it).
                vm.host = host;
                Ok((id, vm))
            })
            .collect()
    }

    fn load_servers(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, is_on FROM servers ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.file, e));
        rows
    }

    fn load_history(&self) -> Result<Vec<HistoryPoint>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT at, demand_kw, delivered_kw, it_power_kw, cost, baseline_cost
                 FROM history ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, f64, f64, f64, f64, Option<f64>)> = st
            .query_map([HISTORY_LEN as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&self.file, e))?;
        let mut points = rows
            .into_iter()
            .map(
                |(at, demand_kw, delivered_kw, it_power_kw, cost, baseline_cost)| {
                    Ok(HistoryPoint {
                        at: self.time(&at, "history point")?,
                        demand_kw,
                        delivered_kw,
                        it_power_kw,
                        cost,
                        baseline_cost,
                    })
                },
            )
            .collect::<Result<Vec<_>, StoreError>>()?;
        points.reverse();
        Ok(points)
    }

    fn time(&self, s: &str, what: &str) -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Decode {
                file: self.file.clone(),
                what: format!("{what} time `{s}`"),
                detail: e.to_string(),
            })
    }

    /// The newest plan record.
    pub fn latest_plan(&self) -> Result<Option<PlanRecord>, StoreError> {
        let row: Option<(i64, String, String, String)> = self
            .conn
            .query_row(
                "SELECT id, at, status, plan FROM plans ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((id, at, status, plan)) = row else {
            return Ok(None);
        };
        let what = format!("plan {id}");
        let status = PlanStatus::parse(&status).ok_or_else(|| StoreError::Decode {
            file: self.file.clone(),
            what: what.clone(),
            detail: format!("unknown status `{status}`"),
        })?;
        let plan: Plan = self.decode(&plan, &what)?;
        Ok(Some(PlanRecord {
            id: id as u64,
            at: self.time(&at, &what)?,
            status,
            plan,
        }))
    }
}

fn classify(file: &Path, e: rusqlite::Error) -> StoreError {
    let file = file.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { file },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            file,
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite { file, source: e },
    }
}

fn upsert_vm(conn: &Connection, vm: &Vm) -> rusqlite::Result<()> {
    let json = serde_json::to_string(vm)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT INTO vms (id, host, vm, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, vm = excluded.vm,
             updated_at = excluded.updated_at
         WHERE vms.vm IS NOT excluded.vm OR vms.host IS NOT excluded.host",
        params![vm.id, vm.host, json, ts(Utc::now())],
    )
    .map(drop)
}

fn sync_vms(conn: &Connection, vms: &BTreeMap<String, Vm>) -> rusqlite::Result<()> {
    for vm in vms.values() {
        upsert_vm(conn, vm)?;
    }
    let mut st = conn.prepare("SELECT id FROM vms")?;
    let stored: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for id in stored.iter().filter(|id| !vms.contains_key(*id)) {
        conn.execute("DELETE FROM vms WHERE id = ?1", [id])?;
    }
    Ok(())
}

fn sync_servers(conn: &Connection, nodes: &BTreeMap<String, NodeState>) -> rusqlite::Result<()> {
    for (id, n) in nodes {
        conn.execute(
            "INSERT INTO servers (id, is_on, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET is_on = excluded.is_on,
                 updated_at = excluded.updated_at
             WHERE servers.is_on IS NOT excluded.is_on",
            params![id, n.on, ts(Utc::now())],
        )?;
    }
    Ok(())
}

fn insert_history(conn: &Connection, h: &HistoryPoint) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO history (at, demand_kw, delivered_kw, it_power_kw, cost, baseline_cost)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            ts(h.at),
            h.demand_kw,
            h.delivered_kw,
            h.it_power_kw,
            h.cost,
            h.baseline_cost
        ],
    )
    .map(drop)
}

fn prune(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?1",
        [HISTORY_LEN as i64],
    )?;
    let oldest_kept: Option<i64> = conn
        .query_row(
            "SELECT id FROM plans ORDER BY id DESC LIMIT 1 OFFSET ?1",
            [PLANS_KEPT as i64 - 1],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(oldest) = oldest_kept {
        conn.execute("DELETE FROM plans WHERE id < ?1", [oldest])?;
        conn.execute("DELETE FROM plan_decisions WHERE plan_id < ?1", [oldest])?;
    }
    conn.execute(
        "DELETE FROM journal WHERE state <> 'intended'
         AND id <= (SELECT MAX(id) FROM journal) - ?1",
        [JOURNAL_KEPT as i64],
    )
    .map(drop)
}

fn set_status(conn: &Connection, id: u64, status: PlanStatus) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE plans SET status = ?2 WHERE id = ?1",
        params![id as i64, status.as_str()],
    )
    .map(drop)
}

fn insert_decision(
    conn: &Connection,
    plan_id: u64,
    at: DateTime<Utc>,
    decision: &str,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO plan_decisions (plan_id, at, decision, reason) VALUES (?1, ?2, ?3, ?4)",
        params![plan_id as i64, ts(at), decision, reason],
    )
    .map(drop)
}

fn finish(conn: &Connection, id: u64, state: &str, error: Option<&str>) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE journal SET state = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
        params![id as i64, state, ts(Utc::now()), error],
    )?;
    conn.execute(
        "UPDATE servers SET in_flight = NULL, journal_id = NULL WHERE journal_id = ?1",
        [id as i64],
    )
    .map(drop)
}

fn apply_done(conn: &Connection, action: &Action) -> rusqlite::Result<()> {
    let now = ts(Utc::now());
    match action {
        Action::Place { vm, to } | Action::Migrate { vm, to, .. } => {
            let json: Option<String> = conn
                .query_row("SELECT vm FROM vms WHERE id = ?1", [vm], |r| r.get(0))
                .optional()?;
            // A VM removed meanwhile stays removed.
            let Some(json) = json else { return Ok(()) };
            let mut v: Vm = serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            v.host = Some(to.clone());
            upsert_vm(conn, &v)
        }
        Action::PowerOn { node } | Action::PowerOff { node } => {
            let on = matches!(action, Action::PowerOn { .. });
            conn.execute(
                "INSERT INTO servers (id, is_on, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET is_on = excluded.is_on,
                     updated_at = excluded.updated_at",
                params![node, on, now],
            )
            .map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::tests::node;
    use chrono::TimeZone;
    use scheduler::model::{Objective, VmKind, PLAN_SCHEMA};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 6, 0, 0).unwrap()
    }

    fn vm(id: &str, host: Option<&str>) -> Vm {
        Vm {
            id: id.into(),
            vcpus: 2,
            mem_gib: 4.0,
            image: Some("ubuntu-24.04".into()),
            host: host.map(str::to_string),
            kind: VmKind::Batch,
            load: None,
            work_core_h: Some(3.5),
            deadline: Some(t0() + chrono::Duration::hours(20)),
            migratable: true,
        }
    }

    fn plan(placements: &[(&str, &str)]) -> Plan {
        Plan {
            schema: PLAN_SCHEMA.into(),
            placements: placements
                .iter()
                .map(|(v, h)| (v.to_string(), h.to_string()))
                .collect(),
            servers_on: BTreeMap::from([("a".into(), true), ("b".into(), false)]),
            batch_cores: BTreeMap::new(),
            power_w: BTreeMap::from([("a".into(), vec![110.0, 112.5])]),
            heat_kw: BTreeMap::new(),
            migrations: vec![],
            objective: Objective {
                cost: 0.125,
                ..Default::default()
            },
            lower_bound: None,
            baseline_cost: Some(0.25),
            solver: "optimizer".into(),
            solve_ms: 3.0,
        }
    }

    fn record(id: u64, status: PlanStatus) -> PlanRecord {
        PlanRecord {
            id,
            at: t0() + chrono::Duration::minutes(15 * id as i64),
            status,
            plan: plan(&[("v1", "a")]),
        }
    }

    fn point(k: i64) -> HistoryPoint {
        HistoryPoint {
            at: t0() + chrono::Duration::minutes(15 * k),
            demand_kw: 1.5 + k as f64,
            delivered_kw: 0.75,
            it_power_kw: 0.5,
            cost: 0.125,
            baseline_cost: if k % 2 == 0 { Some(0.25) } else { None },
        }
    }

    /// The site as the configuration builds it: nodes a and b, both on.
    fn fresh_site() -> SiteState {
        let mut s = SiteState {
            site: "t".into(),
            ..Default::default()
        };
        for id in ["a", "b"] {
            s.nodes.insert(id.into(), node(id, None));
        }
        s
    }

    #[test]
    fn an_empty_folder_gets_the_newest_schema_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).expect("opens");
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(store.file(), dir.path().join(DB_FILE));
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            (mode.as_str(), sync),
            ("wal", 2),
            "WAL and synchronous=FULL"
        );
        let mut site = fresh_site();
        let loaded = store.load(&mut site).unwrap();
        assert_eq!(loaded, Loaded::default());
        assert_eq!(site, fresh_site(), "an empty store changes nothing");
        drop(store);
        // Opening again migrates nothing and keeps the version.
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn the_site_comes_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = fresh_site();
        {
            let mut store = Store::open(dir.path()).unwrap();
            for v in [vm("v1", Some("a")), vm("v2", None), vm("gone", None)] {
                store.put_vm(&v).unwrap();
                site.vms.insert(v.id.clone(), v);
            }
            store.remove_vm("gone").unwrap();
            site.vms.remove("gone");
            site.nodes.get_mut("b").unwrap().on = false;
            site.vms.get_mut("v1").unwrap().work_core_h = Some(1.25);
            store
                .commit_period(
                    &record(1, PlanStatus::AwaitingApproval),
                    None,
                    &point(0),
                    &site,
                )
                .unwrap();
            store
                .commit_period(
                    &record(2, PlanStatus::AwaitingApproval),
                    Some(1),
                    &point(1),
                    &site,
                )
                .unwrap();
            store.decide_plan(2, true, t0()).unwrap();
            site.record(point(0));
            site.record(point(1));
            site.latest_plan = Some(PlanRecord {
                status: PlanStatus::Applied,
                ..record(2, PlanStatus::Applied)
            });
        }
        let store = Store::open(dir.path()).unwrap();
        let mut back = fresh_site();
        let loaded = store.load(&mut back).unwrap();
        assert_eq!(loaded.last_plan_id, 2);
        assert_eq!(
            back, site,
            "VMs with hosts and batch progress, servers, plan, history"
        );
        assert_eq!(back.vms["v1"].work_core_h, Some(1.25));
        assert!(!back.nodes["b"].on, "a server switched off stays off");
        assert_eq!(
            store.decisions(1).unwrap(),
            [(
                "superseded".to_string(),
                Some("a newer plan was made".to_string())
            )]
        );
        assert_eq!(
            store.decisions(2).unwrap(),
            [("approved".to_string(), Some("operator".to_string()))]
        );
    }

    #[test]
    fn a_done_action_updates_the_inventory_and_a_failed_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut site = fresh_site();
        site.vms.insert("v1".into(), vm("v1", None));
        site.vms.insert("v2".into(), vm("v2", None));
        store
            .commit_period(&record(1, PlanStatus::Applied), None, &point(0), &site)
            .unwrap();
        let place = |v: &str| Action::Place {
            vm: v.into(),
            to: "a".into(),
        };
        let e1 = store.journal_intended(1, &place("v1")).unwrap();
        let e2 = store.journal_intended(1, &place("v2")).unwrap();
        let off = store
            .journal_intended(1, &Action::PowerOff { node: "b".into() })
            .unwrap();
        let in_flight: Option<String> = store
            .conn
            .query_row("SELECT in_flight FROM servers WHERE id = 'b'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(in_flight.as_deref(), Some("power_off"));
        store.journal_finished(e1, &Outcome::Done).unwrap();
        store
            .journal_finished(e2, &Outcome::Failed("virsh: no domain".into()))
            .unwrap();
        store.journal_finished(off, &Outcome::Done).unwrap();
        let mut back = fresh_site();
        store.load(&mut back).unwrap();
        assert_eq!(back.vms["v1"].host.as_deref(), Some("a"));
        assert_eq!(
            back.vms["v2"].host, None,
            "a failed placement leaves it pending"
        );
        assert!(!back.nodes["b"].on);
        let journal = store.journal_of(1).unwrap();
        let states: Vec<&str> = journal.iter().map(|e| e.state.as_str()).collect();
        assert_eq!(states, ["done", "failed", "done"]);
        assert_eq!(journal[1].error.as_deref(), Some("virsh: no domain"));
        assert_eq!(journal[0].action, place("v1"), "the action reads back");
        assert!(store.unfinished_actions().unwrap().is_empty());
        let in_flight: Option<String> = store
            .conn
            .query_row("SELECT in_flight FROM servers WHERE id = 'b'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(in_flight, None, "the power action is no longer in flight");
    }

    #[test]
    fn an_action_without_an_outcome_is_unfinished_until_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = fresh_site();
        site.vms.insert("v1".into(), vm("v1", None));
        let place = Action::Place {
            vm: "v1".into(),
            to: "b".into(),
        };
        let entry = {
            let mut store = Store::open(dir.path()).unwrap();
            store
                .commit_period(&record(4, PlanStatus::Applied), None, &point(0), &site)
                .unwrap();
            store.journal_intended(4, &place).unwrap()
            // Dropped here as a crash would leave it: intended, no outcome.
        };
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.unfinished_actions().unwrap(), [(entry, 4, place)]);
        store.abandon_action(entry, "restarted").unwrap();
        assert!(store.unfinished_actions().unwrap().is_empty());
        let e = store.journal_of(4).unwrap().remove(0);
        assert_eq!(
            (e.state.as_str(), e.error.as_deref()),
            ("unknown", Some("restarted"))
        );
        let mut back = fresh_site();
        store.load(&mut back).unwrap();
        assert_eq!(back.vms["v1"].host, None, "the VM is not assumed placed");
    }

    #[test]
    fn old_plans_and_history_are_pruned_but_the_journal_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        // Durability is not under test here: spare the disk 700 syncs.
        store
            .conn
            .execute_batch("PRAGMA synchronous = OFF")
            .unwrap();
        let site = fresh_site();
        let n = PLANS_KEPT as u64 + 8;
        let on = Action::PowerOn { node: "b".into() };
        for id in 1..=n {
            store
                .commit_period(
                    &record(id, PlanStatus::Applied),
                    None,
                    &point(id as i64),
                    &site,
                )
                .unwrap();
            if id <= 2 {
                let e = store.journal_intended(id, &on).unwrap();
                if id == 1 {
                    store.journal_finished(e, &Outcome::Done).unwrap();
                }
            }
        }
        let count = |sql: &str| -> i64 { store.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM plans") as usize, PLANS_KEPT);
        assert_eq!(
            count("SELECT MIN(id) FROM plans") as u64,
            n - PLANS_KEPT as u64 + 1
        );
        assert_eq!(count("SELECT COUNT(*) FROM history") as usize, HISTORY_LEN);
        assert_eq!(
            store.unfinished_actions().unwrap(),
            [(2, 2, on.clone())],
            "an unfinished action outlives its plan's record"
        );
        let done = store.journal_of(1).unwrap();
        assert_eq!(done.len(), 1, "so does the audit trail");
        assert_eq!((&done[0].action, done[0].state.as_str()), (&on, "done"));
        let mut back = fresh_site();
        let loaded = store.load(&mut back).unwrap();
        assert_eq!(loaded.last_plan_id, n);
        assert_eq!(back.history.len(), HISTORY_LEN);
        assert_eq!(back.history.back().unwrap().at, point(n as i64).at);
    }

    #[test]
    fn a_missing_folder_or_a_file_in_its_place_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let err = Store::open(&missing).unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
    }

    #[test]
    fn an_unwritable_folder_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("read-only");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permission bits; sysfs refuses new files even to root.
        let target = if std::fs::write(ro.join("probe"), "x").is_ok() {
            PathBuf::from("/sys")
        } else {
            ro.clone()
        };
        let err = Store::open(&target).unwrap_err();
        assert!(matches!(err, StoreError::NotWritable { .. }), "{err}");
        assert!(
            err.to_string().contains(&*target.to_string_lossy()),
            "{err}"
        );
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DB_FILE);
        std::fs::write(
            &file,
            "this is not an SQLite database, not even close ".repeat(100),
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
    }

    #[test]
    fn a_schema_newer_than_this_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn a_write_while_another_process_holds_the_lock_fails_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = store.put_vm(&vm("v1", None)).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        other.execute_batch("ROLLBACK").unwrap();
        store
            .put_vm(&vm("v1", None))
            .expect("writes again once released");
    }
}
