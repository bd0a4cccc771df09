//! `secflow-service-scan`: the service-scan detector plugin (see the library docs).

use std::process::ExitCode;

fn main() -> ExitCode {
    secflow_plugin_sdk::serve(secflow_service_scan::plugin::ServiceScan)
}
