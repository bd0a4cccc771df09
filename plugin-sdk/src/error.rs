//! The error a plugin's `initialize` or `run` returns.
//!
//! It carries the protocol error code (contracts §3) so that the supervisor can tell
//! a bad input from an unreachable target or a missing tool without parsing text.

use serde_json::Value;

use crate::protocol::{code, RpcError};

/// A plugin failure, answered to the supervisor as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl PluginError {
    /// An error with any code; prefer the named constructors.
    pub fn new(code: i64, message: impl Into<String>) -> PluginError {
        PluginError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The run's inputs are missing a field or have the wrong shape (`-32001`).
    pub fn invalid_inputs(message: impl Into<String>) -> PluginError {
        PluginError::new(code::INVALID_INPUTS, message)
    }

    /// The target could not be reached (`-32002`).
    pub fn unreachable(message: impl Into<String>) -> PluginError {
        PluginError::new(code::TARGET_UNREACHABLE, message)
    }

    /// A tool the plugin drives is not installed or not on PATH (`-32003`).
    pub fn missing_tool(message: impl Into<String>) -> PluginError {
        PluginError::new(code::MISSING_TOOL, message)
    }

    /// The run stopped because the supervisor sent `cancel` (`-32800`).
    pub fn cancelled() -> PluginError {
        PluginError::new(code::CANCELLED, "run cancelled")
    }

    /// The plugin's config has a value it cannot use (`-32602`, invalid params).
    pub fn invalid_config(message: impl Into<String>) -> PluginError {
        PluginError::new(code::INVALID_PARAMS, message)
    }

    /// Anything else that went wrong inside the plugin (`-32603`).
    pub fn internal(message: impl Into<String>) -> PluginError {
        PluginError::new(code::INTERNAL_ERROR, message)
    }

    /// Attaches structured detail, sent as the JSON-RPC error's `data`.
    pub fn with_data(mut self, data: Value) -> PluginError {
        self.data = Some(data);
        self
    }

    pub fn code(&self) -> i64 {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// Whether this is the cancellation error.
    pub fn is_cancelled(&self) -> bool {
        self.code == code::CANCELLED
    }

    /// The wire form.
    pub fn to_rpc_error(&self) -> RpcError {
        RpcError {
            code: self.code,
            message: self.message.clone(),
            data: self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_constructors_carry_the_protocol_codes() {
        assert_eq!(PluginError::invalid_inputs("x").code(), -32001);
        assert_eq!(PluginError::unreachable("x").code(), -32002);
        assert_eq!(PluginError::missing_tool("x").code(), -32003);
        assert_eq!(PluginError::cancelled().code(), -32800);
        assert!(PluginError::cancelled().is_cancelled());
        let wire = PluginError::invalid_inputs("inputs.target is missing").to_rpc_error();
        assert_eq!(wire.message, "inputs.target is missing");
    }
}
