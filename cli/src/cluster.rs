//! `coordctl cluster` and `coordctl member`: the cluster's status as one member sees it,
//! membership changes (add a learner, promote it to voter, remove a member), and moving the
//! leadership to another voter.

use std::time::Duration;

use clap::Subcommand;
use coord_client::{Client, ClientOptions};

use crate::output::Printer;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, and each member's role and progress, as the member asked sees them. Only
    /// the leader knows every member's progress: another member shows "-" (JSON: null) for all
    /// but itself.
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
    /// Remove every member whose id is above ID, highest first (a leader hands its leadership
    /// over before it goes): what a StatefulSet scaled down to ID pods runs before the pods
    /// go. Changes nothing when there is none; prints the membership after.
    Retire {
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
        above: u64,
        /// Keep trying this long while the cluster is unreachable or has no leader (e.g. 2m),
        /// as a Kubernetes hook does while members restart; without it, one try.
        #[arg(long, value_name = "DURATION", value_parser = coord_client::parse_duration)]
        wait: Option<Duration>,
    },
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

/// `coordctl member list|add|promote|remove|retire`: prints the membership after the change;
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
        MemberCommand::Retire { above, .. } => retire(client, above).await?,
    };
    printer.members(&members);
    Ok(0)
}

/// Removes the members above `above`, highest id first, one change at a time; returns the
/// membership after. Each removal is checked against the membership read just before it, so a
/// run that was interrupted is simply run again. A member this run removed is not removed
/// again when a listing from a member that has not applied the removal yet still shows it, and
/// "not in the cluster" (removed by an earlier try whose answer was lost) counts as removed.
async fn retire(client: &Client, above: u64) -> anyhow::Result<Vec<coord_client::Member>> {
    let mut removed = std::collections::BTreeSet::new();
    loop {
        let members: Vec<coord_client::Member> = client
            .member_list()
            .await?
            .into_iter()
            .filter(|member| !removed.contains(&member.id))
            .collect();
        let staying = members.iter().filter(|member| member.id <= above).count();
        let Some(highest) = members
            .iter()
            .map(|member| member.id)
            .filter(|id| *id > above)
            .max()
        else {
            return Ok(members);
        };
        if staying == 0 {
            anyhow::bail!(
                "no member has an id of {above} or less: retiring the others would leave none"
            );
        }
        eprintln!("coordctl: removing member {highest}");
        match client.member_remove(highest).await {
            Ok(_) => {}
            Err(coord_client::Error::Membership { message })
                if message.contains(&format!("member {highest} is not in the cluster")) => {}
            Err(error) => return Err(error.into()),
        }
        removed.insert(highest);
    }
}

/// `coordctl member retire --wait`: connects and retires, again and again while the cluster is
/// unavailable (exit status 3), until `wait` has passed.
pub async fn retire_waiting(
    endpoints: &[&str],
    options: ClientOptions,
    printer: &Printer,
    (above, wait): (u64, Duration),
) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let attempt = async {
            let client = Client::connect_with(endpoints.to_vec(), options.clone()).await?;
            retire(&client, above).await
        }
        .await;
        let error = match attempt {
            Ok(members) => {
                printer.members(&members);
                return Ok(0);
            }
            Err(error) => error,
        };
        let unavailable = error
            .downcast_ref::<coord_client::Error>()
            .is_some_and(|error| crate::exit_code_for(error) == crate::EXIT_UNAVAILABLE);
        if !unavailable || tokio::time::Instant::now() + RETIRE_RETRY_INTERVAL >= deadline {
            return Err(error);
        }
        eprintln!("coordctl: {error:#}; trying again");
        tokio::time::sleep(RETIRE_RETRY_INTERVAL).await;
    }
}

/// The pause between tries of `member retire --wait`.
const RETIRE_RETRY_INTERVAL: Duration = Duration::from_secs(2);
