//! HTML building blocks: escaping, the page frame, query strings.
//!
//! Every value from storage passes through [`esc`] (text and attribute
//! values alike); pages carry no inline script or style, so the CSP can
//! forbid both.

use std::fmt::Write;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest query string read; a longer one is cut (every key is bounded).
pub const MAX_QUERY_BYTES: usize = 4096;

/// `text` safe in element content and in double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a URL component keeps as written: RFC 3986's unreserved characters
/// (run ids stay readable in the address bar).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as one path segment or query-string component.
pub fn url_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// `a=1&b=x+y` as pairs (`+` is a space; bad escapes are kept as written).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let query = match query.char_indices().nth(MAX_QUERY_BYTES) {
        Some((cut, _)) => &query[..cut],
        None => query,
    };
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                percent_decode_str(&s).decode_utf8_lossy().into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// The first value of `key`, trimmed, when not empty.
pub fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Which page of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Findings,
    Runs,
    Plugins,
    Live,
    None,
}

/// A whole page: head, navigation (with the user and a logout button), body.
pub fn page(title: &str, nav: Nav, user: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · SecFlow</title><link rel=\"stylesheet\" href=\"/static/app.css\">",
        esc(title)
    );
    if nav == Nav::Live {
        out.push_str("<script src=\"/static/live.js\" defer></script>");
    }
    out.push_str("</head><body><header><span class=\"brand\">SecFlow</span>");
    if let Some(user) = user {
        out.push_str("<nav>");
        for (item, href, label) in [
            (Nav::Findings, "/findings", "Findings"),
            (Nav::Runs, "/runs", "Runs"),
            (Nav::Plugins, "/plugins", "Plugins"),
            (Nav::Live, "/live", "Live"),
        ] {
            let current = if item == nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><form method=\"post\" action=\"/logout\" class=\"logout\">\
             <span class=\"user\">{}</span><button type=\"submit\">Log out</button></form>",
            esc(user)
        );
    }
    let _ = writeln!(
        out,
        "</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// A table with a header row; cells are already HTML.
pub fn table(id: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">Nothing to show.</p>");
    }
    out
}

/// A `<select>` with `current` selected; the first option is "any".
pub fn select(name: &str, label: &str, options: &[String], current: Option<&str>) -> String {
    let mut out = format!(
        "<label>{} <select name=\"{}\" id=\"filter-{}\"><option value=\"\">any</option>",
        esc(label),
        esc(name),
        esc(name)
    );
    for option in options {
        let selected = if current == Some(option.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{0}\"{selected}>{0}</option>",
            esc(option)
        );
    }
    out.push_str("</select></label>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_stored_text_is_shown_not_run() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let html = page("<b>", Nav::Findings, Some("<i>"), "");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
    }

    #[test]
    fn query_strings_decode_plus_and_percent_escapes() {
        let pairs = parse_query("severity=high&text=sql+injection&plugin=ferox%2Fx&empty=");
        assert_eq!(param(&pairs, "severity"), Some("high"));
        assert_eq!(param(&pairs, "text"), Some("sql injection"));
        assert_eq!(param(&pairs, "plugin"), Some("ferox/x"));
        assert_eq!(param(&pairs, "empty"), None);
        assert_eq!(param(&pairs, "missing"), None);
        assert_eq!(url_component("a b/c"), "a%20b%2Fc");
        assert_eq!(url_component("01a2-b_c.d~e"), "01a2-b_c.d~e");
    }

    #[test]
    fn an_oversized_query_is_cut_not_refused() {
        let long = format!("a={}", "x".repeat(MAX_QUERY_BYTES * 2));
        let pairs = parse_query(&long);
        assert!(pairs[0].1.len() < MAX_QUERY_BYTES);
    }
}
