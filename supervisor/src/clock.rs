//! Timestamps as the contracts spell them: RFC 3339, UTC, millisecond precision.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as an RFC 3339 UTC string with milliseconds (`2026-11-23T21:55:43.123Z`).
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_in_utc_with_milliseconds() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        let t = parse_rfc3339(&s).unwrap();
        assert_eq!(format_rfc3339(t), s);
        let with_offset = parse_rfc3339("2030-01-01T02:00:00+02:00").unwrap();
        assert_eq!(format_rfc3339(with_offset), "2030-01-01T00:00:00Z");
    }
}
