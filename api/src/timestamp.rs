//! How Cairn writes times in logs and shows them: RFC 3339, UTC, microseconds.

use time::OffsetDateTime;

/// `2026-11-22T10:00:00.123456Z` for microseconds since the Unix epoch.
pub fn rfc3339_micros(unix_micros: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_with_microseconds() {
        assert_eq!(super::rfc3339_micros(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
    }
}
