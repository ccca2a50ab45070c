//! The known event types and their example payloads live in [`crate::examples`], shared with
//! the command line.

pub use crate::examples::{KNOWN_TYPES, payload};
