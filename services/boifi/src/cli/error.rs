//! What can go wrong in a client command, how it is shown, and the exit code of each.
//!
//! Exit codes (docs/cli.md): 0 everything done; 1 refused or failed (the server said no, it
//! could not be reached, an input is bad, some items failed); 2 wrong use of the command line
//! (clap's own usage errors exit 2 as well).

use std::io::{self, Write};

use boifi_policy::FieldError;
use serde::Deserialize;

/// Everything asked was done.
pub const EXIT_OK: u8 = 0;
/// Refused or failed: the server refused, could not be reached or timed out, an input file or
/// document is bad, or some of the items of the command failed.
pub const EXIT_FAILED: u8 = 1;
/// Wrong use of the command line.
pub const EXIT_USAGE: u8 = 2;

/// The API's error body (`{"error","message","details":[{"field","message"}]}`), read
/// leniently: whatever stands between the CLI and the server may answer with anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorReply {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<FieldError>,
}

impl ErrorReply {
    /// The body of a non-2xx answer: the API's error JSON, or a line about what came instead.
    pub fn from_body(status: u16, body: &[u8]) -> ErrorReply {
        match serde_json::from_slice::<ErrorReply>(body) {
            Ok(reply) if !reply.message.is_empty() => reply,
            _ => {
                let text = String::from_utf8_lossy(body);
                let first = text.lines().map(str::trim).find(|l| !l.is_empty());
                let message = match first {
                    Some(line) => format!("HTTP {status}: {}", clip(line, 200)),
                    None => format!("HTTP {status} with no error body"),
                };
                ErrorReply {
                    message,
                    ..ErrorReply::default()
                }
            }
        }
    }
}

/// At most `max` characters of `text`, with `...` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong use that clap cannot see, e.g. a `--server` that is not an `http://` URL.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, timed out, or did not answer HTTP.
    #[error("{server}: {message}")]
    Transport { server: String, message: String },
    /// The server answered with an error status.
    #[error("{}", .reply.message)]
    Api { status: u16, reply: ErrorReply },
    /// An input (file, directory, token file) cannot be read.
    #[error("{0}")]
    Input(String),
    /// A 2xx answer that is not what the API documents.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// The problems were already reported one by one; this is the summary line.
    #[error("{0}")]
    Reported(String),
}

impl CliError {
    /// The process exit code for this error (see the module doc).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }

    /// True when the next request would fail the same way, so a command working through a
    /// list stops instead of repeating the error for every item: no token or the wrong role,
    /// the server unreachable or unavailable.
    pub fn concerns_every_request(&self) -> bool {
        match self {
            CliError::Api { status, .. } => matches!(status, 401 | 403 | 503),
            CliError::Transport { .. } | CliError::Protocol(_) | CliError::Output(_) => true,
            _ => false,
        }
    }

    /// `error: <message>`, then each `field: message` detail of a server refusal, indented,
    /// and a hint for authentication errors. A broken pipe (output closed by `head`) prints
    /// nothing.
    pub fn report(&self, err: &mut dyn Write) -> io::Result<()> {
        self.report_about(None, err)
    }

    /// [`CliError::report`] about one item, `error: <subject>: <message>`.
    pub fn report_about(&self, subject: Option<&str>, err: &mut dyn Write) -> io::Result<()> {
        if let CliError::Output(e) = self {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
        }
        match subject {
            Some(subject) => writeln!(err, "error: {subject}: {self}")?,
            None => writeln!(err, "error: {self}")?,
        }
        if let CliError::Api { status, reply } = self {
            for detail in &reply.details {
                write_detail(err, "  ", detail)?;
            }
            match status {
                401 => writeln!(
                    err,
                    "  (send a token: set BOIFI_TOKEN or pass --token-file PATH)"
                )?,
                403 => writeln!(err, "  (this needs a token with the writer role)")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `<indent>field: message`, or `<indent>message` for a problem of the whole document.
pub fn write_detail(err: &mut dyn Write, indent: &str, detail: &FieldError) -> io::Result<()> {
    if detail.field.is_empty() {
        writeln!(err, "{indent}{}", detail.message)
    } else {
        writeln!(err, "{indent}{}: {}", detail.field, detail.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(error: &CliError) -> String {
        let mut out = Vec::new();
        error.report(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        for error in [
            CliError::Transport {
                server: "http://127.0.0.1:1".into(),
                message: "connection refused".into(),
            },
            CliError::Api {
                status: 403,
                reply: ErrorReply::default(),
            },
            CliError::Input("x".into()),
            CliError::Protocol("x".into()),
            CliError::Output(io::Error::other("x")),
            CliError::Reported("x".into()),
        ] {
            assert_eq!(error.exit_code(), EXIT_FAILED, "{error:?}");
        }
        assert_eq!((EXIT_OK, EXIT_FAILED, EXIT_USAGE), (0, 1, 2));
    }

    #[test]
    fn a_refusal_shows_every_field_detail() {
        let body = br#"{"error":"invalid_request","message":"the policy has 2 problem(s)",
            "details":[{"field":"spec.rules[0].fault.percentage","message":"must be between 0 and 100"},
                       {"field":"","message":"invalid JSON: EOF"}]}"#;
        let error = CliError::Api {
            status: 400,
            reply: ErrorReply::from_body(400, body),
        };
        assert_eq!(
            shown(&error),
            "error: the policy has 2 problem(s)\n  spec.rules[0].fault.percentage: must be \
             between 0 and 100\n  invalid JSON: EOF\n"
        );
        let mut out = Vec::new();
        error.report_about(Some("policy/a"), &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("error: policy/a: the policy has 2 problem(s)\n"));
    }

    #[test]
    fn auth_refusals_say_what_to_do() {
        let reply = |message: &str| ErrorReply {
            error: "x".into(),
            message: message.into(),
            details: Vec::new(),
        };
        let text = shown(&CliError::Api {
            status: 401,
            reply: reply("unknown bearer token"),
        });
        assert!(text.contains("error: unknown bearer token\n"), "{text}");
        assert!(text.contains("BOIFI_TOKEN"), "{text}");
        let text = shown(&CliError::Api {
            status: 403,
            reply: reply("the token's role `reader` may not change anything"),
        });
        assert!(text.contains("writer role"), "{text}");
    }

    #[test]
    fn a_body_that_is_not_the_api_error_is_summed_up() {
        let reply = ErrorReply::from_body(502, b"\n<html>Bad Gateway</html>\nmore");
        assert_eq!(reply.message, "HTTP 502: <html>Bad Gateway</html>");
        assert_eq!(
            ErrorReply::from_body(500, b"").message,
            "HTTP 500 with no error body"
        );
        let long = "x".repeat(500);
        let reply = ErrorReply::from_body(500, long.as_bytes());
        assert_eq!(reply.message.len(), "HTTP 500: ".len() + 200 + 3);
    }

    #[test]
    fn a_closed_pipe_prints_nothing() {
        let error = CliError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(shown(&error), "");
    }

    #[test]
    fn only_errors_that_repeat_for_every_request_stop_a_list() {
        let api = |status| CliError::Api {
            status,
            reply: ErrorReply::default(),
        };
        assert!(api(401).concerns_every_request());
        assert!(api(403).concerns_every_request());
        assert!(api(503).concerns_every_request());
        assert!(!api(404).concerns_every_request());
        assert!(!api(400).concerns_every_request());
        assert!(!api(409).concerns_every_request());
    }
}
