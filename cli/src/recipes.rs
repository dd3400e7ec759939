//! `coordctl lock`, `elect` and `barrier`, arguments and handlers: the client's recipes from a
//! shell.
//!
//! A held lock or leadership is either kept until coordctl is interrupted, or lent to a
//! command run as a child process with the token in its environment. What coordctl promises:
//! - the child is started only after the recipe confirmed the lock (or leadership);
//! - the child leads a process group of its own (`ProcessGroup`), and every stop below goes to
//!   the whole group, so that what the child started (`sleep 100 &`, a pipeline, a worker
//!   pool) stops with it: SIGTERM (and SIGCONT, so a stopped member can act on it) to the
//!   group, then SIGKILL to the group after `--kill-grace` if any member is still alive;
//! - when the lock may be lost (session expired, or suspended: no keep-alive acknowledged for
//!   two thirds of its TTL, before its safe deadline; or the node deleted), the group is
//!   stopped at once and coordctl exits 1 — the token must still be checked downstream, since
//!   a child can act in the moment before the signal lands;
//! - SIGINT, SIGTERM or SIGHUP to coordctl stops the group the same way, then releases the
//!   lock (the group, not being the terminal's foreground group, does not get them itself);
//! - when the child exits, whatever it left running in its group is stopped the same way; the
//!   lock is released only after the whole group is gone, and coordctl exits with the child's
//!   status.
//!
//! A process that leaves the group (`setsid`, `setpgid`) escapes all of this, as does anything
//! still running if coordctl itself is killed with SIGKILL; the fencing token is the defence
//! against both. `--timeout` bounds the whole wait, the session's opening included.
//! `barrier double`'s command runs as a plain child, not in a group of its own.

use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use coord_client::recipes::{list_elections, list_locks};
use coord_client::{
    Barrier, Client, DoubleBarrier, Election, Error, HeldNode, HoldState, LockGuard, LostReason,
    Mutex, Session,
};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::output::Printer;

/// How a held lock or leadership is used.
#[derive(Args)]
pub struct HoldingArgs {
    /// The session's TTL: how long after coordctl stops the lock is released at the latest.
    /// Servers raise a TTL below their --session-ttl-min (by default 5 × --election-timeout,
    /// 5s), the shortest that rides out a leader failover.
    #[arg(long, default_value = "10s", value_parser = coord_client::parse_duration)]
    ttl: Duration,
    /// Time between SIGTERM and SIGKILL when the command's process group must stop.
    #[arg(long, default_value = "5s", value_parser = coord_client::parse_duration)]
    kill_grace: Duration,
    /// The command to run while holding (after `--`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct LockArgs {
    /// The lock, a path such as /locks/db.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the locks at or under this prefix with holder, token, age and waiters.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["name", "command"])]
    list: Option<String>,
    /// Give up if the lock is not acquired within this, the session's opening included
    /// (exit 1).
    #[arg(long, value_parser = coord_client::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    holding: HoldingArgs,
}

/// The long help of `coordctl lock`.
pub const LOCK_HELP: &str = "Take a lock and print its fencing token.

Without a command, coordctl holds the lock until interrupted (Ctrl-C or SIGTERM), then releases
it. With `-- CMD ARGS...`, it runs CMD while holding the lock, with COORD_LOCK_NAME,
COORD_LOCK_PATH and COORD_LOCK_TOKEN in its environment, releases the lock when CMD exits, and
exits with CMD's status. --timeout bounds the whole wait, opening the session included.

CMD runs in a process group of its own, and is stopped as a group: SIGTERM to every process in
it, then SIGKILL after --kill-grace to any still alive. That happens when CMD exits (to what it
left running in the background), when coordctl gets SIGINT, SIGTERM or SIGHUP (Ctrl-C reaches
coordctl, which stops the group), and when the lock may be lost. The lock is released only once
the group is gone. Being in a background group, CMD is stopped if it reads from the terminal;
give it another stdin.

A lease is not mutual exclusion on its own: if coordctl cannot confirm its session alive in
time (paused, partitioned), the lock may pass to someone else. CMD's group then gets SIGTERM
(SIGKILL after --kill-grace) and coordctl exits 1, but CMD may act in the moment before the
signal lands. Resources that CMD changes should check COORD_LOCK_TOKEN: reject any token lower
than the highest they have seen (coord_client::TokenVerifier), or write through a txn fenced
on COORD_LOCK_PATH and the token (`fence PATH TOKEN` in `coordctl txn`).

  coordctl lock /locks/backup -- ./backup.sh
  coordctl lock /locks/backup --timeout 30s -- ./backup.sh
  coordctl lock --list /locks";

#[derive(Args)]
pub struct ElectArgs {
    /// The election, a path such as /elections/scheduler.
    #[arg(required_unless_present_any = ["list"])]
    name: Option<String>,
    /// What this candidate announces as leader (e.g. its address).
    #[arg(required_unless_present_any = ["list", "observe", "leader"])]
    value: Option<String>,
    /// Print each leader change, until interrupted.
    #[arg(long, conflicts_with_all = ["value", "leader", "list", "command"])]
    observe: bool,
    /// Print the current leader (exit 1 when there is none).
    #[arg(long, conflicts_with_all = ["value", "list", "command"])]
    leader: bool,
    /// List the elections at or under this prefix with leader, token, age and candidates.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["name", "command"])]
    list: Option<String>,
    /// Give up if not elected within this, the session's opening included (exit 1).
    #[arg(long, value_parser = coord_client::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    holding: HoldingArgs,
}

#[derive(Subcommand)]
pub enum BarrierCommand {
    /// Raise a barrier: waiters block until it is removed.
    Set { name: String },
    /// Remove a barrier, releasing every waiter.
    Remove { name: String },
    /// Wait until the barrier is removed (or was never set).
    Wait {
        name: String,
        /// Give up after this (exit 1).
        #[arg(long, value_parser = coord_client::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Double barrier: wait until COUNT participants entered, run the command (if any), then
    /// wait until all of them left. A participant that dies is counted out once its session's
    /// TTL passes.
    Double {
        name: String,
        #[arg(long)]
        count: u64,
        /// The session's TTL.
        #[arg(long, default_value = "10s", value_parser = coord_client::parse_duration)]
        ttl: Duration,
        /// Give up entering after this, the session's opening included (exit 1).
        #[arg(long, value_parser = coord_client::parse_duration)]
        timeout: Option<Duration>,
        /// The command to run between entering and leaving (after `--`).
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

/// Exit status for a held lock that was lost.
const EXIT_LOST: i32 = 1;
/// Exit status after SIGHUP / SIGINT / SIGTERM, as shells report them.
const EXIT_HUNG_UP: i32 = 129;
const EXIT_INTERRUPTED: i32 = 130;
const EXIT_TERMINATED: i32 = 143;

/// What ended a holding.
enum Ending {
    /// The child exited with this status (or was killed by a signal: 128 + signal).
    Child(i32),
    Interrupted(i32),
    Lost(LostReason),
}

/// `coordctl lock`: list the locks under a prefix, or take one. Returns the exit status.
pub async fn lock(client: &Client, printer: &Printer, args: LockArgs) -> anyhow::Result<i32> {
    match (args.list, args.name) {
        (Some(prefix), _) => list_locks_under(client, printer, &prefix).await,
        (None, Some(name)) => hold_lock(client, printer, &name, args.timeout, args.holding).await,
        (None, None) => anyhow::bail!("name a lock, or --list PREFIX"),
    }
}

/// `coordctl lock NAME`: acquire (within `timeout` if given, the session's opening
/// included), then hold or run the command. Returns the process exit status.
async fn hold_lock(
    client: &Client,
    printer: &Printer,
    name: &str,
    timeout: Option<Duration>,
    holding: HoldingArgs,
) -> anyhow::Result<i32> {
    let mut signals = Signals::new()?;
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let not_acquired = NotAcquired {
        what: format!("lock {name}"),
        timeout: timeout.unwrap_or_default(),
    };
    let opened = open_session(client, holding.ttl, deadline, &mut signals, &not_acquired);
    let session = match opened.await? {
        Waited::Got(session) => session,
        Waited::Interrupted(status) => return Ok(status),
    };
    let mutex = Mutex::new(client, &session, name).with_holder(holder_text(&holding.command));
    let acquisition = acquire(&mutex, remaining(deadline));
    let (session, guard) =
        match acquire_in(session, acquisition, &mut signals, not_acquired).await? {
            Waited::Got(held) => held,
            Waited::Interrupted(status) => return Ok(status),
        };
    printer.lock_acquired(name, guard.path(), guard.token());
    let environment = [
        ("COORD_LOCK_NAME", name.to_owned()),
        ("COORD_LOCK_PATH", guard.path().to_owned()),
        ("COORD_LOCK_TOKEN", guard.token().to_string()),
    ];
    let ending = hold(&holding, &environment, &mut signals, must_stop(&guard)).await?;
    let status = finish(printer, name, ending);
    // Release explicitly, then close the session (which would release it too).
    let _ = guard.release().await;
    let _ = session.close().await;
    Ok(status)
}

async fn acquire(mutex: &Mutex, timeout: Option<Duration>) -> Result<Option<LockGuard>, Error> {
    match timeout {
        Some(timeout) => mutex.acquire_timeout(timeout).await,
        None => mutex.acquire().await.map(Some),
    }
}

/// How a wait for a session or an acquisition ended, when it did not fail.
enum Waited<T> {
    Got(T),
    /// SIGINT or SIGTERM came first: coordctl exits with this status.
    Interrupted(i32),
}

/// Runs `future` until `deadline` (if any); `None` if the deadline came first.
async fn until<T>(deadline: Option<Instant>, future: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

/// The time left until `deadline`, if there is one.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Opens a session of `ttl` by `deadline` (if any), or fails with `not_acquired`; a signal
/// ends the wait.
async fn open_session(
    client: &Client,
    ttl: Duration,
    deadline: Option<Instant>,
    signals: &mut Signals,
    not_acquired: &NotAcquired,
) -> anyhow::Result<Waited<Session>> {
    tokio::select! {
        opened = until(deadline, client.open_session(ttl)) => match opened {
            Some(session) => Ok(Waited::Got(session?)),
            None => Err(not_acquired.clone().into()),
        },
        status = signals.next() => Ok(Waited::Interrupted(status)),
    }
}

/// Waits for `acquisition` (a lock or a leadership in `session`, which gives up `None` at its
/// deadline). Unless it succeeds, the session is closed, which deletes any node the attempt
/// left.
async fn acquire_in<T>(
    session: Session,
    acquisition: impl Future<Output = Result<Option<T>, Error>>,
    signals: &mut Signals,
    not_acquired: NotAcquired,
) -> anyhow::Result<Waited<(Session, T)>> {
    let acquired = tokio::select! {
        acquired = acquisition => Ok(acquired),
        status = signals.next() => Err(status),
    };
    match acquired {
        Ok(Ok(Some(held))) => Ok(Waited::Got((session, held))),
        failed => {
            // A signal, a failure or the deadline: close it, which deletes any node left.
            let _ = session.close().await;
            match failed {
                Err(status) => Ok(Waited::Interrupted(status)),
                Ok(Err(error)) => Err(error.into()),
                Ok(Ok(_)) => Err(not_acquired.into()),
            }
        }
    }
}

/// `coordctl elect`: list the elections under a prefix, follow or show one's leader, or
/// campaign. Returns the exit status.
pub async fn elect(client: &Client, printer: &Printer, args: ElectArgs) -> anyhow::Result<i32> {
    match (args.list, args.name, args.value) {
        (Some(prefix), _, _) => list_elections_under(client, printer, &prefix).await,
        (None, Some(name), _) if args.observe => observe(client, printer, &name).await,
        (None, Some(name), _) if args.leader => leader(client, printer, &name).await,
        (None, Some(name), Some(value)) => {
            let timeout = args.timeout;
            campaign(client, printer, &name, &value, timeout, args.holding).await
        }
        _ => anyhow::bail!("name an election and a value, or use --observe, --leader or --list"),
    }
}

/// `coordctl elect NAME VALUE`: campaign (within `timeout` if given, the session's opening
/// included), then hold the leadership or run the command as leader.
async fn campaign(
    client: &Client,
    printer: &Printer,
    name: &str,
    value: &str,
    timeout: Option<Duration>,
    holding: HoldingArgs,
) -> anyhow::Result<i32> {
    let mut signals = Signals::new()?;
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let not_acquired = NotAcquired {
        what: format!("leadership of {name}"),
        timeout: timeout.unwrap_or_default(),
    };
    let opened = open_session(client, holding.ttl, deadline, &mut signals, &not_acquired);
    let session = match opened.await? {
        Waited::Got(session) => session,
        Waited::Interrupted(status) => return Ok(status),
    };
    let election = Election::new(client, &session, name);
    let campaign = async {
        match remaining(deadline) {
            Some(timeout) => election.campaign_timeout(value, timeout).await,
            None => election.campaign(value).await.map(Some),
        }
    };
    let (session, leadership) =
        match acquire_in(session, campaign, &mut signals, not_acquired).await? {
            Waited::Got(held) => held,
            Waited::Interrupted(status) => return Ok(status),
        };
    printer.elected(name, value, leadership.path(), leadership.token());
    let environment = [
        ("COORD_ELECTION_NAME", name.to_owned()),
        ("COORD_ELECTION_PATH", leadership.path().to_owned()),
        ("COORD_ELECTION_TOKEN", leadership.token().to_string()),
        ("COORD_ELECTION_VALUE", value.to_owned()),
    ];
    let ending = hold(&holding, &environment, &mut signals, must_stop(&leadership)).await?;
    let status = finish(printer, name, ending);
    let _ = leadership.resign().await;
    let _ = session.close().await;
    Ok(status)
}

/// `coordctl elect --observe NAME`: one line per leader change, until interrupted.
async fn observe(client: &Client, printer: &Printer, name: &str) -> anyhow::Result<i32> {
    let mut signals = Signals::new()?;
    let mut changes = Election::observe(client, name);
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(change) => printer.leader(name, change?.as_ref()),
                None => return Ok(0),
            },
            status = signals.next() => return Ok(status),
        }
    }
}

/// `coordctl elect --leader NAME`: the current leader; exit 1 when there is none.
async fn leader(client: &Client, printer: &Printer, name: &str) -> anyhow::Result<i32> {
    let leader = Election::leader(client, name).await?;
    printer.leader(name, leader.as_ref());
    Ok(if leader.is_some() { 0 } else { 1 })
}

/// `coordctl lock --list PREFIX`.
async fn list_locks_under(client: &Client, printer: &Printer, prefix: &str) -> anyhow::Result<i32> {
    printer.locks(&list_locks(client, prefix).await?);
    Ok(0)
}

/// `coordctl elect --list PREFIX`.
async fn list_elections_under(
    client: &Client,
    printer: &Printer,
    prefix: &str,
) -> anyhow::Result<i32> {
    printer.elections(&list_elections(client, prefix).await?);
    Ok(0)
}

/// `coordctl barrier set|remove|wait|double`. Returns the exit status.
pub async fn barrier(
    client: &Client,
    printer: &Printer,
    command: BarrierCommand,
) -> anyhow::Result<i32> {
    match command {
        BarrierCommand::Set { name } => {
            Barrier::new(client, &name).set().await?;
            printer.barrier(&name, "set");
        }
        BarrierCommand::Remove { name } => {
            Barrier::new(client, &name).remove().await?;
            printer.barrier(&name, "removed");
        }
        BarrierCommand::Wait { name, timeout } => {
            let barrier = Barrier::new(client, &name);
            let passed = match timeout {
                Some(timeout) => barrier.wait_timeout(timeout).await?,
                None => barrier.wait().await.map(|()| true)?,
            };
            if !passed {
                anyhow::bail!(NotAcquired {
                    what: format!("the removal of barrier {name}"),
                    timeout: timeout.unwrap_or_default(),
                });
            }
            printer.barrier(&name, "passed");
        }
        BarrierCommand::Double {
            name,
            count,
            ttl,
            timeout,
            command,
        } => return double_barrier(client, printer, &name, (count, ttl, timeout), command).await,
    }
    Ok(0)
}

async fn double_barrier(
    client: &Client,
    printer: &Printer,
    name: &str,
    (count, ttl, timeout): (u64, Duration, Option<Duration>),
    command: Vec<String>,
) -> anyhow::Result<i32> {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let not_acquired = NotAcquired {
        what: format!("{count} participants at barrier {name}"),
        timeout: timeout.unwrap_or_default(),
    };
    let Some(opened) = until(deadline, client.open_session(ttl)).await else {
        anyhow::bail!(not_acquired);
    };
    let session = opened?;
    let barrier = DoubleBarrier::new(client, &session, name, count);
    let entered = match remaining(deadline) {
        Some(timeout) => barrier.enter_timeout(timeout).await,
        None => barrier.enter().await.map(Some),
    };
    let participation = match entered {
        Ok(Some(participation)) => participation,
        Ok(None) => {
            let _ = session.close().await;
            anyhow::bail!(not_acquired);
        }
        Err(error) => {
            let _ = session.close().await;
            return Err(error.into());
        }
    };
    printer.barrier(name, "entered");
    let mut status = 0;
    if !command.is_empty() {
        let environment = [("COORD_BARRIER_NAME", name.to_owned())];
        let mut child = command_line(&command, &environment)?
            .spawn()
            .with_context(|| format!("cannot run {:?}", command[0]))?;
        status = exit_status(child.wait().await.context("cannot wait for the command")?);
    }
    participation.leave().await?;
    printer.barrier(name, "left");
    let _ = session.close().await;
    Ok(status)
}

/// Holds until the child exits (or, without a command, until a signal), or `lost` resolves;
/// then stops the child's process group, so that nothing it started outlives the holding.
async fn hold(
    holding: &HoldingArgs,
    environment: &[(&str, String)],
    signals: &mut Signals,
    lost: impl Future<Output = LostReason>,
) -> anyhow::Result<Ending> {
    let mut lost = std::pin::pin!(lost);
    if holding.command.is_empty() {
        return Ok(tokio::select! {
            reason = &mut lost => Ending::Lost(reason),
            status = signals.next() => Ending::Interrupted(status),
        });
    }
    let mut group = ProcessGroup::spawn(&holding.command, environment)?;
    let ending = tokio::select! {
        exited = group.wait_leader() => {
            Ending::Child(exit_status(exited.context("cannot wait for the command")?))
        }
        reason = &mut lost => Ending::Lost(reason),
        status = signals.next() => Ending::Interrupted(status),
    };
    group.stop(holding.kill_grace).await;
    Ok(ending)
}

/// Resolves once the holder must stop acting: the holding is lost, or suspended (its session
/// not confirmed alive in time, so the cluster may hand the node to someone else before this
/// process hears of it). A suspension counts as `SessionUnsafe`: coordctl does not wait to see
/// whether it resumes, since a command cannot be told to pause and resume safely.
async fn must_stop(held: &impl HeldNode) -> LostReason {
    match held.suspended().await {
        HoldState::Lost(reason) => reason,
        HoldState::Suspended | HoldState::Held => LostReason::SessionUnsafe,
    }
}

/// Prints why the holding ended and returns the exit status.
fn finish(printer: &Printer, name: &str, ending: Ending) -> i32 {
    match ending {
        Ending::Child(status) | Ending::Interrupted(status) => status,
        Ending::Lost(reason) => {
            printer.lost(name, reason);
            EXIT_LOST
        }
    }
}

/// `command` with `environment` added, killed if its handle is dropped.
fn command_line(command: &[String], environment: &[(&str, String)]) -> anyhow::Result<Command> {
    let (program, arguments) = command.split_first().context("no command to run")?;
    let mut process = Command::new(program);
    process.args(arguments).kill_on_drop(true);
    for (key, value) in environment {
        process.env(key, value);
    }
    Ok(process)
}

/// How long `ProcessGroup::stop` waits after SIGKILL for the group to be gone. SIGKILL cannot
/// be caught, so only a member stuck in the kernel (or a zombie nobody reaps) outlasts it.
const GROUP_KILLED_WAIT: Duration = Duration::from_secs(2);
/// How often `ProcessGroup::stop` looks whether a member is left.
const GROUP_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A command running as the leader of a process group of its own (`process_group(0)`), so
/// that it and everything it starts can be signalled at once.
///
/// Invariant: the group is signalled only until it is seen empty. The kernel does not reuse a
/// process id while a group of that id has a member (a zombie included), so until then the id
/// names this group; once `empty` is set, nothing is sent to it again.
struct ProcessGroup {
    leader: Child,
    /// The group's id: the leader's process id, kept after the leader is reaped, since other
    /// members can outlive it.
    id: libc::pid_t,
    /// No member is left alive.
    empty: bool,
}

impl ProcessGroup {
    /// Starts `command` as the leader of a new process group.
    fn spawn(command: &[String], environment: &[(&str, String)]) -> anyhow::Result<ProcessGroup> {
        let mut process = command_line(command, environment)?;
        process.process_group(0);
        let leader = process
            .spawn()
            .with_context(|| format!("cannot run {:?}", command[0]))?;
        let id = leader
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .context("the command started without a process id")?;
        Ok(ProcessGroup {
            leader,
            id,
            empty: false,
        })
    }

    /// Waits for the leader (the command itself) to exit. Cancel-safe.
    async fn wait_leader(&mut self) -> std::io::Result<ExitStatus> {
        self.leader.wait().await
    }

    /// Stops the whole group: SIGTERM, and SIGCONT so that a stopped member can act on it, to
    /// every member; then, if any is still alive after `grace`, SIGKILL to every member.
    /// Returns once no member is alive and the leader is reaped (a zombie no more), or at most
    /// `GROUP_KILLED_WAIT` after the SIGKILL.
    async fn stop(&mut self, grace: Duration) {
        if self.alive() {
            self.signal(libc::SIGTERM);
            self.signal(libc::SIGCONT);
            if !self.wait_empty(grace).await {
                self.signal(libc::SIGKILL);
                let _ = self.wait_empty(GROUP_KILLED_WAIT).await;
            }
        }
        // With no member alive the leader has exited; reaping it here means that it is gone,
        // not left a zombie for init, by the time the lock is released.
        let _ = tokio::time::timeout(GROUP_KILLED_WAIT, self.leader.wait()).await;
    }

    /// Whether the group became empty within `timeout`.
    async fn wait_empty(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(GROUP_POLL_INTERVAL).await;
        }
    }

    /// Whether a member of the group is alive; reaps the leader if it exited, since a zombie
    /// leader would count as a member.
    fn alive(&mut self) -> bool {
        if !self.empty {
            let _ = self.leader.try_wait();
            self.empty = !group_has_live_member(self.id);
        }
        !self.empty
    }

    fn signal(&self, signal: libc::c_int) {
        if !self.empty {
            let _ = kill(-self.id, signal);
        }
    }
}

impl Drop for ProcessGroup {
    /// A holding that ends in an error (not through `stop`) leaves no member behind either.
    fn drop(&mut self) {
        if self.alive() {
            self.signal(libc::SIGKILL);
        }
    }
}

/// `kill(2)`: sends `signal` to process `pid`, or to process group `-pid`; signal 0 only
/// checks that the target exists.
#[allow(unsafe_code, reason = "libc::kill has no safe wrapper in std")]
fn kill(pid: libc::pid_t, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of this process. Which process
    // it reaches is the callers' concern: `ProcessGroup` signals only its own group, while the
    // group has a member (see its invariant).
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether process group `id` has a member that is not a zombie. `kill(-id, 0)` counts
/// zombies (a killed grandchild waits for init to reap it, or forever for a coordctl that runs
/// as process 1 of a container), so the members it finds are looked up in /proc where it can
/// be read.
fn group_has_live_member(id: libc::pid_t) -> bool {
    match kill(-id, 0) {
        Err(error) if error.raw_os_error() == Some(libc::ESRCH) => false,
        _ => live_member_in_proc(id).unwrap_or(true),
    }
}

/// Whether /proc lists a process of group `id` that is neither a zombie nor dead; `None` if
/// /proc cannot be read.
fn live_member_in_proc(id: libc::pid_t) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let live = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(process_state)
        .any(|(state, group)| group == id && state != 'Z' && state != 'X');
    Some(live)
}

/// The state letter and process group of process `pid`, from /proc/PID/stat.
fn process_state(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses "PID (COMM) STATE PPID PGRP ..."; COMM may hold blanks and parentheses, so the
/// fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(char, libc::pid_t)> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

fn exit_status(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(EXIT_LOST)
}

/// What the recipe node says about its holder: the command, or that coordctl holds it.
fn holder_text(command: &[String]) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let who = if command.is_empty() {
        "coordctl".to_owned()
    } else {
        command.join(" ")
    };
    format!(
        "{who} (pid {}{}{host})",
        std::process::id(),
        if host.is_empty() { "" } else { " on " }
    )
}

/// SIGINT, SIGTERM and SIGHUP, as exit statuses. SIGHUP is among them because a command in a
/// process group of its own no longer gets the terminal's hangup: coordctl must pass it on.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => EXIT_INTERRUPTED,
            _ = self.terminate.recv() => EXIT_TERMINATED,
            _ = self.hangup.recv() => EXIT_HUNG_UP,
        }
    }
}

/// A recipe that did not succeed within its `--timeout` (exit status 1).
#[derive(Debug, Clone)]
pub struct NotAcquired {
    what: String,
    timeout: Duration,
}

impl std::fmt::Display for NotAcquired {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: not within {:?}", self.what, self.timeout)
    }
}

impl std::error::Error for NotAcquired {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every wait in these tests ends by this.
    const WAIT_MAX: Duration = Duration::from_secs(20);

    /// Whether `pid` is gone: no such process, or a zombie that only waits to be reaped.
    fn gone(pid: libc::pid_t) -> bool {
        let missing =
            matches!(kill(pid, 0), Err(error) if error.raw_os_error() == Some(libc::ESRCH));
        missing || process_state(pid).is_some_and(|(state, _)| state == 'Z' || state == 'X')
    }

    async fn wait_gone(pid: libc::pid_t) -> bool {
        let deadline = Instant::now() + WAIT_MAX;
        while !gone(pid) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The process id the command wrote to `file`, waiting for it.
    async fn written_pid(file: &Path) -> libc::pid_t {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not written",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts `sh -c SCRIPT` in its own group, with `{file}` in the script replaced by a file
    /// in `directory`.
    fn shell(script: &str, file: &Path) -> ProcessGroup {
        let script = script.replace("{file}", &file.display().to_string());
        let command = ["sh".to_owned(), "-c".to_owned(), script];
        ProcessGroup::spawn(&command, &[]).unwrap()
    }

    #[tokio::test]
    async fn stopping_the_group_stops_the_grandchild_too() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("grandchild");
        let mut group = shell("sleep 300 & echo $! > {file}; wait", &file);
        let grandchild = written_pid(&file).await;
        assert!(!gone(grandchild));
        group.stop(Duration::from_secs(5)).await;
        let leader = Path::new("/proc").join(group.id.to_string());
        assert!(
            !leader.exists(),
            "the leader is reaped by the time stop returns"
        );
        assert!(
            wait_gone(grandchild).await,
            "grandchild {grandchild} survived"
        );
        assert!(!group.alive());
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("grandchild");
        // An ignored signal stays ignored across fork and exec: sleep ignores SIGTERM too.
        let mut group = shell("trap '' TERM; sleep 300 & echo $! > {file}; wait", &file);
        let grandchild = written_pid(&file).await;
        group.stop(Duration::from_millis(200)).await;
        assert!(
            wait_gone(grandchild).await,
            "grandchild {grandchild} survived"
        );
        let status = group.wait_leader().await.unwrap();
        assert_eq!(exit_status(status), 128 + libc::SIGKILL);
    }

    #[tokio::test]
    async fn what_the_command_leaves_running_is_stopped_after_it_exits() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("grandchild");
        let mut group = shell("sleep 300 & echo $! > {file}", &file);
        let status = group.wait_leader().await.unwrap();
        assert_eq!(exit_status(status), 0);
        let grandchild = written_pid(&file).await;
        assert!(!gone(grandchild), "the background sleep outlives its shell");
        assert!(group.alive(), "the group outlives its leader");
        group.stop(Duration::from_secs(5)).await;
        assert!(
            wait_gone(grandchild).await,
            "grandchild {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn stopping_a_group_that_is_gone_sends_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("unused");
        let mut group = shell("exit 3", &file);
        assert_eq!(exit_status(group.wait_leader().await.unwrap()), 3);
        group.stop(Duration::from_secs(5)).await;
        assert!(group.empty);
    }

    #[tokio::test]
    async fn dropping_a_group_kills_it() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("grandchild");
        let group = shell("sleep 300 & echo $! > {file}; wait", &file);
        let grandchild = written_pid(&file).await;
        drop(group);
        assert!(
            wait_gone(grandchild).await,
            "grandchild {grandchild} survived"
        );
    }

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        assert_eq!(parse_stat("42 (sh) S 1 42 42 0 -1"), Some(('S', 42)));
        assert_eq!(parse_stat("7 (a) b) (c) Z 1 99 99"), Some(('Z', 99)));
        assert_eq!(parse_stat("7 (truncated"), None);
        assert_eq!(parse_stat("7 (x) R 1"), None);
    }

    #[tokio::test]
    async fn a_deadline_bounds_the_whole_wait() {
        let past = Some(Instant::now());
        assert_eq!(until(past, std::future::pending::<()>()).await, None);
        assert_eq!(remaining(past), Some(Duration::ZERO));
        assert_eq!(until(None, async { 7 }).await, Some(7));
        assert_eq!(remaining(None), None);
    }
}
