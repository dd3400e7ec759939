//! A critical section under a `Mutex`, with the write it protects fenced by the lock's token.
//!
//! ```text
//! cargo run -p coord-client --example locked_write -- 127.0.0.1:7400
//! ```
//! Run it twice at once: the second waits for the first. Each run appends one line to
//! `/examples/ledger` through a txn that the cluster applies only while this run's lock node is
//! still the holder, so a run paused past its session's TTL cannot overwrite a newer holder's
//! work when it wakes up.

#![allow(
    clippy::print_stdout,
    reason = "an example reports to its user on stdout"
)]

use std::time::Duration;

use coord_client::{Client, CreateOptions, Error, HeldNode, Op, Txn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoints: Vec<String> = std::env::args().skip(1).collect();
    let endpoints = if endpoints.is_empty() {
        vec!["127.0.0.1:7400".to_owned()]
    } else {
        endpoints
    };
    let client = Client::connect(&endpoints).await?;
    let session = client.open_session(Duration::from_secs(10)).await?;
    let mutex = coord_client::Mutex::new(&client, &session, "/examples/locks/ledger");
    println!("waiting for the lock...");
    let guard = mutex.acquire().await?;
    println!("holding {} with token {}", guard.path(), guard.token());

    // Read, compute, and write back: the fence makes the write conditional on still holding.
    let options = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    match client.create("/examples/ledger", "", &options).await {
        Ok(_) | Err(Error::NodeExists { .. }) => {}
        Err(error) => return Err(error),
    }
    let ledger = client.get("/examples/ledger").await?;
    let mut text = String::from_utf8_lossy(&ledger.data).into_owned();
    text.push_str(&format!("entry written under token {}\n", guard.token()));
    tokio::time::sleep(Duration::from_secs(2)).await; // the slow part of the work
    if !guard.is_safe() {
        println!("the lock may have passed on; not writing");
        return Ok(());
    }
    let write = guard.fence(Txn::new().then(Op::set("/examples/ledger", text, None)));
    match client.txn(write).await {
        Ok(_) => println!("written"),
        Err(Error::FenceRejected { .. }) => println!("refused: a newer holder has the lock"),
        Err(error) => return Err(error),
    }
    guard.release().await?;
    session.close().await?;
    Ok(())
}
