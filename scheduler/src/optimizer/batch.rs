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
/// from the first point.
pub(crate) fn convex_segments(points: &[(f64, f64)]) -> Vec<Segment> {
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(points.len());
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
    hull.windows(2)
        .map(|w| Segment {
            len: w[1].0 - w[0].0,
            slope: (w[1].1 - w[0].1) / (w[1].0 - w[0].0),
        })
        .collect()
}

/// Cost that forces required work first; far above any real cost per
/// core-step (< 0.1), small enough to keep float sums exact to 1e-13.
const BIG: f64 = 1e3;
const TOL: f64 = 1e-9;

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
pub(crate) fn schedule(jobs: &[BatchJob], steps: &[Vec<Segment>]) -> Option<Vec<Vec<f64>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(len: f64, slope: f64) -> Vec<Segment> {
        vec![Segment { len, slope }]
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
        let s = convex_segments(&[(0.0, 0.0), (1.0, 4.0), (2.0, 5.0), (3.0, 9.0)]);
        assert_eq!(s.len(), 2);
        assert!((s[0].slope - 2.5).abs() < 1e-12 && (s[0].len - 2.0).abs() < 1e-12);
    }
}
