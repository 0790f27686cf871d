//! Code generated from `proto/herald/v1` by `build.rs`: messages, clients and
//! servers of package `herald.v1`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("herald.v1");

/// The encoded descriptors, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/herald_descriptor.bin"));
