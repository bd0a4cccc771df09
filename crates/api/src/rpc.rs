//! JSON-RPC 2.0 framing for the executor API: one JSON object per line.
//!
//! Reading is bounded: a line longer than `api.max_request_bytes` is never held
//! whole; it is skipped up to its newline and answered with an error, so one
//! oversized request costs the peer that request, not the connection. Parsing
//! tells requests (answered), notifications (executed, never answered) and
//! malformed messages (answered with the JSON-RPC error that names why) apart.

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Error codes of the API: JSON-RPC's own, then this API's (contracts §2).
pub mod code {
    pub use secflow_plugin_sdk::protocol::code::{
        INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
    };
    /// The peer's uid/gid is not allowed on this socket; the connection is closed.
    pub const UNAUTHORIZED: i64 = -32010;
    /// `api.max_connections` connections are open; the connection is closed.
    pub const TOO_MANY_CONNECTIONS: i64 = -32011;
    /// The daemon is draining for shutdown and takes no new runs.
    pub const SHUTTING_DOWN: i64 = -32012;
    /// `runs.max_queued` runs already wait for a slot.
    pub const QUEUE_FULL: i64 = -32013;
    /// The named plugin or run does not exist.
    pub const NOT_FOUND: i64 = -32014;
    /// The plugin is listed but cannot run at all (its manifest is unreadable).
    pub const UNRUNNABLE: i64 = -32015;
}

/// A JSON-RPC error answer, before it is framed.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFailure {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcFailure {
    pub fn new(code: i64, message: impl Into<String>) -> RpcFailure {
        RpcFailure {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcFailure {
        RpcFailure::new(code::INVALID_PARAMS, message)
    }

    pub fn with_data(mut self, data: Value) -> RpcFailure {
        self.data = Some(data);
        self
    }
}

/// One well-formed call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `None` for a notification (no answer is sent).
    pub id: Option<Value>,
    pub method: String,
    /// `params` as sent; absent params are `Value::Null`.
    pub params: Value,
}

/// A line that is not a well-formed call, with the id to answer to (`null`
/// when it could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub id: Value,
    pub failure: RpcFailure,
}

/// Classifies one line.
pub fn parse_line(line: &[u8]) -> Result<Call, Malformed> {
    let malformed = |id: Value, code: i64, message: String| Malformed {
        id,
        failure: RpcFailure::new(code, message),
    };
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        malformed(
            Value::Null,
            code::PARSE_ERROR,
            format!("request is not valid JSON: {e}"),
        )
    })?;
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(malformed(
                Value::Null,
                code::INVALID_REQUEST,
                "batch requests are not supported; send one request per line".into(),
            ))
        }
        _ => {
            return Err(malformed(
                Value::Null,
                code::INVALID_REQUEST,
                "a request must be a JSON object".into(),
            ))
        }
    };
    let id = object.remove("id");
    let answer_to = match &id {
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => id.clone(),
        Some(_) => {
            return Err(malformed(
                Value::Null,
                code::INVALID_REQUEST,
                "\"id\" must be a string, a number or null".into(),
            ))
        }
        None => Value::Null,
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(malformed(
            answer_to,
            code::INVALID_REQUEST,
            "\"jsonrpc\" must be \"2.0\"".into(),
        ));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        _ => {
            return Err(malformed(
                answer_to,
                code::INVALID_REQUEST,
                "\"method\" must be a string".into(),
            ))
        }
    };
    let params = object.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Object(_) | Value::Array(_)) {
        return Err(malformed(
            answer_to,
            code::INVALID_REQUEST,
            "\"params\" must be an object or an array".into(),
        ));
    }
    Ok(Call { id, method, params })
}

/// What a method answers with.
#[derive(Debug)]
pub enum Answer {
    /// A JSON tree.
    Tree(Value),
    /// JSON text already serialised (a page of stored findings, assembled
    /// from their stored text without a tree).
    Text(JsonText),
}

/// JSON text assembled from pieces that are JSON text already: it goes into
/// the answer line as it is, neither built into a tree nor parsed again.
#[derive(Debug)]
pub struct JsonText(String);

impl JsonText {
    /// `{"<array>":<items>}` and then each present integer member, in that
    /// order; `items` is the text of a JSON array.
    pub fn object_with_array(
        array: &str,
        items: &str,
        integers: &[(&str, Option<i64>)],
    ) -> JsonText {
        let key = |name: &str| Value::from(name).to_string();
        let mut text = String::with_capacity(items.len() + 64);
        text.push('{');
        text.push_str(&key(array));
        text.push(':');
        text.push_str(items);
        for (name, value) in integers {
            if let Some(value) = value {
                text.push(',');
                text.push_str(&key(name));
                text.push(':');
                text.push_str(&value.to_string());
            }
        }
        text.push('}');
        JsonText(text)
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl From<Box<RawValue>> for JsonText {
    fn from(text: Box<RawValue>) -> JsonText {
        JsonText(String::from(text.get()))
    }
}

impl From<Value> for Answer {
    fn from(value: Value) -> Answer {
        Answer::Tree(value)
    }
}

/// The answer line (newline included) for a call's outcome.
pub fn response_line(id: Value, outcome: Result<Answer, RpcFailure>) -> String {
    let mut message = Map::new();
    message.insert("jsonrpc".into(), json!("2.0"));
    message.insert("id".into(), id);
    match outcome {
        Ok(Answer::Tree(result)) => {
            message.insert("result".into(), result);
        }
        Ok(Answer::Text(result)) => {
            // The members in the order the tree gives them (sorted), then the
            // text as it is.
            let mut line = Value::Object(message).to_string();
            line.pop();
            line.push_str(",\"result\":");
            line.push_str(result.get());
            line.push_str("}\n");
            return line;
        }
        Err(failure) => {
            let mut error = Map::new();
            error.insert("code".into(), json!(failure.code));
            error.insert("message".into(), json!(failure.message));
            if let Some(data) = failure.data {
                error.insert("data".into(), data);
            }
            message.insert("error".into(), Value::Object(error));
        }
    }
    let mut line = Value::Object(message).to_string();
    line.push('\n');
    line
}

/// What one bounded read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Line(Vec<u8>),
    /// A line longer than the bound; it was read to its end and dropped.
    TooLong,
    Eof,
}

/// Reads one line (without its `\n`), holding at most `max` bytes of it. A
/// final line without a newline counts as a line.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Frame> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Frame::TooLong,
                (false, true) => Frame::Eof,
                (false, false) => Frame::Line(line),
            });
        }
        let (chunk, consumed, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], at + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(consumed);
        if ended {
            return Ok(if too_long {
                Frame::TooLong
            } else {
                Frame::Line(line)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_id_method_and_params() {
        let call = parse_line(
            br#"{"jsonrpc":"2.0","id":"a1","method":"runs.get","params":{"run_id":"x"}}"#,
        )
        .unwrap();
        assert_eq!(call.id, Some(json!("a1")));
        assert_eq!(call.method, "runs.get");
        assert_eq!(call.params, json!({"run_id": "x"}));
    }

    #[test]
    fn a_message_without_id_is_a_notification_and_a_null_id_is_a_request() {
        let call = parse_line(br#"{"jsonrpc":"2.0","method":"system.health"}"#).unwrap();
        assert_eq!(call.id, None);
        assert_eq!(call.params, Value::Null);
        let call = parse_line(br#"{"jsonrpc":"2.0","id":null,"method":"system.health"}"#).unwrap();
        assert_eq!(call.id, Some(Value::Null));
    }

    #[test]
    fn bad_json_is_a_parse_error_answered_to_null() {
        let bad = parse_line(b"{not json").unwrap_err();
        assert_eq!(bad.failure.code, code::PARSE_ERROR);
        assert_eq!(bad.id, Value::Null);
    }

    #[test]
    fn malformed_requests_are_invalid_requests_answered_to_their_id() {
        for (line, id) in [
            (
                &br#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#[..],
                Value::Null,
            ),
            (br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#, json!(7)),
            (br#"{"jsonrpc":"2.0","id":7,"method":3}"#, json!(7)),
            (
                br#"{"jsonrpc":"2.0","id":7,"method":"x","params":3}"#,
                json!(7),
            ),
            (br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#, Value::Null),
        ] {
            let bad = parse_line(line).unwrap_err();
            assert_eq!(bad.failure.code, code::INVALID_REQUEST, "{line:?}");
            assert_eq!(bad.id, id, "{line:?}");
        }
    }

    #[test]
    fn a_page_of_json_texts_is_the_object_a_tree_would_give() {
        let items = r#"[{"id":1,"t":"a\"b"},{"id":2}]"#;
        let page = JsonText::object_with_array("findings", items, &[("next", Some(2))]);
        let parsed: Value = serde_json::from_str(page.get()).unwrap();
        assert_eq!(
            parsed,
            json!({"findings": [{"id": 1, "t": "a\"b"}, {"id": 2}], "next": 2})
        );
        let last = JsonText::object_with_array("findings", "[]", &[("next", None)]);
        assert_eq!(
            last.get(),
            r#"{"findings":[]}"#,
            "an absent member is left out"
        );
    }

    #[test]
    fn responses_are_one_line_with_result_or_error() {
        let ok = response_line(json!(1), Ok(json!({"a": 1}).into()));
        assert_eq!(ok, "{\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"a\":1}}\n");
        let text = RawValue::from_string("{\"a\":1}".into()).unwrap();
        assert_eq!(
            response_line(json!(1), Ok(Answer::Text(text.into()))),
            ok,
            "text answers make the same line as trees"
        );
        let err = response_line(
            json!("x"),
            Err(RpcFailure::new(code::METHOD_NOT_FOUND, "no").with_data(json!({"m": 1}))),
        );
        let parsed: Value = serde_json::from_str(err.trim_end()).unwrap();
        assert_eq!(parsed["error"]["code"], -32601);
        assert_eq!(parsed["error"]["data"]["m"], 1);
        assert!(parsed.get("result").is_none());
    }

    #[tokio::test]
    async fn an_oversized_line_is_skipped_and_the_next_line_is_read() {
        let input = format!("{}\nshort\nlast", "x".repeat(100));
        let mut reader = tokio::io::BufReader::with_capacity(16, input.as_bytes());
        assert_eq!(read_frame(&mut reader, 10).await.unwrap(), Frame::TooLong);
        assert_eq!(
            read_frame(&mut reader, 10).await.unwrap(),
            Frame::Line(b"short".to_vec())
        );
        assert_eq!(
            read_frame(&mut reader, 10).await.unwrap(),
            Frame::Line(b"last".to_vec())
        );
        assert_eq!(read_frame(&mut reader, 10).await.unwrap(), Frame::Eof);
    }
}
