//! `coordctl get`, `set`, `create`, `rm`, `ls`, `stat` and `tree`: reading and writing nodes.
//!
//! Each command is one client call (or a page-by-page walk for `ls` and `tree`) and one
//! printed result. The exception is `create --ephemeral --hold`, which keeps its session
//! alive until interrupted and exits 1 if the session is lost meanwhile.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use coord_client::{Client, Consistency, CreateOptions, DeleteOptions, Error, NodeKind};
use coord_client::{SessionState, Stat};

use crate::output::{Printer, TreeEntry};

#[derive(Clone, Copy, ValueEnum)]
enum ReadLevel {
    Linearizable,
    Serializable,
}

#[derive(Args)]
pub struct GetArgs {
    path: String,
    /// Read consistency.
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: ReadLevel,
    /// Answer only once the member has applied this revision (read-your-writes).
    #[arg(long)]
    min_revision: Option<u64>,
}

#[derive(Args)]
pub struct SetArgs {
    path: String,
    value: String,
    /// Only if the node's version equals this.
    #[arg(long)]
    version: Option<u64>,
}

#[derive(Args)]
pub struct CreateArgs {
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
}

#[derive(Args)]
pub struct RmArgs {
    path: String,
    /// Delete the whole subtree.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Only if the node's version equals this.
    #[arg(long)]
    version: Option<u64>,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(default_value = "/")]
    path: String,
    /// Show each child's stat.
    #[arg(short = 'l', long)]
    long: bool,
}

#[derive(Args)]
pub struct StatArgs {
    path: String,
}

#[derive(Args)]
pub struct TreeArgs {
    #[arg(default_value = "/")]
    path: String,
}

/// `coordctl get PATH`.
pub async fn get(client: &Client, printer: &Printer, args: GetArgs) -> anyhow::Result<i32> {
    let consistency = match (args.min_revision, args.consistency) {
        (Some(revision), _) => Consistency::MinRevision(revision),
        (None, ReadLevel::Linearizable) => Consistency::Linearizable,
        (None, ReadLevel::Serializable) => Consistency::Serializable,
    };
    let node = client.get_with(&args.path, consistency).await?;
    printer.node(&args.path, &node);
    Ok(0)
}

/// `coordctl set PATH VALUE`.
pub async fn set(client: &Client, printer: &Printer, args: SetArgs) -> anyhow::Result<i32> {
    let stat = client
        .set(&args.path, args.value.into_bytes(), args.version)
        .await?;
    printer.stat_line(&args.path, &stat);
    Ok(0)
}

/// `coordctl create PATH [VALUE]`.
pub async fn create(client: &Client, printer: &Printer, args: CreateArgs) -> anyhow::Result<i32> {
    if args.ephemeral && args.hold {
        let shape = (args.sequential, args.parents);
        hold_ephemeral(client, printer, &args.path, args.value, args.ttl, shape).await?;
        return Ok(0);
    }
    let options = CreateOptions {
        kind: if args.container {
            NodeKind::Container
        } else {
            NodeKind::Persistent
        },
        sequential: args.sequential,
        make_parents: args.parents,
        session_id: 0,
    };
    let created = client
        .create(&args.path, args.value.into_bytes(), &options)
        .await?;
    printer.created(&created);
    Ok(0)
}

/// `coordctl rm PATH`.
pub async fn rm(client: &Client, printer: &Printer, args: RmArgs) -> anyhow::Result<i32> {
    let options = DeleteOptions {
        expected_version: args.version,
        recursive: args.recursive,
    };
    let deleted = client.delete(&args.path, options).await?;
    printer.deleted(&args.path, deleted);
    Ok(0)
}

/// `coordctl ls [PATH]`: every child, page by page.
pub async fn ls(client: &Client, printer: &Printer, args: LsArgs) -> anyhow::Result<i32> {
    let mut token: Option<String> = None;
    let mut children = Vec::new();
    loop {
        let page = client
            .children_page(
                &args.path,
                0,
                token.as_deref(),
                args.long,
                Consistency::Linearizable,
            )
            .await?;
        children.extend(page.children);
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    printer.children(&args.path, &children, args.long);
    Ok(0)
}

/// `coordctl stat PATH`.
pub async fn stat(client: &Client, printer: &Printer, args: StatArgs) -> anyhow::Result<i32> {
    let stat: Stat = client.exists(&args.path).await?.ok_or(Error::NoNode {
        path: args.path.clone(),
    })?;
    printer.stat(&args.path, &stat);
    Ok(0)
}

/// `coordctl tree [PATH]`.
pub async fn tree(client: &Client, printer: &Printer, args: TreeArgs) -> anyhow::Result<i32> {
    let tree = collect_tree(client, &args.path).await?;
    printer.tree(&tree);
    Ok(0)
}

/// The subtree at `root`, read page by page, in depth-first order for printing. Only nodes
/// with children are listed (the listing's stats say which), and the order is built with a
/// stack, so a tree of 100,000 nodes costs a listing per inner node, not per node.
async fn collect_tree(client: &Client, root: &str) -> Result<Vec<TreeEntry>, Error> {
    let root_stat = client.exists(root).await?.ok_or(Error::NoNode {
        path: root.to_owned(),
    })?;
    let mut entries = Vec::new();
    let mut pending = vec![TreeEntry {
        path: root.to_owned(),
        depth: 0,
        stat: root_stat,
    }];
    while let Some(entry) = pending.pop() {
        let children = if entry.stat.num_children > 0 {
            list_children(client, &entry.path, entry.depth + 1).await?
        } else {
            Vec::new()
        };
        entries.push(entry);
        // Reversed, so the first child is visited next.
        pending.extend(children.into_iter().rev());
    }
    Ok(entries)
}

/// Every child of `path`, with its stat, in name order.
async fn list_children(client: &Client, path: &str, depth: usize) -> Result<Vec<TreeEntry>, Error> {
    let mut children = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .children_page(path, 0, token.as_deref(), true, Consistency::Linearizable)
            .await?;
        for child in page.children {
            let child_path = if path == "/" {
                format!("/{}", child.name)
            } else {
                format!("{path}/{}", child.name)
            };
            children.push(TreeEntry {
                path: child_path,
                depth,
                stat: child.stat.unwrap_or_default(),
            });
        }
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => return Ok(children),
        }
    }
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
