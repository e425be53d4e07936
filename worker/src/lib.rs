//! tracking-worker: consumes tracking updates from SQS and writes an exactly-once audit
//! trail to DynamoDB. The operator depends on [`contract`] to configure it.
//!
//! Data flow: [`consumer`] receives batches → [`model`] parses each body (pure; exact
//! JSON in [`json`], event times in [`timestamp`]) → [`write`] stores it through [`store`]
//! with a conditional put → [`settle`] deletes what settled, dead-letters the poison, returns
//! the failures; [`requeue`] moves a message SQS is about to dead-letter for lost deliveries
//! to a fresh copy, and [`sweep`] takes back the updates SQS moved to the DLQ all the same.
//! [`maintenance`] runs the daily job; [`metrics`] and
//! [`http`] expose what happened.
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod contract;
pub mod error;
pub mod http;
pub mod json;
pub mod lean;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod redrive;
pub mod requeue;
pub mod retry;
pub mod settle;
pub mod store;
pub mod sweep;
pub mod synth;
pub mod timestamp;
mod worker;
pub mod write;

pub use worker::{Ctx, Worker, run};
