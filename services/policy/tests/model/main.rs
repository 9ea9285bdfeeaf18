//! Behaviour of the policy model through its public API: strict parsing, validation, matching,
//! sampling and status stamping.

mod matching;
mod parse;
mod robustness;
mod status;
mod validate;

use boifi_policy::{compile, parse_policy, CompiledPolicy, Policy, ValidationErrors};
use serde_json::Value;

/// The design brief's example policy, in the existing BOIFI format.
pub const EXISTING_FORMAT: &str = include_str!("../fixtures/existing-format.json");
/// The same format with the `http_status` alias, a delay-only rule and a `status` block.
pub const EXISTING_FORMAT_HTTP_STATUS: &str =
    include_str!("../fixtures/existing-format-http-status.json");

pub fn example() -> Value {
    serde_json::from_str(EXISTING_FORMAT).expect("fixture is JSON")
}

/// Parse strictly and compile, as the API does on a write.
pub fn check(value: &Value) -> Result<CompiledPolicy, ValidationErrors> {
    let policy = parse_policy(&serde_json::to_vec(value).expect("serializes"))?;
    compile(&policy)
}

pub fn parse_value(value: &Value) -> Policy {
    parse_policy(&serde_json::to_vec(value).expect("serializes")).expect("parses")
}

/// The field paths of the errors, in order.
pub fn fields(errors: &ValidationErrors) -> Vec<&str> {
    errors.errors.iter().map(|e| e.field.as_str()).collect()
}

/// Sets `value` at a JSON pointer whose parent exists, creating the last key if needed.
pub fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no parent for {pointer}"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("array index");
            items[index] = value;
        }
        _ => panic!("parent of {pointer} is not a container"),
    }
}

pub fn remove(doc: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    doc.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|map| map.remove(key))
        .unwrap_or_else(|| panic!("nothing at {pointer}"));
}
