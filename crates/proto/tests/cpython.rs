//! Pickles made by real Python interpreters at test time, both ways:
//! what Python 3 (protocols 0–5) and Python 2.7 (protocols 0–2, `str`
//! pickles) write must decode, and what natter writes must load in both.
//!
//! The harness is libtest-mimic (see `support/external.rs`): without a
//! Python 2.7 the Python 2 tests are listed as ignored, which nextest
//! shows as skipped, and under CI they run and fail. A missing `python3`
//! fails.

#[path = "support/external.rs"]
mod external;

use std::io::Write;
use std::path::Path;
use std::process::{Command as Process, Stdio};

use external::{trial, trial_needing};
use natter_proto::codec::encode_message;
use natter_proto::pickle::{PickleError, decode};
use natter_proto::{Encoding, ServerMessage, Value};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let python2 = external::python2();
    let trials = vec![
        trial(
            "python3_pickles_of_protocols_0_to_5_decode",
            python3_pickles_of_protocols_0_to_5_decode,
        ),
        trial_needing(
            "python2_str_pickles_decode_as_utf8_or_latin1",
            &python2,
            python2_str_pickles_decode_as_utf8_or_latin1,
        ),
        trial(
            "python3_loads_every_server_message",
            python3_loads_every_server_message,
        ),
        trial_needing(
            "python2_loads_every_server_message_as_unicode",
            &python2,
            python2_loads_every_server_message_as_unicode,
        ),
        trial(
            "python3_exploit_pickles_are_refused_in_every_protocol",
            python3_exploit_pickles_are_refused_in_every_protocol,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// Runs `script` under `interpreter` with `stdin`; its stdout. Failing to
/// start is a failure: the harness already decided this test can run.
fn run(interpreter: &Path, script: &str, stdin: &str) -> String {
    let mut child = Process::new(interpreter)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", interpreter.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        interpreter.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(bytes: &[u8]) -> Result<Value, PickleError> {
    decode(bytes, 32, 100_000)
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn list(items: Vec<Value>) -> Value {
    Value::List(items)
}

fn tuple(items: Vec<Value>) -> Value {
    Value::Tuple(items)
}

fn dict(pairs: Vec<(Value, Value)>) -> Value {
    Value::Dict(pairs)
}

/// The dict from the course notes' pickle example.
fn notes_dict() -> Value {
    dict(vec![
        (s("name"), s("keith")),
        (
            s("location"),
            tuple(vec![
                Value::Float(2.425),
                Value::Float(1.783),
                Value::Float(0.892),
            ]),
        ),
        (
            s("info"),
            dict(vec![
                (s("email"), s("keith@cc")),
                (s("phone"), Value::Int(56783)),
            ]),
        ),
        (s("buddies"), list(vec![s("ralph"), s("fred"), s("betty")])),
    ])
}

/// Each case: name, Python 3 expression, expected value.
fn python3_cases() -> Vec<(&'static str, &'static str, Value)> {
    let ints = [
        0,
        1,
        -1,
        255,
        256,
        65535,
        65536,
        -(1 << 31),
        1 << 31,
        i64::MAX,
        i64::MIN,
    ];
    let shared = list(vec![s("a")]);
    vec![
        (
            "notes",
            r#"{"name": "keith", "location": (2.425, 1.783, 0.892), "info": {"email": "keith@cc", "phone": 56783}, "buddies": ["ralph", "fred", "betty"]}"#,
            notes_dict(),
        ),
        (
            "send",
            r#"[3, "hello world"]"#,
            list(vec![Value::Int(3), s("hello world")]),
        ),
        (
            "shared",
            r#"(lambda x: [x, x, {"k": x}])(["a"])"#,
            list(vec![
                shared.clone(),
                shared.clone(),
                dict(vec![(s("k"), shared)]),
            ]),
        ),
        (
            "ints",
            "[0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63-1, -2**63]",
            list(ints.iter().map(|&i| Value::Int(i)).collect()),
        ),
        (
            "text",
            r#"["", "it's \"quoted\"", "back\\slash \\u0041", "new\nline\r\x00\x1a", "caf\u00e9 \u263a \U0001F600"]"#,
            list(vec![
                s(""),
                s("it's \"quoted\""),
                s("back\\slash \\u0041"),
                s("new\nline\r\u{0}\u{1a}"),
                s("café \u{263a} \u{1F600}"),
            ]),
        ),
        (
            "misc",
            r#"(None, True, False, 1.5, -0.25, 1e300, (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {}, {1: "one", (1, 2): "pair"}, [[[]]])"#,
            tuple(vec![
                Value::None,
                Value::Bool(true),
                Value::Bool(false),
                Value::Float(1.5),
                Value::Float(-0.25),
                Value::Float(1e300),
                tuple(vec![]),
                tuple(vec![Value::Int(1)]),
                tuple(vec![Value::Int(1), Value::Int(2)]),
                tuple(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
                tuple(vec![
                    Value::Int(1),
                    Value::Int(2),
                    Value::Int(3),
                    Value::Int(4),
                ]),
                dict(vec![]),
                dict(vec![
                    (Value::Int(1), s("one")),
                    (tuple(vec![Value::Int(1), Value::Int(2)]), s("pair")),
                ]),
                list(vec![list(vec![list(vec![])])]),
            ]),
        ),
    ]
}

fn python3_pickles_of_protocols_0_to_5_decode() {
    let cases = python3_cases();
    let exprs: String = cases
        .iter()
        .map(|(name, expr, _)| format!("{name}\t{expr}\n"))
        .collect();
    let script = r#"
import pickle, sys
for line in sys.stdin:
    name, expr = line.rstrip("\n").split("\t", 1)
    value = eval(expr)
    for proto in range(6):
        print(name, proto, pickle.dumps(value, proto).hex())
    print("bytes", 3, pickle.dumps(b"\x00\xffab", 3).hex())
    print("bytes", 5, pickle.dumps(bytearray(b"\x00\xffab"), 5).hex())
"#;
    let out = run(&external::python3(), script, &exprs);
    let mut checked = 0;
    for line in out.lines() {
        let mut parts = line.split(' ');
        let (name, proto, bytes) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            unhex(parts.next().unwrap()),
        );
        let expected = match name {
            "bytes" => Value::Bytes(vec![0, 0xff, b'a', b'b']),
            _ => cases.iter().find(|c| c.0 == name).unwrap().2.clone(),
        };
        assert_eq!(
            read(&bytes),
            Ok(expected),
            "{name} protocol {proto}: {}",
            hex(&bytes)
        );
        checked += 1;
    }
    assert_eq!(checked, cases.len() * 8);
}

fn python2_str_pickles_decode_as_utf8_or_latin1(python2: &Path) {
    let script = r#"
import pickle, binascii
cases = [
    ("register", ['alice', 'online']),
    ("strs", ['caf\xc3\xa9', '\xe9t\xe9', "it's", 'a"b', 'tab\tnl\n\\']),
    ("unicode", [u'\u263a', u'caf\xe9', u'back\\slash\n']),
    ("numbers", [2**40, -2**40, 5L, True, False, 1.25, None, (1, 2)]),
    ("send", (3, 'hello')),
]
for name, value in cases:
    for proto in (0, 1, 2):
        print name, proto, binascii.hexlify(pickle.dumps(value, proto))
"#;
    let out = run(python2, script, "");
    let expected = |name: &str| match name {
        "register" => list(vec![s("alice"), s("online")]),
        "strs" => list(vec![
            s("café"),
            s("été"),
            s("it's"),
            s("a\"b"),
            s("tab\tnl\n\\"),
        ]),
        "unicode" => list(vec![s("\u{263a}"), s("café"), s("back\\slash\n")]),
        "numbers" => list(vec![
            Value::Int(1 << 40),
            Value::Int(-(1 << 40)),
            Value::Int(5),
            Value::Bool(true),
            Value::Bool(false),
            Value::Float(1.25),
            Value::None,
            tuple(vec![Value::Int(1), Value::Int(2)]),
        ]),
        "send" => tuple(vec![Value::Int(3), s("hello")]),
        other => panic!("unknown case {other}"),
    };
    let mut checked = 0;
    for line in out.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let bytes = unhex(parts[2]);
        assert_eq!(
            read(&bytes),
            Ok(expected(parts[0])),
            "{} protocol {}: {:?}",
            parts[0],
            parts[1],
            String::from_utf8_lossy(&bytes)
        );
        checked += 1;
    }
    assert_eq!(checked, 15);
}

/// One of every server message, with awkward text.
fn sample_messages() -> Vec<ServerMessage> {
    vec![
        ServerMessage::OnlineUsers(vec![
            ("alice".into(), "online".into()),
            ("bøb".into(), "away \u{263a}".into()),
        ]),
        ServerMessage::OnlineUsers(vec![]),
        ServerMessage::Presence(vec![
            ("alice".into(), None),
            ("carol".into(), Some("here".into())),
        ]),
        ServerMessage::Invitation {
            conv: 1,
            inviter: "alice".into(),
        },
        ServerMessage::Conversations(vec![
            (1, vec!["alice".into(), "bob".into()]),
            (70000, vec![]),
            (1 << 40, vec!["x".into()]),
        ]),
        ServerMessage::Message {
            conv: 300,
            sender: "alice".into(),
            text: "hi \"there\"\n\\ \u{1F600} \u{0}".into(),
            meta: None,
        },
        ServerMessage::Members {
            conv: 2,
            members: vec!["alice".into()],
        },
        ServerMessage::Caps(vec!["presence-delta".into(), "members".into()]),
        ServerMessage::Caps(vec![]),
        ServerMessage::Error("not registered".into()),
    ]
}

/// Our pickles, loaded by `interpreter` and dumped again with protocol 2,
/// must read back as the same values. Python 2 must see unicode text only.
fn python_loads_our_pickles(interpreter: &Path, script: &str) {
    let mut pickles: Vec<Vec<u8>> = sample_messages()
        .iter()
        .map(|m| {
            let bytes = encode_message(m, Encoding::Classic);
            bytes[m.word().len() + 1..].to_vec()
        })
        .collect();
    pickles.push(natter_proto::pickle::to_vec(&notes_dict()));
    let input: String = pickles.iter().map(|p| hex(p) + "\n").collect();
    let out = run(interpreter, script, &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pickles.len(), "{out}");
    for (ours, theirs) in pickles.iter().zip(lines) {
        // Python 2 dicts have no order: compare with keys sorted.
        assert_eq!(
            sorted(read(&unhex(theirs)).unwrap()),
            sorted(read(ours).unwrap()),
            "{}: {}",
            interpreter.display(),
            hex(ours)
        );
    }
}

/// `value` with every dict's pairs in key order.
fn sorted(value: Value) -> Value {
    match value {
        Value::List(items) => Value::List(items.into_iter().map(sorted).collect()),
        Value::Tuple(items) => Value::Tuple(items.into_iter().map(sorted).collect()),
        Value::Dict(pairs) => {
            let mut pairs: Vec<_> = pairs
                .into_iter()
                .map(|(k, v)| (sorted(k), sorted(v)))
                .collect();
            pairs.sort_by_key(|(k, _)| format!("{k:?}"));
            Value::Dict(pairs)
        }
        scalar => scalar,
    }
}

fn python3_loads_every_server_message() {
    let script = r#"
import pickle, sys
for line in sys.stdin:
    print(pickle.dumps(pickle.loads(bytes.fromhex(line.strip())), 2).hex())
"#;
    python_loads_our_pickles(&external::python3(), script);
}

fn python2_loads_every_server_message_as_unicode(python2: &Path) {
    let script = r#"
import pickle, sys, binascii
def text_is_unicode(o):
    if isinstance(o, str):
        return False
    if isinstance(o, (list, tuple)):
        return all(text_is_unicode(i) for i in o)
    if isinstance(o, dict):
        return all(text_is_unicode(k) and text_is_unicode(v) for k, v in o.items())
    return True
for line in sys.stdin:
    value = pickle.loads(binascii.unhexlify(line.strip()))
    assert text_is_unicode(value), repr(value)
    print binascii.hexlify(pickle.dumps(value, 2))
"#;
    python_loads_our_pickles(python2, script);
}

fn python3_exploit_pickles_are_refused_in_every_protocol() {
    let script = r#"
import pickle, os
class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/natter-pwned",))
class Obj:
    pass
for proto in range(6):
    print(proto, pickle.dumps(Exploit(), proto).hex())
    print(proto, pickle.dumps(Obj(), proto).hex())
    print(proto, pickle.dumps({1, 2}, proto).hex())
"#;
    let out = run(&external::python3(), script, "");
    for line in out.lines() {
        let bytes = unhex(line.split(' ').nth(1).unwrap());
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                PickleError::ForbiddenOpcode { .. } | PickleError::Unsupported { .. }
            ),
            "{line}: {err}"
        );
    }
    assert!(!std::path::Path::new("/tmp/natter-pwned").exists());
}
