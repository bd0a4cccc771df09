//! Turning the supervisor's lines into requests for the session.
//!
//! A `run` line can be hundreds of megabytes (an enricher or analytics plugin
//! gets a scan's findings in it), so it is parsed once, straight into the typed
//! params: a request whose `method` comes before its `params` (as the
//! supervisor writes it) in a single pass ([`Direct`]). Any other line is read
//! again as an [`Envelope`] with `params` left as raw text, whose params are
//! then deserialised on their own, so that a bad line gets the precise JSON-RPC
//! error; only a line of the wrong shape is parsed a third time, as a generic
//! JSON value, to find the id to answer.

use std::fmt;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::protocol::{code, method, Id, InitializeParams, MessageKind, RpcError, RunParams};

/// A request the session serves, with its params already parsed (or the
/// `-32602` answer they deserve, given only once the request is in order).
#[derive(Debug)]
pub(crate) enum Request {
    Initialize {
        id: Id,
        params: Result<Box<InitializeParams>, RpcError>,
    },
    Run {
        id: Id,
        params: Result<RunParams, RpcError>,
    },
    Shutdown {
        id: Id,
    },
}

/// What one line from the supervisor asks for.
#[derive(Debug)]
pub(crate) enum Line {
    /// A request for the session.
    Request(Request),
    /// The supervisor's `cancel`.
    Cancel,
    /// A notification or response that needs nothing done.
    Ignored,
    /// A line answered at once with an error.
    Refused { id: Id, error: RpcError },
}

/// A JSON-RPC message's members, `params` unparsed. The members mirror
/// [`crate::protocol::Message`], so a line is accepted or refused alike.
#[derive(Deserialize)]
struct Envelope<'a> {
    jsonrpc: String,
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// Parses one line (without its newline).
pub(crate) fn parse_line(line: &[u8]) -> Line {
    // UTF-8 is checked once for the whole line: parsing from a `str`, serde_json
    // does not check every string again (millions of them in a `run` line).
    let direct = std::str::from_utf8(line)
        .ok()
        .and_then(|text| serde_json::from_str::<Direct>(text).ok());
    match direct {
        Some(Direct(request)) => Line::Request(request),
        None => parse_envelope(line),
    }
}

/// A well-formed `initialize`, `run` or `shutdown` request with `method`
/// before `params`, parsed in one pass. Anything else fails, to be parsed
/// again by [`parse_envelope`]; the error itself is not used.
struct Direct(Request);

/// The members [`Direct`] tells apart.
enum Member {
    Jsonrpc,
    Id,
    Method,
    Params,
    /// `result` or `error`: not a request, so the slow path classifies it.
    Answer,
    /// Ignored, as [`Envelope`] ignores it.
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        struct MemberVisitor;
        impl Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "jsonrpc" => Member::Jsonrpc,
                    "id" => Member::Id,
                    "method" => Member::Method,
                    "params" => Member::Params,
                    "result" | "error" => Member::Answer,
                    _ => Member::Other,
                })
            }
        }
        deserializer.deserialize_identifier(MemberVisitor)
    }
}

/// The params of a [`Direct`] request, typed by the method read before them.
enum DirectParams {
    Absent,
    Initialize(Box<InitializeParams>),
    Run(RunParams),
}

impl<'de> Deserialize<'de> for Direct {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Direct, D::Error> {
        struct DirectVisitor;
        impl<'de> Visitor<'de> for DirectVisitor {
            type Value = Direct;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC request")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Direct, A::Error> {
                let slow = || de::Error::custom("not a request for the direct path");
                let (mut jsonrpc, mut id, mut name) = (None::<String>, None::<Id>, None::<String>);
                let mut params = DirectParams::Absent;
                while let Some(member) = map.next_key::<Member>()? {
                    match member {
                        Member::Jsonrpc if jsonrpc.is_none() => jsonrpc = Some(map.next_value()?),
                        Member::Id if id.is_none() => id = Some(map.next_value()?),
                        Member::Method if name.is_none() => name = Some(map.next_value()?),
                        Member::Params if matches!(params, DirectParams::Absent) => {
                            params = match name.as_deref() {
                                Some(method::INITIALIZE) => {
                                    DirectParams::Initialize(map.next_value()?)
                                }
                                Some(method::RUN) => DirectParams::Run(map.next_value()?),
                                Some(method::SHUTDOWN) => {
                                    map.next_value::<IgnoredAny>()?;
                                    DirectParams::Absent
                                }
                                _ => return Err(slow()),
                            }
                        }
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => return Err(slow()),
                    }
                }
                // A null id makes a notification: not for this path.
                let id = id.filter(|id| !id.is_null()).ok_or_else(slow)?;
                if jsonrpc.as_deref() != Some("2.0") {
                    return Err(slow());
                }
                let request = match (name.as_deref(), params) {
                    (Some(method::INITIALIZE), DirectParams::Initialize(params)) => {
                        Request::Initialize {
                            id,
                            params: Ok(params),
                        }
                    }
                    (Some(method::RUN), DirectParams::Run(params)) => Request::Run {
                        id,
                        params: Ok(params),
                    },
                    (Some(method::SHUTDOWN), _) => Request::Shutdown { id },
                    _ => return Err(slow()),
                };
                Ok(Direct(request))
            }
        }
        deserializer.deserialize_map(DirectVisitor)
    }
}

/// The slow path: the members first, `params` as raw text, then the params.
fn parse_envelope(line: &[u8]) -> Line {
    let envelope: Envelope = match serde_json::from_slice(line) {
        Ok(envelope) => envelope,
        Err(err) => return refused(line, &err),
    };
    let kind = MessageKind::of(
        &envelope.jsonrpc,
        envelope.method.is_some(),
        envelope.id.is_some(),
        envelope.result.is_some(),
        envelope.error.is_some(),
    );
    match (kind, envelope.method, envelope.id) {
        (MessageKind::Request, Some(name), Some(id)) => match name.as_str() {
            method::INITIALIZE => Line::Request(Request::Initialize {
                id,
                params: params(method::INITIALIZE, envelope.params),
            }),
            method::RUN => Line::Request(Request::Run {
                id,
                params: params(method::RUN, envelope.params),
            }),
            method::SHUTDOWN => Line::Request(Request::Shutdown { id }),
            other => Line::Refused {
                id,
                error: RpcError::new(code::METHOD_NOT_FOUND, format!("unknown method {other:?}")),
            },
        },
        (MessageKind::Notification, Some(name), _) if name == method::CANCEL => Line::Cancel,
        // Unknown notifications are for later protocol versions. The plugin
        // sends no requests, so a response is unexpected; JSON-RPC forbids
        // answering it.
        (MessageKind::Notification | MessageKind::Response, _, _) => Line::Ignored,
        (_, _, id) => Line::Refused {
            id: id.unwrap_or(Value::Null),
            error: RpcError::new(
                code::INVALID_REQUEST,
                "invalid request: not a JSON-RPC 2.0 request",
            ),
        },
    }
}

/// Deserialises a request's params; absent params are `null`.
fn params<T: DeserializeOwned>(method: &str, raw: Option<&RawValue>) -> Result<T, RpcError> {
    serde_json::from_str(raw.map_or("null", RawValue::get))
        .map_err(|err| RpcError::new(code::INVALID_PARAMS, format!("{method} params: {err}")))
}

/// The answer to a line that is not a message: a parse error when it is not
/// JSON, else an invalid request carrying the line's `id` when it has one.
fn refused(line: &[u8], err: &serde_json::Error) -> Line {
    if !err.is_data() {
        return Line::Refused {
            id: Value::Null,
            error: RpcError::new(code::PARSE_ERROR, format!("parse error: {err}")),
        };
    }
    // Well-formed JSON of the wrong shape: the second parse only looks for the id.
    let id = serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|value| value.get("id").cloned())
        .unwrap_or(Value::Null);
    Line::Refused {
        id,
        error: RpcError::new(code::INVALID_REQUEST, format!("invalid request: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(line: &str) -> (Id, i64) {
        match parse_line(line.as_bytes()) {
            Line::Refused { id, error } => (id, error.code),
            other => panic!("{line} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_run_request_arrives_with_its_inputs_parsed() {
        let line = r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":{"findings":[{"id":1}]}}}"#;
        let Line::Request(Request::Run { id, params }) = parse_line(line.as_bytes()) else {
            panic!("not a run request");
        };
        assert_eq!(id, json!(2));
        assert_eq!(params.unwrap().inputs["findings"][0]["id"], 1);
    }

    #[test]
    fn unknown_members_are_ignored_on_either_path() {
        for line in [
            r#"{"jsonrpc":"2.0","id":3,"trace":{"a":[1]},"method":"shutdown"}"#,
            r#"{"trace":1,"id":3,"method":"shutdown","params":{},"jsonrpc":"2.0"}"#,
        ] {
            assert!(
                matches!(parse_line(line.as_bytes()), Line::Request(Request::Shutdown { ref id }) if *id == json!(3)),
                "{line}"
            );
        }
    }

    #[test]
    fn a_request_with_a_result_member_is_invalid_on_the_direct_path_too() {
        assert_eq!(
            refusal(r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{},"result":{}}"#),
            (json!(2), code::INVALID_REQUEST)
        );
        assert_eq!(
            refusal(r#"{"jsonrpc":"2.0","id":2,"method":"run","method":"run","params":{}}"#),
            (json!(2), code::INVALID_REQUEST)
        );
    }

    #[test]
    fn params_before_method_parse_the_same() {
        let line = r#"{"params":{"inputs":{"n":1}},"method":"run","id":"a","jsonrpc":"2.0"}"#;
        let Line::Request(Request::Run { id, params }) = parse_line(line.as_bytes()) else {
            panic!("not a run request");
        };
        assert_eq!(id, json!("a"));
        assert_eq!(params.unwrap().inputs["n"], 1);
    }

    #[test]
    fn malformed_params_become_an_invalid_params_answer_for_the_session() {
        let line = r#"{"jsonrpc":"2.0","id":2,"method":"run","params":{"inputs":[1]}}"#;
        let Line::Request(Request::Run { params, .. }) = parse_line(line.as_bytes()) else {
            panic!("not a run request");
        };
        let error = params.unwrap_err();
        assert_eq!(error.code, code::INVALID_PARAMS);
        assert!(
            error.message.starts_with("run params: "),
            "{}",
            error.message
        );
        let missing = r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#;
        let Line::Request(Request::Initialize { params, .. }) = parse_line(missing.as_bytes())
        else {
            panic!("not an initialize request");
        };
        assert_eq!(params.unwrap_err().code, code::INVALID_PARAMS);
    }

    #[test]
    fn a_line_that_is_not_json_is_a_parse_error_without_an_id() {
        assert_eq!(
            refusal("this is not json"),
            (Value::Null, code::PARSE_ERROR)
        );
        assert_eq!(
            refusal(r#"{"jsonrpc":"2.0","id":4,"method":"run","params":{"#),
            (Value::Null, code::PARSE_ERROR)
        );
    }

    #[test]
    fn json_that_is_not_a_request_is_an_invalid_request_answered_to_its_id() {
        assert_eq!(
            refusal(r#"{"id":9,"method":"run"}"#),
            (json!(9), code::INVALID_REQUEST)
        );
        assert_eq!(
            refusal(r#"{"jsonrpc":"2.0","id":9,"method":7}"#),
            (json!(9), code::INVALID_REQUEST)
        );
        assert_eq!(
            refusal(r#"{"jsonrpc":"1.0","id":9,"method":"run"}"#),
            (json!(9), code::INVALID_REQUEST)
        );
        assert_eq!(refusal("[1,2]"), (Value::Null, code::INVALID_REQUEST));
    }

    #[test]
    fn unknown_requests_are_refused_and_unknown_notifications_and_responses_ignored() {
        assert_eq!(
            refusal(r#"{"jsonrpc":"2.0","id":7,"method":"teleport","params":{}}"#),
            (json!(7), code::METHOD_NOT_FOUND)
        );
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","method":"teleport","params":{}}"#),
            Line::Ignored
        ));
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Line::Ignored
        ));
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","method":"cancel","params":{"reason":"deadline"}}"#),
            Line::Cancel
        ));
    }
}
