//! Loading a nuclei template: YAML text → a checked [`Template`], or a [`Skip`]
//! that names every feature this engine does not implement.
//!
//! Every key of the template is looked at: a key we do not know, a protocol other
//! than `http`, a matcher type, DSL function or `{{placeholder}}` we cannot
//! evaluate makes the template skipped with that feature named, never silently
//! half-run. The YAML is parsed with `yaml-rust2` (pure Rust, YAML 1.2) into a
//! JSON value first, so the walk below is over one simple tree.

use std::collections::BTreeSet;

use regex::bytes::Regex;
use secflow_plugin_sdk::Severity;
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::dsl::{self, Expr};

/// A template that cannot be read at all (as opposed to one that is skipped).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {source_name}: invalid YAML: {reason}")]
    Yaml { source_name: String, reason: String },
    #[error("template {source_name}: {reason}")]
    Shape { source_name: String, reason: String },
}

/// A template this engine will not run, with the features that stop it.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub id: String,
    pub source_name: String,
    /// Short feature names (`protocol dns`, `matcher type xpath`, `dsl function md5`).
    pub features: Vec<String>,
}

/// What loading one template produced.
#[derive(Debug)]
pub enum Loaded {
    Ready(Box<Template>),
    Skipped(Skip),
}

/// A template ready to run.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub source_name: String,
    pub info: Info,
    /// Top-level `variables`, in order (later ones may use earlier ones).
    pub variables: Vec<(String, String)>,
    pub requests: Vec<HttpRequest>,
}

#[derive(Debug, Clone)]
pub struct Info {
    pub name: String,
    pub severity: Severity,
    pub description: Option<String>,
    pub remediation: Option<String>,
    pub references: Vec<String>,
    pub tags: Vec<String>,
    pub classification: Classification,
}

#[derive(Debug, Clone, Default)]
pub struct Classification {
    pub cve_ids: Vec<String>,
    pub cwe_ids: Vec<String>,
    pub cvss_metrics: Option<String>,
    pub cvss_score: Option<f64>,
    pub cpe: Vec<String>,
}

/// One entry of the `http:` list.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub shape: RequestShape,
    pub payloads: Vec<(String, Vec<String>)>,
    pub attack: Attack,
    pub stop_at_first_match: bool,
    pub matchers_condition: Condition,
    pub matchers: Vec<Matcher>,
    pub extractors: Vec<Extractor>,
    pub redirects: Redirects,
    pub max_size: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum RequestShape {
    /// `method` + `path` list, with `headers` and `body`.
    Paths {
        method: String,
        paths: Vec<String>,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
    /// `raw:` requests, written out as text.
    Raw { requests: Vec<String> },
}

impl RequestShape {
    /// The texts the requests are built from, where `{{…}}` placeholders may
    /// stand: paths, header values and body, or the raw requests.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            RequestShape::Paths {
                paths,
                headers,
                body,
                ..
            } => paths
                .iter()
                .map(String::as_str)
                .chain(headers.iter().map(|(_, v)| v.as_str()))
                .chain(body.iter().map(String::as_str))
                .collect(),
            RequestShape::Raw { requests } => requests.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    BatteringRam,
    Pitchfork,
    ClusterBomb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirects {
    pub follow: bool,
    pub same_host_only: bool,
    pub max: u32,
}

/// Which part of a response a matcher or extractor looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Body,
    Header,
    /// Header block and body (`all`, `response`, `raw`).
    All,
    Status,
    /// One named field: a header (`content_type`, `server`) or a variable.
    Field(String),
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub kind: MatcherKind,
    pub name: Option<String>,
    pub part: Part,
    pub condition: Condition,
    pub negative: bool,
    pub case_insensitive: bool,
    pub internal: bool,
}

#[derive(Debug, Clone)]
pub enum MatcherKind {
    Word(Vec<String>),
    Regex(Vec<Regex>),
    Status(Vec<u16>),
    Size(Vec<usize>),
    Binary(Vec<Vec<u8>>),
    Dsl(Vec<Expr>),
}

#[derive(Debug, Clone)]
pub struct Extractor {
    pub kind: ExtractorKind,
    pub name: Option<String>,
    pub part: Part,
    pub internal: bool,
    pub case_insensitive: bool,
}

#[derive(Debug, Clone)]
pub enum ExtractorKind {
    Regex { regexes: Vec<Regex>, group: usize },
    Kval(Vec<String>),
    Dsl(Vec<Expr>),
    Json(Vec<JsonPath>),
}

/// A jq filter of the simple form nuclei templates use: `.a.b[0]`, `.items[].name`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(pub Vec<JsonStep>);

#[derive(Debug, Clone, PartialEq)]
pub enum JsonStep {
    Key(String),
    Index(usize),
    Each,
}

/// Variables every request has (nuclei's names).
pub const BUILTIN_VARIABLES: &[&str] = &[
    "BaseURL", "RootURL", "Hostname", "Host", "Port", "Path", "File", "Scheme", "FQDN", "RDN",
    "DN", "SD", "TLD", "randstr",
];

/// Response fields a `dsl` expression may read besides header names.
pub const RESPONSE_VARIABLES: &[&str] = &[
    "body",
    "header",
    "all_headers",
    "status_code",
    "content_length",
    "content_type",
    "response",
    "raw",
    "duration",
    "host",
    "matched",
];

const TOP_LEVEL_KEYS: &[&str] = &["id", "info", "http", "requests", "variables"];
const OTHER_PROTOCOLS: &[&str] = &[
    "dns",
    "file",
    "tcp",
    "network",
    "headless",
    "ssl",
    "websocket",
    "whois",
    "code",
    "javascript",
    "workflows",
];
const REQUEST_KEYS: &[&str] = &[
    "method",
    "path",
    "raw",
    "headers",
    "body",
    "payloads",
    "attack",
    "stop-at-first-match",
    "matchers",
    "matchers-condition",
    "extractors",
    "redirects",
    "host-redirects",
    "max-redirects",
    "max-size",
    "unsafe",
    "cookie-reuse",
    "disable-cookie",
    "threads",
    "skip-variables-check",
    "read-all",
    "id",
    "name",
];
const MATCHER_KEYS: &[&str] = &[
    "type",
    "name",
    "part",
    "condition",
    "negative",
    "case-insensitive",
    "internal",
    "words",
    "regex",
    "status",
    "size",
    "binary",
    "dsl",
    "encoding",
    "match-all",
];
const EXTRACTOR_KEYS: &[&str] = &[
    "type",
    "name",
    "part",
    "group",
    "regex",
    "kval",
    "dsl",
    "json",
    "internal",
    "case-insensitive",
];

/// Default `max-redirects` when a template follows redirects without a bound.
const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// Parses one template's text. `source_name` names it in errors and skips.
pub fn load(source_name: &str, text: &str) -> Result<Loaded, TemplateError> {
    let shape = |reason: String| TemplateError::Shape {
        source_name: source_name.to_owned(),
        reason,
    };
    let docs = YamlLoader::load_from_str(text).map_err(|err| TemplateError::Yaml {
        source_name: source_name.to_owned(),
        reason: err.to_string(),
    })?;
    let doc = docs
        .into_iter()
        .next()
        .ok_or_else(|| shape("the file holds no YAML document".into()))?;
    let Value::Object(root) = to_json(doc) else {
        return Err(shape("the document is not a mapping".into()));
    };
    let id = root
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| shape("`id` is missing or not a string".into()))?
        .to_owned();
    let mut reader = Reader::default();
    for key in root.keys() {
        if OTHER_PROTOCOLS.contains(&key.as_str()) {
            reader.unsupported(format!("protocol {key}"));
        } else if key == "flow" {
            reader.unsupported("flow");
        } else if key == "self-contained" && root[key] == Value::Bool(true) {
            reader.unsupported("self-contained");
        } else if !TOP_LEVEL_KEYS.contains(&key.as_str())
            && !matches!(key.as_str(), "self-contained" | "signature")
        {
            reader.unsupported(format!("top-level key {key}"));
        }
    }
    let info = root
        .get("info")
        .and_then(Value::as_object)
        .ok_or_else(|| shape("`info` is missing or not a mapping".into()))?;
    let info = read_info(info).map_err(shape)?;
    let variables = match root.get("variables") {
        None => Vec::new(),
        Some(Value::Object(vars)) => vars
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect(),
        Some(_) => return Err(shape("`variables` is not a mapping".into())),
    };
    let requests_value = root.get("http").or_else(|| root.get("requests"));
    let mut requests = Vec::new();
    match requests_value {
        None => {
            if reader.features.is_empty() {
                reader.unsupported("no http requests");
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::Object(item) = item else {
                    return Err(shape(format!("http[{i}] is not a mapping")));
                };
                if let Some(request) = read_request(item, &mut reader)
                    .map_err(|reason| shape(format!("http[{i}]: {reason}")))?
                {
                    requests.push(request);
                }
            }
        }
        Some(_) => return Err(shape("`http` is not a list".into())),
    }
    let template = Template {
        id: id.clone(),
        source_name: source_name.to_owned(),
        info,
        variables,
        requests,
    };
    check_placeholders(&template, &mut reader);
    if reader.features.is_empty() {
        Ok(Loaded::Ready(Box::new(template)))
    } else {
        Ok(Loaded::Skipped(Skip {
            id,
            source_name: source_name.to_owned(),
            features: reader.features.into_iter().collect(),
        }))
    }
}

/// Collects the unsupported features met while reading.
#[derive(Default)]
struct Reader {
    features: BTreeSet<String>,
}

impl Reader {
    fn unsupported(&mut self, feature: impl Into<String>) {
        self.features.insert(feature.into());
    }

    fn expr(&mut self, src: &str) -> Option<Expr> {
        match dsl::parse(src) {
            Ok(expr) => {
                for name in expr.unsupported_functions() {
                    self.unsupported(format!("dsl function {name}"));
                }
                Some(expr)
            }
            Err(_) => {
                self.unsupported("dsl syntax");
                None
            }
        }
    }

    fn regex(&mut self, pattern: &str) -> Option<Regex> {
        match Regex::new(pattern) {
            Ok(regex) => Some(regex),
            Err(_) => {
                self.unsupported("regex syntax");
                None
            }
        }
    }
}

fn to_json(yaml: Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::String(s) => Value::String(s),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => continue,
                };
                map.insert(key, to_json(v));
            }
            Value::Object(map)
        }
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// A scalar as text (`200` → "200"); what nuclei does with a number in a string field.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A field that is a string or a list of strings (`tags: a,b` is split on commas).
fn text_list(value: Option<&Value>, split_commas: bool) -> Vec<String> {
    let items: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(scalar_text).collect(),
        Some(other) => vec![scalar_text(other)],
    };
    if split_commas {
        items
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        items.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(_) => Err(format!("`{key}` is not a boolean")),
    }
}

fn unsigned(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| format!("`{key}` is not a non-negative integer")),
    }
}

fn read_info(info: &Map<String, Value>) -> Result<Info, String> {
    let name = info
        .get("name")
        .map(scalar_text)
        .filter(|n| !n.is_empty())
        .ok_or("`info.name` is missing")?;
    let severity_text = info
        .get("severity")
        .map(scalar_text)
        .unwrap_or_else(|| "unknown".into());
    let severity =
        Severity::parse(&severity_text.to_ascii_lowercase()).unwrap_or(Severity::Unknown);
    let mut classification = Classification::default();
    if let Some(Value::Object(c)) = info.get("classification") {
        classification.cve_ids = text_list(c.get("cve-id"), true);
        classification.cwe_ids = text_list(c.get("cwe-id"), true);
        classification.cvss_metrics = c
            .get("cvss-metrics")
            .map(scalar_text)
            .filter(|s| !s.is_empty());
        classification.cvss_score = c.get("cvss-score").and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
        classification.cpe = text_list(c.get("cpe"), false);
    }
    Ok(Info {
        name,
        severity,
        description: info
            .get("description")
            .map(scalar_text)
            .filter(|s| !s.trim().is_empty()),
        remediation: info
            .get("remediation")
            .map(scalar_text)
            .filter(|s| !s.trim().is_empty()),
        references: text_list(info.get("reference"), false),
        tags: text_list(info.get("tags"), true),
        classification,
    })
}

fn read_request(
    item: &Map<String, Value>,
    reader: &mut Reader,
) -> Result<Option<HttpRequest>, String> {
    for key in item.keys() {
        if !REQUEST_KEYS.contains(&key.as_str()) {
            reader.unsupported(format!("http key {key}"));
        }
    }
    let shape = if let Some(raw) = item.get("raw") {
        if item.contains_key("path") {
            return Err("has both `raw` and `path`".into());
        }
        let requests = text_list(Some(raw), false);
        if requests.is_empty() {
            return Err("`raw` is empty".into());
        }
        RequestShape::Raw { requests }
    } else {
        let paths = text_list(item.get("path"), false);
        if paths.is_empty() {
            return Err("has neither `path` nor `raw`".into());
        }
        let method = item
            .get("method")
            .map(scalar_text)
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        let headers = match item.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(h)) => h.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect(),
            Some(_) => return Err("`headers` is not a mapping".into()),
        };
        RequestShape::Paths {
            method,
            paths,
            headers,
            body: item.get("body").map(scalar_text),
        }
    };
    let mut payloads = Vec::new();
    match item.get("payloads") {
        None | Some(Value::Null) => {}
        Some(Value::Object(sets)) => {
            for (name, set) in sets {
                match set {
                    Value::Array(values) => {
                        payloads.push((name.clone(), values.iter().map(scalar_text).collect()))
                    }
                    // A file name: resolved against the template dirs when run.
                    Value::String(file) => {
                        payloads.push((name.clone(), vec![format!("{PAYLOAD_FILE_MARK}{file}")]))
                    }
                    _ => return Err(format!("payload {name} is neither a list nor a file name")),
                }
            }
        }
        Some(_) => return Err("`payloads` is not a mapping".into()),
    }
    let attack = match item.get("attack").map(scalar_text).as_deref() {
        None | Some("batteringram") => Attack::BatteringRam,
        Some("pitchfork") => Attack::Pitchfork,
        Some("clusterbomb") => Attack::ClusterBomb,
        Some(other) => {
            reader.unsupported(format!("attack {other}"));
            Attack::BatteringRam
        }
    };
    if attack == Attack::BatteringRam && payloads.len() > 1 {
        reader.unsupported("batteringram attack with more than one payload set");
    }
    let follow = flag(item, "redirects")?;
    let host_only = flag(item, "host-redirects")?;
    let redirects = Redirects {
        follow: follow || host_only,
        same_host_only: host_only && !follow,
        max: unsigned(item, "max-redirects")?
            .map_or(DEFAULT_MAX_REDIRECTS, |m| m.min(u64::from(u32::MAX)) as u32),
    };
    let matchers_condition = condition(item.get("matchers-condition"), Condition::Or, reader);
    let mut matchers = Vec::new();
    for (i, m) in list_of_maps(item.get("matchers"), "matchers")?
        .into_iter()
        .enumerate()
    {
        if let Some(m) = read_matcher(m, reader).map_err(|e| format!("matchers[{i}]: {e}"))? {
            matchers.push(m);
        }
    }
    let mut extractors = Vec::new();
    for (i, e) in list_of_maps(item.get("extractors"), "extractors")?
        .into_iter()
        .enumerate()
    {
        if let Some(e) = read_extractor(e, reader).map_err(|r| format!("extractors[{i}]: {r}"))? {
            extractors.push(e);
        }
    }
    Ok(Some(HttpRequest {
        shape,
        payloads,
        attack,
        stop_at_first_match: flag(item, "stop-at-first-match")?,
        matchers_condition,
        matchers,
        extractors,
        redirects,
        max_size: unsigned(item, "max-size")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    }))
}

/// Marks a payload set that is a file name rather than inline values.
pub const PAYLOAD_FILE_MARK: &str = "\u{0}file:";

fn list_of_maps<'a>(
    value: Option<&'a Value>,
    key: &str,
) -> Result<Vec<&'a Map<String, Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_object()
                    .ok_or(format!("an entry of `{key}` is not a mapping"))
            })
            .collect(),
        Some(_) => Err(format!("`{key}` is not a list")),
    }
}

fn condition(value: Option<&Value>, default: Condition, reader: &mut Reader) -> Condition {
    match value
        .map(scalar_text)
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") => default,
        Some("and") => Condition::And,
        Some("or") => Condition::Or,
        Some(other) => {
            reader.unsupported(format!("condition {other}"));
            default
        }
    }
}

fn part(value: Option<&Value>, reader: &mut Reader) -> Part {
    let text = value.map(scalar_text).unwrap_or_default();
    match text.as_str() {
        "" | "body" => Part::Body,
        "header" | "all_headers" => Part::Header,
        "all" | "response" | "raw" => Part::All,
        "status" | "status_code" => Part::Status,
        other => {
            // `body_2`, `interactsh_protocol`, … address other requests or services.
            let multi = other
                .rsplit_once('_')
                .is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()));
            if multi || other.starts_with("interactsh") {
                reader.unsupported(format!("part {other}"));
            }
            Part::Field(other.to_owned())
        }
    }
}

fn read_matcher(m: &Map<String, Value>, reader: &mut Reader) -> Result<Option<Matcher>, String> {
    let kind_name = m.get("type").map(scalar_text).ok_or("`type` is missing")?;
    if !matches!(
        kind_name.as_str(),
        "word" | "regex" | "status" | "size" | "binary" | "dsl"
    ) {
        reader.unsupported(format!("matcher type {kind_name}"));
        return Ok(None);
    }
    for key in m.keys() {
        if !MATCHER_KEYS.contains(&key.as_str()) {
            reader.unsupported(format!("matcher key {key}"));
        }
    }
    let hex = match m.get("encoding").map(scalar_text).as_deref() {
        None | Some("") => false,
        Some("hex") => true,
        Some(other) => {
            reader.unsupported(format!("matcher encoding {other}"));
            false
        }
    };
    let kind = match kind_name.as_str() {
        "word" => {
            let words = text_list(m.get("words"), false);
            if hex {
                let mut decoded = Vec::new();
                for w in &words {
                    let bytes =
                        hex::decode(w).map_err(|e| format!("word {w:?} is not hex: {e}"))?;
                    decoded.push(String::from_utf8_lossy(&bytes).into_owned());
                }
                MatcherKind::Word(decoded)
            } else {
                MatcherKind::Word(words)
            }
        }
        "regex" => MatcherKind::Regex(
            text_list(m.get("regex"), false)
                .iter()
                .filter_map(|p| reader.regex(p))
                .collect(),
        ),
        "status" => MatcherKind::Status(
            numbers(m.get("status"))
                .into_iter()
                .map(|n| u16::try_from(n).map_err(|_| format!("status {n} is out of range")))
                .collect::<Result<_, _>>()?,
        ),
        "size" => MatcherKind::Size(
            numbers(m.get("size"))
                .into_iter()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .collect(),
        ),
        "binary" => MatcherKind::Binary(
            text_list(m.get("binary"), false)
                .iter()
                .map(|h| hex::decode(h).map_err(|e| format!("binary {h:?} is not hex: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        "dsl" => MatcherKind::Dsl(
            text_list(m.get("dsl"), false)
                .iter()
                .filter_map(|e| reader.expr(e))
                .collect(),
        ),
        other => {
            reader.unsupported(format!("matcher type {other}"));
            return Ok(None);
        }
    };
    Ok(Some(Matcher {
        kind,
        name: m.get("name").map(scalar_text).filter(|n| !n.is_empty()),
        part: part(m.get("part"), reader),
        condition: condition(m.get("condition"), Condition::Or, reader),
        negative: flag(m, "negative")?,
        case_insensitive: flag(m, "case-insensitive")?,
        internal: flag(m, "internal")?,
    }))
}

fn numbers(value: Option<&Value>) -> Vec<u64> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .collect(),
        Some(v) => v.as_u64().into_iter().collect(),
        None => Vec::new(),
    }
}

fn read_extractor(
    e: &Map<String, Value>,
    reader: &mut Reader,
) -> Result<Option<Extractor>, String> {
    let kind_name = e.get("type").map(scalar_text).ok_or("`type` is missing")?;
    if !matches!(kind_name.as_str(), "regex" | "kval" | "dsl" | "json") {
        reader.unsupported(format!("extractor type {kind_name}"));
        return Ok(None);
    }
    for key in e.keys() {
        if !EXTRACTOR_KEYS.contains(&key.as_str()) {
            reader.unsupported(format!("extractor key {key}"));
        }
    }
    let kind = match kind_name.as_str() {
        "regex" => ExtractorKind::Regex {
            regexes: text_list(e.get("regex"), false)
                .iter()
                .filter_map(|p| reader.regex(p))
                .collect(),
            group: unsigned(e, "group")?.map_or(0, |g| usize::try_from(g).unwrap_or(usize::MAX)),
        },
        "kval" => ExtractorKind::Kval(text_list(e.get("kval"), false)),
        "dsl" => ExtractorKind::Dsl(
            text_list(e.get("dsl"), false)
                .iter()
                .filter_map(|x| reader.expr(x))
                .collect(),
        ),
        "json" => {
            let mut paths = Vec::new();
            for filter in text_list(e.get("json"), false) {
                match parse_json_path(&filter) {
                    Some(path) => paths.push(path),
                    None => reader.unsupported("json extractor filter beyond .key[n][]"),
                }
            }
            ExtractorKind::Json(paths)
        }
        other => {
            reader.unsupported(format!("extractor type {other}"));
            return Ok(None);
        }
    };
    Ok(Some(Extractor {
        kind,
        name: e.get("name").map(scalar_text).filter(|n| !n.is_empty()),
        part: part(e.get("part"), reader),
        internal: flag(e, "internal")?,
        case_insensitive: flag(e, "case-insensitive")?,
    }))
}

/// Parses `.a.b[0][]`; anything else (pipes, functions, selectors) is `None`.
pub fn parse_json_path(filter: &str) -> Option<JsonPath> {
    let filter = filter.trim();
    let rest = filter.strip_prefix('.')?;
    let mut steps = Vec::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => i += 1,
            b'[' => {
                let close = rest[i..].find(']')? + i;
                let inner = rest[i + 1..close].trim();
                if inner.is_empty() {
                    steps.push(JsonStep::Each);
                } else if let Ok(n) = inner.parse() {
                    steps.push(JsonStep::Index(n));
                } else if let Some(key) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
                {
                    steps.push(JsonStep::Key(key.to_owned()));
                } else {
                    return None;
                }
                i = close + 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
                {
                    i += 1;
                }
                steps.push(JsonStep::Key(rest[start..i].to_owned()));
            }
            _ => return None,
        }
    }
    Some(JsonPath(steps))
}

/// Every `{{…}}` in the text, without the braces.
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// Whether `name` is one of the `randstr`, `randstr_1`, … placeholders.
pub fn is_randstr(name: &str) -> bool {
    name == "randstr"
        || name
            .strip_prefix("randstr_")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Every placeholder in what gets sent must be a variable we will know or an
/// expression over them with supported functions.
fn check_placeholders(template: &Template, reader: &mut Reader) {
    let mut known: BTreeSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
    known.extend(template.variables.iter().map(|(k, _)| k.clone()));
    for request in &template.requests {
        known.extend(request.payloads.iter().map(|(k, _)| k.clone()));
        known.extend(request.extractors.iter().filter_map(|e| e.name.clone()));
    }
    let mut texts: Vec<&str> = template.variables.iter().map(|(_, v)| v.as_str()).collect();
    for request in &template.requests {
        texts.extend(request.shape.texts());
        for (_, values) in &request.payloads {
            texts.extend(values.iter().map(String::as_str));
        }
    }
    for text in texts {
        for inner in placeholders(text) {
            if known.contains(inner) || is_randstr(inner) {
                continue;
            }
            if inner.starts_with("interactsh") {
                reader.unsupported("interactsh");
                continue;
            }
            let Some(expr) = reader.expr(inner) else {
                continue;
            };
            for var in expr.variables() {
                if !known.contains(&var) && !is_randstr(&var) {
                    reader.unsupported(format!("variable {var}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_of(text: &str) -> Skip {
        match load("t.yaml", text).unwrap() {
            Loaded::Skipped(skip) => skip,
            Loaded::Ready(t) => panic!("{} loaded", t.id),
        }
    }

    const HEAD: &str = "id: t\ninfo:\n  name: T\n  severity: low\n";

    #[test]
    fn a_template_of_another_protocol_is_skipped_naming_it() {
        let skip = skip_of(&format!("{HEAD}dns:\n  - name: x\n"));
        assert_eq!(skip.features, ["protocol dns"]);
        assert_eq!(skip.id, "t");
    }

    #[test]
    fn unknown_matcher_types_functions_and_placeholders_are_each_named() {
        let skip = skip_of(&format!(
            "{HEAD}http:\n  - method: GET\n    path: ['{{{{BaseURL}}}}/{{{{md5(Host)}}}}?x={{{{interactsh-url}}}}']\n    matchers:\n      - type: xpath\n        xpath: ['/a']\n      - type: dsl\n        dsl: ['sha256(body) == \"x\"']\n"
        ));
        assert_eq!(
            skip.features,
            [
                "dsl function md5",
                "dsl function sha256",
                "interactsh",
                "matcher type xpath"
            ]
        );
    }

    #[test]
    fn flow_and_multi_request_parts_are_unsupported_features() {
        let skip = skip_of(&format!(
            "{HEAD}flow: http(1) && http(2)\nhttp:\n  - path: ['{{{{BaseURL}}}}']\n    req-condition: true\n    matchers:\n      - type: word\n        part: body_2\n        words: [a]\n"
        ));
        assert_eq!(
            skip.features,
            ["flow", "http key req-condition", "part body_2"]
        );
    }

    #[test]
    fn a_template_without_id_is_an_error_naming_the_file() {
        let err = load("x/y.yaml", "info:\n  name: a\n").unwrap_err();
        assert!(err.to_string().contains("x/y.yaml"), "{err}");
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn classification_lists_accept_strings_and_comma_lists() {
        let text = "id: c\ninfo:\n  name: C\n  severity: critical\n  tags: a, b\n  classification:\n    cve-id: CVE-2021-1,CVE-2021-2\n    cwe-id: [CWE-22]\n    cvss-score: 9.8\n    cvss-metrics: CVSS:3.1/AV:N\nhttp:\n  - path: ['{{BaseURL}}']\n    matchers: [{type: status, status: [200]}]\n";
        let Loaded::Ready(t) = load("c.yaml", text).unwrap() else {
            panic!("skipped")
        };
        let c = &t.info.classification;
        assert_eq!(c.cve_ids, ["CVE-2021-1", "CVE-2021-2"]);
        assert_eq!(c.cwe_ids, ["CWE-22"]);
        assert_eq!(c.cvss_score, Some(9.8));
        assert_eq!(t.info.tags, ["a", "b"]);
        assert_eq!(t.info.severity, Severity::Critical);
    }

    #[test]
    fn json_paths_of_the_simple_form_parse_and_others_do_not() {
        assert_eq!(
            parse_json_path(".items[].name"),
            Some(JsonPath(vec![
                JsonStep::Key("items".into()),
                JsonStep::Each,
                JsonStep::Key("name".into())
            ]))
        );
        assert_eq!(parse_json_path(".a | length"), None);
    }
}
