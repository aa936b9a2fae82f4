//! Durations as written in service.toml: an integer and a unit, e.g. `"500ms"`, `"10s"`,
//! `"2m"`, `"1h"`. Stored as milliseconds.

/// Parses `"<integer><unit>"` with unit `ms`, `s`, `m` or `h` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let allowed = "write a whole number and a unit: \"500ms\", \"10s\", \"2m\" or \"1h\"";
    let value: u64 = number.parse().map_err(|_| format!("\"{text}\" is not a duration: {allowed}"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("\"{text}\" has no unit: {allowed}")),
        other => return Err(format!("unknown unit \"{other}\" in \"{text}\": {allowed}")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("\"{text}\" is too long"))
}

/// Formats milliseconds in the largest unit that divides them exactly (`10000` -> `"10s"`).
pub fn format_duration_ms(ms: u64) -> String {
    match ms {
        0 => "0s".to_string(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
    }

    #[test]
    fn rejects_missing_or_unknown_unit() {
        assert!(parse_duration_ms("10").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("10d").unwrap_err().contains("unknown unit \"d\""));
        assert!(parse_duration_ms("s").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn formats_in_largest_exact_unit() {
        assert_eq!(format_duration_ms(10_000), "10s");
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(120_000), "2m");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }
}
