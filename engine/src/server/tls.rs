//! RTSPS: RTSP (and HTTP, and RTSP-over-HTTP tunnels) over TLS, with
//! `rustls` on its `ring` provider.
//!
//! TLS ends on the control core. Each TLS connection gets a local socket
//! pair: this module's relay moves bytes between the client's TLS stream
//! and one end, and the other end goes through the very connection loop a
//! plain connection goes through, as if the client had connected in the
//! clear. That end is an ordinary stream socket, so everything the server
//! does with a connection works unchanged: an interleaved session moves it
//! to its shard by descriptor, a tunnel pairs its two legs by cookie, and
//! a slow reader fills the pair's buffer and then the shard's bounded queue
//! exactly as it fills a TCP send buffer. The price is one more copy of
//! each byte and the encryption on the control core; for the few clients
//! that ask for TLS on a box sized for thousands of plain sessions, that is
//! the right trade against carrying TLS state across cores.
//!
//! What is not TLS is refused cleanly: a connection whose first byte is not
//! a TLS handshake record gets a plain `400` (in RTSP, or HTTP if it spoke
//! HTTP) and is closed, so a client configured with the wrong scheme is
//! told; a broken handshake is closed without a word.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls::{self, ServerConfig};
use futures_rustls::TlsAcceptor;
use glommio::net::{TcpStream, UnixStream};
use tracing::debug;

use crate::config::TlsFiles;

/// The first byte of a TLS record carrying a handshake (RFC 8446 5.1).
const HANDSHAKE_RECORD: u8 = 0x16;
/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes moved at a time by the relay: a few interleaved packets.
const RELAY_CHUNK: usize = 16 * 1024;

/// Reads the certificate chain and key and builds the server's TLS
/// settings; the error says which file and why.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("private key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("certificate {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("certificate {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// What became of a TLS connection's start.
pub enum Start {
    /// Handshake done: the plain end of the relay, to serve as a connection.
    Plain(TcpStream),
    /// Not TLS, or a failed handshake: closed (after a plain 400 when the
    /// client spoke in the clear).
    Refused,
}

/// Completes the TLS handshake on `stream` and starts the relay.
pub async fn start(stream: TcpStream, config: Arc<ServerConfig>) -> Start {
    let client = stream.peer_addr().ok();
    let mut first = [0u8; 1];
    let peeked = glommio::timer::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(1) if first[0] == HANDSHAKE_RECORD => {}
        Ok(1) => {
            debug!(?client, "not TLS on an RTSPS port; answered 400");
            refuse_plain(stream, first[0]).await;
            return Start::Refused;
        }
        _ => return Start::Refused,
    }
    let accepted = glommio::timer::timeout(HANDSHAKE_TIMEOUT, async {
        TlsAcceptor::from(config)
            .accept(stream)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await;
    let tls = match accepted {
        Ok(t) => t,
        Err(e) => {
            debug!(?client, error = %e, "TLS handshake failed; closing");
            return Start::Refused;
        }
    };
    let (outer, inner) = match pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot make a socket pair for a TLS connection");
            return Start::Refused;
        }
    };
    // SAFETY: `pair` made these descriptors and nothing else owns them;
    // each is given to exactly one stream, which closes it.
    let outer = unsafe { UnixStream::from_raw_fd(outer.into_raw_fd()) };
    // SAFETY: as above. A glommio `TcpStream` only sends and receives on its
    // descriptor, which a local stream socket does as a TCP one does.
    let inner = unsafe { TcpStream::from_raw_fd(inner.into_raw_fd()) };
    glommio::spawn_local(relay(tls, outer)).detach();
    Start::Plain(inner)
}

/// A plain-text 400 to a client that spoke RTSP or HTTP to the TLS port.
async fn refuse_plain(mut stream: TcpStream, first: u8) {
    if first.is_ascii_uppercase() {
        let mut head = [0u8; 512];
        let n = glommio::timer::timeout(Duration::from_secs(1), stream.peek(&mut head))
            .await
            .unwrap_or(0);
        let line = head[..n].split(|&b| b == b'\n').next().unwrap_or_default();
        let answer: &[u8] = if line.windows(5).any(|w| w == b"HTTP/") {
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"RTSP/1.0 400 Bad Request\r\n\r\n"
        };
        let _ = stream.write_all(answer).await;
    }
    let _ = stream.close().await;
}

fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    a.set_cloexec(true)?;
    b.set_cloexec(true)?;
    Ok((a.into(), b.into()))
}

/// Moves bytes both ways until either side ends; then ends the other.
async fn relay(tls: futures_rustls::server::TlsStream<TcpStream>, outer: UnixStream) {
    let (mut tls_rx, mut tls_tx) = futures_lite::io::split(tls);
    let (mut local_rx, mut local_tx) = futures_lite::io::split(outer);
    let up = async {
        let mut buf = vec![0u8; RELAY_CHUNK];
        loop {
            match tls_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if local_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The client is done: the loop sees the end of its stream.
        let _ = local_tx.close().await;
    };
    let down = async {
        let mut buf = vec![0u8; RELAY_CHUNK];
        loop {
            match local_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tls_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The server closed the connection: close_notify, then the socket.
        let _ = tls_tx.close().await;
    };
    // Either direction's end ends the connection: a client that closed
    // its TLS stream is gone, and a server that closed its end is done.
    futures_lite::future::or(
        async {
            up.await;
        },
        down,
    )
    .await;
}
