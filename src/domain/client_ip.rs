use std::fmt;
use std::net::IpAddr;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Inet;
use ipnet::IpNet;

/// The address a request came from (see `web::client`), stored as PostgreSQL `inet`: one
/// host, never a network. Reading a row whose `inet` carries a prefix shorter than a host's
/// is an error rather than an address quietly taken from a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Inet)]
pub struct ClientIp(IpAddr);

impl From<IpAddr> for ClientIp {
    fn from(ip: IpAddr) -> Self {
        ClientIp(ip)
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ClientIp {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(ClientIp)
    }
}

impl ToSql<Inet, Pg> for ClientIp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <IpNet as ToSql<Inet, Pg>>::to_sql(&IpNet::from(self.0), &mut out.reborrow())
    }
}

impl FromSql<Inet, Pg> for ClientIp {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let net = <IpNet as FromSql<Inet, Pg>>::from_sql(bytes)?;
        if net.prefix_len() != net.max_prefix_len() {
            return Err(format!("{net} is a network, not a client address").into());
        }
        Ok(ClientIp(net.addr()))
    }
}

/// As text, for pages and templates.
impl serde::Serialize for ClientIp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}
