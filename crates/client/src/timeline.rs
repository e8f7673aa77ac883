//! What the application has been shown of each conversation, by sequence
//! number: so that every message is delivered once, and what was said
//! while we were away is fetched with `HISTORY` after a reconnect.
//!
//! Only servers with the `history` capability number messages; without it
//! messages pass straight through and nothing is fetched.
//!
//! - **Dedupe.** Live messages of one conversation arrive in seq order; one
//!   at or below the last seq delivered is a repeat (the original `MESSAGE`
//!   a resent nonce brings back) and is dropped.
//! - **Baseline.** To know what we missed we must know where we were. The
//!   last seq delivered says it; until a conversation has one, a
//!   `HISTORY [conv, 0, 1]` asked when we join gives the newest seq, and
//!   so does `UNREAD` at our first registration (what came before is the
//!   application's to fetch). A baseline still unknown at a reconnect (its
//!   answer was lost with the connection) is taken from `UNREAD`'s read
//!   marker when the server sends one (after its restart): at worst older
//!   messages are delivered, none missed. After a plain disconnect there
//!   is no `UNREAD`, and such a conversation starts from a new baseline.
//! - **Catch-up.** After a reconnect, for each conversation re-joined,
//!   `HISTORY [conv, 0, limit]`; meanwhile live messages of that
//!   conversation are held, so that the answer and the held messages are
//!   delivered together, in seq order, once each. A message accepted
//!   around our `JOIN` can be committed just after the server read the
//!   history, leaving a hole; one more `HISTORY` closes it. More than
//!   `limit` missed messages: the older ones are reported as
//!   [`Event::Missed`] for the application to page through.
//! - **Routing answers.** `HISTORY` answers carry only the conversation, so
//!   each conversation keeps its requests in order (the server answers one
//!   connection's `HISTORY`s in order) and an answer goes to the oldest:
//!   ours, or the application's ([`Event::History`]).

use std::collections::{BTreeMap, VecDeque};

use natter_proto::{Command, ConvId, HistoryEntry, MessageMeta};

use crate::event::{Event, MessageInfo};
use crate::outbox::Nonce;

/// Live messages held for one conversation while it catches up; beyond
/// this the catch-up ends early (what is held is delivered).
const MAX_HELD: usize = 4096;

/// Who asked for a `HISTORY` still unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// The application, through [`crate::Client::history`].
    App,
    /// Us, for the newest seq.
    Baseline,
    /// Us, for what was said while we were away.
    CatchUp,
}

/// A message waiting in a catch-up, keyed by seq.
#[derive(Debug, Clone)]
struct Held {
    sender: String,
    text: String,
    ts: i64,
    nonce: Option<Nonce>,
    from_history: bool,
}

#[derive(Debug)]
struct CatchUp {
    /// Everything up to this seq has been delivered.
    after: u64,
    held: BTreeMap<u64, Held>,
    retried: bool,
}

#[derive(Debug, Default)]
struct Track {
    last_seq: Option<u64>,
    fetches: VecDeque<Fetch>,
    catch_up: Option<CatchUp>,
}

/// Events to deliver, and a `HISTORY` to ask, after one input.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub events: Vec<Event>,
    pub ask: Option<Command>,
}

#[derive(Debug)]
pub(crate) struct Timeline {
    tracks: BTreeMap<ConvId, Track>,
    /// Most messages one catch-up fetches per conversation.
    limit: usize,
}

impl Timeline {
    pub fn new(limit: usize) -> Timeline {
        Timeline {
            tracks: BTreeMap::new(),
            limit: limit.clamp(1, natter_proto::command::MAX_HISTORY),
        }
    }

    /// A live `MESSAGE`: delivered, held (catching up) or dropped (seen).
    /// One that skips seqs we never saw starts a catch-up of the gap (e.g.
    /// what was said between a server restart and our re-registration,
    /// which can arrive before the registration is acknowledged).
    pub fn live(
        &mut self,
        conv: ConvId,
        sender: String,
        text: String,
        meta: Option<MessageMeta>,
    ) -> Outcome {
        let Some(meta) = meta else {
            return delivered_now(vec![message(conv, sender, text, None)]);
        };
        let limit = self.limit;
        let track = self.tracks.entry(conv).or_default();
        let held = Held {
            sender,
            text,
            ts: meta.ts,
            nonce: meta.nonce.map(Nonce::from_server),
            from_history: false,
        };
        if let Some(catch_up) = &mut track.catch_up {
            if meta.seq > catch_up.after {
                catch_up.held.insert(meta.seq, held);
            }
            if catch_up.held.len() >= MAX_HELD {
                return delivered_now(finish(conv, track));
            }
            return Outcome::default();
        }
        match track.last_seq {
            Some(last) if meta.seq <= last => Outcome::default(),
            Some(last) if meta.seq > last + 1 && track.fetches.is_empty() => {
                track.catch_up = Some(CatchUp {
                    after: last,
                    held: BTreeMap::from([(meta.seq, held)]),
                    retried: false,
                });
                track.fetches.push_back(Fetch::CatchUp);
                Outcome {
                    events: Vec::new(),
                    ask: Some(history(conv, limit)),
                }
            }
            _ => {
                track.last_seq = Some(meta.seq);
                delivered_now(vec![held.into_event(conv, meta.seq)])
            }
        }
    }

    /// We are (again) a member of `conv` after a reconnect: fetch what we
    /// missed, or at least learn where the conversation is.
    /// `None` when a catch-up of a gap is already on its way.
    pub fn catch_up(&mut self, conv: ConvId) -> Option<Command> {
        let limit = self.limit;
        let track = self.tracks.entry(conv).or_default();
        if track.catch_up.is_some() {
            return None;
        }
        Some(match track.last_seq {
            Some(after) => {
                track.catch_up = Some(CatchUp {
                    after,
                    held: BTreeMap::new(),
                    retried: false,
                });
                track.fetches.push_back(Fetch::CatchUp);
                history(conv, limit)
            }
            None => {
                track.fetches.push_back(Fetch::Baseline);
                history(conv, 1)
            }
        })
    }

    /// We joined `conv`: ask for its newest seq unless we know it or have
    /// asked already.
    pub fn baseline(&mut self, conv: ConvId) -> Option<Command> {
        let track = self.tracks.entry(conv).or_default();
        if track.last_seq.is_some() || !track.fetches.is_empty() {
            return None;
        }
        track.fetches.push_back(Fetch::Baseline);
        Some(history(conv, 1))
    }

    /// `UNREAD` says where `conv` is and how far we read; without a
    /// baseline, the newest seq is one at our first registration, the read
    /// marker at a later one (see the module doc).
    pub fn note_unread(&mut self, conv: ConvId, last_seq: u64, last_read_seq: u64, first: bool) {
        let track = self.tracks.entry(conv).or_default();
        let baseline = if first { last_seq } else { last_read_seq };
        track.last_seq.get_or_insert(baseline);
    }

    /// The application asked for a page of history.
    pub fn app_fetch(&mut self, conv: ConvId) {
        self.tracks
            .entry(conv)
            .or_default()
            .fetches
            .push_back(Fetch::App);
    }

    /// A `HISTORY` answer: the oldest request for `conv` gets it.
    pub fn answer(&mut self, conv: ConvId, entries: Vec<HistoryEntry>) -> Outcome {
        let limit = self.limit;
        let track = self.tracks.entry(conv).or_default();
        match track.fetches.pop_front() {
            None | Some(Fetch::App) => Outcome {
                events: vec![Event::History { conv, entries }],
                ask: None,
            },
            Some(Fetch::Baseline) => {
                let newest = entries.last().map_or(0, |e| e.seq);
                track.last_seq = Some(track.last_seq.map_or(newest, |s| s.max(newest)));
                Outcome::default()
            }
            Some(Fetch::CatchUp) => caught_up(conv, track, entries, limit),
        }
    }

    /// An `ERROR` about `conv` (gone, not a member, history unavailable)
    /// answers its oldest request; a catch-up ends with what it holds,
    /// reporting what it could not fetch when `gap` (the conversation is
    /// still there).
    pub fn refused(&mut self, conv: ConvId, gap: bool) -> Vec<Event> {
        let Some(track) = self.tracks.get_mut(&conv) else {
            return Vec::new();
        };
        if track.fetches.pop_front() != Some(Fetch::CatchUp) {
            return Vec::new();
        }
        let Some(catch_up) = &track.catch_up else {
            return Vec::new();
        };
        let missed = Event::Missed {
            conv,
            after_seq: catch_up.after,
            before_seq: catch_up.held.keys().next().copied(),
        };
        let mut events = if gap { vec![missed] } else { Vec::new() };
        events.extend(finish(conv, track));
        events
    }

    /// We left `conv`: a later join starts from a new baseline. Requests
    /// in flight stay, so that their answers still find their owners.
    pub fn forget(&mut self, conv: ConvId) {
        if let Some(track) = self.tracks.get_mut(&conv) {
            track.last_seq = None;
            track.catch_up = None;
        }
    }

    /// The connection is gone, and with it every answer still to come.
    /// What a catch-up held is dropped undelivered: the next catch-up
    /// fetches it again, since the last seq did not move.
    pub fn connection_lost(&mut self) {
        for track in self.tracks.values_mut() {
            track.fetches.clear();
            track.catch_up = None;
        }
    }
}

/// A catch-up's `HISTORY` answer: merged with what is held, then either
/// asked again (a hole) or delivered.
fn caught_up(conv: ConvId, track: &mut Track, entries: Vec<HistoryEntry>, limit: usize) -> Outcome {
    let Some(catch_up) = &mut track.catch_up else {
        // It ended early (too much held); this answer is stale.
        return Outcome::default();
    };
    let mut events = Vec::new();
    if let Some(oldest) = entries.first()
        && entries.len() >= limit
        && oldest.seq > catch_up.after + 1
    {
        events.push(Event::Missed {
            conv,
            after_seq: catch_up.after,
            before_seq: Some(oldest.seq),
        });
        catch_up.after = oldest.seq - 1;
        let after = catch_up.after;
        catch_up.held.retain(|seq, _| *seq > after);
    }
    for entry in entries.into_iter().filter(|e| e.seq > catch_up.after) {
        // A live copy (with our nonce, perhaps) wins over the stored one.
        catch_up.held.entry(entry.seq).or_insert(Held {
            sender: entry.sender,
            text: entry.text,
            ts: entry.ts,
            nonce: None,
            from_history: true,
        });
    }
    if has_hole(catch_up.after, &catch_up.held) && !catch_up.retried {
        catch_up.retried = true;
        track.fetches.push_back(Fetch::CatchUp);
        return Outcome {
            events,
            ask: Some(history(conv, limit)),
        };
    }
    events.extend(finish(conv, track));
    Outcome { events, ask: None }
}

/// Whether the seqs held do not follow on from `after` one by one.
fn has_hole(after: u64, held: &BTreeMap<u64, Held>) -> bool {
    let mut expected = after + 1;
    for seq in held.keys() {
        if *seq != expected {
            return true;
        }
        expected = seq + 1;
    }
    false
}

fn delivered_now(events: Vec<Event>) -> Outcome {
    Outcome { events, ask: None }
}

/// Ends a catch-up: everything held, in seq order.
fn finish(conv: ConvId, track: &mut Track) -> Vec<Event> {
    let Some(catch_up) = track.catch_up.take() else {
        return Vec::new();
    };
    let last = catch_up.held.keys().next_back().copied();
    track.last_seq = Some(last.unwrap_or(catch_up.after).max(catch_up.after));
    catch_up
        .held
        .into_iter()
        .map(|(seq, held)| held.into_event(conv, seq))
        .collect()
}

impl Held {
    fn into_event(self, conv: ConvId, seq: u64) -> Event {
        let info = MessageInfo {
            seq,
            ts: self.ts,
            nonce: self.nonce,
            catch_up: self.from_history,
        };
        message(conv, self.sender, self.text, Some(info))
    }
}

fn message(conv: ConvId, sender: String, text: String, info: Option<MessageInfo>) -> Event {
    Event::Message {
        conv,
        sender,
        text,
        info,
    }
}

fn history(conv: ConvId, limit: usize) -> Command {
    Command::History {
        conv,
        before_seq: 0,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64) -> Option<MessageMeta> {
        Some(MessageMeta {
            seq,
            ts: 1000 + seq as i64,
            nonce: None,
        })
    }

    fn entry(seq: u64, text: &str) -> HistoryEntry {
        HistoryEntry {
            seq,
            ts: 1000 + seq as i64,
            sender: "bob".into(),
            text: text.into(),
        }
    }

    /// (seq, text, catch_up) of each message event.
    fn delivered(events: &[Event]) -> Vec<(u64, &str, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    text,
                    info: Some(info),
                    ..
                } => Some((info.seq, text.as_str(), info.catch_up)),
                _ => None,
            })
            .collect()
    }

    fn live(timeline: &mut Timeline, seq: u64, text: &str) -> Vec<Event> {
        timeline
            .live(1, "bob".into(), text.into(), meta(seq))
            .events
    }

    #[test]
    fn a_live_message_after_a_gap_catches_up_the_gap_first() {
        let mut timeline = Timeline::new(100);
        live(&mut timeline, 1, "seen");
        // Seqs 2 and 3 were said while we were away; 4 arrives live.
        let outcome = timeline.live(1, "bob".into(), "live 4".into(), meta(4));
        assert_eq!(outcome.events, []);
        assert_eq!(
            outcome.ask,
            Some(Command::History {
                conv: 1,
                before_seq: 0,
                limit: 100
            })
        );
        // The reconnect's own catch-up does not start a second one.
        assert_eq!(timeline.catch_up(1), None);
        let outcome = timeline.answer(
            1,
            vec![entry(2, "away 2"), entry(3, "away 3"), entry(4, "live 4")],
        );
        assert_eq!(
            delivered(&outcome.events),
            [
                (2, "away 2", true),
                (3, "away 3", true),
                (4, "live 4", false)
            ]
        );
    }

    #[test]
    fn a_repeated_seq_is_delivered_once() {
        let mut timeline = Timeline::new(100);
        assert_eq!(delivered(&live(&mut timeline, 1, "a")), [(1, "a", false)]);
        assert_eq!(delivered(&live(&mut timeline, 2, "b")), [(2, "b", false)]);
        assert!(live(&mut timeline, 1, "a").is_empty());
        // Without seqs there is nothing to dedupe by: every message passes.
        let plain = timeline.live(1, "bob".into(), "x".into(), None);
        assert_eq!(plain.events.len(), 1);
    }

    #[test]
    fn catch_up_merges_history_and_held_messages_in_seq_order_once_each() {
        let mut timeline = Timeline::new(100);
        live(&mut timeline, 1, "seen");
        assert_eq!(
            timeline.catch_up(1),
            Some(Command::History {
                conv: 1,
                before_seq: 0,
                limit: 100
            })
        );
        // Live messages while the answer is on its way wait.
        assert!(live(&mut timeline, 4, "live 4").is_empty());
        let outcome = timeline.answer(
            1,
            vec![
                entry(1, "seen"),
                entry(2, "away 2"),
                entry(3, "away 3"),
                entry(4, "live 4"),
            ],
        );
        assert_eq!(outcome.ask, None);
        assert_eq!(
            delivered(&outcome.events),
            [
                (2, "away 2", true),
                (3, "away 3", true),
                (4, "live 4", false)
            ]
        );
        assert!(live(&mut timeline, 4, "live 4").is_empty(), "already shown");
        assert_eq!(
            delivered(&live(&mut timeline, 5, "new")),
            [(5, "new", false)]
        );
    }

    #[test]
    fn a_hole_between_history_and_live_messages_is_asked_for_once_more() {
        let mut timeline = Timeline::new(100);
        live(&mut timeline, 1, "seen");
        timeline.catch_up(1);
        live(&mut timeline, 4, "live 4");
        // Seq 3 was committed after the server read the history.
        let first = timeline.answer(1, vec![entry(1, "seen"), entry(2, "two")]);
        assert!(first.events.is_empty());
        assert!(first.ask.is_some(), "asks again");
        let second = timeline.answer(
            1,
            vec![entry(2, "two"), entry(3, "three"), entry(4, "four")],
        );
        assert_eq!(
            delivered(&second.events),
            [(2, "two", true), (3, "three", true), (4, "live 4", false)]
        );
    }

    #[test]
    fn more_missed_than_the_limit_reports_the_older_ones() {
        let mut timeline = Timeline::new(3);
        live(&mut timeline, 2, "seen");
        timeline.catch_up(1);
        let outcome = timeline.answer(1, vec![entry(8, "8"), entry(9, "9"), entry(10, "10")]);
        assert_eq!(
            outcome.events[0],
            Event::Missed {
                conv: 1,
                after_seq: 2,
                before_seq: Some(8)
            }
        );
        assert_eq!(
            delivered(&outcome.events),
            [(8, "8", true), (9, "9", true), (10, "10", true)]
        );
    }

    #[test]
    fn answers_go_to_whoever_asked_first() {
        let mut timeline = Timeline::new(100);
        timeline.app_fetch(1);
        assert!(timeline.baseline(1).is_none(), "a request is already out");
        let for_app = timeline.answer(1, vec![entry(7, "x")]);
        assert_eq!(
            for_app.events,
            [Event::History {
                conv: 1,
                entries: vec![entry(7, "x")]
            }]
        );
        assert!(timeline.baseline(1).is_some());
        timeline.app_fetch(1);
        assert!(timeline.answer(1, vec![entry(7, "x")]).events.is_empty());
        assert_eq!(timeline.answer(1, vec![]).events.len(), 1, "the app's");
        // The baseline makes seq 7 and below old news.
        assert!(live(&mut timeline, 7, "x").is_empty());
    }

    #[test]
    fn a_refused_catch_up_delivers_what_it_held_and_reports_the_gap() {
        let mut timeline = Timeline::new(100);
        live(&mut timeline, 1, "seen");
        timeline.catch_up(1);
        live(&mut timeline, 5, "five");
        let events = timeline.refused(1, true);
        assert_eq!(
            events[0],
            Event::Missed {
                conv: 1,
                after_seq: 1,
                before_seq: Some(5)
            }
        );
        assert_eq!(delivered(&events), [(5, "five", false)]);
    }

    #[test]
    fn a_lost_connection_drops_held_messages_for_the_next_catch_up() {
        let mut timeline = Timeline::new(100);
        live(&mut timeline, 1, "seen");
        timeline.catch_up(1);
        live(&mut timeline, 2, "held");
        timeline.connection_lost();
        assert!(timeline.tracks[&1].fetches.is_empty());
        timeline.catch_up(1);
        let outcome = timeline.answer(1, vec![entry(2, "held")]);
        assert_eq!(delivered(&outcome.events), [(2, "held", true)]);
    }

    #[test]
    fn unread_gives_a_baseline_only_when_there_is_none() {
        let mut timeline = Timeline::new(100);
        timeline.note_unread(1, 5, 0, true);
        assert!(live(&mut timeline, 5, "old").is_empty());
        assert_eq!(live(&mut timeline, 6, "new").len(), 1);
        timeline.note_unread(1, 2, 0, false);
        assert!(live(&mut timeline, 6, "again").is_empty());
    }

    #[test]
    fn a_baseline_lost_with_the_connection_falls_back_to_the_read_marker() {
        let mut timeline = Timeline::new(100);
        assert!(timeline.baseline(1).is_some());
        timeline.connection_lost();
        // Re-registered after a server restart: seq 7 was said meanwhile.
        timeline.note_unread(1, 7, 3, false);
        timeline.catch_up(1);
        let outcome = timeline.answer(1, (4..=7).map(|seq| entry(seq, "x")).collect());
        let seqs: Vec<u64> = delivered(&outcome.events).iter().map(|d| d.0).collect();
        assert_eq!(seqs, [4, 5, 6, 7]);
    }
}
