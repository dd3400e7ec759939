//! Operation histories: what concurrent clients asked of the cluster, when, and what they heard.
//!
//! A `History` is a list of `RecordedOperation`s, one per request a client sent.
//! Each key is an independent register that holds a `Value` (absent until written).
//! Fault tests record through a `HistoryRecorder`, which many threads or tokio tasks share, and
//! hand the finished history to the linearizability checker.
//!
//! Invariants:
//! - Every time in a history is an offset from one start instant on one monotonic clock, so
//!   "completed before invoked" between two operations means real-time order.
//! - An operation is invoked before its request is sent and completed after its reply (or its
//!   failure) is received; its completion time is never before its invocation time.
//! - An operation is completed at most once, and a successful outcome carries the response kind
//!   of its operation (a read returns a value, a compare-and-set says whether it swapped).
//! - An operation that is never completed (its task was cancelled or the test ended) counts as
//!   `Outcome::Unknown`: it may or may not have taken effect.
//! - The recorder's lock is never held across an `.await` or while doing I/O.

use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many operations one rendering lists at most, so a failure report stays readable.
pub const RENDERED_OPERATIONS_MAX: usize = 200;

/// The client (process) that issued an operation; one client has at most one operation in flight
/// by convention, though the checker does not rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "client {}", self.0)
    }
}

/// The position of an operation in its history, in the order operations were invoked through
/// one recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(usize);

impl OperationId {
    /// The index of the operation in `History::operations`.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "#{}", self.0)
    }
}

/// The content of a register: absent (never written, or deleted) or a string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(Option<String>);

impl Value {
    /// The value of a key that holds nothing.
    pub fn absent() -> Value {
        Value(None)
    }

    /// A value holding `text`.
    pub fn present(text: impl Into<String>) -> Value {
        Value(Some(text.into()))
    }

    pub fn is_absent(&self) -> bool {
        self.0.is_none()
    }

    /// The text held, or `None` when absent.
    pub fn as_text(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl From<Option<String>> for Value {
    fn from(text: Option<String>) -> Value {
        Value(text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::present(text)
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::present(text)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(text) => write!(formatter, "{text:?}"),
            None => formatter.write_str("absent"),
        }
    }
}

/// What a client asked for on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    /// Sets the register unconditionally; writing `Value::absent()` is a delete.
    Write(Value),
    /// Sets the register to `new` only if it holds `expected`.
    CompareAndSet {
        expected: Value,
        new: Value,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Read => formatter.write_str("read"),
            Operation::Write(value) => write!(formatter, "write {value}"),
            Operation::CompareAndSet { expected, new } => {
                write!(formatter, "compare-and-set {expected} -> {new}")
            }
        }
    }
}

/// What a successful operation returned; its kind always matches the operation's kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// The value a read saw.
    Read(Value),
    /// A write was acknowledged.
    Write,
    /// Whether the register held `expected`, in which case it now holds `new`.
    CompareAndSet { succeeded: bool },
}

impl Response {
    /// Whether this response is the kind `operation` returns.
    pub fn answers(&self, operation: &Operation) -> bool {
        matches!(
            (self, operation),
            (Response::Read(_), Operation::Read)
                | (Response::Write, Operation::Write(_))
                | (
                    Response::CompareAndSet { .. },
                    Operation::CompareAndSet { .. }
                )
        )
    }
}

/// What the client learned about one operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation took effect (once) and returned this.
    Ok(Response),
    /// The operation definitely did not take effect, e.g. it was rejected before being proposed.
    Failed,
    /// The client cannot tell (timeout, connection lost, still in flight): the operation may have
    /// taken effect at any moment after its invocation, even after the client gave up, or never.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(Response::Read(value)) => write!(formatter, "ok {value}"),
            Outcome::Ok(Response::Write) => formatter.write_str("ok"),
            Outcome::Ok(Response::CompareAndSet { succeeded: true }) => {
                formatter.write_str("ok swapped")
            }
            Outcome::Ok(Response::CompareAndSet { succeeded: false }) => {
                formatter.write_str("ok not swapped")
            }
            Outcome::Failed => formatter.write_str("failed"),
            Outcome::Unknown => formatter.write_str("unknown"),
        }
    }
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedOperation {
    pub id: OperationId,
    pub client: ClientId,
    pub key: String,
    pub operation: Operation,
    /// When the client was about to send the request.
    pub invoked_at: Duration,
    /// When the client learned the outcome (or gave up); `None` while still in flight.
    pub completed_at: Option<Duration>,
    /// `Outcome::Unknown` until completed.
    pub outcome: Outcome,
}

impl RecordedOperation {
    /// The latest moment at which the operation may have taken effect: its completion when the
    /// outcome is known, `None` (never ends) when it is unknown.
    pub fn effect_deadline(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Ok(_) | Outcome::Failed => self.completed_at,
            Outcome::Unknown => None,
        }
    }

    /// Whether the operation's possible lifetime, from invocation to `effect_deadline`, touches
    /// the window `[start, end]`.
    pub fn overlaps(&self, start: Duration, end: Duration) -> bool {
        let ends_after_start = self
            .effect_deadline()
            .is_none_or(|deadline| deadline >= start);
        self.invoked_at <= end && ends_after_start
    }
}

impl fmt::Display for RecordedOperation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:>6} {} key {:?} [{}, ",
            self.id.to_string(),
            self.client,
            self.key,
            seconds(self.invoked_at),
        )?;
        match (&self.outcome, self.completed_at) {
            (Outcome::Unknown, Some(gave_up_at)) => {
                write!(formatter, "inf) (gave up at {})", seconds(gave_up_at))?
            }
            (_, Some(completed_at)) => write!(formatter, "{}]", seconds(completed_at))?,
            (_, None) => formatter.write_str("inf) (in flight)")?,
        }
        write!(formatter, " {} => {}", self.operation, self.outcome)
    }
}

/// Formats a time offset as seconds with microsecond precision, the unit reports use throughout.
fn seconds(offset: Duration) -> String {
    format!("{:.6}s", offset.as_secs_f64())
}

/// An append-only list of operations over independent keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Indexed by `OperationId`.
    operations: Vec<RecordedOperation>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Appends an operation that `client` starts at `invoked_at`; it stays in flight (its outcome
    /// unknown) until `complete` is called.
    pub fn invoke(
        &mut self,
        client: ClientId,
        key: impl Into<String>,
        operation: Operation,
        invoked_at: Duration,
    ) -> OperationId {
        let id = OperationId(self.operations.len());
        self.operations.push(RecordedOperation {
            id,
            client,
            key: key.into(),
            operation,
            invoked_at,
            completed_at: None,
            outcome: Outcome::Unknown,
        });
        id
    }

    /// Records what the client learned about operation `id` at `completed_at`.
    ///
    /// Panics when `id` is not in this history, is already completed, completes before it was
    /// invoked, or when a successful outcome does not answer the operation: each is a bug in
    /// the test harness, not something a server can cause.
    pub fn complete(&mut self, id: OperationId, completed_at: Duration, outcome: Outcome) {
        let Some(recorded) = self.operations.get_mut(id.0) else {
            panic!("operation {id} is not in this history");
        };
        assert!(
            recorded.completed_at.is_none(),
            "operation {id} completed twice: {recorded}"
        );
        assert!(
            completed_at >= recorded.invoked_at,
            "operation {id} completes at {completed_at:?}, before its invocation: {recorded}"
        );
        if let Outcome::Ok(response) = &outcome {
            assert!(
                response.answers(&recorded.operation),
                "operation {id} ({}) cannot return {response:?}",
                recorded.operation
            );
        }
        recorded.completed_at = Some(completed_at);
        recorded.outcome = outcome;
    }

    /// Every operation, indexed by `OperationId::index`.
    pub fn operations(&self) -> &[RecordedOperation] {
        &self.operations
    }

    pub fn get(&self, id: OperationId) -> Option<&RecordedOperation> {
        self.operations.get(id.0)
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Renders, one per line in invocation order, the operations (on `key`, or on every key when
    /// `None`) whose possible lifetime overlaps `[start, end]`: the operations that could have
    /// taken effect in that window. Operations with an unknown outcome never end, so they are
    /// listed for every window after their invocation.
    pub fn render_window(&self, key: Option<&str>, start: Duration, end: Duration) -> String {
        let mut selected: Vec<&RecordedOperation> = self
            .operations
            .iter()
            .filter(|recorded| key.is_none_or(|key| recorded.key == key))
            .filter(|recorded| recorded.overlaps(start, end))
            .collect();
        selected.sort_by_key(|recorded| (recorded.invoked_at, recorded.id));
        let key_text = key.map_or_else(|| "every key".to_owned(), |key| format!("key {key:?}"));
        let mut rendered = format!(
            "{} operation(s) on {key_text} overlapping [{}, {}]:\n",
            selected.len(),
            seconds(start),
            seconds(end)
        );
        for recorded in selected.iter().take(RENDERED_OPERATIONS_MAX) {
            // Writing to a String cannot fail.
            let _ = writeln!(rendered, "  {recorded}");
        }
        if selected.len() > RENDERED_OPERATIONS_MAX {
            let _ = writeln!(
                rendered,
                "  ... and {} more",
                selected.len() - RENDERED_OPERATIONS_MAX
            );
        }
        rendered
    }

    /// Renders the operations overlapping `[point - radius, point + radius]`, as `render_window`.
    pub fn render_around(&self, key: Option<&str>, point: Duration, radius: Duration) -> String {
        self.render_window(
            key,
            point.saturating_sub(radius),
            point.saturating_add(radius),
        )
    }
}

/// A `History` that many threads or tokio tasks record into at once, with times read from one
/// monotonic clock.
///
/// Cloning is cheap and every clone records into the same history.
/// The lock is a `std` mutex because it is held only for a push or an update, never across an
/// `.await`, so it cannot stall the runtime.
#[derive(Clone, Debug)]
pub struct HistoryRecorder {
    /// The zero of every time offset in the history.
    start: Instant,
    history: Arc<Mutex<History>>,
}

/// An operation in flight; hand it back to `HistoryRecorder::complete` with the outcome.
///
/// Dropping it without completing leaves the operation's outcome unknown, which is what a
/// cancelled request is.
#[derive(Debug)]
#[must_use = "an operation that is never completed is recorded as unknown"]
pub struct OperationHandle {
    id: OperationId,
}

impl OperationHandle {
    pub fn id(&self) -> OperationId {
        self.id
    }
}

impl Default for HistoryRecorder {
    fn default() -> HistoryRecorder {
        HistoryRecorder::new()
    }
}

impl HistoryRecorder {
    /// An empty history whose time zero is now.
    pub fn new() -> HistoryRecorder {
        HistoryRecorder {
            start: Instant::now(),
            history: Arc::new(Mutex::new(History::new())),
        }
    }

    /// The current time as an offset in this history, e.g. to mark when a fault was injected.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records that `client` is about to send `operation` on `key`; call it before sending.
    pub fn invoke(
        &self,
        client: ClientId,
        key: impl Into<String>,
        operation: Operation,
    ) -> OperationHandle {
        let mut history = self.lock();
        // Reading the clock under the lock makes operation ids follow invocation order.
        let invoked_at = self.now();
        let id = history.invoke(client, key, operation, invoked_at);
        OperationHandle { id }
    }

    /// Records what the client learned about `handle`'s operation; call it after the reply or
    /// the error arrived.
    pub fn complete(&self, handle: OperationHandle, outcome: Outcome) {
        let mut history = self.lock();
        let completed_at = self.now();
        history.complete(handle.id, completed_at, outcome);
    }

    /// A copy of the history so far; operations still in flight appear with an unknown outcome.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        // A panic while holding the lock happens only in `History::complete`'s checks, before
        // anything is modified, so the history behind a poisoned lock is still consistent.
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milliseconds(count: u64) -> Duration {
        Duration::from_millis(count)
    }

    #[test]
    fn recorder_is_shared_across_threads_and_orders_ids_by_invocation() {
        let recorder = HistoryRecorder::new();
        let threads: Vec<_> = (0..4)
            .map(|client| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for round in 0..25 {
                        let value = Value::present(format!("{client}-{round}"));
                        let handle =
                            recorder.invoke(ClientId(client), "x", Operation::Write(value));
                        recorder.complete(handle, Outcome::Ok(Response::Write));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a recording thread panicked");
        }
        let history = recorder.snapshot();
        assert_eq!(history.len(), 100);
        for pair in history.operations().windows(2) {
            assert!(pair[0].invoked_at <= pair[1].invoked_at);
        }
        for recorded in history.operations() {
            let completed_at = recorded.completed_at.expect("every operation completed");
            assert!(completed_at >= recorded.invoked_at);
        }
    }

    #[test]
    fn an_operation_never_completed_is_unknown() {
        let recorder = HistoryRecorder::new();
        let handle = recorder.invoke(ClientId(1), "x", Operation::Read);
        let id = handle.id();
        drop(handle);
        let history = recorder.snapshot();
        let recorded = history.get(id).expect("the operation is recorded");
        assert_eq!(recorded.outcome, Outcome::Unknown);
        assert_eq!(recorded.completed_at, None);
        assert_eq!(recorded.effect_deadline(), None);
    }

    #[test]
    #[should_panic(expected = "cannot return")]
    fn a_response_of_the_wrong_kind_is_a_harness_bug() {
        let mut history = History::new();
        let id = history.invoke(ClientId(1), "x", Operation::Read, milliseconds(0));
        history.complete(id, milliseconds(1), Outcome::Ok(Response::Write));
    }

    #[test]
    fn render_window_lists_the_operations_that_overlap_it() {
        let mut history = History::new();
        let early = history.invoke(ClientId(1), "x", Operation::Read, milliseconds(0));
        history.complete(
            early,
            milliseconds(10),
            Outcome::Ok(Response::Read(Value::absent())),
        );
        let write = Operation::Write(Value::present("a"));
        let lost = history.invoke(ClientId(2), "x", write, milliseconds(5));
        history.complete(lost, milliseconds(6), Outcome::Unknown);
        let inside = history.invoke(ClientId(3), "x", Operation::Read, milliseconds(95));
        history.complete(
            inside,
            milliseconds(105),
            Outcome::Ok(Response::Read("a".into())),
        );
        let other_key = history.invoke(ClientId(3), "y", Operation::Read, milliseconds(100));
        history.complete(other_key, milliseconds(101), Outcome::Failed);
        let late = history.invoke(ClientId(1), "x", Operation::Read, milliseconds(300));
        history.complete(late, milliseconds(301), Outcome::Failed);

        let rendered = history.render_around(Some("x"), milliseconds(100), milliseconds(10));
        assert!(
            rendered.starts_with("2 operation(s) on key \"x\""),
            "{rendered}"
        );
        assert!(rendered.contains("#1 client 2"), "{rendered}");
        assert!(rendered.contains("(gave up at 0.006000s)"), "{rendered}");
        assert!(rendered.contains("#2 client 3"), "{rendered}");
        assert!(!rendered.contains("#0 "), "{rendered}");
        assert!(!rendered.contains("#3 "), "{rendered}");
        assert!(!rendered.contains("#4 "), "{rendered}");

        let every_key = history.render_window(None, milliseconds(100), milliseconds(100));
        assert!(every_key.contains("#3 client 3 key \"y\""), "{every_key}");
    }
}
