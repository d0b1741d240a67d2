//! Pulse Account: the event-sourced commercial ledger and customer account backend of Pulse.
//!
//! The library half of the `pulse-account` binary, so that the tests and benchmarks drive the same
//! code `main` does. See `ARCHITECTURE.md` for the map.

pub mod audit;
pub mod checkout;
pub mod cli;
pub mod command;
pub mod crypto;
pub mod erasure;
pub mod exchange;
pub mod flow;
pub mod hosted;
pub mod http;
pub mod licensing;
pub mod lifecycle;
pub mod metrics;
pub mod personal_data;
pub mod projection;
pub mod staff;
pub mod startup;
pub mod store;
pub mod stripe_gateway;
pub mod support;
pub mod telemetry;
pub mod trials;
