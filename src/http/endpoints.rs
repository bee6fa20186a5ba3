//! Every endpoint in one table: which paths exist, the method each takes,
//! which transport each is, and how admission treats it (whether it takes a
//! place under the connection limits, whom its bytes are charged to).
//!
//! The router is built from this table ([`crate::server`]), and
//! admission ([`crate::http::admission`]), which both the router and the
//! WebSocket upgrade path go through, asks it through [`resolve`], so an
//! unknown path is a 404 and a wrong method a 405 on both paths alike. Paths
//! are read as the router reads them: percent-decoded ([`Url`]).

use actix_web::dev::Url;
use actix_web::http::{Method, Uri};

use crate::core::error::ApiError;
use crate::http::assets;
use crate::http::http_error::HttpError;
use crate::net::traffic::Transport;

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
    /// `GET /lecture.html`: the lecture notes rendered.
    LecturePage,
    /// `POST /demo`: sets the `--demo` bot's publish rate.
    Demo,
    /// `GET /`: the client page.
    Index,
    /// `GET /{path}`: the client's other files.
    Asset,
}

/// The limits a request can take its place under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `--max-connections` in all and `--ip-connections` per address.
    Connections,
    /// [`SCRAPES`] at once in all and [`SCRAPES_PER_ADDRESS`] per address.
    Scrapes,
    /// None.
    None,
}

/// The most scrapes of `/metrics` answered at once. Prometheus scrapes
/// each node once per interval; a few more leave room for a person.
pub const SCRAPES: usize = 8;

/// The most scrapes of `/metrics` one client address has answered at once.
pub const SCRAPES_PER_ADDRESS: u32 = 2;

impl Endpoint {
    /// Every endpoint, in the order the router tries them.
    pub const ALL: [Endpoint; 20] = [
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
        Endpoint::LecturePage,
        Endpoint::Demo,
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
            Endpoint::LecturePage => "/lecture.html",
            Endpoint::Demo => "/demo",
            Endpoint::Index => "/",
            Endpoint::Asset => "/{path:.*}",
        }
    }

    /// The one method the endpoint takes.
    pub fn method(self) -> Method {
        match self {
            Endpoint::Register | Endpoint::Send | Endpoint::Demo => Method::POST,
            _ => Method::GET,
        }
    }

    /// The transport this endpoint serves, if it is one of the four.
    pub fn transport(self) -> Option<Transport> {
        match self {
            Endpoint::Poll => Some(Transport::Poll),
            Endpoint::LongPoll => Some(Transport::LongPoll),
            Endpoint::Sse => Some(Transport::Sse),
            Endpoint::Ws => Some(Transport::Ws),
            _ => None,
        }
    }

    /// Which limit a request here takes its place under. Health checks and
    /// scrapes take none under the connection limits: they must be answered
    /// even when the server is full, since that is when they matter most.
    /// A health check's answer is a few bytes; a scrape's grows with the
    /// rooms open (43 KB with a thousand), so scrapes have a small limit of
    /// their own.
    pub fn limit(self) -> Limit {
        match self {
            Endpoint::Healthz => Limit::None,
            Endpoint::Metrics => Limit::Scrapes,
            _ => Limit::Connections,
        }
    }

    /// Whether a request here is held open long after admission while its
    /// handler reads nothing of its headers: a long-poll, parked until an
    /// event or its timeout. Admission lets go of such a request's header
    /// map (kilobytes each, as the HTTP library sizes it) once it has read
    /// what it needs, so a thousand parked requests do not keep them.
    pub fn parks_without_headers(self) -> bool {
        self == Endpoint::LongPoll
    }

    /// Whether a request here is charged to the client its `client=` names.
    /// `GET /traffic` names the client it asks about, not the one asking,
    /// so it is charged to the node alone.
    pub fn charges_named_client(self) -> bool {
        self != Endpoint::Traffic
    }

    /// The endpoint whose path `uri` names, whatever the method: the first
    /// in the router's order. `None` only for a target that is no path
    /// (`OPTIONS *`), which the router does not route either.
    pub fn at(uri: &Uri) -> Option<Endpoint> {
        Endpoint::at_path(&routed_path(uri))
    }

    fn at_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .into_iter()
            .find(|endpoint| endpoint.matches(path))
    }

    fn matches(self, path: &str) -> bool {
        match self {
            // `/{path:.*}`: the client's files are looked up below.
            Endpoint::Asset => path.starts_with('/'),
            _ => self.pattern() == path,
        }
    }
}

/// A request's path as actix's router matches it: percent-decoded. Almost
/// every path has nothing to decode and is borrowed as it is; this runs
/// for every request, twice.
fn routed_path(uri: &Uri) -> std::borrow::Cow<'_, str> {
    let path = uri.path();
    if path.contains('%') {
        std::borrow::Cow::Owned(Url::new(uri.clone()).path().to_owned())
    } else {
        std::borrow::Cow::Borrowed(path)
    }
}

/// The refusal for `GET /ws` without an upgrade.
pub fn not_an_upgrade() -> ApiError {
    ApiError::BadRequest("GET /ws expects a WebSocket upgrade".into())
}

/// Which endpoint serves `method uri`, or the 404 or 405: the one routing
/// decision, which admission applies to every request and upgrade and the
/// router's default services repeat.
pub fn resolve(method: &Method, uri: &Uri) -> Result<Endpoint, HttpError> {
    let path = routed_path(uri);
    let path = path.as_ref();
    let endpoint =
        Endpoint::at_path(path).ok_or_else(|| HttpError::NotFound("this path".into()))?;
    if *method != endpoint.method() {
        return Err(HttpError::MethodNotAllowed);
    }
    if endpoint == Endpoint::Asset {
        assets::find(path)?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(target: &'static str) -> Uri {
        Uri::from_static(target)
    }

    #[test]
    fn the_table_resolves_paths_and_methods_as_the_router_does() {
        let resolved = |method: Method, target| resolve(&method, &uri(target)).unwrap();
        assert_eq!(resolved(Method::GET, "/ws"), Endpoint::Ws);
        assert_eq!(resolved(Method::POST, "/send"), Endpoint::Send);
        assert_eq!(resolved(Method::GET, "/"), Endpoint::Index);
        assert_eq!(resolved(Method::GET, "/ui/app.js"), Endpoint::Asset);
        assert_eq!(resolved(Method::GET, "/ui/%61pp.js"), Endpoint::Asset);
        assert_eq!(resolved(Method::GET, "/p%6Fll?since=3"), Endpoint::Poll);
        let code = |method: Method, target| resolve(&method, &uri(target)).unwrap_err().code();
        assert_eq!(code(Method::POST, "/ws"), "method_not_allowed");
        assert_eq!(code(Method::DELETE, "/poll"), "method_not_allowed");
        assert_eq!(code(Method::GET, "/no/such/thing"), "not_found");
        assert_eq!(code(Method::OPTIONS, "*"), "not_found");
    }

    #[test]
    fn the_table_says_which_transport_each_endpoint_is_and_which_skip_the_limits() {
        let transports: Vec<_> = Endpoint::ALL
            .into_iter()
            .filter_map(|endpoint| Some((endpoint, endpoint.transport()?)))
            .collect();
        assert_eq!(
            transports,
            [
                (Endpoint::Poll, Transport::Poll),
                (Endpoint::LongPoll, Transport::LongPoll),
                (Endpoint::Sse, Transport::Sse),
                (Endpoint::Ws, Transport::Ws),
            ]
        );
        let outside: Vec<_> = Endpoint::ALL
            .into_iter()
            .filter(|endpoint| endpoint.limit() != Limit::Connections)
            .map(|endpoint| (endpoint, endpoint.limit()))
            .collect();
        assert_eq!(
            outside,
            [
                (Endpoint::Healthz, Limit::None),
                (Endpoint::Metrics, Limit::Scrapes)
            ]
        );
        assert_eq!(Endpoint::at(&uri("/healthz?x=1")), Some(Endpoint::Healthz));
        assert_eq!(Endpoint::at(&uri("/traffic")), Some(Endpoint::Traffic));
        assert!(!Endpoint::Traffic.charges_named_client());
    }
}
