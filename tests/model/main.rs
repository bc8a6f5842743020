//! The protocol core on heap-backed rings, against the models of the kernel side (feature
//! `model`): no kernel and no root needed, and the only tests miri runs
//! (`docs/verification.md` § Miri). Each behaviour here is also checked against the real
//! kernel in `tests/kernel`.

mod accounting;
mod consumer;
mod fuzz_regressions;
mod merge;
mod overwrite;
mod producer;
mod read_loop;
