//! `coordctl cluster` and `coordctl member`: the cluster's status as one member sees it,
//! membership changes (add a learner, promote it to voter, remove a member), and moving the
//! leadership to another voter.

use clap::Subcommand;
use coord_client::Client;

use crate::output::Printer;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, and each member's role and progress.
    Status,
}

#[derive(Subcommand)]
pub enum MemberCommand {
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
    /// Hand the leadership to voter ID (default: the most caught-up voter other than the
    /// leader); writes pause for about a round trip. Prints the new leader and its term.
    MoveLeader {
        /// The voter to lead; omitted, the leader picks.
        id: Option<u64>,
    },
}

/// `coordctl cluster status`.
pub async fn cluster(
    client: &Client,
    printer: &Printer,
    command: ClusterCommand,
) -> anyhow::Result<i32> {
    match command {
        ClusterCommand::Status => {
            let status = client.cluster_status().await?;
            printer.cluster_status(&status);
        }
    }
    Ok(0)
}

/// `coordctl member list|add|promote|remove`: prints the membership after the change;
/// `coordctl member move-leader`: prints the new leader and its term.
pub async fn member(
    client: &Client,
    printer: &Printer,
    command: MemberCommand,
) -> anyhow::Result<i32> {
    let members = match command {
        MemberCommand::MoveLeader { id } => {
            // 0 asks the leader to pick the most caught-up voter.
            let (leader, term) = client.member_move_leader(id.unwrap_or(0)).await?;
            printer.leader_moved(leader, term);
            return Ok(0);
        }
        MemberCommand::List => client.member_list().await?,
        MemberCommand::Add { id, peer_address } => client.member_add(id, &peer_address).await?,
        MemberCommand::Promote { id } => client.member_promote(id).await?,
        MemberCommand::Remove { id } => client.member_remove(id).await?,
    };
    printer.members(&members);
    Ok(0)
}
