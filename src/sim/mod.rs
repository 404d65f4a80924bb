//! Loopback simulators of the provider APIs, with ground truth: used by
//! `demo`, the tests and the bench. One file or folder per provider.

pub mod authing;
pub mod bird;
pub mod github;
