//! Phoenix's optimiser. TEMPORARY: starts from the greedy baseline until the
//! real optimiser lands (issue #2); the API below is the one it keeps.

use std::time::Instant;

use crate::error::PlanError;
use crate::evaluate::Decisions;
use crate::greedy;
use crate::instance::Instance;

/// Name reported in plans.
pub const NAME: &str = "optimizer";

/// What the optimiser returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decisions (feasible under the model).
    pub decisions: Decisions,
    /// A proven lower bound on the optimal cost, when known.
    pub lower_bound: Option<f64>,
}

/// Decide a plan, stopping by `deadline` if given.
pub fn decide(inst: &Instance<'_>, _deadline: Option<Instant>) -> Result<Outcome, PlanError> {
    Ok(Outcome {
        decisions: greedy::decide(inst)?,
        lower_bound: None,
    })
}
