//! Tidy: the project's structural rules, checked on every test run.
//! - every Rust source opens with a `//!` module doc;
//! - `server/src/fsm/` does no I/O, reads no clock, takes no lock and draws no randomness;
//! - crate dependencies point one way (client and server → proto and tls; cli → client; never
//!   client → server);
//! - no debugging leftovers (the dbg and todo macros, fix-me markers) in the sources;
//! - every source file is named in ARCHITECTURE.md's code map;
//! - the repository root holds only the files and directories on its allowlist;
//! - no module imports in a circle (`import_circles`, a module being a file, applied to
//!   `client/src/recipes/`): a `mod.rs` is a module like any other, so one that re-exports
//!   or uses a child must not also serve that child items of its own;
//! - no function of product code is over 80 lines (`long_functions`, applied to `client/src`
//!   and `cli/src`) unless the line before it (doc comments aside) is a
//!   `// tidy: long function: <reason>` comment.

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
        "tls/src",
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
        ["coord-proto", "coord-tls", "coord-server", "coord-client"]
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
        internal(&manifest("tls")),
        Vec::<&str>::new(),
        "tls depends on no other crate of ours"
    );
    assert_eq!(
        internal(&manifest("client")),
        ["coord-proto", "coord-tls"],
        "client depends on proto and tls only, never on the server"
    );
    assert_eq!(
        internal(&manifest("server")),
        ["coord-proto", "coord-tls"],
        "server depends on proto and tls only"
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

/// The Rust files under `directory` (relative to the workspace root) whose code, outside
/// comments and literals, names `word` as a path segment (`word::...` or `use word`).
fn files_naming(directory: &str, word: &str) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&workspace_root().join(directory), &mut files);
    files
        .into_iter()
        .filter(|path| {
            let tokens = tokens(&fs::read_to_string(path).unwrap());
            tokens.windows(2).any(|pair| {
                pair[0].is(word) && (pair[1].is("::") || pair[1].is(";") || pair[1].is("{"))
            })
        })
        .map(|path| relative(&path))
        .collect()
}

#[test]
fn openraft_is_named_only_in_consensus_and_the_peer_service() {
    let outside: Vec<String> = files_naming("server/src", "openraft")
        .into_iter()
        .filter(|path| {
            !path.starts_with("server/src/consensus/") && path != "server/src/grpc/peer_service.rs"
        })
        .collect();
    assert!(
        outside.is_empty(),
        "openraft types must stay behind consensus/ (Coord's own types cross module \
         boundaries): {outside:?}"
    );
}

#[test]
fn rocksdb_is_named_only_in_storage() {
    let outside: Vec<String> = ["server/src", "client/src", "cli/src", "tests/src"]
        .into_iter()
        .flat_map(|directory| files_naming(directory, "rocksdb"))
        .filter(|path| !path.starts_with("server/src/storage/"))
        .collect();
    assert!(
        outside.is_empty(),
        "only storage/ may use RocksDB: {outside:?}"
    );
}

#[test]
fn architecture_names_every_source_file_by_its_full_path() {
    let architecture = fs::read_to_string(workspace_root().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md exists");
    let mut files = sources();
    files.push(workspace_root().join("proto/build.rs"));
    rust_files(&workspace_root().join("client/examples"), &mut files);
    let missing: Vec<String> = files
        .into_iter()
        .filter(|path| !path.starts_with(workspace_root().join("tests/tests")))
        .map(|path| relative(&path))
        .filter(|path| !architecture.contains(&format!("`{path}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name these files by their full path: {missing:?}"
    );
}

/// What may sit at the repository root: what is there, plus what is planned (the Helm chart,
/// fuzz targets, the container image). A stray output file fails this test until it is
/// deleted, or added here with a reason to exist.
const ROOT_ENTRIES: [&str; 19] = [
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
    "tls",
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

// ---------------------------------------------------------------------------------------------
// A small Rust lexer for the structural checks below: identifiers and punctuation with their
// line numbers; comments, string, character and number literals are skipped, so text inside
// them is never mistaken for code.

/// One token of Rust source: an identifier or keyword, `::`, or one punctuation character.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    /// 1-based.
    line: usize,
}

impl Token {
    fn is(&self, text: &str) -> bool {
        self.text == text
    }

    fn is_ident(&self) -> bool {
        self.text
            .starts_with(|first: char| first == '_' || first.is_alphabetic())
    }
}

/// Skips a string body from just after its opening quote; `raw` gives the number of closing
/// `#`s of a raw string, whose backslashes are not escapes.
fn skip_string(chars: &[char], mut index: usize, raw: Option<usize>, line: &mut usize) -> usize {
    while index < chars.len() {
        match chars[index] {
            '\n' => *line += 1,
            '\\' if raw.is_none() => {
                if chars.get(index + 1) == Some(&'\n') {
                    *line += 1;
                }
                index += 1;
            }
            '"' => {
                let hashes = raw.unwrap_or(0);
                let closing = (1..=hashes).all(|offset| chars.get(index + offset) == Some(&'#'));
                if closing {
                    return index + 1 + hashes;
                }
            }
            _ => {}
        }
        index += 1;
    }
    index
}

/// The tokens of `source`.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut index = 0;
    let is_ident_char = |character: char| character == '_' || character.is_alphanumeric();
    while index < chars.len() {
        let character = chars[index];
        let next = chars.get(index + 1).copied();
        if character == '\n' {
            line += 1;
            index += 1;
        } else if character.is_whitespace() {
            index += 1;
        } else if character == '/' && next == Some('/') {
            while index < chars.len() && chars[index] != '\n' {
                index += 1;
            }
        } else if character == '/' && next == Some('*') {
            let mut depth = 0;
            while index < chars.len() {
                if chars[index] == '/' && chars.get(index + 1) == Some(&'*') {
                    depth += 1;
                    index += 2;
                } else if chars[index] == '*' && chars.get(index + 1) == Some(&'/') {
                    depth -= 1;
                    index += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[index] == '\n' {
                        line += 1;
                    }
                    index += 1;
                }
            }
        } else if character == '"' {
            index = skip_string(&chars, index + 1, None, &mut line);
        } else if character == '\'' {
            // A character literal ('x', '\n', '\u{1F600}') or a lifetime or label ('a).
            if next == Some('\\') {
                // The escaped character may itself be a quote or a backslash: skip it first.
                index += 3;
                while index < chars.len() && chars[index] != '\'' {
                    index += 1;
                }
                index += 1;
            } else if chars.get(index + 2) == Some(&'\'') {
                index += 3;
            } else {
                index += 1;
                while index < chars.len() && is_ident_char(chars[index]) {
                    index += 1;
                }
            }
        } else if character.is_ascii_digit() {
            while index < chars.len()
                && (is_ident_char(chars[index])
                    || (chars[index] == '.'
                        && chars.get(index + 1).is_some_and(char::is_ascii_digit)))
            {
                index += 1;
            }
        } else if is_ident_char(character) {
            let start = index;
            while index < chars.len() && is_ident_char(chars[index]) {
                index += 1;
            }
            let word: String = chars[start..index].iter().collect();
            let mut hashes = 0;
            while chars.get(index + hashes) == Some(&'#') {
                hashes += 1;
            }
            let quoted = chars.get(index + hashes) == Some(&'"');
            if matches!(word.as_str(), "r" | "br" | "cr") && quoted {
                // A raw string: r"...", r#"..."#, br"...".
                index = skip_string(&chars, index + hashes + 1, Some(hashes), &mut line);
            } else if word == "r" && hashes == 1 {
                // A raw identifier: r#type is the identifier `type`.
                let start = index + 1;
                index = start;
                while index < chars.len() && is_ident_char(chars[index]) {
                    index += 1;
                }
                let text = chars[start..index].iter().collect();
                tokens.push(Token { text, line });
            } else if matches!(word.as_str(), "b" | "c") && hashes == 0 && quoted {
                index = skip_string(&chars, index + 1, None, &mut line);
            } else if word == "b" && chars.get(index) == Some(&'\'') {
                // A byte literal: b'x', b'\n' or b'\''.
                index += 1;
                while index < chars.len() && chars[index] != '\'' {
                    if chars[index] == '\\' {
                        index += 1;
                    }
                    index += 1;
                }
                index += 1;
            } else {
                tokens.push(Token { text: word, line });
            }
        } else if character == ':' && next == Some(':') {
            tokens.push(Token {
                text: "::".into(),
                line,
            });
            index += 2;
        } else {
            tokens.push(Token {
                text: character.to_string(),
                line,
            });
            index += 1;
        }
    }
    tokens
}

// ---------------------------------------------------------------------------------------------
// The module import graph: a module is a file; an edge runs from a file to every file whose
// module it names in a `use` declaration or a path (`super::x`, `crate::a::b`, `self::c`, or
// a child module declared with `mod`). `mod` declarations only say which children a module
// has; declaring a child is not an import of it.

/// The module path of every Rust file under `directory` in the crate whose root file is
/// `crate_root` (`lib.rs` or `main.rs`): `a/b.rs` and `a/b/mod.rs` are `a::b`. Other crate
/// roots beside it (a `main.rs` next to `lib.rs`, `bin/`) are separate crates and left out.
fn module_files(directory: &Path, crate_root: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let crate_dir = crate_root
        .parent()
        .expect("a crate root lives in a directory");
    let mut files = Vec::new();
    rust_files(directory, &mut files);
    files.sort();
    let mut modules = Vec::new();
    for file in files {
        let in_crate = file
            .strip_prefix(crate_dir)
            .expect("the directory is in the crate");
        let in_crate_dir = in_crate.components().count() == 1;
        let name = in_crate.file_name().unwrap().to_string_lossy().into_owned();
        let other_root = in_crate_dir && (name == "main.rs" || name == "lib.rs");
        if file != crate_root && (other_root || in_crate.starts_with("bin")) {
            continue;
        }
        let mut module: Vec<String> = in_crate
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect();
        let last = module.pop().unwrap();
        if file != crate_root && last != "mod.rs" {
            module.push(last.trim_end_matches(".rs").to_owned());
        }
        modules.push((module, file));
    }
    modules
}

/// Reads one `use` tree starting at `tokens[*index]`, appending every path it imports (a glob
/// imports its module; `a::{self, b}` imports `a` and `a::b`). Leaves `*index` after the tree.
fn use_tree(tokens: &[Token], index: &mut usize, prefix: &[String], paths: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(token) = tokens.get(*index) {
        if token.is("::") {
            *index += 1;
        } else if token.is("*") {
            *index += 1;
            paths.push(path);
            return;
        } else if token.is("{") {
            *index += 1;
            while let Some(token) = tokens.get(*index) {
                if token.is("}") {
                    *index += 1;
                    break;
                }
                if token.is(",") {
                    *index += 1;
                    continue;
                }
                use_tree(tokens, index, &path, paths);
            }
            return;
        } else if token.is_ident() {
            *index += 1;
            if token.is("self") && !path.is_empty() {
                // `a::{self}` names `a` itself.
            } else {
                path.push(token.text.clone());
            }
            if tokens.get(*index).is_some_and(|next| next.is("as")) {
                *index += 2;
            }
            if !tokens.get(*index).is_some_and(|next| next.is("::")) {
                paths.push(path);
                return;
            }
        } else {
            return;
        }
    }
}

/// The module paths that `tokens` (one file, of module `module`) name, with the line where
/// each is named, made absolute from the crate root. A bare path (`x::y`) counts when `x` is
/// a child module the file declares (`mod x;`); otherwise it names another crate.
fn named_paths(tokens: &[Token], module: &[String]) -> Vec<(usize, Vec<String>)> {
    let children: BTreeSet<&str> = tokens
        .windows(3)
        .filter(|window| window[0].is("mod") && window[1].is_ident() && window[2].is(";"))
        .map(|window| window[1].text.as_str())
        .collect();
    // The inline modules (`mod tests { ... }`) around the current token, by brace depth.
    let mut blocks: Vec<Option<String>> = Vec::new();
    let mut pending_module: Option<String> = None;
    let mut found = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        let token = &tokens[index];
        let inline: Vec<String> = blocks.iter().flatten().cloned().collect();
        let current: Vec<String> = module.iter().cloned().chain(inline.clone()).collect();
        let previous = index.checked_sub(1).map(|before| &tokens[before]);
        let next = tokens.get(index + 1);
        let mut named: Vec<Vec<String>> = Vec::new();
        if token.is("mod") && next.is_some_and(Token::is_ident) {
            let opens = tokens.get(index + 2).is_some_and(|after| after.is("{"));
            pending_module = opens.then(|| next.unwrap().text.clone());
            index += 2;
            continue;
        } else if token.is("{") {
            blocks.push(pending_module.take());
        } else if token.is("}") {
            blocks.pop();
        } else if token.is("use") {
            index += 1;
            use_tree(tokens, &mut index, &[], &mut named);
        } else if token.is_ident()
            && next.is_some_and(|next| next.is("::"))
            && !previous.is_some_and(|previous| previous.is("::") || previous.is("."))
        {
            let mut path = vec![token.text.clone()];
            let mut after = index + 1;
            while tokens.get(after).is_some_and(|sep| sep.is("::"))
                && tokens.get(after + 1).is_some_and(Token::is_ident)
            {
                path.push(tokens[after + 1].text.clone());
                after += 2;
            }
            named.push(path);
        }
        for path in named {
            let (base, rest): (Vec<String>, &[String]) = match path[0].as_str() {
                "crate" => (Vec::new(), &path[1..]),
                "self" => (current.clone(), &path[1..]),
                "super" => {
                    let supers = path.iter().take_while(|part| *part == "super").count();
                    let Some(kept) = current.len().checked_sub(supers) else {
                        continue;
                    };
                    (current[..kept].to_vec(), &path[supers..])
                }
                // A bare path starts at a child module of the file, or names another crate.
                first if inline.is_empty() && children.contains(first) => {
                    (current.clone(), &path[..])
                }
                _ => continue,
            };
            let absolute = base.into_iter().chain(rest.iter().cloned()).collect();
            found.push((token.line, absolute));
        }
        index += 1;
    }
    found
}

/// Import circles among the files under `directory` of the crate rooted at `crate_root`: for
/// each group of files that import one another, its members and one circle through them, as
/// `a.rs:LINE → b.rs:LINE → ... → a.rs` (the line where each file names the next). Empty
/// when the import graph has no circle.
fn import_circles(directory: &Path, crate_root: &Path) -> Vec<String> {
    let crate_dir = crate_root.parent().unwrap();
    let modules = module_files(directory, crate_root);
    // edges[from] = (to, line of the first mention)
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); modules.len()];
    for (from, (module, file)) in modules.iter().enumerate() {
        let text = fs::read_to_string(file).unwrap();
        for (line, path) in named_paths(&tokens(&text), module) {
            let target = (0..=path.len()).rev().find_map(|length| {
                modules
                    .iter()
                    .position(|(candidate, _)| candidate[..] == path[..length])
            });
            if let Some(to) = target.filter(|to| *to != from) {
                if !edges[from].iter().any(|(known, _)| *known == to) {
                    edges[from].push((to, line));
                }
            }
        }
    }
    let name = |index: usize| {
        let path = &modules[index].1;
        path.strip_prefix(crate_dir).unwrap().display().to_string()
    };
    strongly_connected(&edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let members: Vec<String> = component.iter().map(|member| name(*member)).collect();
            let mut text = format!(
                "{} files import one another: {}; one circle: ",
                members.len(),
                members.join(", ")
            );
            let cycle = cycle_through(&edges, &component);
            for pair in cycle.windows(2) {
                let line = edges[pair[0]]
                    .iter()
                    .find(|(to, _)| *to == pair[1])
                    .unwrap()
                    .1;
                text.push_str(&format!("{}:{line} → ", name(pair[0])));
            }
            text.push_str(&name(cycle[0]));
            text
        })
        .collect()
}

/// The strongly connected components of a directed graph (Tarjan's algorithm).
fn strongly_connected(edges: &[Vec<(usize, usize)>]) -> Vec<Vec<usize>> {
    struct Search<'a> {
        edges: &'a [Vec<(usize, usize)>],
        order: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(search: &mut Search<'_>, node: usize) {
        search.order[node] = Some(search.next);
        search.low[node] = search.next;
        search.next += 1;
        search.stack.push(node);
        search.on_stack[node] = true;
        for &(to, _) in &search.edges[node] {
            match search.order[to] {
                None => {
                    visit(search, to);
                    search.low[node] = search.low[node].min(search.low[to]);
                }
                Some(order) if search.on_stack[to] => {
                    search.low[node] = search.low[node].min(order);
                }
                Some(_) => {}
            }
        }
        if Some(search.low[node]) == search.order[node] {
            let mut component = Vec::new();
            while let Some(member) = search.stack.pop() {
                search.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            component.sort_unstable();
            search.components.push(component);
        }
    }
    let count = edges.len();
    let mut search = Search {
        edges,
        order: vec![None; count],
        low: vec![0; count],
        stack: Vec::new(),
        on_stack: vec![false; count],
        next: 0,
        components: Vec::new(),
    };
    for node in 0..count {
        if search.order[node].is_none() {
            visit(&mut search, node);
        }
    }
    search.components
}

/// A shortest cycle through the first node of `component` (a strongly connected component of
/// more than one node), as its nodes with the first repeated at the end.
fn cycle_through(edges: &[Vec<(usize, usize)>], component: &[usize]) -> Vec<usize> {
    let start = component[0];
    let mut came_from: Vec<Option<usize>> = vec![None; edges.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &(to, _) in &edges[node] {
            if !component.contains(&to) {
                continue;
            }
            if to == start {
                let mut cycle = vec![start, node];
                let mut back = node;
                while let Some(before) = came_from[back] {
                    cycle.push(before);
                    back = before;
                }
                cycle.push(start);
                cycle.dedup();
                cycle.reverse();
                return cycle;
            }
            if came_from[to].is_none() && to != start {
                came_from[to] = Some(node);
                queue.push_back(to);
            }
        }
    }
    unreachable!("a strongly connected component of two or more nodes has a cycle")
}

#[test]
fn the_server_imports_no_module_in_a_circle() {
    let root = workspace_root();
    let circles = import_circles(&root.join("server/src"), &root.join("server/src/lib.rs"));
    assert!(
        circles.is_empty(),
        "server/src/ imports in a circle (move what both sides need into a module below \
         them; a child imports its siblings, never its mod.rs): {circles:#?}"
    );
}

#[test]
fn the_recipes_import_no_module_in_a_circle() {
    let root = workspace_root();
    let circles = import_circles(
        &root.join("client/src/recipes"),
        &root.join("client/src/lib.rs"),
    );
    assert!(
        circles.is_empty(),
        "client/src/recipes/ imports in a circle (move what both sides need into a module \
         below them): {circles:#?}"
    );
}

/// A crate directory holding `files` (path, text), for testing the checks themselves.
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = directory.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    directory
}

#[test]
fn the_lexer_skips_comments_and_literals() {
    let source = r####"
        /* outer /* nested { */ still a comment } */
        let text = r#"a "quoted" { brace"#; let bytes = b"{"; let raw_bytes = br##"}"##;
        let characters = ['{', '\'', '\\', '\u{7b}']; let byte = b'\'';
        fn r#match<'a>(input: &'a str) -> &'a str { input } // }
    "####;
    let texts: Vec<String> = tokens(source).into_iter().map(|token| token.text).collect();
    let braces = texts
        .iter()
        .filter(|text| *text == "{" || *text == "}")
        .count();
    assert_eq!(
        braces, 2,
        "only the function body's braces are code: {texts:?}"
    );
    assert!(
        texts.contains(&"match".to_owned()),
        "a raw identifier is an identifier"
    );
    let lines: Vec<usize> = tokens(source).iter().map(|token| token.line).collect();
    assert_eq!((lines[0], *lines.last().unwrap()), (3, 5));
}

#[test]
fn the_circle_check_follows_uses_and_paths_but_not_comments_strings_or_mod_declarations() {
    let mod_rs = "mod x;\nmod y;\nmod z;\npub use x::X;\n#[cfg(test)]\nmod tests {\n    \
                  use super::*;\n}\n";
    let crate_dir = fixture(&[
        ("lib.rs", "mod a;\n"),
        ("a/mod.rs", mod_rs),
        ("a/x.rs", "use super::y::Y;\npub struct X(pub Y);\n"),
        (
            "a/y.rs",
            "// use super::z::Z;\npub struct Y;\nfn f() -> &'static str {\n    \
             \"use super::x::X;\"\n}\nfn g() -> char {\n    '{'\n}\n",
        ),
        (
            "a/z.rs",
            "pub fn make() -> crate::a::x::X {\n    crate::a::x::X(super::y::Y)\n}\n",
        ),
    ]);
    let check = || {
        import_circles(
            &crate_dir.path().join("a"),
            &crate_dir.path().join("lib.rs"),
        )
    };
    assert_eq!(check(), Vec::<String>::new());

    // y naming z in a path closes x → y → z → x.
    let y = "pub struct Y;\npub fn h() {\n    let _ = super::z::make();\n}\n";
    fs::write(crate_dir.path().join("a/y.rs"), y).unwrap();
    let circles = check();
    assert_eq!(circles.len(), 1, "{circles:#?}");
    assert!(
        circles[0].starts_with("3 files import one another: a/x.rs, a/y.rs, a/z.rs; one circle: "),
        "{circles:#?}"
    );
    assert!(
        circles[0].contains("a/y.rs:3 → a/z.rs:1 → "),
        "{circles:#?}"
    );

    // A child taking an item from the mod.rs that re-exports it is a circle too.
    fs::write(crate_dir.path().join("a/y.rs"), "pub struct Y;\n").unwrap();
    let serving = format!("{mod_rs}pub struct Shared;\n");
    fs::write(crate_dir.path().join("a/mod.rs"), serving).unwrap();
    let x = "use super::{y::Y, Shared};\npub struct X(pub Y, pub Shared);\n";
    fs::write(crate_dir.path().join("a/x.rs"), x).unwrap();
    let circles = check();
    assert_eq!(circles.len(), 1, "{circles:#?}");
    assert!(
        circles[0].starts_with("2 files import one another: a/mod.rs, a/x.rs;"),
        "{circles:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Function length: a function a reader cannot see whole is split, or says why it is not.

/// The longest function, in lines from `fn` to its closing brace, allowed without a reason.
const FUNCTION_LINES_MAX: usize = 80;
/// What the comment before a longer function starts with; a reason must follow.
const LONG_FUNCTION_MARKER: &str = "// tidy: long function:";

/// The index of the opening bracket (`open`) that matches the closing one at `close`.
fn opening_bracket(tokens: &[Token], close: usize, (open, closing): (&str, &str)) -> usize {
    let mut depth = 0;
    let mut index = close;
    loop {
        if tokens[index].is(closing) {
            depth += 1;
        } else if tokens[index].is(open) {
            depth -= 1;
            if depth == 0 {
                return index;
            }
        }
        index = index.checked_sub(1).expect("brackets are balanced");
    }
}

/// The attributes directly before the item whose keyword is at `tokens[index]`, each as its
/// tokens' texts joined (`cfg(test)`, `tokio::test`), and the index of the item's first token
/// (its first attribute or qualifier).
fn item_attributes(tokens: &[Token], index: usize) -> (Vec<String>, usize) {
    let qualifiers = ["pub", "async", "const", "unsafe", "extern", "default"];
    let mut attributes = Vec::new();
    let mut start = index;
    while let Some(before) = start.checked_sub(1) {
        let token = &tokens[before];
        if qualifiers.contains(&token.text.as_str()) {
            start = before;
        } else if token.is(")") {
            // pub(crate), pub(super), pub(in path)
            let open = opening_bracket(tokens, before, ("(", ")"));
            if open == 0 || !tokens[open - 1].is("pub") {
                break;
            }
            start = open;
        } else if token.is("]") {
            let open = opening_bracket(tokens, before, ("[", "]"));
            if open == 0 || !tokens[open - 1].is("#") {
                break;
            }
            let text: Vec<&str> = tokens[open + 1..before]
                .iter()
                .map(|token| token.text.as_str())
                .collect();
            attributes.push(text.concat());
            start = open - 1;
        } else {
            break;
        }
    }
    (attributes, start)
}

/// Whether an attribute marks test code: `cfg(test)`, `test`, `tokio::test`.
fn is_test_attribute(attribute: &str) -> bool {
    attribute == "cfg(test)" || attribute == "test" || attribute.ends_with("::test")
}

/// For each `{` token, the index of its matching `}`.
fn matching_braces(tokens: &[Token]) -> Vec<Option<usize>> {
    let mut closing = vec![None; tokens.len()];
    let mut open = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        if token.is("{") {
            open.push(index);
        } else if token.is("}") {
            if let Some(start) = open.pop() {
                closing[start] = Some(index);
            }
        }
    }
    closing
}

/// The index of the `{` that opens the body of the item starting at `from`, or `None` if the
/// item ends with `;` first (a declaration without a body).
fn body_start(tokens: &[Token], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(from) {
        match token.text.as_str() {
            "(" | "[" => depth += 1,
            ")" | "]" => depth = depth.saturating_sub(1),
            "{" if depth == 0 => return Some(index),
            ";" if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

/// The files among `files` that hold modules declared `#[cfg(test)] mod name;` by another of
/// them (a test module kept in its own file).
fn test_module_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_files = BTreeSet::new();
    for file in files {
        let tokens = tokens(&fs::read_to_string(file).unwrap());
        let name = file.file_name().unwrap().to_string_lossy();
        let parent = file.parent().unwrap();
        // Where this file's child modules live: beside a mod.rs, lib.rs or main.rs, or in the
        // directory named after this file.
        let children_dir = match name.as_ref() {
            "mod.rs" | "lib.rs" | "main.rs" => parent.to_path_buf(),
            other => parent.join(other.trim_end_matches(".rs")),
        };
        for index in 0..tokens.len().saturating_sub(2) {
            let declares = tokens[index].is("mod")
                && tokens[index + 1].is_ident()
                && tokens[index + 2].is(";");
            if !declares {
                continue;
            }
            let (attributes, _) = item_attributes(&tokens, index);
            if attributes.iter().any(|attribute| attribute == "cfg(test)") {
                let child = &tokens[index + 1].text;
                test_files.insert(children_dir.join(format!("{child}.rs")));
                test_files.insert(children_dir.join(child).join("mod.rs"));
            }
        }
    }
    test_files
}

/// Functions of the product code in the Rust files under `directory` (test modules, inline or
/// in their own files, and test functions left out) longer than `lines_max`, from `fn` to the closing brace, unless the
/// nearest line above the item (its attributes included) that is not a doc comment starts
/// with `// tidy: long function:` and gives a reason. Each as `path:line: fn name: N lines`.
fn long_functions(directory: &Path, lines_max: usize) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(directory, &mut files);
    files.sort();
    let test_files = test_module_files(&files);
    let mut found = Vec::new();
    for file in files {
        if test_files.contains(&file) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let tokens = tokens(&text);
        let closing = matching_braces(&tokens);
        // Token ranges of test items: `#[cfg(test)]` modules, `#[test]` functions.
        let mut test_ranges = Vec::new();
        for (index, token) in tokens.iter().enumerate() {
            if !(token.is("mod") || token.is("fn") || token.is("impl")) {
                continue;
            }
            let (attributes, start) = item_attributes(&tokens, index);
            if attributes
                .iter()
                .any(|attribute| is_test_attribute(attribute))
            {
                if let Some(open) = body_start(&tokens, index) {
                    test_ranges.push(start..=closing[open].unwrap_or(tokens.len()));
                }
            }
        }
        for (index, token) in tokens.iter().enumerate() {
            let named = tokens.get(index + 1).is_some_and(Token::is_ident);
            if !token.is("fn") || !named || test_ranges.iter().any(|range| range.contains(&index)) {
                continue;
            }
            let Some(open) = body_start(&tokens, index) else {
                continue;
            };
            let Some(close) = closing[open] else {
                continue;
            };
            let length = tokens[close].line - token.line + 1;
            if length <= lines_max {
                continue;
            }
            let (_, start) = item_attributes(&tokens, index);
            let reason = lines[..tokens[start].line - 1]
                .iter()
                .rev()
                .map(|line| line.trim())
                .find(|line| !line.starts_with("///"))
                .and_then(|line| line.strip_prefix(LONG_FUNCTION_MARKER))
                .is_some_and(|reason| !reason.trim().is_empty());
            if !reason {
                let name = &tokens[index + 1].text;
                let shown = file.strip_prefix(workspace_root()).unwrap_or(&file);
                found.push(format!(
                    "{}:{}: fn {name}: {length} lines",
                    shown.display(),
                    token.line
                ));
            }
        }
    }
    found
}

#[test]
fn product_functions_are_short_or_say_why() {
    let root = workspace_root();
    let long: Vec<String> = ["client/src", "cli/src", "server/src", "proto/src"]
        .into_iter()
        .flat_map(|directory| long_functions(&root.join(directory), FUNCTION_LINES_MAX))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {FUNCTION_LINES_MAX} lines: split them, or put a \
         `{LONG_FUNCTION_MARKER} <reason>` comment on the line before: {long:#?}"
    );
}

#[test]
fn the_length_check_counts_product_functions_and_accepts_a_stated_reason() {
    // With its first and last lines, `function` is exactly at the limit; `longer` one over.
    let body = "    let _ = 1;\n".repeat(FUNCTION_LINES_MAX - 2);
    let function = |name: &str| format!("fn {name}() {{\n{body}}}\n");
    let longer = |name: &str| format!("fn {name}() {{\n{body}    let _ = 2;\n}}\n");
    let source = [
        format!("//! A fixture.\n{}", function("at_the_limit")),
        format!("/// Over the limit.\n#[inline]\n{}", longer("over")),
        format!(
            "// {} the fixture needs one\n/// Docs.\n{}",
            "tidy: long function:",
            longer("excused")
        ),
        format!("{}\n{}", LONG_FUNCTION_MARKER, longer("no_reason")),
        "trait Shape {\n    fn area(&self) -> f64;\n}\n".to_owned(),
        format!("#[test]\n{}", longer("a_test")),
        format!("#[cfg(test)]\nmod tests {{\n{}}}\n", longer("helper")),
        "#[cfg(test)]\nmod model_tests;\n".to_owned(),
    ]
    .concat();
    let crate_dir = fixture(&[
        ("lib.rs", source.as_str()),
        ("model_tests.rs", longer("in_a_test_file").as_str()),
    ]);
    let found = long_functions(crate_dir.path(), FUNCTION_LINES_MAX);
    let names: Vec<&str> = found
        .iter()
        .map(|line| line.split(": fn ").nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            format!("over: {} lines", FUNCTION_LINES_MAX + 1),
            format!("no_reason: {} lines", FUNCTION_LINES_MAX + 1)
        ]
    );
}
