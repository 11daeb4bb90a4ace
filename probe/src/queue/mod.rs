//! A durable queue for the fallback that accepts now and does later:
//! "order accepted, payment pending", with the queue doing the waiting and
//! the retrying instead of the caller.
//!
//! - [`RedisQueue::enqueue`] writes to a Redis Stream with an idempotency
//!   key: a retried request never enqueues twice.
//! - A [`Consumer`] reads with a consumer group, runs the handler under a
//!   deadline and the dependency's breaker, acknowledges on success,
//!   retries with backoff, reclaims what a dead consumer left pending after
//!   a visibility timeout, and moves a message that failed
//!   [`ConsumerBuilder::attempts`] times to a dead-letter stream.
//! - The consumer beats a liveness [`Heartbeat`](crate::health::Heartbeat)
//!   every loop and reports its backlog as a saturation source
//!   ([`Consumer::backlog`]).
//!
//! Delivery is at least once: a consumer that dies after the handler
//! succeeded and before its acknowledgement reached Redis leaves the message
//! to be delivered again. Pass [`Delivery::key`] on to the dependency as its
//! idempotency key so a second delivery does no second charge.
//!
//! # Durability
//!
//! `enqueue` returns once the primary has appended the message. What that
//! survives is Redis' persistence setting:
//!
//! | Redis setting | an accepted message survives |
//! |---|---|
//! | `appendonly yes`, `appendfsync always` | a Redis crash or restart, and a machine crash |
//! | `appendonly yes`, `appendfsync everysec` (Redis' default for AOF) | a Redis crash or restart; a machine crash loses up to the last second |
//! | RDB snapshots only, or none | nothing beyond the last snapshot |
//!
//! Replication is asynchronous: a failover can lose what the replica had
//! not received; `WAIT` is not issued. The tests check the first row.
//!
//! The stream sits behind [`Broker`], so another broker can follow.

mod consumer;
mod stream;

use std::time::Duration;

use futures_util::future::BoxFuture;

pub use consumer::{Backlog, Consumer, ConsumerBuilder, Handled};
pub use stream::{RedisQueue, RedisQueueBuilder};

/// What [`Broker::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Appended, with the broker's message id.
    Accepted(String),
    /// This idempotency key was enqueued before (as this id): nothing was
    /// added.
    Duplicate(String),
}

/// One message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The broker's id.
    pub id: String,
    /// The idempotency key it was enqueued with.
    pub key: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Which attempt this is (1 for the first delivery).
    pub attempt: u32,
}

/// When a message that is pending (delivered, not acknowledged) is due
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redelivery {
    /// Before retry number `n` of this consumer's own failed message:
    /// `base x 2^(n-1)`, up to `cap`.
    pub base: Duration,
    /// The longest backoff.
    pub cap: Duration,
    /// A message another consumer has held this long is taken over (that
    /// consumer is presumed dead).
    pub visibility: Duration,
}

impl Redelivery {
    /// The wait before the message is delivered again after `deliveries`
    /// failed deliveries.
    pub fn backoff(&self, deliveries: u32) -> Duration {
        let shift = deliveries.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << shift).min(self.cap)
    }
}

/// How many messages wait and how many are being worked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Not delivered yet.
    pub waiting: u64,
    /// Delivered and not acknowledged (in progress, or failed and waiting
    /// for a retry).
    pub pending: u64,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or answered with an error.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker did not answer within the timeout.
    #[error("queue timed out after {0:?}")]
    Timeout(Duration),
    /// The backlog is at its bound: nothing was added.
    #[error("queue full: {backlog} messages (bound {bound})")]
    Full {
        /// Messages in the stream.
        backlog: u64,
        /// The configured bound.
        bound: u64,
    },
    /// The payload or key is larger than allowed.
    #[error("{what} of {len} bytes is over the {max}-byte bound")]
    TooLarge {
        /// `payload` or `key`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The broker answered something this client does not understand.
    #[error("unexpected answer to {0}")]
    Protocol(&'static str),
}

/// A durable queue with consumer-group semantics: the operations a
/// [`Consumer`] needs. Implemented for Redis Streams by [`RedisQueue`].
pub trait Broker: Send + Sync + 'static {
    /// Appends a message unless `key` was enqueued before.
    fn enqueue<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Enqueued, Error>>;

    /// Up to `max` messages never delivered before, waiting up to `wait`
    /// for the first.
    fn receive<'a>(
        &'a self,
        consumer: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, Error>>;

    /// Up to `max` pending messages due again: this consumer's failed ones
    /// past their backoff, and any consumer's held past the visibility
    /// timeout. They are now this consumer's.
    fn due<'a>(
        &'a self,
        consumer: &'a str,
        redelivery: Redelivery,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, Error>>;

    /// Done: removes the message.
    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), Error>>;

    /// Gives the message back without counting this delivery as an
    /// attempt (the consumer did not try it: its breaker was open).
    fn release<'a>(
        &'a self,
        consumer: &'a str,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Moves the message to the dead letters, with the reason.
    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The queue's depth now.
    fn depth(&self) -> BoxFuture<'_, Result<Depth, Error>>;
}
