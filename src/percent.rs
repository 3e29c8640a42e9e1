//! The `percentage` that the `progress` route adds to a job, with JavaScript's
//! `((processed / total) * 100).toFixed(2)` semantics.
//!
//! Rust's `{:.2}` already rounds the exact binary value to the nearest two-decimal number; the
//! two formats only disagree on exact ties, which JavaScript breaks upward (away from zero)
//! and Rust breaks to even: 1 of 800 is 0.125 %, `"0.13"` in JavaScript, `"0.12"` in Rust.

/// `((processed / total) * 100).toFixed(2)`, for numbers already coerced as JavaScript would.
pub fn percentage(processed: f64, total: f64) -> String {
    to_fixed_2((processed / total) * 100.0)
}

/// JavaScript's `Number.prototype.toFixed(2)`.
pub fn to_fixed_2(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.abs() >= 1e21 {
        // toFixed falls back to ToString for huge magnitudes, which includes the infinities.
        return js_number_to_string(x);
    }
    // -0 prints as "0.00" in JavaScript (the sign test is `x < 0`).
    let x = if x == 0.0 { 0.0 } else { x };
    if is_two_decimal_tie(x) {
        // A tie at two decimals is a multiple of 1/200 that is also dyadic, so |x| * 100 is an
        // exact multiple of 0.5 and the arithmetic below is exact.
        let hundredths = (x.abs() * 100.0).floor() as u64 + 1;
        let sign = if x < 0.0 { "-" } else { "" };
        return format!("{sign}{}.{:02}", hundredths / 100, hundredths % 100);
    }
    format!("{x:.2}")
}

/// Whether `x` lies exactly halfway between two multiples of 0.01. Such a value is
/// `(2k + 1) / 200`; being a binary fraction too, it must be an odd multiple of 1/8.
fn is_two_decimal_tie(x: f64) -> bool {
    let eighths = x * 8.0;
    eighths.fract() == 0.0 && eighths.abs() < 2f64.powi(53) && (eighths.abs() as u64) % 2 == 1
}

/// JavaScript's `Number.prototype.toString()` for the magnitudes `toFixed` hands to it.
fn js_number_to_string(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, as JavaScript does; only the
    // exponent's sign differs ("1e21" against "1e+21").
    let formatted = format!("{x:e}");
    match formatted.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => {
            format!("{mantissa}e+{exponent}")
        }
        _ => formatted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_800_rounds_the_tie_up_like_javascript() {
        assert_eq!(percentage(1.0, 800.0), "0.13");
    }

    #[test]
    fn ordinary_values_match_javascript() {
        assert_eq!(percentage(3.0, 10.0), "30.00");
        assert_eq!(percentage(2.0, 3.0), "66.67");
        assert_eq!(percentage(0.0, 10.0), "0.00");
        assert_eq!(percentage(10.0, 10.0), "100.00");
        assert_eq!(percentage(1.0, 8.0), "12.50");
    }

    #[test]
    fn processed_above_total_goes_past_100() {
        assert_eq!(percentage(11.0, 10.0), "110.00");
    }

    #[test]
    fn values_that_only_look_like_ties_round_by_their_binary_value() {
        // 1.005 is stored as 1.00499999999999989..., so JavaScript prints "1.00".
        assert_eq!(to_fixed_2(1.005), "1.00");
        assert_eq!(to_fixed_2(0.375), "0.38");
        assert_eq!(to_fixed_2(2.5), "2.50");
    }

    #[test]
    fn negative_ties_round_away_from_zero() {
        assert_eq!(to_fixed_2(-0.125), "-0.13");
        assert_eq!(to_fixed_2(-0.001), "-0.00");
        assert_eq!(to_fixed_2(-0.0), "0.00");
    }

    #[test]
    fn non_finite_and_huge_values_print_like_javascript() {
        assert_eq!(percentage(1.0, f64::NAN), "NaN");
        assert_eq!(percentage(1.0, 0.0), "Infinity");
        assert_eq!(to_fixed_2(1e21), "1e+21");
        assert_eq!(to_fixed_2(-2.5e22), "-2.5e+22");
    }
}
