//! Fuzz target `overwrite`: see `bpf_ringbuf_fuzz::overwrite`.
#![no_main]

use bpf_ringbuf_fuzz::overwrite::{check, Script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Script| check(&case));
