//! The queue on a Redis Stream: one stream, one consumer group, a
//! dead-letter stream beside it, and an idempotency key per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{Broker, Delivery, Depth, Enqueued, Error, Redelivery};

/// Appends unless the key was seen (`{0, id}`) or the stream is at its
/// bound (`{2, length}`); `{1, id}` when appended. Atomic: a script.
const ENQUEUE: &str = r"
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local len = redis.call('XLEN', KEYS[2])
if len >= tonumber(ARGV[4]) then return {2, tostring(len)} end
local id = redis.call('XADD', KEYS[2], '*', 'key', ARGV[2], 'payload', ARGV[3])
redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
return {1, id}
";

/// Longest idempotency key.
const MAX_KEY: usize = 256;

/// A durable queue on a Redis Stream. Cheap to clone; clones share the
/// connections.
///
/// ```no_run
/// use probity_probe::queue::{Enqueued, RedisQueue};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let charges = RedisQueue::builder("redis://redis:6379/", "orders:charges").build()?;
/// match charges.enqueue("order-1842", br#"{"amount":1999}"#).await? {
///     Enqueued::Accepted(_) => { /* answer 202: payment pending */ }
///     Enqueued::Duplicate(_) => { /* the retry of a request already accepted */ }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: redis::Client,
    stream: String,
    dead: String,
    group: String,
    timeout: Duration,
    max_payload: usize,
    max_backlog: u64,
    dead_letter_cap: u64,
    key_ttl: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// The blocking reads' connection, and the wait it was made for.
    blocking: Mutex<Option<(Duration, MultiplexedConnection)>>,
    group_ready: AtomicBool,
}

/// Builds a [`RedisQueue`]; see [`RedisQueue::builder`].
#[derive(Debug)]
pub struct RedisQueueBuilder {
    url: String,
    stream: String,
    group: String,
    timeout: Duration,
    max_payload: usize,
    max_backlog: u64,
    dead_letter_cap: u64,
    key_ttl: Duration,
    root_cert: Option<Vec<u8>>,
}

impl RedisQueueBuilder {
    /// The consumer group (default `consumers`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The bound on every command (default 1 s). A blocking read waits its
    /// own time plus this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest payload `enqueue` accepts (default 64 KiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Messages the stream may hold before `enqueue` answers
    /// [`Error::Full`] (default 100,000): the backlog is bounded, and
    /// nothing accepted is ever trimmed away.
    pub fn max_backlog(mut self, messages: u64) -> Self {
        self.max_backlog = messages;
        self
    }

    /// Dead letters kept (default 100,000; older ones are trimmed, about
    /// that many remain).
    pub fn dead_letter_cap(mut self, messages: u64) -> Self {
        self.dead_letter_cap = messages;
        self
    }

    /// How long an idempotency key is remembered (default 24 h): a retry
    /// within it is a [`Enqueued::Duplicate`].
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// A CA certificate (PEM) to trust for `rediss://`.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert = Some(pem.into());
        self
    }

    /// Parses the URL. Nothing is contacted until the first operation.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] for a URL that does not parse (the message
    /// leaves any password out), [`Error::TooLarge`] for an empty or
    /// overlong stream or group name.
    pub fn build(self) -> Result<RedisQueue, Error> {
        for (what, name) in [("stream name", &self.stream), ("group name", &self.group)] {
            if name.is_empty() || name.len() > MAX_KEY {
                return Err(Error::TooLarge {
                    what,
                    len: name.len(),
                    max: MAX_KEY,
                });
            }
        }
        let client = crate::shared::task::client(&self.url, self.root_cert)
            .map_err(|e| Error::Unavailable(format!("redis URL: {e}")))?;
        Ok(RedisQueue {
            inner: Arc::new(Inner {
                client,
                dead: format!("{}:dead", self.stream),
                stream: self.stream,
                group: self.group,
                timeout: self.timeout,
                max_payload: self.max_payload,
                max_backlog: self.max_backlog,
                dead_letter_cap: self.dead_letter_cap,
                key_ttl: self.key_ttl,
                conn: Mutex::new(None),
                blocking: Mutex::new(None),
                group_ready: AtomicBool::new(false),
            }),
        })
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

/// An entry's fields, when it has both `key` and `payload`.
fn fields(v: &Value) -> Option<(String, Vec<u8>)> {
    let items = array(v)?;
    let (mut key, mut payload) = (None, None);
    for pair in items.chunks(2) {
        if let [name, value] = pair {
            match bytes(name)? {
                b"key" => key = text(value),
                b"payload" => payload = bytes(value).map(<[u8]>::to_vec),
                _ => {}
            }
        }
    }
    Some((key?, payload?))
}

/// A stream entry read back: id, key, payload.
type Entry = (String, String, Vec<u8>);

/// `[[id, [field, value, ...]] | nil, ...]`: well-formed entries, and the
/// ids of malformed ones.
fn entries(v: &Value) -> (Vec<Entry>, Vec<String>) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for entry in array(v).unwrap_or_default() {
        let Some([id, body]) = array(entry).map(|e| e.get(..2)).and_then(|e| e) else {
            continue; // deleted meanwhile (nil)
        };
        let Some(id) = text(id) else { continue };
        match fields(body) {
            Some((key, payload)) => good.push((id, key, payload)),
            None => bad.push(id),
        }
    }
    (good, bad)
}

impl RedisQueue {
    /// A queue on the stream `stream` of the Redis at `url`.
    pub fn builder(url: impl Into<String>, stream: impl Into<String>) -> RedisQueueBuilder {
        RedisQueueBuilder {
            url: url.into(),
            stream: stream.into(),
            group: "consumers".to_owned(),
            timeout: Duration::from_secs(1),
            max_payload: 64 * 1024,
            max_backlog: 100_000,
            dead_letter_cap: 100_000,
            key_ttl: Duration::from_secs(24 * 3600),
            root_cert: None,
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.inner.stream
    }

    /// The dead-letter stream's name (`<stream>:dead`).
    pub fn dead_letters(&self) -> &str {
        &self.inner.dead
    }

    /// Enqueues `payload` under the idempotency key `key`.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`], [`Error::Full`], or the broker unreachable.
    pub async fn enqueue(&self, key: &str, payload: &[u8]) -> Result<Enqueued, Error> {
        let i = &self.inner;
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::TooLarge {
                what: "key",
                len: key.len(),
                max: MAX_KEY,
            });
        }
        if payload.len() > i.max_payload {
            return Err(Error::TooLarge {
                what: "payload",
                len: payload.len(),
                max: i.max_payload,
            });
        }
        let script = redis::Script::new(ENQUEUE);
        let mut call = script.key(format!("{}:key:{key}", i.stream));
        call.key(&i.stream)
            .arg(
                u64::try_from(i.key_ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(key)
            .arg(payload)
            .arg(i.max_backlog);
        let mut conn = self.conn().await?;
        let reply: Value = self.bounded(call.invoke_async(&mut conn)).await?;
        let items = array(&reply).ok_or(Error::Protocol("enqueue"))?;
        let (code, value) = match items {
            [code, value] => (int(code), text(value)),
            _ => return Err(Error::Protocol("enqueue")),
        };
        match (code, value) {
            (Some(1), Some(id)) => Ok(Enqueued::Accepted(id)),
            (Some(0), Some(id)) => Ok(Enqueued::Duplicate(id)),
            (Some(2), Some(len)) => Err(Error::Full {
                backlog: len.parse().unwrap_or(i.max_backlog),
                bound: i.max_backlog,
            }),
            _ => Err(Error::Protocol("enqueue")),
        }
    }

    /// Dead letters, oldest first, at most `max`: (key, payload, reason).
    ///
    /// # Errors
    ///
    /// The broker unreachable.
    pub async fn read_dead_letters(
        &self,
        max: usize,
    ) -> Result<Vec<(String, Vec<u8>, String)>, Error> {
        let mut conn = self.conn().await?;
        let reply: Value = self
            .bounded(
                redis::cmd("XRANGE")
                    .arg(&self.inner.dead)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut conn),
            )
            .await?;
        let mut out = Vec::new();
        for entry in array(&reply).unwrap_or_default() {
            let Some([_, body]) = array(entry).and_then(|e| e.get(..2)) else {
                continue;
            };
            let mut key = String::new();
            let mut payload = Vec::new();
            let mut reason = String::new();
            for pair in array(body).unwrap_or_default().chunks(2) {
                if let [name, value] = pair {
                    match bytes(name) {
                        Some(b"key") => key = text(value).unwrap_or_default(),
                        Some(b"payload") => payload = bytes(value).unwrap_or_default().to_vec(),
                        Some(b"reason") => reason = text(value).unwrap_or_default(),
                        _ => {}
                    }
                }
            }
            out.push((key, payload, reason));
        }
        Ok(out)
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        self.bounded_for(self.inner.timeout, fut).await
    }

    async fn bounded_for<T>(
        &self,
        limit: Duration,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.code() == Some("NOGROUP") {
                    self.inner.group_ready.store(false, Ordering::Release);
                }
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.forget_conn();
                }
                Err(Error::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.forget_conn();
                Err(Error::Timeout(limit))
            }
        }
    }

    fn forget_conn(&self) {
        *self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn conn(&self) -> Result<MultiplexedConnection, Error> {
        let cached = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(conn) = cached {
            return Ok(conn);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(None);
        let conn = self
            .bounded(
                self.inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        *self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// A connection of its own for a blocking read, which would hold up
    /// every command queued behind it on the shared one.
    async fn blocking_conn(&self, wait: Duration) -> Result<MultiplexedConnection, Error> {
        let cached = self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((made_for, conn)) = cached
            && made_for == wait
        {
            return Ok(conn);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(wait + self.inner.timeout));
        let conn = self
            .bounded(
                self.inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        *self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((wait, conn.clone()));
        Ok(conn)
    }

    async fn ensure_group(&self, conn: &mut MultiplexedConnection) -> Result<(), Error> {
        if self.inner.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let created: redis::RedisResult<Value> = tokio::time::timeout(
            self.inner.timeout,
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.inner.stream)
                .arg(&self.inner.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(conn),
        )
        .await
        .map_err(|_| Error::Timeout(self.inner.timeout))?;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(Error::Unavailable(e.to_string())),
        }
        self.inner.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Dead-letters entries that lack a key or payload (written by
    /// something else) so they never block the group.
    async fn drop_malformed(&self, ids: &[String]) -> Result<(), Error> {
        for id in ids {
            tracing::warn!(stream = %self.inner.stream, %id, "malformed queue entry moved to the dead letters");
            let d = Delivery {
                id: id.clone(),
                key: String::new(),
                payload: Vec::new(),
                attempt: 0,
            };
            self.move_dead(&d, "malformed entry: no key or payload")
                .await?;
        }
        Ok(())
    }

    fn deliveries(&self, good: Vec<Entry>, attempt: impl Fn(&str) -> u32) -> Vec<Delivery> {
        good.into_iter()
            .map(|(id, key, payload)| Delivery {
                attempt: attempt(&id),
                id,
                key,
                payload,
            })
            .collect()
    }

    async fn move_dead(&self, d: &Delivery, reason: &str) -> Result<(), Error> {
        let i = &self.inner;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&i.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(i.dead_letter_cap)
            .arg("*")
            .arg("key")
            .arg(&d.key)
            .arg("payload")
            .arg(&d.payload)
            .arg("attempts")
            .arg(d.attempt)
            .arg("reason")
            .arg(reason)
            .arg("id")
            .arg(&d.id)
            .ignore()
            .cmd("XACK")
            .arg(&i.stream)
            .arg(&i.group)
            .arg(&d.id)
            .ignore()
            .cmd("XDEL")
            .arg(&i.stream)
            .arg(&d.id)
            .ignore();
        let mut conn = self.conn().await?;
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }
}

impl Broker for RedisQueue {
    fn enqueue<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Enqueued, Error>> {
        Box::pin(RedisQueue::enqueue(self, key, payload))
    }

    fn receive<'a>(
        &'a self,
        consumer: &'a str,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, Error>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            self.ensure_group(&mut conn).await?;
            let mut blocking = self.blocking_conn(wait).await?;
            let i = &self.inner;
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            let reply: Value = self
                .bounded_for(
                    wait + i.timeout,
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&i.group)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(max.max(1))
                        .arg("BLOCK")
                        .arg(wait_ms)
                        .arg("STREAMS")
                        .arg(&i.stream)
                        .arg(">")
                        .query_async(&mut blocking),
                )
                .await?;
            // [[stream, [entries]]] or nil
            let streams = array(&reply).unwrap_or_default();
            let Some(body) = streams.first().and_then(array).and_then(|s| s.get(1)) else {
                return Ok(Vec::new());
            };
            let (good, bad) = entries(body);
            self.drop_malformed(&bad).await?;
            Ok(self.deliveries(good, |_| 1))
        })
    }

    fn due<'a>(
        &'a self,
        consumer: &'a str,
        redelivery: Redelivery,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, Error>> {
        Box::pin(async move {
            let i = &self.inner;
            let mut conn = self.conn().await?;
            self.ensure_group(&mut conn).await?;
            let min_idle = redelivery.base.min(redelivery.visibility);
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            // Look further than `max`: entries not yet due come first.
            let pending: Value = self
                .bounded(
                    redis::cmd("XPENDING")
                        .arg(&i.stream)
                        .arg(&i.group)
                        .arg("IDLE")
                        .arg(ms(min_idle))
                        .arg("-")
                        .arg("+")
                        .arg(max.max(1).saturating_mul(8))
                        .query_async(&mut conn),
                )
                .await?;
            let mut claims = Vec::new();
            for row in array(&pending).unwrap_or_default() {
                let Some([id, owner, idle, deliveries]) = array(row).and_then(|r| r.get(..4))
                else {
                    continue;
                };
                let (Some(id), Some(owner), Some(idle), Some(deliveries)) =
                    (text(id), text(owner), int(idle), int(deliveries))
                else {
                    continue;
                };
                let deliveries = u32::try_from(deliveries.max(0)).unwrap_or(u32::MAX);
                let needed = if owner == consumer {
                    redelivery.backoff(deliveries)
                } else {
                    redelivery.visibility
                };
                if u64::try_from(idle.max(0)).unwrap_or(0) >= ms(needed) {
                    claims.push((id, needed, deliveries));
                }
                if claims.len() >= max {
                    break;
                }
            }
            if claims.is_empty() {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            let mut bad = Vec::new();
            for (id, needed, deliveries) in &claims {
                // Claimed only if still idle that long: another consumer
                // may have taken it meanwhile.
                let reply: Value = self
                    .bounded(
                        redis::cmd("XCLAIM")
                            .arg(&i.stream)
                            .arg(&i.group)
                            .arg(consumer)
                            .arg(ms(*needed))
                            .arg(id)
                            .query_async(&mut conn),
                    )
                    .await?;
                let (good, malformed) = entries(&reply);
                bad.extend(malformed);
                out.extend(self.deliveries(good, |_| deliveries.saturating_add(1)));
                if array(&reply).is_some_and(|r| r.contains(&Value::Nil)) {
                    // Deleted while pending: clear it from the group.
                    let _: Value = self
                        .bounded(
                            redis::cmd("XACK")
                                .arg(&i.stream)
                                .arg(&i.group)
                                .arg(id)
                                .query_async(&mut conn),
                        )
                        .await?;
                }
            }
            self.drop_malformed(&bad).await?;
            Ok(out)
        })
    }

    fn ack<'a>(&'a self, d: &'a Delivery) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let i = &self.inner;
            let mut pipe = redis::pipe();
            pipe.cmd("XACK")
                .arg(&i.stream)
                .arg(&i.group)
                .arg(&d.id)
                .ignore()
                .cmd("XDEL")
                .arg(&i.stream)
                .arg(&d.id)
                .ignore();
            let mut conn = self.conn().await?;
            self.bounded(pipe.query_async::<()>(&mut conn)).await
        })
    }

    fn release<'a>(
        &'a self,
        consumer: &'a str,
        d: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let i = &self.inner;
            let mut conn = self.conn().await?;
            // Back to the delivery count it had, and due at once.
            let _: Value = self
                .bounded(
                    redis::cmd("XCLAIM")
                        .arg(&i.stream)
                        .arg(&i.group)
                        .arg(consumer)
                        .arg(0)
                        .arg(&d.id)
                        .arg("IDLE")
                        .arg(u64::from(u32::MAX))
                        .arg("RETRYCOUNT")
                        .arg(d.attempt.saturating_sub(1))
                        .arg("JUSTID")
                        .query_async(&mut conn),
                )
                .await?;
            Ok(())
        })
    }

    fn dead_letter<'a>(
        &'a self,
        d: &'a Delivery,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.move_dead(d, reason))
    }

    fn depth(&self) -> BoxFuture<'_, Result<Depth, Error>> {
        Box::pin(async move {
            let i = &self.inner;
            let mut conn = self.conn().await?;
            self.ensure_group(&mut conn).await?;
            let mut pipe = redis::pipe();
            pipe.cmd("XLEN")
                .arg(&i.stream)
                .cmd("XPENDING")
                .arg(&i.stream)
                .arg(&i.group);
            let (len, summary): (i64, Value) = self.bounded(pipe.query_async(&mut conn)).await?;
            let pending = array(&summary)
                .and_then(|s| s.first())
                .and_then(int)
                .unwrap_or(0);
            let len = u64::try_from(len).unwrap_or(0);
            let pending = u64::try_from(pending).unwrap_or(0);
            Ok(Depth {
                waiting: len.saturating_sub(pending),
                pending,
            })
        })
    }
}
