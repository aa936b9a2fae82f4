//! The service records of the state, by name, with the sum of their desired counts.
//!
//! The cluster's limit on desired tasks ([`super::MAX_DESIRED_TASKS`]) is checked for every
//! command that raises a count, on every server. Summing every service's count each time made
//! such a write O(services), cache misses included, under the Raft loop; the table keeps the
//! sum as records come, go and change, so the check reads one number.
//!
//! Records are shared (`Arc`) between copies of the state, as the task records are: a record
//! is copied only when one side changes it while the other still holds it. A record changes
//! through a [`ServiceMut`], which brings the sum up to date when it is dropped. Only the
//! records are stored (snapshots keep their format); the sum is taken again when a table is
//! read.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::ServiceRecord;

/// Service records by name, and the sum of their desired counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceTable {
    records: BTreeMap<String, Arc<ServiceRecord>>,
    desired_total: u64,
}

impl ServiceTable {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn get(&self, name: &str) -> Option<&ServiceRecord> {
        self.records.get(name).map(|record| &**record)
    }

    /// The records, by name.
    pub fn values(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.records.values().map(|record| &**record)
    }

    /// The record of `name` to change, copied first if a copy of the table shares it.
    pub fn get_mut(&mut self, name: &str) -> Option<ServiceMut<'_>> {
        let record = Arc::make_mut(self.records.get_mut(name)?);
        let before = record.desired_count;
        Some(ServiceMut { record, desired_total: &mut self.desired_total, before })
    }

    /// Puts `record` under its name, in place of the record there.
    pub fn insert(&mut self, record: ServiceRecord) {
        self.desired_total += u64::from(record.desired_count);
        if let Some(old) = self.records.insert(record.name.clone(), Arc::new(record)) {
            self.desired_total -= u64::from(old.desired_count);
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<ServiceRecord>> {
        let removed = self.records.remove(name)?;
        self.desired_total -= u64::from(removed.desired_count);
        Some(removed)
    }

    /// The sum of every service's desired count.
    pub fn desired_total(&self) -> u64 {
        self.desired_total
    }

    fn summed(records: BTreeMap<String, Arc<ServiceRecord>>) -> ServiceTable {
        let desired_total = records.values().map(|record| u64::from(record.desired_count)).sum();
        ServiceTable { records, desired_total }
    }
}

/// A record being changed; the table's sum follows its desired count when it is dropped.
pub struct ServiceMut<'a> {
    record: &'a mut ServiceRecord,
    desired_total: &'a mut u64,
    before: u32,
}

impl Deref for ServiceMut<'_> {
    type Target = ServiceRecord;

    fn deref(&self) -> &ServiceRecord {
        self.record
    }
}

impl DerefMut for ServiceMut<'_> {
    fn deref_mut(&mut self) -> &mut ServiceRecord {
        self.record
    }
}

impl Drop for ServiceMut<'_> {
    fn drop(&mut self) {
        *self.desired_total = *self.desired_total - u64::from(self.before) + u64::from(self.record.desired_count);
    }
}

/// Stored as the map of records by name (as before the sum was kept).
impl Serialize for ServiceTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.records.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServiceTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ServiceTable::summed(BTreeMap::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, desired_count: u32) -> ServiceRecord {
        ServiceRecord {
            name: name.into(),
            revisions: Default::default(),
            current: 1,
            desired_count,
            created_ms: 0,
            updated_ms: 0,
            events: Default::default(),
            autoscale: Default::default(),
        }
    }

    #[test]
    fn the_sum_follows_every_insert_change_and_removal() {
        let mut table = ServiceTable::default();
        table.insert(record("web", 3));
        table.insert(record("db", 2));
        assert_eq!(table.desired_total(), 5);
        table.insert(record("web", 7));
        assert_eq!(table.desired_total(), 9, "a record put again replaces its count");
        table.get_mut("db").unwrap().desired_count = 10;
        assert_eq!(table.desired_total(), 17, "a change through get_mut counts once it is done");
        table.get_mut("db").unwrap().updated_ms = 1;
        assert_eq!(table.desired_total(), 17, "a change of something else keeps the sum");
        assert_eq!(table.remove("web").map(|r| r.desired_count), Some(7));
        assert!(table.remove("web").is_none());
        assert!(table.get_mut("web").is_none());
        assert_eq!(table.desired_total(), 10);
    }

    #[test]
    fn a_copy_keeps_its_records_and_its_sum() {
        let mut table = ServiceTable::default();
        table.insert(record("web", 3));
        let copy = table.clone();
        assert!(Arc::ptr_eq(&table.records["web"], &copy.records["web"]), "a copy shares the records");
        table.get_mut("web").unwrap().desired_count = 4;
        assert_eq!((copy.get("web").unwrap().desired_count, copy.desired_total()), (3, 3));
        assert_eq!((table.get("web").unwrap().desired_count, table.desired_total()), (4, 4));
    }

    #[test]
    fn stored_as_the_records_by_name_and_summed_again_when_read() {
        let mut table = ServiceTable::default();
        table.insert(record("web", 3));
        table.insert(record("db", 2));
        let stored = serde_json::to_value(&table).unwrap();
        let by_name: BTreeMap<String, ServiceRecord> = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(by_name.keys().collect::<Vec<_>>(), ["db", "web"], "the stored form is the plain map of records");
        let read: ServiceTable = serde_json::from_value(stored).unwrap();
        assert_eq!(read, table);
        assert_eq!(read.desired_total(), 5);
    }
}
