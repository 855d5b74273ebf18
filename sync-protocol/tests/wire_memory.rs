//! Decoding must not reserve memory for lengths a frame declares but does not contain.
//!
//! A decoder that trusted a declared length would call `Vec::with_capacity(1 GiB)`, which Linux
//! grants lazily: nothing crashes, but the address space grows. This binary holds one test, so
//! the process's peak virtual size (`VmPeak`) moves only because of it.

#![cfg(target_os = "linux")]

use ventas_sync_protocol::wire::{decode, DecodeError, MESSAGE_BYTES_MAX_DEFAULT};

const GIBIBYTE: u32 = 1 << 30;

/// Peak virtual memory of this process, in KiB.
fn peak_virtual_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is mounted");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmPeak:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmPeak is reported")
}

/// A `{type, <key>: <header declaring a GiB>}` frame holding only a few real bytes.
fn frame_declaring_a_gibibyte(key: &str, major: u8) -> Vec<u8> {
    let mut frame = vec![0xa2, 0x64];
    frame.extend_from_slice(b"type");
    frame.push(0x64);
    frame.extend_from_slice(b"sync");
    frame.push(0x60 | u8::try_from(key.len()).expect("short key"));
    frame.extend_from_slice(key.as_bytes());
    frame.push((major << 5) | 26);
    frame.extend_from_slice(&GIBIBYTE.to_be_bytes());
    frame.extend_from_slice(&[0; 64]);
    frame
}

#[test]
fn declared_lengths_beyond_the_frame_reserve_no_memory() {
    let before_kib = peak_virtual_kib();
    for key in ["data", "senderId", "unknown"] {
        for major in [2, 3, 4, 5] {
            let frame = frame_declaring_a_gibibyte(key, major);
            assert!(matches!(
                decode(&frame, MESSAGE_BYTES_MAX_DEFAULT),
                Err(DecodeError::Cbor(_))
            ));
        }
    }
    let growth_kib = peak_virtual_kib().saturating_sub(before_kib);
    assert!(
        growth_kib < 256 * 1024,
        "peak virtual memory grew by {growth_kib} KiB"
    );
}
