//! The lecture notes: docs/lecture.md as the server carries it, as plain
//! text (`GET /lecture.md`) and as a page (`GET /lecture.html`).
//!
//! The page is rendered here, once, with pulldown-cmark (CommonMark, as
//! rustdoc and mdBook read it), rather than in the browser: the notes are
//! compiled into the binary, so one rendering serves every request, the page
//! reads without JavaScript, and no vendored renderer has to be kept up to
//! date beside the crates. It knows nothing of rooms or transports.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::HttpResponse;
use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag, TagEnd};

/// docs/lecture.md, as compiled in.
pub const LECTURE_MD: &str = include_str!("../../docs/lecture.md");

/// The page around the rendered notes: the site's style sheet and top bar,
/// with the notes' own Markdown one link away.
const PAGE_HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>pushlab · lecture notes</title>
  <link rel="icon" href="favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="style.css">
</head>
<body>
  <header class="topbar">
    <a class="brand" href="/">push<span>lab</span></a>
    <a class="topbar-link" href="/">Chat</a>
    <a class="topbar-link" href="compare.html">Compare all four →</a>
    <a class="topbar-link" href="lecture.md">As Markdown</a>
  </header>
  <main class="notes">
"#;

const PAGE_TAIL: &str = "  </main>\n</body>\n</html>\n";

/// The notes as a page, rendered on first use.
static LECTURE_PAGE: LazyLock<String> = LazyLock::new(|| render_page(LECTURE_MD));

/// `GET /lecture.md`: the notes as plain text (the browser shows them as
/// they are).
pub async fn markdown() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(LECTURE_MD)
}

/// `GET /lecture.html`: the notes as a page.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(LECTURE_PAGE.as_str())
}

/// `markdown` as a whole HTML page. Links to the other documents of docs/
/// (`protocol.md`, …) become their text: the server does not serve those,
/// and a link that answers 404 in front of a class is worse than none.
pub fn render_page(markdown: &str) -> String {
    let mut in_dead_link = false;
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).filter(|event| match event {
        Event::Start(Tag::Link { dest_url, .. }) if is_repository_path(dest_url) => {
            in_dead_link = true;
            false
        }
        // Links do not nest, so the next link end closes the one dropped.
        Event::End(TagEnd::Link) if in_dead_link => {
            in_dead_link = false;
            false
        }
        _ => true,
    });
    let mut page = String::with_capacity(PAGE_HEAD.len() + markdown.len() * 2);
    page.push_str(PAGE_HEAD);
    html::push_html(&mut page, events);
    page.push_str(PAGE_TAIL);
    page
}

/// Whether a link points at a file beside the notes in the repository,
/// rather than a web address or a place in the page.
fn is_repository_path(dest: &CowStr<'_>) -> bool {
    !(dest.contains("://") || dest.starts_with('#') || dest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_code_and_tables_become_html() {
        let page = render_page(
            "## 7. WebRTC\n\n```sh\nping\n```\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n",
        );
        assert!(page.contains("<h2>7. WebRTC</h2>"), "{page}");
        assert!(
            page.contains("<pre><code class=\"language-sh\">ping\n</code></pre>"),
            "{page}"
        );
        assert!(page.contains("<td>1</td>"), "{page}");
    }

    #[test]
    fn links_to_other_documents_become_their_text_and_web_links_stay() {
        let page = render_page(
            "See [protocol.md](protocol.md), [RFC 6455](https://www.rfc-editor.org/rfc/rfc6455) and [above](#top).",
        );
        assert!(page.contains("See protocol.md, "), "{page}");
        assert!(!page.contains("href=\"protocol.md\""), "{page}");
        assert!(
            page.contains("<a href=\"https://www.rfc-editor.org/rfc/rfc6455\">RFC 6455</a>"),
            "{page}"
        );
        assert!(page.contains("<a href=\"#top\">above</a>"), "{page}");
    }

    #[test]
    fn the_lecture_renders_whole() {
        let page = render_page(LECTURE_MD);
        assert!(page.starts_with("<!doctype html>"));
        assert!(
            page.contains("<h1>Server push, walked through with pushlab</h1>"),
            "{page}"
        );
        assert!(page.ends_with("</html>\n"));
    }
}
