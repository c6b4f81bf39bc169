//! Small-site neighbourhoods that reach past one improving move.
//!
//! The migration budget makes the search path-dependent: the first servers
//! the switch-off pass empties spend the budget, and no single move can undo
//! one consolidation to afford another (that needs the returning VMs, the
//! server switched back on and a second server emptied, all at once). On
//! small sites [`restarts`] therefore rebuilds the constructed plan once per
//! server, empties that server first, improves, and keeps the best plan.
//! Within one run, [`exchange_pass`] trades a migration already spent for a
//! better one: a displaced VM returns home, freeing budget (and room) for
//! another VM's best move. [`drain_pass`] moves VMs off one server in turn,
//! each to where it costs least, and keeps the best prefix: power curves
//! rise steeply from idle to 10 % (58 → 98 W on some servers), so unloading
//! a server pays only once most of its load has gone, which no single
//! relocation sees.

use super::{
    cheapest, cost_below, improve, move_all_off, place_pending, relocate, repair, settle, targets,
    Budget,
};
use crate::optimizer::state::{Ctx, State};

/// Sites up to this many servers get [`restarts`] (one search per server).
/// Measured in release: 40–550 ms in all at 10 servers / 40 VMs; 5.4 s at
/// 16 servers / 128 VMs, and 2.4 × the time without them (5.2 s against
/// 2.2 s) at 20 servers / 160 VMs.
pub(super) const RESTART_SERVERS: usize = 12;

/// For every server that is on in the constructed plan and may switch, build
/// that plan again, empty the server first (whatever it costs at once),
/// improve, and keep the result in `st` when it beats `st`. Returns whether
/// `st` changed.
pub(super) fn restarts(ctx: &Ctx<'_>, st: &mut State, budget: &Budget) -> bool {
    let mut base = State::new(ctx);
    if repair(ctx, &mut base, &super::FirstPlans::default()).is_err()
        || place_pending(ctx, &mut base).is_err()
    {
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
        if cost_below(alt.cost, st.mark()) {
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
    let ok = move_all_off(ctx, st, vms, None) && st.replan(ctx, s);
    if ok {
        st.commit(m);
    } else {
        st.rollback(ctx, m);
    }
    ok
}

/// Send each displaced VM home (its server must be on) and move the one VM
/// whose best move that makes possible or cheaper, when the pair lowers the
/// cost; returns whether anything changed.
pub(super) fn exchange_pass(ctx: &Ctx<'_>, st: &mut State, budget: &Budget) -> bool {
    let mut any = false;
    for a in 0..ctx.nv {
        if budget.expired() {
            break;
        }
        let Some(home) = ctx.inst.vm_host[a] else {
            continue;
        };
        if st.host[a] == home || !st.on[home] {
            continue;
        }
        let m = st.mark();
        if !relocate(ctx, st, a, home) {
            continue;
        }
        let moves: Vec<(usize, usize)> = (0..ctx.nv)
            .filter(|&b| b != a)
            .flat_map(|b| targets(ctx, st, b, None).into_iter().map(move |to| (b, to)))
            .collect();
        let ok = cheapest(ctx, st, moves).is_some_and(|(cost, b, to)| {
            let from = st.host[b];
            cost_below(cost, m) && relocate(ctx, st, b, to) && {
                // Re-solve the batch work of the servers that changed.
                for s in [home, from, to] {
                    let ms = st.mark();
                    let ok = st.replan(ctx, s);
                    settle(ctx, st, ms, ok);
                }
                true
            }
        });
        any |= settle(ctx, st, m, ok);
    }
    any
}

/// For each server that is on, move its VMs away one at a time and keep the
/// prefix of those moves that lowers the cost most: VMs that were moved
/// here go home first (that frees budget), then the others, most load first,
/// each to its cheapest target, sending another displaced VM home when the
/// budget is spent. Returns whether anything changed.
pub(super) fn drain_pass(ctx: &Ctx<'_>, st: &mut State, budget: &Budget) -> bool {
    let mut any = false;
    for s in 0..ctx.ns {
        if budget.expired() {
            break;
        }
        if !st.on[s] || st.vms_on[s].len() < 2 {
            continue;
        }
        let home = |st: &State, v: usize| ctx.inst.vm_host[v].filter(|&h| h != s && st.on[h]);
        let load = |v: usize| {
            ctx.jobs[v]
                .as_ref()
                .map_or(ctx.inst.vm_fixed_cores[v], |j| j.min / ctx.nt as f64)
        };
        let mut vms: Vec<usize> = st.vms_on[s].clone();
        vms.sort_by(|&a, &b| {
            (home(st, a).is_none(), -load(a))
                .partial_cmp(&(home(st, b).is_none(), -load(b)))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        let m = st.mark();
        let mut best = m;
        for v in vms {
            let moved = match home(st, v) {
                Some(h) => relocate(ctx, st, v, h),
                None => {
                    if st.migrations >= ctx.inst.snap.policy.max_migrations
                        && ctx.inst.vm_host[v] == Some(s)
                    {
                        free_migration(ctx, st, s);
                    }
                    let moves: Vec<(usize, usize)> = targets(ctx, st, v, None)
                        .into_iter()
                        .map(|to| (v, to))
                        .collect();
                    cheapest(ctx, st, moves).is_some_and(|(_, _, to)| relocate(ctx, st, v, to))
                }
            };
            if moved && cost_below(st.cost, best) {
                best = st.mark();
            }
        }
        st.rollback(ctx, best);
        if cost_below(best.cost, m) {
            st.commit(m);
            any = true;
        }
    }
    any
}

/// Send home (a server that is on, not `except`) the displaced VM whose
/// return costs least, freeing one migration of the budget; false when none
/// can go home.
fn free_migration(ctx: &Ctx<'_>, st: &mut State, except: usize) -> bool {
    let moves: Vec<(usize, usize)> = (0..ctx.nv)
        .filter_map(|a| {
            let home = ctx.inst.vm_host[a]?;
            (st.host[a] != home && st.host[a] != except && home != except).then_some((a, home))
        })
        .collect();
    cheapest(ctx, st, moves).is_some_and(|(_, a, home)| relocate(ctx, st, a, home))
}
