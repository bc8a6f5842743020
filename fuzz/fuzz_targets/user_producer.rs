//! Fuzz target `user_producer`: see `bpf_ringbuf_fuzz::user_producer`.
#![no_main]

use bpf_ringbuf_fuzz::user_producer::{check, Script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|script: Script| check(&script));
