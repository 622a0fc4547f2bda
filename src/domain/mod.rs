//! Values parsed once at the edge; the rest of the code can only hold valid ones.

pub mod email_address;
