//! `PutItem` and `TransactWriteItems` as the audit write makes them: a put conditional on the
//! key being new, with the existing item returned when it is not
//! (`ReturnValuesOnConditionCheckFailure=ALL_OLD`). Same answers as [`crate::store::Store`]'s
//! SDK calls.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::attr::{ItemJson, item_from_json};
use super::{Failure, Lean, Service};
use crate::error::{Error, Result};
use crate::model::attr;
use crate::store::{AuditOutcome, Item, ItemVerdict, TransactOutcome};

const CONDITION: &str = "attribute_not_exists(#pk)";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Names {
    #[serde(rename = "#pk")]
    pk: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConditionalPut<'a> {
    table_name: &'a str,
    item: ItemJson<'a>,
    condition_expression: &'static str,
    expression_attribute_names: Names,
    return_values_on_condition_check_failure: &'static str,
}

impl<'a> ConditionalPut<'a> {
    fn new(table_name: &'a str, item: &'a Item) -> Self {
        Self {
            table_name,
            item: ItemJson(item),
            condition_expression: CONDITION,
            expression_attribute_names: Names {
                pk: attr::TRACKING_ID,
            },
            return_values_on_condition_check_failure: "ALL_OLD",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TransactPut<'a> {
    put: ConditionalPut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Transact<'a> {
    transact_items: Vec<TransactPut<'a>>,
    client_request_token: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Refused {
    item: Option<Value>,
    cancellation_reasons: Option<Vec<Reason>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Reason {
    code: Option<String>,
    item: Option<Value>,
}

fn encode(operation: &'static str, body: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::Aws {
        operation,
        class: crate::error::ErrorClass::Permanent,
        code: None,
        message: format!("cannot serialise the request: {e}"),
    })
}

fn refused(failure: &Failure) -> Option<Refused> {
    match failure {
        Failure::Service { body, .. } => serde_json::from_slice(body).ok(),
        Failure::Local { .. } => None,
    }
}

impl Lean {
    /// [`crate::store::Store::put_audit`] on this client.
    pub async fn put_audit(&self, table: &str, item: &Item) -> Result<AuditOutcome> {
        const OP: &str = "dynamodb.PutItem";
        let body = encode(OP, &ConditionalPut::new(table, item))?;
        match self.call(Service::DynamoDb, "PutItem", body).await {
            Ok(_) => Ok(AuditOutcome::Written),
            Err(f) if f.code() == Some("ConditionalCheckFailedException") => {
                let old = refused(&f).and_then(|r| r.item).and_then(item_from_json);
                Ok(AuditOutcome::Exists(old))
            }
            Err(f) => Err(f.into_error(OP)),
        }
    }

    /// [`crate::store::Store::put_new_all`] on this client.
    pub async fn put_new_all(
        &self,
        table: &str,
        items: &[&Item],
        token: &str,
    ) -> Result<TransactOutcome> {
        const OP: &str = "dynamodb.TransactWriteItems";
        let request = Transact {
            transact_items: items
                .iter()
                .map(|item| TransactPut {
                    put: ConditionalPut::new(table, item),
                })
                .collect(),
            client_request_token: token,
        };
        let body = encode(OP, &request)?;
        match self
            .call(Service::DynamoDb, "TransactWriteItems", body)
            .await
        {
            Ok(_) => Ok(TransactOutcome::AllWritten),
            Err(f) if f.code() == Some("TransactionCanceledException") => {
                match refused(&f).and_then(|r| r.cancellation_reasons) {
                    Some(reasons) if reasons.len() == items.len() => {
                        Ok(TransactOutcome::Cancelled(
                            reasons
                                .into_iter()
                                .map(|r| {
                                    let old = r.item.and_then(item_from_json);
                                    ItemVerdict::from_reason(r.code.as_deref(), old)
                                })
                                .collect(),
                        ))
                    }
                    _ => Err(f.into_error(OP)),
                }
            }
            Err(f) => Err(f.into_error(OP)),
        }
    }
}
