//! The CLI's HTTP client: where the server is, the token, and one blocking request at a time
//! with a timeout and a bound on every response body.
//!
//! The token comes from `BOIFI_TOKEN` or `--token-file`, never from the command line (other
//! users of the machine can read argv), and is never printed: [`Token`]'s `Debug` hides it and
//! no error message includes a request header.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use ureq::http::{self, Method};
use ureq::Agent;

use super::error::{CliError, ErrorReply};

/// Where the API is when neither `--server` nor `BOIFI_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// Largest response body read (a page of policies; each policy is at most 1 MiB).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Connecting gets at most this long, whatever `--timeout` says.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The options of every command that talks to the server.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// policy-api's URL [env: BOIFI_SERVER] [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Read the API token from this file [default: the BOIFI_TOKEN variable]. Tokens are never
    /// taken from the command line.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Timeout of each request, e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(duration)
}

/// The `BOIFI_*` variables of the client (blank counts as unset, as for every BOIFI variable).
#[derive(Debug, Default, Deserialize)]
struct ClientVars {
    server: Option<String>,
    token: Option<String>,
    stream_server: Option<String>,
}

/// A bearer token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token as read from a variable or file, trimmed. It goes into a header, so it must
    /// be printable ASCII without spaces; the error never repeats it.
    fn new(text: &str, from: &str) -> Result<Token, CliError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CliError::Input(format!("{from}: the token is empty")));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::Input(format!(
                "{from}: the token must be one word of printable ASCII (its value is not shown)"
            )));
        }
        Ok(Token(text.to_owned()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// Where to send requests and with which token, from the options and the environment.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The API's base URL, without a trailing `/`.
    pub server: String,
    /// The sse-broadcaster's base URL (`BOIFI_STREAM_SERVER`, else [`Connection::server`]).
    pub stream_server: String,
    pub token: Option<Token>,
    pub timeout: Duration,
}

impl Connection {
    /// `--server`, else `BOIFI_SERVER`, else [`DEFAULT_SERVER`]; `--token-file`, else
    /// `BOIFI_TOKEN`, else no token. `stream_server` is `watch`'s `--stream-server`.
    pub fn resolve<I>(
        args: &ConnectionArgs,
        stream_server: Option<&str>,
        vars: I,
    ) -> Result<Connection, CliError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: ClientVars =
            boifi_runtime::env::from_vars(vars).map_err(|e| CliError::Usage(e.to_string()))?;
        let (server, from) = match (&args.server, &vars.server) {
            (Some(flag), _) => (flag.as_str(), "--server"),
            (None, Some(var)) => (var.as_str(), "BOIFI_SERVER"),
            (None, None) => (DEFAULT_SERVER, "the default server"),
        };
        let server = base_url(server, from)?;
        let stream_server = match (stream_server, &vars.stream_server) {
            (Some(flag), _) => base_url(flag, "--stream-server")?,
            (None, Some(var)) => base_url(var, "BOIFI_STREAM_SERVER")?,
            (None, None) => server.clone(),
        };
        let token = match (&args.token_file, &vars.token) {
            (Some(path), _) => Some(read_token_file(path)?),
            (None, Some(var)) => Some(Token::new(var, "BOIFI_TOKEN")?),
            (None, None) => None,
        };
        Ok(Connection {
            server,
            stream_server,
            token,
            timeout: args.timeout,
        })
    }

    /// A client of the API with this connection's timeout.
    pub fn client(&self) -> Client {
        let connect = self.timeout.min(MAX_CONNECT_TIMEOUT);
        let config = Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .timeout_connect(Some(connect));
        Client::new(&self.server, self.token.clone(), config)
    }
}

/// `url` as a base URL: `http://host[:port][/prefix]`, no trailing `/`, no query.
fn base_url(url: &str, from: &str) -> Result<String, CliError> {
    let url = url.trim();
    let usage = |why: &str| CliError::Usage(format!("{from}: {why}, got \"{url}\""));
    if url.starts_with("https://") {
        return Err(usage(
            "https is not supported; the API serves plain HTTP (in Kubernetes, reach it with \
             kubectl port-forward)",
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(usage("expected a URL like http://127.0.0.1:8080"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || rest.contains(['?', '#']) {
        return Err(usage("expected a URL like http://127.0.0.1:8080"));
    }
    if url.parse::<http::Uri>().is_err() {
        return Err(usage("not a valid URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The token in `path`: its content, trimmed.
fn read_token_file(path: &Path) -> Result<Token, CliError> {
    let from = format!("--token-file {}", path.display());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_TOKEN_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| CliError::Input(format!("{from}: {}", io_reason(&e))))?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(CliError::Input(format!(
            "{from}: larger than {MAX_TOKEN_FILE_BYTES} bytes"
        )));
    }
    Token::new(&text, &from)
}

/// An I/O error's reason without the "(os error N)" noise.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// A status, the `ETag` and the body of an answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer as `T` when it is a success, else the server's error.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, CliError> {
        let reply = self.success()?;
        serde_json::from_slice(&reply.body).map_err(|e| CliError::Protocol(e.to_string()))
    }

    /// This answer when it is a success, else the server's error.
    pub fn success(self) -> Result<Reply, CliError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(CliError::Api {
                status: self.status,
                reply: ErrorReply::from_body(self.status, &self.body),
            })
        }
    }
}

/// Blocking requests to one server.
pub struct Client {
    agent: Agent,
    base: String,
    token: Option<Token>,
}

impl Client {
    /// A client of `base` with `config` plus what every call needs: error statuses are
    /// answers (their body says why), redirects are not followed (the API never redirects, and
    /// a token must not travel elsewhere).
    pub fn new(
        base: &str,
        token: Option<Token>,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Client {
        let config = config
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("boifi/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: Agent::new_with_config(config),
            base: base.to_owned(),
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, the answer as `T` (or the server's error).
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(Method::GET, path, &[], None)?.json()
    }

    /// Sends one request to `path` (with its query) and reads the whole answer, at most
    /// [`MAX_RESPONSE_BYTES`]. A body goes as JSON.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        json_body: Option<Vec<u8>>,
    ) -> Result<Reply, CliError> {
        let mut response = self.open(method, path, headers, json_body)?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(&e))?;
        Ok(Reply { status, etag, body })
    }

    /// Sends one request and returns the answer with its body unread (for streams).
    pub fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        json_body: Option<Vec<u8>>,
    ) -> Result<http::Response<ureq::Body>, CliError> {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            request = request.header(http::header::ACCEPT, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", token.0));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let result = match json_body {
            Some(body) => {
                let request = request
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
                self.agent.run(request)
            }
            // A write without a body says so with `Content-Length: 0` (ureq would send an
            // empty chunked body, which the API's write guard takes for a body without a type).
            None if method != Method::GET => {
                let request = request
                    .header(http::header::CONTENT_LENGTH, "0")
                    .body(Vec::new())
                    .map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
                self.agent.run(request)
            }
            None => {
                let request = request
                    .body(())
                    .map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
                self.agent.run(request)
            }
        };
        result.map_err(|e| self.transport(&e))
    }

    /// A failure below HTTP, named by the server it concerns. ureq's messages name the
    /// failure and the URL, never a header.
    fn transport(&self, e: &ureq::Error) -> CliError {
        let message = match e {
            ureq::Error::Timeout(what) => format!("no answer in time ({what})"),
            ureq::Error::Io(io) => io_reason(io),
            ureq::Error::BodyExceedsLimit(limit) => {
                format!("the answer is larger than {limit} bytes")
            }
            other => other.to_string(),
        };
        CliError::Transport {
            server: self.base.clone(),
            message,
        }
    }
}

/// `/v1/policies/<name>`, the name percent-encoded (a name from the command line may hold
/// anything; the server answers 404 for what is not a policy name).
pub fn policy_path(name: &str) -> String {
    format!("/v1/policies/{}", encode(name))
}

/// What [`encode`] escapes: all but RFC 3986's unreserved characters.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded for a path segment or a query value.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(server: Option<&str>, token_file: Option<&Path>) -> ConnectionArgs {
        ConnectionArgs {
            server: server.map(str::to_owned),
            token_file: token_file.map(Path::to_path_buf),
            timeout: Duration::from_secs(5),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_flag_beats_the_variable_beats_the_default() {
        let c = Connection::resolve(&args(None, None), None, vars(&[])).unwrap();
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.stream_server, DEFAULT_SERVER);
        assert!(c.token.is_none());

        let env = vars(&[
            ("BOIFI_SERVER", "http://10.0.0.1:9000/"),
            ("BOIFI_TOKEN", " secret-token-value \n"),
        ]);
        let c = Connection::resolve(&args(None, None), None, env.clone()).unwrap();
        assert_eq!(c.server, "http://10.0.0.1:9000");
        assert_eq!(c.stream_server, "http://10.0.0.1:9000");
        assert_eq!(c.token, Some(Token("secret-token-value".into())));

        let c = Connection::resolve(&args(Some("http://h:1/api"), None), None, env).unwrap();
        assert_eq!(c.server, "http://h:1/api");

        let env = vars(&[
            ("BOIFI_STREAM_SERVER", "http://b:8081"),
            ("BOIFI_SERVER", " "),
        ]);
        let c = Connection::resolve(&args(None, None), None, env.clone()).unwrap();
        assert_eq!(c.server, DEFAULT_SERVER, "a blank variable counts as unset");
        assert_eq!(c.stream_server, "http://b:8081");
        let c = Connection::resolve(&args(None, None), Some("http://c:1"), env).unwrap();
        assert_eq!(c.stream_server, "http://c:1");
    }

    #[test]
    fn a_token_file_beats_the_variable_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-the-file-0123456789\n").unwrap();
        let env = vars(&[("BOIFI_TOKEN", "from-the-variable-0123")]);
        let c = Connection::resolve(&args(None, Some(&path)), None, env).unwrap();
        assert_eq!(c.token, Some(Token("from-the-file-0123456789".into())));
        assert!(!format!("{c:?}").contains("from-the-file"), "{c:?}");

        std::fs::write(&path, "two words-secret\n").unwrap();
        let err = Connection::resolve(&args(None, Some(&path)), None, vars(&[])).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(err.exit_code(), 1);

        std::fs::write(&path, "\n").unwrap();
        let err = Connection::resolve(&args(None, Some(&path)), None, vars(&[])).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");

        let missing = dir.path().join("missing");
        let err = Connection::resolve(&args(None, Some(&missing)), None, vars(&[])).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    #[test]
    fn server_urls_are_checked() {
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://u:p@h:1",
            "http://h/?q",
        ] {
            let err = Connection::resolve(&args(Some(bad), None), None, vars(&[])).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
            assert!(err.to_string().contains("--server"), "{err}");
        }
        let err = Connection::resolve(&args(Some("https://h"), None), None, vars(&[])).unwrap_err();
        assert!(err.to_string().contains("port-forward"), "{err}");
    }

    #[test]
    fn names_are_encoded_in_paths() {
        assert_eq!(policy_path("reviews-abort"), "/v1/policies/reviews-abort");
        assert_eq!(policy_path("a/b c"), "/v1/policies/a%2Fb%20c");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
