//! `coordctl txn`: runs a transaction read from stdin, in the line syntax or the JSON form
//! that `txn_script.rs` parses, and prints which branch ran and each operation's result.

use std::io::Read;

use anyhow::Context;
use coord_client::Client;

use crate::output::Printer;
use crate::txn_script;

/// The long help of `coordctl txn`.
pub const TXN_HELP: &str = "Run a transaction read from stdin, all or nothing at one revision.

Line syntax, one clause per line:
  compare version /config = 3        (also create_revision, mod_revision, value; = != < >)
  compare exists /lock               (or: compare missing /lock)
  fence /locks/db 1042               (refuse the txn unless the holder's token is current)
  then set /config new-value
  then create /jobs/job- payload --sequential
  then delete /old
  else get /config

Or JSON: {\"compares\":[{\"path\":\"/a\",\"target\":\"version\",\"op\":\"=\",\"value\":3}],
          \"fences\":[{\"path\":\"/lock\",\"token\":7}],
          \"success\":[{\"op\":\"set\",\"path\":\"/a\",\"data\":\"x\"}],\"failure\":[]}";

/// `coordctl txn`.
pub async fn run(client: &Client, printer: &Printer) -> anyhow::Result<i32> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the txn from stdin")?;
    let txn = txn_script::parse(&text)?;
    let result = client.txn(txn).await?;
    printer.txn(&result);
    Ok(0)
}
