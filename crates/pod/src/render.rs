//! How the command line shows times: RFC 3339 in the local time zone
//! (`TZ`, else the system's), to the millisecond.

use jiff::tz::TimeZone;

/// `2026-12-02T01:02:03.456+00:00` for a Unix time in milliseconds.
pub fn local_time(ms: u64) -> String {
    time_in(ms, TimeZone::system())
}

fn time_in(ms: u64, zone: TimeZone) -> String {
    match i64::try_from(ms).ok().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
        Some(ts) => ts.to_zoned(zone).strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_with_milliseconds_and_offset() {
        assert_eq!(super::time_in(1_764_637_323_456, jiff::tz::TimeZone::UTC), "2025-12-02T01:02:03.456+00:00");
        assert_eq!(super::time_in(u64::MAX, jiff::tz::TimeZone::UTC), u64::MAX.to_string());
    }
}
