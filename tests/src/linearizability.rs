//! Linearizability checker for registers with compare-and-set, one independent register per key.
//!
//! A history is linearizable when every operation can be given one instant, between its
//! invocation and its completion, at which it takes effect atomically, such that the sequence of
//! effects is legal for a register that starts absent. Linearizability is compositional, so each
//! key is checked on its own.
//!
//! The search is Wing and Gong's, with Lowe's memoisation (as in Porcupine):
//!
//! ```text
//!   events of one key, sorted by time:   call A  call B  return A  call C  return B ...
//!   depth-first search:  linearize any call that comes before the first remaining return and
//!                        that the model accepts; remove its events; start again from the front.
//!                        Reaching a return means that operation was skipped: undo the last step.
//!   memo:                (set of linearized operations, register value) already explored
//!                        is never explored again.
//! ```
//!
//! How outcomes enter the search:
//! - `Failed` operations did not take effect and are removed before searching.
//! - `Unknown` operations never return: they may be linearized at any point after their
//!   invocation. Leaving one out is equivalent to linearizing it after everything else, which is
//!   always legal, so the search succeeds once every operation with a known outcome is placed.
//! - An `Unknown` read tells nothing and is removed. An `Unknown` write or compare-and-set whose
//!   new value no operation could observe is removed too (see `prepare_key`).
//!
//! Reductions that keep the search small, each of which loses no linearization (the reasons are
//! beside the code):
//! - values no operation observes are one value to the search (`ValueIndex`);
//! - a read or mismatched compare-and-set that is legal now is linearized without trying
//!   alternatives (`Search::forced_move`);
//! - of known operations with equal effects, only the one completing first is tried
//!   (`Search::earliest_completing_twin`); of unknown ones, only the one invoked first
//!   (`UnknownClasses`); unknown operations are tried after the known ones;
//! - memo keys leave out the settled past (`OperationSet`), so memory follows the concurrency
//!   of the history rather than its length.
//!
//! Invariants: the checker never reports a violation for a linearizable history (a test compares
//! it with a brute-force search on thousands of small histories); the search is bounded by
//! `SearchLimits`, and running out of budget yields `Verdict::Inconclusive`, never a guess. Keys
//! are checked in sorted order and the search is deterministic, so the same history always gets
//! the same verdict and the same explanation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use crate::history::{
    History, Operation, OperationId, Outcome, RecordedOperation, Response, Value,
};

/// The default bound on memoised search states per key. A state costs about a hundred bytes, so
/// the bound also caps the checker's memory near a hundred megabytes.
pub const EXPLORED_STATES_PER_KEY_MAX_DEFAULT: u64 = 1_000_000;

/// How many operations of the longest linearizable prefix an explanation shows (the last ones).
pub const EXPLAINED_PREFIX_OPERATIONS_MAX: usize = 10;

/// Bounds on the search, so a pathological history ends in `Verdict::Inconclusive` instead of
/// hanging the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLimits {
    /// How many distinct (linearized set, register value) states one key's search may visit.
    pub explored_states_per_key_max: u64,
}

impl Default for SearchLimits {
    fn default() -> SearchLimits {
        SearchLimits {
            explored_states_per_key_max: EXPLORED_STATES_PER_KEY_MAX_DEFAULT,
        }
    }
}

/// The result of checking a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations can be ordered legally within their real-time bounds.
    Linearizable,
    /// The operations on `key` cannot be linearized. Other keys may not have been checked.
    Violation {
        key: String,
        /// The longest sequence of operations the search could linearize, in linearization
        /// order.
        longest_linearizable_prefix: Vec<OperationId>,
        /// The register's value after that prefix.
        state_after_prefix: Value,
        /// The operations that could have come next after that prefix (invoked before the
        /// earliest completion among the rest), none of which leads to a full linearization.
        /// With the prefix, they are the operations that explain the violation.
        stuck_operations: Vec<OperationId>,
    },
    /// The search on `key` reached `SearchLimits` before deciding; no violation was found on
    /// the keys checked.
    Inconclusive { key: String, explored_states: u64 },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// A human-readable report of the verdict for a test failure message, quoting the
    /// operations of `history` (the history that was checked) that the verdict names and the
    /// operations overlapping them.
    pub fn explain(&self, history: &History) -> String {
        match self {
            Verdict::Linearizable => "the history is linearizable\n".to_owned(),
            Verdict::Inconclusive {
                key,
                explored_states,
            } => format!(
                "linearizability of key {key:?} is undecided: the search gave up after \
                 {explored_states} states\n"
            ),
            Verdict::Violation {
                key,
                longest_linearizable_prefix,
                state_after_prefix,
                stuck_operations,
            } => explain_violation(
                history,
                key,
                longest_linearizable_prefix,
                state_after_prefix,
                stuck_operations,
            ),
        }
    }
}

fn explain_violation(
    history: &History,
    key: &str,
    prefix: &[OperationId],
    state_after_prefix: &Value,
    stuck_operations: &[OperationId],
) -> String {
    let mut report = format!("linearizability violation on key {key:?}\n");
    let shown_from = prefix.len().saturating_sub(EXPLAINED_PREFIX_OPERATIONS_MAX);
    // Writing to a String cannot fail, so the results below are ignored.
    let _ = writeln!(
        report,
        "longest linearizable prefix: {} operation(s), the last {} in order:",
        prefix.len(),
        prefix.len() - shown_from
    );
    for id in &prefix[shown_from..] {
        let _ = writeln!(report, "  {}", describe(history, *id));
    }
    let _ = writeln!(report, "register after that prefix: {state_after_prefix}");
    let _ = writeln!(
        report,
        "none of these, each invoked before the earliest pending completion, can come next:"
    );
    for id in stuck_operations {
        let _ = writeln!(report, "  {}", describe(history, *id));
    }
    let involved = stuck_operations.iter().chain(prefix[shown_from..].iter());
    let involved: Vec<&RecordedOperation> = involved.filter_map(|id| history.get(*id)).collect();
    let window_start = involved.iter().map(|recorded| recorded.invoked_at).min();
    let window_end = involved
        .iter()
        .map(|recorded| recorded.effect_deadline().unwrap_or(recorded.invoked_at))
        .max();
    if let (Some(window_start), Some(window_end)) = (window_start, window_end) {
        report.push_str(&history.render_window(Some(key), window_start, window_end));
    }
    report
}

fn describe(history: &History, id: OperationId) -> String {
    history.get(id).map_or_else(
        || format!("{id} (not in this history)"),
        |recorded| recorded.to_string(),
    )
}

/// Checks `history` with the default `SearchLimits`.
pub fn check(history: &History) -> Verdict {
    check_with_limits(history, SearchLimits::default())
}

/// Checks every key of `history` independently, in key order. Returns the first violation
/// found; failing that, the first key whose search hit `limits`; failing that, `Linearizable`.
pub fn check_with_limits(history: &History, limits: SearchLimits) -> Verdict {
    let mut operations_by_key: BTreeMap<&str, Vec<&RecordedOperation>> = BTreeMap::new();
    for recorded in history.operations() {
        operations_by_key
            .entry(&recorded.key)
            .or_default()
            .push(recorded);
    }
    let mut first_inconclusive = None;
    for (key, operations) in operations_by_key {
        let prepared = prepare_key(&operations);
        match search(&prepared, limits) {
            SearchResult::Linearizable => {}
            SearchResult::LimitReached { explored_states } => {
                first_inconclusive.get_or_insert(Verdict::Inconclusive {
                    key: key.to_owned(),
                    explored_states,
                });
            }
            SearchResult::Violation { longest_prefix } => {
                let stuck = stuck_operations(&prepared.operations, &longest_prefix);
                let operation_id = |index: &usize| prepared.operations[*index].id;
                let prefix: Vec<OperationId> = longest_prefix.iter().map(operation_id).collect();
                return Verdict::Violation {
                    key: key.to_owned(),
                    state_after_prefix: replay(history, &prefix),
                    longest_linearizable_prefix: prefix,
                    stuck_operations: stuck.iter().map(operation_id).collect(),
                };
            }
        }
    }
    first_inconclusive.unwrap_or(Verdict::Linearizable)
}

/// A register value as the search sees it, so states are cheap to copy, compare and hash.
///
/// Each value that some operation observes (a read returned it, a compare-and-set expected it)
/// has its own index; every other value shares `ValueIndex::UNOBSERVED`. Transitions only ever
/// compare the register with observed values, so no operation can tell two unobserved values
/// apart: merging them changes no verdict, and lets the memo merge more states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ValueIndex(u32);

impl ValueIndex {
    const UNOBSERVED: ValueIndex = ValueIndex(0);
}

/// The indexes of one key's observed values.
struct ValueTable {
    indexes: HashMap<Value, ValueIndex>,
}

impl ValueTable {
    fn new<'a>(observed: impl Iterator<Item = &'a Value>) -> ValueTable {
        let mut indexes = HashMap::new();
        for value in observed {
            let next_index = u32::try_from(indexes.len() + 1).expect("fewer than 2^32 values");
            indexes
                .entry(value.clone())
                .or_insert(ValueIndex(next_index));
        }
        ValueTable { indexes }
    }

    fn index(&self, value: &Value) -> ValueIndex {
        self.indexes
            .get(value)
            .copied()
            .unwrap_or(ValueIndex::UNOBSERVED)
    }
}

/// What linearizing one operation requires of the register and does to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Transition {
    /// A read that returned `value`: legal only when the register holds it.
    Read {
        value: ValueIndex,
    },
    /// A write, acknowledged or unknown: always legal.
    Write {
        value: ValueIndex,
    },
    CompareAndSetSucceeded {
        expected: ValueIndex,
        new: ValueIndex,
    },
    CompareAndSetFailed {
        expected: ValueIndex,
    },
    /// A compare-and-set with an unknown outcome: if it takes effect where the register holds
    /// `expected`, it swaps; elsewhere it changes nothing.
    CompareAndSetUnknown {
        expected: ValueIndex,
        new: ValueIndex,
    },
    /// A response that does not answer its operation; `History` rules this out, and the search
    /// treats it as never legal rather than panicking.
    Impossible,
}

impl Transition {
    /// The register after linearizing this operation on `state`, or `None` if it is illegal.
    fn apply(self, state: ValueIndex) -> Option<ValueIndex> {
        match self {
            Transition::Read { value } => (state == value).then_some(state),
            Transition::Write { value } => Some(value),
            Transition::CompareAndSetSucceeded { expected, new } => {
                (state == expected).then_some(new)
            }
            Transition::CompareAndSetFailed { expected } => (state != expected).then_some(state),
            Transition::CompareAndSetUnknown { expected, new } => {
                Some(if state == expected { new } else { state })
            }
            Transition::Impossible => None,
        }
    }

    /// Whether the register is the same after this operation as before, wherever it is legal.
    /// A write of the value already held does not qualify: elsewhere it would change the value.
    fn never_changes_state(self) -> bool {
        match self {
            Transition::Read { .. } | Transition::CompareAndSetFailed { .. } => true,
            Transition::CompareAndSetSucceeded { expected, new } => expected == new,
            Transition::Write { .. }
            | Transition::CompareAndSetUnknown { .. }
            | Transition::Impossible => false,
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
struct SearchOperation {
    id: OperationId,
    invoked_at: Duration,
    /// `None` when the outcome is unknown: the operation never has to be linearized.
    completed_at: Option<Duration>,
    transition: Transition,
}

/// One key's operations, ready to search.
struct PreparedKey {
    operations: Vec<SearchOperation>,
    initial: ValueIndex,
}

/// Turns one key's recorded operations into search operations, dropping those that cannot
/// matter:
/// - `Failed` operations, which did not take effect;
/// - `Unknown` reads, which neither change the register nor return anything to check;
/// - `Unknown` writes and compare-and-sets whose new value no operation observes, provided no
///   compare-and-set of the key reported a mismatch. Linearizing such an operation leaves an
///   unobserved value, which only a write can follow (an unknown compare-and-set after it
///   changes nothing and can be left out too), so leaving it out loses no linearization. A
///   reported mismatch could be explained by exactly such a value, hence the proviso. This
///   keeps the many timed-out writes of a fault test out of the search.
fn prepare_key(recorded_operations: &[&RecordedOperation]) -> PreparedKey {
    let relevant: Vec<&RecordedOperation> = recorded_operations
        .iter()
        .copied()
        .filter(|recorded| {
            !matches!(
                (&recorded.operation, &recorded.outcome),
                (_, Outcome::Failed) | (Operation::Read, Outcome::Unknown)
            )
        })
        .collect();
    let observed =
        relevant
            .iter()
            .filter_map(|recorded| match (&recorded.operation, &recorded.outcome) {
                (Operation::Read, Outcome::Ok(Response::Read(value))) => Some(value),
                (Operation::CompareAndSet { expected, .. }, _) => Some(expected),
                _ => None,
            });
    let values = ValueTable::new(observed);
    let mut operations: Vec<SearchOperation> = relevant
        .iter()
        .map(|recorded| SearchOperation {
            id: recorded.id,
            invoked_at: recorded.invoked_at,
            completed_at: match recorded.outcome {
                Outcome::Unknown => None,
                Outcome::Ok(_) | Outcome::Failed => {
                    Some(recorded.completed_at.unwrap_or(Duration::MAX))
                }
            },
            transition: transition(recorded, &values),
        })
        .collect();

    let any_mismatch_reported = operations
        .iter()
        .any(|operation| matches!(operation.transition, Transition::CompareAndSetFailed { .. }));
    if !any_mismatch_reported {
        operations.retain(|operation| {
            let unobserved_effect = matches!(
                operation.transition,
                Transition::Write {
                    value: ValueIndex::UNOBSERVED
                } | Transition::CompareAndSetUnknown {
                    new: ValueIndex::UNOBSERVED,
                    ..
                }
            );
            operation.completed_at.is_some() || !unobserved_effect
        });
    }
    // Known-outcome operations first, by invocation, as `OperationSet` expects.
    operations.sort_by_key(|operation| {
        (
            operation.completed_at.is_none(),
            operation.invoked_at,
            operation.id,
        )
    });
    PreparedKey {
        operations,
        initial: values.index(&Value::absent()),
    }
}

fn transition(recorded: &RecordedOperation, values: &ValueTable) -> Transition {
    match (&recorded.operation, &recorded.outcome) {
        (Operation::Read, Outcome::Ok(Response::Read(value))) => Transition::Read {
            value: values.index(value),
        },
        (Operation::Write(value), Outcome::Ok(Response::Write) | Outcome::Unknown) => {
            Transition::Write {
                value: values.index(value),
            }
        }
        (
            Operation::CompareAndSet { expected, new },
            Outcome::Ok(Response::CompareAndSet { succeeded: true }),
        ) => Transition::CompareAndSetSucceeded {
            expected: values.index(expected),
            new: values.index(new),
        },
        (
            Operation::CompareAndSet { expected, .. },
            Outcome::Ok(Response::CompareAndSet { succeeded: false }),
        ) => Transition::CompareAndSetFailed {
            expected: values.index(expected),
        },
        (Operation::CompareAndSet { expected, new }, Outcome::Unknown) => {
            Transition::CompareAndSetUnknown {
                expected: values.index(expected),
                new: values.index(new),
            }
        }
        // Mismatched responses; failed operations and unknown reads never get here.
        _ => Transition::Impossible,
    }
}

/// The register's value after the operations of `prefix`, a legal linearization, take effect in
/// order from absent.
fn replay(history: &History, prefix: &[OperationId]) -> Value {
    let mut register = Value::absent();
    for recorded in prefix.iter().filter_map(|id| history.get(*id)) {
        match &recorded.operation {
            Operation::Read => {}
            Operation::Write(value) => register = value.clone(),
            // In a legal prefix a compare-and-set swapped exactly when the register held
            // `expected`, whatever its outcome.
            Operation::CompareAndSet { expected, new } => {
                if register == *expected {
                    register = new.clone();
                }
            }
        }
    }
    register
}

enum SearchResult {
    Linearizable,
    /// Indexes into the prepared operations, in linearization order.
    Violation {
        longest_prefix: Vec<usize>,
    },
    LimitReached {
        explored_states: u64,
    },
}

/// One event of the search's time line: an operation's invocation or its completion.
#[derive(Clone, Copy, Debug)]
struct Event {
    operation: usize,
    is_call: bool,
}

/// Two doubly linked lists of events, from which linearized operations are lifted out and put
/// back in last-out-first-in order, so unlinking and relinking are O(1):
/// - the known list: calls and returns of the operations with a known outcome, in time order;
/// - the unknown list: calls of the operations with an unknown outcome (which never return), in
///   invocation order.
///
/// Keeping unknown operations apart lets the search try them last: they are never needed to
/// get past a return, only to explain what a known operation saw.
struct EventList {
    events: Vec<Event>,
    /// Indexed by event, then the two head sentinels (`known_head`, `unknown_head`); `None`
    /// ends a list.
    next: Vec<Option<usize>>,
    /// Indexed like `next`; the sentinels' own entries are unused.
    previous: Vec<usize>,
    call_event: Vec<usize>,
    return_event: Vec<Option<usize>>,
}

impl EventList {
    fn new(operations: &[SearchOperation]) -> EventList {
        let mut known_events = Vec::with_capacity(operations.len() * 2);
        let mut unknown_events = Vec::new();
        for (operation, search_operation) in operations.iter().enumerate() {
            let call = Event {
                operation,
                is_call: true,
            };
            if search_operation.completed_at.is_some() {
                known_events.push(call);
                known_events.push(Event {
                    operation,
                    is_call: false,
                });
            } else {
                unknown_events.push(call);
            }
        }
        // At equal times a call sorts before a return: the two operations are then treated as
        // concurrent, since one clock reading cannot order them.
        let time_order = |event: &Event| {
            let time = event_time(operations, *event);
            (time, !event.is_call, event.operation)
        };
        known_events.sort_by_key(time_order);
        unknown_events.sort_by_key(time_order);

        let known_event_count = known_events.len();
        let mut events = known_events;
        events.extend(unknown_events);
        let known_head = events.len();
        let unknown_head = known_head + 1;
        let mut next = vec![None; events.len() + 2];
        let mut previous = vec![known_head; events.len() + 2];
        let mut call_event = vec![0; operations.len()];
        let mut return_event = vec![None; operations.len()];
        let mut before = known_head;
        for (position, event) in events.iter().enumerate() {
            if position == known_event_count {
                before = unknown_head;
            }
            next[before] = Some(position);
            previous[position] = before;
            before = position;
            if event.is_call {
                call_event[event.operation] = position;
            } else {
                return_event[event.operation] = Some(position);
            }
        }
        EventList {
            events,
            next,
            previous,
            call_event,
            return_event,
        }
    }

    fn first_known(&self) -> Option<usize> {
        self.next[self.events.len()]
    }

    fn first_unknown(&self) -> Option<usize> {
        self.next[self.events.len() + 1]
    }

    fn unlink(&mut self, event: usize) {
        let before = self.previous[event];
        let after = self.next[event];
        self.next[before] = after;
        if let Some(after) = after {
            self.previous[after] = before;
        }
    }

    /// Puts back an event unlinked by the most recent `unlink` still in effect; its own links
    /// were left untouched, so they still name its neighbours.
    fn relink(&mut self, event: usize) {
        let before = self.previous[event];
        self.next[before] = Some(event);
        if let Some(after) = self.next[event] {
            self.previous[after] = event;
        }
    }

    fn lift(&mut self, operation: usize) {
        self.unlink(self.call_event[operation]);
        if let Some(return_event) = self.return_event[operation] {
            self.unlink(return_event);
        }
    }

    fn unlift(&mut self, operation: usize) {
        if let Some(return_event) = self.return_event[operation] {
            self.relink(return_event);
        }
        self.relink(self.call_event[operation]);
    }
}

/// When `event` happens; a return that never happens is at the end of time.
fn event_time(operations: &[SearchOperation], event: Event) -> Duration {
    let operation = &operations[event.operation];
    if event.is_call {
        operation.invoked_at
    } else {
        operation.completed_at.unwrap_or(Duration::MAX)
    }
}

/// Where the search looks for the next operation to linearize.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At this event of the known list; `None` is past its end.
    Known(Option<usize>),
    /// At this call of the unknown list. `horizon` is the earliest remaining return: a call
    /// after it cannot be linearized before that return's operation.
    Unknown {
        position: Option<usize>,
        horizon: Duration,
    },
}

impl Cursor {
    /// The cursor on the next event of the same list.
    fn advance(self, events: &EventList) -> Cursor {
        match self {
            Cursor::Known(position) => Cursor::Known(position.and_then(|at| events.next[at])),
            Cursor::Unknown { position, horizon } => Cursor::Unknown {
                position: position.and_then(|at| events.next[at]),
                horizon,
            },
        }
    }
}

/// Groups the operations with an unknown outcome by transition.
///
/// Two such operations with the same transition are interchangeable, except that the one
/// invoked earlier may take effect wherever the later one may (neither has to before any
/// return). So a linearization using the later one can swap in the earlier one, and the search
/// only ever linearizes, of each class, the earliest-invoked member not yet linearized. Without
/// this, every subset of a crowd of equal timed-out writes would be a distinct search state.
struct UnknownClasses {
    /// Indexed by operation; `None` for operations with a known outcome.
    class_of: Vec<Option<usize>>,
    /// Each class's members, in the unknown list's (invocation) order.
    members: Vec<Vec<usize>>,
    /// How many of each class's members, from the first, are linearized.
    linearized: Vec<usize>,
}

impl UnknownClasses {
    fn new(operations: &[SearchOperation], events: &EventList) -> UnknownClasses {
        let mut class_of = vec![None; operations.len()];
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut class_by_transition: HashMap<Transition, usize> = HashMap::new();
        let mut position = events.first_unknown();
        while let Some(at) = position {
            let operation = events.events[at].operation;
            let class = *class_by_transition
                .entry(operations[operation].transition)
                .or_insert_with(|| {
                    members.push(Vec::new());
                    members.len() - 1
                });
            members[class].push(operation);
            class_of[operation] = Some(class);
            position = events.next[at];
        }
        let linearized = vec![0; members.len()];
        UnknownClasses {
            class_of,
            members,
            linearized,
        }
    }

    /// Whether `operation` has an unknown outcome and is its class's next to linearize.
    fn is_next(&self, operation: usize) -> bool {
        self.class_of[operation].is_some_and(|class| {
            self.members[class].get(self.linearized[class]) == Some(&operation)
        })
    }

    fn lift(&mut self, operation: usize) {
        if let Some(class) = self.class_of[operation] {
            self.linearized[class] += 1;
        }
    }

    fn unlift(&mut self, operation: usize) {
        if let Some(class) = self.class_of[operation] {
            self.linearized[class] -= 1;
        }
    }
}

/// The set of linearized operations, as bit sets, and the compact memo key derived from them.
///
/// Operations are indexed with the known-outcome ones first, by invocation. A search that has
/// got far has linearized nearly every early known operation, so the key leaves out the full
/// words at the front of the known bits and the zero words at the end of each part: a key costs
/// about the search frontier, not the whole history, which keeps long histories in memory.
struct OperationSet {
    known_count: usize,
    /// Bits of the known-outcome operations.
    known: Vec<u64>,
    /// Bits of the unknown-outcome operations, operation `known_count + i` at bit `i`.
    unknown: Vec<u64>,
    /// Every known word below this index is full.
    known_full_words: usize,
    /// Every known word from this index on is zero.
    known_words_end: usize,
    /// Every unknown word from this index on is zero.
    unknown_words_end: usize,
}

impl OperationSet {
    fn new(known_count: usize, operations: usize) -> OperationSet {
        OperationSet {
            known_count,
            known: vec![0; known_count.div_ceil(64)],
            unknown: vec![0; (operations - known_count).div_ceil(64)],
            known_full_words: 0,
            known_words_end: 0,
            unknown_words_end: 0,
        }
    }

    /// Whether every operation of known word `word` is linearized; the last word may have
    /// fewer than 64 operations.
    fn known_word_is_full(&self, word: usize) -> bool {
        let operations_in_word = (self.known_count - word * 64).min(64);
        let full = if operations_in_word == 64 {
            !0
        } else {
            (1 << operations_in_word) - 1
        };
        self.known[word] == full
    }

    fn insert(&mut self, operation: usize) {
        if operation < self.known_count {
            let word = operation / 64;
            self.known[word] |= 1 << (operation % 64);
            self.known_words_end = self.known_words_end.max(word + 1);
            while self.known_full_words < self.known.len()
                && self.known_word_is_full(self.known_full_words)
            {
                self.known_full_words += 1;
            }
        } else {
            let bit = operation - self.known_count;
            self.unknown[bit / 64] |= 1 << (bit % 64);
            self.unknown_words_end = self.unknown_words_end.max(bit / 64 + 1);
        }
    }

    fn remove(&mut self, operation: usize) {
        if operation < self.known_count {
            let word = operation / 64;
            self.known[word] &= !(1 << (operation % 64));
            self.known_full_words = self.known_full_words.min(word);
        } else {
            let bit = operation - self.known_count;
            self.unknown[bit / 64] &= !(1 << (bit % 64));
        }
    }

    /// Writes into `key` a value that differs for different sets: the number of leading full
    /// known words, the number of known words that follow up to the last nonzero one, those
    /// words, then the unknown words up to the last nonzero one.
    fn write_key(&mut self, key: &mut Vec<u64>) {
        while self.known_words_end > self.known_full_words
            && self.known[self.known_words_end - 1] == 0
        {
            self.known_words_end -= 1;
        }
        while self.unknown_words_end > 0 && self.unknown[self.unknown_words_end - 1] == 0 {
            self.unknown_words_end -= 1;
        }
        let known_end = self.known_words_end.max(self.known_full_words);
        let known_window = &self.known[self.known_full_words..known_end];
        key.clear();
        key.push(self.known_full_words as u64);
        key.push(known_window.len() as u64);
        key.extend_from_slice(known_window);
        key.extend_from_slice(&self.unknown[..self.unknown_words_end]);
    }
}

/// The states already explored: for each linearized set, the register values seen with it.
/// Keyed by the set first so that a lookup borrows the current key instead of copying it.
#[derive(Default)]
struct Memo {
    states_by_set: HashMap<Box<[u64]>, Vec<ValueIndex>>,
    /// Reused for every key, to save an allocation per lookup.
    key: Vec<u64>,
}

impl Memo {
    /// Records the state; returns whether it is new.
    fn insert(&mut self, set: &mut OperationSet, state: ValueIndex) -> bool {
        set.write_key(&mut self.key);
        match self.states_by_set.get_mut(self.key.as_slice()) {
            Some(states) if states.contains(&state) => false,
            Some(states) => {
                states.push(state);
                true
            }
            None => {
                let key = self.key.clone().into_boxed_slice();
                self.states_by_set.insert(key, vec![state]);
                true
            }
        }
    }
}

/// A step of the current candidate linearization, kept to undo it.
struct Step {
    operation: usize,
    state_before: ValueIndex,
    /// Where the operation was found, so that undoing the step resumes just after it.
    cursor: Cursor,
    /// Whether the step was the only move worth trying from its state (see
    /// `Search::forced_move`), so that undoing it means its state has failed too.
    forced: bool,
}

/// What came of trying to linearize one candidate.
enum Attempt {
    Taken,
    /// Illegal here, pointless, or leading to a state already explored.
    NotTaken,
    LimitReached,
}

/// The depth-first search over one key's operations.
struct Search<'a> {
    operations: &'a [SearchOperation],
    limits: SearchLimits,
    events: EventList,
    unknown_classes: UnknownClasses,
    linearized: OperationSet,
    memo: Memo,
    /// The current candidate linearization.
    steps: Vec<Step>,
    /// The register after `steps`.
    state: ValueIndex,
    known_outcomes_left: usize,
    explored_states: u64,
    longest_prefix: Vec<usize>,
    /// How many steps from the first are also the start of `longest_prefix`, so that a longer
    /// prefix copies only the steps after them.
    steps_agreeing_with_longest_prefix: usize,
}

fn search(prepared: &PreparedKey, limits: SearchLimits) -> SearchResult {
    let operations = &prepared.operations;
    let events = EventList::new(operations);
    let unknown_classes = UnknownClasses::new(operations, &events);
    let known_outcomes_left = operations
        .iter()
        .filter(|operation| operation.completed_at.is_some())
        .count();
    Search {
        operations,
        limits,
        events,
        unknown_classes,
        linearized: OperationSet::new(known_outcomes_left, operations.len()),
        memo: Memo::default(),
        steps: Vec::new(),
        state: prepared.initial,
        known_outcomes_left,
        explored_states: 0,
        longest_prefix: Vec::new(),
        steps_agreeing_with_longest_prefix: 0,
    }
    .run()
}

impl Search<'_> {
    fn run(mut self) -> SearchResult {
        // Where to look for the next move from the current state; `None` when the state was
        // just reached and nothing has been tried from it yet.
        let mut resume: Option<Cursor> = None;
        loop {
            if self.known_outcomes_left == 0 {
                return SearchResult::Linearizable;
            }
            let attempt = match resume {
                None => match self.forced_move() {
                    Some(position) => self.attempt(position, Cursor::Known(Some(position)), true),
                    None => self.attempt_from(Cursor::Known(self.events.first_known())),
                },
                Some(cursor) => self.attempt_from(cursor),
            };
            match attempt {
                Attempt::Taken => resume = None,
                Attempt::LimitReached => {
                    return SearchResult::LimitReached {
                        explored_states: self.explored_states,
                    }
                }
                Attempt::NotTaken => loop {
                    // Nothing leads on from this state: undo the step that reached it and try
                    // the moves after that step, unless it was forced.
                    let Some(step) = self.steps.pop() else {
                        return SearchResult::Violation {
                            longest_prefix: self.longest_prefix,
                        };
                    };
                    self.undo(&step);
                    if !step.forced {
                        resume = Some(step.cursor.advance(&self.events));
                        break;
                    }
                },
            }
        }
    }

    /// A move that is the only one worth trying from the current state: a known operation that
    /// may go next, is legal now and never changes the register (a read of the current value,
    /// a mismatched compare-and-set). Any linearization from here can be rearranged to start
    /// with it: no remaining operation must precede it, it is legal now, and taking it out of
    /// its later place changes no state after it. Taking such moves without alternatives keeps
    /// reads from multiplying the search.
    fn forced_move(&self) -> Option<usize> {
        let mut position = self.events.first_known();
        while let Some(at) = position {
            let event = self.events.events[at];
            if !event.is_call {
                return None;
            }
            let transition = self.operations[event.operation].transition;
            if transition.never_changes_state() && transition.apply(self.state).is_some() {
                return Some(at);
            }
            position = self.events.next[at];
        }
        None
    }

    /// Tries the candidates from `cursor` on, in order, until one is taken.
    fn attempt_from(&mut self, mut cursor: Cursor) -> Attempt {
        loop {
            let Some(position) = self.candidate(&mut cursor) else {
                return Attempt::NotTaken;
            };
            match self.attempt(position, cursor, false) {
                Attempt::NotTaken => cursor = cursor.advance(&self.events),
                taken_or_limit => return taken_or_limit,
            }
        }
    }

    /// The event at `cursor` if it is a call that may be linearized next, moving `cursor` from
    /// the known list to the unknown list when the known candidates run out; `None` when no
    /// candidate is left.
    fn candidate(&self, cursor: &mut Cursor) -> Option<usize> {
        if let Cursor::Known(position) = *cursor {
            match position {
                Some(at) if self.events.events[at].is_call => return Some(at),
                _ => {
                    // The first remaining return: only operations invoked by then may go next.
                    let horizon = position.map_or(Duration::MAX, |at| {
                        event_time(self.operations, self.events.events[at])
                    });
                    *cursor = Cursor::Unknown {
                        position: self.events.first_unknown(),
                        horizon,
                    };
                }
            }
        }
        match *cursor {
            Cursor::Unknown {
                position: Some(at),
                horizon,
            } if event_time(self.operations, self.events.events[at]) <= horizon => Some(at),
            _ => None,
        }
    }

    /// Linearizes the operation whose call is at `position` if that is legal, worthwhile and
    /// reaches a new state.
    fn attempt(&mut self, position: usize, cursor: Cursor, forced: bool) -> Attempt {
        let operation = self.events.events[position].operation;
        let outcome_known = self.operations[operation].completed_at.is_some();
        let Some(state_after) = self.operations[operation].transition.apply(self.state) else {
            return Attempt::NotTaken;
        };
        let worthwhile = if outcome_known {
            forced || self.earliest_completing_twin(position)
        } else {
            // An unknown operation that leaves the register as it was is pointless: leaving it
            // out keeps every option it would have allowed.
            state_after != self.state && self.unknown_classes.is_next(operation)
        };
        if !worthwhile {
            return Attempt::NotTaken;
        }
        self.linearized.insert(operation);
        if !self.memo.insert(&mut self.linearized, state_after) {
            self.linearized.remove(operation);
            return Attempt::NotTaken;
        }
        self.explored_states += 1;
        if self.explored_states > self.limits.explored_states_per_key_max {
            return Attempt::LimitReached;
        }
        self.steps.push(Step {
            operation,
            state_before: self.state,
            cursor,
            forced,
        });
        self.state = state_after;
        self.events.lift(operation);
        self.unknown_classes.lift(operation);
        if outcome_known {
            self.known_outcomes_left -= 1;
        }
        if self.steps.len() > self.longest_prefix.len() {
            let agreeing = self.steps_agreeing_with_longest_prefix;
            self.longest_prefix.truncate(agreeing);
            let newer = self.steps[agreeing..].iter().map(|step| step.operation);
            self.longest_prefix.extend(newer);
            self.steps_agreeing_with_longest_prefix = self.steps.len();
        }
        Attempt::Taken
    }

    /// Whether the known call at `position` completes first among the candidates with the same
    /// transition (ties go to the lower index). Of two such twins, the one completing first can
    /// always take the other's place in a linearization and the other take its place, so only
    /// it needs trying.
    fn earliest_completing_twin(&self, position: usize) -> bool {
        let operation = self.events.events[position].operation;
        let this = &self.operations[operation];
        let this_order = (this.completed_at, operation);
        let mut other_position = self.events.first_known();
        while let Some(at) = other_position {
            let event = self.events.events[at];
            if !event.is_call {
                return true;
            }
            let other = &self.operations[event.operation];
            if other.transition == this.transition
                && (other.completed_at, event.operation) < this_order
            {
                return false;
            }
            other_position = self.events.next[at];
        }
        true
    }

    fn undo(&mut self, step: &Step) {
        self.steps_agreeing_with_longest_prefix = self
            .steps_agreeing_with_longest_prefix
            .min(self.steps.len());
        self.linearized.remove(step.operation);
        self.state = step.state_before;
        self.events.unlift(step.operation);
        self.unknown_classes.unlift(step.operation);
        if self.operations[step.operation].completed_at.is_some() {
            self.known_outcomes_left += 1;
        }
    }
}

/// The operations that could have been linearized right after `prefix`: those not in it that
/// were invoked no later than the earliest completion among the operations not in it.
fn stuck_operations(operations: &[SearchOperation], prefix: &[usize]) -> Vec<usize> {
    let placed: BTreeSet<usize> = prefix.iter().copied().collect();
    let remaining = (0..operations.len()).filter(|index| !placed.contains(index));
    let earliest_completion = remaining
        .clone()
        .filter_map(|index| operations[index].completed_at)
        .min()
        .unwrap_or(Duration::MAX);
    let mut stuck: Vec<usize> = remaining
        .filter(|index| operations[*index].invoked_at <= earliest_completion)
        .collect();
    stuck.sort_by_key(|index| (operations[*index].invoked_at, operations[*index].id));
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ClientId;
    use std::collections::HashSet;

    /// Builds hand-written histories tersely; times are in milliseconds.
    struct Script {
        history: History,
    }

    impl Script {
        fn new() -> Script {
            Script {
                history: History::new(),
            }
        }

        fn operation(
            &mut self,
            client: u32,
            key: &str,
            operation: Operation,
            invoked_at: u64,
            completed_at: u64,
            outcome: Outcome,
        ) -> OperationId {
            let id = self.history.invoke(
                ClientId(client),
                key,
                operation,
                Duration::from_millis(invoked_at),
            );
            self.history
                .complete(id, Duration::from_millis(completed_at), outcome);
            id
        }

        fn write(&mut self, client: u32, key: &str, value: &str, span: (u64, u64)) -> OperationId {
            let write = Operation::Write(value.into());
            self.operation(
                client,
                key,
                write,
                span.0,
                span.1,
                Outcome::Ok(Response::Write),
            )
        }

        fn write_with(
            &mut self,
            client: u32,
            key: &str,
            value: &str,
            span: (u64, u64),
            outcome: Outcome,
        ) -> OperationId {
            let write = Operation::Write(value.into());
            self.operation(client, key, write, span.0, span.1, outcome)
        }

        fn read(&mut self, client: u32, key: &str, seen: Value, span: (u64, u64)) -> OperationId {
            let outcome = Outcome::Ok(Response::Read(seen));
            self.operation(client, key, Operation::Read, span.0, span.1, outcome)
        }

        fn compare_and_set(
            &mut self,
            client: u32,
            key: &str,
            (expected, new): (&str, &str),
            span: (u64, u64),
            succeeded: bool,
        ) -> OperationId {
            let operation = Operation::CompareAndSet {
                expected: expected.into(),
                new: new.into(),
            };
            let outcome = Outcome::Ok(Response::CompareAndSet { succeeded });
            self.operation(client, key, operation, span.0, span.1, outcome)
        }

        fn check(&self) -> Verdict {
            check(&self.history)
        }

        fn assert_linearizable(&self) {
            let verdict = self.check();
            assert!(
                verdict.is_linearizable(),
                "{}",
                verdict.explain(&self.history)
            );
        }

        /// Asserts a violation on `key` whose stuck operations include `culprit`.
        fn assert_violation(&self, key: &str, culprit: OperationId) {
            let verdict = self.check();
            let Verdict::Violation {
                key: violated_key,
                stuck_operations,
                ..
            } = &verdict
            else {
                panic!("expected a violation, got {verdict:?}");
            };
            assert_eq!(violated_key, key);
            assert!(
                stuck_operations.contains(&culprit),
                "{culprit} is not among the stuck operations:\n{}",
                verdict.explain(&self.history)
            );
        }
    }

    fn present(text: &str) -> Value {
        Value::present(text)
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(check(&History::new()), Verdict::Linearizable);
    }

    #[test]
    fn accepts_a_sequential_history() {
        let mut script = Script::new();
        script.read(1, "x", Value::absent(), (0, 1));
        script.write(1, "x", "a", (2, 3));
        script.read(2, "x", present("a"), (4, 5));
        script.write(2, "x", "b", (6, 7));
        script.read(1, "x", present("b"), (8, 9));
        script.compare_and_set(1, "x", ("b", "c"), (10, 11), true);
        script.compare_and_set(2, "x", ("b", "d"), (12, 13), false);
        script.read(2, "x", present("c"), (14, 15));
        let delete = Operation::Write(Value::absent());
        script.operation(1, "x", delete, 16, 17, Outcome::Ok(Response::Write));
        script.read(1, "x", Value::absent(), (18, 19));
        script.assert_linearizable();
    }

    #[test]
    fn accepts_overlapping_writes_and_reads_that_can_be_ordered() {
        let mut script = Script::new();
        // The write of "b" starts later but must take effect first: a read overlapping both
        // writes sees "b", and reads after both completed see "a".
        script.write(1, "x", "a", (0, 100));
        script.write(2, "x", "b", (10, 50));
        script.read(3, "x", present("b"), (20, 30));
        script.read(4, "x", Value::absent(), (5, 25));
        script.read(3, "x", present("a"), (60, 70));
        script.read(2, "x", present("a"), (80, 90));
        script.read(4, "x", present("a"), (110, 120));
        script.assert_linearizable();
    }

    #[test]
    fn accepts_concurrent_reads_that_see_a_write_in_flight_differently() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 5));
        script.write(1, "x", "b", (10, 100));
        // While the write is in flight a read may see either value, but once one read saw the
        // new value a read starting after it must too.
        script.read(2, "x", present("a"), (20, 30));
        script.read(3, "x", present("b"), (25, 35));
        script.read(2, "x", present("b"), (40, 50));
        script.assert_linearizable();
    }

    #[test]
    fn accepts_an_unknown_write_that_took_effect_even_after_the_client_gave_up() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write_with(2, "x", "b", (20, 30), Outcome::Unknown);
        script.read(1, "x", present("a"), (40, 50));
        script.read(3, "x", present("b"), (60, 70));
        script.read(1, "x", present("b"), (80, 90));
        script.assert_linearizable();
    }

    #[test]
    fn accepts_an_unknown_write_that_never_took_effect() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write_with(2, "x", "b", (20, 30), Outcome::Unknown);
        script.read(1, "x", present("a"), (40, 50));
        script.read(3, "x", present("a"), (60, 70));
        script.assert_linearizable();
    }

    #[test]
    fn accepts_an_unknown_write_that_is_needed_to_explain_a_failed_compare_and_set() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write_with(2, "x", "b", (20, 30), Outcome::Unknown);
        script.compare_and_set(1, "x", ("a", "c"), (40, 50), false);
        script.assert_linearizable();
    }

    #[test]
    fn accepts_an_operation_still_in_flight_as_unknown() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        let write = Operation::Write(present("b"));
        script
            .history
            .invoke(ClientId(2), "x", write, Duration::from_millis(20));
        script.read(1, "x", present("a"), (30, 40));
        script.read(1, "x", present("b"), (50, 60));
        script.assert_linearizable();
    }

    #[test]
    fn accepts_consistent_compare_and_set_successes_and_failures() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        // Two clients race to swap "a": exactly one wins, and a later read sees the winner.
        script.compare_and_set(1, "x", ("a", "b"), (20, 40), false);
        script.compare_and_set(2, "x", ("a", "c"), (25, 35), true);
        script.read(3, "x", present("c"), (50, 60));
        script.compare_and_set(3, "x", ("c", "d"), (70, 80), true);
        let unknown_swap = Operation::CompareAndSet {
            expected: present("d"),
            new: present("e"),
        };
        script.operation(1, "x", unknown_swap, 90, 95, Outcome::Unknown);
        script.read(2, "x", present("e"), (100, 110));
        script.assert_linearizable();
    }

    #[test]
    fn ignores_failed_operations() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write_with(2, "x", "b", (20, 30), Outcome::Failed);
        script.read(1, "x", present("a"), (40, 50));
        script.assert_linearizable();
    }

    #[test]
    fn rejects_a_read_of_a_failed_write() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write_with(2, "x", "b", (20, 30), Outcome::Failed);
        let read = script.read(1, "x", present("b"), (40, 50));
        script.assert_violation("x", read);
    }

    #[test]
    fn rejects_a_stale_read() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write(2, "x", "b", (20, 30));
        script.read(3, "x", present("b"), (35, 40));
        let stale = script.read(1, "x", present("a"), (45, 50));
        script.assert_violation("x", stale);
    }

    #[test]
    fn rejects_a_stale_read_by_a_second_reader_while_a_write_is_in_flight() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 5));
        script.write(1, "x", "b", (10, 100));
        // Once a read has returned the new value, a read that starts later must not go back.
        script.read(2, "x", present("b"), (20, 30));
        let stale = script.read(3, "x", present("a"), (40, 50));
        script.assert_violation("x", stale);
    }

    #[test]
    fn rejects_a_lost_write() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.write(2, "x", "b", (20, 30));
        // Acknowledged, yet a read that starts after it sees the value it replaced.
        let lost = script.read(3, "x", present("a"), (40, 50));
        script.read(3, "x", present("a"), (60, 70));
        script.assert_violation("x", lost);
    }

    #[test]
    fn rejects_a_lost_first_write() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        let lost = script.read(2, "x", Value::absent(), (20, 30));
        script.assert_violation("x", lost);
    }

    #[test]
    fn rejects_a_read_of_a_value_never_written() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        let invented = script.read(2, "x", present("z"), (5, 15));
        script.assert_violation("x", invented);
    }

    #[test]
    fn rejects_a_retried_write_that_took_effect_twice() {
        let mut script = Script::new();
        // The write of "a" was acknowledged once, but a retry applied it again after the swap.
        script.write(1, "x", "a", (0, 10));
        script.compare_and_set(2, "x", ("a", "b"), (20, 30), true);
        let duplicate = script.read(3, "x", present("a"), (40, 50));
        script.assert_violation("x", duplicate);
    }

    #[test]
    fn rejects_two_compare_and_sets_from_the_same_value_both_succeeding() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        script.compare_and_set(1, "x", ("a", "b"), (20, 40), true);
        let second = script.compare_and_set(2, "x", ("a", "c"), (25, 35), true);
        script.read(3, "x", present("c"), (50, 60));
        script.assert_violation("x", second);
    }

    #[test]
    fn rejects_a_compare_and_set_that_failed_although_it_matched() {
        let mut script = Script::new();
        script.write(1, "x", "a", (0, 10));
        let refused = script.compare_and_set(2, "x", ("a", "b"), (20, 30), false);
        script.assert_violation("x", refused);
    }

    #[test]
    fn checks_keys_independently_and_names_the_violated_key() {
        let mut script = Script::new();
        // Across keys these operations could not be ordered as one register, yet each key
        // alone is linearizable except "y".
        script.write(1, "x", "a", (0, 10));
        script.write(2, "y", "a", (0, 10));
        script.read(3, "x", present("a"), (20, 30));
        script.read(3, "z", Value::absent(), (20, 30));
        script.write(2, "y", "b", (40, 50));
        script.read(1, "x", present("a"), (60, 70));
        let stale = script.read(1, "y", present("a"), (60, 70));
        script.assert_violation("y", stale);

        let verdict = script.check();
        let explanation = verdict.explain(&script.history);
        assert!(
            explanation.contains("violation on key \"y\""),
            "{explanation}"
        );
        assert!(
            explanation.contains("register after that prefix: \"b\""),
            "{explanation}"
        );
    }

    #[test]
    fn reports_the_longest_linearizable_prefix() {
        let mut script = Script::new();
        let first = script.write(1, "x", "a", (0, 10));
        let second = script.write(2, "x", "b", (20, 30));
        let stale = script.read(3, "x", present("a"), (40, 50));
        let verdict = script.check();
        assert_eq!(
            verdict,
            Verdict::Violation {
                key: "x".to_owned(),
                longest_linearizable_prefix: vec![first, second],
                state_after_prefix: present("b"),
                stuck_operations: vec![stale],
            }
        );
    }

    #[test]
    fn reports_an_exhausted_search_as_inconclusive() {
        let mut script = Script::new();
        for client in 0..4 {
            script.write(client, "x", &format!("v{client}"), (0, 100));
        }
        script.read(9, "x", present("nothing wrote this"), (200, 210));
        let limits = SearchLimits {
            explored_states_per_key_max: 3,
        };
        let verdict = check_with_limits(&script.history, limits);
        assert!(
            matches!(&verdict, Verdict::Inconclusive { key, .. } if key == "x"),
            "{verdict:?}"
        );
    }

    /// A small deterministic generator (SplitMix64), so the workload is the same on every run.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut mixed = self.0;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            mixed ^ (mixed >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Whether `operations` (on one key) can be linearized, by trying every subset of the
    /// unknown operations and every order of the chosen operations: slow, but obviously right.
    fn linearizable_by_brute_force(operations: &[&RecordedOperation]) -> bool {
        let operations: Vec<&RecordedOperation> = operations
            .iter()
            .copied()
            .filter(|recorded| recorded.outcome != Outcome::Failed)
            .collect();
        let unknown: Vec<usize> = (0..operations.len())
            .filter(|index| operations[*index].outcome == Outcome::Unknown)
            .collect();
        (0..1_u32 << unknown.len()).any(|chosen_unknown| {
            let chosen: Vec<&RecordedOperation> = (0..operations.len())
                .filter(
                    |index| match unknown.iter().position(|other| other == index) {
                        Some(bit) => chosen_unknown & (1 << bit) != 0,
                        None => true,
                    },
                )
                .map(|index| operations[index])
                .collect();
            let mut order = Vec::new();
            let mut used = vec![false; chosen.len()];
            some_order_is_legal(&chosen, &mut order, &mut used, Value::absent())
        })
    }

    fn some_order_is_legal(
        chosen: &[&RecordedOperation],
        order: &mut Vec<usize>,
        used: &mut [bool],
        state: Value,
    ) -> bool {
        if order.len() == chosen.len() {
            return true;
        }
        for next in 0..chosen.len() {
            if used[next] {
                continue;
            }
            // Real time: an operation cannot go before one that completed before it began.
            let must_wait = (0..chosen.len()).any(|other| {
                !used[other]
                    && other != next
                    && chosen[other]
                        .effect_deadline()
                        .is_some_and(|deadline| deadline < chosen[next].invoked_at)
            });
            if must_wait {
                continue;
            }
            let recorded = chosen[next];
            let unknown = recorded.outcome == Outcome::Unknown;
            let state_after = match (&recorded.operation, &recorded.outcome) {
                (Operation::Read, Outcome::Ok(Response::Read(value))) => {
                    (*value == state).then(|| state.clone())
                }
                (Operation::Read, _) => unknown.then(|| state.clone()),
                (Operation::Write(value), _) => Some(value.clone()),
                (Operation::CompareAndSet { expected, new }, outcome) => {
                    let matches = *expected == state;
                    match outcome {
                        Outcome::Ok(Response::CompareAndSet { succeeded }) => (*succeeded
                            == matches)
                            .then(|| if matches { new.clone() } else { state.clone() }),
                        _ => Some(if matches { new.clone() } else { state.clone() }),
                    }
                }
            };
            if let Some(state_after) = state_after {
                used[next] = true;
                order.push(next);
                if some_order_is_legal(chosen, order, used, state_after) {
                    return true;
                }
                order.pop();
                used[next] = false;
            }
        }
        false
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut random = Random(3);
        let values = [Value::absent(), present("a"), present("b"), present("c")];
        let mut verdicts_by_kind = [0_u32; 2];
        for _ in 0..3000 {
            let mut history = History::new();
            for _ in 0..1 + random.below(6) {
                let client = ClientId(random.below(3) as u32);
                let pick = |random: &mut Random| {
                    values[random.below(values.len() as u64) as usize].clone()
                };
                let (operation, response) = match random.below(3) {
                    0 => (Operation::Read, Response::Read(pick(&mut random))),
                    1 => (Operation::Write(pick(&mut random)), Response::Write),
                    _ => {
                        let (expected, new) = (pick(&mut random), pick(&mut random));
                        let succeeded = random.below(2) == 0;
                        let operation = Operation::CompareAndSet { expected, new };
                        (operation, Response::CompareAndSet { succeeded })
                    }
                };
                let outcome = match random.below(10) {
                    0 => Outcome::Failed,
                    1 | 2 => Outcome::Unknown,
                    _ => Outcome::Ok(response),
                };
                let invoked_at = Duration::from_millis(random.below(12));
                let completed_at = invoked_at + Duration::from_millis(random.below(8));
                let id = history.invoke(client, "x", operation, invoked_at);
                history.complete(id, completed_at, outcome);
            }
            let operations: Vec<&RecordedOperation> = history.operations().iter().collect();
            let expected = linearizable_by_brute_force(&operations);
            let verdict = check(&history);
            assert_eq!(
                verdict.is_linearizable(),
                expected,
                "disagreement on:\n{}{}",
                history.render_window(None, Duration::ZERO, Duration::MAX),
                verdict.explain(&history)
            );
            verdicts_by_kind[usize::from(expected)] += 1;
        }
        // Both answers must be common, or the comparison proves little.
        assert!(
            verdicts_by_kind.iter().all(|count| *count > 300),
            "{verdicts_by_kind:?}"
        );
    }

    /// Where a simulated client is in its current operation.
    enum Phase {
        Idle,
        Invoked {
            id: OperationId,
        },
        /// The operation took effect (or definitely did not) and the outcome is on its way.
        Decided {
            id: OperationId,
            outcome: Outcome,
        },
    }

    /// Simulates `clients` clients running `operations_total` operations against an atomic
    /// register per key, so the history is linearizable by construction: each operation takes
    /// effect at one tick between its invocation and its completion. Some operations fail
    /// (without effect) or time out (with or without effect). When `corrupt_read` is `Some(n)`,
    /// the n-th successful read instead returns a value nobody wrote; the key it read is
    /// returned.
    fn simulated_history(
        seed: u64,
        operations_total: usize,
        clients: u32,
        keys: u64,
        corrupt_read: Option<usize>,
    ) -> (History, Option<String>) {
        let mut random = Random(seed);
        let mut history = History::new();
        let mut registers: HashMap<String, Value> = HashMap::new();
        let mut phases: Vec<Phase> = (0..clients).map(|_| Phase::Idle).collect();
        let mut started = 0;
        let mut successful_reads = 0;
        let mut corrupted_key = None;
        let mut tick: u64 = 0;
        while started < operations_total || phases.iter().any(|phase| !matches!(phase, Phase::Idle))
        {
            tick += 1;
            let now = Duration::from_millis(tick);
            let client = random.below(u64::from(clients)) as usize;
            let phase = std::mem::replace(&mut phases[client], Phase::Idle);
            phases[client] = match phase {
                Phase::Idle if started < operations_total => {
                    started += 1;
                    let key = format!("k{}", random.below(keys));
                    let operation = match random.below(10) {
                        0..=3 => Operation::Read,
                        4..=6 => Operation::Write(present(&format!("w{started}"))),
                        _ => {
                            let current = registers.get(&key).cloned().unwrap_or_default();
                            let expected = if random.below(2) == 0 {
                                current
                            } else {
                                present(&format!("w{}", random.below(started as u64)))
                            };
                            let new = present(&format!("s{started}"));
                            Operation::CompareAndSet { expected, new }
                        }
                    };
                    let id = history.invoke(ClientId(client as u32), key, operation, now);
                    Phase::Invoked { id }
                }
                Phase::Idle => Phase::Idle,
                Phase::Invoked { id } => {
                    let recorded = history.get(id).expect("invoked operations are recorded");
                    let key = recorded.key.clone();
                    let operation = recorded.operation.clone();
                    let fate = random.below(100);
                    // Some operations take effect but the client never hears back.
                    let hears_back = fate >= 9;
                    let outcome = if fate < 3 {
                        Outcome::Failed
                    } else if fate < 6 {
                        Outcome::Unknown
                    } else {
                        let register = registers.entry(key.clone()).or_default();
                        let response = match operation {
                            Operation::Read if hears_back => {
                                successful_reads += 1;
                                if corrupt_read == Some(successful_reads) {
                                    corrupted_key = Some(key);
                                    Response::Read(present("never written"))
                                } else {
                                    Response::Read(register.clone())
                                }
                            }
                            Operation::Read => Response::Read(register.clone()),
                            Operation::Write(value) => {
                                *register = value;
                                Response::Write
                            }
                            Operation::CompareAndSet { expected, new } => {
                                let succeeded = *register == expected;
                                if succeeded {
                                    *register = new;
                                }
                                Response::CompareAndSet { succeeded }
                            }
                        };
                        if hears_back {
                            Outcome::Ok(response)
                        } else {
                            Outcome::Unknown
                        }
                    };
                    Phase::Decided { id, outcome }
                }
                Phase::Decided { id, outcome } => {
                    history.complete(id, now, outcome);
                    Phase::Idle
                }
            };
        }
        (history, corrupted_key)
    }

    #[test]
    fn checks_thousands_of_concurrent_operations_over_many_keys() {
        let (history, _) = simulated_history(7, 4000, 5, 10, None);
        assert_eq!(history.len(), 4000);
        let verdict = check(&history);
        assert!(verdict.is_linearizable(), "{}", verdict.explain(&history));
    }

    #[test]
    fn checks_one_hot_key_shared_by_many_clients() {
        let (history, _) = simulated_history(5, 3000, 12, 1, None);
        let verdict = check(&history);
        assert!(verdict.is_linearizable(), "{}", verdict.explain(&history));
    }

    #[test]
    fn memo_keys_differ_exactly_when_the_sets_differ() {
        let mut random = Random(1);
        let (known_count, operations) = (300, 420);
        let mut set = OperationSet::new(known_count, operations);
        let mut members = vec![false; operations];
        let mut sets_by_key: HashMap<Vec<u64>, Vec<bool>> = HashMap::new();
        let mut key = Vec::new();
        for _ in 0..6000 {
            // Like a search: mostly extend the dense front of known operations, sometimes undo
            // or add one near it, sometimes touch an unknown operation.
            let front = members[..known_count].iter().position(|member| !member);
            let operation = match (random.below(8), front) {
                (0..=4, Some(front)) => front,
                (5 | 6, Some(front)) => {
                    let low = front.saturating_sub(70);
                    (low + random.below(140) as usize).min(known_count - 1)
                }
                _ => known_count + random.below((operations - known_count) as u64) as usize,
            };
            if members[operation] {
                set.remove(operation);
            } else {
                set.insert(operation);
            }
            members[operation] = !members[operation];
            set.write_key(&mut key);
            let earlier = sets_by_key
                .entry(key.clone())
                .or_insert_with(|| members.clone());
            assert_eq!(*earlier, members, "one key for two sets: {key:?}");
        }
        let distinct_sets: HashSet<&Vec<bool>> = sets_by_key.values().collect();
        assert_eq!(
            distinct_sets.len(),
            sets_by_key.len(),
            "one set with two keys"
        );
        assert!(set.known_full_words > 0, "the test never filled a word");
    }

    #[test]
    fn finds_one_bad_read_among_thousands_of_operations() {
        let (history, corrupted_key) = simulated_history(11, 4000, 5, 10, Some(700));
        let corrupted_key = corrupted_key.expect("the simulation corrupted a read");
        let verdict = check(&history);
        assert!(
            matches!(&verdict, Verdict::Violation { key, .. } if *key == corrupted_key),
            "expected a violation on {corrupted_key:?}, got:\n{}",
            verdict.explain(&history)
        );
    }
}
