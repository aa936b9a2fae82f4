//! Ages for people: "12s", "5m", "3h", "2d" since a unix-ms timestamp, as kubectl's AGE column
//! shows them. Tables use it; `-o json` keeps the exact unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// The age of `unix_ms` now, e.g. `"42s"`; `"-"` for an unset (0) timestamp.
pub fn age(unix_ms: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    age_at(unix_ms, now)
}

/// The age of `unix_ms` at `now_ms` (pure, for tests). A timestamp in the future (clock skew
/// between servers and this machine) reads as `0s`.
pub fn age_at(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let secs = now_ms.saturating_sub(unix_ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// How long until `unix_ms`, e.g. `"in 17s"`; `"now"` when it has passed (or is unset).
pub fn until(unix_ms: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    until_at(unix_ms, now)
}

/// [`until`] at `now_ms` (pure, for tests); rounds up, so "in 1s" is never already past.
pub fn until_at(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms <= now_ms {
        return "now".into();
    }
    format!("in {}", age_at(now_ms, unix_ms + 999))
}

#[cfg(test)]
mod tests {
    use super::{age_at, until_at};

    #[test]
    fn times_to_come_round_up() {
        let now = 1_800_000_000_000;
        assert_eq!(until_at(0, now), "now");
        assert_eq!(until_at(now - 1, now), "now");
        assert_eq!(until_at(now + 1, now), "in 1s");
        assert_eq!(until_at(now + 17_000, now), "in 17s");
        assert_eq!(until_at(now + 300_000, now), "in 5m");
    }

    #[test]
    fn ages_round_down_to_the_largest_readable_unit() {
        let now = 1_800_000_000_000;
        assert_eq!(age_at(0, now), "-");
        assert_eq!(age_at(now + 5_000, now), "0s");
        assert_eq!(age_at(now - 42_500, now), "42s");
        assert_eq!(age_at(now - 119_000, now), "119s");
        assert_eq!(age_at(now - 5 * 60_000, now), "5m");
        assert_eq!(age_at(now - 3 * 3_600_000, now), "3h");
        assert_eq!(age_at(now - 3 * 86_400_000, now), "3d");
    }
}
