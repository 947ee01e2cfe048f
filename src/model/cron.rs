//! Checks a ScalingRule's cron expression field by field, in railyard's words: every field's problem at once, each
//! with the field's valid range (the cron crate stops at the first problem and words some ranges off by one).
//! Pure; the crate still parses what passes here, for what only it knows.

/// One field of `sec min hour day month weekday [year]`.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names accepted for values (lowercase, first three letters and full), in order from `min`.
    names: &'static [&'static str],
    /// How the range reads in a message.
    range: &'static str,
    /// `?` (no specific value) is accepted.
    question_mark: bool,
}

const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAY_NAMES: &[&str] = &["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

const FIELDS: [Field; 7] = [
    Field { name: "second", min: 0, max: 59, names: &[], range: "0 to 59", question_mark: false },
    Field { name: "minute", min: 0, max: 59, names: &[], range: "0 to 59", question_mark: false },
    Field { name: "hour", min: 0, max: 23, names: &[], range: "0 to 23", question_mark: false },
    Field { name: "day of month", min: 1, max: 31, names: &[], range: "1 to 31", question_mark: true },
    Field { name: "month", min: 1, max: 12, names: MONTHS, range: "1 to 12 or Jan to Dec", question_mark: false },
    Field {
        name: "weekday",
        min: 1,
        max: 7,
        names: WEEKDAYS,
        range: "1 to 7 (1 is Sunday) or Sun to Sat",
        question_mark: true,
    },
    Field { name: "year", min: 1970, max: 2100, names: &[], range: "1970 to 2100", question_mark: false },
];

/// What railyard's cron looks like, for every message.
const SHAPE: &str = "write `sec min hour day month weekday`, e.g. `0 0 8 * * Mon-Fri`";

/// `Ok` when `expression` is a cron railyard runs; otherwise one message naming every problem.
pub fn check(expression: &str) -> Result<(), String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.len() {
        5 => {
            return Err(format!(
                "cron `{expression}` has 5 fields, but railyard's cron starts with seconds; write `0 {expression}`"
            ));
        }
        6 | 7 => {}
        count => return Err(format!("cron `{expression}` has {count} field(s), not 6 (or 7 with a year); {SHAPE}")),
    }
    let problems: Vec<String> =
        fields.iter().zip(&FIELDS).filter_map(|(text, field)| field.check(text).err()).collect();
    if !problems.is_empty() {
        return Err(format!("`{expression}` is not a cron expression: {}; {SHAPE}", problems.join("; ")));
    }
    Ok(())
}

impl Field {
    fn check(&self, text: &str) -> Result<(), String> {
        let problems: Vec<String> = text.split(',').filter_map(|item| self.check_item(item).err()).collect();
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// One comma-separated item: `*`, `?`, a value or a range, with an optional `/step`.
    fn check_item(&self, item: &str) -> Result<(), String> {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            self.check_step(step)?;
        }
        match base {
            "*" => Ok(()),
            "?" if self.question_mark => Ok(()),
            "?" => Err(format!("{} `?` is allowed only in the day of month and weekday fields; use `*`", self.name)),
            "" => Err(format!("{} `{item}` has nothing before the `/`; write `*/{}`", self.name, step.unwrap_or(""))),
            range => match range.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (self.value(from), self.value(to));
                    match (from, to) {
                        (Ok(from), Ok(to)) if from > to => {
                            Err(format!("{} range `{range}` runs backwards; write the smaller value first", self.name))
                        }
                        (Ok(_), Ok(_)) => Ok(()),
                        (from, to) => Err([from.err(), to.err()].into_iter().flatten().collect::<Vec<_>>().join("; ")),
                    }
                }
                None => self.value(range).map(|_| ()),
            },
        }
    }

    fn check_step(&self, step: &str) -> Result<(), String> {
        match step.parse::<u32>() {
            Ok(n) if (1..=self.max).contains(&n) => Ok(()),
            _ => Err(format!("{} step `/{step}` must be a number from 1 to {}", self.name, self.max)),
        }
    }

    /// The value `text` names: a number in range, or one of the field's names.
    fn value(&self, text: &str) -> Result<u32, String> {
        if let Ok(n) = text.parse::<u32>() {
            return if (self.min..=self.max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{} `{text}` must be from {}", self.name, self.range))
            };
        }
        let lower = text.to_ascii_lowercase();
        let full = if self.names == MONTHS { MONTH_NAMES } else { WEEKDAY_NAMES };
        let position = self
            .names
            .iter()
            .position(|name| *name == lower)
            .or_else(|| (!self.names.is_empty()).then(|| full.iter().position(|name| *name == lower)).flatten());
        match position {
            Some(index) => Ok(self.min + index as u32),
            None => Err(format!("{} `{text}` is not a value; use {}", self.name, self.range)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_expression_passes_with_names_ranges_steps_and_lists() {
        for expression in [
            "0 0 8 * * Mon-Fri",
            "0 */15 * * * *",
            "0 0 23 * * *",
            "0 30 9,12,18 1-15 Jan-Jun ?",
            "0 0 0 1 1 * 2030",
            "0 0 12 ? * Sunday",
            "5/10 0 0 * * 1-7",
        ] {
            assert_eq!(check(expression), Ok(()), "{expression}");
        }
    }

    #[test]
    fn hour_25_names_the_range_0_to_23_and_23_is_accepted() {
        let error = check("0 0 25 * * *").expect_err("hour 25");
        assert!(error.contains("hour `25` must be from 0 to 23"), "{error}");
        assert_eq!(check("0 0 23 * * *"), Ok(()));
    }

    #[test]
    fn every_fields_problem_is_reported_at_once() {
        let error = check("61 0 25 32 13 Fry").expect_err("many problems");
        for part in [
            "second `61` must be from 0 to 59",
            "hour `25` must be from 0 to 23",
            "day of month `32` must be from 1 to 31",
            "month `13` must be from 1 to 12 or Jan to Dec",
            "weekday `Fry` is not a value; use 1 to 7 (1 is Sunday) or Sun to Sat",
        ] {
            assert!(error.contains(part), "{part} missing from: {error}");
        }
        assert!(!error.contains("minute"), "the minute is fine: {error}");
        assert!(error.ends_with("e.g. `0 0 8 * * Mon-Fri`"), "{error}");
    }

    #[test]
    fn steps_ranges_and_field_counts_are_checked() {
        let cases = [
            ("0 */0 * * * *", "minute step `/0` must be a number from 1 to 59"),
            ("0 0 17-9 * * *", "hour range `17-9` runs backwards"),
            ("0 0 ? * * *", "hour `?` is allowed only in the day of month and weekday fields"),
            ("0 0 8 * *", "has 5 fields, but railyard's cron starts with seconds; write `0 0 0 8 * *`"),
            ("0 0 8 * * * 2030 x", "has 8 field(s), not 6"),
            ("0 0 0 1 1 * 1969", "year `1969` must be from 1970 to 2100"),
            ("0 0 8 * * Mon-Fry", "weekday `Fry` is not a value"),
        ];
        for (expression, expected) in cases {
            let error = check(expression).expect_err(expression);
            assert!(error.contains(expected), "{expression}: {error}");
        }
    }
}
