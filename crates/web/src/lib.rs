//! SecFlow's read-only web dashboard, served by `secflowd` on `[web] listen`.
//!
//! Pages: findings (filters, paging, a finding's detail), runs (a run's
//! detail with its audit trail), plugins (status, revocations, telemetry
//! charts) and the runs in progress. Every page and API answer needs a login
//! ([`auth`]); only `/login` and the stylesheet are reachable without one.
//! The dashboard never changes what is stored: every route is `GET` but
//! login and logout, which are `POST` with an `Origin` check and a
//! SameSite=Strict cookie (CSRF). Pages carry no inline script or style, so
//! the Content-Security-Policy forbids both; the assets are compiled in.
//!
//! This module is the effects: sockets, storage queries on the blocking pool,
//! and the routing. The pages are pure ([`pages`], [`chart`]).

pub mod auth;
pub mod chart;
pub mod html;
pub mod pages;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use secflow_core::config::WebConfig;
use secflow_core::record::RunStatus;
use secflow_plugin_sdk::protocol::Severity;
use secflow_runner::Supervisor;
use secflow_store::{AuditQuery, FindingQuery, RunQuery, StorageError, TelemetryQuery};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use auth::{issue_token, Auth, TokenFileError};
use html::{param, parse_query, Nav};

/// Findings per page.
pub const FINDINGS_PAGE: u32 = 50;
/// Finding ids a search (host, target or text) reads per page: a bounded
/// read however rare the match, about 20 ms on a 2-core machine.
pub const SEARCH_WINDOW: u32 = 50_000;
/// Runs listed.
pub const RUNS_PAGE: u32 = 100;
/// Telemetry events and run records read per plugin for its charts.
pub const CHART_EVENTS: u32 = 5000;
/// Largest login form body.
const MAX_FORM_BYTES: usize = 4096;
/// Time to send a request's headers before the connection is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const SESSION_COOKIE: &str = "secflow_session";

const CSS: &str = include_str!("../assets/app.css");
const LIVE_JS: &str = include_str!("../assets/live.js");

/// Every answer's security headers: no inline script or style, no framing,
/// no referrer to other sites, nothing sniffed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen for the dashboard on {address}")]
    Bind {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the storage query ended abnormally: {0}")]
    Task(String),
}

/// What the dashboard serves from.
#[derive(Debug)]
pub struct Dashboard {
    supervisor: Arc<Supervisor>,
    auth: Auth,
}

impl Dashboard {
    pub fn new(supervisor: Arc<Supervisor>, config: &WebConfig) -> Dashboard {
        Dashboard {
            supervisor,
            auth: Auth::new(
                config.token_file.clone(),
                Duration::from_secs(config.session_hours.saturating_mul(3600)),
            ),
        }
    }
}

/// Binds `config.listen`.
pub async fn bind(config: &WebConfig) -> Result<TcpListener, WebError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| WebError::Bind {
            address: config.listen,
            source,
        })
}

/// Serves until `stopping` turns true; at most `max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    dashboard: Arc<Dashboard>,
    max_connections: usize,
    mut stopping: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stopped(&mut stopping) => return,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stopping) => return,
        };
        let dashboard = Arc::clone(&dashboard);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let dashboard = Arc::clone(&dashboard);
                async move { Ok::<_, Infallible>(handle(&dashboard, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "dashboard connection ended");
            }
            drop(permit);
        });
    }
}

/// Returns once `stopping` is true (or its sender is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The borrow ends before each await: the future stays `Send`.
    while !*stopping.borrow_and_update() {
        if stopping.changed().await.is_err() {
            return;
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it browsers send `Origin: null` on the
        // dashboard's own form posts, and the CSRF check needs the origin.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

fn html_page(status: StatusCode, body: String) -> Answer {
    respond(status, "text/html; charset=utf-8", body)
}

fn redirect(to: &str) -> Answer {
    let mut answer = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(value) = HeaderValue::from_str(to) {
        answer.headers_mut().insert(header::LOCATION, value);
    }
    answer
}

fn bad_request(user: &str, why: &str) -> Answer {
    error_page(StatusCode::BAD_REQUEST, "Bad request", user, why)
}

fn not_found(user: &str, what: &str) -> Answer {
    error_page(StatusCode::NOT_FOUND, "Not found", user, what)
}

fn error_page(status: StatusCode, title: &str, user: &str, text: &str) -> Answer {
    html_page(
        status,
        html::page(
            title,
            Nav::None,
            Some(user),
            &format!("<p>{}</p>", html::esc(text)),
        ),
    )
}

fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The logged-in user: a live session cookie, or a bearer token.
fn user_of(dashboard: &Dashboard, req: &Request<Incoming>) -> Option<String> {
    if let Some(id) = cookie(req, SESSION_COOKIE) {
        if let Some(user) = dashboard.auth.user_of_session(id) {
            return Some(user);
        }
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    match dashboard.auth.user_of_token(bearer) {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard cannot check a bearer token");
            None
        }
    }
}

/// A form post is only accepted from the dashboard's own pages: a browser
/// sends `Origin`, and it must name the host the request was sent to.
fn same_origin(req: &Request<Incoming>) -> Result<(), String> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Not a browser (curl, scripts): no cross-site request to fear.
        return Ok(());
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    match origin.split_once("://") {
        Some((_, authority)) if !host.is_empty() && authority == host => Ok(()),
        _ => Err(format!(
            "cross-site request refused: Origin {origin:?} is not this dashboard (Host {host:?})"
        )),
    }
}

async fn handle(dashboard: &Dashboard, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/static/app.css") => {
            return respond(StatusCode::OK, "text/css; charset=utf-8", CSS)
        }
        (&Method::GET, "/login") => {
            return html_page(
                StatusCode::OK,
                html::page("Log in", Nav::None, None, &pages::login(None)),
            )
        }
        (&Method::POST, "/login") => return login(dashboard, req).await,
        (&Method::POST, "/logout") => {
            if let Err(refusal) = same_origin(&req) {
                return respond(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", refusal);
            }
            if let Some(id) = cookie(&req, SESSION_COOKIE) {
                dashboard.auth.close_session(id);
            }
            let mut answer = redirect("/login");
            answer.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "secflow_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            return answer;
        }
        _ => {}
    }
    let Some(user) = user_of(dashboard, &req) else {
        return if path.starts_with("/api/") {
            respond(
                StatusCode::UNAUTHORIZED,
                "application/json",
                r#"{"error":"log in first: POST /login with a token, or send Authorization: Bearer TOKEN"}"#,
            )
        } else if method == Method::GET {
            redirect("/login")
        } else {
            respond(StatusCode::UNAUTHORIZED, "text/plain", "log in first")
        };
    };
    if method != Method::GET && method != Method::HEAD {
        let mut answer = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "the dashboard is read-only",
        );
        answer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    match route(dashboard, &user, &path, &query).await {
        Ok(answer) => answer,
        Err(e) => {
            let reason = secflow_core::error_chain(&e);
            tracing::error!(error = %reason, path = %path, "dashboard query failed");
            html_page(
                StatusCode::SERVICE_UNAVAILABLE,
                html::page(
                    "Storage unavailable",
                    Nav::None,
                    Some(&user),
                    &format!("<p class=\"error\">{}</p>", html::esc(&reason)),
                ),
            )
        }
    }
}

async fn login(dashboard: &Dashboard, req: Request<Incoming>) -> Answer {
    if let Err(refusal) = same_origin(&req) {
        return respond(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", refusal);
    }
    let body = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "login form larger than 4 KiB",
            )
        }
    };
    let form = parse_query(&String::from_utf8_lossy(&body));
    let token = param(&form, "token").unwrap_or("");
    let refused = |message: &str| {
        html_page(
            StatusCode::UNAUTHORIZED,
            html::page("Log in", Nav::None, None, &pages::login(Some(message))),
        )
    };
    let user = match dashboard.auth.user_of_token(token) {
        Ok(Some(user)) => user,
        Ok(None) => return refused("that token is not valid"),
        Err(e) => {
            tracing::error!(error = %secflow_core::error_chain(&e), "dashboard login cannot read the token file");
            return refused("the token file cannot be read; see the daemon's log");
        }
    };
    let session = match dashboard.auth.open_session(user.clone()) {
        Ok(session) => session,
        Err(e) => return refused(&e.to_string()),
    };
    tracing::info!(user = %user, "dashboard login");
    let mut answer = redirect("/findings");
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        dashboard.auth.lifetime().as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
    answer
}

/// Runs a storage query on the blocking pool.
async fn query<T: Send + 'static>(
    dashboard: &Dashboard,
    f: impl FnOnce(&Supervisor) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, PageError> {
    let supervisor = Arc::clone(&dashboard.supervisor);
    tokio::task::spawn_blocking(move || f(&supervisor))
        .await
        .map_err(|e| PageError::Task(e.to_string()))?
        .map_err(PageError::from)
}

fn plugin_names(dashboard: &Dashboard) -> Vec<String> {
    let mut names: Vec<String> = dashboard
        .supervisor
        .plugins()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn route(
    dashboard: &Dashboard,
    user: &str,
    path: &str,
    q: &[(String, String)],
) -> Result<Answer, PageError> {
    let page = |title: &str, nav: Nav, body: String| {
        html_page(StatusCode::OK, html::page(title, nav, Some(user), &body))
    };
    let decoded: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    Ok(match segments.as_slice() {
        [""] => redirect("/findings"),
        ["findings"] => {
            let filters = pages::FindingFilters {
                severity: param(q, "severity").map(str::to_owned),
                plugin: param(q, "plugin").map(str::to_owned),
                run: param(q, "run").map(str::to_owned),
                host: param(q, "host").map(str::to_owned),
                target: param(q, "target").map(str::to_owned),
                text: param(q, "text").map(str::to_owned),
            };
            for (field, text) in [("target", &filters.target), ("text", &filters.text)] {
                if let Some(text) = text {
                    if let Err(why) = FindingQuery::check_search_text(field, text) {
                        return Ok(bad_request(user, &why));
                    }
                }
            }
            let min_severity = match filters.severity.as_deref() {
                Some(s) => match Severity::parse(s) {
                    Some(s) => Some(s),
                    None => return Ok(not_found(user, &format!("no severity named {s:?}"))),
                },
                None => None,
            };
            let after = param(q, "after").and_then(|a| a.parse().ok());
            // No index serves these filters: each page reads one window of ids.
            let searching =
                filters.host.is_some() || filters.target.is_some() || filters.text.is_some();
            let finding_query = FindingQuery {
                run_id: filters.run.clone(),
                plugin: filters.plugin.clone(),
                min_severity,
                limit: Some(FINDINGS_PAGE),
                after,
                host: filters.host.clone(),
                target: filters.target.clone(),
                text: filters.text.clone(),
                window: searching.then_some(SEARCH_WINDOW),
            };
            let found = query(dashboard, move |s| s.store().findings(&finding_query)).await?;
            let names = plugin_names(dashboard);
            let paging = match found.next {
                Some(next) if searching && found.findings.len() < FINDINGS_PAGE as usize => {
                    pages::Paging::SearchedTo {
                        from: after.unwrap_or(0).saturating_add(1),
                        to: next,
                    }
                }
                Some(next) => pages::Paging::Next(next),
                None => pages::Paging::End,
            };
            page(
                "Findings",
                Nav::Findings,
                pages::findings(&found.findings, paging, &filters, &names),
            )
        }
        ["findings", id] => {
            let Ok(id) = id.parse::<i64>() else {
                return Ok(not_found(user, "a finding id is a number"));
            };
            let found = query(dashboard, move |s| {
                secflow_runner::provenance::finding_with_provenance(s.store(), id)
            })
            .await?;
            match found {
                Some((f, provenance)) => page(
                    &format!("Finding {id}"),
                    Nav::Findings,
                    pages::finding(&f, provenance.as_ref()),
                ),
                None => not_found(user, &format!("no finding {id}")),
            }
        }
        ["runs"] => {
            let status_name = param(q, "status").map(str::to_owned);
            let status = match status_name.as_deref() {
                Some(s) => match RunStatus::parse(s) {
                    Some(s) => Some(s),
                    None => return Ok(not_found(user, &format!("no run status named {s:?}"))),
                },
                None => None,
            };
            let plugin = param(q, "plugin").map(str::to_owned);
            let run_query = RunQuery {
                limit: Some(RUNS_PAGE),
                plugin: plugin.clone(),
                status,
            };
            let runs = query(dashboard, move |s| s.store().runs(&run_query)).await?;
            let names = plugin_names(dashboard);
            page(
                "Runs",
                Nav::Runs,
                pages::runs(&runs, status_name.as_deref(), plugin.as_deref(), &names),
            )
        }
        ["runs", id] => {
            let id = (*id).to_owned();
            let found = query(dashboard, move |s| {
                let Some(record) = s.store().run(&id)? else {
                    return Ok(None);
                };
                let audit = s.store().audit(&AuditQuery {
                    run_id: Some(id.clone()),
                    limit: Some(100),
                    ..AuditQuery::default()
                })?;
                let findings = s.store().findings(&FindingQuery {
                    run_id: Some(id),
                    limit: Some(FINDINGS_PAGE),
                    ..FindingQuery::default()
                })?;
                Ok(Some((record, audit, findings.findings)))
            })
            .await?;
            match found {
                Some((record, audit, findings)) => page(
                    &format!("Run {}", record.run_id),
                    Nav::Runs,
                    pages::run(&record, &audit, &findings),
                ),
                None => not_found(user, "no such run"),
            }
        }
        ["plugins"] => {
            let entries = dashboard.supervisor.plugins();
            let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
            let (states, history) = query(dashboard, move |s| {
                let states = s.store().plugin_states()?;
                let mut history = Vec::new();
                for name in names {
                    let events = s.store().telemetry(&TelemetryQuery {
                        plugin: Some(name.clone()),
                        limit: Some(CHART_EVENTS),
                        ..TelemetryQuery::default()
                    })?;
                    let runs = s.store().runs(&RunQuery {
                        plugin: Some(name.clone()),
                        limit: Some(CHART_EVENTS),
                        status: None,
                    })?;
                    history.push(chart::daily(&events, &runs));
                }
                Ok((states, history))
            })
            .await?;
            let views: Vec<pages::PluginView<'_>> = entries
                .iter()
                .zip(history)
                .map(|(entry, days)| pages::PluginView {
                    entry,
                    states: states.iter().filter(|s| s.name == entry.name).collect(),
                    days,
                })
                .collect();
            page("Plugins", Nav::Plugins, pages::plugins(&views))
        }
        ["live"] => page("Runs in progress", Nav::Live, pages::live()),
        ["static", "live.js"] => respond(StatusCode::OK, "text/javascript; charset=utf-8", LIVE_JS),
        ["api", "live"] => {
            let running = query(dashboard, |s| {
                s.store().runs(&RunQuery {
                    limit: Some(RUNS_PAGE),
                    plugin: None,
                    status: Some(RunStatus::Running),
                })
            })
            .await?;
            let load = dashboard.supervisor.load();
            let body = json!({ "runs": running, "load": load });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        _ => not_found(user, &format!("no page {path}")),
    })
}
