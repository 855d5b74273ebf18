//! The automerge-repo 2.x sync protocol, without I/O.
//!
//! This crate is the part of ventas that decides *what* to send and *what* to
//! store; it never touches a socket, a clock or a disk. Data flows through it
//! in three layers:
//!
//! 1. [`wire`] turns one WebSocket binary frame into a [`wire::Message`] and
//!    back (CBOR, as `@automerge/automerge-repo` encodes it). Malformed,
//!    oversized or unknown frames are error values, never panics.
//! 2. [`doc_sync::PeerDocSync`] is the state of one (peer, document) pair on
//!    top of `automerge::sync`: apply an incoming sync message, generate the
//!    next one.
//! 3. [`hub::Hub`] (the server) and [`device::DeviceCore`] (a device) are
//!    state machines over many peers and documents. They take inputs (a
//!    decoded message, a storage result, the current time in milliseconds)
//!    and return [`hub::Effect`]s / [`device::DeviceEffect`]s as plain data:
//!    messages to send, chunks to persist, a flush to perform, a connection
//!    to close. The root crate runs them on tokio with sled; the tests run
//!    them in a deterministic in-memory simulation.
//!
//! ```
//! use ventas_sync_protocol::wire::{decode, encode, Message, MESSAGE_BYTES_MAX_DEFAULT};
//! use ventas_sync_protocol::ids::PeerId;
//! let leave = Message::Leave { sender_id: PeerId::new("phone-1") };
//! let bytes = encode(&leave);
//! assert_eq!(decode(&bytes, MESSAGE_BYTES_MAX_DEFAULT), Ok(leave));
//! ```

pub mod device;
pub mod doc_sync;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod ids;
pub mod stored;
pub mod wire;

pub use automerge;
