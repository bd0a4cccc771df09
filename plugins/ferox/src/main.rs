//! The `secflow-ferox` plugin executable: the `ferox` detector served over the
//! SecFlow stdio protocol (docs/protocol.md).

use std::process::ExitCode;

use secflow_ferox::plugin::Ferox;

fn main() -> ExitCode {
    secflow_plugin_sdk::serve(Ferox)
}
