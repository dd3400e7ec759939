//! A worker that does its job only while it leads an `Election`, hands over when it loses the
//! leadership, and campaigns again.
//!
//! ```text
//! cargo run -p coord-client --example elected_worker -- worker-1 127.0.0.1:7400
//! ```
//! Start several with different names; kill the leader and another takes over within the
//! session TTL. Cut a leading worker off from the cluster (or stop a majority of members) for
//! less than its TTL: it pauses its work while its session cannot be confirmed, then resumes
//! with the same token. `coordctl elect --observe /examples/elections/worker` shows each change.

#![allow(
    clippy::print_stdout,
    reason = "an example reports to its user on stdout"
)]

use std::time::Duration;

use coord_client::{Client, Election, Error, HeldNode, HoldState};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut arguments = std::env::args().skip(1);
    let name = arguments.next().unwrap_or_else(|| "worker".to_owned());
    let endpoints: Vec<String> = arguments.collect();
    let endpoints = if endpoints.is_empty() {
        vec!["127.0.0.1:7400".to_owned()]
    } else {
        endpoints
    };
    let client = Client::connect(&endpoints).await?;
    loop {
        let session = client.open_session(Duration::from_secs(5)).await?;
        let election = Election::new(&client, &session, "/examples/elections/worker");
        println!("{name}: campaigning");
        let leadership = match election.campaign(name.clone()).await {
            Ok(leadership) => leadership,
            Err(error) => {
                println!("{name}: campaign failed ({error}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        println!("{name}: leading with token {}", leadership.token());
        let mut ticks = 0u64;
        let reason = loop {
            tokio::select! {
                state = leadership.suspended() => {
                    if let HoldState::Lost(reason) = state {
                        break reason;
                    }
                    // The session cannot be confirmed in time: pause until it is, or is lost.
                    println!("{name}: suspended; pausing work");
                    match leadership.resumed().await {
                        Ok(()) => println!("{name}: resumed with token {}", leadership.token()),
                        Err(reason) => break reason,
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    // The work; pass leadership.token() to anything it changes.
                    ticks += 1;
                    println!("{name}: working (tick {ticks}, token {})", leadership.token());
                }
            }
        };
        println!("{name}: lost the leadership ({reason:?}); stopping work");
        drop(leadership);
        drop(session);
    }
}
