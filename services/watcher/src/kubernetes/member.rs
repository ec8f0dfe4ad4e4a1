//! The membership rule: which pod is a ring member, and as which [`PodMember`].
//!
//! Pure functions over a `Pod` object; no client, no clock. [`MemberRule::classify`] is
//! the single place that decides membership, so the tracker, the docs and the tests
//! all mean the same thing by "member".

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;

/// Annotation holding a pod's ring weight unless configured otherwise.
pub const DEFAULT_WEIGHT_ANNOTATION: &str = "ringside.io/weight";
/// Name of the container port that carries the node's address unless configured otherwise.
pub const DEFAULT_PORT_NAME: &str = "ringside";
/// Weight of a member without (or with an unusable) weight annotation.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest accepted weight: a weight multiplies a member's tokens, so an absurd
/// annotation must not be able to blow up the ring.
pub const MAX_WEIGHT: u32 = 1000;

/// A pod as a ring member: what the membership rule makes of a pod that qualifies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodMember {
    /// Member id: the pod name (unique within the namespace).
    pub id: String,
    /// Where the node serves: pod IP and the configured port.
    pub address: SocketAddr,
    /// Relative capacity, `1..=MAX_WEIGHT`.
    pub weight: u32,
    /// The pod's uid: tells two incarnations of the same pod name apart.
    pub uid: String,
}

impl PodMember {
    /// The member as the event contract carries it.
    pub fn to_pb(&self) -> ringside_events::pb::Member {
        ringside_events::pb::Member {
            id: self.id.clone(),
            address: self.address.to_string(),
            weight: self.weight,
            uid: Some(self.uid.clone()),
            ..ringside_events::pb::Member::default()
        }
    }
}

/// Where a member's port comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSource {
    /// The same port for every pod.
    Fixed(u16),
    /// The container port with this name (first container that declares it).
    Named(String),
}

/// Why a pod is not (or no longer) a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotMember {
    /// The pod's `Ready` condition is not `True`.
    NotReady,
    /// The pod has no (parsable) pod IP yet.
    NoAddress,
    /// The pod is terminating (`deletionTimestamp` is set).
    Terminating,
    /// The named container port is missing from the pod spec.
    NoPort,
    /// The object lacks a name, uid or resource version (never the case for objects
    /// served by an API server; guarded because ids are built from them).
    Malformed,
    /// The pod name cannot be a member id: member ids are NATS subject tokens, and
    /// pod names may contain '.'.
    UnusableName,
    /// The pod was deleted (or stopped matching the selector).
    Deleted,
}

impl fmt::Display for NotMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotMember::NotReady => "not ready",
            NotMember::NoAddress => "no pod IP",
            NotMember::Terminating => "terminating",
            NotMember::NoPort => "no such container port",
            NotMember::Malformed => "object without name, uid or resourceVersion",
            NotMember::UnusableName => "pod name is not a valid member id",
            NotMember::Deleted => "deleted",
        })
    }
}

/// The result of classifying one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// The pod is a member.
    Member(PodMember),
    /// The pod is not a member, for this reason.
    NotMember(NotMember),
}

/// The membership rule, parameterised by where port and weight come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRule {
    /// Source of the member's port.
    pub port: PortSource,
    /// Annotation read for the member's weight.
    pub weight_annotation: String,
}

impl Default for MemberRule {
    fn default() -> Self {
        MemberRule {
            port: PortSource::Named(DEFAULT_PORT_NAME.to_owned()),
            weight_annotation: DEFAULT_WEIGHT_ANNOTATION.to_owned(),
        }
    }
}

impl MemberRule {
    /// Decides whether `pod` is a member: Ready=True, a pod IP, no deletionTimestamp
    /// (and a port to serve on). Checked in that order, so the reason names the first
    /// unmet condition.
    pub fn classify(&self, pod: &Pod) -> PodState {
        let meta = &pod.metadata;
        let (Some(name), Some(uid), Some(_rv)) = (&meta.name, &meta.uid, &meta.resource_version)
        else {
            return PodState::NotMember(NotMember::Malformed);
        };
        if ringside_events::NodeName::new(name.as_str()).is_err() {
            tracing::warn!(pod = %name, "Pod name contains '.', '*', '>' or whitespace; it cannot be a member.");
            return PodState::NotMember(NotMember::UnusableName);
        }
        if meta.deletion_timestamp.is_some() {
            return PodState::NotMember(NotMember::Terminating);
        }
        if !is_ready(pod) {
            return PodState::NotMember(NotMember::NotReady);
        }
        let Some(ip) = pod_ip(pod, name) else {
            return PodState::NotMember(NotMember::NoAddress);
        };
        let Some(port) = self.port(pod) else {
            return PodState::NotMember(NotMember::NoPort);
        };
        PodState::Member(PodMember {
            id: name.clone(),
            address: SocketAddr::new(ip, port),
            weight: self.weight(pod, name),
            uid: uid.clone(),
        })
    }

    fn port(&self, pod: &Pod) -> Option<u16> {
        match &self.port {
            PortSource::Fixed(port) => Some(*port),
            PortSource::Named(wanted) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(wanted.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .filter(|port| *port != 0),
        }
    }

    fn weight(&self, pod: &Pod, name: &str) -> u32 {
        let Some(raw) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.weight_annotation))
        else {
            return DEFAULT_WEIGHT;
        };
        match raw.trim().parse::<u32>() {
            Ok(w) if (1..=MAX_WEIGHT).contains(&w) => w,
            _ => {
                // An operator typo must not take a node out of the ring: fall back and say so.
                tracing::warn!(
                    pod = name,
                    annotation = %self.weight_annotation,
                    value = %raw,
                    max = MAX_WEIGHT,
                    "Invalid weight annotation, using weight 1."
                );
                DEFAULT_WEIGHT
            }
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_ip(pod: &Pod, name: &str) -> Option<IpAddr> {
    let raw = pod.status.as_ref()?.pod_ip.as_deref()?;
    if raw.is_empty() {
        return None;
    }
    match raw.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            tracing::warn!(
                pod = name,
                pod_ip = raw,
                "Unparsable pod IP, pod is not a member."
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use ringside_testkit::kube_fake::PodBuilder;
    use std::collections::BTreeMap;

    fn pod(ready: bool, ip: Option<&str>) -> Pod {
        PodBuilder::new("node-0")
            .uid("uid-0")
            .resource_version("7")
            .port("metrics", 9100)
            .port("ringside", 7000)
            .ready(ready)
            .pod_ip(ip)
            .build()
    }

    fn with_weight(mut p: Pod, w: &str) -> Pod {
        p.metadata.annotations = Some(BTreeMap::from([(
            DEFAULT_WEIGHT_ANNOTATION.to_owned(),
            w.to_owned(),
        )]));
        p
    }

    fn member(p: &Pod) -> PodMember {
        match MemberRule::default().classify(p) {
            PodState::Member(m) => m,
            PodState::NotMember(why) => panic!("expected a member, got {why}"),
        }
    }

    #[test]
    fn ready_pod_with_ip_is_a_member_on_the_named_port() {
        let m = member(&pod(true, Some("10.0.0.5")));
        assert_eq!(m.id, "node-0");
        assert_eq!(m.address, "10.0.0.5:7000".parse().unwrap());
        assert_eq!(m.weight, 1);
        assert_eq!(m.uid, "uid-0");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let m = member(&pod(true, Some("fd00::5")));
        assert_eq!(m.address.to_string(), "[fd00::5]:7000");
    }

    #[test]
    fn fixed_port_overrides_the_named_port() {
        let rule = MemberRule {
            port: PortSource::Fixed(8080),
            ..MemberRule::default()
        };
        let PodState::Member(m) = rule.classify(&pod(true, Some("10.0.0.5"))) else {
            panic!("expected a member");
        };
        assert_eq!(m.address.port(), 8080);
    }

    #[test]
    fn every_unmet_condition_has_its_reason() {
        let rule = MemberRule::default();
        let cases = [
            (pod(false, Some("10.0.0.5")), NotMember::NotReady),
            (pod(true, None), NotMember::NoAddress),
            (pod(true, Some("")), NotMember::NoAddress),
            (pod(true, Some("not-an-ip")), NotMember::NoAddress),
        ];
        for (p, why) in cases {
            assert_eq!(rule.classify(&p), PodState::NotMember(why));
        }

        let mut terminating = pod(true, Some("10.0.0.5"));
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            rule.classify(&terminating),
            PodState::NotMember(NotMember::Terminating)
        );

        let other_port = MemberRule {
            port: PortSource::Named("grpc".into()),
            ..MemberRule::default()
        };
        assert_eq!(
            other_port.classify(&pod(true, Some("10.0.0.5"))),
            PodState::NotMember(NotMember::NoPort)
        );

        let mut dotted = pod(true, Some("10.0.0.5"));
        dotted.metadata.name = Some("node.0".into());
        assert_eq!(
            rule.classify(&dotted),
            PodState::NotMember(NotMember::UnusableName)
        );

        let mut no_uid = pod(true, Some("10.0.0.5"));
        no_uid.metadata.uid = None;
        assert_eq!(
            rule.classify(&no_uid),
            PodState::NotMember(NotMember::Malformed)
        );
    }

    #[test]
    fn missing_ready_condition_means_not_ready() {
        let mut p = pod(true, Some("10.0.0.5"));
        if let Some(status) = p.status.as_mut() {
            status.conditions = None;
        }
        assert_eq!(
            MemberRule::default().classify(&p),
            PodState::NotMember(NotMember::NotReady)
        );
    }

    #[test]
    fn weight_comes_from_the_annotation_and_falls_back_to_one() {
        let base = pod(true, Some("10.0.0.5"));
        assert_eq!(member(&with_weight(base.clone(), "3")).weight, 3);
        assert_eq!(member(&with_weight(base.clone(), " 5 ")).weight, 5);
        for bad in ["0", "-2", "abc", "1.5", "", "1001", "99999999999"] {
            assert_eq!(member(&with_weight(base.clone(), bad)).weight, 1, "{bad:?}");
        }
    }
}
