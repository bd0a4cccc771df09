//! `secflow doctor`: what this host offers for isolation, whether the config
//! can be honoured here, and the effective configuration with each value's
//! source (the file or the built-in default), and which store is in use,
//! whether it answers and whether its schema is current. Exits 1 when a run
//! would be rejected for a missing layer or the store cannot be used.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use super::vulndb::{vulndb_check, VulndbCheck};
use super::{load_config, print_output, Cli, Failure};
use secflow_core::config::Config;
use secflow_sandbox::{Host, Layer};

#[derive(Debug, Serialize)]
struct LayerCheck {
    layer: Layer,
    available: bool,
    allowed_to_degrade: bool,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConfigValue {
    key: String,
    value: Value,
    source: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    host: secflow_sandbox::HostReport,
    layers: Vec<LayerCheck>,
    uid_range: UidRangeCheck,
    honoured: bool,
    store: secflow_runner::StoreProbe,
    /// A warning at most: scans still run (cve-mapper is `skipped` without data).
    vulndb: VulndbCheck,
    config_file: Option<String>,
    config: Vec<ConfigValue>,
}

#[derive(Debug, Serialize)]
struct UidRangeCheck {
    first: u32,
    last: u32,
    /// Accounts or groups of the host that fall inside the range.
    clashes: Vec<String>,
}

pub fn doctor_command(cli: &Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli)?;
    let host = Host::probe();
    let layers: Vec<LayerCheck> = Layer::ALL
        .into_iter()
        .map(|layer| {
            let reason = host.lacks(layer);
            LayerCheck {
                layer,
                available: reason.is_none(),
                allowed_to_degrade: config.sandbox.allow_degraded.contains(&layer),
                reason,
            }
        })
        .collect();
    let uid_range = uid_range_check(&config);
    let store = secflow_runner::probe_store(&config.storage);
    let honoured = layers.iter().all(|l| l.available || l.allowed_to_degrade)
        && uid_range.clashes.is_empty()
        && store.usable();
    let report = Report {
        host: host.report(),
        layers,
        uid_range,
        honoured,
        store,
        vulndb: vulndb_check(&config),
        config_file: config.source.as_ref().map(|p| p.display().to_string()),
        config: config_sources(&config),
    };
    print_output(cli, &report, |out| write_report(out, &report))?;
    Ok(if report.honoured {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn write_report(out: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let h = &r.host;
    writeln!(out, "host")?;
    writeln!(
        out,
        "  switch to per-run uids (root)   {}",
        yes(h.can_switch_uids)
    )?;
    writeln!(
        out,
        "  pid and mount namespaces        {}",
        describe(
            &h.pid_and_mount_namespaces
                .clone()
                .map(|()| "yes".to_string())
        )
    )?;
    writeln!(
        out,
        "  network namespaces              {}",
        describe(&h.network_namespace.clone().map(|()| "yes".to_string()))
    )?;
    writeln!(
        out,
        "  user namespaces                 {}",
        yes(h.user_namespaces)
    )?;
    writeln!(
        out,
        "  seccomp                         {}",
        describe(
            &h.seccomp
                .clone()
                .map(|n| format!("yes ({n}-instruction filter)"))
        )
    )?;
    writeln!(
        out,
        "  seccomp kill reports (audit)    {}",
        describe(
            &h.seccomp_audit_log
                .clone()
                .map(|()| "yes (violations name their call)".to_string())
        )
    )?;
    writeln!(
        out,
        "  landlock                        {}",
        h.landlock_abi.map_or("no".to_string(), |abi| format!(
            "ABI {abi} (not used: the mount namespace builds the view)"
        ))
    )?;
    writeln!(
        out,
        "  cgroup v2                       {}",
        h.cgroup_v2_controllers.as_ref().map_or(
            "no (limits use rlimits and per-run uids)".to_string(),
            |c| format!("controllers: {}", c.join(" "))
        )
    )?;
    writeln!(out, "\nlayers")?;
    for l in &r.layers {
        let verdict = match (l.available, l.allowed_to_degrade) {
            (true, _) => "ok".to_string(),
            (false, true) => format!("degraded (allowed): {}", l.reason.as_deref().unwrap_or("")),
            (false, false) => format!("MISSING: {}", l.reason.as_deref().unwrap_or("")),
        };
        writeln!(out, "  {:<18} {verdict}", l.layer.as_str())?;
    }
    writeln!(
        out,
        "\nuid range {}..={}: {}",
        r.uid_range.first,
        r.uid_range.last,
        if r.uid_range.clashes.is_empty() {
            "free".to_string()
        } else {
            format!("CLASHES with {}", r.uid_range.clashes.join(", "))
        }
    )?;
    write_store(out, &r.store)?;
    writeln!(
        out,
        "\nvulnerability data {}: {}{}",
        r.vulndb.data_dir.display(),
        if r.vulndb.needs_attention() {
            "WARNING: "
        } else {
            ""
        },
        r.vulndb.message
    )?;
    writeln!(
        out,
        "\nconfig {}",
        r.config_file.as_deref().unwrap_or("(built-in defaults)")
    )?;
    for v in &r.config {
        writeln!(
            out,
            "  {:<32} {:<40} {}",
            v.key,
            v.value.to_string(),
            v.source
        )?;
    }
    writeln!(
        out,
        "\n{}",
        if r.honoured {
            "this host can honour the config"
        } else {
            "this host cannot honour the config: runs needing a MISSING layer are rejected, \
             and an unusable store stops the daemon"
        }
    )
}

fn write_store(out: &mut dyn Write, s: &secflow_runner::StoreProbe) -> std::io::Result<()> {
    writeln!(out, "\nstore {} at {}", s.backend.as_str(), s.location)?;
    let reachable = match &s.error {
        None => "yes".to_string(),
        Some(e) => format!("NO: {e}"),
    };
    writeln!(out, "  reachable                       {reachable}")?;
    let migrated = match s.schema_version {
        None => "unknown".to_string(),
        Some(v) if v == s.known_version => format!("yes (schema {v})"),
        Some(v) if v < s.known_version => format!(
            "no: schema {v}, migrated to {} when the daemon starts (or `secflow storage migrate`)",
            s.known_version
        ),
        Some(v) => format!(
            "NO: schema {v} is newer than this build knows ({}); upgrade secflow",
            s.known_version
        ),
    };
    writeln!(out, "  migrated                        {migrated}")
}

fn describe(r: &Result<String, String>) -> String {
    match r {
        Ok(s) => s.clone(),
        Err(e) => format!("no ({e})"),
    }
}

/// Accounts and groups of this host whose id falls in the sandbox uid range.
fn uid_range_check(config: &Config) -> UidRangeCheck {
    let first = config.sandbox.uid_min;
    let last = first.saturating_add(config.sandbox.uid_count - 1);
    let mut clashes = Vec::new();
    for (file, kind) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let mut fields = line.split(':');
            let name = fields.next().unwrap_or("");
            if let Some(id) = fields.nth(1).and_then(|f| f.parse::<u32>().ok()) {
                if (first..=last).contains(&id) {
                    clashes.push(format!("{kind} {name} ({id})"));
                }
            }
        }
    }
    UidRangeCheck {
        first,
        last,
        clashes,
    }
}

/// Every config value, flattened to `section.key`, marked `file` when the
/// config file sets it and `default` otherwise.
fn config_sources(config: &Config) -> Vec<ConfigValue> {
    let in_file: Option<toml::Table> = config
        .source
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.parse::<toml::Table>().ok());
    let effective = serde_json::to_value(config).unwrap_or(Value::Null);
    let mut out = Vec::new();
    flatten("", &effective, &mut |key, value| {
        let set = in_file.as_ref().is_some_and(|t| lookup(t, key));
        // A URL may carry a password: shown without its user info.
        let value = match (key, value) {
            ("storage.url", Value::String(url)) => {
                Value::String(secflow_core::config::StorageConfig::postgres_location(url))
            }
            _ => value.clone(),
        };
        out.push(ConfigValue {
            key: key.to_string(),
            value,
            source: if set { "file" } else { "default" },
        });
    });
    out
}

fn flatten(prefix: &str, value: &Value, f: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, f);
            }
        }
        other => f(prefix, other),
    }
}

fn lookup(table: &toml::Table, dotted: &str) -> bool {
    let mut current = table;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        match current.get(part) {
            Some(toml::Value::Table(t)) if parts.peek().is_some() => current = t,
            Some(_) => return parts.peek().is_none(),
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_says_whether_the_file_set_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secflow.toml");
        std::fs::write(
            &path,
            "[limits]\nmemory_mb = 128\n[limits.ceiling]\ncpu_seconds = 100\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let values = config_sources(&config);
        let source = |key: &str| values.iter().find(|v| v.key == key).map(|v| v.source);
        assert_eq!(source("limits.memory_mb"), Some("file"));
        assert_eq!(source("limits.ceiling.cpu_seconds"), Some("file"));
        assert_eq!(source("limits.cpu_seconds"), Some("default"));
        assert_eq!(source("storage.batch_size"), Some("default"));
    }
}
