//! etcd's JSON mapping of its protobuf messages: bytes in base64, 64-bit integers as
//! strings, and fields at their default value (0, false, empty) left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::{Compare, KeyValue, Op};

pub(crate) fn bytes(value: &[u8]) -> Value {
    Value::String(BASE64.encode(value))
}

/// A 64-bit integer as etcd writes it (a string), or as JSON writes it; absent is 0.
pub(crate) fn int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Null => Ok(0),
        Value::String(text) => text
            .parse()
            .map_err(|_| format!("`{text}` is not an integer")),
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| format!("{number} is not a 64-bit integer")),
        other => Err(format!("{other} is not an integer")),
    }
}

fn decode(value: &Value) -> Result<Vec<u8>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => BASE64
            .decode(text)
            .map_err(|error| format!("`{text}` is not base64: {error}")),
        other => Err(format!("{other} is not base64 text")),
    }
}

pub(crate) fn key_value(value: &Value) -> Result<KeyValue, String> {
    Ok(KeyValue {
        key: decode(&value["key"])?,
        value: decode(&value["value"])?,
        create_revision: int(&value["create_revision"])?,
        mod_revision: int(&value["mod_revision"])?,
        lease: int(&value["lease"])?,
    })
}

pub(crate) fn key_values(value: &Value) -> Result<Vec<KeyValue>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(key_value).collect(),
        other => Err(format!("kvs is {other}, not a list")),
    }
}

pub(crate) fn compare(compare: &Compare) -> Value {
    match compare {
        Compare::CreatedAt { key, revision } => json!({
            "target": "CREATE",
            "result": "EQUAL",
            "key": bytes(key),
            "create_revision": revision.to_string(),
        }),
    }
}

pub(crate) fn op(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => {
            let mut put = json!({"key": bytes(key), "value": bytes(value)});
            if *lease != 0 {
                put["lease"] = Value::String(lease.to_string());
            }
            json!({ "request_put": put })
        }
        Op::Delete { key } => json!({"request_delete_range": {"key": bytes(key)}}),
        Op::Get { key } => json!({"request_range": {"key": bytes(key)}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_integers_and_bytes_read_as_etcd_writes_them() {
        let kv = key_value(&json!({
            "key": "L2xoL2E=",
            "create_revision": "2",
            "mod_revision": "5",
            "value": "Z3cx",
            "lease": "2324035836473637127"
        }))
        .expect("a key-value");
        assert_eq!(kv.key, b"/lh/a");
        assert_eq!(kv.value, b"gw1");
        assert_eq!(kv.create_revision, 2);
        assert_eq!(kv.mod_revision, 5);
        assert_eq!(kv.lease, 2_324_035_836_473_637_127);
        // Fields at their default are left out.
        let bare = key_value(&json!({"key": "YQ=="})).expect("a bare key-value");
        assert_eq!((bare.value.len(), bare.lease), (0, 0));
        assert!(int(&json!("x1")).is_err());
        assert!(key_value(&json!({"key": "***"})).is_err());
    }
}
