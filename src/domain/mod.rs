//! Values parsed once at the edge; the rest of the code can only hold valid ones.

pub mod app_origin;
pub mod approval_number;
pub mod break_glass_reason;
pub mod client_info;
pub mod client_ip;
pub mod code;
pub mod digests;
pub mod email_address;
pub mod group_name;
pub mod ids;
pub mod loopback;
pub mod member_name;
pub mod next_path;
pub mod oidc;
pub mod role;
pub mod text;
pub mod token;
pub mod user_agent;
