//! The channel to Caddy's admin API: plain HTTP (`http://127.0.0.1:2019`, for a Caddy on the host) or HTTP/1.1 over
//! a unix socket (`unix:///run/caddy/admin.sock`), which only processes that can open the socket file reach, so apps
//! on the networks Caddy joins cannot rewrite the proxy.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Where the admin API listens.
#[derive(Debug, Clone)]
pub(super) enum AdminEndpoint {
    Http { base: String, client: reqwest::Client },
    Unix { socket: PathBuf },
}

/// An admin API answer: status and body.
pub(super) struct AdminResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl AdminEndpoint {
    /// `unix:///path` is a socket; anything else is an HTTP base URL.
    pub(super) fn parse(admin: &str) -> AdminEndpoint {
        match admin.strip_prefix("unix://") {
            Some(path) => AdminEndpoint::Unix { socket: PathBuf::from(path) },
            None => {
                AdminEndpoint::Http { base: admin.trim_end_matches('/').to_owned(), client: reqwest::Client::new() }
            }
        }
    }

    /// Sends one request; `Err` carries why Caddy could not be reached.
    pub(super) async fn request(
        &self,
        method: &str,
        path: &str,
        json_body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<AdminResponse, String> {
        match self {
            AdminEndpoint::Http { base, client } => {
                let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
                let mut request = client.request(method, format!("{base}{path}")).timeout(timeout);
                if let Some(body) = json_body {
                    request = request.header("Content-Type", "application/json").body(body);
                }
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = response.bytes().await.map_err(|e| e.to_string())?.to_vec();
                Ok(AdminResponse { status, body })
            }
            AdminEndpoint::Unix { socket } => {
                tokio::time::timeout(timeout, unix_request(socket, method, path, json_body))
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            }
        }
    }
}

/// One HTTP/1.1 exchange over a fresh connection to the socket; admin calls are few, so no pooling.
async fn unix_request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    json_body: Option<Vec<u8>>,
) -> Result<AdminResponse, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    // Caddy allows only an empty Host on a socket (RFC 9112: no host name in the URI).
    let mut request = hyper::Request::builder().method(method).uri(path).header("Host", "");
    if json_body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request = request.body(Full::new(Bytes::from(json_body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
        Ok(AdminResponse { status, body })
    }
    .await;
    driver.abort();
    result
}
