//! `coordctl session`: lists the cluster's sessions, or closes one as if its owner had
//! (deleting its ephemeral nodes).

use clap::Subcommand;
use coord_client::Client;

use crate::output::Printer;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Every session with its TTL, time left, last keep-alive and ephemeral nodes.
    List,
    /// Close a session now, as if its owner had.
    Close { id: u64 },
}

/// `coordctl session list|close`.
pub async fn run(
    client: &Client,
    printer: &Printer,
    command: SessionCommand,
) -> anyhow::Result<i32> {
    match command {
        SessionCommand::List => printer.sessions(&client.list_sessions().await?),
        SessionCommand::Close { id } => {
            let deleted = client.close_session(id).await?;
            printer.session_closed(id, deleted);
        }
    }
    Ok(0)
}
