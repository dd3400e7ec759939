//! A slow disk for one member: `slow_sync.c`, built here with the system C compiler (the one
//! RocksDB's build needs) and loaded into a `coord-server` with `LD_PRELOAD`, delays every
//! `fsync` and `fdatasync` the process makes. The member's data is on a real disk and every
//! sync still happens; only later, as on a throttled cloud volume.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::ServerProcess;

/// The preload library, built once per test process next to the workspace's binaries.
fn library() -> &'static PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let server = crate::binary("coord-server");
        let directory = server
            .parent()
            .expect("binaries live in a directory")
            .join("coord-test-preload");
        std::fs::create_dir_all(&directory).expect("the preload directory can be created");
        let library = directory.join("libcoord_slow_sync.so");
        // Built under a name of this process's own, then renamed: test processes running at
        // once never load a half-written library.
        let building = directory.join(format!("libcoord_slow_sync.{}.so", std::process::id()));
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/src/slow_sync.c");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&building)
            .arg(source)
            .arg("-ldl")
            .status()
            .expect("a C compiler (cc) runs; RocksDB's build needs one too");
        assert!(status.success(), "cc could not build {source}");
        std::fs::rename(&building, &library).expect("the preload library can be renamed");
        library
    })
}

/// Makes `member` sync `delay` later from its next start on.
pub fn slow_down_syncs(member: &mut ServerProcess, delay: Duration) {
    member.set_env("LD_PRELOAD", &library().display().to_string());
    member.set_env("COORD_TEST_SYNC_DELAY_MS", &delay.as_millis().to_string());
}
