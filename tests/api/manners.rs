//! WebSocket manners: a client's close is answered with its own code, and
//! input the bridge refuses ends with the code RFC 6455 gives the reason
//! (1009 too big — refused from the frame header, before the payload —, 1002
//! protocol violation, 1007 invalid UTF-8) rather than a dropped connection.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{Backend, TestApp, Ws};

/// A WebSocket client on a bare TCP socket, to send what a well-behaved
/// library never would.
struct Raw(TcpStream);

impl Raw {
    async fn open(app: &TestApp, path: &str) -> Self {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            app.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = vec![];
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Self(tcp)
    }

    /// Writes a frame header (FIN, `opcode`, a declared length, masked or
    /// not) and then `payload` (masked with a zero key).
    async fn send(&mut self, opcode: u8, declared: u64, masked: bool, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let mask = if masked { 0x80 } else { 0 };
        match declared {
            0..=125 => frame.push(mask | declared as u8),
            126..=65535 => {
                frame.push(mask | 126);
                frame.extend((declared as u16).to_be_bytes());
            }
            _ => {
                frame.push(mask | 127);
                frame.extend(declared.to_be_bytes());
            }
        }
        if masked {
            frame.extend([0, 0, 0, 0]);
        }
        frame.extend(payload);
        self.0.write_all(&frame).await.unwrap();
    }

    /// The close code the server sends, skipping other frames; `None` when
    /// the connection ends without a close frame.
    async fn close_code(&mut self) -> Option<u16> {
        let read = async {
            loop {
                let mut head = [0u8; 2];
                self.0.read_exact(&mut head).await.ok()?;
                let len = match head[1] & 0x7f {
                    126 => self.0.read_u16().await.ok()? as usize,
                    127 => self.0.read_u64().await.ok()? as usize,
                    n => n as usize,
                };
                let mut payload = vec![0; len];
                self.0.read_exact(&mut payload).await.ok()?;
                if head[0] & 0x0f == 0x8 {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.expect("an answer within 5 s")
    }
}

async fn small_frames() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| c.ws.max_frame = 1024).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_is_answered_with_its_code() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let task =
        crate::helpers::Api::new(&app, &token).post("/tasks", serde_json::json!({"title": "t"})).await.1;
    let id = task["id"].as_str().unwrap().to_string();
    for path in [format!("/ws?token={token}"), format!("/ws/tasks/{id}?token={token}")] {
        let mut ws = Ws::open(&app, &path).await;
        let _welcome =
            tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await.expect("a welcome");
        let frame = CloseFrame { code: CloseCode::Away, reason: "bye".into() };
        ws.stream.send(Message::Close(Some(frame))).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.stream.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    other => panic!("{path}: the close was not answered: {other:?}"),
                }
            }
        })
        .await
        .expect("an answer within 5 s");
        assert_eq!(reply, Some(1001), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_far_over_the_limit_is_refused_from_its_header_with_1009() {
    let app = small_frames().await;
    let mut raw = Raw::open(&app, &format!("/ws?token={}", app.admin())).await;
    // Declares 15 MiB and sends only 100 bytes: the answer cannot wait for the rest.
    raw.send(0x1, 15 << 20, true, &[b' '; 100]).await;
    assert_eq!(raw.close_code().await, Some(1009));

    // Over the limit but under 4×: an error frame, and the socket stays.
    let mut ws = Ws::connect(&app, &app.admin()).await;
    ws.send_text(format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2000))).await;
    assert_eq!(ws.recv().await["type"], "error");
    ws.send_text(format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(5000))).await;
    assert_eq!(ws.close_code().await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_1002_and_invalid_utf8_with_1007() {
    let app = small_frames().await;
    let path = format!("/ws?token={}", app.admin());

    let mut unmasked = Raw::open(&app, &path).await;
    unmasked.send(0x1, 15, false, br#"{"type":"ping"}"#).await;
    assert_eq!(unmasked.close_code().await, Some(1002));

    let mut bad_utf8 = Raw::open(&app, &path).await;
    bad_utf8.send(0x1, 4, true, &[0xff, 0xfe, 0xfd, 0xfc]).await;
    assert_eq!(bad_utf8.close_code().await, Some(1007));
}
