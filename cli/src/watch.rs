//! `coordctl watch`: prints each change under a path as it happens (one line, or one JSON
//! object, per event) until interrupted or the watch ends with an error.

use clap::Args;
use coord_client::{Client, WatchOptions};

use crate::output::Printer;

#[derive(Args)]
pub struct WatchArgs {
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
}

/// `coordctl watch PATH`.
pub async fn run(client: &Client, printer: &Printer, args: WatchArgs) -> anyhow::Result<i32> {
    let options = WatchOptions {
        path: args.path,
        recursive: args.recursive,
        start_revision: args.rev.unwrap_or(0),
        with_data: args.data,
        ..WatchOptions::default()
    };
    let mut watch = client.watch(options).await?;
    while let Some(event) = watch.next().await {
        printer.event(&event?);
    }
    Ok(0)
}
