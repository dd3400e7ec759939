//! `coordctl txn`: runs a transaction read from stdin, in the line syntax or the JSON form
//! that `txn_script.rs` parses, and prints which branch ran and each operation's result.
//! The exit status tells the branches apart: 0 the compares held (then branch), 4 a compare
//! failed (else branch); a failed operation is an error like any other (1, or 3).

use std::io::Read;

use anyhow::Context;
use coord_client::Client;

use crate::output::Printer;
use crate::txn_script;

/// The long help of `coordctl txn`.
pub const TXN_HELP: &str = "Run a transaction read from stdin, all or nothing at one revision.

Line syntax, one clause per line:
  # a comment (only at the start of a line)
  compare version /config = 3        (also create_revision, mod_revision, value; = != < >)
  compare value /color = #ff0000     (the value is the rest of the line)
  compare exists /lock               (or: compare missing /lock)
  fence /locks/db 1042               (refuse the txn unless the holder's token is current)
  then set /config new value
  then set /motd \"  padded, two\\nlines  \"   (a value starting with \" is a JSON string)
  then create /jobs/job- payload --sequential   (flags: --sequential --container --parents)
  then delete /old -r
  else get /config

A value is the rest of the line after the path (or the compare operator) and one blank, byte
for byte: `#`, inner, leading and trailing blanks included. Quote it as a JSON string to make
leading or trailing blanks visible, or to write a newline or a value that starts with \".

Or JSON: {\"compares\":[{\"path\":\"/a\",\"target\":\"version\",\"op\":\"=\",\"value\":3}],
          \"fences\":[{\"path\":\"/lock\",\"token\":7}],
          \"success\":[{\"op\":\"set\",\"path\":\"/a\",\"data\":\"x\"}],\"failure\":[]}

Exit status: 0 the compares held (the then branch ran), 4 a compare failed (the else branch
ran), 1 an operation failed (nothing was changed), 2 the txn is malformed, 3 the cluster is
unavailable or the outcome is unknown.";

/// Exit status of a txn whose compares did not all hold, so its else branch ran.
pub const EXIT_COMPARE_FAILED: i32 = 4;

/// `coordctl txn`.
pub async fn run(client: &Client, printer: &Printer) -> anyhow::Result<i32> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the txn from stdin")?;
    let txn = txn_script::parse(&text)?;
    let result = client.txn(txn).await?;
    printer.txn(&result);
    Ok(if result.succeeded {
        0
    } else {
        EXIT_COMPARE_FAILED
    })
}
