//! `coord-locker`: a client process for the mutual-exclusion tests. It takes a `Mutex` again
//! and again and, holding it, increments a counter in a shared file and appends its token to a
//! shared log, with no synchronisation besides the lock.
//!
//! ```text
//! coord-locker --endpoints E --name /locks/counter --dir D --iterations 200 [--ttl 10s]
//! ```
//! `D/counter` holds the count; `D/log` gets one line `TOKEN COUNT PID` per increment.
//! A lost session or a failed acquisition is retried with a new session; a guard found unsafe
//! before the write gives up that turn without writing, as a careful user would. Exits 0 after
//! `--iterations` increments, printing `done ITERATIONS`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use coord_client::{Client, ClientOptions, Error, HeldNode, Mutex, Session, SessionState};

fn flag(arguments: &[String], name: &str) -> anyhow::Result<String> {
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .cloned()
        .with_context(|| format!("{name} is required"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
    let endpoints = flag(&arguments, "--endpoints")?;
    let name = flag(&arguments, "--name")?;
    let directory = std::path::PathBuf::from(flag(&arguments, "--dir")?);
    let iterations: u64 = flag(&arguments, "--iterations")?.parse()?;
    let ttl = coord_client::parse_duration(&flag(&arguments, "--ttl").unwrap_or("10s".into()))
        .map_err(anyhow::Error::msg)?;
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        discover_members: false,
        tls: coord_tests::pki::harness_client_tls(),
        token: None,
    };
    let client = Client::connect_with(endpoints.split(','), options).await?;
    let mut session: Option<Session> = None;
    let mut done = 0;
    let mut failures = 0;
    while done < iterations {
        if session
            .as_ref()
            .is_none_or(|session| session.state() == SessionState::Expired)
        {
            match client.open_session(ttl).await {
                Ok(opened) => session = Some(opened),
                Err(error) => {
                    failures += 1;
                    eprintln!("coord-locker: open session: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let held = session.as_ref().expect("opened above");
        let mutex = Mutex::new(&client, held, &name);
        let guard = match mutex.acquire().await {
            Ok(guard) => guard,
            Err(error) => {
                failures += 1;
                eprintln!("coord-locker: acquire: {error}");
                if matches!(error, Error::SessionExpired { .. }) {
                    session = None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let count = read_count(&directory.join("counter"))?;
        if !guard.is_safe() {
            // The lock may have passed on: do not touch the shared file this turn.
            failures += 1;
            let _ = guard.release().await;
            continue;
        }
        std::fs::write(directory.join("counter"), format!("{}\n", count + 1))?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(directory.join("log"))?;
        writeln!(
            log,
            "{} {} {}",
            guard.token(),
            count + 1,
            std::process::id()
        )?;
        done += 1;
        if let Err(error) = guard.release().await {
            // The node goes with the session anyway; the next acquisition queues behind it.
            eprintln!("coord-locker: release: {error}");
        }
    }
    if let Some(session) = session {
        let _ = session.close().await;
    }
    writeln!(std::io::stdout(), "done {done} (retries {failures})")?;
    Ok(())
}

fn read_count(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{} holds {text:?}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error.into()),
    }
}
