//! `coordctl`: the command-line tool for Coord.
//!
//! Exit codes: 0 success, 1 the operation failed (e.g. no such node), 2 usage error,
//! 3 the cluster could not be reached (or the outcome of a write is unknown).
//!
//! Lock poisoning: coordctl takes no `std::sync` lock of its own; it keeps the client's one
//! policy (a poisoned lock is used as it is; see `lock.rs` in coord-client).

mod output;
mod recipes;
mod txn_script;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use coord_client::{
    Client, Consistency, CreateOptions, DeleteOptions, Error, NodeKind, SessionState, WatchOptions,
};
use output::Printer;

#[derive(Parser)]
#[command(name = "coordctl", version, about = "Command-line tool for Coord")]
struct Cli {
    /// Comma-separated client endpoints (host:port).
    #[arg(
        long,
        env = "COORD_ENDPOINTS",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    endpoints: String,

    /// Output format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReadLevel {
    Linearizable,
    Serializable,
}

#[derive(Subcommand)]
enum Command {
    /// Print a node's data.
    Get {
        path: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ReadLevel,
        /// Answer only once the member has applied this revision (read-your-writes).
        #[arg(long)]
        min_revision: Option<u64>,
    },
    /// Replace a node's data.
    Set {
        path: String,
        value: String,
        /// Only if the node's version equals this.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Create a node.
    Create {
        path: String,
        #[arg(default_value = "")]
        value: String,
        /// Append an increasing, zero-padded suffix.
        #[arg(long)]
        sequential: bool,
        /// Removed once its last child is gone.
        #[arg(long)]
        container: bool,
        /// Create missing parents.
        #[arg(long, short = 'p')]
        parents: bool,
        /// Owned by a new session: deleted when the session ends. Needs --hold.
        #[arg(long, requires = "hold")]
        ephemeral: bool,
        /// The session's TTL, e.g. 500ms, 10s, 1m.
        #[arg(long, default_value = "10s", value_parser = coord_client::parse_duration, requires = "ephemeral")]
        ttl: Duration,
        /// Keep the session alive until interrupted (Ctrl-C or SIGTERM), then close it, which
        /// deletes the node. Exits 1 if the session is lost meanwhile.
        #[arg(long, requires = "ephemeral")]
        hold: bool,
    },
    /// Delete a node.
    Rm {
        path: String,
        /// Delete the whole subtree.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Only if the node's version equals this.
        #[arg(long)]
        version: Option<u64>,
    },
    /// List a node's children.
    Ls {
        #[arg(default_value = "/")]
        path: String,
        /// Show each child's stat.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Print a node's stat.
    Stat { path: String },
    /// Print a subtree.
    Tree {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Run a transaction read from stdin (line syntax or JSON; see `coordctl txn --help`).
    #[command(long_about = TXN_HELP)]
    Txn,
    /// Cluster information.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Membership: list, add a learner, promote it to voter, remove a member.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Print each change under a path as it happens (one line, or one JSON object, per event),
    /// until interrupted.
    Watch {
        path: String,
        /// The whole subtree, not only the node and its list of children.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Start at this revision (from the retained history); default: from now.
        #[arg(long)]
        rev: Option<u64>,
        /// Include node data in the events.
        #[arg(long)]
        data: bool,
    },
    /// Sessions: list them, or close one (deleting its ephemeral nodes).
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Take a lock and print its fencing token, holding it until interrupted; or run a command
    /// while holding it (`-- CMD ARGS...`, with COORD_LOCK_TOKEN and COORD_LOCK_NAME set).
    /// If the lock may be lost the command gets SIGTERM, then SIGKILL, and coordctl exits 1.
    #[command(long_about = LOCK_HELP)]
    Lock {
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
    },
    /// Campaign to lead an election with VALUE, then hold the leadership until interrupted or
    /// run a command as leader (`-- CMD ARGS...`, with COORD_ELECTION_TOKEN set).
    Elect {
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
    },
    /// Barriers: a single barrier (set, wait, remove) or a double barrier for N participants.
    Barrier {
        #[command(subcommand)]
        command: BarrierCommand,
    },
}

/// How a held lock or leadership is used.
#[derive(clap::Args)]
struct HoldingArgs {
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

impl HoldingArgs {
    fn into_holding(self) -> recipes::Holding {
        recipes::Holding {
            ttl: self.ttl,
            command: self.command,
            kill_grace: self.kill_grace,
        }
    }
}

#[derive(Subcommand)]
enum BarrierCommand {
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

const LOCK_HELP: &str = "Take a lock and print its fencing token.

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

#[derive(Subcommand)]
enum SessionCommand {
    /// Every session with its TTL, time left, last keep-alive and ephemeral nodes.
    List,
    /// Close a session now, as if its owner had.
    Close { id: u64 },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// List the members.
    List,
    /// Add a learner (start it first with `coord-server --join`).
    Add {
        id: u64,
        /// The new member's peer address (host:port).
        peer_address: String,
    },
    /// Promote a learner to voter.
    Promote { id: u64 },
    /// Remove a member; it stops itself.
    Remove { id: u64 },
}

const TXN_HELP: &str = "Run a transaction read from stdin, all or nothing at one revision.

Line syntax, one clause per line:
  compare version /config = 3        (also create_revision, mod_revision, value; = != < >)
  compare exists /lock               (or: compare missing /lock)
  fence /locks/db 1042               (refuse the txn unless the holder's token is current)
  then set /config new-value
  then create /jobs/job- payload --sequential
  then delete /old
  else get /config

Or JSON: {\"compares\":[{\"path\":\"/a\",\"target\":\"version\",\"op\":\"=\",\"value\":3}],
          \"fences\":[{\"path\":\"/lock\",\"token\":7}],
          \"success\":[{\"op\":\"set\",\"path\":\"/a\",\"data\":\"x\"}],\"failure\":[]}";

#[derive(Subcommand)]
enum ClusterCommand {
    /// Leader, term, and each member's role and progress.
    Status,
}

/// Exit code for a failed operation.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer {
        json: cli.output == Format::Json,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("coordctl: cannot start: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(execute(cli, &printer)) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(EXIT_FAILED)),
        Err(error) => {
            let code = match error.downcast_ref::<Error>() {
                Some(client_error) => {
                    printer.error(client_error);
                    if client_error.is_outcome_unknown()
                        || matches!(client_error, Error::Unreachable { .. })
                    {
                        EXIT_UNREACHABLE
                    } else {
                        EXIT_FAILED
                    }
                }
                None if error.downcast_ref::<recipes::NotAcquired>().is_some() => {
                    eprintln!("coordctl: {error:#}");
                    EXIT_FAILED
                }
                None => {
                    eprintln!("coordctl: {error:#}");
                    EXIT_USAGE
                }
            };
            ExitCode::from(code)
        }
    }
}

/// Runs the command; returns the exit status for commands that choose one.
async fn execute(cli: Cli, printer: &Printer) -> anyhow::Result<i32> {
    let endpoints: Vec<&str> = cli
        .endpoints
        .split(',')
        .filter(|endpoint| !endpoint.trim().is_empty())
        .collect();
    let client = Client::connect(endpoints).await?;
    match cli.command {
        Command::Get {
            path,
            consistency,
            min_revision,
        } => {
            let consistency = match (min_revision, consistency) {
                (Some(revision), _) => Consistency::MinRevision(revision),
                (None, ReadLevel::Linearizable) => Consistency::Linearizable,
                (None, ReadLevel::Serializable) => Consistency::Serializable,
            };
            let node = client.get_with(&path, consistency).await?;
            printer.node(&path, &node);
        }
        Command::Set {
            path,
            value,
            version,
        } => {
            let stat = client.set(&path, value.into_bytes(), version).await?;
            printer.stat_line(&path, &stat);
        }
        Command::Create {
            path,
            value,
            sequential,
            container,
            parents,
            ephemeral,
            ttl,
            hold,
        } => {
            if ephemeral && hold {
                let shape = (sequential, parents);
                hold_ephemeral(&client, printer, &path, value, ttl, shape).await?;
                return Ok(0);
            }
            let options = CreateOptions {
                kind: if container {
                    NodeKind::Container
                } else {
                    NodeKind::Persistent
                },
                sequential,
                make_parents: parents,
                session_id: 0,
            };
            let created = client.create(&path, value.into_bytes(), &options).await?;
            printer.created(&created);
        }
        Command::Rm {
            path,
            recursive,
            version,
        } => {
            let deleted = client
                .delete(
                    &path,
                    DeleteOptions {
                        expected_version: version,
                        recursive,
                    },
                )
                .await?;
            printer.deleted(&path, deleted);
        }
        Command::Ls { path, long } => {
            let mut token: Option<String> = None;
            let mut children = Vec::new();
            loop {
                let page = client
                    .children_page(&path, 0, token.as_deref(), long, Consistency::Linearizable)
                    .await?;
                children.extend(page.children);
                match page.next_page_token {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            printer.children(&path, &children, long);
        }
        Command::Stat { path } => {
            let stat = client
                .exists(&path)
                .await?
                .ok_or(Error::NoNode { path: path.clone() })?;
            printer.stat(&path, &stat);
        }
        Command::Tree { path } => {
            let tree = output::collect_tree(&client, &path).await?;
            printer.tree(&tree);
        }
        Command::Txn => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the txn from stdin")?;
            let txn = txn_script::parse(&text)?;
            let result = client.txn(txn).await?;
            printer.txn(&result);
        }
        Command::Member { command } => {
            let members = match command {
                MemberCommand::List => client.member_list().await?,
                MemberCommand::Add { id, peer_address } => {
                    client.member_add(id, &peer_address).await?
                }
                MemberCommand::Promote { id } => client.member_promote(id).await?,
                MemberCommand::Remove { id } => client.member_remove(id).await?,
            };
            printer.members(&members);
        }
        Command::Watch {
            path,
            recursive,
            rev,
            data,
        } => {
            let options = WatchOptions {
                path,
                recursive,
                start_revision: rev.unwrap_or(0),
                with_data: data,
                ..WatchOptions::default()
            };
            let mut watch = client.watch(options).await?;
            while let Some(event) = watch.next().await {
                printer.event(&event?);
            }
        }
        Command::Lock {
            name,
            list,
            timeout,
            holding,
        } => {
            let status = match (list, name) {
                (Some(prefix), _) => recipes::list_locks_under(&client, printer, &prefix).await?,
                (None, Some(name)) => {
                    let holding = holding.into_holding();
                    recipes::lock(&client, printer, &name, timeout, holding).await?
                }
                (None, None) => anyhow::bail!("name a lock, or --list PREFIX"),
            };
            return Ok(status);
        }
        Command::Elect {
            name,
            value,
            observe,
            leader,
            list,
            timeout,
            holding,
        } => {
            let status = match (list, name, value) {
                (Some(prefix), _, _) => {
                    recipes::list_elections_under(&client, printer, &prefix).await?
                }
                (None, Some(name), _) if observe => {
                    recipes::observe(&client, printer, &name).await?
                }
                (None, Some(name), _) if leader => recipes::leader(&client, printer, &name).await?,
                (None, Some(name), Some(value)) => {
                    let holding = holding.into_holding();
                    recipes::elect(&client, printer, &name, &value, timeout, holding).await?
                }
                _ => anyhow::bail!(
                    "name an election and a value, or use --observe, --leader or --list"
                ),
            };
            return Ok(status);
        }
        Command::Barrier { command } => {
            let (name, action) = match command {
                BarrierCommand::Set { name } => (name, recipes::BarrierAction::Set),
                BarrierCommand::Remove { name } => (name, recipes::BarrierAction::Remove),
                BarrierCommand::Wait { name, timeout } => {
                    (name, recipes::BarrierAction::Wait { timeout })
                }
                BarrierCommand::Double {
                    name,
                    count,
                    ttl,
                    timeout,
                    command,
                } => (
                    name,
                    recipes::BarrierAction::Double {
                        count,
                        ttl,
                        command,
                        timeout,
                    },
                ),
            };
            return recipes::barrier(&client, printer, &name, action).await;
        }
        Command::Session { command } => match command {
            SessionCommand::List => printer.sessions(&client.list_sessions().await?),
            SessionCommand::Close { id } => {
                let deleted = client.close_session(id).await?;
                printer.session_closed(id, deleted);
            }
        },
        Command::Cluster {
            command: ClusterCommand::Status,
        } => {
            let status = client.cluster_status().await?;
            printer.cluster_status(&status);
        }
    }
    Ok(0)
}

/// `create --ephemeral --hold`: opens a session, creates the node in it, and keeps the session
/// alive until a signal arrives (then closes it) or the session is lost (then fails).
async fn hold_ephemeral(
    client: &Client,
    printer: &Printer,
    path: &str,
    value: String,
    ttl: Duration,
    (sequential, make_parents): (bool, bool),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let session = client.open_session(ttl).await?;
    let options = CreateOptions {
        kind: NodeKind::Ephemeral,
        sequential,
        make_parents,
        session_id: session.id(),
    };
    let created = match client.create(path, value.into_bytes(), &options).await {
        Ok(created) => created,
        Err(error) => {
            // Do not leave the session behind for its TTL.
            let _ = session.close().await;
            return Err(error.into());
        }
    };
    printer.created(&created);
    let mut state = session.watch_state();
    let lost = async {
        // Resolves when the session is gone, or its safe deadline passed without a renewal.
        loop {
            let deadline = session.safe_until();
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() || *state.borrow() == SessionState::Expired {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if !session.is_safe() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        () = lost => {
            return Err(Error::SessionExpired { session: session.id() }.into());
        }
    }
    session.close().await?;
    Ok(())
}
