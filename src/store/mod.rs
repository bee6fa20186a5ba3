//! Where rooms keep their logs and sessions: in memory, in a journal per
//! room (`--data-dir`), or in Redis shared by several nodes (`--redis`).
//!
//! One folder or file per backend, each implementing the core's traits
//! ([`crate::core::log_store::LogStore`], and for Redis the log and the
//! directory) and importing nothing above them: not the room registry, not
//! a room, nothing of HTTP. [`from_config`] is the one place that reads the
//! config to choose a backend; nothing else branches on which it is.

pub mod journal;
pub mod memory;
pub mod redis;

use std::io;

use crate::config::Config;
use crate::core::log_store::LogStore;

/// The store `config` asks for: Redis with `--redis`, a journal per room
/// with `--data-dir`, memory otherwise. Fails if Redis cannot be reached
/// now.
pub fn from_config(config: &Config) -> io::Result<Box<dyn LogStore>> {
    let history = config.history as usize;
    // One budget for the node: every room's window counts against its total.
    let budget = config.log_budget();
    Ok(match (&config.redis, &config.data_dir) {
        (Some(url), _) => Box::new(redis::RedisStore::connect_bounded(
            url,
            history,
            budget,
            redis::QueueLimits::default(),
        )?),
        (None, Some(dir)) => Box::new(journal::JournalStore {
            dir: dir.clone(),
            history,
            budget,
            recover: config.journal_recover,
        }),
        (None, None) => Box::new(memory::MemoryStore { history, budget }),
    })
}
