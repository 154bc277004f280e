//! One integration-test binary (each binary links separately; one keeps the build short).
//! The app runs for real on a random port with a sled store in a temp dir; the tests play
//! WeChat's servers over HTTP.

mod admin;
mod autotags;
mod bad_input;
mod beside_server;
mod campaigns;
mod channels;
mod cli;
mod coupons;
mod crash;
mod dedupe;
mod durability;
mod examples;
mod helpers;
mod ingest;
mod instances;
mod official;
mod outbound;
mod outbox;
mod persistence;
mod postgres;
mod referral;
mod reload;
mod reports;
mod sync;
mod wecom;
mod workbench;
