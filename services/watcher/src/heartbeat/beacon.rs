//! [`Beacon`]: the sending side of heartbeats, for nodes and for stand-in members.
//!
//! A beacon publishes `HeartbeatSent` on `ringside.<ring>.heartbeat.<member>` (core
//! NATS) every interval, beats numbered 1, 2, ..., and a goodbye beat when its
//! shutdown future completes, flushed before `run` returns so the watcher hears it.
//! `ringside up` runs beacons as stand-in members until real nodes exist; the node
//! service runs one for itself.

use std::future::Future;
use std::time::Duration;

use ringside_events::{Event, InvalidEvent, PublishError, Publisher, RingName, pb};

/// How long the goodbye may take to leave the client's buffers.
const GOODBYE_FLUSH: Duration = Duration::from_secs(2);

/// Why a beacon could not start or say goodbye.
#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    /// The member is not valid in a heartbeat (id, weight).
    #[error("the member cannot beat")]
    Invalid(#[source] InvalidEvent),
    /// The goodbye beat could not be handed to the client.
    #[error("sending the goodbye beat")]
    Goodbye(#[source] PublishError),
    /// The goodbye beat did not reach the server in time.
    #[error("flushing the goodbye beat")]
    Flush(#[source] async_nats::client::FlushError),
    /// Flushing the goodbye beat took longer than 2 s.
    #[error("flushing the goodbye beat timed out")]
    FlushTimeout,
}

/// A fresh incarnation id for a process that beats: random, 16 hex digits.
pub fn new_incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Sends one member's heartbeats for one ring.
#[derive(Clone, Debug)]
pub struct Beacon {
    client: async_nats::Client,
    publisher: Publisher,
    ring: RingName,
}

impl Beacon {
    /// A beacon on `client` (a connection as the `node` user, or any user allowed to
    /// publish heartbeats) for `ring`.
    pub fn new(client: async_nats::Client, ring: RingName) -> Self {
        Beacon {
            publisher: Publisher::new(client.clone()),
            client,
            ring,
        }
    }

    /// Beats for `member` every `interval` until `shutdown` completes, then says
    /// goodbye. A member without `uid` gets a fresh incarnation ([`new_incarnation`]).
    /// Returns the number of beats sent, the goodbye included. A beat that cannot be
    /// sent (the connection is down) is logged and the next one tried: the watcher
    /// only needs some of them.
    pub async fn run(
        &self,
        mut member: pb::Member,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, BeaconError> {
        if member.uid.is_none() {
            member.uid = Some(new_incarnation());
        }
        let interval = interval.max(Duration::from_millis(1));
        // Checked once here; every later beat differs only in its number.
        self.heartbeat(&member, 0, interval, false)?;
        tracing::info!(ring = %self.ring, member = %member.id, uid = member.uid.as_deref().unwrap_or_default(), address = %member.address, ?interval, "Beating.");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = 0;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            beat += 1;
            let event = self.heartbeat(&member, beat, interval, false)?;
            if let Err(e) = self.publisher.publish_core(&event).await {
                tracing::warn!(member = %member.id, beat, error = %e, "Could not send a heartbeat.");
            }
        }
        beat += 1;
        let goodbye = self.heartbeat(&member, beat, interval, true)?;
        self.publisher
            .publish_core(&goodbye)
            .await
            .map_err(BeaconError::Goodbye)?;
        match tokio::time::timeout(GOODBYE_FLUSH, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BeaconError::Flush(e)),
            Err(_) => return Err(BeaconError::FlushTimeout),
        }
        tracing::info!(ring = %self.ring, member = %member.id, beats = beat, "Said goodbye.");
        Ok(beat)
    }

    fn heartbeat(
        &self,
        member: &pb::Member,
        beat: u64,
        interval: Duration,
        goodbye: bool,
    ) -> Result<Event, BeaconError> {
        Event::new(
            self.ring.clone(),
            pb::HeartbeatSent {
                member: Some(member.clone()),
                beat,
                interval: Some(interval.into()),
                goodbye,
            },
        )
        .map(|e| e.with_producer(format!("node/{}", member.id)))
        .map_err(BeaconError::Invalid)
    }
}
