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
use std::net::SocketAddr;
use std::time::Duration;

use common::{Nats, Page, Row, StoredFold, http_get};
use k8s_openapi::api::core::v1::Pod;
use ringside_kit::Readiness;
use ringside_testkit::kube_fake::{KubeFake, PodBuilder};
use ringside_watcher::kubernetes::config::{KUBE_API_URL, NAMESPACE};
use ringside_watcher::kubernetes::{KubernetesConfig, KubernetesWatcher};
use ringside_watcher::metrics;
use tokio::sync::oneshot;
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

/// The spawned `KubernetesWatcher::run`.
type WatcherTask = JoinHandle<Result<(), ringside_watcher::WatcherError>>;

/// The API fake, a real NATS server, the watcher under test (its task, its stop, its
/// metrics address), and the fold of what JetStream stored.
struct Harness {
    fake: KubeFake,
    _nats: Nats,
    config: KubernetesConfig,
    watcher: Option<(WatcherTask, oneshot::Sender<()>, SocketAddr)>,
    readiness: Option<Readiness>,
    fold: StoredFold,
}

impl Harness {
    async fn new() -> Harness {
        let fake = KubeFake::start(NS).await.expect("start the API fake");
        let nats = Nats::start().await;
        let map = nats.watcher_map(
            RING,
            &[(NAMESPACE.key, NS), (KUBE_API_URL.key, fake.url().as_str())],
        );
        let config = KubernetesConfig::from_map(&map).expect("valid config");
        let fold = nats.fold(RING).await;
        Harness {
            fake,
            _nats: nats,
            config,
            watcher: None,
            readiness: None,
            fold,
        }
    }

    async fn start_watcher(&mut self) {
        let watcher = KubernetesWatcher::bind(self.config.clone())
            .await
            .expect("bind");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        self.readiness = Some(watcher.readiness().clone());
        let metrics = watcher.metrics_addr();
        let task = tokio::spawn(watcher.run(async move {
            // A dropped sender (the harness gone) also means stop.
            let _ = stop_rx.await;
        }));
        self.watcher = Some((task, stop_tx, metrics));
    }

    /// The running watcher's `/metrics` page.
    async fn page(&self) -> Page {
        let (_, _, addr) = self.watcher.as_ref().expect("a running watcher");
        Page::scrape(*addr).await
    }

    /// Graceful stop: the shutdown future completes, `run` returns Ok.
    async fn stop_watcher(&mut self) {
        let (task, stop, _) = self.watcher.take().expect("a running watcher");
        let _ = stop.send(());
        let result = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the watcher stops when asked")
            .expect("the watcher task did not panic");
        result.expect("a clean shutdown");
    }

    /// Hard stop, as a crash or SIGKILL: the task is dropped wherever it is.
    async fn kill_watcher(&mut self) {
        let (task, _stop, _) = self.watcher.take().expect("a running watcher");
        task.abort();
        let _ = task.await;
    }

    fn is_ready(&self) -> bool {
        self.readiness.as_ref().is_some_and(Readiness::is_ready)
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
    h.start_watcher().await;
    assert_eq!(h.settle().await, ["sync"]);
    assert_eq!(h.fold.ids(), ["a", "d"]);
    assert!(h.fold.rows().iter().any(|r| r.0 == "d" && r.2 == 3));
    assert_eq!(h.fake.list_calls(), 1);
    assert!(h.is_ready(), "ready once the first sync is stored");

    // The page: exactly the metrics docs/watcher.md lists for this source.
    let page = h.page().await;
    page.assert_names(&[&metrics::SHARED, &metrics::KUBERNETES]);
    page.assert_values(&[
        (
            "ringside_watcher_events_published_total{kind=\"synced\"}",
            1.0,
        ),
        (
            "ringside_watcher_events_published_total{kind=\"joined\"}",
            0.0,
        ),
        (metrics::POD_LISTS.name, 1.0),
        (metrics::DUPLICATES.name, 0.0),
        (metrics::READY.name, 1.0),
    ]);
    let (_, _, addr) = h.watcher.as_ref().unwrap();
    assert_eq!(http_get(*addr, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(http_get(*addr, "/livez").await.0, 200);
    h.stop_watcher().await;
}

#[tokio::test]
async fn readiness_and_ip_assignment_are_joins_and_leaves() {
    let mut h = Harness::new().await;
    h.start_watcher().await;
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
    h.start_watcher().await;
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
    assert_eq!(h.settle().await, ["leave"]);
    h.stop_watcher().await;
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
    assert_eq!(h.settle().await, ["join", "leave"]);
    assert_eq!(h.fake.list_calls(), 1);
    h.stop_watcher().await;
}

#[tokio::test]
async fn gone_410_forces_a_relist_that_catches_up_on_missed_changes() {
    let mut h = Harness::new().await;
    h.add_ready_nodes(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    h.start_watcher().await;
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

    // Three expiries, each a re-list and a sync; the last one's sync a duplicate.
    let page = h.page().await;
    page.assert_values(&[
        (
            "ringside_watcher_watch_errors_total{reason=\"expired\"}",
            3.0,
        ),
        (metrics::POD_LISTS.name, 4.0),
        (
            "ringside_watcher_events_published_total{kind=\"synced\"}",
            3.0,
        ),
        (metrics::DUPLICATES.name, 1.0),
    ]);
    h.stop_watcher().await;
}

#[tokio::test]
async fn restarts_while_pods_change_resync_and_an_idle_restart_stores_nothing() {
    let mut h = Harness::new().await;
    h.add_ready_nodes(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    h.start_watcher().await;
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
    h.start_watcher().await;
    assert_eq!(h.settle().await, ["sync"]);

    // A restart that sees the same pods: its sync is the stored head, kept once.
    h.stop_watcher().await;
    let (lists, watches) = (h.fake.list_calls(), h.fake.watch_calls());
    h.start_watcher().await;
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
    h.start_watcher().await;
    assert_eq!(h.settle().await, ["sync"]);
    h.stop_watcher().await;
}
