//! Golden wire transcripts: `tests/golden/*.jsonl`, every frame both ways of
//! a scripted flow against the real [`Server`], as protobuf's canonical JSON.
//! The format is described in `tests/golden/README.md`.
//!
//! - `HUMMER_BLESS=1 cargo test --all-features --test golden` runs every flow
//!   below (the `flow_*` functions) and writes its transcript. Without
//!   `HUMMER_BLESS` nothing is ever written.
//! - Each `golden_*` test replays its file: a fresh server, started with
//!   ANOTHER seed and wall clock than the recording, is fed the client's
//!   frames at their times, and every frame it sends must match the next
//!   `s2c` line of that connection. Variable fields (ids, epochs, clock
//!   readings) are matched by a consistent mapping, not by value.
//! - The schema is read from `proto/` at test time (protox), so the files
//!   follow whatever `frame.proto` says: after a schema change re-recording is
//!   the one command above.
#![cfg(feature = "server")]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::{
    self, mint_token, ConnId, Server, ServerConfig, DEMO_APPID, DEMO_SECRET,
};
use hummer_channel::wire::PROTOCOL_VERSION;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    SerializeOptions,
};
use serde_json::{json, Value};

/// The wall clock (unix ms) at `t_ms` 0 of every recording.
const UNIX_MS: u64 = 1_700_000_000_000;
/// What the replay adds to the recorded seed and wall clock: a different
/// server, so that ids and epochs differ from the recording.
const REPLAY_SEED_OFFSET: u64 = 1;
const REPLAY_UNIX_MS_OFFSET: u64 = 12_345;
/// Fields whose value depends on the server's seed or clock (JSON names).
/// The recorded and the actual value must be both present or both absent,
/// and one recorded value always stands for one actual value (per name).
const VARIABLE_FIELDS: &[&str] = &[
    "instanceId",
    "serverEpoch",
    "p2pEpoch",
    "epoch",
    "serverTimeMs",
    "timestampMs",
    "tokenExpiresAtMs",
    "lastUpdateTs",
];
/// Human-readable text (message, field): informative only, the codes next
/// to it are what a client acts on. Compared by presence: wording may change
/// with the server's version and its libraries.
const FREE_TEXT: &[(&str, &str)] = &[("ErrorReply", "message"), ("Close", "reason")];
/// The mapping key of the nonce of a server `Ping` (and of the client's
/// `Pong` answering it).
const PING_NONCE: &str = "Ping.nonce";
/// Fields of protocol v2 that the flows below name. Where the schema in force
/// does not have them (v1), the recorder drops them from the client's frames;
/// on v2 this does nothing. Nothing else is ever dropped: any other unknown
/// field is an error.
const V2_ONLY_FIELDS: &[&str] = &["messageId", "p2pEpoch", "channels", "epoch"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var_os("HUMMER_BLESS").is_some_and(|v| v == "1")
}

// ----- the schema: canonical JSON <-> encoded frames -----

struct Schema {
    frame: MessageDescriptor,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(Schema::load)
}

fn collect_protos(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_protos(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path.strip_prefix(root).expect("under proto/").to_path_buf());
        }
    }
}

impl Schema {
    /// Every `.proto` under `proto/`, compiled with protox.
    fn load() -> Schema {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let mut files = Vec::new();
        collect_protos(&root, &root, &mut files);
        files.sort();
        let mut compiler = protox::Compiler::new([&root]).expect("proto/ as include path");
        compiler.open_files(&files).expect("proto/ compiles");
        let pool: DescriptorPool = compiler.descriptor_pool();
        let frame = pool
            .all_messages()
            .find(|m| m.name() == "Frame")
            .expect("proto/ defines a Frame message");
        Schema { frame }
    }

    /// A message of the `Frame`'s package, by its short name.
    fn message(&self, name: &str) -> Option<MessageDescriptor> {
        let package = self.frame.package_name();
        let full = if package.is_empty() {
            name.to_owned()
        } else {
            format!("{package}.{name}")
        };
        self.frame.parent_pool().get_message_by_name(&full)
    }

    fn has_field(&self, message: &str, field: &str) -> bool {
        self.message(message)
            .is_some_and(|m| m.get_field_by_name(field).is_some())
    }

    /// Protocol v2: sends carry message ids, resumes carry per-stream epochs.
    fn is_v2(&self) -> bool {
        self.has_field("SendToUserRequest", "message_id")
    }

    /// The canonical JSON of an encoded frame.
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let msg = DynamicMessage::decode(self.frame.clone(), bytes)
            .map_err(|e| format!("not a Frame: {e}"))?;
        let options = SerializeOptions::new()
            .stringify_64_bit_integers(true)
            .use_enum_numbers(false)
            .use_proto_field_name(false)
            .skip_default_fields(true);
        msg.serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| format!("frame to JSON: {e}"))
    }

    /// Encodes a frame given in canonical JSON (unknown fields refused).
    fn encode(&self, frame: &Value) -> Result<Vec<u8>, String> {
        let msg = DynamicMessage::deserialize_with_options(
            self.frame.clone(),
            frame.clone(),
            &DeserializeOptions::new().deny_unknown_fields(true),
        )
        .map_err(|e| format!("JSON to frame: {e}: {frame}"))?;
        Ok(msg.encode_to_vec())
    }

    /// A frame's JSON on one line, fields in field-number order (the
    /// `requestId` first), map entries by key.
    fn to_line(&self, frame: &Value) -> String {
        let mut out = String::new();
        write_message(&self.frame, frame, &mut out);
        out
    }
}

fn message_kind(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

/// The message type of a map field's values, if they are messages.
fn map_value_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    message_kind(field).and_then(|entry| message_kind(&entry.map_entry_value_field()))
}

fn write_message(desc: &MessageDescriptor, value: &Value, out: &mut String) {
    let Value::Object(obj) = value else {
        out.push_str(&value.to_string());
        return;
    };
    let mut fields: Vec<FieldDescriptor> = desc.fields().collect();
    fields.sort_by_key(FieldDescriptor::number);
    let mut keys: Vec<(&str, Option<FieldDescriptor>)> = fields
        .iter()
        .filter(|f| obj.contains_key(f.json_name()))
        .map(|f| (f.json_name(), Some(f.clone())))
        .collect();
    for k in obj.keys() {
        if !keys.iter().any(|(j, _)| j == k) {
            keys.push((k.as_str(), None));
        }
    }
    out.push('{');
    for (i, (key, field)) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(key).to_string());
        out.push(':');
        let v = &obj[key];
        match field {
            Some(f) if f.is_map() => match (map_value_message(&f), v) {
                (Some(m), Value::Object(entries)) => {
                    out.push('{');
                    for (j, (k, ev)) in entries.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{}:", Value::from(k.as_str()));
                        write_message(&m, ev, out);
                    }
                    out.push('}');
                }
                _ => out.push_str(&v.to_string()),
            },
            Some(f) => match (message_kind(&f), v) {
                (Some(m), Value::Array(items)) => {
                    out.push('[');
                    for (j, item) in items.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_message(&m, item, out);
                    }
                    out.push(']');
                }
                (Some(m), _) => write_message(&m, v, out),
                (None, _) => out.push_str(&v.to_string()),
            },
            None => out.push_str(&v.to_string()),
        }
    }
    out.push('}');
}

/// Drops the [`V2_ONLY_FIELDS`] that `desc` does not have (recursively).
fn drop_v2_only_fields(desc: &MessageDescriptor, value: &mut Value) {
    let Value::Object(obj) = value else { return };
    obj.retain(|k, _| {
        desc.get_field_by_json_name(k).is_some()
            || desc.get_field_by_name(k).is_some()
            || !V2_ONLY_FIELDS.contains(&k.as_str())
    });
    for (k, v) in obj.iter_mut() {
        let Some(field) = desc
            .get_field_by_json_name(k)
            .or_else(|| desc.get_field_by_name(k))
        else {
            continue;
        };
        if field.is_map() {
            if let (Some(m), Value::Object(entries)) = (map_value_message(&field), v) {
                for ev in entries.values_mut() {
                    drop_v2_only_fields(&m, ev);
                }
            }
        } else if let Some(m) = message_kind(&field) {
            match v {
                Value::Array(items) => items.iter_mut().for_each(|i| drop_v2_only_fields(&m, i)),
                other => drop_v2_only_fields(&m, other),
            }
        }
    }
}

// ----- variable fields -----

/// Recorded value -> actual value of each variable field, kept one-to-one.
#[derive(Debug, Default)]
struct Mapping {
    forward: HashMap<&'static str, BTreeMap<String, Value>>,
    backward: HashMap<&'static str, BTreeMap<String, Value>>,
}

impl Mapping {
    fn bind(&mut self, key: &'static str, recorded: &Value, actual: &Value) -> Result<(), String> {
        let (r, a) = (recorded.to_string(), actual.to_string());
        if let Some(prev) = self.forward.get(key).and_then(|m| m.get(&r)) {
            if prev != actual {
                return Err(format!(
                    "{key}: recorded {r} stood for {prev} earlier, now for {a}"
                ));
            }
            return Ok(());
        }
        if let Some(prev) = self.backward.get(key).and_then(|m| m.get(&a)) {
            return Err(format!(
                "{key}: actual {a} already stands for recorded {prev}, now also for {r}"
            ));
        }
        self.forward
            .entry(key)
            .or_default()
            .insert(r, actual.clone());
        self.backward
            .entry(key)
            .or_default()
            .insert(a, recorded.clone());
        Ok(())
    }

    fn get(&self, key: &str, recorded: &Value) -> Option<&Value> {
        self.forward.get(key)?.get(&recorded.to_string())
    }
}

/// The mapping key of field `json` of `desc` if it is variable in a frame
/// going `dir` ("s2c" or "c2s").
fn variable_key(desc: &MessageDescriptor, json: &str, dir: &str) -> Option<&'static str> {
    if let Some(k) = VARIABLE_FIELDS.iter().find(|k| **k == json) {
        return Some(k);
    }
    let nonce = match dir {
        "s2c" => desc.name() == "Ping",
        _ => desc.name() == "Pong",
    };
    (nonce && json == "nonce").then_some(PING_NONCE)
}

/// Compares a recorded frame (or part) with the actual one: exact, except
/// for variable fields (see [`VARIABLE_FIELDS`]).
fn compare(
    desc: &MessageDescriptor,
    expected: &Value,
    actual: &Value,
    map: &mut Mapping,
    path: &str,
) -> Result<(), String> {
    let (Value::Object(e), Value::Object(a)) = (expected, actual) else {
        return if expected == actual {
            Ok(())
        } else {
            Err(format!("{path}: {expected} != {actual}"))
        };
    };
    let keys: BTreeSet<&String> = e.keys().chain(a.keys()).collect();
    for key in keys {
        let here = format!("{path}.{key}");
        let field = desc.get_field_by_json_name(key);
        let (ev, av) = (e.get(key), a.get(key));
        if FREE_TEXT.contains(&(desc.name(), key.as_str())) {
            if ev.is_some() != av.is_some() {
                return Err(format!("{here}: present in only one of them"));
            }
            continue;
        }
        if let Some(var) = variable_key(desc, key, "s2c") {
            match (ev, av) {
                (Some(ev), Some(av)) => {
                    map.bind(var, ev, av).map_err(|m| format!("{here}: {m}"))?
                }
                (None, None) => {}
                _ => {
                    return Err(format!(
                    "{here}: present in only one of them (a variable field compares by presence)"
                ))
                }
            }
            continue;
        }
        let (Some(ev), Some(av)) = (ev, av) else {
            return Err(format!("{here}: present in only one of them"));
        };
        match field {
            Some(f) if f.is_map() => match (map_value_message(&f), ev, av) {
                (Some(m), Value::Object(em), Value::Object(am)) => {
                    if em.keys().ne(am.keys()) {
                        return Err(format!("{here}: {ev} != {av}"));
                    }
                    for (k, x) in em {
                        compare(&m, x, &am[k], map, &format!("{here}[{k}]"))?;
                    }
                }
                _ if ev == av => {}
                _ => return Err(format!("{here}: {ev} != {av}")),
            },
            Some(f) => match (message_kind(&f), ev, av) {
                (Some(m), Value::Array(ei), Value::Array(ai)) => {
                    if ei.len() != ai.len() {
                        return Err(format!("{here}: {} items != {}", ei.len(), ai.len()));
                    }
                    for (i, (x, y)) in ei.iter().zip(ai).enumerate() {
                        compare(&m, x, y, map, &format!("{here}[{i}]"))?;
                    }
                }
                (Some(m), _, _) => compare(&m, ev, av, map, &here)?,
                _ if ev == av => {}
                _ => return Err(format!("{here}: {ev} != {av}")),
            },
            None if ev == av => {}
            None => return Err(format!("{here}: {ev} != {av}")),
        }
    }
    Ok(())
}

/// Replaces recorded values of variable fields in a client frame by the
/// actual ones (a resume names the instance id this server gave).
fn substitute(desc: &MessageDescriptor, value: &mut Value, map: &Mapping) {
    let Value::Object(obj) = value else { return };
    for (k, v) in obj.iter_mut() {
        if let Some(var) = variable_key(desc, k, "c2s") {
            if let Some(actual) = map.get(var, v) {
                *v = actual.clone();
            }
            continue;
        }
        let Some(field) = desc.get_field_by_json_name(k) else {
            continue;
        };
        if field.is_map() {
            if let (Some(m), Value::Object(entries)) = (map_value_message(&field), v) {
                for ev in entries.values_mut() {
                    substitute(&m, ev, map);
                }
            }
        } else if let Some(m) = message_kind(&field) {
            match v {
                Value::Array(items) => items.iter_mut().for_each(|i| substitute(&m, i, map)),
                other => substitute(&m, other, map),
            }
        }
    }
}

// ----- the driver: one Server, named connections, a millisecond clock -----

/// What the server did on a connection.
enum Output {
    Frame(Bytes),
    /// The server closed the transport (reported by `poll_transport`).
    Closed,
}

struct Out {
    t_ms: u64,
    conn: String,
    what: Output,
}

/// Runs a [`Server`] the way a transport would, on a millisecond clock from
/// `t0`. The recorder and the replayer drive it the same way: before an
/// input at `t`, every deadline up to `t` fires at its own time, and after
/// each input or deadline everything queued is drained (frames per
/// connection in order, then the connections to close).
/// One output of a server drain, in the order `Server::drain` gave it.
enum Drained {
    Frame(ConnId, Bytes),
    Close(ConnId),
}

/// A `server::Sink` that keeps the order of frames and closes.
#[derive(Default)]
struct Ordered(Vec<Drained>);

impl server::Sink for Ordered {
    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        self.0.push(Drained::Frame(conn, frame));
    }
    fn transport(&mut self, action: server::TransportAction) {
        let server::TransportAction::Close { conn, .. } = action;
        self.0.push(Drained::Close(conn));
    }
}

struct Driver {
    server: Server,
    seed: u64,
    unix_ms: u64,
    t0: Instant,
    now_ms: u64,
    conns: BTreeMap<String, ConnId>,
    names: HashMap<ConnId, String>,
}

fn config(seed: u64) -> ServerConfig {
    {
        let mut cfg = ServerConfig::demo();
        cfg.seed = seed;
        cfg
    }
}

impl Driver {
    fn new(seed: u64, unix_ms: u64) -> Driver {
        let t0 = Instant::now();
        Driver {
            server: Server::new(config(seed), t0, unix_ms),
            seed,
            unix_ms,
            t0,
            now_ms: 0,
            conns: BTreeMap::new(),
            names: HashMap::new(),
        }
    }

    fn at(&self, t_ms: u64) -> Instant {
        self.t0 + Duration::from_millis(t_ms)
    }

    fn conn(&self, name: &str) -> Result<ConnId, String> {
        self.conns
            .get(name)
            .copied()
            .ok_or_else(|| format!("connection {name:?} is not open"))
    }

    /// Moves the clock to `t_ms`, firing each deadline on the way at its time.
    fn advance(&mut self, t_ms: u64, out: &mut Vec<Out>) -> Result<(), String> {
        if t_ms < self.now_ms {
            return Err(format!("time goes back: {t_ms} after {}", self.now_ms));
        }
        let until = self.at(t_ms);
        for _ in 0..100_000 {
            match self.server.poll_timeout() {
                Some(d) if d <= until => {
                    let ms = u64::try_from(d.saturating_duration_since(self.t0).as_millis())
                        .unwrap_or(u64::MAX)
                        .max(self.now_ms);
                    self.now_ms = ms;
                    self.server.handle_timeout(d);
                    self.drain(out)?;
                }
                _ => {
                    self.now_ms = t_ms;
                    self.server.handle_timeout(until);
                    return self.drain(out);
                }
            }
        }
        Err("deadlines keep firing without the clock moving".into())
    }

    /// Drains the server with `Server::drain` into an ordered record, until
    /// a drain yields nothing (closing a connection may produce output for
    /// others: notices).
    fn drain(&mut self, out: &mut Vec<Out>) -> Result<(), String> {
        let now = self.at(self.now_ms);
        loop {
            let mut sink = Ordered::default();
            self.server.drain(&mut sink);
            if sink.0.is_empty() {
                return Ok(());
            }
            for output in sink.0 {
                match output {
                    Drained::Frame(c, f) => {
                        let name = self
                            .names
                            .get(&c)
                            .ok_or_else(|| format!("a frame for the unknown {c}"))?;
                        out.push(Out {
                            t_ms: self.now_ms,
                            conn: name.clone(),
                            what: Output::Frame(f),
                        });
                    }
                    Drained::Close(c) => {
                        let name = self
                            .names
                            .remove(&c)
                            .ok_or("closing an unknown connection")?;
                        self.conns.remove(&name);
                        out.push(Out {
                            t_ms: self.now_ms,
                            conn: name,
                            what: Output::Closed,
                        });
                        self.server.handle_disconnected(now, c);
                    }
                }
            }
        }
    }

    fn open(&mut self, name: &str) -> Result<(), String> {
        if self.conns.contains_key(name) {
            return Err(format!("connection {name:?} is already open"));
        }
        let c = self.server.accept(self.at(self.now_ms));
        self.conns.insert(name.to_owned(), c);
        self.names.insert(c, name.to_owned());
        Ok(())
    }

    /// The client closed the transport.
    fn close(&mut self, name: &str) -> Result<(), String> {
        let c = self.conn(name)?;
        self.conns.remove(name);
        self.names.remove(&c);
        self.server.handle_disconnected(self.at(self.now_ms), c);
        Ok(())
    }

    fn frame(&mut self, name: &str, bytes: Vec<u8>, out: &mut Vec<Out>) -> Result<(), String> {
        let c = self.conn(name)?;
        self.server
            .handle_frame(self.at(self.now_ms), c, Bytes::from(bytes));
        self.drain(out)
    }

    /// The server loses everything: a new one, same config, the wall clock
    /// of now; every connection is gone with the old process.
    fn restart(&mut self) {
        let now = self.at(self.now_ms);
        self.server = Server::new(config(self.seed), now, self.unix_ms + self.now_ms);
        self.conns.clear();
        self.names.clear();
    }
}

// ----- the recorder -----

/// A flow being recorded: the script calls these in time order, and each
/// call is one transcript line (plus the server's answers).
struct Flow {
    schema: &'static Schema,
    driver: Driver,
    lines: Vec<String>,
}

fn event_line(t_ms: u64, conn: Option<&str>, event: &str) -> String {
    match conn {
        Some(c) => format!(r#"{{"t_ms":{t_ms},"conn":{},"event":"{event}"}}"#, json!(c)),
        None => format!(r#"{{"t_ms":{t_ms},"event":"{event}"}}"#),
    }
}

fn frame_line(t_ms: u64, conn: &str, dir: &str, frame: &str) -> String {
    format!(
        r#"{{"t_ms":{t_ms},"conn":{},"dir":"{dir}","frame":{frame}}}"#,
        json!(conn)
    )
}

impl Flow {
    fn new(def: &FlowDef) -> Flow {
        let description = format!(
            "{} Server: ServerConfig::demo() with the header's seed, wall clock unix_ms at t_ms 0.",
            def.description
        );
        let header = format!(
            r#"{{"transcript":{},"description":{},"seed":{},"unix_ms":{UNIX_MS}}}"#,
            json!(def.name),
            json!(description),
            def.seed
        );
        Flow {
            schema: schema(),
            driver: Driver::new(def.seed, UNIX_MS),
            lines: vec![header],
        }
    }

    fn v2(&self) -> bool {
        self.schema.is_v2()
    }

    fn write(&mut self, out: Vec<Out>) -> Vec<(String, Value)> {
        let mut frames = Vec::new();
        for o in out {
            match o.what {
                Output::Frame(bytes) => {
                    let v = self
                        .schema
                        .decode(&bytes)
                        .unwrap_or_else(|e| panic!("server frame: {e}"));
                    let line = frame_line(o.t_ms, &o.conn, "s2c", &self.schema.to_line(&v));
                    self.lines.push(line);
                    frames.push((o.conn, v));
                }
                Output::Closed => {
                    self.lines
                        .push(event_line(o.t_ms, Some(&o.conn), "server_close"));
                }
            }
        }
        frames
    }

    fn advance(&mut self, t_ms: u64) {
        let mut out = Vec::new();
        self.driver
            .advance(t_ms, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        self.write(out);
    }

    fn open(&mut self, t_ms: u64, conn: &str) {
        self.advance(t_ms);
        self.lines.push(event_line(t_ms, Some(conn), "open"));
        self.driver.open(conn).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The client closes the transport (no Close frame).
    fn close(&mut self, t_ms: u64, conn: &str) {
        self.advance(t_ms);
        self.lines.push(event_line(t_ms, Some(conn), "close"));
        self.driver.close(conn).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Time passes to `t_ms` (deadlines fire).
    fn tick(&mut self, t_ms: u64) {
        self.advance(t_ms);
        self.lines.push(event_line(t_ms, None, "tick"));
    }

    fn restart(&mut self, t_ms: u64) {
        self.advance(t_ms);
        self.lines.push(event_line(t_ms, None, "restart"));
        self.driver.restart();
    }

    /// The client sends `frame` (canonical JSON) on `conn` at `t_ms`; the
    /// frames the server then sends on `conn`.
    fn send(&mut self, t_ms: u64, conn: &str, frame: Value) -> Vec<Value> {
        self.advance(t_ms);
        let mut frame = frame;
        drop_v2_only_fields(&self.schema.frame, &mut frame);
        let bytes = self.schema.encode(&frame).unwrap_or_else(|e| panic!("{e}"));
        // What the transcript shows is the canonical form of what was sent.
        let canonical = self.schema.decode(&bytes).expect("re-decodes");
        let line = frame_line(t_ms, conn, "c2s", &self.schema.to_line(&canonical));
        self.lines.push(line);
        let mut out = Vec::new();
        self.driver
            .frame(conn, bytes, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        self.write(out)
            .into_iter()
            .filter(|(c, _)| c == conn)
            .map(|(_, v)| v)
            .collect()
    }

    /// Bytes that are not a decodable frame.
    fn send_raw(&mut self, t_ms: u64, conn: &str, bytes: &[u8]) {
        self.advance(t_ms);
        self.lines.push(format!(
            r#"{{"t_ms":{t_ms},"conn":{},"dir":"c2s","raw_hex":"{}"}}"#,
            json!(conn),
            hex(bytes)
        ));
        let mut out = Vec::new();
        self.driver
            .frame(conn, bytes.to_vec(), &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        self.write(out);
    }

    /// The `resume` of a reconnecting client, as the schema in force spells
    /// it. v2: the P2P stream's epoch and a cursor per held channel
    /// (`(key, JoinReply.epoch, seq)`). v1 (no `Resume.p2p_epoch`): the
    /// server epoch, and channels are re-joined after the login.
    fn resume(
        &self,
        login_reply: &Value,
        p2p_seq: u64,
        channels: &[(Value, Option<Value>, u64)],
    ) -> Value {
        let lr = &login_reply["loginReply"];
        let mut resume = json!({
            "instanceId": lr["instanceId"],
            "p2pSeq": p2p_seq.to_string(),
        });
        if self.schema.has_field("Resume", "p2p_epoch") {
            resume["p2pEpoch"] = lr["p2pEpoch"].clone();
            let cursors: Vec<Value> = channels
                .iter()
                .map(|(key, epoch, seq)| {
                    let mut c = json!({"channel": key, "seq": seq.to_string()});
                    if let Some(e) = epoch {
                        c["epoch"] = e.clone();
                    }
                    c
                })
                .collect();
            resume["channels"] = Value::Array(cursors);
        } else {
            resume["serverEpoch"] = lr["serverEpoch"].clone();
        }
        resume
    }

    fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex length: {s}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex {s}: {e}")))
        .collect()
}

/// Standard base64 with padding (the JSON form of `bytes`).
fn b64(text: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ----- the replayer -----

enum Expected {
    Frame(Value),
    Closed,
}

struct Pending {
    line: usize,
    t_ms: u64,
    text: String,
    what: Expected,
}

struct Replay<'a> {
    name: &'a str,
    schema: &'static Schema,
    expected: BTreeMap<String, VecDeque<Pending>>,
    actual: BTreeMap<String, VecDeque<Out>>,
    map: Mapping,
}

impl Replay<'_> {
    fn fail(&self, line: usize, what: &str) -> String {
        format!("golden transcript {}, line {line}: {what}", self.name)
    }

    fn take(&mut self, out: Vec<Out>) {
        for o in out {
            self.actual.entry(o.conn.clone()).or_default().push_back(o);
        }
    }

    fn actual_text(&self, o: &Out) -> String {
        match &o.what {
            Output::Frame(b) => match self.schema.decode(b) {
                Ok(v) => frame_line(o.t_ms, &o.conn, "s2c", &self.schema.to_line(&v)),
                Err(e) => format!("an undecodable frame ({e}): {}", hex(b)),
            },
            Output::Closed => event_line(o.t_ms, Some(&o.conn), "server_close"),
        }
    }

    /// Matches what the server sent with what was recorded, per connection
    /// in order; before the input on line `before`, nothing may be left on
    /// either side.
    fn settle(&mut self, before: usize) -> Result<(), String> {
        let conns: BTreeSet<String> = self
            .expected
            .keys()
            .chain(self.actual.keys())
            .cloned()
            .collect();
        for conn in conns {
            loop {
                let e = self.expected.get_mut(&conn).and_then(VecDeque::pop_front);
                let a = self.actual.get_mut(&conn).and_then(VecDeque::pop_front);
                match (e, a) {
                    (None, None) => break,
                    (Some(e), None) => {
                        return Err(self.fail(
                            e.line,
                            &format!(
                                "the server did not send this (nothing more on {conn:?} before line {before})\n  expected: {}",
                                e.text
                            ),
                        ))
                    }
                    (None, Some(a)) => {
                        return Err(self.fail(
                            before,
                            &format!(
                                "the server sent more on {conn:?} than recorded before this line\n  actual:   {}",
                                self.actual_text(&a)
                            ),
                        ))
                    }
                    (Some(e), Some(a)) => self.check(&e, &a)?,
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, e: &Pending, a: &Out) -> Result<(), String> {
        let mismatch = |this: &Self, why: &str| {
            this.fail(
                e.line,
                &format!(
                    "{why}\n  expected: {}\n  actual:   {}",
                    e.text,
                    this.actual_text(a)
                ),
            )
        };
        if e.t_ms != a.t_ms {
            return Err(mismatch(self, "sent at another time"));
        }
        match (&e.what, &a.what) {
            (Expected::Closed, Output::Closed) => Ok(()),
            (Expected::Frame(ev), Output::Frame(bytes)) => {
                let av = self
                    .schema
                    .decode(bytes)
                    .map_err(|err| mismatch(self, &err))?;
                let desc = self.schema.frame.clone();
                compare(&desc, ev, &av, &mut self.map, "frame")
                    .map_err(|why| mismatch(self, &format!("frames differ at {why}")))
            }
            _ => Err(mismatch(
                self,
                "a frame where a close was recorded, or the reverse",
            )),
        }
    }
}

fn field_u64(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no {key:?} number"))
}

fn field_str<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {key:?} string"))
}

/// Replays transcript `name` (its text) against a server started with the
/// header's seed + 1 and wall clock + 12,345 ms.
fn replay(name: &str, text: &str) -> Result<Mapping, String> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, header) = lines
        .next()
        .ok_or_else(|| format!("golden transcript {name}: empty"))?;
    let header: Value = serde_json::from_str(header).map_err(|e| format!("{name}, line 1: {e}"))?;
    let bad = |line: usize, e: String| format!("golden transcript {name}, line {line}: {e}");
    if field_str(&header, "transcript").map_err(|e| bad(1, e))? != name {
        return Err(bad(1, "the header names another transcript".into()));
    }
    let seed = field_u64(&header, "seed").map_err(|e| bad(1, e))?;
    let unix_ms = field_u64(&header, "unix_ms").map_err(|e| bad(1, e))?;
    let mut driver = Driver::new(
        seed.wrapping_add(REPLAY_SEED_OFFSET),
        unix_ms + REPLAY_UNIX_MS_OFFSET,
    );
    let schema = schema();
    let mut r = Replay {
        name,
        schema,
        expected: BTreeMap::new(),
        actual: BTreeMap::new(),
        map: Mapping::default(),
    };
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| bad(n, e.to_string()))?;
        let t = field_u64(&v, "t_ms").map_err(|e| bad(n, e))?;
        let conn = v.get("conn").and_then(Value::as_str).map(str::to_owned);
        let need_conn = || conn.clone().ok_or_else(|| bad(n, "no \"conn\"".into()));
        let dir = v.get("dir").and_then(Value::as_str);
        let event = v.get("event").and_then(Value::as_str);
        // What the server sent: queued until the next input.
        let expected = match (dir, event) {
            (Some("s2c"), _) => Some(Expected::Frame(
                v.get("frame")
                    .cloned()
                    .ok_or_else(|| bad(n, "no \"frame\"".into()))?,
            )),
            (_, Some("server_close")) => Some(Expected::Closed),
            _ => None,
        };
        if let Some(what) = expected {
            r.expected
                .entry(need_conn()?)
                .or_default()
                .push_back(Pending {
                    line: n,
                    t_ms: t,
                    text: line.to_owned(),
                    what,
                });
            continue;
        }
        // An input: first time passes to it, and all recorded so far must
        // have been sent.
        let mut out = Vec::new();
        driver.advance(t, &mut out).map_err(|e| bad(n, e))?;
        r.take(out);
        r.settle(n)?;
        let mut out = Vec::new();
        match (dir, event) {
            (Some("c2s"), _) => {
                let bytes = if let Some(h) = v.get("raw_hex").and_then(Value::as_str) {
                    unhex(h).map_err(|e| bad(n, e))?
                } else {
                    let mut frame = v
                        .get("frame")
                        .cloned()
                        .ok_or_else(|| bad(n, "no \"frame\" or \"raw_hex\"".into()))?;
                    substitute(&schema.frame, &mut frame, &r.map);
                    schema.encode(&frame).map_err(|e| {
                        bad(
                            n,
                            format!(
                                "{e} (recorded with another proto/? re-record with HUMMER_BLESS=1)"
                            ),
                        )
                    })?
                };
                driver
                    .frame(&need_conn()?, bytes, &mut out)
                    .map_err(|e| bad(n, e))?;
            }
            (_, Some("open")) => driver.open(&need_conn()?).map_err(|e| bad(n, e))?,
            (_, Some("close")) => driver.close(&need_conn()?).map_err(|e| bad(n, e))?,
            (_, Some("restart")) => driver.restart(),
            (_, Some("tick")) => {}
            _ => return Err(bad(n, format!("not a transcript event: {line}"))),
        }
        r.take(out);
    }
    r.settle(text.lines().count() + 1)?;
    Ok(r.map)
}

/// The lines a flow script decides (the header, the client's frames and
/// the transport events), to tell a transcript that no longer matches its
/// script.
fn input_lines(text: &str) -> Vec<&str> {
    text.lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0 || (!l.contains(r#""dir":"s2c""#) && !l.contains(r#""event":"server_close""#))
        })
        .map(|(_, l)| l)
        .collect()
}

// ----- the flows -----

struct FlowDef {
    name: &'static str,
    seed: u64,
    description: &'static str,
    /// Only recorded and replayed when the schema is protocol v2.
    needs_v2: bool,
    script: fn(&mut Flow),
}

const FLOWS: &[FlowDef] = &[
    FlowDef {
        name: "login",
        seed: 1,
        description: "Login in appid mode (anonymous), Ping/Pong, GetInstanceInfo, a second Login on a logged-in link refused, Logout, login again on the same link with a token and a region, RefreshToken, SetUserRegion, Logout, then a request after the logout refused with 1009 and the link closed (Close{1009}).",
        needs_v2: false,
        script: flow_login,
    },
    FlowDef {
        name: "p2p_reliable",
        seed: 2,
        description: "Reliable P2P: uid 1 sends two messages to uid 2 (online, seq 1 and 2) and 2 acks; QueryOnline; two messages to uid 3 while offline are stored; 3 logs in and gets them replayed after its LoginReply, acks, logs out and in again and gets nothing twice.",
        needs_v2: false,
        script: flow_p2p_reliable,
    },
    FlowDef {
        name: "p2p_unreliable",
        seed: 3,
        description: "Unreliable P2P (seq 0): to an online uid (pushed at once, no seq), to an offline uid (not stored: its later login replays nothing); a reliable message after them still gets seq 1.",
        needs_v2: false,
        script: flow_p2p_unreliable,
    },
    FlowDef {
        name: "channel_broadcast",
        seed: 4,
        description: "uids 1 and 2 join channel CN/lobby: one MembershipPush for both joins after the 100 ms notice window, then a UserCountPush; a reliable broadcast (seq 1, pushed to every member including the sender) and an unreliable one (no seq); GetUserList; GetUserCount from uid 3, not a member; uid 2 leaves (notice and count to the others); uid 1 leaves.",
        needs_v2: false,
        script: flow_channel_broadcast,
    },
    FlowDef {
        name: "attributes",
        seed: 5,
        description: "User attributes in channel CN/room (SET silently, ADD_OR_UPDATE, DELETE, SET by another uid and CLEAR with enable_notification, pushed to every member), reads of all and of some keys, GetUserListByAttribute; channel attributes (SET, ADD_OR_UPDATE silently, DELETE, CLEAR) with their last writer and time.",
        needs_v2: false,
        script: flow_attributes,
    },
    FlowDef {
        name: "resume",
        seed: 6,
        description: "uid 2 is in CN/lobby and has P2P seq 1 and channel seq 1; its link closes; uid 1 sends it a P2P message and broadcasts in the lobby meanwhile; uid 2 reconnects on conn c with a resume naming its instance and cursors and receives exactly the two missed messages once, then live traffic; nobody sees it leave or join.",
        needs_v2: false,
        script: flow_resume,
    },
    FlowDef {
        name: "restart",
        seed: 7,
        description: "Messages to uid 2 (P2P and in CN/lobby) are accepted while its link is down, then the server restarts and loses them; uid 2 resumes with its old cursors and is told of the P2P gap (to 0: an unknown end), re-joins the lobby with its channel cursor, and new messages are numbered from 1 again.",
        needs_v2: false,
        script: flow_restart,
    },
    FlowDef {
        name: "idempotent_resend",
        seed: 8,
        description: "Protocol v2 message ids: uid 1 sends a P2P and a channel message, its link closes before it could see the replies, it resumes and re-sends both with the SAME message ids: the same SendReply comes back and nothing is delivered twice; reusing an id for another receiver is refused (2013).",
        needs_v2: true,
        script: flow_idempotent_resend,
    },
    FlowDef {
        name: "refusals",
        seed: 9,
        description: "One refusal per error the server returns that frames can reach: 1009 before login (on its own link, which it closes); 2018 unknown appid; 2001 uid 0, unknown region, already logged in, empty uid list, unspecified region, receiver uid 0; 2002 bad tokens; 2003 expired token; 2007 message too large; 5101 not in channel; 2004 attributes of a uid not in the channel; 5108 no channel attributes; 5103-5106 attribute limits; 5109 too many channels (joined, and in one count request); 4003 the 181st send in 3 s; protocol errors closing the link with Close{2001} (unsupported protocol version, a reply body sent by a client, a request with request_id 0, a frame with no body) and, last, a frame that does not decode. Not reachable with the demo config: 2002 token required (the demo app allows appid mode) and 5102 channel full (100,000 members).",
        needs_v2: false,
        script: flow_refusals,
    },
];

/// A token expiring in 2096.
const TOKEN_EXP_S: u64 = 4_000_000_000;

fn login(rid: u64, uid: u64) -> Value {
    json!({"requestId": rid.to_string(), "login": {
        "protocolVersion": PROTOCOL_VERSION, "appid": DEMO_APPID, "uid": uid.to_string()}})
}

fn text(kind: &str, s: &str) -> Value {
    json!({"type": kind, "content": b64(s)})
}

fn key(id: &str) -> Value {
    json!({"region": "CN", "channelId": id})
}

/// The first of `frames` that has `pointer` (a JSON pointer), e.g. the
/// login reply among a reply and its replayed pushes.
fn find(frames: &[Value], pointer: &str) -> Value {
    frames
        .iter()
        .find(|f| f.pointer(pointer).is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no frame with {pointer} in {frames:?}"))
}

fn flow_login(f: &mut Flow) {
    f.open(0, "a");
    // Appid mode: no token, an anonymous login.
    f.send(0, "a", login(1, 1));
    // Either side may ping; the answer carries the same nonce.
    f.send(1_000, "a", json!({"ping": {"nonce": "7"}}));
    f.send(1_500, "a", json!({"requestId": "2", "getInstanceInfo": {}}));
    // A second Login on a logged-in link is refused; the link stays.
    f.send(2_000, "a", login(3, 1));
    f.send(3_000, "a", json!({"requestId": "4", "logout": {}}));
    // Logged out, the same link may log in again, here with a token and a
    // region.
    let token = mint_token(DEMO_SECRET, DEMO_APPID, 1, TOKEN_EXP_S);
    f.send(
        4_000,
        "a",
        json!({"requestId": "6", "login": {"protocolVersion": PROTOCOL_VERSION,
            "appid": DEMO_APPID, "uid": "1", "token": token, "region": "US"}}),
    );
    f.send(4_500, "a", json!({"requestId": "7", "getInstanceInfo": {}}));
    let later = mint_token(DEMO_SECRET, DEMO_APPID, 1, TOKEN_EXP_S + 3_600);
    f.send(
        5_000,
        "a",
        json!({"requestId": "8", "refreshToken": {"token": later}}),
    );
    f.send(
        5_500,
        "a",
        json!({"requestId": "9", "setUserRegion": {"region": "AP_SOUTHEAST"}}),
    );
    f.send(
        6_000,
        "a",
        json!({"requestId": "10", "getInstanceInfo": {}}),
    );
    f.send(6_500, "a", json!({"requestId": "11", "logout": {}}));
    // Logged out, any request but Login gets 1009 and the link is closed.
    f.send(
        7_000,
        "a",
        json!({"requestId": "12", "getInstanceInfo": {}}),
    );
}

fn flow_p2p_reliable(f: &mut Flow) {
    f.open(0, "a");
    f.send(0, "a", login(1, 1));
    f.open(0, "b");
    f.send(0, "b", login(1, 2));
    // uid 2 is online: pushed at once; the reply says so and gives the seq.
    f.send(
        100,
        "a",
        json!({"requestId": "2", "sendToUser": {"receiver": "2",
            "message": text("text", "hello 2"), "messageId": "101"}}),
    );
    f.send(
        200,
        "a",
        json!({"requestId": "3", "sendToUser": {"receiver": "2",
            "message": {"type": "text", "content": b64("how are you?"),
                "appExtras": {"lang": "en"}}, "messageId": "102"}}),
    );
    // uid 2 has handed both to its application.
    f.send(300, "b", json!({"ack": {"p2pSeq": "2"}}));
    f.send(
        400,
        "a",
        json!({"requestId": "4", "queryOnline": {"uids": ["2", "3"]}}),
    );
    // uid 3 is offline: its messages are stored (its own stream: seq 1, 2).
    f.send(
        500,
        "a",
        json!({"requestId": "5", "sendToUser": {"receiver": "3",
            "message": text("text", "are you there?"), "messageId": "103"}}),
    );
    f.send(
        600,
        "a",
        json!({"requestId": "6", "sendToUser": {"receiver": "3",
            "message": text("text", "call me"), "messageId": "104"}}),
    );
    // uid 3 logs in: the offline messages follow its LoginReply.
    f.open(1_000, "c");
    f.send(1_000, "c", login(1, 3));
    f.send(1_100, "c", json!({"ack": {"p2pSeq": "2"}}));
    // Acked by the uid: a later fresh login does not get them again.
    f.send(1_200, "c", json!({"requestId": "2", "logout": {}}));
    f.send(1_300, "c", login(3, 3));
}

fn flow_p2p_unreliable(f: &mut Flow) {
    f.open(0, "a");
    f.send(0, "a", login(1, 1));
    f.open(0, "b");
    f.send(0, "b", login(1, 2));
    f.send(
        100,
        "a",
        json!({"requestId": "2", "sendToUser": {"receiver": "2",
            "message": text("typing", "..."), "unreliable": true, "messageId": "201"}}),
    );
    // Offline receiver: not stored, not delivered, no seq.
    f.send(
        200,
        "a",
        json!({"requestId": "3", "sendToUser": {"receiver": "3",
            "message": text("typing", "..."), "unreliable": true, "messageId": "202"}}),
    );
    // Unreliable messages take no number: the first reliable one is seq 1.
    f.send(
        300,
        "a",
        json!({"requestId": "4", "sendToUser": {"receiver": "2",
            "message": text("text", "done typing"), "messageId": "203"}}),
    );
    f.open(1_000, "c");
    f.send(1_000, "c", login(1, 3));
}

fn flow_channel_broadcast(f: &mut Flow) {
    for (conn, uid) in [("a", 1), ("b", 2), ("c", 3)] {
        f.open(0, conn);
        f.send(0, conn, login(1, uid));
    }
    f.send(
        100,
        "a",
        json!({"requestId": "2", "join": {"channel": key("lobby")}}),
    );
    f.send(
        150,
        "b",
        json!({"requestId": "2", "join": {"channel": key("lobby")}}),
    );
    // At 200 ms the notice window of the first join ends: one batch for both.
    f.send(
        400,
        "a",
        json!({"requestId": "3", "sendToChannel": {"channel": key("lobby"),
            "message": text("text", "hello lobby"), "messageId": "301"}}),
    );
    f.send(
        500,
        "b",
        json!({"requestId": "3", "sendToChannel": {"channel": key("lobby"),
            "message": text("cursor", "12,34"), "unreliable": true, "messageId": "302"}}),
    );
    f.send(
        600,
        "a",
        json!({"requestId": "4", "getUserList": key("lobby")}),
    );
    f.send(
        700,
        "c",
        json!({"requestId": "2", "getUserCount": {"region": "CN",
            "channelIds": ["lobby", "empty-room"]}}),
    );
    f.send(
        800,
        "b",
        json!({"requestId": "4", "leave": {"channel": key("lobby")}}),
    );
    f.send(
        1_000,
        "a",
        json!({"requestId": "5", "getUserCount": {"region": "CN", "channelIds": ["lobby"]}}),
    );
    f.send(
        1_100,
        "a",
        json!({"requestId": "6", "leave": {"channel": key("lobby")}}),
    );
    f.tick(1_300);
}

fn flow_attributes(f: &mut Flow) {
    let room = key("room");
    for (conn, uid) in [("a", 1), ("b", 2)] {
        f.open(0, conn);
        f.send(0, conn, login(1, uid));
    }
    for conn in ["a", "b"] {
        f.send(
            50,
            conn,
            json!({"requestId": "2", "join": {"channel": room}}),
        );
    }
    // Without enable_notification a write is silent.
    f.send(
        300,
        "a",
        json!({"requestId": "3", "writeUserAttributes": {"channel": room, "op": "SET",
            "attributes": {"role": "host", "mic": "on"}}}),
    );
    f.send(
        400,
        "a",
        json!({"requestId": "4", "writeUserAttributes": {"channel": room, "op": "ADD_OR_UPDATE",
            "attributes": {"mic": "off"}, "enableNotification": true}}),
    );
    f.send(
        500,
        "b",
        json!({"requestId": "3", "getUserAttributes": {"channel": room, "uid": "1"}}),
    );
    f.send(
        550,
        "b",
        json!({"requestId": "4", "getUserAttributes": {"channel": room, "uid": "1",
            "keys": ["role", "absent"]}}),
    );
    f.send(
        600,
        "a",
        json!({"requestId": "5", "writeUserAttributes": {"channel": room, "op": "DELETE",
            "keys": ["mic"], "enableNotification": true}}),
    );
    f.send(
        650,
        "b",
        json!({"requestId": "5", "writeUserAttributes": {"channel": room, "op": "SET",
            "attributes": {"role": "guest"}, "enableNotification": true}}),
    );
    f.send(
        700,
        "a",
        json!({"requestId": "6", "getUserListByAttribute": {"channel": room,
            "key": "role", "value": "host"}}),
    );
    f.send(
        750,
        "a",
        json!({"requestId": "7", "getUserListByAttribute": {"channel": room,
            "key": "role", "value": "guest"}}),
    );
    f.send(
        800,
        "a",
        json!({"requestId": "8", "writeUserAttributes": {"channel": room, "op": "CLEAR",
            "enableNotification": true}}),
    );
    f.send(
        850,
        "b",
        json!({"requestId": "6", "getUserAttributes": {"channel": room, "uid": "1"}}),
    );
    // Channel attributes: one set per channel, with its last writer and time.
    f.send(
        900,
        "a",
        json!({"requestId": "9", "writeChannelAttributes": {"channel": room, "op": "SET",
            "attributes": {"topic": "golden files", "lang": "en"}, "enableNotification": true}}),
    );
    f.send(
        1_000,
        "b",
        json!({"requestId": "7", "writeChannelAttributes": {"channel": room,
            "op": "ADD_OR_UPDATE", "attributes": {"lang": "fr"}}}),
    );
    f.send(
        1_100,
        "a",
        json!({"requestId": "10", "getChannelAttributes": {"channel": room}}),
    );
    f.send(
        1_150,
        "a",
        json!({"requestId": "11", "getChannelAttributes": {"channel": room,
            "keys": ["topic", "absent"]}}),
    );
    f.send(
        1_200,
        "b",
        json!({"requestId": "8", "writeChannelAttributes": {"channel": room, "op": "DELETE",
            "keys": ["lang"], "enableNotification": true}}),
    );
    f.send(
        1_300,
        "a",
        json!({"requestId": "12", "writeChannelAttributes": {"channel": room, "op": "CLEAR",
            "enableNotification": true}}),
    );
    f.send(
        1_400,
        "b",
        json!({"requestId": "9", "getChannelAttributes": {"channel": room}}),
    );
}

fn flow_resume(f: &mut Flow) {
    let lobby = key("lobby");
    f.open(0, "a");
    f.send(0, "a", login(1, 1));
    f.open(0, "b");
    let b_login = find(&f.send(0, "b", login(1, 2)), "/loginReply");
    f.send(
        50,
        "a",
        json!({"requestId": "2", "join": {"channel": lobby}}),
    );
    let b_join = find(
        &f.send(
            50,
            "b",
            json!({"requestId": "2", "join": {"channel": lobby}}),
        ),
        "/joinReply",
    );
    f.send(
        300,
        "a",
        json!({"requestId": "3", "sendToUser": {"receiver": "2",
            "message": text("text", "p2p one"), "messageId": "601"}}),
    );
    f.send(
        400,
        "a",
        json!({"requestId": "4", "sendToChannel": {"channel": lobby,
            "message": text("text", "lobby one"), "messageId": "602"}}),
    );
    f.send(450, "b", json!({"ack": {"p2pSeq": "1"}}));
    // uid 2's link dies; its instance stays (grace period, 30 s).
    f.close(500, "b");
    f.send(
        600,
        "a",
        json!({"requestId": "5", "sendToUser": {"receiver": "2",
            "message": text("text", "p2p two"), "messageId": "603"}}),
    );
    f.send(
        700,
        "a",
        json!({"requestId": "6", "sendToChannel": {"channel": lobby,
            "message": text("text", "lobby two"), "messageId": "604"}}),
    );
    // uid 2 reconnects and resumes from its cursors: P2P seq 1, lobby seq 1.
    f.open(1_000, "c");
    let resume = f.resume(
        &b_login,
        1,
        &[(lobby.clone(), b_join["joinReply"].get("epoch").cloned(), 1)],
    );
    f.send(
        1_000,
        "c",
        json!({"requestId": "1", "login": {"protocolVersion": PROTOCOL_VERSION,
            "appid": DEMO_APPID, "uid": "2", "resume": resume}}),
    );
    if !f.v2() {
        // v1 resumes no channel: the client re-joins it from its cursor.
        f.send(
            1_050,
            "c",
            json!({"requestId": "2", "join": {"channel": lobby, "rejoin": true, "resumeSeq": "1"}}),
        );
    }
    f.send(1_100, "c", json!({"ack": {"p2pSeq": "2"}}));
    // Live traffic reaches the new link, once.
    f.send(
        1_200,
        "a",
        json!({"requestId": "7", "sendToChannel": {"channel": lobby,
            "message": text("text", "lobby three"), "messageId": "605"}}),
    );
    f.send(
        1_300,
        "a",
        json!({"requestId": "8", "sendToUser": {"receiver": "2",
            "message": text("text", "p2p three"), "messageId": "606"}}),
    );
    f.send(1_400, "c", json!({"ack": {"p2pSeq": "3"}}));
}

fn flow_restart(f: &mut Flow) {
    let lobby = key("lobby");
    f.open(0, "a");
    f.send(0, "a", login(1, 1));
    f.open(0, "b");
    let b_login = find(&f.send(0, "b", login(1, 2)), "/loginReply");
    f.send(
        100,
        "a",
        json!({"requestId": "2", "join": {"channel": lobby}}),
    );
    let b_join = find(
        &f.send(
            100,
            "b",
            json!({"requestId": "2", "join": {"channel": lobby}}),
        ),
        "/joinReply",
    );
    f.send(
        300,
        "a",
        json!({"requestId": "3", "sendToUser": {"receiver": "2",
            "message": text("text", "p2p one"), "messageId": "701"}}),
    );
    f.send(350, "b", json!({"ack": {"p2pSeq": "1"}}));
    f.send(
        400,
        "a",
        json!({"requestId": "4", "sendToChannel": {"channel": lobby,
            "message": text("text", "lobby one"), "messageId": "702"}}),
    );
    f.close(500, "b");
    // Accepted and stored for uid 2 ...
    f.send(
        600,
        "a",
        json!({"requestId": "5", "sendToUser": {"receiver": "2",
            "message": text("text", "p2p two, lost"), "messageId": "703"}}),
    );
    f.send(
        700,
        "a",
        json!({"requestId": "6", "sendToChannel": {"channel": lobby,
            "message": text("text", "lobby two, lost"), "messageId": "704"}}),
    );
    // ... and lost: the server restarts (every link goes with it).
    f.restart(1_000);
    f.open(2_000, "c");
    let resume = f.resume(
        &b_login,
        1,
        &[(lobby.clone(), b_join["joinReply"].get("epoch").cloned(), 1)],
    );
    f.send(
        2_000,
        "c",
        json!({"requestId": "1", "login": {"protocolVersion": PROTOCOL_VERSION,
            "appid": DEMO_APPID, "uid": "2", "resume": resume}}),
    );
    // Not resumed: the client joins its channel again from its cursor.
    let epoch = b_join["joinReply"].get("epoch").cloned();
    let mut rejoin = json!({"channel": lobby, "rejoin": true, "resumeSeq": "1"});
    if let Some(e) = epoch {
        rejoin["epoch"] = e;
    }
    f.send(2_100, "c", json!({"requestId": "2", "join": rejoin}));
    // uid 1 logs in afresh; new messages are numbered from 1 again.
    f.open(2_200, "d");
    f.send(2_200, "d", login(1, 1));
    f.send(
        2_300,
        "d",
        json!({"requestId": "2", "join": {"channel": lobby}}),
    );
    f.send(
        2_500,
        "d",
        json!({"requestId": "3", "sendToUser": {"receiver": "2",
            "message": text("text", "p2p after the restart"), "messageId": "705"}}),
    );
    f.send(
        2_600,
        "d",
        json!({"requestId": "4", "sendToChannel": {"channel": lobby,
            "message": text("text", "lobby after the restart"), "messageId": "706"}}),
    );
    f.send(2_700, "c", json!({"ack": {"p2pSeq": "1"}}));
}

fn flow_idempotent_resend(f: &mut Flow) {
    let lobby = key("lobby");
    f.open(0, "a");
    let a_login = find(&f.send(0, "a", login(1, 1)), "/loginReply");
    f.open(0, "b");
    f.send(0, "b", login(1, 2));
    let a_join = find(
        &f.send(
            50,
            "a",
            json!({"requestId": "2", "join": {"channel": lobby}}),
        ),
        "/joinReply",
    );
    f.send(
        50,
        "b",
        json!({"requestId": "2", "join": {"channel": lobby}}),
    );
    let p2p = json!({"receiver": "2", "message": text("text", "exactly once"),
        "messageId": "8001"});
    let channel = json!({"channel": lobby, "message": text("text", "exactly once, lobby"),
        "messageId": "8002"});
    f.send(300, "a", json!({"requestId": "3", "sendToUser": p2p}));
    f.send(
        400,
        "a",
        json!({"requestId": "4", "sendToChannel": channel}),
    );
    // The link dies; the client never saw the two replies (they are in the
    // transcript because the server sent them).
    f.close(500, "a");
    f.open(1_000, "c");
    let resume = f.resume(
        &a_login,
        0,
        &[(lobby.clone(), a_join["joinReply"].get("epoch").cloned(), 1)],
    );
    f.send(
        1_000,
        "c",
        json!({"requestId": "1", "login": {"protocolVersion": PROTOCOL_VERSION,
            "appid": DEMO_APPID, "uid": "1", "resume": resume}}),
    );
    // The same sends again, same message ids: the first replies come back,
    // nothing is delivered to anyone.
    f.send(1_100, "c", json!({"requestId": "2", "sendToUser": p2p}));
    f.send(
        1_200,
        "c",
        json!({"requestId": "3", "sendToChannel": channel}),
    );
    // A remembered id with another receiver is refused.
    let mut other = p2p.clone();
    other["receiver"] = json!("3");
    f.send(1_300, "c", json!({"requestId": "4", "sendToUser": other}));
    f.send(1_400, "b", json!({"ack": {"p2pSeq": "1"}}));
}

fn flow_refusals(f: &mut Flow) {
    let lobby = key("lobby");
    let login_with = |rid: u64, fields: Value| {
        let mut l = json!({"protocolVersion": PROTOCOL_VERSION, "appid": DEMO_APPID, "uid": "1"});
        for (k, v) in fields.as_object().expect("an object") {
            l[k] = v.clone();
        }
        json!({"requestId": rid.to_string(), "login": l})
    };
    // 1009: a request before login, and the link is closed (Close{1009}).
    f.open(0, "z");
    f.open(0, "a");
    f.send(5, "z", json!({"requestId": "1", "getInstanceInfo": {}}));
    // Login refusals: the link stays open.
    f.send(20, "a", login_with(2, json!({"appid": 999})));
    f.send(30, "a", login_with(3, json!({"uid": "0"})));
    f.send(40, "a", login_with(4, json!({"region": 99})));
    f.send(50, "a", login_with(5, json!({"token": "not.a.jwt"})));
    let foreign = mint_token("another-secret", DEMO_APPID, 1, TOKEN_EXP_S);
    f.send(60, "a", login_with(6, json!({"token": foreign})));
    let for_uid_2 = mint_token(DEMO_SECRET, DEMO_APPID, 2, TOKEN_EXP_S);
    f.send(70, "a", login_with(7, json!({"token": for_uid_2})));
    let expired = mint_token(DEMO_SECRET, DEMO_APPID, 1, 1_000_000_000);
    f.send(80, "a", login_with(8, json!({"token": expired})));
    f.send(100, "a", login(9, 1));
    f.send(110, "a", login(10, 1));
    // 2001: bad parameters.
    f.send(
        120,
        "a",
        json!({"requestId": "11", "queryOnline": {"uids": []}}),
    );
    f.send(
        130,
        "a",
        json!({"requestId": "12", "join": {"channel": {"channelId": "lobby"}}}),
    );
    f.send(
        140,
        "a",
        json!({"requestId": "13", "getUserCount": {"channelIds": ["lobby"]}}),
    );
    f.send(
        150,
        "a",
        json!({"requestId": "14", "sendToUser": {"receiver": "0",
            "message": text("text", "to nobody"), "messageId": "9001"}}),
    );
    // 2007: content, type and extras count; the limit is 32 KiB.
    f.send(
        160,
        "a",
        json!({"requestId": "15", "sendToUser": {"receiver": "2", "message": {"type": "blob",
            "content": b64(&"x".repeat(32 * 1024 + 1))}, "messageId": "9002"}}),
    );
    // 5101: sending to a channel not joined.
    f.send(
        170,
        "a",
        json!({"requestId": "16", "sendToChannel": {"channel": lobby,
            "message": text("text", "hello?"), "messageId": "9003"}}),
    );
    f.send(
        180,
        "a",
        json!({"requestId": "17", "join": {"channel": lobby}}),
    );
    // 2004: attributes of a uid that is not in the channel.
    f.send(
        190,
        "a",
        json!({"requestId": "18", "getUserAttributes": {"channel": lobby, "uid": "2"}}),
    );
    // 5108: deleting from, or clearing, a channel with no attributes.
    f.send(
        200,
        "a",
        json!({"requestId": "19", "writeChannelAttributes": {"channel": lobby,
            "op": "DELETE", "keys": ["topic"]}}),
    );
    f.send(
        210,
        "a",
        json!({"requestId": "20", "writeChannelAttributes": {"channel": lobby, "op": "CLEAR"}}),
    );
    // 5103-5106: 33 items (the limit is 32) and one value over 8 KiB.
    let many: serde_json::Map<String, Value> =
        (1..=33).map(|i| (format!("k{i:02}"), json!("v"))).collect();
    let big = json!({"bio": "x".repeat(8 * 1024 + 1)});
    f.send(
        220,
        "a",
        json!({"requestId": "21", "writeUserAttributes": {"channel": lobby, "op": "SET",
            "attributes": many}}),
    );
    f.send(
        230,
        "a",
        json!({"requestId": "22", "writeUserAttributes": {"channel": lobby, "op": "SET",
            "attributes": big}}),
    );
    f.send(
        240,
        "a",
        json!({"requestId": "23", "writeChannelAttributes": {"channel": lobby, "op": "SET",
            "attributes": many}}),
    );
    f.send(
        250,
        "a",
        json!({"requestId": "24", "writeChannelAttributes": {"channel": lobby, "op": "SET",
            "attributes": big}}),
    );
    // 5109: a 21st channel (the limit is 20 joined at once) ...
    for i in 1..=19u64 {
        f.send(
            300 + 10 * i,
            "a",
            json!({"requestId": (24 + i).to_string(), "join": {"channel": key(&format!("room-{i:02}"))}}),
        );
    }
    f.send(
        600,
        "a",
        json!({"requestId": "44", "join": {"channel": key("room-20")}}),
    );
    // ... and 33 channels in one count request (the limit is 32).
    let ids: Vec<String> = (1..=33).map(|i| format!("room-{i:02}")).collect();
    f.send(
        610,
        "a",
        json!({"requestId": "45", "getUserCount": {"region": "CN", "channelIds": ids}}),
    );
    // 4003: 180 sends per 3 s per instance; the 181st is refused.
    for i in 0..181u64 {
        f.send(
            1_000 + 10 * i,
            "a",
            json!({"requestId": (100 + i).to_string(), "sendToUser": {"receiver": "3",
                "message": text("ping", &i.to_string()), "unreliable": true,
                "messageId": (10_000 + i).to_string()}}),
        );
    }
    // Protocol errors close the link with Close{2001} (no reply).
    f.open(3_000, "b");
    f.send(
        3_000,
        "b",
        json!({"requestId": "1", "login": {"protocolVersion": 99, "appid": DEMO_APPID, "uid": "2"}}),
    );
    f.open(3_100, "c");
    f.send(3_100, "c", json!({"requestId": "1", "ok": {}}));
    f.open(3_200, "d");
    f.send(3_200, "d", json!({"getInstanceInfo": {}}));
    f.open(3_300, "e");
    f.send(3_300, "e", json!({"requestId": "1"}));
    // Bytes that are no Frame: a `ping` field announcing 5 bytes, holding 1.
    f.send_raw(3_500, "a", &[0x12, 0x05, 0x01]);
}

// ----- the tests -----

fn record(def: &FlowDef) -> String {
    let mut f = Flow::new(def);
    (def.script)(&mut f);
    f.text()
}

fn bless_cmd() -> &'static str {
    "HUMMER_BLESS=1 cargo test --all-features --test golden"
}

/// With `HUMMER_BLESS=1`: records the flow and writes its file. Always:
/// replays the file, and checks that it is what the flow script records.
fn golden(name: &str) {
    let def = FLOWS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no flow {name}"));
    // proto/ is v2 (tests/wire_schema_current.rs): a flow that needs v2 runs,
    // it is never skipped.
    assert!(
        !def.needs_v2 || schema().is_v2(),
        "golden transcript {name} needs protocol v2 (SendToUserRequest.message_id), and proto/ is v1"
    );
    let path = golden_dir().join(format!("{name}.jsonl"));
    if blessing() {
        std::fs::create_dir_all(golden_dir()).expect("tests/golden/");
        std::fs::write(&path, record(def)).expect("write the transcript");
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; record it with `{}`", path.display(), bless_cmd()));
    if let Err(e) = replay(name, &text) {
        panic!(
            "{e}\n(if the change is intended, re-record with `{}` and review the diff)",
            bless_cmd()
        );
    }
    let fresh = record(def);
    assert!(
        input_lines(&fresh) == input_lines(&text),
        "tests/golden/{name}.jsonl is not what flow_{name} sends now: re-record with `{}`",
        bless_cmd()
    );
}

#[test]
fn golden_login() {
    golden("login");
}

#[test]
fn golden_p2p_reliable() {
    golden("p2p_reliable");
}

#[test]
fn golden_p2p_unreliable() {
    golden("p2p_unreliable");
}

#[test]
fn golden_channel_broadcast() {
    golden("channel_broadcast");
}

#[test]
fn golden_attributes() {
    golden("attributes");
}

#[test]
fn golden_resume() {
    golden("resume");
}

#[test]
fn golden_restart() {
    golden("restart");
}

#[test]
fn golden_idempotent_resend() {
    golden("idempotent_resend");
}

#[test]
fn golden_refusals() {
    golden("refusals");
}

#[test]
fn every_flow_has_a_test() {
    let me = include_str!("golden.rs");
    for def in FLOWS {
        assert!(
            me.contains(&format!("fn golden_{}()", def.name)),
            "flow {} has no #[test] fn golden_{}",
            def.name,
            def.name
        );
    }
}

/// The files listed under `## Golden transcripts` in docs/protocol.md are
/// exactly the files in tests/golden/.
#[test]
fn transcripts_match_the_protocol_doc() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let mut listed = BTreeSet::new();
    let mut inside = false;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            inside = heading.trim() == "Golden transcripts";
            continue;
        }
        let item = line.trim_start();
        if !inside || !(item.starts_with("- ") || item.starts_with("* ")) {
            continue;
        }
        // The first `NAME.jsonl` of the bullet (backquoted or linked or not).
        let name = item
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
            .find(|w| w.ends_with(".jsonl") && w.len() > ".jsonl".len());
        if let Some(name) = name {
            listed.insert(name.to_owned());
        }
    }
    assert!(
        !listed.is_empty(),
        "docs/protocol.md has no `NAME.jsonl` bullets under `## Golden transcripts`"
    );
    let present: BTreeSet<String> = std::fs::read_dir(golden_dir())
        .expect("tests/golden/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    // A flow that needs protocol v2 cannot be recorded while proto/ is v1.
    let unrecordable: BTreeSet<String> = FLOWS
        .iter()
        .filter(|d| d.needs_v2 && !schema().is_v2())
        .map(|d| format!("{}.jsonl", d.name))
        .collect();
    let missing: Vec<_> = listed
        .difference(&present)
        .filter(|n| !unrecordable.contains(*n))
        .collect();
    let unlisted: Vec<_> = present.difference(&listed).collect();
    assert!(
        missing.is_empty() && unlisted.is_empty(),
        "docs/protocol.md lists {missing:?} that tests/golden/ lacks (record with `{}`), \
         and tests/golden/ has {unlisted:?} that the doc does not list",
        bless_cmd()
    );
}

/// The replay can fail: a transcript changed in memory must be refused.
#[test]
fn a_changed_transcript_fails_the_replay() {
    let def = &FLOWS[1];
    assert_eq!(def.name, "p2p_reliable");
    let text = record(def);
    let map = replay(def.name, &text).expect("the untouched recording replays");
    // The replaying server really is another one: every id, epoch and
    // clock reading differs from the recording.
    for key in ["instanceId", "serverEpoch", "serverTimeMs", "timestampMs"] {
        let pairs = map.forward.get(key).expect("seen in the transcript");
        assert!(
            pairs
                .iter()
                .all(|(r, a)| serde_json::to_string(a).ok().as_ref() != Some(r)),
            "{key}: {pairs:?}"
        );
    }

    // One sequence number changed in a push.
    let i = text
        .find(r#""seq":"2""#)
        .expect("a seq 2 in the transcript");
    let changed = format!("{}\"seq\":\"3\"{}", &text[..i], &text[i + 9..]);
    let err = replay(def.name, &changed).expect_err("a changed seq must fail");
    assert!(err.contains("line") && err.contains("seq"), "{err}");

    // One frame the server sends removed (the last s2c line).
    let lines: Vec<&str> = text.lines().collect();
    let last_s2c = lines
        .iter()
        .rposition(|l| l.contains(r#""dir":"s2c""#))
        .expect("an s2c line");
    let mut fewer = lines.clone();
    fewer.remove(last_s2c);
    let err = replay(def.name, &fewer.join("\n")).expect_err("an extra frame must fail");
    assert!(err.contains("sent more"), "{err}");

    // A frame the server does not send added.
    let mut more = lines.clone();
    more.insert(last_s2c + 1, lines[last_s2c]);
    let err = replay(def.name, &more.join("\n")).expect_err("a missing frame must fail");
    assert!(err.contains("did not send"), "{err}");

    // A variable field must map consistently: the second login of uid 3
    // gets a new instance id; claiming it is the first one's must fail.
    let ids: Vec<&str> = text
        .match_indices(r#""instanceId":""#)
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            &rest[..rest.find('"').expect("closing quote")]
        })
        .collect();
    assert!(ids.len() >= 4, "four logins: {ids:?}");
    let (first, last) = (ids[0], ids[ids.len() - 1]);
    assert_ne!(first, last);
    let inconsistent = text.replacen(last, first, 1);
    let err = replay(def.name, &inconsistent).expect_err("an inconsistent id must fail");
    assert!(err.contains("instanceId"), "{err}");

    // A time changed.
    let shifted = text.replacen(r#"{"t_ms":100,"conn":"b""#, r#"{"t_ms":101,"conn":"b""#, 1);
    assert_ne!(shifted, text);
    let err = replay(def.name, &shifted).expect_err("another time must fail");
    assert!(err.contains("another time"), "{err}");
}

/// The comparison itself: variable fields by presence and mapping, the rest
/// exactly.
#[test]
fn variable_fields_compare_by_mapping() {
    let frame = schema().frame.clone();
    let reply = |id: &str, seq: &str| json!({"requestId": "1", "loginReply": {"instanceId": id, "serverTimeMs": "5", "p2pSeq": seq}});
    let mut map = Mapping::default();
    compare(&frame, &reply("10", "1"), &reply("77", "1"), &mut map, "f").unwrap();
    compare(&frame, &reply("10", "1"), &reply("77", "1"), &mut map, "f").unwrap();
    assert!(compare(&frame, &reply("10", "1"), &reply("78", "1"), &mut map, "f").is_err());
    assert!(compare(&frame, &reply("11", "1"), &reply("77", "1"), &mut map, "f").is_err());
    assert!(compare(&frame, &reply("10", "1"), &reply("77", "2"), &mut map, "f").is_err());
    let absent = json!({"requestId": "1", "loginReply": {"serverTimeMs": "5", "p2pSeq": "1"}});
    assert!(compare(&frame, &reply("10", "1"), &absent, &mut map, "f").is_err());
    // A client frame naming a recorded id is sent with the actual one.
    let mut resume = json!({"requestId": "2", "login": {"resume": {"instanceId": "10"}}});
    substitute(&frame, &mut resume, &map);
    assert_eq!(resume["login"]["resume"]["instanceId"], json!("77"));
    // A server Ping's nonce is variable; the client's Pong follows it.
    let mut map = Mapping::default();
    let ping = |n: &str| json!({"ping": {"nonce": n}});
    compare(&frame, &ping("5"), &ping("9"), &mut map, "f").unwrap();
    let mut pong = json!({"pong": {"nonce": "5"}});
    substitute(&frame, &mut pong, &map);
    assert_eq!(pong["pong"]["nonce"], json!("9"));
    // A server Pong echoes the client's nonce: compared exactly.
    let pong = |n: &str| json!({"pong": {"nonce": n}});
    assert!(compare(&frame, &pong("5"), &pong("9"), &mut map, "f").is_err());
}

#[test]
fn json_round_trips_through_the_schema() {
    let s = schema();
    let frame = json!({"requestId": "3", "sendToUser": {"receiver": "2",
        "message": {"type": "t", "content": b64("hi!"), "appExtras": {"b": "2", "a": "1"}}}});
    let bytes = s.encode(&frame).unwrap();
    assert_eq!(s.decode(&bytes).unwrap(), frame);
    assert_eq!(
        s.to_line(&frame),
        r#"{"requestId":"3","sendToUser":{"receiver":"2","message":{"type":"t","content":"aGkh","appExtras":{"a":"1","b":"2"}}}}"#
    );
    assert!(s
        .encode(&json!({"requestId": "1", "noSuchBody": {}}))
        .is_err());
    assert_eq!(b64(""), "");
    assert_eq!(b64("a"), "YQ==");
    assert_eq!(b64("ab"), "YWI=");
    assert_eq!(b64("abc"), "YWJj");
    assert_eq!(unhex(&hex(&[0, 1, 0xfe])).unwrap(), vec![0, 1, 0xfe]);
}
