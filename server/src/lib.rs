//! The Coord server as a library: the binary in `main.rs` only parses flags, sets up logging and
//! calls [`member::run`], so tests and tools can run members in-process too.

pub mod auth;
pub mod config;
pub mod consensus;
pub mod fsm;
pub mod grpc;
pub mod listener;
pub mod member;
pub mod membership;
pub mod observe;
pub mod pb;
pub mod sessions;
pub mod storage;
pub mod throttle;
pub mod tls_port;
pub mod watch;

#[cfg(test)]
mod golden_tests;
