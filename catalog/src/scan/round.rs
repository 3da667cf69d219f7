//! One round of a reader: at most one range per partition, assigned
//! together, each followed by its cursor.

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::offsets::{PartitionCursor, PartitionRange};

/// One round's ranges, a cursor each, and what the round has seen.
pub(super) struct Round {
    pub(super) cursors: Vec<PartitionCursor>,
    /// Records taken per cursor.
    pub(super) taken: Vec<usize>,
    /// The cursor of the last record: records come in runs of one partition,
    /// so most lookups end here.
    last: usize,
    /// Whether anything came since the clock was last read.
    pub(super) progressed: bool,
    pub(super) last_progress: Instant,
    pub(super) last_error: Option<KafkaError>,
}

impl Round {
    pub(super) fn new(ranges: &[PartitionRange]) -> Self {
        Self {
            cursors: ranges.iter().copied().map(PartitionCursor::new).collect(),
            taken: vec![0; ranges.len()],
            last: 0,
            progressed: false,
            last_progress: Instant::now(),
            last_error: None,
        }
    }

    pub(super) fn cursor_of(&mut self, partition: i32) -> Option<usize> {
        if self
            .cursors
            .get(self.last)
            .is_some_and(|c| c.range().partition == partition)
        {
            return Some(self.last);
        }
        let index = self
            .cursors
            .iter()
            .position(|c| c.range().partition == partition)?;
        self.last = index;
        Some(index)
    }

    pub(super) fn is_done(&self) -> bool {
        self.cursors.iter().all(PartitionCursor::is_done)
    }

    /// Moves each cursor to its partition's fetch position (when idle: what
    /// was fetched is all taken).
    pub(super) fn reached_positions(&mut self, consumer: &BaseConsumer) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        for elem in positions.elements() {
            if let (Offset::Offset(position), Some(index)) =
                (elem.offset(), self.cursor_of(elem.partition()))
            {
                self.cursors[index].reached(position);
            }
        }
    }

    pub(super) fn taken_by_partition(&self) -> HashMap<i32, usize> {
        self.cursors
            .iter()
            .zip(&self.taken)
            .map(|(cursor, &taken)| (cursor.range().partition, taken))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Delivery;

    #[test]
    fn finds_each_partitions_cursor_whichever_came_last() {
        let mut round = Round::new(&[PartitionRange::new(3, 0, 10), PartitionRange::new(7, 5, 6)]);
        assert_eq!(round.cursor_of(7), Some(1));
        assert_eq!(round.cursor_of(7), Some(1));
        assert_eq!(round.cursor_of(3), Some(0));
        assert_eq!(round.cursor_of(4), None);
        assert_eq!(round.cursor_of(3), Some(0));
    }

    #[test]
    fn is_done_when_every_range_is_read_and_counts_by_partition() {
        let mut round = Round::new(&[PartitionRange::new(3, 0, 10), PartitionRange::new(7, 5, 6)]);
        assert!(!round.is_done());
        assert_eq!(round.cursors[1].deliver(5), Delivery::TakeLast);
        round.taken[1] += 1;
        assert!(!round.is_done());
        round.cursors[0].reached(10);
        assert!(round.is_done());
        assert_eq!(round.taken_by_partition(), HashMap::from([(3, 0), (7, 1)]));
    }
}
