//! The development outbox at `/outbox`: mail the portal would have sent, shown only
//! while no SMTP server is configured (anyone who can reach the portal can read it,
//! so a portal open to others needs `portal.smtp_url`).

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use turnpike_store::portal::outbox::{self, OutboxMail};

use crate::PortalState;
use crate::pages::{PageContext, PageError, render};

/// How many messages the list shows.
const SHOWN: u64 = 50;

pub(crate) fn routes() -> Router<PortalState> {
    Router::new().route("/outbox", get(list)).route("/outbox/{id}", get(show))
}

/// A piece of a message body: text, or a link to make clickable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Link(&'a str),
}

/// Splits plain text into text and `http(s)://` links (a link ends at whitespace).
pub fn segments(body: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = [rest.find("https://"), rest.find("http://")].into_iter().flatten().min() {
        let end = rest[start..].find(char::is_whitespace).map_or(rest.len(), |e| start + e);
        if start > 0 {
            out.push(Segment::Text(&rest[..start]));
        }
        out.push(Segment::Link(&rest[start..end]));
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    out
}

#[derive(Template)]
#[template(path = "portal/outbox.html")]
struct OutboxPage<'a> {
    ctx: PageContext,
    mails: Vec<OutboxMail>,
    /// The message shown in full, split for links.
    open: Option<(&'a OutboxMail, Vec<Segment<'a>>)>,
}

fn available(ctx: &PageContext) -> Result<(), PageError> {
    if ctx.outbox { Ok(()) } else { Err(PageError::not_found()) }
}

async fn list(State(state): State<PortalState>, ctx: PageContext) -> Result<Response, PageError> {
    available(&ctx)?;
    let mails = outbox::latest(state.store.db(), SHOWN).await?;
    Ok(render(StatusCode::OK, &OutboxPage { ctx, mails, open: None }))
}

async fn show(
    State(state): State<PortalState>,
    ctx: PageContext,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    available(&ctx)?;
    let mail = outbox::get(state.store.db(), &id).await?.ok_or_else(PageError::not_found)?;
    let mails = outbox::latest(state.store.db(), SHOWN).await?;
    let page = OutboxPage { ctx, mails, open: Some((&mail, segments(&mail.body))) };
    Ok(render(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_in_text() {
        use Segment::*;
        assert_eq!(
            segments("Hello,\n\nhttps://p.example/verify?token=a_b-c\n\nBye http://x"),
            vec![Text("Hello,\n\n"), Link("https://p.example/verify?token=a_b-c"), Text("\n\nBye "), Link("http://x")]
        );
        assert_eq!(segments("no links"), vec![Text("no links")]);
        assert_eq!(segments(""), vec![]);
    }
}
