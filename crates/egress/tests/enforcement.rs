//! The kernel enforces an allow-set: a process running as a scoped uid
//! reaches its target and nothing else, by any route its own code can take.
//! Every test runs the probe as a real unprivileged uid against listeners on
//! loopback; needs root and the nft tool (skipped only outside CI).

use std::io::Read;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use secflow_egress::{allow_set, AllowSet, EgressTable, Nft, Refusal, SystemResolver};

const PROBE: &str = env!("CARGO_BIN_EXE_secflow-egress-probe");
/// Uids for these tests, outside the supervisor's default range.
const UID_BASE: u32 = 2_100_000_000;

/// Listeners every test shares (the target's address is fixed by the spec).
struct Listeners {
    target: TcpListener,
    other_host: TcpListener,
    other_port: TcpListener,
    ipv6: TcpListener,
    daemon: TcpListener,
    udp_other_host: UdpSocket,
}

fn listeners() -> &'static Listeners {
    static L: OnceLock<Listeners> = OnceLock::new();
    L.get_or_init(|| {
        let tcp = |a: &str| TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}"));
        let l = Listeners {
            target: tcp("127.0.0.2:8080"),
            other_host: tcp("127.0.0.3:8080"),
            other_port: tcp("127.0.0.2:8081"),
            ipv6: tcp("[::1]:8080"),
            daemon: tcp("127.0.0.1:0"),
            udp_other_host: UdpSocket::bind("127.0.0.3:8053").expect("bind udp 127.0.0.3:8053"),
        };
        for s in [&l.target, &l.other_host, &l.other_port, &l.ipv6, &l.daemon] {
            s.set_nonblocking(true).unwrap();
        }
        l.udp_other_host.set_nonblocking(true).unwrap();
        l
    })
}

/// Whether this machine can run these tests; outside CI a missing ability
/// skips (saying why), in CI it fails.
fn can_run() -> Option<Nft> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nft = Nft::find();
    let why = match (&nft, root) {
        (_, false) => "not root".to_string(),
        (Err(e), _) => e.to_string(),
        (Ok(_), true) => return nft.ok(),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("egress enforcement tests cannot run in CI: {why}");
    }
    eprintln!("skipping: {why} (these tests need root and nftables; scripts/setup installs it)");
    None
}

/// Runs the probe as `uid` and returns its one line of outcome.
fn probe(uid: u32, args: &[&str]) -> String {
    let out = Command::new(PROBE)
        .args(args)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run the probe");
    assert!(out.status.success(), "probe {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn target_set() -> AllowSet {
    allow_set(&["127.0.0.2:8080".into()], &[], &SystemResolver).unwrap()
}

/// Accepts what is waiting on `listener` and says how many there were.
fn accepted(listener: &TcpListener) -> usize {
    std::iter::from_fn(|| listener.accept().ok()).count()
}

fn refused(uid: u32, args: &[&str]) {
    let got = probe(uid, args);
    assert!(got.starts_with("refused"), "{args:?} got through: {got}");
}

fn has(refusals: &[Refusal], addr: &str, protocol: &str, port: Option<u16>) -> bool {
    let addr: IpAddr = addr.parse().unwrap();
    refusals
        .iter()
        .any(|r| r.destination == addr && r.protocol == protocol && r.port == port)
}

#[test]
fn a_scoped_run_reaches_its_target_and_nothing_else() {
    let Some(nft) = can_run() else { return };
    let l = listeners();
    let table = EgressTable::install(nft).unwrap();
    let uid = UID_BASE + 1;
    let run = table.open(uid, &target_set()).unwrap();
    accepted(&l.target);

    assert_eq!(probe(uid, &["tcp", "127.0.0.2:8080"]), "ok");
    let started = Instant::now();
    refused(uid, &["tcp", "127.0.0.3:8080"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refusal is immediate (a reset), not a time-out"
    );
    refused(uid, &["tcp", "127.0.0.2:8081"]);
    refused(uid, &["tcp", "[::1]:8080"]);
    let daemon = l.daemon.local_addr().unwrap().to_string();
    refused(uid, &["tcp", &daemon]);
    // Only now that scoping is shown to hold: nothing leaves the host.
    refused(uid, &["tcp", "169.254.169.254:80"]);
    refused(uid, &["udp", "127.0.0.3:8053"]);

    assert!(accepted(&l.target) >= 1, "the target saw the run");
    for (name, listener) in [
        ("127.0.0.3", &l.other_host),
        ("another port", &l.other_port),
        ("::1", &l.ipv6),
        ("the daemon", &l.daemon),
    ] {
        assert_eq!(accepted(listener), 0, "{name} was reached");
    }
    let mut buf = [0u8; 16];
    assert!(
        l.udp_other_host.recv_from(&mut buf).is_err(),
        "the udp datagram arrived"
    );

    let refusals = run.close().unwrap();
    for (addr, proto, port) in [
        ("127.0.0.3", "tcp", Some(8080)),
        ("127.0.0.2", "tcp", Some(8081)),
        ("::1", "tcp", Some(8080)),
        ("169.254.169.254", "tcp", Some(80)),
        ("127.0.0.3", "udp", Some(8053)),
    ] {
        assert!(
            has(&refusals, addr, proto, port),
            "{addr} {proto} {port:?} not recorded: {refusals:?}"
        );
    }
    assert!(
        !has(&refusals, "127.0.0.2", "tcp", Some(8080)),
        "the target is not a refusal: {refusals:?}"
    );
}

#[test]
fn a_forked_child_and_a_new_thread_are_held_to_the_same_targets() {
    let Some(nft) = can_run() else { return };
    let l = listeners();
    let table = EgressTable::install(nft).unwrap();
    let uid = UID_BASE + 2;
    let run = table.open(uid, &target_set()).unwrap();
    assert_eq!(probe(uid, &["fork", "127.0.0.2:8080"]), "ok");
    assert_eq!(probe(uid, &["thread", "127.0.0.2:8080"]), "ok");
    refused(uid, &["fork", "127.0.0.3:8080"]);
    refused(uid, &["thread", "127.0.0.3:8080"]);
    assert_eq!(accepted(&l.other_host), 0);
    let refusals = run.close().unwrap();
    let other = refusals
        .iter()
        .find(|r| r.destination == "127.0.0.3".parse::<IpAddr>().unwrap())
        .expect("the refusals are recorded");
    assert!(other.packets >= 2, "both attempts counted: {other:?}");
}

#[test]
fn raw_and_packet_sockets_are_refused() {
    let Some(nft) = can_run() else { return };
    let table = EgressTable::install(nft).unwrap();
    let uid = UID_BASE + 3;
    let _run = table.open(uid, &target_set()).unwrap();
    refused(uid, &["raw"]);
    refused(uid, &["packet"]);
}

#[test]
fn the_run_cannot_widen_its_own_targets() {
    let Some(nft) = can_run() else { return };
    let l = listeners();
    let nft_path = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    let table = EgressTable::install(nft).unwrap();
    let uid = UID_BASE + 4;
    let run = table.open(uid, &target_set()).unwrap();
    let got = probe(uid, &["widen", nft_path, table.name(), &uid.to_string()]);
    assert!(
        got.starts_with("refused"),
        "the run changed the rules: {got}"
    );
    refused(uid, &["tcp", "127.0.0.3:8080"]);
    assert_eq!(accepted(&l.other_host), 0);
    assert!(run.close().unwrap().iter().any(|r| r.port == Some(8080)));
}

#[test]
fn another_uid_is_untouched_and_closing_unscopes() {
    let Some(nft) = can_run() else { return };
    let l = listeners();
    let table = EgressTable::install(nft).unwrap();
    let (scoped, free) = (UID_BASE + 5, UID_BASE + 6);
    let run = table.open(scoped, &target_set()).unwrap();
    accepted(&l.other_host);
    assert_eq!(probe(free, &["tcp", "127.0.0.3:8080"]), "ok");
    refused(scoped, &["tcp", "127.0.0.3:8080"]);
    run.close().unwrap();
    assert_eq!(probe(scoped, &["tcp", "127.0.0.3:8080"]), "ok");
    assert_eq!(
        accepted(&l.other_host),
        2,
        "exactly the two unscoped connects arrived"
    );
}

#[test]
fn egress_entries_open_a_block_but_not_beyond_it() {
    let Some(nft) = can_run() else { return };
    let l = listeners();
    let table = EgressTable::install(nft).unwrap();
    let uid = UID_BASE + 7;
    let allow = allow_set(
        &[],
        &["127.0.0.2/32".into(), "[::1]:8080".into()],
        &SystemResolver,
    )
    .unwrap();
    let run = table.open(uid, &allow).unwrap();
    accepted(&l.other_port);
    assert_eq!(probe(uid, &["tcp", "127.0.0.2:8081"]), "ok");
    assert_eq!(probe(uid, &["tcp", "[::1]:8080"]), "ok");
    refused(uid, &["tcp", "127.0.0.3:8080"]);
    assert!(accepted(&l.other_port) >= 1);
    drop(run);
}

#[test]
fn a_scoped_process_cannot_reach_abstract_unix_sockets_of_the_host() {
    if can_run().is_none() {
        return;
    }
    let name = format!("secflow-egress-test-{}", std::process::id());
    let listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixListener::bind_addr(&addr).unwrap()
    };
    listener.set_nonblocking(true).unwrap();
    let uid = UID_BASE + 8;
    assert_eq!(probe(uid, &["abstract", &name]), "ok", "reachable unscoped");
    let got = probe(uid, &["abstract", &name, "scoped"]);
    assert!(got.starts_with("refused"), "reached while scoped: {got}");
    let arrived = std::iter::from_fn(|| listener.accept().ok())
        .map(|(mut s, _)| s.read(&mut [0u8; 1]).ok())
        .count();
    assert_eq!(arrived, 1, "only the unscoped connect arrived");
}
