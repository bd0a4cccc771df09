//! The JSON Schemas (manifest, finding), compiled once.
