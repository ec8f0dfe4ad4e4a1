//! The names the local autoscaler and the Kubernetes HPA share, in one place: the
//! collector's series the HPA scales on, the names prometheus-adapter serves them
//! under, the targets, the adapter's rules, and the PromQL the local autoscaler runs
//! (the adapter rules' own queries). The manifests are generated from, or checked
//! against, these; the tests below keep them consistent with each other.
//!
//! # Why the ring's distinct clients, not a node's
//! Clients spread their requests over every node (a load generator picks nodes at
//! random, a Kubernetes Service spreads connections), so each of `n` nodes sees nearly
//! all of the ring's `K` clients. A per-pod average of the nodes' counts stays near `K`
//! however many pods run, and the HPA's `ceil(n × K / 100)` grows with `n` until the
//! maximum. Scaling on the ring's count instead, as an `External` metric with a
//! per-replica (`AverageValue`) target, asks for `ceil(K / 100)` whatever `n` is. The
//! metrics collector has that count (the union of the nodes' sketches), so the series
//! come from the collector, not the nodes.
//!
//! The strings repeat names (a `const` cannot be built from another at compile time);
//! the tests check every repetition.

use serde_json::{Value, json};

use crate::config::MetricSpec;

/// The collector's gauge of distinct client IPs of the whole ring in the last minute
/// (`ringside-collector`'s `metrics::RING_UNIQUE_CLIENT_IPS`): what the HPA scales on.
pub const RING_UNIQUE_CLIENT_IPS: &str = "ringside_collector_ring_unique_client_ips";
/// The collector's per-node gauge of distinct client IPs (`metrics::NODE_UNIQUE_CLIENT_IPS`).
/// Not scaled on: every node sees nearly every client (see the module docs).
pub const NODE_UNIQUE_CLIENT_IPS: &str = "ringside_collector_node_unique_client_ips";
/// The collector's per-node CPU gauge, in cores (`metrics::NODE_CPU`).
pub const NODE_CPU: &str = "ringside_collector_node_cpu_ratio";
/// The external metric prometheus-adapter serves [`RING_UNIQUE_CLIENT_IPS`] as: the
/// HPA's `metrics[].external.metric.name`.
pub const UNIQUE_CLIENT_IPS: &str = "ringside_unique_client_ips";
/// Its target: this many distinct client IPs of the ring per replica (`AverageValue`).
pub const UNIQUE_CLIENT_IPS_TARGET: u32 = 100;
/// The resource metric the HPA also scales on.
pub const CPU: &str = "cpu";
/// Its target: 80 % of the pods' CPU request (`Utilization`; the HPA's own default).
pub const CPU_TARGET_UTILIZATION: u32 = 80;
/// The label naming a per-node series' pod (locally: the node id).
pub const POD_LABEL: &str = "pod";
/// The label naming a series' namespace (locally `local` on per-node series; the ring's
/// series has none locally).
pub const NAMESPACE_LABEL: &str = "namespace";
/// How often the HPA evaluates (the controller's
/// `--horizontal-pod-autoscaler-sync-period`); the local autoscaler runs as often.
pub const SYNC_PERIOD_SECS: u32 = 15;

/// Which metrics API of prometheus-adapter a rule serves, and so which list of its
/// config the rule goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// `rules:`, the custom metrics API: one value per pod (the HPA's `Pods` metrics).
    Pods {
        /// The label holding the pod (`resources.overrides`).
        pod_label: &'static str,
    },
    /// `externalRules:`, the external metrics API: one value for the HPA's namespace
    /// (the HPA's `External` metrics).
    External,
}

/// One prometheus-adapter rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterRule {
    /// The API it serves.
    pub kind: RuleKind,
    /// Which series the rule serves (`seriesQuery`).
    pub series_query: &'static str,
    /// The label holding the namespace (`resources.overrides`).
    pub namespace_label: &'static str,
    /// The series names taken (`name.matches`).
    pub name_matches: &'static str,
    /// The metric's name in the API (`name.as`).
    pub name_as: &'static str,
    /// The query, a Go template over `<<.Series>>`, `<<.LabelMatchers>>` and
    /// `<<.GroupBy>>` (`metricsQuery`).
    pub metrics_query: &'static str,
}

/// The rule serving [`RING_UNIQUE_CLIENT_IPS`] as the external metric
/// [`UNIQUE_CLIENT_IPS`]. For an external metric the adapter fills `<<.LabelMatchers>>`
/// with the HPA's metric selector and `namespace="<the HPA's namespace>"`, and
/// `<<.GroupBy>>` with nothing, so the query answers one sample; the HPA adds up every
/// sample it gets. `max`, not `sum`: two collectors running at once (a rollout) report
/// the same ring, and must not count it twice.
pub const UNIQUE_CLIENT_IPS_RULE: AdapterRule = AdapterRule {
    kind: RuleKind::External,
    series_query: r#"ringside_collector_ring_unique_client_ips{namespace!=""}"#,
    namespace_label: "namespace",
    name_matches: "^ringside_collector_ring_unique_client_ips$",
    name_as: "ringside_unique_client_ips",
    metrics_query: "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
};

/// A per-pod rule over [`NODE_CPU`], which gives the local autoscaler its [`CPU`]
/// query. Not in [`ADAPTER_RULES`]: in Kubernetes the HPA reads `cpu`, a `Resource`
/// metric, from metrics-server, so the adapter serves nothing for it. `avg` per pod:
/// one series normally, equal ones if two collectors run at once.
pub const CPU_RULE: AdapterRule = AdapterRule {
    kind: RuleKind::Pods { pod_label: "pod" },
    series_query: r#"ringside_collector_node_cpu_ratio{namespace!="",pod!=""}"#,
    namespace_label: "namespace",
    name_matches: "^ringside_collector_node_cpu_ratio$",
    name_as: "ringside_collector_node_cpu_ratio",
    metrics_query: "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
};

/// The rules prometheus-adapter runs in Kubernetes ([`adapter_config`]).
pub const ADAPTER_RULES: &[AdapterRule] = &[UNIQUE_CLIENT_IPS_RULE];

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

    /// The rule as an entry of prometheus-adapter's `rules:` or `externalRules:` (JSON,
    /// which is YAML).
    pub fn to_config(&self) -> Value {
        let mut overrides = json!({self.namespace_label: {"resource": "namespace"}});
        if let RuleKind::Pods { pod_label } = self.kind {
            overrides[pod_label] = json!({"resource": "pod"});
        }
        json!({
            "seriesQuery": self.series_query,
            "resources": {"overrides": overrides},
            "name": {"matches": self.name_matches, "as": self.name_as},
            "metricsQuery": self.metrics_query,
        })
    }
}

/// prometheus-adapter's rules for ringside: `{"rules": [...], "externalRules": [...]}`
/// of [`ADAPTER_RULES`] (JSON, which is YAML), to merge into the adapter's config.
pub fn adapter_config() -> Value {
    let of = |external: bool| -> Vec<Value> {
        ADAPTER_RULES
            .iter()
            .filter(|rule| (rule.kind == RuleKind::External) == external)
            .map(AdapterRule::to_config)
            .collect()
    };
    json!({"rules": of(false), "externalRules": of(true)})
}

/// What ringside scales its nodes on: [`UNIQUE_CLIENT_IPS`] of the ring per replica
/// and [`CPU`] utilization, in the order the HPA lists them.
pub fn metrics() -> Vec<MetricSpec> {
    vec![
        MetricSpec::external_average(UNIQUE_CLIENT_IPS, f64::from(UNIQUE_CLIENT_IPS_TARGET)),
        MetricSpec::resource_utilization(CPU, CPU_TARGET_UTILIZATION),
    ]
}

/// The PromQL the local autoscaler runs for one of [`metrics`], or `None` for another
/// metric. Each is an adapter rule's query over everything Prometheus has:
///
/// - [`UNIQUE_CLIENT_IPS`]: [`UNIQUE_CLIENT_IPS_RULE`]'s query with no label matchers
///   and no grouping, the empty `{}` and `by ()` left out (PromQL reads them as
///   absent). One sample: pass it as [`Observation::value`](crate::Observation::value).
/// - [`CPU`]: 100 times [`CPU_RULE`]'s query over every series with a pod, grouped by
///   pod: a local node's request is taken as one core, so its utilization is 100 times
///   the cores it used. One sample per node labelled [`POD_LABEL`] with the node id:
///   pass each as [`Observation::pod_value`](crate::Observation::pod_value).
pub fn local_query(metric: &str) -> Option<String> {
    match metric {
        UNIQUE_CLIENT_IPS => {
            let rule = UNIQUE_CLIENT_IPS_RULE;
            let query = rule.query(rule.series(), "", "");
            Some(query.replace("{}", "").replace(" by ()", ""))
        }
        CPU => {
            let rule = CPU_RULE;
            let matchers = format!(r#"{POD_LABEL}!="""#);
            Some(format!(
                "100 * {}",
                rule.query(rule.series(), &matchers, POD_LABEL)
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, Target};

    fn assert_placeholders_once(rule: &AdapterRule) {
        for placeholder in ["<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"] {
            assert_eq!(
                rule.metrics_query.matches(placeholder).count(),
                1,
                "{placeholder}"
            );
        }
    }

    #[test]
    fn the_external_rule_serves_the_rings_count_under_the_hpas_name() {
        let rule = UNIQUE_CLIENT_IPS_RULE;
        assert_eq!(rule.kind, RuleKind::External);
        assert_eq!(rule.series(), RING_UNIQUE_CLIENT_IPS);
        assert_eq!(rule.name_matches, format!("^{RING_UNIQUE_CLIENT_IPS}$"));
        assert_eq!(rule.name_as, UNIQUE_CLIENT_IPS);
        assert_eq!(
            rule.series_query,
            format!(r#"{RING_UNIQUE_CLIENT_IPS}{{{NAMESPACE_LABEL}!=""}}"#)
        );
        assert_eq!(rule.namespace_label, NAMESPACE_LABEL);
        assert_placeholders_once(&rule);
    }

    #[test]
    fn the_cpu_rule_reads_the_collectors_node_cpu_per_pod() {
        let rule = CPU_RULE;
        assert_eq!(
            rule.kind,
            RuleKind::Pods {
                pod_label: POD_LABEL
            }
        );
        assert_eq!(rule.series(), NODE_CPU);
        assert_eq!(rule.name_matches, format!("^{NODE_CPU}$"));
        assert_eq!(rule.name_as, NODE_CPU);
        assert_eq!(
            rule.series_query,
            format!(r#"{NODE_CPU}{{{NAMESPACE_LABEL}!="",{POD_LABEL}!=""}}"#)
        );
        assert_eq!(rule.namespace_label, NAMESPACE_LABEL);
        assert_placeholders_once(&rule);
    }

    #[test]
    fn no_rule_serves_the_per_node_client_count() {
        // The per-pod average of it runs away: every node sees nearly every client.
        for rule in ADAPTER_RULES.iter().chain([&CPU_RULE]) {
            assert_ne!(rule.series(), NODE_UNIQUE_CLIENT_IPS, "{rule:?}");
        }
    }

    #[test]
    fn the_rules_are_prometheus_adapter_config() {
        assert_eq!(
            UNIQUE_CLIENT_IPS_RULE.to_config(),
            json!({
                "seriesQuery": "ringside_collector_ring_unique_client_ips{namespace!=\"\"}",
                "resources": {"overrides": {"namespace": {"resource": "namespace"}}},
                "name": {
                    "matches": "^ringside_collector_ring_unique_client_ips$",
                    "as": "ringside_unique_client_ips"
                },
                "metricsQuery": "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
            })
        );
        assert_eq!(
            CPU_RULE.to_config(),
            json!({
                "seriesQuery": "ringside_collector_node_cpu_ratio{namespace!=\"\",pod!=\"\"}",
                "resources": {"overrides": {
                    "namespace": {"resource": "namespace"},
                    "pod": {"resource": "pod"}
                }},
                "name": {
                    "matches": "^ringside_collector_node_cpu_ratio$",
                    "as": "ringside_collector_node_cpu_ratio"
                },
                "metricsQuery": "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
            })
        );
    }

    #[test]
    fn the_adapter_config_has_the_external_rule_and_no_custom_one() {
        assert_eq!(
            adapter_config(),
            json!({
                "rules": [],
                "externalRules": [UNIQUE_CLIENT_IPS_RULE.to_config()]
            })
        );
    }

    #[test]
    fn the_adapter_and_the_local_autoscaler_run_the_same_queries() {
        let rule = UNIQUE_CLIENT_IPS_RULE;
        // What the adapter sends Prometheus for an HPA in namespace `ringside` whose
        // external metric has no selector: the namespace matcher, no grouping.
        assert_eq!(
            rule.query(rule.series(), r#"namespace="ringside""#, ""),
            r#"max(ringside_collector_ring_unique_client_ips{namespace="ringside"}) by ()"#
        );
        // Locally: no matcher at all (the ring's series has no namespace locally).
        assert_eq!(
            rule.query(rule.series(), "", ""),
            "max(ringside_collector_ring_unique_client_ips{}) by ()"
        );
        assert_eq!(
            local_query(UNIQUE_CLIENT_IPS).as_deref(),
            Some("max(ringside_collector_ring_unique_client_ips)")
        );
        // The CPU rule as the adapter would fill it for two node pods, and locally
        // over every node.
        assert_eq!(
            CPU_RULE.query(
                CPU_RULE.series(),
                r#"namespace="ringside",pod=~"node-0|node-1""#,
                "pod"
            ),
            r#"avg(ringside_collector_node_cpu_ratio{namespace="ringside",pod=~"node-0|node-1"}) by (pod)"#
        );
        assert_eq!(
            local_query(CPU).as_deref(),
            Some(r#"100 * avg(ringside_collector_node_cpu_ratio{pod!=""}) by (pod)"#)
        );
        assert_eq!(local_query("memory"), None);
    }

    #[test]
    fn the_guide_lists_the_names_and_queries_as_they_are() {
        let docs = include_str!("../../docs/autoscaler.md");
        let rule = UNIQUE_CLIENT_IPS_RULE;
        let rows = [
            format!("| `RING_UNIQUE_CLIENT_IPS` | `{RING_UNIQUE_CLIENT_IPS}` |"),
            format!("| `NODE_UNIQUE_CLIENT_IPS` | `{NODE_UNIQUE_CLIENT_IPS}` |"),
            format!("| `NODE_CPU` | `{NODE_CPU}` |"),
            format!("| `UNIQUE_CLIENT_IPS` | `{UNIQUE_CLIENT_IPS}` |"),
            format!("| `UNIQUE_CLIENT_IPS_TARGET` | {UNIQUE_CLIENT_IPS_TARGET} |"),
            format!("| `CPU`, `CPU_TARGET_UTILIZATION` | `{CPU}`, {CPU_TARGET_UTILIZATION} |"),
            format!("| `POD_LABEL`, `NAMESPACE_LABEL` | `{POD_LABEL}`, `{NAMESPACE_LABEL}` |"),
            format!("| `SYNC_PERIOD_SECS` | {SYNC_PERIOD_SECS} |"),
            "rules: []\nexternalRules:\n".to_owned(),
            format!("- seriesQuery: '{}'", rule.series_query),
            format!(
                "      {}: {{resource: namespace}}\n  name:",
                rule.namespace_label
            ),
            format!("    matches: {}", rule.name_matches),
            format!("    as: {}", rule.name_as),
            format!("  metricsQuery: {}", rule.metrics_query),
            format!("`{}`", CPU_RULE.series_query),
            format!("`{}`", CPU_RULE.metrics_query),
            format!(
                "`{}`",
                rule.query(rule.series(), r#"namespace="ringside""#, "")
            ),
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
                    source: Source::External,
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
