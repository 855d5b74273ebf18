//! The bytes as a script of operations on the server's `Hub`, with its
//! invariants checked after every step (harness:
//! `ventas_sync_protocol::fuzzing::hub_sequence`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ventas_sync_protocol::fuzzing::hub_sequence(data);
});
