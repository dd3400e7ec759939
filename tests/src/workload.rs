//! `RegisterWorkload`: concurrent clients that read, write and compare-and-set a few keys
//! (independent registers) through the real client, recording every operation in a
//! `HistoryRecorder` for the linearizability checker; they also create unique nodes, whose
//! acknowledgements the convergence check looks for afterwards.
//!
//! Sessions and ephemeral nodes enter the same check: a client with `Mix::ephemeral` owns one
//! more register, `{prefix}/e{client}`, that is present only as an ephemeral node of its
//! session. Creating it is a compare-and-set from absent (an existing node answers "not
//! swapped"); closing the session is a write of absent; every client reads it. A session that
//! the cluster expired although its client kept it alive deletes the node with no operation to
//! explain it, which the checker reports.
//!
//! Invariants:
//! - Every value written is unique (client and sequence number), so a read names the one write
//!   it saw, and an effect applied twice is visible to the checker.
//! - An operation's outcome is `Ok` only on a reply, `Failed` only when the client library says
//!   the request was not applied (or it was a read), and `Unknown` otherwise, including when
//!   the workload's own deadline cut the call short.
//! - Each client has at most one operation in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord_client::{
    Client, ClientOptions, Compare, CompareOp, Consistency, CreateOptions, Error, NodeKind, Op,
    Session, SessionState, Txn,
};

use crate::history::{ClientId, HistoryRecorder, Operation, Outcome, Response, Value};
use crate::rng::SeededRng;

/// Relative weights of the operations one client issues.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub read: u32,
    pub write: u32,
    pub compare_and_set: u32,
    pub create: u32,
    /// Creating this client's ephemeral node, or closing the session that owns it.
    pub ephemeral: u32,
}

impl Mix {
    /// Reads, writes and compare-and-sets in similar numbers, and some creates.
    pub const BALANCED: Mix = Mix {
        read: 4,
        write: 3,
        compare_and_set: 2,
        create: 1,
        ephemeral: 1,
    };
    /// Mostly reads: what a client that watches configuration does.
    pub const READ_MOSTLY: Mix = Mix {
        read: 8,
        write: 1,
        compare_and_set: 1,
        create: 0,
        ephemeral: 0,
    };
    pub const READS_ONLY: Mix = Mix {
        read: 1,
        write: 0,
        compare_and_set: 0,
        create: 0,
        ephemeral: 0,
    };
    pub const WRITES_ONLY: Mix = Mix {
        read: 0,
        write: 1,
        compare_and_set: 0,
        create: 0,
        ephemeral: 0,
    };

    fn total(&self) -> u32 {
        self.read + self.write + self.compare_and_set + self.create + self.ephemeral
    }
}

/// One client of the workload: where it connects and what it does.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// Endpoints in preference order (the client starts with the first).
    pub endpoints: Vec<String>,
    pub mix: Mix,
    pub reads: Consistency,
}

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub clients: Vec<ClientPlan>,
    /// How many registers, named `{prefix}/r{index}`.
    pub keys: usize,
    /// Parent of the registers; created acknowledgements go under `{prefix}-created`.
    pub prefix: String,
    /// The client library's timeout for one call, retries included.
    pub request_timeout: Duration,
    /// Pause between one client's operations.
    pub think_time: Duration,
    /// TTL of the sessions owning ephemeral registers: longer than any fault, so a healthy
    /// client's session must survive every one.
    pub session_ttl: Duration,
    pub seed: u64,
}

impl WorkloadOptions {
    /// `count` clients with linearizable reads. Client `i` starts at endpoint
    /// `i % endpoints.len()`; even clients use the `BALANCED` mix and fail over to the other
    /// endpoints, odd ones stay with their member and mostly read, so a member cut off from the
    /// others keeps being asked (where a deposed leader's stale reads would show).
    pub fn balanced(endpoints: &[String], count: usize, seed: u64) -> WorkloadOptions {
        let clients = (0..count)
            .map(|index| {
                let mut rotated = endpoints.to_vec();
                rotated.rotate_left(index % endpoints.len().max(1));
                if index % 2 == 1 {
                    rotated.truncate(1);
                }
                ClientPlan {
                    endpoints: rotated,
                    mix: if index % 2 == 0 {
                        Mix::BALANCED
                    } else {
                        Mix::READ_MOSTLY
                    },
                    reads: Consistency::Linearizable,
                }
            })
            .collect();
        WorkloadOptions {
            clients,
            keys: 4,
            prefix: "/registers".to_owned(),
            request_timeout: Duration::from_secs(2),
            think_time: Duration::from_millis(10),
            session_ttl: Duration::from_secs(10),
            seed,
        }
    }

    pub fn key(&self, index: usize) -> String {
        format!("{}/r{index}", self.prefix)
    }

    /// The ephemeral register of client `client`.
    pub fn ephemeral_key(&self, client: usize) -> String {
        format!("{}/e{client}", self.prefix)
    }

    /// Every key the checker sees: the registers, then the clients' ephemeral registers.
    pub fn all_keys(&self) -> Vec<String> {
        let registers = (0..self.keys).map(|index| self.key(index));
        let ephemerals = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, plan)| plan.mix.ephemeral > 0)
            .map(|(client, _)| self.ephemeral_key(client));
        registers.chain(ephemerals).collect()
    }
}

/// What the clients did, by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Paths whose create was acknowledged: each must exist after healing.
    pub created: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.created.extend(other.created);
    }

    pub fn operations(&self) -> u64 {
        self.ok + self.failed + self.unknown
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

/// A running workload; `stop` ends it.
pub struct RegisterWorkload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl RegisterWorkload {
    /// Creates the registers (each holding `"initial"`, recorded as a write) through `setup`,
    /// connects every client, and starts them.
    pub async fn start(
        setup: &Client,
        options: &WorkloadOptions,
        recorder: &HistoryRecorder,
    ) -> Result<RegisterWorkload, Error> {
        let make_parents = CreateOptions {
            make_parents: true,
            ..CreateOptions::default()
        };
        setup
            .create(&format!("{}-created", options.prefix), "", &make_parents)
            .await?;
        let setup_client = ClientId(u32::MAX);
        for index in 0..options.keys {
            let key = options.key(index);
            let handle = recorder.invoke(
                setup_client,
                key.clone(),
                Operation::Write(Value::present("initial")),
            );
            setup.create(&key, "initial", &make_parents).await?;
            recorder.complete(handle, Outcome::Ok(Response::Write));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (index, plan) in options.clients.iter().enumerate() {
            let client_options = ClientOptions {
                connect_timeout: Duration::from_millis(500),
                request_timeout: options.request_timeout,
                discover_members: false,
                tls: crate::pki::harness_client_tls(),
                token: None,
            };
            let client = Client::connect_with(&plan.endpoints, client_options).await?;
            let worker = Worker {
                id: ClientId(u32::try_from(index).expect("few clients")),
                client,
                plan: plan.clone(),
                options: options.clone(),
                recorder: recorder.clone(),
                rng: SeededRng::derive(options.seed, index as u64),
                last_seen: vec![Value::present("initial"); options.keys],
                readable: options.all_keys(),
                ephemeral_key: options.ephemeral_key(index),
                session: None,
                closing: false,
                sequence: 0,
            };
            tasks.push(tokio::spawn(worker.run(stop.clone())));
        }
        Ok(RegisterWorkload { stop, tasks })
    }

    /// Stops every client after its current operation and adds up what they did.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for task in self.tasks {
            tally.add(task.await.expect("workload clients do not panic"));
        }
        tally
    }
}

struct Worker {
    id: ClientId,
    client: Client,
    plan: ClientPlan,
    options: WorkloadOptions,
    recorder: HistoryRecorder,
    rng: SeededRng,
    /// The last value this client saw or wrote per key: what its compare-and-sets expect.
    last_seen: Vec<Value>,
    /// What reads pick from: the registers first, then every ephemeral register.
    readable: Vec<String>,
    ephemeral_key: String,
    /// The session owning `ephemeral_key` when present.
    session: Option<Session>,
    /// A close of `session` was sent and not settled: it is retried before anything else.
    closing: bool,
    sequence: u64,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>) -> Tally {
        let mut tally = Tally::default();
        let total = self.plan.mix.total();
        assert!(total > 0, "a client needs some operations to do");
        while !stop.load(Ordering::Relaxed) {
            let pick = self.rng.below(u64::from(total)) as u32;
            let mix = self.plan.mix;
            if pick < mix.read {
                self.read(&mut tally).await;
            } else if pick < mix.read + mix.write {
                self.write(&mut tally).await;
            } else if pick < mix.read + mix.write + mix.compare_and_set {
                self.compare_and_set(&mut tally).await;
            } else if pick < mix.read + mix.write + mix.compare_and_set + mix.create {
                self.create(&mut tally).await;
            } else if self.session.is_some() && self.rng.below(2) == 0 {
                self.close_session(&mut tally).await;
            } else {
                self.create_ephemeral(&mut tally).await;
            }
            tokio::time::sleep(self.options.think_time).await;
        }
        // Leaves the ephemeral register in a state the final reads can pin (the faults are
        // healed by now, so a close settles within a few attempts).
        for _ in 0..5 {
            if self.session.is_none() {
                break;
            }
            self.close_session(&mut tally).await;
        }
        tally
    }

    fn next_value(&mut self) -> String {
        self.sequence += 1;
        format!("c{}-{}", self.id.0, self.sequence)
    }

    /// The workload's own bound on one call: the library's timeout plus a margin.
    fn deadline(&self) -> Duration {
        self.options.request_timeout + Duration::from_secs(1)
    }

    async fn read(&mut self, tally: &mut Tally) {
        let index = self.rng.index(self.readable.len());
        let key = self.readable[index].clone();
        let handle = self.recorder.invoke(self.id, key.clone(), Operation::Read);
        let call = self.client.get_with(&key, self.plan.reads);
        let outcome = match tokio::time::timeout(self.deadline(), call).await {
            Ok(Ok(node)) => {
                let value = Value::present(String::from_utf8_lossy(&node.data).into_owned());
                if let Some(last_seen) = self.last_seen.get_mut(index) {
                    *last_seen = value.clone();
                }
                Outcome::Ok(Response::Read(value))
            }
            Ok(Err(Error::NoNode { .. })) => Outcome::Ok(Response::Read(Value::absent())),
            // A read changes nothing, so a failed or timed-out read is simply not an effect.
            Ok(Err(_)) | Err(_) => Outcome::Failed,
        };
        tally.count(&outcome);
        self.recorder.complete(handle, outcome);
    }

    async fn write(&mut self, tally: &mut Tally) {
        let index = self.rng.index(self.options.keys);
        let key = self.options.key(index);
        let value = self.next_value();
        let operation = Operation::Write(Value::present(value.clone()));
        let handle = self.recorder.invoke(self.id, key.clone(), operation);
        let call = self.client.set(&key, value.clone(), None);
        let outcome = match tokio::time::timeout(self.deadline(), call).await {
            Ok(Ok(_)) => {
                self.last_seen[index] = Value::present(value);
                Outcome::Ok(Response::Write)
            }
            Ok(Err(error)) => write_failure(&error),
            Err(_) => Outcome::Unknown,
        };
        tally.count(&outcome);
        self.recorder.complete(handle, outcome);
    }

    async fn compare_and_set(&mut self, tally: &mut Tally) {
        let index = self.rng.index(self.options.keys);
        let key = self.options.key(index);
        let expected = self.last_seen[index].clone();
        let Some(expected_text) = expected.as_text().map(str::to_owned) else {
            return self.write(tally).await;
        };
        let value = self.next_value();
        let operation = Operation::CompareAndSet {
            expected,
            new: Value::present(value.clone()),
        };
        let handle = self.recorder.invoke(self.id, key.clone(), operation);
        let txn = Txn::new()
            .when(Compare::value(&key, CompareOp::Equal, expected_text))
            .then(Op::set(&key, value.clone(), None));
        let outcome = match tokio::time::timeout(self.deadline(), self.client.txn(txn)).await {
            Ok(Ok(result)) => {
                if result.succeeded {
                    self.last_seen[index] = Value::present(value);
                }
                Outcome::Ok(Response::CompareAndSet {
                    succeeded: result.succeeded,
                })
            }
            Ok(Err(error)) => write_failure(&error),
            Err(_) => Outcome::Unknown,
        };
        tally.count(&outcome);
        self.recorder.complete(handle, outcome);
    }

    async fn create(&mut self, tally: &mut Tally) {
        let name = self.next_value();
        let path = format!("{}-created/{name}", self.options.prefix);
        let create_options = CreateOptions::default();
        let call = self.client.create(&path, path.clone(), &create_options);
        let outcome = match tokio::time::timeout(self.deadline(), call).await {
            Ok(Ok(_)) => {
                tally.created.push(path);
                Outcome::Ok(Response::Write)
            }
            Ok(Err(error)) => write_failure(&error),
            Err(_) => Outcome::Unknown,
        };
        tally.count(&outcome);
    }
}

impl Worker {
    /// Creates this client's ephemeral register under its session (opening one if needed): a
    /// compare-and-set from absent.
    async fn create_ephemeral(&mut self, tally: &mut Tally) {
        if self
            .session
            .as_ref()
            .is_some_and(|session| session.state() == SessionState::Expired)
        {
            // The cluster says the session is gone, and its node with it.
            self.session = None;
            self.closing = false;
        }
        if self.closing {
            // A new session may not create the register while an older one may still own it.
            return self.close_session(tally).await;
        }
        if self.session.is_none() {
            let open = self.client.open_session(self.options.session_ttl);
            match tokio::time::timeout(self.deadline(), open).await {
                Ok(Ok(session)) => self.session = Some(session),
                // An unknown open leaves at most a session with nothing in it, which expires.
                Ok(Err(_)) | Err(_) => return,
            }
        }
        let session_id = self.session.as_ref().map_or(0, Session::id);
        let key = self.ephemeral_key.clone();
        let value = self.next_value();
        let operation = Operation::CompareAndSet {
            expected: Value::absent(),
            new: Value::present(value.clone()),
        };
        let handle = self.recorder.invoke(self.id, key.clone(), operation);
        let create_options = CreateOptions {
            kind: NodeKind::Ephemeral,
            session_id,
            ..CreateOptions::default()
        };
        let call = self.client.create(&key, value, &create_options);
        let outcome = match tokio::time::timeout(self.deadline(), call).await {
            Ok(Ok(_)) => Outcome::Ok(Response::CompareAndSet { succeeded: true }),
            Ok(Err(Error::NodeExists { .. })) => {
                Outcome::Ok(Response::CompareAndSet { succeeded: false })
            }
            Ok(Err(error)) => {
                if matches!(error, Error::SessionExpired { .. }) {
                    self.session = None;
                }
                write_failure(&error)
            }
            Err(_) => Outcome::Unknown,
        };
        tally.count(&outcome);
        self.recorder.complete(handle, outcome);
    }

    /// Closes this client's session, deleting its ephemeral register if present: a write of
    /// absent. Only this client creates the register, and only under its current session, so
    /// a closed session leaves it absent.
    ///
    /// Until the cluster settles the close (done, or the session is gone), the session is kept
    /// alive and no other session is opened: an abandoned session would delete the register
    /// when it expired, with no operation to explain it, and a newer session's close would be
    /// recorded as deleting a node it does not own.
    async fn close_session(&mut self, tally: &mut Tally) {
        let Some(session) = &self.session else {
            return;
        };
        let handle = self.recorder.invoke(
            self.id,
            self.ephemeral_key.clone(),
            Operation::Write(Value::absent()),
        );
        let close = self.client.close_session(session.id());
        let (outcome, settled) = match tokio::time::timeout(self.deadline(), close).await {
            Ok(Ok(_)) => (Outcome::Ok(Response::Write), true),
            // Already gone: whatever deleted its node happened before.
            Ok(Err(Error::SessionExpired { .. })) => (Outcome::Failed, true),
            Ok(Err(error)) => (write_failure(&error), false),
            Err(_) => (Outcome::Unknown, false),
        };
        if settled {
            self.session = None;
        }
        self.closing = !settled;
        tally.count(&outcome);
        self.recorder.complete(handle, outcome);
    }
}

/// How a write that returned `error` is recorded.
fn write_failure(error: &Error) -> Outcome {
    if error.is_outcome_unknown() {
        Outcome::Unknown
    } else {
        Outcome::Failed
    }
}
