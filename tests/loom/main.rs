//! The loom models: the protocol core's atomics, switched to loom's, run against models of the
//! kernel side, each with negative controls that weaken one ordering and must make loom report
//! a failure. What each model checks, and its figures: `docs/verification.md`.
//!
//! Built only with the core's atomics switched to loom's (how to run them:
//! `docs/verification.md` § Running; one model: `-- merge::`). Without the cfg this binary is
//! empty: `cargo test --workspace` builds it and runs nothing.

#![cfg(bpf_ringbuf_loom)]

mod common;

mod batch_commit;
mod hostile_consumer;
mod merge;
mod overwrite;
mod single_producer;
mod two_producers;
mod user_ringbuf;
mod wakeup;
