//! The channel to Caddy's admin API: plain HTTP (`http://127.0.0.1:2019`, for a Caddy on the host) or HTTP/1.1 over
//! a unix socket (`unix:///run/caddy/admin.sock`), which only processes that can open the socket file reach, so apps
//! on the networks Caddy joins cannot rewrite the proxy.
//!
//! Both are one HTTP/1.1 exchange on a fresh connection through hyper. A general HTTP client (reqwest) is not used:
//! building one loads and parses the system's CA certificates for TLS the admin API never speaks, which cost every
//! `plan` and `apply` several milliseconds (a third of a no-op apply) even when Caddy is not running.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AdminEndpoint {
    /// `http://HOST[:PORT][/PREFIX]`: `address` is what to connect to, `host` the `Host` header (as written),
    /// `prefix` goes before every path.
    Tcp {
        address: String,
        host: String,
        prefix: String,
    },
    Unix {
        socket: PathBuf,
    },
    /// An address in another form; every request fails saying how to write it.
    Unsupported {
        admin: String,
    },
}

/// Why Caddy's admin API could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Socket(#[source] std::io::Error),
    #[error("`{admin}` is not an admin address; write it as http://HOST:PORT or unix:///PATH")]
    Unsupported { admin: String },
    #[error("no answer within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] hyper::http::Error),
}

/// An admin API answer: status and body.
pub(super) struct AdminResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl AdminEndpoint {
    /// `unix:///path` is a socket, `http://host:port` a TCP address (port 80 when omitted).
    pub(super) fn parse(admin: &str) -> AdminEndpoint {
        if let Some(path) = admin.strip_prefix("unix://") {
            return AdminEndpoint::Unix { socket: PathBuf::from(path) };
        }
        let Some(rest) = admin.strip_prefix("http://").filter(|rest| !rest.is_empty() && !rest.starts_with('/')) else {
            return AdminEndpoint::Unsupported { admin: admin.to_owned() };
        };
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(authority, prefix)| (authority, prefix));
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']'))
        });
        let address = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        let prefix = prefix.trim_end_matches('/');
        AdminEndpoint::Tcp {
            address,
            host: authority.to_owned(),
            prefix: if prefix.is_empty() { String::new() } else { format!("/{prefix}") },
        }
    }

    /// Sends one request; `Err` carries why Caddy could not be reached.
    pub(super) async fn request(
        &self,
        method: &str,
        path: &str,
        json_body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<AdminResponse, AdminError> {
        self.request_if_match(method, path, json_body, None, timeout).await
    }

    /// [`AdminEndpoint::request`] with an `If-Match` header: Caddy then changes its config only if it is still the
    /// one `if_match` names, and answers 412 otherwise.
    pub(super) async fn request_if_match(
        &self,
        method: &str,
        path: &str,
        json_body: Option<Vec<u8>>,
        if_match: Option<&str>,
        timeout: Duration,
    ) -> Result<AdminResponse, AdminError> {
        let exchange = async {
            match self {
                AdminEndpoint::Tcp { address, host, prefix } => {
                    let stream = tokio::net::TcpStream::connect(address.as_str())
                        .await
                        .map_err(|source| AdminError::Connect { address: address.clone(), source })?;
                    // Nagle would hold the body back until the headers are acknowledged.
                    stream.set_nodelay(true).map_err(AdminError::Socket)?;
                    exchange(stream, host, method, &format!("{prefix}{path}"), json_body, if_match).await
                }
                AdminEndpoint::Unix { socket } => {
                    let stream = tokio::net::UnixStream::connect(socket)
                        .await
                        .map_err(|source| AdminError::Connect { address: socket.display().to_string(), source })?;
                    // Caddy allows only an empty Host on a socket (RFC 9112: no host name in the URI).
                    exchange(stream, "", method, path, json_body, if_match).await
                }
                AdminEndpoint::Unsupported { admin } => Err(AdminError::Unsupported { admin: admin.clone() }),
            }
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| AdminError::Timeout { timeout })?
    }
}

/// One HTTP/1.1 exchange over a fresh connection; admin calls are few, so no pooling.
async fn exchange(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    host: &str,
    method: &str,
    path: &str,
    json_body: Option<Vec<u8>>,
    if_match: Option<&str>,
) -> Result<AdminResponse, AdminError> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(AdminError::Http)?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("Host", host);
    if json_body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    if let Some(etag) = if_match {
        request = request.header("If-Match", etag);
    }
    let request = request.body(Full::new(Bytes::from(json_body.unwrap_or_default()))).map_err(AdminError::Request)?;
    let result = async {
        let response = sender.send_request(request).await.map_err(AdminError::Http)?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(AdminError::Http)?.to_bytes().to_vec();
        Ok(AdminResponse { status, body })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(address: &str, host: &str, prefix: &str) -> AdminEndpoint {
        AdminEndpoint::Tcp { address: address.to_owned(), host: host.to_owned(), prefix: prefix.to_owned() }
    }

    #[test]
    fn admin_addresses_are_read_as_caddy_writes_them() {
        assert_eq!(AdminEndpoint::parse("http://127.0.0.1:2019"), tcp("127.0.0.1:2019", "127.0.0.1:2019", ""));
        assert_eq!(AdminEndpoint::parse("http://localhost:2019/"), tcp("localhost:2019", "localhost:2019", ""));
        assert_eq!(AdminEndpoint::parse("http://[::1]:2019/caddy/"), tcp("[::1]:2019", "[::1]:2019", "/caddy"));
        assert_eq!(AdminEndpoint::parse("http://caddy"), tcp("caddy:80", "caddy", ""));
        assert_eq!(AdminEndpoint::parse("http://[::1]"), tcp("[::1]:80", "[::1]", ""));
        assert_eq!(
            AdminEndpoint::parse("unix:///run/caddy/admin.sock"),
            AdminEndpoint::Unix { socket: PathBuf::from("/run/caddy/admin.sock") }
        );
        for unsupported in ["https://127.0.0.1:2019", "127.0.0.1:2019", "http://"] {
            assert_eq!(AdminEndpoint::parse(unsupported), AdminEndpoint::Unsupported { admin: unsupported.to_owned() });
        }
    }

    #[tokio::test]
    async fn an_unsupported_address_says_how_to_write_it() {
        let error = AdminEndpoint::parse("https://127.0.0.1:2019")
            .request("GET", "/config/", None, Duration::from_secs(1))
            .await
            .err()
            .expect("refused");
        assert!(matches!(error, AdminError::Unsupported { .. }), "{error:?}");
        assert!(error.to_string().contains("http://HOST:PORT or unix:///PATH"), "{error}");
    }
}
