//! The agent daemon: checks its configuration, opens what the node acts through (image store,
//! task driver, node network, the agent API listener, the ingress), then runs, until shutdown,
//! the [sessions](super::session) with the servers beside the agent API (task logs), the
//! ingress and the image collector. Tasks keep running after it returns.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use runtime::image::{ImageService, ImageServiceOptions};
use tokio::sync::watch;

use super::AgentConfig;
use super::image_gc::ImageGc;
use super::session::{Node, serve};
use super::task_jobs::TaskHost;
use crate::error::{AgentError, Result};
use crate::network::NodeNetwork;
use crate::task::{DriverConfig, TaskDriver};

/// Runs the agent until `shutdown` completes. Tasks keep running after it returns.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    if config.servers.is_empty() {
        return Err(AgentError::Spec("no server address given (--server HOST:PORT)".into()));
    }
    config.image_gc.validate().map_err(AgentError::Spec)?;
    if config.max_log_follows == 0 {
        return Err(AgentError::Spec("--max-log-follows must be at least 1".into()));
    }
    // Before anything is opened or reaped: a second agent on the same resources is refused.
    let data_dir = super::claims::canonical_data_dir(&config.data_dir)?;
    let network_names = config.network.as_ref().map(|n| (n.bridge.as_str(), n.nft_table.as_str(), n.netns_dir.as_path()));
    let claims =
        super::claims::claims_of(&data_dir, &config.cgroup_parent, &config.userns_ids, super::claims::network_namespace(), network_names);
    let _claimed = super::claims::claim(Path::new(super::claims::CLAIMS_DIR), &claims)?;
    let resolved =
        super::credentials::resolve(&config.credentials, &config.data_dir, &config.name, &config.servers, &config.address).await?;
    let connections = resolved.transport;
    let renew = async {
        match resolved.renewal {
            Some(renewal) => renewal.run(connections.clone()).await,
            None => std::future::pending().await,
        }
    };
    let mut image_options = ImageServiceOptions { max_image_bytes: config.max_image_bytes, ..Default::default() };
    image_options.client.insecure_registries = config.insecure_registries.clone();
    let images = Arc::new(ImageService::open(&config.data_dir, image_options)?);
    let mut image_gc = ImageGc::new(images.clone(), config.image_gc);
    let image_lock = image_gc.lock();
    let (wanted_images, mut wanted_rx) = watch::channel::<Option<HashSet<String>>>(None);
    // Until the first assignments arrive the node does not know what it will run: no
    // collection before then.
    let collect_images = async move {
        let mut tick = tokio::time::interval(image_gc.policy().interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(wanted) = wanted_rx.borrow_and_update().clone() else { continue };
            image_gc.collect(&wanted).await;
        }
    };
    let driver = TaskDriver::new(
        DriverConfig {
            runtime_binary: config.runtime_binary.clone(),
            state_root: config.data_dir.join("runtime"),
            tasks_dir: config.data_dir.join("tasks"),
            cgroup_parent: config.cgroup_parent.clone(),
            max_log_bytes: 10 * 1024 * 1024,
            id_pool: config.userns_ids,
            id_ranges_file: config.data_dir.join("userns").join("ranges.json"),
        },
        images,
    )?;
    let driver = Arc::new(driver);
    let network = match &config.network {
        Some(net) => Some(Arc::new(NodeNetwork::new(net.clone()).await?)),
        None => None,
    };
    let api_listen = config.api_listen.clone().unwrap_or_else(|| crate::logs::default_api_listen(&config.address));
    let api =
        tokio::net::TcpListener::bind(&api_listen).await.map_err(|e| AgentError::Api(format!("cannot listen on {api_listen}: {e}")))?;
    let bound = api.local_addr().map_err(|e| AgentError::Api(e.to_string()))?;
    let api_address = crate::logs::advertised_address(bound, &config.address);
    tracing::info!(%bound, advertised = api_address, "agent API (task logs) listening");
    let (ingress, serve_ingress) = match &config.ingress {
        Some(settings) => {
            let bound = crate::ingress_node::bind(settings).await?;
            tracing::info!(listen = ?bound.local_addr(), "ingress listening");
            let (handle, served) = crate::ingress_node::start(bound, config.servers.clone(), connections.clone())?;
            (Some(handle), Some(served))
        }
        None => (None, None),
    };
    let serve_ingress = async {
        match serve_ingress {
            Some(served) => served.await,
            None => std::future::pending().await,
        }
    };
    let node = Node {
        host: TaskHost::new(driver.clone(), network, image_lock),
        api_address,
        connections: connections.clone(),
        ingress,
        wanted_images: Arc::new(wanted_images),
    };
    tokio::select! {
        () = shutdown => Ok(()),
        served = serve_ingress => served,
        () = collect_images => Ok(()),
        () = renew => Ok(()),
        () = serve(&config, node) => Ok(()),
        served = crate::logs::serve(&connections, api, driver, config.max_log_follows) => served.and(Err(AgentError::Api("stopped serving".into()))),
    }
}
