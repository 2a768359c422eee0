//! Producers of desired state other than the local config file. A source hands documents to the
//! control core, which validates and applies them like a config file: a source is never a
//! second path to the maps.
//!
//! This layer sits beside `dataplane` and `state`: it may import `fleet`, `model` and `common`,
//! never `control`, `api`, `cli` or `config`.

pub mod etcd;
