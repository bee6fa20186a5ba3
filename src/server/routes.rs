//! The router, built from the endpoint table ([`crate::http::endpoints`]), and the
//! application for one worker.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpRequest, HttpResponse};

use crate::classroom;
use crate::http::endpoints::Endpoint;
use crate::http::http_error::HttpError;
use crate::http::state::AppState;
use crate::http::{admission, api, assets, endpoints, metrics};
use crate::transport::{longpoll, poll, sse};

/// Every endpoint of the table; a request none of them takes is answered
/// the table's 404 or 405 ([`endpoints::resolve`]), as JSON. Admission
/// answers those before the router, from the same function.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(api::query_config())
        .app_data(api::json_config());
    for endpoint in Endpoint::ALL {
        cfg.service(
            web::resource(endpoint.pattern())
                .route(route(endpoint))
                .default_service(web::to(unrouted)),
        );
    }
    cfg.default_service(web::to(unrouted));
}

/// The table's refusal of a request the router found no handler for.
async fn unrouted(req: HttpRequest) -> Result<HttpResponse, HttpError> {
    Err(match endpoints::resolve(req.method(), req.uri()) {
        Err(refusal) => refusal,
        // The router and the table read paths alike, so this is not
        // reached; were it, "no handler" is a 404.
        Ok(_) => HttpError::NotFound("this path".into()),
    })
}

/// The application for one worker: every endpoint, behind admission
/// (charges, `Host`, limits, route, CORS) and the body timeout.
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
        // Every request is charged, refused ones too, and its body read
        // under the body timeout.
        .wrap(actix_web::middleware::from_fn(admission::admission))
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
        Endpoint::Lecture => route.to(classroom::lecture::markdown),
        Endpoint::LecturePage => route.to(classroom::lecture::page),
        Endpoint::Demo => route.to(classroom::demo_rate),
        Endpoint::Index => route.to(assets::index),
        Endpoint::Asset => route.to(assets::file),
    }
}
