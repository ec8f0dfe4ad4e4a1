//! An HTTP fake of the Kubernetes list/watch API for pods, scripted by the test.
//!
//! No Kubernetes API server can run on the CI machines, so the pod watcher is tested
//! against this: a real HTTP server on `127.0.0.1:0` that kube's client talks to
//! (`kube::Config::new(fake.url().parse()?)`). It serves one namespace:
//!
//! - `GET /api/v1/namespaces/NS/pods?labelSelector=..` answers a `PodList` stamped
//!   with the current resourceVersion (all matching pods in one page: `limit` is
//!   accepted, no `continue` token is ever returned).
//! - `GET ..?watch=true&resourceVersion=N[&allowWatchBookmarks=true]` replays every
//!   change after `N`, then streams new ones as newline-delimited watch events
//!   (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`). As in the API server, a
//!   pod that starts (stops) matching the selector arrives as `ADDED` (`DELETED`).
//!   A resourceVersion older than the last [`KubeFake::expire_watches`] (or newer
//!   than the newest) is answered with an `ERROR` event carrying Status 410 Expired.
//!
//! The test changes pods through synchronous methods on [`KubeFake`]; each change
//! gets the next resourceVersion and goes to every open watch. Faults: stall open
//! watches ([`KubeFake::stall_watches`], the changes meanwhile only reach a later
//! watch or list), end them ([`KubeFake::close_watches`]), expire them with a 410
//! ([`KubeFake::expire_watches`], [`KubeFake::expire_next_watch`]) and send bookmarks.
//! Counters let a test assert that a re-list did (or did not) happen.
//!
//! Not modelled: pagination, field selectors (rejected with 400), watch timeouts,
//! `resourceVersion=0` semantics, other resources, authentication, write verbs.
//!
//! # Layout
//! [`KubeFake`] is the handle; [`PodBuilder`] and the `set_*` helpers build pod
//! objects; the axum handler and the label-selector parser are private.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::serde_json::{self, Value, json};
use tokio::task::JoinHandle;

type LineSender = mpsc::UnboundedSender<Result<Bytes, Infallible>>;

/// Handle on a running fake API server. Dropping it stops the server and ends every
/// open watch.
#[derive(Debug)]
pub struct KubeFake {
    shared: Arc<Mutex<FakeState>>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct FakeState {
    namespace: String,
    /// The last resourceVersion handed out.
    rv: u64,
    next_uid: u64,
    pods: BTreeMap<String, Pod>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this one are answered with 410.
    compacted: u64,
    expire_next_watch: bool,
    watches: Vec<OpenWatch>,
    list_calls: u64,
    watch_versions: Vec<String>,
}

/// One stored change: the pod before and after, for per-selector event types.
#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    before: Option<Pod>,
    after: Pod,
    deleted: bool,
}

#[derive(Debug)]
struct OpenWatch {
    selector: Selector,
    bookmarks: bool,
    stalled: bool,
    tx: LineSender,
}

impl KubeFake {
    /// Starts a fake API server on `127.0.0.1:0` serving pods of `namespace`.
    pub async fn start(namespace: &str) -> std::io::Result<KubeFake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(FakeState {
            namespace: namespace.to_owned(),
            rv: 1,
            next_uid: 1,
            pods: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            expire_next_watch: false,
            watches: Vec::new(),
            list_calls: 0,
            watch_versions: Vec::new(),
        }));
        let app = Router::new()
            .route("/api/v1/namespaces/{namespace}/pods", get(pods_handler))
            .fallback(|| async {
                status_response(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the fake serves pods only",
                )
            })
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "Kubernetes API fake stopped.");
            }
        });
        Ok(KubeFake {
            shared,
            addr,
            server,
        })
    }

    /// Base URL of the fake, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The namespace the fake serves.
    pub fn namespace(&self) -> String {
        self.state().namespace.clone()
    }

    /// Creates or replaces a pod (by name) and streams ADDED/MODIFIED. Namespace,
    /// resourceVersion and (for a new pod without one) uid are assigned by the fake.
    /// Returns the new resourceVersion.
    ///
    /// # Panics
    /// If the pod has no name (a bug in the test script).
    pub fn upsert_pod(&self, mut pod: Pod) -> String {
        let Some(name) = pod.metadata.name.clone() else {
            panic!("kube fake: upsert_pod needs a pod with metadata.name");
        };
        let mut st = self.state();
        let before = st.pods.get(&name).cloned();
        if pod.metadata.uid.is_none() {
            pod.metadata.uid = match &before {
                Some(old) => old.metadata.uid.clone(),
                None => Some(st.new_uid()),
            };
        }
        st.commit(before, pod, false)
    }

    /// Changes a pod in place (labels, status, ...) and streams the result.
    /// Returns the new resourceVersion.
    ///
    /// # Panics
    /// If there is no pod of that name (a bug in the test script).
    pub fn modify_pod(&self, name: &str, change: impl FnOnce(&mut Pod)) -> String {
        let mut st = self.state();
        let Some(before) = st.pods.get(name).cloned() else {
            panic!("kube fake: no pod named {name:?}");
        };
        let mut after = before.clone();
        change(&mut after);
        st.commit(Some(before), after, false)
    }

    /// Sets a pod's Ready condition.
    pub fn set_ready(&self, name: &str, ready: bool) -> String {
        self.modify_pod(name, |p| set_ready(p, ready))
    }

    /// Sets (or clears) a pod's IP.
    pub fn set_pod_ip(&self, name: &str, ip: Option<&str>) -> String {
        self.modify_pod(name, |p| set_pod_ip(p, ip))
    }

    /// Sets the pod's deletionTimestamp, as a graceful delete does before the kubelet
    /// has stopped it.
    pub fn mark_terminating(&self, name: &str) -> String {
        self.modify_pod(name, set_terminating)
    }

    /// Deletes a pod and streams DELETED.
    ///
    /// # Panics
    /// If there is no pod of that name (a bug in the test script).
    pub fn delete_pod(&self, name: &str) -> String {
        let mut st = self.state();
        let Some(before) = st.pods.get(name).cloned() else {
            panic!("kube fake: no pod named {name:?}");
        };
        st.commit(Some(before.clone()), before, true)
    }

    /// Sends a BOOKMARK at the current resourceVersion to every open watch that asked
    /// for bookmarks. Returns that resourceVersion.
    pub fn bookmark(&self) -> String {
        let mut st = self.state();
        let rv = st.rv.to_string();
        let line = event_line(
            "BOOKMARK",
            &json!({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": { "resourceVersion": rv },
            }),
        );
        st.watches.retain(|w| {
            if w.stalled || !w.bookmarks {
                return !w.tx.is_closed();
            }
            w.tx.unbounded_send(Ok(line.clone())).is_ok()
        });
        rv
    }

    /// Stalls every open watch: later changes do not reach it (as on a stuck
    /// connection). They reach a later watch (replay) or list.
    pub fn stall_watches(&self) {
        for w in &mut self.state().watches {
            w.stalled = true;
        }
    }

    /// Ends every open watch normally, as the server does at its watch timeout; the
    /// client resumes from the last resourceVersion it saw.
    pub fn close_watches(&self) {
        self.state().watches.clear();
    }

    /// Expires every resourceVersion up to now: open watches get an ERROR 410 and end,
    /// and watches from an older version are answered with 410, forcing a re-list.
    pub fn expire_watches(&self) {
        let mut st = self.state();
        st.compacted = st.rv;
        let line = expired_line(st.rv);
        for w in st.watches.drain(..) {
            // A closed receiver just means the client already went away.
            let _ = w.tx.unbounded_send(Ok(line.clone()));
        }
    }

    /// Answers the next watch request (whatever its resourceVersion) with an ERROR 410.
    pub fn expire_next_watch(&self) {
        self.state().expire_next_watch = true;
    }

    /// Every pod the fake holds (matching the selector or not), sorted by name.
    pub fn pods(&self) -> Vec<Pod> {
        self.state().pods.values().cloned().collect()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> String {
        self.state().rv.to_string()
    }

    /// Number of list requests served so far.
    pub fn list_calls(&self) -> u64 {
        self.state().list_calls
    }

    /// Number of watch requests received so far.
    pub fn watch_calls(&self) -> u64 {
        self.state().watch_versions.len() as u64
    }

    /// The resourceVersion each watch request asked for, in order.
    pub fn watch_versions(&self) -> Vec<String> {
        self.state().watch_versions.clone()
    }

    /// Number of watches currently open (whose client is still connected).
    pub fn open_watches(&self) -> usize {
        let mut st = self.state();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.len()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread must not hide the fake's state from the others.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        self.state().watches.clear();
        self.server.abort();
    }
}

impl FakeState {
    fn new_uid(&mut self) -> String {
        let n = self.next_uid;
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    /// Stores a change under the next resourceVersion and streams it.
    fn commit(&mut self, before: Option<Pod>, mut after: Pod, deleted: bool) -> String {
        self.rv += 1;
        after.metadata.resource_version = Some(self.rv.to_string());
        after.metadata.namespace = Some(self.namespace.clone());
        let name = after.metadata.name.clone().unwrap_or_default();
        if deleted {
            self.pods.remove(&name);
        } else {
            self.pods.insert(name, after.clone());
        }
        let change = Change {
            rv: self.rv,
            before,
            after,
            deleted,
        };
        self.watches.retain(|w| {
            if w.stalled {
                return !w.tx.is_closed();
            }
            match change.line_for(&w.selector) {
                Some(line) => w.tx.unbounded_send(Ok(line)).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        self.history.push(change);
        self.rv.to_string()
    }
}

impl Change {
    /// The watch event this change is for a watch with `selector`, if any.
    fn line_for(&self, selector: &Selector) -> Option<Bytes> {
        let was = self.before.as_ref().is_some_and(|p| selector.matches(p));
        let is = !self.deleted && selector.matches(&self.after);
        let kind = match (was, is) {
            (false, false) => return None,
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
        };
        Some(event_line(kind, &pod_json(&self.after)))
    }
}

fn pod_json(pod: &Pod) -> Value {
    // Serializing a k8s-openapi Pod cannot fail (no maps with non-string keys).
    serde_json::to_value(pod).unwrap_or(Value::Null)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn expired_line(current: u64) -> Bytes {
    event_line(
        "ERROR",
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version (current {current})"),
            "reason": "Expired",
            "code": 410,
        }),
    )
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn pods_handler(
    State(shared): State<Arc<Mutex<FakeState>>>,
    Path(namespace): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let mut st = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if namespace != st.namespace {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the fake serves one namespace",
        );
    }
    if params.contains_key("fieldSelector") {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the fake has no field selectors",
        );
    }
    let selector = match Selector::parse(params.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(msg) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch(&mut st, selector, &params)
    } else {
        st.list_calls += 1;
        let items: Vec<Value> = st
            .pods
            .values()
            .filter(|p| selector.matches(p))
            .map(pod_json)
            .collect();
        let body = json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": st.rv.to_string() },
            "items": items,
        });
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

fn watch(st: &mut FakeState, selector: Selector, params: &BTreeMap<String, String>) -> Response {
    let requested = params.get("resourceVersion").cloned().unwrap_or_default();
    st.watch_versions.push(requested.clone());
    let from = match requested.parse::<u64>() {
        Ok(rv) if rv > 0 => rv,
        _ => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the fake watches only from a resourceVersion returned by a list or an event",
            );
        }
    };
    let (tx, rx) = mpsc::unbounded();
    if std::mem::take(&mut st.expire_next_watch) || from < st.compacted || from > st.rv {
        let _ = tx.unbounded_send(Ok(expired_line(st.rv)));
        return stream_response(rx);
    }
    for change in st.history.iter().filter(|c| c.rv > from) {
        if let Some(line) = change.line_for(&selector) {
            let _ = tx.unbounded_send(Ok(line));
        }
    }
    st.watches.push(OpenWatch {
        selector,
        bookmarks: params
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true"),
        stalled: false,
        tx,
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::UnboundedReceiver<Result<Bytes, Infallible>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(rx),
    )
        .into_response()
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default)]
struct Selector(Vec<Requirement>);

#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    /// Parses the label selector syntax of the API (`a=b,c!=d,e in (f,g),!h`).
    fn parse(raw: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        for (i, ch) in raw.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    terms.push(&raw[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&raw[start..]);
        let mut reqs = Vec::new();
        for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            reqs.push(Requirement::parse(term)?);
        }
        Ok(Selector(reqs))
    }

    fn matches(&self, pod: &Pod) -> bool {
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        self.0.iter().all(|r| r.holds(labels))
    }
}

impl Requirement {
    fn parse(term: &str) -> Result<Requirement, String> {
        let bad = || format!("unsupported label selector term {term:?}");
        if let Some(key) = term.strip_prefix('!') {
            return Ok(Requirement::NotExists(key.trim().to_owned()));
        }
        for (op, negated) in [(" notin ", true), (" in ", false)] {
            if let Some((key, set)) = term.split_once(op) {
                let inner = set
                    .trim()
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(bad)?;
                let values = inner.split(',').map(|v| v.trim().to_owned()).collect();
                let key = key.trim().to_owned();
                return Ok(if negated {
                    Requirement::NotIn(key, values)
                } else {
                    Requirement::In(key, values)
                });
            }
        }
        if let Some((k, v)) = term.split_once("!=") {
            return Ok(Requirement::NotEquals(
                k.trim().to_owned(),
                v.trim().to_owned(),
            ));
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Ok(Requirement::Equals(
                k.trim().to_owned(),
                v.trim().to_owned(),
            ));
        }
        if term.contains(|c: char| c.is_whitespace() || "()=!".contains(c)) {
            return Err(bad());
        }
        Ok(Requirement::Exists(term.to_owned()))
    }

    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// Builds pod objects for scripts: a pod with one container `node`, not Ready and
/// without an IP unless told otherwise.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Pod,
}

impl PodBuilder {
    /// A pod named `name`.
    pub fn new(name: &str) -> PodBuilder {
        PodBuilder {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "node".to_owned(),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                status: Some(PodStatus::default()),
            },
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> PodBuilder {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds an annotation.
    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> PodBuilder {
        self.pod
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the uid (the fake assigns one otherwise).
    #[must_use]
    pub fn uid(mut self, uid: &str) -> PodBuilder {
        self.pod.metadata.uid = Some(uid.to_owned());
        self
    }

    /// Sets the resourceVersion (the fake overwrites it; for pure tests).
    #[must_use]
    pub fn resource_version(mut self, rv: &str) -> PodBuilder {
        self.pod.metadata.resource_version = Some(rv.to_owned());
        self
    }

    /// Adds a named port to the pod's container.
    #[must_use]
    pub fn port(mut self, name: &str, port: i32) -> PodBuilder {
        if let Some(container) = self
            .pod
            .spec
            .as_mut()
            .and_then(|s| s.containers.first_mut())
        {
            container
                .ports
                .get_or_insert_with(Vec::new)
                .push(ContainerPort {
                    name: Some(name.to_owned()),
                    container_port: port,
                    ..ContainerPort::default()
                });
        }
        self
    }

    /// Sets the Ready condition.
    #[must_use]
    pub fn ready(mut self, ready: bool) -> PodBuilder {
        set_ready(&mut self.pod, ready);
        self
    }

    /// Sets the pod IP.
    #[must_use]
    pub fn ip(self, ip: &str) -> PodBuilder {
        self.pod_ip(Some(ip))
    }

    /// Sets or clears the pod IP.
    #[must_use]
    pub fn pod_ip(mut self, ip: Option<&str>) -> PodBuilder {
        set_pod_ip(&mut self.pod, ip);
        self
    }

    /// Sets the deletionTimestamp.
    #[must_use]
    pub fn terminating(mut self) -> PodBuilder {
        set_terminating(&mut self.pod);
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.pod
    }
}

/// Sets (replacing any) the pod's `Ready` condition to `True` or `False`.
pub fn set_ready(pod: &mut Pod, ready: bool) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(PodCondition {
        type_: "Ready".to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        ..PodCondition::default()
    });
}

/// Sets or clears `status.podIP` (and `status.podIPs` to match).
pub fn set_pod_ip(pod: &mut Pod, ip: Option<&str>) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.pod_ip = ip.map(str::to_owned);
    status.pod_ips = ip.map(|ip| vec![k8s_openapi::api::core::v1::PodIP { ip: ip.to_owned() }]);
}

/// Sets `metadata.deletionTimestamp` (to a fixed instant: time plays no part here).
pub fn set_terminating(pod: &mut Pod) {
    pod.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: &[(&str, &str)]) -> Pod {
        labels
            .iter()
            .fold(PodBuilder::new("p"), |b, (k, v)| b.label(k, v))
            .build()
    }

    #[test]
    fn selector_syntax() {
        let pod = labelled(&[("app", "node"), ("tier", "a")]);
        for (sel, expected) in [
            ("", true),
            ("app=node", true),
            ("app==node", true),
            ("app=other", false),
            ("app!=other", true),
            ("app, tier", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("tier in (a, b)", true),
            ("tier notin (a,b)", false),
            ("app=node,tier in (b,c)", false),
        ] {
            assert_eq!(
                Selector::parse(sel).unwrap().matches(&pod),
                expected,
                "{sel}"
            );
        }
        assert!(Selector::parse("tier in a").is_err());
        assert!(Selector::parse("a b").is_err());
    }

    #[test]
    fn change_types_follow_the_selector() {
        let sel = Selector::parse("app=node").unwrap();
        let node = labelled(&[("app", "node")]);
        let other = labelled(&[("app", "other")]);
        let kind = |before: Option<&Pod>, after: &Pod, deleted| {
            let c = Change {
                rv: 2,
                before: before.cloned(),
                after: after.clone(),
                deleted,
            };
            c.line_for(&sel).map(|l| {
                let v: Value = serde_json::from_slice(&l).unwrap();
                v["type"].as_str().unwrap().to_owned()
            })
        };
        assert_eq!(kind(None, &node, false).as_deref(), Some("ADDED"));
        assert_eq!(kind(Some(&node), &node, false).as_deref(), Some("MODIFIED"));
        assert_eq!(kind(Some(&other), &node, false).as_deref(), Some("ADDED"));
        assert_eq!(kind(Some(&node), &other, false).as_deref(), Some("DELETED"));
        assert_eq!(kind(Some(&node), &node, true).as_deref(), Some("DELETED"));
        assert_eq!(kind(Some(&other), &other, true), None);
        assert_eq!(kind(None, &other, false), None);
    }
}
