//! The service-scan detector: open ports and the services behind them, as nmap
//! identifies them, each with its CPEs converted to CPE 2.3 for the enrichers.
//!
//! [`nmap`] builds the command line, runs it and reads the XML report (with
//! [`xml`]); [`cpe`] converts nmap's CPE 2.2 URIs; [`plugin`] is the protocol end.

pub mod cpe;
pub mod nmap;
pub mod plugin;
pub mod xml;
