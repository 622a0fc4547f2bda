//! Where a request came from, parsed once at the edge: its address (as the trusted-proxy
//! rules see it) and its User-Agent, cut to a length worth keeping.

use super::client_ip::ClientIp;
use super::text::cut_to;

/// Where a request came from, as recorded in the audit (and on sessions and sign-in requests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept; the rest is noise or an attack.
const MAX_USER_AGENT: usize = 512;

impl ClientInfo {
    pub fn new(ip: Option<ClientIp>, user_agent: Option<&str>) -> Self {
        Self {
            ip,
            user_agent: user_agent.map(|agent| cut_to(agent, MAX_USER_AGENT).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(400);
        let client = ClientInfo::new(None, Some(&long));
        let agent = client.user_agent.unwrap();
        assert!(agent.len() <= MAX_USER_AGENT);
        assert!(agent.chars().all(|c| c == 'é'));
    }
}
