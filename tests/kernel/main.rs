//! The tests against the running kernel: real ring maps, mapped and read or written through
//! the crate while BPF programs (assembled by the test kit, `tests/kit`) produce and drain.
//!
//! Without a usable `bpf()` each test skips and says why; with `BPF_RINGBUF_REQUIRE_KERNEL=1`
//! (CI sets it) it fails instead. `.ci/kernel-matrix` runs this binary on other kernels and
//! architectures. One module per front-end type or concern:

mod byo_mapping;
mod hostile;
mod kit_programs;
mod merge;
mod overwrite;
mod poller;
mod probe;
mod ringbuf;
#[cfg(feature = "tokio")]
mod tokio_reader;
mod typed_records;
mod user_ringbuf;
mod write_batch;
