//! The browser client, embedded from `web/` at build time so the binary
//! serves it from any working directory.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

use crate::http::http_error::HttpError;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

/// `GET /`: the client page.
pub async fn index(req: HttpRequest) -> Result<HttpResponse, HttpError> {
    serve("index.html", &req)
}

/// `GET /{path}`: any other file of the client.
pub async fn file(path: web::Path<String>, req: HttpRequest) -> Result<HttpResponse, HttpError> {
    serve(&path, &req)
}

/// The file of the client a request path (with its leading `/`) names, or
/// the 404 its handler gives.
pub fn find(path: &str) -> Result<rust_embed::EmbeddedFile, HttpError> {
    let path = file_name(path.trim_start_matches('/'));
    Assets::get(&path).ok_or_else(|| HttpError::NotFound(format!("/{path}")))
}

/// The embedded file a path names: a directory means its `index.html`.
fn file_name(path: &str) -> String {
    if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    }
}

fn serve(path: &str, req: &HttpRequest) -> Result<HttpResponse, HttpError> {
    let file = find(path)?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        // Revalidate every time: a teaching page should never show stale code.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    if fresh {
        return Ok(response.finish());
    }
    Ok(response
        .content_type(file.metadata.mimetype())
        .body(file.data.into_owned()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
