//! Tidy: the project's structural rules, checked on every test run.
//! - every Rust source opens with a `//!` module doc;
//! - `server/src/fsm/` does no I/O, reads no clock, takes no lock and draws no randomness;
//! - crate dependencies point one way (client and server → proto; cli → client; never
//!   client → server);
//! - no debugging leftovers (the dbg and todo macros, fix-me markers) in the sources;
//! - every source file is named in ARCHITECTURE.md's code map;
//! - the repository root holds only the files and directories on its allowlist.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in [
        "proto/src",
        "server/src",
        "client/src",
        "cli/src",
        "tests/src",
        "tests/tests",
    ] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    files.sort();
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn every_source_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|path| {
            !fs::read_to_string(path)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:?}"
    );
}

#[test]
fn the_state_machine_stays_pure() {
    let banned = [
        "tokio",
        "rocksdb",
        "tonic",
        "openraft",
        "Instant",
        "SystemTime",
        "rand::",
        "std::env",
        "Mutex",
        "RwLock",
        "std::fs",
        "std::net",
        "std::thread",
        "HashMap",
        "HashSet",
    ];
    let mut violations = Vec::new();
    let mut files = Vec::new();
    rust_files(&workspace_root().join("server/src/fsm"), &mut files);
    assert!(files.len() >= 5, "fsm sources not found");
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in banned {
                if code.contains(word) {
                    violations.push(format!("{}:{}: {word}", relative(&path), number + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "fsm/ must not use I/O, clocks, locks, randomness or unordered maps: {violations:#?}"
    );
}

#[test]
fn dependencies_point_one_way() {
    let root = workspace_root();
    let manifest =
        |crate_dir: &str| fs::read_to_string(root.join(crate_dir).join("Cargo.toml")).unwrap();
    let internal = |text: &str| -> Vec<&'static str> {
        ["coord-proto", "coord-server", "coord-client"]
            .into_iter()
            .filter(|name| text.contains(&format!("{name}.")))
            .collect()
    };
    assert_eq!(
        internal(&manifest("proto")),
        Vec::<&str>::new(),
        "proto depends on no other crate of ours"
    );
    assert_eq!(
        internal(&manifest("client")),
        ["coord-proto"],
        "client depends on proto only, never on the server"
    );
    assert_eq!(
        internal(&manifest("server")),
        ["coord-proto"],
        "server depends on proto only"
    );
    assert_eq!(
        internal(&manifest("cli")),
        ["coord-client"],
        "cli goes through the client"
    );
    assert!(
        !internal(&manifest("tests")).contains(&"coord-server"),
        "tests drive the built binaries, not the server library"
    );
}

#[test]
fn no_debugging_leftovers() {
    let mut found = Vec::new();
    let needles = [
        concat!("dbg", "!("),
        concat!("todo", "!("),
        concat!("FIX", "ME"),
    ];
    for path in sources() {
        let text = fs::read_to_string(&path).unwrap();
        for needle in needles {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", relative(&path)));
            }
        }
    }
    assert!(found.is_empty(), "leftovers: {found:?}");
}

#[test]
fn architecture_names_every_source_file() {
    let architecture = fs::read_to_string(workspace_root().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md exists");
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|path| !path.starts_with(workspace_root().join("tests/tests")))
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let parent = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let shown = match name.as_str() {
                "mod.rs" => format!("{parent}/"),
                "lib.rs" | "main.rs" => relative(path),
                _ => name,
            };
            !architecture.contains(&format!("`{shown}`"))
        })
        .map(|path| relative(&path))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}

/// What may sit at the repository root: what is there, plus what is planned (the Helm chart,
/// fuzz targets, the container image). A stray output file fails this test until it is
/// deleted, or added here with a reason to exist.
const ROOT_ENTRIES: [&str; 18] = [
    ".ci",
    ".dockerignore",
    ".gitignore",
    "ARCHITECTURE.md",
    "Cargo.lock",
    "Cargo.toml",
    "Dockerfile",
    "LICENSE",
    "README.md",
    "charts",
    "cli",
    "client",
    "dev",
    "fuzz",
    "proto",
    "rustfmt.toml",
    "server",
    "tests",
];

/// The names at the repository root that are part of the repository: those git tracks, or,
/// without git (a source archive), those on disk that the root `.gitignore` does not ignore.
fn root_entries() -> BTreeSet<String> {
    let root = workspace_root();
    let tracked = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "--cached"])
        .output()
        .ok()
        .filter(|output| output.status.success());
    if let Some(output) = tracked {
        return String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|path| path.split('/').next())
            .map(str::to_owned)
            .collect();
    }
    let ignored = fs::read_to_string(root.join(".gitignore")).unwrap_or_default();
    let is_ignored = |name: &str| {
        ignored.lines().map(str::trim).any(|pattern| {
            let pattern = pattern.strip_prefix('/').unwrap_or(pattern);
            match pattern.strip_prefix('*') {
                Some(suffix) => name.ends_with(suffix),
                None => pattern == name,
            }
        })
    };
    fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".git" && !is_ignored(name))
        .collect()
}

#[test]
fn the_repository_root_holds_only_allowed_entries() {
    let unexpected: Vec<String> = root_entries()
        .into_iter()
        .filter(|name| !ROOT_ENTRIES.contains(&name.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected at the repository root (delete them, or add them to ROOT_ENTRIES with a \
         reason): {unexpected:?}"
    );
}
