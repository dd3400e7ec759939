//! `coordctl`: the command-line tool for Coord.
//!
//! This file only parses the command line, connects, hands each subcommand to its group's file
//! (`nodes`, `txn`, `watch`, `session`, `cluster`, `recipes`, `auth`), and turns the outcome into an
//! exit code. Exit codes: 0 success, 1 the operation failed (e.g. no such node), 2 usage error,
//! 3 the cluster is unavailable (unreachable, no leader or quorum, timed out, or the outcome of a
//! write is unknown), 4 a txn's compare failed (its else branch ran).
//!
//! Invariant: a client `Error` becomes an exit code in one place, `exit_code_for`, whose match
//! names every variant, so a new variant cannot be left unclassified.
//!
//! Lock poisoning: coordctl takes no `std::sync` lock of its own; it keeps the client's one
//! policy (a poisoned lock is used as it is; see `lock.rs` in coord-client).

mod auth;
mod check;
mod cluster;
mod nodes;
mod output;
mod recipes;
mod session;
mod txn;
mod txn_script;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use coord_client::{Client, ClientOptions, Error};
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

    /// Deadline of each request to the cluster, retries included (e.g. 500ms, 5s, 1m); past it
    /// the command exits 3. Long waits (watch, lock, elect, barrier wait) are not bounded by
    /// it, only each request they make.
    #[arg(
        long,
        env = "COORD_COMMAND_TIMEOUT",
        default_value = "5s",
        value_parser = coord_client::parse_duration,
        global = true
    )]
    command_timeout: Duration,

    #[command(flatten)]
    tls: TlsFlags,

    /// Bearer token naming your user to the members (from `coordctl auth token issue`), for
    /// clients without a certificate; sent with every request, so use it over TLS.
    #[arg(
        long,
        env = "COORD_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// TLS to the members, with etcdctl's flag names.
#[derive(Debug, Clone, clap::Args)]
struct TlsFlags {
    /// CA bundle (PEM) to check the members' certificates against; connects over TLS.
    #[arg(long, env = "COORD_CACERT", value_name = "PEM", global = true)]
    cacert: Option<std::path::PathBuf>,

    /// Client certificate (PEM), for members that require one (--client-cert-auth); its
    /// subject's common name is your user name.
    #[arg(long, env = "COORD_CERT", value_name = "PEM", global = true, requires_all = ["key", "cacert"])]
    cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(
        long,
        env = "COORD_KEY",
        value_name = "PEM",
        global = true,
        requires = "cert"
    )]
    key: Option<std::path::PathBuf>,
}

impl TlsFlags {
    fn options(&self) -> Option<coord_client::TlsOptions> {
        Some(coord_client::TlsOptions {
            ca_file: self.cacert.clone()?,
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            server_name: None,
        })
    }
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
    /// Membership: list, add a learner, promote it to voter, remove a member, move the
    /// leadership.
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
    /// If the lock may be lost the command's process group gets SIGTERM, then SIGKILL, and
    /// coordctl exits 1.
    #[command(long_about = recipes::LOCK_HELP)]
    Lock(recipes::LockArgs),
    /// Campaign to lead an election with VALUE, then hold the leadership until interrupted or
    /// run a command as leader (`-- CMD ARGS...`, with COORD_ELECTION_TOKEN set), in its own
    /// process group, stopped like `lock`'s.
    Elect(recipes::ElectArgs),
    /// Barriers: a single barrier (set, wait, remove) or a double barrier for N participants.
    Barrier {
        #[command(subcommand)]
        command: recipes::BarrierCommand,
    },
    /// Auth: status; enable or disable; users, roles and their grants; bearer tokens.
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Checks of a running cluster: `check perf` writes for a while and passes or fails on
    /// throughput and latency (exit 0 or 1).
    Check {
        #[command(subcommand)]
        command: check::CheckCommand,
    },
}

/// Exit code for a failed operation (rejected, not acquired in time, lost).
const EXIT_FAILED: u8 = 1;
/// Exit code for a usage error (bad flags, a malformed txn, an unreadable value file).
const EXIT_USAGE: u8 = 2;
/// Exit code when the cluster is unavailable or a write's outcome is unknown.
const EXIT_UNAVAILABLE: u8 = 3;

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

/// Reports `error` and chooses the exit code: `exit_code_for` for a client error, 1 for a
/// recipe that did not succeed in time, 2 (usage) for anything else.
fn exit_code(printer: &Printer, error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<Error>() {
        Some(client_error) => {
            printer.error(client_error);
            exit_code_for(client_error)
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

/// The exit code of a client error: 3 when the cluster is unavailable (unreachable, no leader
/// or quorum, this member not a member, a timeout, a lost connection, a session not confirmed
/// alive) or a write's outcome is unknown; 1 when the request was rejected.
fn exit_code_for(error: &Error) -> u8 {
    match error {
        Error::TxnOpFailed { source, .. } => exit_code_for(source),
        Error::Tls { .. } | Error::PermissionDenied { .. } | Error::Unauthenticated { .. } => {
            EXIT_FAILED
        }
        Error::Unavailable { .. }
        | Error::NotAMember { .. }
        | Error::Unreachable { .. }
        | Error::Timeout { .. }
        | Error::Interrupted { .. }
        | Error::ConnectionLost { .. }
        | Error::Internal { .. }
        | Error::SessionUnsafe { .. } => EXIT_UNAVAILABLE,
        Error::InvalidPath { .. }
        | Error::InvalidArgument { .. }
        | Error::NodeExists { .. }
        | Error::NoNode { .. }
        | Error::BadVersion { .. }
        | Error::NotEmpty { .. }
        | Error::NoParent { .. }
        | Error::EphemeralParent { .. }
        | Error::SessionExpired { .. }
        | Error::NoSpace { .. }
        | Error::ResultNotRetained { .. }
        | Error::FenceRejected { .. }
        | Error::TooLarge { .. }
        | Error::LimitExceeded { .. }
        | Error::RootReadOnly
        | Error::Compacted { .. }
        | Error::Membership { .. }
        | Error::LockLost { .. }
        | Error::PermitsMismatch { .. }
        | Error::BadRecipeData { .. } => EXIT_FAILED,
    }
}

/// The client options the global flags ask for: every request bounded by `--command-timeout`,
/// and no single connection attempt longer than it either; `--token` sent with each request
/// (a blank one, such as an empty COORD_TOKEN, is no token).
fn client_options(command_timeout: Duration, tls: &TlsFlags, token: Option<&str>) -> ClientOptions {
    let defaults = ClientOptions::default();
    ClientOptions {
        connect_timeout: defaults.connect_timeout.min(command_timeout),
        request_timeout: command_timeout,
        tls: tls.options(),
        token: token
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(str::to_owned),
        ..defaults
    }
}

/// Connects and runs the command; returns the exit status it chose.
async fn execute(cli: Cli, printer: &Printer) -> anyhow::Result<i32> {
    let endpoints: Vec<&str> = cli
        .endpoints
        .split(',')
        .filter(|endpoint| !endpoint.trim().is_empty())
        .collect();
    let options = client_options(cli.command_timeout, &cli.tls, cli.token.as_deref());
    if let Command::Member {
        command:
            cluster::MemberCommand::Retire {
                above,
                wait: Some(wait),
            },
    } = cli.command
    {
        return cluster::retire_waiting(&endpoints, options, printer, (above, wait)).await;
    }
    let client = Client::connect_with(endpoints, options).await?;
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
        Command::Auth { command } => auth::run(&client, printer, command).await,
        Command::Check { command } => check::run(&client, printer, command).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "no leader".into(),
            leader_hint: None,
        }
    }

    #[test]
    fn every_unavailable_outcome_exits_3() {
        let unavailable_errors = [
            // No leader, or no quorum for a linearizable read.
            unavailable(),
            Error::NotAMember {
                endpoint: "127.0.0.1:7400".into(),
                message: "member 3 was removed".into(),
            },
            Error::Unreachable {
                endpoints: vec!["127.0.0.1:7400".into()],
                message: "tcp connect error".into(),
            },
            Error::Timeout {
                message: "no answer".into(),
            },
            Error::ConnectionLost {
                endpoint: "127.0.0.1:7400".into(),
                message: "reset".into(),
            },
            Error::Interrupted {
                message: "stopping".into(),
            },
            Error::Internal {
                message: "Unimplemented: ".into(),
            },
            Error::SessionUnsafe { session: 7 },
            Error::TxnOpFailed {
                op_index: 1,
                source: Box::new(unavailable()),
            },
        ];
        for error in unavailable_errors {
            assert_eq!(exit_code_for(&error), EXIT_UNAVAILABLE, "{error:?}");
        }
    }

    #[test]
    fn a_rejected_request_exits_1() {
        let rejected = [
            Error::NoNode { path: "/a".into() },
            Error::BadVersion {
                path: "/a".into(),
                expected: 1,
                actual: 2,
            },
            Error::SessionExpired { session: 7 },
            Error::FenceRejected {
                path: "/lock".into(),
                token: 1,
                current: 2,
            },
            Error::TxnOpFailed {
                op_index: 0,
                source: Box::new(Error::NodeExists { path: "/a".into() }),
            },
            Error::PermissionDenied {
                path: "/app/x".into(),
                message: "user \"alice\" lacks write on /app/x".into(),
            },
            Error::Unauthenticated {
                message: "unknown token".into(),
            },
        ];
        for error in rejected {
            assert_eq!(exit_code_for(&error), EXIT_FAILED, "{error:?}");
        }
    }

    #[test]
    fn the_command_timeout_bounds_every_request() {
        let cli = Cli::try_parse_from(["coordctl", "--command-timeout", "750ms", "get", "/a"])
            .expect("valid");
        let options = client_options(cli.command_timeout, &cli.tls, cli.token.as_deref());
        assert_eq!(options.request_timeout, Duration::from_millis(750));
        assert_eq!(options.connect_timeout, Duration::from_millis(750));
        let defaults = client_options(Duration::from_secs(5), &cli.tls, None);
        assert_eq!(defaults.request_timeout, Duration::from_secs(5));
        assert_eq!(
            defaults.connect_timeout,
            ClientOptions::default().connect_timeout
        );
        assert!(
            Cli::try_parse_from(["coordctl", "--command-timeout", "soon", "get", "/"]).is_err()
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let moved = Cli::try_parse_from(["coordctl", "member", "move-leader"]);
        assert!(moved.is_ok());
        let moved = Cli::try_parse_from(["coordctl", "member", "move-leader", "3"]);
        assert!(moved.is_ok());
    }
    #[test]
    fn the_token_reaches_the_client_options() {
        let cli = Cli::try_parse_from(["coordctl", "get", "/a", "--token", "coord_abc.secret"])
            .expect("valid");
        let options = client_options(cli.command_timeout, &cli.tls, cli.token.as_deref());
        assert_eq!(options.token.as_deref(), Some("coord_abc.secret"));
        let cli =
            Cli::try_parse_from(["coordctl", "--token", "t", "auth", "status"]).expect("valid");
        assert_eq!(cli.token.as_deref(), Some("t"));
        let none = client_options(Duration::from_secs(5), &cli.tls, None);
        assert_eq!(none.token, None);
        let blank = client_options(Duration::from_secs(5), &cli.tls, Some("  "));
        assert_eq!(blank.token, None);
    }

    #[test]
    fn the_auth_commands_parse() {
        let accepted: [&[&str]; 8] = [
            &["auth", "status"],
            &["auth", "enable"],
            &["auth", "user", "add", "alice"],
            &["auth", "user", "grant-role", "alice", "app"],
            &[
                "auth",
                "role",
                "grant",
                "app",
                "/app",
                "read,write",
                "delete",
            ],
            &["auth", "role", "revoke", "app", "/app", "write"],
            &[
                "auth",
                "token",
                "issue",
                "root",
                "--description",
                "ops laptop",
            ],
            &["auth", "token", "revoke", "root", "3f9a"],
        ];
        for arguments in accepted {
            let line = std::iter::once("coordctl").chain(arguments.iter().copied());
            assert!(Cli::try_parse_from(line).is_ok(), "{arguments:?}");
        }
        let rejected: [&[&str]; 3] = [
            &["auth", "role", "grant", "app", "/app"],
            &["auth", "user", "grant-role", "alice"],
            &["auth", "token", "revoke", "root"],
        ];
        for arguments in rejected {
            let line = std::iter::once("coordctl").chain(arguments.iter().copied());
            assert!(Cli::try_parse_from(line).is_err(), "{arguments:?}");
        }
        let cli = Cli::try_parse_from(["coordctl", "auth", "role", "grant", "app", "/app", "read"])
            .expect("valid");
        assert!(matches!(
            cli.command,
            Command::Auth {
                command: auth::AuthCommand::Role { .. }
            }
        ));
    }
}
