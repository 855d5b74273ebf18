//! Replays the committed fuzz corpus and crash inputs (`tests/fuzz/` at the
//! workspace root) through the same harnesses the `cargo fuzz` targets in
//! `fuzz/` run, so every input the fuzzer kept, and every crash it found,
//! is checked by the normal test suite on the stable toolchain.

use std::path::{Path, PathBuf};

use ventas_sync_protocol::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fuzz")
}

/// Every file under `tests/fuzz/{corpus,crashes}/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "crashes"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no fuzz inputs for {target} under {}",
        fuzz_dir().display()
    );
    for path in &files {
        let data = std::fs::read(path).expect("fuzz input readable");
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
    }
    eprintln!("{target}: replayed {} inputs", files.len());
}

#[test]
fn every_wire_decode_input_replays_cleanly() {
    replay("wire_decode", fuzzing::wire_decode);
}

#[test]
fn every_hub_sequence_input_replays_cleanly() {
    replay("hub_sequence", fuzzing::hub_sequence);
}
