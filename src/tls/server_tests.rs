//! [`ClientStream`] over TLS against a tokio-rustls client: the readiness interface must hand
//! over every byte in order across partial reads and writes, and report the end of the stream.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A listener config for 127.0.0.1 and a client config trusting it.
fn configs() -> (ClientTls, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = ClientTls {
        config: Arc::new(ArcSwap::from_pointee(server)),
        handshake_timeout: Duration::from_secs(10),
    };
    (tls, Arc::new(client))
}

/// A connected pair: the proxy's side and a tokio-rustls client.
async fn pair() -> (ClientStream, tokio_rustls::client::TlsStream<TcpStream>) {
    let (tls, client_config) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        tokio_rustls::TlsConnector::from(client_config)
            .connect(name, tcp)
            .await
            .unwrap()
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let server = accept(Some(&tls), tcp).await.expect("handshake");
    assert!(server.is_tls());
    (server, client.await.unwrap())
}

/// Byte `i` of the test stream.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::test]
async fn writes_resume_in_order_after_the_socket_fills_up() {
    let (mut server, mut client) = pair().await;
    const TOTAL: usize = 8 << 20;
    let writer = tokio::spawn(async move {
        // The session's pattern: append to one buffer, write what the socket takes, retry the
        // same (grown) buffer after WouldBlock.
        let mut wbuf = BytesMut::new();
        let mut produced = 0;
        let mut blocked = 0;
        while produced < TOTAL || !wbuf.is_empty() {
            if produced < TOTAL {
                let n = (TOTAL - produced).min(100_000);
                wbuf.extend((produced..produced + n).map(pattern));
                produced += n;
            }
            match server.try_write(&wbuf) {
                Ok(n) => wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked += 1;
                    server.writable().await.unwrap();
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        server.shutdown().await.unwrap();
        blocked
    });
    let mut got = Vec::with_capacity(TOTAL);
    client.read_to_end(&mut got).await.unwrap();
    let blocked = writer.await.unwrap();
    assert!(
        blocked > 0,
        "the socket never filled up: nothing was tested"
    );
    assert_eq!(got.len(), TOTAL);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

#[tokio::test]
async fn reads_drain_records_into_small_buffers_and_see_the_end() {
    let (mut server, mut client) = pair().await;
    const TOTAL: usize = 1 << 20;
    let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
    tokio::spawn(async move {
        for chunk in data.chunks(3000) {
            client.write_all(chunk).await.unwrap();
        }
        client.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    loop {
        server.readable().await.unwrap();
        // A small buffer leaves plaintext inside rustls: readable() must still fire for it.
        let mut buf = BytesMut::with_capacity(1000);
        match server.try_read_buf(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert_eq!(n, buf.len());
                got.extend_from_slice(&buf);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    assert_eq!(got.len(), TOTAL);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

#[tokio::test]
async fn plaintext_client_is_told_to_use_tls() {
    let (tls, _) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PING\r\n").await.unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        got
    });
    let (tcp, _) = listener.accept().await.unwrap();
    assert!(accept(Some(&tls), tcp).await.is_none());
    assert_eq!(client.await.unwrap(), PLAINTEXT_REFUSED);
}
