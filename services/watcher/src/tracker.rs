//! [`PodTracker`]: turns the watcher's pod events into membership changes with
//! deterministic message ids.
//!
//! Pure and synchronous: fed `kube::runtime::watcher::Event<Pod>` values, it returns
//! at most one [`MembershipChange`] per event. Every list (`Init` .. `InitDone`, at start,
//! after a 410 Gone or a desync, after a restart) is the truth and ends in a full
//! [`Change::Synced`]; between lists, `Apply`/`Delete` events become joins and leaves,
//! only when a pod's membership actually changes.
//!
//! # Message ids
//!
//! JetStream drops a message whose `Nats-Msg-Id` it has seen within its duplicate
//! window, so an id must name exactly one fact:
//! - `join:<ring>:<uid>:<resourceVersion>` and `leave:<ring>:<uid>:<resourceVersion>`:
//!   the pod object version that caused the transition. A pod that flaps
//!   Ready -> NotReady -> Ready makes three distinct facts.
//! - `sync:<ring>:<set>:<basis>`: `<set>` hashes the sorted member set, `<basis>`
//!   hashes the id of the previous change on the ring's subject (the head). If the head
//!   already is a sync of the same set, the sync reuses the head's id: a restart or
//!   re-list that sees nothing new stores nothing new. A content-only id would be
//!   wrong: after `sync{a}`, `join b`, and `b` vanishing during a watch gap, the re-list's
//!   `sync{a}` would be dropped as a duplicate of the first and `b` would stay forever.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;

use crate::member::{Member, MemberRule, NotMember, PodState};

/// What changed in the ring's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A pod became a member.
    Joined(Member),
    /// A member stopped being one.
    Left {
        /// The member as it was while it was one.
        member: Member,
        /// Why it left.
        reason: NotMember,
    },
    /// The full member set, sorted by id.
    Synced {
        /// Every member, sorted by id.
        members: Vec<Member>,
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
    /// The publisher asked for it ([`PodTracker::restate`]).
    Restated,
}

/// A change together with the message id it is published under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    /// Deterministic `Nats-Msg-Id` (see the module docs).
    pub msg_id: String,
    /// The change itself.
    pub change: Change,
}

impl MembershipChange {
    /// Applies this change to a member set keyed by member id: what a consumer's fold
    /// does with it (a sync replaces the whole set).
    pub fn apply_to(&self, set: &mut BTreeMap<String, Member>) {
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
                    SyncCause::Restated => "restated",
                };
                write!(f, "synced {} members ({why})", members.len())
            }
        }
    }
}

/// Folds pod events into membership changes for one ring.
#[derive(Clone, Debug)]
pub struct PodTracker {
    ring: String,
    rule: MemberRule,
    /// The membership the emitted changes imply, keyed by pod name.
    members: BTreeMap<String, Member>,
    /// The members seen so far by the list in progress (`Init` .. `InitDone`).
    listing: Option<BTreeMap<String, Member>>,
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

    /// States the current member set as a sync (with the usual sync id). The publisher
    /// uses it when a join's event was already stored by an earlier identical fact:
    /// the events crate derives message ids from content, so a pod that re-joins with
    /// the same uid and address within the duplicate window would otherwise be dropped.
    pub fn restate(&mut self) -> MembershipChange {
        self.sync(SyncCause::Restated)
    }

    /// The members the emitted changes imply, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
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
                let msg_id = format!("join:{}:{}:{rv}", self.ring, m.uid);
                self.members.insert(name.clone(), m.clone());
                Some(self.emit(msg_id, Change::Joined(m)))
            }
            (Some(_), PodState::NotMember(reason)) => {
                let member = self.members.remove(name)?;
                let msg_id = format!("leave:{}:{}:{rv}", self.ring, member.uid);
                Some(self.emit(msg_id, Change::Left { member, reason }))
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
        let msg_id = format!("leave:{}:{}:{rv}", self.ring, member.uid);
        Some(self.emit(
            msg_id,
            Change::Left {
                member,
                reason: NotMember::Deleted,
            },
        ))
    }

    fn sync(&mut self, cause: SyncCause) -> MembershipChange {
        let prefix = format!("sync:{}:{:032x}:", self.ring, set_hash(&self.members));
        let msg_id = match &self.head {
            // Same set as the last stored change: the same fact, the same id.
            Some(head) if head.starts_with(&prefix) => head.clone(),
            head => {
                let basis =
                    xxhash_rust::xxh3::xxh3_64(head.as_deref().unwrap_or_default().as_bytes());
                format!("{prefix}{basis:016x}")
            }
        };
        let members = self.members.values().cloned().collect();
        self.emit(msg_id, Change::Synced { members, cause })
    }

    fn emit(&mut self, msg_id: String, change: Change) -> MembershipChange {
        self.head = Some(msg_id.clone());
        MembershipChange { msg_id, change }
    }
}

/// Hash of a member set, independent of anything but its content. Fields are
/// length-prefixed so that no two different sets encode to the same bytes.
fn set_hash(members: &BTreeMap<String, Member>) -> u128 {
    let mut buf = Vec::new();
    for m in members.values() {
        for field in [m.id.as_str(), m.uid.as_str(), &m.address.to_string()] {
            buf.extend_from_slice(&(field.len() as u64).to_le_bytes());
            buf.extend_from_slice(field.as_bytes());
        }
        buf.extend_from_slice(&m.weight.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_128(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::kube_fake::PodBuilder;

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

    fn member(name: &str, ip: &str) -> Member {
        Member {
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

    fn synced(members: Vec<Member>) -> Change {
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
        assert!(sync.msg_id.starts_with("sync:r:"), "{}", sync.msg_id);
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
        assert_eq!(join.msg_id, "join:r:uid-b:4");
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
        assert_eq!(leave.msg_id, "leave:r:uid-b:6");

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
        assert_eq!(leave.msg_id, "leave:r:uid-a:9");
        assert_eq!(t.apply(Event::Delete(pod("zz", 10, false, None))), None);
    }

    #[test]
    fn a_flapping_pod_makes_distinct_facts() {
        let mut t = tracker();
        list(&mut t, &[]);
        let ids: Vec<String> = [(2, true), (3, false), (4, true), (5, false)]
            .into_iter()
            .filter_map(|(rv, ready)| t.apply(Event::Apply(pod("a", rv, ready, Some("10.0.0.1")))))
            .map(|c| c.msg_id)
            .collect();
        assert_eq!(
            ids,
            [
                "join:r:uid-a:2",
                "leave:r:uid-a:3",
                "join:r:uid-a:4",
                "leave:r:uid-a:5"
            ]
        );
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
        assert_ne!(again.msg_id, first.msg_id);

        // Set A, set B, set A again through lists only: three facts.
        let b = pod("b", 3, true, Some("10.0.0.2"));
        let to_b = list(&mut t, std::slice::from_ref(&b));
        let back = list(&mut t, std::slice::from_ref(&a));
        let ids = [&again.msg_id, &to_b.msg_id, &back.msg_id];
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
        let mut restarted = tracker().with_head(Some(stored.msg_id.clone()));
        assert_eq!(list(&mut restarted, &pods).msg_id, stored.msg_id);

        // Restart after a join was stored: the sync is a new fact.
        let join = before
            .apply(Event::Apply(pod("b", 2, true, Some("10.0.0.2"))))
            .unwrap();
        let mut restarted = tracker().with_head(Some(join.msg_id));
        assert_ne!(list(&mut restarted, &pods).msg_id, stored.msg_id);
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
        assert_ne!(list(&mut red, &pods).msg_id, list(&mut blue, &pods).msg_id);
        assert_ne!(list(&mut red, &[]).msg_id, list(&mut blue, &[]).msg_id);
    }

    mod property {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

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
            /// Whatever happens, the changes that survive JetStream's dedup (an id is
            /// stored once, forever) fold into the truth after every list, and into
            /// the tracker's own view after every change.
            #[test]
            fn stored_changes_fold_into_the_truth(steps in prop::collection::vec(step(), 1..40)) {
                let rule = MemberRule::default();
                let mut cluster: BTreeMap<String, Pod> = BTreeMap::new();
                let mut rv = 1u64;
                let mut incarnation = 0u32;
                let mut stored_ids: BTreeSet<String> = BTreeSet::new();
                let mut head: Option<String> = None;
                let mut folded: BTreeMap<String, Member> = BTreeMap::new();
                let mut t = PodTracker::new(RING, rule.clone());

                let mut store = |c: MembershipChange, folded: &mut BTreeMap<String, Member>, head: &mut Option<String>| {
                    if stored_ids.insert(c.msg_id.clone()) {
                        c.apply_to(folded);
                        *head = Some(c.msg_id);
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
                            let truth: BTreeMap<String, Member> = cluster
                                .values()
                                .filter_map(|p| match rule.classify(p) {
                                    PodState::Member(m) => Some((m.id.clone(), m)),
                                    PodState::NotMember(_) => None,
                                })
                                .collect();
                            prop_assert_eq!(&folded, &truth);
                        }
                    }
                    let view: BTreeMap<String, Member> =
                        t.members().map(|m| (m.id.clone(), m.clone())).collect();
                    prop_assert_eq!(&folded, &view);
                }
            }
        }
    }
}
