//! The demo's scan target: an HTTP server on 127.0.0.1 that answers like a
//! misconfigured Apache 2.4.49 host (exposed `.git/config` and `.env`,
//! `server-status`, a `phpinfo` page, an admin login, and the CVE-2021-41773
//! path traversal), and a TCP service that greets like an old OpenSSH.
//!
//! Both listen on random ports and live as long as the [`DemoTarget`]. The
//! answers are a pure function of the request line ([`respond`]); the server
//! around it is a small HTTP/1.1 loop with keep-alive and bounded reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The `Server` header of every HTTP answer.
pub const SERVER_HEADER: &str = "Apache/2.4.49 (Unix)";
/// What the banner service says first.
pub const SSH_BANNER: &str = "SSH-2.0-OpenSSH_7.2p2 Ubuntu-4ubuntu2.10\r\n";
/// Longest request head (request line and headers) read.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// Largest request body read (and discarded).
const MAX_BODY_BYTES: u64 = 1 << 20;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;
/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The two running services.
#[derive(Debug)]
pub struct DemoTarget {
    http: SocketAddr,
    ssh: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DemoTarget {
    /// Binds both services on 127.0.0.1 (random ports) and serves them on the
    /// current tokio runtime.
    pub async fn start() -> std::io::Result<DemoTarget> {
        let http = TcpListener::bind(("127.0.0.1", 0)).await?;
        let ssh = TcpListener::bind(("127.0.0.1", 0)).await?;
        let (http_addr, ssh_addr) = (http.local_addr()?, ssh.local_addr()?);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tasks = vec![
            tokio::spawn(accept_loop(http, slots.clone(), |s| {
                Box::pin(serve_http(s))
            })),
            tokio::spawn(accept_loop(ssh, slots, |s| Box::pin(serve_banner(s)))),
        ];
        Ok(DemoTarget {
            http: http_addr,
            ssh: ssh_addr,
            tasks,
        })
    }

    /// The web server's URL, `http://127.0.0.1:PORT/`.
    pub fn http_url(&self) -> String {
        format!("http://{}/", self.http)
    }

    /// The banner service as `127.0.0.1:PORT`.
    pub fn ssh_target(&self) -> String {
        self.ssh.to_string()
    }
}

impl Drop for DemoTarget {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

type Connection = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    serve: fn(TcpStream) -> Connection,
) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    serve(stream).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "demo target: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Greets with the OpenSSH banner, waits for the client's first words, closes.
async fn serve_banner(mut stream: TcpStream) {
    if stream.write_all(SSH_BANNER.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 512];
    let _ = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await;
}

/// Serves HTTP/1.x requests on one connection until it closes, idles or errs.
async fn serve_http(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    loop {
        let head = match tokio::time::timeout(IDLE_TIMEOUT, read_head(&mut reader)).await {
            Ok(Some(head)) => head,
            _ => return,
        };
        if head.content_length > 0 {
            let mut body = (&mut reader).take(head.content_length.min(MAX_BODY_BYTES));
            if tokio::io::copy(&mut body, &mut tokio::io::sink())
                .await
                .is_err()
            {
                return;
            }
        }
        let answer = respond(&head.method, &head.target);
        let keep_alive = head.keep_alive && head.content_length <= MAX_BODY_BYTES;
        let bytes = answer.to_bytes(head.method == "HEAD", keep_alive);
        if reader.get_mut().write_all(&bytes).await.is_err() || !keep_alive {
            return;
        }
    }
}

/// A request's line and the headers the server acts on.
#[derive(Debug)]
struct RequestHead {
    method: String,
    target: String,
    content_length: u64,
    keep_alive: bool,
}

/// Reads one request head; `None` at end of input or on a malformed or
/// oversized head.
async fn read_head(reader: &mut BufReader<TcpStream>) -> Option<RequestHead> {
    let mut budget = MAX_HEAD_BYTES;
    // Tolerate blank lines before a request (RFC 9112 §2.2).
    let request_line = loop {
        let text = read_line(reader, &mut budget).await?;
        if !text.is_empty() {
            break text;
        }
    };
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let mut head = RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        content_length: 0,
        keep_alive: version == "HTTP/1.1",
    };
    loop {
        let text = read_line(reader, &mut budget).await?;
        if text.is_empty() {
            return Some(head);
        }
        let (name, value) = text.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") {
            head.keep_alive = match value.to_ascii_lowercase().as_str() {
                "close" => false,
                "keep-alive" => true,
                _ => head.keep_alive,
            };
        }
    }
}

/// One line of the head without its line end, within what is left of `budget`.
async fn read_line(reader: &mut BufReader<TcpStream>, budget: &mut usize) -> Option<String> {
    let mut line = String::new();
    let n = (&mut *reader)
        .take(*budget as u64)
        .read_line(&mut line)
        .await
        .ok()?;
    *budget -= n;
    (n > 0 && line.ends_with('\n')).then(|| line.trim_end().to_string())
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub location: Option<&'static str>,
    pub body: String,
}

impl Answer {
    fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type,
            location: None,
            body: body.into(),
        }
    }

    fn to_bytes(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            301 => "Moved Permanently",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Unknown",
        };
        let mut text = format!(
            "HTTP/1.1 {} {reason}\r\nDate: {}\r\nServer: {SERVER_HEADER}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            http_date(),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if let Some(location) = self.location {
            text.push_str(&format!("Location: {location}\r\n"));
        }
        text.push_str("\r\n");
        if !head_only {
            text.push_str(&self.body);
        }
        text.into_bytes()
    }
}

fn http_date() -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

const HTML: &str = "text/html; charset=iso-8859-1";
const TEXT: &str = "text/plain";

/// What the vulnerable host answers to `method target` (the raw request
/// target, undecoded, as Apache 2.4.49's flawed path check saw it).
pub fn respond(method: &str, target: &str) -> Answer {
    if !matches!(method, "GET" | "HEAD" | "POST") {
        return Answer::new(
            405,
            HTML,
            error_page(
                405,
                "Method Not Allowed",
                "The requested method is not allowed for this URL.",
            ),
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if is_traversal_to_passwd(path) {
        return Answer::new(200, TEXT, PASSWD);
    }
    match path {
        "/" | "/index.html" => Answer::new(
            200,
            "text/html",
            "<html><body><h1>It works!</h1></body></html>\n",
        ),
        "/robots.txt" => Answer::new(200, TEXT, "User-agent: *\nDisallow: /admin/\n"),
        "/.git/config" => Answer::new(200, TEXT, GIT_CONFIG),
        "/.git/HEAD" => Answer::new(200, TEXT, "ref: refs/heads/main\n"),
        "/.env" => Answer::new(200, TEXT, DOT_ENV),
        "/server-status" => Answer::new(200, HTML, SERVER_STATUS),
        "/phpinfo.php" => Answer::new(200, "text/html; charset=UTF-8", PHPINFO),
        "/admin" => Answer {
            location: Some("/admin/"),
            ..Answer::new(
                301,
                HTML,
                error_page(
                    301,
                    "Moved Permanently",
                    "The document has moved <a href=\"/admin/\">here</a>.",
                ),
            )
        },
        "/admin/" | "/admin/login" => Answer::new(200, "text/html; charset=UTF-8", ADMIN_LOGIN),
        "/icons/" | "/cgi-bin/" => Answer::new(
            403,
            HTML,
            error_page(
                403,
                "Forbidden",
                "You don't have permission to access this resource.",
            ),
        ),
        _ => Answer::new(
            404,
            HTML,
            error_page(
                404,
                "Not Found",
                "The requested URL was not found on this server.",
            ),
        ),
    }
}

/// CVE-2021-41773: 2.4.49 normalised the path before decoding `%2e`, so
/// `/icons/.%2e/%2e%2e/…` walked out of the document root (into any file
/// when `Require all denied` was missing, as on this host).
fn is_traversal_to_passwd(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.starts_with("/icons/")
        && (lower.contains("/.%2e/") || lower.contains("/%2e%2e/"))
        && lower.ends_with("/etc/passwd")
}

fn error_page(status: u16, title: &str, message: &str) -> String {
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>{status} {title}</title>\n</head><body>\n<h1>{title}</h1>\n<p>{message}</p>\n</body></html>\n"
    )
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
bin:x:2:2:bin:/bin:/usr/sbin/nologin\n\
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
deploy:x:1000:1000:Deploy,,,:/home/deploy:/bin/bash\n";

const GIT_CONFIG: &str = "[core]\n\
\trepositoryformatversion = 0\n\
\tfilemode = true\n\
\tbare = false\n\
[remote \"origin\"]\n\
\turl = https://git.example.internal/webshop/storefront.git\n\
\tfetch = +refs/heads/*:refs/remotes/origin/*\n\
[branch \"main\"]\n\
\tremote = origin\n\
\tmerge = refs/heads/main\n";

const DOT_ENV: &str = "APP_ENV=production\n\
APP_KEY=base64:Zm9yLXRoZS1kZW1vLW9ubHktbm90LWEtcmVhbC1rZXk=\n\
DB_HOST=10.0.4.12\n\
DB_DATABASE=storefront\n\
DB_USERNAME=storefront\n\
DB_PASSWORD=demo-only-not-a-secret\n";

const SERVER_STATUS: &str = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html><head>\n<title>Apache Status</title>\n</head><body>\n\
<h1>Apache Server Status for 127.0.0.1 (via 127.0.0.1)</h1>\n\
<dl><dt>Server Version: Apache/2.4.49 (Unix) OpenSSL/1.1.1k PHP/7.4.21</dt>\n\
<dt>Server MPM: event</dt>\n<dt>Server Built: Sep 15 2021 10:32:07</dt></dl><hr /><dl>\n\
<dt>Current Time: Monday, 04-Oct-2021 09:12:44 UTC</dt>\n<dt>Server uptime:  18 days 3 hours 7 minutes</dt>\n\
<dt>Total accesses: 1843211 - Total Traffic: 12.4 GB</dt>\n<dt>1 requests currently being processed, 74 idle workers</dt>\n</dl>\n\
</body></html>\n";

const PHPINFO: &str = "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\">\n<html><head>\n<title>PHP 7.4.21 - phpinfo()</title></head>\n<body><div class=\"center\">\n\
<table><tr class=\"h\"><td><h1 class=\"p\">PHP Version 7.4.21</h1></td></tr></table>\n\
<table><tr><td class=\"e\">System </td><td class=\"v\">Linux web01 5.4.0-86-generic x86_64 </td></tr>\n\
<tr><td class=\"e\">Server API </td><td class=\"v\">Apache 2.0 Handler </td></tr>\n\
<tr><td class=\"e\">Loaded Configuration File </td><td class=\"v\">/usr/local/etc/php/php.ini </td></tr>\n\
<tr><td class=\"e\">allow_url_include</td><td class=\"v\">On</td><td class=\"v\">On</td></tr>\n\
</table>\n</div></body></html>\n";

const ADMIN_LOGIN: &str =
    "<!DOCTYPE html>\n<html><head><title>Admin Login - Storefront</title></head>\n<body>\n\
<form method=\"post\" action=\"/admin/login\">\n\
<label>User <input type=\"text\" name=\"user\"></label>\n\
<label>Password <input type=\"password\" name=\"password\"></label>\n\
<button type=\"submit\">Sign in</button>\n</form>\n</body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cve_2021_41773_traversal_answers_a_passwd_file_and_other_paths_do_not() {
        let hit = respond("GET", "/icons/.%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd");
        assert_eq!(hit.status, 200);
        assert!(hit.body.starts_with("root:x:0:0:"));
        let deeper = respond(
            "GET",
            "/icons/.%2E/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        );
        assert_eq!(deeper.status, 200);
        assert_eq!(respond("GET", "/icons/../etc/passwd").status, 404);
        assert_eq!(respond("GET", "/etc/passwd").status, 404);
    }

    #[test]
    fn the_exposed_files_and_pages_look_like_what_scanners_look_for() {
        assert!(respond("GET", "/.git/config")
            .body
            .contains("[remote \"origin\"]"));
        assert!(respond("GET", "/.env").body.contains("DB_PASSWORD="));
        assert!(respond("GET", "/server-status")
            .body
            .contains("Apache Server Status for"));
        let php = respond("GET", "/phpinfo.php?x=1").body;
        assert!(php.contains("PHP Version") && php.contains("phpinfo()"));
        assert!(respond("GET", "/admin/").body.contains("type=\"password\""));
        let redirect = respond("GET", "/admin");
        assert_eq!((redirect.status, redirect.location), (301, Some("/admin/")));
        assert_eq!(respond("DELETE", "/").status, 405);
    }

    #[tokio::test]
    async fn the_services_answer_with_the_apache_server_header_and_the_openssh_banner() {
        let target = DemoTarget::start().await.unwrap();
        let addr = target
            .http_url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut http = TcpStream::connect(&addr).await.unwrap();
        http.write_all(b"GET /.env HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(
            answer.matches("Server: Apache/2.4.49 (Unix)\r\n").count(),
            2,
            "two answers on one connection: {answer}"
        );
        assert!(answer.contains("APP_KEY="));
        assert!(
            answer.trim_end().ends_with("Connection: close"),
            "HEAD has no body: {answer}"
        );

        let mut ssh = TcpStream::connect(target.ssh_target()).await.unwrap();
        let mut banner = vec![0u8; SSH_BANNER.len()];
        ssh.read_exact(&mut banner).await.unwrap();
        assert_eq!(banner, SSH_BANNER.as_bytes());
    }
}
