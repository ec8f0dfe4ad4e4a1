//! Properties of the algorithm over random configurations and metric series, with a
//! generic per-pod metric (`connections`) and CPU, or with ringside's own metrics
//! (`shared::metrics()`: the ring's distinct clients per replica, and CPU).

// A failed unwrap in a helper is a failed test, which is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use proptest::option;
use proptest::prelude::{ProptestConfig, prop_assert, prop_assert_eq, proptest};
use proptest::strategy::{Just, Strategy};
use ringside_autoscale::{
    Autoscaler, AutoscalerConfig, Behavior, MetricSpec, Observation, PodState, ScalingPolicy,
    SelectPolicy, shared,
};

const CONNS: &str = "connections";
const CPU: &str = shared::CPU;
/// The per-pod target of `connections`, and the per-replica one of the ring's clients.
const LOAD_TARGET: f64 = 100.0;
const CPU_TARGET: u32 = shared::CPU_TARGET_UTILIZATION;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

/// Connections per pod and CPU, or ringside's own metrics.
fn metrics() -> impl Strategy<Value = Vec<MetricSpec>> {
    proptest::prop_oneof![
        Just(vec![
            MetricSpec::pods(CONNS, LOAD_TARGET),
            MetricSpec::resource_utilization(CPU, CPU_TARGET),
        ]),
        Just(shared::metrics()),
    ]
}

/// The load metric alone: connections per pod, or the ring's clients per replica.
fn load_metric() -> impl Strategy<Value = MetricSpec> {
    proptest::prop_oneof![
        Just(MetricSpec::pods(CONNS, LOAD_TARGET)),
        Just(MetricSpec::external_average(
            shared::UNIQUE_CLIENT_IPS,
            f64::from(shared::UNIQUE_CLIENT_IPS_TARGET)
        )),
    ]
}

fn select() -> impl Strategy<Value = SelectPolicy> {
    proptest::prop_oneof![
        Just(SelectPolicy::Max),
        Just(SelectPolicy::Min),
        Just(SelectPolicy::Disabled)
    ]
}

fn policies() -> impl Strategy<Value = Vec<ScalingPolicy>> {
    proptest::collection::vec(
        (1..=200_u32, 1..=120_u32, proptest::bool::ANY).prop_map(|(value, period, pods)| {
            if pods {
                ScalingPolicy::pods(value.min(10), period)
            } else {
                ScalingPolicy::percent(value, period)
            }
        }),
        1..=3,
    )
}

/// Any valid behavior, short windows and periods so scripts cross them.
fn behavior() -> impl Strategy<Value = Behavior> {
    (
        0..=120_u32,
        0..=120_u32,
        select(),
        select(),
        policies(),
        policies(),
        0.0..0.3_f64,
        0.0..0.3_f64,
    )
        .prop_map(|(up_w, down_w, up_s, down_s, up_p, down_p, up_t, down_t)| {
            let mut behavior = Behavior::default();
            behavior.scale_up.stabilization_window_secs = up_w;
            behavior.scale_down.stabilization_window_secs = down_w;
            behavior.scale_up.select_policy = up_s;
            behavior.scale_down.select_policy = down_s;
            behavior.scale_up.policies = up_p;
            behavior.scale_down.policies = down_p;
            behavior.scale_up.tolerance = up_t;
            behavior.scale_down.tolerance = down_t;
            behavior
        })
}

/// Bounds (1 to 25), either set of metrics, and any behavior.
fn config() -> impl Strategy<Value = AutoscalerConfig> {
    (1..=5_u32, 0..=20_u32, metrics(), behavior()).prop_map(|(min, extra, metrics, behavior)| {
        AutoscalerConfig::new(min, min + extra, metrics).with_behavior(behavior)
    })
}

/// One evaluation's conditions: seconds since the last, the load per pod and each
/// pod's CPU (or nothing read), pods without a value, pods not ready, and replicas set
/// by someone else (else the last decision's).
#[derive(Clone, Debug)]
struct Step {
    after_secs: u64,
    load: Option<f64>,
    cpu: Option<f64>,
    missing: u32,
    unready: u32,
    replicas_override: Option<u32>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..=60_u64,
        option::of(0.0..2000.0_f64),
        option::of(0.0..400.0_f64),
        0..=2_u32,
        0..=2_u32,
        option::weighted(0.1, 0..=40_u32),
    )
        .prop_map(
            |(after_secs, load, cpu, missing, unready, replicas_override)| Step {
                after_secs,
                load,
                cpu,
                missing,
                unready,
                replicas_override,
            },
        )
}

/// What the pods of `replicas` report in `step`: the first `missing` ready pods have
/// no value, the last `unready` are not ready; the ring's distinct clients are the
/// load per pod times the replicas.
fn observe(replicas: u32, step: &Step) -> Observation {
    let mut seen = Observation::new(replicas);
    if let Some(load) = step.load {
        seen = seen.value(shared::UNIQUE_CLIENT_IPS, load * f64::from(replicas));
    }
    for i in 0..replicas {
        let pod = format!("node-{i}");
        let ready = i + step.unready.min(replicas) < replicas;
        let state = if ready {
            PodState::Ready
        } else {
            PodState::Unready
        };
        seen = seen.pod(pod.clone(), state);
        if i < step.missing {
            continue;
        }
        if let Some(load) = step.load {
            seen = seen.pod_value(CONNS, pod.clone(), load);
        }
        if let Some(cpu) = step.cpu {
            seen = seen.pod_value(CPU, pod, cpu);
        }
    }
    seen
}

/// Runs `steps` from `replicas`, applying each decision; returns (current, desired)
/// of each evaluation.
fn run(config: AutoscalerConfig, replicas: u32, steps: &[Step]) -> Vec<(u32, u32, String)> {
    let mut autoscaler = Autoscaler::new(config).unwrap();
    let (mut t, mut replicas) = (0, replicas);
    steps
        .iter()
        .map(|step| {
            t += step.after_secs;
            let current = step.replicas_override.unwrap_or(replicas);
            let decision = autoscaler.decide(at(t), &observe(current, step));
            replicas = decision.desired_replicas;
            (current, replicas, decision.reason)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn desired_replicas_stay_within_the_bounds(
        config in config(),
        start in 1..=30_u32,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let (min, max) = (config.min_replicas, config.max_replicas);
        for (current, desired, reason) in run(config, start, &steps) {
            if current == 0 {
                prop_assert_eq!(desired, 0, "{}", reason);
            } else {
                prop_assert!((min..=max).contains(&desired), "{} not in {}..={}: {}", desired, min, max, reason);
            }
        }
    }

    #[test]
    fn metrics_at_their_targets_change_nothing(
        config in config(),
        start in 0..=20_u32,
        steps in proptest::collection::vec((0..=60_u64, 0..=2_u32, 0..=2_u32), 1..40),
    ) {
        let replicas = config.min_replicas + start % (config.max_replicas - config.min_replicas + 1);
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|(after_secs, missing, unready)| Step {
                after_secs,
                load: Some(LOAD_TARGET),
                cpu: Some(f64::from(CPU_TARGET)),
                missing,
                unready,
                replicas_override: None,
            })
            .collect();
        for (current, desired, reason) in run(config, replicas, &steps) {
            prop_assert_eq!(current, replicas);
            prop_assert_eq!(desired, replicas, "{}", reason);
        }
    }

    #[test]
    fn the_default_behavior_never_scales_down_in_the_first_window(
        min in 1..=5_u32,
        extra in 0..=20_u32,
        metrics in metrics(),
        start in 0..=20_u32,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let config = AutoscalerConfig::new(min, min + extra, metrics);
        let replicas = min + start % (extra + 1);
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|step| Step { replicas_override: None, ..step })
            .collect();
        let mut t = 0;
        for (step, (_, desired, reason)) in steps.iter().zip(run(config, replicas, &steps)) {
            t += step.after_secs;
            if t < 300 {
                prop_assert!(desired >= replicas, "at {} s: {}", t, reason);
            }
        }
    }

    #[test]
    fn the_default_policies_at_most_double_or_add_four(
        metric in load_metric(),
        replicas in 1..=50_u32,
        per_pod in 0.0..100_000.0_f64,
    ) {
        let config = AutoscalerConfig::new(1, 1000, vec![metric]);
        let step = Step { after_secs: 0, load: Some(per_pod), cpu: None, missing: 0, unready: 0, replicas_override: None };
        let (_, desired, reason) = run(config, replicas, &[step]).remove(0);
        prop_assert!(desired <= (2 * replicas).max(replicas + 4), "{}", reason);
    }

    #[test]
    fn more_load_never_asks_for_fewer_replicas(
        metric in load_metric(),
        min in 1..=5_u32,
        extra in 0..=20_u32,
        replicas in 1..=25_u32,
        low in 0.0..1000.0_f64,
        more in 0.0..1000.0_f64,
    ) {
        let config = AutoscalerConfig::new(min, min + extra, vec![metric]);
        let desired = |per_pod: f64| {
            let step = Step { after_secs: 0, load: Some(per_pod), cpu: None, missing: 0, unready: 0, replicas_override: None };
            run(config.clone(), replicas, &[step]).remove(0).1
        };
        prop_assert!(desired(low) <= desired(low + more));
    }

    #[test]
    fn the_same_series_gives_the_same_decisions(
        config in config(),
        start in 1..=30_u32,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        // Decisions depend on their inputs and the times given only: a replay of the
        // stored observations decides as the live autoscaler did.
        prop_assert_eq!(run(config.clone(), start, &steps), run(config, start, &steps));
    }
}
