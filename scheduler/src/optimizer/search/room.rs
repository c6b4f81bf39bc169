//! Making room: when a VM fits no server as things stand (a pending VM, or
//! one that must leave a server that cannot hold it), move other VMs out of
//! its way within the migration budget and place it in the room they leave
//! — ejection chains:
//! 1. one VM leaves a server for a server that takes it as it is (or one
//!    switched on for it), and the VM takes its place;
//! 2. two VMs leave the same server that way;
//! 3. one VM leaves a server for a server that first makes room for it as
//!    in 1 (a chain of two moves).
//!
//! Pending VMs (whose moves cost nothing) are moved first, then VMs already
//! away from their hosts, then the others. The first chain that works is
//! kept; the search that follows prices and improves the plan as usual.
//! Only a failed placement calls this, so plans that never need it pay
//! nothing for it.

use super::{relocate, switch_on_for, targets};
use crate::optimizer::state::{Ctx, State};

/// Most tentative placements one call may try before it gives up (bounds
/// the time on large sites; the ordinary search never gets here).
const MAX_TRIES: usize = 50_000;

/// Place `v` (not on `except`), moving up to two other VMs out of its way;
/// false (and nothing changed) when no chain within the budget does it.
pub(crate) fn make_room(ctx: &Ctx<'_>, st: &mut State, v: usize, except: Option<usize>) -> bool {
    let mut tries = 0;
    let servers = candidates(ctx, st, v, except);
    // Chains of one move, then two VMs off one server, then chains of two.
    for &s in &servers {
        for w in movers(ctx, st, s, v) {
            if st.may_fit_without(ctx, s, v, &[w]) && single(ctx, st, v, s, w, false, &mut tries) {
                return true;
            }
        }
    }
    for &s in &servers {
        let ws = movers(ctx, st, s, v);
        for (i, &a) in ws.iter().enumerate() {
            for &b in &ws[i + 1..] {
                if tries >= MAX_TRIES {
                    return false;
                }
                if st.may_fit_without(ctx, s, v, &[a, b]) && pair(ctx, st, v, s, [a, b], &mut tries)
                {
                    return true;
                }
            }
        }
    }
    for &s in &servers {
        for w in movers(ctx, st, s, v) {
            if tries >= MAX_TRIES {
                return false;
            }
            if st.may_fit_without(ctx, s, v, &[w]) && single(ctx, st, v, s, w, true, &mut tries) {
                return true;
            }
        }
    }
    false
}

/// Servers that are on and may take `v` once room is made, the least full
/// (by vCPUs, as a share of what they may host) first.
fn candidates(ctx: &Ctx<'_>, st: &State, v: usize, except: Option<usize>) -> Vec<usize> {
    let mut c: Vec<(f64, usize)> = (0..ctx.ns)
        .filter(|&s| Some(s) != except && s != st.host[v] && st.on[s])
        .filter(|&s| ctx.cap_cores[s] >= 0.0 && ctx.may_host(v, s))
        .filter(|&s| {
            let srv = &ctx.inst.snap.servers[s];
            ctx.vcpus(v) <= ctx.vcpu_cap[s] + 1e-9
                && ctx.mem(v) <= srv.mem_gib + 1e-9
                && ctx.inst.vm_fixed_cores[v] <= ctx.cap_cores[s]
        })
        .map(|s| (st.vcpus[s] / ctx.vcpu_cap[s].max(1e-9), s))
        .collect();
    c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    c.into_iter().map(|(_, s)| s).collect()
}

/// VMs on `s` that may leave it (other than `v`): pending ones first (free
/// to move), then those already away from their hosts, then the rest.
fn movers(ctx: &Ctx<'_>, st: &State, s: usize, v: usize) -> Vec<usize> {
    let mut w: Vec<(u8, usize)> = st.vms_on[s]
        .iter()
        .copied()
        .filter(|&w| w != v && (ctx.movable[w] || ctx.inst.vm_host[w].is_none()))
        .map(|w| {
            let rank = match ctx.inst.vm_host[w] {
                None => 0,
                Some(h) if h != s => 1,
                Some(_) => 2,
            };
            (rank, w)
        })
        .collect();
    w.sort();
    w.into_iter().map(|(_, w)| w).collect()
}

/// Move `w` off its server to a server that takes it as it is (not
/// `except`), or to an off server switched on for it; with `deeper`, also
/// to one that makes room for it by a chain of one move.
fn place_elsewhere(
    ctx: &Ctx<'_>,
    st: &mut State,
    w: usize,
    except: usize,
    deeper: bool,
    tries: &mut usize,
) -> bool {
    for to in targets(ctx, st, w, None) {
        if to == except {
            continue;
        }
        *tries += 1;
        if relocate(ctx, st, w, to) {
            return true;
        }
    }
    *tries += 1;
    if switch_on_for(ctx, st, w, Some(except)) {
        return true;
    }
    if !deeper {
        return false;
    }
    let from = st.host[w];
    for s in candidates(ctx, st, w, Some(except)) {
        if s == from {
            continue;
        }
        for x in movers(ctx, st, s, w) {
            if *tries >= MAX_TRIES {
                return false;
            }
            if st.may_fit_without(ctx, s, w, &[x]) && single(ctx, st, w, s, x, false, tries) {
                return true;
            }
        }
    }
    false
}

/// Move `v` onto `s` and re-plan `s`; false (and undone) when a rule
/// breaks. The server `v` leaves is not re-planned here: it may be one
/// that breaks a rule until more VMs leave it (repair re-plans it).
fn land(ctx: &Ctx<'_>, st: &mut State, v: usize, s: usize) -> bool {
    if !st.fits(ctx, s, v) {
        return false;
    }
    let m = st.mark();
    st.move_vm(ctx, v, s);
    if st.replan_kept(ctx, s) {
        st.commit(m);
        true
    } else {
        st.rollback(ctx, m);
        false
    }
}

/// `w` leaves `s` (see [`place_elsewhere`]), then `v` moves onto `s`.
fn single(
    ctx: &Ctx<'_>,
    st: &mut State,
    v: usize,
    s: usize,
    w: usize,
    deeper: bool,
    tries: &mut usize,
) -> bool {
    let m = st.mark();
    *tries += 1;
    if place_elsewhere(ctx, st, w, s, deeper, tries) && land(ctx, st, v, s) {
        st.commit(m);
        true
    } else {
        st.rollback(ctx, m);
        false
    }
}

/// Both of `ws` leave `s`, then `v` moves onto `s`.
fn pair(
    ctx: &Ctx<'_>,
    st: &mut State,
    v: usize,
    s: usize,
    ws: [usize; 2],
    tries: &mut usize,
) -> bool {
    let m = st.mark();
    *tries += 1;
    let ok = ws
        .iter()
        .all(|&w| place_elsewhere(ctx, st, w, s, false, tries))
        && land(ctx, st, v, s);
    if ok {
        st.commit(m);
    } else {
        st.rollback(ctx, m);
    }
    ok
}
