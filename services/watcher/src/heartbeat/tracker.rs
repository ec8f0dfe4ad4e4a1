//! [`HeartbeatTracker`]: turns heartbeats and the passing of time into membership
//! facts. Pure and synchronous: the caller passes the instants (tokio's clock in the
//! service, made-up instants in tests).
//!
//! # Rules
//! - A heartbeat of an unknown member, or one whose incarnation (`uid`), address,
//!   weight, zone or labels differ from the last beat, is a join: `MembersJoined` with
//!   `source_version` `<uid>:<beat>` (a re-weight or a new incarnation is a join of a
//!   present member, which the fold turns into an update).
//! - A member that has not beaten for `missed_beats` of its intervals leaves:
//!   `MemberLeft` (reason `HEARTBEAT_MISSED`, `source_version` `<uid>:missed@<last
//!   beat>`).
//! - A goodbye beat is an immediate leave (reason `GOODBYE`, `<uid>:goodbye@<beat>`);
//!   a goodbye of an earlier incarnation is ignored.
//! - [`HeartbeatTracker::sync`] states every live member (`MembershipSynced` with a
//!   sync fact id, [`crate::ids`]); [`HeartbeatTracker::sync_ready_at`] is when the
//!   tracker has listened long enough (`missed_beats` of the longest interval) to have
//!   heard every live member, so a restarted watcher never syncs a live member away.
//! - Heartbeats without an incarnation (`member.uid`) are refused: without it a
//!   restarted node's beats 1, 2, ... would repeat the earlier facts' ids.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ringside_events::{Body, pb};
use tokio::time::Instant;

use super::config::{MAX_INTERVAL, MIN_INTERVAL};
use crate::ids;

/// Why a heartbeat was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The heartbeat names no member.
    NoMember,
    /// The member has no incarnation (`uid`).
    NoIncarnation,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::NoMember => "the heartbeat names no member",
            Refused::NoIncarnation => "the member has no incarnation (member.uid)",
        })
    }
}

/// A member that beats.
#[derive(Clone, Debug)]
struct Alive {
    member: pb::Member,
    last_beat: u64,
    interval: Duration,
    deadline: Instant,
}

/// Heartbeats of one ring, folded into the set of live members.
#[derive(Clone, Debug)]
pub struct HeartbeatTracker {
    ring: String,
    interval: Duration,
    missed_beats: u32,
    alive: BTreeMap<String, Alive>,
    listening_since: Instant,
    longest_interval: Duration,
}

impl HeartbeatTracker {
    /// A tracker that starts listening at `now`: beats are expected every `interval`
    /// (unless a beat states its own), and `missed_beats` intervals without one are a
    /// leave.
    pub fn new(
        ring: impl Into<String>,
        interval: Duration,
        missed_beats: u32,
        now: Instant,
    ) -> Self {
        let interval = interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        HeartbeatTracker {
            ring: ring.into(),
            interval,
            missed_beats: missed_beats.max(1),
            alive: BTreeMap::new(),
            listening_since: now,
            longest_interval: interval,
        }
    }

    /// Takes one heartbeat received at `now`; returns the fact it makes, if any.
    pub fn beat(&mut self, hb: &pb::HeartbeatSent, now: Instant) -> Result<Option<Body>, Refused> {
        let member = hb.member.as_ref().ok_or(Refused::NoMember)?;
        let uid = member.uid.as_deref().ok_or(Refused::NoIncarnation)?;
        if hb.goodbye {
            let same_incarnation = self
                .alive
                .get(&member.id)
                .is_some_and(|a| a.member.uid.as_deref() == Some(uid));
            if !same_incarnation {
                return Ok(None);
            }
            self.alive.remove(&member.id);
            return Ok(Some(leave(
                member,
                pb::LeaveReason::Goodbye,
                format!("{uid}:goodbye@{}", hb.beat),
                format!("goodbye at beat {}", hb.beat),
            )));
        }
        let interval = hb
            .interval
            .as_ref()
            .and_then(|d| Duration::try_from(*d).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(self.interval)
            .clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.longest_interval = self.longest_interval.max(interval);
        let deadline = now + interval * self.missed_beats;
        if let Some(alive) = self.alive.get_mut(&member.id)
            && alive.member == *member
        {
            alive.last_beat = alive.last_beat.max(hb.beat);
            alive.interval = interval;
            alive.deadline = deadline;
            return Ok(None);
        }
        self.alive.insert(
            member.id.clone(),
            Alive {
                member: member.clone(),
                last_beat: hb.beat,
                interval,
                deadline,
            },
        );
        Ok(Some(Body::from(pb::MembersJoined {
            members: vec![member.clone()],
            source: pb::MembershipSource::Heartbeat as i32,
            source_version: format!("{uid}:{}", hb.beat),
        })))
    }

    /// Removes the members whose deadline has passed at `now`; returns their leaves,
    /// in id order.
    pub fn expire(&mut self, now: Instant) -> Vec<Body> {
        let gone: Vec<String> = self
            .alive
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        gone.iter()
            .filter_map(|id| self.alive.remove(id))
            .map(|a| {
                let uid = a.member.uid.as_deref().unwrap_or_default();
                leave(
                    &a.member,
                    pb::LeaveReason::HeartbeatMissed,
                    format!("{uid}:missed@{}", a.last_beat),
                    format!(
                        "missed {} beats of {:?} after beat {}",
                        self.missed_beats, a.interval, a.last_beat
                    ),
                )
            })
            .collect()
    }

    /// When the next member's deadline passes, if any member is alive.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.alive.values().map(|a| a.deadline).min()
    }

    /// From when on a sync states every live member: the tracker has listened for
    /// `missed_beats` of the longest interval it knows.
    pub fn sync_ready_at(&self) -> Instant {
        self.listening_since + self.longest_interval * self.missed_beats
    }

    /// The live members as a sync after the fact `head` (the last stored fact on the
    /// ring's subject; see [`crate::ids`]).
    pub fn sync(&self, head: Option<&str>) -> Body {
        let members: Vec<pb::Member> = self.members().cloned().collect();
        let resource_version = ids::sync_fact_id(&self.ring, &members, head);
        Body::from(pb::MembershipSynced {
            members,
            source: pb::MembershipSource::Heartbeat as i32,
            resource_version,
        })
    }

    /// The live members, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &pb::Member> {
        self.alive.values().map(|a| &a.member)
    }
}

fn leave(
    member: &pb::Member,
    reason: pb::LeaveReason,
    source_version: String,
    detail: String,
) -> Body {
    Body::from(pb::MemberLeft {
        member_id: member.id.clone(),
        uid: member.uid.clone(),
        reason: reason as i32,
        source: pb::MembershipSource::Heartbeat as i32,
        detail,
        source_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn member(id: &str, uid: &str, weight: u32) -> pb::Member {
        pb::Member {
            id: id.into(),
            address: format!("127.0.0.1:{}", 7000 + weight),
            weight,
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn hb(m: &pb::Member, beat: u64, interval_ms: Option<u64>) -> pb::HeartbeatSent {
        pb::HeartbeatSent {
            member: Some(m.clone()),
            beat,
            interval: interval_ms.map(|ms| pbjson_types::Duration::from(Duration::from_millis(ms))),
            goodbye: false,
        }
    }

    fn goodbye(m: &pb::Member, beat: u64) -> pb::HeartbeatSent {
        pb::HeartbeatSent {
            goodbye: true,
            ..hb(m, beat, Some(100))
        }
    }

    fn tracker(t0: Instant) -> HeartbeatTracker {
        HeartbeatTracker::new("r", 100 * MS, 3, t0)
    }

    fn version(body: &Body) -> String {
        match body {
            Body::MembersJoined(j) => j.source_version.clone(),
            Body::MemberLeft(l) => l.source_version.clone(),
            Body::MembershipSynced(s) => s.resource_version.clone(),
            other => panic!("not a membership fact: {other:?}"),
        }
    }

    #[test]
    fn a_first_beat_is_a_join_and_later_beats_are_nothing() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        let a = member("a", "u1", 1);
        let join = t.beat(&hb(&a, 1, Some(100)), t0).unwrap().unwrap();
        let Body::MembersJoined(j) = &join else {
            panic!("{join:?}")
        };
        assert_eq!(j.members, std::slice::from_ref(&a));
        assert_eq!(j.source, pb::MembershipSource::Heartbeat as i32);
        assert_eq!(j.source_version, "u1:1");
        for beat in 2..10 {
            assert_eq!(
                t.beat(&hb(&a, beat, Some(100)), t0 + MS * 100 * beat as u32),
                Ok(None)
            );
        }
        assert_eq!(t.members().count(), 1);
    }

    #[test]
    fn a_new_incarnation_or_new_details_are_joins() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.beat(&hb(&member("a", "u1", 1), 1, None), t0).unwrap();
        let heavier = t
            .beat(&hb(&member("a", "u1", 2), 2, None), t0)
            .unwrap()
            .unwrap();
        assert_eq!(version(&heavier), "u1:2");
        let reborn = t
            .beat(&hb(&member("a", "u2", 2), 1, None), t0)
            .unwrap()
            .unwrap();
        assert_eq!(version(&reborn), "u2:1");
        assert_eq!(t.members().next().unwrap().uid.as_deref(), Some("u2"));
    }

    #[test]
    fn missed_beats_make_a_leave_at_the_deadline() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        let a = member("a", "u1", 1);
        t.beat(&hb(&a, 1, Some(100)), t0).unwrap();
        t.beat(&hb(&a, 2, Some(100)), t0 + 100 * MS).unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + 400 * MS));
        assert!(t.expire(t0 + 399 * MS).is_empty());
        let leaves = t.expire(t0 + 400 * MS);
        let [Body::MemberLeft(l)] = leaves.as_slice() else {
            panic!("{leaves:?}")
        };
        assert_eq!(l.member_id, "a");
        assert_eq!(l.uid.as_deref(), Some("u1"));
        assert_eq!(l.reason, pb::LeaveReason::HeartbeatMissed as i32);
        assert_eq!(l.source_version, "u1:missed@2");
        assert_eq!(t.next_deadline(), None);

        // It comes back with the same incarnation: a new join, not the old one.
        let back = t
            .beat(&hb(&a, 7, Some(100)), t0 + 700 * MS)
            .unwrap()
            .unwrap();
        assert_eq!(version(&back), "u1:7");
    }

    #[test]
    fn the_stated_interval_counts_and_bad_ones_fall_back() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.beat(&hb(&member("slow", "u1", 1), 1, Some(1000)), t0)
            .unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + 3000 * MS));
        let mut silent = hb(&member("unsaid", "u2", 1), 1, None);
        t.beat(&silent, t0).unwrap();
        silent.interval = Some(pbjson_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        t.beat(&silent, t0 + MS).unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + MS + 300 * MS));
        // Absurd intervals are clamped: a node cannot hold its place for a day.
        t.beat(&hb(&member("sleepy", "u3", 1), 1, Some(86_400_000)), t0)
            .unwrap();
        let leaves = t.expire(t0 + MAX_INTERVAL * 3);
        assert_eq!(leaves.len(), 3);
    }

    #[test]
    fn a_goodbye_is_an_immediate_leave_of_that_incarnation_only() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        let a1 = member("a", "u1", 1);
        let a2 = member("a", "u2", 1);
        t.beat(&hb(&a2, 1, None), t0).unwrap();
        // A late goodbye of the previous incarnation changes nothing.
        assert_eq!(t.beat(&goodbye(&a1, 9), t0), Ok(None));
        let bye = t.beat(&goodbye(&a2, 4), t0).unwrap().unwrap();
        let Body::MemberLeft(l) = &bye else {
            panic!("{bye:?}")
        };
        assert_eq!(l.reason, pb::LeaveReason::Goodbye as i32);
        assert_eq!(l.source_version, "u2:goodbye@4");
        assert_eq!(t.members().count(), 0);
        // Said twice (a retry): once is enough.
        assert_eq!(t.beat(&goodbye(&a2, 4), t0), Ok(None));
    }

    #[test]
    fn beats_without_member_or_incarnation_are_refused() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        let mut anonymous = member("a", "u1", 1);
        anonymous.uid = None;
        assert_eq!(
            t.beat(&hb(&anonymous, 1, None), t0),
            Err(Refused::NoIncarnation)
        );
        let empty = pb::HeartbeatSent::default();
        assert_eq!(t.beat(&empty, t0), Err(Refused::NoMember));
        assert_eq!(t.members().count(), 0);
    }

    #[test]
    fn the_listening_window_covers_the_longest_interval() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        assert_eq!(t.sync_ready_at(), t0 + 300 * MS);
        t.beat(&hb(&member("slow", "u1", 1), 1, Some(500)), t0)
            .unwrap();
        assert_eq!(t.sync_ready_at(), t0 + 1500 * MS);
    }

    #[test]
    fn syncs_state_the_live_set_and_dedup_against_themselves() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.beat(&hb(&member("b", "u2", 1), 1, None), t0).unwrap();
        t.beat(&hb(&member("a", "u1", 1), 1, None), t0).unwrap();
        let first = t.sync(None);
        let Body::MembershipSynced(s) = &first else {
            panic!("{first:?}")
        };
        let ids: Vec<&str> = s.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(s.source, pb::MembershipSource::Heartbeat as i32);
        let id = version(&first);
        assert_eq!(
            version(&t.sync(Some(&id))),
            id,
            "same set after itself: same fact"
        );
        assert_ne!(
            version(&t.sync(Some("r:joined:c:0"))),
            id,
            "after another fact: new"
        );
    }
}
