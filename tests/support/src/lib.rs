//! support (in progress)
