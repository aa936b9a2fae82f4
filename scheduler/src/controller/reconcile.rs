//! The [reconciler](crate::reconcile) as a controller: it names the tasks it creates
//! `SERVICE-TERM-MILLIS-SEQ`, unique across leaders (the term) and within one (the sequence).

use super::{Controller, Snapshot};
use crate::reconcile::reconcile;
use crate::state::Command;

/// Runs [`reconcile`] and numbers its new tasks.
#[derive(Default)]
pub struct Reconcile {
    task_seq: u64,
}

impl Controller for Reconcile {
    fn commands(&mut self, snapshot: &Snapshot) -> Vec<Command> {
        let (term, now_ms) = (snapshot.term, snapshot.now_ms);
        let seq = &mut self.task_seq;
        let mut new_id = |service: &str| {
            *seq += 1;
            format!("{service}-{term}-{now_ms}-{seq}")
        };
        reconcile(&snapshot.state, now_ms, &mut new_id)
    }
}
