//! The systems outside the ledger, each behind one gateway: Stripe ([`stripe`]) and email
//! ([`mail`]).

pub mod mail;
pub mod stripe;
