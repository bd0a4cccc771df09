//! The `nuclei` detector: runs nuclei-format HTTP templates against one target.
//!
//! Input `{target: "http://host:port/"}`. Templates come from the config's
//! `templates` (files or directories, searched recursively for `.yaml`/`.yml`;
//! the manifest grants them as `read_paths`), or, when it is empty, from the
//! default templates compiled into the binary ([`embedded`]). Each template is
//! loaded and checked first: one that uses a feature this engine lacks is
//! skipped, logged, and counted by feature in the outputs — never run half-way.
//! The rest run concurrently on a single-threaded tokio runtime; every match is
//! sent as a finding at once. `cancel` and the deadline are watched from the
//! synchronous side every few milliseconds and abort the template tasks.

pub mod dsl;
pub mod embedded;
pub mod engine;
pub mod finding;
pub mod http;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secflow_plugin_sdk::{input_str, Category, LogLevel, Plugin, PluginError, RunContext};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use crate::engine::{Options, TargetVars, TemplateRun};
use crate::template::{Loaded, Skip, Template};

/// Templates run at once unless the config says otherwise.
pub const DEFAULT_CONCURRENCY: u64 = 16;
/// Per-request timeout unless the config says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Times a request without an answer is sent again unless the config says otherwise.
pub const DEFAULT_RETRIES: u64 = 2;
/// Wait before the first retry unless the config says otherwise.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 200;
/// Most retries a config may ask for.
pub const MAX_RETRIES: u64 = 10;
/// Body bytes read per response unless the config says otherwise.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Most template files read from the configured paths.
const MAX_TEMPLATE_FILES: usize = 50_000;
/// Largest template file read.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
/// Stop this long before the deadline so the answer reaches the supervisor in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// How often the synchronous side looks at `cancel` and the deadline.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);
/// Skipped templates listed by name in the outputs (all are counted).
const MAX_LISTED_SKIPS: usize = 1000;

/// The plugin.
#[derive(Debug, Default)]
pub struct Nuclei;

/// The validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub templates: Vec<PathBuf>,
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub retries: u32,
    pub retry_backoff: Duration,
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Result<Settings, PluginError> {
        let templates = match config.get("templates") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(PathBuf::from).ok_or_else(|| {
                        PluginError::invalid_config("config.templates must list paths as strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(PluginError::invalid_config(
                    "config.templates must be a list of paths",
                ))
            }
        };
        let number = |key: &str, default: u64, min: u64| -> Result<u64, PluginError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().filter(|n| *n >= min).ok_or_else(|| {
                    PluginError::invalid_config(format!(
                        "config.{key} must be an integer of at least {min}"
                    ))
                }),
            }
        };
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Settings {
            templates,
            concurrency: to_usize(number("concurrency", DEFAULT_CONCURRENCY, 1)?),
            request_timeout: Duration::from_millis(number(
                "request_timeout_ms",
                DEFAULT_REQUEST_TIMEOUT_MS,
                1,
            )?),
            max_response_bytes: to_usize(number(
                "max_response_bytes",
                DEFAULT_MAX_RESPONSE_BYTES,
                1,
            )?),
            retries: match number("retries", DEFAULT_RETRIES, 0)? {
                n if n <= MAX_RETRIES => n as u32,
                _ => {
                    return Err(PluginError::invalid_config(format!(
                        "config.retries must be at most {MAX_RETRIES}"
                    )))
                }
            },
            retry_backoff: Duration::from_millis(number(
                "retry_backoff_ms",
                DEFAULT_RETRY_BACKOFF_MS,
                1,
            )?),
        })
    }
}

/// What loading the catalog produced.
#[derive(Debug, Default)]
pub struct Catalog {
    pub ready: Vec<Arc<Template>>,
    pub skipped: Vec<Skip>,
    /// Templates that could not be read or parsed at all, with the reason.
    pub invalid: Vec<String>,
}

impl Catalog {
    /// Loads the default templates, or every template under `paths`.
    pub fn load(paths: &[PathBuf]) -> Result<Catalog, PluginError> {
        let mut catalog = Catalog::default();
        if paths.is_empty() {
            for (name, text) in embedded::DEFAULT_TEMPLATES {
                catalog.add(&format!("builtin:{name}"), text);
            }
            return Ok(catalog);
        }
        let mut files = Vec::new();
        for path in paths {
            collect_files(path, &mut files)?;
        }
        files.sort();
        files.dedup();
        for file in files {
            let name = file.display().to_string();
            match read_template(&file) {
                Ok(text) => catalog.add(&name, &text),
                Err(reason) => catalog.invalid.push(format!("template {name}: {reason}")),
            }
        }
        Ok(catalog)
    }

    fn add(&mut self, name: &str, text: &str) {
        match template::load(name, text) {
            Ok(Loaded::Ready(t)) => self.ready.push(Arc::from(t)),
            Ok(Loaded::Skipped(skip)) => self.skipped.push(skip),
            Err(err) => self.invalid.push(err.to_string()),
        }
    }

    /// How many skipped templates use each unsupported feature.
    pub fn skipped_by_feature(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for skip in &self.skipped {
            for feature in &skip.features {
                *counts.entry(feature.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

fn read_template(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "{} bytes is over the limit of {MAX_TEMPLATE_BYTES}",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), PluginError> {
    let meta = std::fs::metadata(path).map_err(|err| {
        PluginError::invalid_config(format!(
            "config.templates: cannot read {}: {err}",
            path.display()
        ))
    })?;
    if meta.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|err| {
            PluginError::invalid_config(format!(
                "config.templates: cannot list {}: {err}",
                dir.display()
            ))
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                if files.len() >= MAX_TEMPLATE_FILES {
                    return Err(PluginError::invalid_config(format!(
                        "config.templates: more than {MAX_TEMPLATE_FILES} template files"
                    )));
                }
                files.push(p);
            }
        }
    }
    Ok(())
}

impl Plugin for Nuclei {
    const NAME: &'static str = "nuclei";
    const VERSION: &'static str = "1.0.0";
    const CATEGORY: Category = Category::Detector;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let target = input_str(&inputs, "target")?;
        let vars = TargetVars::new(target)
            .map_err(|err| PluginError::invalid_inputs(format!("inputs.target: {err}")))?;
        let settings = Settings::from_config(ctx.config())?;
        let catalog = Catalog::load(&settings.templates)?;
        for skip in &catalog.skipped {
            ctx.log(
                LogLevel::Warn,
                format!(
                    "template {} ({}) skipped: unsupported {}",
                    skip.id,
                    skip.source_name,
                    skip.features.join(", ")
                ),
            )?;
        }
        for invalid in &catalog.invalid {
            ctx.log(LogLevel::Warn, invalid.clone())?;
        }
        let client = http::Client::new(settings.request_timeout)
            .map_err(|err| PluginError::internal(format!("tls setup: {err}")))?;
        let options = Options {
            max_response_bytes: settings.max_response_bytes,
            payload_roots: settings
                .templates
                .iter()
                .filter(|p| p.is_dir())
                .cloned()
                .collect(),
            retries: settings.retries,
            retry_backoff: settings.retry_backoff,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| {
                PluginError::internal(format!("cannot start the async runtime: {err}"))
            })?;
        runtime.block_on(reachable(&vars.base, settings.request_timeout))?;
        let summary = runtime.block_on(execute(
            ctx, &catalog, &client, &vars, &options, &settings, target,
        ))?;
        let not_run = (catalog.ready.len() as u64).saturating_sub(summary.templates_run);
        if let Some((untried, reason)) = incomplete(&summary, not_run, settings.retries) {
            ctx.report_incomplete(untried, reason);
        }
        let mut outputs = Map::new();
        outputs.insert("target".into(), json!(target));
        outputs.insert(
            "templates_total".into(),
            json!(catalog.ready.len() + catalog.skipped.len() + catalog.invalid.len()),
        );
        outputs.insert("templates_run".into(), json!(summary.templates_run));
        outputs.insert("templates_skipped".into(), json!(catalog.skipped.len()));
        outputs.insert("templates_invalid".into(), json!(catalog.invalid.len()));
        outputs.insert(
            "skipped_by_feature".into(),
            json!(catalog.skipped_by_feature()),
        );
        let listed: Vec<Value> = catalog
            .skipped
            .iter()
            .take(MAX_LISTED_SKIPS)
            .map(|s| json!({"id": s.id, "template": s.source_name, "features": s.features}))
            .collect();
        outputs.insert("skipped".into(), Value::Array(listed));
        outputs.insert(
            "invalid".into(),
            json!(catalog
                .invalid
                .iter()
                .take(MAX_LISTED_SKIPS)
                .collect::<Vec<_>>()),
        );
        outputs.insert("requests".into(), json!(summary.requests));
        outputs.insert("request_errors".into(), json!(summary.request_errors));
        outputs.insert("unanswered".into(), json!(summary.unanswered));
        outputs.insert("retries".into(), json!(summary.retried));
        outputs.insert("matches".into(), json!(summary.matches));
        outputs.insert("complete".into(), json!(summary.complete));
        Ok(outputs)
    }
}

/// Fails with the target-unreachable error when nothing listens at the target,
/// rather than reporting a clean run of every template failing.
async fn reachable(base: &http::Url, timeout: Duration) -> Result<(), PluginError> {
    let connect = tokio::net::TcpStream::connect((base.host.as_str(), base.port));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(PluginError::unreachable(format!(
            "target {}: cannot connect: {err}",
            base.origin()
        ))),
        Err(_) => Err(PluginError::unreachable(format!(
            "target {}: no connection within {timeout:?}",
            base.origin()
        ))),
    }
}

#[derive(Debug, Default)]
struct Summary {
    templates_run: u64,
    requests: u64,
    request_errors: u64,
    /// Requests without an answer after their retries, and the first of them.
    unanswered: u64,
    first_unanswered: Option<String>,
    retried: u64,
    matches: u64,
    complete: bool,
}

/// What a run left undone, as `(untried, reason)`: checks whose request got
/// no answer after its retries, and templates the deadline left unrun.
fn incomplete(summary: &Summary, not_run: u64, retries: u32) -> Option<(u64, String)> {
    let mut parts = Vec::new();
    if summary.unanswered > 0 {
        parts.push(format!(
            "{} requests got no answer after {retries} retries{}",
            summary.unanswered,
            summary
                .first_unanswered
                .as_deref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ));
    }
    if not_run > 0 {
        parts.push(format!(
            "{not_run} templates were not run before the deadline"
        ));
    }
    (!parts.is_empty()).then(|| (summary.unanswered + not_run, parts.join("; ")))
}

/// Runs the ready templates, at most `concurrency` at a time, and sends each
/// match as a finding as soon as its template is done.
async fn execute(
    ctx: &mut RunContext<'_>,
    catalog: &Catalog,
    client: &http::Client,
    vars: &TargetVars,
    options: &Options,
    settings: &Settings,
    target: &str,
) -> Result<Summary, PluginError> {
    let stop_at = ctx
        .deadline()
        .checked_sub(DEADLINE_MARGIN)
        .unwrap_or_else(Instant::now);
    let total = catalog.ready.len() as u64;
    let mut summary = Summary::default();
    let mut pending = catalog.ready.iter().cloned();
    let mut tasks: JoinSet<TemplateRun> = JoinSet::new();
    let options = Arc::new(options.clone());
    let vars = Arc::new(vars.clone());
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    let mut first_error_logged = false;
    loop {
        while tasks.len() < settings.concurrency {
            let Some(template) = pending.next() else {
                break;
            };
            let (client, options, vars) = (client.clone(), Arc::clone(&options), Arc::clone(&vars));
            tasks.spawn(
                async move { engine::run_template(&client, template, &vars, &options).await },
            );
        }
        if tasks.is_empty() {
            summary.complete = true;
            return Ok(summary);
        }
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { continue };
                let run = joined.map_err(|err| PluginError::internal(format!("template task failed: {err}")))?;
                summary.templates_run += 1;
                summary.requests += run.requests;
                summary.request_errors += run.errors.len() as u64;
                summary.retried += run.retried;
                if summary.first_unanswered.is_none() {
                    summary.first_unanswered = run.first_unanswered.clone();
                }
                summary.unanswered += run.unanswered;
                if let (false, Some(first)) = (first_error_logged, run.errors.first()) {
                    ctx.log(LogLevel::Debug, format!("request failed: {first}"))?;
                    first_error_logged = true;
                }
                for m in &run.matches {
                    ctx.emit(finding::to_finding(m, target))?;
                    summary.matches += 1;
                }
                ctx.progress(summary.templates_run, Some(total), None)?;
            }
            _ = watch.tick() => {
                if ctx.is_cancelled() {
                    tasks.abort_all();
                    return Err(PluginError::cancelled());
                }
                if Instant::now() >= stop_at {
                    tasks.abort_all();
                    ctx.log(
                        LogLevel::Warn,
                        format!(
                            "deadline reached after {} of {total} templates; stopping with the findings so far",
                            summary.templates_run
                        ),
                    )?;
                    return Ok(summary);
                }
            }
        }
    }
}
