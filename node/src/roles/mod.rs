//! The participants' logic: coordinator election, the round state machine, and the drivers that
//! connect them to the mesh, the chain and the learning engine.

pub mod blobs;
pub mod contributor;
pub mod coordinator;
pub mod election;
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
pub mod wire;
