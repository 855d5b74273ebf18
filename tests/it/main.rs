//! Integration tests: real sockets on port 0, real sled in temp dirs, the
//! real `ventas` binary for crash tests, real automerge-repo JS clients.
//! One binary, one module per area (see matklad, "Delete Cargo Integration
//! Tests").

mod auth;
mod authorization;
mod crash_points;
mod domain_interop;
mod export_backfill;
mod export_incremental;
mod export_live;
mod export_round_trips;
mod fair_resources;
mod harness;
mod hostile;
mod http_hygiene;
mod js_interop;
mod limits;
mod limits_more;
mod loadgen;
mod nginx;
mod office;
mod periods;
mod power_loss;
mod provision;
mod review;
mod sync;
mod tenant_documents;
mod tenant_routes;
