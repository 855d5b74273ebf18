//! Any bytes through `wire::decode`: no panic, and what decodes round-trips
//! (harness: `ventas_sync_protocol::fuzzing::wire_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ventas_sync_protocol::fuzzing::wire_decode(data);
});
