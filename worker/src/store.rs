//! DynamoDB writes. The audit write is a conditional put on the item key, so a repeat of
//! an update is detected by DynamoDB itself, atomically, across every replica.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use crate::error::ErrorClass;
use crate::lean::Lean;

use crate::error::{Error, Result};
use crate::model::attr;

/// Result of a conditional put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The key already existed: the update was written before (a duplicate, not an error).
    AlreadyExists,
}

/// An item as DynamoDB returns it.
pub type Item = HashMap<String, AttributeValue>;

/// Result of [`Store::put_audit`].
#[derive(Clone, Debug, PartialEq)]
pub enum AuditOutcome {
    Written,
    /// The key exists; DynamoDB's copy of the existing item (when the backend returns it),
    /// to tell this attempt's own earlier write, a repeat and a key conflict apart.
    Exists(Option<Item>),
}

/// Result of [`Store::put_new_all`].
#[derive(Clone, Debug, PartialEq)]
pub enum TransactOutcome {
    AllWritten,
    /// Nothing was written; one verdict per item, in order.
    Cancelled(Vec<ItemVerdict>),
}

/// Why a cancelled transaction did not write an item.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemVerdict {
    /// The item was fine; another one cancelled the transaction.
    Fine,
    /// The key exists. DynamoDB's copy of the existing item when the backend returns it
    /// (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), to judge it without another call.
    AlreadyExists(Option<Item>),
    /// Throttling or a conflicting concurrent write: try again.
    Retry,
    /// The item itself was rejected (e.g. too large).
    Rejected,
}

impl ItemVerdict {
    /// The verdict of one cancellation reason: its code and, for a failed condition, the
    /// existing item.
    pub fn from_reason(code: Option<&str>, old: Option<Item>) -> Self {
        match code {
            None | Some("None") | Some("") => ItemVerdict::Fine,
            Some("ConditionalCheckFailed") => ItemVerdict::AlreadyExists(old),
            Some("ValidationError") | Some("ItemCollectionSizeLimitExceeded") => {
                ItemVerdict::Rejected
            }
            Some(_) => ItemVerdict::Retry,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The hot-path writes (`put_audit`, `put_new_all`) go through it when set.
    lean: Option<Arc<Lean>>,
}

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            lean: None,
        }
    }

    /// The same, with the audit writes made by the lean client.
    pub fn with_lean(mut self, lean: Option<Arc<Lean>>) -> Self {
        self.lean = lean;
        self
    }

    /// Puts `item` unless an item with its key exists.
    pub async fn put_new(&self, item: HashMap<String, AttributeValue>) -> Result<PutOutcome> {
        self.put_if(item, "attribute_not_exists(#pk)", &[], HashMap::new())
            .await
    }

    /// Puts an audit item unless its key exists; on a failed condition DynamoDB returns the
    /// existing item (`ReturnValuesOnConditionCheckFailure=ALL_OLD`, no extra read).
    pub async fn put_audit(&self, item: &Item) -> Result<AuditOutcome> {
        if let Some(lean) = &self.lean {
            return lean.put_audit(&self.table, item).await;
        }
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            // The SDK takes the item by value: one copy per attempt, none kept around.
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::TRACKING_ID)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(AuditOutcome::Written),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => {
                    Ok(AuditOutcome::Exists(c.item().cloned()))
                }
                _ => Err(Error::aws("dynamodb.PutItem", e)),
            },
        }
    }

    /// Puts `item` if `condition` holds (`#pk` names the partition key; `names` adds more).
    pub async fn put_if(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        names: &[(&str, &str)],
        values: HashMap<String, AttributeValue>,
    ) -> Result<PutOutcome> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#pk", attr::TRACKING_ID);
        for (placeholder, name) in names {
            req = req.expression_attribute_names(*placeholder, *name);
        }
        if !values.is_empty() {
            req = req.set_expression_attribute_values(Some(values));
        }
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(Error::aws("dynamodb.PutItem", e)),
        }
    }

    /// Puts every item unless its key exists, in one `TransactWriteItems` call: one request
    /// for a whole batch instead of one per message (at twice the write units, which at this
    /// volume is cents a day, against a several-fold cut in calls and CPU). A cancelled
    /// transaction reports, per item, why (`ConditionalCheckFailed` = the key exists, with the
    /// existing item, as [`Store::put_audit`] gets it). `token` makes a retry of a call whose
    /// answer was lost return the first outcome.
    pub async fn put_new_all(&self, items: &[&Item], token: &str) -> Result<TransactOutcome> {
        if let Some(lean) = &self.lean {
            return lean.put_new_all(&self.table, items, token).await;
        }
        let mut ops = Vec::with_capacity(items.len());
        for item in items {
            // The SDK takes its input by value: this is the one copy of the item per call.
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some((*item).clone()))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::TRACKING_ID)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| Error::Aws {
                    operation: "dynamodb.TransactWriteItems",
                    class: ErrorClass::Permanent,
                    code: None,
                    message: e.to_string(),
                })?;
            ops.push(TransactWriteItem::builder().put(put).build());
        }
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
            .client_request_token(token)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(TransactOutcome::AllWritten),
            Err(e) => {
                let whole = matches!(
                    e.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(c))
                        if c.cancellation_reasons().len() == items.len()
                );
                if !whole {
                    return Err(Error::aws("dynamodb.TransactWriteItems", e));
                }
                // Taken by value: the existing items are moved out of the answer, not copied.
                match e.into_service_error() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        Ok(TransactOutcome::Cancelled(
                            c.cancellation_reasons
                                .unwrap_or_default()
                                .into_iter()
                                .map(|r| ItemVerdict::from_reason(r.code.as_deref(), r.item))
                                .collect(),
                        ))
                    }
                    other => Err(Error::Aws {
                        operation: "dynamodb.TransactWriteItems",
                        class: ErrorClass::Permanent,
                        code: None,
                        message: other.to_string(),
                    }),
                }
            }
        }
    }

    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::TRACKING_ID, AttributeValue::S(pk.into()))
            .key(attr::TIMESTAMP, AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb.GetItem", e))?;
        Ok(out.item)
    }

    /// Atomically adds `counts` to numeric attributes of the item (pk, sk), creating it.
    /// Adds `counts` to the item's counters once per `token`: the token is stored in the
    /// attribute it names and a retry carrying the same token is refused by the condition, so a
    /// flush whose answer was lost (a timeout after DynamoDB applied it) never counts twice.
    pub async fn add_counts(
        &self,
        pk: &str,
        sk: &str,
        counts: &[(String, u64)],
        extra_set: Option<(&str, AttributeValue)>,
        token: (&str, &str),
    ) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut adds = Vec::with_capacity(counts.len());
        for (i, (name, n)) in counts.iter().enumerate() {
            names.insert(format!("#a{i}"), name.clone());
            values.insert(format!(":v{i}"), AttributeValue::N(n.to_string()));
            adds.push(format!("#a{i} :v{i}"));
        }
        let (token_attr, token_value) = token;
        names.insert("#tok".into(), token_attr.to_string());
        values.insert(":tok".into(), AttributeValue::S(token_value.into()));
        let mut expr = format!("ADD {} SET #tok = :tok", adds.join(", "));
        if let Some((name, value)) = extra_set {
            names.insert("#x".into(), name.to_string());
            values.insert(":x".into(), value);
            expr.push_str(", #x = if_not_exists(#x, :x)");
        }
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::TRACKING_ID, AttributeValue::S(pk.into()))
            .key(attr::TIMESTAMP, AttributeValue::S(sk.into()))
            .update_expression(expr)
            .condition_expression("attribute_not_exists(#tok) OR #tok <> :tok")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // The same token is already there: an earlier attempt of this flush was applied.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::aws("dynamodb.UpdateItem", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_codes_map_to_verdicts() {
        let old: Item = [("k".to_string(), AttributeValue::S("v".into()))].into();
        assert_eq!(ItemVerdict::from_reason(None, None), ItemVerdict::Fine);
        assert_eq!(
            ItemVerdict::from_reason(Some("None"), None),
            ItemVerdict::Fine
        );
        assert_eq!(
            ItemVerdict::from_reason(Some("ConditionalCheckFailed"), Some(old.clone())),
            ItemVerdict::AlreadyExists(Some(old.clone()))
        );
        assert_eq!(
            ItemVerdict::from_reason(Some("ConditionalCheckFailed"), None),
            ItemVerdict::AlreadyExists(None)
        );
        assert_eq!(
            ItemVerdict::from_reason(Some("TransactionConflict"), None),
            ItemVerdict::Retry
        );
        assert_eq!(
            ItemVerdict::from_reason(Some("ThrottlingError"), None),
            ItemVerdict::Retry
        );
        assert_eq!(
            ItemVerdict::from_reason(Some("ValidationError"), None),
            ItemVerdict::Rejected
        );
    }
}
