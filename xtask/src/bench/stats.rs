//! Medians, percentiles and the "median [min–max]" cells of the report.

/// Median, min and max of `v` (None when empty or not finite).
#[must_use]
pub(crate) fn summary(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 { s[n / 2] } else { f64::midpoint(s[n / 2 - 1], s[n / 2]) };
    Some((med, s[0], s[n - 1]))
}

/// Median of `v`, NaN when empty.
#[must_use]
pub(crate) fn median(v: &[f64]) -> f64 {
    summary(v).map_or(f64::NAN, |s| s.0)
}

/// The `p`-th percentile (0–100, nearest rank) of `v`, NaN when empty.
#[must_use]
pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// `a / b` per pair, skipping pairs where either side is missing or b is 0.
#[must_use]
pub(crate) fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).filter(|(x, y)| x.is_finite() && y.is_finite() && **y != 0.0).map(|(x, y)| x / y).collect()
}

/// "0.97 [0.95–0.99]" (median [min–max]) or "—".
#[must_use]
pub(crate) fn ratio_cell(v: &[f64]) -> String {
    match summary(v) {
        Some((m, lo, hi)) => format!("{m:.3} [{lo:.3}–{hi:.3}]"),
        None => "—".into(),
    }
}

/// A number with a sensible precision, or "—" for NaN.
#[must_use]
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "exact values by construction")]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&[f64::NAN]), None);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(ratios(&[2.0, 3.0, 1.0], &[1.0, 0.0, f64::NAN]), vec![2.0]);
        assert_eq!(ratio_cell(&[1.0, 0.5, 2.0]), "1.000 [0.500–2.000]");
        assert_eq!(ratio_cell(&[]), "—");
        assert_eq!(num(12_345.6), "12346");
        assert_eq!(num(0.1234), "0.12");
    }
}
