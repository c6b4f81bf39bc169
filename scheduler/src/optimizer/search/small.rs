//! Small-site neighbourhoods that reach past one improving move.
//!
//! The migration budget makes the search path-dependent: the first servers
//! the switch-off pass empties spend the budget, and no single move can undo
//! one consolidation to afford another (that needs the returning VMs, the
//! server switched back on and a second server emptied, all at once). On
//! small sites [`restarts`] therefore rebuilds the constructed plan once per
//! server, empties that server first, improves, and keeps the best plan.

use super::{improve, move_off, place_pending, repair, targets, Budget};
use crate::optimizer::state::{Ctx, State};

/// For every server that is on in the constructed plan and may switch, build
/// that plan again, empty the server first (whatever it costs at once),
/// improve, and keep the result in `st` when it beats `st`. Returns whether
/// `st` changed.
pub(super) fn restarts(ctx: &Ctx<'_>, st: &mut State, budget: &Budget) -> bool {
    let mut base = State::new(ctx);
    if repair(ctx, &mut base).is_err() || place_pending(ctx, &mut base).is_err() {
        return false;
    }
    let mut any = false;
    for s in 0..ctx.ns {
        if budget.expired() {
            break;
        }
        if !base.on[s] || !ctx.can_switch(s) {
            continue;
        }
        let mut alt = base.clone();
        if !empty_and_switch_off(ctx, &mut alt, s) {
            continue;
        }
        improve(ctx, &mut alt, budget);
        if alt.cost < st.cost - 1e-9 * (1.0 + st.cost.abs()) {
            *st = alt;
            any = true;
        }
    }
    any
}

/// Move every VM off `s` (each to the target that takes it at least
/// estimated cost) and switch it off, whether or not that lowers the cost;
/// false (and nothing changed) when a VM cannot leave or a rule would break.
fn empty_and_switch_off(ctx: &Ctx<'_>, st: &mut State, s: usize) -> bool {
    let m = st.mark();
    st.set_on(ctx, s, false);
    let vms = st.vms_on[s].clone();
    for v in vms {
        let moved = targets(ctx, st, v, None)
            .into_iter()
            .any(|to| move_off(ctx, st, v, to));
        if !moved {
            st.rollback(ctx, m);
            return false;
        }
    }
    let ok = st.replan(ctx, s);
    if ok {
        st.commit(m);
    } else {
        st.rollback(ctx, m);
    }
    ok
}
