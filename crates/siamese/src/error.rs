//! The crate's error type.

/// Everything that can go wrong in twinseal-siamese.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device error, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model configuration is inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A model file is malformed or of an unsupported format.
    #[error("invalid model file: {0}")]
    Format(String),
    /// A dataset could not be read or is malformed.
    #[error("dataset {path}: {detail}")]
    Dataset {
        /// The file or directory concerned.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An image could not be decoded.
    #[error("image {path}: {detail}")]
    Image {
        /// The image's file name (or `<memory>`).
        path: String,
        /// Why it could not be used.
        detail: String,
    },
    /// Input to a model call is malformed (wrong size, mismatched batches).
    #[error("invalid input: {0}")]
    Input(String),
    /// Training options are inconsistent or training failed.
    #[error("training: {0}")]
    Training(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn dataset(path: impl AsRef<std::path::Path>, detail: impl Into<String>) -> Self {
        Self::Dataset {
            path: path.as_ref().display().to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
