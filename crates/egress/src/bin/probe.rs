//! The egress tests' probe: run as a scoped uid, it tries one way out and
//! prints what happened (`ok`, or `refused: <error>`), so the tests can
//! assert on what the kernel allowed. Not used outside the tests.
//!
//! Usage: `secflow-egress-probe MODE [ARG…]` with MODE one of
//! `tcp ADDR`, `udp ADDR`, `fork ADDR`, `thread ADDR`, `raw`, `packet`,
//! `abstract NAME [scoped]`, `widen NFT TABLE UID`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixStream};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tcp", addr] => tcp(addr),
        ["udp", addr] => udp(addr),
        ["fork", addr] => in_forked_child(addr),
        ["thread", addr] => std::thread::spawn({
            let addr = addr.to_string();
            move || tcp(&addr)
        })
        .join()
        .unwrap_or_else(|_| Err("the thread panicked".into())),
        ["raw"] => socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        ["packet"] => socket(libc::AF_PACKET, libc::SOCK_RAW, 0x0300),
        ["abstract", name, rest @ ..] => abstract_unix(name, rest == ["scoped"]),
        ["widen", nft, table, uid] => widen(nft, table, uid),
        _ => {
            eprintln!("usage: secflow-egress-probe MODE [ARG…]");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => println!("ok"),
        Err(e) => println!("refused: {e}"),
    }
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

fn parse(addr: &str) -> Result<SocketAddr, String> {
    addr.parse().map_err(|_| format!("bad address {addr:?}"))
}

fn tcp(addr: &str) -> Result<(), String> {
    TcpStream::connect_timeout(&parse(addr)?, Duration::from_secs(3))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn udp(addr: &str) -> Result<(), String> {
    let addr = parse(addr)?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(addr)
    } else {
        "[::]:0".parse().unwrap_or(addr)
    };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket
        .send_to(b"probe", addr)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Forks; the child tries `addr` and reports through its exit status.
fn in_forked_child(addr: &str) -> Result<(), String> {
    let addr = parse(addr)?;
    // SAFETY: the probe is single-threaded here; the child only connects and exits.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error().to_string()),
        0 => {
            let code = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(_) => 0,
                Err(_) => 1,
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for the child just forked, into a local.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err("the forked child could not connect".into())
            }
        }
    }
}

fn socket(domain: i32, kind: i32, protocol: i32) -> Result<(), String> {
    // SAFETY: socket takes no pointers; the fd is closed right after.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd was just returned by socket and is owned here.
    unsafe { libc::close(fd) };
    Ok(())
}

fn abstract_unix(name: &str, scoped: bool) -> Result<(), String> {
    use std::os::linux::net::SocketAddrExt;
    if scoped {
        // SAFETY: prctl with constant arguments; Landlock requires no_new_privs.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
        let ruleset = secflow_egress::ScopeRuleset::create().map_err(|e| e.to_string())?;
        if secflow_egress::restrict_self(ruleset.raw_fd()) != 0 {
            return Err(format!(
                "landlock_restrict_self: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).map_err(|e| e.to_string())?;
    UnixStream::connect_addr(&addr)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Tries to map its own uid to `accept` in the supervisor's table.
fn widen(nft: &str, table: &str, uid: &str) -> Result<(), String> {
    let script = format!("delete element inet {table} runs {{ {uid} }}\n");
    let out = std::process::Command::new(nft)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " "))
    }
}
