//! The effectful half: an nftables table in the host's network namespace that
//! filters every packet a scoped run's sockets send, by the run's uid.
//!
//! Each supervisor owns one table, `secflow_egress_<pid>_<n>`, whose base
//! chain on the `output` hook looks the sending socket's uid up in a verdict
//! map. A run's uid maps to its own chain: accept what the allow-set opens,
//! record everything else in the run's own dynamic sets (destination,
//! protocol, port, with a packet counter), then reject it (a TCP reset, so a
//! connect fails at once; an ICMP "administratively prohibited" otherwise;
//! locally sent UDP gets `EPERM`). A uid not in the map is not touched: a
//! `network: true` run, or another process. Two supervisors with overlapping
//! uid ranges each filter in their own base chain, and a reject in either
//! wins, so one cannot open what the other closed.
//!
//! The rules are applied with the `nft` tool (libnftables' parser and
//! netlink batching): one transaction to open a run, one listing and one
//! transaction to close it.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::policy::{Allow, AllowSet, Transport};

/// Most refused destinations recorded per run and address family; past it a
/// refusal is still rejected but no longer itemised.
pub const MAX_REFUSED_DESTINATIONS: usize = 1024;
/// Longest `nft` output read (a table listing), bytes.
const MAX_NFT_OUTPUT: usize = 16 << 20;
/// Where the `nft` tool is looked for.
const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];
/// The prefix of every table this crate makes.
const TABLE_PREFIX: &str = "secflow_egress_";

/// What went wrong applying or reading the rules.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("the nft tool is not installed (looked in {looked}); install the nftables package")]
    NotInstalled { looked: String },
    #[error("cannot run {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nft could not {what}: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("nft's listing of table {table} cannot be read: {reason}")]
    Listing { table: String, reason: String },
}

/// A connection (or packet) a scoped run sent and the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Refusal {
    pub destination: IpAddr,
    /// `tcp`, `udp`, `icmp`, `ipv6-icmp`, or the protocol number.
    pub protocol: String,
    /// The destination port, for TCP and UDP.
    pub port: Option<u16>,
    /// Packets refused to this destination.
    pub packets: u64,
}

/// The `nft` tool.
#[derive(Debug, Clone)]
pub struct Nft {
    path: PathBuf,
}

impl Nft {
    /// The installed `nft`.
    pub fn find() -> Result<Nft, NftError> {
        NFT_PATHS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(|p| Nft {
                path: p.to_path_buf(),
            })
            .ok_or_else(|| NftError::NotInstalled {
                looked: NFT_PATHS.join(", "),
            })
    }

    /// Applies `script` as one transaction: all of it or nothing.
    fn apply(&self, what: &str, script: &str) -> Result<(), NftError> {
        self.run(what, &["-f", "-"], Some(script)).map(drop)
    }

    fn run(&self, what: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NftError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows as nft's own failure below.
            let _ = pipe.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(|source| NftError::Spawn {
            path: self.path.clone(),
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(NftError::Failed {
                what: what.to_string(),
                stderr: stderr.trim().chars().take(2000).collect(),
            });
        }
        if out.stdout.len() > MAX_NFT_OUTPUT {
            return Err(NftError::Failed {
                what: what.to_string(),
                stderr: format!("its output passed {MAX_NFT_OUTPUT} bytes"),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// One supervisor's egress table. Dropping it removes the table.
#[derive(Debug)]
pub struct EgressTable {
    nft: Nft,
    name: String,
}

impl EgressTable {
    /// Creates this process's table (a fresh one each call) and removes the
    /// tables of processes that are gone.
    pub fn install(nft: Nft) -> Result<EgressTable, NftError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{TABLE_PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let listing = nft.run("list the tables", &["list", "tables"], None)?;
        let mut script = String::new();
        for stale in stale_tables(&listing, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
            script.push_str(&format!("delete table inet {stale}\n"));
        }
        script.push_str(&base_script(&name));
        nft.apply(&format!("create table {name}"), &script)?;
        Ok(EgressTable { nft, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scopes `uid`: from now on its sockets reach only what `allow` opens.
    /// The returned guard closes the scope; drop it (or call
    /// [`RunEgress::close`]) only after every process of the run is gone.
    pub fn open(&self, uid: u32, allow: &AllowSet) -> Result<RunEgress<'_>, NftError> {
        self.nft.apply(
            &format!("scope uid {uid}"),
            &run_script(&self.name, uid, allow),
        )?;
        Ok(RunEgress {
            table: self,
            uid,
            closed: false,
        })
    }

    fn close_run(&self, uid: u32) -> Result<Vec<Refusal>, NftError> {
        let listing = self.nft.run(
            &format!("list table {}", self.name),
            &["-j", "list", "table", "inet", &self.name],
            None,
        )?;
        let refusals = refusals(&listing, uid).map_err(|reason| NftError::Listing {
            table: self.name.clone(),
            reason,
        });
        self.nft.apply(
            &format!("unscope uid {uid}"),
            &close_script(&self.name, uid),
        )?;
        refusals
    }
}

impl Drop for EgressTable {
    fn drop(&mut self) {
        let _ = self.nft.apply(
            &format!("delete table {}", self.name),
            &format!("delete table inet {}\n", self.name),
        );
    }
}

/// One scoped run's rules, removed when closed or dropped.
#[derive(Debug)]
pub struct RunEgress<'t> {
    table: &'t EgressTable,
    uid: u32,
    closed: bool,
}

impl RunEgress<'_> {
    /// Removes the run's rules and returns what it was refused.
    pub fn close(mut self) -> Result<Vec<Refusal>, NftError> {
        self.closed = true;
        self.table.close_run(self.uid)
    }
}

impl Drop for RunEgress<'_> {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.table.close_run(self.uid);
        }
    }
}

/// The tables made by processes that are no longer alive.
fn stale_tables(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("table inet "))
        .filter(|name| {
            name.strip_prefix(TABLE_PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !alive(pid))
        })
        .map(str::to_string)
        .collect()
}

/// The table: a verdict map from uid to the run's chain, consulted for every
/// locally sent packet.
fn base_script(table: &str) -> String {
    format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tmap runs {{ type uid : verdict; }}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tmeta skuid vmap @runs\n\
         \t}}\n\
         }}\n"
    )
}

/// One run's chain and refusal sets, and its uid's entry in the map, as one
/// transaction (the uid is scoped only once its chain is complete).
fn run_script(table: &str, uid: u32, allow: &AllowSet) -> String {
    let chain = format!("run_{uid}");
    let mut s = format!("add chain inet {table} {chain}\n");
    for (family, addr_type) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
        s.push_str(&format!(
            "add set inet {table} r{family}_{uid} {{ type {addr_type} . inet_proto . inet_service; \
             size {MAX_REFUSED_DESTINATIONS}; flags dynamic; counter; }}\n"
        ));
    }
    let rule = |s: &mut String, body: &str| {
        s.push_str(&format!("add rule inet {table} {chain} {body}\n"));
    };
    for (v4, daddr, icmp) in [
        (true, "ip daddr", "icmp"),
        (false, "ip6 daddr", "ipv6-icmp"),
    ] {
        let allows: Vec<&Allow> = allow
            .allows
            .iter()
            .filter(|a| a.net.is_ipv4() == v4)
            .collect();
        if allows.is_empty() {
            continue;
        }
        let mut elements = Vec::new();
        for a in &allows {
            let ports = if a.ports.first == a.ports.last {
                a.ports.first.to_string()
            } else {
                format!("{}-{}", a.ports.first, a.ports.last)
            };
            elements.push(format!("{} . tcp . {ports}", a.net));
            if a.transport == Transport::TcpUdp {
                elements.push(format!("{} . udp . {ports}", a.net));
            }
        }
        rule(
            &mut s,
            &format!(
                "meta l4proto {{ tcp, udp }} {daddr} . meta l4proto . th dport {{ {} }} accept",
                elements.join(", ")
            ),
        );
        let mut nets: Vec<String> = allows.iter().map(|a| a.net.to_string()).collect();
        nets.dedup();
        rule(
            &mut s,
            &format!(
                "meta l4proto {icmp} {daddr} {{ {} }} accept",
                nets.join(", ")
            ),
        );
    }
    for (family, nfproto, daddr) in [("4", "ipv4", "ip daddr"), ("6", "ipv6", "ip6 daddr")] {
        rule(
            &mut s,
            &format!(
                "meta l4proto {{ tcp, udp }} update @r{family}_{uid} {{ {daddr} . meta l4proto . th dport }}"
            ),
        );
        rule(
            &mut s,
            &format!(
                "meta nfproto {nfproto} meta l4proto != {{ tcp, udp }} update @r{family}_{uid} {{ {daddr} . meta l4proto . 0 }}"
            ),
        );
    }
    rule(&mut s, "meta l4proto tcp reject with tcp reset");
    rule(&mut s, "reject with icmpx admin-prohibited");
    s.push_str(&format!(
        "add element inet {table} runs {{ {uid} : jump {chain} }}\n"
    ));
    s
}

/// Unscopes the uid first, then removes its chain and sets.
fn close_script(table: &str, uid: u32) -> String {
    format!(
        "delete element inet {table} runs {{ {uid} }}\n\
         delete chain inet {table} run_{uid}\n\
         delete set inet {table} r4_{uid}\n\
         delete set inet {table} r6_{uid}\n"
    )
}

/// The refusals recorded for `uid` in a JSON table listing (`nft -j`).
fn refusals(listing: &str, uid: u32) -> Result<Vec<Refusal>, String> {
    let doc: Value = serde_json::from_str(listing).map_err(|e| e.to_string())?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let wanted = [format!("r4_{uid}"), format!("r6_{uid}")];
    let mut out = Vec::new();
    for set in items.iter().filter_map(|i| i.get("set")) {
        if !wanted
            .iter()
            .any(|w| set.get("name").and_then(Value::as_str) == Some(w))
        {
            continue;
        }
        for elem in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(refusal(elem).ok_or_else(|| format!("an element is not understood: {elem}"))?);
        }
    }
    out.sort();
    Ok(out)
}

fn refusal(elem: &Value) -> Option<Refusal> {
    // With a counter the element is {"elem": {"val": …, "counter": …}}.
    let (val, counter) = match elem.get("elem") {
        Some(inner) => (inner.get("val")?, inner.get("counter")),
        None => (elem, None),
    };
    let parts = val.get("concat")?.as_array()?;
    let [addr, proto, port] = parts.as_slice() else {
        return None;
    };
    let destination: IpAddr = addr.as_str()?.parse().ok()?;
    let protocol = match proto {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let port = u16::try_from(port.as_u64()?).ok()?;
    let has_port = protocol == "tcp" || protocol == "udp";
    Some(Refusal {
        destination,
        protocol,
        port: has_port.then_some(port),
        packets: counter
            .and_then(|c| c.get("packets"))
            .and_then(Value::as_u64)
            .unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{allow_set, SystemResolver};

    #[test]
    fn a_run_chain_accepts_the_allow_set_and_rejects_the_rest() {
        let allow = allow_set(
            &["http://127.0.0.2:8080/".into(), "[::1]:9000".into()],
            &["10.0.0.0/8".into()],
            &SystemResolver,
        )
        .unwrap();
        let s = run_script("t", 7, &allow);
        assert!(s.contains(
            "ip daddr . meta l4proto . th dport { 127.0.0.2 . tcp . 8080, 10.0.0.0/8 . tcp . 0-65535, 10.0.0.0/8 . udp . 0-65535 } accept"
        ), "{s}");
        assert!(
            s.contains(
                "ip6 daddr . meta l4proto . th dport { ::1 . tcp . 9000, ::1 . udp . 9000 } accept"
            ),
            "{s}"
        );
        assert!(
            s.contains("meta l4proto icmp ip daddr { 127.0.0.2, 10.0.0.0/8 } accept"),
            "{s}"
        );
        let reject = s.find("reject with tcp reset").unwrap();
        assert!(
            s.find("update @r4_7").unwrap() < reject,
            "refusals are recorded before the reject"
        );
        assert!(
            s.trim_end()
                .ends_with("add element inet t runs { 7 : jump run_7 }"),
            "the uid is scoped last, once its chain is whole: {s}"
        );
    }

    #[test]
    fn an_empty_allow_set_rejects_everything() {
        let s = run_script("t", 7, &AllowSet::default());
        assert!(!s.contains("accept"), "{s}");
        assert!(s.contains("reject with icmpx admin-prohibited"));
    }

    #[test]
    fn only_tables_of_dead_processes_are_stale() {
        let listing = "table inet secflow_egress_10_0\ntable inet secflow_egress_11_2\ntable inet other_12\ntable ip secflow_egress_13_0\n";
        assert_eq!(
            stale_tables(listing, |pid| pid == 11),
            vec!["secflow_egress_10_0"]
        );
    }

    #[test]
    fn refusals_are_read_for_the_run_only() {
        let listing = r#"{"nftables": [{"metainfo": {}},
          {"set": {"name": "r4_7", "elem": [
            {"elem": {"val": {"concat": ["127.0.0.3", "tcp", 8080]}, "counter": {"packets": 2, "bytes": 120}}},
            {"elem": {"val": {"concat": ["169.254.169.254", "icmp", 0]}, "counter": {"packets": 1, "bytes": 84}}}]}},
          {"set": {"name": "r6_7", "elem": [{"elem": {"val": {"concat": ["::1", "udp", 53]}, "counter": {"packets": 3, "bytes": 1}}}]}},
          {"set": {"name": "r4_8", "elem": [{"elem": {"val": {"concat": ["127.0.0.4", "tcp", 1]}, "counter": {"packets": 1, "bytes": 1}}}]}}]}"#;
        let got = refusals(listing, 7).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].destination, "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!((got[0].port, got[0].packets), (Some(8080), 2));
        assert_eq!((got[1].protocol.as_str(), got[1].port), ("icmp", None));
        assert_eq!(
            (got[2].protocol.as_str(), got[2].port, got[2].packets),
            ("udp", Some(53), 3)
        );
        assert!(refusals("{}", 7).is_err());
    }
}
