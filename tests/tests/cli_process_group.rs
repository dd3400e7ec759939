//! `coordctl lock -- CMD` and `coordctl elect -- CMD` run CMD in a process group of its own and
//! leave none of it behind: not when CMD exits while something it started in the background
//! still runs (the lock's release), not when coordctl gets SIGTERM or SIGINT, not when CMD
//! ignores SIGTERM (SIGKILL after `--kill-grace`), and not when the lock is lost because
//! another client deleted its node.
//!
//! Every CMD here is a shell that starts a grandchild (`sleep 300 &`) and writes its own pid
//! (the group's id) and the grandchild's to files; each case then waits, bounded, until the
//! grandchild is gone (no such process, or a zombie waiting to be reaped). A case that fails
//! half-way kills what is left of the group by its id (`GroupCleanup`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use coord_client::recipes::list_locks;
use coord_client::Client;
use coord_tests::{eventually, ServerProcess, ToolProcess};

/// Every wait for a process, a file or the cluster ends by this.
const WAIT_MAX: Duration = Duration::from_secs(20);

/// The files a CMD writes, and the script that writes them.
struct Command {
    /// The shell's pid: the process group's id, since coordctl starts CMD as a group leader.
    leader_file: PathBuf,
    /// The pid of the `sleep 300` the shell started in the background.
    grandchild_file: PathBuf,
    /// The lock's node, from the environment coordctl gives CMD.
    lock_path_file: PathBuf,
    /// The `sh -c` script.
    script: String,
}

impl Command {
    /// A shell that records its pids, starts `sleep 300 &`, then runs `then`
    /// (e.g. `wait`, or nothing to exit at once, leaving the grandchild running).
    fn new(dir: &Path, name: &str, prologue: &str, then: &str) -> Command {
        let leader_file = dir.join(format!("{name}.leader"));
        let grandchild_file = dir.join(format!("{name}.grandchild"));
        let lock_path_file = dir.join(format!("{name}.lock-path"));
        let script = format!(
            "{prologue} echo \"$COORD_LOCK_PATH\" > {lock}; echo $$ > {leader}; \
             sleep 300 & echo $! > {grandchild}; {then}",
            lock = lock_path_file.display(),
            leader = leader_file.display(),
            grandchild = grandchild_file.display(),
        );
        Command {
            leader_file,
            grandchild_file,
            lock_path_file,
            script,
        }
    }

    /// Waits until CMD runs (so coordctl holds the lock) and returns the group's cleanup and
    /// the grandchild's pid.
    async fn started(&self) -> (GroupCleanup, libc::pid_t) {
        let leader = written_pid(&self.leader_file).await;
        let cleanup = GroupCleanup { group: leader };
        let grandchild = written_pid(&self.grandchild_file).await;
        // Checked while they are still there: a CMD that exits at once is stopped at once.
        for (pid, who) in [(leader, "CMD"), (grandchild, "the grandchild")] {
            if let Some(group) = process_group(pid) {
                assert_eq!(group, leader, "{who} runs in CMD's own process group");
            }
        }
        (cleanup, grandchild)
    }
}

/// Kills (SIGKILL) what is left of a CMD's process group when a case ends, passed or not.
struct GroupCleanup {
    group: libc::pid_t,
}

impl Drop for GroupCleanup {
    fn drop(&mut self) {
        if group_exists(self.group) {
            let _ = send(-self.group, libc::SIGKILL);
        }
    }
}

/// `kill(2)`; `Err(errno)` on failure.
#[allow(unsafe_code, reason = "libc::kill has no safe wrapper in std")]
fn send(pid: libc::pid_t, signal: libc::c_int) -> Result<(), i32> {
    // SAFETY: kill touches no memory of this process; the pids are those of processes this
    // test started (through coordctl), read back from the files they wrote.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or_default())
    }
}

fn group_exists(group: libc::pid_t) -> bool {
    send(-group, 0) != Err(libc::ESRCH)
}

/// The state letter and process group of `pid`, from /proc/PID/stat ("PID (COMM) STATE PPID
/// PGRP ..."; COMM may hold blanks, so fields are counted after the last ')').
fn process_stat(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

fn process_group(pid: libc::pid_t) -> Option<libc::pid_t> {
    process_stat(pid).map(|(_, group)| group)
}

/// Whether `pid` is gone: no such process, or a zombie that only waits to be reaped.
fn gone(pid: libc::pid_t) -> bool {
    send(pid, 0) == Err(libc::ESRCH)
        || process_stat(pid).is_some_and(|(state, _)| state == 'Z' || state == 'X')
}

async fn assert_gone(pid: libc::pid_t, what: &str) {
    eventually(what, WAIT_MAX, || async { gone(pid).then_some(()) }).await;
}

/// The pid a CMD wrote to `file`, once it is there.
async fn written_pid(file: &Path) -> libc::pid_t {
    let what = format!("a pid in {}", file.display());
    eventually(&what, WAIT_MAX, || async {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
    .await
}

/// A single member, and a client of it.
async fn started_member(dir: &Path) -> (ServerProcess, Client) {
    let server = ServerProcess::start_single(dir, &[]);
    let client = server.client().await;
    (server, client)
}

/// Waits until nobody holds `lock`.
async fn assert_released(client: &Client, lock: &str) {
    let what = format!("{lock} to be released");
    eventually(&what, WAIT_MAX, || async {
        let locks = list_locks(client, lock).await.ok()?;
        locks
            .iter()
            .all(|info| info.holders.is_empty())
            .then_some(())
    })
    .await;
}

/// Starts `coordctl lock LOCK [EXTRA...] -- sh -c SCRIPT`.
fn lock_running(
    server: &ServerProcess,
    dir: &Path,
    lock: &str,
    extra: &[&str],
    script: &str,
) -> ToolProcess {
    let mut args = vec!["lock", lock];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    ToolProcess::coordctl(&[server.client_address()], &args, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_release_what_the_command_left_running_is_stopped() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (server, client) = started_member(dir.path()).await;

    // CMD exits at once with status 0, leaving `sleep 300` running in its group.
    let command = Command::new(dir.path(), "release", "", "exit 0");
    let mut holder = lock_running(&server, dir.path(), "/locks/release", &[], &command.script);
    let (_cleanup, grandchild) = command.started().await;
    let code = tokio::task::block_in_place(|| holder.wait_exit(WAIT_MAX));
    assert_eq!(code, Some(0), "stderr: {}", holder.stderr());

    // coordctl stopped the leftover before it released the lock and exited.
    assert_gone(grandchild, "the background grandchild to be stopped").await;
    assert_released(&client, "/locks/release").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_to_coordctl_the_whole_group_is_stopped() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (server, client) = started_member(dir.path()).await;

    let command = Command::new(dir.path(), "sigterm", "", "wait");
    let mut holder = lock_running(&server, dir.path(), "/locks/sigterm", &[], &command.script);
    let (_cleanup, grandchild) = command.started().await;
    let leader = written_pid(&command.leader_file).await;

    // SIGTERM reaches coordctl only (CMD is in another group); coordctl passes it on to the
    // group, then releases the lock and exits 143.
    holder.signal(libc::SIGTERM);
    let code = tokio::task::block_in_place(|| holder.wait_exit(WAIT_MAX));
    assert_eq!(code, Some(143), "stderr: {}", holder.stderr());
    assert_gone(grandchild, "the grandchild to be stopped").await;
    assert_gone(leader, "CMD to be stopped").await;
    assert_released(&client, "/locks/sigterm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (server, client) = started_member(dir.path()).await;

    // An ignored signal stays ignored across fork and exec: the shell and its sleep both
    // ignore SIGTERM, so only the SIGKILL after --kill-grace stops them.
    let command = Command::new(dir.path(), "stubborn", "trap '' TERM;", "wait");
    let extra = ["--kill-grace", "500ms"];
    let mut holder = lock_running(
        &server,
        dir.path(),
        "/locks/stubborn",
        &extra,
        &command.script,
    );
    let (_cleanup, grandchild) = command.started().await;

    holder.signal(libc::SIGINT);
    let code = tokio::task::block_in_place(|| holder.wait_exit(WAIT_MAX));
    assert_eq!(code, Some(130), "stderr: {}", holder.stderr());
    assert_gone(grandchild, "the grandchild to be killed").await;
    assert_released(&client, "/locks/stubborn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loss_of_the_lock_the_whole_group_is_stopped() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (server, _client) = started_member(dir.path()).await;

    let command = Command::new(dir.path(), "lost", "", "wait");
    let mut holder = lock_running(&server, dir.path(), "/locks/lost", &[], &command.script);
    let (_cleanup, grandchild) = command.started().await;
    let lock_path = std::fs::read_to_string(&command.lock_path_file)
        .expect("CMD wrote COORD_LOCK_PATH before its pids")
        .trim()
        .to_owned();
    assert!(lock_path.starts_with("/locks/lost/"), "{lock_path:?}");

    // Another client deletes the lock's node: the holder has lost the lock.
    let mut deleter =
        ToolProcess::coordctl(&[server.client_address()], &["rm", &lock_path], dir.path());
    let deleted = tokio::task::block_in_place(|| deleter.wait_exit(WAIT_MAX));
    assert_eq!(deleted, Some(0), "stderr: {}", deleter.stderr());

    let code = tokio::task::block_in_place(|| holder.wait_exit(WAIT_MAX));
    assert_eq!(code, Some(1), "stderr: {}", holder.stderr());
    assert!(
        holder.stderr().contains("lost"),
        "stderr: {}",
        holder.stderr()
    );
    assert_gone(grandchild, "the grandchild to be stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elected_command_is_stopped_as_a_group_too() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (server, _client) = started_member(dir.path()).await;

    let command = Command::new(dir.path(), "elected", "", "wait");
    let mut leader = ToolProcess::coordctl(
        &[server.client_address()],
        &[
            "elect",
            "/elections/group",
            "candidate",
            "--",
            "sh",
            "-c",
            &command.script,
        ],
        dir.path(),
    );
    let (_cleanup, grandchild) = command.started().await;

    leader.signal(libc::SIGTERM);
    let code = tokio::task::block_in_place(|| leader.wait_exit(WAIT_MAX));
    assert_eq!(code, Some(143), "stderr: {}", leader.stderr());
    assert_gone(grandchild, "the grandchild to be stopped").await;
}
