//! A minimal HTTP/1.1 client for the load test: one request per connection
//! (`Connection: close`), `Content-Length` or chunked bodies, body bytes handed to a callback
//! as they arrive so SSE events get their arrival time.
//!
//! ```text
//! connect -> write head + body -> read status line + headers (\r\n\r\n)
//!         -> body: chunked  { hex size \r\n, data, \r\n }* 0 \r\n\r\n
//!                  | content-length N | until EOF
//! ```
//!
//! Loopback use against ponder only: no TLS, no redirects, no keep-alive.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Status line and the headers the load test reads.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub status: u16,
    pub retry_after: Option<String>,
}

/// Bounds a response head (status line + headers) so a broken server cannot grow it forever.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Sends `method path` with `body` (JSON when non-empty) and streams the response body into
/// `on_data`. Returns the head once the whole body was read.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    mut on_data: impl FnMut(&[u8]),
) -> std::io::Result<Head> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut s = BufReader::new(stream);
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    let w = s.get_mut();
    w.write_all(req.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await?;

    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut head = Head::default();
    let mut line = String::new();
    let mut head_bytes = 0;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        let n = s.read_line(&mut line).await?;
        head_bytes += n;
        if n == 0 || head_bytes > MAX_HEAD_BYTES {
            return Err(bad(format!(
                "response head cut or too long ({head_bytes} bytes)"
            )));
        }
        let l = line.trim_end();
        if head.status == 0 {
            head.status = l
                .strip_prefix("HTTP/1.1 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad(format!("bad status line {l:?}")))?;
            continue;
        }
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(bad(format!("bad header line {l:?}")));
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => content_length = v.parse().ok(),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "retry-after" => head.retry_after = Some(v.to_string()),
            _ => {}
        }
    }

    let mut buf = vec![0u8; 16 << 10];
    if chunked {
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                return Err(bad("chunked body cut before the last chunk".into()));
            }
            let size_hex = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| bad(format!("bad chunk size {size_hex:?}")))?;
            if size == 0 {
                // Trailers (none expected) up to the empty line.
                loop {
                    line.clear();
                    if s.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut left = size;
            while left > 0 {
                let k = left.min(buf.len());
                s.read_exact(&mut buf[..k]).await?;
                on_data(&buf[..k]);
                left -= k;
            }
            let mut crlf = [0u8; 2];
            s.read_exact(&mut crlf).await?;
        }
    } else if let Some(mut left) = content_length {
        while left > 0 {
            let k = left.min(buf.len());
            s.read_exact(&mut buf[..k]).await?;
            on_data(&buf[..k]);
            left -= k;
        }
    } else {
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            on_data(&buf[..k]);
        }
    }
    Ok(head)
}

/// `GET path`, the body as text (for /metrics, /ready).
pub async fn get_text(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut body = Vec::new();
    let head = request(addr, "GET", path, &[], |d| body.extend_from_slice(d)).await?;
    Ok((head.status, String::from_utf8_lossy(&body).into_owned()))
}
