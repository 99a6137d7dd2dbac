//! Duration strings of the CredstashSync spec (`10s`, `5m`, `1h30m`, `500ms`).
//!
//! The accepted grammar is exactly [`DURATION_PATTERN`], which the CRD schema
//! also enforces at admission: one or more `<digits><unit>` parts with unit
//! `ms`, `s`, `m` or `h`. No signs, no fractions, no spaces, no days.

use std::time::Duration;

/// Regular expression (for the CRD schema) matching every string
/// [`parse_duration`] accepts.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration; expected e.g. 10s, 5m, 1h30m or 500ms")]
    Empty,
    /// The string does not follow `<digits><unit>...`.
    #[error("invalid duration {input:?}: {reason}; expected e.g. 10s, 5m, 1h30m or 500ms (units ms, s, m, h)")]
    Invalid {
        /// The rejected input.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value does not fit a `Duration`.
    #[error("duration {input:?} is too large")]
    Overflow {
        /// The rejected input.
        input: String,
    },
}

/// Parses a duration string such as `10s`, `5m`, `1h30m`, `0s` or `500ms`.
///
/// Parts are summed, so `1h30m` is 90 minutes (and `30m1h` is accepted too,
/// as the schema pattern does).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = input;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let (part, remaining) = split_part(input, rest)?;
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow {
                input: input.to_owned(),
            })?;
        rest = remaining;
    }
    Ok(total)
}

/// Splits one `<digits><unit>` part off the front of `rest`.
fn split_part<'a>(input: &str, rest: &'a str) -> Result<(Duration, &'a str), DurationError> {
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits_end == 0 {
        return Err(invalid(input, "expected a number before each unit"));
    }
    let (digits, after) = rest.split_at(digits_end);
    let (unit_millis, remaining) = split_unit(input, after)?;
    let value: u64 = digits.parse().map_err(|_| DurationError::Overflow {
        input: input.to_owned(),
    })?;
    let millis = value
        .checked_mul(unit_millis)
        .ok_or_else(|| DurationError::Overflow {
            input: input.to_owned(),
        })?;
    Ok((Duration::from_millis(millis), remaining))
}

/// Reads the unit at the front of `after`; returns its length in milliseconds.
fn split_unit<'a>(input: &str, after: &'a str) -> Result<(u64, &'a str), DurationError> {
    const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];
    UNITS
        .iter()
        .find_map(|(unit, millis)| after.strip_prefix(unit).map(|rest| (*millis, rest)))
        .ok_or_else(|| {
            if after.is_empty() {
                invalid(input, "missing unit after the last number")
            } else {
                invalid(input, "unknown unit")
            }
        })
}

fn invalid(input: &str, reason: &str) -> DurationError {
    DurationError::Invalid {
        input: input.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Formats a duration in the same grammar, largest units first
/// (`1h30m`, `10s`, `500ms`, `0s`); `parse_duration(&format_duration(d))`
/// returns `d` truncated to whole milliseconds.
pub fn format_duration(d: Duration) -> String {
    let mut millis = d.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = millis / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            millis %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_forms() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("1m500ms", Duration::from_millis(60_500)),
            ("30m1h", Duration::from_secs(5400)),
            ("2h", Duration::from_secs(7200)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_malformed_input() {
        for input in [
            "", "10", "s", "10x", "1.5s", "-1s", " 10s", "10s ", "10 s", "1d", "10S", "ms", "1h30",
        ] {
            assert!(parse_duration(input).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn rejects_overflow_without_panicking() {
        let huge = "99999999999999999999999h";
        assert!(matches!(
            parse_duration(huge),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("18446744073709551615h"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn error_message_names_input_and_examples() {
        let msg = parse_duration("10x").unwrap_err().to_string();
        assert!(msg.contains("\"10x\""), "{msg}");
        assert!(msg.contains("1h30m"), "{msg}");
    }

    #[test]
    fn format_round_trips() {
        for input in ["1h30m", "10s", "500ms", "0s", "2h1m1s1ms"] {
            let d = parse_duration(input).unwrap();
            assert_eq!(format_duration(d), input);
        }
    }
}
