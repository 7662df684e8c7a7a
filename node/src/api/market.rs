//! Compute-marketplace endpoints, served by every node connected to a chain:
//!
//! - `GET /api/market`: every machine on ComputeMarketplace with its specs, price and whether
//!   it is listed and rented (read from the chain).
//! - `GET /api/clusters/{id}` (a cluster id): a rented cluster's renter and machines (machine id, rental id,
//!   provider, PeerId, multiaddr, active), read from the chain.
//! - `GET /api/clusters/{id}/mesh`: this node's view of the cluster's subnet: whether it is a
//!   member, the member PeerIds its mesh enforces, and the notes it received on the topic.
//! - `POST /api/clusters/{id}/notes` (`{"text": ..}`): publishes a note on the cluster topic
//!   (refused here when this node left the cluster; rejected by members when it never was one).
//! - `PUT /api/clusters/{id}/blobs/{blob}`: makes a stored blob private to the cluster's
//!   members on this node, following the member list.
//! - `GET /api/provider`: this node's listing and the rentals of its machine, with what was
//!   withdrawn (the provider's stored state), and which are active at the chain's time.

use std::sync::Arc;

use alloy::primitives::U256;
use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{ApiError, blocking},
    chain,
    hash::Hash32,
    mesh::{Client, message::GossipBody, topics::Topic},
    roles::{
        market::{self, MachineOffer, RentedMachine, u128_text},
        provider,
        runtime::{Command, RolesHandle},
        subnet::ClusterMeshView,
    },
    store::Db,
};

/// What the marketplace routes share.
#[derive(Debug, Clone)]
pub struct MarketState {
    /// The store.
    pub db: Db,
    /// The chain, with this node's key.
    pub chain: chain::Client,
    /// Whether this node runs the provider role.
    pub providing: bool,
    /// The mesh.
    pub mesh: Client,
    /// The roles' actor.
    pub roles: RolesHandle,
}

/// The marketplace routes.
pub fn router(state: MarketState) -> Router {
    Router::new()
        .route("/api/market", get(list))
        .route("/api/clusters/{id}", get(cluster))
        .route("/api/clusters/{id}/mesh", get(cluster_mesh))
        .route("/api/clusters/{id}/notes", post(cluster_note))
        .route("/api/clusters/{id}/blobs/{blob}", put(cluster_blob))
        .route("/api/provider", get(provider_view))
        .with_state(Arc::new(state))
}

fn upstream(e: impl std::fmt::Display) -> ApiError {
    ApiError::Upstream(e.to_string())
}

async fn list(State(s): State<Arc<MarketState>>) -> Result<Json<Vec<MachineOffer>>, ApiError> {
    Ok(Json(market::offers(&s.chain).await.map_err(upstream)?))
}

/// Answer of `GET /api/clusters/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The cluster.
    pub cluster_id: u64,
    /// Who rented it (0x-hex).
    pub renter: String,
    /// Whether any of its rentals runs.
    pub active: bool,
    /// Its machines, in rental order.
    pub members: Vec<RentedMachine>,
}

/// A cluster read from the chain (`None`: no such cluster).
pub async fn cluster_view(
    chain: &chain::Client,
    cluster_id: u64,
) -> Result<Option<ClusterView>, ApiError> {
    if cluster_id == 0 {
        return Ok(None);
    }
    let renter = chain
        .cluster_renter(U256::from(cluster_id))
        .await
        .map_err(upstream)?;
    if renter.is_zero() {
        return Ok(None);
    }
    let members = market::cluster_members(chain, cluster_id)
        .await
        .map_err(upstream)?;
    Ok(Some(ClusterView {
        cluster_id,
        renter: format!("{renter:#x}"),
        active: members.iter().any(|m| m.active),
        members,
    }))
}

async fn cluster(
    State(s): State<Arc<MarketState>>,
    Path(id): Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    let cluster_id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a cluster id")))?;
    cluster_view(&s.chain, cluster_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no cluster {cluster_id}")))
}

fn cluster_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a cluster id")))
}

fn stopped() -> ApiError {
    ApiError::Internal("the roles have stopped".into())
}

async fn cluster_mesh(
    State(s): State<Arc<MarketState>>,
    Path(id): Path<String>,
) -> Result<Json<ClusterMeshView>, ApiError> {
    let cluster_id = cluster_id(&id)?;
    let (reply, rx) = tokio::sync::oneshot::channel();
    if !s
        .roles
        .send(Command::ClusterMesh { cluster_id, reply })
        .await
    {
        return Err(stopped());
    }
    rx.await
        .map_err(|_| stopped())?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("cluster {cluster_id} not followed here")))
}

/// Body of `POST /api/clusters/{id}/notes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoteBody {
    /// The note.
    pub text: String,
}

async fn cluster_note(
    State(s): State<Arc<MarketState>>,
    Path(id): Path<String>,
    Json(body): Json<NoteBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topic =
        Topic::cluster(cluster_id(&id)?).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let message_id = s
        .mesh
        .publish(&topic, &GossipBody::Note { text: body.text })
        .await?;
    Ok(Json(
        serde_json::json!({ "message_id": message_id.to_string() }),
    ))
}

async fn cluster_blob(
    State(s): State<Arc<MarketState>>,
    Path((id, blob)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster_id = cluster_id(&id)?;
    let blob: Hash32 = blob
        .parse()
        .map_err(|e: <Hash32 as std::str::FromStr>::Err| ApiError::BadRequest(e.to_string()))?;
    let (reply, rx) = tokio::sync::oneshot::channel();
    let cmd = Command::ShareBlob {
        cluster_id,
        blob,
        reply,
    };
    if !s.roles.send(cmd).await {
        return Err(stopped());
    }
    if rx.await.map_err(|_| stopped())? {
        Ok(Json(serde_json::json!({ "shared": true })))
    } else {
        Err(ApiError::NotFound(format!(
            "this node is not a member of cluster {cluster_id}"
        )))
    }
}

/// The listing in `GET /api/provider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListingView {
    /// Machine id.
    pub machine_id: u64,
    /// Listed multiaddr.
    pub multiaddr: String,
    /// Price per hour, base units.
    #[serde(with = "u128_text")]
    pub price_per_hour: u128,
    /// Still listed.
    pub listed: bool,
}

/// A rental in `GET /api/provider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RentalView {
    /// Rental id.
    pub rental_id: u64,
    /// Machine id.
    pub machine_id: u64,
    /// Renter (0x-hex).
    pub renter: String,
    /// Cluster (0: none).
    pub cluster_id: u64,
    /// Start, unix seconds (chain time).
    pub start: u64,
    /// Scheduled end.
    pub end: u64,
    /// Early end, if any.
    pub ended_at: Option<u64>,
    /// Escrowed, base units.
    #[serde(with = "u128_text")]
    pub amount: u128,
    /// Refunded to the renter, base units.
    #[serde(with = "u128_text")]
    pub refund: u128,
    /// Withdrawn by the provider, base units.
    #[serde(with = "u128_text")]
    pub withdrawn: u128,
    /// Running at the chain's time.
    pub active: bool,
}

/// Answer of `GET /api/provider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderView {
    /// Whether this node runs the provider role.
    pub providing: bool,
    /// The chain's latest block time (what `active` is judged at).
    pub chain_time: u64,
    /// The listing, once made.
    pub listing: Option<ListingView>,
    /// Everything withdrawn, base units.
    #[serde(with = "u128_text")]
    pub withdrawn_total: u128,
    /// The rentals, oldest first.
    pub rentals: Vec<RentalView>,
}

async fn provider_view(State(s): State<Arc<MarketState>>) -> Result<Json<ProviderView>, ApiError> {
    let db = s.db.clone();
    let deployment = s.chain.deployment().clone();
    let state = blocking(move || provider::load(&db, &deployment)).await?;
    let now = s.chain.block_timestamp().await.map_err(upstream)?;
    let Some(state) = state else {
        return Ok(Json(ProviderView {
            providing: s.providing,
            chain_time: now,
            listing: None,
            withdrawn_total: 0,
            rentals: Vec::new(),
        }));
    };
    Ok(Json(ProviderView {
        providing: s.providing,
        chain_time: now,
        listing: state.listing.as_ref().map(|l| ListingView {
            machine_id: l.machine_id,
            multiaddr: l.multiaddr.clone(),
            price_per_hour: l.price_per_hour,
            listed: l.listed,
        }),
        withdrawn_total: state.withdrawn_total,
        rentals: state
            .rentals
            .values()
            .map(|r| RentalView {
                rental_id: r.rental_id,
                machine_id: r.machine_id,
                renter: format!("{:#x}", alloy::primitives::Address::from(r.renter)),
                cluster_id: r.cluster_id,
                start: r.start,
                end: r.end,
                ended_at: r.ended_at,
                amount: r.amount,
                refund: r.refund,
                withdrawn: r.withdrawn,
                active: r.is_active(now),
            })
            .collect(),
    }))
}
