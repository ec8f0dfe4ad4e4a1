//! The HPA's documented behaviour, given/when/then: scripted metric series over time
//! (one evaluation per row, its decision applied before the next), and single
//! evaluations for the per-metric rules. The rules are those of kubernetes.io,
//! "Horizontal Pod Autoscaling", "Algorithm details", "Support for configurable scaling
//! behavior", and of the controller (`horizontal.go`, `replica_calculator.go`).
//!
//! The per-pod metric here is a generic one, `connections`; ringside's own metrics
//! (`shared::metrics()`) are scripted in `tests/ringside.rs`.

// A failed unwrap in a helper is a failed test, which is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use ringside_autoscale::{
    Autoscaler, AutoscalerConfig, Basis, Behavior, Decision, Direction, Limit, MetricError,
    MetricSpec, Observation, Outcome, PodState, ScalingPolicy, SelectPolicy,
};

const CONNS: &str = "connections";
const CPU: &str = "cpu";

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

/// Open connections per pod, target 100, between `min` and `max` replicas, HPA defaults.
fn conns(min: u32, max: u32) -> AutoscalerConfig {
    AutoscalerConfig::new(min, max, vec![MetricSpec::pods(CONNS, 100.0)])
}

/// The same with connections and CPU (80 %).
fn conns_and_cpu(min: u32, max: u32) -> AutoscalerConfig {
    AutoscalerConfig::new(
        min,
        max,
        vec![
            MetricSpec::pods(CONNS, 100.0),
            MetricSpec::resource_utilization(CPU, 80),
        ],
    )
}

fn no_down_window(config: AutoscalerConfig) -> AutoscalerConfig {
    let mut behavior = config.behavior.clone();
    behavior.scale_down.stabilization_window_secs = 0;
    config.with_behavior(behavior)
}

/// `replicas` ready pods `node-0`, `node-1`, ... reporting `values` (metric, value per
/// pod) each.
fn pods(replicas: u32, values: &[(&str, f64)]) -> Observation {
    let mut seen = Observation::new(replicas);
    for i in 0..replicas {
        let pod = format!("node-{i}");
        seen = seen.pod(pod.clone(), PodState::Ready);
        for (metric, value) in values {
            seen = seen.pod_value(*metric, pod.clone(), *value);
        }
    }
    seen
}

/// An autoscaler and the replicas it runs.
struct Given {
    autoscaler: Autoscaler,
    replicas: u32,
}

fn given(config: AutoscalerConfig) -> Given {
    let replicas = config.min_replicas;
    Given {
        autoscaler: Autoscaler::new(config).unwrap(),
        replicas,
    }
}

/// The decisions of a script, in order.
struct Then {
    decisions: Vec<Decision>,
}

impl Given {
    fn replicas(self, replicas: u32) -> Self {
        Self { replicas, ..self }
    }

    /// Every pod has `per_pod` connections at each `(second, per_pod)`.
    fn when_conns(self, series: &[(u64, f64)]) -> Then {
        let steps: Vec<_> = series
            .iter()
            .map(|&(t, value)| (t, vec![(CONNS, value)]))
            .collect();
        self.when_values(&steps)
    }

    /// Every pod reports the values of its row, at the row's second.
    fn when_values(mut self, series: &[(u64, Vec<(&str, f64)>)]) -> Then {
        let decisions = series
            .iter()
            .map(|(t, values)| {
                let seen = pods(self.replicas, values);
                self.evaluate(*t, &seen)
            })
            .collect();
        Then { decisions }
    }

    /// One evaluation of `seen` (its replicas are the current ones).
    fn when_seen(mut self, seen: Observation) -> Decision {
        self.replicas = seen.current_replicas;
        self.evaluate(0, &seen)
    }

    fn evaluate(&mut self, t: u64, seen: &Observation) -> Decision {
        assert_eq!(
            seen.current_replicas, self.replicas,
            "the script's replicas"
        );
        let decision = self.autoscaler.decide(at(t), seen);
        self.replicas = decision.desired_replicas;
        decision
    }
}

impl Then {
    /// The replicas after each row.
    fn replicas(&self, expected: &[u32]) -> &Self {
        let replicas: Vec<u32> = self.decisions.iter().map(|d| d.desired_replicas).collect();
        assert_eq!(replicas, expected, "{:#?}", self.reasons());
        self
    }

    fn reasons(&self) -> Vec<&str> {
        self.decisions.iter().map(|d| d.reason.as_str()).collect()
    }

    fn decision(&self, row: usize) -> &Decision {
        &self.decisions[row]
    }
}

fn limit(decision: &Decision) -> Option<Limit> {
    match decision.outcome {
        Outcome::Scaled { limit, .. } => limit,
        _ => None,
    }
}

// Scripts over time.

#[test]
fn a_burst_scales_up_at_once_as_far_as_the_policy_allows() {
    let then = given(conns(1, 10)).replicas(2).when_conns(&[
        (0, 100.0),  // at target
        (15, 300.0), // ceil(3 x 2) = 6: the policy allows max(2 x 2, 2 + 4) = 6
        (30, 300.0), // ceil(3 x 6) = 18: the policy allows 12, the maximum 10
        (45, 300.0), // at the maximum
    ]);
    then.replicas(&[2, 6, 10, 10]);
    assert_eq!(
        then.decision(1).reason,
        "scale up 2 -> 6: connections 300 per pod (target 100): ceil(3 x 2) = 6"
    );
    assert_eq!(limit(then.decision(2)), Some(Limit::MaxReplicas));
    assert_eq!(
        then.decision(2).reason,
        "scale up 6 -> 10: connections 300 per pod (target 100): ceil(3 x 6) = 18; \
         limited to 10 by the maximum replicas (10)"
    );
}

#[test]
fn within_the_tolerance_nothing_changes() {
    // |ratio - 1| <= 0.1 holds; 1.11 and 0.89 do not.
    let then = given(no_down_window(conns(1, 10)))
        .replicas(4)
        .when_conns(&[
            (0, 100.0),
            (15, 110.0),
            (30, 90.0),
            (45, 111.0), // ceil(1.11 x 4) = 5
            (60, 89.0),  // ceil(0.89 x 5) = 5: a ratio outside tolerance may still keep the count
            (75, 70.0),  // ceil(0.7 x 5) = 4
        ]);
    then.replicas(&[4, 4, 4, 5, 5, 4]);
    assert_eq!(
        then.decision(1).reason,
        "hold at 4: connections 110 per pod (target 100), ratio 1.1 within tolerance: 4"
    );
    assert_eq!(
        then.decision(1).metrics[0].result.as_ref().unwrap().basis,
        Basis::WithinTolerance
    );
}

#[test]
fn the_tolerance_is_configurable_per_direction() {
    let mut behavior = Behavior::default();
    behavior.scale_up.tolerance = 0.0;
    behavior.scale_down.tolerance = 0.3;
    behavior.scale_down.stabilization_window_secs = 0;
    let then = given(conns(1, 10).with_behavior(behavior))
        .replicas(4)
        .when_conns(&[(0, 101.0), (15, 75.0), (30, 69.0)]);
    // 101: ceil(1.01 x 4) = 5. 75 x 5 pods: within 30 %. 69: ceil(0.69 x 5) = 4.
    then.replicas(&[5, 5, 4]);
}

#[test]
fn a_scale_down_waits_for_the_window_of_higher_recommendations() {
    // Load falls at 75 s; the recommendations of 4 made until 60 s hold the replicas
    // for the 300 s of the scale-down window.
    let mut series = vec![
        (0, 100.0),
        (15, 100.0),
        (30, 100.0),
        (45, 100.0),
        (60, 100.0),
    ];
    series.extend((75..=375).step_by(15).map(|t| (t, 50.0)));
    let then = given(conns(1, 10)).replicas(4).when_conns(&series);
    let mut expected = vec![4; series.len()];
    let at_360 = series.iter().position(|&(t, _)| t == 360).unwrap();
    expected[at_360] = 2;
    expected[at_360 + 1] = 2;
    then.replicas(&expected);
    let held = then.decision(at_360 - 1);
    assert_eq!(
        held.outcome,
        Outcome::Scaled {
            governing: 0,
            proposal: 2,
            stabilized: 4,
            limit: None
        }
    );
    assert_eq!(
        held.reason,
        "hold at 4: connections 50 per pod (target 100): ceil(0.5 x 4) = 2; \
         stabilized from 2 to 4, the highest recommendation of the last 300 s"
    );
    assert_eq!(
        then.decision(at_360).reason,
        "scale down 4 -> 2: connections 50 per pod (target 100): ceil(0.5 x 4) = 2"
    );
}

#[test]
fn a_started_autoscaler_does_not_scale_down_for_a_window() {
    // The first evaluation records the replicas found as a recommendation, as the HPA
    // controller does (a restart must not shrink the workload at once).
    let series: Vec<_> = (0..=300).step_by(15).map(|t| (t, 10.0)).collect();
    let then = given(conns(1, 10)).replicas(6).when_conns(&series);
    let mut expected = vec![6; series.len()];
    *expected.last_mut().unwrap() = 1;
    then.replicas(&expected);
}

#[test]
fn a_scale_up_window_waits_for_the_load_to_last() {
    let mut behavior = Behavior::default();
    behavior.scale_up.stabilization_window_secs = 60;
    let then = given(conns(1, 10).with_behavior(behavior))
        .replicas(2)
        .when_conns(&[
            (0, 100.0),
            (15, 200.0),
            (30, 200.0),
            (45, 200.0),
            (60, 200.0),
            (75, 200.0),
        ]);
    // The recommendation of 2 made at 0 s keeps the lowest at 2 until 60 s.
    then.replicas(&[2, 2, 2, 2, 4, 4]);
    assert!(
        then.decision(3)
            .reason
            .ends_with("stabilized from 4 to 2, the lowest recommendation of the last 60 s"),
        "{}",
        then.decision(3).reason
    );
}

#[test]
fn replicas_stay_within_min_and_max() {
    let then = given(no_down_window(conns(2, 5))).replicas(3).when_conns(&[
        (0, 1000.0),
        (15, 0.0),
        (30, 0.0),
    ]);
    then.replicas(&[5, 2, 2]);
    assert_eq!(limit(then.decision(0)), Some(Limit::MaxReplicas));
    assert_eq!(limit(then.decision(1)), Some(Limit::MinReplicas));
    assert_eq!(
        then.decision(1).reason,
        "scale down 5 -> 2: connections 0 per pod (target 100): ceil(0 x 5) = 0; \
         limited to 2 by the minimum replicas (2)"
    );
}

#[test]
fn replicas_outside_the_bounds_go_straight_to_them() {
    let above = given(conns(2, 5)).when_seen(pods(8, &[(CONNS, 1000.0)]));
    assert_eq!(
        (above.desired_replicas, above.outcome),
        (5, Outcome::AboveMax)
    );
    assert_eq!(
        above.reason,
        "scale down 8 -> 5: 8 is above the maximum of 5 replicas"
    );
    assert!(above.metrics.is_empty());

    let below = given(conns(2, 5)).when_seen(pods(1, &[(CONNS, 0.0)]));
    assert_eq!(
        (below.desired_replicas, below.outcome),
        (2, Outcome::BelowMin)
    );
    assert_eq!(
        below.reason,
        "scale up 1 -> 2: 1 is below the minimum of 2 replicas"
    );
}

#[test]
fn a_workload_scaled_to_zero_is_left_alone() {
    let decision = given(conns(1, 5)).when_seen(Observation::new(0).value(CONNS, 1000.0));
    assert_eq!(decision.desired_replicas, 0);
    assert_eq!(decision.outcome, Outcome::ScalingDisabled);
    assert_eq!(
        decision.reason,
        "hold at 0: the workload runs no replica, autoscaling is off"
    );
}

#[test]
fn the_largest_proposal_of_two_metrics_wins() {
    let then = given(no_down_window(conns_and_cpu(1, 20)))
        .replicas(4)
        .when_values(&[
            // Connections: ceil(1.5 x 4) = 6; CPU: ceil(2 x 4) = 8.
            (0, vec![(CONNS, 150.0), (CPU, 160.0)]),
            // Connections: ceil(2 x 8) = 16; CPU: 40 / 80: ceil(0.5 x 8) = 4.
            (15, vec![(CONNS, 200.0), (CPU, 40.0)]),
            // Both low: the larger, ceil(0.5 x 16) = 8 from connections.
            (30, vec![(CONNS, 50.0), (CPU, 20.0)]),
        ]);
    then.replicas(&[8, 16, 8]);
    let governing = |row: usize| then.decision(row).governing().unwrap().0.name.clone();
    assert_eq!(
        [governing(0), governing(1), governing(2)],
        [CPU, CONNS, CONNS]
    );
    assert_eq!(
        then.decision(0).reason,
        "scale up 4 -> 8: cpu 160% of request (target 80%): ceil(2 x 4) = 8; \
         connections 150 per pod (target 100): ceil(1.5 x 4) = 6"
    );
}

#[test]
fn equal_proposals_are_governed_by_the_first_metric() {
    let decision = given(conns_and_cpu(1, 20)).when_seen(pods(2, &[(CONNS, 200.0), (CPU, 160.0)]));
    assert_eq!(decision.desired_replicas, 4);
    assert_eq!(decision.governing().unwrap().0.name, CONNS);
}

// Metrics that cannot be read.

#[test]
fn an_unreadable_metric_does_not_stop_a_scale_up() {
    let decision = given(conns_and_cpu(1, 10)).when_seen(pods(2, &[(CONNS, 300.0)]));
    assert_eq!(decision.desired_replicas, 6);
    assert_eq!(decision.metrics[1].result, Err(MetricError::NotRead));
    assert_eq!(
        decision.reason,
        "scale up 2 -> 6: connections 300 per pod (target 100): ceil(3 x 2) = 6; \
         cpu unavailable (no value was read)"
    );
}

#[test]
fn an_unreadable_metric_blocks_a_scale_down_however_long() {
    let series: Vec<_> = (0..=600)
        .step_by(15)
        .map(|t| (t, vec![(CONNS, 10.0)]))
        .collect();
    let then = given(conns_and_cpu(1, 10)).replicas(5).when_values(&series);
    then.replicas(&vec![5; series.len()]);
    let last = then.decisions.last().unwrap();
    assert_eq!(last.outcome, Outcome::MetricsUnavailable);
    assert_eq!(
        last.reason,
        "hold at 5: 1 of 2 metrics unavailable and the others propose fewer replicas, which the \
         HPA does not act on; cpu unavailable (no value was read); \
         connections 10 per pod (target 100): ceil(0.1 x 5) = 1"
    );
}

#[test]
fn an_unreadable_metric_lets_the_others_hold() {
    let decision = given(conns_and_cpu(1, 10)).when_seen(pods(3, &[(CPU, 80.0)]));
    assert_eq!(decision.desired_replicas, 3);
    assert!(matches!(
        decision.outcome,
        Outcome::Scaled { governing: 1, .. }
    ));
}

#[test]
fn without_any_metric_nothing_changes() {
    let decision = given(conns_and_cpu(1, 10)).when_seen(pods(3, &[]));
    assert_eq!(decision.desired_replicas, 3);
    assert_eq!(decision.outcome, Outcome::MetricsUnavailable);
    assert_eq!(
        decision.reason,
        "hold at 3: no metric is available; connections unavailable (no value was \
         read); cpu unavailable (no value was read)"
    );
}

#[test]
fn values_of_unready_pods_only_or_of_no_pod_are_no_metric() {
    let unready = Observation::new(2)
        .pod("node-0", PodState::Unready)
        .pod("node-1", PodState::Unready)
        .pod_value(CONNS, "node-0", 500.0);
    let decision = given(conns(1, 10)).when_seen(unready);
    assert_eq!(
        decision.metrics[0].result,
        Err(MetricError::NoReadyPodValues)
    );
    assert_eq!(decision.desired_replicas, 2);

    let no_pods = Observation::new(2).pod_value(CONNS, "node-0", 500.0);
    let decision = given(conns(1, 10)).when_seen(no_pods);
    assert_eq!(decision.metrics[0].result, Err(MetricError::NoPods));
    assert_eq!(decision.desired_replicas, 2);
}

#[test]
fn unusable_values_count_as_missing_and_strangers_are_ignored() {
    let seen = pods(2, &[(CONNS, 300.0)])
        .pod_value(CONNS, "node-1", f64::NAN)
        .pod_value(CONNS, "stranger", 10_000.0);
    let decision = given(conns(1, 10)).when_seen(seen);
    // node-0 alone: 300; node-1 has no usable value, counted as 0 on a scale-up:
    // ratio 1.5, ceil(1.5 x 2) = 3.
    let proposal = decision.metrics[0].result.clone().unwrap();
    assert_eq!(proposal.value, 300.0);
    assert_eq!(decision.desired_replicas, 3);
}

// Pods without a value, or not ready (the conservative recount).

fn four_pods(values: [Option<f64>; 4], states: [PodState; 4]) -> Observation {
    let mut seen = Observation::new(4);
    for (i, (value, state)) in values.into_iter().zip(states).enumerate() {
        let pod = format!("node-{i}");
        seen = seen.pod(pod.clone(), state);
        if let Some(value) = value {
            seen = seen.pod_value(CONNS, pod, value);
        }
    }
    seen
}

const READY: [PodState; 4] = [PodState::Ready; 4];

#[test]
fn on_a_scale_up_a_pod_without_a_value_counts_as_zero() {
    // 3 pods at 140 would ask ceil(1.4 x 3) = 5; with the fourth at 0 the ratio is
    // 420 / 4 / 100 = 1.05, within tolerance: no change.
    let seen = four_pods([Some(140.0), Some(140.0), Some(140.0), None], READY);
    let decision = given(conns(1, 10)).when_seen(seen);
    assert_eq!(decision.desired_replicas, 4);
    assert_eq!(
        decision.metrics[0].result.as_ref().unwrap().basis,
        Basis::ConservativeHold {
            missing: 1,
            missing_as: 0.0,
            unready: 0,
            ratio: 1.05
        }
    );
    assert_eq!(
        decision.reason,
        "hold at 4: connections 140 per pod (target 100), counting 1 without a \
         value as 0, ratio 1.05 within tolerance or reversed: 4"
    );

    // Further out it still scales up, counting all four pods.
    let seen = four_pods([Some(200.0), Some(200.0), Some(200.0), None], READY);
    let decision = given(conns(1, 10)).when_seen(seen);
    assert_eq!(decision.desired_replicas, 6);
    assert_eq!(
        decision.reason,
        "scale up 4 -> 6: connections 200 per pod (target 100), counting 1 without \
         a value as 0, ratio 1.5: ceil(1.5 x 4) = 6"
    );
}

#[test]
fn on_a_scale_down_a_pod_without_a_value_counts_as_the_target() {
    // 3 pods at 50 would ask ceil(0.5 x 3) = 2; with the fourth at 100 the ratio is
    // 250 / 4 / 100 = 0.625: ceil(0.625 x 4) = 3.
    let seen = four_pods([Some(50.0), Some(50.0), Some(50.0), None], READY);
    let decision = given(no_down_window(conns(1, 10))).when_seen(seen);
    assert_eq!(decision.desired_replicas, 3);
    assert_eq!(
        decision.reason,
        "scale down 4 -> 3: connections 50 per pod (target 100), counting 1 \
         without a value as 100, ratio 0.62: ceil(0.62 x 4) = 3"
    );
}

#[test]
fn for_a_utilization_a_pod_without_a_value_counts_as_its_whole_request() {
    // CPU at 40 % of request, target 80 %: the missing pod counts as 100 %, not 80 %:
    // (40 + 40 + 40 + 100) / 4 = 55 %, ratio 0.6875: ceil(2.75) = 3.
    let mut seen = Observation::new(4);
    for i in 0..4 {
        seen = seen.pod(format!("node-{i}"), PodState::Ready);
    }
    for i in 0..3 {
        seen = seen.pod_value(CPU, format!("node-{i}"), 40.0);
    }
    let config = AutoscalerConfig::new(1, 10, vec![MetricSpec::resource_utilization(CPU, 80)]);
    let decision = given(no_down_window(config)).when_seen(seen);
    assert_eq!(decision.desired_replicas, 3);
    let Basis::Conservative { missing_as, .. } = decision.metrics[0].result.as_ref().unwrap().basis
    else {
        panic!("{}", decision.reason);
    };
    assert_eq!(missing_as, 100.0);
}

#[test]
fn a_recount_that_reverses_the_direction_changes_nothing() {
    // 3 pods at 80 ask for fewer (ratio 0.8); with 1 missing at 100 % of a 50 % target
    // under a utilization the recount points up: no change.
    let mut seen = Observation::new(4);
    for i in 0..4 {
        seen = seen.pod(format!("node-{i}"), PodState::Ready);
    }
    for i in 0..3 {
        seen = seen.pod_value(CPU, format!("node-{i}"), 20.0);
    }
    let config = AutoscalerConfig::new(1, 10, vec![MetricSpec::resource_utilization(CPU, 25)]);
    // Ratio 0.8; recount (60 + 100) / 4 = 40 %, ratio 1.6: reversed.
    let decision = given(no_down_window(config)).when_seen(seen);
    assert_eq!(decision.desired_replicas, 4);
    assert!(matches!(
        decision.metrics[0].result.as_ref().unwrap().basis,
        Basis::ConservativeHold { missing: 1, .. }
    ));
}

#[test]
fn on_a_scale_up_unready_pods_count_as_zero() {
    // 3 ready pods at 140 and one starting: ratio 1.4, recount 420 / 4 = 1.05: no
    // change, where the ready pods alone would ask for 5.
    let states = [
        PodState::Ready,
        PodState::Ready,
        PodState::Ready,
        PodState::Unready,
    ];
    let seen = four_pods([Some(140.0), Some(140.0), Some(140.0), Some(900.0)], states);
    let decision = given(conns(1, 10)).when_seen(seen);
    assert_eq!(decision.desired_replicas, 4);
    assert!(
        decision
            .reason
            .contains("counting 1 unready as 0, ratio 1.05")
    );
}

#[test]
fn on_a_scale_down_unready_pods_are_left_out() {
    // 2 ready pods at 50: ceil(0.5 x 2) = 1, the unready ones not counted.
    let states = [
        PodState::Ready,
        PodState::Ready,
        PodState::Unready,
        PodState::Unready,
    ];
    let seen = four_pods([Some(50.0), Some(50.0), None, None], states);
    let decision = given(no_down_window(conns(1, 10))).when_seen(seen);
    assert_eq!(decision.desired_replicas, 1);
    assert_eq!(
        decision.metrics[0].result.as_ref().unwrap().basis,
        Basis::Ratio { pods: 2 }
    );
}

#[test]
fn on_a_scale_down_unready_pods_stay_out_of_the_recount() {
    // 3 ready pods at 88, one without a value (counted as 100), one starting: the
    // recount (264 + 100) / 4 = 91 is within tolerance. Counting the starting pod as 0
    // would make it 364 / 5 = 72.8, and a scale-down.
    let mut seen = Observation::new(5)
        .pod("node-3", PodState::Ready)
        .pod("node-4", PodState::Unready);
    for i in 0..3 {
        let pod = format!("node-{i}");
        seen = seen
            .pod(pod.clone(), PodState::Ready)
            .pod_value(CONNS, pod, 88.0);
    }
    let decision = given(no_down_window(conns(1, 10))).when_seen(seen);
    assert_eq!(decision.desired_replicas, 5, "{}", decision.reason);
    assert!(
        decision
            .reason
            .contains("counting 1 without a value as 100, ratio 0.91")
    );
}

// Policies.

#[test]
fn the_default_scale_up_policy_doubles_or_adds_four_every_15_seconds() {
    let then = given(conns(1, 100)).replicas(1).when_conns(&[
        (0, 10_000.0),
        (5, 10_000.0),
        (10, 10_000.0),
        (15, 10_000.0),
        (30, 10_000.0),
    ]);
    // 1 -> max(2, 5); within 15 s of that change nothing more; then 5 -> max(10, 9);
    // then 10 -> max(20, 14).
    then.replicas(&[5, 5, 5, 10, 20]);
    assert_eq!(limit(then.decision(1)), Some(Limit::Policy(Direction::Up)));
    assert_eq!(
        then.decision(1).reason,
        "hold at 5: connections 10000 per pod (target 100): ceil(100 x 5) = 500; \
         limited to 5 by the scale-up policy: the larger change of 100% per 15 s or 4 pods per 15 s"
    );
}

#[test]
fn the_min_select_policy_takes_the_smaller_change() {
    let mut behavior = Behavior::default();
    behavior.scale_up.select_policy = SelectPolicy::Min;
    let then = given(conns(1, 100).with_behavior(behavior))
        .replicas(10)
        .when_conns(&[(0, 10_000.0)]);
    // min(10 x 2, 10 + 4).
    then.replicas(&[14]);
}

#[test]
fn a_slow_scale_down_policy_removes_one_pod_a_minute() {
    let mut behavior = Behavior::default();
    behavior.scale_down.stabilization_window_secs = 0;
    behavior.scale_down.policies = vec![ScalingPolicy::pods(1, 60)];
    let then = given(conns(1, 10).with_behavior(behavior))
        .replicas(5)
        .when_conns(&[(0, 0.0), (15, 0.0), (59, 0.0), (60, 0.0), (120, 0.0)]);
    then.replicas(&[4, 4, 4, 3, 2]);
    assert!(
        then.decision(1).reason.ends_with(
            "limited to 4 by the scale-down policy: the larger change of 1 pod per 60 s"
        ),
        "{}",
        then.decision(1).reason
    );
}

#[test]
fn a_percent_scale_down_policy_truncates() {
    let mut behavior = Behavior::default();
    behavior.scale_down.stabilization_window_secs = 0;
    behavior.scale_down.policies = vec![ScalingPolicy::percent(50, 60)];
    let then = given(conns(1, 10).with_behavior(behavior))
        .replicas(5)
        .when_conns(&[(0, 0.0), (60, 0.0), (120, 0.0)]);
    // 5 x 0.5 = 2.5 -> 2; 2 x 0.5 = 1.
    then.replicas(&[2, 1, 1]);
}

#[test]
fn a_disabled_direction_never_moves() {
    let mut behavior = Behavior::default();
    behavior.scale_down.select_policy = SelectPolicy::Disabled;
    behavior.scale_down.stabilization_window_secs = 0;
    let series: Vec<_> = (0..10).map(|i| (i * 60, 0.0)).collect();
    let then = given(conns(1, 10).with_behavior(behavior))
        .replicas(6)
        .when_conns(&series);
    then.replicas(&[6; 10]);
    assert!(
        then.decisions[9]
            .reason
            .ends_with("limited to 6 by the scale-down policy: scale-down is disabled"),
        "{}",
        then.decisions[9].reason
    );
    // Up still works.
    let then = given(conns(1, 10)).replicas(6).when_conns(&[(0, 200.0)]);
    then.replicas(&[10]);
}

#[test]
fn a_scale_down_in_the_period_makes_room_for_a_scale_up() {
    // The policies count from the replicas at the start of their period: after 8 -> 4
    // the scale-up policy starts from 8 (= 4 + 4 removed): max(16, 12), bounded by 10.
    let mut behavior = Behavior::default();
    behavior.scale_down.stabilization_window_secs = 0;
    let then = given(conns(1, 10).with_behavior(behavior))
        .replicas(8)
        .when_conns(&[(0, 50.0), (5, 1000.0)]);
    then.replicas(&[4, 10]);
    assert_eq!(limit(then.decision(1)), Some(Limit::MaxReplicas));
}

#[test]
fn a_policy_never_turns_a_scale_up_into_a_scale_down() {
    // Brought to the minimum of 5 from 1 (4 added, past the policies), a policy of 1 pod
    // a minute allows 1 + 1 = 2 for the rest of the minute: the replicas stay at 5.
    let mut behavior = Behavior::default();
    behavior.scale_up.policies = vec![ScalingPolicy::pods(1, 60)];
    let config = conns(5, 10).with_behavior(behavior);
    let mut given = given(config).replicas(1);
    let below = given.evaluate(0, &pods(1, &[(CONNS, 100.0)]));
    assert_eq!(below.desired_replicas, 5);
    let then = given.when_conns(&[(10, 1000.0), (60, 1000.0)]);
    then.replicas(&[5, 6]);
    assert_eq!(limit(then.decision(0)), Some(Limit::Policy(Direction::Up)));
}

#[test]
fn a_policy_never_turns_a_scale_down_into_a_scale_up() {
    // Brought to the maximum of 5 from 8 (3 removed, past the policies), a policy of 1
    // pod a minute allows 8 - 1 = 7 for the rest of the minute: the replicas stay at 5.
    let mut behavior = Behavior::default();
    behavior.scale_down.stabilization_window_secs = 0;
    behavior.scale_down.policies = vec![ScalingPolicy::pods(1, 60)];
    let config = conns(1, 5).with_behavior(behavior);
    let mut given = given(config).replicas(8);
    let above = given.evaluate(0, &pods(8, &[(CONNS, 100.0)]));
    assert_eq!(above.desired_replicas, 5);
    let then = given.when_conns(&[(10, 10.0), (60, 10.0)]);
    then.replicas(&[5, 4]);
    assert_eq!(
        limit(then.decision(0)),
        Some(Limit::Policy(Direction::Down))
    );
}

// External metrics.

#[test]
fn an_external_value_scales_the_ready_pods_by_its_ratio() {
    let config = AutoscalerConfig::new(1, 20, vec![MetricSpec::external_value("queue", 30.0)]);
    let seen = pods(2, &[]).value("queue", 60.0);
    let decision = given(config).when_seen(seen);
    assert_eq!(decision.desired_replicas, 4);
    assert_eq!(
        decision.reason,
        "scale up 2 -> 4: queue 60 (target 30): ceil(2 x 2) = 4"
    );
}

#[test]
fn an_external_value_counts_only_ready_pods_and_needs_some() {
    let config = AutoscalerConfig::new(1, 20, vec![MetricSpec::external_value("queue", 30.0)]);
    // Ratio 2 over 2 ready pods of 3: ceil(2 x 2) = 4.
    let seen = pods(2, &[])
        .pod("node-2", PodState::Unready)
        .value("queue", 60.0);
    let seen = Observation {
        current_replicas: 3,
        ..seen
    };
    let decision = given(config.clone()).when_seen(seen);
    assert_eq!(decision.desired_replicas, 4, "{}", decision.reason);

    let decision = given(config).when_seen(Observation::new(3).value("queue", 60.0));
    assert_eq!(decision.metrics[0].result, Err(MetricError::NoPods));
    assert_eq!(decision.desired_replicas, 3);
}

#[test]
fn an_external_average_divides_by_the_target() {
    let config = AutoscalerConfig::new(1, 20, vec![MetricSpec::external_average("rps", 50.0)]);
    let decision = given(config.clone()).when_seen(pods(2, &[]).value("rps", 500.0));
    // ceil(500 / 50), whatever the replicas.
    assert_eq!(decision.desired_replicas, 6);
    assert_eq!(
        decision.reason,
        "scale up 2 -> 6: rps 250 per replica (target 50): ceil(total / target) = 10; \
         limited to 6 by the scale-up policy: the larger change of 100% per 15 s or 4 pods per 15 s"
    );
    let decision = given(config).when_seen(pods(4, &[]).value("rps", 210.0));
    assert_eq!(decision.desired_replicas, 4, "{}", decision.reason);
    assert_eq!(
        decision.metrics[0].result.as_ref().unwrap().basis,
        Basis::WithinTolerance
    );
}

#[test]
fn external_metrics_within_tolerance_change_nothing() {
    let config = AutoscalerConfig::new(1, 20, vec![MetricSpec::external_value("queue", 100.0)]);
    let decision = given(config).when_seen(pods(4, &[]).value("queue", 105.0));
    // Not ceil(1.05 x 4) = 5.
    assert_eq!(decision.desired_replicas, 4, "{}", decision.reason);
}

#[test]
fn with_no_pod_running_an_external_average_asks_for_total_over_target() {
    // The HPA divides by the pods running: with none, no ratio, so no tolerance.
    let config = AutoscalerConfig::new(1, 20, vec![MetricSpec::external_average("rps", 50.0)]);
    let decision = given(config).when_seen(Observation::new(1).value("rps", 52.5));
    // ceil(52.5 / 50).
    assert_eq!(decision.desired_replicas, 2, "{}", decision.reason);
}

// Time.

#[test]
fn a_clock_set_back_keeps_recent_recommendations() {
    let mut autoscaler = Autoscaler::new(conns(1, 10)).unwrap();
    let high = autoscaler.decide(at(1_000), &pods(4, &[(CONNS, 100.0)]));
    assert_eq!(high.desired_replicas, 4);
    // Earlier than the last recommendation: that one counts as just made.
    let low = autoscaler.decide(at(10), &pods(4, &[(CONNS, 10.0)]));
    assert_eq!(low.desired_replicas, 4);
}

#[test]
fn a_recount_over_fewer_pods_than_replicas_never_scales_the_other_way() {
    // 10 replicas asked for, 4 pods so far: 3 at 200 and one without a value. The
    // recount asks for ceil(1.5 x 4) = 6 with a ratio above 1: no change, not a
    // scale-down.
    let mut seen = Observation::new(10);
    for i in 0..4 {
        seen = seen.pod(format!("node-{i}"), PodState::Ready);
    }
    for i in 0..3 {
        seen = seen.pod_value(CONNS, format!("node-{i}"), 200.0);
    }
    let decision = given(no_down_window(conns(1, 10))).when_seen(seen);
    assert_eq!(decision.desired_replicas, 10, "{}", decision.reason);
}

#[test]
fn a_policy_limit_equal_to_a_bound_is_reported_as_the_bound() {
    // From 5 the scale-up policy allows max(10, 9) = 10, which is also the maximum.
    let decision = given(conns(1, 10)).when_seen(pods(5, &[(CONNS, 1000.0)]));
    assert_eq!(decision.desired_replicas, 10);
    assert_eq!(limit(&decision), Some(Limit::MaxReplicas));

    // From 4 a policy of 2 pods allows 2, which is also the minimum.
    let mut behavior = Behavior::default();
    behavior.scale_down.stabilization_window_secs = 0;
    behavior.scale_down.policies = vec![ScalingPolicy::pods(2, 60)];
    let decision = given(conns(2, 10).with_behavior(behavior)).when_seen(pods(4, &[(CONNS, 0.0)]));
    assert_eq!(decision.desired_replicas, 2);
    assert_eq!(limit(&decision), Some(Limit::MinReplicas));
}

#[test]
fn an_external_average_within_tolerance_keeps_the_pods_that_run() {
    // 5 replicas asked for, 4 running: 210 / 4 = 52.5 per replica is within 10 % of 50,
    // and the HPA then proposes the 4 running, not the 5 asked for.
    let config = AutoscalerConfig::new(1, 20, vec![MetricSpec::external_average("rps", 50.0)]);
    let mut seen = Observation::new(5).value("rps", 210.0);
    for i in 0..4 {
        seen = seen.pod(format!("node-{i}"), PodState::Ready);
    }
    let decision = given(no_down_window(config)).when_seen(seen);
    assert_eq!(decision.desired_replicas, 4, "{}", decision.reason);
}
