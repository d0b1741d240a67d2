//! The commercial domain of Pulse Account, as pure deciders.
//!
//! This crate owns the vocabulary every other part of the ledger speaks: what a recorded event looks
//! like ([`log`]) and the shape of a command handler's pure core ([`decider`]). It does no IO, runs no
//! async code, reads no clock and draws no random numbers: time and generated ids come in through a
//! [`decider::Context`]. The service crate wraps these functions with the event store.

pub mod account;
pub mod catalog;
pub mod decider;
pub mod email_code;
pub mod erasure;
pub mod error;
pub mod exchange;
pub mod handoff;
pub mod ids;
pub mod index;
pub mod license;
pub mod limiter;
pub mod log;
pub mod magic_link;
pub mod mail;
pub mod redemption;
pub mod self_refund;
pub mod signup;
pub mod staff;
pub mod stripe_event;
pub mod subscription;
pub mod trial;
pub mod user;
