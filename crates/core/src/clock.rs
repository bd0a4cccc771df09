//! Timestamps as the contracts spell them: RFC 3339, UTC, millisecond precision.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as an RFC 3339 UTC string with milliseconds (`2026-11-23T21:55:43.123Z`).
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Always three fractional digits, so timestamps sort as text in time order
/// (the database orders runs by `started_at`).
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(FORMAT)
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
        assert_eq!(format_rfc3339(with_offset), "2030-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamps_sort_as_text_in_time_order() {
        let early = parse_rfc3339("2030-01-01T00:00:01.1Z").unwrap();
        let late = parse_rfc3339("2030-01-01T00:00:01.105Z").unwrap();
        assert!(format_rfc3339(early) < format_rfc3339(late));
    }
}
