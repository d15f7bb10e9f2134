//! The memchan kernel/userspace ABI.
//!
//! This crate is `no_std` and dependency-free so that the Rust kernel module can compile the
//! very same definitions: `kernel/memchan.rs` includes [`abi.rs`](../src/abi.rs) with
//! `#[path]` (an out-of-tree module cannot link crates). Everything that crosses the
//! user/kernel boundary is defined once, in `abi.rs`.
#![no_std]

#[path = "abi.rs"]
mod defs;

pub use defs::*;
