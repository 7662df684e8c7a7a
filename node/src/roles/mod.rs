//! The participants' logic: coordinator election, the round state machine, and the drivers that
//! connect them to the mesh, the chain and the learning engine.
//!
//! Compute rental: [`rental`] is the provider's pure state (its listing, its rentals with
//! renters and clusters, withdrawals, the escrow maths), [`provider`] drives it inside the
//! [`runtime`] actor, [`machine`] detects the specs listed, and [`market`] is the renter's side
//! (filter, pick the cheapest, rent a cluster) used by the `quackmesh market` CLI and the API.
//! Cluster subnets: [`cluster`] computes who belongs to a cluster at a chain time (pure),
//! [`subnet`] keeps the mesh's member lists of the cluster topics up to date.

pub mod blobs;
pub mod cluster;
pub mod cluster_training;
pub mod contributor;
pub mod coordinator;
pub mod election;
pub mod infer_requester;
pub mod infer_worker;
pub mod inference;
pub mod job;
pub mod jobs;
pub mod machine;
pub mod market;
pub mod participation;
pub mod provider;
pub mod rental;
pub mod requester;
pub mod round;
pub mod runtime;
pub mod shards;
pub mod subnet;
pub mod wire;
