//! Tests of [`SledStore`] against real sled, in temporary directories.
//!
//! `documents` covers appends, loads, compaction and listing; `model` checks
//! random operation sequences (with reopens) against a `BTreeMap` model;
//! `crash` kills a writer process mid-write and checks what survives;
//! `corruption` plants bad records and expects `Corrupt`, not a panic;
//! `meta` covers the metadata keyspace and `next_id`; `sim` checks the
//! simulated disk ([`crate::sim::SimDisk`]) against the same model, with
//! power cuts and held flushes.

mod corruption;
mod crash;
mod documents;
mod meta;
mod model;
mod sim;

use std::path::Path;

use crate::{DocKey, SledConfig, SledStore, StoreError};

/// A document key with every byte `byte`.
fn doc(byte: u8) -> DocKey {
    [byte; 16]
}

/// Opens the store in `dir` the way the tests do.
fn open_in(dir: &Path) -> Result<SledStore, StoreError> {
    SledStore::open_with(dir, SledConfig::for_test())
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}
