//! The watcher end to end: kube's real client and watcher talk HTTP to
//! `testkit::kube_fake` (which plays lists, watches, bookmarks, 410 Gone), and the
//! watcher publishes to a real nats-server (`nats/local.conf`, the `watcher` user).
//! After each step, the ring folded from the events stored in JetStream (with the
//! reducer's own fold, `RingLedger`) has exactly the members the fake's pods imply
//! (computed here independently of the watcher's membership rule), no stored join or
//! leave repeats a fact already in effect, and no message id is stored twice.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed setup step must fail the test loudly"
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Nats, Row, StoredFold};
use k8s_openapi::api::core::v1::Pod;
use ringside_testkit::kube_fake::{KubeFake, PodBuilder};
use ringside_watcher::WatcherConfig;
use ringside_watcher::config::{KEY_KUBE_API_URL, KEY_NAMESPACE};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NS: &str = "ring-test";
const RING: &str = "test";
const SELECTOR: (&str, &str) = ("app.kubernetes.io/name", "ringside-node");
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a step waits, after converging, for anything that would wrongly follow.
const QUIET: Duration = Duration::from_millis(300);

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

/// The spawned `run_with_readiness`.
type WatcherTask = JoinHandle<Result<(), ringside_watcher::WatcherError>>;

/// The API fake, a real NATS server, the watcher under test, and the fold of what
/// JetStream stored.
struct Harness {
    fake: KubeFake,
    _nats: Nats,
    config: WatcherConfig,
    watcher: Option<(WatcherTask, oneshot::Sender<()>)>,
    ready: Option<watch::Receiver<bool>>,
    fold: StoredFold,
}

impl Harness {
    async fn new() -> Harness {
        let fake = KubeFake::start(NS).await.expect("start the API fake");
        let nats = Nats::start().await;
        let map = nats.watcher_map(
            RING,
            &[(KEY_NAMESPACE, NS), (KEY_KUBE_API_URL, fake.url().as_str())],
        );
        let config = WatcherConfig::from_map(&map).expect("valid config");
        let fold = nats.fold(RING).await;
        Harness {
            fake,
            _nats: nats,
            config,
            watcher: None,
            ready: None,
            fold,
        }
    }

    fn start_watcher(&mut self) {
        let (ready_tx, ready_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let config = self.config.clone();
        let task = tokio::spawn(ringside_watcher::kubernetes::run_with_readiness(
            config,
            ready_tx,
            async move {
                // A dropped sender (the harness gone) also means stop.
                let _ = stop_rx.await;
            },
        ));
        self.watcher = Some((task, stop_tx));
        self.ready = Some(ready_rx);
    }

    /// Graceful stop: the shutdown future completes, `run` returns Ok.
    async fn stop_watcher(&mut self) {
        let (task, stop) = self.watcher.take().expect("a running watcher");
        let _ = stop.send(());
        let result = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the watcher stops when asked")
            .expect("the watcher task did not panic");
        result.expect("a clean shutdown");
    }

    /// Hard stop, as a crash or SIGKILL: the task is dropped wherever it is.
    async fn kill_watcher(&mut self) {
        let (task, _stop) = self.watcher.take().expect("a running watcher");
        task.abort();
        let _ = task.await;
    }

    fn is_ready(&self) -> bool {
        self.ready.as_ref().is_some_and(|r| *r.borrow())
    }

    /// Waits until the stored events fold into the fake's truth, then a little longer
    /// for anything that would wrongly follow; returns the kinds stored in this step.
    async fn settle(&mut self) -> Vec<&'static str> {
        let want = truth(&self.fake.pods());
        self.fold.settle(&want, DEADLINE, QUIET).await
    }

    /// Adds Ready node pods with these names and IPs.
    fn add_ready_nodes(&self, nodes: &[(&str, &str)]) {
        for (name, ip) in nodes {
            self.fake.upsert_pod(node(name).ready(true).ip(ip).build());
        }
    }

    /// Waits until the fake's counters say what the script needs.
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

const NOTHING: [&str; 0] = [];

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
    assert!(!h.is_ready());
    h.start_watcher();
    assert_eq!(h.settle().await, ["sync"]);
    assert_eq!(h.fold.ids(), ["a", "d"]);
    assert!(h.fold.rows().iter().any(|r| r.0 == "d" && r.2 == 3));
    assert_eq!(h.fake.list_calls(), 1);
    assert!(h.is_ready(), "ready once the first sync is stored");
    h.stop_watcher().await;
}

#[tokio::test]
async fn readiness_and_ip_assignment_are_joins_and_leaves() {
    let mut h = Harness::new().await;
    h.start_watcher();
    assert_eq!(h.settle().await, ["sync"]);

    h.fake.upsert_pod(node("a").build());
    h.fake.set_pod_ip("a", Some("10.0.0.1"));
    assert_eq!(h.settle().await, NOTHING);
    h.fake.set_ready("a", true);
    assert_eq!(h.settle().await, ["join"]);

    // Ready first, IP later: the join waits for the IP.
    h.fake.upsert_pod(node("b").ready(true).build());
    assert_eq!(h.settle().await, NOTHING);
    h.fake.set_pod_ip("b", Some("10.0.0.2"));
    assert_eq!(h.settle().await, ["join"]);

    // A flap: NotReady, then Ready again, same pod, same IP. The second join differs
    // from the first only in its source_version (the pod's resourceVersion), which
    // keeps it from being dropped as a duplicate of the first. (Without it the fold
    // would miss a, and settle() would time out.)
    h.fake.set_ready("a", false);
    assert_eq!(h.settle().await, ["leave"]);
    h.fake.set_ready("a", true);
    assert_eq!(h.settle().await, ["join"], "{:?}", h.fold.stored);
    h.fake.set_ready("a", false);
    assert_eq!(h.settle().await, ["leave"], "{:?}", h.fold.stored);
    assert_eq!(h.fake.list_calls(), 1, "no re-list was needed");
    h.stop_watcher().await;
}

#[tokio::test]
async fn terminating_deleted_and_unselected_pods_leave_once() {
    let mut h = Harness::new().await;
    h.add_ready_nodes(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    h.start_watcher();
    h.settle().await;

    h.fake.mark_terminating("a");
    assert_eq!(h.settle().await, ["leave"]);
    h.fake.delete_pod("a");
    assert_eq!(h.settle().await, NOTHING);
    h.fake.delete_pod("b");
    assert_eq!(h.settle().await, ["leave"]);

    // Relabelled out of the selector: the API sends DELETED, the member leaves.
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    assert_eq!(h.settle().await, ["join"]);
    h.fake.modify_pod("c", |p| {
        p.metadata
            .labels
            .get_or_insert_default()
            .insert(SELECTOR.0.into(), "retired".into());
    });
    assert_eq!(h.settle().await, ["leave"]);
    h.stop_watcher().await;
}

#[tokio::test]
async fn a_bookmark_lets_the_watch_resume_without_a_relist() {
    let mut h = Harness::new().await;
    h.fake
        .upsert_pod(node("a").ready(true).ip("10.0.0.1").build());
    h.fake.upsert_pod(PodBuilder::new("unrelated").build());
    h.start_watcher();
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
    assert_eq!(h.settle().await, ["leave"]);
    h.stop_watcher().await;
}

#[tokio::test]
async fn a_resumed_watch_replays_what_a_stalled_one_missed() {
    let mut h = Harness::new().await;
    h.fake
        .upsert_pod(node("a").ready(true).ip("10.0.0.1").build());
    h.start_watcher();
    h.settle().await;
    h.wait_for("the first watch", |f| f.open_watches() == 1)
        .await;

    h.fake.stall_watches();
    h.fake
        .upsert_pod(node("b").ready(true).ip("10.0.0.2").build());
    h.fake.delete_pod("a");
    h.fake.close_watches();
    assert_eq!(h.settle().await, ["join", "leave"]);
    assert_eq!(h.fake.list_calls(), 1);
    h.stop_watcher().await;
}

#[tokio::test]
async fn gone_410_forces_a_relist_that_catches_up_on_missed_changes() {
    let mut h = Harness::new().await;
    h.add_ready_nodes(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    h.start_watcher();
    assert_eq!(h.settle().await, ["sync"]);
    h.wait_for("the first watch", |f| f.open_watches() == 1)
        .await;

    // Missed while the watch was stalled: a went NotReady, c arrived.
    h.fake.stall_watches();
    h.fake.set_ready("a", false);
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    h.fake.expire_watches();
    assert_eq!(h.settle().await, ["sync"]);
    assert_eq!(h.fake.list_calls(), 2);

    // Back to {a, b} through a 410 on reconnect: the same content as the first
    // sync, but a new fact. (Stored under the first sync's id, it would be dropped
    // as a duplicate, the fold would keep {b, c} and settle() would time out.)
    h.wait_for("the watch after the re-list", |f| f.open_watches() == 1)
        .await;
    h.fake.stall_watches();
    h.fake.set_ready("a", true);
    h.fake.delete_pod("c");
    h.fake.expire_next_watch();
    h.fake.close_watches();
    assert_eq!(h.settle().await, ["sync"]);
    assert_eq!(h.fake.list_calls(), 3);

    // A 410 with nothing changed: the re-list's sync is the stored head, kept once.
    h.wait_for("the watch after the second re-list", |f| {
        f.open_watches() == 1
    })
    .await;
    // The watch starts only after the re-list's sync was acknowledged.
    let watches = h.fake.watch_calls();
    h.fake.expire_watches();
    h.wait_for("the watch after the third re-list", |f| {
        f.list_calls() == 4 && f.watch_calls() > watches
    })
    .await;
    assert_eq!(h.settle().await, NOTHING);
    h.stop_watcher().await;
}

#[tokio::test]
async fn restarts_while_pods_change_resync_and_an_idle_restart_stores_nothing() {
    let mut h = Harness::new().await;
    h.add_ready_nodes(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    h.start_watcher();
    h.settle().await;
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    assert_eq!(h.settle().await, ["join"]);

    // Crash, pods change while nobody watches, start again.
    h.kill_watcher().await;
    h.fake.delete_pod("c");
    h.fake.set_ready("a", false);
    h.fake
        .upsert_pod(node("d").ready(true).ip("10.0.0.4").build());
    h.start_watcher();
    assert_eq!(h.settle().await, ["sync"]);

    // A restart that sees the same pods: its sync is the stored head, kept once.
    h.stop_watcher().await;
    let (lists, watches) = (h.fake.list_calls(), h.fake.watch_calls());
    h.start_watcher();
    // The watch starts only after the list's sync was acknowledged.
    h.wait_for("the restarted watcher's list and watch", |f| {
        f.list_calls() > lists && f.watch_calls() > watches
    })
    .await;
    assert_eq!(h.settle().await, NOTHING);
    assert!(h.is_ready());

    // c joins again, then goes while the watcher is down. The re-list's set {b, d}
    // was synced before, but c's join came after: were the new sync dropped as a
    // duplicate of the earlier one, c would stay and settle() would time out.
    h.fake
        .upsert_pod(node("c").ready(true).ip("10.0.0.3").build());
    assert_eq!(h.settle().await, ["join"]);
    h.kill_watcher().await;
    h.fake.delete_pod("c");
    h.start_watcher();
    assert_eq!(h.settle().await, ["sync"]);
    h.stop_watcher().await;
}
