//! `coordctl`: the command-line tool for Coord.
//!
//! This file only parses the command line, connects, hands each subcommand to its group's file
//! (`nodes`, `txn`, `watch`, `session`, `cluster`, `recipes`), and turns the outcome into an
//! exit code. Exit codes: 0 success, 1 the operation failed (e.g. no such node), 2 usage error,
//! 3 the cluster could not be reached (or the outcome of a write is unknown).
//!
//! Lock poisoning: coordctl takes no `std::sync` lock of its own; it keeps the client's one
//! policy (a poisoned lock is used as it is; see `lock.rs` in coord-client).

mod cluster;
mod nodes;
mod output;
mod recipes;
mod session;
mod txn;
mod txn_script;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use coord_client::{Client, Error};
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

/// Every subcommand; each group's arguments and handler live in the group's file.
#[derive(Subcommand)]
enum Command {
    /// Print a node's data.
    Get(nodes::GetArgs),
    /// Replace a node's data.
    Set(nodes::SetArgs),
    /// Create a node.
    Create(nodes::CreateArgs),
    /// Delete a node.
    Rm(nodes::RmArgs),
    /// List a node's children.
    Ls(nodes::LsArgs),
    /// Print a node's stat.
    Stat(nodes::StatArgs),
    /// Print a subtree.
    Tree(nodes::TreeArgs),
    /// Run a transaction read from stdin (line syntax or JSON; see `coordctl txn --help`).
    #[command(long_about = txn::TXN_HELP)]
    Txn,
    /// Cluster information.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Membership: list, add a learner, promote it to voter, remove a member.
    Member {
        #[command(subcommand)]
        command: cluster::MemberCommand,
    },
    /// Print each change under a path as it happens (one line, or one JSON object, per event),
    /// until interrupted.
    Watch(watch::WatchArgs),
    /// Sessions: list them, or close one (deleting its ephemeral nodes).
    Session {
        #[command(subcommand)]
        command: session::SessionCommand,
    },
    /// Take a lock and print its fencing token, holding it until interrupted; or run a command
    /// while holding it (`-- CMD ARGS...`, with COORD_LOCK_TOKEN and COORD_LOCK_NAME set).
    /// If the lock may be lost the command gets SIGTERM, then SIGKILL, and coordctl exits 1.
    #[command(long_about = recipes::LOCK_HELP)]
    Lock(recipes::LockArgs),
    /// Campaign to lead an election with VALUE, then hold the leadership until interrupted or
    /// run a command as leader (`-- CMD ARGS...`, with COORD_ELECTION_TOKEN set).
    Elect(recipes::ElectArgs),
    /// Barriers: a single barrier (set, wait, remove) or a double barrier for N participants.
    Barrier {
        #[command(subcommand)]
        command: recipes::BarrierCommand,
    },
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
        Err(error) => ExitCode::from(exit_code(&printer, &error)),
    }
}

/// Reports `error` and chooses the exit code: 3 when the cluster could not be reached or a
/// write's outcome is unknown, 1 for any other failed operation, 2 for a usage error.
fn exit_code(printer: &Printer, error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<Error>() {
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
    }
}

/// Connects and runs the command; returns the exit status it chose.
async fn execute(cli: Cli, printer: &Printer) -> anyhow::Result<i32> {
    let endpoints: Vec<&str> = cli
        .endpoints
        .split(',')
        .filter(|endpoint| !endpoint.trim().is_empty())
        .collect();
    let client = Client::connect(endpoints).await?;
    match cli.command {
        Command::Get(args) => nodes::get(&client, printer, args).await,
        Command::Set(args) => nodes::set(&client, printer, args).await,
        Command::Create(args) => nodes::create(&client, printer, args).await,
        Command::Rm(args) => nodes::rm(&client, printer, args).await,
        Command::Ls(args) => nodes::ls(&client, printer, args).await,
        Command::Stat(args) => nodes::stat(&client, printer, args).await,
        Command::Tree(args) => nodes::tree(&client, printer, args).await,
        Command::Txn => txn::run(&client, printer).await,
        Command::Cluster { command } => cluster::cluster(&client, printer, command).await,
        Command::Member { command } => cluster::member(&client, printer, command).await,
        Command::Watch(args) => watch::run(&client, printer, args).await,
        Command::Session { command } => session::run(&client, printer, command).await,
        Command::Lock(args) => recipes::lock(&client, printer, args).await,
        Command::Elect(args) => recipes::elect(&client, printer, args).await,
        Command::Barrier { command } => recipes::barrier(&client, printer, command).await,
    }
}
