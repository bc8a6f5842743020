//! Checks shared by the fuzz targets and by the replay test in the main workspace
//! (`tests/model/fuzz_regressions.rs` includes these modules by path, as siblings: they name
//! each other through `super::`).
//!
//! Each target has a module with `run(bytes)`: it decodes the bytes into a case (see
//! [`input`]) and checks it, panicking on any disagreement. The targets in `fuzz_targets/`
//! only call `run`, through an `Arbitrary` wrapper so that libFuzzer prints the decoded case.

pub mod check;
pub mod decode;
pub mod differential;
pub mod input;
pub mod merge;
pub mod overwrite;
pub mod records;
pub mod reference;
pub mod user_producer;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};

macro_rules! arbitrary_from_bytes {
    ($($case:ty => $decode:path),* $(,)?) => {$(
        impl<'a> Arbitrary<'a> for $case {
            fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
                let bytes = u.bytes(u.len())?;
                Ok($decode(bytes))
            }
        }
    )*};
}

arbitrary_from_bytes! {
    decode::DecodeCase => decode::DecodeCase::from_bytes,
    differential::Script => differential::Script::from_bytes,
    merge::Script => merge::Script::from_bytes,
    overwrite::Script => overwrite::Script::from_bytes,
    records::Layout => records::Layout::from_bytes,
    user_producer::Script => user_producer::Script::from_bytes,
}
