//! `coordctl get`, `set`, `create`, `rm`, `ls`, `stat` and `tree`: reading and writing nodes.
//!
//! Each command is one client call (or a page-by-page walk for `ls` and `tree`) and one
//! printed result. The exception is `create --ephemeral --hold`, which keeps its session
//! alive until interrupted and exits 1 if the session is lost meanwhile.
//!
//! `set` and `create` take the value as an argument, or with `--file PATH` (`-`: stdin) byte
//! for byte, since one argument cannot carry more than 128 KiB on Linux. The file is read while
//! the command line is parsed, so an unreadable file is a usage error (exit 2) before any
//! request is sent.

use std::io::Read;
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
    /// The new value (or --file).
    #[arg(required_unless_present = "file")]
    value: Option<String>,
    /// Read the value from this file, byte for byte (`-`: from stdin).
    #[arg(long, value_name = "PATH", value_parser = read_value_file, conflicts_with = "value")]
    file: Option<FileValue>,
    /// Only if the node's version equals this.
    #[arg(long)]
    version: Option<u64>,
}

#[derive(Args)]
pub struct CreateArgs {
    path: String,
    /// The value (default: empty; or --file).
    value: Option<String>,
    /// Read the value from this file, byte for byte (`-`: from stdin).
    #[arg(long, value_name = "PATH", value_parser = read_value_file, conflicts_with = "value")]
    file: Option<FileValue>,
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

/// A value read by `--file`: the file's bytes, unchanged (a final newline stays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileValue(Vec<u8>);

/// Reads `--file PATH`: the file's bytes, or stdin's for `-`.
fn read_value_file(path: &str) -> Result<FileValue, String> {
    read_value(path, std::io::stdin().lock())
}

/// The bytes of file `path`, or of `stdin` when `path` is `-`.
fn read_value(path: &str, mut stdin: impl Read) -> Result<FileValue, String> {
    let mut bytes = Vec::new();
    let read = if path == "-" {
        stdin.read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut file| file.read_to_end(&mut bytes))
    };
    match read {
        Ok(_) => Ok(FileValue(bytes)),
        Err(error) if path == "-" => Err(format!("cannot read the value from stdin: {error}")),
        Err(error) => Err(format!("cannot read the value from {path}: {error}")),
    }
}

/// The value given as an argument or read with `--file` (clap allows one of them at most).
fn value_bytes(value: Option<String>, file: Option<FileValue>) -> Vec<u8> {
    match (file, value) {
        (Some(FileValue(bytes)), _) => bytes,
        (None, Some(value)) => value.into_bytes(),
        (None, None) => Vec::new(),
    }
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

/// `coordctl set PATH VALUE` or `coordctl set PATH --file FILE`.
pub async fn set(client: &Client, printer: &Printer, args: SetArgs) -> anyhow::Result<i32> {
    let value = value_bytes(args.value, args.file);
    let stat = client.set(&args.path, value, args.version).await?;
    printer.stat_line(&args.path, &stat);
    Ok(0)
}

/// `coordctl create PATH [VALUE]` or `coordctl create PATH --file FILE`.
pub async fn create(client: &Client, printer: &Printer, args: CreateArgs) -> anyhow::Result<i32> {
    let value = value_bytes(args.value, args.file);
    if args.ephemeral && args.hold {
        let shape = (args.sequential, args.parents);
        hold_ephemeral(client, printer, &args.path, value, args.ttl, shape).await?;
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
    let created = client.create(&args.path, value, &options).await?;
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
    value: Vec<u8>,
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
    let created = match client.create(path, value, &options).await {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct SetLine {
        #[command(flatten)]
        args: SetArgs,
    }

    #[derive(Parser)]
    struct CreateLine {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn set_value(arguments: &[&str]) -> Result<Vec<u8>, clap::Error> {
        let line =
            SetLine::try_parse_from(std::iter::once("set").chain(arguments.iter().copied()))?;
        Ok(value_bytes(line.args.value, line.args.file))
    }

    #[test]
    fn a_value_too_large_for_an_argument_comes_from_a_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // 2 MiB, not valid UTF-8, with blanks, `#` and a final newline: all kept.
        let value: Vec<u8> = (0..2 * 1024 * 1024)
            .map(|index| (index % 251) as u8)
            .collect();
        file.write_all(&value).unwrap();
        let path = file.path().to_str().unwrap();
        assert_eq!(set_value(&["/big", "--file", path]).unwrap(), value);
        let line = CreateLine::try_parse_from(["create", "/big", "--file", path]).unwrap();
        assert_eq!(value_bytes(line.args.value, line.args.file), value);
    }

    #[test]
    fn a_value_comes_from_the_argument_or_the_file_not_both() {
        assert_eq!(
            set_value(&["/a", "  spaced # value  "]).unwrap(),
            b"  spaced # value  "
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let both = set_value(&["/a", "x", "--file", path]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        let neither = set_value(&["/a"]).unwrap_err();
        assert_eq!(
            neither.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let line = CreateLine::try_parse_from(["create", "/a"]).unwrap();
        assert_eq!(value_bytes(line.args.value, line.args.file), b"");
    }

    #[test]
    fn a_dash_reads_the_value_from_stdin() {
        let stdin = std::io::Cursor::new(b"from stdin\n".to_vec());
        let read = read_value("-", stdin).unwrap();
        assert_eq!(read, FileValue(b"from stdin\n".to_vec()));
    }

    #[test]
    fn an_unreadable_file_is_a_usage_error_that_names_it() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing");
        let error = set_value(&["/a", "--file", missing.to_str().unwrap()]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
