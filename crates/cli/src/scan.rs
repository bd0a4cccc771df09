//! The default pipeline behind `secflow scan` and `secflow demo`: every active
//! detector on every target, then every enricher over the findings the
//! detectors stored, then every analytics plugin over all of them, and a
//! summary of the outcome.
//!
//! The pipeline is written once, against [`ScanExecutor`]: the embedded
//! supervisor ([`LocalExecutor`]) and the daemon client (in `cli::scan`) are
//! two ways to execute one run and read back its stored findings. Reporting
//! progress is the caller's business ([`ScanProgress`]); the summary is a pure
//! function of the runs and findings ([`summarize`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use secflow_plugin_sdk::protocol::{code, Category, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::cli::client::{ClientError, PluginListing};
use secflow_core::record::{RunRecord, RunStatus};
use secflow_core::PluginStatus;
use secflow_runner::RunRequest;
use secflow_runner::{Supervisor, SupervisorError};
use secflow_store::{FindingQuery, StorageError};

/// Most stored findings one scan reads back (per detector run, and in all).
pub const MAX_SCAN_FINDINGS: usize = 100_000;
/// Findings asked for per page when reading them back.
pub const FINDINGS_PAGE: u32 = 1000;
/// How often a running step is reported to [`ScanProgress::tick`].
const TICK: Duration = Duration::from_millis(100);
/// How many CVEs the summary lists in `top_cves`.
const TOP_CVES: usize = 10;

/// A scan that could not be carried through (run outcomes are not errors:
/// they are the runs' records).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("no target to scan: give at least one host, host:port or URL")]
    NoTarget,
    #[error(
        "no active detector is registered (see `secflow plugins`), so nothing can scan {targets}"
    )]
    NoDetector { targets: String },
}

/// Executes the pipeline's runs: the embedded supervisor or the daemon.
// The pipeline drives one executor from one task, so the futures need not be
// `Send`; `async fn` keeps both implementations plain.
#[allow(async_fn_in_trait)]
pub trait ScanExecutor {
    /// Every registered plugin, whatever its status.
    async fn plugins(&mut self) -> Result<Vec<PluginListing>, ScanError>;
    /// Runs one plugin to its end.
    async fn execute(&mut self, request: RunRequest) -> Result<RunRecord, ScanError>;
    /// One page of the stored findings of a run, as finding documents.
    async fn findings_page(
        &mut self,
        run_id: &str,
        after: Option<i64>,
    ) -> Result<(Vec<Value>, Option<i64>), ScanError>;
}

/// Hears about each step of a scan while it runs.
pub trait ScanProgress {
    fn started(&mut self, step: &ScanStep);
    /// Called every 100 ms while `step` runs.
    fn tick(&mut self, step: &ScanStep, elapsed: Duration);
    fn finished(&mut self, step: &ScanStep, run: &ScanRun);
}

/// Progress that is not shown (`--json`, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ScanProgress for NoProgress {
    fn started(&mut self, _: &ScanStep) {}
    fn tick(&mut self, _: &ScanStep, _: Duration) {}
    fn finished(&mut self, _: &ScanStep, _: &ScanRun) {}
}

/// The pipeline's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Detect,
    Enrich,
    Analyze,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Detect => "detect",
            Stage::Enrich => "enrich",
            Stage::Analyze => "analyze",
        }
    }
}

/// One run of the pipeline, before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStep {
    pub stage: Stage,
    pub plugin: String,
    /// The detector's target; enrichers and analytics take findings.
    pub target: Option<String>,
    /// 1-based position among `total` steps.
    pub index: usize,
    pub total: usize,
}

/// What the pipeline will run: the active plugins by category (sorted by
/// name), and the plugins left out with their status.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPlan {
    pub targets: Vec<String>,
    pub detectors: Vec<String>,
    pub enrichers: Vec<String>,
    pub analytics: Vec<String>,
    pub skipped: Vec<SkippedPlugin>,
}

/// A registered plugin the scan does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPlugin {
    pub name: String,
    pub status: PluginStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ScanPlan {
    /// The steps, in the order they run.
    pub fn steps(&self) -> Vec<ScanStep> {
        let mut steps = Vec::new();
        for plugin in &self.detectors {
            for target in &self.targets {
                steps.push((Stage::Detect, plugin, Some(target.clone())));
            }
        }
        steps.extend(self.enrichers.iter().map(|p| (Stage::Enrich, p, None)));
        steps.extend(self.analytics.iter().map(|p| (Stage::Analyze, p, None)));
        let total = steps.len();
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (stage, plugin, target))| ScanStep {
                stage,
                plugin: plugin.clone(),
                target,
                index: i + 1,
                total,
            })
            .collect()
    }
}

/// Plans a scan of `targets` with the registered `plugins`: every active one
/// runs, the others are listed as skipped.
pub fn plan(targets: &[String], plugins: &[PluginListing]) -> Result<ScanPlan, ScanError> {
    if targets.is_empty() {
        return Err(ScanError::NoTarget);
    }
    let mut plan = ScanPlan {
        targets: targets.to_vec(),
        detectors: Vec::new(),
        enrichers: Vec::new(),
        analytics: Vec::new(),
        skipped: Vec::new(),
    };
    let mut plugins: Vec<&PluginListing> = plugins.iter().collect();
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    for p in plugins {
        let list = match (p.status, p.category) {
            (PluginStatus::Active, Some(Category::Detector)) => &mut plan.detectors,
            (PluginStatus::Active, Some(Category::Enricher)) => &mut plan.enrichers,
            (PluginStatus::Active, Some(Category::Analytics)) => &mut plan.analytics,
            _ => {
                plan.skipped.push(SkippedPlugin {
                    name: p.name.clone(),
                    status: p.status,
                    reason: p.reason.clone(),
                });
                continue;
            }
        };
        list.push(p.name.clone());
    }
    if plan.detectors.is_empty() {
        return Err(ScanError::NoDetector {
            targets: targets.join(", "),
        });
    }
    Ok(plan)
}

/// One run of a scan: its record, the stage and target it ran for, and
/// whether the detector declined the target (answered `-32001` invalid
/// inputs: a URL-only detector given `host:port`, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRun {
    pub stage: Stage,
    pub target: Option<String>,
    pub declined: bool,
    #[serde(flatten)]
    pub record: RunRecord,
}

impl ScanRun {
    fn new(step: &ScanStep, record: RunRecord) -> ScanRun {
        let declined = step.stage == Stage::Detect
            && record.status == RunStatus::Failed
            && record.findings == 0
            && record
                .error
                .as_ref()
                .is_some_and(|e| e.code == code::INVALID_INPUTS);
        ScanRun {
            stage: step.stage,
            target: step.target.clone(),
            declined,
            record,
        }
    }

    /// The status shown and counted: `declined`, or the record's.
    pub fn outcome(&self) -> &'static str {
        if self.declined {
            "declined"
        } else {
            self.record.status.as_str()
        }
    }

    /// Whether the run did its job: succeeded, declined a target not of its
    /// kind, or was skipped because data it reads is not installed (its
    /// error says which command installs it).
    pub fn ok(&self) -> bool {
        self.declined
            || matches!(
                self.record.status,
                RunStatus::Succeeded | RunStatus::Skipped
            )
    }
}

/// The outcome of a scan: `{runs, findings, summary}` in `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub runs: Vec<ScanRun>,
    /// The stored findings of the scan's detector runs, as the enrichers left
    /// them, most severe first.
    pub findings: Vec<Value>,
    pub summary: ScanSummary,
}

impl ScanReport {
    /// Whether every run did its job and the scan was not cut short.
    pub fn complete(&self) -> bool {
        self.summary.complete
    }
}

/// Counts by severity, in the order a reader scans them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub info: usize,
    pub unknown: usize,
}

impl SeverityCounts {
    fn add(&mut self, severity: Severity) {
        let slot = match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Info => &mut self.info,
            Severity::Unknown => &mut self.unknown,
        };
        *slot += 1;
    }
}

/// A CVE the scan's findings carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CveSummary {
    pub cve: String,
    /// Highest CVSS base score any finding gives it, if scored.
    pub max_cvss: Option<f64>,
    /// Findings that carry it.
    pub findings: usize,
    /// CISA KEV `date_added`, when it is a known exploited vulnerability.
    pub kev_date_added: Option<String>,
}

/// A known exploited vulnerability found on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KevHit {
    pub cve: String,
    pub date_added: Option<String>,
    pub due_date: Option<String>,
    pub targets: Vec<String>,
}

/// The scan at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanSummary {
    pub targets: Vec<String>,
    pub findings: usize,
    pub by_severity: SeverityCounts,
    /// Highest scored first, then most frequent.
    pub top_cves: Vec<CveSummary>,
    pub kev: Vec<KevHit>,
    /// Runs by outcome (`succeeded`, `declined`, `failed`, ...).
    pub runs: BTreeMap<String, usize>,
    pub skipped_plugins: Vec<SkippedPlugin>,
    /// Every run did its job and no stage was cut short.
    pub complete: bool,
    /// Runs that ended `partial`: what each left undone (a content scan's
    /// untried words). Any makes the scan incomplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<IncompleteRun>,
    /// What the operator should know about the results: stale or missing
    /// vulnerability data, with the command that fixes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A run that could not do all its work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteRun {
    pub run_id: String,
    pub plugin: String,
    pub target: Option<String>,
    /// Units of work not done (for ferox: words).
    pub untried: u64,
    pub reason: String,
}

/// Runs the default pipeline on `targets`.
pub async fn run_scan<E: ScanExecutor>(
    executor: &mut E,
    progress: &mut dyn ScanProgress,
    targets: &[String],
    actor_uid: Option<u32>,
) -> Result<ScanReport, ScanError> {
    let plan = plan(targets, &executor.plugins().await?)?;
    let mut runs: Vec<ScanRun> = Vec::new();
    let mut cut_short = false;
    let mut detector_runs: Vec<String> = Vec::new();
    for step in plan.steps() {
        let mut inputs = Map::new();
        match step.stage {
            Stage::Detect => {
                let target = step.target.clone().unwrap_or_default();
                inputs.insert("target".into(), Value::String(target));
            }
            Stage::Enrich | Stage::Analyze => {
                let findings = scan_findings(executor, &detector_runs).await?;
                inputs.insert("findings".into(), Value::Array(findings));
            }
        }
        let request = RunRequest {
            plugin: step.plugin.clone(),
            inputs,
            actor_uid,
            ..RunRequest::default()
        };
        progress.started(&step);
        let record = execute_with_ticks(executor, progress, &step, request).await?;
        let run = ScanRun::new(&step, record);
        progress.finished(&step, &run);
        if run.stage == Stage::Detect && run.record.findings > 0 {
            detector_runs.push(run.record.run_id.clone());
        }
        let cancelled = run.record.status == RunStatus::Cancelled;
        runs.push(run);
        if cancelled {
            // Ctrl-C or a daemon shutdown: the rest of the pipeline is moot.
            cut_short = true;
            break;
        }
    }
    let mut findings = scan_findings(executor, &detector_runs).await?;
    sort_by_severity(&mut findings);
    let summary = summarize(&plan, &runs, &findings, cut_short);
    Ok(ScanReport {
        runs,
        findings,
        summary,
    })
}

async fn execute_with_ticks<E: ScanExecutor>(
    executor: &mut E,
    progress: &mut dyn ScanProgress,
    step: &ScanStep,
    request: RunRequest,
) -> Result<RunRecord, ScanError> {
    let started = Instant::now();
    let run = executor.execute(request);
    tokio::pin!(run);
    let mut ticks = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            record = &mut run => return record,
            _ = ticks.tick() => progress.tick(step, started.elapsed()),
        }
    }
}

/// The stored findings of the given runs (each read to its end, at most
/// [`MAX_SCAN_FINDINGS`] in all).
async fn scan_findings<E: ScanExecutor>(
    executor: &mut E,
    run_ids: &[String],
) -> Result<Vec<Value>, ScanError> {
    let mut findings = Vec::new();
    for run_id in run_ids {
        let mut after = None;
        loop {
            let (page, next) = executor.findings_page(run_id, after).await?;
            let got = page.len();
            findings.extend(page);
            if findings.len() >= MAX_SCAN_FINDINGS {
                findings.truncate(MAX_SCAN_FINDINGS);
                return Ok(findings);
            }
            match next {
                Some(next) if got > 0 => after = Some(next),
                _ => break,
            }
        }
    }
    Ok(findings)
}

/// A finding document's severity (`unknown` when absent or misspelt).
pub fn severity_of(finding: &Value) -> Severity {
    finding
        .get("severity")
        .and_then(Value::as_str)
        .and_then(Severity::parse)
        .unwrap_or(Severity::Unknown)
}

/// The highest CVSS base score among a finding's vulnerabilities.
pub fn max_cvss_of(finding: &Value) -> Option<f64> {
    vulnerabilities(finding)
        .filter_map(vulnerability_cvss)
        .fold(None, |best, s| Some(best.map_or(s, |b: f64| b.max(s))))
}

fn vulnerabilities(finding: &Value) -> impl Iterator<Item = &Value> {
    finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn vulnerability_cvss(v: &Value) -> Option<f64> {
    v.get("cvss")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("base_score").and_then(Value::as_f64))
        .fold(None, |best, s| Some(best.map_or(s, |b: f64| b.max(s))))
}

/// Most severe first; within a severity the highest CVSS, then by target.
pub fn sort_by_severity(findings: &mut [Value]) {
    let text = |f: &Value, k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    findings.sort_by(|a, b| {
        severity_of(b)
            .cmp(&severity_of(a))
            .then_with(|| {
                let (x, y) = (
                    max_cvss_of(a).unwrap_or(-1.0),
                    max_cvss_of(b).unwrap_or(-1.0),
                );
                y.total_cmp(&x)
            })
            .then_with(|| text(a, "target").cmp(&text(b, "target")))
            .then_with(|| text(a, "rule_id").cmp(&text(b, "rule_id")))
    });
}

/// The summary of a scan's runs and findings.
pub fn summarize(
    plan: &ScanPlan,
    runs: &[ScanRun],
    findings: &[Value],
    cut_short: bool,
) -> ScanSummary {
    let mut by_severity = SeverityCounts::default();
    let mut cves: BTreeMap<String, CveSummary> = BTreeMap::new();
    let mut kev: BTreeMap<String, KevHit> = BTreeMap::new();
    for f in findings {
        by_severity.add(severity_of(f));
        let target = f
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        for v in vulnerabilities(f) {
            let Some(cve) = v.get("cve").and_then(Value::as_str) else {
                continue;
            };
            let kev_field = |k: &str| {
                v.pointer(&format!("/kev/{k}"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let entry = cves.entry(cve.to_string()).or_insert_with(|| CveSummary {
                cve: cve.to_string(),
                max_cvss: None,
                findings: 0,
                kev_date_added: None,
            });
            entry.findings += 1;
            if let Some(score) = vulnerability_cvss(v) {
                entry.max_cvss = Some(entry.max_cvss.map_or(score, |m| m.max(score)));
            }
            if v.get("kev").is_some_and(Value::is_object) {
                entry.kev_date_added = entry.kev_date_added.take().or(kev_field("date_added"));
                let hit = kev.entry(cve.to_string()).or_insert_with(|| KevHit {
                    cve: cve.to_string(),
                    date_added: kev_field("date_added"),
                    due_date: kev_field("due_date"),
                    targets: Vec::new(),
                });
                if !target.is_empty() && !hit.targets.contains(&target) {
                    hit.targets.push(target.clone());
                }
            }
        }
    }
    let mut top_cves: Vec<CveSummary> = cves.into_values().collect();
    top_cves.sort_by(|a, b| {
        b.max_cvss
            .unwrap_or(-1.0)
            .total_cmp(&a.max_cvss.unwrap_or(-1.0))
            .then_with(|| b.findings.cmp(&a.findings))
            .then_with(|| a.cve.cmp(&b.cve))
    });
    top_cves.truncate(TOP_CVES);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs {
        *outcomes.entry(run.outcome().to_string()).or_default() += 1;
    }
    ScanSummary {
        targets: plan.targets.clone(),
        findings: findings.len(),
        by_severity,
        top_cves,
        kev: kev.into_values().collect(),
        runs: outcomes,
        skipped_plugins: plan.skipped.clone(),
        complete: !cut_short && runs.iter().all(ScanRun::ok),
        incomplete: runs
            .iter()
            .filter(|r| r.record.status == RunStatus::Partial)
            .map(|r| IncompleteRun {
                run_id: r.record.run_id.clone(),
                plugin: r.record.plugin.clone(),
                target: r.target.clone(),
                untried: r.record.error.as_ref().and_then(|e| e.untried).unwrap_or(0),
                reason: r
                    .record
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        warnings: Vec::new(),
    }
}

/// Executes the pipeline in the embedded supervisor.
#[derive(Debug)]
pub struct LocalExecutor<'a> {
    supervisor: &'a Supervisor,
    cancel: watch::Receiver<bool>,
}

impl<'a> LocalExecutor<'a> {
    /// Runs go to `supervisor`; setting `cancel` cancels the current run (and
    /// with it the scan).
    pub fn new(supervisor: &'a Supervisor, cancel: watch::Receiver<bool>) -> LocalExecutor<'a> {
        LocalExecutor { supervisor, cancel }
    }
}

impl ScanExecutor for LocalExecutor<'_> {
    async fn plugins(&mut self) -> Result<Vec<PluginListing>, ScanError> {
        Ok(self
            .supervisor
            .plugins()
            .iter()
            .map(PluginListing::from)
            .collect())
    }

    async fn execute(&mut self, request: RunRequest) -> Result<RunRecord, ScanError> {
        let record = self
            .supervisor
            .execute(request, self.cancel.clone())
            .await?;
        // The next stage reads what this run stored.
        self.supervisor.flush().await?;
        Ok(record)
    }

    async fn findings_page(
        &mut self,
        run_id: &str,
        after: Option<i64>,
    ) -> Result<(Vec<Value>, Option<i64>), ScanError> {
        let page = self.supervisor.store().findings(&FindingQuery {
            run_id: Some(run_id.to_string()),
            limit: Some(FINDINGS_PAGE),
            after,
            ..FindingQuery::default()
        })?;
        Ok((
            page.findings.into_iter().map(|f| f.finding).collect(),
            page.next,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secflow_core::record::RunError;
    use serde_json::json;

    fn listing(name: &str, category: Category, status: PluginStatus) -> PluginListing {
        PluginListing {
            name: name.into(),
            version: "1.0.0".into(),
            category: Some(category),
            status,
            reason: (status != PluginStatus::Active).then(|| "nmap is not on PATH".into()),
            network: false,
            manifest_path: format!("/p/{name}/manifest.json").into(),
        }
    }

    fn record(plugin: &str, status: RunStatus, error: Option<RunError>) -> RunRecord {
        RunRecord {
            run_id: format!("run-{plugin}"),
            plugin: plugin.into(),
            plugin_version: "1.0.0".into(),
            category: Category::Detector,
            status,
            partial: false,
            exit_code: Some(0),
            signal: None,
            started_at: String::new(),
            finished_at: None,
            duration_ms: 1,
            cpu_ms: 0,
            memory_mb: 0,
            findings: 0,
            findings_rejected: 0,
            outputs: Map::new(),
            error,
            stderr_tail: String::new(),
            workflow_id: None,
            node_id: None,
            refused_egress: Vec::new(),
        }
    }

    #[test]
    fn the_plan_runs_every_active_detector_on_every_target_then_enrichers_then_analytics() {
        let plugins = [
            listing("stats", Category::Analytics, PluginStatus::Active),
            listing("web", Category::Detector, PluginStatus::Active),
            listing("cves", Category::Enricher, PluginStatus::Active),
            listing("ports", Category::Detector, PluginStatus::Unavailable),
            listing("banner", Category::Detector, PluginStatus::Active),
        ];
        let targets = ["http://a/".to_string(), "b:22".to_string()];
        let plan = plan(&targets, &plugins).unwrap();
        let steps: Vec<(Stage, String, Option<String>)> = plan
            .steps()
            .into_iter()
            .map(|s| (s.stage, s.plugin, s.target))
            .collect();
        let t = |s: &str| Some(s.to_string());
        assert_eq!(
            steps,
            [
                (Stage::Detect, "banner".into(), t("http://a/")),
                (Stage::Detect, "banner".into(), t("b:22")),
                (Stage::Detect, "web".into(), t("http://a/")),
                (Stage::Detect, "web".into(), t("b:22")),
                (Stage::Enrich, "cves".into(), None),
                (Stage::Analyze, "stats".into(), None),
            ]
        );
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.skipped[0].name, "ports");
        assert_eq!(plan.skipped[0].status, PluginStatus::Unavailable);
    }

    #[test]
    fn a_scan_without_an_active_detector_is_refused_naming_the_targets() {
        let plugins = [listing("cves", Category::Enricher, PluginStatus::Active)];
        let err = plan(&["h:1".to_string()], &plugins).unwrap_err();
        assert!(matches!(err, ScanError::NoDetector { .. }));
        assert!(err.to_string().contains("h:1"), "{err}");
        assert!(matches!(plan(&[], &plugins), Err(ScanError::NoTarget)));
    }

    #[test]
    fn a_detector_refusing_the_target_as_invalid_inputs_is_declined_not_failed() {
        let step = ScanStep {
            stage: Stage::Detect,
            plugin: "web".into(),
            target: Some("h:22".into()),
            index: 1,
            total: 1,
        };
        let invalid = RunError {
            code: code::INVALID_INPUTS,
            ..RunError::new(
                secflow_core::record::ErrorKind::PluginError,
                "inputs.target is not a URL",
            )
        };
        let declined = ScanRun::new(&step, record("web", RunStatus::Failed, Some(invalid)));
        assert!(declined.declined && declined.ok());
        assert_eq!(declined.outcome(), "declined");
        let unreachable = RunError {
            code: code::TARGET_UNREACHABLE,
            ..RunError::new(secflow_core::record::ErrorKind::PluginError, "refused")
        };
        let failed = ScanRun::new(&step, record("web", RunStatus::Failed, Some(unreachable)));
        assert!(!failed.ok());
        assert_eq!(failed.outcome(), "failed");
    }

    #[test]
    fn the_summary_counts_severities_ranks_cves_by_cvss_and_lists_kev_hits_per_target() {
        let mut findings = vec![
            json!({"severity": "info", "target": "h:22"}),
            json!({"severity": "critical", "target": "http://h/", "vulnerabilities": [
                {"cve": "CVE-2021-41773", "cvss": [{"version": "3.1", "base_score": 7.5}],
                 "kev": {"date_added": "2021-11-03", "due_date": "2021-11-17"}},
                {"cve": "CVE-2021-42013", "cvss": [{"version": "3.1", "base_score": 9.8}]}
            ]}),
            json!({"severity": "high", "target": "h:80", "vulnerabilities": [
                {"cve": "CVE-2021-41773", "cvss": [{"version": "3.1", "base_score": 7.5}],
                 "kev": {"date_added": "2021-11-03"}}
            ]}),
            json!({"severity": "bogus", "target": "x"}),
        ];
        sort_by_severity(&mut findings);
        let order: Vec<&str> = findings
            .iter()
            .map(|f| f["severity"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["critical", "high", "info", "bogus"]);

        let plan = plan(
            &["http://h/".to_string()],
            &[listing("web", Category::Detector, PluginStatus::Active)],
        )
        .unwrap();
        let step = &plan.steps()[0];
        let runs = [ScanRun::new(
            step,
            record("web", RunStatus::Succeeded, None),
        )];
        let s = summarize(&plan, &runs, &findings, false);
        assert_eq!(s.findings, 4);
        assert_eq!(
            (
                s.by_severity.critical,
                s.by_severity.high,
                s.by_severity.info
            ),
            (1, 1, 1)
        );
        assert_eq!(
            s.by_severity.unknown, 1,
            "a misspelt severity counts as unknown"
        );
        let top: Vec<(&str, Option<f64>, usize)> = s
            .top_cves
            .iter()
            .map(|c| (c.cve.as_str(), c.max_cvss, c.findings))
            .collect();
        assert_eq!(
            top,
            [
                ("CVE-2021-42013", Some(9.8), 1),
                ("CVE-2021-41773", Some(7.5), 2)
            ]
        );
        assert_eq!(s.kev.len(), 1);
        assert_eq!(s.kev[0].date_added.as_deref(), Some("2021-11-03"));
        assert_eq!(s.kev[0].due_date.as_deref(), Some("2021-11-17"));
        assert_eq!(s.kev[0].targets, ["http://h/", "h:80"]);
        assert_eq!(s.runs.get("succeeded"), Some(&1));
        assert!(s.complete);
        assert!(!summarize(&plan, &runs, &findings, true).complete);
    }

    #[test]
    fn a_partial_run_makes_the_scan_incomplete_and_the_summary_says_what_was_left() {
        let plan = plan(
            &["http://h/".to_string()],
            &[listing("ferox", Category::Detector, PluginStatus::Active)],
        )
        .unwrap();
        let step = &plan.steps()[0];
        let left = RunError {
            untried: Some(18),
            ..RunError::new(
                secflow_core::record::ErrorKind::Incomplete,
                "18 not tried: 18 words got no answer after 2 retries",
            )
        };
        let runs = [ScanRun::new(
            step,
            record("ferox", RunStatus::Partial, Some(left)),
        )];
        let s = summarize(&plan, &runs, &[], false);
        assert!(!s.complete, "a partial scan is never reported complete");
        assert_eq!(s.runs.get("partial"), Some(&1));
        assert_eq!(s.incomplete.len(), 1);
        assert_eq!(s.incomplete[0].untried, 18);
        assert_eq!(s.incomplete[0].target.as_deref(), Some("http://h/"));
        let skipped = [ScanRun::new(
            step,
            record("ferox", RunStatus::Skipped, None),
        )];
        assert!(
            summarize(&plan, &skipped, &[], false).complete,
            "a run skipped for missing data leaves the pipeline complete"
        );
    }
}
