//! The ledger engine, which knows nothing of the commercial rules: the event store and its
//! contract ([`store`]), command handling over pure deciders ([`command`]) and the runner of
//! decisions across several streams ([`decision`]), the projection
//! runners ([`projection`]), the auditor export and seals ([`audit`]), and personal data sealed
//! at rest ([`personal_data`]).

pub mod audit;
pub mod command;
pub mod decision;
pub mod personal_data;
pub mod projection;
pub mod store;
