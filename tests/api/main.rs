//! pushlab's API tests: one test binary, each scenario run over every
//! transport through the same small client abstraction in `helpers`.

mod budgets;
mod classroom;
mod concurrency;
mod conformance;
mod edges;
mod errors;
mod hardening;
mod helpers;
mod http1_listener;
mod journal_damage;
mod layers;
mod longpoll;
mod metrics;
mod properties;
mod redis;
mod restart;
mod rooms;
mod server;
mod sessions;
mod signals;
mod soak;
mod timeouts;
mod tls;
mod walkthrough;
mod webtransport;
mod ws_raw;
