//! The store double the tests use: the simulator's map, with a store's
//! rules checked (entries only grow within an object's life).

pub use hummer_channel::sim::MemoryStore as MemStore;
