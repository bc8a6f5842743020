//! Fuzz target `differential`: see `bpf_ringbuf_fuzz::differential`.
#![no_main]

use bpf_ringbuf_fuzz::differential::{check, Script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Script| check(&case));
