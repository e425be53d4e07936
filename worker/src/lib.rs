//! tracking-worker: consumes tracking updates from SQS and writes an exactly-once audit
//! trail to DynamoDB. The operator depends on [`contract`] to configure it.
#![forbid(unsafe_code)]

pub mod contract;
