//! Fuzz target `decode`: see `bpf_ringbuf_fuzz::decode`.
#![no_main]

use bpf_ringbuf_fuzz::decode::{check, DecodeCase};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: DecodeCase| check(&case));
