//! `coord-server`: parse flags, set up structured logging, run one member until SIGTERM or
//! Ctrl-C. Exits non-zero with a message that says what to fix when the member cannot start.

use clap::Parser;
use coord_server::config::ServerConfig;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc for the server's own (Rust) allocations; RocksDB's C++
/// keeps glibc's. Measured (release, November 2026): glibc's malloc and free were about 17 % of
/// the members' CPU samples under 64 concurrent linearizable reads (`perf record`), and one
/// member under `valgrind --tool=callgrind` running 4,000 writes and 8,000 linearizable reads
/// (8 clients each) executed 1,143 million instructions with glibc against 1,055 million with
/// mimalloc (-7.7 %). Resident memory: about 18 MiB more per idle member (a heap per thread),
/// and the same per watch (489 bytes against 492, `coord-bench watches`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let config = ServerConfig::parse();
    // A panic means a broken invariant; the member must stop rather than keep serving with a
    // dead task. The default hook prints the message and location first.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    // openraft repeats its warnings on every retry (a down peer: several lines every half
    // second); Coord logs each change once instead (`consensus/changes.rs`). RUST_LOG=
    // info,openraft=warn brings openraft's lines back.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=off"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    if !config.transparent_huge_pages {
        no_transparent_huge_pages();
    }
    // Before the runtime starts any thread: each one inherits the policy.
    let batch = config.batch_scheduling() && batch_scheduling();
    // One worker per core, shared among the members on this host, unless --worker-threads
    // says otherwise.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = config.worker_threads_for(cores);
    tracing::info!(
        workers,
        cores,
        members_on_this_host = config.members_on_this_host(),
        scheduling = if batch { "batch" } else { "normal" },
        "worker threads"
    );
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().worker_threads(workers);
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(coord_server::member::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("coord-server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keeps the kernel from backing this process's memory, from now on, with transparent huge
/// pages (`prctl(PR_SET_THP_DISABLE)`, for the whole process, whatever
/// `/sys/kernel/mm/transparent_hugepage/enabled` says). Measured on a kernel set to `always`
/// (December 2026, 3 members, 64 writers): page faults, most of them zeroing 2 MiB pages for a
/// growing heap, went from 7 to 10 % of the members' CPU samples to 1.7 %, and the three
/// members' resident memory from about 395 to 300 MiB (README, "Benchmarks"). A kernel that
/// cannot only costs the warning.
fn no_transparent_huge_pages() {
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "cannot turn transparent huge pages off; memory may use them");
    }
}

/// Puts the calling thread, and so every thread it starts from now on, under Linux's
/// SCHED_BATCH policy: the same share of the CPU as SCHED_OTHER, but a thread woken while
/// another runs on its core waits for that one's turn to end rather than preempting it.
/// Measured with three members on one 2-core host (December 2026, release builds, rounds
/// alternating with the members under SCHED_OTHER): a member's message woke the next member,
/// which took the core from the sender before its second AppendEntries went out; under
/// SCHED_BATCH, `writes --clients 1` went from 1,170 to 1,226 writes/s to 1,221 to 1,357, and
/// the members' CPU per write from 797 to 838 us to 718 to 780 (README, "Benchmarks"). `false`
/// (with a warning) when the kernel refuses.
fn batch_scheduling() -> bool {
    let parameters = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads the `sched_param` it is given and nothing else; the
    // pointer is to a live, initialised local. Pid 0 is the calling thread.
    #[allow(unsafe_code)]
    let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &parameters) };
    if set != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot schedule this member's threads as a batch; they stay normal");
        return false;
    }
    true
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
