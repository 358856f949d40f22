//! A client WebSocket session and the pieces it is made of.

pub mod close;
pub mod inspect;
pub mod relay;
pub mod request;
pub mod session;
pub mod setup;
pub mod upstream;

/// tungstenite's read buffer per socket. Its 128 KiB default is zero-filled before every read,
/// so all of it stays resident: 256 KiB per idle session over two sockets. 4 KiB holds a
/// typical Live API frame; bigger ones are read in several calls.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
