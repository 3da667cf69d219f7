//! Splitting a table's partitions between compactors.

/// Which partitions one compactor handles: those with `partition % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This compactor's index, below `count`.
    pub index: u32,
    /// How many compactors split the partitions.
    pub count: u32,
}

impl Shard {
    /// Every partition.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether `partition` is this shard's.
    pub fn owns(&self, partition: i32) -> bool {
        u32::try_from(partition).is_ok_and(|p| p % self.count.max(1) == self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `i/n`, with `i < n`.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected INDEX/COUNT with INDEX < COUNT, like 0/3; got '{text}'");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            index.trim().parse::<u32>().map_err(|_| bad())?,
            count.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_partitions_and_parse_strictly() {
        let shard: Shard = "1/3".parse().unwrap();
        let owned: Vec<i32> = (0..7).filter(|&p| shard.owns(p)).collect();
        assert_eq!(owned, vec![1, 4]);
        assert!(Shard::ALL.owns(41));
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
