//! Replays the chat fuzz target's committed corpus (`fuzz/corpus/chat/*`)
//! through the same session checks the fuzz target runs, so every kept
//! input is a regression test under `cargo nextest` on stable Rust. See
//! docs/RELIABILITY.md.

#[path = "../../../fuzz/src/chat_session.rs"]
mod chat_session;

use std::path::PathBuf;

#[test]
fn chat_corpus_keeps_every_invariant() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/chat");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for path in files {
        // Shown only when a check panics: which input it was.
        println!("{}", path.display());
        chat_session::check_session(&std::fs::read(&path).unwrap());
    }
}
