//! Parses a txn from text: a small line-oriented syntax, or JSON.
//!
//! Line syntax (one clause per line, `#` starts a comment):
//! ```text
//! compare version /config = 3          # also: create_revision, mod_revision, value
//! compare exists /lock                 # or: compare missing /lock
//! fence /locks/db 1042                 # the holder's token must still be current
//! then set /config new-value
//! then create /audit/entry- data --sequential
//! then delete /old
//! then get /config
//! else get /config
//! ```
//! Operators: `=`, `!=`, `<`, `>`. Values run to the end of the line.
//!
//! JSON: `{"compares": [{"path": "/a", "target": "version", "op": "=", "value": 3}],
//! "fences": [{"path": "/lock", "token": 7}], "success": [{"op": "set", "path": "/a",
//! "data": "x"}], "failure": []}`.

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

fn op_from_words(words: &[&str], rest_of_line: &str) -> anyhow::Result<Op> {
    let (kind, path) = match words {
        [kind, path, ..] => (*kind, *path),
        _ => bail!("an operation needs a kind and a path"),
    };
    // The value is everything after the path, flags excepted.
    let value = rest_of_line
        .split_once(path)
        .map(|(_, after)| after.trim())
        .unwrap_or_default();
    match kind {
        "get" => Ok(Op::get(path)),
        "delete" | "rm" => Ok(Op::delete(
            path,
            None,
            words.contains(&"-r") || words.contains(&"--recursive"),
        )),
        "set" => Ok(Op::set(path, value.as_bytes().to_vec(), None)),
        "create" => {
            let mut options = CreateOptions::default();
            let mut data = Vec::new();
            for word in value.split_whitespace() {
                match word {
                    "--sequential" => options.sequential = true,
                    "--container" => options.kind = NodeKind::Container,
                    "--parents" => options.make_parents = true,
                    other => data.push(other),
                }
            }
            Ok(Op::create(path, data.join(" ").into_bytes(), &options))
        }
        other => bail!("unknown operation {other:?}: use get, set, create or delete"),
    }
}

fn parse_lines(text: &str) -> anyhow::Result<Txn> {
    let mut txn = Txn::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(code, _)| code).trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let parsed: anyhow::Result<Txn> = (|| match words.as_slice() {
            ["compare", "exists", path] => Ok(txn.clone().when(Compare::exists(path))),
            ["compare", "missing", path] => Ok(txn.clone().when(Compare::missing(path))),
            ["compare", target, path, op, ..] => {
                let value = line
                    .splitn(5, char::is_whitespace)
                    .nth(4)
                    .unwrap_or_default();
                Ok(txn
                    .clone()
                    .when(compare(target, path, compare_op(op)?, value)?))
            }
            ["fence", path, token] => {
                let token = token
                    .parse()
                    .with_context(|| format!("fence token {token:?} is not a number"))?;
                Ok(txn.clone().fence(path, token))
            }
            ["then", rest @ ..] => Ok(txn.clone().then(op_from_words(rest, line)?)),
            ["else", rest @ ..] => Ok(txn.clone().otherwise(op_from_words(rest, line)?)),
            _ => Err(anyhow!("expected compare, fence, then or else")),
        })();
        txn = parsed.with_context(|| format!("txn line {}: {line:?}", number + 1))?;
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
