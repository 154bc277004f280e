//! Behaviour from the shop: events the brand's shop system posts (`POST /ingest/v1/events`)
//! and follower files it exports (`siyu followers import`), turned into follower state
//! (counters, attributes, tags, history) that rules and segments read.
//!
//! PURE: no I/O here. The config's `[[ingest.event]]` tables are read in two stages
//! (`mapping.rs`: raw, with spans for `file:line:column` → a compiled [`Mapping`]); an
//! event is validated into an [`Event`] (`event.rs`), which the mapping turns into a
//! [`Change`] before anything is written, so every refusal happens before the store is
//! touched. `import.rs` parses the CSV import's cells. The writing is `apply.rs` (the
//! one part that does I/O, through `&dyn Store` only): a live event from the HTTP handler
//! (`server/ingest.rs`), or an event kept for a person not known yet, applied after a
//! sync step links them; the CLI import (`cli/followers.rs`) writes its own lines.

mod apply;
mod event;
mod import;
mod mapping;

pub use apply::{Outcome, Writer};
pub use event::{Event, Identity, Refusal, MAX_EVENTS, MAX_ID_CHARS};
pub use import::{ImportLine, ImportOutcome};
pub use mapping::{
    compile, yuan_to_fen, Change, EventType, IngestSettings, Mapping, RawIngest, UnknownFollower,
};
