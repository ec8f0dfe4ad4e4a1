//! [`PodTracker`]: turns the watcher's pod events into membership changes with
//! deterministic message ids.
//!
//! Pure and synchronous: fed `kube::runtime::watcher::Event<Pod>` values, it returns
//! at most one [`MembershipChange`] per event. Every list (`Init` .. `InitDone`, at start,
//! after a 410 Gone or a desync, after a restart) is the truth and ends in a full
//! [`Change::Synced`]; between lists, `Apply`/`Delete` events become joins and leaves,
//! only when a pod's membership actually changes.
//!
//! # Fact ids and source versions
//!
//! JetStream drops a message whose `Nats-Msg-Id` it has seen within its duplicate
//! window, and the events crate derives that id from the event's content, so the
//! content must name exactly one fact. Each change carries a `source_version` that the
//! publisher puts into the event:
//! - joins and leaves: the resourceVersion of the pod object that caused the
//!   transition (`MembersJoined.source_version`, `MemberLeft.source_version`). A pod
//!   that flaps Ready -> NotReady -> Ready makes three distinct facts.
//! - syncs: the sync's fact id (`MembershipSynced.resource_version`), see
//!   [`crate::ids`]: the member set and the fact before it, so a set that returns to
//!   an earlier state is a new fact while a re-list that sees nothing new is not.
//!
//! Every change also has a *fact id* (`join:<ring>:<uid>:<resourceVersion>`,
//! `leave:...`, `sync:...`) for logs and as the basis of the next sync id.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use ringside_events::{Body, pb};

use super::member::{MemberRule, NotMember, PodMember, PodState};
use crate::ids;

/// What changed in the ring's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A pod became a member.
    Joined(PodMember),
    /// A member stopped being one.
    Left {
        /// The member as it was while it was one.
        member: PodMember,
        /// Why it left.
        reason: NotMember,
    },
    /// The full member set, sorted by id.
    Synced {
        /// Every member, sorted by id.
        members: Vec<PodMember>,
        /// What caused the sync.
        cause: SyncCause,
    },
}

/// Why a full sync was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncCause {
    /// A (re)list of the pods completed.
    Listed,
    /// A member's address, weight or uid changed while it stayed a member; a sync
    /// states the new truth without an artificial leave + join.
    MemberChanged,
}

/// A change together with the ids that name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    /// Deterministic name of the fact (see the module docs).
    pub fact_id: String,
    /// The source's position for the fact, published in the event (the pod
    /// resourceVersion of a join or leave; the fact id of a sync).
    pub source_version: String,
    /// The change itself.
    pub change: Change,
}

impl MembershipChange {
    /// The event body this change is published as (source `KUBERNETES`), with its
    /// source version in `source_version` (joins, leaves) or `resource_version` (syncs).
    pub fn body(&self) -> Body {
        let source = pb::MembershipSource::Kubernetes as i32;
        match &self.change {
            Change::Joined(m) => Body::from(pb::MembersJoined {
                members: vec![m.to_pb()],
                source,
                source_version: self.source_version.clone(),
            }),
            Change::Left { member, reason } => Body::from(pb::MemberLeft {
                member_id: member.id.clone(),
                uid: Some(member.uid.clone()),
                reason: leave_reason(*reason) as i32,
                source,
                detail: reason.to_string(),
                source_version: self.source_version.clone(),
            }),
            Change::Synced { members, .. } => Body::from(pb::MembershipSynced {
                members: members.iter().map(PodMember::to_pb).collect(),
                source,
                resource_version: self.source_version.clone(),
            }),
        }
    }

    /// Applies this change to a member set keyed by member id: what a consumer's fold
    /// does with it (a sync replaces the whole set).
    pub fn apply_to(&self, set: &mut BTreeMap<String, PodMember>) {
        match &self.change {
            Change::Joined(m) => {
                set.insert(m.id.clone(), m.clone());
            }
            Change::Left { member, .. } => {
                set.remove(&member.id);
            }
            Change::Synced { members, .. } => {
                *set = members.iter().map(|m| (m.id.clone(), m.clone())).collect();
            }
        }
    }
}

impl fmt::Display for MembershipChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.change {
            Change::Joined(m) => {
                write!(f, "{} joined at {} (weight {})", m.id, m.address, m.weight)
            }
            Change::Left { member, reason } => write!(f, "{} left ({reason})", member.id),
            Change::Synced { members, cause } => {
                let why = match cause {
                    SyncCause::Listed => "listed",
                    SyncCause::MemberChanged => "member changed",
                };
                write!(f, "synced {} members ({why})", members.len())
            }
        }
    }
}

fn leave_reason(reason: NotMember) -> pb::LeaveReason {
    match reason {
        NotMember::NotReady => pb::LeaveReason::NotReady,
        NotMember::Terminating => pb::LeaveReason::Terminating,
        NotMember::Deleted => pb::LeaveReason::Deleted,
        // No contract value for these; the detail says which.
        NotMember::NoAddress
        | NotMember::NoPort
        | NotMember::Malformed
        | NotMember::UnusableName => pb::LeaveReason::Unspecified,
    }
}

/// Folds pod events into membership changes for one ring.
#[derive(Clone, Debug)]
pub struct PodTracker {
    ring: String,
    rule: MemberRule,
    /// The membership the emitted changes imply, keyed by pod name.
    members: BTreeMap<String, PodMember>,
    /// The members seen so far by the list in progress (`Init` .. `InitDone`).
    listing: Option<BTreeMap<String, PodMember>>,
    /// Id of the last change on the ring's subject (emitted here or seeded).
    head: Option<String>,
    synced: bool,
}

impl PodTracker {
    /// A tracker for `ring` that knows nothing yet.
    pub fn new(ring: impl Into<String>, rule: MemberRule) -> Self {
        PodTracker {
            ring: ring.into(),
            rule,
            members: BTreeMap::new(),
            listing: None,
            head: None,
            synced: false,
        }
    }

    /// Seeds the id of the last change already stored on the ring's subject (read from
    /// the stream at start-up), so the first sync after a restart dedups against it.
    #[must_use]
    pub fn with_head(mut self, head: Option<String>) -> Self {
        self.head = head;
        self
    }

    /// Feeds one watcher event; returns the change it causes, if any.
    pub fn apply(&mut self, event: Event<Pod>) -> Option<MembershipChange> {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                None
            }
            Event::InitApply(pod) => {
                // kube always sends Init first; starting a buffer here keeps a stray
                // InitApply from leaking into the live set.
                let listing = self.listing.get_or_insert_with(BTreeMap::new);
                if let (Some(name), PodState::Member(m)) =
                    (pod.metadata.name.as_ref(), self.rule.classify(&pod))
                {
                    listing.insert(name.clone(), m);
                }
                None
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                self.members = listed;
                self.synced = true;
                Some(self.sync(SyncCause::Listed))
            }
            Event::Apply(pod) => self.on_apply(&pod),
            Event::Delete(pod) => self.on_delete(&pod),
        }
    }

    /// The members the emitted changes imply, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &PodMember> {
        self.members.values()
    }

    /// True once a list has completed: the tracker's view was the truth at least once.
    pub fn has_synced(&self) -> bool {
        self.synced
    }

    fn on_apply(&mut self, pod: &Pod) -> Option<MembershipChange> {
        let name = pod.metadata.name.as_ref()?;
        let state = self.rule.classify(pod);
        if let Some(listing) = self.listing.as_mut() {
            // Not expected from kube (no Apply inside a list); the coming InitDone
            // carries the truth, so just keep the buffer right.
            match state {
                PodState::Member(m) => listing.insert(name.clone(), m),
                PodState::NotMember(_) => listing.remove(name),
            };
            return None;
        }
        let rv = pod.metadata.resource_version.as_deref().unwrap_or_default();
        match (self.members.get(name), state) {
            (None, PodState::NotMember(_)) => None,
            (None, PodState::Member(m)) => {
                let fact_id = format!("join:{}:{}:{rv}", self.ring, m.uid);
                self.members.insert(name.clone(), m.clone());
                Some(self.emit(fact_id, rv.to_owned(), Change::Joined(m)))
            }
            (Some(_), PodState::NotMember(reason)) => {
                let member = self.members.remove(name)?;
                let fact_id = format!("leave:{}:{}:{rv}", self.ring, member.uid);
                Some(self.emit(fact_id, rv.to_owned(), Change::Left { member, reason }))
            }
            (Some(old), PodState::Member(m)) if *old == m => None,
            (Some(_), PodState::Member(m)) => {
                self.members.insert(name.clone(), m);
                Some(self.sync(SyncCause::MemberChanged))
            }
        }
    }

    fn on_delete(&mut self, pod: &Pod) -> Option<MembershipChange> {
        let name = pod.metadata.name.as_ref()?;
        if let Some(listing) = self.listing.as_mut() {
            listing.remove(name);
            return None;
        }
        let member = self.members.remove(name)?;
        let rv = pod.metadata.resource_version.as_deref().unwrap_or_default();
        let fact_id = format!("leave:{}:{}:{rv}", self.ring, member.uid);
        Some(self.emit(
            fact_id,
            rv.to_owned(),
            Change::Left {
                member,
                reason: NotMember::Deleted,
            },
        ))
    }

    fn sync(&mut self, cause: SyncCause) -> MembershipChange {
        let wire: Vec<_> = self.members.values().map(PodMember::to_pb).collect();
        let fact_id = ids::sync_fact_id(&self.ring, &wire, self.head.as_deref());
        let members = self.members.values().cloned().collect();
        self.emit(fact_id.clone(), fact_id, Change::Synced { members, cause })
    }

    fn emit(
        &mut self,
        fact_id: String,
        source_version: String,
        change: Change,
    ) -> MembershipChange {
        self.head = Some(fact_id.clone());
        MembershipChange {
            fact_id,
            source_version,
            change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::kube_fake::PodBuilder;
    use std::collections::BTreeSet;

    const RING: &str = "r";

    /// A pod of the node Deployment: uid `uid-<name>`, port `ringside` 7000.
    fn pod(name: &str, rv: u64, ready: bool, ip: Option<&str>) -> Pod {
        PodBuilder::new(name)
            .uid(&format!("uid-{name}"))
            .resource_version(&rv.to_string())
            .port("ringside", 7000)
            .ready(ready)
            .pod_ip(ip)
            .build()
    }

    fn member(name: &str, ip: &str) -> PodMember {
        PodMember {
            id: name.to_owned(),
            address: format!("{ip}:7000").parse().unwrap(),
            weight: 1,
            uid: format!("uid-{name}"),
        }
    }

    fn tracker() -> PodTracker {
        PodTracker::new(RING, MemberRule::default())
    }

    /// Feeds a complete list of `pods`; returns the sync it ends in.
    fn list(t: &mut PodTracker, pods: &[Pod]) -> MembershipChange {
        assert_eq!(t.apply(Event::Init), None);
        for p in pods {
            assert_eq!(t.apply(Event::InitApply(p.clone())), None);
        }
        t.apply(Event::InitDone).expect("InitDone always syncs")
    }

    fn synced(members: Vec<PodMember>) -> Change {
        Change::Synced {
            members,
            cause: SyncCause::Listed,
        }
    }

    #[test]
    fn the_initial_list_is_one_sync_of_the_members() {
        let mut t = tracker();
        assert!(!t.has_synced());
        let sync = list(
            &mut t,
            &[
                pod("c", 3, true, Some("10.0.0.3")),
                pod("b", 2, false, Some("10.0.0.2")),
                pod("a", 1, true, Some("10.0.0.1")),
                pod("d", 4, true, None),
            ],
        );
        assert_eq!(
            sync.change,
            synced(vec![member("a", "10.0.0.1"), member("c", "10.0.0.3")])
        );
        assert!(sync.fact_id.starts_with("sync:r:"), "{}", sync.fact_id);
        assert!(t.has_synced());
        assert_eq!(t.members().count(), 2);
    }

    #[test]
    fn between_lists_only_real_transitions_are_changes() {
        let mut t = tracker();
        list(
            &mut t,
            &[
                pod("a", 1, true, Some("10.0.0.1")),
                pod("b", 2, false, None),
            ],
        );

        // b gets an IP but is not Ready yet: nothing.
        assert_eq!(
            t.apply(Event::Apply(pod("b", 3, false, Some("10.0.0.2")))),
            None
        );
        let join = t
            .apply(Event::Apply(pod("b", 4, true, Some("10.0.0.2"))))
            .unwrap();
        assert_eq!(join.change, Change::Joined(member("b", "10.0.0.2")));
        assert_eq!(join.fact_id, "join:r:uid-b:4");
        // A status update that changes nothing about membership: nothing.
        assert_eq!(
            t.apply(Event::Apply(pod("b", 5, true, Some("10.0.0.2")))),
            None
        );

        let leave = t
            .apply(Event::Apply(pod("b", 6, false, Some("10.0.0.2"))))
            .unwrap();
        assert_eq!(
            leave.change,
            Change::Left {
                member: member("b", "10.0.0.2"),
                reason: NotMember::NotReady
            }
        );
        assert_eq!(leave.fact_id, "leave:r:uid-b:6");

        let terminating = {
            let mut p = pod("a", 7, true, Some("10.0.0.1"));
            ringside_testkit::kube_fake::set_terminating(&mut p);
            p
        };
        let leave = t.apply(Event::Apply(terminating.clone())).unwrap();
        assert!(matches!(
            leave.change,
            Change::Left {
                reason: NotMember::Terminating,
                ..
            }
        ));
        // Its deletion afterwards is not a second leave.
        assert_eq!(t.apply(Event::Delete(terminating)), None);
        assert_eq!(t.members().count(), 0);
    }

    #[test]
    fn deleting_a_member_is_a_leave() {
        let mut t = tracker();
        list(&mut t, &[pod("a", 1, true, Some("10.0.0.1"))]);
        let leave = t
            .apply(Event::Delete(pod("a", 9, true, Some("10.0.0.1"))))
            .unwrap();
        assert_eq!(
            leave.change,
            Change::Left {
                member: member("a", "10.0.0.1"),
                reason: NotMember::Deleted
            }
        );
        assert_eq!(leave.fact_id, "leave:r:uid-a:9");
        assert_eq!(t.apply(Event::Delete(pod("zz", 10, false, None))), None);
    }

    /// The message id a change is stored under (the events crate's content hash).
    fn msg_id(c: &MembershipChange) -> String {
        let ring = ringside_events::RingName::new(RING).unwrap();
        ringside_events::Event::new(ring, c.body())
            .unwrap()
            .msg_id()
            .to_string()
    }

    #[test]
    fn a_flapping_pod_makes_distinct_facts() {
        let mut t = tracker();
        list(&mut t, &[]);
        let changes: Vec<MembershipChange> = [(2, true), (3, false), (4, true), (5, false)]
            .into_iter()
            .filter_map(|(rv, ready)| t.apply(Event::Apply(pod("a", rv, ready, Some("10.0.0.1")))))
            .collect();
        let ids: Vec<&str> = changes.iter().map(|c| c.fact_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "join:r:uid-a:2",
                "leave:r:uid-a:3",
                "join:r:uid-a:4",
                "leave:r:uid-a:5"
            ]
        );
        // The pod resourceVersion goes into the event, so the two joins (identical but
        // for it) and the two leaves are stored under different message ids.
        let versions: Vec<&str> = changes.iter().map(|c| c.source_version.as_str()).collect();
        assert_eq!(versions, ["2", "3", "4", "5"]);
        let msg_ids: BTreeSet<String> = changes.iter().map(msg_id).collect();
        assert_eq!(msg_ids.len(), 4, "{msg_ids:?}");
        let Body::MembersJoined(join) = changes[2].body() else {
            panic!("expected a join");
        };
        assert_eq!(join.source_version, "4");
        let Body::MemberLeft(leave) = changes[3].body() else {
            panic!("expected a leave");
        };
        assert_eq!(leave.source_version, "5");
        assert_eq!(leave.detail, "not ready");
    }

    #[test]
    fn syncs_carry_their_fact_id() {
        let mut t = tracker();
        let sync = list(&mut t, &[pod("a", 1, true, Some("10.0.0.1"))]);
        let Body::MembershipSynced(s) = sync.body() else {
            panic!("expected a sync");
        };
        assert_eq!(s.resource_version, sync.fact_id);
        assert_eq!(s.source, pb::MembershipSource::Kubernetes as i32);
    }

    #[test]
    fn a_relist_replaces_the_view_whatever_was_missed() {
        let mut t = tracker();
        list(
            &mut t,
            &[
                pod("a", 1, true, Some("10.0.0.1")),
                pod("b", 2, true, Some("10.0.0.2")),
            ],
        );
        // b's deletion and c's arrival were never seen as events.
        let sync = list(
            &mut t,
            &[
                pod("a", 1, true, Some("10.0.0.1")),
                pod("c", 5, true, Some("10.0.0.3")),
            ],
        );
        assert_eq!(
            sync.change,
            synced(vec![member("a", "10.0.0.1"), member("c", "10.0.0.3")])
        );
        let ids: Vec<&str> = t.members().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn an_unchanged_relist_repeats_the_same_id() {
        let mut t = tracker();
        let pods = [pod("a", 1, true, Some("10.0.0.1"))];
        let first = list(&mut t, &pods);
        assert_eq!(list(&mut t, &pods), first);
    }

    #[test]
    fn a_sync_after_other_changes_is_a_new_fact_even_with_an_old_set() {
        // sync{a}, join b, b vanishes unseen, re-list sync{a}: if that sync reused
        // the first one's id, JetStream would drop it and b would stay in the ring.
        let mut t = tracker();
        let a = pod("a", 1, true, Some("10.0.0.1"));
        let first = list(&mut t, std::slice::from_ref(&a));
        t.apply(Event::Apply(pod("b", 2, true, Some("10.0.0.2"))))
            .unwrap();
        let again = list(&mut t, std::slice::from_ref(&a));
        assert_eq!(again.change, first.change);
        assert_ne!(again.fact_id, first.fact_id);

        // Set A, set B, set A again through lists only: three facts.
        let b = pod("b", 3, true, Some("10.0.0.2"));
        let to_b = list(&mut t, std::slice::from_ref(&b));
        let back = list(&mut t, std::slice::from_ref(&a));
        let ids = [&again.fact_id, &to_b.fact_id, &back.fact_id];
        assert!(
            ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
            "{ids:?}"
        );
    }

    #[test]
    fn a_restart_dedups_against_the_stored_head() {
        let pods = [pod("a", 1, true, Some("10.0.0.1"))];
        let mut before = tracker();
        let stored = list(&mut before, &pods);

        // Restart, the last stored change is that sync: the same fact, the same id.
        let mut restarted = tracker().with_head(Some(stored.fact_id.clone()));
        assert_eq!(list(&mut restarted, &pods).fact_id, stored.fact_id);

        // Restart after a join was stored: the sync is a new fact.
        let join = before
            .apply(Event::Apply(pod("b", 2, true, Some("10.0.0.2"))))
            .unwrap();
        let mut restarted = tracker().with_head(Some(join.fact_id));
        assert_ne!(list(&mut restarted, &pods).fact_id, stored.fact_id);
    }

    #[test]
    fn attribute_changes_of_a_member_are_syncs() {
        let mut t = tracker();
        list(&mut t, &[pod("a", 1, true, Some("10.0.0.1"))]);
        let heavier = {
            let mut p = pod("a", 2, true, Some("10.0.0.1"));
            p.metadata.annotations =
                Some([("ringside.io/weight".to_owned(), "4".to_owned())].into());
            p
        };
        let sync = t.apply(Event::Apply(heavier)).unwrap();
        let mut expected = member("a", "10.0.0.1");
        expected.weight = 4;
        assert_eq!(
            sync.change,
            Change::Synced {
                members: vec![expected],
                cause: SyncCause::MemberChanged
            }
        );

        // Same name, new incarnation (a StatefulSet pod re-created, delete unseen).
        let mut reborn = pod("a", 3, true, Some("10.0.0.9"));
        reborn.metadata.uid = Some("uid-a2".to_owned());
        let sync = t.apply(Event::Apply(reborn)).unwrap();
        let Change::Synced { members, .. } = sync.change else {
            panic!("expected a sync, got {sync}");
        };
        assert_eq!(members[0].uid, "uid-a2");
    }

    #[test]
    fn ids_are_scoped_to_the_ring() {
        let pods = [pod("a", 1, true, Some("10.0.0.1"))];
        let mut red = PodTracker::new("red", MemberRule::default());
        let mut blue = PodTracker::new("blue", MemberRule::default());
        assert_ne!(
            list(&mut red, &pods).fact_id,
            list(&mut blue, &pods).fact_id
        );
        assert_ne!(list(&mut red, &[]).fact_id, list(&mut blue, &[]).fact_id);
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// A step of a cluster script: pods change (seen by the watch or not), or the
        /// watcher re-lists, or restarts.
        #[derive(Clone, Debug)]
        enum Step {
            Set {
                pod: u8,
                ready: bool,
                ip: bool,
                weight: u8,
                seen: bool,
            },
            Delete {
                pod: u8,
                seen: bool,
            },
            Relist,
            Restart,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..4u8, any::<bool>(), any::<bool>(), 1..3u8, prop::bool::weighted(0.8))
                    .prop_map(|(pod, ready, ip, weight, seen)| Step::Set { pod, ready, ip, weight, seen }),
                2 => (0..4u8, prop::bool::weighted(0.8)).prop_map(|(pod, seen)| Step::Delete { pod, seen }),
                1 => Just(Step::Relist),
                1 => Just(Step::Restart),
            ]
        }

        proptest! {
            /// Whatever happens, the changes that survive JetStream's dedup (a message
            /// id, the events crate's hash of the event, is stored once, forever) fold
            /// into the truth after every list, and into the tracker's own view after
            /// every change.
            #[test]
            fn stored_changes_fold_into_the_truth(steps in prop::collection::vec(step(), 1..40)) {
                let rule = MemberRule::default();
                let mut cluster: BTreeMap<String, Pod> = BTreeMap::new();
                let mut rv = 1u64;
                let mut incarnation = 0u32;
                let mut stored_ids: BTreeSet<String> = BTreeSet::new();
                let mut head: Option<String> = None;
                let mut folded: BTreeMap<String, PodMember> = BTreeMap::new();
                let mut t = PodTracker::new(RING, rule.clone());

                let mut store = |c: MembershipChange, folded: &mut BTreeMap<String, PodMember>, head: &mut Option<String>| {
                    let event = ringside_events::Event::new(
                        ringside_events::RingName::new(RING).unwrap(),
                        c.body(),
                    )
                    .unwrap();
                    if stored_ids.insert(event.msg_id().to_string()) {
                        c.apply_to(folded);
                        // What a restarted watcher reads back as the head.
                        *head = Some(crate::publish::fact_name(&event));
                    }
                };
                let relist = |t: &mut PodTracker, cluster: &BTreeMap<String, Pod>| {
                    let mut out = vec![];
                    out.extend(t.apply(Event::Init));
                    for p in cluster.values() {
                        out.extend(t.apply(Event::InitApply(p.clone())));
                    }
                    out.extend(t.apply(Event::InitDone));
                    out
                };
                for c in relist(&mut t, &cluster) {
                    store(c, &mut folded, &mut head);
                }

                for s in steps {
                    rv += 1;
                    match s {
                        Step::Set { pod, ready, ip, weight, seen } => {
                            let name = format!("p{pod}");
                            let uid = match cluster.get(&name) {
                                Some(p) => p.metadata.uid.clone().unwrap_or_default(),
                                None => { incarnation += 1; format!("uid-{incarnation}") }
                            };
                            let mut b = PodBuilder::new(&name)
                                .uid(&uid)
                                .resource_version(&rv.to_string())
                                .port("ringside", 7000)
                                .ready(ready)
                                .annotation("ringside.io/weight", &weight.to_string());
                            if ip {
                                b = b.ip(&format!("10.0.0.{pod}"));
                            }
                            let p = b.build();
                            cluster.insert(name, p.clone());
                            if seen && let Some(c) = t.apply(Event::Apply(p)) {
                                store(c, &mut folded, &mut head);
                            }
                        }
                        Step::Delete { pod, seen } => {
                            if let Some(mut p) = cluster.remove(&format!("p{pod}")) {
                                p.metadata.resource_version = Some(rv.to_string());
                                if seen && let Some(c) = t.apply(Event::Delete(p)) {
                                    store(c, &mut folded, &mut head);
                                }
                            }
                        }
                        Step::Relist | Step::Restart => {
                            if matches!(s, Step::Restart) {
                                t = PodTracker::new(RING, rule.clone()).with_head(head.clone());
                            }
                            for c in relist(&mut t, &cluster) {
                                store(c, &mut folded, &mut head);
                            }
                            let truth: BTreeMap<String, PodMember> = cluster
                                .values()
                                .filter_map(|p| match rule.classify(p) {
                                    PodState::Member(m) => Some((m.id.clone(), m)),
                                    PodState::NotMember(_) => None,
                                })
                                .collect();
                            prop_assert_eq!(&folded, &truth);
                        }
                    }
                    let view: BTreeMap<String, PodMember> =
                        t.members().map(|m| (m.id.clone(), m.clone())).collect();
                    prop_assert_eq!(&folded, &view);
                }
            }
        }
    }
}
