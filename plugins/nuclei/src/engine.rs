//! Running one loaded template against one target: building its requests
//! (paths or raw text, payload combinations, variables), sending them, and
//! deciding from matchers and extractors which responses are results.
//!
//! The semantics follow nuclei's: matchers default to `part: body` and
//! `condition: or`; `matchers-condition: or` yields one result per matched named
//! matcher; a request block without matchers yields a result when its extractors
//! find something; named extractors feed later requests of the same template;
//! cookies set by one request are sent with the next ones.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::dsl::{self, Value};
use crate::http::{Client, HttpError, Incoming, Outgoing, Url};
use crate::template::{
    is_randstr, placeholders, Attack, Condition, Extractor, ExtractorKind, HttpRequest, JsonStep,
    Matcher, MatcherKind, Part, RequestShape, Template, PAYLOAD_FILE_MARK,
};

/// Most payload combinations one request block may expand to.
pub const MAX_COMBINATIONS: usize = 10_000;
/// Most lines read from one payload file.
const MAX_PAYLOAD_LINES: usize = 100_000;
const USER_AGENT: &str = "Mozilla/5.0 (compatible; secflow-nuclei/1.0)";

/// How templates run; shared by every template task.
#[derive(Debug, Clone)]
pub struct Options {
    /// Body bytes read per response unless a template's `max-size` is lower.
    pub max_response_bytes: usize,
    /// Where relative payload files are looked up (the configured template dirs).
    pub payload_roots: Vec<PathBuf>,
    /// Times a request without an answer is sent again.
    pub retries: u32,
    /// Wait before the first retry; doubled per retry, capped at [`MAX_BACKOFF`].
    pub retry_backoff: Duration,
}

/// Longest wait between two tries of one request.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whether a failed request may succeed if sent again: no connection, a cut
/// or garbled exchange, no answer in time. A request that cannot be built, or
/// a TLS handshake the server refused, fails the same way every time.
pub fn is_transient(err: &HttpError) -> bool {
    matches!(
        err,
        HttpError::Connect { .. } | HttpError::Exchange { .. } | HttpError::Timeout { .. }
    )
}

/// The wait before try `attempt` (1 = the first retry): the base doubled per
/// retry, capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// One result: a template matched a response.
#[derive(Debug, Clone)]
pub struct Match {
    pub template: Arc<Template>,
    pub matcher_name: Option<String>,
    pub request: Outgoing,
    pub status: u16,
    pub response: Incoming,
    pub extracted: Vec<String>,
    /// Named extractors' first values (`version` → `2.4.49`).
    pub named: BTreeMap<String, String>,
}

/// What running one template did.
#[derive(Debug, Default)]
pub struct TemplateRun {
    pub matches: Vec<Match>,
    pub requests: u64,
    /// Requests that got no answer or could not be built, with the reason.
    pub errors: Vec<String>,
    /// Requests that got no answer even after their retries: checks not done.
    pub unanswered: u64,
    /// The first of them, with its reason.
    pub first_unanswered: Option<String>,
    /// Tries sent again after no answer.
    pub retried: u64,
}

/// The target's variables (`BaseURL`, `Hostname`, …).
#[derive(Debug, Clone)]
pub struct TargetVars {
    pub base: Url,
    pub vars: HashMap<String, String>,
}

impl TargetVars {
    pub fn new(target: &str) -> Result<TargetVars, HttpError> {
        let base = Url::parse(target)?;
        let path = base.path().to_owned();
        let base_url = format!("{}{}", base.origin(), path.trim_end_matches('/'));
        let host = base.host.clone();
        let labels: Vec<&str> = host.split('.').collect();
        let is_name = labels.len() >= 2 && host.parse::<std::net::IpAddr>().is_err();
        let (tld, rdn, dn, sd) = if is_name {
            let n = labels.len();
            (
                labels[n - 1].to_owned(),
                labels[n - 2..].join("."),
                labels[n - 2].to_owned(),
                labels[..n - 2].join("."),
            )
        } else {
            (String::new(), host.clone(), host.clone(), String::new())
        };
        let file = path.rsplit('/').next().unwrap_or("").to_owned();
        let vars = HashMap::from([
            ("BaseURL".to_owned(), base_url),
            ("RootURL".to_owned(), base.origin()),
            ("Hostname".to_owned(), base.authority()),
            ("Host".to_owned(), host.clone()),
            ("Port".to_owned(), base.port.to_string()),
            ("Path".to_owned(), path),
            ("File".to_owned(), file),
            ("Scheme".to_owned(), base.scheme().to_owned()),
            ("FQDN".to_owned(), host),
            ("RDN".to_owned(), rdn),
            ("DN".to_owned(), dn),
            ("SD".to_owned(), sd),
            ("TLD".to_owned(), tld),
        ]);
        Ok(TargetVars { base, vars })
    }
}

/// Replaces each `{{…}}` with a variable or the value of a DSL expression over
/// the variables. Strict: an unresolvable placeholder is an error; lenient (for
/// matcher words): it stays as written.
pub fn interpolate(
    text: &str,
    vars: &HashMap<String, String>,
    strict: bool,
) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let inner = after[..end].trim();
        match resolve(inner, vars) {
            Ok(value) => out.push_str(&value),
            Err(reason) if strict => return Err(reason),
            Err(_) => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(inner: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    if let Some(value) = vars.get(inner) {
        return Ok(value.clone());
    }
    let expr = dsl::parse(inner).map_err(|e| e.to_string())?;
    let scope = |name: &str| vars.get(name).map(|v| Value::Str(v.clone()));
    dsl::eval(&expr, &scope)
        .map(Value::into_text)
        .map_err(|e| format!("{{{{{inner}}}}}: {e}"))
}

/// Random alphanumeric text for `{{randstr}}`.
fn random_string(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(len);
    let mut state = std::collections::hash_map::RandomState::new().build_hasher();
    let mut word = 0u64;
    for i in 0..len {
        if i % 8 == 0 {
            state.write_usize(i);
            word = state.finish();
        }
        out.push(char::from(
            ALPHABET[(word % ALPHABET.len() as u64) as usize],
        ));
        word /= ALPHABET.len() as u64;
    }
    out
}

/// Runs `template` against the target.
pub async fn run_template(
    client: &Client,
    template: Arc<Template>,
    target: &TargetVars,
    options: &Options,
) -> TemplateRun {
    let mut run = TemplateRun::default();
    let mut vars = target.vars.clone();
    let texts = template.requests.iter().flat_map(|r| r.shape.texts());
    for text in texts {
        for inner in placeholders(text) {
            if is_randstr(inner) && !vars.contains_key(inner) {
                vars.insert(inner.to_owned(), random_string(27));
            }
        }
    }
    for (name, value) in &template.variables {
        match interpolate(value, &vars, true) {
            Ok(v) => {
                vars.insert(name.clone(), v);
            }
            Err(reason) => {
                run.errors.push(format!("variable {name}: {reason}"));
                return run;
            }
        }
    }
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    for request in &template.requests {
        let combos = match combinations(request, &template, &vars, options) {
            Ok(c) => c,
            Err(reason) => {
                run.errors.push(reason);
                continue;
            }
        };
        let shapes: Vec<&str> = match &request.shape {
            RequestShape::Paths { paths, .. } => paths.iter().map(String::as_str).collect(),
            RequestShape::Raw { requests } => requests.iter().map(String::as_str).collect(),
        };
        'block: for combo in &combos {
            for shape in &shapes {
                let mut scoped = vars.clone();
                scoped.extend(combo.iter().cloned());
                let outgoing = match build(request, shape, &scoped, target, &cookies) {
                    Ok(o) => o,
                    Err(reason) => {
                        run.errors.push(reason);
                        continue;
                    }
                };
                let max_body = request.max_size.map_or(options.max_response_bytes, |m| {
                    m.min(options.max_response_bytes)
                });
                run.requests += 1;
                let mut attempt = 0;
                let sent = loop {
                    match send_following(client, &outgoing, request, max_body).await {
                        Err(err) if is_transient(&err) && attempt < options.retries => {
                            attempt += 1;
                            run.retried += 1;
                            tokio::time::sleep(backoff(options.retry_backoff, attempt)).await;
                        }
                        other => break other,
                    }
                };
                let response = match sent {
                    Ok(r) => r,
                    Err(err) => {
                        if is_transient(&err) {
                            run.unanswered += 1;
                            run.first_unanswered.get_or_insert_with(|| err.to_string());
                        }
                        run.errors.push(err.to_string());
                        continue;
                    }
                };
                remember_cookies(&response, &mut cookies);
                let view = View::new(&response, &outgoing);
                let results = evaluate(request, &view, &mut scoped);
                // Named extractors feed later requests.
                for (name, value) in &results.named {
                    vars.insert(name.clone(), value.clone());
                }
                let found = !results.names.is_empty();
                for name in results.names {
                    run.matches.push(Match {
                        template: Arc::clone(&template),
                        matcher_name: name,
                        request: outgoing.clone(),
                        status: response.status,
                        response: response.clone(),
                        extracted: results.extracted.clone(),
                        named: results.named.clone(),
                    });
                }
                if found && request.stop_at_first_match {
                    break 'block;
                }
            }
        }
    }
    run
}

type Combination = Vec<(String, String)>;

/// The payload combinations of one request block, per its `attack`.
fn combinations(
    request: &HttpRequest,
    template: &Template,
    vars: &HashMap<String, String>,
    options: &Options,
) -> Result<Vec<Combination>, String> {
    let mut sets = Vec::new();
    for (name, values) in &request.payloads {
        let values = match values
            .first()
            .and_then(|v| v.strip_prefix(PAYLOAD_FILE_MARK))
        {
            Some(file) => read_payload_file(file, template, options)?,
            None => values.clone(),
        };
        let values = values
            .iter()
            .map(|v| interpolate(v, vars, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| format!("payload {name}: {reason}"))?;
        sets.push((name.clone(), values));
    }
    if sets.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    let mut out: Vec<Combination> = Vec::new();
    match request.attack {
        Attack::BatteringRam | Attack::Pitchfork => {
            let n = sets.iter().map(|(_, v)| v.len()).min().unwrap_or(0);
            for i in 0..n.min(MAX_COMBINATIONS) {
                out.push(
                    sets.iter()
                        .map(|(k, v)| (k.clone(), v[i].clone()))
                        .collect(),
                );
            }
        }
        Attack::ClusterBomb => {
            out.push(Vec::new());
            for (name, values) in &sets {
                let mut next = Vec::new();
                'outer: for combo in &out {
                    for value in values {
                        if next.len() >= MAX_COMBINATIONS {
                            break 'outer;
                        }
                        let mut c = combo.clone();
                        c.push((name.clone(), value.clone()));
                        next.push(c);
                    }
                }
                out = next;
            }
        }
    }
    Ok(out)
}

/// A payload file, relative to the template's directory or a template root.
fn read_payload_file(
    file: &str,
    template: &Template,
    options: &Options,
) -> Result<Vec<String>, String> {
    let relative = Path::new(file);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "payload file {file:?} must be a relative path inside the template dirs"
        ));
    }
    let mut candidates = Vec::new();
    if let Some(dir) = Path::new(&template.source_name).parent() {
        candidates.push(dir.join(relative));
    }
    candidates.extend(options.payload_roots.iter().map(|root| root.join(relative)));
    for path in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .take(MAX_PAYLOAD_LINES)
                .map(str::to_owned)
                .collect());
        }
    }
    Err(format!(
        "payload file {file:?} of {} is not in the template dirs",
        template.source_name
    ))
}

/// Builds one request from a path or raw text.
fn build(
    request: &HttpRequest,
    shape: &str,
    vars: &HashMap<String, String>,
    target: &TargetVars,
    cookies: &BTreeMap<String, String>,
) -> Result<Outgoing, String> {
    let text = interpolate(shape, vars, true)?;
    let mut outgoing = match &request.shape {
        RequestShape::Paths {
            method,
            headers,
            body,
            ..
        } => {
            let url = if text.starts_with('/') {
                Url {
                    target: text.clone(),
                    ..target.base.clone()
                }
            } else {
                Url::parse(&text).map_err(|e| e.to_string())?
            };
            let mut all = Vec::new();
            for (name, value) in headers {
                all.push((name.clone(), interpolate(value, vars, true)?));
            }
            let body = match body {
                Some(b) => interpolate(b, vars, true)?.into_bytes(),
                None => Vec::new(),
            };
            Outgoing {
                method: method.clone(),
                url,
                headers: all,
                body,
            }
        }
        RequestShape::Raw { .. } => parse_raw(&text, &target.base)?,
    };
    let has =
        |o: &Outgoing, name: &str| o.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has(&outgoing, "user-agent") {
        outgoing
            .headers
            .push(("User-Agent".into(), USER_AGENT.into()));
    }
    if !has(&outgoing, "accept") {
        outgoing.headers.push(("Accept".into(), "*/*".into()));
    }
    if !cookies.is_empty() && !has(&outgoing, "cookie") {
        let jar: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outgoing.headers.push(("Cookie".into(), jar.join("; ")));
    }
    Ok(outgoing)
}

/// Parses a raw request: request line, headers, blank line, body. A relative
/// request target goes to the input target (under its path, if it has one).
fn parse_raw(text: &str, base: &Url) -> Result<Outgoing, String> {
    let normalized = text.replace("\r\n", "\n");
    let mut lines = normalized.lines().skip_while(|l| l.trim().is_empty());
    let request_line = lines.next().ok_or("raw request is empty")?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().ok_or("raw request has no method")?.to_owned();
    let target = parts
        .next()
        .ok_or_else(|| format!("raw request line {request_line:?} has no target"))?;
    let url = if target.starts_with("http://") || target.starts_with("https://") {
        Url::parse(target).map_err(|e| e.to_string())?
    } else {
        let prefix = base.path().trim_end_matches('/');
        let joined = if target.starts_with('/') {
            format!("{prefix}{target}")
        } else {
            format!("{prefix}/{target}")
        };
        Url {
            target: joined,
            ..base.clone()
        }
    };
    let mut headers = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("raw header line {line:?} has no colon"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let body: Vec<&str> = lines.collect();
    let body = body.join("\n").trim_end_matches('\n').to_owned();
    Ok(Outgoing {
        method,
        url,
        headers,
        body: body.into_bytes(),
    })
}

/// Sends a request, following redirects as the block allows.
async fn send_following(
    client: &Client,
    first: &Outgoing,
    request: &HttpRequest,
    max_body: usize,
) -> Result<Incoming, HttpError> {
    let mut current = first.clone();
    let mut response = client.send(&current, max_body).await?;
    let mut hops = 0;
    while request.redirects.follow
        && hops < request.redirects.max
        && matches!(response.status, 301 | 302 | 303 | 307 | 308)
    {
        let Some(location) = response.header("location") else {
            break;
        };
        let Some(next) = resolve_location(&current.url, location) else {
            break;
        };
        if request.redirects.same_host_only && next.host != current.url.host {
            break;
        }
        if matches!(response.status, 301..=303) && current.method != "HEAD" {
            current.method = "GET".into();
            current.body.clear();
            current.headers.retain(|(n, _)| {
                !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("content-type")
            });
        }
        current
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        current.url = next;
        response = client.send(&current, max_body).await?;
        hops += 1;
    }
    Ok(response)
}

fn resolve_location(from: &Url, location: &str) -> Option<Url> {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return Url::parse(location).ok();
    }
    if let Some(rest) = location.strip_prefix("//") {
        return Url::parse(&format!("{}://{rest}", from.scheme())).ok();
    }
    let target = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = from.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    Some(Url {
        target,
        ..from.clone()
    })
}

fn remember_cookies(response: &Incoming, jar: &mut BTreeMap<String, String>) {
    for (name, value) in &response.headers {
        if name.eq_ignore_ascii_case("set-cookie") {
            let pair = value.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                jar.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
}

/// A response prepared for matching.
struct View<'a> {
    response: &'a Incoming,
    url: String,
    body: String,
    header: String,
    all: String,
}

impl<'a> View<'a> {
    fn new(response: &'a Incoming, request: &Outgoing) -> View<'a> {
        let body = String::from_utf8_lossy(&response.body).into_owned();
        let header = response.header_block();
        let all = format!("{header}\r\n{body}");
        View {
            response,
            url: request.url.to_string(),
            body,
            header,
            all,
        }
    }

    fn header_field(&self, name: &str) -> Option<&str> {
        self.response
            .headers
            .iter()
            .find(|(n, _)| normalize_key(n) == normalize_key(name))
            .map(|(_, v)| v.as_str())
    }

    fn value(&self, name: &str, vars: &HashMap<String, String>) -> Option<Value> {
        Some(match name {
            "body" => Value::Str(self.body.clone()),
            "header" | "all_headers" => Value::Str(self.header.clone()),
            "response" | "raw" => Value::Str(self.all.clone()),
            "status_code" => Value::Num(f64::from(self.response.status)),
            "content_length" => Value::Num(
                self.header_field("content_length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(self.response.body.len() as f64),
            ),
            "duration" => Value::Num(self.response.duration.as_secs_f64()),
            "matched" => Value::Str(self.url.clone()),
            _ => {
                if let Some(v) = self.header_field(name) {
                    Value::Str(v.to_owned())
                } else {
                    Value::Str(vars.get(name)?.clone())
                }
            }
        })
    }

    fn part(&self, part: &Part, vars: &HashMap<String, String>) -> String {
        match part {
            Part::Body => self.body.clone(),
            Part::Header => self.header.clone(),
            Part::All => self.all.clone(),
            Part::Status => self.response.status.to_string(),
            Part::Field(name) => self
                .value(name, vars)
                .map(Value::into_text)
                .unwrap_or_default(),
        }
    }

    fn part_bytes(&self, part: &Part, vars: &HashMap<String, String>) -> Vec<u8> {
        match part {
            Part::Body => self.response.body.clone(),
            other => self.part(other, vars).into_bytes(),
        }
    }
}

/// `Content-Type` / `content_type` → `content_type`.
fn normalize_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Results of one response: matcher names to report (`None`: unnamed).
struct Evaluation {
    names: Vec<Option<String>>,
    extracted: Vec<String>,
    named: BTreeMap<String, String>,
}

fn evaluate(
    request: &HttpRequest,
    view: &View<'_>,
    vars: &mut HashMap<String, String>,
) -> Evaluation {
    let mut extracted = Vec::new();
    let mut named = BTreeMap::new();
    for extractor in &request.extractors {
        let values = extract(extractor, view, vars);
        if let (Some(name), Some(first)) = (&extractor.name, values.first()) {
            named.insert(name.clone(), first.clone());
            vars.insert(name.clone(), first.clone());
        }
        if !extractor.internal {
            for v in values {
                if !extracted.contains(&v) {
                    extracted.push(v);
                }
            }
        }
    }
    let names = if request.matchers.is_empty() {
        if extracted.is_empty() {
            Vec::new()
        } else {
            vec![None]
        }
    } else {
        let outcomes: Vec<bool> = request
            .matchers
            .iter()
            .map(|m| matcher_matches(m, view, vars))
            .collect();
        match request.matchers_condition {
            Condition::And => {
                if outcomes.iter().all(|o| *o) {
                    vec![None]
                } else {
                    Vec::new()
                }
            }
            Condition::Or => {
                let mut names: Vec<Option<String>> = Vec::new();
                let mut unnamed = false;
                for (m, hit) in request.matchers.iter().zip(&outcomes) {
                    if !hit {
                        continue;
                    }
                    match (&m.name, m.internal) {
                        (Some(name), false) => {
                            if !names.contains(&Some(name.clone())) {
                                names.push(Some(name.clone()));
                            }
                        }
                        _ => unnamed = true,
                    }
                }
                if names.is_empty() && unnamed {
                    names.push(None);
                }
                names
            }
        }
    };
    Evaluation {
        names,
        extracted,
        named,
    }
}

fn fold(condition: Condition, results: impl Iterator<Item = bool>) -> bool {
    let results: Vec<bool> = results.collect();
    if results.is_empty() {
        return false;
    }
    match condition {
        Condition::And => results.iter().all(|r| *r),
        Condition::Or => results.iter().any(|r| *r),
    }
}

fn matcher_matches(matcher: &Matcher, view: &View<'_>, vars: &HashMap<String, String>) -> bool {
    let hit = match &matcher.kind {
        MatcherKind::Status(codes) => codes.contains(&view.response.status),
        MatcherKind::Size(sizes) => sizes.contains(&view.response.body.len()),
        MatcherKind::Word(words) => {
            let mut hay = view.part(&matcher.part, vars);
            if matcher.case_insensitive {
                hay = hay.to_lowercase();
            }
            fold(
                matcher.condition,
                words.iter().map(|w| {
                    let mut w = interpolate(w, vars, false).unwrap_or_else(|_| w.clone());
                    if matcher.case_insensitive {
                        w = w.to_lowercase();
                    }
                    hay.contains(&w)
                }),
            )
        }
        MatcherKind::Regex(regexes) => {
            let hay = view.part_bytes(&matcher.part, vars);
            fold(matcher.condition, regexes.iter().map(|r| r.is_match(&hay)))
        }
        MatcherKind::Binary(needles) => {
            let hay = view.part_bytes(&matcher.part, vars);
            fold(
                matcher.condition,
                needles
                    .iter()
                    .map(|n| !n.is_empty() && hay.windows(n.len()).any(|w| w == n.as_slice())),
            )
        }
        MatcherKind::Dsl(exprs) => {
            let scope = |name: &str| view.value(name, vars);
            fold(
                matcher.condition,
                exprs
                    .iter()
                    .map(|e| dsl::eval(e, &scope).is_ok_and(|v| v.is_true())),
            )
        }
    };
    hit != matcher.negative
}

fn extract(extractor: &Extractor, view: &View<'_>, vars: &HashMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |v: String| {
        if !v.is_empty() && !out.contains(&v) {
            out.push(v);
        }
    };
    match &extractor.kind {
        ExtractorKind::Regex { regexes, group } => {
            let hay = view.part_bytes(&extractor.part, vars);
            for regex in regexes {
                for caps in regex.captures_iter(&hay) {
                    if let Some(m) = caps.get(*group) {
                        push(String::from_utf8_lossy(m.as_bytes()).into_owned());
                    }
                }
            }
        }
        ExtractorKind::Kval(keys) => {
            for key in keys {
                if let Some(v) = view.header_field(key) {
                    push(v.to_owned());
                }
            }
        }
        ExtractorKind::Dsl(exprs) => {
            let scope = |name: &str| view.value(name, vars);
            for expr in exprs {
                if let Ok(v) = dsl::eval(expr, &scope) {
                    push(v.into_text());
                }
            }
        }
        ExtractorKind::Json(paths) => {
            if let Ok(doc) = serde_json::from_slice::<Json>(&view.response.body) {
                for path in paths {
                    let mut nodes = vec![&doc];
                    for step in &path.0 {
                        nodes = nodes
                            .into_iter()
                            .flat_map(|n| -> Vec<&Json> {
                                match (step, n) {
                                    (JsonStep::Key(k), Json::Object(map)) => {
                                        map.get(k).into_iter().collect()
                                    }
                                    (JsonStep::Index(i), Json::Array(items)) => {
                                        items.get(*i).into_iter().collect()
                                    }
                                    (JsonStep::Each, Json::Array(items)) => items.iter().collect(),
                                    (JsonStep::Each, Json::Object(map)) => map.values().collect(),
                                    _ => Vec::new(),
                                }
                            })
                            .collect();
                    }
                    for node in nodes {
                        push(match node {
                            Json::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                    }
                }
            }
        }
    }
    if extractor.case_insensitive {
        out.iter_mut().for_each(|v| *v = v.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_variables_follow_nuclei_naming() {
        let t = TargetVars::new("http://app.example.test:8080/base/").unwrap();
        assert_eq!(t.vars["BaseURL"], "http://app.example.test:8080/base");
        assert_eq!(t.vars["RootURL"], "http://app.example.test:8080");
        assert_eq!(t.vars["Hostname"], "app.example.test:8080");
        assert_eq!(t.vars["Host"], "app.example.test");
        assert_eq!(t.vars["Port"], "8080");
        assert_eq!(t.vars["DN"], "example");
        assert_eq!(t.vars["SD"], "app");
        assert_eq!(t.vars["RDN"], "example.test");
    }

    #[test]
    fn interpolation_resolves_variables_and_expressions_and_is_strict_on_request_text() {
        let vars = HashMap::from([("Host".to_owned(), "Example.Test".to_owned())]);
        assert_eq!(
            interpolate("{{Host}}/{{to_lower(Host)}}", &vars, true).unwrap(),
            "Example.Test/example.test"
        );
        assert!(interpolate("{{nope}}", &vars, true).is_err());
        assert_eq!(
            interpolate("{{7*7}} {{nope}}", &vars, false).unwrap(),
            "49 {{nope}}"
        );
    }

    #[test]
    fn a_raw_request_keeps_its_line_headers_and_body() {
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        let o = parse_raw(
            "POST /cgi-bin/.%%32%65/bin/sh HTTP/1.1\nHost: x\nContent-Type: text/plain\n\necho; id\n",
            &base,
        )
        .unwrap();
        assert_eq!(o.method, "POST");
        assert_eq!(o.url.target, "/cgi-bin/.%%32%65/bin/sh");
        assert_eq!(o.headers[1], ("Content-Type".into(), "text/plain".into()));
        assert_eq!(o.body, b"echo; id");
    }
}
