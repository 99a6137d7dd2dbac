//! The `spec.schedule` cron expression: standard 5-field cron, evaluated in UTC.
//!
//! The `cron` crate wants a seconds field and numbers days of the week 1-7
//! from Sunday, while standard cron numbers them 0-7 (0 and 7 are Sunday).
//! [`CronSchedule::parse`] accepts standard cron and translates it, so
//! `0 9 * * 1-5` means weekdays at 09:00 as it does in crontab(5).

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// Regular expression (for the CRD schema) matching the shape of an accepted
/// expression: a shorthand like `@daily`, or five whitespace-separated fields.
pub const SCHEDULE_PATTERN: &str =
    r"^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})\s*$";

/// Why a cron expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {expression:?}: {reason}")]
pub struct ScheduleError {
    /// The rejected expression.
    pub expression: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A validated cron schedule (UTC).
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    schedule: cron::Schedule,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl CronSchedule {
    /// Parses a standard 5-field cron expression (`minute hour day-of-month
    /// month day-of-week`) or a shorthand (`@hourly`, `@daily`/`@midnight`,
    /// `@weekly`, `@monthly`, `@yearly`/`@annually`).
    ///
    /// Restricting both day-of-month and day-of-week is rejected: crontab(5)
    /// fires when *either* matches, the evaluator here would need *both*, and
    /// silently differing from crontab would be worse than refusing.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let fail = |reason: String| ScheduleError {
            expression: expression.to_owned(),
            reason,
        };
        let expanded = expand_shorthand(expression.trim()).map_err(fail)?;
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
            return Err(fail(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            )));
        };
        if day_of_month != "*" && day_of_week != "*" {
            return Err(fail(
                "day-of-month and day-of-week cannot both be restricted; use one of them".into(),
            ));
        }
        let day_of_week = translate_day_of_week(day_of_week).map_err(fail)?;
        let six_fields = format!("0 {minute} {hour} {day_of_month} {month} {day_of_week}");
        let schedule = cron::Schedule::from_str(&six_fields).map_err(|e| fail(e.to_string()))?;
        if schedule.upcoming(Utc).next().is_none() {
            return Err(fail("the schedule never fires".into()));
        }
        Ok(Self {
            expression: expression.trim().to_owned(),
            schedule,
        })
    }

    /// The expression as written in the spec (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first firing time strictly after `after`, or `None` if the
    /// schedule never fires again (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

impl FromStr for CronSchedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Replaces a shorthand by its 5-field form; other input is returned as is.
fn expand_shorthand(expression: &str) -> Result<String, String> {
    if !expression.starts_with('@') {
        return Ok(expression.to_owned());
    }
    let fields = match expression {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => {
            return Err(format!(
                "unknown shorthand {other:?}; use @hourly, @daily, @weekly, @monthly or @yearly"
            ))
        }
    };
    Ok(fields.to_owned())
}

/// Translates a standard day-of-week field (0-7, Sunday = 0 or 7, names
/// `sun`..`sat`, lists, ranges, steps) into the `cron` crate's numbering
/// (1-7, Sunday = 1) as an explicit list, or `*`.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        for day in expand_day_of_week_item(item)? {
            days[day] = true;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|&d| days[d])
        .map(|d| (d + 1).to_string())
        .collect();
    Ok(list.join(","))
}

/// Expands one comma-separated item (`3`, `mon`, `1-5`, `*/2`, `1-5/2`,
/// `2/3`) into standard day numbers 0-6.
fn expand_day_of_week_item(item: &str) -> Result<Vec<usize>, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, parse_step(step)?),
        None => (item, 1),
    };
    let (first, last) = match range.split_once('-') {
        _ if range == "*" => (0, 6),
        Some((a, b)) => (day_number(a)?, day_number(b)?),
        // `n/step` runs from n to the end of the week, as in crontab.
        None if step > 1 || item.contains('/') => (day_number(range)?, 6),
        None => (day_number(range)?, day_number(range)?),
    };
    if first > last {
        return Err(format!("day-of-week range {range:?} runs backwards"));
    }
    Ok((first..=last).step_by(step).map(|d| d % 7).collect())
}

fn parse_step(step: &str) -> Result<usize, String> {
    match step.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid step {step:?} in day-of-week")),
    }
}

/// A day of the week as 0-7 (Sunday = 0 and 7), by number or name.
fn day_number(token: &str) -> Result<usize, String> {
    const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    if let Ok(n) = token.parse::<usize>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("day-of-week {n} is out of range 0-7"))
        };
    }
    let lower = token.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|name| lower == *name)
        .ok_or_else(|| format!("invalid day-of-week {token:?}; use 0-7 or sun..sat"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn default_schedule_fires_every_three_hours() {
        let s = CronSchedule::parse("0 */3 * * *").unwrap();
        assert_eq!(
            s.next_after(at(2024, 5, 1, 1, 17)),
            Some(at(2024, 5, 1, 3, 0))
        );
        assert_eq!(
            s.next_after(at(2024, 5, 1, 3, 0)),
            Some(at(2024, 5, 1, 6, 0))
        );
    }

    #[test]
    fn day_of_week_uses_crontab_numbering() {
        // 2024-05-04 is a Saturday.
        let sat = at(2024, 5, 4, 12, 0);
        let weekdays = CronSchedule::parse("30 9 * * 1-5").unwrap();
        let next = weekdays.next_after(sat).unwrap();
        assert_eq!(next.weekday(), Weekday::Mon);
        assert_eq!((next.hour(), next.minute()), (9, 30));

        for sunday in ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun", "@weekly"] {
            let s = CronSchedule::parse(sunday).unwrap();
            assert_eq!(
                s.next_after(sat).unwrap().weekday(),
                Weekday::Sun,
                "{sunday}"
            );
        }
        let fri_to_sun = CronSchedule::parse("0 0 * * 5-7").unwrap();
        let mon = at(2024, 5, 6, 12, 0);
        assert_eq!(fri_to_sun.next_after(mon).unwrap().weekday(), Weekday::Fri);
        assert_eq!(
            fri_to_sun
                .next_after(at(2024, 5, 4, 1, 0))
                .unwrap()
                .weekday(),
            Weekday::Sun
        );
    }

    #[test]
    fn translates_day_of_week_lists_and_steps() {
        assert_eq!(translate_day_of_week("*").unwrap(), "*");
        assert_eq!(translate_day_of_week("0").unwrap(), "1");
        assert_eq!(translate_day_of_week("7").unwrap(), "1");
        assert_eq!(translate_day_of_week("1-5").unwrap(), "2,3,4,5,6");
        assert_eq!(translate_day_of_week("*/2").unwrap(), "1,3,5,7");
        assert_eq!(translate_day_of_week("MON,wed").unwrap(), "2,4");
        assert_eq!(translate_day_of_week("4/2").unwrap(), "5,7");
        assert_eq!(translate_day_of_week("5-7").unwrap(), "1,6,7");
    }

    #[test]
    fn shorthands_expand() {
        let s = CronSchedule::parse("@hourly").unwrap();
        assert_eq!(
            s.next_after(at(2024, 5, 1, 1, 17)),
            Some(at(2024, 5, 1, 2, 0))
        );
        assert_eq!(s.expression(), "@hourly");
    }

    #[test]
    fn rejects_bad_expressions_with_clear_messages() {
        let cases = [
            ("", "expected 5 fields"),
            ("* * * *", "expected 5 fields"),
            ("0 0 */3 * * *", "expected 5 fields"),
            ("61 * * * *", "61"),
            ("0 25 * * *", ""),
            ("0 0 * * 8", "out of range"),
            ("0 0 * * funday", "sun..sat"),
            ("0 0 1 * 1", "both be restricted"),
            ("0 0 * * 5-1", "backwards"),
            ("0 0 * * */0", "step"),
            ("@every 5m", "unknown shorthand"),
            ("0 0 30 2 *", "never fires"),
        ];
        for (input, needle) in cases {
            let err = CronSchedule::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{err}");
        }
    }
}
