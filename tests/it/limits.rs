//! Each limit at its bound: accepted at the limit, refused past it, and
//! only the offending peer is affected.
