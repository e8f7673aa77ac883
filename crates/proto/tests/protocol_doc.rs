//! The JSON examples written inline in docs/PROTOCOL.md, exactly as a
//! newcomer reads them: each one must be a message natter's codec accepts
//! (a client command or a server message, typed), must say again what the
//! codec writes for it, and must sit in its own command's row of a table.
//! The examples that are meant to be refused (the error table, whose rows
//! start with the encoding's name) are replayed against a real server by
//! `tests/python_client.rs`.

use bytes::BytesMut;
use natter_proto::json::{encode_raw, parse_line};
use natter_proto::wire::RawMessage;
use natter_proto::{Command, Limits, ServerMessage};

fn protocol_doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md is readable")
}

/// One inline example: where it is, the command word of the table row it
/// sits in (if any), and its text.
struct Example {
    line: usize,
    row_word: Option<String>,
    text: String,
}

/// Every inline code span that starts with `{"command"`. A span may wrap
/// onto the next line, as Markdown allows.
fn examples(doc: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut rest = doc;
    let mut offset = 0;
    while let Some(start) = rest.find("`{\"command\"") {
        let after = &rest[start + 1..];
        let end = after.find('`').expect("every code span is closed");
        let absolute = offset + start;
        let line_start = doc[..absolute].rfind('\n').map_or(0, |i| i + 1);
        let line_text = doc[line_start..].lines().next().unwrap_or("");
        found.push(Example {
            line: doc[..absolute].matches('\n').count() + 1,
            row_word: row_word(line_text),
            text: after[..end].replace('\n', " "),
        });
        offset += start + 1 + end + 1;
        rest = &doc[offset..];
    }
    found
}

/// `REGISTER` for a row `| `REGISTER` | ...`; None outside such a row.
fn row_word(line: &str) -> Option<String> {
    let cell = line.strip_prefix("| `")?;
    let word = &cell[..cell.find('`')?];
    word.bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_')
        .then(|| word.to_string())
}

/// An error-table row: the example is a wrong command, on purpose.
fn in_error_table(doc: &str, example: &Example) -> bool {
    let line = doc.lines().nth(example.line - 1).unwrap_or("");
    ["| JSON |", "| classic |", "| framed |"]
        .iter()
        .any(|prefix| line.starts_with(prefix))
}

/// The JSON natter writes for `raw`, as a value (key order and spacing
/// aside, which JSON readers ignore).
fn written(raw: &RawMessage) -> serde_json::Value {
    let mut out = BytesMut::new();
    encode_raw(raw, &mut out);
    serde_json::from_slice(&out).expect("natter writes JSON")
}

#[test]
fn every_inline_json_example_is_a_message_natter_reads_and_writes_as_shown() {
    let doc = protocol_doc();
    let limits = Limits::server_default();
    let all = examples(&doc);
    assert!(all.len() >= 25, "found {} examples", all.len());
    let mut checked = 0;
    for example in all.iter().filter(|e| !in_error_table(&doc, e)) {
        let at = format!("PROTOCOL.md line {}: {}", example.line, example.text);
        let raw = parse_line(example.text.as_bytes(), &limits)
            .unwrap_or_else(|e| panic!("{at}: not read: {e}"));
        if let Some(word) = &example.row_word {
            assert_eq!(&raw.word, word, "{at}: an example in another row");
        }
        let as_written: serde_json::Value = serde_json::from_str(&example.text).unwrap();
        let again = match Command::from_raw(raw.clone(), &limits) {
            Ok(command) => command.to_raw(),
            Err(command_error) => match ServerMessage::from_raw(raw) {
                Ok(message) => message.to_raw(),
                Err(message_error) => panic!(
                    "{at}: neither a command ({command_error}) nor a server message ({message_error})"
                ),
            },
        };
        assert_eq!(
            written(&again),
            as_written,
            "{at}: natter writes it differently"
        );
        checked += 1;
    }
    // Every row of the two command tables has its example.
    assert!(checked >= 24, "checked {checked}");
}

#[test]
fn examples_are_found_in_rows_and_across_line_breaks() {
    let doc = "| `JOIN` | x | `{\"command\":\"JOIN\",\"args\":[3]}` |\n\
               text `{\"command\":\"MESSAGE\",\"args\":[0,\n\"*server*\",\"hi\"]}` end\n";
    let found = examples(doc);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].row_word.as_deref(), Some("JOIN"));
    assert_eq!(found[1].row_word, None);
    assert_eq!(found[1].line, 2);
    assert_eq!(
        found[1].text,
        "{\"command\":\"MESSAGE\",\"args\":[0, \"*server*\",\"hi\"]}"
    );
}
