//! HPA's stabilization window: the recommendations of the last `scale_in_cooldown`, of which
//! the highest wins, so one quiet moment in a busy stretch does not remove tasks.
//!
//! The window lives in the leader's memory. A new leader starts with an empty one and does not
//! scale in until it has watched a whole cooldown itself.

use std::collections::VecDeque;

/// Recommendations closer together than this are kept as one (their highest), which bounds
/// the window at one entry per half second however often the leader looks.
const BUCKET_MS: u64 = 500;

/// A service's recent recommendations.
#[derive(Clone, Debug, Default)]
pub struct Stabilization {
    /// When the first recommendation still accounted for was recorded.
    since_ms: Option<u64>,
    /// Buckets of recommendations, oldest first: (first time, last time, highest).
    entries: VecDeque<(u64, u64, u32)>,
}

impl Stabilization {
    /// Records `count` as recommended at `at_ms`, forgetting what is older than `keep_ms`.
    pub fn record(&mut self, at_ms: u64, count: u32, keep_ms: u64) {
        self.since_ms.get_or_insert(at_ms);
        match self.entries.back_mut() {
            Some(last) if at_ms.saturating_sub(last.0) < BUCKET_MS => *last = (last.0, at_ms, last.2.max(count)),
            _ => self.entries.push_back((at_ms, at_ms, count)),
        }
        let horizon = at_ms.saturating_sub(keep_ms);
        while self.entries.front().is_some_and(|(_, last, _)| *last < horizon) {
            self.entries.pop_front();
        }
    }

    /// The highest recommendation recorded from `from_ms` on; `None` when the window does not
    /// reach back that far (it has been watched for less time).
    pub fn highest_since(&self, from_ms: u64) -> Option<u32> {
        if self.since_ms? > from_ms {
            return None;
        }
        self.entries.iter().filter(|(_, last, _)| *last >= from_ms).map(|(_, _, c)| *c).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_recommendation_of_the_window_wins() {
        let mut w = Stabilization::default();
        for (at, count) in [(0, 5), (1_000, 3), (2_000, 2), (3_000, 2)] {
            w.record(at, count, 10_000);
        }
        assert_eq!(w.highest_since(0), Some(5));
        assert_eq!(w.highest_since(1_000), Some(3));
        assert_eq!(w.highest_since(2_000), Some(2));
    }

    #[test]
    fn a_window_watched_for_less_than_asked_has_no_answer() {
        let mut w = Stabilization::default();
        w.record(5_000, 2, 10_000);
        assert_eq!(w.highest_since(4_999), None);
        assert_eq!(w.highest_since(5_000), Some(2));
    }

    #[test]
    fn close_recommendations_share_a_bucket_and_old_ones_are_forgotten() {
        let mut w = Stabilization::default();
        w.record(0, 4, 2_000);
        w.record(100, 6, 2_000);
        w.record(200, 1, 2_000);
        assert_eq!(w.entries.len(), 1);
        assert_eq!(w.highest_since(0), Some(6));
        w.record(5_000, 1, 2_000);
        assert_eq!(w.entries.len(), 1, "{:?}", w.entries);
        assert_eq!(w.highest_since(3_000), Some(1));
    }

    #[test]
    fn a_bucket_fed_forever_does_not_keep_an_old_high() {
        let mut w = Stabilization::default();
        w.record(0, 9, 2_000);
        for at in (100..10_000).step_by(100) {
            w.record(at, 1, 2_000);
        }
        assert_eq!(w.highest_since(7_000), Some(1));
    }
}
