//! Fuzzes the `coordctl txn` syntax (line syntax and JSON) on arbitrary UTF-8 (inputs that are
//! not UTF-8 are skipped).
//!
//! The parser lives in the `coordctl` binary crate, so its file is compiled in here as a
//! module, with the same dependencies. Property: parsing never panics; a malformed txn is an
//! error.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../cli/src/txn_script.rs"]
mod txn_script;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = txn_script::parse(text);
    }
});
