//! The one error a configuration file of Axiom's gives (rules, agent profiles): `file:line:
//! reason`, or the file could not be read. Both parsers build it the same way, from a byte
//! offset into the text they were given.

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{origin}:{line}: {reason}")]
    At {
        origin: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// An error at byte `offset` of `text`, the contents of `origin`.
    pub fn at(origin: &str, text: &str, offset: usize, reason: String) -> Self {
        FileError::At {
            origin: origin.into(),
            line: line_of(text, offset),
            reason,
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
