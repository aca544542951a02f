//! Time formatting shared by every layer (enrichment stamps metadata with it,
//! sinks print it), so none of them reaches into another for it.

/// RFC 3339 UTC time with microseconds, from Unix nanoseconds.
#[must_use]
pub fn rfc3339(unix_ns: i128) -> String {
    Rfc3339(unix_ns).to_string()
}

/// [`rfc3339`] as a `Display` value (formats without allocating).
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub i128);

/// First and last microsecond RFC 3339 can write (years 0000 to 9999).
const RFC3339_MIN_US: i128 = -62_167_219_200_000_000;
const RFC3339_MAX_US: i128 = 253_402_300_799_999_999;
const UNIX_EPOCH: jiff::civil::DateTime = jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Floor to the microsecond (also before 1970), then let jiff write it.
        // Times outside years 0000-9999 have no RFC 3339 form: they are
        // clamped to its ends rather than written as something no parser reads.
        // Civil time rather than `jiff::Timestamp`, whose range ends a day
        // before 9999-12-31 (it leaves room for any UTC offset).
        let us = self.0.div_euclid(1000).clamp(RFC3339_MIN_US, RFC3339_MAX_US);
        let t = UNIX_EPOCH.checked_add(jiff::SignedDuration::from_micros(us as i64)).map_err(|_| std::fmt::Error)?;
        write!(f, "{t:.6}Z")
    }
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

    /// The hand-written formatter jiff replaced, kept as the reference.
    fn old_rfc3339(unix_ns: i128) -> String {
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
        let secs = unix_ns.div_euclid(1_000_000_000);
        let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days as i64);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
    }

    #[test]
    fn rfc3339_matches_the_old_formatter() {
        const S: i128 = 1_000_000_000;
        let min = RFC3339_MIN_US * 1000;
        let max = RFC3339_MAX_US * 1000 + 999;
        let mut values = vec![
            0,
            1,
            999,
            1000,
            1001,
            S - 1,
            S,
            S + 1,
            -1,
            -999,
            -1000,
            -1001,
            -S + 1,
            -S,
            -S - 1,
            -86_400 * S,
            86_400 * S - 1,
            951_782_400 * S,     // 2000-02-29
            4_107_542_400 * S,   // 2100-03-01 (no leap day in 2100)
            -2_208_988_800 * S,  // 1900-01-01
            253_402_300_799 * S, // 9999-12-31T23:59:59
            min,
            min + 1,
            min + 999,
            min + 1000,
            max,
            max - 999,
            max - 1000,
            i128::from(u64::MAX),
            i128::from(i64::MAX),
            i128::from(i64::MIN),
        ];
        // Deterministic spread over the whole range and over sub-second digits.
        let mut rng = crate::testkit::Rng(crate::testkit::Rng::SEED);
        for _ in 0..200_000 {
            let x = rng.next();
            let span = (max - min) as u128;
            values.push(min + (u128::from(x) * 4_294_967_291 % span) as i128);
            values.push(i128::from(x >> 1) - i128::from(u64::MAX >> 2));
            values.push(i128::from(x % 2_000_000_000) - S);
        }
        for v in values {
            if (min..=max).contains(&v) {
                assert_eq!(rfc3339(v), old_rfc3339(v), "at {v} ns");
            }
        }
        // Outside years 0000-9999 (where the old code wrote `-001-…` or five-digit years).
        assert_eq!(rfc3339(min - 1), "0000-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(i128::MIN), "0000-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(max + 1), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(i128::MAX), "9999-12-31T23:59:59.999999Z");
    }

    /// Formatting cost, old against jiff (run with --release).
    #[test]
    #[ignore = "timing"]
    fn rfc3339_cost_side_by_side() {
        use std::{fmt::Write as _, hint::black_box, time::Instant};
        let vals: Vec<i128> = (0..10_000_i128).map(|i| 1_795_433_602_123_456_789 + i * 7_919_000_123).collect();
        let mut buf = String::new();
        for round in 0..3 {
            let t = Instant::now();
            for v in &vals {
                buf.clear();
                buf.push_str(&old_rfc3339(black_box(*v)));
            }
            let old = t.elapsed().as_nanos() as f64 / vals.len() as f64;
            let t = Instant::now();
            for v in &vals {
                buf.clear();
                let _ = write!(buf, "{}", Rfc3339(black_box(*v)));
            }
            let new = t.elapsed().as_nanos() as f64 / vals.len() as f64;
            eprintln!("round {round}: old {old:.0} ns, jiff {new:.0} ns, ratio {:.2}", new / old);
        }
    }
}
