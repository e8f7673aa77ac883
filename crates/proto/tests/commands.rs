//! Typing and validation of client commands, and typing of server
//! messages on the client side. Error texts are what users see in ERROR.

use natter_proto::command::validate_name;
use natter_proto::wire::RawMessage;
use natter_proto::{Command, CommandError, Limits, ServerMessage, Value};

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn typed(word: &str, args: Option<Value>) -> Result<Command, CommandError> {
    Command::from_raw(
        RawMessage {
            word: word.into(),
            args,
        },
        &Limits::server_default(),
    )
}

fn error_text(word: &str, args: Option<Value>) -> String {
    typed(word, args).unwrap_err().to_string()
}

#[test]
fn one_argument_commands_accept_a_bare_value() {
    assert_eq!(
        typed("STATUS", Some(s("away"))),
        Ok(Command::Status("away".into()))
    );
    assert_eq!(
        typed("STATUS", Some(Value::List(vec![s("away")]))),
        Ok(Command::Status("away".into()))
    );
    assert_eq!(typed("JOIN", Some(Value::Int(4))), Ok(Command::Join(4)));
    assert_eq!(
        typed("LEAVE", Some(Value::Tuple(vec![Value::Int(4)]))),
        Ok(Command::Leave(4))
    );
}

#[test]
fn arguments_to_goodbye_and_list_conversations_are_ignored() {
    assert_eq!(typed("GOODBYE", Some(Value::None)), Ok(Command::Goodbye));
    assert_eq!(
        typed("LIST_CONVERSATIONS", Some(Value::Int(1))),
        Ok(Command::ListConversations)
    );
}

#[test]
fn wrong_argument_counts_and_types_say_what_was_expected() {
    assert_eq!(
        error_text("REGISTER", Some(Value::List(vec![s("alice")]))),
        "REGISTER expects [username, status]: got 1 argument"
    );
    assert_eq!(
        error_text("REGISTER", None),
        "REGISTER takes arguments: [username, status]"
    );
    assert_eq!(
        error_text("SEND_MESSAGE", Some(Value::List(vec![s("3"), s("hi")]))),
        "SEND_MESSAGE expects [convID, message]: convID must be an integer, got string"
    );
    assert_eq!(
        error_text("JOIN", Some(Value::Int(-1))),
        "JOIN expects [convID]: convID must be a non-negative integer, got -1"
    );
    assert!(error_text("JOIN", Some(Value::Bool(true))).contains("got bool"));
    assert!(error_text("INVITE", Some(Value::List(vec![]))).contains("no username given"));
    assert!(
        error_text("INVITE", Some(Value::List(vec![s("bob"), Value::Int(3)])))
            .contains("username must be a string, got int")
    );
    assert_eq!(error_text("FLY", None), "unknown command \"FLY\"");
}

#[test]
fn names_follow_the_contract() {
    let limits = Limits::server_default();
    for good in ["alice", "Bob_2", "a.b-c", "Ådne", "東京", &"x".repeat(32)] {
        assert_eq!(validate_name(good, &limits), Ok(()), "{good}");
    }
    for bad in [
        "",
        "has space",
        "semi;colon",
        "tab\t",
        &"x".repeat(33),
        "emoji\u{1F600}",
    ] {
        assert!(validate_name(bad, &limits).is_err(), "{bad:?}");
    }
    assert!(
        error_text("REGISTER", Some(Value::List(vec![s("a b"), s("")])))
            .contains("invalid username \"a b\"")
    );
    assert!(error_text("INVITE", Some(Value::List(vec![s("ok"), s("no way")]))).contains("no way"));
}

#[test]
fn status_and_message_limits_apply() {
    let status = "é".repeat(129);
    assert_eq!(
        error_text("STATUS", Some(s(&status))),
        "status is too long (129 characters, at most 128)"
    );
    assert!(typed("STATUS", Some(s(&"é".repeat(128)))).is_ok());
    let text = "é".repeat(4097);
    assert_eq!(
        error_text(
            "SEND_MESSAGE",
            Some(Value::List(vec![Value::Int(1), s(&text)]))
        ),
        "message is too long (8194 bytes, at most 8192)"
    );
}

#[test]
fn overlong_words_and_names_are_not_echoed_whole() {
    let long = "W".repeat(10_000);
    assert!(error_text(&long, None).len() < 100);
    let name = "n".repeat(10_000);
    assert!(error_text("REGISTER", Some(Value::List(vec![s(&name), s("")]))).len() < 150);
}

#[test]
fn caps_take_a_list_of_strings() {
    assert_eq!(
        typed(
            "CAPS",
            Some(Value::List(vec![s("presence-delta"), s("members")]))
        ),
        Ok(Command::Caps(vec![
            "presence-delta".into(),
            "members".into()
        ]))
    );
    assert_eq!(
        typed("CAPS", Some(Value::List(vec![]))),
        Ok(Command::Caps(vec![]))
    );
}

#[test]
fn server_messages_are_typed_leniently() {
    let raw = |word: &str, args: Value| RawMessage {
        word: word.into(),
        args: Some(args),
    };
    // JSON conversation-id keys are strings.
    assert_eq!(
        ServerMessage::from_raw(raw(
            "CONVERSATIONS",
            Value::Dict(vec![(s("3"), Value::List(vec![s("a")]))])
        )),
        Ok(ServerMessage::Conversations(vec![(3, vec!["a".into()])]))
    );
    assert_eq!(
        ServerMessage::from_raw(raw(
            "MESSAGE",
            Value::Tuple(vec![Value::Int(3), s("al"), s("hi")])
        )),
        Ok(ServerMessage::Message {
            conv: 3,
            sender: "al".into(),
            text: "hi".into(),
            meta: None,
        })
    );
    assert_eq!(
        ServerMessage::from_raw(raw("PRESENCE", Value::Dict(vec![(s("al"), Value::None)]))),
        Ok(ServerMessage::Presence(vec![("al".into(), None)]))
    );
    assert_eq!(
        ServerMessage::from_raw(raw("ERROR", s("no"))),
        Ok(ServerMessage::Error("no".into()))
    );
    let err = ServerMessage::from_raw(raw("MESSAGE", Value::Int(1))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected MESSAGE from server: expected a list, got int"
    );
}

#[test]
fn watch_and_unwatch_take_valid_names() {
    let names = Some(Value::List(vec![s("alice"), s("Bob")]));
    assert_eq!(
        typed("WATCH", names.clone()),
        Ok(Command::Watch(vec!["alice".into(), "Bob".into()]))
    );
    assert_eq!(
        typed("UNWATCH", names),
        Ok(Command::Unwatch(vec!["alice".into(), "Bob".into()]))
    );
    assert!(error_text("WATCH", Some(Value::List(vec![]))).contains("no username given"));
    assert!(error_text("UNWATCH", Some(Value::List(vec![s("a b")]))).contains("invalid username"));
}

#[test]
fn list_users_limit_is_at_least_one_and_at_most_a_hundred() {
    let ask = |limit| Some(Value::List(vec![s("al"), Value::Int(limit)]));
    assert_eq!(
        typed("LIST_USERS", ask(5)),
        Ok(Command::ListUsers {
            prefix: "al".into(),
            limit: 5
        })
    );
    assert_eq!(
        typed("LIST_USERS", ask(5000)),
        Ok(Command::ListUsers {
            prefix: "al".into(),
            limit: 100
        })
    );
    assert!(error_text("LIST_USERS", ask(0)).contains("limit must be at least 1"));
    assert!(error_text("LIST_USERS", ask(-1)).contains("non-negative"));
    let long = Some(Value::List(vec![s(&"a".repeat(200)), Value::Int(5)]));
    assert!(error_text("LIST_USERS", long).contains("prefix is longer"));
}

#[test]
fn users_is_typed_like_online_users() {
    let raw = RawMessage {
        word: "USERS".into(),
        args: Some(Value::Dict(vec![(s("alice"), s("here"))])),
    };
    assert_eq!(
        ServerMessage::from_raw(raw),
        Ok(ServerMessage::Users(vec![("alice".into(), "here".into())]))
    );
}
