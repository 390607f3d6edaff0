//! Who is asking and what they may hold: sessions and stream tokens, the signing secret, sliding-window limits, the registry of live streams.

pub mod identity;
pub mod limiter;
pub mod secret;
pub mod streams;
pub mod token;
