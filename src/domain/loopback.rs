//! Which hosts no other machine reaches: the one rule behind every "loopback only" setting.

/// `localhost` or a name under it, `127.0.0.0/8`, `[::1]`: a host no other machine reaches.
/// Takes the host as text (brackets allowed) because `smtp://` is not a special scheme, so
/// `url` leaves its IP hosts as text there.
pub fn is_loopback_host(host: &str) -> bool {
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}
