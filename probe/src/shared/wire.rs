//! What replicas tell each other, as JSON: a heartbeat (every shared
//! breaker's state and window, the readiness checks failing) and, with a
//! transition, the event itself.
//!
//! Peer messages are read as untrusted: bounded in size, count and name
//! length, and anything malformed is dropped whole.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::breaker::State;

/// Largest message read; larger ones are dropped unread.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
/// Breakers and failing checks read from one message.
pub(crate) const MAX_ENTRIES: usize = 64;
/// Longest replica, dependency or check name.
pub(crate) const MAX_NAME: usize = 128;

/// One breaker as a replica reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerReport {
    pub(crate) dependency: String,
    pub(crate) state: State,
    /// Opened by its own calls (window or failed trial), not by a quorum.
    pub(crate) own: bool,
    /// Time left in its open period.
    pub(crate) remaining: Duration,
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

/// A transition that peers act on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) dependency: String,
    pub(crate) from: State,
    pub(crate) to: State,
    /// The verdict of the fleet's trial (the lease holder's).
    pub(crate) probe: bool,
}

/// A replica's message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub(crate) replica: String,
    pub(crate) breakers: Vec<BreakerReport>,
    /// Fleet-floored readiness checks failing on this replica.
    pub(crate) failing: Vec<String>,
    pub(crate) event: Option<Event>,
}

fn state_from(text: &str) -> Option<State> {
    [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

fn name(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    (!text.is_empty() && text.len() <= MAX_NAME && !text.chars().any(char::is_control))
        .then(|| text.to_owned())
}

fn count(value: Option<&Value>) -> u32 {
    value
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let breakers: Map<String, Value> = self
            .breakers
            .iter()
            .map(|b| {
                let remaining = u64::try_from(b.remaining.as_millis()).unwrap_or(u64::MAX);
                (
                    b.dependency.clone(),
                    json!({
                        "state": b.state.as_str(),
                        "own": b.own,
                        "remainingMs": remaining,
                        "calls": b.calls,
                        "failures": b.failures,
                        "slow": b.slow,
                    }),
                )
            })
            .collect();
        let mut out = json!({
            "v": 1,
            "replica": self.replica,
            "breakers": breakers,
            "failing": self.failing,
        });
        if let Some(e) = &self.event {
            out["event"] = json!({
                "dependency": e.dependency,
                "from": e.from.as_str(),
                "to": e.to.as_str(),
                "probe": e.probe,
            });
        }
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// Reads a peer's message; `None` for anything oversized or malformed.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_MESSAGE {
            return None;
        }
        let value: Value = serde_json::from_slice(bytes).ok()?;
        if value.get("v")?.as_u64()? != 1 {
            return None;
        }
        let replica = name(value.get("replica")?)?;
        let mut breakers = Vec::new();
        for (dependency, b) in value.get("breakers")?.as_object()?.iter().take(MAX_ENTRIES) {
            if dependency.is_empty() || dependency.len() > MAX_NAME {
                return None;
            }
            let remaining_ms = b.get("remainingMs")?.as_u64()?;
            breakers.push(BreakerReport {
                dependency: dependency.clone(),
                state: state_from(b.get("state")?.as_str()?)?,
                own: b.get("own")?.as_bool()?,
                remaining: Duration::from_millis(remaining_ms),
                calls: count(b.get("calls")),
                failures: count(b.get("failures")),
                slow: count(b.get("slow")),
            });
        }
        let failing = match value.get("failing") {
            Some(list) => list
                .as_array()?
                .iter()
                .take(MAX_ENTRIES)
                .map(name)
                .collect::<Option<Vec<_>>>()?,
            None => Vec::new(),
        };
        let event = match value.get("event") {
            None | Some(Value::Null) => None,
            Some(e) => Some(Event {
                dependency: name(e.get("dependency")?)?,
                from: state_from(e.get("from")?.as_str()?)?,
                to: state_from(e.get("to")?.as_str()?)?,
                probe: e.get("probe")?.as_bool()?,
            }),
        };
        Some(Self {
            replica,
            breakers,
            failing,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            replica: "orders-1".into(),
            breakers: vec![BreakerReport {
                dependency: "payments".into(),
                state: State::Open,
                own: true,
                remaining: Duration::from_millis(4200),
                calls: 20,
                failures: 12,
                slow: 3,
            }],
            failing: vec!["postgres".into()],
            event: Some(Event {
                dependency: "payments".into(),
                from: State::HalfOpen,
                to: State::Open,
                probe: true,
            }),
        }
    }

    #[test]
    fn round_trips() {
        let m = message();
        assert_eq!(Message::decode(&m.encode()), Some(m.clone()));
        let plain = Message { event: None, ..m };
        assert_eq!(Message::decode(&plain.encode()), Some(plain));
    }

    #[test]
    fn hostile_messages_are_dropped_whole() {
        let ok = message().encode();
        let mut value: Value = serde_json::from_slice(&ok).expect("json");
        for (path, bad) in [
            ("/v", json!(2)),
            ("/replica", json!("")),
            ("/replica", json!("a".repeat(MAX_NAME + 1))),
            ("/replica", json!("line\nbreak")),
            ("/breakers/payments/state", json!("ajar")),
            ("/breakers/payments/remainingMs", json!(-1)),
            ("/breakers/payments/own", json!("yes")),
            ("/failing", json!([1])),
            ("/event/to", json!(7)),
        ] {
            let mut v = value.clone();
            *v.pointer_mut(path).expect("path") = bad;
            let bytes = serde_json::to_vec(&v).expect("json");
            assert_eq!(Message::decode(&bytes), None, "{path}");
        }
        assert_eq!(Message::decode(b"not json"), None);
        assert_eq!(Message::decode(&vec![b' '; MAX_MESSAGE + 1]), None);
        // Counts beyond u32 saturate; absent ones are zero.
        value["breakers"]["payments"]["calls"] = json!(u64::MAX);
        value["breakers"]["payments"]
            .as_object_mut()
            .expect("object")
            .remove("slow");
        let m = Message::decode(&serde_json::to_vec(&value).expect("json")).expect("valid");
        assert_eq!((m.breakers[0].calls, m.breakers[0].slow), (u32::MAX, 0));
    }

    #[test]
    fn entries_are_bounded() {
        let mut m = message();
        m.failing = (0..MAX_ENTRIES * 4).map(|i| format!("check-{i}")).collect();
        let decoded = Message::decode(&m.encode()).expect("valid");
        assert_eq!(decoded.failing.len(), MAX_ENTRIES);
    }
}
