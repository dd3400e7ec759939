//! `coordctl`: the command-line tool for Coord.
//!
//! Exit codes: 0 success, 1 the operation failed (e.g. no such node), 2 usage error,
//! 3 the cluster could not be reached (or the outcome of a write is unknown).

mod output;
mod txn_script;

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use coord_client::{Client, Consistency, CreateOptions, DeleteOptions, Error, NodeKind};
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
        /// Removed when its session ends (needs session support, which comes later).
        #[arg(long)]
        ephemeral: bool,
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
        Ok(()) => ExitCode::SUCCESS,
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
                None => {
                    eprintln!("coordctl: {error:#}");
                    EXIT_USAGE
                }
            };
            ExitCode::from(code)
        }
    }
}

async fn execute(cli: Cli, printer: &Printer) -> anyhow::Result<()> {
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
        } => {
            if ephemeral {
                anyhow::bail!(
                    "--ephemeral needs a session; sessions are not supported by this release yet"
                );
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
        Command::Cluster {
            command: ClusterCommand::Status,
        } => {
            let status = client.cluster_status().await?;
            printer.cluster_status(&status);
        }
    }
    Ok(())
}
