//! Errors of the planning core. Bad input (`Parse`, `Invalid`), snapshots
//! that no plan can satisfy (`Infeasible`, always a proof) and snapshots on
//! which the search found no plan without proving that none exists
//! (`NoPlanFound`) are expected outcomes reported to the user with what is
//! wrong; `Solver` is an internal failure.

/// Why no plan was produced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The snapshot is not valid JSON of the snapshot's shape.
    #[error("malformed snapshot at `{path}`: {message}")]
    Parse {
        /// Path of the offending field (`servers[3].mem_gib`), `.` for the root.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A field has a value the model cannot accept.
    #[error("invalid snapshot field `{field}`: {problem}")]
    Invalid {
        /// Path of the field (`servers[3].power_curve_w`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The snapshot is well formed but no plan can meet every hard rule:
    /// proven, by the feasibility checks of [`crate::validate`] or by the
    /// exact MILP. Never a search that merely gave up.
    #[error("infeasible: {reason}")]
    Infeasible {
        /// The constraint that cannot be met, naming servers and VMs.
        reason: String,
    },
    /// The search found no plan, and nothing proves that none exists: the
    /// feasibility checks pass, and the exact MILP was not run (the site is
    /// too large for it) or stopped at its time limit without a plan. Not a
    /// proof of infeasibility; a longer time limit, a larger migration
    /// budget or `--solver exact` may still find one.
    #[error("no plan found (not proven infeasible): {at}: {reason}")]
    NoPlanFound {
        /// Where the search stopped: the VM or server it found no room for
        /// (`vm v017`, `server s03`).
        at: String,
        /// The rule that blocked it and what was tried.
        reason: String,
    },
    /// The solver failed internally.
    #[error("solver failure: {0}")]
    Solver(String),
}

impl PlanError {
    /// Shorthand for [`PlanError::Invalid`].
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for [`PlanError::NoPlanFound`].
    pub fn no_plan(at: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::NoPlanFound {
            at: at.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`PlanError::Infeasible`].
    pub fn infeasible(reason: impl Into<String>) -> Self {
        Self::Infeasible {
            reason: reason.into(),
        }
    }
}
