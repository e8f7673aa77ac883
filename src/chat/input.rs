//! What a line typed by the user means: a message for the current
//! conversation or a slash command. Shared by the terminal UI and `--plain`.

use natter_client::ConvId;

/// One line of user input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Plain text: a message for the current conversation. A line starting
    /// with `//` sends the text with one `/` removed.
    Say(String),
    Invite(Vec<String>),
    Join(ConvId),
    /// `/leave` alone leaves the current conversation.
    Leave(Option<ConvId>),
    Status(String),
    /// `/topic TEXT`: names the current conversation.
    Topic(String),
    List,
    /// `/watch NAME...`: see these users' presence too.
    Watch(Vec<String>),
    Unwatch(Vec<String>),
    /// `/who [PREFIX]`: search who is online.
    Who(String),
    Help,
    Quit,
    /// A blank line: nothing to do.
    Nothing,
}

/// The slash commands, for `/help`.
pub const HELP: &[(&str, &str)] = &[
    ("/invite NAME...", "start a conversation with these users"),
    ("/join ID", "join conversation ID"),
    ("/leave [ID]", "leave the current (or that) conversation"),
    ("/status TEXT", "set your status"),
    ("/topic TEXT", "name the current conversation"),
    ("/list", "list the conversations on the server"),
    (
        "/who [PREFIX]",
        "who is online (names starting with PREFIX)",
    ),
    (
        "/watch, /unwatch NAME...",
        "show (or stop showing) their presence",
    ),
    ("/help", "show this help"),
    ("/quit", "say goodbye and exit"),
    ("text", "send text to the current conversation"),
];

/// Reads one line. The error says what was wrong and how to do it right.
pub fn parse(line: &str) -> Result<Input, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Input::Nothing);
    }
    if let Some(text) = line.strip_prefix("//") {
        return Ok(Input::Say(format!("/{text}")));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Say(line.to_string()));
    };
    let (word, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    let rest = rest.trim();
    match word {
        "invite" => names(rest, "/invite NAME...").map(Input::Invite),
        "watch" => names(rest, "/watch NAME...").map(Input::Watch),
        "unwatch" => names(rest, "/unwatch NAME...").map(Input::Unwatch),
        "who" => Ok(Input::Who(rest.to_string())),
        "join" => conv_id(rest, "/join ID").map(Input::Join),
        "leave" if rest.is_empty() => Ok(Input::Leave(None)),
        "leave" => conv_id(rest, "/leave [ID]").map(|id| Input::Leave(Some(id))),
        "status" if rest.is_empty() => Err("usage: /status TEXT".into()),
        "status" => Ok(Input::Status(rest.to_string())),
        "topic" if rest.is_empty() => Err("usage: /topic TEXT".into()),
        "topic" => Ok(Input::Topic(rest.to_string())),
        "list" => Ok(Input::List),
        "help" => Ok(Input::Help),
        "quit" | "exit" => Ok(Input::Quit),
        _ => Err(format!("unknown command /{word}: /help lists them")),
    }
}

fn names(text: &str, usage: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if names.is_empty() {
        return Err(format!("usage: {usage}"));
    }
    Ok(names)
}

fn conv_id(text: &str, usage: &str) -> Result<ConvId, String> {
    let text = text.trim_start_matches('#');
    text.parse()
        .map_err(|_| format!("usage: {usage} (ID is a conversation number)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_a_message_and_a_double_slash_escapes() {
        assert_eq!(parse("hello there\n"), Ok(Input::Say("hello there".into())));
        assert_eq!(parse("//me waves"), Ok(Input::Say("/me waves".into())));
        assert_eq!(parse("   "), Ok(Input::Nothing));
    }

    #[test]
    fn slash_commands_take_their_arguments() {
        assert_eq!(
            parse("/invite bob  carol"),
            Ok(Input::Invite(vec!["bob".into(), "carol".into()]))
        );
        assert_eq!(parse("/join 3"), Ok(Input::Join(3)));
        assert_eq!(parse("/join #3"), Ok(Input::Join(3)));
        assert_eq!(parse("/leave"), Ok(Input::Leave(None)));
        assert_eq!(parse("/leave 4"), Ok(Input::Leave(Some(4))));
        assert_eq!(
            parse("/status be right back"),
            Ok(Input::Status("be right back".into()))
        );
        assert_eq!(parse("/list"), Ok(Input::List));
        assert_eq!(parse("/who"), Ok(Input::Who(String::new())));
        assert_eq!(parse("/who al"), Ok(Input::Who("al".into())));
        assert_eq!(
            parse("/watch bob carol"),
            Ok(Input::Watch(vec!["bob".into(), "carol".into()]))
        );
        assert_eq!(
            parse("/unwatch bob"),
            Ok(Input::Unwatch(vec!["bob".into()]))
        );
        assert_eq!(parse("/watch"), Err("usage: /watch NAME...".into()));
        assert_eq!(parse("/quit"), Ok(Input::Quit));
    }

    #[test]
    fn mistakes_explain_themselves() {
        assert_eq!(
            parse("/join x"),
            Err("usage: /join ID (ID is a conversation number)".into())
        );
        assert_eq!(parse("/invite"), Err("usage: /invite NAME...".into()));
        assert_eq!(
            parse("/dance"),
            Err("unknown command /dance: /help lists them".into())
        );
    }
}
