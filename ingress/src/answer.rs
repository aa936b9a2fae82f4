//! The ingress's own answers, with ALB's meanings: 404 when no rule matches (naming the host
//! and path), 503 with `Retry-After` when the route has no healthy target, 502 when the target
//! refused, reset or answered badly, 504 when it was slower than the route's timeout. Bodies
//! are one line of plain text.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{ProxyBody, full};

/// Seconds a client should wait after a 503: targets reach the ingress within a second.
pub const RETRY_AFTER_SECS: u32 = 1;

/// 404: no rule matches the host and path.
pub fn no_rule(host: Option<&str>, path: &str) -> Response<ProxyBody> {
    let host = host.unwrap_or("(no host)");
    text(StatusCode::NOT_FOUND, format!("no route for host {host} and path {path}\n"))
}

/// 503: the route's target group is empty.
pub fn no_target(service: &str) -> Response<ProxyBody> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("service {service} has no healthy target\n"));
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// 502: no target gave an answer (refused, reset, closed or malformed).
pub fn bad_gateway(service: &str, why: &str) -> Response<ProxyBody> {
    text(StatusCode::BAD_GATEWAY, format!("service {service}: {why}\n"))
}

/// 504: the target did not answer within the route's timeout.
pub fn gateway_timeout(service: &str) -> Response<ProxyBody> {
    text(StatusCode::GATEWAY_TIMEOUT, format!("service {service} did not answer in time\n"))
}

/// 400: the client's request could not be read.
pub fn bad_request(why: &str) -> Response<ProxyBody> {
    text(StatusCode::BAD_REQUEST, format!("{why}\n"))
}

/// 408: the client was slower than the route's timeout sending its request body.
pub fn request_timeout() -> Response<ProxyBody> {
    text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n".to_string())
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<ProxyBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn answers_carry_alb_statuses_and_say_why() {
        let r = no_rule(Some("quotes.example"), "/nope");
        assert_eq!(r.status(), 404);
        assert_eq!(body(r).await, "no route for host quotes.example and path /nope\n");
        let r = no_target("quotes");
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert!(body(r).await.contains("quotes"));
        assert_eq!(bad_gateway("quotes", "connection refused").status(), 502);
        assert_eq!(gateway_timeout("quotes").status(), 504);
    }
}
