//! The participants' logic: coordinator election, the round state machine, and the drivers that
//! connect them to the mesh, the chain and the learning engine.

pub mod election;
pub mod job;
pub mod jobs;
pub mod participation;
pub mod round;
pub mod wire;
