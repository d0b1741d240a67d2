//! The ledger engine, which knows nothing of the commercial rules: the event store and its
//! contract ([`store`]), command handling over pure deciders ([`command`]), the projection
//! runners ([`projection`]), the auditor export and seals ([`audit`]), and personal data sealed
//! at rest ([`personal_data`]).

pub mod audit;
pub mod command;
pub mod personal_data;
pub mod projection;
pub mod store;
