//! The route table in use: each new [`RouteTable`] from the watch channel is compiled once
//! into [`Routing`] (rules, each route's target state and a rotation cursor per route) and
//! published for the requests that arrive after it. Requests already in progress keep the
//! table they started with.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::sync::watch;

use crate::route_table::RouteTable;
use crate::rules::Rules;
use crate::targets::{Target, TargetPool};

/// One compiled route table.
#[derive(Debug)]
pub struct Routing {
    pub table: RouteTable,
    pub rules: Rules,
    /// Per route (same index as `table.routes`): the state of its targets, in the same order.
    pub targets: Vec<Vec<Arc<Target>>>,
    /// Per route (same index as `table.routes`): where the target rotation starts next.
    pub cursors: Vec<AtomicUsize>,
}

impl Routing {
    pub fn new(table: RouteTable, pool: &TargetPool) -> Self {
        let (rules, errors) = Rules::new(&table.routes);
        for error in errors {
            tracing::warn!(%error, "route left out");
        }
        let targets = table.routes.iter().map(|route| pool.resolve(&route.targets)).collect();
        let cursors = table.routes.iter().map(|_| AtomicUsize::new(0)).collect();
        Routing { table, rules, targets, cursors }
    }
}

/// Compiles the current table, then every new one, until the sender goes away (the last table
/// stays in use). Returns the receiver requests read the compiled table from.
pub fn follow(mut routes: watch::Receiver<RouteTable>, pool: Arc<TargetPool>) -> watch::Receiver<Arc<Routing>> {
    let first = Routing::new(routes.borrow_and_update().clone(), &pool);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        while routes.changed().await.is_ok() {
            let table = routes.borrow_and_update().clone();
            let targets: Vec<_> = table.routes.iter().flat_map(|r| r.targets.iter().copied()).collect();
            tracing::debug!(routes = table.routes.len(), targets = targets.len(), "route table changed");
            // The previous table is released here (requests still using it keep it alive).
            if tx.send(Arc::new(Routing::new(table, &pool))).is_err() {
                break;
            }
            pool.retain(&targets);
        }
    });
    rx
}
