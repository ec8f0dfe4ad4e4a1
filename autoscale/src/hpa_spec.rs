//! A configuration as the `spec` of an `autoscaling/v2` HorizontalPodAutoscaler (all
//! but `scaleTargetRef`), so that the HPA in Kubernetes runs exactly what the local
//! autoscaler runs: the same bounds, metrics and behavior, written out in full rather
//! than left to the API server's defaults.

use serde_json::{Value, json};

use crate::config::{
    AutoscalerConfig, DEFAULT_TOLERANCE, PolicyKind, ScalingRules, SelectPolicy, Source, Target,
};

impl AutoscalerConfig {
    /// The HPA's `spec` without `scaleTargetRef` (JSON, which is YAML). A tolerance
    /// other than 10 % is written as `behavior.*.tolerance`, which needs Kubernetes
    /// 1.33 with the `HPAConfigurableTolerance` feature gate.
    pub fn hpa_spec(&self) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|metric| {
                let target = target(metric.target);
                match metric.source {
                    Source::Pods => json!({
                        "type": "Pods",
                        "pods": {"metric": {"name": metric.name}, "target": target},
                    }),
                    Source::Resource => json!({
                        "type": "Resource",
                        "resource": {"name": metric.name, "target": target},
                    }),
                    Source::External => json!({
                        "type": "External",
                        "external": {"metric": {"name": metric.name}, "target": target},
                    }),
                }
            })
            .collect();
        json!({
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleUp": rules(&self.behavior.scale_up),
                "scaleDown": rules(&self.behavior.scale_down),
            },
        })
    }
}

/// A quantity as Kubernetes writes one: `100`, `0.5` (Rust never writes an exponent
/// for an `f64`).
fn quantity(x: f64) -> String {
    format!("{x}")
}

fn target(target: Target) -> Value {
    match target {
        Target::AverageValue(v) => json!({"type": "AverageValue", "averageValue": quantity(v)}),
        Target::Utilization(percent) => {
            json!({"type": "Utilization", "averageUtilization": percent})
        }
        Target::Value(v) => json!({"type": "Value", "value": quantity(v)}),
    }
}

fn rules(rules: &ScalingRules) -> Value {
    let policies: Vec<Value> = rules
        .policies
        .iter()
        .map(|policy| {
            let kind = match policy.kind {
                PolicyKind::Pods => "Pods",
                PolicyKind::Percent => "Percent",
            };
            json!({"type": kind, "value": policy.value, "periodSeconds": policy.period_secs})
        })
        .collect();
    let select = match rules.select_policy {
        SelectPolicy::Max => "Max",
        SelectPolicy::Min => "Min",
        SelectPolicy::Disabled => "Disabled",
    };
    let mut value = json!({
        "stabilizationWindowSeconds": rules.stabilization_window_secs,
        "selectPolicy": select,
        "policies": policies,
    });
    if rules.tolerance != DEFAULT_TOLERANCE {
        value["tolerance"] = json!(quantity(rules.tolerance));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Behavior, MetricSpec, ScalingPolicy};
    use crate::shared;

    #[test]
    fn ringsides_config_is_the_hpa_spec_written_in_full() {
        let spec = AutoscalerConfig::new(1, 10, shared::metrics()).hpa_spec();
        let expected = json!({
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [
                {"type": "External", "external": {
                    "metric": {"name": "ringside_unique_client_ips"},
                    "target": {"type": "AverageValue", "averageValue": "100"}
                }},
                {"type": "Resource", "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}
                }}
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15}
                    ]
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]
                }
            }
        });
        assert_eq!(spec, expected);
    }

    #[test]
    fn external_targets_and_a_tolerance_are_written_too() {
        let mut behavior = Behavior::default();
        behavior.scale_down.tolerance = 0.05;
        behavior.scale_down.select_policy = SelectPolicy::Min;
        behavior.scale_down.policies = vec![ScalingPolicy::pods(1, 60)];
        let config = AutoscalerConfig::new(
            2,
            4,
            vec![
                MetricSpec::external_value("queue_depth", 30.0),
                MetricSpec::external_average("requests_per_second", 0.5),
            ],
        )
        .with_behavior(behavior);
        let spec = config.hpa_spec();
        assert_eq!(
            spec["metrics"],
            json!([
                {"type": "External", "external": {
                    "metric": {"name": "queue_depth"},
                    "target": {"type": "Value", "value": "30"}
                }},
                {"type": "External", "external": {
                    "metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "0.5"}
                }}
            ])
        );
        assert_eq!(
            spec["behavior"]["scaleDown"],
            json!({
                "stabilizationWindowSeconds": 300,
                "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                "tolerance": "0.05"
            })
        );
        assert!(spec["behavior"]["scaleUp"].get("tolerance").is_none());
    }
}
