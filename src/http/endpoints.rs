//! Every endpoint in one table: which paths exist and the method each takes.
//!
//! The router is built from this table ([`crate::http::routes`]), and the
//! WebSocket upgrade path, which never reaches the router, asks it through
//! [`resolve`], so an unknown path is a 404 and a wrong method a 405 on both
//! paths alike.

use actix_web::http::Method;

use crate::core::error::ApiError;
use crate::http::assets;
use crate::http::http_error::HttpError;

/// What serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`
    Healthz,
    /// `GET /stats`
    Stats,
    /// `GET /metrics`: the node's counters in Prometheus text.
    Metrics,
    /// `GET /rooms`
    Rooms,
    /// `GET /config`: ICE servers and signal bounds for the page.
    Config,
    /// `POST /register`
    Register,
    /// `POST /send`
    Send,
    /// `GET /poll`
    Poll,
    /// `GET /longpoll`
    LongPoll,
    /// `GET /sse`
    Sse,
    /// `GET /ws`, which only a WebSocket upgrade can use.
    Ws,
    /// `GET /traffic`
    Traffic,
    /// `GET /time`
    Time,
    /// `GET /join`
    Join,
    /// `GET /qr.svg`
    Qr,
    /// `GET /lecture.md`
    Lecture,
    /// `GET /`: the client page.
    Index,
    /// `GET /{path}`: the client's other files.
    Asset,
}

impl Endpoint {
    /// Every endpoint, in the order the router tries them.
    pub const ALL: [Endpoint; 18] = [
        Endpoint::Healthz,
        Endpoint::Stats,
        Endpoint::Metrics,
        Endpoint::Rooms,
        Endpoint::Config,
        Endpoint::Register,
        Endpoint::Send,
        Endpoint::Poll,
        Endpoint::LongPoll,
        Endpoint::Sse,
        Endpoint::Ws,
        Endpoint::Traffic,
        Endpoint::Time,
        Endpoint::Join,
        Endpoint::Qr,
        Endpoint::Lecture,
        Endpoint::Index,
        Endpoint::Asset,
    ];

    /// The path pattern, as actix's router reads it.
    pub fn pattern(self) -> &'static str {
        match self {
            Endpoint::Healthz => "/healthz",
            Endpoint::Stats => "/stats",
            Endpoint::Metrics => "/metrics",
            Endpoint::Rooms => "/rooms",
            Endpoint::Config => "/config",
            Endpoint::Register => "/register",
            Endpoint::Send => "/send",
            Endpoint::Poll => "/poll",
            Endpoint::LongPoll => "/longpoll",
            Endpoint::Sse => "/sse",
            Endpoint::Ws => "/ws",
            Endpoint::Traffic => "/traffic",
            Endpoint::Time => "/time",
            Endpoint::Join => "/join",
            Endpoint::Qr => "/qr.svg",
            Endpoint::Lecture => "/lecture.md",
            Endpoint::Index => "/",
            Endpoint::Asset => "/{path:.*}",
        }
    }

    /// The one method the endpoint takes.
    pub fn method(self) -> Method {
        match self {
            Endpoint::Register | Endpoint::Send => Method::POST,
            _ => Method::GET,
        }
    }

    fn matches(self, path: &str) -> bool {
        match self {
            // The client's files are looked up by the asset handler.
            Endpoint::Asset => true,
            _ => self.pattern() == path,
        }
    }
}

/// The refusal for `GET /ws` without an upgrade.
pub fn not_an_upgrade() -> ApiError {
    ApiError::BadRequest("GET /ws expects a WebSocket upgrade".into())
}

/// Which endpoint serves `method path`, or the 404 or 405 the router gives.
pub fn resolve(method: &Method, path: &str) -> Result<Endpoint, HttpError> {
    let endpoint = Endpoint::ALL
        .into_iter()
        .find(|endpoint| endpoint.matches(path))
        .ok_or_else(|| HttpError::NotFound("this path".into()))?;
    if *method != endpoint.method() {
        return Err(HttpError::MethodNotAllowed);
    }
    if endpoint == Endpoint::Asset && !assets::exists(path) {
        return Err(HttpError::NotFound(path.to_owned()));
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_resolves_paths_and_methods_as_the_router_does() {
        assert_eq!(resolve(&Method::GET, "/ws").unwrap(), Endpoint::Ws);
        assert_eq!(resolve(&Method::POST, "/send").unwrap(), Endpoint::Send);
        assert_eq!(resolve(&Method::GET, "/").unwrap(), Endpoint::Index);
        assert_eq!(
            resolve(&Method::GET, "/ui/app.js").unwrap(),
            Endpoint::Asset
        );
        let code = |method: Method, path: &str| resolve(&method, path).unwrap_err().code();
        assert_eq!(code(Method::POST, "/ws"), "method_not_allowed");
        assert_eq!(code(Method::DELETE, "/poll"), "method_not_allowed");
        assert_eq!(code(Method::GET, "/no/such/thing"), "not_found");
    }
}
