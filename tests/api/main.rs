//! pushlab's API tests: one test binary, each scenario run over every
//! transport through the same small client abstraction in `helpers`.

mod concurrency;
mod conformance;
mod errors;
mod hardening;
mod helpers;
mod longpoll;
mod properties;
mod restart;
mod server;
mod sessions;
mod soak;
mod timeouts;
