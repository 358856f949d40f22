//! A client WebSocket session and the pieces it is made of.

pub mod close;
pub mod inspect;
pub mod relay;
pub mod request;
pub mod session;
pub mod setup;
pub mod upstream;
