//! nats/local.conf permissions, enforced by a real server: each service user can
//! publish what it needs and nothing else.

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use ringside_events::subject::{STREAM_EVENTS, STREAM_LOAD};
use ringside_events::{Event, PublishError, Publisher, ServiceUser, pb};
use ringside_testkit::NatsServer;

/// A client that records the server's error messages (permission violations arrive
/// asynchronously as `-ERR` lines).
async fn connect_recording(
    server: &NatsServer,
    user: ServiceUser,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&errors);
    let options = user
        .connect_options(server.password(user.name()).unwrap())
        .event_callback(move |event| {
            let sink = Arc::clone(&sink);
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.lock().unwrap().push(format!("{e:?}"));
                }
            }
        });
    (server.connect_with(options).await.unwrap(), errors)
}

/// How long to wait for something that should happen at once: generous, because a
/// loaded machine (a build beside the tests) can delay it by seconds.
const WAIT: Duration = Duration::from_secs(10);

async fn saw_violation(errors: &Mutex<Vec<String>>, what: &str, subject: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let found = errors.lock().unwrap().iter().any(|e| {
            e.contains(&format!("Permissions Violation for {what}")) && e.contains(subject)
        });
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn load() -> Event {
    Event::new(
        common::ring(),
        pb::NodeLoadReported {
            node: "node-1".into(),
            requests: 5,
            ..Default::default()
        },
    )
    .unwrap()
}

fn scale() -> Event {
    Event::new(
        common::ring(),
        pb::ScaleDecided {
            current_replicas: 1,
            desired_replicas: 2,
            ..Default::default()
        },
    )
    .unwrap()
}

fn traffic() -> Event {
    Event::new(
        common::ring(),
        pb::TrafficSampled {
            node: "node-1".into(),
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_conf_permissions_are_enforced() {
    let server = common::local_server().await;
    let admin = common::provisioned(&server).await;

    // (user, event, allowed)
    let cases: Vec<(ServiceUser, Event, bool)> = vec![
        (ServiceUser::Watcher, common::joined(1), true),
        (ServiceUser::Watcher, common::rebalanced(1, 2, 7), false),
        (ServiceUser::Reducer, common::rebalanced(1, 2, 7), true),
        (ServiceUser::Reducer, common::joined(2), false),
        (ServiceUser::Node, load(), true),
        (ServiceUser::Node, common::joined(3), false),
        (ServiceUser::Node, common::rebalanced(2, 3, 8), false),
        (ServiceUser::Collector, scale(), true),
        (ServiceUser::Collector, common::rebalanced(2, 3, 8), false),
        (ServiceUser::Bridge, common::joined(4), false),
        (ServiceUser::Bridge, load(), false),
        // The reducer is the only writer of rebalance events, even for operators.
        (ServiceUser::Admin, common::rebalanced(2, 3, 8), false),
    ];
    for (user, event, allowed) in cases {
        let (client, errors) = connect_recording(&server, user).await;
        let publisher = common::impatient(client);
        let result = publisher.publish(&event).await;
        let subject = event.subject();
        if allowed {
            let stored =
                result.unwrap_or_else(|e| panic!("{user} may publish on {subject}: {e:?}"));
            assert!(!stored.duplicate);
        } else {
            assert!(
                matches!(result, Err(PublishError::GaveUp { .. })),
                "{user} must not publish on {subject}: {result:?}"
            );
            assert!(
                saw_violation(&errors, "Publish", &subject).await,
                "{user} on {subject}: {errors:?}"
            );
        }
    }

    // Core NATS: the bridge publishes no events at all, nodes may sample traffic.
    let (bridge, errors) = connect_recording(&server, ServiceUser::Bridge).await;
    Publisher::new(bridge.clone())
        .publish_core(&traffic())
        .await
        .unwrap();
    bridge.flush().await.unwrap();
    assert!(saw_violation(&errors, "Publish", "ringside.orders.traffic").await);
    // ... and cannot read another service's inbox or the raw membership subject.
    let _sub = bridge.subscribe("_INBOX_reducer.>").await.unwrap();
    assert!(saw_violation(&errors, "Subscription", "_INBOX_reducer.>").await);

    let (node, errors) = connect_recording(&server, ServiceUser::Node).await;
    let mut sampled = admin.subscribe("ringside.orders.traffic").await.unwrap();
    admin.flush().await.unwrap();
    // Core NATS promises no delivery, and one sample went missing on a loaded machine:
    // publish again until one arrives (an allowed publish does arrive; a refused one
    // never would).
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        Publisher::new(node.clone())
            .publish_core(&traffic())
            .await
            .unwrap();
        node.flush().await.unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(500), sampled.next()).await {
            break got.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no traffic sample arrived; node errors: {errors:?}"
        );
    };
    assert_eq!(
        ringside_events::codec::decode(&got.payload).unwrap(),
        traffic()
    );
    assert!(errors.lock().unwrap().is_empty(), "{errors:?}");

    // What was stored is exactly what was allowed.
    let js = jetstream::new(admin.clone());
    let mut events = js.get_stream(STREAM_EVENTS).await.unwrap();
    assert_eq!(
        events.info().await.unwrap().state.messages,
        3,
        "membership, rebalance, scale"
    );
    let mut loads = js.get_stream(STREAM_LOAD).await.unwrap();
    assert_eq!(loads.info().await.unwrap().state.messages, 1);

    // Without a password nothing connects.
    assert!(server.connect().await.is_err());
}

/// One row of the permission table in docs/nats.md: a subject pattern and, per user,
/// whether it may publish and subscribe there (`None`: the table does not say).
struct Row {
    pattern: String,
    cells: Vec<(ServiceUser, bool, Option<bool>)>,
}

/// The table "Publish permissions on event subjects" of docs/nats.md.
fn documented_matrix() -> Vec<Row> {
    let doc =
        std::fs::read_to_string(ringside_testkit::workspace_root().join("docs/nats.md")).unwrap();
    let start = doc
        .find("| subject | watcher |")
        .expect("the table in docs/nats.md");
    let mut lines = doc[start..].lines();
    let header: Vec<&str> = lines.next().unwrap().split('|').map(str::trim).collect();
    let users: Vec<ServiceUser> = header[2..header.len() - 1]
        .iter()
        .map(|name| {
            ServiceUser::ALL
                .into_iter()
                .find(|u| u.name() == *name)
                .unwrap_or_else(|| panic!("unknown user {name}"))
        })
        .collect();
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let pattern = cells[1].split('`').nth(1).unwrap().to_string();
            let write_only = cells[1].contains("(write)");
            let cells = users
                .iter()
                .zip(&cells[2..])
                .map(|(user, cell)| {
                    let subscribe = (!write_only).then(|| cell.contains('S'));
                    (*user, cell.contains('P'), subscribe)
                })
                .collect();
            Row { pattern, cells }
        })
        .collect()
}

/// A subject the pattern matches: ring `orders`, node `node-1`.
fn concrete(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| match *p {
            "*" if i == 1 => "orders".to_string(),
            "*" => "node-1".to_string(),
            ">" => "orders.e1".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_matrix_is_what_the_server_enforces() {
    let server = common::local_server().await;
    common::provisioned(&server).await;
    let matrix = documented_matrix();
    assert!(matrix.len() >= 10, "{} rows", matrix.len());
    let mut checked = 0;
    for user in ServiceUser::ALL {
        let (client, errors) = connect_recording(&server, user).await;
        for row in &matrix {
            let Some(&(_, publish, subscribe)) = row.cells.iter().find(|c| c.0 == user) else {
                continue;
            };
            let subject = concrete(&row.pattern);
            client.publish(subject.clone(), "x".into()).await.unwrap();
            let _sub = if subscribe.is_some() {
                Some(client.subscribe(subject.clone()).await.unwrap())
            } else {
                None
            };
            // A canary every user is refused: once its violation arrived, every
            // earlier one (errors come in order) has too.
            let canary = format!("_INBOX_not_{}.x", user.name());
            let _canary = client.subscribe(canary.clone()).await.unwrap();
            client.flush().await.unwrap();
            if user != ServiceUser::Admin {
                assert!(
                    saw_violation(&errors, "Subscription", &canary).await,
                    "{user}"
                );
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let seen = |what: &str| {
                // The recorded errors are Debug strings: quotes come escaped.
                errors.lock().unwrap().iter().any(|e| {
                    e.contains(&format!("Permissions Violation for {what}"))
                        && (e.contains(&format!("{subject}\\\""))
                            || e.contains(&format!("{subject}\"")))
                })
            };
            assert_eq!(!seen("Publish"), publish, "{user} publish on {subject}");
            if let Some(subscribe) = subscribe {
                assert_eq!(
                    !seen("Subscription"),
                    subscribe,
                    "{user} subscribe to {subject}"
                );
            }
            errors.lock().unwrap().clear();
            checked += 1;
        }
    }
    assert_eq!(checked, matrix.len() * ServiceUser::ALL.len());
}
