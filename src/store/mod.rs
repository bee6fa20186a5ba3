//! Where rooms keep their logs and sessions: in memory, in a journal per
//! room (`--data-dir`), or in Redis shared by several nodes (`--redis`).
//! Each backend implements the core's traits and imports nothing above them.

pub mod journal;
pub mod memory;
pub mod redis;
