//! Behaviour from the shop: events the brand's shop system posts (`POST /ingest/v1/events`)
//! and follower files it exports (`siyu followers import`), turned into follower state
//! (counters, attributes, tags, history) that rules and segments read.
//!
//! PURE: no I/O here. The config's `[[ingest.event]]` tables are read in two stages
//! (`mapping.rs`: raw, with spans for `file:line:column` → a compiled [`Mapping`]); an
//! event is validated into an [`Event`] (`event.rs`), which the mapping turns into a
//! [`Change`] before anything is written, so every refusal happens before the store is
//! touched. `import.rs` parses the CSV import's cells. The HTTP handler
//! (`server/ingest.rs`) and the CLI (`cli/followers.rs`) do the writing.

mod event;
mod import;
mod mapping;

pub use event::{Event, Identity, Refusal, MAX_EVENTS, MAX_ID_CHARS};
pub use import::{ImportLine, ImportOutcome};
pub use mapping::{
    compile, yuan_to_fen, Change, EventType, IngestSettings, Mapping, RawIngest, UnknownFollower,
};
