//! The route table in use: each new [`RouteTable`] from the watch channel is compiled once
//! into [`Routing`] (rules and each route's target state) and published for the requests that
//! arrive after it. Requests already in progress keep the table they started with.
//!
//! Each proxy (one per worker thread) reads the table through its own [`RouteView`]: requests
//! clone the view's `Arc`, whose count only that worker writes, and rotate the view's own
//! cursors, so two workers do not write to one cache line on every request.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};

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
}

/// One proxy's handle on the compiled table: the table, and where this proxy's target
/// rotation starts next, per route (same index as `table.routes`).
#[derive(Debug)]
pub struct Routes {
    pub routing: Arc<Routing>,
    pub cursors: Vec<AtomicUsize>,
}

impl Routes {
    fn new(routing: Arc<Routing>) -> Self {
        let cursors = routing.table.routes.iter().map(|_| AtomicUsize::new(0)).collect();
        Routes { routing, cursors }
    }
}

/// One proxy's view of the table in use, replaced when a new table is published.
#[derive(Debug)]
pub struct RouteView {
    current: Mutex<(watch::Receiver<Arc<Routing>>, Arc<Routes>)>,
}

impl RouteView {
    pub fn new(mut routing: watch::Receiver<Arc<Routing>>) -> Self {
        let routes = Arc::new(Routes::new(routing.borrow_and_update().clone()));
        RouteView { current: Mutex::new((routing, routes)) }
    }

    /// The table for a request arriving now.
    pub fn current(&self) -> Arc<Routes> {
        // A receiver and an Arc: a panic elsewhere cannot leave them half-updated.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let (routing, routes) = &mut *current;
        if routing.has_changed().unwrap_or(false) {
            *routes = Arc::new(Routes::new(routing.borrow_and_update().clone()));
        }
        Arc::clone(routes)
    }
}

impl Routing {
    pub fn new(table: RouteTable, pool: &TargetPool) -> Self {
        let (rules, errors) = Rules::new(&table.routes);
        for error in errors {
            tracing::warn!(%error, "route left out");
        }
        let targets = table.routes.iter().map(|route| pool.resolve(&route.targets)).collect();
        Routing { table, rules, targets }
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
