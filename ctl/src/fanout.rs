//! Running one operation on many nodes at once.

use std::future::Future;
use std::sync::Arc;

use cairn_api::machine::machine_service_client::MachineServiceClient;
use futures_util::future::join_all;
use rustls::ClientConfig;
use tonic::transport::Channel;

use crate::connect::{connect, connect_bound, ChannelBinding, NodeAddress};
use crate::errors::describe;

/// The client of one node.
pub type Client = MachineServiceClient<Channel>;

/// The nodes of an invocation and how to reach them.
#[derive(Clone)]
pub struct Targets {
    /// The nodes, in the order given.
    pub nodes: Vec<NodeAddress>,
    /// TLS settings for all of them.
    pub tls: Arc<ClientConfig>,
    /// Whether those settings present a client certificate (not with `--insecure`).
    pub client_auth: bool,
}

/// One node's outcome: its label and the result or the error in words.
pub type NodeResult<T> = (String, Result<T, String>);

impl Targets {
    /// Connects to every node concurrently and runs `op` on each (with the node's label);
    /// results come back in the nodes' order.
    pub async fn each<T, F, Fut>(&self, op: F) -> Vec<NodeResult<T>>
    where
        F: Fn(String, Client) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        self.each_bound(|label, client, _| op(label, client)).await
    }

    /// Runs `op` on the one node given, for commands that act on a single node (`read`,
    /// `upgrade`); an error, naming `command`, when several were given. `op` may consume
    /// what it captures (a file to send, say), as it runs once.
    pub async fn one<T, F, Fut>(&self, command: &str, op: F) -> anyhow::Result<NodeResult<T>>
    where
        F: FnOnce(String, Client) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let [node] = self.nodes.as_slice() else {
            anyhow::bail!("{command} takes exactly one node (got {})", self.nodes.len());
        };
        let label = node.to_string();
        let result = match connect(node, self.tls.clone()).await {
            Ok(client) => op(label.clone(), client).await,
            Err(e) => Err(e),
        };
        Ok((label, result.map_err(|e| describe(&e, self.client_auth))))
    }

    /// As [`Targets::each`], handing `op` the TLS session's channel binding too.
    pub async fn each_bound<T, F, Fut>(&self, op: F) -> Vec<NodeResult<T>>
    where
        F: Fn(String, Client, ChannelBinding) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let op = &op;
        join_all(self.nodes.iter().map(|node| async move {
            let label = node.to_string();
            let result = match connect_bound(node, self.tls.clone()).await {
                Ok((client, binding)) => op(label.clone(), client, binding).await,
                Err(e) => Err(e),
            };
            (label, result.map_err(|e| describe(&e, self.client_auth)))
        }))
        .await
    }
}
