//! A tiny HTTP/1.1 client over raw TCP (no HTTP client dependency), enough for `/healthz`,
//! `/readyz`, `/metrics`, `POST /publish` and handshake refusals. Handles `Content-Length`, chunked bodies and
//! read-to-close.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl HttpResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` with the given extra request headers (and `Connection: close` unless
/// they set `Connection`).
/// Panics on I/O errors or after the default timeout.
pub async fn http_get_with(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
    tokio::time::timeout(TIMEOUT, get(addr, path, extra))
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET path` on `addr`. Panics on I/O errors or after the default timeout.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_get_with(addr, path, &[]).await
}

/// `GET path` on `addr`, or `None` when no answer came within `timeout`. Panics on I/O errors.
pub async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> Option<HttpResponse> {
    let got = tokio::time::timeout(timeout, get(addr, path, &[]))
        .await
        .ok()?;
    Some(got.unwrap_or_else(|e| panic!("GET {path}: {e}")))
}

/// `GET path` on `addr`, or `None` on any failure (refused, reset, no answer within
/// `timeout`): for polling a server that may not listen yet.
pub(crate) async fn poll_http_get(
    addr: SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> Option<HttpResponse> {
    tokio::time::timeout(timeout, get(addr, path, &[]))
        .await
        .ok()?
        .ok()
}

/// `METHOD path` on `addr` with extra headers and a body (sent with `Content-Length`).
/// Panics on I/O errors or after the default timeout.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    tokio::time::timeout(TIMEOUT, send(addr, method, path, extra, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
    send(addr, "GET", path, extra, &[]).await
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    // The server may keep the connection open despite `Connection: close` once the body is
    // complete; stop reading as soon as a complete response is parsed.
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(resp) = parse(&raw, false)? {
            return Ok(resp);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return parse(&raw, true)?
                .ok_or_else(|| anyhow::anyhow!("connection closed mid-response"));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Parses a complete response from `raw`, or `None` when more bytes are needed. `eof` says
/// the peer closed (a body without length ends there).
fn parse(raw: &[u8], eof: bool) -> anyhow::Result<Option<HttpResponse>> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body_raw = &raw[head_end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body: Vec<u8> = if let Some(len) = find("content-length") {
        let len: usize = len.parse()?;
        if body_raw.len() < len {
            return Ok(None);
        }
        body_raw[..len].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match dechunk(body_raw)? {
            Some(b) => b,
            None => return Ok(None),
        }
    } else if eof || status == 204 || status == 304 || (100..200).contains(&status) {
        body_raw.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Sums the samples of metric `name` (all label sets) in a Prometheus text exposition.
/// `None` when the metric has no sample.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if rest.starts_with('{') {
            match rest.find('}') {
                Some(i) => &rest[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // another metric sharing the prefix
        };
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{metric_value, parse};

    #[test]
    fn parses_lengths_and_chunks() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok", false)
                .unwrap()
                .is_none()
        );
        let r = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, "abc");
    }

    #[test]
    fn sums_metric_samples() {
        let text =
            "# TYPE a counter\na_total{x=\"1\"} 2\na_total{x=\"2\"} 3\na_total_more 9\nb 1\n";
        assert_eq!(metric_value(text, "a_total"), Some(5.0));
        assert_eq!(metric_value(text, "b"), Some(1.0));
        assert_eq!(metric_value(text, "c"), None);
    }
}
