//! What the autoscaler sees at one evaluation: the replicas asked for, the pods, and
//! the metric values read (from Prometheus locally, from the metrics APIs in
//! Kubernetes). A value that could not be read is simply absent.

use std::collections::BTreeMap;

/// Whether a pod's values count as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Running and ready: its values count.
    Ready,
    /// Not ready yet (for the HPA: pending, or for CPU still starting): its values are
    /// left out, and on a scale-up it is counted as using nothing.
    Unready,
}

/// One evaluation's input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// The replicas the workload is asked to run now (the scale's `spec.replicas`).
    pub current_replicas: u32,
    /// The workload's pods by name (failed and terminating pods left out, as the HPA
    /// leaves them out).
    pub pods: BTreeMap<String, PodState>,
    /// Per-pod values by metric name, then pod name (`Pods` and `Resource` metrics).
    /// A pod of [`Observation::pods`] without a value is missing; values of pods not
    /// listed there are ignored, as are values that are not finite or are negative.
    pub pod_values: BTreeMap<String, BTreeMap<String, f64>>,
    /// One value by metric name (`External` metrics).
    pub values: BTreeMap<String, f64>,
}

impl Observation {
    /// Nothing seen yet but the replicas asked for.
    pub fn new(current_replicas: u32) -> Self {
        Self {
            current_replicas,
            ..Self::default()
        }
    }

    /// Adds a pod.
    pub fn pod(mut self, name: impl Into<String>, state: PodState) -> Self {
        self.pods.insert(name.into(), state);
        self
    }

    /// Adds one pod's value of a per-pod metric.
    pub fn pod_value(
        mut self,
        metric: impl Into<String>,
        pod: impl Into<String>,
        value: f64,
    ) -> Self {
        self.pod_values
            .entry(metric.into())
            .or_default()
            .insert(pod.into(), value);
        self
    }

    /// Adds the value of a workload-wide metric.
    pub fn value(mut self, metric: impl Into<String>, value: f64) -> Self {
        self.values.insert(metric.into(), value);
        self
    }
}
