//! Every endpoint in one table, and the application built from it.
//!
//! The table is the one statement of which paths exist and which method
//! each takes. The router is built from it, and the WebSocket upgrade path
//! (which never reaches the router) asks it through [`resolve`], so an
//! unknown path is a 404 and a wrong method a 405 on both paths alike.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, App, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;
use crate::transport::{longpoll, poll, sse};
use crate::{api, assets, middleware};

/// What serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`
    Healthz,
    /// `GET /stats`
    Stats,
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
    /// `GET /`: the client page.
    Index,
    /// `GET /{path}`: the client's other files.
    Asset,
}

impl Endpoint {
    /// Every endpoint, in the order the router tries them.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::Healthz,
        Endpoint::Stats,
        Endpoint::Register,
        Endpoint::Send,
        Endpoint::Poll,
        Endpoint::LongPoll,
        Endpoint::Sse,
        Endpoint::Ws,
        Endpoint::Index,
        Endpoint::Asset,
    ];

    /// The path pattern, as actix's router reads it.
    pub fn pattern(self) -> &'static str {
        match self {
            Endpoint::Healthz => "/healthz",
            Endpoint::Stats => "/stats",
            Endpoint::Register => "/register",
            Endpoint::Send => "/send",
            Endpoint::Poll => "/poll",
            Endpoint::LongPoll => "/longpoll",
            Endpoint::Sse => "/sse",
            Endpoint::Ws => "/ws",
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

    fn route(self) -> actix_web::Route {
        let route = web::method(self.method());
        match self {
            Endpoint::Healthz => route.to(api::healthz),
            Endpoint::Stats => route.to(api::stats),
            Endpoint::Register => route.to(api::register),
            Endpoint::Send => route.to(api::send),
            Endpoint::Poll => route.to(poll::poll),
            Endpoint::LongPoll => route.to(longpoll::long_poll),
            Endpoint::Sse => route.to(sse::sse_stream),
            // An upgrade never reaches the router (see `transport::ws`).
            Endpoint::Ws => route.to(|| async { Err::<HttpResponse, _>(not_an_upgrade()) }),
            Endpoint::Index => route.to(assets::index),
            Endpoint::Asset => route.to(assets::file),
        }
    }
}

/// The refusal for `GET /ws` without an upgrade.
pub fn not_an_upgrade() -> ApiError {
    ApiError::BadRequest("GET /ws expects a WebSocket upgrade".into())
}

/// Which endpoint serves `method path`, or the 404 or 405 the router gives.
pub fn resolve(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    let endpoint = Endpoint::ALL
        .into_iter()
        .find(|endpoint| endpoint.matches(path))
        .ok_or_else(|| ApiError::NotFound("this path".into()))?;
    if *method != endpoint.method() {
        return Err(ApiError::MethodNotAllowed);
    }
    if endpoint == Endpoint::Asset && !assets::exists(path) {
        return Err(ApiError::NotFound(path.to_owned()));
    }
    Ok(endpoint)
}

/// Every endpoint of the table, with its 405 for other methods; anything
/// else is a 404. Both as JSON.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(api::query_config())
        .app_data(api::json_config());
    for endpoint in Endpoint::ALL {
        cfg.service(
            web::resource(endpoint.pattern())
                .route(endpoint.route())
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::MethodNotAllowed)
                })),
        );
    }
    cfg.default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::NotFound("this path".into()))
    }));
}

/// The application for one worker: every endpoint, behind the admission
/// rules (connection limit, CORS grants).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .configure(routes)
        .wrap(actix_web::middleware::from_fn(middleware::admission))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_resolves_paths_and_methods_as_the_router_does() {
        assert_eq!(resolve(&Method::GET, "/ws").unwrap(), Endpoint::Ws);
        assert_eq!(resolve(&Method::POST, "/send").unwrap(), Endpoint::Send);
        assert_eq!(resolve(&Method::GET, "/").unwrap(), Endpoint::Index);
        assert_eq!(resolve(&Method::GET, "/app.js").unwrap(), Endpoint::Asset);
        let code = |method: Method, path: &str| resolve(&method, path).unwrap_err().code();
        assert_eq!(code(Method::POST, "/ws"), "method_not_allowed");
        assert_eq!(code(Method::DELETE, "/poll"), "method_not_allowed");
        assert_eq!(code(Method::GET, "/no/such/thing"), "not_found");
    }
}
