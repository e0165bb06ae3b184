//! Hostile or broken input: each gets its error, nothing changes, and the
//! daemon keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use pod_proto::{frame, Hello, WireError, PROTOCOL_VERSION};
use pod_registry::{Reply, Request, WireRule};
use scope::Permission;

fn raw(home: &Home) -> UnixStream {
    let s = UnixStream::connect(home.dirs.registry_socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s
}

/// Reads one reply frame; `None` at end of stream.
fn read_reply(s: &mut UnixStream) -> Option<Result<Reply, WireError>> {
    let mut header = [0u8; 4];
    match s.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("read: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).expect("body");
    Some(frame::decode(&body).expect("reply decodes"))
}

fn error_code(s: &mut UnixStream) -> WireError {
    match read_reply(s) {
        Some(Err(w)) => w,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn assert_closed(s: &mut UnixStream) {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to end");
    assert!(rest.is_empty(), "connection should be closed after the error frame");
}

fn handshake(s: &mut UnixStream) {
    let hello = Hello { protocol: PROTOCOL_VERSION, client: "bad-input test".into() };
    s.write_all(&frame::encode(&hello).expect("encode")).expect("send hello");
    let mut header = [0u8; 4];
    s.read_exact(&mut header).expect("welcome header");
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).expect("welcome body");
    let welcome: Result<pod_proto::Welcome, WireError> = frame::decode(&body).expect("decode");
    assert_eq!(welcome.expect("welcome").protocol, PROTOCOL_VERSION);
}

async fn still_serving(home: &Home, name: &str) {
    let mut c = client(home).await;
    c.register(&reg(name, vec![w(&format!("/ok/{name}"))])).await.expect("daemon still serves");
}

async fn unchanged(home: &Home, expected: usize) {
    assert_eq!(client(home).await.list().await.expect("list").len(), expected, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_get_a_bad_frame_error_and_close_only_that_connection() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut bystander = client(&home).await;
    // Before the handshake.
    let mut s = raw(&home);
    s.write_all(b"\x00\x00\x00\x05hello").expect("send");
    assert_eq!(error_code(&mut s).code, "proto.bad_frame");
    assert_closed(&mut s);
    // After the handshake.
    let mut s = raw(&home);
    handshake(&mut s);
    s.write_all(b"\x00\x00\x00\x04\xc1\xc1\xc1\xc1").expect("send");
    assert_eq!(error_code(&mut s).code, "proto.bad_frame");
    assert_closed(&mut s);
    unchanged(&home, 0).await;
    bystander.register(&reg("bystander", vec![w("/b")])).await.expect("other connections unaffected");
    still_serving(&home, "after-garbage").await;
}

/// A frame that decodes to no request (an unknown one, its name 100 KB
/// with a terminal escape in it) gets one bounded line back, nothing of it
/// unescaped, and only that connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_frame_is_refused_in_a_bounded_escaped_line() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut s = raw(&home);
    handshake(&mut s);
    let name = format!("\u{1b}[2J{}", "A".repeat(100_000));
    let garbled = std::collections::BTreeMap::from([(name, 0u8)]);
    s.write_all(&frame::encode(&garbled).expect("encode")).expect("send");
    let e = error_code(&mut s);
    insta::assert_snapshot!(format!("{} [{}]", e.message, e.code));
    assert_closed(&mut s);
    still_serving(&home, "after-garbled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_length_prefix_is_refused_without_reading_it() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut s = raw(&home);
    handshake(&mut s);
    s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).expect("send");
    let e = error_code(&mut s);
    insta::assert_snapshot!(format!("{} [{}]", e.message, e.code), @"frame of 4294967295 bytes is larger than the limit of 1114112 bytes [proto.frame_too_large]");
    assert_closed(&mut s);
    unchanged(&home, 0).await;
    still_serving(&home, "after-oversize").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_is_reported_as_truncated() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut s = raw(&home);
    handshake(&mut s);
    let whole = frame::encode(&Request::Release { id: None, name: "victim".into() }).expect("encode");
    s.write_all(&whole[..whole.len() - 3]).expect("send");
    s.shutdown(Shutdown::Write).expect("half close");
    assert_eq!(error_code(&mut s).code, "proto.truncated");
    assert_closed(&mut s);
    still_serving(&home, "after-truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_version_is_refused_naming_both_versions() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut s = raw(&home);
    let hello = Hello { protocol: 99, client: "from the future".into() };
    s.write_all(&frame::encode(&hello).expect("encode")).expect("send");
    let e = error_code(&mut s);
    let line = format!("{} [{}]", e.message, e.code).replace(&format!("speaks {PROTOCOL_VERSION},"), "speaks <ours>,");
    insta::assert_snapshot!(line, @"protocol version mismatch: this side speaks <ours>, the peer speaks 99 [proto.version_mismatch]");
    assert_closed(&mut s);
    still_serving(&home, "after-version").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_and_invalid_names_are_refused_and_the_connection_stays_usable() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    let register = |name: &str, target: &str| Request::Register {
        id: None,
        name: name.into(),
        pid: std::process::id(),
        socket: String::new(),
        session: String::new(),
        allow: vec![WireRule { target: target.into(), permission: Permission::Write, recursive: true }],
        deny: vec![],
        layers: Default::default(),
        scratch: vec![],
    };
    let e = c.call(&register("rel", "repo/src")).await.expect_err("relative");
    assert_eq!(e.code(), "path.not_absolute");
    let e = c.call(&register("Bad Name", "/repo")).await.expect_err("name");
    assert_eq!(e.code(), "name.bad_char");
    let e = c.call(&register(".hidden", "/repo")).await.expect_err("name");
    assert_eq!(e.code(), "name.bad_start");
    let e = c.call(&Request::Check { name: "x".into(), path: "a/b".into(), permission: Permission::Read }).await;
    assert_eq!(e.expect_err("relative").code(), "path.not_absolute");
    unchanged(&home, 0).await;
    // The same connection still works, and paths are stored normalized.
    let Reply::Allocation(a) = c.call(&register("norm", "/repo/./src/../lib//")).await.expect("ok") else {
        panic!("reply")
    };
    assert_eq!(a.allow[0].target.as_str(), "/repo/lib");
}
