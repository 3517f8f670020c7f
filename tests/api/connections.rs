//! Connection-level abuse: idle and slow-header connections must not keep feeds from others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::{DEMO_A_KEY, spawn_app_with};

#[actix_rt::test]
async fn five_hundred_idle_or_slow_header_connections_do_not_stop_feeds() {
    let app = spawn_app_with(&[("server.client_request_timeout_ms", 1000.into())]).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for i in 0..500 {
        let mut conn = TcpStream::connect(&addr).expect("connects");
        if i % 2 == 0 {
            // Slowloris: a request head that never ends.
            conn.write_all(b"GET /v1/tenants/demo-a/feed?user_id=u1 HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        held.push(conn);
    }
    for i in 0..20 {
        let res = app
            .feed("demo-a", DEMO_A_KEY, &format!("user_id=u{i}"))
            .await;
        assert_eq!(
            res.status(),
            200,
            "feeds are served beside 500 idle connections"
        );
    }
    // And the server lets go of them: each is closed (EOF, or a 408 then EOF) once its head
    // did not arrive within client_request_timeout_ms.
    let closed = tokio::task::spawn_blocking(move || {
        held.into_iter()
            .filter(|conn| {
                let mut conn = conn;
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).is_ok()
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 500);
}
