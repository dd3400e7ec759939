//! Parses a txn from text: a small line-oriented syntax, or JSON.
//!
//! Line syntax, one clause per line:
//! ```text
//! # a comment: a line whose first non-blank character is `#`
//! compare version /config = 3
//! compare value /color = #ff0000
//! compare exists /lock
//! compare missing /lock
//! fence /locks/db 1042
//! then set /config new value
//! then create /audit/entry- data --sequential
//! then create --sequential /audit/entry- data
//! then delete /old -r
//! then get /config
//! else get /config
//! ```
//! Compare targets: `version`, `create_revision`, `mod_revision`, `value`; operators: `=`,
//! `!=`, `<`, `>`. Keywords, paths and operators are separated by blanks.
//!
//! Values round-trip: a value is the rest of the line after the word before it (the path, or
//! the compare operator) and one blank, byte for byte, `#`, inner, leading and trailing blanks
//! included. A value that starts with `"` is a JSON string instead (`"  padded  "`,
//! `"two\nlines"`, `"\"quoted\""`), and nothing but blanks may follow it. `create`'s flags
//! (`--sequential`, `--container`, `--parents`) go before the path, or after the value at the
//! end of the line (quote a value that itself ends with such a word).
//!
//! JSON: `{"compares": [{"path": "/a", "target": "version", "op": "=", "value": 3}],
//! "fences": [{"path": "/lock", "token": 7}], "success": [{"op": "set", "path": "/a",
//! "data": "x"}], "failure": []}`.
//!
//! This file is also compiled into the `txn_script` fuzz target (`fuzz/`), so it uses no other
//! module of coordctl.

use anyhow::{anyhow, bail, Context};
use coord_client::{Compare, CompareOp, CreateOptions, NodeKind, Op, Txn};
use serde::Deserialize;

/// Parses `text` as JSON when it starts with `{`, else as line syntax.
pub fn parse(text: &str) -> anyhow::Result<Txn> {
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_lines(text)
    }
}

fn compare_op(text: &str) -> anyhow::Result<CompareOp> {
    Ok(match text {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        other => bail!("unknown compare operator {other:?}: use =, !=, < or >"),
    })
}

fn compare(target: &str, path: &str, op: CompareOp, value: &str) -> anyhow::Result<Compare> {
    let number = || {
        value
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{target} needs a number, got {value:?}"))
    };
    Ok(match target {
        "version" => Compare::version(path, op, number()?),
        "create_revision" => Compare::create_revision(path, op, number()?),
        "mod_revision" => Compare::mod_revision(path, op, number()?),
        "value" => Compare::value(path, op, value.as_bytes().to_vec()),
        other => bail!(
            "unknown compare target {other:?}: use version, create_revision, mod_revision or value"
        ),
    })
}

/// Splits `text` after its first word (leading blanks skipped): the word, and the rest after
/// the one blank that ended it. `None` when `text` is blank.
fn next_word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    match text
        .char_indices()
        .find(|(_, character)| character.is_whitespace())
    {
        Some((end, blank)) => Some((&text[..end], &text[end + blank.len_utf8()..])),
        None => Some((text, "")),
    }
}

/// Like `next_word`, but a missing word is an error naming `what`.
fn word<'a>(text: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    next_word(text).with_context(|| format!("expected {what}"))
}

/// Fails unless only blanks are left on the line.
fn nothing_after(rest: &str, what: &str) -> anyhow::Result<()> {
    if rest.trim().is_empty() {
        return Ok(());
    }
    bail!(
        "unexpected {:?} after {what} (`#` starts a comment only at the start of a line)",
        rest.trim()
    )
}

/// A value as written after its separating blank: verbatim, or a JSON string if it starts
/// with `"`, then only blanks.
fn value(text: &str) -> anyhow::Result<String> {
    let (value, rest) = leading_value(text)?;
    nothing_after(rest, "the quoted value")?;
    Ok(value)
}

/// The value at the start of `text` and what follows it: a JSON string and the rest of the
/// line if `text` starts with `"`, else all of `text` and nothing.
fn leading_value(text: &str) -> anyhow::Result<(String, &str)> {
    if !text.starts_with('"') {
        return Ok((text.to_owned(), ""));
    }
    let mut strings = serde_json::Deserializer::from_str(text).into_iter::<String>();
    match strings.next() {
        Some(Ok(quoted)) => Ok((quoted, &text[strings.byte_offset()..])),
        _ => bail!("a value that starts with '\"' must be a JSON string, such as \"a  b\""),
    }
}

/// `create [FLAGS] PATH [VALUE] [FLAGS]`, given what follows `create`.
fn create_op(rest: &str) -> anyhow::Result<Op> {
    let mut options = CreateOptions::default();
    let mut flag = |word: &str| -> bool {
        match word {
            "--sequential" => options.sequential = true,
            "--container" => options.kind = NodeKind::Container,
            "--parents" => options.make_parents = true,
            _ => return false,
        }
        true
    };
    let (mut path, mut rest) = word(rest, "a path")?;
    while flag(path) {
        (path, rest) = word(rest, "a path")?;
    }
    let (mut data, mut after) = leading_value(rest)?;
    if !rest.starts_with('"') {
        // Unquoted: flags at the end of the line are taken off the value.
        while let Some((before, last)) = data.trim_end().rsplit_once(char::is_whitespace) {
            if !flag(last) {
                break;
            }
            data = before.trim_end().to_owned();
        }
        if flag(data.trim()) {
            data.clear();
        }
    }
    while let Some((word, rest)) = next_word(after) {
        if !flag(word) {
            bail!("unexpected {word:?} after the quoted value: only create flags may follow it");
        }
        after = rest;
    }
    Ok(Op::create(path, data.into_bytes(), &options))
}

/// An operation, given what follows `then` or `else`.
fn op(text: &str) -> anyhow::Result<Op> {
    let (kind, rest) = word(text, "an operation: get, set, create or delete")?;
    match kind {
        "get" => {
            let (path, rest) = word(rest, "a path")?;
            nothing_after(rest, "the path")?;
            Ok(Op::get(path))
        }
        "delete" | "rm" => {
            let (path, mut rest) = word(rest, "a path")?;
            let mut recursive = false;
            while let Some((flag, after)) = next_word(rest) {
                match flag {
                    "-r" | "--recursive" => recursive = true,
                    other => bail!("unknown delete flag {other:?}: use -r"),
                }
                rest = after;
            }
            Ok(Op::delete(path, None, recursive))
        }
        "set" => {
            let (path, rest) = word(rest, "a path")?;
            Ok(Op::set(path, value(rest)?.into_bytes(), None))
        }
        "create" => create_op(rest),
        other => bail!("unknown operation {other:?}: use get, set, create or delete"),
    }
}

/// `compare TARGET PATH OP VALUE`, `compare exists PATH` or `compare missing PATH`, given
/// what follows `compare`.
fn compare_clause(text: &str) -> anyhow::Result<Compare> {
    let (target, rest) = word(text, "a compare target")?;
    let (path, rest) = word(rest, "a path")?;
    match target {
        "exists" | "missing" => {
            nothing_after(rest, "the path")?;
            Ok(if target == "exists" {
                Compare::exists(path)
            } else {
                Compare::missing(path)
            })
        }
        _ => {
            let (op, rest) = word(rest, "an operator: =, !=, < or >")?;
            compare(target, path, compare_op(op)?, &value(rest)?)
        }
    }
}

/// One clause added to `txn`.
fn clause(txn: Txn, line: &str) -> anyhow::Result<Txn> {
    let Some((keyword, rest)) = next_word(line) else {
        return Ok(txn);
    };
    match keyword {
        "compare" => Ok(txn.when(compare_clause(rest)?)),
        "fence" => {
            let (path, rest) = word(rest, "a path")?;
            let (token, rest) = word(rest, "a token")?;
            nothing_after(rest, "the token")?;
            let token = token
                .parse()
                .with_context(|| format!("fence token {token:?} is not a number"))?;
            Ok(txn.fence(path, token))
        }
        "then" => Ok(txn.then(op(rest)?)),
        "else" => Ok(txn.otherwise(op(rest)?)),
        _ => Err(anyhow!("expected compare, fence, then or else")),
    }
}

fn parse_lines(text: &str) -> anyhow::Result<Txn> {
    let mut txn = Txn::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        txn = clause(txn, line).with_context(|| format!("txn line {}: {line:?}", number + 1))?;
    }
    Ok(txn)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTxn {
    #[serde(default)]
    compares: Vec<JsonCompare>,
    #[serde(default)]
    fences: Vec<JsonFence>,
    #[serde(default)]
    success: Vec<JsonOp>,
    #[serde(default)]
    failure: Vec<JsonOp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCompare {
    path: String,
    target: String,
    #[serde(default = "equal")]
    op: String,
    #[serde(default)]
    value: serde_json::Value,
}

fn equal() -> String {
    "=".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFence {
    path: String,
    token: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOp {
    op: String,
    path: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    expected_version: Option<u64>,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    sequential: bool,
    #[serde(default)]
    container: bool,
    #[serde(default)]
    parents: bool,
}

fn json_op(op: JsonOp) -> anyhow::Result<Op> {
    Ok(match op.op.as_str() {
        "get" => Op::get(&op.path),
        "set" => Op::set(&op.path, op.data.into_bytes(), op.expected_version),
        "delete" => Op::delete(&op.path, op.expected_version, op.recursive),
        "create" => {
            let options = CreateOptions {
                kind: if op.container {
                    NodeKind::Container
                } else {
                    NodeKind::Persistent
                },
                sequential: op.sequential,
                make_parents: op.parents,
                session_id: 0,
            };
            Op::create(&op.path, op.data.into_bytes(), &options)
        }
        other => bail!("unknown operation {other:?}: use get, set, create or delete"),
    })
}

fn parse_json(text: &str) -> anyhow::Result<Txn> {
    let parsed: JsonTxn = serde_json::from_str(text).context("txn JSON is malformed")?;
    let mut txn = Txn::new();
    for (index, item) in parsed.compares.into_iter().enumerate() {
        let op = compare_op(&item.op).with_context(|| format!("compares[{index}]"))?;
        let compare = match item.target.as_str() {
            "exists" => match item.value {
                serde_json::Value::Bool(false) => Compare::missing(&item.path),
                _ => Compare::exists(&item.path),
            },
            target => {
                let value = match &item.value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                compare(target, &item.path, op, &value)
                    .with_context(|| format!("compares[{index}]"))?
            }
        };
        txn = txn.when(compare);
    }
    for fence in parsed.fences {
        txn = txn.fence(&fence.path, fence.token);
    }
    for (index, op) in parsed.success.into_iter().enumerate() {
        txn = txn.then(json_op(op).with_context(|| format!("success[{index}]"))?);
    }
    for (index, op) in parsed.failure.into_iter().enumerate() {
        txn = txn.otherwise(json_op(op).with_context(|| format!("failure[{index}]"))?);
    }
    Ok(txn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_json_syntax_build_the_same_txn() {
        let lines = "compare version /a = 3\nfence /lock 7\nthen set /a new value\nelse get /a\n";
        let json = r#"{"compares":[{"path":"/a","target":"version","op":"=","value":3}],
            "fences":[{"path":"/lock","token":7}],
            "success":[{"op":"set","path":"/a","data":"new value"}],
            "failure":[{"op":"get","path":"/a"}]}"#;
        assert_eq!(parse(lines).unwrap(), parse(json).unwrap());
    }

    /// The txn that sets `/a` to `value`.
    fn set_a(value: &str) -> Txn {
        Txn::new().then(Op::set("/a", value.as_bytes().to_vec(), None))
    }

    #[test]
    fn values_round_trip_byte_for_byte() {
        for value in [
            "#ff0000",
            "a # not a comment",
            "two  spaces   inside",
            "  leading and trailing  ",
            "tab\tinside",
            "--sequential",
            "",
        ] {
            let script = format!("then set /a {value}\n");
            assert_eq!(parse(&script).unwrap(), set_a(value), "{script:?}");
        }
        // After one separating blank, further blanks belong to the value.
        assert_eq!(parse("then set /a  x").unwrap(), set_a(" x"));
        // Blanks between the words before the value are free.
        assert_eq!(parse("  then\tset   /a x").unwrap(), set_a("x"));
    }

    #[test]
    fn a_quoted_value_is_a_json_string() {
        assert_eq!(
            parse(r#"then set /a "  padded  ""#).unwrap(),
            set_a("  padded  ")
        );
        assert_eq!(
            parse(r#"then set /a "two\nlines""#).unwrap(),
            set_a("two\nlines")
        );
        assert_eq!(
            parse(r#"then set /a "\"quoted\"" "#).unwrap(),
            set_a("\"quoted\"")
        );
        assert_eq!(
            parse(r##"then set /a "# not a comment""##).unwrap(),
            set_a("# not a comment")
        );
        assert!(parse(r#"then set /a "unterminated"#).is_err());
        assert!(parse(r#"then set /a "x" trailing"#).is_err());
    }

    #[test]
    fn a_comment_is_a_line_that_starts_with_a_hash() {
        let script = "# set the color\n   # indented comment\n\nthen set /color #ff0000\n";
        let expected = Txn::new().then(Op::set("/color", b"#ff0000".to_vec(), None));
        assert_eq!(parse(script).unwrap(), expected);
        // After a word that takes no value, `#` is not a comment but a mistake.
        let error = parse("compare exists /lock # held?").unwrap_err();
        assert!(
            format!("{error:#}").contains("only at the start of a line"),
            "{error:#}"
        );
        assert!(parse("compare version /a = 3 # three").is_err());
        assert!(parse("then get /a # read").is_err());
    }

    #[test]
    fn compare_values_keep_their_blanks() {
        let script = "compare value /a  =  two  spaces \nthen get /a";
        let expected = Txn::new()
            .when(Compare::value(
                "/a",
                CompareOp::Equal,
                b" two  spaces ".to_vec(),
            ))
            .then(Op::get("/a"));
        assert_eq!(parse(script).unwrap(), expected);
        let quoted = "compare value /a != \"#1 \"";
        let expected = Txn::new().when(Compare::value("/a", CompareOp::NotEqual, b"#1 ".to_vec()));
        assert_eq!(parse(quoted).unwrap(), expected);
        let number = "compare version  /a   =   3";
        let expected = Txn::new().when(Compare::version("/a", CompareOp::Equal, 3));
        assert_eq!(parse(number).unwrap(), expected);
    }

    #[test]
    fn create_flags_go_before_the_path_or_at_the_end() {
        let options = CreateOptions {
            sequential: true,
            make_parents: true,
            ..CreateOptions::default()
        };
        let expected = Txn::new().then(Op::create("/jobs/job-", b"a # b".to_vec(), &options));
        for script in [
            "then create /jobs/job- a # b --sequential --parents",
            "then create --sequential --parents /jobs/job- a # b",
            "then create --parents /jobs/job- a # b --sequential",
            "then create /jobs/job- \"a # b\" --sequential --parents",
        ] {
            assert_eq!(parse(script).unwrap(), expected, "{script:?}");
        }
        let flag_as_data = Txn::new().then(Op::create(
            "/a",
            b"x --sequential".to_vec(),
            &CreateOptions::default(),
        ));
        assert_eq!(
            parse("then create /a \"x --sequential\"").unwrap(),
            flag_as_data
        );
        let empty = Txn::new().then(Op::create(
            "/c",
            Vec::new(),
            &CreateOptions {
                kind: NodeKind::Container,
                ..CreateOptions::default()
            },
        ));
        assert_eq!(parse("then create /c --container").unwrap(), empty);
        assert!(parse("then create /a \"x\" --bogus").is_err());
    }

    #[test]
    fn delete_takes_only_its_flag() {
        let expected = Txn::new().then(Op::delete("/old", None, true));
        assert_eq!(parse("then delete /old -r").unwrap(), expected);
        assert_eq!(parse("then rm /old --recursive").unwrap(), expected);
        assert!(parse("then delete /old -x").is_err());
    }

    #[test]
    fn mistakes_name_the_line() {
        let error = parse("compare version /a = x").unwrap_err();
        assert!(format!("{error:#}").contains("txn line 1"), "{error:#}");
        assert!(parse("then frobnicate /a").is_err());
        assert!(parse(r#"{"bogus": 1}"#).is_err());
    }

    /// The committed fuzzing seeds of the `txn_script` target (`fuzz/README.md`) parse or
    /// fail with an error, never a panic: a replay of that corpus in the normal test command.
    #[test]
    fn the_fuzzing_seeds_parse_or_fail_cleanly() {
        let corpus =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/txn_script");
        let mut seeds = 0;
        for file in std::fs::read_dir(&corpus).unwrap() {
            let path = file.unwrap().path();
            if path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("seed-"))
            {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                let _ = parse(&text);
                seeds += 1;
            }
        }
        assert!(seeds > 0, "no seeds under {}", corpus.display());
    }
}
