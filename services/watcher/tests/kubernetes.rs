//! The watcher against the Kubernetes API fake: kube's real client and watcher talk
//! HTTP to `testkit::kube_fake`, which plays lists, watches, bookmarks, 410 Gone and
//! restarts. After each script the member set folded from the changes that survive
//! deduplication (an id is kept once) equals the truth computed here from the fake's
//! pods, independently of the watcher's own membership rule.

#![allow(
    clippy::expect_used,
    reason = "test harness: a failed setup step must fail the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use ringside_testkit::kube_fake::{KubeFake, PodBuilder};
use ringside_watcher::config::{KEY_KUBE_API_URL, KEY_NAMESPACE, KEY_RING};
use ringside_watcher::{
    Change, Member, MembershipChange, PodTracker, WatcherConfig, kube_client, membership_changes,
    pod_api,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const NS: &str = "ring-test";
const SELECTOR: (&str, &str) = ("app.kubernetes.io/name", "ringside-node");
const DEADLINE: Duration = Duration::from_secs(20);

/// (id, address, weight, uid): what a member is, compared as plain values.
type Row = (String, String, u32, String);

/// A node pod as the Deployment makes it.
fn node(name: &str) -> PodBuilder {
    PodBuilder::new(name)
        .label(SELECTOR.0, SELECTOR.1)
        .port("ringside", 7000)
}

/// The membership the fake's pods imply, written out from the rule in docs/watcher.md.
fn truth(pods: &[Pod]) -> BTreeSet<Row> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SELECTOR.0))
                .map(String::as_str)
                == Some(SELECTOR.1)
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
            let weight = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("ringside.io/weight"))
                .and_then(|w| w.parse().ok())
                .unwrap_or(1);
            ready.then(|| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    format!("{ip}:7000"),
                    weight,
                    p.metadata.uid.clone().unwrap_or_default(),
                )
            })
        })
        .collect()
}

fn rows(set: &BTreeMap<String, Member>) -> BTreeSet<Row> {
    set.values()
        .map(|m| (m.id.clone(), m.address.to_string(), m.weight, m.uid.clone()))
        .collect()
}

/// A running watcher plus what a deduplicating store would hold of its output.
struct Harness {
    fake: KubeFake,
    watcher: Option<JoinHandle<()>>,
    rx: mpsc::UnboundedReceiver<MembershipChange>,
    tx: mpsc::UnboundedSender<MembershipChange>,
    /// Every change the watcher produced, in order.
    produced: Vec<MembershipChange>,
    /// Ids stored so far: a second change under a known id is dropped.
    stored_ids: BTreeSet<String>,
    /// The last stored id (a restarted watcher is seeded with it).
    head: Option<String>,
    folded: BTreeMap<String, Member>,
}

impl Harness {
    async fn new() -> Harness {
        let fake = KubeFake::start(NS).await.expect("start the API fake");
        let (tx, rx) = mpsc::unbounded_channel();
        Harness {
            fake,
            watcher: None,
            rx,
            tx,
            produced: Vec::new(),
            stored_ids: BTreeSet::new(),
            head: None,
            folded: BTreeMap::new(),
        }
    }

    fn config(&self) -> WatcherConfig {
        let map = [
            (KEY_RING, "test"),
            (KEY_NAMESPACE, NS),
            (KEY_KUBE_API_URL, self.fake.url().as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        WatcherConfig::from_map(&map).expect("valid config")
    }

    async fn start_watcher(&mut self) {
        let config = self.config();
        let client = kube_client(&config).await.expect("client for the fake");
        let tracker =
            PodTracker::new(&config.ring, config.rule.clone()).with_head(self.head.clone());
        let stream = membership_changes(pod_api(client, &config), &config.label_selector, tracker);
        let tx = self.tx.clone();
        self.watcher = Some(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(change) = stream.next().await {
                if tx.send(change).is_err() {
                    return;
                }
            }
        }));
    }

    async fn stop_watcher(&mut self) {
        if let Some(task) = self.watcher.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn store(&mut self, change: MembershipChange) {
        if self.stored_ids.insert(change.msg_id.clone()) {
            change.apply_to(&mut self.folded);
            self.head = Some(change.msg_id.clone());
        }
        self.produced.push(change);
    }

    /// The next change (stored), within the deadline.
    async fn next(&mut self) -> MembershipChange {
        let change = tokio::time::timeout(DEADLINE, self.rx.recv())
            .await
            .expect("a change within the deadline")
            .expect("watcher stream open");
        self.store(change.clone());
        change
    }

    /// Waits until the stored changes fold into the fake's truth, and a little longer
    /// for anything that would wrongly follow; returns the changes of this step.
    async fn settle(&mut self) -> Vec<MembershipChange> {
        let start = self.produced.len();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let want = truth(&self.fake.pods());
        while rows(&self.folded) != want {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(change)) => self.store(change),
                Ok(None) => panic!("watcher stream ended"),
                Err(_) => panic!(
                    "no convergence: folded {:?}, truth {want:?}, changes {:?}",
                    rows(&self.folded),
                    &self.produced[start..]
                ),
            }
        }
        // Whatever is already queued belongs to this step too (e.g. a stray duplicate).
        while let Ok(Some(change)) =
            tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await
        {
            self.store(change);
        }
        assert_eq!(rows(&self.folded), want, "a late change broke the fold");
        self.produced[start..].to_vec()
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&KubeFake) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !cond(&self.fake) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn kinds(changes: &[MembershipChange]) -> Vec<&'static str> {
    changes
        .iter()
        .map(|c| match c.change {
            Change::Joined(_) => "join",
            Change::Left { .. } => "leave",
            Change::Synced { .. } => "sync",
        })
        .collect()
}

#[tokio::test]
async fn initial_list_is_one_sync_of_the_ready_addressed_selected_pods() {
    let mut h = Harness::new().await;
    h.fake
        .upsert_pod(node("a").ready(true).ip("10.0.0.1").build());
    h.fake
        .upsert_pod(node("b").ready(false).ip("10.0.0.2").build());
    h.fake.upsert_pod(node("c").ready(true).build());
    h.fake.upsert_pod(
        node("d")
            .ready(true)
            .ip("10.0.0.4")
            .annotation("ringside.io/weight", "3")
            .build(),
    );
    h.fake.upsert_pod(
        PodBuilder::new("other")
            .label(SELECTOR.0, "something-else")
            .port("ringside", 7000)
            .ready(true)
            .ip("10.0.0.9")
            .build(),
    );
    h.start_watcher().await;
    let changes = h.settle().await;
    assert_eq!(kinds(&changes), ["sync"]);
    assert_eq!(h.folded.keys().collect::<Vec<_>>(), ["a", "d"]);
    assert_eq!(h.folded["d"].weight, 3);
    assert_eq!(h.fake.list_calls(), 1);
}

#[tokio::test]
async fn readiness_and_ip_assignment_are_joins_and_leaves() {
    let mut h = Harness::new().await;
    h.start_watcher().await;
    assert_eq!(kinds(&h.settle().await), ["sync"]);

    h.fake.upsert_pod(node("a").build());
    h.fake.set_pod_ip("a", Some("10.0.0.1"));
    assert_eq!(kinds(&h.settle().await), Vec::<&str>::new());
    h.fake.set_ready("a", true);
    assert_eq!(kinds(&h.settle().await), ["join"]);

    // Ready first, IP later: the join waits for the IP.
    h.fake.upsert_pod(node("b").ready(true).build());
    assert_eq!(kinds(&h.settle().await), Vec::<&str>::new());
    h.fake.set_pod_ip("b", Some("10.0.0.2"));
    assert_eq!(kinds(&h.settle().await), ["join"]);

    h.fake.set_ready("a", false);
    assert_eq!(kinds(&h.settle().await), ["leave"]);
    h.fake.set_ready("a", true);
    assert_eq!(kinds(&h.settle().await), ["join"]);
    assert_eq!(h.fake.list_calls(), 1, "no re-list was needed");
}

#[tokio::test]
async fn terminating_and_deleted_pods_leave_once() {
    let mut h = Harness::new().await;
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
        h.fake.upsert_pod(node(name).ready(true).ip(ip).build());
    }
    h.start_watcher().await;
    h.settle().await;

    h.fake.mark_terminating("a");
    assert_eq!(kinds(&h.settle().await), ["leave"]);
    h.fake.delete_pod("a");
    assert_eq!(kinds(&h.settle().await), Vec::<&str>::new());
    h.fake.delete_pod("b");
    assert_eq!(kinds(&h.settle().await), ["leave"]);

    // Relabelled out of the selector: the API sends DELETED, the member leaves.
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    assert_eq!(kinds(&h.settle().await), ["join"]);
    h.fake.modify_pod("c", |p| {
        p.metadata
            .labels
            .get_or_insert_default()
            .insert(SELECTOR.0.into(), "retired".into());
    });
    assert_eq!(kinds(&h.settle().await), ["leave"]);
}

#[tokio::test]
async fn a_bookmark_lets_the_watch_resume_without_a_relist() {
    let mut h = Harness::new().await;
    h.fake
        .upsert_pod(node("a").ready(true).ip("10.0.0.1").build());
    h.fake.upsert_pod(PodBuilder::new("unrelated").build());
    h.start_watcher().await;
    h.settle().await;
    h.wait_for("the first watch", |f| f.open_watches() == 1)
        .await;

    // Changes the selector hides move the resourceVersion on; only a bookmark tells
    // the watcher about it.
    for _ in 0..3 {
        h.fake.modify_pod("unrelated", |p| {
            p.metadata
                .annotations
                .get_or_insert_default()
                .insert("touch".into(), "x".into());
        });
    }
    let bookmark = h.fake.bookmark();
    h.fake.close_watches();
    h.wait_for("the resumed watch", |f| {
        f.watch_calls() == 2 && f.open_watches() == 1
    })
    .await;
    assert_eq!(h.fake.watch_versions()[1], bookmark);
    assert_eq!(h.fake.list_calls(), 1);

    h.fake.set_ready("a", false);
    assert_eq!(kinds(&h.settle().await), ["leave"]);
}

#[tokio::test]
async fn a_resumed_watch_replays_what_a_stalled_one_missed() {
    let mut h = Harness::new().await;
    h.fake
        .upsert_pod(node("a").ready(true).ip("10.0.0.1").build());
    h.start_watcher().await;
    h.settle().await;
    h.wait_for("the first watch", |f| f.open_watches() == 1)
        .await;

    h.fake.stall_watches();
    h.fake
        .upsert_pod(node("b").ready(true).ip("10.0.0.2").build());
    h.fake.delete_pod("a");
    h.fake.close_watches();
    assert_eq!(kinds(&h.settle().await), ["join", "leave"]);
    assert_eq!(h.fake.list_calls(), 1);
}

#[tokio::test]
async fn gone_410_forces_a_relist_that_catches_up_on_missed_changes() {
    let mut h = Harness::new().await;
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
        h.fake.upsert_pod(node(name).ready(true).ip(ip).build());
    }
    h.start_watcher().await;
    let first = h.settle().await;
    h.wait_for("the first watch", |f| f.open_watches() == 1)
        .await;

    // Missed while the watch was stalled: a went NotReady, c arrived.
    h.fake.stall_watches();
    h.fake.set_ready("a", false);
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    h.fake.expire_watches();
    let changes = h.settle().await;
    assert_eq!(
        kinds(&changes),
        ["sync"],
        "only the re-list's sync: {changes:?}"
    );
    assert_eq!(h.fake.list_calls(), 2);

    // Back to {a, b} through a 410 on reconnect: the same content as the first
    // sync, but a new fact (a content-only id would be dropped as a duplicate and the
    // fold would keep {b, c}; settle() would time out).
    h.wait_for("the watch after the re-list", |f| f.open_watches() == 1)
        .await;
    h.fake.stall_watches();
    h.fake.set_ready("a", true);
    h.fake.delete_pod("c");
    h.fake.expire_next_watch();
    h.fake.close_watches();
    let changes = h.settle().await;
    assert_eq!(kinds(&changes), ["sync"]);
    assert_eq!(changes[0].change, first[0].change);
    assert_ne!(changes[0].msg_id, first[0].msg_id);
    assert_eq!(h.fake.list_calls(), 3);
}

#[tokio::test]
async fn a_restart_while_pods_change_resyncs_and_an_idle_restart_stores_nothing() {
    let mut h = Harness::new().await;
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
        h.fake.upsert_pod(node(name).ready(true).ip(ip).build());
    }
    h.start_watcher().await;
    h.settle().await;
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    assert_eq!(kinds(&h.settle().await), ["join"]);

    h.stop_watcher().await;
    h.fake.delete_pod("c");
    h.fake.set_ready("a", false);
    h.fake
        .upsert_pod(node("d").ready(true).ip("10.0.0.4").build());
    h.start_watcher().await;
    assert_eq!(kinds(&h.settle().await), ["sync"]);

    // A restart that sees the same pods produces the sync already stored: kept once.
    let stored = h.stored_ids.len();
    h.stop_watcher().await;
    h.start_watcher().await;
    let sync = h.next().await;
    assert_eq!(kinds(std::slice::from_ref(&sync)), ["sync"]);
    assert_eq!(
        h.stored_ids.len(),
        stored,
        "the idle restart stored a new fact"
    );

    // c joins, then goes while the watcher is down. The re-list's set {b, d} was
    // synced before, but the join of c came after: if the new sync were dropped as a
    // duplicate, c would stay and settle() would time out.
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    assert_eq!(kinds(&h.settle().await), ["join"]);
    h.stop_watcher().await;
    h.fake.delete_pod("c");
    h.start_watcher().await;
    h.settle().await;
}
