//! The wire types of every twinseal HTTP API (`/v1`): the only place that
//! derives `Serialize`/`Deserialize` for the network.
