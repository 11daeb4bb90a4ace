//! Budget headers on the wire: `grpc-timeout` (gRPC's exact format) and
//! millisecond headers such as `x-envoy-expected-rq-timeout-ms`.

use std::time::Duration;

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit, `H`
/// hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds,
/// `n` nanoseconds.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a budget as `grpc-timeout`, in the finest unit whose value fits
/// in 8 digits, rounding down so the receiver never gets more time than
/// the sender has.
pub fn format_grpc_timeout(budget: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = budget.as_nanos();
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
        ('H', 3_600_000_000_000),
    ] {
        let n = nanos / per;
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Parses a whole number of milliseconds.
pub fn parse_millis(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpc_timeout_cases() {
        let ok = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("10S", Duration::from_secs(10)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("7n", Duration::from_nanos(7)),
            ("0m", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_grpc_timeout(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "m",
            "123456789m",
            "10s",
            "1.5S",
            "-1S",
            " 1S",
            "1Sx",
            "১S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(format_grpc_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(3600 * 24)),
            "86400000m"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(3600 * 24 * 30)),
            "2592000S"
        );
    }

    proptest! {
        #[test]
        fn formatted_budgets_parse_back_no_larger_and_close(nanos in 0u64..u64::MAX / 4) {
            let budget = Duration::from_nanos(nanos);
            let text = format_grpc_timeout(budget);
            let back = parse_grpc_timeout(&text).expect("parses");
            prop_assert!(back <= budget);
            // The finest unit that fits loses less than one part in 10^5.
            prop_assert!(budget - back <= budget / 100_000 + Duration::from_nanos(1));
        }
    }
}
