//! Channels: playlists of movies played as never-ending live streams, the
//! job of DSS's PlaylistBroadcaster, without IO.
//!
//! - [`playlist`] reads DSS's `*PLAY-LIST*` files and M3U/M3U8 lists into an
//!   owned [`Playlist`](playlist::Playlist), with each broken line reported
//!   by file and line and skipped.
//! - [`picker`] chooses what plays next: `sequential`, `sequential_looped`
//!   and `weighted_random` with DSS's no-repeat window, deterministic for a
//!   seed; movies inserted to play next; the upcoming list; reloads.
//! - [`schedule`] puts the picks on the wall clock: what plays `now`, how far
//!   into it, and when that changes, so every viewer sees the same point.
//! - [`timeline`] keeps each track's RTP sequence numbers and timestamps
//!   continuous across movie boundaries.
//! - [`compat`] checks that a movie fits the channel's tracks and codecs
//!   (DSS's `sdp_reference_movie`), or says why not.
//! - [`config`] reads DSS broadcaster description files and holds the
//!   `[[channel]]` table of our TOML file.
//! - [`status`] writes DSS's `.current` and `.upcoming` status files' text.
//!
//! Every piece takes its inputs (file bytes, durations, `now`) from the
//! caller and returns values; the engine's channel source does the IO.

mod calendar;
pub mod compat;
pub mod config;
pub mod picker;
pub mod playlist;
pub mod schedule;
pub mod status;
pub mod timeline;

#[cfg(test)]
pub(crate) mod testing;
