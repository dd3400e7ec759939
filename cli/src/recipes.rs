//! `coordctl lock`, `elect` and `barrier`, arguments and handlers: the client's recipes from a
//! shell.
//!
//! A held lock or leadership is either kept until coordctl is interrupted, or lent to a
//! command run as a child process with the token in its environment. What coordctl promises:
//! - the child is started only after the recipe confirmed the lock (or leadership);
//! - when the lock may be lost (session expired, or no keep-alive acknowledged before the
//!   session's safe deadline, or the node deleted), the child gets SIGTERM at once, SIGKILL
//!   after `--kill-grace`, and coordctl exits 1 — the token must still be checked downstream,
//!   since a child can act in the moment before the signal lands;
//! - SIGINT or SIGTERM to coordctl stops the child the same way, then releases the lock;
//! - the lock is released when the child exits, and coordctl exits with the child's status.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use coord_client::recipes::{list_elections, list_locks};
use coord_client::{
    Barrier, Client, DoubleBarrier, Election, Error, HeldNode, LockGuard, LostReason, Mutex,
};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::output::Printer;

/// How a held lock or leadership is used.
#[derive(Args)]
pub struct HoldingArgs {
    /// The session's TTL: how long after coordctl stops the lock is released at the latest.
    #[arg(long, default_value = "10s", value_parser = coord_client::parse_duration)]
    ttl: Duration,
    /// Time between SIGTERM and SIGKILL when the command must stop.
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
    /// Give up if the lock is not acquired within this (exit 1).
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
exits with CMD's status.

A lease is not mutual exclusion on its own: if coordctl cannot confirm its session alive in
time (paused, partitioned), the lock may pass to someone else. CMD then gets SIGTERM (SIGKILL
after --kill-grace) and coordctl exits 1, but CMD may act in the moment before the signal
lands. Resources that CMD changes should check COORD_LOCK_TOKEN: reject any token lower than
the highest they have seen (coord_client::TokenVerifier), or write through a txn fenced on
COORD_LOCK_PATH and the token (`fence PATH TOKEN` in `coordctl txn`).

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
    /// Give up if not elected within this (exit 1).
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
        /// Give up entering after this (exit 1).
        #[arg(long, value_parser = coord_client::parse_duration)]
        timeout: Option<Duration>,
        /// The command to run between entering and leaving (after `--`).
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

/// Exit status for a held lock that was lost.
const EXIT_LOST: i32 = 1;
/// Exit status after SIGINT / SIGTERM, as shells report them.
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

/// `coordctl lock NAME`: acquire (within `timeout` if given), then hold or run the command.
/// Returns the process exit status.
async fn hold_lock(
    client: &Client,
    printer: &Printer,
    name: &str,
    timeout: Option<Duration>,
    holding: HoldingArgs,
) -> anyhow::Result<i32> {
    let mut signals = Signals::new()?;
    let session = client.open_session(holding.ttl).await?;
    let mutex = Mutex::new(client, &session, name).with_holder(holder_text(&holding.command));
    let acquired = tokio::select! {
        acquired = acquire(&mutex, timeout) => acquired,
        status = signals.next() => {
            // Leaving now drops the acquisition, whose node is deleted with the session.
            let _ = session.close().await;
            return Ok(status);
        }
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let _ = session.close().await;
            anyhow::bail!(NotAcquired {
                what: format!("lock {name}"),
                timeout: timeout.unwrap_or_default(),
            });
        }
        Err(error) => {
            let _ = session.close().await;
            return Err(error.into());
        }
    };
    printer.lock_acquired(name, guard.path(), guard.token());
    let environment = [
        ("COORD_LOCK_NAME", name.to_owned()),
        ("COORD_LOCK_PATH", guard.path().to_owned()),
        ("COORD_LOCK_TOKEN", guard.token().to_string()),
    ];
    let ending = hold(&holding, &environment, &mut signals, guard.lost()).await?;
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

/// `coordctl elect NAME VALUE`: campaign, then hold the leadership or run the command as
/// leader.
async fn campaign(
    client: &Client,
    printer: &Printer,
    name: &str,
    value: &str,
    timeout: Option<Duration>,
    holding: HoldingArgs,
) -> anyhow::Result<i32> {
    let mut signals = Signals::new()?;
    let session = client.open_session(holding.ttl).await?;
    let election = Election::new(client, &session, name);
    let campaign = async {
        match timeout {
            Some(timeout) => election.campaign_timeout(value, timeout).await,
            None => election.campaign(value).await.map(Some),
        }
    };
    let won = tokio::select! {
        won = campaign => won,
        status = signals.next() => {
            let _ = session.close().await;
            return Ok(status);
        }
    };
    let leadership = match won {
        Ok(Some(leadership)) => leadership,
        Ok(None) => {
            let _ = session.close().await;
            anyhow::bail!(NotAcquired {
                what: format!("leadership of {name}"),
                timeout: timeout.unwrap_or_default(),
            });
        }
        Err(error) => {
            let _ = session.close().await;
            return Err(error.into());
        }
    };
    printer.elected(name, value, leadership.path(), leadership.token());
    let environment = [
        ("COORD_ELECTION_NAME", name.to_owned()),
        ("COORD_ELECTION_PATH", leadership.path().to_owned()),
        ("COORD_ELECTION_TOKEN", leadership.token().to_string()),
        ("COORD_ELECTION_VALUE", value.to_owned()),
    ];
    let ending = hold(&holding, &environment, &mut signals, leadership.lost()).await?;
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
    let session = client.open_session(ttl).await?;
    let barrier = DoubleBarrier::new(client, &session, name, count);
    let entered = match timeout {
        Some(timeout) => barrier.enter_timeout(timeout).await,
        None => barrier.enter().await.map(Some),
    };
    let participation = match entered {
        Ok(Some(participation)) => participation,
        Ok(None) => {
            let _ = session.close().await;
            anyhow::bail!(NotAcquired {
                what: format!("{count} participants at barrier {name}"),
                timeout: timeout.unwrap_or_default(),
            });
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
        let mut child = spawn(&command, &environment)?;
        status = exit_status(child.wait().await.context("cannot wait for the command")?);
    }
    participation.leave().await?;
    printer.barrier(name, "left");
    let _ = session.close().await;
    Ok(status)
}

/// Holds until the child exits (or, without a command, until a signal), or `lost` resolves.
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
    let mut child = spawn(&holding.command, environment)?;
    let ending = tokio::select! {
        exited = child.wait() => {
            return Ok(Ending::Child(exit_status(exited.context("cannot wait for the command")?)));
        }
        reason = &mut lost => Ending::Lost(reason),
        status = signals.next() => Ending::Interrupted(status),
    };
    stop_child(&mut child, holding.kill_grace).await;
    Ok(ending)
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

fn spawn(command: &[String], environment: &[(&str, String)]) -> anyhow::Result<Child> {
    let (program, arguments) = command.split_first().context("no command to run")?;
    let mut process = Command::new(program);
    process.args(arguments).kill_on_drop(true);
    for (key, value) in environment {
        process.env(key, value);
    }
    process
        .spawn()
        .with_context(|| format!("cannot run {program:?}"))
}

/// SIGTERM, then SIGKILL after `grace` if the child is still running.
async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        terminate(pid);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[allow(unsafe_code, reason = "libc::kill has no safe wrapper in std")]
fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory effects; `pid` is our own child, which has not been reaped
    // (its `Child` is still waiting), so the id cannot name another process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

fn exit_status(status: std::process::ExitStatus) -> i32 {
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

/// SIGINT and SIGTERM, as exit statuses.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
        })
    }

    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => EXIT_INTERRUPTED,
            _ = self.terminate.recv() => EXIT_TERMINATED,
        }
    }
}

/// A recipe that did not succeed within its `--timeout` (exit status 1).
#[derive(Debug)]
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
