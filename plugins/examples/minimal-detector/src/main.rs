//! minimal-detector: flags a target served over cleartext HTTP (docs/writing-plugins.md).

use secflow_plugin_sdk::{serve, Category, Finding, Plugin, PluginError, RunContext, Severity};
use serde_json::{json, Map, Value};

struct MinimalDetector;

impl Plugin for MinimalDetector {
    const NAME: &'static str = "minimal-detector";
    const VERSION: &'static str = "1.0.0";
    const CATEGORY: Category = Category::Detector;

    fn run(
        &mut self,
        ctx: &mut RunContext,
        inputs: Map<String, Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let target = match inputs.get("target").and_then(Value::as_str) {
            Some(target) => target,
            None => return Err(PluginError::invalid_inputs("inputs.target must be a URL")),
        };
        let cleartext = target.starts_with("http://");
        if cleartext {
            let title = "Target is served over cleartext HTTP";
            let finding = Finding::new("transport.cleartext", title, Severity::Low, target);
            ctx.emit(
                finding
                    .location_url(target)
                    .remediation("Serve it over HTTPS."),
            )?;
        }
        Ok(Map::from_iter([("cleartext".into(), json!(cleartext))]))
    }
}

fn main() -> std::process::ExitCode {
    serve(MinimalDetector)
}
