//! CPE 2.2 URIs (what nmap prints) to CPE 2.3 formatted strings (what NVD and
//! the cve-mapper match on).
//!
//! `cpe:/a:openbsd:openssh:7.2p2` becomes
//! `cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*`: URI components are
//! percent-decoded, an empty component is ANY (`*`), `-` stays NA, a packed
//! edition (`~edition~sw_edition~target_sw~target_hw~other`) is unpacked, and
//! characters other than letters, digits, `_`, `.` and `-` are escaped with a
//! backslash as the formatted-string binding requires (NISTIR 7695 §6).

/// Why a URI could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpeUriError {
    #[error("{uri:?} is not a CPE 2.2 URI (it must start with \"cpe:/\")")]
    NotUri { uri: String },
    #[error("{uri:?} has no part, vendor and product")]
    NoProduct { uri: String },
    #[error("{uri:?} has a bad percent escape")]
    BadEscape { uri: String },
}

/// One URI component, decoded and re-escaped for the formatted string.
fn bind(component: &str, uri: &str) -> Result<String, CpeUriError> {
    match component {
        "" => return Ok("*".into()),
        "-" => return Ok("-".into()),
        _ => {}
    }
    let bytes = component.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = component
                .get(at + 1..at + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| CpeUriError::BadEscape {
                    uri: uri.to_owned(),
                })?;
            decoded.push(hex);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    let text = String::from_utf8_lossy(&decoded).to_lowercase();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

/// Converts a CPE 2.2 URI to a CPE 2.3 formatted string.
pub fn uri_to_formatted(uri: &str) -> Result<String, CpeUriError> {
    let body = uri
        .strip_prefix("cpe:/")
        .or_else(|| uri.strip_prefix("CPE:/"))
        .ok_or_else(|| CpeUriError::NotUri {
            uri: uri.to_owned(),
        })?;
    let parts: Vec<&str> = body.split(':').collect();
    let component = |i: usize| parts.get(i).copied().unwrap_or("");
    if (0..3).any(|i| component(i).is_empty()) || parts.len() > 7 {
        return Err(CpeUriError::NoProduct {
            uri: uri.to_owned(),
        });
    }
    let mut attributes = Vec::with_capacity(11);
    for i in 0..5 {
        attributes.push(bind(component(i), uri)?);
    }
    let edition = component(5);
    if let Some(packed) = edition.strip_prefix('~') {
        // edition, sw_edition, target_sw, target_hw, other
        let unpacked: Vec<&str> = packed.split('~').collect();
        let field = |i: usize| unpacked.get(i).copied().unwrap_or("");
        attributes.push(bind(field(0), uri)?);
        attributes.push(bind(component(6), uri)?);
        for i in 1..5 {
            attributes.push(bind(field(i), uri)?);
        }
    } else {
        attributes.push(bind(edition, uri)?);
        attributes.push(bind(component(6), uri)?);
        attributes.extend(std::iter::repeat_n("*".to_owned(), 4));
    }
    Ok(format!("cpe:2.3:{}", attributes.join(":")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_uris_become_formatted_strings_with_wildcards() {
        assert_eq!(
            uri_to_formatted("cpe:/a:openbsd:openssh:7.2p2").unwrap(),
            "cpe:2.3:a:openbsd:openssh:7.2p2:*:*:*:*:*:*:*"
        );
        assert_eq!(
            uri_to_formatted("cpe:/a:apache:http_server:2.4.49").unwrap(),
            "cpe:2.3:a:apache:http_server:2.4.49:*:*:*:*:*:*:*"
        );
        assert_eq!(
            uri_to_formatted("cpe:/o:linux:linux_kernel").unwrap(),
            "cpe:2.3:o:linux:linux_kernel:*:*:*:*:*:*:*:*"
        );
    }

    #[test]
    fn special_characters_are_decoded_then_escaped_and_packed_editions_unpacked() {
        assert_eq!(
            uri_to_formatted("cpe:/a:erlang:erlang%2fotp:26.2").unwrap(),
            r"cpe:2.3:a:erlang:erlang\/otp:26.2:*:*:*:*:*:*:*"
        );
        assert_eq!(
            uri_to_formatted("cpe:/a:f5:nginx:1.22.0::~~plus~~~").unwrap(),
            "cpe:2.3:a:f5:nginx:1.22.0:*:*:*:plus:*:*:*"
        );
        assert_eq!(
            uri_to_formatted("cpe:/a:microsoft:iis:-").unwrap(),
            "cpe:2.3:a:microsoft:iis:-:*:*:*:*:*:*:*"
        );
    }

    #[test]
    fn strings_that_are_not_uris_are_refused_naming_them() {
        let err = uri_to_formatted("cpe:2.3:a:x:y:1").unwrap_err();
        assert!(err.to_string().contains("cpe:2.3:a:x:y:1"));
        assert!(matches!(
            uri_to_formatted("cpe:/a::openssh"),
            Err(CpeUriError::NoProduct { .. })
        ));
        assert!(matches!(
            uri_to_formatted("cpe:/a:x:y%zz"),
            Err(CpeUriError::BadEscape { .. })
        ));
    }
}
