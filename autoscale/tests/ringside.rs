//! Ringside's own configuration, `shared::metrics()`, over scripted loads: the ring's
//! distinct clients `K` (an `External` metric, 100 per replica: `ceil(K / 100)`) and
//! each node's CPU. The reasons it writes are the ones docs/autoscaler.md shows.

// A failed unwrap in a helper is a failed test, which is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use ringside_autoscale::{
    Autoscaler, AutoscalerConfig, Basis, Decision, MetricSpec, Observation, PodState, Source,
    shared,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

/// Ringside's metrics between `min` and `max` replicas, the HPA's default behavior.
fn ringside(min: u32, max: u32) -> AutoscalerConfig {
    AutoscalerConfig::new(min, max, shared::metrics())
}

/// The same without a scale-down window.
fn ringside_no_down_window(min: u32, max: u32) -> AutoscalerConfig {
    let config = ringside(min, max);
    let mut behavior = config.behavior.clone();
    behavior.scale_down.stabilization_window_secs = 0;
    config.with_behavior(behavior)
}

fn node(i: u32) -> String {
    format!("node-{i}")
}

/// `replicas` ready nodes, nothing read.
fn nodes(replicas: u32) -> Observation {
    (0..replicas).fold(Observation::new(replicas), |seen, i| {
        seen.pod(node(i), PodState::Ready)
    })
}

/// What the local autoscaler reads from `shared::local_query`: the ring's distinct
/// `clients` (one sample) and each of `replicas` nodes at `cpu` % of its request.
fn ring(replicas: u32, clients: f64, cpu: f64) -> Observation {
    (0..replicas).fold(
        nodes(replicas).value(shared::UNIQUE_CLIENT_IPS, clients),
        |seen, i| seen.pod_value(shared::CPU, node(i), cpu),
    )
}

/// An autoscaler and the replicas it runs, each decision applied before the next row.
struct Script {
    autoscaler: Autoscaler,
    replicas: u32,
}

impl Script {
    fn new(config: AutoscalerConfig, replicas: u32) -> Self {
        Self {
            autoscaler: Autoscaler::new(config).unwrap(),
            replicas,
        }
    }

    /// One evaluation at second `t` of what `seen` makes of the current replicas.
    fn step(&mut self, t: u64, seen: impl Fn(u32) -> Observation) -> Decision {
        let decision = self.autoscaler.decide(at(t), &seen(self.replicas));
        self.replicas = decision.desired_replicas;
        decision
    }

    /// Rows of (second, the ring's clients, each node's CPU %).
    fn run(&mut self, rows: &[(u64, f64, f64)]) -> Vec<Decision> {
        rows.iter()
            .map(|&(t, clients, cpu)| self.step(t, |n| ring(n, clients, cpu)))
            .collect()
    }
}

fn replicas(decisions: &[Decision]) -> Vec<u32> {
    decisions.iter().map(|d| d.desired_replicas).collect()
}

fn basis(decision: &Decision) -> Basis {
    decision.metrics[0].result.as_ref().unwrap().basis
}

#[test]
fn ringside_scales_on_the_rings_clients_per_replica_and_cpu() {
    let metrics = shared::metrics();
    assert_eq!(metrics[0].name, shared::UNIQUE_CLIENT_IPS);
    assert_eq!(metrics[0].source, Source::External);
    assert_eq!(metrics[1].name, shared::CPU);
    assert_eq!(metrics[1].source, Source::Resource);
}

#[test]
fn the_replicas_follow_the_rings_clients() {
    let mut script = Script::new(ringside(1, 10), 1);
    let mut rows = vec![
        // ceil(250 / 100) = 3; CPU at 40 % of 80 % asks for 1.
        (0, 250.0, 40.0),
        // 250 / 3 = 83.33 per replica, outside the tolerance: ceil(250 / 100) = 3 again.
        (15, 250.0, 40.0),
        // 290 / 3 = 96.67 per replica, within the tolerance: the 3 running.
        (30, 290.0, 40.0),
        (45, 250.0, 40.0),
    ];
    // The clients leave: 0 asks for none, CPU for 1; the window holds 3 until the
    // recommendation of 45 s is 300 s old.
    rows.extend((60..=345).step_by(15).map(|t| (t, 0.0, 5.0)));
    let decisions = script.run(&rows);

    let mut expected = vec![3; rows.len()];
    *expected.last_mut().unwrap() = 1;
    assert_eq!(
        replicas(&decisions),
        expected,
        "{:#?}",
        decisions.iter().map(|d| &d.reason).collect::<Vec<_>>()
    );
    assert_eq!(
        decisions[0].reason,
        "scale up 1 -> 3: ringside_unique_client_ips 250 per replica (target 100): \
         ceil(total / target) = 3; cpu 40% of request (target 80%): ceil(0.5 x 1) = 1"
    );
    assert_eq!(basis(&decisions[1]), Basis::PerReplica);
    assert_eq!(
        decisions[1].reason,
        "hold at 3: ringside_unique_client_ips 83.33 per replica (target 100): \
         ceil(total / target) = 3; cpu 40% of request (target 80%): ceil(0.5 x 3) = 2"
    );
    assert_eq!(basis(&decisions[2]), Basis::WithinTolerance);
    let held = &decisions[rows.len() - 2];
    assert_eq!(
        held.reason,
        "hold at 3: cpu 5% of request (target 80%): ceil(0.06 x 3) = 1; \
         ringside_unique_client_ips 0 per replica (target 100): ceil(total / target) = 0; \
         stabilized from 1 to 3, the highest recommendation of the last 300 s"
    );
    assert_eq!(
        decisions.last().unwrap().reason,
        "scale down 3 -> 1: cpu 5% of request (target 80%): ceil(0.06 x 3) = 1; \
         ringside_unique_client_ips 0 per replica (target 100): ceil(total / target) = 0"
    );
}

#[test]
fn the_scale_decided_event_gets_the_value_per_replica_and_the_target() {
    let decision = Script::new(ringside(1, 10), 2).step(0, |n| ring(n, 500.0, 40.0));
    let (metric, proposal) = decision.governing().unwrap();
    assert_eq!(metric.name, shared::UNIQUE_CLIENT_IPS);
    assert_eq!(
        (proposal.value, metric.target.amount()),
        (250.0, f64::from(shared::UNIQUE_CLIENT_IPS_TARGET))
    );
}

#[test]
fn a_per_pod_average_of_the_nodes_counts_runs_away_and_the_rings_count_does_not() {
    // 250 clients, each reaching every node (random node picks, a Service spreading
    // connections): every node counts all 250, so the per-pod average stays 250 and
    // ceil(250 / 100 x n) grows with n, where the ring's count asks for ceil(250 / 100).
    let per_node = AutoscalerConfig::new(
        1,
        10,
        vec![MetricSpec::pods(shared::NODE_UNIQUE_CLIENT_IPS, 100.0)],
    );
    let every_node_sees_all = |n: u32| {
        (0..n).fold(nodes(n), |seen, i| {
            seen.pod_value(shared::NODE_UNIQUE_CLIENT_IPS, node(i), 250.0)
        })
    };
    let mut runaway = Script::new(per_node, 1);
    let mut ring_wide = Script::new(ringside(1, 10), 1);
    let (mut ran_away, mut held) = (Vec::new(), Vec::new());
    for t in [0, 15, 30, 45, 60] {
        ran_away.push(runaway.step(t, every_node_sees_all).desired_replicas);
        held.push(ring_wide.step(t, |n| ring(n, 250.0, 40.0)).desired_replicas);
    }
    // 1 -> ceil(2.5 x 1) = 3 -> ceil(2.5 x 3) = 8, 7 by the policy -> 18, 10 by the
    // maximum.
    assert_eq!(ran_away, [3, 7, 10, 10, 10]);
    assert_eq!(held, [3, 3, 3, 3, 3]);
}

#[test]
fn the_guide_shows_the_reasons_ringside_gets() {
    let docs = include_str!("../../docs/autoscaler.md");
    let one = |config: AutoscalerConfig, seen: Observation| {
        Script::new(config, seen.current_replicas)
            .step(0, |_| seen.clone())
            .reason
    };
    let mut cases: Vec<(String, &str)> = vec![
        (
            one(ringside(1, 10), {
                let seen = nodes(2).value(shared::UNIQUE_CLIENT_IPS, 500.0);
                seen.pod_value(shared::CPU, "node-0", 30.0)
                    .pod_value(shared::CPU, "node-1", 50.0)
            }),
            "scale up 2 -> 5: ringside_unique_client_ips 250 per replica (target 100): \
             ceil(total / target) = 5; cpu 40% of request (target 80%): ceil(0.5 x 2) = 1",
        ),
        (
            one(ringside(1, 10), ring(4, 600.0, 160.0)),
            "scale up 4 -> 8: cpu 160% of request (target 80%): ceil(2 x 4) = 8; \
             ringside_unique_client_ips 150 per replica (target 100): ceil(total / target) = 6",
        ),
        (
            one(ringside(1, 10), ring(3, 250.0, 40.0)),
            "hold at 3: ringside_unique_client_ips 83.33 per replica (target 100): \
             ceil(total / target) = 3; cpu 40% of request (target 80%): ceil(0.5 x 3) = 2",
        ),
        (
            one(ringside(1, 10), ring(3, 290.0, 80.0)),
            "hold at 3: ringside_unique_client_ips 96.67 per replica (target 100), ratio 0.97 \
             within tolerance: 3; cpu 80% of request (target 80%), ratio 1 within tolerance: 3",
        ),
        (
            one(ringside_no_down_window(2, 10), ring(5, 0.0, 0.0)),
            "scale down 5 -> 2: ringside_unique_client_ips 0 per replica (target 100): \
             ceil(total / target) = 0; cpu 0% of request (target 80%): ceil(0 x 5) = 0; \
             limited to 2 by the minimum replicas (2)",
        ),
        (
            one(ringside(1, 10), {
                let seen = nodes(4).value(shared::UNIQUE_CLIENT_IPS, 400.0);
                (0..3).fold(seen, |seen, i| seen.pod_value(shared::CPU, node(i), 112.0))
            }),
            "hold at 4: ringside_unique_client_ips 100 per replica (target 100), ratio 1 within \
             tolerance: 4; cpu 112% of request (target 80%), counting 1 without a value as 0, \
             ratio 1.05 within tolerance or reversed: 4",
        ),
        (
            one(
                ringside(1, 10),
                nodes(5).value(shared::UNIQUE_CLIENT_IPS, 10.0),
            ),
            "hold at 5: 1 of 2 metrics unavailable and the others propose fewer replicas, which \
             the HPA does not act on; cpu unavailable (no value was read); \
             ringside_unique_client_ips 2 per replica (target 100): ceil(total / target) = 1",
        ),
        (
            one(ringside(1, 10), nodes(3)),
            "hold at 3: no metric is available; ringside_unique_client_ips unavailable (no value \
             was read); cpu unavailable (no value was read)",
        ),
        (
            one(ringside(2, 5), ring(8, 1000.0, 80.0)),
            "scale down 8 -> 5: 8 is above the maximum of 5 replicas",
        ),
        (
            one(ringside(2, 5), ring(1, 0.0, 80.0)),
            "scale up 1 -> 2: 1 is below the minimum of 2 replicas",
        ),
        (
            one(ringside(1, 5), Observation::new(0)),
            "hold at 0: the workload runs no replica, autoscaling is off",
        ),
    ];

    // A burst: 1 -> 5 by the scale-up policy, then held there for its 15 s.
    let mut burst = Script::new(ringside(1, 10), 1);
    let first = burst.step(0, |n| ring(n, 50_000.0, 80.0));
    let then = burst.step(5, |n| ring(n, 50_000.0, 80.0));
    assert_eq!((first.desired_replicas, then.desired_replicas), (5, 5));
    cases.push((
        then.reason,
        "hold at 5: ringside_unique_client_ips 10000 per replica (target 100): \
         ceil(total / target) = 500; cpu 80% of request (target 80%), ratio 1 within \
         tolerance: 5; limited to 5 by the scale-up policy: the larger change of 100% per 15 s \
         or 4 pods per 15 s",
    ));

    // The scripted fall of the_replicas_follow_the_rings_clients.
    let mut fall = Script::new(ringside(1, 10), 3);
    let held = fall.step(0, |n| ring(n, 0.0, 5.0));
    cases.push((
        held.reason,
        "hold at 3: cpu 5% of request (target 80%): ceil(0.06 x 3) = 1; \
         ringside_unique_client_ips 0 per replica (target 100): ceil(total / target) = 0; \
         stabilized from 1 to 3, the highest recommendation of the last 300 s",
    ));

    for (reason, expected) in cases {
        assert_eq!(reason, expected);
        assert!(
            docs.contains(&format!("\n{reason}\n")),
            "docs/autoscaler.md must show, on a line of its own:\n{reason}"
        );
    }
}
