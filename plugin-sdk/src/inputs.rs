//! Reading the fields a plugin requires from a run's `inputs`.
//!
//! A field that is missing or of the wrong shape is the caller's mistake, not
//! the plugin's failure: it is answered as invalid inputs (`-32001`) with a
//! message naming the field, the same way in every plugin.

use serde_json::{Map, Value};

use crate::PluginError;

/// The string field `name` of a run's inputs; an invalid-inputs error
/// (`inputs.<name> is missing or not a string`) when it is absent or not a string.
pub fn input_str<'a>(inputs: &'a Map<String, Value>, name: &str) -> Result<&'a str, PluginError> {
    inputs.get(name).and_then(Value::as_str).ok_or_else(|| {
        PluginError::invalid_inputs(format!("inputs.{name} is missing or not a string"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_string_field_is_read_as_it_is() {
        let inputs = inputs(json!({"target": "http://h:8080/"}));
        assert_eq!(input_str(&inputs, "target"), Ok("http://h:8080/"));
    }

    #[test]
    fn a_missing_or_non_string_field_is_invalid_inputs_naming_the_field() {
        for value in [json!({}), json!({"target": 8080}), json!({"target": null})] {
            let err = input_str(&inputs(value), "target").expect_err("refused");
            assert_eq!(err.code(), -32001);
            assert_eq!(err.to_string(), "inputs.target is missing or not a string");
        }
    }
}
