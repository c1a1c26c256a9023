//! The Redis broker: fan-out across nodes.

pub mod sequencer;
pub mod wire;
