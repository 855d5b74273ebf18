//! Crash safety with a real crash: a child process appends and compacts in a
//! loop, flushing and reporting what is durable, and is killed with SIGKILL
//! at an arbitrary point; then the parent reopens the store and checks that
//! no change is missing. The child is this same test binary running the
//! ignored test [`crash_child_writes_until_killed`].
//!
//! Chunk `n` holds `n` (u64 BE) and a snapshot holds the seq it covers
//! through, so the parent can check that snapshot + chunks cover every seq
//! from 1 to the last, with no gap, whatever moment the kill hit. A kill
//! loses the page cache of no process but the child's, so this tests process
//! crashes, not power loss.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::Duration;

use super::{open_in, temp_dir};
use crate::{DocStore, SledConfig, SledStore, StoreError, StoredDoc};

/// Set (to the store directory) only in the child process.
const CHILD_DIR_ENV: &str = "VENTAS_STORAGE_CRASH_CHILD_DIR";
/// Lines the child prints after each flush: `durable <last seq>`.
const DURABLE_PREFIX: &str = "durable ";
/// Kill/restart rounds per test run.
const CRASH_ROUNDS: u64 = 6;
/// The child's sled flushes on its own this often, so at the kill its log on
/// disk usually ends in the middle of some batch, not at a clean flush.
const CHILD_FLUSH_EVERY_MS: u64 = 1;
/// The child stops on its own after this long, in case the parent is gone.
const CHILD_RUN_MS_MAX: u128 = 30_000;

const WRITTEN: [u8; 16] = [0x42; 16];
const BYSTANDER: [u8; 16] = [0x41; 16];

fn seq_of(bytes: &[u8]) -> Option<u64> {
    bytes.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

/// The payload of chunk `seq`: the seq, then padding of varying length so
/// records straddle sled's buffers and segments.
fn chunk_payload(seq: u64) -> Vec<u8> {
    let mut payload = seq.to_be_bytes().to_vec();
    let padding = usize::try_from(seq % 7).unwrap_or(0) * 1000;
    payload.resize(8 + padding, 0xcd);
    payload
}

#[test]
#[ignore = "the child half of compaction_survives_being_killed_at_any_point"]
fn crash_child_writes_until_killed() -> Result<(), StoreError> {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return Ok(());
    };
    let config = SledConfig {
        flush_every_ms: Some(CHILD_FLUSH_EVERY_MS),
        ..SledConfig::for_test()
    };
    let store = SledStore::open_with(Path::new(&dir), config)?;
    if !store.contains(&BYSTANDER)? {
        store.append_chunk(&BYSTANDER, b"bystander")?;
        store.flush()?;
    }
    let started = std::time::Instant::now();
    let mut last_seq = store
        .load(&WRITTEN)?
        .map_or(0, |stored| stored.last_chunk_seq);
    for step in 0u64.. {
        if started.elapsed().as_millis() > CHILD_RUN_MS_MAX {
            break;
        }
        let seq = store.append_chunk(&WRITTEN, &chunk_payload(last_seq + 1))?;
        assert_eq!(seq, last_seq + 1, "one writer: seqs are contiguous");
        last_seq = seq;
        if step % 4 == 3 {
            // Keep the two latest chunks out of the snapshot.
            let covers = seq.saturating_sub(2);
            let mut snapshot = covers.to_be_bytes().to_vec();
            snapshot.resize(20_000, 0x5a);
            store.compact(&WRITTEN, &snapshot, covers)?;
        }
        if step % 3 == 2 {
            store.flush()?;
            println!("{DURABLE_PREFIX}{seq}");
        }
    }
    Ok(())
}

/// Checks the invariant of the written document: every seq from 1 to the
/// last is in the snapshot or a chunk, exactly once. Returns the last seq.
fn check_no_change_missing(stored: &StoredDoc) -> u64 {
    let covers = stored.snapshot.as_deref().map_or(0, |snapshot| {
        seq_of(snapshot).expect("snapshot holds its seq")
    });
    let chunk_seqs: Vec<u64> = stored
        .chunks
        .iter()
        .map(|chunk| seq_of(chunk).expect("chunk holds its seq"))
        .collect();
    let expected: Vec<u64> = (covers + 1..=stored.last_chunk_seq).collect();
    assert_eq!(chunk_seqs, expected, "snapshot covers through {covers}");
    for (chunk, seq) in stored.chunks.iter().zip(&chunk_seqs) {
        assert_eq!(*chunk, chunk_payload(*seq));
    }
    stored.last_chunk_seq
}

#[test]
fn compaction_survives_being_killed_at_any_point() -> Result<(), Box<dyn std::error::Error>> {
    let dir = temp_dir();
    let test_binary = std::env::current_exe()?;
    let mut durable_seq = 0;
    for round in 0..CRASH_ROUNDS {
        let mut child = Command::new(&test_binary)
            .args([
                "--exact",
                "tests::crash::crash_child_writes_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a different number of flushes each round, so the kill
        // lands at a different point of the append/compact/flush cycle.
        let flushes_before_kill = 5 + round * 3;
        let mut flushes_seen = 0;
        while flushes_seen < flushes_before_kill {
            let Some(line) = lines.next() else {
                return Err(format!("child exited early: {:?}", child.wait()?).into());
            };
            if let Some(seq) = line?.strip_prefix(DURABLE_PREFIX) {
                durable_seq = seq.parse()?;
                flushes_seen += 1;
            }
        }
        // ... and a different moment after that flush.
        std::thread::sleep(Duration::from_micros(round * 700));
        assert!(
            child.try_wait()?.is_none(),
            "child still writing when killed"
        );
        child.kill()?;
        child.wait()?;
        // Acknowledgements already in the pipe were flushed before the kill.
        for line in lines {
            if let Some(seq) = line?.strip_prefix(DURABLE_PREFIX) {
                durable_seq = seq.parse()?;
            }
        }

        let store = open_in(dir.path())?;
        let stored = store.load(&WRITTEN)?.ok_or("written document lost")?;
        let last_seq = check_no_change_missing(&stored);
        assert!(
            last_seq >= durable_seq,
            "round {round}: last seq {last_seq} < durable {durable_seq}"
        );
        let bystander = store.load(&BYSTANDER)?.ok_or("bystander document lost")?;
        assert_eq!(bystander.chunks, vec![b"bystander".to_vec()]);
        assert_eq!(bystander.snapshot, None);
        assert_eq!(store.doc_count()?, 2);
        assert_eq!(store.list_docs(None, 10)?, vec![BYSTANDER, WRITTEN]);
    }
    assert!(durable_seq > 0);
    Ok(())
}
