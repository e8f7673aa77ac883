//! Marshalling with pickle, as in the course notes ("Sending Dictionaries
//! Using Pickle" and "Combining Pickling with Other Techniques").
//!
//! The notes pickle a dictionary in Python and send it over a socket; the
//! receiver unpickles it. Here natter's protocol crate plays both parts:
//!
//! 1. write the notes' dictionary as a protocol-2 pickle (what natter's
//!    server sends; Python 2 and Python 3 can both load it),
//! 2. read it back,
//! 3. send `"HELLO " + pickle` and split it at the first space, as the
//!    notes' receiver does,
//! 4. and see what the reader refuses, and why: a pickle is a little
//!    program, and unpickling untrusted bytes in Python can run any code.
//!
//! Run it with `cargo run --example marshalling`. Every hex dump can be
//! pasted into Python: `pickle.loads(bytes.fromhex("..."))`.

use natter_proto::Value;
use natter_proto::pickle::{self, PickleError};

/// Deepest nesting and most values we accept in one pickle (the server's
/// defaults; see `natter_proto::Limits`).
const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 16 * 1024;

fn main() {
    // --- 1. The sending side: dict = {...}; data = pickle.dumps(dict) ---
    let dict = notes_dictionary();
    let data = pickle::to_vec(&dict);
    println!(
        "The notes' dictionary, pickled with protocol 2 ({} bytes):",
        data.len()
    );
    hex_dump(&data);
    println!(
        "In Python: pickle.loads(bytes.fromhex(\"{}\"))\n",
        hex(&data)
    );

    // --- 2. The receiving side: dict = pickle.loads(data) ---
    let back = pickle::decode(&data, MAX_DEPTH, MAX_ITEMS).expect("our own pickle reads back");
    println!("Read back: {back:?}");
    // The tuple stays a tuple, the list a list: pickle keeps Python's types.
    assert_eq!(back, dict);
    println!("Same value as was sent: {}\n", back == dict);

    // --- 3. Command string plus pickled arguments ---
    // Sender: s.send("HELLO " + pickle.dumps(dict))
    let mut message = b"HELLO ".to_vec();
    message.extend_from_slice(&data);
    println!("\"HELLO \" + pickle ({} bytes):", message.len());
    hex_dump(&message);

    // Receiver: index = data.find(' '); command = data[0:index]; args = data[index+1:]
    // The first space ends the command: command names never contain one.
    // (The pickle may well contain spaces; only the first one counts.)
    let index = message.iter().position(|&b| b == b' ').expect("a space");
    let command = String::from_utf8_lossy(&message[..index]);
    let args = pickle::decode(&message[index + 1..], MAX_DEPTH, MAX_ITEMS).expect("the pickle");
    println!("command = {command:?}");
    println!("args    = {args:?}\n");

    // --- 4. What the reader refuses ---
    // Python's unpickler will import and call whatever a pickle names. This
    // one, made by pickling an object whose __reduce__ returns
    // (os.system, ("echo pwned",)), runs a shell command in Python:
    //   c os\nsystem\n   GLOBAL: push the function os.system
    //   ( S'echo pwned'\n t   a tuple holding one string
    //   R                 REDUCE: call os.system(*that tuple)
    //   .                 STOP
    let exploit = b"cos\nsystem\n(S'echo pwned'\ntR.";
    println!("An exploit pickle, os.system(\"echo pwned\"):");
    hex_dump(exploit);
    report(pickle::decode(exploit, MAX_DEPTH, MAX_ITEMS));

    // A pickle is also a stack machine: 2,000 EMPTY_LIST opcodes followed by
    // 1,999 APPENDs build a list nested 2,000 deep. Readers that recurse
    // over the result overflow their stack; ours is iterative and stops at
    // MAX_DEPTH levels.
    let mut deep = vec![b']'; 2000];
    deep.extend(vec![b'a'; 1999]);
    deep.push(b'.');
    println!("A list nested 2,000 deep ({} bytes):", deep.len());
    report(pickle::decode(&deep, MAX_DEPTH, MAX_ITEMS));

    // The memo lets a pickle refer to an earlier value again; a few hundred
    // bytes can describe millions of values. Every copy counts.
    let mut bomb = b"\x80\x02]q\x00X\x01\x00\x00\x00xa".to_vec();
    for level in 0..3u8 {
        bomb.extend_from_slice(b"](");
        for _ in 0..100 {
            bomb.extend_from_slice(&[b'h', level]);
        }
        bomb.extend_from_slice(&[b'e', b'q', level + 1]);
    }
    bomb.push(b'.');
    println!(
        "A memo bomb: {} bytes describing a million strings:",
        bomb.len()
    );
    report(pickle::decode(&bomb, MAX_DEPTH, MAX_ITEMS));
}

/// {"name": "keith", "location": (2.425, 1.783, 0.892),
///  "info": {"email": "keith@cc", "phone": 56783},
///  "buddies": ["ralph", "fred", "betty"]}
fn notes_dictionary() -> Value {
    let s = |text: &str| Value::Str(text.to_owned());
    Value::Dict(vec![
        (s("name"), s("keith")),
        (
            s("location"),
            Value::Tuple(vec![
                Value::Float(2.425),
                Value::Float(1.783),
                Value::Float(0.892),
            ]),
        ),
        (
            s("info"),
            Value::Dict(vec![
                (s("email"), s("keith@cc")),
                (s("phone"), Value::Int(56783)),
            ]),
        ),
        (
            s("buddies"),
            Value::List(vec![s("ralph"), s("fred"), s("betty")]),
        ),
    ])
}

fn report(result: Result<Value, PickleError>) {
    match result {
        Ok(value) => println!("  accepted?! {value:?}\n"),
        Err(error) => println!("  refused: {error}\n"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sixteen bytes a row: offset, hex, and the printable ones as text.
fn hex_dump(bytes: &[u8]) {
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        println!("  {:04x}  {:<47}  {text}", row * 16, hex.join(" "));
    }
}
