//! The names the local autoscaler and the Kubernetes HPA share, in one place: the node
//! metric the HPA scales on and the custom-metrics name prometheus-adapter serves it
//! under, the targets, the adapter's rule, and the PromQL the local autoscaler runs
//! (the adapter rule's own query). The manifests are generated from, or checked
//! against, these; a test keeps them consistent with each other.
//!
//! The strings repeat names (a `const` cannot be built from another at compile time);
//! the tests below check every repetition.

use serde_json::{Value, json};

use crate::config::MetricSpec;

/// The node's gauge: distinct client IPs of the last minute (`ringside-node`'s
/// `metrics::UNIQUE_CLIENT_IPS`).
pub const NODE_UNIQUE_CLIENT_IPS: &str = "ringside_node_unique_client_ips";
/// The node's CPU gauge, in cores (`ringside-node`'s `metrics::CPU`).
pub const NODE_CPU: &str = "ringside_node_cpu_ratio";
/// The custom metric prometheus-adapter serves [`NODE_UNIQUE_CLIENT_IPS`] as, per pod:
/// the HPA's `metrics[].pods.metric.name`.
pub const UNIQUE_CLIENT_IPS: &str = "ringside_unique_client_ips";
/// Its target: this many distinct client IPs per pod on average (`AverageValue`).
pub const UNIQUE_CLIENT_IPS_TARGET: u32 = 100;
/// The resource metric the HPA also scales on.
pub const CPU: &str = "cpu";
/// Its target: 80 % of the pods' CPU request (`Utilization`; the HPA's own default).
pub const CPU_TARGET_UTILIZATION: u32 = 80;
/// The label naming a series' pod (a node locally: its id).
pub const POD_LABEL: &str = "pod";
/// The label naming a series' namespace.
pub const NAMESPACE_LABEL: &str = "namespace";
/// How often the HPA evaluates (the controller's
/// `--horizontal-pod-autoscaler-sync-period`); the local autoscaler runs as often.
pub const SYNC_PERIOD_SECS: u32 = 15;

/// One prometheus-adapter rule (`rules:` of its config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterRule {
    /// Which series the rule serves (`seriesQuery`).
    pub series_query: &'static str,
    /// The label holding the namespace (`resources.overrides`).
    pub namespace_label: &'static str,
    /// The label holding the pod (`resources.overrides`).
    pub pod_label: &'static str,
    /// The series names taken (`name.matches`).
    pub name_matches: &'static str,
    /// The custom metric's name (`name.as`).
    pub name_as: &'static str,
    /// The query, a Go template over `<<.Series>>`, `<<.LabelMatchers>>` and
    /// `<<.GroupBy>>` (`metricsQuery`).
    pub metrics_query: &'static str,
}

/// The rule serving [`NODE_UNIQUE_CLIENT_IPS`] as [`UNIQUE_CLIENT_IPS`] per pod. The
/// query averages a pod's series: one normally, and equal ones if both the node and
/// another exporter report it.
pub const UNIQUE_CLIENT_IPS_RULE: AdapterRule = AdapterRule {
    series_query: r#"ringside_node_unique_client_ips{namespace!="",pod!=""}"#,
    namespace_label: "namespace",
    pod_label: "pod",
    name_matches: "^ringside_node_unique_client_ips$",
    name_as: "ringside_unique_client_ips",
    metrics_query: "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
};

impl AdapterRule {
    /// The series name the rule serves: its `seriesQuery` without the matchers.
    pub fn series(&self) -> &'static str {
        let end = self
            .series_query
            .find('{')
            .unwrap_or(self.series_query.len());
        &self.series_query[..end]
    }

    /// The `metricsQuery` filled in as the adapter fills it.
    pub fn query(&self, series: &str, label_matchers: &str, group_by: &str) -> String {
        self.metrics_query
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", label_matchers)
            .replace("<<.GroupBy>>", group_by)
    }

    /// The rule as an entry of prometheus-adapter's `rules:` (JSON, which is YAML).
    pub fn to_config(&self) -> Value {
        json!({
            "seriesQuery": self.series_query,
            "resources": {
                "overrides": {
                    self.namespace_label: {"resource": "namespace"},
                    self.pod_label: {"resource": "pod"},
                }
            },
            "name": {"matches": self.name_matches, "as": self.name_as},
            "metricsQuery": self.metrics_query,
        })
    }
}

/// What ringside scales its nodes on: [`UNIQUE_CLIENT_IPS`] per pod and [`CPU`]
/// utilization, in the order the HPA lists them.
pub fn metrics() -> Vec<MetricSpec> {
    vec![
        MetricSpec::pods(UNIQUE_CLIENT_IPS, f64::from(UNIQUE_CLIENT_IPS_TARGET)),
        MetricSpec::resource_utilization(CPU, CPU_TARGET_UTILIZATION),
    ]
}

/// The PromQL the local autoscaler runs for one of [`metrics`], answering one sample
/// per node labelled [`POD_LABEL`]: the adapter rule's query over every series with a
/// pod. Locally a node's CPU request is taken as one core, so its utilization is 100
/// times its cores used. `None` for another metric.
pub fn local_query(metric: &str) -> Option<String> {
    let rule = UNIQUE_CLIENT_IPS_RULE;
    let matchers = format!(r#"{POD_LABEL}!="""#);
    match metric {
        UNIQUE_CLIENT_IPS => Some(rule.query(rule.series(), &matchers, POD_LABEL)),
        CPU => Some(format!(
            "100 * {}",
            rule.query(NODE_CPU, &matchers, POD_LABEL)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, Target};

    #[test]
    fn the_rule_serves_the_node_metric_under_the_hpas_name() {
        let rule = UNIQUE_CLIENT_IPS_RULE;
        assert_eq!(rule.series(), NODE_UNIQUE_CLIENT_IPS);
        assert_eq!(rule.name_matches, format!("^{NODE_UNIQUE_CLIENT_IPS}$"));
        assert_eq!(rule.name_as, UNIQUE_CLIENT_IPS);
        assert_eq!(
            rule.series_query,
            format!(r#"{NODE_UNIQUE_CLIENT_IPS}{{{NAMESPACE_LABEL}!="",{POD_LABEL}!=""}}"#)
        );
        assert_eq!(
            (rule.namespace_label, rule.pod_label),
            (NAMESPACE_LABEL, POD_LABEL)
        );
        for placeholder in ["<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"] {
            assert_eq!(
                rule.metrics_query.matches(placeholder).count(),
                1,
                "{placeholder}"
            );
        }
    }

    #[test]
    fn the_rule_is_prometheus_adapter_config() {
        let expected = json!({
            "seriesQuery": "ringside_node_unique_client_ips{namespace!=\"\",pod!=\"\"}",
            "resources": {"overrides": {
                "namespace": {"resource": "namespace"},
                "pod": {"resource": "pod"}
            }},
            "name": {"matches": "^ringside_node_unique_client_ips$", "as": "ringside_unique_client_ips"},
            "metricsQuery": "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
        });
        assert_eq!(UNIQUE_CLIENT_IPS_RULE.to_config(), expected);
    }

    #[test]
    fn the_adapter_and_the_local_autoscaler_run_the_same_query() {
        let rule = UNIQUE_CLIENT_IPS_RULE;
        // What the adapter sends Prometheus for the HPA's pods.
        assert_eq!(
            rule.query(
                rule.series(),
                r#"namespace="ringside",pod=~"node-0|node-1""#,
                "pod"
            ),
            r#"avg(ringside_node_unique_client_ips{namespace="ringside",pod=~"node-0|node-1"}) by (pod)"#
        );
        assert_eq!(
            local_query(UNIQUE_CLIENT_IPS).as_deref(),
            Some(r#"avg(ringside_node_unique_client_ips{pod!=""}) by (pod)"#)
        );
        assert_eq!(
            local_query(CPU).as_deref(),
            Some(r#"100 * avg(ringside_node_cpu_ratio{pod!=""}) by (pod)"#)
        );
        assert_eq!(local_query("memory"), None);
    }

    #[test]
    fn the_guide_lists_the_names_and_queries_as_they_are() {
        let docs = include_str!("../../docs/autoscaler.md");
        let rows = [
            format!("| `NODE_UNIQUE_CLIENT_IPS` | `{NODE_UNIQUE_CLIENT_IPS}` |"),
            format!("| `NODE_CPU` | `{NODE_CPU}` |"),
            format!("| `UNIQUE_CLIENT_IPS` | `{UNIQUE_CLIENT_IPS}` |"),
            format!("| `UNIQUE_CLIENT_IPS_TARGET` | {UNIQUE_CLIENT_IPS_TARGET} |"),
            format!("| `CPU`, `CPU_TARGET_UTILIZATION` | `{CPU}`, {CPU_TARGET_UTILIZATION} |"),
            format!("| `POD_LABEL`, `NAMESPACE_LABEL` | `{POD_LABEL}`, `{NAMESPACE_LABEL}` |"),
            format!("| `SYNC_PERIOD_SECS` | {SYNC_PERIOD_SECS} |"),
            format!("- seriesQuery: '{}'", UNIQUE_CLIENT_IPS_RULE.series_query),
            format!("    matches: {}", UNIQUE_CLIENT_IPS_RULE.name_matches),
            format!("    as: {}", UNIQUE_CLIENT_IPS_RULE.name_as),
            format!("  metricsQuery: {}", UNIQUE_CLIENT_IPS_RULE.metrics_query),
        ];
        for row in rows {
            assert!(
                docs.contains(&row),
                "docs/autoscaler.md must contain:\n{row}"
            );
        }
        for metric in metrics() {
            let query = local_query(&metric.name).unwrap();
            let row = format!("| `{}` | `{query}`", metric.name);
            assert!(
                docs.contains(&row),
                "docs/autoscaler.md must contain:\n{row}"
            );
        }
    }

    #[test]
    fn every_metric_scaled_on_has_a_local_query() {
        // A metric the local autoscaler cannot read would block every scale-down.
        let metrics = metrics();
        assert_eq!(
            metrics,
            [
                MetricSpec {
                    name: UNIQUE_CLIENT_IPS.into(),
                    source: Source::Pods,
                    target: Target::AverageValue(100.0),
                },
                MetricSpec {
                    name: CPU.into(),
                    source: Source::Resource,
                    target: Target::Utilization(80),
                },
            ]
        );
        for metric in &metrics {
            assert!(local_query(&metric.name).is_some(), "{}", metric.name);
        }
    }
}
