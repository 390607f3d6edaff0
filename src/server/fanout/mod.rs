//! Getting a message to everyone who should hear it: the bus (in process, or across
//! instances through Redis), the reorderer, the SSE encoder, the multi-topic stream,
//! WebSocket plumbing.

pub mod bus;
pub mod redis_bus;
pub mod reorder;
pub mod sse;
pub mod topics;
pub mod ws;
