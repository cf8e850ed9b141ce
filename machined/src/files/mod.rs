//! Files on the node: where things are kept, opening beneath a directory, and writes that
//! survive a power cut.

pub mod beneath;
pub mod durable;
pub mod layout;
