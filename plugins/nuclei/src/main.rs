//! The `secflow-nuclei` executable: the [`secflow_nuclei::Nuclei`] plugin behind
//! the SecFlow stdio protocol.

fn main() -> std::process::ExitCode {
    secflow_plugin_sdk::serve(secflow_nuclei::Nuclei)
}
