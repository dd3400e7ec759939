//! Reading a member's health and metrics listener (`--listen-metrics`) as a scraper would:
//! a plain HTTP/1.1 GET, and one value out of the Prometheus text format.

use std::io::{Read, Write};
use std::time::Duration;

/// `GET path` from the listener on `port` of loopback: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: coord\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of the metric `name` in the Prometheus text `text`; a labelled one is named with
/// its labels as the text writes them (`coord_server_writes_per_entry_bucket{le="1"}`).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// The value of the metric `name` the member whose metrics listen on `port` exports now.
///
/// # Panics
/// When the listener does not answer 200 or does not export `name`: the tests that scrape a
/// metric need it.
pub fn scrape(port: u16, name: &str) -> f64 {
    let (status, text) = http_get(port, "/metrics").expect("the metrics listener answers");
    assert_eq!(status, 200, "/metrics on port {port} answered {status}");
    metric_value(&text, name).unwrap_or_else(|| panic!("{name} is not exported on port {port}"))
}
