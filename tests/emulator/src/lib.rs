//! emulator (in progress)
