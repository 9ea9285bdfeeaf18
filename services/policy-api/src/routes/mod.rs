//! One file per route group, each with its handlers and its request/response types.

pub mod audit;
pub mod body;
pub mod halt;
pub mod health;
pub mod policies;
pub mod sidecars;
