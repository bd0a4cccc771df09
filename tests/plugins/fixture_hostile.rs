//! fixture-hostile (raw protocol): the hostile plugins of sandbox.md in one
//! executable, one attack per run, chosen by config. Each attack reports what
//! it managed in the `run` outputs (`{"results": {target: "ok" | "error: …"}}`)
//! so a test asserts the observable outcome, or it is killed trying.
//!
//! Config knobs:
//! - `attack` (string): `connect_tcp` (targets: `ip:port`), `read` and `write`
//!   (targets: paths), `unix_connect` (targets: socket paths), `signal` (targets:
//!   pids, `parent` for getppid()), `whoami` (reports /proc/self/status lines),
//!   `allocate` (`mb`: touch that many MiB in 16 MiB steps), `spin` (burn CPU),
//!   `fork_bomb` (`count`: forks attempted), `escape` (a setsid double-forked
//!   child that sleeps for an hour), `syscall` (targets: one of ptrace, mount,
//!   unshare, bpf, kexec_load, init_module, clone_newuser, x32_getpid),
//!   `flood_stderr` (`mb` MiB to stderr), `findings_then` (`count` findings then
//!   the attack in `then`); for `network: "targets"` runs: `connect_udp`
//!   (targets: `ip:port`, one datagram each), `connect_name` (targets:
//!   `host:port`, resolved in the sandbox), `fork_connect` and
//!   `thread_connect` (targets: `ip:port`, from a forked child / a new
//!   thread), `raw_socket` (an ICMP raw and a packet socket), `abstract_connect`
//!   (targets: abstract Unix socket names), `widen` (targets: the nft tool,
//!   its table, then `ip:port`s to try after asking nft to accept everything
//!   and writing `/etc/hosts`).
//! - `targets` (array of strings), `mb`, `count` (integers).

use std::io::{Read, Write};
use std::time::Duration;

use secflow_tests::fixture::{
    answer_run, finish, handshake, knob_str, knob_u64, numbered_finding, send_finding,
};
use serde_json::{json, Map, Value};

fn outcome<T>(r: std::io::Result<T>) -> Value {
    match r {
        Ok(_) => json!("ok"),
        Err(e) => json!(format!("error: {e}")),
    }
}

fn raw(r: libc::c_long) -> Value {
    if r < 0 {
        json!(format!("error: {}", std::io::Error::last_os_error()))
    } else {
        json!("ok")
    }
}

fn attack(name: &str, config: &Map<String, Value>) -> Map<String, Value> {
    let targets: Vec<String> = config
        .get("targets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut results = Map::new();
    match name {
        "connect_tcp" => {
            for t in &targets {
                let r = t.parse().map_err(std::io::Error::other).and_then(|addr| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                });
                results.insert(t.clone(), outcome(r));
            }
        }
        "read" => {
            for t in &targets {
                let r = std::fs::File::open(t).and_then(|mut f| {
                    let mut buf = [0u8; 16];
                    f.read(&mut buf)
                });
                results.insert(t.clone(), outcome(r));
            }
        }
        "write" => {
            for t in &targets {
                let r = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(t)
                    .and_then(|mut f| f.write_all(b"pwned\n"));
                results.insert(t.clone(), outcome(r));
            }
        }
        "fill" => {
            // `mb` MiB into each target, 1 MiB at a time; the outcome is the
            // first error or ok.
            let mb = config.get("mb").and_then(Value::as_u64).unwrap_or(64);
            let chunk = vec![0u8; 1 << 20];
            for t in &targets {
                let r = std::fs::File::create(t)
                    .and_then(|mut f| (0..mb).try_for_each(|_| f.write_all(&chunk)));
                results.insert(t.clone(), outcome(r));
            }
        }
        "connect_name" => {
            // `host:port` resolved in the sandbox (its /etc/hosts), then TCP.
            for t in &targets {
                let r = std::net::TcpStream::connect(t.as_str());
                results.insert(t.clone(), outcome(r));
            }
        }
        "connect_udp" => {
            for t in &targets {
                let r = t
                    .parse::<std::net::SocketAddr>()
                    .map_err(std::io::Error::other)
                    .and_then(|addr| {
                        let bind = if addr.is_ipv4() {
                            "0.0.0.0:0"
                        } else {
                            "[::]:0"
                        };
                        std::net::UdpSocket::bind(bind).and_then(|s| s.send_to(b"dns?", addr))
                    });
                results.insert(t.clone(), outcome(r));
            }
        }
        "fork_connect" => {
            for t in &targets {
                let addr: Option<std::net::SocketAddr> = t.parse().ok();
                // SAFETY: fork in this single-threaded fixture; the child only
                // connects and exits with the outcome.
                let r = match unsafe { libc::fork() } {
                    0 => {
                        let ok = addr.is_some_and(|a| {
                            std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
                        });
                        // SAFETY: _exit in the forked child.
                        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
                    }
                    -1 => Err(std::io::Error::last_os_error()),
                    pid => {
                        let mut status = 0;
                        // SAFETY: waits for the child just forked, into a local.
                        unsafe { libc::waitpid(pid, &mut status, 0) };
                        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::other("the forked child could not connect"))
                        }
                    }
                };
                results.insert(t.clone(), outcome(r));
            }
        }
        "thread_connect" => {
            for t in &targets {
                let t2 = t.clone();
                let r = std::thread::spawn(move || {
                    t2.parse().map_err(std::io::Error::other).and_then(|addr| {
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")));
                results.insert(t.clone(), outcome(r));
            }
        }
        "raw_socket" => {
            for (name, domain, kind, proto) in [
                (
                    "raw_icmp",
                    libc::AF_INET,
                    libc::SOCK_RAW,
                    libc::IPPROTO_ICMP,
                ),
                (
                    "raw_icmp6",
                    libc::AF_INET6,
                    libc::SOCK_RAW,
                    libc::IPPROTO_ICMPV6,
                ),
                ("packet", libc::AF_PACKET, libc::SOCK_RAW, 0x0300),
            ] {
                // SAFETY: socket takes no pointers; a returned fd is closed at once.
                let fd = unsafe { libc::socket(domain, kind, proto) };
                if fd >= 0 {
                    // SAFETY: closing the fd just returned.
                    unsafe { libc::close(fd) };
                }
                results.insert(name.into(), raw(fd.into()));
            }
        }
        "abstract_connect" => {
            use std::os::linux::net::SocketAddrExt;
            for t in &targets {
                let r = std::os::unix::net::SocketAddr::from_abstract_name(t.as_bytes())
                    .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a));
                results.insert(t.clone(), outcome(r));
            }
        }
        "widen" => {
            if let [nft, table, rest @ ..] = targets.as_slice() {
                let r = std::process::Command::new(nft)
                    .args(["insert", "rule", "inet", table, "output", "accept"])
                    .output()
                    .and_then(|o| {
                        if o.status.success() {
                            Ok(())
                        } else {
                            Err(std::io::Error::other(
                                String::from_utf8_lossy(&o.stderr).trim().to_string(),
                            ))
                        }
                    });
                results.insert("nft".into(), outcome(r));
                let r = std::fs::OpenOptions::new()
                    .append(true)
                    .open("/etc/hosts")
                    .and_then(|mut f| f.write_all(b"127.0.0.3 target.example\n"));
                results.insert("/etc/hosts".into(), outcome(r));
                for t in rest {
                    let r = t.parse().map_err(std::io::Error::other).and_then(|addr| {
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    });
                    results.insert(t.clone(), outcome(r));
                }
            }
        }
        "unix_connect" => {
            for t in &targets {
                results.insert(
                    t.clone(),
                    outcome(std::os::unix::net::UnixStream::connect(t)),
                );
            }
        }
        "signal" => {
            for t in &targets {
                let pid = if t == "parent" {
                    // SAFETY: getppid has no preconditions.
                    unsafe { libc::getppid() }
                } else {
                    t.parse().unwrap_or(-1)
                };
                // SAFETY: kill with a pid and a signal number; failure is reported.
                let r = unsafe { libc::kill(pid, libc::SIGKILL) };
                results.insert(format!("{t} (pid {pid})"), raw(r.into()));
            }
        }
        "whoami" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            for line in status.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    if [
                        "Uid",
                        "Gid",
                        "Groups",
                        "CapInh",
                        "CapPrm",
                        "CapEff",
                        "CapBnd",
                        "CapAmb",
                        "NoNewPrivs",
                        "Seccomp",
                    ]
                    .contains(&k)
                    {
                        results.insert(k.to_string(), json!(v.trim()));
                    }
                }
            }
            // SAFETY: getppid has no preconditions.
            results.insert("ppid".into(), json!(unsafe { libc::getppid() }));
            results.insert("pid".into(), json!(std::process::id()));
        }
        "allocate" => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            for _ in 0..knob_u64(config, "mb", 1024) / 16 {
                held.push(vec![7u8; 16 << 20]);
            }
            results.insert("allocated_mb".into(), json!(held.len() * 16));
        }
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::hint::black_box(x);
            }
        }
        "fork_bomb" => {
            let mut made = 0;
            let mut failed = 0;
            for _ in 0..knob_u64(config, "count", 10_000) {
                // SAFETY: fork in this single-threaded fixture; the child only sleeps and exits.
                match unsafe { libc::fork() } {
                    0 => {
                        std::thread::sleep(Duration::from_secs(30));
                        // SAFETY: _exit in the forked child.
                        unsafe { libc::_exit(0) }
                    }
                    -1 => failed += 1,
                    _ => made += 1,
                }
            }
            results.insert("forked".into(), json!(made));
            results.insert("failed".into(), json!(failed));
        }
        "escape" => {
            // SAFETY: double fork + setsid; the grandchild only sleeps.
            unsafe {
                if libc::fork() == 0 {
                    libc::setsid();
                    if libc::fork() == 0 {
                        libc::signal(libc::SIGTERM, libc::SIG_IGN);
                        libc::signal(libc::SIGHUP, libc::SIG_IGN);
                        libc::sleep(3600);
                    }
                    libc::_exit(0);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            results.insert("escaped".into(), json!("child started"));
        }
        "orphan_syscall" => {
            // A grandchild, orphaned (its parent exits first), makes a
            // forbidden syscall; the plugin waits until it is gone, then ends
            // cleanly. Only the run's init sees how the orphan died.
            let mut fds = [0; 2];
            // SAFETY: fork/pipe/read/write/kill/_exit with stack buffers; the
            // forked children only make raw syscalls before they end.
            let gone = unsafe {
                libc::pipe(fds.as_mut_ptr());
                let child = libc::fork();
                if child == 0 {
                    let grandchild = libc::fork();
                    if grandchild == 0 {
                        // Until the parent has exited and we are the init's.
                        while libc::getppid() != 1 {
                            libc::usleep(1000);
                        }
                        libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
                        libc::_exit(0);
                    }
                    libc::write(fds[1], (&grandchild as *const libc::pid_t).cast(), 4);
                    libc::_exit(0);
                }
                libc::waitpid(child, std::ptr::null_mut(), 0);
                let mut grandchild: libc::pid_t = 0;
                libc::read(fds[0], (&mut grandchild as *mut libc::pid_t).cast(), 4);
                // Reaped by the init: the pid no longer exists.
                let mut waited = 0;
                while grandchild > 0 && libc::kill(grandchild, 0) == 0 && waited < 10_000 {
                    libc::usleep(1000);
                    waited += 1;
                }
                grandchild > 0 && libc::kill(grandchild, 0) != 0
            };
            results.insert("orphan_gone".into(), json!(gone));
        }
        "reaped_child_syscall" => {
            // A child makes a forbidden syscall and the plugin reaps it
            // itself, then ends cleanly: the run's init never sees the
            // death; only the kernel's audit record tells.
            // SAFETY: fork/waitpid/_exit; the child makes one raw syscall.
            let status = unsafe {
                let child = libc::fork();
                if child == 0 {
                    libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
                    libc::_exit(0);
                }
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                status
            };
            let signal = if libc::WIFSIGNALED(status) {
                libc::WTERMSIG(status)
            } else {
                0
            };
            results.insert("child_signal".into(), json!(signal));
        }
        "syscall" => {
            for t in &targets {
                // SAFETY: each is a raw syscall with harmless or invalid arguments;
                // the point is whether the filter lets it through at all.
                let r = unsafe {
                    match t.as_str() {
                        "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
                        "mount" => libc::syscall(
                            libc::SYS_mount,
                            c"none".as_ptr(),
                            c"/tmp".as_ptr(),
                            c"tmpfs".as_ptr(),
                            0,
                            0,
                        ),
                        "unshare" => libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
                        "bpf" => libc::syscall(libc::SYS_bpf, 0, 0, 0),
                        "kexec_load" => libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0),
                        "init_module" => libc::syscall(libc::SYS_init_module, 0, 0, 0),
                        "clone_newuser" => libc::syscall(
                            libc::SYS_clone,
                            libc::CLONE_NEWUSER | libc::SIGCHLD,
                            0,
                            0,
                            0,
                            0,
                        ),
                        // getpid through the x32 ABI: __X32_SYSCALL_BIT | 39.
                        "x32_getpid" => libc::syscall(0x4000_0000 | libc::SYS_getpid),
                        _ => -1,
                    }
                };
                results.insert(t.clone(), raw(r));
            }
        }
        "flood_stderr" => {
            let chunk = vec![b'e'; 1 << 20];
            let mut err = std::io::stderr().lock();
            for _ in 0..knob_u64(config, "mb", 64) {
                let _ = err.write_all(&chunk);
            }
            let _ = err.write_all(b"\nflood done\n");
            results.insert("flooded_mb".into(), json!(knob_u64(config, "mb", 64)));
        }
        other => {
            results.insert("unknown attack".into(), json!(other));
        }
    }
    results
}

fn main() {
    let (config, run) = handshake();
    let mut name = knob_str(&config, "attack", "whoami").to_string();
    let mut sent = 0;
    if name == "findings_then" {
        for i in 1..=knob_u64(&config, "count", 3) {
            send_finding(i, numbered_finding(i));
            sent = i;
        }
        name = knob_str(&config, "then", "whoami").to_string();
    }
    let results = attack(&name, &config);
    answer_run(run, sent, json!({"results": results}));
    finish();
}
