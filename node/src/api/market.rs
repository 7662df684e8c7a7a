//! Compute-marketplace endpoints, served by every node connected to a chain:
//!
//! - `GET /api/market`: every machine on ComputeMarketplace with its specs, price and whether
//!   it is listed and rented (read from the chain).
//! - `GET /api/clusters/{id}` (a cluster id): a rented cluster's renter and machines (machine id, rental id,
//!   provider, PeerId, multiaddr, active), read from the chain.
//! - `GET /api/provider`: this node's listing and the rentals of its machine, with what was
//!   withdrawn (the provider's stored state), and which are active at the chain's time.

use std::sync::Arc;

use alloy::primitives::U256;
use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{ApiError, blocking},
    chain,
    roles::{
        market::{self, MachineOffer, RentedMachine, u128_text},
        provider,
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
}

/// The marketplace routes.
pub fn router(state: MarketState) -> Router {
    Router::new()
        .route("/api/market", get(list))
        .route("/api/clusters/{id}", get(cluster))
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
