//! Pulse Account: the event-sourced commercial ledger and customer account backend of Pulse.
//!
//! The library half of the `pulse-account` binary, so that the tests and benchmarks drive the same
//! code `main` does. See `ARCHITECTURE.md` for the map: [`engine`] (the log, commands,
//! projections, audit), [`flows`] (the use cases, by capability), [`gateways`] (Stripe),
//! [`http`] and [`cli`] (the transports over the same use cases).

pub mod cli;
pub mod crypto;
pub mod engine;
pub mod flows;
pub mod gateways;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod telemetry;
