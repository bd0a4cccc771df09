//! Driving nmap: the command line (pure), the run (with cancel and deadline)
//! and the reading of its XML report into open ports.
//!
//! The scan is `nmap -sT -sV --unprivileged -Pn -oX - …`: a TCP connect scan with
//! version detection, because the sandbox grants no capabilities (no raw
//! sockets: no SYN scan, no ICMP ping, hence `-Pn`). The target and ports are
//! validated before they reach argv, so an input can never become an option.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cpe::uri_to_formatted;
use crate::xml::{Event, Reader, XmlError};

/// Most bytes of nmap's stderr quoted in an error.
const STDERR_QUOTED: usize = 2048;
/// How often the run looks at cancel and the deadline.
const POLL: Duration = Duration::from_millis(50);

/// Why a scan could not be set up, run or read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The target is not a host name, an IP address or a URL of one.
    #[error("target {target:?} is not a host name, IP address, host:port or URL")]
    BadTarget { target: String },
    /// The ports are not a port list nmap understands.
    #[error(
        "ports {ports:?} must be numbers and ranges separated by commas (e.g. \"22,80,8000-8100\")"
    )]
    BadPorts { ports: String },
    /// nmap is not installed.
    #[error("nmap is not installed or not on PATH: {0}")]
    Missing(#[source] std::io::Error),
    #[error("nmap could not be started: {0}")]
    Spawn(#[source] std::io::Error),
    /// nmap exited with a failure.
    #[error("nmap failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("nmap's XML report is unreadable: {0}")]
    Report(#[from] XmlError),
    #[error("the scan was cancelled")]
    Cancelled,
    #[error("the scan did not finish before the run's deadline")]
    Deadline,
}

/// What to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTarget {
    pub host: String,
    /// nmap `-p` list; `None` scans nmap's default ports.
    pub ports: Option<String>,
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
}

fn valid_ports(ports: &str) -> bool {
    !ports.is_empty()
        && ports.split(',').all(|item| {
            let mut ends = item.splitn(2, '-');
            ends.all(|p| !p.is_empty() && p.parse::<u16>().is_ok())
        })
}

impl ScanTarget {
    /// Reads `inputs.target` (`host`, `host:port`, `[v6]:port` or a URL) with
    /// the config's `ports`, which a port in the target overrides.
    pub fn parse(target: &str, ports: Option<&str>) -> Result<ScanTarget, ScanError> {
        let bad = || ScanError::BadTarget {
            target: target.to_owned(),
        };
        let trimmed = target.trim();
        let (authority, default_port) = match trimmed.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                let authority = authority.rsplit('@').next().unwrap_or(authority);
                let port = match scheme.to_ascii_lowercase().as_str() {
                    "http" => Some("80"),
                    "https" => Some("443"),
                    _ => None,
                };
                (authority, port)
            }
            None => (trimmed, None),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':'))
        } else if authority.matches(':').count() == 1 {
            let (host, port) = authority.split_once(':').ok_or_else(bad)?;
            (host, Some(port))
        } else {
            (authority, None)
        };
        if !valid_host(host) {
            return Err(bad());
        }
        let ports = match port.or(default_port) {
            Some(port) if port.parse::<u16>().is_ok() => Some(port.to_owned()),
            Some(_) => return Err(bad()),
            None => ports.filter(|p| !p.trim().is_empty()).map(str::to_owned),
        };
        if let Some(list) = &ports {
            if !valid_ports(list) {
                return Err(ScanError::BadPorts {
                    ports: list.clone(),
                });
            }
        }
        Ok(ScanTarget {
            host: host.to_owned(),
            ports,
        })
    }

    /// nmap's arguments for this target.
    pub fn arguments(&self, timing: u8, host_timeout: Duration) -> Vec<String> {
        let mut args: Vec<String> = [
            "-sT",
            "-sV",
            "--unprivileged",
            "-Pn",
            "-n",
            "-oX",
            "-",
            "--noninteractive",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("-T{}", timing.min(5)));
        args.push("--host-timeout".into());
        args.push(format!("{}s", host_timeout.as_secs().max(1)));
        if let Some(ports) = &self.ports {
            args.push("-p".into());
            args.push(ports.clone());
        }
        if self.host.contains(':') {
            args.push("-6".into());
        }
        args.push("--".into());
        args.push(self.host.clone());
        args
    }
}

/// One open port with what nmap recognised on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenPort {
    pub address: String,
    pub hostname: Option<String>,
    pub protocol: String,
    pub port: u16,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub extrainfo: Option<String>,
    pub ostype: Option<String>,
    pub method: Option<String>,
    /// nmap's confidence, 0 to 10.
    pub conf: Option<u8>,
    /// CPE 2.3 formatted strings.
    pub cpe: Vec<String>,
    /// nmap CPE URIs that could not be converted.
    pub unconverted_cpe: Vec<String>,
}

fn attribute<'a>(attributes: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Reads the open ports of every host in an nmap XML report.
pub fn parse_report(xml: &str) -> Result<Vec<OpenPort>, ScanError> {
    let mut reader = Reader::new(xml);
    let mut open = Vec::new();
    let mut address = String::new();
    let mut hostname: Option<String> = None;
    let mut port: Option<OpenPort> = None;
    let mut port_open = false;
    let mut in_cpe = false;
    while let Some(event) = reader.next_event()? {
        match event {
            Event::Start {
                name, attributes, ..
            } => match name {
                "host" => {
                    address.clear();
                    hostname = None;
                }
                "address" if attribute(&attributes, "addrtype") != Some("mac") => {
                    if let Some(addr) = attribute(&attributes, "addr") {
                        address = addr.to_owned();
                    }
                }
                "hostname" if hostname.is_none() => {
                    hostname = attribute(&attributes, "name").map(str::to_owned);
                }
                "port" => {
                    port_open = false;
                    port = Some(OpenPort {
                        address: address.clone(),
                        hostname: hostname.clone(),
                        protocol: attribute(&attributes, "protocol")
                            .unwrap_or("tcp")
                            .to_owned(),
                        port: attribute(&attributes, "portid")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0),
                        ..OpenPort::default()
                    });
                }
                "state" => {
                    port_open = attribute(&attributes, "state") == Some("open");
                }
                "service" => {
                    if let Some(p) = port.as_mut() {
                        let get = |key| attribute(&attributes, key).map(str::to_owned);
                        p.service = get("name");
                        p.product = get("product");
                        p.version = get("version");
                        p.extrainfo = get("extrainfo");
                        p.ostype = get("ostype");
                        p.method = get("method");
                        p.conf = attribute(&attributes, "conf").and_then(|c| c.parse().ok());
                    }
                }
                "cpe" => in_cpe = port.is_some(),
                _ => {}
            },
            Event::Text(text) if in_cpe => {
                if let Some(p) = port.as_mut() {
                    let uri = text.trim();
                    match uri_to_formatted(uri) {
                        Ok(cpe) if !p.cpe.contains(&cpe) => p.cpe.push(cpe),
                        Ok(_) => {}
                        Err(_) => p.unconverted_cpe.push(uri.to_owned()),
                    }
                }
            }
            Event::Text(_) => {}
            Event::End { name } => match name {
                "cpe" => in_cpe = false,
                "port" => {
                    if let Some(p) = port.take() {
                        if port_open && p.port != 0 {
                            open.push(p);
                        }
                    }
                }
                _ => {}
            },
        }
    }
    Ok(open)
}

fn read_all(mut stream: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

/// Kills and reaps the child (used on cancel and deadline).
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `nmap` with `args`, polling `cancelled` until it exits or `deadline`.
/// Returns its stdout (the XML report).
pub fn run(
    nmap: &Path,
    args: &[String],
    deadline: Instant,
    cancelled: impl Fn() -> bool,
) -> Result<String, ScanError> {
    let mut child = Command::new(nmap)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ScanError::Missing(e),
            _ => ScanError::Spawn(e),
        })?;
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(ScanError::Spawn)? {
            break status;
        }
        if cancelled() {
            stop(&mut child);
            return Err(ScanError::Cancelled);
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            return Err(ScanError::Deadline);
        }
        std::thread::sleep(POLL);
    };
    let collect = |handle: Option<JoinHandle<Vec<u8>>>| {
        handle
            .and_then(|h| h.join().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    let out = collect(stdout);
    let err = collect(stderr);
    if !status.success() {
        let mut quoted = err.trim().to_owned();
        if quoted.len() > STDERR_QUOTED {
            let mut end = STDERR_QUOTED;
            while !quoted.is_char_boundary(end) {
                end -= 1;
            }
            quoted.truncate(end);
        }
        return Err(ScanError::Failed {
            status: status.to_string(),
            stderr: quoted,
        });
    }
    Ok(out)
}

/// Finds `nmap` on `PATH`.
pub fn locate(path_var: Option<&std::ffi::OsStr>) -> Option<std::path::PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join("nmap"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_ssh_port_of_a_real_nmap_report_carries_its_service_and_cpe_2_3() {
        let ports = parse_report(include_str!("testdata/openssh-banner.xml")).unwrap();
        assert_eq!(ports.len(), 1, "the closed port is left out: {ports:?}");
        let ssh = &ports[0];
        assert_eq!(ssh.address, "127.0.0.1");
        assert_eq!(ssh.hostname.as_deref(), Some("localhost"));
        assert_eq!(ssh.port, 22222);
        assert_eq!(ssh.protocol, "tcp");
        assert_eq!(ssh.service.as_deref(), Some("ssh"));
        assert_eq!(ssh.product.as_deref(), Some("OpenSSH"));
        assert_eq!(ssh.version.as_deref(), Some("7.2p2 Ubuntu 4ubuntu2.10"));
        assert_eq!(ssh.conf, Some(10));
        assert_eq!(
            ssh.cpe,
            [
                "cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*",
                "cpe:2.3:o:linux:linux_kernel:*:*:*:*:*:*:*:*"
            ]
        );
    }

    #[test]
    fn an_apache_httpd_report_yields_the_http_server_cpe() {
        let ports = parse_report(include_str!("testdata/apache-httpd.xml")).unwrap();
        assert_eq!(ports[0].product.as_deref(), Some("Apache httpd"));
        assert_eq!(
            ports[0].cpe,
            ["cpe:2.3:a:apache:http_server:2.4.49:*:*:*:*:*:*:*"]
        );
    }

    #[test]
    fn targets_are_hosts_host_ports_or_urls_and_never_options() {
        let t = ScanTarget::parse("127.0.0.1:2222", Some("1-1024")).unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.ports.as_deref(), Some("2222"));
        let url = ScanTarget::parse("https://example.test/login", None).unwrap();
        assert_eq!(
            (url.host.as_str(), url.ports.as_deref()),
            ("example.test", Some("443"))
        );
        let v6 = ScanTarget::parse("[::1]:22", None).unwrap();
        assert_eq!((v6.host.as_str(), v6.ports.as_deref()), ("::1", Some("22")));
        assert_eq!(
            ScanTarget::parse("scanme.test", Some("22,80"))
                .unwrap()
                .ports
                .as_deref(),
            Some("22,80")
        );
        for bad in ["-iL/etc/passwd", "host name", "h;rm", "h:99999", ""] {
            assert!(
                matches!(
                    ScanTarget::parse(bad, None),
                    Err(ScanError::BadTarget { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            ScanTarget::parse("h", Some("22,--script=x")),
            Err(ScanError::BadPorts { .. })
        ));
    }

    #[test]
    fn the_command_line_is_a_connect_scan_with_the_target_after_the_options() {
        let target = ScanTarget::parse("10.0.0.5:22", None).unwrap();
        let args = target.arguments(4, Duration::from_secs(90));
        for expected in ["-sT", "-sV", "-Pn", "--unprivileged", "-T4", "90s"] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert!(!args.iter().any(|a| a == "-sS"));
        assert_eq!(
            args[args.len() - 2..],
            ["--".to_owned(), "10.0.0.5".to_owned()]
        );
    }

    #[test]
    fn a_missing_nmap_is_reported_as_missing() {
        let err = run(
            Path::new("/nonexistent/nmap"),
            &[],
            Instant::now() + Duration::from_secs(5),
            || false,
        )
        .unwrap_err();
        assert!(matches!(err, ScanError::Missing(_)), "{err}");
    }
}
