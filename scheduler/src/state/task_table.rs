//! The task records of the state, by id, with indexes by service and by node.
//!
//! Everything that looks at one service's tasks (the reconciler for every service on every
//! round, the route table, `get services`) or at one node's (each agent's assignment stream,
//! after every applied entry) reads them through an index: in O(their tasks) instead of a scan
//! of every task in the cluster, which made a round over every service O(services x tasks) and
//! the assignment streams O(nodes x tasks) per entry. Only the records are stored (snapshots
//! keep their format); the indexes are rebuilt when a state is read.
//!
//! A task's service and node change only when its record is put again ([`TaskTable::insert`]):
//! records changed in place (`get_mut`, `values_mut`) must keep both.
//!
//! The leader's controllers work on a copy of the state, taken again after each change, so
//! records, ids and each service's and node's set of ids are shared (`Arc`): a copy of the
//! table copies pointers, and a record or a set is copied only when one side changes it while
//! the other still holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Task;

/// A task id, in the table and its indexes: shared, so that copying the table copies no id
/// strings.
type Id = Arc<str>;

/// Task records by id, and the ids of each service's and each node's tasks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskTable {
    by_id: BTreeMap<Id, Arc<Task>>,
    by_service: BTreeMap<String, Arc<BTreeSet<Id>>>,
    /// Pending tasks (node 0) included.
    by_node: BTreeMap<u64, Arc<BTreeSet<Id>>>,
}

impl TaskTable {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.by_id.get(id).map(|task| &**task)
    }

    /// The record to change in place; its `service` and `node_id` must stay as they are.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.by_id.get_mut(id).map(Arc::make_mut)
    }

    pub fn values(&self) -> impl Iterator<Item = &Task> {
        self.by_id.values().map(|task| &**task)
    }

    /// Every record to change in place; their `service` and `node_id` must stay as they are.
    /// Each record is copied first if a copy of the table shares it, whether it is then changed
    /// or not: to change a few, find them through an index (`change_of_service`).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.by_id.values_mut().map(Arc::make_mut)
    }

    /// The names of the services that have tasks (a deleted service's too, while it has some).
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.by_service.keys().map(String::as_str)
    }

    /// The tasks of `service`, by id.
    pub fn of_service<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_service.get(service).into_iter().flat_map(|ids| ids.iter()).filter_map(|id| self.get(id))
    }

    /// The tasks placed on node `node_id` (0: the pending ones), by id.
    pub fn on_node(&self, node_id: u64) -> impl Iterator<Item = &Task> {
        self.by_node.get(&node_id).into_iter().flat_map(|ids| ids.iter()).filter_map(|id| self.get(id))
    }

    /// Changes each record of `service` in place (found through the index); their `service`
    /// and `node_id` must stay as they are.
    pub fn change_of_service(&mut self, service: &str, mut change: impl FnMut(&mut Task)) {
        let Some(ids) = self.by_service.get(service) else {
            return;
        };
        for id in ids.iter() {
            if let Some(task) = self.by_id.get_mut(&**id) {
                change(Arc::make_mut(task));
            }
        }
    }

    /// Puts `task` under its id, in place of the record there.
    pub fn insert(&mut self, task: Task) {
        let (id, service, node): (Id, _, _) = (task.id.as_str().into(), task.service.clone(), task.node_id);
        if let Some(old) = self.by_id.insert(id.clone(), Arc::new(task)) {
            if old.service != service {
                unindex(&mut self.by_service, &old.service, &id);
            }
            if old.node_id != node {
                unindex(&mut self.by_node, &old.node_id, &id);
            }
        }
        Arc::make_mut(self.by_service.entry(service).or_default()).insert(id.clone());
        Arc::make_mut(self.by_node.entry(node).or_default()).insert(id);
    }

    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let task = self.by_id.remove(id)?;
        unindex(&mut self.by_service, &task.service, id);
        unindex(&mut self.by_node, &task.node_id, id);
        Some(Arc::unwrap_or_clone(task))
    }

    /// A table of `by_id` with its indexes built.
    fn indexed(by_id: BTreeMap<Id, Arc<Task>>) -> TaskTable {
        let mut table = TaskTable { by_id, ..TaskTable::default() };
        for (id, task) in &table.by_id {
            let id = Arc::clone(id);
            Arc::make_mut(table.by_service.entry(task.service.clone()).or_default()).insert(id.clone());
            Arc::make_mut(table.by_node.entry(task.node_id).or_default()).insert(id);
        }
        table
    }
}

/// Takes `id` out of `key`'s entry of `index`, and the entry out once it is empty.
fn unindex<K: Ord>(index: &mut BTreeMap<K, Arc<BTreeSet<Id>>>, key: &K, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        if ids.len() == 1 && ids.contains(id) {
            // Its last id: the entry goes, with no copy of a set another table may share.
            index.remove(key);
            return;
        }
        Arc::make_mut(ids).remove(id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl FromIterator<Task> for TaskTable {
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Self {
        let mut table = TaskTable::default();
        for task in tasks {
            table.insert(task);
        }
        table
    }
}

/// Stored as the map of records by id (as before the index existed).
impl Serialize for TaskTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_id.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TaskTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(TaskTable::indexed(BTreeMap::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TaskState;

    fn task(id: &str, service: &str) -> Task {
        Task { service: service.into(), ..crate::test_fixtures::task(id, 0, TaskState::Pending) }
    }

    fn on(node_id: u64, t: Task) -> Task {
        Task { node_id, ..t }
    }

    fn ids<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<&'a str> {
        tasks.map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn a_services_tasks_come_from_the_index_and_follow_every_change() {
        let mut table: TaskTable =
            [task("web-1", "web"), task("web-a-1", "web-a"), task("web-2", "web"), task("db-1", "db")].into_iter().collect();
        assert_eq!(ids(table.of_service("web")), ["web-1", "web-2"], "a service whose name prefixes another's gets only its own");
        assert_eq!(ids(table.of_service("web-a")), ["web-a-1"]);
        assert_eq!(ids(table.of_service("none")), Vec::<&str>::new());
        table.remove("web-1");
        assert_eq!(ids(table.of_service("web")), ["web-2"]);
        // A record put again under its id with another service moves.
        table.insert(task("web-2", "db"));
        assert_eq!(ids(table.of_service("web")), Vec::<&str>::new());
        assert_eq!(ids(table.of_service("db")), ["db-1", "web-2"]);
        table.change_of_service("db", |t| t.message = "seen".into());
        assert!(table.values().filter(|t| t.service == "db").all(|t| t.message == "seen"));
        assert_eq!(table.get("web-a-1").unwrap().message, "", "another service's tasks are untouched");
        assert_eq!(table.len(), 3);
        assert!(table.remove("gone").is_none());
    }

    #[test]
    fn a_nodes_tasks_come_from_the_index_and_move_when_placed() {
        let mut table: TaskTable =
            [on(1, task("a-1", "a")), task("a-2", "a"), on(2, task("b-1", "b")), on(1, task("b-2", "b"))].into_iter().collect();
        assert_eq!(ids(table.on_node(1)), ["a-1", "b-2"]);
        assert_eq!(ids(table.on_node(0)), ["a-2"], "pending tasks are node 0's");
        // Placing a pending task moves it.
        table.insert(on(2, task("a-2", "a")));
        assert_eq!(ids(table.on_node(0)), Vec::<&str>::new());
        assert_eq!(ids(table.on_node(2)), ["a-2", "b-1"]);
        table.remove("b-1");
        assert_eq!(ids(table.on_node(2)), ["a-2"]);
        assert_eq!(ids(table.on_node(9)), Vec::<&str>::new());
        let read: TaskTable = serde_json::from_value(serde_json::to_value(&table).unwrap()).unwrap();
        assert_eq!(read, table, "both indexes are rebuilt when read");
    }

    #[test]
    fn a_copy_shares_its_records_until_one_side_changes_one() {
        let mut table: TaskTable = [task("a-1", "a"), task("a-2", "a"), task("b-1", "b")].into_iter().collect();
        let copy = table.clone();
        assert!(Arc::ptr_eq(&table.by_id["a-1"], &copy.by_id["a-1"]), "a copy shares the records");
        assert!(Arc::ptr_eq(&table.by_service["a"], &copy.by_service["a"]), "and the index sets");
        table.get_mut("a-1").unwrap().message = "changed".into();
        table.change_of_service("b", |t| t.message = "changed too".into());
        table.values_mut().filter(|t| t.id == "a-2").for_each(|t| t.message = "and this".into());
        assert!(copy.values().all(|t| t.message.is_empty()), "the copy keeps its records: {copy:?}");
        assert_eq!(table.values().map(|t| t.message.as_str()).collect::<Vec<_>>(), ["changed", "and this", "changed too"]);
        let removed = table.remove("a-1").unwrap();
        assert_eq!((removed.message.as_str(), copy.get("a-1").unwrap().message.as_str()), ("changed", ""));
        table.insert(task("c-1", "c"));
        table.remove("b-1");
        assert_eq!(ids(copy.of_service("a")), ["a-1", "a-2"], "the copy's index keeps its ids");
        assert_eq!(ids(copy.of_service("b")), ["b-1"]);
        assert_eq!(ids(copy.on_node(0)), ["a-1", "a-2", "b-1"]);
        assert_eq!(ids(table.of_service("a")), ["a-2"]);
        assert_eq!(ids(table.on_node(0)), ["a-2", "c-1"]);
        assert!(!table.by_service.contains_key("b"), "an emptied set leaves the index");
    }

    #[test]
    fn stored_as_the_records_by_id_and_indexed_again_when_read() {
        let table: TaskTable = [task("b-1", "b"), task("a-1", "a"), task("a-2", "a")].into_iter().collect();
        let stored = serde_json::to_value(&table).unwrap();
        let by_id: BTreeMap<String, Task> = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(by_id.keys().collect::<Vec<_>>(), ["a-1", "a-2", "b-1"], "the stored form is the plain map of records");
        let read: TaskTable = serde_json::from_value(stored).unwrap();
        assert_eq!(read, table, "the indexes are rebuilt when read");
        assert_eq!(ids(read.of_service("a")), ["a-1", "a-2"]);
    }
}
