//! Per-peer and per-source limits the connection layer enforces: the
//! message rate of one connection ([`MessageRate`], a token bucket) and the
//! number of open connections per remote address and per tenant
//! ([`ConnectionCounts`], slots taken before the upgrade).
//!
//! Also the bound on what a peer names itself ([`PEER_ID_BYTES_MAX`]) and
//! [`truncate_to_bytes`], which keeps peer-supplied text in records and
//! close frames within their bounds.
//!
//! Both are plain data driven by the caller: the bucket takes the current
//! time as an argument, and a [`ConnectionSlot`] gives its place back when
//! dropped, so a connection task holds one for exactly its lifetime.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ventas::server::limits::MessageRate;
//!
//! let start = Instant::now();
//! let mut rate = MessageRate::new(10, 2, start);
//! assert!(rate.admit(start) && rate.admit(start));
//! assert!(!rate.admit(start), "the burst is spent");
//! assert!(rate.admit(start + Duration::from_millis(100)), "one token per 100 ms");
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Longest peer id a peer may join with, in bytes (UTF-8). A longer one
/// gets an `error` and a close; the sync log never holds more.
pub const PEER_ID_BYTES_MAX: usize = 256;

/// The longest prefix of `text` within `bytes_max` bytes, on a char
/// boundary.
pub fn truncate_to_bytes(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A token bucket over received messages: it holds at most `burst` tokens,
/// gains `per_second` tokens a second, and each message takes one.
#[derive(Debug, Clone)]
pub struct MessageRate {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl MessageRate {
    /// A full bucket at `now`.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled_at: now,
        }
    }

    /// Takes a token for one message received at `now`; false when the
    /// peer is over its rate (no token is taken then).
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why [`ConnectionCounts::admit`] refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefusal {
    #[error("too many connections from this address ({max} allowed)")]
    Address { max: usize },
    #[error("too many connections for this tenant ({max} allowed)")]
    Tenant { max: usize },
}

#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    by_tenant: HashMap<String, usize>,
}

/// Open connections per remote address (IP, any port) and per tenant.
/// Entries at zero are removed, so memory follows the open connections.
#[derive(Debug, Clone)]
pub struct ConnectionCounts {
    per_address_max: usize,
    per_tenant_max: usize,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionCounts {
    pub fn new(per_address_max: usize, per_tenant_max: usize) -> Self {
        Self {
            per_address_max,
            per_tenant_max,
            counts: Arc::default(),
        }
    }

    /// Takes a slot for a connection from `address`, and for `tenant` when
    /// the connection has an identity; both or neither.
    pub fn admit(
        &self,
        address: IpAddr,
        tenant: Option<&str>,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.per_address_max {
            return Err(ConnectionRefusal::Address {
                max: self.per_address_max,
            });
        }
        if let Some(tenant) = tenant {
            let of_tenant = counts.by_tenant.get(tenant).copied().unwrap_or(0);
            if of_tenant >= self.per_tenant_max {
                return Err(ConnectionRefusal::Tenant {
                    max: self.per_tenant_max,
                });
            }
            *counts.by_tenant.entry(tenant.to_string()).or_insert(0) += 1;
        }
        *counts.by_address.entry(address).or_insert(0) += 1;
        Ok(ConnectionSlot {
            address,
            tenant: tenant.map(str::to_string),
            counts: Arc::clone(&self.counts),
        })
    }
}

/// One connection's place in [`ConnectionCounts`]; given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    address: IpAddr,
    tenant: Option<String>,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        release(&mut counts.by_address, &self.address);
        if let Some(tenant) = &self.tenant {
            release(&mut counts.by_tenant, tenant);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        debug_assert!(*count > 0, "a slot was given back twice");
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn truncation_keeps_whole_characters_within_the_bound() {
        assert_eq!(truncate_to_bytes("abc", 2), "ab");
        assert_eq!(truncate_to_bytes("abc", 9), "abc");
        // "é" is two bytes: a bound in its middle keeps it out.
        assert_eq!(truncate_to_bytes("aé", 2), "a");
        assert_eq!(truncate_to_bytes("aé", 3), "aé");
    }

    #[test]
    fn a_full_bucket_admits_its_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut rate = MessageRate::new(4, 3, start);
        for _ in 0..3 {
            assert!(rate.admit(start));
        }
        assert!(!rate.admit(start));
        assert!(!rate.admit(start + Duration::from_millis(200)));
        assert!(rate.admit(start + Duration::from_millis(250)));
        // A long pause refills to the burst, never past it.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rate.admit(later));
        }
        assert!(!rate.admit(later));
    }

    #[test]
    fn a_steady_peer_at_the_rate_is_never_refused() {
        let start = Instant::now();
        let mut rate = MessageRate::new(10, 1, start);
        for n in 0..1_000u64 {
            assert!(rate.admit(start + Duration::from_millis(100 * n)), "{n}");
        }
    }

    #[test]
    fn slots_are_counted_per_address_and_tenant_and_given_back_on_drop() {
        let counts = ConnectionCounts::new(2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = counts.admit(a, Some("acme")).expect("first");
        let _second = counts.admit(a, None).expect("second");
        assert_eq!(
            counts.admit(a, None).expect_err("address full"),
            ConnectionRefusal::Address { max: 2 }
        );
        let _third = counts.admit(b, Some("acme")).expect("other address");
        let _fourth = counts.admit(b, Some("acme")).expect("tenant at 3");
        let c: IpAddr = [10, 0, 0, 3].into();
        assert_eq!(
            counts.admit(c, Some("acme")).expect_err("tenant full"),
            ConnectionRefusal::Tenant { max: 3 }
        );
        // A refusal takes nothing: another tenant from c still fits.
        let _other = counts.admit(c, Some("globex")).expect("other tenant");
        drop(first);
        let _again = counts.admit(a, Some("acme")).expect("freed slot reused");
    }
}
