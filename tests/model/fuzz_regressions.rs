//! Replays the fuzz regressions: every file under `fuzz/regressions/<target>/` goes through
//! the same check as the fuzz target `<target>` (the fuzz crate's modules are included by
//! path, so the checks cannot drift apart). Seed cases written by hand live there too, so
//! this test covers the interesting paths even when fuzzing has found nothing.

#![allow(dead_code)]

#[path = "../../fuzz/src/check.rs"]
mod check;
#[path = "../../fuzz/src/decode.rs"]
mod decode;
#[path = "../../fuzz/src/differential.rs"]
mod differential;
#[path = "../../fuzz/src/input.rs"]
mod input;
#[path = "../../fuzz/src/merge.rs"]
mod merge;
#[path = "../../fuzz/src/overwrite.rs"]
mod overwrite;
#[path = "../../fuzz/src/records.rs"]
mod records;
#[path = "../../fuzz/src/reference.rs"]
mod reference;
#[path = "../../fuzz/src/user_producer.rs"]
mod user_producer;

use std::path::{Path, PathBuf};

use bpf_ringbuf::model::HeapRing;
use bpf_ringbuf::ReadError;
use reference::Step;

fn cases(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no regression cases in {}",
        dir.display()
    );
    cases
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let cases = cases(target);
    for (path, bytes) in &cases {
        eprintln!("replaying {}", path.display());
        run(bytes);
    }
    cases.len()
}

#[test]
fn decode_regressions() {
    replay("decode", decode::run);
}

#[test]
fn differential_regressions() {
    replay("differential", differential::run);
}

#[test]
fn merge_regressions() {
    replay("merge", merge::run);
}

#[test]
fn overwrite_regressions() {
    replay("overwrite", overwrite::run);
}

#[test]
fn records_regressions() {
    replay("records", records::run);
}

#[test]
fn user_producer_regressions() {
    replay("user_producer", user_producer::run);
}

/// The seed cases are not vacuous: between them, the first read of the `decode` cases meets
/// every kind of step and every ring-state error.
#[test]
fn decode_regressions_cover_every_step_kind() {
    let mut seen = std::collections::BTreeSet::new();
    for (_, bytes) in cases("decode") {
        let case = decode::DecodeCase::from_bytes(&bytes);
        let size = case.size;
        let image: Vec<u8> = (0..2 * size)
            .map(|i| match case.data.len() {
                0 => 0,
                len => case.data[(i % size) % len],
            })
            .collect();
        let steps = reference::walk(
            size,
            case.consumer_pos,
            case.producer_pos,
            |offset| u32::from_ne_bytes(image[offset..offset + 4].try_into().unwrap()),
            |offset, len| image[offset..offset + len].to_vec(),
        );
        for step in steps {
            seen.insert(match step {
                Step::Record { .. } => "record",
                Step::Discarded { .. } => "discarded",
                Step::Busy { .. } => "busy",
                Step::End { .. } => "end",
                Step::Corrupt { .. } => "corrupt",
                Step::Invalid(ReadError::ConsumerAhead { .. }) => "consumer ahead",
                Step::Invalid(ReadError::MisalignedPosition { .. }) => "misaligned",
                Step::Invalid(_) => "other",
            });
        }
    }
    let all = [
        "record",
        "discarded",
        "busy",
        "end",
        "corrupt",
        "consumer ahead",
        "misaligned",
    ];
    assert_eq!(seen, all.into_iter().collect());
}

/// The `merge` seed cases are not vacuous: between them, records are held back and released by
/// the lateness, marked out of order, ordered as future keys, released while a producer ran
/// inside the round, by drains, and checked against the reference merge; and a pre-sleep
/// check said to sleep until a deadline.
#[test]
fn merge_regressions_cover_the_rule() {
    let summaries: Vec<merge::Summary> = cases("merge")
        .iter()
        .map(|(_, bytes)| merge::check(&merge::Script::from_bytes(bytes)))
        .collect();
    let any = |f: fn(&merge::Summary) -> bool| summaries.iter().any(f);
    assert!(
        any(|s| s.stats.waits > 0),
        "no round waited for a quiet ring"
    );
    assert!(any(|s| s.stats.out_of_order > 0), "nothing out of order");
    assert!(any(|s| s.stats.future_keys > 0), "no future key");
    assert!(
        any(|s| s.released_by_rounds > 0 && s.in_time),
        "no reference merge"
    );
    assert!(any(|s| !s.in_time), "every seed kept the conditions");
    assert!(
        any(|s| s.released_by_drains > 0),
        "nothing released by a drain"
    );
    assert!(any(|s| s.output_during_round), "no output inside a round");
    assert!(any(|s| s.slept_until), "no sleep until a deadline");
}

/// The checker is not vacuous either: a consumer that returned other bytes than the
/// reference says would be caught.
#[test]
#[should_panic(expected = "record at position")]
fn the_checker_catches_a_wrong_record() {
    let mut data = [0u8; 64];
    data[..4].copy_from_slice(&3u32.to_ne_bytes());
    data[8..11].copy_from_slice(b"abc");
    let (_producer, mut consumer) = HeapRing::from_parts(64, &data, 0, 16).unwrap().split();
    let steps = [
        Step::Record {
            position: 0,
            payload: b"abd".to_vec(),
            next: 16,
        },
        Step::End { position: 16 },
    ];
    check::apply(
        &mut consumer,
        &steps,
        &check::ReadOp::Batch {
            take: None,
            commit: false,
        },
    );
}
