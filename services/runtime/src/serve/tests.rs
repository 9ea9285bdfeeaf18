use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// One HTTP/1.1 GET of `/`, the whole response as text.
async fn get(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    response
}

#[actix_web::test]
async fn serves_a_bound_listener_until_the_shutdown_future_completes() {
    let listener = bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let stops = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&stops);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = || {
        App::new().route(
            "/",
            web::get().to(|| async { HttpResponse::Ok().body("hello") }),
        )
    };
    let running = tokio::spawn(serve(
        listener,
        app,
        Duration::from_secs(1),
        async {
            let _ = stop_rx.await;
        },
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
        },
    ));

    let response = tokio::time::timeout(DEADLINE, get(addr))
        .await
        .expect("answered in time");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello"), "{response}");
    assert_eq!(stops.load(Ordering::SeqCst), 0, "still serving");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("server result");
    assert_eq!(stops.load(Ordering::SeqCst), 1, "before_stop runs once");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[test]
fn a_bind_error_names_the_variable_and_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = bind(&addr).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("BOIFI_LISTEN_ADDR {addr}: ")),
        "{err}"
    );
}
