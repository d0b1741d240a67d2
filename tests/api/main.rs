//! The black-box suite of Pulse Account: one test binary, a module per capability. Every test of
//! the store, the command handler and the projection runner runs on SQLite and on PostgreSQL
//! (`…::sqlite::…` and `…::postgres::…`); see `helpers` for how PostgreSQL is found.

mod access;
mod activity;
mod audit_export;
mod billing_portal;
mod browser;
mod catalog_publication;
mod cli;
mod command_handling;
mod edge;
mod fake_smtp;
mod fake_stripe;
mod gap_safety;
mod group_commit;
mod helpers;
mod hosted;
mod http_ops;
mod idempotency;
mod installation_flows;
mod legacy_exchange;
mod licensing;
mod lifecycle;
mod local_checkout;
mod openapi;
mod personal_data;
mod projection_runner;
mod purchase;
mod races;
mod read_models;
mod read_your_writes;
mod recovery;
mod replay_fixtures;
mod sign_in;
mod signup;
mod staff;
mod store_contract;
mod stripe_billing;
mod tcp_proxy;
mod upgrade;
mod workspaces;
