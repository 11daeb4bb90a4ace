//! A pooled HTTP/1.1 client whose responses carry their whole body, and a
//! loopback server helper.

use std::net::SocketAddr;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Keep-alive connections, opened as needed (no cap), TCP_NODELAY.
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Client<HttpConnector, String>,
}

impl HttpClient {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `req` and reads the body.
    pub(crate) async fn send(
        &self,
        req: http::Request<String>,
    ) -> Result<http::Response<String>, std::io::Error> {
        let response = self
            .inner
            .request(req)
            .await
            .map_err(std::io::Error::other)?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(http::Response::from_parts(
            parts,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }
}

/// Serves `app` on a free loopback port until the runtime stops.
pub(crate) async fn serve(app: axum::Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("[lab] server on {addr} stopped: {e}");
        }
    });
    Ok(addr)
}
