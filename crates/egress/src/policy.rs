//! The pure half: which destinations a `network: "targets"` run may reach,
//! built from the run's input targets (resolved by the supervisor before the
//! run) and the manifest's `sandbox.egress` entries. No I/O here apart from
//! the [`Resolve`] the caller hands in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use serde::Serialize;

/// Most targets one run may name.
pub const MAX_TARGETS: usize = 256;
/// Most `sandbox.egress` entries one manifest may list.
pub const MAX_EGRESS_RULES: usize = 64;
/// Most addresses kept per resolved name (a name with more is cut there).
pub const MAX_ADDRESSES_PER_NAME: usize = 16;
/// Longest target or egress entry, bytes.
pub const MAX_ENTRY_LEN: usize = 2048;

/// A target or egress entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("target {entry:?} cannot be used: {reason}")]
    Target { entry: String, reason: String },
    #[error("sandbox.egress entry {entry:?} cannot be used: {reason}")]
    Egress { entry: String, reason: String },
    #[error("host {host:?} cannot be resolved: {reason}")]
    Resolve { host: String, reason: String },
    #[error("too many {what}: {count}, at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// The transport protocols an [`Allow`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TCP only (a URL target: HTTP and TLS are TCP).
    Tcp,
    /// TCP and UDP.
    TcpUdp,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub const ALL: Ports = Ports {
        first: 0,
        last: u16::MAX,
    };

    pub fn one(port: u16) -> Ports {
        Ports {
            first: port,
            last: port,
        }
    }
}

/// An address block: an address with its prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// One address (IPv4-mapped IPv6 addresses become IPv4: that is what
    /// the kernel's filter sees on the wire).
    pub fn host(addr: IpAddr) -> Net {
        let addr = addr.to_canonical();
        Net {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Parses `a.b.c.d/n` or `x::y/n`; host bits must be zero.
    fn parse_cidr(text: &str) -> Result<Net, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| "not a CIDR block".to_string())?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix length {prefix:?} is not between 0 and {max}"))?;
        let net = Net { addr, prefix };
        if net.masked() != addr {
            return Err(format!(
                "host bits are set (the block starts at {})",
                net.masked()
            ));
        }
        Ok(net)
    }

    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(bits & mask))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `addr` falls in this block.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.addr.is_ipv4() && Net { addr, ..*self }.masked() == self.addr
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == if self.is_ipv4() { 32 } else { 128 } {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// One opening: connections to `net` on `ports` over `transport`, and ICMP
/// (echo, errors) to `net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Allow {
    pub net: Net,
    pub ports: Ports,
    pub transport: Transport,
}

/// A name the supervisor resolved for the run; the run is handed these so it
/// need not (and cannot) ask a DNS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedName {
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// Everything a run may reach, and the names it was handed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AllowSet {
    pub allows: Vec<Allow>,
    pub names: Vec<ResolvedName>,
}

impl AllowSet {
    /// Whether a connection to `addr:port` over TCP (or UDP) is allowed.
    pub fn permits(&self, addr: IpAddr, port: u16, udp: bool) -> bool {
        self.allows.iter().any(|a| {
            a.net.contains(addr)
                && (a.ports.first..=a.ports.last).contains(&port)
                && (!udp || a.transport == Transport::TcpUdp)
        })
    }

    /// The lines of an `/etc/hosts` that gives the run its resolved names.
    pub fn hosts_file(&self) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for name in &self.names {
            for addr in &name.addrs {
                out.push_str(&format!("{addr}\t{}\n", name.name));
            }
        }
        out
    }

    fn push(&mut self, allow: Allow) {
        if !self.allows.contains(&allow) {
            self.allows.push(allow);
        }
    }
}

/// Name resolution, done by the supervisor before the run.
pub trait Resolve {
    /// The addresses of `host` (not an IP literal).
    fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        (host, 0u16)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .map_err(|e| e.to_string())
    }
}

/// Where a target or egress entry points before resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Ip(IpAddr),
    Name(String),
    Block(Net),
}

/// Builds the allow-set of one run. `targets` are the run's input targets
/// (URLs, `host:port`, hosts or IP addresses); `egress` the manifest's
/// `sandbox.egress` (CIDR blocks, hosts, `host:port`). Every name is resolved
/// with `resolver`; one that does not resolve fails the whole set, so a run
/// never starts with less than it was told it has.
pub fn allow_set(
    targets: &[String],
    egress: &[String],
    resolver: &dyn Resolve,
) -> Result<AllowSet, PolicyError> {
    if targets.len() > MAX_TARGETS {
        return Err(PolicyError::TooMany {
            what: "targets",
            count: targets.len(),
            max: MAX_TARGETS,
        });
    }
    if egress.len() > MAX_EGRESS_RULES {
        return Err(PolicyError::TooMany {
            what: "sandbox.egress entries",
            count: egress.len(),
            max: MAX_EGRESS_RULES,
        });
    }
    let mut set = AllowSet::default();
    let entries = targets
        .iter()
        .map(|t| (t, parse_target(t).map_err(|reason| target_error(t, reason))))
        .chain(
            egress
                .iter()
                .map(|e| (e, parse_egress(e).map_err(|reason| egress_error(e, reason)))),
        );
    for (_, parsed) in entries {
        let (place, ports, transport) = parsed?;
        let nets = match place {
            Place::Ip(addr) => vec![Net::host(addr)],
            Place::Block(net) => vec![net],
            Place::Name(name) => resolve_name(&mut set, &name, resolver)?
                .into_iter()
                .map(Net::host)
                .collect(),
        };
        for net in nets {
            set.push(Allow {
                net,
                ports,
                transport,
            });
        }
    }
    Ok(set)
}

fn target_error(entry: &str, reason: String) -> PolicyError {
    PolicyError::Target {
        entry: shorten(entry),
        reason,
    }
}

fn egress_error(entry: &str, reason: String) -> PolicyError {
    PolicyError::Egress {
        entry: shorten(entry),
        reason,
    }
}

fn shorten(entry: &str) -> String {
    entry.chars().take(128).collect()
}

fn resolve_name(
    set: &mut AllowSet,
    name: &str,
    resolver: &dyn Resolve,
) -> Result<Vec<IpAddr>, PolicyError> {
    let name = name.to_ascii_lowercase();
    if let Some(known) = set.names.iter().find(|n| n.name == name) {
        return Ok(known.addrs.clone());
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    for addr in resolver
        .resolve(&name)
        .map_err(|reason| PolicyError::Resolve {
            host: name.clone(),
            reason,
        })?
    {
        let addr = addr.to_canonical();
        if !addrs.contains(&addr) && addrs.len() < MAX_ADDRESSES_PER_NAME {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(PolicyError::Resolve {
            host: name,
            reason: "no address".into(),
        });
    }
    set.names.push(ResolvedName {
        name,
        addrs: addrs.clone(),
    });
    Ok(addrs)
}

/// A target: `scheme://host[:port][/path]` (TCP to that port, the scheme's
/// default without one), `host:port` (TCP and UDP to it) or a bare host
/// (TCP and UDP to every port, as a port scan needs).
fn parse_target(text: &str) -> Result<(Place, Ports, Transport), String> {
    check_len(text)?;
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(p) => p,
            None => default_port(scheme)
                .ok_or_else(|| format!("scheme {scheme:?} has no default port; give one"))?,
        };
        return Ok((parse_place(host)?, Ports::one(port), Transport::Tcp));
    }
    let (host, port) = split_host_port(text)?;
    let ports = port.map_or(Ports::ALL, Ports::one);
    Ok((parse_place(host)?, ports, Transport::TcpUdp))
}

/// Checks one `sandbox.egress` entry without resolving it (for the
/// manifest's own checks); the error is the reason it cannot be used.
pub fn check_egress_entry(text: &str) -> Result<(), String> {
    parse_egress(text).map(drop)
}

/// A `sandbox.egress` entry: a CIDR block, a host, or `host:port`.
fn parse_egress(text: &str) -> Result<(Place, Ports, Transport), String> {
    check_len(text)?;
    if text.contains("://") {
        return Err("a URL is not an egress entry; give a CIDR block, host or host:port".into());
    }
    if text.contains('/') {
        return Ok((
            Place::Block(Net::parse_cidr(text)?),
            Ports::ALL,
            Transport::TcpUdp,
        ));
    }
    let (host, port) = split_host_port(text)?;
    let ports = port.map_or(Ports::ALL, Ports::one);
    Ok((parse_place(host)?, ports, Transport::TcpUdp))
}

fn check_len(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if text.len() > MAX_ENTRY_LEN {
        return Err(format!(
            "it is {} bytes long, at most {MAX_ENTRY_LEN}",
            text.len()
        ));
    }
    Ok(())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "ftp" => Some(21),
        "ssh" => Some(22),
        _ => None,
    }
}

/// Splits `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 address or a host.
fn split_host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not between 1 and 65535"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address in brackets lacks its ']'".to_string())?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(parse_port(p)?))),
                None => Err(format!("{after:?} after the IPv6 address is not :port")),
            },
        };
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Ok((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((text, None)),
    }
}

fn parse_place(host: &str) -> Result<Place, String> {
    if let Ok(addr) = host.parse::<IpAddr>() {
        return Ok(Place::Ip(addr));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        });
    if !valid {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok(Place::Name(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A resolver that knows a fixed table and fails on anything else.
    struct Table(BTreeMap<&'static str, Vec<IpAddr>>);

    impl Resolve for Table {
        fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| "no such host".to_string())
        }
    }

    fn table() -> Table {
        Table(BTreeMap::from([
            (
                "scan.example",
                vec![
                    "127.0.0.2".parse().unwrap(),
                    "::ffff:127.0.0.9".parse().unwrap(),
                ],
            ),
            (
                "many.example",
                (1..=40)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
                    .collect(),
            ),
        ]))
    }

    fn set(targets: &[&str], egress: &[&str]) -> Result<AllowSet, PolicyError> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        allow_set(&own(targets), &own(egress), &table())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_url_target_opens_tcp_to_its_port_only() {
        let set = set(&["http://127.0.0.2:8080/app/"], &[]).unwrap();
        assert!(set.permits(ip("127.0.0.2"), 8080, false));
        assert!(
            !set.permits(ip("127.0.0.2"), 8080, true),
            "udp is not opened"
        );
        assert!(!set.permits(ip("127.0.0.2"), 8081, false));
        assert!(!set.permits(ip("127.0.0.3"), 8080, false));
    }

    #[test]
    fn a_url_without_a_port_opens_the_schemes_default() {
        let set = set(&["https://user@127.0.0.2/x?y#z"], &[]).unwrap();
        assert!(set.permits(ip("127.0.0.2"), 443, false));
        assert_eq!(set.allows.len(), 1);
        let err = allow_set(&["gopher://127.0.0.2/".into()], &[], &table()).unwrap_err();
        assert!(err.to_string().contains("no default port"), "{err}");
    }

    #[test]
    fn a_bare_host_opens_every_port_and_a_host_port_one() {
        let set = set(&["127.0.0.2", "[::1]:8080"], &[]).unwrap();
        assert!(set.permits(ip("127.0.0.2"), 1, true));
        assert!(set.permits(ip("127.0.0.2"), 65535, false));
        assert!(set.permits(ip("::1"), 8080, true));
        assert!(!set.permits(ip("::1"), 8081, false));
    }

    #[test]
    fn names_are_resolved_by_the_supervisor_and_handed_to_the_run() {
        let set = set(&["http://Scan.Example:8080/"], &[]).unwrap();
        assert!(set.permits(ip("127.0.0.2"), 8080, false));
        assert!(
            set.permits(ip("127.0.0.9"), 8080, false),
            "a mapped address is opened as IPv4"
        );
        assert_eq!(set.names.len(), 1);
        let hosts = set.hosts_file();
        assert!(hosts.contains("127.0.0.2\tscan.example\n"), "{hosts}");
        assert!(hosts.contains("127.0.0.9\tscan.example\n"), "{hosts}");
    }

    #[test]
    fn a_name_that_does_not_resolve_fails_the_set_naming_it() {
        let err = set(&["http://127.0.0.2/", "nowhere.example:80"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host \"nowhere.example\" cannot be resolved: no such host"
        );
    }

    #[test]
    fn a_name_keeps_a_bounded_number_of_addresses() {
        let set = set(&["many.example"], &[]).unwrap();
        assert_eq!(set.allows.len(), MAX_ADDRESSES_PER_NAME);
    }

    #[test]
    fn egress_cidr_blocks_open_every_port_in_the_block() {
        let set = set(&[], &["10.1.0.0/16", "fd00::/8", "scan.example:53"]).unwrap();
        assert!(set.permits(ip("10.1.200.3"), 22, false));
        assert!(!set.permits(ip("10.2.0.1"), 22, false));
        assert!(set.permits(ip("fd12::1"), 443, true));
        assert!(set.permits(ip("127.0.0.2"), 53, true));
        assert!(!set.permits(ip("127.0.0.2"), 54, true));
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (entry, reason) in [
            (
                "10.1.0.1/16",
                "host bits are set (the block starts at 10.1.0.0)",
            ),
            (
                "10.0.0.0/33",
                "prefix length \"33\" is not between 0 and 32",
            ),
            ("http://x/", "a URL is not an egress entry"),
            ("host:0", "port \"0\" is not between 1 and 65535"),
            ("bad host", "is neither an IP address nor a host name"),
            ("", "it is empty"),
        ] {
            let err = set(&[], &[entry]).unwrap_err().to_string();
            assert!(err.starts_with("sandbox.egress entry"), "{err}");
            assert!(err.contains(reason), "{entry:?}: {err}");
        }
        let err = set(&["[::1:80"], &[]).unwrap_err().to_string();
        assert!(err.contains("lacks its ']'"), "{err}");
    }

    #[test]
    fn inputs_are_bounded() {
        let many: Vec<String> = (0..=MAX_TARGETS)
            .map(|i| format!("127.0.0.{}", i % 250))
            .collect();
        let err = allow_set(&many, &[], &table()).unwrap_err();
        assert!(matches!(
            err,
            PolicyError::TooMany {
                what: "targets",
                ..
            }
        ));
        let long = format!("http://{}.example/", "a".repeat(MAX_ENTRY_LEN));
        assert!(allow_set(&[long], &[], &table()).is_err());
    }

    #[test]
    fn the_same_opening_is_listed_once() {
        let set = set(&["127.0.0.2:80", "127.0.0.2:80"], &["127.0.0.2:80"]).unwrap();
        assert_eq!(set.allows.len(), 1);
    }
}
