//! A real axum server on a loopback port, for the real-socket tests.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An axum server on `127.0.0.1:0`, stopped when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` the way the README says: with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub async fn serve(app: axum::Router) -> Server {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, task }
}

/// Serves `app` without connect info: no peer address in any request.
pub async fn serve_without_connect_info(app: axum::Router) -> Server {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

/// The most any one request may take, connection included.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET path` with `headers` on a new HTTP/1 connection from the loopback
/// address `from` (so the server sees distinct peers): the status and the
/// response headers, the body read to its end. Panics after [`TIMEOUT`].
pub async fn get(
    to: SocketAddr,
    from: Ipv4Addr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap) {
    tokio::time::timeout(TIMEOUT, send(to, from, path, headers))
        .await
        .expect("request timed out")
}

async fn send(
    to: SocketAddr,
    from: Ipv4Addr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap) {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::get(path).header("host", to.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    // Read the body to its end, then let the connection close.
    body.collect().await.unwrap();
    drop(sender);
    conn.await.unwrap().unwrap();
    (parts.status.as_u16(), parts.headers)
}
