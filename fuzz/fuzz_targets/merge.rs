//! Fuzz target `merge`: see `bpf_ringbuf_fuzz::merge`.
#![no_main]

use bpf_ringbuf_fuzz::merge::{check, Script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Script| {
    check(&case);
});
