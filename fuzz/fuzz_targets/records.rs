//! Fuzz target `records`: see `bpf_ringbuf_fuzz::records`.
#![no_main]

use bpf_ringbuf_fuzz::records::{check, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Layout| check(&case));
