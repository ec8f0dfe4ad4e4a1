//! Shared by the watcher's end-to-end tests: a real nats-server with the project's
//! `nats/local.conf` (service users and permissions) and provisioned streams, the fold
//! of what JetStream stored, with the very [`RingLedger`] the reducer uses, and a
//! running watcher's `/metrics` page.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use ringside_events::subject::{self, STREAM_EVENTS};
use ringside_events::{Body, Outcome, RingLedger, RingName, ServiceUser, codec, headers};
use ringside_kit::Metric;
use ringside_kit::settings::{NATS_URL, RING};
use ringside_ring::{RingConfig, Strategy};
use ringside_testkit::NatsServer;
use ringside_watcher::config::{METRICS_ADDR, NATS_PASSWORD};

/// (id, address, weight, uid): what a member is, compared as plain values.
pub type Row = (String, String, u32, String);

/// A real nats-server (`nats/local.conf`) with the streams and buckets provisioned,
/// and an admin connection.
pub struct Nats {
    pub server: NatsServer,
    pub admin: async_nats::Client,
    pub js: jetstream::Context,
}

impl Nats {
    pub async fn start() -> Nats {
        let server = NatsServer::start_local_conf()
            .await
            .expect("start nats-server");
        let admin = server
            .connect_provisioned()
            .await
            .expect("provision the streams");
        let js = jetstream::new(admin.clone());
        Nats { server, admin, js }
    }

    /// A connection as `user`.
    pub async fn connect(&self, user: ServiceUser) -> async_nats::Client {
        self.server.connect_as(user).await.unwrap()
    }

    /// The configuration map of a watcher of `ring` on this server (as the `watcher`
    /// user, metrics on a free port), plus `extra` keys.
    pub fn watcher_map(&self, ring: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = [
            (RING.key, ring),
            (NATS_URL.key, self.server.url().as_str()),
            (
                NATS_PASSWORD.key,
                self.server.password(ServiceUser::Watcher.name()).unwrap(),
            ),
            (METRICS_ADDR.key, "127.0.0.1:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        map.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        map
    }

    /// The fold of `ring`'s stored membership events.
    pub async fn fold(&self, ring: &str) -> StoredFold {
        StoredFold {
            stream: self.js.get_stream_no_info(STREAM_EVENTS).await.unwrap(),
            ring: RingName::new(ring).unwrap(),
            cursor: 0,
            stored: Vec::new(),
            ledger: RingLedger::new(
                RingName::new(ring).unwrap(),
                RingConfig::new(Strategy::Random, 16).unwrap(),
            ),
        }
    }
}

/// One stored membership event, as the fold saw it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub kind: &'static str,
    pub msg_id: String,
    pub producer: String,
    pub summary: String,
}

/// Reads a ring's membership events from the stream, in order, and folds them with
/// [`RingLedger`]; checks that no message id is stored twice, that every join adds a
/// member not in the ring and every leave removes one that is.
pub struct StoredFold {
    stream: jetstream::stream::Stream<()>,
    ring: RingName,
    /// Stream sequence of the last membership event read.
    cursor: u64,
    pub stored: Vec<StoredEvent>,
    pub ledger: RingLedger,
}

impl StoredFold {
    /// Reads and folds every membership event stored since the last call; returns the
    /// kinds read.
    pub async fn read_new(&mut self) -> Vec<&'static str> {
        let start = self.stored.len();
        let subject = subject::membership(&self.ring);
        loop {
            let msg = match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(self.cursor + 1))
                .await
            {
                Ok(msg) => msg,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => panic!("reading the stream: {e}"),
            };
            self.cursor = msg.sequence;
            let msg_id = msg
                .headers
                .get(headers::MSG_ID)
                .map(|v| v.as_str().to_owned())
                .expect("every event has a Nats-Msg-Id");
            let event = codec::decode(&msg.payload).expect("the watcher publishes valid events");
            let present: BTreeSet<String> = self.ledger.members().map(|m| m.id.clone()).collect();
            let kind = match event.body() {
                Body::MembersJoined(j) => {
                    for m in &j.members {
                        assert!(
                            !present.contains(&m.id),
                            "join of a member already in: {m:?}"
                        );
                    }
                    "join"
                }
                Body::MemberLeft(l) => {
                    assert!(
                        present.contains(&l.member_id),
                        "leave of a member not in: {l:?}"
                    );
                    "leave"
                }
                Body::MembershipSynced(_) => "sync",
                other => panic!("unexpected event on the membership subject: {other:?}"),
            };
            match self.ledger.apply(msg.sequence, event.body()) {
                Outcome::Rebalanced(_) | Outcome::Unchanged => {}
                other => panic!("the fold did not take {event:?}: {other:?}"),
            }
            assert!(
                self.stored.iter().all(|s| s.msg_id != msg_id),
                "message id stored twice: {msg_id}"
            );
            self.stored.push(StoredEvent {
                kind,
                msg_id,
                producer: event.producer().to_owned(),
                summary: event.summary(),
            });
        }
        self.stored[start..].iter().map(|s| s.kind).collect()
    }

    /// Waits (up to `deadline`) until the stored events fold into `want`, then `quiet`
    /// longer for anything that would wrongly follow; returns the kinds stored meanwhile.
    pub async fn settle(
        &mut self,
        want: &BTreeSet<Row>,
        deadline: Duration,
        quiet: Duration,
    ) -> Vec<&'static str> {
        let start = self.stored.len();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            self.read_new().await;
            if self.rows() == *want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no convergence: folded {:?}, want {want:?}, stored {:?}",
                self.rows(),
                &self.stored[start..]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(quiet).await;
        self.read_new().await;
        assert_eq!(self.rows(), *want, "a late event broke the fold");
        self.stored[start..].iter().map(|s| s.kind).collect()
    }

    /// The folded members.
    pub fn rows(&self) -> BTreeSet<Row> {
        self.ledger
            .members()
            .map(|m| {
                (
                    m.id.clone(),
                    m.address.clone(),
                    m.weight,
                    m.uid.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The folded member ids.
    pub fn ids(&self) -> Vec<String> {
        self.ledger.members().map(|m| m.id.clone()).collect()
    }
}

/// `GET path` on `addr`: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    ringside_testkit::http::get(addr, path)
        .await
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}{path}"))
}

/// A running watcher's `/metrics` page.
pub struct Page(pub String);

impl Page {
    pub async fn scrape(addr: SocketAddr) -> Page {
        let (status, page) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{page}");
        Page(page)
    }

    /// The value of one sample (`name` or `name{labels}`); panics if absent.
    pub fn value(&self, series: &str) -> f64 {
        ringside_kit::telemetry::sample(&self.0, series)
            .unwrap_or_else(|| panic!("no sample {series} on the page:\n{}", self.0))
    }

    /// Checks each `(series, value)`.
    pub fn assert_values(&self, expected: &[(&str, f64)]) {
        for (series, value) in expected {
            assert_eq!(self.value(series), *value, "{series}: {}", self.0);
        }
    }

    /// Checks the page shows exactly `lists`' metrics.
    pub fn assert_names(&self, lists: &[&[&Metric]]) {
        let mut on_page = ringside_kit::telemetry::names_on_page(&self.0);
        on_page.sort();
        let mut listed: Vec<String> = lists
            .iter()
            .flat_map(|l| l.iter().map(|m| m.name.to_owned()))
            .collect();
        listed.sort();
        assert_eq!(on_page, listed, "{}", self.0);
    }
}
