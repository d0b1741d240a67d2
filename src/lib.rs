//! Pulse Account: the event-sourced commercial ledger and customer account backend of Pulse.
//!
//! The library half of the `pulse-account` binary, so that the tests and benchmarks drive the same
//! code `main` does. See `ARCHITECTURE.md` for the map.

pub mod store;
