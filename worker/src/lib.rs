//! tracking-worker: consumes tracking updates from SQS and writes an exactly-once audit
//! trail to DynamoDB. The operator depends on [`contract`] to configure it.
//!
//! Data flow: [`consumer`] receives batches → [`model`] parses each body (pure) →
//! [`store`] writes it with a conditional put, or the poison goes to the DLQ →
//! [`consumer`] deletes what settled. [`maintenance`] runs the daily job; [`metrics`] and
//! [`http`] expose what happened.
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod contract;
pub mod error;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod redrive;
pub mod retry;
pub mod store;
pub mod synth;
mod worker;

pub use worker::{Ctx, Worker, run};
