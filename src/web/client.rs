//! Who is asking: the client IP (through trusted proxies only) and the browser.

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderMap, USER_AGENT};
use actix_web::{FromRequest, HttpRequest};
use ipnet::IpNet;

use crate::domain::client_info::ClientInfo;
use crate::domain::client_ip::ClientIp;
use crate::state::AppState;

/// The peer address, or — only when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries further left were
/// written by the client and prove nothing.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut forwarded: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return Some(peer);
        };
        for entry in value.split(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => forwarded.push(ip),
                // A garbled chain cannot be trusted past this point.
                Err(_) => return Some(peer),
            }
        }
    }
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(Some(peer))
}

fn trusted(req: &HttpRequest) -> &[IpNet] {
    req.app_data::<actix_web::web::Data<AppState>>()
        .map(|state| state.settings.trusted_proxies.as_slice())
        .unwrap_or(&[])
}

pub fn client_ip_of(req: &HttpRequest) -> Option<IpAddr> {
    client_ip(req.peer_addr().map(|a| a.ip()), req.headers(), trusted(req))
}

pub fn client_ip_of_service(req: &ServiceRequest) -> Option<IpAddr> {
    client_ip_of(req.request())
}

pub fn client_info(req: &HttpRequest) -> ClientInfo {
    ClientInfo::new(
        client_ip_of(req).map(ClientIp::from),
        req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()),
    )
}

/// Extractor form of [`client_info`].
pub struct Client(pub ClientInfo);

impl FromRequest for Client {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(Client(client_info(req))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append(
                "x-forwarded-for".parse().unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let got = client_ip(Some(ip("203.0.113.9")), &headers(&["1.2.3.4"]), &[]);
        assert_eq!(got, Some(ip("203.0.113.9")));
    }

    #[test]
    fn through_a_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = client_ip(
            Some(ip("10.0.0.2")),
            &headers(&["6.6.6.6, 198.51.100.7", "10.0.0.5"]),
            &trusted,
        );
        assert_eq!(got, Some(ip("198.51.100.7")));
    }

    #[test]
    fn a_garbled_chain_falls_back_to_the_peer() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = client_ip(Some(ip("10.0.0.2")), &headers(&["nonsense"]), &trusted);
        assert_eq!(got, Some(ip("10.0.0.2")));
    }
}
