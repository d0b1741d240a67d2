//! The systems outside the ledger, each behind one gateway: Stripe ([`stripe`]).

pub mod stripe;
