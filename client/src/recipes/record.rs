//! `NodeRecord`: the data of every node a recipe creates, `"{unix_ms}\n{attempt}\n{payload}"`.
//!
//! - `unix_ms`: decimal milliseconds since the Unix epoch on the creator's wall clock, when it
//!   queued; rewritten with the grant time by a recipe that had to wait, once it has held a
//!   second (and only while the data is unchanged since the create). Shown by listings as
//!   an age; never used in a decision (wall clocks drift and jump).
//! - `attempt`: an id unique to one acquisition attempt (`{client id}.{counter}`), with no
//!   newline; lets the creator recognise its node after a create's outcome was unknown.
//! - `payload`: the rest, any bytes (a holder's description, an election's value).
//!
//! Invariant: `decode(encode(record)) == record` for every record whose attempt has no newline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::Client;

/// The decoded data of a recipe node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRecord {
    pub(crate) since_unix_ms: u64,
    pub(crate) attempt: String,
    pub(crate) payload: Vec<u8>,
}

/// Numbers the attempts of this process; with the client id it makes attempt ids unique.
static ATTEMPTS: AtomicU64 = AtomicU64::new(1);

impl NodeRecord {
    /// A record stamped now, for a new attempt of `client`.
    pub(crate) fn new(client: &Client, payload: Vec<u8>) -> NodeRecord {
        let attempt = format!(
            "{}.{}",
            client.client_id(),
            ATTEMPTS.fetch_add(1, Ordering::Relaxed)
        );
        debug_assert!(!attempt.contains('\n'), "attempt ids are one line");
        NodeRecord {
            since_unix_ms: now_unix_ms(),
            attempt,
            payload,
        }
    }

    /// The same record stamped now (when a waiter is granted).
    pub(crate) fn restamped(&self) -> NodeRecord {
        NodeRecord {
            since_unix_ms: now_unix_ms(),
            ..self.clone()
        }
    }

    /// The same record with another payload (an election's proclaimed value).
    pub(crate) fn with_payload(&self, payload: Vec<u8>) -> NodeRecord {
        NodeRecord {
            payload,
            ..self.clone()
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut data = format!("{}\n{}\n", self.since_unix_ms, self.attempt).into_bytes();
        data.extend_from_slice(&self.payload);
        data
    }

    /// `None` when `data` is not in the record format.
    pub(crate) fn decode(data: &[u8]) -> Option<NodeRecord> {
        let first = data.iter().position(|byte| *byte == b'\n')?;
        let since = std::str::from_utf8(&data[..first]).ok()?;
        if since.is_empty() || !since.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let since_unix_ms = since.parse().ok()?;
        let rest = &data[first + 1..];
        let second = rest.iter().position(|byte| *byte == b'\n')?;
        let attempt = std::str::from_utf8(&rest[..second]).ok()?.to_owned();
        Some(NodeRecord {
            since_unix_ms,
            attempt,
            payload: rest[second + 1..].to_vec(),
        })
    }
}

/// The payload of a node's data: the record's payload, or the raw data if it is not a record.
pub(crate) fn payload_of(data: &[u8]) -> Vec<u8> {
    NodeRecord::decode(data).map_or_else(|| data.to_vec(), |record| record.payload)
}

/// Milliseconds since the Unix epoch on this machine's wall clock (0 if it is before 1970).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// How long ago `unix_ms` was on this machine's wall clock (zero if in the future).
pub(crate) fn age_of(unix_ms: u64) -> Duration {
    Duration::from_millis(now_unix_ms().saturating_sub(unix_ms))
}

/// What a holder is called when the caller gives no description.
pub(crate) fn default_holder() -> String {
    format!("pid:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> NodeRecord {
        NodeRecord {
            since_unix_ms: 1_700_000_000_123,
            attempt: "1a-2b-3c.7".into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn records_round_trip_with_any_payload() {
        for payload in [&b""[..], b"pid:42", b"two\nlines\n", b"\xff\x00binary"] {
            let record = record(payload);
            assert_eq!(NodeRecord::decode(&record.encode()), Some(record));
        }
        assert_eq!(
            record(b"host-a").encode(),
            b"1700000000123\n1a-2b-3c.7\nhost-a".to_vec()
        );
    }

    #[test]
    fn foreign_data_is_not_a_record() {
        for data in [
            &b""[..],
            b"plain value",
            b"12\nno second line",
            b"x1\na\nb",
            b"\na\nb",
        ] {
            assert_eq!(NodeRecord::decode(data), None, "{data:?}");
        }
        assert_eq!(payload_of(b"plain value"), b"plain value");
        assert_eq!(payload_of(&record(b"v").encode()), b"v");
    }

    #[test]
    fn restamping_keeps_the_attempt_and_payload() {
        let record = record(b"p");
        let later = record.restamped();
        assert_eq!(
            (later.attempt.as_str(), later.payload.as_slice()),
            ("1a-2b-3c.7", &b"p"[..])
        );
        assert!(later.since_unix_ms >= record.since_unix_ms);
        assert_eq!(record.with_payload(b"q".to_vec()).payload, b"q");
    }
}
