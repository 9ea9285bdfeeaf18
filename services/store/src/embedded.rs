//! Embedded, file-backed store for single-machine use.

use std::path::Path;

use crate::StoreError;

pub struct EmbeddedStore {
    _todo: (),
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let _ = dir;
        todo!("implemented by the store work")
    }
}
