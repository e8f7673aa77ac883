//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! very checks the fuzz targets run, so every input the fuzzers kept,
//! including each past crash, is a regression test under `cargo nextest`
//! on stable Rust. See docs/RELIABILITY.md.

#[path = "../../../fuzz/src/decoders.rs"]
mod decoders;
#[path = "../../../fuzz/src/pickle_oracle.rs"]
mod pickle_oracle;

use std::path::PathBuf;

use natter_proto::Encoding;
use natter_proto::pickle::{PickleError, decode};

/// Every file of one target's corpus; fails when there is none, so a
/// moved directory cannot turn this into a test of nothing.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        // Shown only when a check panics: which input it was.
        println!("{}", path.display());
        check(&bytes);
    }
}

#[test]
fn framed_corpus_decodes_the_same_however_it_is_cut() {
    replay("framed", |data| {
        decoders::check_stream(Encoding::Framed, data)
    });
}

#[test]
fn classic_corpus_decodes_the_same_however_it_is_cut() {
    replay("classic", |data| {
        decoders::check_stream(Encoding::Classic, data)
    });
}

#[test]
fn json_corpus_decodes_the_same_however_it_is_cut() {
    replay("json", |data| decoders::check_stream(Encoding::Json, data));
}

#[test]
fn pickle_corpus_agrees_with_serde_pickle() {
    replay("pickle", pickle_oracle::check_pickle);
}

/// The pickle target's first finding: copying memoized containers (instead
/// of sharing them, as Python does) read a list that Python sees inside
/// itself as `[[]]`. Such pickles are now refused.
#[test]
fn a_container_changed_after_the_memo_shared_it_is_refused() {
    // `]` BINPUT 104, eleven BINGET 104, MEMOIZE ×17, APPEND, ..., STOP.
    let mut found = b"]q".to_vec();
    found.extend([b'h'; 23]);
    found.extend([0x94; 17]);
    found.push(b'a');
    found.extend([b'h'; 8]);
    found.push(b'.');
    assert_eq!(decode(&found, 32, 4096), Err(PickleError::SharedMutation));
}
