//! Output sinks: the live table and JSON Lines. Formatters never parse:
//! they render [`crate::analyze::Transaction`]s and findings as given.

pub mod drops;
pub mod fit;
pub mod json;
pub mod table;
pub mod term;

/// RFC 3339 UTC time with microseconds, from Unix nanoseconds.
#[must_use]
pub fn rfc3339(unix_ns: i128) -> String {
    Rfc3339(unix_ns).to_string()
}

/// [`rfc3339`] as a `Display` value (formats without allocating).
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub i128);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unix_ns = self.0;
        let secs = unix_ns.div_euclid(1_000_000_000);
        let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
    }
}

/// `namespace/name` as a `Display` value.
#[derive(Clone, Copy, Debug)]
pub struct NsName<'a>(pub &'a str, pub &'a str);

impl std::fmt::Display for NsName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Milliseconds with microsecond precision, for JSON.
#[must_use]
pub fn ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_795_433_602_123_456_789), "2026-11-23T11:33:22.123456Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
