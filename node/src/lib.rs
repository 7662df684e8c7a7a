//! QuackMesh: a decentralized federated-learning network.
//!
//! One binary, `quackmesh`, is every participant: providers rent out machines, contributors
//! train on private data, an elected coordinator aggregates updates, and requesters pay for jobs.
//! Money lives in contracts on DuckChain; weights travel peer to peer over libp2p.
//!
//! # Bird's eye view
//!
//! - [`cbor`], [`hash`]: the wire encoding (size-capped CBOR) and 32-byte content hashes.
//! - [`store`]: the node's durable state (redb), typed trees per kind of record.
//! - [`chain`]: the contracts on DuckChain (alloy bindings), one transaction sender, one event
//!   watcher, EIP-712 update attestations, network settings and deployments.
//! - [`learn`]: the candle learning engine: MNIST data, models, training, aggregation.
//! - [`mesh`]: the libp2p swarm (gossip, DHT, blob exchange, RPC) behind a cloneable client.
//! - [`node`]: the assembled runtime (`Node::start`), [`config`]: its layered configuration.
//! - [`api`]: the HTTP API every node serves; [`metrics`]: the shared Prometheus registry.
//! - [`roles`]: election, the round state machine, contributors, coordinators, requesters,
//!   providers (listing, rentals, rent withdrawal) and the renter's marketplace calls.
//!
//! Protocol logic (election, rounds, aggregation, escrow maths) is kept free of I/O so that it
//! can be unit-tested; the mesh and chain layers feed it events.

pub mod api;
pub mod cbor;
pub mod chain;
pub mod config;
pub mod hash;
pub mod learn;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod roles;
pub mod store;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
