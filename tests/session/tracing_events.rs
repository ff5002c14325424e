//! With the `tracing` feature, the Session and the Server log inside their
//! spans: a `session` span (appid, uid, link) and a `conn` span (id, uid),
//! with events at logins, lost links, re-dials, resumes and stale input.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::common::pair::Pair;

/// What the recorder saw: each event's message with the names of the spans
/// it ran in, and each span's recorded fields.
#[derive(Default)]
struct Seen {
    spans: Vec<(&'static str, Vec<(String, String)>)>,
    stack: Vec<u64>,
    events: Vec<(String, Vec<&'static str>)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut seen = self.0.lock().unwrap();
        let mut fields = Vec::new();
        span.record(&mut Fields(&mut fields));
        seen.spans.push((span.metadata().name(), fields));
        Id::from_u64(seen.spans.len() as u64)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut seen = self.0.lock().unwrap();
        let i = span.into_u64() as usize - 1;
        values.record(&mut Fields(&mut seen.spans[i].1));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = self.0.lock().unwrap();
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let message = fields
            .into_iter()
            .find(|(k, _)| k == "message")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let within = seen
            .stack
            .iter()
            .map(|&i| seen.spans[i as usize - 1].0)
            .collect();
        seen.events.push((message, within));
    }
    fn enter(&self, span: &Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.0.lock().unwrap().stack.pop();
    }
}

impl Recorder {
    /// The events whose message contains `text`, with their spans.
    fn events(&self, text: &str) -> Vec<(String, Vec<&'static str>)> {
        let seen = self.0.lock().unwrap();
        seen.events
            .iter()
            .filter(|(m, _)| m.contains(text))
            .cloned()
            .collect()
    }

    /// The last value recorded for `field` in the spans named `name`.
    fn span_field(&self, name: &str, field: &str) -> Vec<String> {
        let seen = self.0.lock().unwrap();
        seen.spans
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, f)| f.iter().rev().find(|(k, _)| k == field))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[test]
fn the_session_and_the_server_log_inside_their_spans() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        // Other tests of this binary, on other threads and with no
        // subscriber, may have registered these callsites first and cached
        // "never" for them: ask again now that this thread has one.
        tracing::callsite::rebuild_interest_cache();
        let mut p = Pair::demo();
        let alice = p.logged_in(7);
        let first = p.session(alice).link().expect("a link");

        // The login, in the session's span and in the hub's span of the
        // connection.
        let connected = recorder.events("connection Connected (LoginSuccess)");
        assert_eq!(connected.len(), 1, "{connected:?}");
        assert_eq!(connected[0].1, ["session"]);
        let login = recorder.events("logged in: uid 7 instance");
        assert_eq!(login.len(), 1, "{login:?}");
        assert_eq!(login[0].1, ["hub"]);
        assert_eq!(recorder.span_field("session", "uid"), ["7"]);
        assert_eq!(recorder.span_field("conn", "uid"), ["7"]);
        // A command that changes the state logs in the span too.
        assert_eq!(recorder.events("dialing link#1")[0].1, ["session"]);

        // A lost link: told, re-dialed, resumed.
        p.drop_link(alice);
        p.run_for(std::time::Duration::from_secs(2));
        assert_eq!(recorder.events(&format!("{first} lost")).len(), 1);
        assert_eq!(recorder.events("dialing link#2").len(), 1);
        assert_eq!(recorder.events("(resumed)").len(), 1, "the server's resume");
        assert_eq!(recorder.events("resumed").len(), 2, "and the session's");
        assert_eq!(recorder.span_field("session", "link"), ["2"]);

        // Input from the old link: ignored, and said so.
        let now = p.now;
        p.session(alice).handle_disconnected(now, first);
        let stale = recorder.events("not the current link");
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].1, ["session"]);
    });
}
