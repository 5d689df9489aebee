//! A backend URL: parsed once, described without credentials, connected with the keep-alive
//! and timeout settings the lease relies on; failures as errors with a code.

use crate::tls::MakeRustls;
use crate::ConnState;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// A failure of the backend: `code` is stable (see the README), `message` never holds
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub code: &'static str,
    pub message: String,
}

impl BackendError {
    pub fn new(code: &'static str, message: impl Into<String>) -> BackendError {
        BackendError {
            code,
            message: message.into(),
        }
    }
}

/// Where the lock lives: a PostgreSQL server and database.
#[derive(Clone)]
pub struct Target {
    config: Config,
    /// `postgres://user@host:port/db`, for messages: no password, no parameters.
    shown: String,
    /// Identifies the target within this process (the URL itself, never shown).
    id: String,
    connect_timeout: Duration,
    /// `sslmode=require`: the TLS connector.
    tls: Option<MakeRustls>,
}

/// How long connecting may take, unless the URL says (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Target {
    /// Parses a libpq URL (`postgres://` or `postgresql://`).
    pub fn parse(url: &str) -> Result<Target, BackendError> {
        let trimmed = url.trim();
        if !(trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://")) {
            return Err(BackendError::new(
                "EBACKENDURL",
                "workspace lock backend: not a PostgreSQL URL (expected postgres://… or postgresql://…)",
            ));
        }
        let (rewritten, root_cert) = split_tls_params(trimmed);
        let mut config: Config = rewritten.parse().map_err(|e: tokio_postgres::Error| {
            // The parser's messages name options and never echo values.
            BackendError::new(
                "EBACKENDURL",
                format!("workspace lock backend: malformed PostgreSQL URL: {e}"),
            )
        })?;
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        let tls = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            Some(MakeRustls::new(root_cert.as_deref())?)
        } else {
            // TLS only when the URL asks for it: `prefer` (the default) is plain text here.
            None
        };
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        config.connect_timeout(connect_timeout);
        // A waiter sends nothing while it waits: keep-alives find a dead server or path.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(2));
        config.keepalives_interval(Duration::from_secs(1));
        config.keepalives_retries(3);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("pi-crew-workspace-lock");
        }
        let user = config.get_user().unwrap_or("");
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, p)| match h {
                // An IPv6 address in brackets, as in the URL.
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{p}"),
                Host::Tcp(name) => format!("{}:{p}", url_encoded(name)),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{p}", url_encoded(&path.to_string_lossy())),
            })
            .collect();
        // A URL again (a socket directory percent-encoded, as libpq reads it), so that
        // what messages and records show can be pasted back, less the password.
        let shown = format!(
            "postgres://{}{}/{}",
            if user.is_empty() {
                String::new()
            } else {
                format!("{}@", url_encoded(user))
            },
            hosts.join(","),
            url_encoded(config.get_dbname().unwrap_or(user))
        );
        Ok(Target {
            config,
            shown,
            id: trimmed.to_owned(),
            connect_timeout,
            tls,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The target as messages name it (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A new session, its driver task running on the runtime.
    pub(crate) async fn connect(&self) -> Result<(Client, Arc<ConnState>), BackendError> {
        let limit = self.connect_timeout + Duration::from_millis(500);
        let state = Arc::new(ConnState::default());
        let attempt = async {
            match &self.tls {
                Some(tls) => {
                    let (client, connection) = self.config.connect(tls.clone()).await?;
                    Ok::<_, tokio_postgres::Error>((client, drive(&state, connection)))
                }
                None => {
                    let (client, connection) = self.config.connect(NoTls).await?;
                    Ok((client, drive(&state, connection)))
                }
            }
        };
        let (client, driver) = match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.connect_error(&e)),
            Err(_) => {
                return Err(BackendError::new(
                    "EBACKENDCONNECT",
                    format!(
                        "workspace lock backend: cannot connect to {}: timed out after {} ms",
                        self.shown,
                        self.connect_timeout.as_millis()
                    ),
                ))
            }
        };
        if let Ok(mut d) = state.driver.lock() {
            *d = Some(driver);
        }
        // The server's side of the keep-alives, and its check of a waiter's socket, so
        // that a dead waiter leaves the queue. Best effort: the lease does not rely on them.
        let _ = client
            .simple_query(
                "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; \
                 SET tcp_keepalives_count = 3",
            )
            .await;
        let _ = client
            .simple_query("SET client_connection_check_interval = 1000")
            .await;
        // The lease needs idle_session_timeout (PostgreSQL 14).
        let version = client
            .simple_query("SHOW server_version_num")
            .await
            .map_err(|e| self.query_error("cannot read the server version", &e))?;
        let num = first_value::<u32>(&version);
        if num.is_some_and(|n| n < 140_000) {
            return Err(BackendError::new(
                "EBACKENDSERVER",
                format!(
                    "workspace lock backend: {} runs PostgreSQL older than 14 (no idle_session_timeout, which the lease needs)",
                    self.shown
                ),
            ));
        }
        Ok((client, state))
    }

    /// Cancels the statement running on a session (over TLS if the session is).
    pub(crate) async fn cancel(&self, token: tokio_postgres::CancelToken) {
        let _ = match &self.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(NoTls).await,
        };
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> BackendError {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let kind = if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                "EBACKENDAUTH"
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                "EBACKENDDB"
            } else {
                "EBACKENDSERVER"
            };
            // Without `sslmode`, sessions are plain (README, TLS); libpq's default would have
            // tried TLS first, so a URL that works with psql can be refused here.
            let refused_plain = self.tls.is_none()
                && *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && (db.message().ends_with("no encryption") || db.message().ends_with("SSL off"));
            return BackendError::new(
                kind,
                format!(
                    "workspace lock backend: {} refused the connection: {} ({}){}",
                    self.shown,
                    db.message(),
                    code.code(),
                    if refused_plain {
                        "; this package uses TLS only when the URL asks for it: add sslmode=require"
                    } else {
                        ""
                    }
                ),
            );
        }
        let text = describe(e);
        let kind = if text.contains("password") || text.contains("authentication") {
            "EBACKENDAUTH"
        } else {
            "EBACKENDCONNECT"
        };
        BackendError::new(
            kind,
            format!(
                "workspace lock backend: cannot connect to {}: {text}",
                self.shown
            ),
        )
    }

    pub(crate) fn query_error(&self, what: &str, e: &tokio_postgres::Error) -> BackendError {
        let ended = e
            .code()
            .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"));
        let code = if e.is_closed() || ended {
            "EBACKENDLOST"
        } else {
            "EBACKENDSERVER"
        };
        BackendError::new(
            code,
            format!(
                "workspace lock backend: {what} on {}: {}",
                self.shown,
                describe(e)
            ),
        )
    }

    /// A statement failed: the session's end, if that is why, else the server's error.
    pub(crate) fn lost_error(
        &self,
        doing: &str,
        e: &tokio_postgres::Error,
        state: &ConnState,
    ) -> BackendError {
        if let Some(why) = state.ended() {
            return BackendError::new(
                "EBACKENDLOST",
                format!(
                    "workspace lock backend: the session with {} ended while {doing}: {why}",
                    self.shown
                ),
            );
        }
        // The server ending the session (shutdown, restart, pg_terminate_backend, a
        // timeout) or the connection failing: SQLSTATE classes 57P and 08.
        let ended = e
            .code()
            .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"));
        if e.is_closed() || ended {
            return BackendError::new(
                "EBACKENDLOST",
                format!(
                    "workspace lock backend: the session with {} ended while {doing}",
                    self.shown
                ),
            );
        }
        self.query_error(doing, e)
    }
}

/// Runs a connection's driver on the runtime; what ended it goes to `state`.
fn drive<T>(
    state: &Arc<ConnState>,
    connection: tokio_postgres::Connection<tokio_postgres::Socket, T>,
) -> tokio::task::AbortHandle
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = state.clone();
    tokio::spawn(async move {
        let why = match connection.await {
            Ok(()) => "the server closed the connection".to_owned(),
            Err(e) => describe(&e),
        };
        if let Ok(mut ended) = state.ended.lock() {
            *ended = Some(why);
        }
        state.notify.notify_waiters();
        state.notify.notify_one();
    })
    .abort_handle()
}

/// Takes out of a URL what the client library does not parse: `sslrootcert=<file>` (kept
/// for the TLS connector), and `sslmode=verify-ca|verify-full` (made `require`: the
/// certificate is always verified here).
fn split_tls_params(url: &str) -> (String, Option<String>) {
    let Some(q) = url[url.rfind('@').unwrap_or(0)..]
        .find('?')
        .map(|i| i + url.rfind('@').unwrap_or(0))
    else {
        return (url.to_owned(), None);
    };
    let (base, query) = url.split_at(q);
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query[1..].split('&') {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => root = Some(percent_decode(v)),
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                kept.push("sslmode=require".to_owned())
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    (out, root)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error as text: the server's message and SQLSTATE, or the client's with its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The first column of the first row a simple query returned, parsed.
pub(crate) fn first_value<T: std::str::FromStr>(
    messages: &[tokio_postgres::SimpleQueryMessage],
) -> Option<T> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    })
}

/// `text` with everything but URL-unreserved characters percent-encoded.
fn url_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password() {
        let t = Target::parse("postgres://alice:s3cret@db.example:6543/locks?sslmode=disable")
            .map_err(|e| e.message)
            .unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(t.shown(), "postgres://alice@db.example:6543/locks");
        assert!(!t.shown().contains("s3cret"));
    }

    #[test]
    fn shown_targets_are_urls_that_parse_back_to_the_same_place() {
        for (url, shown) in [
            (
                "postgres://tester:pw@[::1]:5499/postgres",
                "postgres://tester@[::1]:5499/postgres",
            ),
            (
                "postgresql://me%40corp@h/my%20db",
                "postgres://me%40corp@h:5432/my%20db",
            ),
            #[cfg(unix)]
            (
                "postgres:///locks?host=/run/postgresql&port=5433",
                "postgres://%2Frun%2Fpostgresql:5433/locks",
            ),
        ] {
            let t = Target::parse(url)
                .map_err(|e| e.message)
                .unwrap_or_else(|m| panic!("{m}"));
            assert_eq!(t.shown(), shown, "{url}");
            let again = Target::parse(t.shown())
                .map_err(|e| e.message)
                .unwrap_or_else(|m| panic!("{m}"));
            assert_eq!(again.shown(), shown, "{url} shown twice");
        }
    }

    #[test]
    fn malformed_urls_have_a_code() {
        for bad in [
            "mysql://x",
            "postgres://u:p@h:notaport/db",
            "postgres://h/db?nosuch=1",
            "",
        ] {
            match Target::parse(bad) {
                Err(e) => {
                    assert_eq!(e.code, "EBACKENDURL", "{bad}");
                    assert!(!e.message.contains(":p@"), "{}", e.message);
                }
                Ok(_) => panic!("{bad} parsed"),
            }
        }
    }
}
