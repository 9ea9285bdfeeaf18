use crate::Revision;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition did not hold. `current` is the revision of the policy now stored
    /// (`None`: it does not exist).
    #[error("revision conflict (current revision: {current:?})")]
    Conflict { current: Option<Revision> },

    /// A watch asked for changes that were compacted away; reload a snapshot.
    #[error("revision {requested} is compacted (oldest available: {oldest})")]
    Compacted {
        /// The `after` revision asked for (or the last one a broken stream delivered).
        requested: Revision,
        /// The smallest `after` a watch can still start from.
        oldest: Revision,
    },

    /// The backend cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),

    /// Stored data that does not parse (written by something else, or damaged).
    #[error("corrupt data at {key}: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}
