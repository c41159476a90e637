//! The failure every reply can carry: a kind the program can branch on and a sentence for the
//! user.

use serde::{Deserialize, Serialize};

/// What kind of failure an [`ErrorReply`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No session with that id.
    NotFound,
    /// The name is taken on this node.
    NameTaken,
    /// The client is not authorized.
    Unauthorized,
    /// The request is not valid.
    BadRequest,
    /// A configured limit would be exceeded.
    Limit,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// Something failed on the node.
    Internal,
}

/// A failure, with a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// One sentence that says what failed and what to do next.
    pub message: String,
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
