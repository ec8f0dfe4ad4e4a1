//! RingService over gRPC against a running reducer: answers agree with the ring crate,
//! WatchRing sees every epoch exactly once, bad inputs get the right status codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Bus, Running, wait_folded};
use futures::StreamExt;
use ringside_events::{convert, pb};
use tonic::Code;

const WITHIN: Duration = Duration::from_secs(120);

async fn started(bus: &Bus, events: &[ringside_events::Event]) -> Running {
    bus.publish(events).await;
    let reducer = Running::ready(&bus.reducer_map("a")).await;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    reducer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_the_ring_crate() {
    let began = std::time::SystemTime::now();
    let bus = Bus::start().await;
    let reducer = started(&bus, &common::churn(31, 80, 10)).await;
    let folded = bus.offline_fold().await;
    let last = bus.rebalances().await.pop().unwrap();
    let mut client = common::ring_client(reducer.grpc).await;

    let snapshot = client
        .get_ring(pb::GetRingRequest {
            ring: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snapshot.epoch, folded.ledger.epoch());
    assert_eq!(snapshot.checksum, folded.ledger.checksum());
    assert_eq!(
        snapshot.membership_sequence,
        folded.ledger.membership_sequence()
    );
    assert_eq!(snapshot.rebalance_sequence, last.0);
    // Stamped with when this reducer made the epoch's view: since the test began.
    let taken = snapshot.taken_at.expect("taken_at is set");
    let began = ringside_events::timestamp::Timestamp::of(began);
    let now = ringside_events::timestamp::Timestamp::of(std::time::SystemTime::now());
    assert!(began <= taken && taken <= now, "{taken:?}");
    let ring = convert::snapshot_to_ring(&snapshot).unwrap();
    let expected = folded.ledger.ring();
    let members: Vec<&pb::Member> = folded.ledger.members().collect();
    assert_eq!(snapshot.members.iter().collect::<Vec<_>>(), members);

    for i in 0..500 {
        let key = format!("key-{i}").into_bytes();
        let owner = client
            .lookup(pb::LookupRequest {
                ring: String::new(),
                key: key.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let want = expected.owner(&key).unwrap();
        assert_eq!(owner.owner.as_ref().unwrap().id, want, "key-{i}");
        assert_eq!(ring.owner_of_hash(owner.token).unwrap(), want);
        assert_eq!(owner.position, ringside_ring::hash_key(&key));
        assert!(owner.token >= owner.position || owner.token == *snapshot.tokens.first().unwrap());
        assert_eq!(
            (owner.epoch, owner.rebalance_sequence),
            (snapshot.epoch, last.0)
        );

        let n = 1 + i % expected.len();
        let successors = client
            .successors(pb::SuccessorsRequest {
                ring: String::new(),
                key: key.clone(),
                n: n as u32,
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = successors.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            expected.successors(&key, n).unwrap(),
            "key-{i}, n = {n}"
        );
        // Members come with their details.
        for m in &successors.members {
            assert_eq!(Some(m), members.iter().find(|d| d.id == m.id).copied());
        }
    }
    reducer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_the_right_status_codes() {
    let bus = Bus::start().await;
    let map = bus.reducer_map_with("a", &[("RINGSIDE_REDUCER_MAX_KEY_BYTES", "64")]);
    // An empty ring first: lookups have no owner.
    let reducer = Running::ready(&map).await;
    let mut client = common::ring_client(reducer.grpc).await;
    let lookup = |ring: &str, key: &[u8]| pb::LookupRequest {
        ring: ring.into(),
        key: key.to_vec(),
    };
    let code =
        |r: Result<tonic::Response<pb::LookupResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(client.lookup(lookup("", b"k")).await),
        Code::FailedPrecondition
    );
    reducer.stop().await.unwrap();

    bus.publish(&common::churn(32, 20, 6)).await;
    let reducer = Running::ready(&map).await;
    let mut client = common::ring_client(reducer.grpc).await;
    let members = common::get_ring(reducer.grpc).await.members.len() as u32;
    assert!(members > 0);
    client.lookup(lookup("", b"k")).await.unwrap();
    client.lookup(lookup("orders", &[7; 64])).await.unwrap();
    assert_eq!(
        code(client.lookup(lookup("", b"")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.lookup(lookup("", &[7; 65])).await),
        Code::InvalidArgument
    );
    // Past tonic's default 4 MiB, the service still answers; past the request limit,
    // the transport refuses.
    assert_eq!(
        code(client.lookup(lookup("", &vec![7; 5 << 20])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .lookup(lookup(
                    "",
                    &vec![7; ringside_reducer::MAX_REQUEST_BYTES + 1]
                ))
                .await
        ),
        Code::OutOfRange
    );
    assert_eq!(
        code(client.lookup(lookup("payments", b"k")).await),
        Code::NotFound
    );
    assert_eq!(
        code(client.lookup(lookup("bad.ring", b"k")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .get_ring(pb::GetRingRequest {
                ring: "payments".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let successors = |n: u32, key: &[u8]| pb::SuccessorsRequest {
        ring: String::new(),
        key: key.to_vec(),
        n,
    };
    client.successors(successors(members, b"k")).await.unwrap();
    for (request, want) in [
        (successors(0, b"k"), Code::InvalidArgument),
        (successors(members + 1, b"k"), Code::FailedPrecondition),
        (successors(u32::MAX, b"k"), Code::FailedPrecondition),
        (successors(1, b""), Code::InvalidArgument),
        (successors(1, &[0; 1000]), Code::InvalidArgument),
    ] {
        let n = request.n;
        assert_eq!(
            client.successors(request).await.unwrap_err().code(),
            want,
            "n = {n}"
        );
    }
    let watch = client
        .watch_ring(pb::WatchRingRequest {
            ring: "payments".into(),
        })
        .await;
    assert_eq!(watch.unwrap_err().code(), Code::NotFound);
    reducer.stop().await.unwrap();
}

/// Opens a WatchRing stream of the default ring on the reducer at `grpc`.
async fn watch(grpc: SocketAddr) -> tonic::Streaming<pb::WatchRingResponse> {
    common::ring_client(grpc)
        .await
        .watch_ring(pb::WatchRingRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Reads a WatchRing stream until `epoch`: (snapshot epoch, epochs that followed).
async fn watch_until(
    mut stream: tonic::Streaming<pb::WatchRingResponse>,
    epoch: u64,
) -> (u64, Vec<(u64, u64)>) {
    let first = stream.next().await.unwrap().unwrap();
    let Some(pb::watch_ring_response::Update::Snapshot(snapshot)) = first.update else {
        panic!("the first message is not a snapshot");
    };
    assert_eq!(first.sequence, snapshot.rebalance_sequence);
    let mut seen = Vec::new();
    let mut at = snapshot.epoch;
    while at < epoch {
        let next = tokio::time::timeout(WITHIN, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(pb::watch_ring_response::Update::Rebalanced(r)) = next.update else {
            panic!("a second snapshot");
        };
        at = r.epoch;
        seen.push((r.epoch, next.sequence));
    }
    (snapshot.epoch, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_opened_mid_churn_see_every_epoch_exactly_once() {
    let bus = Bus::start().await;
    let events = common::churn(33, 400, 12);
    let reducer = started(&bus, &events[..50]).await;
    let grpc = reducer.grpc;
    let folded = bus.offline_fold().await;
    let publishing = {
        let publisher = bus.publisher.clone();
        let rest = events[50..].to_vec();
        tokio::spawn(async move {
            for chunk in rest.chunks(10) {
                publisher.publish_batch(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Watchers join at different points of the burst.
    let mut watchers = Vec::new();
    for _ in 0..4 {
        watchers.push(watch(grpc).await);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    publishing.await.unwrap();
    let folded_all = bus.offline_fold().await;
    let last = folded_all.epochs.len() as u64;
    let stored = bus.wait_for_epoch(last, WITHIN).await;
    assert!(last > folded.epochs.len() as u64 + 100);
    for stream in watchers {
        let (from, seen) = watch_until(stream, last).await;
        let want: Vec<(u64, u64)> = stored
            .iter()
            .filter(|(_, r)| r.epoch > from)
            .map(|(seq, r)| (r.epoch, *seq))
            .collect();
        assert_eq!(seen, want, "watcher from epoch {from}");
    }
    reducer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_is_told_to_reconnect() {
    let bus = Bus::start().await;
    let map = bus.reducer_map_with("a", &[("RINGSIDE_REDUCER_WATCH_BUFFER", "2")]);
    let reducer = Running::ready(&map).await;
    let mut stream = watch(reducer.grpc).await;
    // The client reads nothing while hundreds of epochs go by: more than the
    // transport's window and the buffer hold.
    bus.publish(&common::churn(34, 600, 40)).await;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    let mut status = None;
    while let Some(item) = tokio::time::timeout(WITHIN, stream.next()).await.unwrap() {
        if let Err(s) = item {
            status = Some(s);
            break;
        }
    }
    let status = status.expect("the stream ended without an error");
    assert_eq!(status.code(), Code::Aborted, "{status}");
    assert_eq!(
        common::metric(
            reducer.metrics,
            ringside_reducer::metrics::WATCHERS_LAGGED.name
        )
        .await,
        1.0
    );
    reducer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_serving_once_caught_up_and_watchers_end_at_shutdown() {
    let bus = Bus::start().await;
    let reducer = started(&bus, &common::churn(35, 30, 6)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", reducer.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "ringside.v1.RingService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let mut stream = watch(reducer.grpc).await;
    stream.next().await.unwrap().unwrap();
    // A graceful stop ends open streams with UNAVAILABLE rather than hanging on them.
    let stopping = tokio::spawn(reducer.stop());
    let end = tokio::time::timeout(WITHIN, stream.next()).await.unwrap();
    if let Some(item) = end {
        assert_eq!(item.unwrap_err().code(), Code::Unavailable);
    }
    stopping.await.unwrap().unwrap();
}

/// gRPC server reflection answers what `grpcurl list` and `grpcurl describe` ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_ring_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let bus = Bus::start().await;
    let reducer = started(&bus, &common::churn(36, 10, 4)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", reducer.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = |request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = futures::stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "ringside.v1.RingService".into(),
        )),
    ]);
    let mut answers = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"ringside.v1.RingService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a file descriptor");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    assert_eq!(file.package(), "ringside.v1");
    assert!(
        file.service
            .iter()
            .any(|s| s.name() == "RingService" && s.method.iter().any(|m| m.name() == "WatchRing")),
        "{file:?}"
    );
    reducer.stop().await.unwrap();
}
