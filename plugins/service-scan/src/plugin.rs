//! The detector's protocol end: validates the target, runs nmap and sends one
//! finding per open port.
//!
//! Each finding is `service.open-port` (severity `info`: an open port is a fact,
//! not a flaw; the cve-mapper raises it when the service is vulnerable) with
//! `location {ip, host, port, protocol}`, the service in `evidence.service`,
//! and the CPE 2.3 names in `cpe[]`. Config: `ports` (nmap `-p` list, used when
//! the target names no port; empty: nmap's default ports) and `timing` (nmap
//! `-T`, 0 to 5).

use std::time::Duration;

use secflow_plugin_sdk::{
    input_str, Category, Confidence, Finding, LogLevel, Plugin, PluginError, RunContext, Severity,
};
use serde_json::{json, Map, Value};

use crate::nmap::{self, OpenPort, ScanError, ScanTarget};

/// nmap `-T` when the config does not say.
const DEFAULT_TIMING: u8 = 4;
/// Time kept back from the deadline to report what nmap found.
const REPORT_MARGIN: Duration = Duration::from_secs(2);

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceScan;

fn to_plugin_error(error: ScanError) -> PluginError {
    match error {
        ScanError::BadTarget { .. } => PluginError::invalid_inputs(error.to_string()),
        ScanError::BadPorts { .. } => PluginError::invalid_config(error.to_string()),
        ScanError::Missing(_) => PluginError::missing_tool(error.to_string()),
        ScanError::Cancelled => PluginError::cancelled(),
        _ => PluginError::internal(error.to_string()),
    }
}

/// The finding of one open port.
pub fn finding(port: &OpenPort) -> Value {
    let service = port.service.as_deref().unwrap_or("unknown");
    let what = match (&port.product, &port.version) {
        (Some(product), Some(version)) => format!("{product} {version}"),
        (Some(product), None) => product.clone(),
        _ => service.to_owned(),
    };
    let mut f = Finding::new(
        "service.open-port",
        format!("Open port {}/{}: {what}", port.port, port.protocol),
        Severity::Info,
        format!("{}:{}", port.address, port.port),
    )
    .location_ip(&port.address)
    .location_port(port.port)
    .location_protocol(&port.protocol)
    .description(format!(
        "nmap found {}/{} open on {} running {what} (service {service}).",
        port.port, port.protocol, port.address
    ))
    .confidence(match port.conf {
        Some(conf) if conf >= 8 => Confidence::High,
        Some(conf) if conf >= 5 => Confidence::Medium,
        _ => Confidence::Low,
    })
    .tag(format!("service:{service}"));
    if let Some(host) = &port.hostname {
        f = f.location_host(host);
    }
    let mut value = f.into_value();
    let mut evidence = Map::new();
    let mut detail = Map::new();
    for (key, field) in [
        ("name", &port.service),
        ("product", &port.product),
        ("version", &port.version),
        ("extrainfo", &port.extrainfo),
        ("ostype", &port.ostype),
        ("method", &port.method),
    ] {
        if let Some(text) = field {
            detail.insert(key.into(), text.clone().into());
        }
    }
    if let Some(conf) = port.conf {
        detail.insert("conf".into(), conf.into());
    }
    evidence.insert("service".into(), Value::Object(detail));
    if !port.unconverted_cpe.is_empty() {
        evidence.insert("nmap_cpe".into(), json!(port.unconverted_cpe));
    }
    value["evidence"] = Value::Object(evidence);
    if !port.cpe.is_empty() {
        value["cpe"] = json!(port.cpe.iter().take(64).collect::<Vec<_>>());
    }
    value
}

impl Plugin for ServiceScan {
    const NAME: &'static str = "service-scan";
    const VERSION: &'static str = "1.0.0";
    const CATEGORY: Category = Category::Detector;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let target = input_str(&inputs, "target")?;
        let ports = ctx.config().get("ports").and_then(Value::as_str);
        let timing = match ctx.config().get("timing") {
            None => DEFAULT_TIMING,
            Some(value) => value
                .as_u64()
                .filter(|t| *t <= 5)
                .map(|t| t as u8)
                .ok_or_else(|| PluginError::invalid_config("config timing must be 0 to 5"))?,
        };
        let target = ScanTarget::parse(target, ports).map_err(to_plugin_error)?;
        let nmap_path = nmap::locate(std::env::var_os("PATH").as_deref())
            .ok_or_else(|| PluginError::missing_tool("nmap is not installed or not on PATH"))?;
        let budget = ctx.remaining().saturating_sub(REPORT_MARGIN);
        let args = target.arguments(timing, budget);
        ctx.log(LogLevel::Info, format!("running nmap {}", args.join(" ")))?;
        let deadline = std::time::Instant::now() + budget;
        let report = {
            let ctx_ref: &RunContext = ctx;
            nmap::run(&nmap_path, &args, deadline, || ctx_ref.is_cancelled())
        }
        .map_err(to_plugin_error)?;
        let open = nmap::parse_report(&report).map_err(to_plugin_error)?;
        let total = open.len() as u64;
        for (done, port) in open.iter().enumerate() {
            ctx.emit(finding(port))?;
            ctx.progress(done as u64 + 1, Some(total), None)?;
        }
        let mut outputs = Map::new();
        outputs.insert("host".into(), target.host.clone().into());
        outputs.insert(
            "ports".into(),
            target.ports.clone().map_or(Value::Null, Value::from),
        );
        outputs.insert("open_ports".into(), total.into());
        outputs.insert(
            "services_with_cpe".into(),
            (open.iter().filter(|p| !p.cpe.is_empty()).count() as u64).into(),
        );
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_port_finding_is_schema_shaped_with_cpe_and_service_evidence() {
        let ports = nmap::parse_report(include_str!("testdata/openssh-banner.xml")).unwrap();
        let value = finding(&ports[0]);
        assert_eq!(value["finding_schema_version"], "1.0.0");
        assert_eq!(value["rule_id"], "service.open-port");
        assert_eq!(value["severity"], "info");
        assert_eq!(value["target"], "127.0.0.1:22222");
        assert_eq!(
            value["title"],
            "Open port 22222/tcp: OpenSSH 7.2p2 Ubuntu 4ubuntu2.10"
        );
        assert_eq!(value["location"]["port"], 22222);
        assert_eq!(value["location"]["protocol"], "tcp");
        assert_eq!(value["location"]["host"], "localhost");
        assert_eq!(
            value["cpe"][0],
            "cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*"
        );
        assert_eq!(value["evidence"]["service"]["product"], "OpenSSH");
        assert_eq!(value["confidence"], "high");
    }

    #[test]
    fn a_target_that_is_not_a_host_is_refused_as_invalid_inputs() {
        let outcome = secflow_plugin_sdk::testing::run(
            ServiceScan,
            json!({}),
            json!({"target": "--script=evil"}),
        );
        let error = outcome.error.expect("refused");
        assert_eq!(
            error.code(),
            secflow_plugin_sdk::protocol::code::INVALID_INPUTS
        );
        assert!(outcome.findings.is_empty());
    }
}
