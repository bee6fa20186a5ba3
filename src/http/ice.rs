//! The ICE servers a page is told by `GET /config`, with TURN credentials
//! minted for it when `--turn-secret` is set.
//!
//! Minted credentials follow the TURN REST API scheme that coturn's
//! `use-auth-secret` checks: the username is `<expiry>:pushlab`, the expiry
//! in Unix seconds, and the password is the base64 of its HMAC-SHA1 under
//! the shared secret. A TURN server refuses them once the expiry has
//! passed, so what a page was told stops working by itself; no static
//! password is handed out. Knows nothing of HTTP beyond the config.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha1::Sha1;

use crate::config::{Config, IceServer};

/// The part of a minted username after the expiry.
const TURN_USER: &str = "pushlab";

/// The ICE servers for a page asking at `now`: each TURN server without
/// static credentials gets ones that expire `--turn-ttl` seconds later.
pub fn for_page(config: &Config, now: SystemTime) -> Vec<IceServer> {
    let expiry = now
        .checked_add(Duration::from_secs(config.turn_ttl))
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_secs());
    config
        .ice_servers
        .iter()
        .map(|server| match (&config.turn_secret, &server.username) {
            (Some(secret), None) if server.is_turn() => {
                let (username, credential) = turn_credentials(secret, expiry);
                IceServer {
                    urls: server.urls.clone(),
                    username: Some(username),
                    credential: Some(credential),
                }
            }
            _ => server.clone(),
        })
        .collect()
}

/// A username valid until `expiry` (Unix seconds) and its password under
/// `secret`.
fn turn_credentials(secret: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{TURN_USER}");
    // HMAC takes a key of any length; this cannot fail.
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts a key of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_password_is_the_base64_hmac_sha1_of_the_username() {
        // Checked against `printf 1700000000:pushlab | openssl dgst -sha1
        // -hmac north -binary | base64`.
        assert_eq!(
            turn_credentials("north", 1_700_000_000),
            (
                "1700000000:pushlab".to_owned(),
                "1vytcQSSg6IxBYYOGlU0BcI08CI=".to_owned()
            )
        );
    }

    #[test]
    fn only_turn_servers_without_static_credentials_get_minted_ones() {
        let config = Config {
            ice_servers: vec![
                IceServer::parse("stun:stun.example:3478").unwrap(),
                IceServer::parse("turn:turn.example:3478?transport=tcp").unwrap(),
            ],
            turn_secret: Some("north".into()),
            turn_ttl: 600,
            ..Config::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_699_999_400);

        let servers = for_page(&config, now);

        assert_eq!(servers[0], config.ice_servers[0]);
        assert_eq!(servers[1].urls, "turn:turn.example:3478?transport=tcp");
        assert_eq!(servers[1].username.as_deref(), Some("1700000000:pushlab"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("1vytcQSSg6IxBYYOGlU0BcI08CI=")
        );
    }

    #[test]
    fn a_turn_server_needs_a_secret_or_static_credentials_but_not_both() {
        let bare = IceServer::parse("turn:turn.example:3478").unwrap();
        let with_static = IceServer::parse("turn:t.example?username=u&credential=p").unwrap();
        let config = |servers: Vec<IceServer>, secret: Option<&str>| Config {
            ice_servers: servers,
            turn_secret: secret.map(str::to_owned),
            ..Config::default()
        };

        assert!(config(vec![bare.clone()], None)
            .check()
            .unwrap_err()
            .contains("--turn-secret"));
        assert!(config(vec![with_static.clone()], Some("s"))
            .check()
            .is_err());
        assert!(config(vec![bare], Some("s")).check().is_ok());
        assert!(config(vec![with_static], None).check().is_ok());
        assert!(IceServer::parse("turn:t.example?username=u").is_err());
    }
}
