//! The router, built from the endpoint table ([`crate::http::endpoints`]), and the
//! application for one worker.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpResponse};

use crate::classroom;
use crate::http::endpoints::Endpoint;
use crate::http::http_error::HttpError;
use crate::http::state::AppState;
use crate::http::{admission, api, assets, body_timeout, endpoints, metrics};
use crate::transport::{longpoll, poll, sse};

/// Every endpoint of the table, with its 405 for other methods; anything
/// else is a 404. Both as JSON.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(api::query_config())
        .app_data(api::json_config());
    for endpoint in Endpoint::ALL {
        cfg.service(
            web::resource(endpoint.pattern())
                .route(route(endpoint))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(HttpError::MethodNotAllowed)
                })),
        );
    }
    cfg.default_service(web::to(|| async {
        Err::<HttpResponse, _>(HttpError::NotFound("this path".into()))
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
        .wrap(actix_web::middleware::from_fn(
            body_timeout::read_body_in_time,
        ))
        .wrap(actix_web::middleware::from_fn(admission::admission))
        // Outermost, so that refused requests are charged too.
        .wrap(actix_web::middleware::from_fn(classroom::charge))
}

/// The handler behind each endpoint.
fn route(endpoint: Endpoint) -> actix_web::Route {
    let route = web::method(endpoint.method());
    match endpoint {
        Endpoint::Healthz => route.to(api::healthz),
        Endpoint::Stats => route.to(api::stats),
        Endpoint::Metrics => route.to(metrics::metrics),
        Endpoint::Rooms => route.to(api::rooms),
        Endpoint::Config => route.to(api::client_config),
        Endpoint::Register => route.to(api::register),
        Endpoint::Send => route.to(api::send),
        Endpoint::Poll => route.to(poll::poll),
        Endpoint::LongPoll => route.to(longpoll::long_poll),
        Endpoint::Sse => route.to(sse::sse_stream),
        // An upgrade never reaches the router (see `transport::ws`).
        Endpoint::Ws => route.to(|| async { Err::<HttpResponse, _>(endpoints::not_an_upgrade()) }),
        Endpoint::Traffic => route.to(classroom::traffic),
        Endpoint::Time => route.to(classroom::time),
        Endpoint::Join => route.to(classroom::join),
        Endpoint::Qr => route.to(classroom::qr),
        Endpoint::Lecture => route.to(classroom::lecture),
        Endpoint::Index => route.to(assets::index),
        Endpoint::Asset => route.to(assets::file),
    }
}
