//! Batch scheduling on one server: which batch VM gets how many cores at
//! which step, given the server's interactive load and what every other
//! server of its loop recovers.
//!
//! It is a transportation problem with prefix windows (a VM's work counts only
//! in the steps before its deadline), solved exactly as a min-cost flow:
//!
//! ```text
//! source ─(min work, −BIG)─┐
//! source ─(optional, 0)────┴─► vm ─(≤ vcpus, 0)─► step t < window ─(cost segments)─► sink
//! source ─(Σ vcpus of VMs past their window, 0)──► step t ≥ window ─┘
//! ```
//!
//! Each step's cost is the exact cost of the server's extra load at that step
//! (electricity minus the value of the heat it adds to its loop below the
//! loop's demand and intake limit), replaced by its lower convex envelope so
//! the flow is a linear program with convex costs. Successive shortest paths
//! stop at the first path of non-negative cost: every required core-hour
//! (the −BIG arcs) is placed, and optional work only where it lowers the cost
//! (heat worth more than the power that makes it). Where the curve is convex
//! the schedule is optimal for the server; where it is not, the envelope is a
//! close relaxation and the caller evaluates the result exactly.

/// A batch VM as the flow sees it. Work is counted in core-steps.
#[derive(Debug, Clone)]
pub(crate) struct BatchJob {
    /// Most cores at one step (its vCPUs).
    pub cap: f64,
    /// Steps that count towards its work (those before the deadline).
    pub window: usize,
    /// Work it must do within the window, core-steps.
    pub min: f64,
    /// Work it may do within the window, core-steps.
    pub max: f64,
}

/// A piece of a step's convex cost: this many cores at this cost per core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub len: f64,
    pub slope: f64,
}

/// Lower convex envelope of the points `(x, y)` (sorted by `x`), as segments
/// from the first point, appended to `out`; `hull` is scratch.
fn convex_segments_into(points: &[(f64, f64)], hull: &mut Vec<(f64, f64)>, out: &mut Vec<Segment>) {
    hull.clear();
    for &p in points {
        if hull.last().is_some_and(|&(lx, _)| p.0 <= lx + 1e-12) {
            continue; // callers pass distinct abscissae; ignore repeats
        }
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Drop b when it lies on or above the chord a→p.
            let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    out.extend(hull.windows(2).map(|w| Segment {
        len: w[1].0 - w[0].0,
        slope: (w[1].1 - w[0].1) / (w[1].0 - w[0].0),
    }));
}

/// The cost segments of every step, stored flat; steps with the same costs
/// share their segments.
#[derive(Debug, Default)]
pub(crate) struct StepCosts {
    segs: Vec<Segment>,
    /// Per step: its segments' range in `segs`.
    ranges: Vec<(usize, usize)>,
    hull: Vec<(f64, f64)>,
}

impl StepCosts {
    pub fn clear(&mut self) {
        self.segs.clear();
        self.ranges.clear();
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Add a step whose cost is the lower convex envelope of `points`
    /// (sorted by `x`, the first at no extra load).
    pub fn push_envelope(&mut self, points: &[(f64, f64)]) {
        let from = self.segs.len();
        convex_segments_into(points, &mut self.hull, &mut self.segs);
        self.ranges.push((from, self.segs.len()));
    }

    /// Add a step with the same costs as the last one.
    pub fn push_repeat(&mut self) {
        let last = self.ranges.last().copied().unwrap_or((0, 0));
        self.ranges.push(last);
    }

    /// Segments of step `t`.
    pub fn step(&self, t: usize) -> &[Segment] {
        let (from, to) = self.ranges[t];
        &self.segs[from..to]
    }
}

/// Cost that forces required work first; far above any real cost per
/// core-step (< 0.1), small enough to keep float sums exact to 1e-13.
const BIG: f64 = 1e3;
const TOL: f64 = 1e-9;
const NONE: u32 = u32::MAX;

/// An arc of the residual graph; arcs are stored by tail node (CSR), each
/// node's in the order the edges were added.
#[derive(Debug, Clone, Copy, Default)]
struct Arc {
    cap: f64,
    cost: f64,
    to: u32,
    /// Position of the reverse arc.
    rev: u32,
}

/// Set or clear bit `i` of `bits`.
fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

/// An edge as added: tail, head, capacity, cost.
#[derive(Debug, Clone, Copy)]
struct Edge {
    from: u32,
    to: u32,
    cap: f64,
    cost: f64,
}

/// The min-cost flow of one server's batch schedule with all its buffers,
/// reused from call to call.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    edges: Vec<Edge>,
    /// Per node: first position of its arcs (one more entry than nodes).
    head: Vec<u32>,
    fill: Vec<u32>,
    arcs: Vec<Arc>,
    /// Bit p: whether arc p has room (capacity above `TOL`), the only arcs
    /// a shortest-path search follows.
    open: Vec<u64>,
    /// Per node: its first word in `open` (one more entry than nodes).
    word0: Vec<u32>,
    /// Per edge: position of its forward arc.
    fwd: Vec<u32>,
    /// Per job: its required-work edge.
    min_edge: Vec<u32>,
    /// Per job and step (`j * nt + t`): its edge to the step, or `NONE`.
    job_edge: Vec<u32>,
    /// Per step: the edge of the work past windows, or `NONE`.
    late_edge: Vec<u32>,
    dist: Vec<f64>,
    prev: Vec<u32>,
    in_queue: Vec<bool>,
    /// FIFO ring of the nodes to scan (each at most once).
    queue: Vec<u32>,
    /// Result: cores of job `j` at step `t` at `j * nt + t`.
    cores: Vec<f64>,
    nt: usize,
}

impl Flow {
    fn edge(&mut self, from: usize, to: usize, cap: f64, cost: f64) -> u32 {
        let e = self.edges.len() as u32;
        self.edges.push(Edge {
            from: from as u32,
            to: to as u32,
            cap: cap.max(0.0),
            cost,
        });
        e
    }

    /// Lay the edges out as arcs by tail node, in the order they were added.
    fn build(&mut self, n: usize) {
        self.head.clear();
        self.head.resize(n + 1, 0);
        for e in &self.edges {
            self.head[e.from as usize + 1] += 1;
            self.head[e.to as usize + 1] += 1;
        }
        for u in 0..n {
            self.head[u + 1] += self.head[u];
        }
        self.fill.clear();
        self.fill.extend_from_slice(&self.head[..n]);
        self.arcs.clear();
        self.arcs.resize(2 * self.edges.len(), Arc::default());
        self.fwd.clear();
        for e in &self.edges {
            let p = self.fill[e.from as usize];
            self.fill[e.from as usize] += 1;
            let q = self.fill[e.to as usize];
            self.fill[e.to as usize] += 1;
            self.arcs[p as usize] = Arc {
                cap: e.cap,
                cost: e.cost,
                to: e.to,
                rev: q,
            };
            self.arcs[q as usize] = Arc {
                cap: 0.0,
                cost: -e.cost,
                to: e.from,
                rev: p,
            };
            self.fwd.push(p);
        }
        self.word0.clear();
        self.word0.push(0);
        for u in 0..n {
            let deg = (self.head[u + 1] - self.head[u]) as usize;
            self.word0.push(self.word0[u] + deg.div_ceil(64) as u32);
        }
        self.open.clear();
        self.open.resize(self.word0[n] as usize, 0);
        for u in 0..n {
            let (from, to) = (self.head[u] as usize, self.head[u + 1] as usize);
            let words = &mut self.open[self.word0[u] as usize..];
            for (i, a) in self.arcs[from..to].iter().enumerate() {
                set_bit(words, i, a.cap > TOL);
            }
        }
    }

    /// Successive shortest paths (SPFA) from `s` to `t`, stopping at the
    /// first path whose cost is not negative.
    ///
    /// Each search visits nodes in FIFO order and each node's arcs in the
    /// order they were added, so ties between paths of equal cost go the
    /// same way every time. A node's arcs with room are the set bits of its
    /// words in `open` (kept up to date as paths are augmented): closed
    /// arcs, about half of them, cost nothing to pass over.
    fn min_cost_flow(&mut self, s: usize, t: usize) {
        let n = self.head.len() - 1;
        let n_arcs = self.arcs.len();
        self.dist.clear();
        self.dist.resize(n, f64::INFINITY);
        self.prev.clear();
        self.prev.resize(n, NONE);
        self.in_queue.clear();
        self.in_queue.resize(n, false);
        self.queue.clear();
        self.queue.resize(n, 0);
        let head = &self.head[..];
        let arcs = &mut self.arcs[..];
        let dist = &mut self.dist[..];
        let prev = &mut self.prev[..];
        let in_queue = &mut self.in_queue[..];
        let queue = &mut self.queue[..];
        let open = &mut self.open[..];
        let word0 = &self.word0[..];
        // Bounded for safety; each augmentation saturates an arc.
        for _ in 0..10 * n_arcs + 10 {
            dist.fill(f64::INFINITY);
            prev.fill(NONE);
            dist[s] = 0.0;
            let (mut q_head, mut q_len) = (0usize, 1usize);
            queue[0] = s as u32;
            in_queue[s] = true;
            // Bellman-Ford bound: more relaxation rounds than that means a
            // (numerically) negative cycle; stop with what is placed.
            let mut pops = 0usize;
            let max_pops = n * n_arcs + n;
            while q_len > 0 {
                let u = queue[q_head] as usize;
                q_head = if q_head + 1 == n { 0 } else { q_head + 1 };
                q_len -= 1;
                in_queue[u] = false;
                pops += 1;
                if pops > max_pops {
                    in_queue.fill(false);
                    return;
                }
                let du = dist[u];
                let from = head[u] as usize;
                // The arcs of u with room, in order (the bits of its words).
                let words = &open[word0[u] as usize..word0[u + 1] as usize];
                for (k, &word) in words.iter().enumerate() {
                    let mut bits = word;
                    while bits != 0 {
                        let p = from + k * 64 + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        let a = &arcs[p];
                        let v = a.to as usize;
                        let d = du + a.cost;
                        if d < dist[v] - 1e-12 {
                            dist[v] = d;
                            prev[v] = p as u32;
                            if !in_queue[v] {
                                in_queue[v] = true;
                                let mut at = q_head + q_len;
                                if at >= n {
                                    at -= n;
                                }
                                queue[at] = v as u32;
                                q_len += 1;
                            }
                        }
                    }
                }
            }
            if !dist[t].is_finite() || dist[t] >= -1e-12 {
                return;
            }
            let mut f = f64::INFINITY;
            let mut v = t;
            while v != s {
                let a = &arcs[prev[v] as usize];
                f = f.min(a.cap);
                v = arcs[a.rev as usize].to as usize;
            }
            let mut v = t;
            while v != s {
                let p = prev[v] as usize;
                arcs[p].cap -= f;
                let r = arcs[p].rev as usize;
                arcs[r].cap += f;
                let u = arcs[r].to as usize;
                let p_open = arcs[p].cap > TOL;
                set_bit(&mut open[word0[u] as usize..], p - head[u] as usize, p_open);
                let r_open = arcs[r].cap > TOL;
                set_bit(&mut open[word0[v] as usize..], r - head[v] as usize, r_open);
                v = u;
            }
        }
    }

    /// Flow left on (forward) or pushed through (reverse) edge `e`.
    fn residual(&self, e: u32, reverse: bool) -> f64 {
        let a = &self.arcs[self.fwd[e as usize] as usize];
        if reverse {
            self.arcs[a.rev as usize].cap
        } else {
            a.cap
        }
    }

    /// Schedule `jobs` over the steps of `steps` (cores above the
    /// interactive load). False when the required work cannot be placed;
    /// otherwise [`Flow::cores`] gives each job's cores per step.
    pub fn schedule(&mut self, jobs: &[BatchJob], steps: &StepCosts) -> bool {
        let nt = steps.len();
        let m = jobs.len();
        self.nt = nt;
        self.cores.clear();
        if m == 0 {
            return true;
        }
        let src = 0;
        let job_node = |j: usize| 1 + j;
        let step_node = |t: usize| 1 + m + t;
        let sink = 1 + m + nt;
        self.edges.clear();
        self.min_edge.clear();
        self.job_edge.clear();
        self.job_edge.resize(m * nt, NONE);
        self.late_edge.clear();
        self.late_edge.resize(nt, NONE);
        for (j, job) in jobs.iter().enumerate() {
            let window = job.window.min(nt);
            let e = self.edge(src, job_node(j), job.min, -BIG);
            self.min_edge.push(e);
            if job.max > job.min + TOL {
                self.edge(src, job_node(j), job.max - job.min, 0.0);
            }
            for t in 0..window {
                self.job_edge[j * nt + t] = self.edge(job_node(j), step_node(t), job.cap, 0.0);
            }
        }
        for t in 0..nt {
            let late: f64 = jobs.iter().filter(|j| j.window <= t).map(|j| j.cap).sum();
            if late > TOL {
                self.late_edge[t] = self.edge(src, step_node(t), late, 0.0);
            }
            for seg in steps.step(t) {
                if seg.len > TOL {
                    self.edge(step_node(t), sink, seg.len, seg.slope);
                }
            }
        }
        self.build(sink + 1);
        self.min_cost_flow(src, sink);
        for (j, &e) in self.min_edge.iter().enumerate() {
            if self.residual(e, false) > 1e-7 * (1.0 + jobs[j].min) {
                return false;
            }
        }
        let mut cores = std::mem::take(&mut self.cores);
        cores.resize(m * nt, 0.0);
        for (k, &e) in self.job_edge.iter().enumerate() {
            if e != NONE {
                cores[k] = self.residual(e, true);
            }
        }
        // Cores past a job's window: hand the step's total out in job order.
        for t in 0..nt {
            let e = self.late_edge[t];
            if e == NONE {
                continue;
            }
            let mut left = self.residual(e, true);
            for (j, job) in jobs.iter().enumerate() {
                if job.window <= t && left > 0.0 {
                    let c = left.min(job.cap);
                    cores[j * nt + t] = c;
                    left -= c;
                }
            }
        }
        self.cores = cores;
        true
    }

    /// Cores of job `j` at each step, as the last successful
    /// [`Flow::schedule`] placed them.
    pub fn cores(&self, j: usize) -> &[f64] {
        &self.cores[j * self.nt..(j + 1) * self.nt]
    }
}

/// Buffers for planning one server, reused from plan to plan on a thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The server's batch VMs.
    pub vms: Vec<usize>,
    /// Their jobs, in the same order.
    pub jobs: Vec<BatchJob>,
    pub steps: StepCosts,
    pub flow: Flow,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Run `f` with this thread's planning buffers (not re-entrant).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// The implementation before [`Flow`] (a graph allocated per call, adjacency
/// lists of edge ids, every arc scanned), kept as the oracle the tests
/// compare [`Flow`] with: both must give the same schedules to the bit.
#[cfg(test)]
mod reference {
    use super::{BatchJob, Segment, BIG, TOL};

    /// Lower convex envelope of the points `(x, y)` (sorted by `x`), as segments
    /// from the first point, in a vector of its own as the old `State::plan`
    /// had it (the envelope's algorithm is unchanged: it is shared).
    pub(super) fn convex_segments(points: &[(f64, f64)]) -> Vec<Segment> {
        let mut out = Vec::new();
        super::convex_segments_into(points, &mut Vec::new(), &mut out);
        out
    }

    struct Graph {
        to: Vec<usize>,
        cap: Vec<f64>,
        cost: Vec<f64>,
        adj: Vec<Vec<usize>>,
    }

    impl Graph {
        fn new(n: usize) -> Self {
            Self {
                to: Vec::new(),
                cap: Vec::new(),
                cost: Vec::new(),
                adj: vec![Vec::new(); n],
            }
        }

        fn edge(&mut self, u: usize, v: usize, cap: f64, cost: f64) -> usize {
            let e = self.to.len();
            self.to.push(v);
            self.cap.push(cap.max(0.0));
            self.cost.push(cost);
            self.adj[u].push(e);
            self.to.push(u);
            self.cap.push(0.0);
            self.cost.push(-cost);
            self.adj[v].push(e + 1);
            e
        }

        /// Successive shortest paths (SPFA) from `s` to `t`, stopping at the
        /// first path whose cost is not negative.
        fn min_cost_flow(&mut self, s: usize, t: usize) {
            let n = self.adj.len();
            let mut dist = vec![f64::INFINITY; n];
            let mut prev = vec![usize::MAX; n];
            let mut in_queue = vec![false; n];
            let mut queue = std::collections::VecDeque::new();
            // Bounded for safety; each augmentation saturates an arc.
            for _ in 0..10 * self.to.len() + 10 {
                dist.fill(f64::INFINITY);
                prev.fill(usize::MAX);
                dist[s] = 0.0;
                queue.push_back(s);
                in_queue[s] = true;
                // Bellman-Ford bound: more relaxation rounds than that means a
                // (numerically) negative cycle; stop with what is placed.
                let mut pops = 0usize;
                let max_pops = n * self.to.len() + n;
                while let Some(u) = queue.pop_front() {
                    in_queue[u] = false;
                    pops += 1;
                    if pops > max_pops {
                        queue.clear();
                        in_queue.fill(false);
                        return;
                    }
                    for &e in &self.adj[u] {
                        if self.cap[e] > TOL {
                            let v = self.to[e];
                            let d = dist[u] + self.cost[e];
                            if d < dist[v] - 1e-12 {
                                dist[v] = d;
                                prev[v] = e;
                                if !in_queue[v] {
                                    in_queue[v] = true;
                                    queue.push_back(v);
                                }
                            }
                        }
                    }
                }
                if !dist[t].is_finite() || dist[t] >= -1e-12 {
                    return;
                }
                let mut f = f64::INFINITY;
                let mut v = t;
                while v != s {
                    let e = prev[v];
                    f = f.min(self.cap[e]);
                    v = self.to[e ^ 1];
                }
                let mut v = t;
                while v != s {
                    let e = prev[v];
                    self.cap[e] -= f;
                    self.cap[e ^ 1] += f;
                    v = self.to[e ^ 1];
                }
            }
        }
    }

    /// Schedule `jobs` over `steps.len()` steps, each with its convex cost
    /// segments (cores above the interactive load). Returns the cores of each
    /// job at each step, or `None` when the required work cannot be placed.
    pub(super) fn schedule(jobs: &[BatchJob], steps: &[Vec<Segment>]) -> Option<Vec<Vec<f64>>> {
        let nt = steps.len();
        let m = jobs.len();
        if m == 0 {
            return Some(Vec::new());
        }
        let src = 0;
        let job_node = |j: usize| 1 + j;
        let step_node = |t: usize| 1 + m + t;
        let sink = 1 + m + nt;
        let mut g = Graph::new(sink + 1);
        let mut min_arcs = Vec::with_capacity(m);
        let mut job_arcs = vec![vec![usize::MAX; nt]; m];
        for (j, job) in jobs.iter().enumerate() {
            let window = job.window.min(nt);
            min_arcs.push(g.edge(src, job_node(j), job.min, -BIG));
            if job.max > job.min + TOL {
                g.edge(src, job_node(j), job.max - job.min, 0.0);
            }
            for t in 0..window {
                job_arcs[j][t] = g.edge(job_node(j), step_node(t), job.cap, 0.0);
            }
        }
        let mut late_arcs = vec![usize::MAX; nt];
        for t in 0..nt {
            let late: f64 = jobs.iter().filter(|j| j.window <= t).map(|j| j.cap).sum();
            if late > TOL {
                late_arcs[t] = g.edge(src, step_node(t), late, 0.0);
            }
            for seg in &steps[t] {
                if seg.len > TOL {
                    g.edge(step_node(t), sink, seg.len, seg.slope);
                }
            }
        }
        g.min_cost_flow(src, sink);
        for (j, &e) in min_arcs.iter().enumerate() {
            if g.cap[e] > 1e-7 * (1.0 + jobs[j].min) {
                return None;
            }
        }
        let mut cores = vec![vec![0.0; nt]; m];
        for j in 0..m {
            for t in 0..nt {
                let e = job_arcs[j][t];
                if e != usize::MAX {
                    cores[j][t] = g.cap[e ^ 1];
                }
            }
        }
        // Cores past a job's window: hand the step's total out in job order.
        for t in 0..nt {
            let e = late_arcs[t];
            if e == usize::MAX {
                continue;
            }
            let mut left = g.cap[e ^ 1];
            for (j, job) in jobs.iter().enumerate() {
                if job.window <= t && left > 0.0 {
                    let c = left.min(job.cap);
                    cores[j][t] = c;
                    left -= c;
                }
            }
        }
        Some(cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn flat(len: f64, slope: f64) -> Vec<Segment> {
        vec![Segment { len, slope }]
    }

    fn step_costs(steps: &[Vec<Segment>]) -> StepCosts {
        let mut costs = StepCosts::default();
        for segs in steps {
            let from = costs.segs.len();
            costs.segs.extend_from_slice(segs);
            costs.ranges.push((from, costs.segs.len()));
        }
        costs
    }

    /// [`Flow::schedule`] with the old calling convention.
    fn schedule(jobs: &[BatchJob], steps: &[Vec<Segment>]) -> Option<Vec<Vec<f64>>> {
        let mut flow = Flow::default();
        flow.schedule(jobs, &step_costs(steps))
            .then(|| (0..jobs.len()).map(|j| flow.cores(j).to_vec()).collect())
    }

    fn envelope(points: &[(f64, f64)]) -> Vec<Segment> {
        let mut costs = StepCosts::default();
        costs.push_envelope(points);
        costs.step(0).to_vec()
    }

    fn bits(segs: &[Segment]) -> Vec<(u64, u64)> {
        segs.iter()
            .map(|s| (s.len.to_bits(), s.slope.to_bits()))
            .collect()
    }

    /// Points like a step's cost in `State::plan`: increasing abscissae from
    /// 0, costs anywhere between concave and convex, some slopes negative.
    fn random_points(rng: &mut impl Rng) -> Vec<(f64, f64)> {
        let n = rng.random_range(1..=12);
        let (mut x, mut y) = (0.0, 0.0);
        let mut pts = vec![(x, y)];
        for _ in 1..n {
            x += match rng.random_range(0..4) {
                0 => 1e-13, // closer than the envelope's tolerance
                1 => rng.random_range(1..=4) as f64 * 0.8,
                _ => rng.random_range(0.01..3.0),
            };
            y += rng.random_range(-0.05..0.08) * rng.random_range(0.0..2.0);
            pts.push((x, y));
        }
        pts
    }

    /// A random instance: jobs with windows inside, at and past the
    /// horizon, required and optional work (sometimes more than fits), and
    /// steps whose costs often repeat (prices hold for several steps).
    fn random_instance(rng: &mut impl Rng) -> (Vec<BatchJob>, Vec<Vec<(f64, f64)>>) {
        let nt = rng.random_range(1..=10);
        let jobs = (0..rng.random_range(1..=7))
            .map(|_| {
                let cap = rng.random_range(1..=8) as f64 * [1.0, 0.5, 0.37][rng.random_range(0..3)];
                let window = match rng.random_range(0..4) {
                    0 => rng.random_range(0..=nt),
                    1 => nt + rng.random_range(0..3),
                    _ => nt,
                };
                let fill = rng.random_range(0.0..1.3);
                let min = if rng.random_bool(0.2) {
                    0.0
                } else {
                    cap * window.min(nt) as f64 * fill * rng.random_range(0.0..1.0)
                };
                let max = if rng.random_bool(0.3) {
                    min
                } else {
                    min + cap * rng.random_range(0.0..4.0)
                };
                BatchJob {
                    cap,
                    window,
                    min,
                    max,
                }
            })
            .collect();
        let mut steps: Vec<Vec<(f64, f64)>> = Vec::with_capacity(nt);
        for t in 0..nt {
            if t > 0 && rng.random_bool(0.5) {
                steps.push(steps[t - 1].clone());
            } else {
                steps.push(random_points(rng));
            }
        }
        (jobs, steps)
    }

    #[test]
    fn flow_matches_the_reference_implementation_to_the_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261122);
        let (mut infeasible, mut feasible) = (0, 0);
        let mut flow = Flow::default();
        let mut costs = StepCosts::default();
        for case in 0..4000 {
            let (jobs, points) = random_instance(&mut rng);
            costs.clear();
            let mut steps = Vec::new();
            for (t, pts) in points.iter().enumerate() {
                if t > 0 && points[t - 1] == *pts {
                    costs.push_repeat();
                } else {
                    costs.push_envelope(pts);
                }
                let segs = reference::convex_segments(pts);
                assert_eq!(bits(costs.step(t)), bits(&segs), "case {case}, step {t}");
                steps.push(segs);
            }
            let want = reference::schedule(&jobs, &steps);
            let ok = flow.schedule(&jobs, &costs);
            assert_eq!(ok, want.is_some(), "case {case}: {jobs:?}");
            let Some(want) = want else {
                infeasible += 1;
                continue;
            };
            feasible += 1;
            for (j, row) in want.iter().enumerate() {
                let got: Vec<u64> = flow.cores(j).iter().map(|c| c.to_bits()).collect();
                let want: Vec<u64> = row.iter().map(|c| c.to_bits()).collect();
                assert_eq!(got, want, "case {case}, job {j}: {jobs:?} {steps:?}");
            }
        }
        // Both outcomes must be well represented for the comparison to mean much.
        assert!(
            infeasible > 300 && feasible > 2000,
            "{infeasible} infeasible, {feasible} feasible"
        );
    }

    #[test]
    fn nodes_with_more_than_64_arcs_are_searched_like_the_reference() {
        // 12 jobs and 12 steps of 11 segments: the source has 24 arcs and
        // more, each step 24 or more, the sink 132.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(64);
        let mut flow = Flow::default();
        for case in 0..20 {
            let nt = 12;
            let jobs: Vec<BatchJob> = (0..12)
                .map(|j| BatchJob {
                    cap: 1.0 + (j % 4) as f64,
                    window: if j % 3 == 0 { nt - j / 2 } else { nt },
                    min: rng.random_range(0.0..6.0),
                    max: rng.random_range(6.0..20.0),
                })
                .collect();
            let steps: Vec<Vec<Segment>> = (0..nt)
                .map(|_| {
                    let mut slope = rng.random_range(-0.05..0.0);
                    (0..11)
                        .map(|_| {
                            slope += rng.random_range(0.001..0.01);
                            Segment {
                                len: rng.random_range(0.5..3.0),
                                slope,
                            }
                        })
                        .collect()
                })
                .collect();
            let want = reference::schedule(&jobs, &steps).expect("feasible");
            assert!(flow.schedule(&jobs, &step_costs(&steps)), "case {case}");
            for (j, row) in want.iter().enumerate() {
                let got: Vec<u64> = flow.cores(j).iter().map(|c| c.to_bits()).collect();
                let want: Vec<u64> = row.iter().map(|c| c.to_bits()).collect();
                assert_eq!(got, want, "case {case}, job {j}");
            }
        }
    }

    #[test]
    fn a_flow_reused_for_a_smaller_instance_forgets_the_larger_one() {
        let big = [
            BatchJob {
                cap: 2.0,
                window: 3,
                min: 4.0,
                max: 6.0,
            },
            BatchJob {
                cap: 1.0,
                window: 1,
                min: 1.0,
                max: 3.0,
            },
        ];
        let small = [BatchJob {
            cap: 1.0,
            window: 2,
            min: 1.0,
            max: 1.0,
        }];
        let mut flow = Flow::default();
        let three = step_costs(&[flat(4.0, -1.0), flat(4.0, 2.0), flat(4.0, 1.0)]);
        assert!(flow.schedule(&big, &three));
        let two = step_costs(&[flat(4.0, 2.0), flat(4.0, 1.0)]);
        assert!(flow.schedule(&small, &two));
        assert_eq!(flow.cores(0), [0.0, 1.0]);
        assert!(flow.schedule(&big, &two));
        assert_eq!(flow.cores(0), [2.0, 2.0]);
        assert_eq!(flow.cores(1), [1.0, 0.0]);
    }

    #[test]
    fn a_repeated_step_shares_the_segments_of_the_one_before() {
        let mut costs = StepCosts::default();
        costs.push_envelope(&[(0.0, 0.0), (1.0, 1.0), (2.0, 3.0)]);
        costs.push_repeat();
        costs.push_envelope(&[(0.0, 0.0), (2.0, -1.0)]);
        assert_eq!(costs.len(), 3);
        assert_eq!(bits(costs.step(1)), bits(costs.step(0)));
        assert_eq!(
            bits(costs.step(2)),
            bits(&[Segment {
                len: 2.0,
                slope: -0.5
            }])
        );
    }

    #[test]
    fn required_work_goes_to_the_cheapest_steps() {
        let jobs = [BatchJob {
            cap: 2.0,
            window: 3,
            min: 3.0,
            max: 6.0,
        }];
        let steps = [flat(4.0, 3.0), flat(4.0, 1.0), flat(4.0, 2.0)];
        let c = schedule(&jobs, &steps).unwrap();
        assert!((c[0][1] - 2.0).abs() < 1e-9 && (c[0][2] - 1.0).abs() < 1e-9);
        assert!(c[0][0].abs() < 1e-9);
    }

    #[test]
    fn capacity_conflicts_between_jobs_are_resolved() {
        // Job A may use 4 cores, job B only 2; both need 4 core-steps in two
        // steps of 4 cores: only A 2+2, B 2+2 works.
        let jobs = [
            BatchJob {
                cap: 4.0,
                window: 2,
                min: 4.0,
                max: 4.0,
            },
            BatchJob {
                cap: 2.0,
                window: 2,
                min: 4.0,
                max: 4.0,
            },
        ];
        let steps = [flat(4.0, 1.0), flat(4.0, 2.0)];
        let c = schedule(&jobs, &steps).unwrap();
        assert!((c[1][0] - 2.0).abs() < 1e-9 && (c[1][1] - 2.0).abs() < 1e-9);
        assert!((c[0][0] + c[0][1] - 4.0).abs() < 1e-9);
    }

    #[test]
    fn impossible_work_is_refused() {
        let jobs = [BatchJob {
            cap: 1.0,
            window: 2,
            min: 3.0,
            max: 3.0,
        }];
        assert!(schedule(&jobs, &[flat(4.0, 1.0), flat(4.0, 1.0)]).is_none());
    }

    #[test]
    fn optional_and_late_work_run_only_where_they_pay() {
        let jobs = [BatchJob {
            cap: 2.0,
            window: 1,
            min: 0.0,
            max: 2.0,
        }];
        let steps = [flat(4.0, -1.0), flat(4.0, -1.0), flat(4.0, 1.0)];
        let c = schedule(&jobs, &steps).unwrap();
        assert_eq!(c[0], vec![2.0, 2.0, 0.0]);
    }

    #[test]
    fn envelope_of_a_concave_start_is_one_chord() {
        let s = envelope(&[(0.0, 0.0), (1.0, 4.0), (2.0, 5.0), (3.0, 9.0)]);
        assert_eq!(s.len(), 2);
        assert!((s[0].slope - 2.5).abs() < 1e-12 && (s[0].len - 2.0).abs() < 1e-12);
    }
}
